//! Independent consistency checker for committed metadata (host only).
//!
//! Walks everything reachable from the superblock, recomputes the
//! reference count every metadata and data block should have, and compares
//! with both space maps (bitmaps, overflow trees, index counters and
//! `nr_allocated`). It also checks that every device's `mapped_blocks`
//! matches its mapping tree.

use crate::pdata::block::{get_u32, get_u64, BlockManager, Validator};
use crate::pdata::btree::{self, hdr, key_at, value_at};
use crate::pdata::sm::{bitmap_get, IndexEntry, SmRoot, ENTRIES_PER_BITMAP};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

/// What the checker found in a consistent image.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Metadata blocks in use.
    pub metadata_used: u64,
    /// Data blocks in use.
    pub data_used: u64,
    /// Total mappings over all devices.
    pub mappings: u64,
    /// Devices.
    pub devices: u64,
    /// Blocks of the mapping trees (top and bottom levels, shared counted once).
    pub mapping_tree_nodes: u64,
}

type Counts = HashMap<u64, u32>;

struct Walker<'a, B: BlockManager> {
    bm: &'a B,
    meta: Counts,
    data: Counts,
    visited: HashSet<u64>,
    mapping_nodes: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Top,
    Bottom,
    Plain,
}

fn e(x: crate::pdata::error::Error, what: &str) -> String {
    format!("{what}: {x:?}")
}

impl<B: BlockManager> Walker<'_, B> {
    fn add_meta(&mut self, b: u64) {
        *self.meta.entry(b).or_default() += 1;
    }

    fn tree(&mut self, root: u64, kind: Kind, depth: usize) -> Result<(), String> {
        if depth > 16 {
            return Err("tree too deep".into());
        }
        self.add_meta(root);
        if !self.visited.insert(root) {
            return Ok(());
        }
        if kind != Kind::Plain {
            self.mapping_nodes += 1;
        }
        let (h, entries) = {
            let g = self
                .bm
                .read_lock(root, Validator::BtreeNode)
                .map_err(|x| e(x, "node"))?;
            let h = hdr(&g).map_err(|x| e(x, "hdr"))?;
            let mut v = Vec::new();
            for i in 0..h.nr {
                let val = value_at(&g, &h, i).map_err(|x| e(x, "val"))?;
                v.push((
                    key_at(&g, i).map_err(|x| e(x, "key"))?,
                    if val.len() >= 8 {
                        get_u64(val, 0).unwrap_or(0)
                    } else {
                        0
                    },
                ));
            }
            (h, v)
        };
        for w in entries.windows(2) {
            if w[0].0 >= w[1].0 {
                return Err(format!("keys out of order in node {root}"));
            }
        }
        for (_, v) in entries {
            if h.internal {
                self.tree(v, kind, depth + 1)?;
            } else {
                match kind {
                    Kind::Top => self.tree(v, Kind::Bottom, 0)?,
                    Kind::Bottom => *self.data.entry(v >> 24).or_default() += 1,
                    Kind::Plain => {}
                }
            }
        }
        Ok(())
    }
}

fn read_bitmaps<B: BlockManager>(
    bm: &B,
    strict: bool,
    root: &SmRoot,
    ies: &[IndexEntry],
    what: &str,
) -> Result<Vec<u32>, String> {
    let mut counts = vec![0u32; root.nr_blocks as usize];
    let mut overflow = BTreeMap::new();
    btree::walk(bm, root.ref_count_root, &mut |k, v| {
        overflow.insert(k, get_u32(v, 0)?);
        Ok(())
    })
    .map_err(|x| e(x, "overflow tree"))?;
    for (idx, ie) in ies.iter().enumerate() {
        let g = bm
            .read_lock(ie.blocknr, Validator::Bitmap)
            .map_err(|x| e(x, "bitmap"))?;
        let mut free = 0;
        let mut free_in_range = 0;
        for bit in 0..ENTRIES_PER_BITMAP {
            let v = bitmap_get(&g, bit).map_err(|x| e(x, "bitmap entry"))?;
            let b = idx as u64 * ENTRIES_PER_BITMAP + bit;
            if v == 0 {
                free += 1;
                if b < root.nr_blocks {
                    free_in_range += 1;
                }
            }
            if b >= root.nr_blocks {
                if v != 0 {
                    return Err(format!("{what}: entry past the end in use"));
                }
                continue;
            }
            counts[b as usize] = if v == 3 {
                *overflow
                    .get(&b)
                    .ok_or_else(|| format!("{what}: block {b} has no overflow count"))?
            } else {
                if overflow.contains_key(&b) {
                    return Err(format!("{what}: block {b} has a stale overflow count"));
                }
                v
            };
        }
        // The kernel counts entries past the end of the device as free,
        // thin_restore does not; both are consistent.
        if strict && free != ie.nr_free && free_in_range != ie.nr_free {
            return Err(format!(
                "{what}: bitmap {idx} nr_free {} but {} free entries",
                ie.nr_free, free
            ));
        }
    }
    let used = counts.iter().filter(|&&c| c > 0).count() as u64;
    if used != root.nr_allocated && (strict || used.abs_diff(root.nr_allocated) > 1) {
        return Err(format!(
            "{what}: nr_allocated {} but {} blocks in use",
            root.nr_allocated, used
        ));
    }
    Ok(counts)
}

fn compare(what: &str, actual: &[u32], expected: &Counts) -> Result<(), String> {
    for &b in expected.keys() {
        if b as usize >= actual.len() {
            return Err(format!("{what}: reference to block {b} past the end"));
        }
    }
    for (b, &c) in actual.iter().enumerate() {
        let want = expected.get(&(b as u64)).copied().unwrap_or(0);
        if c != want {
            return Err(format!("{what}: block {b} has count {c}, expected {want}"));
        }
    }
    Ok(())
}

/// Checks the committed metadata on `bm`, including exact index entry
/// free counts.
pub fn check<B: BlockManager>(bm: &B) -> Result<CheckReport, String> {
    check_with(bm, true)
}

/// Checks the committed metadata on `bm`; with `strict == false` the index
/// entries' `nr_free` hints are not compared and `nr_allocated` may be off
/// by one (thin_restore 0.9 leaves the metadata space map's counters one
/// off; the per-block counts must still be exact).
pub fn check_with<B: BlockManager>(bm: &B, strict: bool) -> Result<CheckReport, String> {
    let sb = *bm
        .read_lock(0, Validator::Superblock)
        .map_err(|x| e(x, "superblock"))?;
    let data_root = SmRoot::decode(&sb[64..192]).map_err(|x| e(x, "root"))?;
    let meta_root = SmRoot::decode(&sb[192..320]).map_err(|x| e(x, "root"))?;
    let mapping_root = get_u64(&sb, 320).map_err(|x| e(x, "sb"))?;
    let details_root = get_u64(&sb, 328).map_err(|x| e(x, "sb"))?;
    let held_root = get_u64(&sb, 56).map_err(|x| e(x, "sb"))?;

    let mut w = Walker {
        bm,
        meta: Counts::new(),
        data: Counts::new(),
        visited: HashSet::new(),
        mapping_nodes: 0,
    };
    w.add_meta(0);

    // Metadata space map.
    w.add_meta(meta_root.bitmap_root);
    let mut meta_ies = Vec::new();
    {
        let g = bm
            .read_lock(meta_root.bitmap_root, Validator::Index)
            .map_err(|x| e(x, "index"))?;
        for i in 0..meta_root.nr_bitmaps() as usize {
            meta_ies
                .push(IndexEntry::decode(&g[16 + 16 * i..32 + 16 * i]).map_err(|x| e(x, "ie"))?);
        }
    }
    for ie in &meta_ies {
        w.add_meta(ie.blocknr);
    }
    w.tree(meta_root.ref_count_root, Kind::Plain, 0)?;

    // Data space map.
    let mut data_ies = Vec::new();
    btree::walk(bm, data_root.bitmap_root, &mut |k, v| {
        if k != data_ies.len() as u64 {
            return Err(crate::pdata::error::Error::Corrupt);
        }
        data_ies.push(IndexEntry::decode(v)?);
        Ok(())
    })
    .map_err(|x| e(x, "data index"))?;
    if data_ies.len() as u64 != data_root.nr_bitmaps() {
        return Err("data index has the wrong number of entries".into());
    }
    w.tree(data_root.bitmap_root, Kind::Plain, 0)?;
    for ie in &data_ies {
        w.add_meta(ie.blocknr);
    }
    w.tree(data_root.ref_count_root, Kind::Plain, 0)?;

    // Mappings and details.
    w.tree(mapping_root, Kind::Top, 0)?;
    w.tree(details_root, Kind::Plain, 0)?;
    if held_root != 0 {
        w.add_meta(held_root);
        let hs = *bm
            .read_lock(held_root, Validator::Superblock)
            .map_err(|x| e(x, "held sb"))?;
        w.tree(get_u64(&hs, 320).map_err(|x| e(x, "sb"))?, Kind::Top, 0)?;
        w.tree(get_u64(&hs, 328).map_err(|x| e(x, "sb"))?, Kind::Plain, 0)?;
    }

    let meta_counts = read_bitmaps(bm, strict, &meta_root, &meta_ies, "metadata sm")?;
    compare("metadata sm", &meta_counts, &w.meta)?;
    let data_counts = read_bitmaps(bm, strict, &data_root, &data_ies, "data sm")?;
    compare("data sm", &data_counts, &w.data)?;

    // Devices: same set in both trees, mapped_blocks right.
    let mut devs = BTreeMap::new();
    btree::walk(bm, details_root, &mut |k, v| {
        devs.insert(k, get_u64(v, 0)?);
        Ok(())
    })
    .map_err(|x| e(x, "details"))?;
    let mut tops = BTreeMap::new();
    btree::walk(bm, mapping_root, &mut |k, v| {
        tops.insert(k, get_u64(v, 0)?);
        Ok(())
    })
    .map_err(|x| e(x, "top"))?;
    if devs.keys().ne(tops.keys()) {
        return Err(format!(
            "device sets differ: details {:?} mapping {:?}",
            devs.keys(),
            tops.keys()
        ));
    }
    let mut mappings = 0;
    for (dev, sub) in &tops {
        let mut n = 0u64;
        btree::walk(bm, *sub, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .map_err(|x| e(x, "subtree"))?;
        if n != devs[dev] {
            return Err(format!(
                "device {dev}: mapped_blocks {} but {n} mappings",
                devs[dev]
            ));
        }
        mappings += n;
    }
    Ok(CheckReport {
        metadata_used: meta_root.nr_allocated,
        data_used: data_root.nr_allocated,
        mappings,
        devices: devs.len() as u64,
        mapping_tree_nodes: w.mapping_nodes,
    })
}
