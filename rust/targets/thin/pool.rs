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
//! thin devices (`thin.rs`) remap their bios to data blocks on the pool device.
//!
//! What outlives one table of the pool lives in [`PoolCore`], found through a registry keyed
//! by the pool's mapped device: a table reload with the same devices carries it over, thin
//! devices find their pool there, and its own references to the metadata and data devices
//! do not depend on any table.
//!
//! As dm-thin, the pool commits its metadata every second while it is active (the "waker", a
//! delayed work item on the pool's own `WQ_MEM_RECLAIM` workqueue), on suspend, and on close.
//!
//! Locking: the metadata mutex is the pool-wide lock of rank 2 in [`crate::locking`]. It is
//! taken in process context only (the waker runs in a worker), and nothing else is locked
//! while it is held. The dm-bufio client (which registers a shrinker) is created before it
//! exists, never under it.

use crate::dm::{
    bufio::Client,
    kcopyd::Kcopyd,
    kvec::swap_remove,
    sync::{GlobalRwLock, IrqSpinLock},
    target::{features, parse_u64},
    workqueue::{jiffies, msecs_to_jiffies, DelayedWork, DelayedWorkItem, Workqueue},
    Args, Bio, BioList, BlockDevice, Callout, Ctr, CtrError, DmDev, MapResult, StatusType,
    StatusWriter, Target, TargetInfo,
};
use crate::pdata::{
    thin::{DATA_BLOCK_SIZE_MAX, DATA_BLOCK_SIZE_MIN, MAX_DEV_ID},
    PoolMetadata,
};
use crate::targets::metadata::{to_kernel, BufioBm, MAX_METADATA_BLOCKS};
use crate::targets::thin::{Cell, ThinBio};
use crate::{dm_err, dm_warn};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use core::{
    fmt::Write,
    ops::{Deref, DerefMut},
    pin::Pin,
};
use kernel::{
    alloc::flags::GFP_KERNEL,
    c_str, new_mutex,
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

/// The pool's modes, as dm-thin's (those the control plane has). A pool only moves to a
/// worse mode; a table reload starts afresh.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Mode {
    Write = 0,
    ReadOnly = 1,
    Fail = 2,
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

/// What the metadata mutex protects: the metadata, and the IO path's bookkeeping that must
/// agree with it.
pub(crate) struct MdState {
    pub(crate) pmd: PoolMetadata<BufioBm>,
    /// Thin devices with a live table, and how many tables each (a device in use cannot be
    /// deleted).
    pub(crate) open: KVec<(u64, u32)>,
    /// Virtual blocks being provisioned, with the bios waiting for them (see `thin.rs`).
    pub(crate) cells: KVec<Cell>,
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
    pub(crate) bios: BioList<ThinBio>,
    /// One of `bios` asks for a flush or FUA: commit before serving them.
    pub(crate) flush: bool,
}

/// Table features the IO path follows, from the table bound last (`FEAT_*` bits).
pub(crate) const FEAT_SKIP_ZEROING: u8 = 1;
pub(crate) const FEAT_ERROR_IF_NO_SPACE: u8 = 2;
pub(crate) const FEAT_DISCARD: u8 = 4;

/// A pool: what outlives one table of it (a reload keeps it) and what thin devices share.
#[pin_data]
pub(crate) struct PoolCore {
    /// The pool-wide metadata lock (rank 2).
    #[pin]
    pub(crate) md: Mutex<MdState>,
    /// The pool's worker: serves deferred bios, and commits every second while the pool is
    /// active (the waker).
    #[pin]
    waker: DelayedWork<PoolCore>,
    /// Bios for the worker (rank 3 lock; taken in any context).
    #[pin]
    pub(crate) deferred: IrqSpinLock<Deferred>,
    /// Provisioning writes that completed, for the worker to map (rank 3 lock).
    #[pin]
    pub(crate) prepared: IrqSpinLock<BioList<ThinBio>>,
    /// Whether the waker re-arms itself (between resume and suspend).
    active: AtomicBool,
    /// The current [`Mode`].
    mode: AtomicU8,
    /// Between the pool's presuspend and resume: no thin device may be activated.
    pub(crate) suspended: AtomicBool,
    /// The data space is full (dm-thin's out-of-data-space mode); cleared when it grows.
    pub(crate) out_of_space: AtomicBool,
    /// `FEAT_*` bits of the bound table.
    pub(crate) features: AtomicU8,
    /// When the metadata was last committed, in jiffies.
    last_commit: AtomicU64,
    pub(crate) name: DevName,
    pub(crate) sectors_per_block: u32,
    pub(crate) wq: Workqueue,
    pub(crate) kcopyd: Kcopyd,
    /// The pool's own references to its devices, independent of any table.
    pub(crate) data_dev: BlockDevice,
    meta_dev: Arc<BlockDevice>,
}

/// How often an active pool commits its metadata, as dm-thin's `COMMIT_PERIOD`.
const COMMIT_PERIOD_MS: u32 = 1000;

impl DelayedWorkItem for PoolCore {
    fn delayed_work(&self) -> &DelayedWork<Self> {
        &self.waker
    }

    fn run(this: Arc<Self>) {
        PoolCore::work(&this);
        if jiffies().wrapping_sub(this.last_commit.load(Ordering::Relaxed))
            >= msecs_to_jiffies(COMMIT_PERIOD_MS)
        {
            this.commit();
        }
        if this.active.load(Ordering::Acquire) {
            let _ = this
                .wq
                .enqueue_delayed(this.clone(), msecs_to_jiffies(COMMIT_PERIOD_MS));
        }
    }
}

impl PoolCore {
    /// Has the worker run soon (any context).
    pub(crate) fn kick(this: &Arc<Self>) {
        // `kick` only fails for a work item outside its container, which `PoolCore` is not.
        let _ = this.wq.kick(this.clone());
    }

    pub(crate) fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Write,
            1 => Mode::ReadOnly,
            _ => Mode::Fail,
        }
    }

    /// Moves to a worse mode (never back), with dm-thin's log line.
    pub(crate) fn degrade(&self, md: &mut PoolMetadata<BufioBm>, to: Mode) {
        if to <= self.mode() {
            return;
        }
        match to {
            Mode::ReadOnly => dm_err!(PREFIX, "{}: switching pool to read-only mode", self.name),
            _ => dm_err!(PREFIX, "{}: switching pool to failure mode", self.name),
        }
        md.set_read_only(true);
        self.mode.store(to as u8, Ordering::Release);
    }

    /// A metadata operation failed: roll back to the last commit and stop writing, as
    /// dm-thin. The rollback resets the existing dm-bufio client under the metadata lock; it
    /// never creates one (seed 004).
    pub(crate) fn metadata_failed(
        &self,
        md: &mut PoolMetadata<BufioBm>,
        op: &str,
        e: crate::pdata::Error,
    ) {
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
        self.degrade(md, to);
    }

    /// Commits with the metadata lock held; a failure aborts (see `metadata_failed`).
    ///
    /// As dm-thin, the data device's write cache is flushed first: a mapping must not reach
    /// the disk before the data it points to. That flush, and the metadata writes, are the
    /// IO waited for under the metadata lock; their completion takes no rthin lock.
    pub(crate) fn commit_locked(&self, md: &mut PoolMetadata<BufioBm>) -> Result {
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
        let r = md.commit().map_err(|e| {
            self.metadata_failed(md, "dm_pool_commit_metadata", e);
            to_kernel(e)
        });
        self.last_commit.store(jiffies(), Ordering::Relaxed);
        r
    }

    pub(crate) fn commit(&self) {
        let mut md = self.md.lock();
        let _ = self.commit_locked(&mut md);
    }

    /// Stops the waker and waits for a running instance (process context, no lock held).
    /// Bios already deferred are still served: the worker is kicked again if any wait.
    fn stop_waker(this: &Arc<Self>) {
        this.active.store(false, Ordering::Release);
        DelayedWork::cancel_sync(this);
        // One rank-4 lock at a time: each guard goes before the next lock is taken.
        let deferred = !this.deferred.lock().bios.is_empty();
        let prepared = !this.prepared.lock().is_empty();
        if deferred || prepared {
            Self::kick(this);
        }
    }

    /// Whether a thin device may be opened (its table built): it exists, and the pool is not
    /// failed. Counts the opening; [`PoolCore::close_thin`] undoes it.
    pub(crate) fn open_thin(&self, dev: u64) -> Result<(), CtrError> {
        let mut md = self.md.lock();
        if self.mode() == Mode::Fail {
            return Err(CtrError::new(
                EINVAL,
                c_str!("Couldn't open thin device, Pool is in fail mode"),
            ));
        }
        md.device_details(dev).map_err(|e| {
            CtrError::new(to_kernel(e), c_str!("Couldn't open thin internal device"))
        })?;
        if let Some(e) = md.open.iter_mut().find(|e| e.0 == dev) {
            e.1 += 1;
            return Ok(());
        }
        md.open
            .push((dev, 1), GFP_KERNEL)
            .map_err(|_| CtrError::new(ENOMEM, c_str!("Couldn't open thin internal device")))
    }

    /// Undoes one [`PoolCore::open_thin`].
    pub(crate) fn close_thin(&self, dev: u64) {
        let mut md = self.md.lock();
        if let Some(i) = md.open.iter().position(|e| e.0 == dev) {
            md.open[i].1 -= 1;
            if md.open[i].1 == 0 {
                swap_remove(&mut md.open, i);
            }
        }
    }

    pub(crate) fn has_feature(&self, f: u8) -> bool {
        self.features.load(Ordering::Relaxed) & f != 0
    }
}

/// A pool in the registry: the mapped device it is the table of, its devices, and how many
/// tables (live or loaded) use it.
struct Entry {
    pool_md: u32,
    meta: u32,
    data: u32,
    tables: usize,
    core: Arc<PoolCore>,
}

/// Every pool of the module, found by thin devices through their pool device and by a pool's
/// new table on reload (global lock, rank 4 in [`crate::locking`]: lookups take it shared).
static POOLS: GlobalRwLock<KVec<Entry>> = GlobalRwLock::new(KVec::new());

/// Finds the pool whose mapped device is `pool_md` (a thin device's pool device).
pub(crate) fn find_pool(pool_md: u32) -> Option<Arc<PoolCore>> {
    let pools = POOLS.read();
    pools
        .iter()
        .find(|e| e.pool_md == pool_md)
        .map(|e| e.core.clone())
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
    metadata_threshold: u64,
    /// Data blocks the pool target's length gives: the size of the data space.
    target_blocks: u64,
    core: Arc<PoolCore>,
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
    ) -> Result<Arc<Self>, CtrError> {
        let meta_dev = BlockDevice::open(meta).map_err(|e| CtrError::new(e, NO_MD))?;
        let meta_dev = Arc::new(meta_dev, GFP_KERNEL).map_err(|_| CtrError::new(ENOMEM, NO_MD))?;
        let data_dev = BlockDevice::open(data).map_err(|e| CtrError::new(e, NO_POOL))?;
        let client = Client::new(meta_dev.clone(), 64).map_err(|e| CtrError::new(e, NO_MD))?;
        let bm = BufioBm::new(client);
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
        Arc::pin_init(
            pin_init!(PoolCore {
                md <- new_mutex!(
                    MdState {
                        pmd: md,
                        open: KVec::new(),
                        cells: KVec::new(),
                    },
                    "rthin_pool_metadata"
                ),
                waker <- DelayedWork::new(),
                deferred <- crate::new_irq_spinlock!(Deferred::default(), "rthin_pool_deferred"),
                prepared <- crate::new_irq_spinlock!(BioList::new(), "rthin_pool_prepared"),
                active: AtomicBool::new(false),
                mode: AtomicU8::new(mode as u8),
                suspended: AtomicBool::new(false),
                out_of_space: AtomicBool::new(false),
                features: AtomicU8::new(features.bits()),
                last_commit: AtomicU64::new(jiffies()),
                name: DevName::new(name),
                sectors_per_block,
                wq,
                kcopyd,
                data_dev,
                meta_dev,
            }),
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
        let features = Features::parse(&argv[4..])?;
        let metadata_dev = ctr
            .get_device(argv[0])
            .map_err(|e| CtrError::new(e, c_str!("Error opening metadata block device")))?;
        let data_dev = ctr
            .get_device(argv[1])
            .map_err(|e| CtrError::new(e, c_str!("Error getting data device")))?;
        let sectors_per_block = parse_u64(argv[2])
            .filter(|&b| {
                (u64::from(DATA_BLOCK_SIZE_MIN)..=u64::from(DATA_BLOCK_SIZE_MAX)).contains(&b)
                    && b % u64::from(DATA_BLOCK_SIZE_MIN) == 0
            })
            .ok_or(CtrError::new(EINVAL, c_str!("Invalid block size")))?
            as u32;
        let low_water_blocks =
            parse_u64(argv[3]).ok_or(CtrError::new(EINVAL, c_str!("Invalid low water mark")))?;

        let meta_blocks = (metadata_dev.nr_sectors() / 8).min(MAX_METADATA_BLOCKS);
        let metadata_threshold = (meta_blocks / 4).min(1024);
        let nr_data_blocks = ctr.info().len() / u64::from(sectors_per_block);
        let (pool_md, meta, data) = (ctr.info().md_devt(), metadata_dev.devt(), data_dev.devt());

        // A reload of a live pool carries its state over (dm-thin's `__pool_find`).
        let found = {
            let mut pools = POOLS.write();
            match match_pool(&pools, pool_md, meta, data)? {
                Some(i) => {
                    check_block_size(pools[i].core.sectors_per_block, sectors_per_block)?;
                    pools[i].tables += 1;
                    Some(pools[i].core.clone())
                }
                None => None,
            }
        };
        let core = match found {
            Some(core) => core,
            None => {
                let core = PoolCore::create(
                    ctr.info().device_name(),
                    meta,
                    data,
                    &features,
                    sectors_per_block,
                    nr_data_blocks,
                )?;
                let mut pools = POOLS.write();
                // Another table may have claimed a device while the metadata was opened.
                if match_pool(&pools, pool_md, meta, data)?.is_some() {
                    return Err(CtrError::new(
                        EBUSY,
                        c_str!("metadata device already in use by a pool"),
                    ));
                }
                pools
                    .push(
                        Entry {
                            pool_md,
                            meta,
                            data,
                            tables: 1,
                            core: core.clone(),
                        },
                        GFP_KERNEL,
                    )
                    .map_err(|_| CtrError::new(ENOMEM, NO_POOL))?;
                core
            }
        };
        // From here on, dropping `pool` releases the registry entry (see `PinnedDrop`).
        let pool_core = core.clone();
        let pool = KBox::pin_init(
            pin_init!(Pool {
                metadata_dev,
                data_dev,
                sectors_per_block,
                low_water_blocks,
                features,
                metadata_threshold,
                target_blocks: nr_data_blocks,
                core: pool_core,
            }),
            GFP_KERNEL,
        );
        let pool = match pool {
            Ok(p) => p,
            Err(_) => {
                release_table(&core);
                return Err(CtrError::new(ENOMEM, NO_POOL));
            }
        };
        ctr.set_num_flush_bios(1);
        if !features.ignore_discard {
            ctr.set_num_discard_bios(1);
        }
        Ok(pool)
    }

    fn map<'a>(this: Pin<&Self>, _ti: &TargetInfo, mut bio: Bio<'a, ()>) -> MapResult<'a, ()> {
        // The pool is a singleton starting at sector 0: bios keep their sector. Thin devices
        // send their data here too, already remapped to data blocks.
        bio.set_dev(&this.data_dev);
        MapResult::Remapped(bio, ())
    }

    fn presuspend(this: Pin<&Self>) {
        this.core.suspended.store(true, Ordering::Release);
    }

    fn postsuspend(this: Pin<&Self>) {
        PoolCore::stop_waker(&this.core);
        this.core.commit();
    }

    fn resume(this: Pin<&Self>) {
        this.core.suspended.store(false, Ordering::Release);
        // Serve what thin devices sent while the pool was suspended.
        PoolCore::kick(&this.core);
        if !this.core.active.swap(true, Ordering::AcqRel) {
            if let Err(e) = this
                .core
                .wq
                .enqueue_delayed(this.core.clone(), msecs_to_jiffies(COMMIT_PERIOD_MS))
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
        let mut md = this.core.md.lock();
        // This table becomes the pool's: its features rule the IO path, and its read_only
        // flag the mode (a failed pool stays failed, and one that needs checking read-only).
        this.core
            .features
            .store(this.features.bits(), Ordering::Relaxed);
        let mode = this.core.mode();
        if this.features.read_only {
            this.core.degrade(&mut md, Mode::ReadOnly);
        } else if mode == Mode::ReadOnly && !md.needs_check() && !md.failed() {
            md.set_read_only(false);
            this.core.mode.store(Mode::Write as u8, Ordering::Release);
        }
        // The data space is as large as the pool target: grow it to a longer table.
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
        if want > have {
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
            this.core.commit_locked(&mut md)?;
            this.core.out_of_space.store(false, Ordering::Release);
        }
        Ok(())
    }

    fn status(
        this: Pin<&Self>,
        _ti: &TargetInfo,
        kind: StatusType,
        _flags: u32,
        out: &mut StatusWriter<'_>,
    ) {
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
        let mut md = this.core.md.lock();
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
        let r = if name.eq_ignore_ascii_case(b"create_thin") {
            want(2)?;
            let id = dev_id(1)?;
            md.create_thin(id).map_err(|e| {
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
            if md.open.iter().any(|e| e.0 == id) {
                dm_warn!(PREFIX, "Deletion of thin device {} failed.", arg(1));
                return Err(EBUSY);
            }
            md.delete_thin(id).map_err(|e| {
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
            md.reserve_metadata_snap().map_err(to_kernel)
        } else if name.eq_ignore_ascii_case(b"release_metadata_snap") {
            want(1)?;
            md.release_metadata_snap().map_err(to_kernel)
        } else {
            dm_warn!(
                PREFIX,
                "Unrecognised thin pool target message received: {}",
                arg(0)
            );
            Err(EINVAL)
        };
        if r.is_ok() {
            this.core.commit_locked(&mut md)?;
        }
        r
    }

    fn iterate_devices(this: Pin<&Self>, ti: &TargetInfo, callout: &mut Callout<'_>) -> i32 {
        callout.call(&this.data_dev, 0, ti.len())
    }
}

/// Metadata blocks held back from the free count: a quarter of the device, at most 4096
/// (16 MiB), as dm-thin.
fn metadata_reserve(nr_blocks: u64) -> u64 {
    (nr_blocks / 4).min(4096)
}

impl Pool {
    fn info(&self, out: &mut StatusWriter<'_>) -> core::fmt::Result {
        let md = self.core.md.lock();
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
        out.write_str(if mode == Mode::ReadOnly {
            "ro "
        } else if self.core.out_of_space.load(Ordering::Acquire) {
            "out_of_data_space "
        } else {
            "rw "
        })?;
        out.write_str(if self.features.ignore_discard {
            "ignore_discard "
        } else if self.features.no_discard_passdown {
            "no_discard_passdown "
        } else {
            "discard_passdown "
        })?;
        out.write_str(if self.features.error_if_no_space {
            "error_if_no_space "
        } else {
            "queue_if_no_space "
        })?;
        out.write_str(if md.needs_check() {
            "needs_check "
        } else {
            "- "
        })?;
        write!(out, "{} ", self.metadata_threshold)
    }
}

/// Drops one table's use of `core`; the last one takes the pool out of the registry, stops
/// its waker and commits (process context, no lock held).
fn release_table(pool_core: &Arc<PoolCore>) {
    let removed = {
        let mut pools = POOLS.write();
        let Some(i) = pools.iter().position(|e| Arc::ptr_eq(&e.core, pool_core)) else {
            return;
        };
        pools[i].tables -= 1;
        if pools[i].tables > 0 {
            return;
        }
        let Some(e) = swap_remove(&mut pools, i) else {
            return;
        };
        // An empty registry gives its memory back (the module may be unloaded next).
        let old = if pools.is_empty() {
            Some(::core::mem::take(&mut *pools))
        } else {
            None
        };
        (e, old)
    };
    PoolCore::stop_waker(&removed.0.core);
    removed.0.core.commit();
    drop(removed);
}

#[pinned_drop]
impl PinnedDrop for Pool {
    fn drop(self: Pin<&mut Self>) {
        // The destructor runs in process context. The pool lives on if a newer table uses it
        // (a reload); otherwise its waker stops and what is outstanding is committed. The
        // workqueue is destroyed with the last reference to the core.
        release_table(&self.core);
    }
}
