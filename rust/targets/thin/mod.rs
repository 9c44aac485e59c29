// SPDX-License-Identifier: GPL-2.0

//! Thin provisioning: dm-thin's `thin-pool` and `thin` targets, as `rthin-pool` and `rthin`.
//!
//! The parts, as dm-thin's distinct units:
//! - this file: the `rthin` target, a thinly provisioned device in a pool, and the fast half
//!   of its IO path (`map`, `end_io`);
//! - [`pool`]: the `rthin-pool` target, the pool state its tables and thin devices share
//!   ([`PoolCore`]), and the registry of pools;
//! - [`worker`]: the pool's worker, the half of the IO path that may block;
//! - [`prison`]: the bio prison (cells of virtual or data blocks) and the deferred sets that
//!   count IO in flight.
//!
//! Table line: `<start> <length> rthin <pool dev> <dev id> [<external origin dev>]`. Status:
//! `<mapped sectors> <highest mapped sector>` (or `-`), as dm-thin's.
//!
//! # External origins
//!
//! As dm-thin's, a thin device may have an *external origin*: a device outside the pool,
//! opened read-only with the table, that holds what the thin device's unprovisioned blocks
//! read. A read of an unprovisioned block goes to the origin at the same sector (zeros past
//! the origin's end, whose size is read at each resume); the first write to such a block
//! provisions it as any other, but its new block is a copy of the origin's (kcopyd, as a
//! sharing break's copy; the part of a block past the origin's end is zeroed), unless the
//! write covers the whole block. The origin is never written. A snapshot of such a device is
//! activated over the same origin, and reads it where neither maps a block.
//!
//! # The IO path
//!
//! `map` serves what it can from cached metadata without doing IO: a read or a write of a
//! mapped block (not shared with a snapshot, for a write) is remapped to its data block on the
//! pool device, and a read of an unmapped block is zero-filled. A remapped bio counts itself
//! in the pool's in-flight sets until it completes. A block whose cell is held (being
//! provisioned, unmapped, or having its sharing broken) is left alone. Everything else (a
//! lookup that would need IO, a write that needs a new block, flushes, FUA writes, discards)
//! is taken over and deferred to the pool's worker ([`PoolCore::work`]), which runs in
//! process context.
//!
//! Provisioning a virtual block, in the worker:
//! 1. under the metadata lock, allocate a data block and hold the *cell* of the virtual block
//!    (and, when breaking sharing, of the shared data block): later bios for them wait in the
//!    cells;
//! 2. when breaking sharing, wait (parked, no thread sleeping) until the reads of shared
//!    blocks in flight have completed, since the shared block may be freed by the new mapping;
//! 3. with no lock held, start zeroing the new block (or copying the shared one) with
//!    dm-kcopyd, unless the bio overwrites the whole block; the job carries the bio, and the
//!    worker goes on to the next bio at once, so many provisions are in flight together (at
//!    most [`pool::MAX_PROVISIONS`]; beyond that, bios stay deferred until some finish);
//! 4. when the job is done, send the bio to the new block (from kcopyd's completion, in
//!    process context); the write's completion (interrupt context) hands it back to the
//!    worker without allocating (an intrusive bio list under an irq-safe spinlock);
//! 5. under the metadata lock, insert the mappings of every block written since the last
//!    pass, release their cells (their bios go back to the worker), commit once if one of
//!    them asked for it (FUA), and only then complete the bios.
//!
//! `map` takes the metadata lock shared, so lookups of different bios run at once; the
//! worker holds it exclusively only for its metadata changes, never across data IO.
//!
//! A discard holds the cell of its virtual blocks and waits, in the same way, for all IO in
//! flight before unmapping them. With passdown (the pool's default, if the data device takes
//! discards), the data blocks this frees keep one more reference while the worker discards
//! them on the data device (no lock held; nothing waits: the discards carry the bio), and
//! the completion of the last hands the bio back to the worker, which drops the references
//! and only then releases the cell and completes the discard, as dm-thin does: a freed block
//! is never allocated, and written, while its discard is on the way to the disk. Blocks a
//! snapshot still shares are not discarded. So a mapping never points at a block whose data was not
//! written, and, as the data device is flushed before every commit, never reaches the disk
//! before that data; and a data block is given up only when no IO is in flight to it.
//! Flushes and FUA writes commit the metadata before (and, for a provisioned FUA write,
//! after) they are served, so what they promise holds for mappings too.

pub(crate) mod gate;
pub mod pool;
mod prison;
mod worker;

use crate::dm::{
    bio::BioView, lifetime::Owner, lifetime::Ref, target::parse_u64, Args, Bio, BlkStatus, Callout,
    Ctr, CtrError, DmDev, EndIo, MapResult, Op, QueueLimits, StatusType, StatusWriter, Target,
    TargetInfo,
};
use crate::pdata::{thin::MAX_DEV_ID, Error as PdError};
use core::{
    fmt::Write,
    pin::Pin,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};
use kernel::{alloc::flags::GFP_KERNEL, c_str, prelude::*, str::CStr};
use pool::{find_pool, Mode, PoolCore, PoolUse, FEAT_DISCARD};
use prison::{DsEntry, Key};

/// Where a bio is in the IO path.
#[derive(Clone, Copy)]
enum Stage {
    /// Remapped, served, or waiting for the worker.
    Plain,
    /// Breaking the sharing of data block `origin` for `vblock` (its new block `dblock`), with
    /// the cells held: waiting until the reads of shared blocks in flight have completed.
    Quiescing {
        vblock: u64,
        dblock: u64,
        origin: u64,
    },
    /// Preparing `vblock`'s new data block `dblock` (zeroing it, or copying `origin` into
    /// it), or writing a bio that covers it all or must be committed: the worker maps it
    /// when the write is done. (Once a block is prepared for a plain bio, kcopyd's completion
    /// maps it and the bio goes on as [`Stage::Plain`].)
    Provisioning {
        vblock: u64,
        dblock: u64,
        origin: Option<u64>,
    },
    /// Copying the first `len` sectors of `vblock` (less than a block: where the thin
    /// device's external origin ends) from the origin into its new block `dblock`; the rest
    /// of the block is zeroed next, and the bio goes on as [`Stage::Provisioning`].
    CopyingOrigin { vblock: u64, dblock: u64, len: u64 },
    /// A discard of virtual blocks `begin..end`, their cell held: waiting until the IO in
    /// flight has completed, then the worker unmaps them.
    Discarding { begin: u64, end: u64 },
    /// The blocks of a discard of virtual blocks `begin..end` are unmapped, the cell still
    /// held, and the data blocks they freed (listed in [`ThinBio::passdown`], kept allocated
    /// meanwhile) are being discarded on the data device; then the worker frees them.
    PassingDown { begin: u64, end: u64 },
}

/// A thin device's per-bio data.
pub struct ThinBio {
    thin: Ref<ThinShared>,
    stage: Stage,
    /// The bio's entry in the pool's `all_io` set while it is in flight to a data block.
    all_io: Option<DsEntry>,
    /// Its entry in `shared_read` while it reads a block shared with a snapshot.
    shared_read: Option<DsEntry>,
    /// A discard passed down ([`Stage::PassingDown`]): the data blocks it holds a reference
    /// on until the data device has discarded them.
    passdown: KVec<worker::Run>,
}

impl ThinBio {
    fn new(thin: Ref<ThinShared>) -> Self {
        Self {
            thin,
            stage: Stage::Plain,
            all_io: None,
            shared_read: None,
            passdown: KVec::new(),
        }
    }
}

/// A thin device's state, shared with its bios. Dropped in the destructor, once no bio holds
/// it (see [`crate::dm::lifetime`]).
pub struct ThinShared {
    dev_id: u64,
    /// First sector of the target in its mapped device.
    begin: u64,
    pool_dev: DmDev,
    /// This device's use of its pool: the pool stays registered while the device is open.
    core: PoolUse,
    /// Between the presuspend and postsuspend of a noflush suspend: bios that would wait
    /// (for data space, or in the worker's queue) go back to dm instead, which keeps them
    /// while the device is suspended and maps them again after the resume (dm-thin's
    /// `requeue_mode`). Set under the pool's `held` lock (see [`PoolCore::requeue_thin`]).
    requeue: AtomicBool,
    /// The external origin, opened read-only: what unprovisioned blocks read.
    origin: Option<DmDev>,
    /// The origin's size in sectors, as read at the last resume (dm-thin's `origin_size`).
    origin_size: AtomicU64,
}

impl ThinShared {
    /// How many of the `sectors` sectors from this device's sector `start` the external
    /// origin holds, counted from `start` (0 without an origin).
    fn origin_sectors(&self, start: u64, sectors: u64) -> u64 {
        if self.origin.is_none() {
            return 0;
        }
        let size = self.origin_size.load(Ordering::Acquire);
        size.saturating_sub(start).min(sectors)
    }

    /// How many sectors of `vblock` the external origin holds (0 without an origin).
    fn origin_block_len(&self, vblock: u64, spb: u64) -> u64 {
        self.origin_sectors(vblock.saturating_mul(spb), spb)
    }
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

/// How many sectors of `bio`, a read of an unprovisioned block, the external origin holds
/// (0: none, or no origin; the read is zero-filled).
fn origin_part(bio: &BioView, thin: &ThinShared) -> u64 {
    let start = bio.sector().wrapping_sub(thin.begin);
    thin.origin_sectors(start, u64::from(bio.sectors()))
}

/// Sends a read of an unprovisioned block to the external origin, whose part of it
/// ([`origin_part`]) is not 0: a read that runs past the origin's end is zero-filled and
/// shortened to the origin's part, as dm-thin's.
fn remap_to_origin(bio: &mut BioView, thin: &ThinShared) {
    let held = origin_part(bio, thin);
    let Some(origin) = &thin.origin else {
        return;
    };
    if held < u64::from(bio.sectors()) {
        bio.zero_fill();
        // `held` is less than the bio's sectors, which come from a `u32` byte count.
        bio.truncate(u32::try_from(held << 9).unwrap_or(0));
    }
    let start = bio.sector().wrapping_sub(thin.begin);
    bio.set_dev(origin);
    bio.set_sector(start);
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
        // An external origin is opened first, read-only, as dm-thin's.
        let origin = if argc == 3 {
            let path = arg(2);
            if path.as_bytes() == pool_path.as_bytes() {
                return Err(CtrError::new(EINVAL, c_str!("Error setting origin device")));
            }
            Some(
                ctr.get_device_read_only(path)
                    .map_err(|e| CtrError::new(e, c_str!("Error opening origin device")))?,
            )
        } else {
            None
        };
        let origin_size = origin.as_ref().map_or(0, |o| o.nr_sectors());
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
                requeue: AtomicBool::new(false),
                origin,
                origin_size: AtomicU64::new(origin_size),
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
        ctr.set_limit_swap_bios(true);
        ctr.set_flush_supported(true);
        // The IO accounting of a bio the worker serves starts when it is sent to its data
        // block, as dm-thin's (not while it waits for the worker, a cell or a resume).
        ctr.set_accounts_remapped_io(true);
        if discard {
            // A discard unmaps blocks whatever the data device can do: thin devices take
            // discards even when it takes none (`discards_supported`), as dm-thin's.
            ctr.set_discards_supported(true);
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
        if thin.requeue.load(Ordering::Acquire) {
            // A noflush suspend is under way: dm keeps the bio until the resume.
            return MapResult::Requeue(bio);
        }
        if core.mode() == Mode::Fail {
            return MapResult::Kill(bio);
        }
        let mut pb = ThinBio::new(this.shared.get());
        let op = bio.op();
        let fast = matches!(op, Op::Read | Op::Write) && !bio.is_preflush() && !bio.is_fua();
        if fast {
            let spb = u64::from(core.sectors_per_block);
            let (vblock, _) = split(ti.offset(bio.sector()), spb);
            // Cached metadata only: a lookup that needs IO goes to the worker, and so does a
            // bio for a block whose cell is held.
            let md = core.md.read();
            if !md.prison.is_held(&Key::virt(thin.dev_id, vblock)) {
                match md.find_block(thin.dev_id, vblock, false) {
                    Ok(m)
                        if (op == Op::Read || !m.shared)
                            && !md.prison.is_held(&Key::data(m.block)) =>
                    {
                        // Counted in flight before the lock goes: whoever holds a cell next
                        // and waits for the IO in flight waits for this bio.
                        core.count_in_flight(&mut pb, m.shared);
                        drop(md);
                        remap(&mut bio, thin, spb, m.block);
                        return MapResult::Remapped(bio, pb);
                    }
                    Err(PdError::NoData) if op == Op::Read => {
                        let to_origin = origin_part(&bio, thin) != 0;
                        if to_origin {
                            // Counted in flight, as dm-thin counts its reads of the origin.
                            core.count_in_flight(&mut pb, false);
                        }
                        drop(md);
                        if to_origin {
                            remap_to_origin(&mut bio, thin);
                            return MapResult::Remapped(bio, pb);
                        }
                        bio.zero_fill();
                        return MapResult::Complete(bio, BlkStatus::OK, pb);
                    }
                    _ => {}
                }
            }
        }
        // As dm-thin's `thin_defer_bio_with_throttle`: while the worker lags, or has as many
        // provisions in flight as it may, wait for it (no lock held) instead of queueing
        // more.
        core.wait_throttle();
        let (owned, taken) = bio.take(pb);
        PoolCore::defer(core.core_ref(), owned);
        MapResult::Submitted(taken)
    }

    fn end_io<'a>(
        _this: Pin<&Self>,
        _ti: &TargetInfo,
        bio: Bio<'a, ThinBio>,
        per_bio: ThinBio,
        _status: &mut BlkStatus,
    ) -> EndIo<'a, ThinBio> {
        match per_bio.stage {
            Stage::Provisioning { .. } => {
                // The new block's data is written: the worker maps it, then ends the bio. The
                // pool is reached through the bio's own reference to its device.
                let core = per_bio.thin.core.core_ref().clone();
                let (owned, taken) = bio.take(per_bio);
                PoolCore::hand_back(&core, owned);
                EndIo::Incomplete(taken)
            }
            _ => {
                // Out of flight: what waited for it may go on.
                let core = per_bio.thin.core.core_ref();
                PoolCore::io_done(core, per_bio.all_io, per_bio.shared_read);
                EndIo::Done(bio)
            }
        }
    }

    /// A noflush suspend (a pool's table reload by LVM, `dmsetup suspend --noflush`) must not
    /// wait for bios the pool holds for data space, which may never come: as dm-thin's
    /// `do_noflush_start`, they go back to dm, which maps them again after the resume. A
    /// suspend with flush waits for them (until space returns or `no_space_timeout`), as
    /// dm-thin's.
    fn presuspend(this: Pin<&Self>, ti: &TargetInfo) {
        if !ti.noflush_suspending() {
            return;
        }
        let thin = &*this.shared;
        for bio in thin.core.requeue_thin(thin) {
            bio.end(BlkStatus::DM_REQUEUE);
        }
    }

    /// The external origin's size is read at each resume, as dm-thin's: a grown origin reads
    /// through once the thin device is resumed.
    fn preresume(this: Pin<&Self>) -> Result {
        if let Some(origin) = &this.shared.origin {
            this.shared
                .origin_size
                .store(origin.nr_sectors(), Ordering::Release);
        }
        Ok(())
    }

    fn presuspend_undo(this: Pin<&Self>) {
        this.shared.requeue.store(false, Ordering::Release);
    }

    fn postsuspend(this: Pin<&Self>) {
        this.shared.requeue.store(false, Ordering::Release);
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
            StatusType::Table => Self::table(thin, out),
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
    /// The table line's arguments, devices as `major:minor`, as dm-thin's.
    fn table(thin: &ThinShared, out: &mut StatusWriter<'_>) -> core::fmt::Result {
        write!(out, "{} {}", thin.pool_dev.name(), thin.dev_id)?;
        match &thin.origin {
            Some(origin) => write!(out, " {}", origin.name()),
            None => Ok(()),
        }
    }

    fn info(thin: &ThinShared, out: &mut StatusWriter<'_>) -> core::fmt::Result {
        let core = &thin.core;
        if core.mode() == Mode::Fail {
            return out.write_str("Fail");
        }
        let spb = u64::from(core.sectors_per_block);
        let md = core.md.read();
        let (Ok(mapped), Ok(highest)) =
            (md.mapped_count(thin.dev_id), md.highest_mapped(thin.dev_id))
        else {
            return out.write_str("Error");
        };
        // The counts come from disk: crafted metadata must not make the arithmetic panic
        // (overflow checks). dm-thin's is unsigned 64-bit C arithmetic, which wraps; so does
        // this, so both print the same line for the same metadata.
        write!(out, "{} ", mapped.wrapping_mul(spb))?;
        match highest {
            Some(h) => write!(
                out,
                "{}",
                h.wrapping_add(1).wrapping_mul(spb).wrapping_sub(1)
            ),
            None => out.write_str("-"),
        }
    }
}
