// SPDX-License-Identifier: GPL-2.0

//! `rthin`: dm-thin's `thin` target, a thinly provisioned device in an `rthin-pool`.
//!
//! Table line: `<start> <length> rthin <pool dev> <dev id>`. Status: `<mapped sectors>
//! <highest mapped sector>` (or `-`), as dm-thin's.
//!
//! # The IO path
//!
//! `map` serves what it can from cached metadata without doing IO: a read or a write of a
//! mapped block (not shared with a snapshot, for a write) is remapped to its data block on the
//! pool device, and a read of an unmapped block is zero-filled. Everything else (a lookup that
//! would need IO, a write that needs a new block, flushes, FUA writes, discards) is taken
//! over and deferred to the pool's worker ([`PoolCore::work`]), which runs in process context.
//!
//! Provisioning a virtual block, in the worker:
//! 1. under the metadata lock, allocate a data block and open a *cell* for the virtual block:
//!    later bios for it wait in the cell;
//! 2. with no lock held, zero the new block (or copy the shared one, breaking sharing with a
//!    snapshot) with dm-kcopyd, unless the bio overwrites the whole block;
//! 3. send the bio to the new block; its completion (interrupt context) hands it back to the
//!    worker without allocating (an intrusive bio list under an irq-safe spinlock);
//! 4. under the metadata lock, insert the mapping, close the cell (its bios go back to the
//!    worker), and only then complete the bio.
//!
//! So a mapping never points at a block whose data was not written, and, as the data device
//! is flushed before every commit, never reaches the disk before that data. Flushes and FUA
//! writes commit the metadata before (and, for a provisioned FUA write, after) they are
//! served, so what they promise holds for mappings too.

use crate::dm::{
    bio::BioView, kvec::swap_remove, lifetime::Owner, lifetime::Ref, target::parse_u64, Args, Bio,
    BioList, BlkStatus, Callout, Ctr, CtrError, DmDev, EndIo, MapResult, Op, OwnedBio, QueueLimits,
    StatusType, StatusWriter, Target, TargetInfo,
};
use crate::pdata::{thin::MAX_DEV_ID, Error as PdError};
use crate::targets::metadata::to_kernel;
use crate::targets::pool::{
    find_pool, MdState, Mode, PoolCore, FEAT_DISCARD, FEAT_ERROR_IF_NO_SPACE, FEAT_SKIP_ZEROING,
    PREFIX,
};
use crate::{dm_err, dm_warn};
use core::{fmt::Write, pin::Pin, sync::atomic::Ordering};
use kernel::{alloc::flags::GFP_KERNEL, c_str, prelude::*, str::CStr, sync::Arc};

/// A virtual block being provisioned, and the bios that wait for it.
pub(crate) struct Cell {
    dev: u64,
    vblock: u64,
    waiters: BioList<ThinBio>,
}

/// Where a bio is in the IO path.
#[derive(Clone, Copy)]
enum Stage {
    /// Remapped, served, or waiting for the worker.
    Plain,
    /// Writing `vblock`'s new data block `dblock`; the worker maps it when the write is done.
    Provisioning { vblock: u64, dblock: u64 },
}

/// A thin device's per-bio data.
pub struct ThinBio {
    thin: Ref<ThinShared>,
    stage: Stage,
}

/// A thin device's state, shared with its bios. Dropped in the destructor, once no bio holds
/// it (see [`crate::dm::lifetime`]).
pub struct ThinShared {
    dev_id: u64,
    /// First sector of the target in its mapped device.
    begin: u64,
    pool_dev: DmDev,
    core: Arc<PoolCore>,
}

impl Drop for ThinShared {
    fn drop(&mut self) {
        self.core.close_thin(self.dev_id);
    }
}

/// An `rthin` target.
pub struct Thin {
    shared: Owner<ThinShared>,
}

/// `(sector / spb, sector % spb)`; the block size is never zero (checked by the pool).
fn split(sector: u64, spb: u64) -> (u64, u64) {
    (
        sector.checked_div(spb).unwrap_or(0),
        sector.checked_rem(spb).unwrap_or(0),
    )
}

fn remap(bio: &mut BioView, thin: &ThinShared, spb: u64, dblock: u64) {
    let (_, within) = split(bio.sector().wrapping_sub(thin.begin), spb);
    bio.set_dev(&thin.pool_dev);
    bio.set_sector(dblock.wrapping_mul(spb).wrapping_add(within));
}

#[vtable]
impl Target for Thin {
    const NAME: &'static CStr = c_str!("rthin");
    const VERSION: [u32; 3] = [1, 23, 0];

    type PerBio = ThinBio;

    fn ctr(ctr: &mut Ctr<'_>, args: Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        let argc = args.len();
        if argc != 2 && argc != 3 {
            return Err(CtrError::new(EINVAL, c_str!("Invalid argument count")));
        }
        let arg = |i| args.get(i).unwrap_or(c_str!(""));
        let (pool_path, id) = (arg(0), arg(1));
        if argc == 3 {
            // dm-thin's checks of an external origin, then the refusal: rthin has no external
            // origins yet.
            let origin = arg(2);
            if origin.as_bytes() == pool_path.as_bytes() {
                return Err(CtrError::new(EINVAL, c_str!("Error setting origin device")));
            }
            let _origin = ctr
                .get_device(origin)
                .map_err(|e| CtrError::new(e, c_str!("Error opening origin device")))?;
            return Err(CtrError::new(
                to_kernel(PdError::NotSupported),
                c_str!("External origin devices are not supported"),
            ));
        }
        let pool_dev = ctr
            .get_device(pool_path)
            .map_err(|e| CtrError::new(e, c_str!("Error opening pool device")))?;
        let dev_id = parse_u64(id)
            .filter(|&d| d <= MAX_DEV_ID)
            .ok_or(CtrError::new(EINVAL, c_str!("Invalid device id")))?;
        if !pool_dev.is_mapped_device() {
            return Err(CtrError::new(
                EINVAL,
                c_str!("Couldn't get pool mapped device"),
            ));
        }
        let core = find_pool(pool_dev.devt())
            .ok_or(CtrError::new(EINVAL, c_str!("Couldn't find pool object")))?;
        core.open_thin(dev_id)?;
        // Checked after opening, as dm-thin; dropping `shared` below undoes the opening.
        let suspended = core.suspended.load(Ordering::Acquire);
        let spb = u64::from(core.sectors_per_block);
        let discard = core.has_feature(FEAT_DISCARD);
        // From here on, dropping `shared` closes the device again.
        let shared = Owner::new(
            ThinShared {
                dev_id,
                begin: ctr.info().begin(),
                pool_dev,
                core,
            },
            GFP_KERNEL,
        )
        .map_err(|_| CtrError::new(ENOMEM, c_str!("Out of memory")))?;
        if suspended {
            return Err(CtrError::new(
                EINVAL,
                c_str!("Unable to activate thin device while pool is suspended"),
            ));
        }
        ctr.set_max_io_len(spb)
            .map_err(|e| CtrError::new(e, c_str!("Invalid block size for max io len")))?;
        ctr.set_num_flush_bios(1);
        ctr.set_flush_supported(true);
        if discard {
            ctr.set_num_discard_bios(1);
            ctr.set_max_discard_granularity(true);
        }
        KBox::pin(Thin { shared }, GFP_KERNEL)
            .map_err(|_| CtrError::new(ENOMEM, c_str!("Out of memory")))
    }

    fn map<'a>(
        this: Pin<&Self>,
        ti: &TargetInfo,
        mut bio: Bio<'a, ThinBio>,
    ) -> MapResult<'a, ThinBio> {
        let thin = &*this.shared;
        let core = &thin.core;
        if core.mode() == Mode::Fail {
            return MapResult::Kill(bio);
        }
        let pb = ThinBio {
            thin: this.shared.get(),
            stage: Stage::Plain,
        };
        let op = bio.op();
        let fast = matches!(op, Op::Read | Op::Write) && !bio.is_preflush() && !bio.is_fua();
        if fast {
            let spb = u64::from(core.sectors_per_block);
            let (vblock, _) = split(ti.offset(bio.sector()), spb);
            // Cached metadata only: a lookup that needs IO goes to the worker.
            let r = core.md.lock().find_block(thin.dev_id, vblock, false);
            match r {
                Ok(m) if op == Op::Read || !m.shared => {
                    remap(&mut bio, thin, spb, m.block);
                    return MapResult::Remapped(bio, pb);
                }
                Err(PdError::NoData) if op == Op::Read => {
                    bio.zero_fill();
                    return MapResult::Complete(bio, BlkStatus::OK, pb);
                }
                _ => {}
            }
        }
        let (owned, taken) = bio.take(pb);
        PoolCore::defer(core, owned);
        MapResult::Submitted(taken)
    }

    fn end_io<'a>(
        this: Pin<&Self>,
        _ti: &TargetInfo,
        bio: Bio<'a, ThinBio>,
        per_bio: ThinBio,
        _status: &mut BlkStatus,
    ) -> EndIo<'a, ThinBio> {
        match per_bio.stage {
            Stage::Plain => EndIo::Done(bio),
            Stage::Provisioning { .. } => {
                // The new block's data is written: the worker maps it, then ends the bio.
                let core = &this.shared.core;
                let (owned, taken) = bio.take(per_bio);
                core.prepared.lock().push(owned);
                PoolCore::kick(core);
                EndIo::Incomplete(taken)
            }
        }
    }

    fn status(
        this: Pin<&Self>,
        _ti: &TargetInfo,
        kind: StatusType,
        _flags: u32,
        out: &mut StatusWriter<'_>,
    ) {
        let thin = &*this.shared;
        let _ = match kind {
            StatusType::Info => Self::info(thin, out),
            StatusType::Table => write!(out, "{} {}", thin.pool_dev.name(), thin.dev_id),
            StatusType::Ima => Ok(()),
        };
    }

    fn iterate_devices(this: Pin<&Self>, _ti: &TargetInfo, callout: &mut Callout<'_>) -> i32 {
        let dev = &this.shared.pool_dev;
        callout.call(dev, 0, dev.nr_sectors())
    }

    fn io_hints(this: Pin<&Self>, _ti: &TargetInfo, limits: &mut QueueLimits<'_>) {
        let core = &this.shared.core;
        if core.has_feature(FEAT_DISCARD) {
            let spb = core.sectors_per_block;
            limits.set_discard_granularity(spb << 9);
            limits.set_max_hw_discard_sectors(spb.saturating_mul(1024));
        }
    }
}

impl Thin {
    fn info(thin: &ThinShared, out: &mut StatusWriter<'_>) -> core::fmt::Result {
        let core = &thin.core;
        if core.mode() == Mode::Fail {
            return out.write_str("Fail");
        }
        let spb = u64::from(core.sectors_per_block);
        let md = core.md.lock();
        let (Ok(mapped), Ok(highest)) =
            (md.mapped_count(thin.dev_id), md.highest_mapped(thin.dev_id))
        else {
            return out.write_str("Error");
        };
        write!(out, "{} ", mapped * spb)?;
        match highest {
            Some(h) => write!(out, "{}", (h + 1) * spb - 1),
            None => out.write_str("-"),
        }
    }
}

/// The pool's worker: the half of the IO path that may block.
impl PoolCore {
    /// Leaves `bio` to the worker (any context).
    fn defer(this: &Arc<Self>, bio: OwnedBio<ThinBio>) {
        let flush = bio.is_preflush() || bio.is_fua();
        {
            let mut d = this.deferred.lock();
            d.bios.push(bio);
            d.flush |= flush;
        }
        Self::kick(this);
    }

    /// Serves what the IO path left: finished provisioning writes, then deferred bios.
    /// Runs on the pool's workqueue, one instance at a time.
    pub(crate) fn work(this: &Arc<Self>) {
        let done = this.prepared.lock().take_all();
        if !done.is_empty() {
            this.finish_provisioning(done);
        }
        let (bios, flush) = {
            let mut d = this.deferred.lock();
            (d.bios.take_all(), core::mem::take(&mut d.flush))
        };
        if bios.is_empty() {
            return;
        }
        // A flush covers every write completed before it, mappings included: commit first.
        let mut commit_failed = false;
        if flush {
            let mut md = this.md.lock();
            commit_failed = this.commit_locked(&mut md).is_err();
        }
        for bio in bios {
            if commit_failed && (bio.is_preflush() || bio.is_fua()) {
                bio.end(BlkStatus::IOERR);
                continue;
            }
            this.process(bio);
        }
    }

    fn process(&self, mut bio: OwnedBio<ThinBio>) {
        if self.mode() == Mode::Fail {
            return bio.end(BlkStatus::IOERR);
        }
        let thin = bio.per_bio().thin.clone();
        match bio.op() {
            Op::Write if bio.size() == 0 => {
                // An empty flush: the metadata is committed; flush the data device too.
                bio.set_dev(&thin.pool_dev);
                bio.set_sector(0);
                bio.submit();
            }
            Op::Discard => self.discard(bio, &thin),
            Op::Read | Op::Write => self.read_write(bio, &thin),
            _ => bio.end(BlkStatus::NOTSUPP),
        }
    }

    fn read_write(&self, mut bio: OwnedBio<ThinBio>, thin: &ThinShared) {
        let spb = u64::from(self.sectors_per_block);
        let (vblock, _) = split(bio.sector().wrapping_sub(thin.begin), spb);
        let write = bio.op() == Op::Write;
        let mut md = self.md.lock();
        if let Some(c) = md
            .cells
            .iter_mut()
            .find(|c| c.dev == thin.dev_id && c.vblock == vblock)
        {
            c.waiters.push(bio);
            return;
        }
        match md.find_block(thin.dev_id, vblock, true) {
            Ok(m) if !write || !m.shared => {
                drop(md);
                remap(&mut bio, thin, spb, m.block);
                bio.submit();
            }
            Err(PdError::NoData) if !write => {
                drop(md);
                bio.zero_fill();
                bio.end(BlkStatus::OK);
            }
            Ok(m) => self.provision(md, bio, thin, vblock, Some(m.block)),
            Err(PdError::NoData) => self.provision(md, bio, thin, vblock, None),
            Err(e) => {
                drop(md);
                dm_err!(
                    PREFIX,
                    "{}: lookup of block {} of thin device {} failed: error = {}",
                    self.name,
                    vblock,
                    thin.dev_id,
                    -e.errno()
                );
                bio.end(BlkStatus::IOERR);
            }
        }
    }

    /// Gives `vblock` a new data block, copied from `origin` (a block shared with a snapshot)
    /// or zeroed, and writes `bio` to it. Called with the metadata lock held; it is dropped
    /// before any IO is waited for.
    fn provision(
        &self,
        mut md: kernel::sync::lock::Guard<'_, MdState, kernel::sync::lock::mutex::MutexBackend>,
        mut bio: OwnedBio<ThinBio>,
        thin: &ThinShared,
        vblock: u64,
        origin: Option<u64>,
    ) {
        if self.mode() != Mode::Write {
            drop(md);
            return bio.end(BlkStatus::IOERR);
        }
        let dblock = match md.alloc_data_block() {
            Ok(d) => d,
            Err(PdError::NoSpace) => {
                drop(md);
                self.no_data_space();
                return bio.end(BlkStatus::NOSPC);
            }
            Err(e) => {
                self.metadata_failed(&mut md, "dm_pool_alloc_data_block", e);
                drop(md);
                return bio.end(BlkStatus::IOERR);
            }
        };
        let cell = Cell {
            dev: thin.dev_id,
            vblock,
            waiters: BioList::new(),
        };
        if md.cells.push(cell, GFP_KERNEL).is_err() {
            let _ = md.dec_data_range(dblock, dblock + 1);
            drop(md);
            return bio.end(BlkStatus::IOERR);
        }
        drop(md);

        let spb = u64::from(self.sectors_per_block);
        let whole = split(bio.sector().wrapping_sub(thin.begin), spb).1 == 0
            && u64::from(bio.sectors()) == spb;
        if !whole {
            let to = dblock * spb;
            let r = match origin {
                Some(from) => self
                    .kcopyd
                    .copy(&self.data_dev, from * spb, &self.data_dev, to, spb),
                None if !self.has_feature(FEAT_SKIP_ZEROING) => {
                    self.kcopyd.zero(&self.data_dev, to, spb)
                }
                None => Ok(()),
            };
            if r.is_err() {
                dm_err!(
                    PREFIX,
                    "{}: {} of data block {} failed",
                    self.name,
                    if origin.is_some() { "copy" } else { "zeroing" },
                    dblock
                );
                self.abandon(thin.dev_id, vblock, dblock);
                return bio.end(BlkStatus::IOERR);
            }
        }
        bio.per_bio_mut().stage = Stage::Provisioning { vblock, dblock };
        remap(&mut bio, thin, spb, dblock);
        bio.submit();
    }

    /// The data space is full: as dm-thin, say so once; the bio fails with `ENOSPC`.
    fn no_data_space(&self) {
        if !self.out_of_space.swap(true, Ordering::AcqRel) {
            let how = if self.has_feature(FEAT_ERROR_IF_NO_SPACE) {
                "error IO"
            } else {
                "error IO, queueing is not supported"
            };
            dm_warn!(
                PREFIX,
                "{}: switching pool to out-of-data-space ({}) mode",
                self.name,
                how
            );
        }
    }

    /// Closes the cell of `dev`'s `vblock`, handing back the bios that waited in it.
    fn release_cell(md: &mut MdState, dev: u64, vblock: u64) -> BioList<ThinBio> {
        match md
            .cells
            .iter()
            .position(|c| c.dev == dev && c.vblock == vblock)
        {
            Some(i) => swap_remove(&mut md.cells, i)
                .map(|c| c.waiters)
                .unwrap_or_default(),
            None => BioList::new(),
        }
    }

    /// Requeues bios for the worker (process context).
    fn requeue(&self, bios: BioList<ThinBio>) {
        if !bios.is_empty() {
            self.deferred.lock().bios.append(bios);
        }
    }

    /// Gives up provisioning `vblock` with `dblock`: the block goes back, the waiters retry.
    fn abandon(&self, dev: u64, vblock: u64, dblock: u64) {
        let waiters = {
            let mut md = self.md.lock();
            let _ = md.dec_data_range(dblock, dblock + 1);
            Self::release_cell(&mut md, dev, vblock)
        };
        self.requeue(waiters);
    }

    /// Maps the blocks whose data is written, then completes their bios.
    fn finish_provisioning(&self, mut done: BioList<ThinBio>) {
        let mut finished = BioList::new();
        let mut waiters = BioList::new();
        let mut commit = false;
        let mut commit_failed = false;
        {
            let mut md = self.md.lock();
            while let Some(mut bio) = done.pop() {
                let Stage::Provisioning { vblock, dblock } = bio.per_bio().stage else {
                    finished.push(bio);
                    continue;
                };
                bio.per_bio_mut().stage = Stage::Plain;
                let dev = bio.per_bio().thin.dev_id;
                if !bio.status().is_ok() {
                    let _ = md.dec_data_range(dblock, dblock + 1);
                } else if let Err(e) = md.insert_block(dev, vblock, dblock) {
                    self.metadata_failed(&mut md, "dm_thin_insert_block", e);
                    bio.set_status(BlkStatus::IOERR);
                } else if bio.is_fua() || bio.is_preflush() {
                    commit = true;
                }
                waiters.append(Self::release_cell(&mut md, dev, vblock));
                finished.push(bio);
            }
            if commit {
                commit_failed = self.commit_locked(&mut md).is_err();
            }
        }
        for bio in finished {
            let status = if commit_failed && (bio.is_fua() || bio.is_preflush()) {
                BlkStatus::IOERR
            } else {
                bio.status()
            };
            bio.end(status);
        }
        self.requeue(waiters);
    }

    /// Unmaps the whole blocks a discard covers; a partial block keeps its data.
    fn discard(&self, bio: OwnedBio<ThinBio>, thin: &ThinShared) {
        let spb = u64::from(self.sectors_per_block);
        let start = bio.sector().wrapping_sub(thin.begin);
        let end = start.saturating_add(u64::from(bio.sectors()));
        let (b, e) = match split(start, spb) {
            (q, 0) => (q, split(end, spb).0),
            (q, _) => (q + 1, split(end, spb).0),
        };
        if b < e {
            let mut md = self.md.lock();
            if self.mode() != Mode::Write {
                drop(md);
                return bio.end(BlkStatus::IOERR);
            }
            if let Some(c) = md
                .cells
                .iter_mut()
                .find(|c| c.dev == thin.dev_id && (b..e).contains(&c.vblock))
            {
                // Wait for the block being provisioned, then discard.
                c.waiters.push(bio);
                return;
            }
            if let Err(err) = md.remove_range(thin.dev_id, b, e) {
                self.metadata_failed(&mut md, "dm_thin_remove_range", err);
                drop(md);
                return bio.end(BlkStatus::IOERR);
            }
        }
        bio.end(BlkStatus::OK);
    }
}
