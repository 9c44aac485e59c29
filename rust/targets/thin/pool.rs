// SPDX-License-Identifier: GPL-2.0

//! `rthin-pool`: dm-thin's `thin-pool` table line, status line and messages, over rthin's
//! persistent-data layer and dm-bufio.
//!
//! Table line: `<start> <length> rthin-pool <metadata dev> <data dev> <data block size>
//! <low water mark> [<#feature args> [<arg>]*]`, features `skip_block_zeroing`,
//! `ignore_discard`, `no_discard_passdown`, `read_only`, `error_if_no_space`.
//!
//! The pool formats or opens the metadata, keeps the data space map sized to the target, and
//! serves dm-thin's pool messages (`create_thin`, `create_snap`, `delete`,
//! `set_transaction_id`, `reserve_metadata_snap`, `release_metadata_snap`), each committed
//! when it succeeds. Bios sent to the pool device go to the data device, as with dm-thin:
//! thin devices ([`super`]) remap their bios to data blocks on the pool device.
//!
//! What outlives one table of the pool lives in [`PoolCore`], found through a registry keyed
//! by the pool's mapped device: a table reload with the same devices carries it over, thin
//! devices find their pool there, and its own references to the metadata and data devices
//! do not depend on any table. The pool stays registered while any table or open thin device
//! uses it ([`PoolUse`]), and is destroyed by the last one's release, in process context.
//!
//! As dm-thin, the pool commits its metadata every second while it is active (the "waker", a
//! delayed work item on the pool's own `WQ_MEM_RECLAIM` workqueue; the `commit_period_ms`
//! module parameter changes the period, 0 turns it off for tests), on suspend, and on close.
//! A suspended pool writes nothing: presuspend lets the provisions in flight finish and
//! holds what arrives later until resume.
//!
//! Locking: the metadata lock is the pool-wide lock of rank 2 in [`crate::locking`], a
//! [`NoioRwSem`]: every allocation under it is NOIO. Thin devices' `map` and status lookups
//! share it; everything that changes the metadata or the prison holds it alone. It is taken
//! in process context only (the waker runs in a worker); the only locks taken under it are
//! the rank-4 spinlocks (counting a bio in flight) and the idle lock (waking a suspending
//! pool). The dm-bufio client (which registers a shrinker) is created before it exists,
//! never under it.

use super::gate::{new_gate, Gate};
use super::prison::{DeferredSet, Prison};
use super::{ThinBio, ThinShared};
use crate::dm::{
    bufio::Client,
    kcopyd::Kcopyd,
    kvec::swap_remove,
    lifetime::{Owner, Ref},
    sync::{commit_period_ms, msleep, no_space_timeout_secs, GlobalRwLock, IrqSpinLock, NoioRwSem},
    target::{features, parse_u64, STATUS_NOFLUSH},
    workqueue::{jiffies, msecs_to_jiffies, DelayedWork, DelayedWorkItem, Workqueue},
    Args, Bio, BioList, BlkStatus, BlockDevice, Callout, Ctr, CtrError, DmDev, MapResult, OwnedBio,
    QueueLimits, StatusType, StatusWriter, TableRef, Target, TargetInfo,
};
use crate::pdata::{
    thin::{DATA_BLOCK_SIZE_MAX, DATA_BLOCK_SIZE_MIN, MAX_DEV_ID},
    PoolMetadata,
};
use crate::targets::metadata::{to_kernel, BufioBm, MAX_METADATA_BLOCKS, METADATA_WARN_SECTORS};
use crate::{dm_err, dm_info, dm_warn};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use core::{
    fmt::Write,
    ops::{Deref, DerefMut},
    pin::Pin,
};
use kernel::{
    alloc::flags::GFP_KERNEL,
    c_str,
    prelude::*,
    str::CStr,
    sync::{Arc, Mutex},
};

pub(crate) const PREFIX: &CStr = c_str!("rthin");

/// Pool features from the table line.
#[derive(Clone, Copy, Default)]
struct Features {
    skip_block_zeroing: bool,
    ignore_discard: bool,
    no_discard_passdown: bool,
    read_only: bool,
    error_if_no_space: bool,
}

impl Features {
    fn parse(args: &[&CStr]) -> Result<Self, CtrError> {
        const BAD_COUNT: CtrError =
            CtrError::new(EINVAL, c_str!("Invalid number of pool feature arguments"));
        let mut f = Features::default();
        let Some((count, rest)) = args.split_first() else {
            return Ok(f);
        };
        let count = parse_u64(count).ok_or(BAD_COUNT)?;
        if count > 5 || count as usize > rest.len() {
            return Err(BAD_COUNT);
        }
        for name in &rest[..count as usize] {
            let name = name.as_bytes();
            let flag = if name.eq_ignore_ascii_case(b"skip_block_zeroing") {
                &mut f.skip_block_zeroing
            } else if name.eq_ignore_ascii_case(b"ignore_discard") {
                &mut f.ignore_discard
            } else if name.eq_ignore_ascii_case(b"no_discard_passdown") {
                &mut f.no_discard_passdown
            } else if name.eq_ignore_ascii_case(b"read_only") {
                &mut f.read_only
            } else if name.eq_ignore_ascii_case(b"error_if_no_space") {
                &mut f.error_if_no_space
            } else {
                return Err(CtrError::new(
                    EINVAL,
                    c_str!("Unrecognised pool feature requested"),
                ));
            };
            *flag = true;
        }
        Ok(f)
    }

    /// The `FEAT_*` bits the IO path follows.
    fn bits(&self) -> u8 {
        let mut b = 0;
        if self.skip_block_zeroing {
            b |= FEAT_SKIP_ZEROING;
        }
        if self.error_if_no_space {
            b |= FEAT_ERROR_IF_NO_SPACE;
        }
        if !self.ignore_discard {
            b |= FEAT_DISCARD;
        }
        b
    }

    /// The feature arguments as dm-thin prints them in the table line.
    fn emit(&self, out: &mut StatusWriter<'_>) -> core::fmt::Result {
        let names = [
            (self.skip_block_zeroing, "skip_block_zeroing "),
            (self.ignore_discard, "ignore_discard "),
            (self.no_discard_passdown, "no_discard_passdown "),
            (self.read_only, "read_only "),
            (self.error_if_no_space, "error_if_no_space "),
        ];
        let count = names.iter().filter(|(on, _)| *on).count();
        write!(out, "{} ", count)?;
        for (_, name) in names.iter().filter(|(on, _)| *on) {
            out.write_str(name)?;
        }
        Ok(())
    }
}

/// The pool's modes, as dm-thin's (those the control plane has), from best to worst. The IO
/// path only moves a pool to a worse mode; binding a table (its preresume) sets the mode the
/// table asks for, as dm-thin's `set_pool_mode` allows it (see [`PoolCore::set_mode`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Mode {
    Write = 0,
    /// dm-thin's out-of-metadata-space mode: a commit left no free metadata block outside the
    /// reserve ([`metadata_reserve`]). It behaves as read-only, and is left by binding a new
    /// table (the next commit checks again).
    OutOfMetadataSpace = 1,
    ReadOnly = 2,
    Fail = 3,
}

/// The mapped device's name, as dm prints it (`major:minor`), kept for log lines written where
/// no `dm_target` is at hand (the waker).
#[derive(Clone, Copy)]
pub(crate) struct DevName([u8; 16]);

impl DevName {
    fn new(name: &CStr) -> Self {
        let mut buf = [0u8; 16];
        let src = name.as_bytes();
        let n = src.len().min(buf.len() - 1);
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        Self(buf)
    }
}

impl core::fmt::Display for DevName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let len = self.0.iter().position(|&c| c == 0).unwrap_or(self.0.len());
        let s = self.0.get(..len).and_then(|b| core::str::from_utf8(b).ok());
        f.write_str(s.unwrap_or("?"))
    }
}

/// A thin device with a live table (dm-thin's `struct dm_thin_device` while open).
pub(crate) struct OpenDev {
    pub(crate) id: u64,
    /// How many tables have it open (a device in use cannot be deleted).
    tables: u32,
    /// Its mappings changed in the current transaction.
    changed: bool,
    /// A transaction that changed it was aborted: writes it acknowledged lost their
    /// mappings, so no later flush or FUA write of it may succeed (dm-thin's
    /// `dm_thin_aborted_changes`), for as long as it stays open.
    aborted: bool,
}

/// What the metadata lock protects: the metadata, and the IO path's bookkeeping that must
/// agree with it.
pub(crate) struct MdState {
    pub(crate) pmd: PoolMetadata<BufioBm>,
    /// Thin devices with a live table.
    pub(crate) open: KVec<OpenDev>,
    /// The cells held (blocks being provisioned, unmapped, or having their sharing broken),
    /// with the bios waiting for them.
    pub(crate) prison: Prison,
}

impl MdState {
    /// Records that `dev`'s mappings changed in this transaction.
    pub(crate) fn mark_changed(&mut self, dev: u64) {
        if let Some(d) = self.open.iter_mut().find(|d| d.id == dev) {
            d.changed = true;
        }
    }

    /// Whether an aborted transaction threw away changes of `dev` (see [`OpenDev`]).
    pub(crate) fn aborted_changes(&self, dev: u64) -> bool {
        self.open.iter().any(|d| d.id == dev && d.aborted)
    }
}

impl Deref for MdState {
    type Target = PoolMetadata<BufioBm>;

    fn deref(&self) -> &PoolMetadata<BufioBm> {
        &self.pmd
    }
}

impl DerefMut for MdState {
    fn deref_mut(&mut self) -> &mut PoolMetadata<BufioBm> {
        &mut self.pmd
    }
}

/// Bios the IO path left for the pool's worker.
#[derive(Default)]
pub(crate) struct Deferred {
    bios: BioList<ThinBio>,
    /// One of `bios` asks for a flush or FUA: commit before serving them.
    flush: bool,
}

impl Deferred {
    /// Adds `bio`. Every way into the worker goes through here, so a bio with PREFLUSH or FUA
    /// always makes the worker commit before serving it, however it got there (first
    /// deferral, or back from a cell).
    pub(crate) fn push(&mut self, bio: OwnedBio<ThinBio>) {
        self.flush |= bio.is_preflush() || bio.is_fua();
        self.bios.push(bio);
    }

    /// Takes every bio, and whether one of them needs a commit first.
    pub(crate) fn take(&mut self) -> (BioList<ThinBio>, bool) {
        (self.bios.take_all(), core::mem::take(&mut self.flush))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bios.is_empty()
    }

    /// Puts `bios`, taken earlier and already committed for, back before the others.
    pub(crate) fn push_front(&mut self, mut bios: BioList<ThinBio>) {
        bios.append(self.bios.take_all());
        self.bios = bios;
    }
}

/// How long one run of the worker may go on before the thin devices' `map` waits for it to
/// end instead of deferring more bios: dm-thin's throttle threshold, one second.
pub(crate) const THROTTLE_MS: u32 = 1000;
/// `PoolCore::throttle`: a run of the worker has gone on for longer than [`THROTTLE_MS`].
pub(crate) const THROTTLE_LAG: u8 = 1;
/// `PoolCore::throttle`: the worker left bios deferred with [`MAX_PROVISIONS`] in flight.
pub(crate) const THROTTLE_CAP: u8 = 2;

/// `PoolCore::idle`: a cell is held.
const IDLE_BUSY: u8 = 1;

/// At most this many provisions (cells held for a new block) are in flight in a pool, as
/// dm-thin's pool of mappings.
pub(crate) const MAX_PROVISIONS: usize = 1024;

/// Table features the IO path follows, from the table bound last (`FEAT_*` bits).
pub(crate) const FEAT_SKIP_ZEROING: u8 = 1;
pub(crate) const FEAT_ERROR_IF_NO_SPACE: u8 = 2;
pub(crate) const FEAT_DISCARD: u8 = 4;
/// Discards are passed down to the data device (the bound table's, as its `io_hints` decided).
pub(crate) const FEAT_PASSDOWN: u8 = 8;

/// A pool: what outlives one table of it (a reload keeps it) and what thin devices share.
///
/// It lives in an [`Owner`] held by the pool registry, and everything else reaches it through
/// counted [`Ref`]s (tables and thin devices through a [`PoolUse`], queued work items through
/// their own): the last user's release takes it out of the registry and drops the owner in
/// process context, which waits until the references drain and only then destroys the pool
/// (its workqueue, kcopyd and dm-bufio clients). So the pool is never destroyed inside its
/// own work item, nor in interrupt context (seed 002's rule, for the pool).
#[pin_data]
pub(crate) struct PoolCore {
    /// The pool-wide metadata lock (rank 2), a reader-writer semaphore: `map` and status
    /// lookups share it; the worker, messages and commits hold it alone. Every allocation
    /// under it is NOIO.
    #[pin]
    pub(crate) md: NoioRwSem<MdState>,
    /// Whether any cell is held ([`IDLE_BUSY`]): derived from the prison by
    /// [`PoolCore::cells_changed`] (under `md` held for writing) whenever it changes; a
    /// suspending pool waits until it is clear (rank 2b, a leaf: taken under `md` or alone).
    #[pin]
    idle: Gate,
    /// Why the thin devices' `map` waits instead of deferring bios ([`THROTTLE_LAG`],
    /// [`THROTTLE_CAP`]; none: it does not wait). As dm-thin's throttle, a worker that lags
    /// behind the IO is not handed more while it catches up; and while [`MAX_PROVISIONS`]
    /// provisions are in flight, the deferred list does not grow either. A waiting `map`
    /// holds no lock ([`PoolCore::wait_throttle`]); most `map` calls find the gate open
    /// without taking its lock (rank 2e, a leaf: taken alone, or under `md`).
    #[pin]
    throttle: Gate,
    /// Provisions in flight (cells held for a new block): the worker starts no more than
    /// [`MAX_PROVISIONS`], and leaves the rest of its bios deferred until some finish.
    pub(crate) provisions: AtomicUsize,
    /// The pool's worker: serves deferred bios, and commits every second while the pool is
    /// active (the waker).
    #[pin]
    waker: DelayedWork<PoolCore>,
    /// Bios for the worker (rank 4 lock; taken in any context).
    #[pin]
    pub(crate) deferred: IrqSpinLock<Deferred>,
    /// Bios that hold cells and may move on (a provisioning write done, a wait for IO in
    /// flight over), for the worker (rank 4 lock).
    #[pin]
    pub(crate) prepared: IrqSpinLock<BioList<ThinBio>>,
    /// Writes that need a new data block while the pool is out of data space and queues IO
    /// (dm-thin's `retry_on_resume_list`s), rank 4 lock. They hold no cell and are counted
    /// in no set, so nothing waits for them but their submitters and dm. Bios go in only
    /// under `md` held for writing, and out when space returns (under `md` too, so none is
    /// missed), on a pool resume, when `no_space_timeout` passes, when the pool leaves write
    /// mode, or when their thin device is suspended without flush (back to dm).
    #[pin]
    pub(crate) held: IrqSpinLock<BioList<ThinBio>>,
    /// Bios in flight to data blocks, by epoch (rank 4 lock; see [`super::prison`]).
    #[pin]
    pub(crate) all_io: IrqSpinLock<DeferredSet>,
    /// Reads in flight of blocks shared with a snapshot, by epoch (rank 4 lock).
    #[pin]
    pub(crate) shared_read: IrqSpinLock<DeferredSet>,
    /// Whether the waker re-arms itself (between resume and suspend).
    active: AtomicBool,
    /// The current [`Mode`].
    mode: AtomicU8,
    /// Between the pool's presuspend and resume: no thin device may be activated.
    pub(crate) suspended: AtomicBool,
    /// The data space is full (dm-thin's out-of-data-space mode): no block is allocated, and
    /// writes that need one are held (or fail, with `error_if_no_space`). Cleared by a commit
    /// that leaves free blocks (after a resize, a discard or a delete) and by binding a new
    /// table, as dm-thin's switch back to write mode. Set and cleared under `md` held for
    /// writing.
    pub(crate) out_of_space: AtomicBool,
    /// While out of data space and queueing: when the held writes fail (jiffies), 0 for
    /// never. Read by the waker, which fails them.
    no_space_deadline: AtomicU64,
    /// The no-space timeout passed: the pool behaves as `error_if_no_space` (and says so)
    /// until it has space again or a table is bound, as dm-thin's `do_no_space_timeout`.
    no_space_timed_out: AtomicBool,
    /// `FEAT_*` bits of the bound table.
    pub(crate) features: AtomicU8,
    /// When the metadata was last committed, in jiffies.
    last_commit: AtomicU64,
    /// The bound table's data low water mark, in blocks.
    low_water_blocks: AtomicU64,
    /// The data low water mark was crossed since the pool last resumed (one event for it).
    low_water_triggered: AtomicBool,
    /// The bound table's metadata low water mark, in blocks.
    metadata_threshold: AtomicU64,
    /// The free metadata blocks were at or below `metadata_threshold` when last looked at
    /// (the event is raised when they go below it).
    metadata_low: AtomicBool,
    /// An event is due on the pool's table; raised with no lock held
    /// ([`PoolCore::raise_pending_event`]).
    event_pending: AtomicBool,
    /// The table bound last (by its preresume), which gets the pool's events, as dm-thin's
    /// `pool->ti`; its destructor takes it out (rank 2d in [`crate::locking`]: taken with no
    /// other rthin lock held; dm's event mutex is taken under it).
    #[pin]
    table: Mutex<Option<TableRef>>,
    pub(crate) name: DevName,
    pub(crate) sectors_per_block: u32,
    pub(crate) wq: Workqueue,
    pub(crate) kcopyd: Kcopyd,
    /// The pool's own references to its devices, independent of any table.
    pub(crate) data_dev: BlockDevice,
    meta_dev: Arc<BlockDevice>,
}

/// How often the waker runs: the commit period (dm-thin's `COMMIT_PERIOD`, 1 s, unless the
/// `commit_period_ms` module parameter says otherwise), or 1 s while periodic commits are off.
fn waker_delay() -> u64 {
    match commit_period_ms() {
        0 => msecs_to_jiffies(1000),
        ms => msecs_to_jiffies(ms),
    }
}

impl DelayedWorkItem for PoolCore {
    type Ref = Ref<PoolCore>;

    fn delayed_work(&self) -> &DelayedWork<Self> {
        &self.waker
    }

    fn run(this: Ref<Self>) {
        this.check_no_space_timeout();
        PoolCore::work(&this);
        let period = commit_period_ms();
        if period != 0
            && jiffies().wrapping_sub(this.last_commit.load(Ordering::Relaxed))
                >= msecs_to_jiffies(period)
        {
            this.commit();
        }
        this.raise_pending_event();
        if this.active.load(Ordering::Acquire) {
            let _ = this
                .wq
                .enqueue_delayed::<PoolCore>(this.clone(), this.next_delay());
        }
    }
}

impl PoolCore {
    /// A thin's `map` is about to defer a bio: while the worker throttles the thin devices,
    /// wait until it stops (process context, no lock held; the wait holds none either).
    pub(crate) fn wait_throttle(&self) {
        self.throttle.wait_clear();
    }

    /// Sets (`on`) or clears a reason (`THROTTLE_*`) for the thin devices' `map` to wait;
    /// the waiters go on once none is left (process context, no lock held or `md` only).
    pub(crate) fn set_throttle(&self, why: u8, on: bool) {
        self.throttle.set(why, on);
    }

    /// Has the worker run soon (any context).
    pub(crate) fn kick(this: &Ref<Self>) {
        // `kick` only fails for a work item outside its container, which `PoolCore` is not.
        let _ = this.wq.kick::<PoolCore>(this.clone());
    }

    /// When the waker runs next: its period, or sooner if held writes are due to fail.
    fn next_delay(&self) -> u64 {
        let period = waker_delay();
        let deadline = self.no_space_deadline.load(Ordering::Acquire);
        if deadline == 0 || !self.out_of_space.load(Ordering::Acquire) {
            return period;
        }
        period.min(deadline.saturating_sub(jiffies()).max(1))
    }

    /// Whether a write that finds no free block fails at once (`ENOSPC`) instead of being
    /// held: the bound table says `error_if_no_space`, or the no-space timeout passed.
    pub(crate) fn error_if_no_space(&self) -> bool {
        self.has_feature(FEAT_ERROR_IF_NO_SPACE) || self.no_space_timed_out.load(Ordering::Acquire)
    }

    /// With `md` held for writing: the data space ran out. As dm-thin's switch to
    /// out-of-data-space mode: an event, a log line, and, when writes are held, the time
    /// `no_space_timeout` gives them (read now, as dm-thin arms its timer now).
    pub(crate) fn enter_no_space(&self) {
        if self.out_of_space.load(Ordering::Acquire) {
            return;
        }
        let error = self.error_if_no_space();
        self.arm_no_space_deadline();
        self.out_of_space.store(true, Ordering::Release);
        self.event_pending.store(true, Ordering::Release);
        dm_warn!(
            PREFIX,
            "{}: switching pool to out-of-data-space ({}) mode",
            self.name,
            if error { "error IO" } else { "queue IO" }
        );
    }

    /// Sets when held writes fail: `no_space_timeout` from now, or never (0 seconds, or
    /// writes are not held).
    fn arm_no_space_deadline(&self) {
        let secs = no_space_timeout_secs();
        let deadline = if secs == 0 || self.error_if_no_space() {
            0
        } else {
            jiffies().wrapping_add(msecs_to_jiffies(secs.saturating_mul(1000)).max(1))
        };
        self.no_space_deadline.store(deadline, Ordering::Release);
    }

    /// With `md` held for writing: the pool has free data blocks again (or a new table is
    /// bound). Back to write mode, with an event, as dm-thin; the held writes go back to the
    /// worker, which serves them on its next run (the waker's, or a resume's).
    pub(crate) fn leave_no_space(&self) {
        if !self.out_of_space.swap(false, Ordering::AcqRel) {
            return;
        }
        self.no_space_timed_out.store(false, Ordering::Release);
        self.no_space_deadline.store(0, Ordering::Release);
        self.event_pending.store(true, Ordering::Release);
        dm_info!(PREFIX, "{}: switching pool to write mode", self.name);
        self.requeue_held();
    }

    /// Hands every held write back to the worker (any context but under a rank-4 lock).
    fn requeue_held(&self) {
        // One rank-4 lock at a time.
        let held = self.held.lock().take_all();
        if !held.is_empty() {
            let mut d = self.deferred.lock();
            for bio in held {
                d.push(bio);
            }
        }
    }

    /// With `md` held for writing and the pool out of data space and queueing: holds `bio`,
    /// a write that needs a new block. Under `md`, so that leaving out-of-space mode (which
    /// takes the held writes back under it) or the timeout misses none. A bio of a thin
    /// device being suspended without flush is given back (`Err`): the caller ends it with
    /// `DM_REQUEUE` once the lock is gone, and dm maps it again after the resume.
    pub(crate) fn hold(&self, bio: OwnedBio<ThinBio>) -> Result<(), OwnedBio<ThinBio>> {
        let mut held = self.held.lock();
        if bio.per_bio().thin.requeue.load(Ordering::Acquire) {
            return Err(bio);
        }
        held.push(bio);
        Ok(())
    }

    /// A noflush suspend of `thin` began: from now on its bios that would wait go back to dm
    /// (`requeue`, looked at under the `held` lock, as `hold` does), and so do those that
    /// wait now, held or deferred, as dm-thin's `do_noflush_start`. Returns them; the caller
    /// ends them with `DM_REQUEUE`.
    pub(crate) fn requeue_thin(&self, thin: &ThinShared) -> BioList<ThinBio> {
        let mut out = BioList::new();
        let mine = |bio: &OwnedBio<ThinBio>| core::ptr::eq(&*bio.per_bio().thin, thin);
        {
            let mut held = self.held.lock();
            thin.requeue.store(true, Ordering::Release);
            let mut keep = BioList::new();
            for bio in held.take_all() {
                if mine(&bio) {
                    out.push(bio);
                } else {
                    keep.push(bio);
                }
            }
            *held = keep;
        }
        let mut d = self.deferred.lock();
        let mut keep = BioList::new();
        for bio in d.bios.take_all() {
            if mine(&bio) {
                out.push(bio);
            } else {
                keep.push(bio);
            }
        }
        d.bios = keep;
        out
    }

    /// Fails the held writes once the pool has left write mode (read-only, failed), as
    /// dm-thin's `error_retry_list`: with `ENOSPC` if it ran out of data space, else `EIO`.
    /// Called by the worker (process context, no lock held).
    pub(crate) fn fail_held(&self) {
        if self.mode() == Mode::Write {
            return;
        }
        let held = self.held.lock().take_all();
        let status = if self.out_of_space.load(Ordering::Acquire) {
            BlkStatus::NOSPC
        } else {
            BlkStatus::IOERR
        };
        for bio in held {
            bio.end(status);
        }
    }

    /// The waker's look at the held writes (no lock held): once `no_space_timeout` has
    /// passed, the pool errors IO (`error_if_no_space`, in its status too), raises an event,
    /// and the held writes fail with `ENOSPC`, as dm-thin's `do_no_space_timeout`. Not while
    /// the pool is suspended (dm-thin's timer is cancelled then, and armed again on resume).
    fn check_no_space_timeout(&self) {
        let this = self;
        let due = |p: &Self| {
            let deadline = p.no_space_deadline.load(Ordering::Acquire);
            p.active.load(Ordering::Acquire)
                && p.out_of_space.load(Ordering::Acquire)
                && deadline != 0
                && jiffies() >= deadline
        };
        if !due(this) {
            return;
        }
        let held = {
            // Under `md`, as `hold`: no write is held after this.
            let _md = this.md.write();
            if !due(this) {
                return;
            }
            this.no_space_deadline.store(0, Ordering::Release);
            this.no_space_timed_out.store(true, Ordering::Release);
            this.event_pending.store(true, Ordering::Release);
            dm_warn!(
                PREFIX,
                "{}: switching pool to out-of-data-space (error IO) mode",
                this.name
            );
            this.held.lock().take_all()
        };
        for bio in held {
            bio.end(BlkStatus::NOSPC);
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Write,
            1 => Mode::OutOfMetadataSpace,
            2 => Mode::ReadOnly,
            _ => Mode::Fail,
        }
    }

    /// Moves to a worse mode (never back).
    pub(crate) fn degrade(&self, md: &mut PoolMetadata<BufioBm>, to: Mode) {
        if to > self.mode() {
            self.set_mode(md, to);
        }
    }

    /// Sets the pool's mode (the metadata lock held), with dm-thin's rules: a pool whose
    /// metadata needs checking never goes (back) to write mode, and a failed pool stays
    /// failed. A change is logged, as dm-thin's.
    pub(crate) fn set_mode(&self, md: &mut PoolMetadata<BufioBm>, want: Mode) {
        let old = self.mode();
        let mut new = want;
        if new == Mode::Write && md.needs_check() {
            dm_err!(
                PREFIX,
                "{}: unable to switch pool to write mode until repaired.",
                self.name
            );
            new = if old != Mode::Write {
                old
            } else {
                Mode::ReadOnly
            };
        }
        if old == Mode::Fail {
            new = Mode::Fail;
        }
        md.set_read_only(new != Mode::Write);
        self.mode.store(new as u8, Ordering::Release);
        if new != old {
            // As dm-thin, every mode change is an event (raised once the lock is gone).
            self.event_pending.store(true, Ordering::Release);
            let desc = match new {
                Mode::Write => "write",
                Mode::OutOfMetadataSpace | Mode::ReadOnly => "read-only",
                Mode::Fail => "fail",
            };
            dm_err!(PREFIX, "{}: switching pool to {} mode", self.name, desc);
        }
    }

    /// Raises the event the pool owes its table, if any (no lock held, process context).
    pub(crate) fn raise_pending_event(&self) {
        if self.event_pending.swap(false, Ordering::AcqRel) {
            if let Some(t) = &*self.table.lock() {
                t.raise_event();
            }
        }
    }

    /// Before a data block is allocated: a pool whose free data blocks are down to the low
    /// water mark raises an event, once until it resumes again, as dm-thin's
    /// `check_low_water_mark`.
    pub(crate) fn check_low_water(&self, md: &MdState) {
        if md.free_data_blocks() <= self.low_water_blocks.load(Ordering::Relaxed)
            && !self.low_water_triggered.swap(true, Ordering::AcqRel)
        {
            dm_warn!(
                PREFIX,
                "{}: reached low water mark for data device: sending event.",
                self.name
            );
            self.event_pending.store(true, Ordering::Release);
        }
    }

    /// After a commit: free metadata blocks that went down to the metadata low water mark
    /// raise an event (dm-thin's metadata space map threshold, which it looks at when it
    /// allocates a block; rthin at each commit). And with no free block left outside the
    /// reserve, the pool goes to out-of-metadata-space mode, as dm-thin's
    /// `check_for_metadata_space`.
    fn check_metadata_space(&self, md: &mut MdState) {
        let raw_free = md.free_metadata_blocks();
        let low = raw_free <= self.metadata_threshold.load(Ordering::Relaxed);
        if low && !self.metadata_low.swap(low, Ordering::AcqRel) {
            dm_warn!(
                PREFIX,
                "{}: reached low water mark for metadata device: sending event.",
                self.name
            );
            self.event_pending.store(true, Ordering::Release);
        } else if !low {
            self.metadata_low.store(false, Ordering::Release);
        }
        let free = raw_free.saturating_sub(metadata_reserve(md.nr_metadata_blocks()));
        if free == 0 && self.mode() == Mode::Write {
            dm_err!(PREFIX, "No free metadata blocks");
            self.set_mode(&mut md.pmd, Mode::OutOfMetadataSpace);
        }
    }

    /// A metadata operation failed: roll back to the last commit and stop writing, as
    /// dm-thin. The rollback resets the existing dm-bufio client under the metadata lock; it
    /// never creates one (seed 004).
    pub(crate) fn metadata_failed(&self, md: &mut MdState, op: &str, e: crate::pdata::Error) {
        dm_err!(
            PREFIX,
            "{}: metadata operation '{}' failed: error = {}",
            self.name,
            op,
            -e.errno()
        );
        dm_err!(
            PREFIX,
            "{}: aborting current metadata transaction",
            self.name
        );
        // Thin devices whose changes the abort throws away fail their flushes from now on.
        for d in md.open.iter_mut() {
            d.aborted |= d.changed;
            d.changed = false;
        }
        let mut to = Mode::ReadOnly;
        if md.abort().is_err() {
            dm_err!(
                PREFIX,
                "{}: failed to abort metadata transaction",
                self.name
            );
            to = Mode::Fail;
        }
        if md.set_needs_check().is_err() {
            dm_err!(
                PREFIX,
                "{}: failed to set 'needs_check' flag in metadata",
                self.name
            );
            to = Mode::Fail;
        }
        self.degrade(&mut md.pmd, to);
    }

    /// Commits with the metadata lock held; a failure aborts (see `metadata_failed`).
    ///
    /// As dm-thin, the data device's write cache is flushed first: a mapping must not reach
    /// the disk before the data it points to. That flush, and the metadata writes, are the
    /// IO waited for under the metadata lock; their completion takes no rthin lock.
    pub(crate) fn commit_locked(&self, md: &mut MdState) -> Result {
        if self.mode() != Mode::Write || !md.changed_this_transaction() {
            return Ok(());
        }
        if let Err(e) = self.data_dev.flush() {
            dm_err!(
                PREFIX,
                "{}: flushing the data device before commit failed: error = {}",
                self.name,
                e.to_errno()
            );
            self.metadata_failed(md, "dm_pool_commit_metadata", crate::pdata::Error::Io);
            return Err(e);
        }
        let r = match md.commit() {
            Ok(()) => {
                for d in md.open.iter_mut() {
                    d.changed = false;
                }
                self.check_metadata_space(md);
                // As dm-thin's `check_for_data_space`: blocks freed in the transaction (by
                // discards, a deleted device) or added by a resize are free now.
                if self.mode() == Mode::Write && md.free_data_blocks() > 0 {
                    self.leave_no_space();
                }
                Ok(())
            }
            Err(e) => {
                self.metadata_failed(md, "dm_pool_commit_metadata", e);
                Err(to_kernel(e))
            }
        };
        self.last_commit.store(jiffies(), Ordering::Relaxed);
        r
    }

    /// Commits (process context, no lock held), then raises the event a mode change of the
    /// commit (or anything before it) left pending.
    pub(crate) fn commit(&self) {
        let _ = self.commit_locked(&mut self.md.write());
        self.raise_pending_event();
    }

    /// Stops the waker and waits for a running instance (process context, no lock held).
    /// Bios already deferred are still served (unless the pool is suspended): the worker is
    /// kicked again if any wait.
    fn stop_waker(this: &Ref<Self>) {
        this.active.store(false, Ordering::Release);
        DelayedWork::stop(&**this);
        // One rank-4 lock at a time: each guard goes before the next lock is taken.
        let deferred = !this.deferred.lock().is_empty();
        let prepared = !this.prepared.lock().is_empty();
        if deferred || prepared {
            Self::kick(this);
        }
    }

    /// Whether a thin device may be opened (its table built): it exists, and the pool is not
    /// failed. Counts the opening; [`PoolCore::close_thin`] undoes it.
    pub(crate) fn open_thin(&self, dev: u64) -> Result<(), CtrError> {
        let mut md = self.md.write();
        if self.mode() == Mode::Fail {
            return Err(CtrError::new(
                EINVAL,
                c_str!("Couldn't open thin device, Pool is in fail mode"),
            ));
        }
        md.device_details(dev).map_err(|e| {
            CtrError::new(to_kernel(e), c_str!("Couldn't open thin internal device"))
        })?;
        if let Some(e) = md.open.iter_mut().find(|e| e.id == dev) {
            e.tables += 1;
            return Ok(());
        }
        // Under the metadata lock, so a NOIO allocation (see `NoioRwSem`).
        let d = OpenDev {
            id: dev,
            tables: 1,
            changed: false,
            aborted: false,
        };
        md.open
            .push(d, GFP_KERNEL)
            .map_err(|_| CtrError::new(ENOMEM, c_str!("Couldn't open thin internal device")))
    }

    /// Undoes one [`PoolCore::open_thin`].
    pub(crate) fn close_thin(&self, dev: u64) {
        let mut md = self.md.write();
        if let Some(i) = md.open.iter().position(|e| e.id == dev) {
            md.open[i].tables -= 1;
            if md.open[i].tables == 0 {
                swap_remove(&mut md.open, i);
            }
        }
    }

    /// The prison changed (under `md` held for writing): records whether any cell is left,
    /// and wakes a suspending pool when none is.
    pub(crate) fn cells_changed(&self, md: &MdState) {
        self.idle.set(IDLE_BUSY, !md.prison.is_empty());
    }

    pub(crate) fn has_feature(&self, f: u8) -> bool {
        self.features.load(Ordering::Relaxed) & f != 0
    }
}

/// A pool in the registry: the mapped device it is the table of, its devices, and how many
/// users it has: its tables (live or loaded) and its open thin devices, as dm-thin's
/// `__pool_inc`/`__pool_dec` count them. It stays registered while any user is left, so a
/// thin device keeps its pool's state across a wiped or replaced pool table, and a new pool
/// table on the same devices finds it again instead of opening the metadata a second time.
struct Entry {
    pool_md: u32,
    meta: u32,
    data: u32,
    users: usize,
    /// The last user has gone and the pool is shutting down (outside the registry lock); a
    /// pool table meeting its devices waits until it is gone.
    closing: bool,
    core: Owner<PoolCore>,
}

/// Every pool of the module, found by thin devices through their pool device and by a pool's
/// new table on reload (global lock, rank 3 in [`crate::locking`]).
static POOLS: GlobalRwLock<KVec<Entry>> = GlobalRwLock::new(KVec::new());

/// A user of a pool: a pool table or an open thin device. The pool stays registered while it
/// lives; dropping the last one shuts the pool down and destroys it, in the dropping thread,
/// which must be in process context with no lock held (a target's constructor or
/// destructor).
pub(crate) struct PoolUse {
    core: Option<Ref<PoolCore>>,
}

impl PoolUse {
    /// The counted reference, for handing the pool to its workqueue.
    pub(crate) fn core_ref(&self) -> &Ref<PoolCore> {
        // `core` is `Some` until `drop`.
        self.core.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Deref for PoolUse {
    type Target = PoolCore;

    fn deref(&self) -> &PoolCore {
        self.core_ref()
    }
}

impl Drop for PoolUse {
    fn drop(&mut self) {
        if let Some(r) = self.core.take() {
            release(r);
        }
    }
}

/// A new user of `e`'s pool (the registry lock held for writing).
fn add_user(e: &mut Entry) -> PoolUse {
    e.users += 1;
    PoolUse {
        core: Some(e.core.get()),
    }
}

/// Finds the pool whose mapped device is `pool_md` (a thin device's pool device) and adds
/// the thin device as a user.
pub(crate) fn find_pool(pool_md: u32) -> Option<PoolUse> {
    let mut pools = POOLS.write();
    pools
        .iter_mut()
        .find(|e| e.pool_md == pool_md && !e.closing)
        .map(add_user)
}

/// Drops one user of a pool. The last one takes the pool out of service: it stops the
/// waker and commits (with no lock held but the metadata lock), then takes the entry out of
/// the registry and drops the owner, which waits for queued work to let go of the pool and
/// destroys it here, in process context.
fn release(r: Ref<PoolCore>) {
    {
        let mut pools = POOLS.write();
        let Some(e) = pools.iter_mut().find(|e| e.core.owns(&r)) else {
            return;
        };
        e.users -= 1;
        if e.users > 0 {
            return;
        }
        e.closing = true;
    }
    PoolCore::stop_waker(&r);
    r.commit();
    let removed = {
        let mut pools = POOLS.write();
        let Some(i) = pools.iter().position(|e| e.core.owns(&r)) else {
            return;
        };
        let e = swap_remove(&mut pools, i);
        // An empty registry gives its memory back (the module may be unloaded next).
        let old = if pools.is_empty() {
            Some(::core::mem::take(&mut *pools))
        } else {
            None
        };
        (e, old)
    };
    // Our reference first: the owner's drop waits for every reference to go.
    drop(r);
    drop(removed);
}

/// dm-thin's rules for a pool table meeting the pools that exist: the same pool device with
/// the same devices is a reload (the pool carries over), anything else sharing a device is
/// refused. `Ok(None)`: a new pool.
fn match_pool(
    pools: &[Entry],
    pool_md: u32,
    meta: u32,
    data: u32,
) -> Result<Option<usize>, CtrError> {
    if let Some(i) = pools.iter().position(|e| e.meta == meta) {
        if pools[i].pool_md != pool_md {
            return Err(CtrError::new(
                EBUSY,
                c_str!("metadata device already in use by a pool"),
            ));
        }
        if pools[i].data != data {
            return Err(CtrError::new(
                EBUSY,
                c_str!("data device already in use by a pool"),
            ));
        }
        return Ok(Some(i));
    }
    if pools.iter().any(|e| e.pool_md == pool_md) {
        return Err(CtrError::new(
            EINVAL,
            c_str!("different pool cannot replace a pool"),
        ));
    }
    if pools.iter().any(|e| e.data == data) {
        return Err(CtrError::new(
            EBUSY,
            c_str!("data device already in use by a pool"),
        ));
    }
    Ok(None)
}

/// An `rthin-pool` target: one table of a pool.
#[pin_data(PinnedDrop)]
pub struct Pool {
    metadata_dev: DmDev,
    data_dev: DmDev,
    sectors_per_block: u32,
    low_water_blocks: u64,
    features: Features,
    /// Discards are passed down to the data device: asked for (neither `ignore_discard` nor
    /// `no_discard_passdown`), and the data device takes discards of a whole block (decided
    /// in `io_hints`, as dm-thin's `disable_discard_passdown_if_not_supported`).
    passdown: AtomicBool,
    /// This table was bound to the pool (its preresume ran) before: a resume of it keeps the
    /// pool's mode, as dm-thin's `bind_control_target` does with the table's adjusted mode.
    bound: AtomicBool,
    /// This table, for the pool's events once it is bound.
    table: TableRef,
    /// Data blocks the pool target's length gives: the size of the data space.
    target_blocks: u64,
    /// The pool; dropping this table's use of it (in the destructor) may shut it down.
    core: PoolUse,
}

#[pinned_drop]
impl PinnedDrop for Pool {
    /// The pool's events go nowhere once its bound table is gone (as dm-thin's
    /// `unbind_control_target`): the table's handle must go before the table does.
    fn drop(self: Pin<&mut Self>) {
        let mut bound = self.core.table.lock();
        if bound.as_ref().is_some_and(|t| t.same_table(&self.table)) {
            *bound = None;
        }
    }
}

const NO_MD: &CStr = c_str!("Error creating metadata object");

/// A pool keeps the data block size it was formatted with: `want` must be `have`.
fn check_block_size(have: u32, want: u32) -> Result<(), CtrError> {
    if have != want {
        dm_err!(
            PREFIX,
            "changing the data block size (from {} to {}) is not supported",
            have,
            want
        );
        return Err(CtrError::new(EINVAL, NO_MD));
    }
    Ok(())
}
const NO_POOL: &CStr = c_str!("Error allocating pool");

impl PoolCore {
    /// Opens (or formats) the metadata and builds a new pool. No lock is held: the dm-bufio
    /// client registers a shrinker, and the kcopyd client and workqueue are created too.
    fn create(
        name: &CStr,
        meta: u32,
        data: u32,
        features: &Features,
        sectors_per_block: u32,
        nr_data_blocks: u64,
    ) -> Result<Owner<Self>, CtrError> {
        let meta_dev = BlockDevice::open(meta).map_err(|e| CtrError::new(e, NO_MD))?;
        let meta_dev = Arc::new(meta_dev, GFP_KERNEL).map_err(|_| CtrError::new(ENOMEM, NO_MD))?;
        let data_dev = BlockDevice::open(data).map_err(|e| CtrError::new(e, NO_POOL))?;
        let client = Client::new(meta_dev.clone(), 64).map_err(|e| CtrError::new(e, NO_MD))?;
        let bm = BufioBm::new(client).map_err(|e| CtrError::new(e, NO_MD))?;
        let md = if features.read_only {
            PoolMetadata::open(bm, true)
        } else {
            PoolMetadata::open_or_format(bm, sectors_per_block, nr_data_blocks)
        }
        .map_err(|e| {
            dm_err!(
                PREFIX,
                "could not open or format the pool metadata: error {}",
                -e.errno()
            );
            CtrError::new(to_kernel(e), NO_MD)
        })?;
        check_block_size(md.data_block_size(), sectors_per_block)?;
        let wq = Workqueue::new(c_str!("dm-rthin-pool")).map_err(|e| CtrError::new(e, NO_POOL))?;
        let kcopyd = Kcopyd::new().map_err(|e| CtrError::new(e, NO_POOL))?;
        let mode = if features.read_only {
            Mode::ReadOnly
        } else {
            Mode::Write
        };
        Owner::pin_init(
            try_pin_init!(PoolCore {
                md <- crate::new_noio_rwsem!(
                    MdState {
                        pmd: md,
                        open: KVec::new(),
                        prison: Prison::new(),
                    },
                    "rthin_pool_metadata"
                ),
                idle <- new_gate!("rthin_pool_idle"),
                throttle <- new_gate!("rthin_pool_throttle"),
                provisions: AtomicUsize::new(0),
                waker <- DelayedWork::new(),
                deferred <- crate::new_irq_spinlock!(Deferred::default(), "rthin_pool_deferred"),
                prepared <- crate::new_irq_spinlock!(BioList::new(), "rthin_pool_prepared"),
                held <- crate::new_irq_spinlock!(BioList::new(), "rthin_pool_held"),
                all_io <- crate::new_irq_spinlock!(DeferredSet::new(), "rthin_pool_all_io"),
                shared_read <- crate::new_irq_spinlock!(DeferredSet::new(), "rthin_pool_shared_read"),
                active: AtomicBool::new(false),
                mode: AtomicU8::new(mode as u8),
                suspended: AtomicBool::new(false),
                out_of_space: AtomicBool::new(false),
                no_space_deadline: AtomicU64::new(0),
                no_space_timed_out: AtomicBool::new(false),
                features: AtomicU8::new(features.bits()),
                last_commit: AtomicU64::new(jiffies()),
                low_water_blocks: AtomicU64::new(0),
                low_water_triggered: AtomicBool::new(false),
                metadata_threshold: AtomicU64::new(0),
                metadata_low: AtomicBool::new(false),
                event_pending: AtomicBool::new(false),
                table <- kernel::new_mutex!(None, "rthin_pool_table"),
                name: DevName::new(name),
                sectors_per_block,
                wq,
                kcopyd,
                data_dev,
                meta_dev,
            }? Error),
            GFP_KERNEL,
        )
        .map_err(|_| CtrError::new(ENOMEM, NO_POOL))
    }
}

#[vtable]
impl Target for Pool {
    const NAME: &'static CStr = c_str!("rthin-pool");
    const VERSION: [u32; 3] = [1, 23, 0];
    const FEATURES: u64 = features::SINGLETON
        | features::ALWAYS_WRITEABLE
        | features::IMMUTABLE
        | features::PASSES_CRYPTO;

    type PerBio = ();

    fn ctr(ctr: &mut Ctr<'_>, args: Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        let mut argv: KVec<&CStr> = KVec::new();
        for a in args {
            argv.push(a, GFP_KERNEL)
                .map_err(|_| CtrError::new(ENOMEM, c_str!("Cannot allocate pool arguments")))?;
        }
        if argv.len() < 4 {
            return Err(CtrError::new(EINVAL, c_str!("Invalid argument count")));
        }
        // The metadata and the data device must differ. dm-thin compares the two arguments
        // as strings; rthin also refuses two names of one device (below, once both are open).
        const SAME_DEVICE: CtrError =
            CtrError::new(EINVAL, c_str!("Error setting metadata or data device"));
        if argv[0].as_bytes() == argv[1].as_bytes() {
            return Err(SAME_DEVICE);
        }
        let features = Features::parse(&argv[4..])?;
        let metadata_dev = ctr
            .get_device(argv[0])
            .map_err(|e| CtrError::new(e, c_str!("Error opening metadata block device")))?;
        if metadata_dev.nr_sectors() > METADATA_WARN_SECTORS {
            dm_warn!(
                PREFIX,
                "Metadata device {} is larger than {} sectors: excess space will not be used.",
                metadata_dev.name(),
                MAX_METADATA_BLOCKS * 8
            );
        }
        let data_dev = ctr
            .get_device(argv[1])
            .map_err(|e| CtrError::new(e, c_str!("Error getting data device")))?;
        if metadata_dev.devt() == data_dev.devt() {
            return Err(SAME_DEVICE);
        }
        let sectors_per_block = parse_u64(argv[2])
            .filter(|&b| {
                (u64::from(DATA_BLOCK_SIZE_MIN)..=u64::from(DATA_BLOCK_SIZE_MAX)).contains(&b)
                    && b % u64::from(DATA_BLOCK_SIZE_MIN) == 0
            })
            .ok_or(CtrError::new(EINVAL, c_str!("Invalid block size")))?
            as u32;
        let low_water_blocks =
            parse_u64(argv[3]).ok_or(CtrError::new(EINVAL, c_str!("Invalid low water mark")))?;

        let nr_data_blocks = ctr.info().len() / u64::from(sectors_per_block);
        let (pool_md, meta, data) = (ctr.info().md_devt(), metadata_dev.devt(), data_dev.devt());

        // A reload of a live pool carries its state over (dm-thin's `__pool_find`); a new
        // pool is created with the registry lock held for writing, so two tables cannot both
        // open (or format) the same metadata before one of them is refused, as dm-thin's
        // `dm_thin_pool_table.mutex` serialises it.
        let core = loop {
            let mut pools = POOLS.write();
            if pools
                .iter()
                .any(|e| e.closing && (e.meta == meta || e.data == data || e.pool_md == pool_md))
            {
                // The pool's last user is shutting it down; wait until it is gone.
                drop(pools);
                msleep(10);
                continue;
            }
            if let Some(i) = match_pool(&pools, pool_md, meta, data)? {
                check_block_size(pools[i].core.sectors_per_block, sectors_per_block)?;
                // As dm-thin: whether the pool takes discards is fixed by its first table (thin
                // devices set their discard support when they are opened).
                if features.ignore_discard == pools[i].core.has_feature(FEAT_DISCARD) {
                    return Err(CtrError::new(
                        EINVAL,
                        c_str!("Discard support cannot be disabled once enabled"),
                    ));
                }
                break add_user(&mut pools[i]);
            }
            let core = PoolCore::create(
                ctr.info().device_name(),
                meta,
                data,
                &features,
                sectors_per_block,
                nr_data_blocks,
            )?;
            let entry = Entry {
                pool_md,
                meta,
                data,
                users: 0,
                closing: false,
                core,
            };
            pools
                .push(entry, GFP_KERNEL)
                .map_err(|_| CtrError::new(ENOMEM, NO_POOL))?;
            let last = pools.len() - 1;
            break add_user(&mut pools[last]);
        };
        let table = ctr.table_ref().map_err(|e| CtrError::new(e, NO_POOL))?;
        // The metadata lock is taken in `map`, so under memory reclaim too: tell lockdep, so
        // that an allocation under it that could recurse into reclaim is reported at once.
        core.md.taken_in_reclaim();
        // From here on, dropping `core` (with `pool`, or alone) releases this use of the pool.
        let pool = KBox::pin_init(
            pin_init!(Pool {
                metadata_dev,
                data_dev,
                sectors_per_block,
                low_water_blocks,
                features,
                passdown: AtomicBool::new(
                    !features.ignore_discard && !features.no_discard_passdown
                ),
                bound: AtomicBool::new(false),
                table,
                target_blocks: nr_data_blocks,
                core,
            }),
            GFP_KERNEL,
        )
        .map_err(|_| CtrError::new(ENOMEM, NO_POOL))?;
        ctr.set_num_flush_bios(1);
        ctr.set_limit_swap_bios(true);
        // As dm-thin: the pool device itself takes discards (sent on to the data device) only
        // when they are passed down; its limits are the data device's, whatever thin devices'
        // are ("discards supported" keeps dm from stacking them).
        if !features.ignore_discard && !features.no_discard_passdown {
            ctr.set_num_discard_bios(1);
            ctr.set_discards_supported(true);
            ctr.set_max_discard_granularity(true);
        }
        Ok(pool)
    }

    fn map<'a>(this: Pin<&Self>, _ti: &TargetInfo, mut bio: Bio<'a, ()>) -> MapResult<'a, ()> {
        // The pool is a singleton starting at sector 0: bios keep their sector. Thin devices
        // send their data here too, already remapped to data blocks.
        bio.set_dev(&this.data_dev);
        MapResult::Remapped(bio, ())
    }

    /// As dm-thin's pool presuspend, which suspends the pool's active thin devices: from
    /// here on the worker starts no provisioning (it holds deferred bios until resume), and
    /// the provisions in flight finish now, while the pool device still takes IO (their data
    /// writes go through it). Then nothing is left to write to the data device, and
    /// `postsuspend` commits the last mappings.
    fn presuspend(this: Pin<&Self>, _ti: &TargetInfo) {
        let core = &this.core;
        core.suspended.store(true, Ordering::Release);
        // The worker holds cells under `md` held for writing, and looks at `suspended` there:
        // once this pass through the lock is over, it holds no new ones, and the idle gate says
        // whether any is left.
        drop(core.md.write());
        core.idle.wait_clear();
    }

    fn presuspend_undo(this: Pin<&Self>) {
        this.core.suspended.store(false, Ordering::Release);
        PoolCore::kick(this.core.core_ref());
    }

    /// As dm-thin's: stop the waker, let the worker finish what it is doing, and commit.
    /// After this, nothing reaches the metadata or data device until resume: the worker
    /// holds what the thin devices send.
    fn postsuspend(this: Pin<&Self>) {
        PoolCore::stop_waker(this.core.core_ref());
        this.core.wq.flush();
        this.core.commit();
    }

    fn resume(this: Pin<&Self>) {
        this.core
            .low_water_triggered
            .store(false, Ordering::Release);
        this.core.suspended.store(false, Ordering::Release);
        // Held writes are tried again, as dm-thin's `requeue_bios` on resume: the pool may
        // have grown, or changed mode. Serve them and what thin devices sent while the pool
        // was suspended.
        this.core.requeue_held();
        let core = this.core.core_ref();
        PoolCore::kick(core);
        if !core.active.swap(true, Ordering::AcqRel) {
            if let Err(e) = core
                .wq
                .enqueue_delayed::<PoolCore>(core.clone(), waker_delay())
            {
                dm_err!(
                    PREFIX,
                    "could not start periodic commits: error {}",
                    e.to_errno()
                );
            }
        }
    }

    fn preresume(this: Pin<&Self>) -> Result {
        // The pool's events go to this table from now on.
        *this.core.table.lock() = Some(this.table.clone());
        let mut md = this.core.md.write();
        // This table becomes the pool's: its features rule the IO path, and, the first time
        // it is bound, its read_only flag the mode (a failed pool stays failed, and one whose
        // metadata needs checking read-only, as dm-thin's `bind_control_target`); a resume of
        // a table bound before keeps the pool's mode.
        let passdown = if this.passdown.load(Ordering::Relaxed) {
            FEAT_PASSDOWN
        } else {
            0
        };
        this.core
            .features
            .store(this.features.bits() | passdown, Ordering::Relaxed);
        this.core
            .low_water_blocks
            .store(this.low_water_blocks, Ordering::Relaxed);
        this.core
            .metadata_threshold
            .store(this.metadata_threshold(), Ordering::Relaxed);
        let first = !this.bound.swap(true, Ordering::AcqRel);
        let mode = if !first {
            this.core.mode()
        } else if this.features.read_only {
            Mode::ReadOnly
        } else {
            Mode::Write
        };
        this.core.set_mode(&mut md, mode);
        // As dm-thin's `bind_control_target`: the table's `error_if_no_space` rules again
        // (after a no-space timeout too); a new table starts in write mode, and writes held
        // for space are tried again on resume (and held again if there still is none); with
        // the same table the pool stays out of data space, and its held writes get a new
        // `no_space_timeout` from now.
        this.core.no_space_timed_out.store(false, Ordering::Release);
        if first && this.core.mode() == Mode::Write {
            this.core.leave_no_space();
        } else if this.core.out_of_space.load(Ordering::Acquire) {
            this.core.arm_no_space_deadline();
        }
        // The data space is as large as the pool target: grow it to a longer table.
        let mut commit = false;
        let (have, want) = (md.nr_data_blocks(), this.target_blocks);
        if want < have {
            dm_err!(
                PREFIX,
                "pool target ({} blocks) too small: expected {}",
                want,
                have
            );
            return Err(EINVAL);
        }
        if want > have && md.needs_check() {
            // As dm-thin: the table is taken, the data space stays as it is.
            dm_err!(
                PREFIX,
                "{}: unable to grow the data device until repaired.",
                this.core.name
            );
        } else if want > have {
            if this.core.mode() != Mode::Write {
                dm_err!(
                    PREFIX,
                    "{}: unable to grow the data device until repaired",
                    this.core.name
                );
                return Err(EINVAL);
            }
            if let Err(e) = md.resize_data(want) {
                this.core
                    .metadata_failed(&mut md, "dm_pool_resize_data_dev", e);
                return Err(to_kernel(e));
            }
            commit = true;
        }
        commit |= this.resize_metadata(&mut md)?;
        if commit {
            // The commit leaves out-of-data-space mode if the data space grew: the new
            // blocks are free.
            this.core.commit_locked(&mut md)?;
        }
        Ok(())
    }

    fn status(
        this: Pin<&Self>,
        ti: &TargetInfo,
        kind: StatusType,
        flags: u32,
        out: &mut StatusWriter<'_>,
    ) {
        // As dm-thin, an INFO status commits first, so that its counts are those on disk,
        // unless the caller asked for no flush or the pool is suspended (which committed).
        // `commit` does nothing in a mode other than write, or with nothing to commit.
        if kind == StatusType::Info && flags & STATUS_NOFLUSH == 0 && !ti.is_suspended() {
            this.core.commit();
        }
        let _ = match kind {
            StatusType::Info => Self::info(&this, out),
            StatusType::Table => write!(
                out,
                "{} {} {} {} ",
                this.metadata_dev.name(),
                this.data_dev.name(),
                this.sectors_per_block,
                this.low_water_blocks
            )
            .and_then(|()| this.features.emit(out)),
            StatusType::Ima => Ok(()),
        };
    }

    fn message(
        this: Pin<&Self>,
        _ti: &TargetInfo,
        args: Args<'_>,
        _out: &mut StatusWriter<'_>,
    ) -> Result {
        let argc = args.len();
        let arg = |i| args.get(i).unwrap_or(c_str!(""));
        let name = arg(0).as_bytes();
        let mut md = this.core.md.write();
        if this.core.mode() != Mode::Write {
            dm_err!(
                PREFIX,
                "{}: unable to service pool target messages in READ_ONLY or FAIL mode",
                this.core.name
            );
            return Err(to_kernel(crate::pdata::Error::NotSupported));
        }
        let want = |n: usize| {
            if argc != n {
                dm_warn!(
                    PREFIX,
                    "Message received with {} arguments instead of {}.",
                    argc,
                    n
                );
                return Err(EINVAL);
            }
            Ok(())
        };
        let dev_id = |i: usize| {
            let a = arg(i);
            match parse_u64(a) {
                Some(id) if id <= MAX_DEV_ID => Ok(id),
                _ => {
                    dm_warn!(PREFIX, "Message received with invalid device id: {}", a);
                    Err(EINVAL)
                }
            }
        };
        // The metadata operation that failed, if one did (see below).
        let mut failed_op = None;
        let r = if name.eq_ignore_ascii_case(b"create_thin") {
            want(2)?;
            let id = dev_id(1)?;
            md.create_thin(id).map_err(|e| {
                failed_op = Some(("dm_pool_create_thin", e));
                dm_warn!(
                    PREFIX,
                    "Creation of new thinly-provisioned device with id {} failed.",
                    arg(1)
                );
                to_kernel(e)
            })
        } else if name.eq_ignore_ascii_case(b"create_snap") {
            want(3)?;
            let (id, origin) = (dev_id(1)?, dev_id(2)?);
            md.create_snap(id, origin).map_err(|e| {
                failed_op = Some(("dm_pool_create_snap", e));
                dm_warn!(
                    PREFIX,
                    "Creation of new snapshot {} of device {} failed.",
                    arg(1),
                    arg(2)
                );
                to_kernel(e)
            })
        } else if name.eq_ignore_ascii_case(b"delete") {
            want(2)?;
            let id = dev_id(1)?;
            if md.open.iter().any(|e| e.id == id) {
                dm_warn!(PREFIX, "Deletion of thin device {} failed.", arg(1));
                return Err(EBUSY);
            }
            md.delete_thin(id).map_err(|e| {
                failed_op = Some(("dm_pool_delete_thin", e));
                dm_warn!(PREFIX, "Deletion of thin device {} failed.", arg(1));
                to_kernel(e)
            })
        } else if name.eq_ignore_ascii_case(b"set_transaction_id") {
            want(3)?;
            let old = parse_u64(arg(1)).ok_or_else(|| {
                dm_warn!(
                    PREFIX,
                    "set_transaction_id message: Unrecognised id {}.",
                    arg(1)
                );
                EINVAL
            })?;
            let new = parse_u64(arg(2)).ok_or_else(|| {
                dm_warn!(
                    PREFIX,
                    "set_transaction_id message: Unrecognised new id {}.",
                    arg(2)
                );
                EINVAL
            })?;
            md.set_transaction_id(old, new).map_err(|e| {
                failed_op = Some(("dm_pool_set_metadata_transaction_id", e));
                dm_warn!(
                    PREFIX,
                    "Failed to change transaction id from {} to {}.",
                    arg(1),
                    arg(2)
                );
                to_kernel(e)
            })
        } else if name.eq_ignore_ascii_case(b"reserve_metadata_snap") {
            want(1)?;
            md.reserve_metadata_snap().map_err(|e| {
                failed_op = Some(("dm_pool_reserve_metadata_snap", e));
                to_kernel(e)
            })
        } else if name.eq_ignore_ascii_case(b"release_metadata_snap") {
            want(1)?;
            md.release_metadata_snap().map_err(|e| {
                failed_op = Some(("dm_pool_release_metadata_snap", e));
                to_kernel(e)
            })
        } else {
            dm_warn!(
                PREFIX,
                "Unrecognised thin pool target message received: {}",
                arg(0)
            );
            Err(EINVAL)
        };
        // A message refused before it changed anything (an id in use, no such device) leaves
        // the metadata as it was. One that failed half-way through its change (a metadata
        // read or allocation failed) left the metadata failed: that transaction cannot be
        // kept, so the pool aborts it and goes read-only now, as after a failed commit,
        // instead of reporting 'rw' while it refuses every change.
        if let Some((op, e)) = failed_op {
            if md.failed() {
                this.core.metadata_failed(&mut md, op, e);
                drop(md);
                this.core.raise_pending_event();
            }
        } else if r.is_ok() {
            let c = this.core.commit_locked(&mut md);
            drop(md);
            this.core.raise_pending_event();
            c?;
        }
        r
    }

    fn iterate_devices(this: Pin<&Self>, ti: &TargetInfo, callout: &mut Callout<'_>) -> i32 {
        callout.call(&this.data_dev, 0, ti.len())
    }

    /// As dm-thin's `pool_io_hints`: IO sizes that suit the block size, and discard limits
    /// that say whether discards are passed down.
    fn io_hints(this: Pin<&Self>, _ti: &TargetInfo, limits: &mut QueueLimits<'_>) {
        let spb = this.sectors_per_block;
        let is_factor = |n: u32, of: u32| of.checked_rem(n) == Some(0);
        // A largest IO smaller than a block becomes the largest power of two dividing the
        // block (so that IO to a striped data device can still add up to whole stripes).
        while limits.max_sectors() < spb && !is_factor(limits.max_sectors(), spb) {
            let mut m = limits.max_sectors();
            if m.is_power_of_two() {
                m = m.saturating_sub(1);
            }
            match m.checked_ilog2() {
                Some(log) => limits.set_max_sectors(1 << log),
                None => break,
            }
        }
        // Keep the stacked optimal IO size if it is a multiple of the block size.
        let io_opt = limits.io_opt() >> 9;
        if io_opt < spb || !is_factor(spb, io_opt) {
            let max = limits.max_sectors();
            limits.set_io_min(if is_factor(max, spb) {
                max << 9
            } else {
                spb << 9
            });
            limits.set_io_opt(spb << 9);
        }
        if this.features.ignore_discard {
            // dm would stack the data device's discard limits otherwise.
            limits.set_discard_granularity(0);
            return;
        }
        let mut passdown = !this.features.no_discard_passdown;
        if passdown {
            let max = this.data_dev.max_discard_sectors();
            let reason = if max == 0 {
                Some("discard unsupported")
            } else if max < spb {
                Some("max discard sectors smaller than a block")
            } else {
                None
            };
            if let Some(reason) = reason {
                dm_warn!(
                    PREFIX,
                    "Data device ({}) {}: Disabling discard passdown.",
                    this.data_dev.name(),
                    reason
                );
                passdown = false;
            }
        }
        this.passdown.store(passdown, Ordering::Relaxed);
        if !passdown {
            limits.set_max_hw_discard_sectors(0);
        }
    }
}

/// Metadata blocks held back from the free count: a tenth of the metadata space, at most
/// 4096 (16 MiB), as dm-thin's `metadata_reserve`. A commit that leaves no free block outside
/// it puts the pool in out-of-metadata-space mode.
fn metadata_reserve(nr_blocks: u64) -> u64 {
    (nr_blocks / 10).min(4096)
}

impl Pool {
    /// The metadata low water mark, in blocks: a quarter of the metadata device, at most 1024
    /// (4 MiB), as dm-thin's `calc_metadata_threshold`, from the device's size now (it may
    /// have grown since the table was made).
    fn metadata_threshold(&self) -> u64 {
        let blocks = (self.metadata_dev.nr_sectors() / 8).min(MAX_METADATA_BLOCKS);
        (blocks / 4).min(1024)
    }

    /// As dm-thin's `maybe_resize_metadata_dev`, on resume, with the metadata lock held: the
    /// metadata space grows to the metadata device's size (an LV grown by `lvextend
    /// --poolmetadatasize`), up to dm-thin's 16 GiB limit, and a pool out of metadata space
    /// is writable again; a device smaller than the metadata is refused. Whether a commit is
    /// due.
    fn resize_metadata(&self, md: &mut MdState) -> Result<bool> {
        let core = &self.core;
        let (have, size) = (md.nr_metadata_blocks(), md.bm().device_blocks());
        if size < have {
            dm_err!(
                PREFIX,
                "{}: metadata device ({} blocks) too small: expected {}",
                core.name,
                size,
                have
            );
            return Err(EINVAL);
        }
        if size == have {
            return Ok(false);
        }
        if md.needs_check() {
            dm_err!(
                PREFIX,
                "{}: unable to grow the metadata device until repaired.",
                core.name
            );
            return Ok(false);
        }
        if self.metadata_dev.nr_sectors() > METADATA_WARN_SECTORS {
            dm_warn!(
                PREFIX,
                "Metadata device {} is larger than {} sectors: excess space will not be used.",
                self.metadata_dev.name(),
                MAX_METADATA_BLOCKS * 8
            );
        }
        if core.mode() == Mode::OutOfMetadataSpace {
            core.set_mode(md, Mode::Write);
        }
        if core.mode() != Mode::Write {
            // Read-only (by its table) or failed: the metadata is not written.
            return Ok(false);
        }
        dm_info!(
            PREFIX,
            "{}: growing the metadata device from {} to {} blocks",
            core.name,
            have,
            size
        );
        md.bm().grow_to(size);
        if let Err(e) = md.resize_metadata(size) {
            core.metadata_failed(md, "dm_pool_resize_metadata_dev", e);
            return Err(to_kernel(e));
        }
        Ok(true)
    }

    fn info(&self, out: &mut StatusWriter<'_>) -> core::fmt::Result {
        let md = self.core.md.read();
        let mode = self.core.mode();
        if mode == Mode::Fail {
            return out.write_str("Fail");
        }
        let (meta_total, data_total) = (md.nr_metadata_blocks(), md.nr_data_blocks());
        // As dm-thin, keep a reserve of metadata blocks out of the free count, so the pool
        // reports running low before it has nothing left for its own bookkeeping.
        let meta_free = md
            .free_metadata_blocks()
            .saturating_sub(metadata_reserve(meta_total));
        write!(
            out,
            "{} {}/{} {}/{} ",
            md.transaction_id(),
            meta_total - meta_free.min(meta_total),
            meta_total,
            data_total - md.free_data_blocks().min(data_total),
            data_total
        )?;
        match md.held_root() {
            0 => out.write_str("- ")?,
            root => write!(out, "{} ", root)?,
        }
        out.write_str(
            if matches!(mode, Mode::ReadOnly | Mode::OutOfMetadataSpace) {
                "ro "
            } else if self.core.out_of_space.load(Ordering::Acquire) {
                "out_of_data_space "
            } else {
                "rw "
            },
        )?;
        out.write_str(if self.features.ignore_discard {
            "ignore_discard "
        } else if self.passdown.load(Ordering::Relaxed) {
            "discard_passdown "
        } else {
            "no_discard_passdown "
        })?;
        out.write_str(
            if self.features.error_if_no_space
                || self.core.no_space_timed_out.load(Ordering::Acquire)
            {
                "error_if_no_space "
            } else {
                "queue_if_no_space "
            },
        )?;
        out.write_str(if md.needs_check() {
            "needs_check "
        } else {
            "- "
        })?;
        write!(out, "{} ", self.metadata_threshold())
    }
}
