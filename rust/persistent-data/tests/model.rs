//! Random operation sequences against an in-memory model, with commits,
//! aborts and crashes, checking lookups, free counts and (after every
//! commit/abort/crash) full reference-count consistency.
mod common;
use proptest::prelude::*;
use rthin_pdata::host::check::check;
use rthin_pdata::host::{HostBm, MemBm, MemDisk};
use rthin_pdata::{BlockManager, Error, PoolMetadata};
use std::collections::BTreeMap;

const META: u64 = 2048;
const META_CAP: u64 = 4096;
const DATA: u64 = 3000;
const NDEV: u64 = 4;
const NBLK: u64 = 600;

#[derive(Clone, Debug)]
enum Op {
    Create(u64),
    Snap(u64, u64),
    Delete(u64),
    Insert(u64, u64, u16),
    Remove(u64, u64),
    RemoveRange(u64, u64, u64),
    Commit,
    Abort,
    Crash(u64),
    Reserve,
    Release,
    ResizeData(u64),
    ResizeMeta(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..NDEV).prop_map(Op::Create),
        2 => (0..NDEV, 0..NDEV).prop_map(|(a, b)| Op::Snap(a, b)),
        1 => (0..NDEV).prop_map(Op::Delete),
        30 => (0..NDEV, 0..NBLK, 1u16..80).prop_map(|(d, b, n)| Op::Insert(d, b, n)),
        6 => (0..NDEV, 0..NBLK).prop_map(|(d, b)| Op::Remove(d, b)),
        2 => (0..NDEV, 0..NBLK, 0..200u64).prop_map(|(d, b, n)| Op::RemoveRange(d, b, n)),
        4 => Just(Op::Commit),
        1 => Just(Op::Abort),
        2 => any::<u64>().prop_map(Op::Crash),
        1 => Just(Op::Reserve),
        1 => Just(Op::Release),
        1 => (1u64..500).prop_map(Op::ResizeData),
        1 => (1u64..300).prop_map(Op::ResizeMeta),
    ]
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Dev {
    snap_time: u32,
    maps: BTreeMap<u64, (u64, u32)>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    time: u32,
    devs: BTreeMap<u64, Dev>,
    nr_data: u64,
    held: bool,
    held_devs: BTreeMap<u64, Dev>,
}

impl Model {
    fn used_data(&self) -> usize {
        let mut s = std::collections::BTreeSet::new();
        for d in self.devs.values().chain(self.held_devs.values()) {
            for (b, _) in d.maps.values() {
                s.insert(*b);
            }
        }
        s.len()
    }
}

fn verify_lookups(p: &PoolMetadata<MemBm>, m: &Model) {
    for (&dev, d) in &m.devs {
        let det = p.device_details(dev).unwrap();
        assert_eq!(
            det.mapped_blocks,
            d.maps.len() as u64,
            "mapped_blocks dev {dev}"
        );
        assert_eq!(det.snapshotted_time, d.snap_time);
        let mut got = BTreeMap::new();
        p.for_each_mapping(dev, &mut |v, b, t| {
            got.insert(v, (b, t));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, d.maps, "mappings of dev {dev}");
        for (&v, &(b, t)) in d.maps.iter().take(20) {
            let r = p.find_block(dev, v, true).unwrap();
            assert_eq!(r.block, b);
            assert_eq!(r.shared, d.snap_time > t);
        }
    }
    for dev in 0..NDEV {
        if !m.devs.contains_key(&dev) {
            assert_eq!(p.device_details(dev), Err(Error::NoData));
        }
    }
    assert_eq!(p.nr_data_blocks(), m.nr_data);
    assert_eq!(
        p.free_data_blocks(),
        m.nr_data - m.used_data() as u64,
        "free data blocks"
    );
}

struct Rig {
    disk: MemDisk,
    nr_meta: u64,
    p: Option<PoolMetadata<MemBm>>,
}

impl Rig {
    fn p(&mut self) -> &mut PoolMetadata<MemBm> {
        self.p.as_mut().unwrap()
    }
}

fn run(ops: Vec<Op>) {
    let disk = MemDisk::new();
    let bm = HostBm::new(disk.clone(), META, META_CAP);
    let p = PoolMetadata::format(bm, 128, DATA).unwrap();
    let mut rig = Rig {
        disk,
        nr_meta: META,
        p: Some(p),
    };
    let mut cur = Model {
        nr_data: DATA,
        ..Default::default()
    };
    let mut committed = cur.clone();
    for op in ops {
        match op {
            Op::Create(d) => {
                let r = rig.p().create_thin(d);
                if cur.devs.contains_key(&d) {
                    assert_eq!(r, Err(Error::Exists));
                } else {
                    r.unwrap();
                    cur.devs.insert(
                        d,
                        Dev {
                            snap_time: cur.time,
                            maps: BTreeMap::new(),
                        },
                    );
                }
            }
            Op::Snap(d, o) => {
                let r = rig.p().create_snap(d, o);
                if cur.devs.contains_key(&d) {
                    assert_eq!(r, Err(Error::Exists));
                } else if !cur.devs.contains_key(&o) {
                    assert_eq!(r, Err(Error::NoData));
                } else {
                    r.unwrap();
                    cur.time += 1;
                    let t = cur.time;
                    let od = cur.devs.get_mut(&o).unwrap();
                    od.snap_time = t;
                    let maps = od.maps.clone();
                    cur.devs.insert(d, Dev { snap_time: t, maps });
                }
            }
            Op::Delete(d) => {
                let r = rig.p().delete_thin(d);
                if cur.devs.remove(&d).is_none() {
                    assert_eq!(r, Err(Error::NoData));
                } else {
                    r.unwrap();
                }
            }
            Op::Insert(d, b, n) => {
                for i in 0..n as u64 {
                    let v = b + i * 7;
                    if !cur.devs.contains_key(&d) {
                        assert_eq!(rig.p().insert_block(d, v, 0), Err(Error::NoData));
                        break;
                    }
                    let db = match rig.p().alloc_data_block() {
                        Ok(db) => db,
                        Err(Error::NoSpace) => {
                            assert_eq!(
                                cur.used_data() as u64,
                                cur.nr_data,
                                "NoSpace with free blocks"
                            );
                            break;
                        }
                        Err(e) => panic!("alloc: {e:?}"),
                    };
                    rig.p().insert_block(d, v, db).unwrap();
                    let t = cur.time;
                    cur.devs.get_mut(&d).unwrap().maps.insert(v, (db, t));
                }
            }
            Op::Remove(d, b) => {
                let r = rig.p().remove_block(d, b);
                match cur.devs.get_mut(&d).and_then(|x| x.maps.remove(&b)) {
                    Some(_) => r.unwrap(),
                    None => assert_eq!(r, Err(Error::NoData)),
                }
            }
            Op::RemoveRange(d, b, n) => {
                let r = rig.p().remove_range(d, b, b + n);
                match cur.devs.get_mut(&d) {
                    Some(dev) => {
                        let keys: Vec<u64> = dev.maps.range(b..b + n).map(|(k, _)| *k).collect();
                        for k in &keys {
                            dev.maps.remove(k);
                        }
                        assert_eq!(r.unwrap(), keys.len() as u64);
                    }
                    None => assert_eq!(r, Err(Error::NoData)),
                }
            }
            Op::Commit => {
                rig.p().commit().unwrap();
                committed = cur.clone();
                check(rig.p().bm()).unwrap();
            }
            Op::Abort => {
                rig.p().abort().unwrap();
                cur = committed.clone();
                check(rig.p().bm()).unwrap();
            }
            Op::Crash(seed) => {
                // Let some dirty blocks reach the disk first, as a cache
                // under pressure might, then lose the rest.
                // seed % 4 == 0: everything dirty reaches the disk (a crash
                // just before the superblock write of a commit).
                let all = seed % 4 == 0;
                let mut s = seed | 1;
                rig.p()
                    .bm()
                    .writeback_some(&mut |_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        all || s % 3 == 0
                    })
                    .unwrap();
                let _ = rig.p.take().unwrap().into_bm();
                let bm = HostBm::new(rig.disk.clone(), rig.nr_meta, META_CAP);
                check(&bm).unwrap();
                rig.p = Some(PoolMetadata::open(bm, false).unwrap());
                cur = committed.clone();
                rig.nr_meta = rig.p().nr_metadata_blocks().max(META);
            }
            Op::Reserve => {
                let r = rig.p().reserve_metadata_snap();
                if cur.held {
                    assert_eq!(r, Err(Error::Busy));
                } else {
                    r.unwrap();
                    cur.held = true;
                    cur.held_devs = cur.devs.clone();
                    committed = cur.clone();
                    committed.held = false;
                    committed.held_devs.clear();
                }
            }
            Op::Release => {
                let r = rig.p().release_metadata_snap();
                if cur.held {
                    r.unwrap();
                    cur.held = false;
                    cur.held_devs.clear();
                } else {
                    assert_eq!(r, Err(Error::Inval));
                }
            }
            Op::ResizeData(extra) => {
                let n = cur.nr_data + extra;
                rig.p().resize_data(n).unwrap();
                cur.nr_data = n;
            }
            Op::ResizeMeta(extra) => {
                let n = (rig.p().nr_metadata_blocks() + extra).min(META_CAP);
                rig.p().bm().set_nr_blocks(n).unwrap();
                rig.p().resize_metadata(n).unwrap();
                rig.nr_meta = rig.nr_meta.max(n);
            }
        }
        verify_lookups(rig.p(), &cur);
    }
    rig.p().commit().unwrap();
    check(rig.p().bm()).unwrap();
    let bm = rig.p.take().unwrap().into_bm();
    let p = PoolMetadata::open(bm, true).unwrap();
    verify_lookups(&p, &cur);
    let nr_meta = p.bm().nr_blocks();
    drop(p);
    // External oracle on the final image of every fourth sequence.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4 == 0 && common::tools_present() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("meta");
        common::write_image(&rig.disk, nr_meta, &img);
        let (ok, out) = common::thin_check(&img);
        assert!(ok, "thin_check failed:\n{out}");
        let dump = common::parse_dump(&common::thin_dump(&img, &[]));
        let want: common::Dump = cur
            .devs
            .iter()
            .map(|(d, dev)| {
                (
                    *d,
                    (
                        dev.maps.len() as u64,
                        dev.maps.iter().map(|(v, (b, t))| (*v, *b, *t)).collect(),
                    ),
                )
            })
            .collect();
        assert_eq!(dump, want, "thin_dump differs from the model");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256), max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_ops_match_model(ops in proptest::collection::vec(op(), 1..160)) {
        run(ops);
    }
}

#[test]
fn long_fixed_sequence() {
    let mut ops = vec![Op::Create(0), Op::Create(1)];
    for i in 0..300u64 {
        ops.push(Op::Insert(i % 2, (i * 37) % NBLK, 20));
        if i % 25 == 0 {
            ops.push(Op::Commit);
        }
        if i % 40 == 7 {
            ops.push(Op::Snap(2 + (i / 40) % 2, i % 2));
        }
        if i % 60 == 13 {
            ops.push(Op::RemoveRange(i % 2, 0, 300));
        }
        if i % 70 == 9 {
            ops.push(Op::Crash(i));
        }
        if i % 90 == 50 {
            ops.push(Op::Delete(3));
        }
    }
    run(ops);
}
