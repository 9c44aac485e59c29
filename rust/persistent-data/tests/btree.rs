//! B-tree tests against std's BTreeMap: splits, merges, rebalancing,
//! range removal, node fill invariants and reference counts.
use rthin_pdata::btree::{self, max_entries, NoRefs};
use rthin_pdata::host::MemBm;
use rthin_pdata::tm::Tm;
use rthin_pdata::{BlockManager, Validator};
use std::collections::BTreeMap;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn new_tm(nr: u64) -> Tm<MemBm> {
    Tm::format(MemBm::mem(nr), nr, 0).unwrap()
}

/// Checks ordering, fill (non-root nodes at least max/3 full), uniform
/// depth, that every node has count 1, and returns (depth, nodes).
fn check_shape(tm: &Tm<MemBm>, root: u64) -> (usize, usize) {
    let mut leaf_depth = None;
    let mut nodes = 0;
    btree::walk_nodes(tm.bm(), root, &mut |_, _| Ok(()), &mut |b, depth| {
        nodes += 1;
        let g = tm.bm().read_lock(b, Validator::BtreeNode)?;
        let flags = u32::from_le_bytes(g[4..8].try_into().unwrap());
        let nr = u32::from_le_bytes(g[16..20].try_into().unwrap());
        let max = u32::from_le_bytes(g[20..24].try_into().unwrap());
        if b != root {
            assert!(nr >= max / 3, "node {b} underfull: {nr}/{max}");
        }
        if flags == 2 {
            match leaf_depth {
                None => leaf_depth = Some(depth),
                Some(d) => assert_eq!(d, depth, "leaves at different depths"),
            }
        }
        assert_eq!(tm.count(b).unwrap(), 1, "node {b} refcount");
        Ok(())
    })
    .unwrap();
    (leaf_depth.unwrap_or(0), nodes)
}

fn contents(tm: &Tm<MemBm>, root: u64) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    btree::walk(tm.bm(), root, &mut |k, v| {
        m.insert(k, u64::from_le_bytes(v.try_into().unwrap()));
        Ok(())
    })
    .unwrap();
    m
}

#[test]
fn max_entries_matches_dm() {
    assert_eq!(max_entries(8), 252);
    assert_eq!(max_entries(16), 168);
    assert_eq!(max_entries(24), 126);
    assert_eq!(max_entries(4), 336);
}

#[test]
fn random_insert_remove_against_btreemap() {
    let mut tm = new_tm(20000);
    let mut root = btree::empty(&mut tm, 8).unwrap();
    let mut model = BTreeMap::new();
    let mut rng = Rng(0x1234_5678);
    let free0 = tm.nr_free();
    for round in 0..6 {
        for _ in 0..12000 {
            let k = rng.next() % 50_000;
            let v = rng.next();
            let (r, inserted) =
                btree::insert(&mut tm, &mut NoRefs(8), root, k, &v.to_le_bytes()).unwrap();
            root = r;
            assert_eq!(inserted, model.insert(k, v).is_none());
        }
        let (depth, _) = check_shape(&tm, root);
        assert!(depth >= 1, "tree should be deep, depth {depth}");
        for _ in 0..(if round % 2 == 0 { 9000 } else { 15000 }) {
            let k = rng.next() % 50_000;
            let r = btree::remove(&mut tm, &mut NoRefs(8), root, k);
            match model.remove(&k) {
                Some(_) => root = r.unwrap(),
                None => assert_eq!(r, Err(rthin_pdata::Error::NoData)),
            }
        }
        check_shape(&tm, root);
        assert_eq!(contents(&tm, root), model);
        for _ in 0..500 {
            let k = rng.next() % 50_000;
            let mut out = [0u8; 8];
            match model.get(&k) {
                Some(v) => {
                    btree::lookup(tm.bm(), root, k, &mut out, true).unwrap();
                    assert_eq!(u64::from_le_bytes(out), *v);
                }
                None => assert_eq!(
                    btree::lookup(tm.bm(), root, k, &mut out, true),
                    Err(rthin_pdata::Error::NoData)
                ),
            }
            let ge = btree::lookup_ge(tm.bm(), root, k, &mut out).unwrap();
            assert_eq!(ge, model.range(k..).next().map(|(k, _)| *k));
        }
    }
    // Remove everything: back to a single empty leaf, all other blocks freed.
    let keys: Vec<u64> = model.keys().copied().collect();
    for k in keys {
        root = btree::remove(&mut tm, &mut NoRefs(8), root, k).unwrap();
    }
    let (depth, nodes) = check_shape(&tm, root);
    assert_eq!((depth, nodes), (0, 1));
    assert_eq!(tm.nr_free(), free0, "blocks leaked");
}

#[test]
fn remove_range_and_sequential_inserts() {
    let mut tm = new_tm(20000);
    let mut root = btree::empty(&mut tm, 8).unwrap();
    let mut model = BTreeMap::new();
    for k in 0..100_000u64 {
        root = btree::insert(&mut tm, &mut NoRefs(8), root, k * 2, &k.to_le_bytes())
            .unwrap()
            .0;
        model.insert(k * 2, k);
    }
    let (depth, _) = check_shape(&tm, root);
    assert!(depth >= 2, "depth {depth}");
    for (b, e) in [
        (100, 5000),
        (30_000, 30_001),
        (179_990, 300_000),
        (0, 7),
        (20_000, 60_000),
    ] {
        let (r, n) = btree::remove_range(&mut tm, &mut NoRefs(8), root, b, e).unwrap();
        root = r;
        let gone: Vec<u64> = model.range(b..e).map(|(k, _)| *k).collect();
        assert_eq!(n, gone.len() as u64);
        for k in gone {
            model.remove(&k);
        }
        check_shape(&tm, root);
        assert_eq!(contents(&tm, root), model);
    }
}

#[test]
fn shared_tree_copy_on_write() {
    // Share a tree (as a snapshot does), modify one copy, check both and
    // the reference counts; then delete both and check nothing leaks.
    let mut tm = new_tm(10000);
    let free0 = tm.nr_free();
    let mut a = btree::empty(&mut tm, 8).unwrap();
    for k in 0..5000u64 {
        a = btree::insert(&mut tm, &mut NoRefs(8), a, k, &k.to_le_bytes())
            .unwrap()
            .0;
    }
    let before = contents(&tm, a);
    tm.inc(a).unwrap();
    let b_root = a;
    let mut b = b_root;
    for k in (0..5000u64).step_by(3) {
        b = btree::remove(&mut tm, &mut NoRefs(8), b, k).unwrap();
    }
    for k in 5000..6000u64 {
        b = btree::insert(&mut tm, &mut NoRefs(8), b, k, &k.to_le_bytes())
            .unwrap()
            .0;
    }
    assert_ne!(a, b);
    assert_eq!(contents(&tm, a), before);
    let cb = contents(&tm, b);
    assert_eq!(cb.len(), 5000 - 1667 + 1000);
    btree::del(&mut tm, &mut NoRefs(8), a).unwrap();
    check_shape(&tm, b);
    btree::del(&mut tm, &mut NoRefs(8), b).unwrap();
    assert_eq!(tm.nr_free(), free0);
}

#[test]
fn many_commits_reuse_space() {
    // Each commit frees the previous transaction's shadows; space use must
    // stay bounded.
    let mut tm = new_tm(3000);
    let mut root = btree::empty(&mut tm, 8).unwrap();
    for round in 0..200u64 {
        for k in 0..300u64 {
            root = btree::insert(
                &mut tm,
                &mut NoRefs(8),
                root,
                k * 7 + round,
                &round.to_le_bytes(),
            )
            .unwrap()
            .0;
        }
        tm.pre_commit().unwrap();
        tm.bm().flush().unwrap();
        tm.committed();
    }
    assert!(tm.nr_free() > 2000, "free {}", tm.nr_free());
}
