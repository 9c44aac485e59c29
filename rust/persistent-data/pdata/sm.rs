//! Space maps: reference counts for every block of a device.
//!
//! Each block has a 2-bit entry in a bitmap block (0, 1, 2, or 3 meaning
//! "look in the overflow tree"); counts of three or more live in a btree
//! of u32 values keyed by block. Bitmaps are found through index entries:
//! the metadata space map keeps up to 255 of them in a single index block
//! (handled by [`super::tm::Tm`]), the data space map ([`DiskSm`]) keeps them
//! in a btree keyed by bitmap number.
//!
//! Allocation only hands out blocks that are free both now and in the last
//! committed state, so a block freed in a transaction is never reused in it
//! and the committed metadata stays intact until the next commit.

use super::block::{
    get_u32, get_u64, put_u32, put_u64, Block, BlockManager, Validator, BLOCK_SIZE,
};
use super::btree::{self, NoRefs};
use super::error::{Error, Result};
use super::tm::Tm;

/// Bytes of the header at the start of a bitmap block.
pub const BITMAP_HEADER_SIZE: usize = 16;
/// Number of 2-bit entries in one bitmap block.
pub const ENTRIES_PER_BITMAP: u64 = ((BLOCK_SIZE - BITMAP_HEADER_SIZE) * 4) as u64;
/// Size in bytes of a space map root as stored in the superblock.
pub const SM_ROOT_SIZE: usize = 128;
/// Size in bytes of an index entry.
pub const INDEX_ENTRY_SIZE: usize = 16;

/// The persistent root of a space map (`disk_sm_root`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmRoot {
    /// Blocks tracked.
    pub nr_blocks: u64,
    /// Blocks with a non-zero count.
    pub nr_allocated: u64,
    /// Index block (metadata) or index btree root (data).
    pub bitmap_root: u64,
    /// Root of the overflow reference count btree.
    pub ref_count_root: u64,
}

impl SmRoot {
    /// Decodes a root from the superblock field.
    pub fn decode(b: &[u8]) -> Result<Self> {
        Ok(SmRoot {
            nr_blocks: get_u64(b, 0)?,
            nr_allocated: get_u64(b, 8)?,
            bitmap_root: get_u64(b, 16)?,
            ref_count_root: get_u64(b, 24)?,
        })
    }

    /// Encodes the root into a superblock field (the rest is zeroed).
    pub fn encode(&self) -> [u8; SM_ROOT_SIZE] {
        let mut b = [0u8; SM_ROOT_SIZE];
        for (i, v) in [
            self.nr_blocks,
            self.nr_allocated,
            self.bitmap_root,
            self.ref_count_root,
        ]
        .into_iter()
        .enumerate()
        {
            let _ = put_u64(&mut b, i * 8, v);
        }
        b
    }

    /// Number of bitmap blocks needed for `nr_blocks`.
    pub fn nr_bitmaps(&self) -> u64 {
        self.nr_blocks.div_ceil(ENTRIES_PER_BITMAP)
    }
}

/// Index entry describing one bitmap block (`disk_index_entry`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexEntry {
    /// Location of the bitmap block.
    pub blocknr: u64,
    /// Free entries in the bitmap.
    pub nr_free: u32,
    /// No free entry exists below this one.
    pub none_free_before: u32,
}

impl IndexEntry {
    /// Decodes an entry.
    pub fn decode(b: &[u8]) -> Result<Self> {
        Ok(IndexEntry {
            blocknr: get_u64(b, 0)?,
            nr_free: get_u32(b, 8)?,
            none_free_before: get_u32(b, 12)?,
        })
    }

    /// Encodes an entry.
    pub fn encode(&self) -> [u8; INDEX_ENTRY_SIZE] {
        let mut b = [0u8; INDEX_ENTRY_SIZE];
        let _ = put_u64(&mut b, 0, self.blocknr);
        let _ = put_u32(&mut b, 8, self.nr_free);
        let _ = put_u32(&mut b, 12, self.none_free_before);
        b
    }
}

fn word_off(e: u64) -> usize {
    BITMAP_HEADER_SIZE + (e / 32) as usize * 8
}

/// Reads the 2-bit entry `e` of a bitmap block.
pub(crate) fn bitmap_get(d: &Block, e: u64) -> Result<u32> {
    if e >= ENTRIES_PER_BITMAP {
        return Err(Error::Corrupt);
    }
    let w = get_u64(d, word_off(e))?;
    let s = (e % 32) * 2;
    let hi = (w >> s) & 1;
    let lo = (w >> (s + 1)) & 1;
    Ok(((hi << 1) | lo) as u32)
}

/// Sets the 2-bit entry `e` of a bitmap block to `v` (0..=3).
pub(crate) fn bitmap_set(d: &mut Block, e: u64, v: u32) -> Result<()> {
    if e >= ENTRIES_PER_BITMAP || v > 3 {
        return Err(Error::Corrupt);
    }
    let off = word_off(e);
    let mut w = get_u64(d, off)?;
    let s = (e % 32) * 2;
    w &= !(3u64 << s);
    w |= u64::from(v >> 1) << s;
    w |= u64::from(v & 1) << (s + 1);
    put_u64(d, off, w)
}

/// Finds a free entry in `[lo, hi)` of bitmap `cur` that is also free in
/// `old` (the committed bitmap covering the same blocks, `None` if every
/// block was free then) and not rejected by `skip`.
pub(crate) fn scan_free<B: BlockManager>(
    bm: &B,
    cur: u64,
    old: Option<u64>,
    base: u64,
    lo: u64,
    hi: u64,
    skip: &dyn Fn(u64) -> bool,
) -> Result<Option<u64>> {
    let g = bm.read_lock(cur, Validator::Bitmap)?;
    let og = match old {
        Some(o) if o != cur => Some(bm.read_lock(o, Validator::Bitmap)?),
        _ => None,
    };
    let mut e = lo;
    while e < hi.min(ENTRIES_PER_BITMAP) {
        if e % 32 == 0 {
            let w = get_u64(&g[..], word_off(e))?;
            if (w | (w >> 1)) & 0x5555_5555_5555_5555 == 0x5555_5555_5555_5555 {
                e += 32;
                continue;
            }
        }
        if bitmap_get(&g, e)? == 0 {
            let old_free = match &og {
                Some(o) => bitmap_get(o, e)? == 0,
                None => true,
            };
            if old_free && !skip(base + e) {
                return Ok(Some(e));
            }
        }
        e += 1;
    }
    Ok(None)
}

/// Reads the count of entry `bit` of bitmap `bitmap`, consulting the
/// overflow tree at `rc_root` for counts of three and more.
pub(crate) fn read_count<B: BlockManager>(
    bm: &B,
    bitmap: u64,
    bit: u64,
    rc_root: u64,
    b: u64,
) -> Result<u32> {
    let v = bitmap_get(&*bm.read_lock(bitmap, Validator::Bitmap)?, bit)?;
    if v < 3 {
        return Ok(v);
    }
    let mut out = [0u8; 4];
    match btree::lookup(bm, rc_root, b, &mut out, true) {
        Ok(()) => {}
        Err(Error::NoData) => return Err(Error::Corrupt),
        Err(e) => return Err(e),
    }
    let c = u32::from_le_bytes(out);
    if c < 3 {
        return Err(Error::Corrupt);
    }
    Ok(c)
}

/// First half of a count change: shadows the bitmap (updating
/// `ie.blocknr`), changes the 2-bit entry and the index entry's counters.
/// Returns the (old, new) counts; the caller must save `ie` and then call
/// [`rc_update`].
pub(crate) fn mutate<B: BlockManager>(
    tm: &mut Tm<B>,
    ie: &mut IndexEntry,
    bit: u64,
    b: u64,
    rc_root: u64,
    inc: bool,
) -> Result<(u32, u32)> {
    let (nb, _) = tm.shadow(ie.blocknr, Validator::Bitmap)?;
    ie.blocknr = nb;
    let old = read_count(tm.bm(), nb, bit, rc_root, b)?;
    let new = if inc {
        old.checked_add(1).ok_or(Error::Corrupt)?
    } else {
        // Dropping a reference on a free block means the metadata is
        // inconsistent.
        old.checked_sub(1).ok_or(Error::Corrupt)?
    };
    bitmap_set(
        &mut *tm.bm().write_lock(nb, Validator::Bitmap)?,
        bit,
        new.min(3),
    )?;
    let bit32 = u32::try_from(bit).map_err(|_| Error::Corrupt)?;
    if old == 0 {
        // `nr_free` is only a search hint (tools and kernel disagree on
        // partial bitmaps), so never fail on it.
        ie.nr_free = ie.nr_free.saturating_sub(1);
        if ie.none_free_before == bit32 {
            ie.none_free_before = bit32 + 1;
        }
    } else if new == 0 {
        ie.nr_free = ie.nr_free.saturating_add(1).min(ENTRIES_PER_BITMAP as u32);
        ie.none_free_before = ie.none_free_before.min(bit32);
    }
    Ok((old, new))
}

/// Second half of a count change: keeps the overflow tree in step.
pub(crate) fn rc_update<B: BlockManager>(
    tm: &mut Tm<B>,
    rc_root: u64,
    b: u64,
    old: u32,
    new: u32,
) -> Result<u64> {
    if new >= 3 {
        Ok(btree::insert(tm, &mut NoRefs(4), rc_root, b, &new.to_le_bytes())?.0)
    } else if old >= 3 {
        btree::remove(tm, &mut NoRefs(4), rc_root, b)
    } else {
        Ok(rc_root)
    }
}

/// Adjusts `nr_allocated` for a count change.
pub(crate) fn account(root: &mut SmRoot, old: u32, new: u32) -> Result<()> {
    if old == 0 && new > 0 {
        root.nr_allocated = root.nr_allocated.checked_add(1).ok_or(Error::Corrupt)?;
    } else if old > 0 && new == 0 {
        root.nr_allocated = root.nr_allocated.checked_sub(1).ok_or(Error::Corrupt)?;
    }
    Ok(())
}

/// The data device's space map: index entries in a btree, all of its
/// blocks allocated from the metadata space map.
#[derive(Debug, Clone)]
pub struct DiskSm {
    root: SmRoot,
    old: SmRoot,
    begin: u64,
    /// The index entry last read or written in each of the current and the committed
    /// index trees: (tree root, index, entry). Only [`DiskSm::change`] edits the current
    /// tree, and it updates its slot; a root's block is not reused within a transaction,
    /// and the cache is emptied at commit. It saves an index tree lookup per allocation.
    ie_cache: [Option<(u64, u64, IndexEntry)>; 2],
}

impl DiskSm {
    /// Creates a space map for `nr_blocks` blocks.
    pub fn format<B: BlockManager>(tm: &mut Tm<B>, nr_blocks: u64) -> Result<Self> {
        let bitmap_root = btree::empty(tm, INDEX_ENTRY_SIZE)?;
        let ref_count_root = btree::empty(tm, 4)?;
        let root = SmRoot {
            nr_blocks: 0,
            nr_allocated: 0,
            bitmap_root,
            ref_count_root,
        };
        let mut sm = DiskSm {
            root,
            old: SmRoot::default(),
            begin: 0,
            ie_cache: Default::default(),
        };
        sm.extend(tm, nr_blocks)?;
        Ok(sm)
    }

    /// Opens a space map from its superblock root.
    pub fn open(root: &[u8]) -> Result<Self> {
        let root = SmRoot::decode(root)?;
        // Data block numbers are 40 bits in mapping values.
        if root.nr_allocated > root.nr_blocks || root.nr_blocks > (1 << 40) {
            return Err(Error::Corrupt);
        }
        Ok(DiskSm {
            root,
            old: root,
            begin: 0,
            ie_cache: Default::default(),
        })
    }

    /// Current root (valid for the superblock after a commit).
    pub fn root(&self) -> SmRoot {
        self.root
    }

    /// Blocks tracked.
    pub fn nr_blocks(&self) -> u64 {
        self.root.nr_blocks
    }

    /// Blocks with a zero count.
    pub fn nr_free(&self) -> u64 {
        self.root.nr_blocks.saturating_sub(self.root.nr_allocated)
    }

    /// Marks the current state as committed.
    pub fn committed(&mut self) {
        self.old = self.root;
        self.ie_cache = [None; 2];
    }

    /// Index entry `idx` of the current (`old == false`) or the committed index tree.
    fn load_ie<B: BlockManager>(&self, bm: &B, old: bool, idx: u64) -> Result<IndexEntry> {
        let [cur_slot, old_slot] = &self.ie_cache;
        let (root, slot) = if old {
            (&self.old, old_slot)
        } else {
            (&self.root, cur_slot)
        };
        if let Some((r, i, ie)) = *slot {
            if r == root.bitmap_root && i == idx {
                return Ok(ie);
            }
        }
        let mut v = [0u8; INDEX_ENTRY_SIZE];
        match btree::lookup(bm, root.bitmap_root, idx, &mut v, true) {
            Ok(()) => IndexEntry::decode(&v),
            Err(Error::NoData) => Err(Error::Corrupt),
            Err(e) => Err(e),
        }
    }

    /// [`DiskSm::load_ie`], keeping what it read in the cache.
    fn load_ie_mut<B: BlockManager>(&mut self, bm: &B, old: bool, idx: u64) -> Result<IndexEntry> {
        let ie = self.load_ie(bm, old, idx)?;
        let [cur_slot, old_slot] = &mut self.ie_cache;
        let (root, slot) = if old {
            (&self.old, old_slot)
        } else {
            (&self.root, cur_slot)
        };
        *slot = Some((root.bitmap_root, idx, ie));
        Ok(ie)
    }

    fn count_in<B: BlockManager>(&self, bm: &B, old: bool, b: u64) -> Result<u32> {
        let root = if old { &self.old } else { &self.root };
        let ie = self.load_ie(bm, old, b / ENTRIES_PER_BITMAP)?;
        read_count(
            bm,
            ie.blocknr,
            b % ENTRIES_PER_BITMAP,
            root.ref_count_root,
            b,
        )
    }

    /// Reference count of block `b`.
    pub fn count<B: BlockManager>(&self, tm: &Tm<B>, b: u64) -> Result<u32> {
        if b >= self.root.nr_blocks {
            return Err(Error::Inval);
        }
        self.count_in(tm.bm(), false, b)
    }

    fn change<B: BlockManager>(&mut self, tm: &mut Tm<B>, b: u64, inc: bool) -> Result<()> {
        if b >= self.root.nr_blocks {
            return Err(Error::Inval);
        }
        let idx = b / ENTRIES_PER_BITMAP;
        let mut ie = self.load_ie_mut(tm.bm(), false, idx)?;
        let (old, new) = mutate(
            tm,
            &mut ie,
            b % ENTRIES_PER_BITMAP,
            b,
            self.root.ref_count_root,
            inc,
        )?;
        self.root.bitmap_root = btree::insert(
            tm,
            &mut NoRefs(INDEX_ENTRY_SIZE),
            self.root.bitmap_root,
            idx,
            &ie.encode(),
        )?
        .0;
        let [cur_slot, _] = &mut self.ie_cache;
        *cur_slot = Some((self.root.bitmap_root, idx, ie));
        account(&mut self.root, old, new)?;
        self.root.ref_count_root = rc_update(tm, self.root.ref_count_root, b, old, new)?;
        Ok(())
    }

    /// Takes a reference on block `b`.
    pub fn inc<B: BlockManager>(&mut self, tm: &mut Tm<B>, b: u64) -> Result<()> {
        self.change(tm, b, true)
    }

    /// Drops a reference on block `b`.
    pub fn dec<B: BlockManager>(&mut self, tm: &mut Tm<B>, b: u64) -> Result<()> {
        self.change(tm, b, false)
    }

    fn find_free_in<B: BlockManager>(
        &mut self,
        tm: &Tm<B>,
        lo: u64,
        hi: u64,
    ) -> Result<Option<u64>> {
        let bm = tm.bm();
        let mut idx = lo / ENTRIES_PER_BITMAP;
        while idx * ENTRIES_PER_BITMAP < hi {
            let base = idx * ENTRIES_PER_BITMAP;
            let ie = self.load_ie_mut(bm, false, idx)?;
            if ie.nr_free > 0 {
                let old = if base < self.old.nr_blocks {
                    Some(self.load_ie_mut(bm, true, idx)?.blocknr)
                } else {
                    None
                };
                let start = lo.saturating_sub(base).max(u64::from(ie.none_free_before));
                let skip = |_b: u64| false;
                if let Some(e) = scan_free(bm, ie.blocknr, old, base, start, hi - base, &skip)? {
                    return Ok(Some(base + e));
                }
            }
            idx += 1;
        }
        Ok(None)
    }

    /// Allocates a block free both now and at the last commit and gives it
    /// a count of one. [`Error::NoSpace`] when there is none.
    pub fn alloc<B: BlockManager>(&mut self, tm: &mut Tm<B>) -> Result<u64> {
        let b = self.find_free(tm)?;
        self.alloc_at(tm, b)?;
        Ok(b)
    }

    /// Allocates block `b`, which [`DiskSm::find_free`] returned with nothing changed since.
    pub fn alloc_at<B: BlockManager>(&mut self, tm: &mut Tm<B>, b: u64) -> Result<()> {
        self.inc(tm, b)?;
        self.begin = b + 1;
        Ok(())
    }

    /// Finds (without allocating) the block [`DiskSm::alloc`] would hand
    /// out; [`Error::NoSpace`] if there is none. Changes nothing but the index cache.
    pub fn find_free<B: BlockManager>(&mut self, tm: &Tm<B>) -> Result<u64> {
        let n = self.root.nr_blocks;
        let begin = self.begin.min(n);
        match self.find_free_in(tm, begin, n)? {
            Some(b) => Ok(b),
            None => self.find_free_in(tm, 0, begin)?.ok_or(Error::NoSpace),
        }
    }

    /// Grows the space map by `extra` blocks.
    pub fn extend<B: BlockManager>(&mut self, tm: &mut Tm<B>, extra: u64) -> Result<()> {
        let old_bitmaps = self.root.nr_bitmaps();
        let nr_blocks = self.root.nr_blocks.checked_add(extra).ok_or(Error::Inval)?;
        self.root.nr_blocks = nr_blocks;
        for idx in old_bitmaps..self.root.nr_bitmaps() {
            let b = tm.alloc_block()?;
            drop(tm.bm().write_lock_zero(b, Validator::Bitmap)?);
            let ie = IndexEntry {
                blocknr: b,
                nr_free: ENTRIES_PER_BITMAP as u32,
                none_free_before: 0,
            };
            self.root.bitmap_root = btree::insert(
                tm,
                &mut NoRefs(INDEX_ENTRY_SIZE),
                self.root.bitmap_root,
                idx,
                &ie.encode(),
            )?
            .0;
        }
        Ok(())
    }
}
