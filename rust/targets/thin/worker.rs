// SPDX-License-Identifier: GPL-2.0

//! The pool's worker: the half of the thin IO path that may block. It runs on the pool's
//! workqueue, one instance at a time, in process context (see the IO path in [`super`]).

use super::pool::{
    MdState, Mode, PoolCore, FEAT_PASSDOWN, FEAT_SKIP_ZEROING, MAX_PROVISIONS, PREFIX,
    THROTTLE_CAP, THROTTLE_LAG, THROTTLE_MS,
};
use super::prison::{DsEntry, Key};
use super::{origin_part, remap, remap_to_origin, split, Stage, ThinBio, ThinShared};
use crate::dm::{
    bdev::DiscardDone,
    kcopyd::JobDone,
    lifetime::Ref,
    workqueue::{jiffies, msecs_to_jiffies},
    BioList, BlkStatus, Op, OwnedBio,
};
use crate::dm_err;
use crate::pdata::Error as PdError;
use core::sync::atomic::Ordering;
use kernel::{
    alloc::flags::{GFP_KERNEL, GFP_NOWAIT},
    prelude::*,
};

/// Most reads and writes the worker serves in one pass under the metadata lock.
const BATCH: usize = 32;

/// Most runs of data blocks one discard passes down: a thin device takes discards of at most
/// 1024 blocks (its `io_hints`), and a run has one block at least. Blocks of a longer discard
/// beyond them are unmapped without passdown.
const MAX_PASSDOWN_RUNS: usize = 1024;

/// Data blocks `begin..begin + len` that a discard unmapped, held (one more reference each)
/// while it is passed down; discarded on the data device if `discard`, that is, if no other
/// device shares them.
#[derive(Clone, Copy)]
pub(super) struct Run {
    begin: u64,
    len: u64,
    discard: bool,
}

impl PoolCore {
    /// Leaves `bio` to the worker (any context).
    pub(super) fn defer(this: &Ref<Self>, bio: OwnedBio<ThinBio>) {
        this.deferred.lock().push(bio);
        Self::kick(this);
    }

    /// Hands `bio`, which holds cells, back to the worker to move on (any context).
    pub(super) fn hand_back(this: &Ref<Self>, bio: OwnedBio<ThinBio>) {
        this.prepared.lock().push(bio);
        Self::kick(this);
    }

    /// Hands bios back to the worker (those that waited in a released cell), and has it run:
    /// they are served now, not at the next periodic run, which a suspended pool never has.
    fn requeue(this: &Ref<Self>, mut bios: BioList<ThinBio>) {
        if bios.is_empty() {
            return;
        }
        {
            let mut d = this.deferred.lock();
            while let Some(bio) = bios.pop() {
                d.push(bio);
            }
        }
        Self::kick(this);
    }

    /// Counts `pb`'s bio in flight to a data block (shared with a snapshot: `shared`). Called
    /// with the metadata lock held, after checking that no cell holds the block.
    pub(super) fn count_in_flight(&self, pb: &mut ThinBio, shared: bool) {
        pb.all_io = Some(self.all_io.lock().inc());
        if shared {
            pb.shared_read = Some(self.shared_read.lock().inc());
        }
    }

    /// A bio counted in flight completed (any context): the bios that waited for it go back
    /// to the worker.
    pub(super) fn io_done(this: &Ref<Self>, all_io: Option<DsEntry>, shared: Option<DsEntry>) {
        let mut ready = BioList::new();
        // One rank-4 lock at a time.
        if let Some(e) = all_io {
            this.all_io.lock().dec(e, &mut ready);
        }
        if let Some(e) = shared {
            this.shared_read.lock().dec(e, &mut ready);
        }
        if !ready.is_empty() {
            this.prepared.lock().append(ready);
            Self::kick(this);
        }
    }

    /// Serves what the IO path left: bios that move on with cells held (a provisioning write
    /// done, a wait for IO in flight over), then deferred bios. Writes held for data space
    /// fail here once the pool has left write mode (before and after the pass, which may
    /// change the mode).
    pub(crate) fn work(this: &Ref<Self>) {
        let mut lag = Lag {
            core: this,
            since: jiffies(),
            on: false,
        };
        this.fail_held();
        Self::work_pass(this, &mut lag);
        this.fail_held();
    }

    fn work_pass(this: &Ref<Self>, lag: &mut Lag<'_>) {
        let prepared = this.prepared.lock().take_all();
        if !prepared.is_empty() {
            Self::continue_prepared(this, prepared);
            lag.check();
        }
        if this.suspended.load(Ordering::Acquire) {
            // Held until resume (which kicks the worker): a suspended pool starts nothing.
            // What holds cells still finishes above: a suspending pool waits for it.
            return;
        }
        let (bios, flush) = this.deferred.lock().take();
        if !flush {
            return Self::process_all(this, bios, lag);
        }
        // A flush covers every write completed before it, mappings included: commit first.
        // It fails if the commit fails, or if an abort threw away changes of its device that
        // were acknowledged (dm-thin's `dm_thin_aborted_changes`).
        let mut ready = BioList::new();
        let mut failed = BioList::new();
        {
            let mut md = this.md.write();
            let commit_failed = this.commit_locked(&mut md).is_err();
            for bio in bios {
                let syncs = bio.is_preflush() || bio.is_fua();
                if syncs && (commit_failed || md.aborted_changes(bio.per_bio().thin.dev_id)) {
                    failed.push(bio);
                } else {
                    ready.push(bio);
                }
            }
        }
        for bio in failed {
            bio.end(BlkStatus::IOERR);
        }
        lag.check();
        Self::process_all(this, ready, lag);
    }

    /// Serves `bios` in order while fewer than [`MAX_PROVISIONS`] provisions are in flight;
    /// the rest go back to the front of the deferred bios, in order, until one finishes (which
    /// kicks the worker). So the blocks in flight, and what they hold, stay bounded. Reads
    /// and writes are served in batches of up to [`BATCH`], one pass under the metadata lock
    /// each; any other bio ends the batch before it, so the order of bios is kept. Between
    /// batches, a run that has gone on too long throttles the thin devices ([`Lag`]); and
    /// while provisions are capped, they wait too, until a batch's worth of them finish.
    fn process_all(this: &Ref<Self>, mut bios: BioList<ThinBio>, lag: &mut Lag<'_>) {
        let mut batch = Batch::default();
        while let Some(bio) = bios.pop() {
            // Each bio of the batch may start one provision.
            if this.provisions.load(Ordering::Acquire) + batch.len >= MAX_PROVISIONS {
                batch.serve(this, lag);
                if this.provisions.load(Ordering::Acquire) >= MAX_PROVISIONS {
                    let mut back = BioList::new();
                    back.push(bio);
                    back.append(bios);
                    this.deferred.lock().push_front(back);
                    this.set_throttle(THROTTLE_CAP, true);
                    // Provisions that finished meanwhile saw no throttle to clear: if they
                    // took the count to where a release clears it, no later one may.
                    if this.provisions.load(Ordering::Acquire) <= MAX_PROVISIONS - BATCH {
                        this.set_throttle(THROTTLE_CAP, false);
                        Self::kick(this);
                    }
                    return;
                }
            }
            if matches!(bio.op(), Op::Read | Op::Write) && bio.size() != 0 {
                batch.bios.push(bio);
                batch.len += 1;
                if batch.len == BATCH {
                    batch.serve(this, lag);
                }
            } else {
                batch.serve(this, lag);
                Self::process(this, bio);
                lag.check();
            }
        }
        batch.serve(this, lag);
    }

    /// Serves reads and writes in one pass under the metadata lock; what needs no lock (IO,
    /// completions, kcopyd jobs) is done after it is dropped.
    fn serve_batch(this: &Ref<Self>, mut batch: BioList<ThinBio>) {
        let mut after = After::default();
        {
            let mut md = this.md.write();
            while let Some(bio) = batch.pop() {
                if this.mode() == Mode::Fail {
                    after.fail(bio, BlkStatus::IOERR);
                    continue;
                }
                Self::read_write(this, &mut md, bio, &mut after);
            }
        }
        after.run(this);
    }

    /// Moves on bios that hold cells, by their stage.
    fn continue_prepared(this: &Ref<Self>, mut bios: BioList<ThinBio>) {
        let mut written = BioList::new();
        while let Some(bio) = bios.pop() {
            match bio.per_bio().stage {
                Stage::Provisioning { .. } => written.push(bio),
                Stage::Quiescing { .. } => Self::copy_and_write(this, bio),
                Stage::CopyingOrigin { .. } => Self::zero_tail(this, bio),
                Stage::Discarding { .. } => Self::unmap(this, bio),
                Stage::PassingDown { .. } => Self::finish_passdown(this, bio),
                Stage::Plain => {
                    let status = bio.status();
                    bio.end(status);
                }
            }
        }
        if !written.is_empty() {
            Self::finish_provisioning(this, written);
        }
    }

    fn process(this: &Ref<Self>, mut bio: OwnedBio<ThinBio>) {
        if this.mode() == Mode::Fail {
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
            Op::Discard => Self::discard(this, bio, &thin),
            Op::Read | Op::Write => {
                let mut one = BioList::new();
                one.push(bio);
                Self::serve_batch(this, one);
            }
            _ => bio.end(BlkStatus::NOTSUPP),
        }
    }

    /// Serves a read or a write under the metadata lock, leaving to `after` what is done
    /// once it is dropped.
    fn read_write(
        this: &Ref<Self>,
        md: &mut MdState,
        mut bio: OwnedBio<ThinBio>,
        after: &mut After,
    ) {
        let thin = bio.per_bio().thin.clone();
        let spb = u64::from(this.sectors_per_block);
        let (vblock, _) = split(bio.sector().wrapping_sub(thin.begin), spb);
        let write = bio.op() == Op::Write;
        bio = match md.prison.park(&Key::virt(thin.dev_id, vblock), bio) {
            Ok(()) => return,
            Err(bio) => bio,
        };
        match md.find_block(thin.dev_id, vblock, true) {
            Ok(m) if !write || !m.shared => {
                bio = match md.prison.park(&Key::data(m.block), bio) {
                    Ok(()) => return,
                    Err(bio) => bio,
                };
                this.count_in_flight(bio.per_bio_mut(), m.shared);
                remap(&mut bio, &thin, spb, m.block);
                after.submit.push(bio);
            }
            Err(PdError::NoData) if !write => {
                if origin_part(&bio, &thin) == 0 {
                    after.zero.push(bio);
                } else {
                    this.count_in_flight(bio.per_bio_mut(), false);
                    remap_to_origin(&mut bio, &thin);
                    after.submit.push(bio);
                }
            }
            Ok(m) => {
                // Another device breaking the sharing of the same block holds its cell.
                bio = match md.prison.park(&Key::data(m.block), bio) {
                    Ok(()) => return,
                    Err(bio) => bio,
                };
                Self::provision(this, md, bio, &thin, vblock, Some(m.block), after);
            }
            Err(PdError::NoData) => Self::provision(this, md, bio, &thin, vblock, None, after),
            Err(e) => {
                dm_err!(
                    PREFIX,
                    "{}: lookup of block {} of thin device {} failed: error = {}",
                    this.name,
                    vblock,
                    thin.dev_id,
                    -e.errno()
                );
                after.fail(bio, BlkStatus::IOERR);
            }
        }
    }

    /// Gives `vblock` a new data block, copied from `origin` (a block shared with a snapshot)
    /// or zeroed, and writes `bio` to it. Called with the metadata lock held and no cell
    /// held on `vblock` or `origin`; what waits for IO is left to `after`, which runs once the
    /// lock is dropped.
    fn provision(
        this: &Ref<Self>,
        md: &mut MdState,
        mut bio: OwnedBio<ThinBio>,
        thin: &ThinShared,
        vblock: u64,
        origin: Option<u64>,
        after: &mut After,
    ) {
        if this.mode() != Mode::Write {
            return after.fail(bio, BlkStatus::IOERR);
        }
        if this.suspended.load(Ordering::Acquire) {
            // The pool began suspending after this pass of the worker started: what holds no
            // cell yet waits for resume (see the pool's presuspend).
            return after.defer.push(bio);
        }
        if this.out_of_space.load(Ordering::Acquire) {
            // As dm-thin's out-of-data-space mode: no allocation is tried until space
            // returns (a commit that frees blocks, a resize, a new table).
            return Self::no_space(this, bio, after);
        }
        this.check_low_water(md);
        let dblock = match md.alloc_data_block() {
            Err(PdError::NoSpace) => {
                // Blocks freed in this transaction (discards, a deleted device) may be
                // allocated only once it is committed: commit, and try again, as dm-thin's
                // `alloc_data_block`.
                if this.commit_locked(md).is_err() || this.mode() != Mode::Write {
                    return after.fail(bio, BlkStatus::IOERR);
                }
                md.alloc_data_block()
            }
            r => r,
        };
        let dblock = match dblock {
            Ok(d) => d,
            Err(PdError::NoSpace) => {
                this.enter_no_space();
                return Self::no_space(this, bio, after);
            }
            Err(e) => {
                this.metadata_failed(md, "dm_pool_alloc_data_block", e);
                return after.fail(bio, BlkStatus::IOERR);
            }
        };
        if origin.is_none()
            && this.has_feature(FEAT_SKIP_ZEROING)
            && thin.origin_block_len(vblock, u64::from(this.sectors_per_block)) == 0
            && !bio.is_fua()
            && !bio.is_preflush()
        {
            // Nothing to zero: as dm-thin, map the block at once and send the bio to it as any
            // remapped bio (counted in flight), with no cell and no second pass of the
            // worker. Without zeroing, a new block's other bytes are whatever the disk held,
            // before or after this write lands. A FUA write still goes the long way, so that
            // its mapping is committed before it completes.
            if let Err(e) = md.insert_block(thin.dev_id, vblock, dblock) {
                this.metadata_failed(md, "dm_thin_insert_block", e);
                return after.fail(bio, BlkStatus::IOERR);
            }
            md.mark_changed(thin.dev_id);
            this.count_in_flight(bio.per_bio_mut(), false);
            remap(&mut bio, thin, u64::from(this.sectors_per_block), dblock);
            return after.submit.push(bio);
        }
        // Under the metadata lock: NOIO allocations (see `NoioRwSem`).
        let vkey = Key::virt(thin.dev_id, vblock);
        let mut held = md.prison.hold(vkey);
        if let (Ok(()), Some(o)) = (&held, origin) {
            held = md.prison.hold(Key::data(o));
            if held.is_err() {
                md.prison.release(&vkey);
            }
        }
        if held.is_err() {
            if let Err(e) = md.dec_data_range(dblock, dblock + 1) {
                this.metadata_failed(md, "dm_pool_dec_data_range", e);
            }
            return after.fail(bio, BlkStatus::IOERR);
        }
        this.cells_changed(md);
        this.provisions.fetch_add(1, Ordering::AcqRel);
        match origin {
            Some(origin) => {
                // The new mapping drops this device's reference to `origin`, which may free
                // it: first let the reads of shared blocks in flight complete.
                bio.per_bio_mut().stage = Stage::Quiescing {
                    vblock,
                    dblock,
                    origin,
                };
                after.quiesce.push(bio);
            }
            None => {
                bio.per_bio_mut().stage = Stage::Provisioning {
                    vblock,
                    dblock,
                    origin: None,
                };
                after.prepare.push(bio);
            }
        }
    }

    /// Starts zeroing the new block (or copying the shared one, or the external origin's
    /// block, into it) with kcopyd, unless the bio overwrites all of it; the job's end writes
    /// the bio to it ([`JobDone`]). No lock is held, and nothing waits: many provisions are in
    /// flight at once.
    fn copy_and_write(this: &Ref<Self>, mut bio: OwnedBio<ThinBio>) {
        let (vblock, dblock, origin) = match bio.per_bio().stage {
            Stage::Quiescing {
                vblock,
                dblock,
                origin,
            } => (vblock, dblock, Some(origin)),
            Stage::Provisioning {
                vblock,
                dblock,
                origin,
            } => (vblock, dblock, origin),
            _ => return bio.end(BlkStatus::IOERR),
        };
        bio.per_bio_mut().stage = Stage::Provisioning {
            vblock,
            dblock,
            origin,
        };
        let begin = bio.per_bio().thin.begin;
        let spb = u64::from(this.sectors_per_block);
        let whole =
            split(bio.sector().wrapping_sub(begin), spb).1 == 0 && u64::from(bio.sectors()) == spb;
        let to = dblock * spb;
        let thin = bio.per_bio().thin.clone();
        let zeroing = !this.has_feature(FEAT_SKIP_ZEROING);
        match (origin, &thin.origin) {
            (Some(from), _) if !whole => {
                this.kcopyd
                    .copy_then(&this.data_dev, from * spb, &this.data_dev, to, spb, bio)
            }
            (None, Some(ext)) if !whole && thin.origin_block_len(vblock, spb) != 0 => {
                // The external origin's block, at the same sector; where the origin ends
                // within it, the rest is zeroed after the copy (not with skip_block_zeroing,
                // as dm-thin's).
                let len = thin.origin_block_len(vblock, spb);
                if len < spb && zeroing {
                    bio.per_bio_mut().stage = Stage::CopyingOrigin {
                        vblock,
                        dblock,
                        len,
                    };
                }
                this.kcopyd.copy_from_table_dev_then(
                    ext,
                    vblock * spb,
                    &this.data_dev,
                    to,
                    len,
                    bio,
                )
            }
            (None, _) if !whole && zeroing => this.kcopyd.zero_then(&this.data_dev, to, spb, bio),
            // The bio writes the whole block (or zeroing is off): nothing to prepare. The
            // block is mapped only once the write is done, so no read sees what it held.
            _ => write_new_block(bio, dblock),
        }
    }

    /// The external origin's part of a new block is copied: zeroes the rest of the block,
    /// then goes on as any provision ([`JobDone`]). Started by the worker, as dm-thin starts
    /// both, not from kcopyd's completion: a job started there could wait for kcopyd's
    /// memory pool, which only that completion work refills.
    fn zero_tail(this: &Ref<Self>, mut bio: OwnedBio<ThinBio>) {
        let Stage::CopyingOrigin {
            vblock,
            dblock,
            len,
        } = bio.per_bio().stage
        else {
            return bio.end(BlkStatus::IOERR);
        };
        bio.per_bio_mut().stage = Stage::Provisioning {
            vblock,
            dblock,
            origin: None,
        };
        let spb = u64::from(this.sectors_per_block);
        let from = dblock * spb + len;
        this.kcopyd
            .zero_then(&this.data_dev, from, spb.saturating_sub(len), bio);
    }

    /// A write that needs a new block while the pool is out of data space (the metadata
    /// lock held): it fails with `ENOSPC` under `error_if_no_space` (or once the no-space
    /// timeout passed), or else is held until there is space ([`PoolCore::hold`]); a bio of
    /// a thin device being suspended without flush goes back to dm.
    fn no_space(this: &Ref<Self>, bio: OwnedBio<ThinBio>, after: &mut After) {
        if this.error_if_no_space() {
            return after.fail(bio, BlkStatus::NOSPC);
        }
        if let Err(bio) = this.hold(bio) {
            after.fail(bio, BlkStatus::DM_REQUEUE);
        }
    }

    /// Releases the cells a provision of `dev`'s `vblock` holds, handing back the bios that
    /// waited in them, and tells a suspending pool.
    fn release_cells(
        &self,
        md: &mut MdState,
        dev: u64,
        vblock: u64,
        origin: Option<u64>,
    ) -> BioList<ThinBio> {
        let mut waiters = md.prison.release(&Key::virt(dev, vblock));
        if let Some(o) = origin {
            waiters.append(md.prison.release(&Key::data(o)));
        }
        if self.provisions.fetch_sub(1, Ordering::AcqRel) <= MAX_PROVISIONS - BATCH {
            // A batch below the cap: the worker serves deferred bios again (whoever released
            // the cells kicks it), so thin devices may defer more. (Not at the first release
            // below the cap: the thin devices would be let go and stopped again for every
            // provision that finishes.)
            self.set_throttle(THROTTLE_CAP, false);
        }
        self.cells_changed(md);
        waiters
    }

    /// Maps `dev`'s `vblock` to its new block `dblock`, under the metadata lock. False if it
    /// is not mapped: the pool went read-only or failed while the block was prepared (its
    /// allocation was rolled back with the transaction, so the mapping fails quietly, as
    /// dm-thin's `process_prepared_mapping_fail`: touching the metadata again would only fail
    /// again and degrade the pool further), or the insert failed.
    fn map_new_block(&self, md: &mut MdState, dev: u64, vblock: u64, dblock: u64) -> bool {
        if self.mode() != Mode::Write {
            return false;
        }
        if let Err(e) = md.insert_block(dev, vblock, dblock) {
            self.metadata_failed(md, "dm_thin_insert_block", e);
            return false;
        }
        md.mark_changed(dev);
        true
    }

    /// A provision's new block is zeroed or copied, and its bio neither flushes nor is FUA:
    /// maps the block, counts the bio in flight to it, releases the cells and sends the bio
    /// on, in one pass in kcopyd's completion work (process context, no lock held), as
    /// dm-thin's `process_prepared_mapping` but without a round trip through the worker. A
    /// bio that comes for the block once the cells are released reads the zeroes or the copy,
    /// or what this bio writes; a discard waits for this bio, which is in flight.
    fn map_prepared(this: &Ref<Self>, bio: OwnedBio<ThinBio>) {
        let mut one = BioList::new();
        one.push(bio);
        let mut mapped = Mapped::default();
        this.map_provisions(&mut this.md.write(), one, false, &mut mapped);
        mapped.run(this);
    }

    /// Maps the blocks whose data is written (their bios' end, handed back), then completes
    /// their bios, after a commit if one of them asks for it.
    fn finish_provisioning(this: &Ref<Self>, done: BioList<ThinBio>) {
        let mut mapped = Mapped::default();
        {
            let mut md = this.md.write();
            this.map_provisions(&mut md, done, true, &mut mapped);
            if mapped.commit {
                mapped.commit_failed = this.commit_locked(&mut md).is_err();
            }
        }
        mapped.run(this);
    }

    /// Under the metadata lock: maps the new blocks of provisions (their bios written if
    /// `written`, or else only their blocks prepared), and releases their cells. What is
    /// left to do once the lock is dropped goes to `out`: written bios are completed, the
    /// others sent to their blocks.
    fn map_provisions(
        &self,
        md: &mut MdState,
        mut bios: BioList<ThinBio>,
        written: bool,
        out: &mut Mapped,
    ) {
        while let Some(mut bio) = bios.pop() {
            let Stage::Provisioning {
                vblock,
                dblock,
                origin,
            } = bio.per_bio().stage
            else {
                out.finished.push(bio);
                continue;
            };
            bio.per_bio_mut().stage = Stage::Plain;
            let dev = bio.per_bio().thin.dev_id;
            if !bio.status().is_ok() {
                // The zeroing, the copy or the write failed: give the block back.
                if self.mode() == Mode::Write {
                    if let Err(e) = md.dec_data_range(dblock, dblock + 1) {
                        self.metadata_failed(md, "dm_pool_dec_data_range", e);
                    }
                }
            } else if !self.map_new_block(md, dev, vblock, dblock) {
                bio.set_status(BlkStatus::IOERR);
            } else if written {
                out.commit |= bio.is_fua() || bio.is_preflush();
            } else {
                self.count_in_flight(bio.per_bio_mut(), false);
                let thin = bio.per_bio().thin.clone();
                remap(&mut bio, &thin, u64::from(self.sectors_per_block), dblock);
                out.waiters
                    .append(self.release_cells(md, dev, vblock, origin));
                out.submit.push(bio);
                continue;
            }
            out.waiters
                .append(self.release_cells(md, dev, vblock, origin));
            out.finished.push(bio);
        }
    }

    /// A discard: holds the cell of the whole blocks it covers (a partial block keeps its
    /// data), then waits for the IO in flight before unmapping them.
    fn discard(this: &Ref<Self>, mut bio: OwnedBio<ThinBio>, thin: &ThinShared) {
        let spb = u64::from(this.sectors_per_block);
        let start = bio.sector().wrapping_sub(thin.begin);
        let end = start.saturating_add(u64::from(bio.sectors()));
        let (b, e) = match split(start, spb) {
            (q, 0) => (q, split(end, spb).0),
            (q, _) => (q + 1, split(end, spb).0),
        };
        if b >= e {
            return bio.end(BlkStatus::OK);
        }
        let key = Key::virt_range(thin.dev_id, b, e);
        {
            let mut md = this.md.write();
            if this.mode() != Mode::Write {
                // As dm-thin: a pool that cannot change its metadata completes discards as
                // no-ops; a failed one fails them.
                drop(md);
                let failed = this.mode() == Mode::Fail;
                return bio.end(if failed {
                    BlkStatus::IOERR
                } else {
                    BlkStatus::OK
                });
            }
            // A block of the range is being provisioned or unmapped: wait for it.
            bio = match md.prison.park(&key, bio) {
                Ok(()) => return,
                Err(bio) => bio,
            };
            if this.suspended.load(Ordering::Acquire) {
                // As in `provision`: wait for resume.
                drop(md);
                return this.deferred.lock().push(bio);
            }
            if md.prison.hold(key).is_err() {
                drop(md);
                return bio.end(BlkStatus::IOERR);
            }
            this.cells_changed(&md);
        }
        // No new IO reaches the range now; what is in flight to it was counted before the
        // cell was held.
        bio.per_bio_mut().stage = Stage::Discarding { begin: b, end: e };
        let waited = this.all_io.lock().wait_for_in_flight(bio);
        if let Err(bio) = waited {
            Self::unmap(this, bio);
        }
    }

    /// Unmaps the blocks of a discard whose wait for IO in flight is over. With passdown, the
    /// data blocks this frees are kept allocated and discarded on the data device, and the
    /// discard goes on once that is done ([`PoolCore::finish_passdown`]), its cell still
    /// held: as dm-thin's, no freed block is given to a new write while its discard is on the
    /// way to the disk, and the discard completes after its passdown.
    fn unmap(this: &Ref<Self>, mut bio: OwnedBio<ThinBio>) {
        let Stage::Discarding { begin, end } = bio.per_bio().stage else {
            return bio.end(BlkStatus::IOERR);
        };
        bio.per_bio_mut().stage = Stage::Plain;
        let dev = bio.per_bio().thin.dev_id;
        // Room for the runs of freed blocks, allocated before the lock is taken (a run has a
        // block at least). Without it, the blocks are unmapped without passdown.
        let mut runs = KVec::new();
        if this.has_feature(FEAT_PASSDOWN) {
            let n = usize::try_from(end - begin).unwrap_or(MAX_PASSDOWN_RUNS);
            let _ = runs.reserve(n.min(MAX_PASSDOWN_RUNS), GFP_KERNEL);
        }
        let (status, waiters, passing) = {
            let mut md = this.md.write();
            let mut passing = false;
            let status = if this.mode() == Mode::Fail {
                BlkStatus::IOERR
            } else if this.mode() != Mode::Write {
                // The pool went read-only meanwhile: a no-op, as above.
                BlkStatus::OK
            } else {
                match Self::unmap_range(&mut md, dev, begin, end, &mut runs) {
                    Ok(()) => {
                        md.mark_changed(dev);
                        passing = !runs.is_empty();
                        BlkStatus::OK
                    }
                    Err((op, err)) => {
                        // The abort rolls the references taken back with the rest.
                        this.metadata_failed(&mut md, op, err);
                        BlkStatus::IOERR
                    }
                }
            };
            let mut waiters = BioList::new();
            if !passing {
                waiters = md.prison.release(&Key::virt_range(dev, begin, end));
                this.cells_changed(&md);
            }
            (status, waiters, passing)
        };
        if !passing {
            drop(runs);
            bio.end(status);
            return Self::requeue(this, waiters);
        }
        let spb = u64::from(this.sectors_per_block);
        let pb = bio.per_bio_mut();
        pb.stage = Stage::PassingDown { begin, end };
        pb.passdown = runs;
        let mut discards = this.data_dev.discards();
        for r in bio.per_bio().passdown.iter().filter(|r| r.discard) {
            discards.add(r.begin * spb, r.len * spb);
        }
        discards.then(bio);
    }

    /// Under the metadata lock: unmaps `dev`'s blocks `begin..end`. While `runs` has room
    /// (passdown), the mapped runs are unmapped one by one, as dm-thin's
    /// `process_prepared_discard_passdown_pt1`: each run's data blocks get one more
    /// reference, so that none is free (nor allocated) until it has been discarded, and are
    /// listed in `runs`, to be discarded where no other device (a snapshot) still maps them.
    /// The rest is unmapped without passdown. On failure, the operation and its error.
    fn unmap_range(
        md: &mut MdState,
        dev: u64,
        begin: u64,
        end: u64,
        runs: &mut KVec<Run>,
    ) -> Result<(), (&'static str, PdError)> {
        let mut cur = begin;
        while cur < end && runs.len() < runs.capacity() {
            let r = match md.find_mapped_range(dev, cur, end) {
                Ok(r) => r,
                Err(PdError::NoData) => return Ok(()),
                Err(e) => return Err(("dm_thin_find_mapped_range", e)),
            };
            let len = r.thin_end - r.thin_begin;
            if usize::try_from(len).map_or(true, |l| l > runs.capacity() - runs.len()) {
                break;
            }
            md.remove_range(dev, r.thin_begin, r.thin_end)
                .map_err(|e| ("dm_thin_remove_range", e))?;
            md.inc_data_range(r.pool_begin, r.pool_begin + len)
                .map_err(|e| ("dm_pool_inc_data_range", e))?;
            for b in r.pool_begin..r.pool_begin + len {
                // Another device's reference besides the one just taken: not discarded.
                let discard = !r.maybe_shared
                    || !md
                        .block_is_shared(b)
                        .map_err(|e| ("dm_pool_block_is_shared", e))?;
                match runs.as_mut_slice().last_mut() {
                    Some(last) if last.discard == discard && last.begin + last.len == b => {
                        last.len += 1;
                    }
                    // Within the capacity checked above: never allocates.
                    _ => runs
                        .push(
                            Run {
                                begin: b,
                                len: 1,
                                discard,
                            },
                            GFP_NOWAIT,
                        )
                        .map_err(|_| ("dm_pool_inc_data_range", PdError::NoMem))?,
                }
            }
            cur = r.thin_end;
        }
        if cur < end {
            md.remove_range(dev, cur, end)
                .map_err(|e| ("dm_thin_remove_range", e))?;
        }
        Ok(())
    }

    /// A discard's passdown is done (whether the data device took it or not): drops the
    /// references its data blocks were held by, which frees them in this transaction, then
    /// releases its cell and ends it, as dm-thin's `process_prepared_discard_passdown_pt2`.
    fn finish_passdown(this: &Ref<Self>, mut bio: OwnedBio<ThinBio>) {
        let Stage::PassingDown { begin, end } = bio.per_bio().stage else {
            return bio.end(BlkStatus::IOERR);
        };
        bio.per_bio_mut().stage = Stage::Plain;
        let runs = core::mem::take(&mut bio.per_bio_mut().passdown);
        let dev = bio.per_bio().thin.dev_id;
        let (status, waiters) = {
            let mut md = this.md.write();
            let status = match this.mode() {
                mode @ (Mode::Write | Mode::OutOfMetadataSpace) => {
                    // Out of metadata space (a commit meanwhile left none outside the
                    // reserve), the references still go: the metadata is read-only to the
                    // IO path, and this change is committed once the pool is writable again.
                    // Otherwise the blocks would stay allocated, mapped by nothing.
                    let ooms = mode == Mode::OutOfMetadataSpace;
                    if ooms {
                        md.set_read_only(false);
                    }
                    let r = runs
                        .iter()
                        .try_for_each(|r| md.dec_data_range(r.begin, r.begin + r.len));
                    if ooms {
                        md.set_read_only(true);
                    }
                    match r {
                        Ok(()) => BlkStatus::OK,
                        Err(e) => {
                            this.metadata_failed(&mut md, "dm_pool_dec_data_range", e);
                            BlkStatus::IOERR
                        }
                    }
                }
                // Read-only: an abort threw the references away with the unmapping (a new
                // table cannot make it writable meanwhile: its suspend waits for this cell).
                Mode::ReadOnly => BlkStatus::OK,
                Mode::Fail => BlkStatus::IOERR,
            };
            let waiters = md.prison.release(&Key::virt_range(dev, begin, end));
            this.cells_changed(&md);
            (status, waiters)
        };
        drop(runs);
        bio.end(status);
        Self::requeue(this, waiters);
    }
}

/// Sends a provision's bio to its new block; its end hands it back to the worker, which maps
/// the block ([`PoolCore::finish_provisioning`]).
fn write_new_block(mut bio: OwnedBio<ThinBio>, dblock: u64) {
    let thin = bio.per_bio().thin.clone();
    let spb = u64::from(thin.core.sectors_per_block);
    remap(&mut bio, &thin, spb, dblock);
    bio.submit();
}

impl DiscardDone for ThinBio {
    /// A discard's passdown is done (any context): the worker frees its blocks and ends it.
    fn discards_done(bio: OwnedBio<Self>) {
        let core = bio.per_bio().thin.core.core_ref().clone();
        PoolCore::hand_back(&core, bio);
    }
}

impl JobDone for ThinBio {
    /// The new block is zeroed or copied (kcopyd's completion work, no lock held). The block
    /// is mapped at once and the bio sent to it ([`PoolCore::map_prepared`]); a flush or FUA
    /// bio is written first, so that the worker maps the block and commits before it
    /// completes. A failed job hands the bio back to the worker with an error, which gives
    /// the block back and releases the cells (`finish_provisioning`). The copy of an
    /// external origin's part of a block goes back to the worker, which zeroes the rest.
    fn job_done(mut bio: OwnedBio<Self>, ok: bool) {
        if let Stage::CopyingOrigin { vblock, dblock, .. } = bio.per_bio().stage {
            if ok {
                // The rest of the block is zeroed next, from the worker (`zero_tail`).
                let core = bio.per_bio().thin.core.core_ref().clone();
                return PoolCore::hand_back(&core, bio);
            }
            bio.per_bio_mut().stage = Stage::Provisioning {
                vblock,
                dblock,
                origin: None,
            };
        }
        let Stage::Provisioning { dblock, .. } = bio.per_bio().stage else {
            return bio.end(BlkStatus::IOERR);
        };
        let core = bio.per_bio().thin.core.core_ref().clone();
        if !ok {
            dm_err!(
                PREFIX,
                "{}: zeroing or copying data block {} failed",
                core.name,
                dblock
            );
            bio.set_status(BlkStatus::IOERR);
            return PoolCore::hand_back(&core, bio);
        }
        if bio.is_fua() || bio.is_preflush() {
            return write_new_block(bio, dblock);
        }
        PoolCore::map_prepared(&core, bio);
    }
}

/// Reads and writes gathered by [`PoolCore::process_all`] for one pass of
/// [`PoolCore::serve_batch`].
#[derive(Default)]
struct Batch {
    bios: BioList<ThinBio>,
    len: usize,
}

impl Batch {
    /// Serves the bios gathered, if any, and starts a new batch.
    fn serve(&mut self, this: &Ref<PoolCore>, lag: &mut Lag<'_>) {
        if self.len > 0 {
            self.len = 0;
            PoolCore::serve_batch(this, core::mem::take(&mut self.bios));
            lag.check();
        }
    }
}

/// One run of the worker, timed: once it has gone on for longer than [`THROTTLE_MS`], the
/// thin devices' `map` waits for it to end instead of deferring more bios, as dm-thin's
/// `throttle_work_update`. Checked between batches, with no lock held; the run's end
/// (`drop`) lets them go on.
struct Lag<'a> {
    core: &'a PoolCore,
    /// When the run began (jiffies).
    since: u64,
    /// The thin devices are throttled.
    on: bool,
}

impl Lag<'_> {
    fn check(&mut self) {
        if !self.on && jiffies().wrapping_sub(self.since) > msecs_to_jiffies(THROTTLE_MS) {
            self.on = true;
            self.core.set_throttle(THROTTLE_LAG, true);
        }
    }
}

impl Drop for Lag<'_> {
    fn drop(&mut self) {
        if self.on {
            self.core.set_throttle(THROTTLE_LAG, false);
        }
    }
}

/// Provisions whose blocks were mapped under the metadata lock, with what is left to do for
/// them once it is dropped.
#[derive(Default)]
struct Mapped {
    /// Bios whose prepared blocks were mapped, counted in flight: sent on.
    submit: BioList<ThinBio>,
    /// Written, or failed: completed, after the commit if one is due.
    finished: BioList<ThinBio>,
    /// Bios that waited in the released cells: back to the worker.
    waiters: BioList<ThinBio>,
    /// A written bio was FLUSH or FUA: commit before completing.
    commit: bool,
    /// That commit failed: FLUSH and FUA bios fail.
    commit_failed: bool,
}

impl Mapped {
    /// Does what was left, with no lock held.
    fn run(self, this: &Ref<PoolCore>) {
        let Mapped {
            submit,
            finished,
            waiters,
            commit: _,
            commit_failed,
        } = self;
        for bio in submit {
            bio.submit();
        }
        for bio in finished {
            let status = if commit_failed && (bio.is_fua() || bio.is_preflush()) {
                BlkStatus::IOERR
            } else {
                bio.status()
            };
            bio.end(status);
        }
        PoolCore::requeue(this, waiters);
        // The worker may have left bios deferred with too many provisions in flight.
        if !this.deferred.lock().is_empty() {
            PoolCore::kick(this);
        }
    }
}

/// Bios served by the worker under the metadata lock, with what is left to do for them once
/// it is dropped.
#[derive(Default)]
struct After {
    /// Remapped, and counted in flight: sent on.
    submit: BioList<ThinBio>,
    /// Reads of unmapped blocks: zero-filled and completed.
    zero: BioList<ThinBio>,
    /// Completed with the status they carry.
    failed: BioList<ThinBio>,
    /// Provisions holding their cells: zeroing or copying starts.
    prepare: BioList<ThinBio>,
    /// Provisions breaking sharing: the reads of the shared block in flight end first.
    quiesce: BioList<ThinBio>,
    /// Held until resume.
    defer: BioList<ThinBio>,
}

impl After {
    fn fail(&mut self, mut bio: OwnedBio<ThinBio>, status: BlkStatus) {
        bio.set_status(status);
        self.failed.push(bio);
    }

    /// Does what was left, with no lock held.
    fn run(self, this: &Ref<PoolCore>) {
        let After {
            submit,
            zero,
            failed,
            prepare,
            quiesce,
            defer,
        } = self;
        for bio in submit {
            bio.submit();
        }
        for mut bio in zero {
            bio.zero_fill();
            bio.end(BlkStatus::OK);
        }
        for bio in failed {
            let status = bio.status();
            bio.end(status);
        }
        for bio in prepare {
            PoolCore::copy_and_write(this, bio);
        }
        for bio in quiesce {
            let waited = this.shared_read.lock().wait_for_in_flight(bio);
            if let Err(bio) = waited {
                PoolCore::copy_and_write(this, bio);
            }
        }
        if !defer.is_empty() {
            let mut d = this.deferred.lock();
            for bio in defer {
                d.push(bio);
            }
        }
    }
}
