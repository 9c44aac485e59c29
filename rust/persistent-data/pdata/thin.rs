//! Thin-pool metadata: the equivalent of `dm-thin-metadata.h`.
//!
//! On-disk layout (all little endian), identical to dm-thin's:
//! - block 0: the superblock;
//! - the mapping tree, two levels: thin device id -> (virtual block ->
//!   `data_block << 24 | time`), the bottom trees being shared between a
//!   device and its snapshots;
//! - the device details tree: device id -> {mapped_blocks,
//!   transaction_id, creation_time, snapshotted_time};
//! - the data and metadata space maps.

use super::block::{
    get_u32, get_u64, put_u32, put_u64, sub, sub_mut, BlockManager, Validator, BLOCK_SECTORS,
    THIN_MAGIC,
};
use super::btree::{self, NoRefs, ValueType, MAX_VALUE_SIZE};
use super::error::{Error, Result};
use super::sm::{DiskSm, SM_ROOT_SIZE};
use super::tm::{Tm, MAX_METADATA_BLOCKS};

/// Location of the superblock.
pub const SUPERBLOCK_LOCATION: u64 = 0;
/// Metadata format version written.
pub const THIN_VERSION: u32 = 2;
/// Superblock flag: the metadata needs checking (`thin_check`).
pub const NEEDS_CHECK_FLAG: u32 = 1;
/// Largest thin device id (24 bits).
pub const MAX_DEV_ID: u64 = (1 << 24) - 1;
/// Smallest data block size in sectors (64 KiB).
pub const DATA_BLOCK_SIZE_MIN: u32 = 128;
/// Largest data block size in sectors (1 GiB).
pub const DATA_BLOCK_SIZE_MAX: u32 = 2_097_152;
/// Data block numbers are 40 bits wide in mapping values.
pub const MAX_DATA_BLOCK: u64 = (1 << 40) - 1;
/// Size of a device details value.
pub const DETAILS_SIZE: usize = 24;

const OFF_FLAGS: usize = 4;
const OFF_UUID: usize = 16;
const OFF_MAGIC: usize = 32;
const OFF_VERSION: usize = 40;
const OFF_TIME: usize = 44;
const OFF_TRANS_ID: usize = 48;
const OFF_HELD_ROOT: usize = 56;
const OFF_DATA_SM: usize = 64;
const OFF_META_SM: usize = 192;
const OFF_MAPPING_ROOT: usize = 320;
const OFF_DETAILS_ROOT: usize = 328;
const OFF_DATA_BLOCK_SIZE: usize = 336;
const OFF_META_BLOCK_SIZE: usize = 340;
const OFF_META_NR_BLOCKS: usize = 344;
const OFF_COMPAT: usize = 352;
const OFF_COMPAT_RO: usize = 356;
const OFF_INCOMPAT: usize = 360;

/// Packs a mapping value.
pub fn pack_block_time(block: u64, time: u32) -> u64 {
    (block << 24) | u64::from(time & 0xff_ffff)
}

/// Unpacks a mapping value into (data block, time).
pub fn unpack_block_time(v: u64) -> (u64, u32) {
    (v >> 24, (v & 0xff_ffff) as u32)
}

/// Per-device details as stored in the details tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceDetails {
    /// Number of mapped blocks.
    pub mapped_blocks: u64,
    /// Transaction id when the device was created.
    pub transaction_id: u64,
    /// Pool time at creation.
    pub creation_time: u32,
    /// Pool time of the last snapshot of (or by) this device.
    pub snapshotted_time: u32,
}

impl DeviceDetails {
    fn decode(b: &[u8]) -> Result<Self> {
        Ok(DeviceDetails {
            mapped_blocks: get_u64(b, 0)?,
            transaction_id: get_u64(b, 8)?,
            creation_time: get_u32(b, 16)?,
            snapshotted_time: get_u32(b, 20)?,
        })
    }

    fn encode(&self) -> [u8; DETAILS_SIZE] {
        let mut b = [0u8; DETAILS_SIZE];
        let _ = put_u64(&mut b, 0, self.mapped_blocks);
        let _ = put_u64(&mut b, 8, self.transaction_id);
        let _ = put_u32(&mut b, 16, self.creation_time);
        let _ = put_u32(&mut b, 20, self.snapshotted_time);
        b
    }
}

/// Result of a mapping lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupResult {
    /// The data block.
    pub block: u64,
    /// The mapping may be shared with a snapshot (it predates the device's
    /// last snapshot), so writes must break sharing.
    pub shared: bool,
}

/// A run of consecutive mappings found by [`PoolMetadata::find_mapped_range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedRange {
    /// First virtual block of the run.
    pub thin_begin: u64,
    /// One past the last virtual block of the run.
    pub thin_end: u64,
    /// Data block of `thin_begin`; the run maps to consecutive data blocks.
    pub pool_begin: u64,
    /// Whether the run may be shared with a snapshot.
    pub maybe_shared: bool,
}

/// Leaf values of the bottom-level mapping trees: references to data blocks.
struct DataRefs<'a> {
    sm: &'a mut DiskSm,
}

impl<B: BlockManager> ValueType<B> for DataRefs<'_> {
    fn size(&self) -> usize {
        8
    }
    fn inc(&mut self, tm: &mut Tm<B>, v: &[u8]) -> Result<()> {
        self.sm.inc(tm, unpack_block_time(get_u64(v, 0)?).0)
    }
    fn dec(&mut self, tm: &mut Tm<B>, v: &[u8]) -> Result<()> {
        self.sm.dec(tm, unpack_block_time(get_u64(v, 0)?).0)
    }
}

/// Leaf values of the top-level mapping tree: roots of bottom-level trees.
/// Dropping one needs the data space map; paths that never drop values
/// pass `None`.
struct SubtreeRefs<'a> {
    sm: Option<&'a mut DiskSm>,
}

impl<B: BlockManager> ValueType<B> for SubtreeRefs<'_> {
    fn size(&self) -> usize {
        8
    }
    fn inc(&mut self, tm: &mut Tm<B>, v: &[u8]) -> Result<()> {
        tm.inc(get_u64(v, 0)?)
    }
    fn dec(&mut self, tm: &mut Tm<B>, v: &[u8]) -> Result<()> {
        let sm = self.sm.as_deref_mut().ok_or(Error::Inval)?;
        btree::del(tm, &mut DataRefs { sm }, get_u64(v, 0)?)
    }
}

fn val8(v: u64) -> [u8; MAX_VALUE_SIZE] {
    let mut b = [0u8; MAX_VALUE_SIZE];
    let _ = put_u64(&mut b, 0, v);
    b
}

/// Parsed superblock.
#[derive(Debug, Clone, Copy)]
struct Super {
    flags: u32,
    uuid: [u8; 16],
    version: u32,
    time: u32,
    trans_id: u64,
    held_root: u64,
    data_sm: [u8; SM_ROOT_SIZE],
    meta_sm: [u8; SM_ROOT_SIZE],
    mapping_root: u64,
    details_root: u64,
    data_block_size: u32,
    meta_block_size: u32,
    meta_nr_blocks: u64,
    compat: u32,
    compat_ro: u32,
    incompat: u32,
}

fn read_super<B: BlockManager>(bm: &B) -> Result<Super> {
    let g = bm.read_lock(SUPERBLOCK_LOCATION, Validator::Superblock)?;
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(sub(&g[..], OFF_UUID, 16)?);
    let mut data_sm = [0u8; SM_ROOT_SIZE];
    data_sm.copy_from_slice(sub(&g[..], OFF_DATA_SM, SM_ROOT_SIZE)?);
    let mut meta_sm = [0u8; SM_ROOT_SIZE];
    meta_sm.copy_from_slice(sub(&g[..], OFF_META_SM, SM_ROOT_SIZE)?);
    Ok(Super {
        flags: get_u32(&g[..], OFF_FLAGS)?,
        uuid,
        version: get_u32(&g[..], OFF_VERSION)?,
        time: get_u32(&g[..], OFF_TIME)?,
        trans_id: get_u64(&g[..], OFF_TRANS_ID)?,
        held_root: get_u64(&g[..], OFF_HELD_ROOT)?,
        data_sm,
        meta_sm,
        mapping_root: get_u64(&g[..], OFF_MAPPING_ROOT)?,
        details_root: get_u64(&g[..], OFF_DETAILS_ROOT)?,
        data_block_size: get_u32(&g[..], OFF_DATA_BLOCK_SIZE)?,
        meta_block_size: get_u32(&g[..], OFF_META_BLOCK_SIZE)?,
        meta_nr_blocks: get_u64(&g[..], OFF_META_NR_BLOCKS)?,
        compat: get_u32(&g[..], OFF_COMPAT)?,
        compat_ro: get_u32(&g[..], OFF_COMPAT_RO)?,
        incompat: get_u32(&g[..], OFF_INCOMPAT)?,
    })
}

fn write_super(d: &mut [u8], s: &Super) -> Result<()> {
    d.fill(0);
    put_u32(d, OFF_FLAGS, s.flags)?;
    sub_mut(d, OFF_UUID, 16)?.copy_from_slice(&s.uuid);
    put_u64(d, OFF_MAGIC, THIN_MAGIC)?;
    put_u32(d, OFF_VERSION, s.version)?;
    put_u32(d, OFF_TIME, s.time)?;
    put_u64(d, OFF_TRANS_ID, s.trans_id)?;
    put_u64(d, OFF_HELD_ROOT, s.held_root)?;
    sub_mut(d, OFF_DATA_SM, SM_ROOT_SIZE)?.copy_from_slice(&s.data_sm);
    sub_mut(d, OFF_META_SM, SM_ROOT_SIZE)?.copy_from_slice(&s.meta_sm);
    put_u64(d, OFF_MAPPING_ROOT, s.mapping_root)?;
    put_u64(d, OFF_DETAILS_ROOT, s.details_root)?;
    put_u32(d, OFF_DATA_BLOCK_SIZE, s.data_block_size)?;
    put_u32(d, OFF_META_BLOCK_SIZE, s.meta_block_size)?;
    put_u64(d, OFF_META_NR_BLOCKS, s.meta_nr_blocks)?;
    put_u32(d, OFF_COMPAT, s.compat)?;
    put_u32(d, OFF_COMPAT_RO, s.compat_ro)?;
    put_u32(d, OFF_INCOMPAT, s.incompat)?;
    Ok(())
}

/// Whether block 0 of the device is all zeroes (an unformatted device).
pub fn superblock_all_zeroes<B: BlockManager>(bm: &B) -> Result<bool> {
    let g = bm.read_lock(SUPERBLOCK_LOCATION, Validator::None)?;
    Ok(g.iter().all(|&b| b == 0))
}

/// Devices whose details are kept in memory at once.
const DETAILS_CACHE: usize = 8;

/// A device's details kept in memory; `dirty` if the details tree is behind.
#[derive(Debug, Clone, Copy)]
struct CachedDetails {
    dev: u64,
    details: DeviceDetails,
    dirty: bool,
}

/// Open thin-pool metadata.
pub struct PoolMetadata<B: BlockManager> {
    tm: Tm<B>,
    data_sm: DiskSm,
    sb: Super,
    read_only: bool,
    failed: bool,
    changed: bool,
    /// The details of the devices used lately, as dm-thin keeps its open devices': a
    /// mapping inserted or removed changes the count here, and the details tree is written
    /// at commit or when a changed entry makes room for another, not at every change.
    details: [Option<CachedDetails>; DETAILS_CACHE],
    /// The slot to reuse next when every slot is taken.
    details_victim: usize,
}

impl<B: BlockManager> PoolMetadata<B> {
    /// Formats the device behind `bm` with an empty pool of
    /// `nr_data_blocks` data blocks of `data_block_size` sectors, and
    /// commits it.
    pub fn format(bm: B, data_block_size: u32, nr_data_blocks: u64) -> Result<Self> {
        if !(DATA_BLOCK_SIZE_MIN..=DATA_BLOCK_SIZE_MAX).contains(&data_block_size)
            || data_block_size % DATA_BLOCK_SIZE_MIN != 0
            || nr_data_blocks > MAX_DATA_BLOCK
        {
            return Err(Error::Inval);
        }
        let nr_meta = bm.nr_blocks().min(MAX_METADATA_BLOCKS);
        let mut tm = Tm::format(bm, nr_meta, SUPERBLOCK_LOCATION)?;
        let data_sm = DiskSm::format(&mut tm, nr_data_blocks)?;
        let mapping_root = btree::empty(&mut tm, 8)?;
        let details_root = btree::empty(&mut tm, DETAILS_SIZE)?;
        let sb = Super {
            flags: 0,
            uuid: [0; 16],
            version: THIN_VERSION,
            time: 0,
            trans_id: 0,
            held_root: 0,
            data_sm: [0; SM_ROOT_SIZE],
            meta_sm: [0; SM_ROOT_SIZE],
            mapping_root,
            details_root,
            data_block_size,
            meta_block_size: BLOCK_SECTORS,
            meta_nr_blocks: nr_meta,
            compat: 0,
            compat_ro: 0,
            incompat: 0,
        };
        let mut p = PoolMetadata {
            tm,
            data_sm,
            sb,
            read_only: false,
            failed: false,
            changed: true,
            details: [None; DETAILS_CACHE],
            details_victim: 0,
        };
        p.commit()?;
        Ok(p)
    }

    /// Opens existing metadata. Read-only opens refuse every change.
    pub fn open(bm: B, read_only: bool) -> Result<Self> {
        let sb = read_super(&bm)?;
        if sb.incompat != 0
            || (!read_only && sb.compat_ro != 0)
            || sb.version == 0
            || sb.version > THIN_VERSION
        {
            return Err(Error::NotSupported);
        }
        if sb.meta_block_size != BLOCK_SECTORS {
            return Err(Error::Inval);
        }
        let tm = Tm::open(bm, &sb.meta_sm)?;
        let data_sm = DiskSm::open(&sb.data_sm)?;
        Ok(PoolMetadata {
            tm,
            data_sm,
            sb,
            read_only,
            failed: false,
            changed: false,
            details: [None; DETAILS_CACHE],
            details_victim: 0,
        })
    }

    /// Opens the device, formatting it first if block 0 is all zeroes.
    pub fn open_or_format(bm: B, data_block_size: u32, nr_data_blocks: u64) -> Result<Self> {
        if superblock_all_zeroes(&bm)? {
            Self::format(bm, data_block_size, nr_data_blocks)
        } else {
            Self::open(bm, false)
        }
    }

    /// Closes the metadata (without committing) and returns the block
    /// manager.
    pub fn into_bm(self) -> B {
        self.tm.into_bm()
    }

    /// The block manager.
    pub fn bm(&self) -> &B {
        self.tm.bm()
    }

    fn writable(&self) -> Result<()> {
        if self.read_only || self.failed {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Runs a modification; any failure leaves the metadata in failure
    /// mode until [`PoolMetadata::abort`].
    fn modify<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.writable()?;
        self.changed = true;
        let r = f(self);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Whether a failed modification requires an abort.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Commits the current transaction: everything is written and flushed,
    /// then the superblock is written and flushed.
    pub fn commit(&mut self) -> Result<()> {
        self.modify(|p| {
            p.write_details()?;
            p.tm.pre_commit()?;
            p.sb.data_sm = p.data_sm.root().encode();
            p.sb.meta_sm = p.tm.sm_root().encode();
            p.tm.bm().flush()?;
            {
                let mut g =
                    p.tm.bm()
                        .write_lock_zero(SUPERBLOCK_LOCATION, Validator::Superblock)?;
                write_super(&mut g[..], &p.sb)?;
            }
            p.tm.bm().flush()?;
            p.tm.committed();
            p.data_sm.committed();
            p.changed = false;
            Ok(())
        })
    }

    /// Whether anything changed since the last commit or abort.
    pub fn changed_this_transaction(&self) -> bool {
        self.changed
    }

    /// Switches between read-only and read-write operation (a failed pool
    /// stays failed until [`PoolMetadata::abort`]).
    pub fn set_read_only(&mut self, read_only: bool) {
        self.read_only = read_only;
    }

    /// Throws away the current transaction and reloads the last committed
    /// state. If that fails, the metadata stays failed: every change is
    /// refused, [`PoolMetadata::set_needs_check`] included, since the
    /// superblock in memory is still the aborted transaction's and must
    /// never reach the disk.
    pub fn abort(&mut self) -> Result<()> {
        self.failed = true;
        // Drop whatever the environment cached of the abandoned transaction, so everything
        // below is read back from the device.
        self.details = [None; DETAILS_CACHE];
        self.tm.bm_mut().reset();
        let sb = read_super(self.tm.bm())?;
        self.tm.reset(&sb.meta_sm)?;
        self.data_sm = DiskSm::open(&sb.data_sm)?;
        self.sb = sb;
        self.failed = false;
        self.changed = false;
        Ok(())
    }

    /// Current transaction id.
    pub fn transaction_id(&self) -> u64 {
        self.sb.trans_id
    }

    /// Sets the transaction id to `new` if it currently is `current`.
    pub fn set_transaction_id(&mut self, current: u64, new: u64) -> Result<()> {
        self.writable()?;
        if self.sb.trans_id != current {
            return Err(Error::Inval);
        }
        self.sb.trans_id = new;
        self.changed = true;
        Ok(())
    }

    /// Current pool time (bumped by every snapshot).
    pub fn time(&self) -> u32 {
        self.sb.time
    }

    /// Data block size in sectors.
    pub fn data_block_size(&self) -> u32 {
        self.sb.data_block_size
    }

    /// Whether the needs-check flag is set.
    pub fn needs_check(&self) -> bool {
        self.sb.flags & NEEDS_CHECK_FLAG != 0
    }

    /// Sets the needs-check flag. Refused while the metadata is failed (a
    /// modification or an abort failed): the superblock in memory may then
    /// be an uncommitted one.
    ///
    /// As dm-thin, this rewrites only the superblock of the last commit (with the flag) in
    /// the block manager's cache, so it succeeds after an abort even when the device fails
    /// writes; the flush that follows is best effort (a failed one leaves the block to be
    /// written back later).
    pub fn set_needs_check(&mut self) -> Result<()> {
        self.writable()?;
        self.sb.flags |= NEEDS_CHECK_FLAG;
        {
            let mut g = self
                .tm
                .bm()
                .write_lock_zero(SUPERBLOCK_LOCATION, Validator::Superblock)?;
            write_super(&mut g[..], &self.sb)?;
        }
        let _ = self.tm.bm().flush();
        Ok(())
    }

    /// Root of the reserved metadata snapshot (0 if none).
    pub fn held_root(&self) -> u64 {
        self.sb.held_root
    }

    /// Root of the two-level mapping tree (uncommitted).
    pub fn mapping_root(&self) -> u64 {
        self.sb.mapping_root
    }

    /// Root of the device details tree (uncommitted).
    pub fn details_root(&self) -> u64 {
        self.sb.details_root
    }

    /// Details of device `dev`, [`Error::NoData`] if it does not exist.
    pub fn device_details(&self, dev: u64) -> Result<DeviceDetails> {
        self.details_of(dev, true)
    }

    /// The slot of `dev`'s details in memory, if they are there.
    fn details_slot(&self, dev: u64) -> Option<usize> {
        self.details
            .iter()
            .position(|c| c.is_some_and(|c| c.dev == dev))
    }

    /// Details of `dev`, from memory or from the details tree.
    fn details_of(&self, dev: u64, can_block: bool) -> Result<DeviceDetails> {
        if let Some(c) = self
            .details_slot(dev)
            .and_then(|i| self.details.get(i).copied()?)
        {
            return Ok(c.details);
        }
        let mut v = [0u8; DETAILS_SIZE];
        btree::lookup(self.tm.bm(), self.sb.details_root, dev, &mut v, can_block)?;
        DeviceDetails::decode(&v)
    }

    /// Changes the details of `dev` in memory (loaded first if they are not there); the
    /// details tree follows at commit.
    fn update_details(
        &mut self,
        dev: u64,
        f: impl FnOnce(&mut DeviceDetails) -> Result<()>,
    ) -> Result<()> {
        let i = match self.details_slot(dev) {
            Some(i) => i,
            None => {
                let details = self.details_of(dev, true)?;
                let i = match self.details.iter().position(|c| c.is_none()) {
                    Some(i) => i,
                    None => {
                        let i = self.details_victim % DETAILS_CACHE;
                        self.details_victim = (i + 1) % DETAILS_CACHE;
                        if let Some(old) = self.details.get(i).copied().flatten() {
                            if old.dirty {
                                self.put_details(old.dev, &old.details)?;
                            }
                        }
                        i
                    }
                };
                let slot = self.details.get_mut(i).ok_or(Error::Corrupt)?;
                *slot = Some(CachedDetails {
                    dev,
                    details,
                    dirty: false,
                });
                i
            }
        };
        let c = self
            .details
            .get_mut(i)
            .and_then(|c| c.as_mut())
            .ok_or(Error::Corrupt)?;
        f(&mut c.details)?;
        c.dirty = true;
        Ok(())
    }

    /// Writes the changed details kept in memory to the details tree.
    fn write_details(&mut self) -> Result<()> {
        for i in 0..DETAILS_CACHE {
            if let Some(c) = self.details.get(i).copied().flatten() {
                if c.dirty {
                    self.put_details(c.dev, &c.details)?;
                    if let Some(Some(c)) = self.details.get_mut(i) {
                        c.dirty = false;
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops `dev`'s details from memory, changed or not: the caller writes the tree.
    fn forget_details(&mut self, dev: u64) {
        if let Some(i) = self.details_slot(dev) {
            if let Some(slot) = self.details.get_mut(i) {
                *slot = None;
            }
        }
    }

    fn put_details(&mut self, dev: u64, d: &DeviceDetails) -> Result<()> {
        self.sb.details_root = btree::insert(
            &mut self.tm,
            &mut NoRefs(DETAILS_SIZE),
            self.sb.details_root,
            dev,
            &d.encode(),
        )?
        .0;
        Ok(())
    }

    /// Calls `f(dev, details)` for every thin device.
    pub fn for_each_device(
        &self,
        f: &mut dyn FnMut(u64, DeviceDetails) -> Result<()>,
    ) -> Result<()> {
        let cached = |k: u64| {
            self.details
                .iter()
                .flatten()
                .find(|c| c.dev == k)
                .map(|c| c.details)
        };
        btree::walk(self.tm.bm(), self.sb.details_root, &mut |k, v| {
            f(k, cached(k).map_or_else(|| DeviceDetails::decode(v), Ok)?)
        })
    }

    fn subtree_root(&self, dev: u64, can_block: bool) -> Result<u64> {
        let mut v = [0u8; 8];
        btree::lookup(self.tm.bm(), self.sb.mapping_root, dev, &mut v, can_block)?;
        get_u64(&v, 0)
    }

    /// Calls `f(virtual block, data block, time)` for every mapping of `dev`.
    pub fn for_each_mapping(
        &self,
        dev: u64,
        f: &mut dyn FnMut(u64, u64, u32) -> Result<()>,
    ) -> Result<()> {
        let root = self.subtree_root(dev, true)?;
        btree::walk(self.tm.bm(), root, &mut |k, v| {
            let (b, t) = unpack_block_time(get_u64(v, 0)?);
            f(k, b, t)
        })
    }

    /// Checks that `dev` is a valid id that no device has yet.
    fn check_new_dev(&self, dev: u64) -> Result<()> {
        if dev > MAX_DEV_ID {
            return Err(Error::Inval);
        }
        match self.device_details(dev) {
            Ok(_) => Err(Error::Exists),
            Err(Error::NoData) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates an empty thin device `dev`.
    pub fn create_thin(&mut self, dev: u64) -> Result<()> {
        self.writable()?;
        self.check_new_dev(dev)?;
        self.modify(|p| {
            let sub = btree::empty(&mut p.tm, 8)?;
            p.sb.mapping_root = btree::insert(
                &mut p.tm,
                &mut SubtreeRefs { sm: None },
                p.sb.mapping_root,
                dev,
                &sub.to_le_bytes(),
            )?
            .0;
            let d = DeviceDetails {
                mapped_blocks: 0,
                transaction_id: p.sb.trans_id,
                creation_time: p.sb.time,
                snapshotted_time: p.sb.time,
            };
            p.forget_details(dev);
            p.put_details(dev, &d)
        })
    }

    /// Creates device `dev` as a snapshot of `origin`, sharing its mapping
    /// tree. Bumps the pool time.
    pub fn create_snap(&mut self, dev: u64, origin: u64) -> Result<()> {
        self.writable()?;
        self.check_new_dev(dev)?;
        let mut od = self.device_details(origin)?;
        let origin_root = self.subtree_root(origin, true)?;
        self.modify(|p| {
            p.tm.inc(origin_root)?;
            p.sb.mapping_root = btree::insert(
                &mut p.tm,
                &mut SubtreeRefs { sm: None },
                p.sb.mapping_root,
                dev,
                &origin_root.to_le_bytes(),
            )?
            .0;
            p.sb.time = p.sb.time.wrapping_add(1);
            od.snapshotted_time = p.sb.time;
            // `od` has the origin's latest details: the tree gets them, and memory forgets.
            p.forget_details(origin);
            p.forget_details(dev);
            p.put_details(origin, &od)?;
            let d = DeviceDetails {
                mapped_blocks: od.mapped_blocks,
                transaction_id: p.sb.trans_id,
                creation_time: p.sb.time,
                snapshotted_time: p.sb.time,
            };
            p.put_details(dev, &d)
        })
    }

    /// Deletes device `dev` and releases everything only it referenced.
    pub fn delete_thin(&mut self, dev: u64) -> Result<()> {
        self.writable()?;
        self.device_details(dev)?;
        self.modify(|p| {
            p.forget_details(dev);
            let PoolMetadata {
                tm, data_sm, sb, ..
            } = p;
            sb.mapping_root = btree::remove(
                tm,
                &mut SubtreeRefs { sm: Some(data_sm) },
                sb.mapping_root,
                dev,
            )?;
            sb.details_root = btree::remove(tm, &mut NoRefs(DETAILS_SIZE), sb.details_root, dev)?;
            Ok(())
        })
    }

    /// Looks up the mapping of virtual block `block` of device `dev`.
    ///
    /// With `can_block == false` only cached metadata is used and
    /// [`Error::WouldBlock`] is returned if I/O would be needed (map path).
    /// Unmapped blocks give [`Error::NoData`].
    pub fn find_block(&self, dev: u64, block: u64, can_block: bool) -> Result<LookupResult> {
        let root = self.subtree_root(dev, can_block)?;
        let mut v = [0u8; 8];
        btree::lookup(self.tm.bm(), root, block, &mut v, can_block)?;
        let (b, t) = unpack_block_time(u64::from_le_bytes(v));
        let details = self.details_of(dev, can_block)?;
        Ok(LookupResult {
            block: b,
            shared: details.snapshotted_time > t,
        })
    }

    /// Number of mapped blocks of `dev`.
    pub fn mapped_count(&self, dev: u64) -> Result<u64> {
        Ok(self.device_details(dev)?.mapped_blocks)
    }

    /// Highest mapped virtual block of `dev`, `None` if nothing is mapped.
    pub fn highest_mapped(&self, dev: u64) -> Result<Option<u64>> {
        let root = self.subtree_root(dev, true)?;
        let mut v = [0u8; 8];
        btree::lookup_max(self.tm.bm(), root, &mut v)
    }

    /// Finds the first run of mappings of `dev` inside `[begin, end)` whose
    /// virtual and data blocks are both consecutive and that agree on
    /// sharing. [`Error::NoData`] if nothing in the range is mapped.
    pub fn find_mapped_range(&self, dev: u64, begin: u64, end: u64) -> Result<MappedRange> {
        let root = self.subtree_root(dev, true)?;
        let snap_time = self.device_details(dev)?.snapshotted_time;
        let bm = self.tm.bm();
        let mut v = [0u8; 8];
        let first = match btree::lookup_ge(bm, root, begin, &mut v)? {
            Some(k) if k < end => k,
            _ => return Err(Error::NoData),
        };
        let (pool_begin, t) = unpack_block_time(u64::from_le_bytes(v));
        let maybe_shared = snap_time > t;
        let mut r = MappedRange {
            thin_begin: first,
            thin_end: first + 1,
            pool_begin,
            maybe_shared,
        };
        while r.thin_end < end {
            match btree::lookup_ge(bm, root, r.thin_end, &mut v)? {
                Some(k) if k == r.thin_end => {
                    let (b, t) = unpack_block_time(u64::from_le_bytes(v));
                    if pool_begin.checked_add(k - first) != Some(b)
                        || (snap_time > t) != maybe_shared
                    {
                        break;
                    }
                    r.thin_end += 1;
                }
                _ => break,
            }
        }
        Ok(r)
    }

    /// Whether data block `b` is referenced more than once.
    pub fn block_is_shared(&self, b: u64) -> Result<bool> {
        Ok(self.data_sm.count(&self.tm, b)? > 1)
    }

    /// Takes an extra reference on each data block in `[begin, end)`.
    pub fn inc_data_range(&mut self, begin: u64, end: u64) -> Result<()> {
        self.writable()?;
        if end > self.data_sm.nr_blocks() || begin > end {
            return Err(Error::Inval);
        }
        self.modify(|p| (begin..end).try_for_each(|b| p.data_sm.inc(&mut p.tm, b)))
    }

    /// Drops a reference on each data block in `[begin, end)`.
    pub fn dec_data_range(&mut self, begin: u64, end: u64) -> Result<()> {
        self.writable()?;
        if end > self.data_sm.nr_blocks() || begin > end {
            return Err(Error::Inval);
        }
        for b in begin..end {
            if self.data_sm.count(&self.tm, b)? == 0 {
                return Err(Error::Inval);
            }
        }
        self.modify(|p| (begin..end).try_for_each(|b| p.data_sm.dec(&mut p.tm, b)))
    }

    /// Maps virtual block `block` of `dev` to `data_block` (which must
    /// already be allocated; the mapping takes over that reference). A
    /// previous mapping of the block is released.
    pub fn insert_block(&mut self, dev: u64, block: u64, data_block: u64) -> Result<()> {
        self.writable()?;
        if data_block >= self.data_sm.nr_blocks() {
            return Err(Error::Inval);
        }
        // The device exists (checked before anything changes).
        self.device_details(dev)?;
        let value = pack_block_time(data_block, self.sb.time).to_le_bytes();
        self.modify(|p| {
            let inserted = p.update_dev_subtree(dev, |tm, refs, sub| {
                btree::insert(tm, refs, sub, block, &value)
            })?;
            if inserted {
                p.update_details(dev, |d| {
                    d.mapped_blocks = d.mapped_blocks.checked_add(1).ok_or(Error::Corrupt)?;
                    Ok(())
                })?;
            }
            Ok(())
        })
    }

    /// Removes the mapping of `block` of `dev` ([`Error::NoData`] if none).
    pub fn remove_block(&mut self, dev: u64, block: u64) -> Result<()> {
        self.writable()?;
        self.find_block(dev, block, true)?;
        let end = block.checked_add(1).ok_or(Error::Inval)?;
        self.remove_range(dev, block, end).map(|_| ())
    }

    /// Removes all mappings of `dev` in `[begin, end)`; returns how many
    /// there were.
    pub fn remove_range(&mut self, dev: u64, begin: u64, end: u64) -> Result<u64> {
        self.writable()?;
        self.device_details(dev)?;
        self.modify(|p| {
            let count = p.update_dev_subtree(dev, |tm, refs, sub| {
                btree::remove_range(tm, refs, sub, begin, end)
            })?;
            if count > 0 {
                p.update_details(dev, |d| {
                    d.mapped_blocks = d.mapped_blocks.checked_sub(count).ok_or(Error::Corrupt)?;
                    Ok(())
                })?;
            }
            Ok(count)
        })
    }

    /// Replaces the mapping subtree of `dev` by the root `f` returns for it, given the
    /// transaction manager, the data block reference counting and the current root; returns
    /// what else `f` returned.
    fn update_dev_subtree<R: Default>(
        &mut self,
        dev: u64,
        f: impl FnOnce(&mut Tm<B>, &mut DataRefs<'_>, u64) -> Result<(u64, R)>,
    ) -> Result<R> {
        let PoolMetadata {
            tm, data_sm, sb, ..
        } = self;
        let mut out = R::default();
        sb.mapping_root = btree::insert_with(
            tm,
            &mut SubtreeRefs { sm: None },
            sb.mapping_root,
            dev,
            |tm, old| {
                let sub = get_u64(old.ok_or(Error::Corrupt)?, 0)?;
                let (nsub, r) = f(tm, &mut DataRefs { sm: data_sm }, sub)?;
                out = r;
                Ok(val8(nsub))
            },
        )?
        .0;
        Ok(out)
    }

    /// Allocates a data block (count one). [`Error::NoSpace`] if none is
    /// free (that failure does not put the metadata in failure mode).
    pub fn alloc_data_block(&mut self) -> Result<u64> {
        self.writable()?;
        let b = self.data_sm.find_free(&self.tm)?;
        self.modify(|p| p.data_sm.alloc_at(&mut p.tm, b).map(|()| b))
    }

    /// Reference count of data block `b`.
    pub fn data_block_count(&self, b: u64) -> Result<u32> {
        self.data_sm.count(&self.tm, b)
    }

    /// Reference count of metadata block `b`.
    pub fn metadata_block_count(&self, b: u64) -> Result<u32> {
        self.tm.count(b)
    }

    /// Free data blocks.
    pub fn free_data_blocks(&self) -> u64 {
        self.data_sm.nr_free()
    }

    /// Size of the data device in blocks.
    pub fn nr_data_blocks(&self) -> u64 {
        self.data_sm.nr_blocks()
    }

    /// Free metadata blocks.
    pub fn free_metadata_blocks(&self) -> u64 {
        self.tm.nr_free()
    }

    /// Size of the metadata space map in blocks.
    pub fn nr_metadata_blocks(&self) -> u64 {
        self.tm.nr_blocks()
    }

    /// Grows the data space map to `new_count` blocks (shrinking is
    /// refused with [`Error::Inval`]).
    pub fn resize_data(&mut self, new_count: u64) -> Result<()> {
        self.writable()?;
        let cur = self.data_sm.nr_blocks();
        if new_count < cur || new_count > MAX_DATA_BLOCK {
            return Err(Error::Inval);
        }
        self.modify(|p| p.data_sm.extend(&mut p.tm, new_count - cur))
    }

    /// Grows the metadata space map to `new_count` blocks (the block
    /// manager must already cover them).
    pub fn resize_metadata(&mut self, new_count: u64) -> Result<()> {
        self.writable()?;
        if new_count < self.tm.nr_blocks() {
            return Err(Error::Inval);
        }
        if new_count > MAX_METADATA_BLOCKS || new_count > self.tm.bm().nr_blocks() {
            return Err(Error::NoSpace);
        }
        self.modify(|p| {
            p.tm.extend(new_count)?;
            p.sb.meta_nr_blocks = new_count;
            Ok(())
        })
    }

    /// Commits, then takes a copy of the superblock that keeps the current
    /// mapping and details trees alive for userspace (`thin_dump -m`).
    pub fn reserve_metadata_snap(&mut self) -> Result<()> {
        self.writable()?;
        if self.sb.held_root != 0 {
            return Err(Error::Busy);
        }
        self.commit()?;
        self.modify(|p| {
            let copy = p.tm.alloc_block()?;
            let mut snap = p.sb;
            snap.data_sm = [0; SM_ROOT_SIZE];
            snap.meta_sm = [0; SM_ROOT_SIZE];
            {
                let mut g = p.tm.bm().write_lock_zero(copy, Validator::Superblock)?;
                write_super(&mut g[..], &snap)?;
            }
            p.tm.inc(p.sb.mapping_root)?;
            p.tm.inc(p.sb.details_root)?;
            p.sb.held_root = copy;
            Ok(())
        })
    }

    /// Releases the metadata snapshot taken by
    /// [`PoolMetadata::reserve_metadata_snap`].
    pub fn release_metadata_snap(&mut self) -> Result<()> {
        self.writable()?;
        let held = self.sb.held_root;
        if held == 0 {
            return Err(Error::Inval);
        }
        let snap = {
            let g = self.tm.bm().read_lock(held, Validator::Superblock)?;
            (
                get_u64(&g[..], OFF_MAPPING_ROOT)?,
                get_u64(&g[..], OFF_DETAILS_ROOT)?,
            )
        };
        self.modify(|p| {
            p.sb.held_root = 0;
            let PoolMetadata { tm, data_sm, .. } = &mut *p;
            btree::del(tm, &mut SubtreeRefs { sm: Some(data_sm) }, snap.0)?;
            btree::del(tm, &mut NoRefs(DETAILS_SIZE), snap.1)?;
            tm.dec(held)
        })
    }
}
