//! Transaction manager and the metadata space map.
//!
//! The transaction manager hands out metadata blocks and implements
//! shadowing (copy on write): a block may be written in place only if it
//! was allocated in the current transaction (its committed count is zero)
//! and nobody else references it; otherwise it is copied to a fresh block
//! and the original loses a reference. Committed blocks are therefore
//! never overwritten, and a crash or an abort falls back to the last
//! committed superblock.
//!
//! The metadata space map lives here because it is recursive: changing a
//! count means shadowing a bitmap (an allocation, which changes a count)
//! and possibly editing the overflow btree (more allocations). Count
//! changes requested while one is in progress are queued in a fixed-size
//! buffer and applied afterwards; the queue is taken into account by
//! counts and allocation so queued blocks are never handed out twice.

use super::block::{get_u64, put_u64, Block, BlockManager, Validator, BLOCK_SIZE};
use super::btree;
use super::error::{Error, Result};
use super::sm::{self, IndexEntry, SmRoot, ENTRIES_PER_BITMAP, INDEX_ENTRY_SIZE};

/// Most bitmaps the metadata space map can index (one index block).
pub const MAX_METADATA_BITMAPS: u64 = 255;
/// Largest metadata device, in blocks, the metadata space map can track.
pub const MAX_METADATA_BLOCKS: u64 = MAX_METADATA_BITMAPS * ENTRIES_PER_BITMAP;
/// Capacity of the queue of deferred count changes (one 4 KiB buffer of
/// u64 entries).
pub const MAX_QUEUED: usize = BLOCK_SIZE / 8;

const INDEX_HEADER_SIZE: usize = 16;
const INC_FLAG: u64 = 1 << 63;
/// Slots of the cache of blocks known to be writable in place (one 4 KiB buffer of u64).
const FRESH_SLOTS: u64 = (BLOCK_SIZE / 8) as u64;

fn ie_off(idx: u64) -> Result<usize> {
    if idx >= MAX_METADATA_BITMAPS {
        return Err(Error::Corrupt);
    }
    Ok(INDEX_HEADER_SIZE + idx as usize * INDEX_ENTRY_SIZE)
}

fn load_ie(mi: &Block, idx: u64) -> Result<IndexEntry> {
    let off = ie_off(idx)?;
    IndexEntry::decode(mi.get(off..off + INDEX_ENTRY_SIZE).ok_or(Error::Corrupt)?)
}

fn save_ie(mi: &mut Block, idx: u64, ie: &IndexEntry) -> Result<()> {
    let off = ie_off(idx)?;
    mi.get_mut(off..off + INDEX_ENTRY_SIZE)
        .ok_or(Error::Corrupt)?
        .copy_from_slice(&ie.encode());
    Ok(())
}

/// Transaction manager over a block manager, owning the metadata space map.
pub struct Tm<B: BlockManager> {
    bm: B,
    root: SmRoot,
    old: SmRoot,
    /// Current index block image (entries at offset 16).
    mi: B::Buf,
    /// Committed index block image.
    old_mi: B::Buf,
    begin: u64,
    /// Deferred count changes: block numbers, top bit set for increments.
    queue: B::Buf,
    qlen: usize,
    /// Blocks allocated in this transaction whose count has not changed since: a shadow of
    /// one is the block itself, with no count to read. Direct-mapped by block number, each
    /// slot holding block + 1 (0: empty); losing an entry only costs the count lookups.
    fresh: B::Buf,
    recursing: bool,
    bootstrap: bool,
    applying: Option<u64>,
}

impl<B: BlockManager> Tm<B> {
    fn blank(bm: B) -> Result<Self> {
        let mi = bm.alloc_buf()?;
        let old_mi = bm.alloc_buf()?;
        let queue = bm.alloc_buf()?;
        let fresh = bm.alloc_buf()?;
        Ok(Tm {
            bm,
            root: SmRoot::default(),
            old: SmRoot::default(),
            mi,
            old_mi,
            begin: 0,
            queue,
            qlen: 0,
            fresh,
            recursing: false,
            bootstrap: false,
            applying: None,
        })
    }

    /// Creates a new metadata space map covering `nr_blocks` blocks of the
    /// device; blocks `0..=reserved` (the superblock) are marked in use.
    pub fn format(bm: B, nr_blocks: u64, reserved: u64) -> Result<Self> {
        let nr_blocks = nr_blocks.min(MAX_METADATA_BLOCKS).min(bm.nr_blocks());
        let mut tm = Self::blank(bm)?;
        tm.bootstrap = true;
        tm.begin = reserved + 1;
        // Bootstrap allocations are simple bumps, recorded afterwards.
        tm.root.nr_blocks = nr_blocks;
        let ib = tm.alloc_block()?;
        drop(tm.bm.write_lock_zero(ib, Validator::Index)?);
        tm.root.bitmap_root = ib;
        tm.root.ref_count_root = btree::empty(&mut tm, 4)?;
        tm.root.nr_blocks = 0;
        tm.grow(nr_blocks, 0)?;
        Ok(tm)
    }

    /// Opens the metadata space map from its superblock root.
    pub fn open(bm: B, root: &[u8]) -> Result<Self> {
        let mut tm = Self::blank(bm)?;
        tm.reset(root)?;
        Ok(tm)
    }

    /// Drops all uncommitted state and reloads the space map from `root`.
    pub fn reset(&mut self, root: &[u8]) -> Result<()> {
        let r = SmRoot::decode(root)?;
        if r.nr_blocks > MAX_METADATA_BLOCKS
            || r.nr_blocks > self.bm.nr_blocks()
            || r.nr_allocated > r.nr_blocks
        {
            return Err(Error::Corrupt);
        }
        {
            let g = self.bm.read_lock(r.bitmap_root, Validator::Index)?;
            self.mi.copy_from_slice(&g[..]);
            self.old_mi.copy_from_slice(&g[..]);
        }
        self.root = r;
        self.old = r;
        self.qlen = 0;
        self.fresh.fill(0);
        self.recursing = false;
        self.bootstrap = false;
        self.applying = None;
        self.begin = 0;
        Ok(())
    }

    /// The block manager.
    pub fn bm(&self) -> &B {
        &self.bm
    }

    /// The block manager, to reset it.
    pub fn bm_mut(&mut self) -> &mut B {
        &mut self.bm
    }

    /// Gives the block manager back.
    pub fn into_bm(self) -> B {
        self.bm
    }

    /// Current space map root (valid for the superblock after
    /// [`Tm::pre_commit`]).
    pub fn sm_root(&self) -> SmRoot {
        self.root
    }

    /// Blocks tracked by the metadata space map.
    pub fn nr_blocks(&self) -> u64 {
        self.root.nr_blocks
    }

    /// Free metadata blocks.
    pub fn nr_free(&self) -> u64 {
        self.root.nr_blocks.saturating_sub(self.root.nr_allocated)
    }

    fn queued(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.qlen).filter_map(move |i| get_u64(&self.queue[..], i * 8).ok())
    }

    fn queued_delta(&self, b: u64) -> i64 {
        self.queued()
            .filter(|&q| q & !INC_FLAG == b)
            .map(|q| if q & INC_FLAG != 0 { 1 } else { -1 })
            .sum()
    }

    fn ll_count(&self, old: bool, b: u64) -> Result<u32> {
        let (root, mi) = if old {
            (&self.old, &*self.old_mi)
        } else {
            (&self.root, &*self.mi)
        };
        if b >= root.nr_blocks {
            return if old { Ok(0) } else { Err(Error::Inval) };
        }
        let ie = load_ie(mi, b / ENTRIES_PER_BITMAP)?;
        sm::read_count(
            &self.bm,
            ie.blocknr,
            b % ENTRIES_PER_BITMAP,
            root.ref_count_root,
            b,
        )
    }

    /// Reference count of metadata block `b`, including queued changes.
    pub fn count(&self, b: u64) -> Result<u32> {
        let c = i64::from(self.ll_count(false, b)?) + self.queued_delta(b);
        u32::try_from(c).map_err(|_| Error::Corrupt)
    }

    /// Count of `b` at the last commit.
    pub fn committed_count(&self, b: u64) -> Result<u32> {
        self.ll_count(true, b)
    }

    fn push(&mut self, b: u64, inc: bool) -> Result<()> {
        if self.qlen >= MAX_QUEUED {
            return Err(Error::NoMem);
        }
        put_u64(
            &mut self.queue[..],
            self.qlen * 8,
            if inc { b | INC_FLAG } else { b },
        )?;
        self.qlen += 1;
        Ok(())
    }

    fn pop(&mut self) -> Result<Option<(u64, bool)>> {
        if self.qlen == 0 {
            return Ok(None);
        }
        self.qlen -= 1;
        let q = get_u64(&self.queue[..], self.qlen * 8)?;
        Ok(Some((q & !INC_FLAG, q & INC_FLAG != 0)))
    }

    fn pending(&self, b: u64) -> bool {
        self.applying == Some(b) || self.queued().any(|q| q == b | INC_FLAG)
    }

    fn apply(&mut self, b: u64, inc: bool) -> Result<()> {
        if b >= self.root.nr_blocks {
            return Err(Error::Inval);
        }
        let idx = b / ENTRIES_PER_BITMAP;
        let mut ie = load_ie(&self.mi, idx)?;
        self.applying = if inc { Some(b) } else { None };
        let rc = self.root.ref_count_root;
        let (old, new) = sm::mutate(self, &mut ie, b % ENTRIES_PER_BITMAP, b, rc, inc)?;
        save_ie(&mut self.mi, idx, &ie)?;
        sm::account(&mut self.root, old, new)?;
        self.applying = None;
        let rc = self.root.ref_count_root;
        self.root.ref_count_root = sm::rc_update(self, rc, b, old, new)?;
        Ok(())
    }

    fn fresh_slot(b: u64) -> usize {
        (b % FRESH_SLOTS) as usize * 8
    }

    /// Whether `b` is known to be allocated in this transaction with a count of one.
    fn is_fresh(&self, b: u64) -> bool {
        get_u64(&self.fresh[..], Self::fresh_slot(b)).ok() == b.checked_add(1)
    }

    fn set_fresh(&mut self, b: u64, fresh: bool) {
        let off = Self::fresh_slot(b);
        if fresh {
            let _ = put_u64(&mut self.fresh[..], off, b.wrapping_add(1));
        } else if self.is_fresh(b) {
            let _ = put_u64(&mut self.fresh[..], off, 0);
        }
    }

    fn op(&mut self, b: u64, inc: bool) -> Result<()> {
        // Its count changes: no longer known to be writable in place.
        self.set_fresh(b, false);
        if self.recursing || self.bootstrap {
            return self.push(b, inc);
        }
        self.recursing = true;
        let mut r = self.apply(b, inc);
        while r.is_ok() {
            match self.pop() {
                Ok(Some((b, inc))) => r = self.apply(b, inc),
                Ok(None) => break,
                Err(e) => r = Err(e),
            }
        }
        self.recursing = false;
        self.applying = None;
        if r.is_err() {
            self.qlen = 0;
        }
        r
    }

    /// Takes a reference on metadata block `b`.
    pub fn inc(&mut self, b: u64) -> Result<()> {
        self.op(b, true)
    }

    /// Drops a reference on metadata block `b`.
    pub fn dec(&mut self, b: u64) -> Result<()> {
        self.op(b, false)
    }

    fn find_free(&self, lo: u64, hi: u64) -> Result<Option<u64>> {
        let mut idx = lo / ENTRIES_PER_BITMAP;
        while idx * ENTRIES_PER_BITMAP < hi {
            let base = idx * ENTRIES_PER_BITMAP;
            let ie = load_ie(&self.mi, idx)?;
            if ie.nr_free > 0 {
                let old = if base < self.old.nr_blocks {
                    Some(load_ie(&self.old_mi, idx)?.blocknr)
                } else {
                    None
                };
                let start = lo.saturating_sub(base).max(u64::from(ie.none_free_before));
                let skip = |b: u64| self.pending(b);
                if let Some(e) =
                    sm::scan_free(&self.bm, ie.blocknr, old, base, start, hi - base, &skip)?
                {
                    return Ok(Some(base + e));
                }
            }
            idx += 1;
        }
        Ok(None)
    }

    /// Allocates a metadata block (count one). The caller write-locks it
    /// with [`BlockManager::write_lock_zero`] before use.
    pub fn alloc_block(&mut self) -> Result<u64> {
        if self.bootstrap {
            if self.begin >= self.root.nr_blocks {
                return Err(Error::NoSpace);
            }
            let b = self.begin;
            self.begin += 1;
            return Ok(b);
        }
        let n = self.root.nr_blocks;
        let begin = self.begin.min(n);
        let b = match self.find_free(begin, n)? {
            Some(b) => b,
            None => self.find_free(0, begin)?.ok_or(Error::NoSpace)?,
        };
        self.begin = b + 1;
        self.op(b, true)?;
        // Free now and at the last commit (`find_free` looks at both): a count of one,
        // committed count zero.
        self.set_fresh(b, true);
        Ok(b)
    }

    /// Prepares block `b` for writing. Returns the location to write and
    /// whether `b` was shared (then the caller must take references on
    /// everything the block points to, as the copy now does too).
    pub fn shadow(&mut self, b: u64, v: Validator) -> Result<(u64, bool)> {
        if self.is_fresh(b) {
            return Ok((b, false));
        }
        let c = self.count(b)?;
        let fresh = self.committed_count(b)? == 0;
        if fresh && c <= 1 {
            if c == 1 {
                self.set_fresh(b, true);
            }
            return Ok((b, false));
        }
        if c == 0 {
            return Err(Error::Corrupt);
        }
        let nb = self.alloc_block()?;
        {
            let src = self.bm.read_lock(b, v)?;
            let mut dst = self.bm.write_lock_zero(nb, v)?;
            dst.copy_from_slice(&src[..]);
        }
        self.dec(b)?;
        Ok((nb, c > 1))
    }

    /// Writes the space map's index block; after this the root returned by
    /// [`Tm::sm_root`] describes the state to commit.
    pub fn pre_commit(&mut self) -> Result<()> {
        let (nb, _) = self.shadow(self.root.bitmap_root, Validator::Index)?;
        self.root.bitmap_root = nb;
        let mut g = self.bm.write_lock(nb, Validator::Index)?;
        g.copy_from_slice(&self.mi[..]);
        Ok(())
    }

    /// Records that the current state has been committed.
    pub fn committed(&mut self) {
        self.old = self.root;
        self.old_mi.copy_from_slice(&self.mi[..]);
        // Every block is committed now: none may be written in place.
        self.fresh.fill(0);
    }

    /// Grows the metadata space map to `new_nr` blocks.
    pub fn extend(&mut self, new_nr: u64) -> Result<()> {
        if new_nr < self.root.nr_blocks {
            return Err(Error::Inval);
        }
        if new_nr > MAX_METADATA_BLOCKS || new_nr > self.bm.nr_blocks() {
            return Err(Error::NoSpace);
        }
        let from = self.root.nr_blocks;
        self.begin = from;
        self.grow(new_nr, from)
    }

    /// Adds bitmaps for `new_nr` blocks, allocating them by bumping
    /// `begin` inside the new area, then records all blocks in
    /// `inc_from..begin` as used.
    fn grow(&mut self, new_nr: u64, inc_from: u64) -> Result<()> {
        let old_bitmaps = self.root.nr_bitmaps();
        self.root.nr_blocks = new_nr;
        self.bootstrap = true;
        let r = (|| {
            for idx in old_bitmaps..self.root.nr_bitmaps() {
                let b = self.alloc_block()?;
                drop(self.bm.write_lock_zero(b, Validator::Bitmap)?);
                save_ie(
                    &mut self.mi,
                    idx,
                    &IndexEntry {
                        blocknr: b,
                        nr_free: ENTRIES_PER_BITMAP as u32,
                        none_free_before: 0,
                    },
                )?;
            }
            Ok(())
        })();
        self.bootstrap = false;
        r?;
        let end = self.begin;
        if end <= inc_from {
            return Ok(());
        }
        if self.qlen + (end - inc_from) as usize > MAX_QUEUED {
            return Err(Error::NoMem);
        }
        // Queue them all first so none of them is handed out while the
        // counts are being recorded.
        self.recursing = true;
        for b in inc_from..end {
            self.push(b, true)?;
        }
        self.recursing = false;
        match self.pop()? {
            Some((b, inc)) => self.op(b, inc),
            None => Ok(()),
        }
    }
}
