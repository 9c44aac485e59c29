//! Copy-on-write B-trees in dm-btree's on-disk node layout.
//!
//! A node is one block: a 32-byte header (csum, flags, blocknr,
//! nr_entries, max_entries, value_size, padding), then `max_entries`
//! little-endian u64 keys, then `max_entries` values of `value_size` bytes.
//! Internal nodes hold u64 child locations as values; in an internal node
//! key `i` is a lower bound for every key below child `i`.
//!
//! Every modification shadows the path from the root (see
//! [`Tm::shadow`]); when a shared node is shadowed, the references it
//! holds (children or values) are incremented so both copies own them.

use super::block::{
    get_u32, get_u64, put_u32, put_u64, sub, sub_mut, Block, BlockManager, Validator, BLOCK_SIZE,
};
use super::error::{Error, Result};
use super::tm::Tm;

/// Flag of an internal node.
pub const INTERNAL_NODE: u32 = 1;
/// Flag of a leaf node.
pub const LEAF_NODE: u32 = 2;
/// Size of the node header in bytes.
pub const NODE_HEADER_SIZE: usize = 32;
/// Largest value size supported by this implementation.
pub const MAX_VALUE_SIZE: usize = 32;
/// Deepest tree accepted; deeper means corruption (or a cycle).
pub const MAX_DEPTH: usize = 16;

/// Maximum entries per node for a value size, as dm-btree computes it
/// (rounded down to a multiple of three).
pub const fn max_entries(value_size: usize) -> u32 {
    let total = (BLOCK_SIZE - NODE_HEADER_SIZE) / (8 + value_size);
    ((total / 3) * 3) as u32
}

/// Checks the structural header fields of a btree node.
pub(crate) fn check_node_header(data: &Block) -> Result<()> {
    let flags = get_u32(data, 4)?;
    let nr = get_u32(data, 16)? as usize;
    let max = get_u32(data, 20)? as usize;
    let vs = get_u32(data, 24)? as usize;
    let need = vs
        .checked_add(8)
        .and_then(|e| e.checked_mul(max))
        .and_then(|t| t.checked_add(NODE_HEADER_SIZE))
        .ok_or(Error::Corrupt)?;
    if need > BLOCK_SIZE || nr > max || vs > MAX_VALUE_SIZE {
        return Err(Error::Corrupt);
    }
    if flags & (INTERNAL_NODE | LEAF_NODE) == 0
        || flags & INTERNAL_NODE != 0 && flags & LEAF_NODE != 0
    {
        return Err(Error::Corrupt);
    }
    if flags & INTERNAL_NODE != 0 && vs != 8 {
        return Err(Error::Corrupt);
    }
    Ok(())
}

/// Decoded node header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hdr {
    pub(crate) internal: bool,
    pub(crate) nr: usize,
    pub(crate) max: usize,
    pub(crate) vs: usize,
}

pub(crate) fn hdr(d: &Block) -> Result<Hdr> {
    check_node_header(d)?;
    Ok(Hdr {
        internal: get_u32(d, 4)? & INTERNAL_NODE != 0,
        nr: get_u32(d, 16)? as usize,
        max: get_u32(d, 20)? as usize,
        vs: get_u32(d, 24)? as usize,
    })
}

fn set_nr(d: &mut Block, nr: usize) -> Result<()> {
    put_u32(d, 16, u32::try_from(nr).map_err(|_| Error::Corrupt)?)
}

fn key_off(i: usize) -> usize {
    NODE_HEADER_SIZE + 8 * i
}

fn val_off(h: &Hdr, i: usize) -> usize {
    NODE_HEADER_SIZE + 8 * h.max + h.vs * i
}

pub(crate) fn key_at(d: &Block, i: usize) -> Result<u64> {
    get_u64(d, key_off(i))
}

pub(crate) fn value_at<'a>(d: &'a Block, h: &Hdr, i: usize) -> Result<&'a [u8]> {
    sub(d, val_off(h, i), h.vs)
}

fn child_at(d: &Block, h: &Hdr, i: usize) -> Result<u64> {
    get_u64(d, val_off(h, i))
}

/// Initialises an empty node in `d`.
fn init_node(d: &mut Block, internal: bool, vs: usize) -> Result<()> {
    d.fill(0);
    put_u32(d, 4, if internal { INTERNAL_NODE } else { LEAF_NODE })?;
    put_u32(d, 16, 0)?;
    put_u32(d, 20, max_entries(vs))?;
    put_u32(d, 24, u32::try_from(vs).map_err(|_| Error::Inval)?)?;
    Ok(())
}

/// Index of the last key `<= key`, or `None` if every key is greater.
fn lower_bound(d: &Block, h: &Hdr, key: u64) -> Result<Option<usize>> {
    let (mut lo, mut hi) = (0usize, h.nr); // answer in [lo-1, hi)
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key_at(d, mid)? <= key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo.checked_sub(1))
}

/// Inserts a (key, value) at position `i`, shifting later entries.
fn insert_at(d: &mut Block, h: &mut Hdr, i: usize, key: u64, value: &[u8]) -> Result<()> {
    if h.nr >= h.max || i > h.nr || value.len() != h.vs {
        return Err(Error::Corrupt);
    }
    let ko = key_off(i);
    d.copy_within(ko..key_off(h.nr), ko + 8);
    put_u64(d, ko, key)?;
    let vo = val_off(h, i);
    d.copy_within(vo..val_off(h, h.nr), vo + h.vs);
    sub_mut(d, vo, h.vs)?.copy_from_slice(value);
    h.nr += 1;
    set_nr(d, h.nr)
}

/// Deletes the entry at position `i`.
fn delete_at(d: &mut Block, h: &mut Hdr, i: usize) -> Result<()> {
    if i >= h.nr {
        return Err(Error::Corrupt);
    }
    d.copy_within(key_off(i + 1)..key_off(h.nr), key_off(i));
    d.copy_within(val_off(h, i + 1)..val_off(h, h.nr), val_off(h, i));
    h.nr -= 1;
    set_nr(d, h.nr)
}

/// Copies entries `[from, from+n)` of `src` to position `to` of `dst`.
fn copy_entries(
    dst: &mut Block,
    dh: &Hdr,
    to: usize,
    src: &Block,
    sh: &Hdr,
    from: usize,
    n: usize,
) -> Result<()> {
    if dh.vs != sh.vs || to + n > dh.max || from + n > sh.max {
        return Err(Error::Corrupt);
    }
    sub_mut(dst, key_off(to), 8 * n)?.copy_from_slice(sub(src, key_off(from), 8 * n)?);
    sub_mut(dst, val_off(dh, to), dh.vs * n)?.copy_from_slice(sub(
        src,
        val_off(sh, from),
        sh.vs * n,
    )?);
    Ok(())
}

/// Reference counting behaviour of the values stored in a tree's leaves.
pub trait ValueType<B: BlockManager> {
    /// Size of one value in bytes (at most [`MAX_VALUE_SIZE`]).
    fn size(&self) -> usize;
    /// Takes an extra reference on whatever `v` refers to.
    fn inc(&mut self, tm: &mut Tm<B>, v: &[u8]) -> Result<()>;
    /// Drops a reference on whatever `v` refers to.
    fn dec(&mut self, tm: &mut Tm<B>, v: &[u8]) -> Result<()>;
}

/// Values that reference nothing (space map index entries, reference
/// counts, device details).
pub struct NoRefs(pub usize);

impl<B: BlockManager> ValueType<B> for NoRefs {
    fn size(&self) -> usize {
        self.0
    }
    fn inc(&mut self, _tm: &mut Tm<B>, _v: &[u8]) -> Result<()> {
        Ok(())
    }
    fn dec(&mut self, _tm: &mut Tm<B>, _v: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// Creates an empty tree (a single leaf) and returns its root.
pub fn empty<B: BlockManager>(tm: &mut Tm<B>, value_size: usize) -> Result<u64> {
    if value_size > MAX_VALUE_SIZE {
        return Err(Error::Inval);
    }
    let b = tm.alloc_block()?;
    let mut g = tm.bm().write_lock_zero(b, Validator::BtreeNode)?;
    init_node(&mut g, false, value_size)?;
    Ok(b)
}

/// Looks `key` up in the tree at `root` whose values are `out.len()` bytes.
///
/// With `can_block == false` only cached blocks are used and
/// [`Error::WouldBlock`] is returned otherwise. Missing keys give
/// [`Error::NoData`].
pub fn lookup<B: BlockManager>(
    bm: &B,
    root: u64,
    key: u64,
    out: &mut [u8],
    can_block: bool,
) -> Result<()> {
    let mut b = root;
    for _ in 0..MAX_DEPTH {
        let g = if can_block {
            bm.read_lock(b, Validator::BtreeNode)?
        } else {
            bm.try_read_lock(b, Validator::BtreeNode)?
        };
        let h = hdr(&g)?;
        let i = lower_bound(&g, &h, key)?.ok_or(Error::NoData)?;
        if h.internal {
            b = child_at(&g, &h, i)?;
            continue;
        }
        if h.vs != out.len() {
            return Err(Error::Corrupt);
        }
        if key_at(&g, i)? != key {
            return Err(Error::NoData);
        }
        out.copy_from_slice(value_at(&g, &h, i)?);
        return Ok(());
    }
    Err(Error::Corrupt)
}

/// Finds the largest key in the tree (with its value), `None` if empty.
pub fn lookup_max<B: BlockManager>(bm: &B, root: u64, out: &mut [u8]) -> Result<Option<u64>> {
    let mut b = root;
    for _ in 0..MAX_DEPTH {
        let g = bm.read_lock(b, Validator::BtreeNode)?;
        let h = hdr(&g)?;
        let Some(last) = h.nr.checked_sub(1) else {
            return Ok(None);
        };
        if h.internal {
            b = child_at(&g, &h, last)?;
            continue;
        }
        if h.vs != out.len() {
            return Err(Error::Corrupt);
        }
        out.copy_from_slice(value_at(&g, &h, last)?);
        return Ok(Some(key_at(&g, last)?));
    }
    Err(Error::Corrupt)
}

/// Finds the smallest key `>= key`, returning it and its value.
pub fn lookup_ge<B: BlockManager>(
    bm: &B,
    root: u64,
    key: u64,
    out: &mut [u8],
) -> Result<Option<u64>> {
    ge_rec(bm, root, key, out, 0)
}

fn ge_rec<B: BlockManager>(
    bm: &B,
    b: u64,
    key: u64,
    out: &mut [u8],
    depth: usize,
) -> Result<Option<u64>> {
    if depth >= MAX_DEPTH {
        return Err(Error::Corrupt);
    }
    let (h, start) = {
        let g = bm.read_lock(b, Validator::BtreeNode)?;
        let h = hdr(&g)?;
        if !h.internal {
            if h.vs != out.len() {
                return Err(Error::Corrupt);
            }
            for i in 0..h.nr {
                let k = key_at(&g, i)?;
                if k >= key {
                    out.copy_from_slice(value_at(&g, &h, i)?);
                    return Ok(Some(k));
                }
            }
            return Ok(None);
        }
        (h, lower_bound(&g, &h, key)?.unwrap_or(0))
    };
    for i in start..h.nr {
        let child = {
            let g = bm.read_lock(b, Validator::BtreeNode)?;
            child_at(&g, &h, i)?
        };
        if let Some(k) = ge_rec(bm, child, key, out, depth + 1)? {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

/// Calls `f(key, value)` for every entry, in key order.
pub fn walk<B: BlockManager>(
    bm: &B,
    root: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    walk_rec(bm, root, f, &mut |_, _| Ok(()), 0)
}

/// Like [`walk`], also calling `node(block, depth)` for every node visited.
pub fn walk_nodes<B: BlockManager>(
    bm: &B,
    root: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    node: &mut dyn FnMut(u64, usize) -> Result<()>,
) -> Result<()> {
    walk_rec(bm, root, f, node, 0)
}

fn walk_rec<B: BlockManager>(
    bm: &B,
    b: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    node: &mut dyn FnMut(u64, usize) -> Result<()>,
    depth: usize,
) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(Error::Corrupt);
    }
    node(b, depth)?;
    let g = bm.read_lock(b, Validator::BtreeNode)?;
    let h = hdr(&g)?;
    let mut prev: Option<u64> = None;
    for i in 0..h.nr {
        let k = key_at(&g, i)?;
        if prev.is_some_and(|p| p >= k) {
            return Err(Error::Corrupt);
        }
        prev = Some(k);
        if h.internal {
            walk_rec(bm, child_at(&g, &h, i)?, f, node, depth + 1)?;
        } else {
            f(k, value_at(&g, &h, i)?)?;
        }
    }
    Ok(())
}

/// Shadows a node for writing; if it was shared, takes references on all
/// it points to.
fn shadow_node<B: BlockManager>(tm: &mut Tm<B>, vt: &mut dyn ValueType<B>, b: u64) -> Result<u64> {
    let (nb, shared) = tm.shadow(b, Validator::BtreeNode)?;
    if shared {
        inc_children(tm, vt, nb)?;
    }
    Ok(nb)
}

fn inc_children<B: BlockManager>(tm: &mut Tm<B>, vt: &mut dyn ValueType<B>, b: u64) -> Result<()> {
    let h = hdr(&*tm.bm().read_lock(b, Validator::BtreeNode)?)?;
    for i in 0..h.nr {
        let mut v = [0u8; MAX_VALUE_SIZE];
        {
            let g = tm.bm().read_lock(b, Validator::BtreeNode)?;
            sub_mut(&mut v, 0, h.vs)?.copy_from_slice(value_at(&g, &h, i)?);
        }
        if h.internal {
            tm.inc(get_u64(&v, 0)?)?;
        } else {
            if vt.size() != h.vs {
                return Err(Error::Corrupt);
            }
            vt.inc(tm, sub(&v, 0, h.vs)?)?;
        }
    }
    Ok(())
}

/// Splits full node `b` (already shadowed) into `b` and a new right sibling;
/// returns the sibling's location and first key.
fn split_sibling<B: BlockManager>(tm: &mut Tm<B>, b: u64) -> Result<(u64, u64)> {
    let nb = tm.alloc_block()?;
    let bm = tm.bm();
    let mut left = bm.write_lock(b, Validator::BtreeNode)?;
    let mut right = bm.write_lock_zero(nb, Validator::BtreeNode)?;
    let lh = hdr(&left)?;
    init_node(&mut right, lh.internal, lh.vs)?;
    // Nodes written elsewhere may use another max_entries; copy_entries
    // checks that the moved entries fit.
    let rh = hdr(&right)?;
    let nl = lh.nr / 2;
    let nr = lh.nr - nl;
    copy_entries(&mut right, &rh, 0, &left, &lh, nl, nr)?;
    set_nr(&mut right, nr)?;
    set_nr(&mut left, nl)?;
    Ok((nb, key_at(&right, 0)?))
}

/// Splits the full root `b` in place: its entries move to two new children
/// and it becomes an internal node pointing at them.
fn split_beneath<B: BlockManager>(tm: &mut Tm<B>, b: u64) -> Result<()> {
    let lb = tm.alloc_block()?;
    let rb = tm.alloc_block()?;
    let bm = tm.bm();
    let mut root = bm.write_lock(b, Validator::BtreeNode)?;
    let h = hdr(&root)?;
    let nl = h.nr / 2;
    let nr = h.nr - nl;
    let mut keys = [0u64; 2];
    for (k, (blk, from, n)) in keys.iter_mut().zip([(lb, 0, nl), (rb, nl, nr)]) {
        let mut c = bm.write_lock_zero(blk, Validator::BtreeNode)?;
        init_node(&mut c, h.internal, h.vs)?;
        let ch = hdr(&c)?;
        copy_entries(&mut c, &ch, 0, &root, &h, from, n)?;
        set_nr(&mut c, n)?;
        *k = key_at(&c, 0)?;
    }
    init_node(&mut root, true, 8)?;
    let mut rh = hdr(&root)?;
    insert_at(&mut root, &mut rh, 0, keys[0], &lb.to_le_bytes())?;
    insert_at(&mut root, &mut rh, 1, keys[1], &rb.to_le_bytes())?;
    Ok(())
}

/// Where an insert will land: the (shadowed) leaf, the index, and whether
/// the key is already present.
struct Spot {
    root: u64,
    leaf: u64,
    index: usize,
    exists: bool,
    /// The value at `index` before the insert, if `exists`.
    old: [u8; MAX_VALUE_SIZE],
}

/// Shadows the path to `key`, splitting full nodes on the way down, so the
/// leaf reached has room for one more entry. With `value`, also stores
/// `key -> value` in the leaf while it is locked (no reference counting).
fn prepare_insert<B: BlockManager>(
    tm: &mut Tm<B>,
    vt: &mut dyn ValueType<B>,
    root: u64,
    key: u64,
    value: Option<&[u8]>,
) -> Result<Spot> {
    let new_root = shadow_node(tm, vt, root)?;
    let mut cur = new_root;
    let mut root_checked = false;
    // One pass more than the depth: a full root is split beneath first.
    for _ in 0..=MAX_DEPTH {
        let (h, i, child) = {
            let mut g = tm.bm().write_lock(cur, Validator::BtreeNode)?;
            let mut h = hdr(&g)?;
            if !root_checked {
                root_checked = true;
                if h.nr >= h.max {
                    drop(g);
                    split_beneath(tm, new_root)?;
                    continue;
                }
            }
            if !h.internal {
                if h.vs != vt.size() {
                    return Err(Error::Corrupt);
                }
                let (index, exists) = match lower_bound(&g, &h, key)? {
                    Some(i) if key_at(&g, i)? == key => (i, true),
                    Some(i) => (i + 1, false),
                    None => (0, false),
                };
                let mut old = [0u8; MAX_VALUE_SIZE];
                if exists {
                    sub_mut(&mut old, 0, h.vs)?.copy_from_slice(value_at(&g, &h, index)?);
                }
                if let Some(v) = value {
                    if exists {
                        sub_mut(&mut g[..], val_off(&h, index), h.vs)?.copy_from_slice(v);
                    } else {
                        insert_at(&mut g, &mut h, index, key, v)?;
                    }
                }
                return Ok(Spot {
                    root: new_root,
                    leaf: cur,
                    index,
                    exists,
                    old,
                });
            }
            let i = match lower_bound(&g, &h, key)? {
                Some(i) => i,
                None => {
                    if h.nr == 0 {
                        return Err(Error::Corrupt);
                    }
                    put_u64(&mut g[..], key_off(0), key)?;
                    0
                }
            };
            let child = child_at(&g, &h, i)?;
            (h, i, child)
        };
        let nchild = shadow_node(tm, vt, child)?;
        if nchild != child {
            let mut g = tm.bm().write_lock(cur, Validator::BtreeNode)?;
            put_u64(&mut g[..], val_off(&h, i), nchild)?;
        }
        let full = {
            let ch = hdr(&*tm.bm().read_lock(nchild, Validator::BtreeNode)?)?;
            ch.nr >= ch.max
        };
        if full {
            if let Some(next) = balance_for_insert(tm, vt, cur, i, key)? {
                cur = next;
                continue;
            }
            let (sib, sib_key) = split_sibling(tm, nchild)?;
            {
                let mut g = tm.bm().write_lock(cur, Validator::BtreeNode)?;
                let mut ph = hdr(&g)?;
                insert_at(&mut g, &mut ph, i + 1, sib_key, &sib.to_le_bytes())?;
            }
            cur = if key >= sib_key { sib } else { nchild };
        } else {
            cur = nchild;
        }
    }
    Err(Error::Corrupt)
}

/// Inserts `key -> value` into the tree at `root`, returning the new root
/// and whether the key was new.
///
/// The tree takes over the caller's reference on `value`. When an existing
/// different value is overwritten, the tree drops its reference on it.
pub fn insert<B: BlockManager>(
    tm: &mut Tm<B>,
    vt: &mut dyn ValueType<B>,
    root: u64,
    key: u64,
    value: &[u8],
) -> Result<(u64, bool)> {
    let vs = vt.size();
    if value.len() != vs {
        return Err(Error::Inval);
    }
    let spot = prepare_insert(tm, vt, root, key, Some(value))?;
    if spot.exists {
        let old = sub(&spot.old, 0, vs)?;
        if old != value {
            vt.dec(tm, old)?;
        }
    }
    Ok((spot.root, !spot.exists))
}

/// Inserts or updates `key` with a value computed by `f` from the old
/// value (if any). The path to the leaf is shadowed before `f` runs, so `f`
/// may itself modify trees the value refers to (multi-level trees). No
/// reference counting is done on the old or new value.
pub fn insert_with<B, F>(
    tm: &mut Tm<B>,
    vt: &mut dyn ValueType<B>,
    root: u64,
    key: u64,
    f: F,
) -> Result<(u64, bool)>
where
    B: BlockManager,
    F: FnOnce(&mut Tm<B>, Option<&[u8]>) -> Result<[u8; MAX_VALUE_SIZE]>,
{
    let vs = vt.size();
    let spot = prepare_insert(tm, vt, root, key, None)?;
    let nv = f(
        tm,
        if spot.exists {
            Some(sub(&spot.old, 0, vs)?)
        } else {
            None
        },
    )?;
    let mut g = tm.bm().write_lock(spot.leaf, Validator::BtreeNode)?;
    let mut h = hdr(&g)?;
    if spot.exists {
        sub_mut(&mut g[..], val_off(&h, spot.index), vs)?.copy_from_slice(sub(&nv, 0, vs)?);
    } else {
        insert_at(&mut g, &mut h, spot.index, key, sub(&nv, 0, vs)?)?;
    }
    Ok((spot.root, !spot.exists))
}

/// Shadows child `i` of `parent` and repoints the parent at the copy.
fn shadow_child<B: BlockManager>(
    tm: &mut Tm<B>,
    vt: &mut dyn ValueType<B>,
    parent: u64,
    i: usize,
) -> Result<u64> {
    let (h, child) = {
        let g = tm.bm().read_lock(parent, Validator::BtreeNode)?;
        let h = hdr(&g)?;
        if i >= h.nr {
            return Err(Error::Corrupt);
        }
        (h, child_at(&g, &h, i)?)
    };
    let nc = shadow_node(tm, vt, child)?;
    if nc != child {
        let mut g = tm.bm().write_lock(parent, Validator::BtreeNode)?;
        put_u64(&mut g[..], val_off(&h, i), nc)?;
    }
    Ok(nc)
}

/// Moves entries `[from, nr)` of a node to start at `to`.
fn shift_entries(d: &mut Block, h: &Hdr, from: usize, to: usize) -> Result<()> {
    if from > h.nr || to + (h.nr - from) > h.max {
        return Err(Error::Corrupt);
    }
    d.copy_within(key_off(from)..key_off(h.nr), key_off(to));
    d.copy_within(val_off(h, from)..val_off(h, h.nr), val_off(h, to));
    Ok(())
}

/// Spreads the entries of adjacent siblings `l` and `r` (child `ri` of
/// `pg`) evenly between them and fixes the parent's key for `r`.
fn even_out(
    pg: &mut Block,
    ri: usize,
    l: &mut Block,
    lh: &mut Hdr,
    r: &mut Block,
    rh: &mut Hdr,
) -> Result<()> {
    if lh.vs != rh.vs || lh.internal != rh.internal {
        return Err(Error::Corrupt);
    }
    let target = (lh.nr + rh.nr) / 2;
    if lh.nr < target {
        let n = target - lh.nr;
        copy_entries(l, lh, lh.nr, r, rh, 0, n)?;
        shift_entries(r, rh, n, 0)?;
        lh.nr += n;
        rh.nr -= n;
    } else {
        let n = lh.nr - target;
        // Check the room first: shift_entries would refuse, but be explicit.
        if rh.nr + n > rh.max {
            return Err(Error::Corrupt);
        }
        shift_entries(r, rh, 0, n)?;
        rh.nr += n;
        copy_entries(r, rh, 0, l, lh, target, n)?;
        lh.nr = target;
    }
    set_nr(l, lh.nr)?;
    set_nr(r, rh.nr)?;
    put_u64(&mut pg[..], key_off(ri), key_at(r, 0)?)
}

/// Before splitting the full child `i` of `parent`, tries to make room by
/// spreading its entries over a sibling with space (as dm-btree does), which
/// keeps nodes fuller. Returns the child now covering `key`, or `None` if
/// no sibling has room.
fn balance_for_insert<B: BlockManager>(
    tm: &mut Tm<B>,
    vt: &mut dyn ValueType<B>,
    parent: u64,
    i: usize,
    key: u64,
) -> Result<Option<u64>> {
    let (ph, sibs) = {
        let g = tm.bm().read_lock(parent, Validator::BtreeNode)?;
        let ph = hdr(&g)?;
        let left = i.checked_sub(1).map(|j| (j, i));
        let right = if i + 1 < ph.nr {
            Some((i, i + 1))
        } else {
            None
        };
        (ph, [left, right])
    };
    for (li, ri) in sibs.into_iter().flatten() {
        let sib = if li == i { ri } else { li };
        let (sn, cn, max) = {
            let g = tm.bm().read_lock(parent, Validator::BtreeNode)?;
            let sb = child_at(&g, &ph, sib)?;
            let cb = child_at(&g, &ph, i)?;
            let sh = hdr(&*tm.bm().read_lock(sb, Validator::BtreeNode)?)?;
            let ch = hdr(&*tm.bm().read_lock(cb, Validator::BtreeNode)?)?;
            (sh.nr, ch.nr, sh.max.min(ch.max))
        };
        // After evening out both must keep a free slot.
        if sn + cn + 2 > 2 * max {
            continue;
        }
        let lb = shadow_child(tm, vt, parent, li)?;
        let rb = shadow_child(tm, vt, parent, ri)?;
        let bm = tm.bm();
        let mut pg = bm.write_lock(parent, Validator::BtreeNode)?;
        let mut l = bm.write_lock(lb, Validator::BtreeNode)?;
        let mut r = bm.write_lock(rb, Validator::BtreeNode)?;
        let mut lh = hdr(&l)?;
        let mut rh = hdr(&r)?;
        even_out(&mut pg, ri, &mut l, &mut lh, &mut r, &mut rh)?;
        let ph = hdr(&pg)?;
        let j = lower_bound(&pg, &ph, key)?.ok_or(Error::Corrupt)?;
        return Ok(Some(child_at(&pg, &ph, j)?));
    }
    Ok(None)
}

/// Makes sure child `i` of `parent` (internal, already shadowed) can lose
/// an entry: if it is at the minimum fill it is merged with or refilled
/// from a sibling. Returns the index of the child now covering `key`.
fn rebalance_child<B: BlockManager>(
    tm: &mut Tm<B>,
    vt: &mut dyn ValueType<B>,
    parent: u64,
    i: usize,
    key: u64,
) -> Result<usize> {
    let c = shadow_child(tm, vt, parent, i)?;
    let ch = hdr(&*tm.bm().read_lock(c, Validator::BtreeNode)?)?;
    let pn = hdr(&*tm.bm().read_lock(parent, Validator::BtreeNode)?)?.nr;
    if ch.nr > ch.max / 3 || pn < 2 {
        return Ok(i);
    }
    let (li, ri) = if i + 1 < pn { (i, i + 1) } else { (i - 1, i) };
    let lb = shadow_child(tm, vt, parent, li)?;
    let rb = shadow_child(tm, vt, parent, ri)?;
    let merged = {
        let bm = tm.bm();
        let mut pg = bm.write_lock(parent, Validator::BtreeNode)?;
        let mut l = bm.write_lock(lb, Validator::BtreeNode)?;
        let mut r = bm.write_lock(rb, Validator::BtreeNode)?;
        let mut ph = hdr(&pg)?;
        let mut lh = hdr(&l)?;
        let mut rh = hdr(&r)?;
        if lh.vs != rh.vs || lh.internal != rh.internal {
            return Err(Error::Corrupt);
        }
        if lh.nr + rh.nr <= lh.max {
            copy_entries(&mut l, &lh, lh.nr, &r, &rh, 0, rh.nr)?;
            lh.nr += rh.nr;
            set_nr(&mut l, lh.nr)?;
            delete_at(&mut pg, &mut ph, ri)?;
            true
        } else {
            even_out(&mut pg, ri, &mut l, &mut lh, &mut r, &mut rh)?;
            false
        }
    };
    if merged {
        // The right node's entries now live in the left one, so only the
        // node itself is released (it is fresh, so this frees it).
        tm.dec(rb)?;
    }
    let g = tm.bm().read_lock(parent, Validator::BtreeNode)?;
    let h = hdr(&g)?;
    lower_bound(&g, &h, key)?.ok_or(Error::Corrupt)
}

/// Removes `key` from the tree at `root` and drops the tree's reference on
/// its value. Returns the new root; [`Error::NoData`] if `key` is absent
/// (in which case nothing is modified).
pub fn remove<B: BlockManager>(
    tm: &mut Tm<B>,
    vt: &mut dyn ValueType<B>,
    root: u64,
    key: u64,
) -> Result<u64> {
    let vs = vt.size();
    let mut old = [0u8; MAX_VALUE_SIZE];
    lookup(tm.bm(), root, key, sub_mut(&mut old, 0, vs)?, true)?;
    let new_root = shadow_node(tm, vt, root)?;
    let mut cur = new_root;
    let mut done = false;
    for _ in 0..MAX_DEPTH {
        let internal = hdr(&*tm.bm().read_lock(cur, Validator::BtreeNode)?)?.internal;
        if !internal {
            let mut g = tm.bm().write_lock(cur, Validator::BtreeNode)?;
            let mut h = hdr(&g)?;
            if h.vs != vs {
                return Err(Error::Corrupt);
            }
            let i = match lower_bound(&g, &h, key)? {
                Some(i) if key_at(&g, i)? == key => i,
                _ => return Err(Error::Corrupt),
            };
            sub_mut(&mut old, 0, vs)?.copy_from_slice(value_at(&g, &h, i)?);
            delete_at(&mut g, &mut h, i)?;
            done = true;
            break;
        }
        let i = {
            let g = tm.bm().read_lock(cur, Validator::BtreeNode)?;
            let h = hdr(&g)?;
            lower_bound(&g, &h, key)?.ok_or(Error::Corrupt)?
        };
        let i = rebalance_child(tm, vt, cur, i, key)?;
        cur = {
            let g = tm.bm().read_lock(cur, Validator::BtreeNode)?;
            let h = hdr(&g)?;
            child_at(&g, &h, i)?
        };
    }
    if !done {
        return Err(Error::Corrupt);
    }
    vt.dec(tm, sub(&old, 0, vs)?)?;
    // An internal root with a single child is replaced by that child.
    let mut root = new_root;
    for _ in 0..MAX_DEPTH {
        let only = {
            let g = tm.bm().read_lock(root, Validator::BtreeNode)?;
            let h = hdr(&g)?;
            if h.internal && h.nr == 1 {
                Some(child_at(&g, &h, 0)?)
            } else {
                None
            }
        };
        match only {
            Some(c) => {
                tm.dec(root)?;
                root = c;
            }
            None => break,
        }
    }
    Ok(root)
}

/// Removes every key in `[begin, end)`; returns the new root and the
/// number of entries removed.
pub fn remove_range<B: BlockManager>(
    tm: &mut Tm<B>,
    vt: &mut dyn ValueType<B>,
    root: u64,
    begin: u64,
    end: u64,
) -> Result<(u64, u64)> {
    let vs = vt.size();
    let mut root = root;
    let mut count = 0u64;
    let mut next = begin;
    let mut tmp = [0u8; MAX_VALUE_SIZE];
    while next < end {
        match lookup_ge(tm.bm(), root, next, sub_mut(&mut tmp, 0, vs)?)? {
            Some(k) if k < end => {
                root = remove(tm, vt, root, k)?;
                count += 1;
                next = k + 1;
            }
            _ => break,
        }
    }
    Ok((root, count))
}

#[derive(Clone, Copy)]
struct Frame {
    b: u64,
    idx: usize,
    h: Hdr,
}

/// Drops the caller's reference on the tree at `root`; nodes (and the
/// values in them) are released when their count reaches zero.
pub fn del<B: BlockManager>(tm: &mut Tm<B>, vt: &mut dyn ValueType<B>, root: u64) -> Result<()> {
    let empty = Frame {
        b: 0,
        idx: 0,
        h: Hdr {
            internal: false,
            nr: 0,
            max: 0,
            vs: 0,
        },
    };
    let mut stack = [empty; MAX_DEPTH];
    let mut sp = 0usize;
    let mut pending = Some(root);
    loop {
        if let Some(b) = pending.take() {
            if tm.count(b)? > 1 {
                tm.dec(b)?;
            } else {
                let h = hdr(&*tm.bm().read_lock(b, Validator::BtreeNode)?)?;
                *stack.get_mut(sp).ok_or(Error::Corrupt)? = Frame { b, idx: 0, h };
                sp += 1;
            }
        }
        let Some(top) = sp.checked_sub(1) else {
            return Ok(());
        };
        let f = stack.get_mut(top).ok_or(Error::Corrupt)?;
        if f.idx >= f.h.nr {
            let b = f.b;
            sp = top;
            tm.dec(b)?;
            continue;
        }
        let (b, h, i) = (f.b, f.h, f.idx);
        f.idx += 1;
        let mut v = [0u8; MAX_VALUE_SIZE];
        {
            let g = tm.bm().read_lock(b, Validator::BtreeNode)?;
            sub_mut(&mut v, 0, h.vs)?.copy_from_slice(value_at(&g, &h, i)?);
        }
        if h.internal {
            pending = Some(get_u64(&v, 0)?);
        } else {
            if vt.size() != h.vs {
                return Err(Error::Corrupt);
            }
            vt.dec(tm, sub(&v, 0, h.vs)?)?;
        }
    }
}
