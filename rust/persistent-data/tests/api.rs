//! Thin metadata API behaviour: errors, flags, non-blocking lookups,
//! read-only opens, file-backed devices, resizing across bitmap
//! boundaries and reference counts above two.
mod common;
use common::*;
use rthin_pdata::host::check::check;
use rthin_pdata::host::{FileBm, HostBm};
use rthin_pdata::sm::ENTRIES_PER_BITMAP;
use rthin_pdata::{Error, PoolMetadata};

#[test]
fn basic_errors() {
    let (bm, _) = mem_bm(512);
    assert_eq!(
        PoolMetadata::format(MemBmOf::mem(512), 100, 10).err(),
        Some(Error::Inval)
    );
    let mut p = PoolMetadata::format(bm, 128, 1000).unwrap();
    assert_eq!(p.create_thin(1 << 24), Err(Error::Inval));
    p.create_thin(5).unwrap();
    assert_eq!(p.create_thin(5), Err(Error::Exists));
    assert_eq!(p.create_snap(5, 6), Err(Error::Exists));
    assert_eq!(p.create_snap(6, 7), Err(Error::NoData));
    assert_eq!(p.find_block(5, 0, true), Err(Error::NoData));
    assert_eq!(p.find_block(9, 0, true), Err(Error::NoData));
    assert_eq!(p.remove_block(5, 0), Err(Error::NoData));
    assert_eq!(p.delete_thin(9), Err(Error::NoData));
    assert_eq!(p.insert_block(5, 0, 5000), Err(Error::Inval));
    assert_eq!(p.release_metadata_snap(), Err(Error::Inval));
    assert_eq!(p.set_transaction_id(1, 2), Err(Error::Inval));
    p.set_transaction_id(0, 7).unwrap();
    assert_eq!(p.resize_data(10), Err(Error::Inval));
    for _ in 0..1000 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(5, b, b).unwrap();
    }
    assert_eq!(p.alloc_data_block(), Err(Error::NoSpace));
    assert!(
        !p.failed(),
        "NoSpace from the data space map must not fail the pool"
    );
    assert_eq!(p.free_data_blocks(), 0);
    p.commit().unwrap();
    p.remove_range(5, 0, 10).unwrap();
    // Freed in this transaction: not reusable until the commit.
    assert_eq!(p.free_data_blocks(), 10);
    assert_eq!(p.alloc_data_block(), Err(Error::NoSpace));
    p.commit().unwrap();
    let b = p.alloc_data_block().unwrap();
    assert!(b < 10);
    p.insert_block(5, 0, b).unwrap();
    p.commit().unwrap();
    assert_eq!(p.transaction_id(), 7);
    check(p.bm()).unwrap();
}

type MemBmOf = rthin_pdata::host::MemBm;

#[test]
fn non_blocking_lookup_and_read_only() {
    let (bm, disk) = mem_bm(1024);
    let mut p = PoolMetadata::format(bm, 128, 100_000).unwrap();
    p.create_thin(1).unwrap();
    for i in 0..5000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(1, i, b).unwrap();
    }
    p.commit().unwrap();
    p.bm().drop_clean();
    assert_eq!(p.find_block(1, 4321, false), Err(Error::WouldBlock));
    let r = p.find_block(1, 4321, true).unwrap();
    assert_eq!(p.find_block(1, 4321, false), Ok(r));
    assert!(!r.shared);
    drop(p);

    let bm = HostBm::new(disk.clone(), 1024, 1024);
    let mut p = PoolMetadata::open(bm, true).unwrap();
    assert_eq!(p.find_block(1, 4321, true), Ok(r));
    assert_eq!(p.create_thin(2), Err(Error::ReadOnly));
    assert_eq!(p.alloc_data_block(), Err(Error::ReadOnly));
    assert_eq!(p.commit(), Err(Error::ReadOnly));
    assert!(!p.needs_check());
    drop(p);

    let bm = HostBm::new(disk.clone(), 1024, 1024);
    let mut p = PoolMetadata::open(bm, false).unwrap();
    p.set_needs_check().unwrap();
    drop(p);
    let bm = HostBm::new(disk, 1024, 1024);
    let p = PoolMetadata::open(bm, true).unwrap();
    assert!(p.needs_check());
}

#[test]
fn snapshot_sharing_and_high_refcounts() {
    let nr = 2048;
    let (bm, disk) = mem_bm(nr);
    let mut p = PoolMetadata::format(bm, 128, 50_000).unwrap();
    p.create_thin(0).unwrap();
    for i in 0..3000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(0, i, b).unwrap();
    }
    p.commit().unwrap();
    // Many snapshots: data blocks and tree nodes get counts well above 2,
    // which live in the overflow trees.
    for s in 1..8u64 {
        p.create_snap(s, 0).unwrap();
    }
    // Sharing is at the tree level: data counts only grow when a shared
    // leaf is copied.
    assert_eq!(p.data_block_count(5).unwrap(), 1);
    assert!(p.find_block(0, 5, true).unwrap().shared);
    assert!(p.find_block(3, 5, true).unwrap().shared);
    // Break sharing of block 5 in every snapshot: each copies the leaf.
    let mut news = vec![];
    for s in 1..8u64 {
        let nb = p.alloc_data_block().unwrap();
        p.insert_block(s, 5, nb).unwrap();
        assert!(!p.find_block(s, 5, true).unwrap().shared);
        news.push(nb);
    }
    assert_eq!(p.data_block_count(5).unwrap(), 1);
    assert_eq!(p.data_block_count(6).unwrap(), 8);
    let nb = news[2];
    p.commit().unwrap();
    check(p.bm()).unwrap();
    for s in 1..8u64 {
        p.delete_thin(s).unwrap();
        p.commit().unwrap();
        check(p.bm()).unwrap();
    }
    assert_eq!(p.data_block_count(6).unwrap(), 1);
    assert_eq!(p.data_block_count(nb).unwrap(), 0);
    if tools_present() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("m");
        write_image(&disk, nr, &img);
        let (ok, out) = thin_check(&img);
        assert!(ok, "{out}");
    }
}

#[test]
fn resize_across_bitmap_boundaries() {
    let cap = ENTRIES_PER_BITMAP + 3000;
    let disk = rthin_pdata::host::MemDisk::new();
    let bm = HostBm::new(disk.clone(), 1000, cap);
    let mut p = PoolMetadata::format(bm, 128, 16_000).unwrap();
    p.create_thin(1).unwrap();
    for i in 0..16_000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(1, i, b).unwrap();
    }
    p.commit().unwrap();
    // Data: 16000 -> 40000 blocks (two more bitmaps).
    p.resize_data(40_000).unwrap();
    for i in 16_000..40_000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(1, i, b).unwrap();
    }
    assert_eq!(p.alloc_data_block(), Err(Error::NoSpace));
    p.commit().unwrap();
    check(p.bm()).unwrap();
    // Metadata: 1000 -> past the first bitmap.
    p.bm().set_nr_blocks(cap).unwrap();
    p.resize_metadata(cap).unwrap();
    p.commit().unwrap();
    check(p.bm()).unwrap();
    assert_eq!(p.nr_metadata_blocks(), cap);
    // Churn until the allocator has used the second metadata bitmap.
    let in_second = |p: &PoolMetadata<_>| {
        (ENTRIES_PER_BITMAP..cap).any(|b| p.metadata_block_count(b).unwrap() > 0)
    };
    p.create_snap(2, 1).unwrap();
    let mut r = 0u64;
    while !in_second(&p) {
        p.delete_thin(2).unwrap();
        p.create_snap(2, 1).unwrap();
        for i in (0..40_000u64).step_by(97) {
            p.remove_range(2, i + r % 97, i + r % 97 + 1).unwrap();
        }
        p.commit().unwrap();
        r += 1;
        assert!(r < 300, "second metadata bitmap never used");
    }
    eprintln!("rounds to reach the second metadata bitmap: {r}");
    check(p.bm()).unwrap();
    drop(p);
    let bm = HostBm::new(disk.clone(), cap, cap);
    let p = PoolMetadata::open(bm, false).unwrap();
    assert_eq!(p.nr_data_blocks(), 40_000);
    if tools_present() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("m");
        write_image(&disk, cap, &img);
        let (ok, out) = thin_check(&img);
        assert!(ok, "{out}");
    }
}

#[test]
fn file_backed_device() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(1024 * 4096).unwrap();
    let bm = FileBm::file(f, 1024);
    let mut p = PoolMetadata::open_or_format(bm, 256, 10_000).unwrap();
    p.create_thin(3).unwrap();
    for i in 0..2000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(3, i * 2, b).unwrap();
    }
    p.commit().unwrap();
    drop(p);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let p = PoolMetadata::open_or_format(FileBm::file(f, 1024), 256, 10_000).unwrap();
    assert_eq!(p.device_details(3).unwrap().mapped_blocks, 2000);
    assert_eq!(p.data_block_size(), 256);
    check(p.bm()).unwrap();
    if tools_present() {
        let (ok, out) = thin_check(&path);
        assert!(ok, "{out}");
        let d = parse_dump(&thin_dump(&path, &[]));
        assert_eq!(d[&3].1.len(), 2000);
    }
}

#[test]
fn range_queries_and_flags() {
    let (bm, _) = mem_bm(1024);
    let mut p = PoolMetadata::format(bm, 128, 10_000).unwrap();
    assert!(!p.changed_this_transaction(), "format commits");
    p.create_thin(1).unwrap();
    assert!(p.changed_this_transaction());
    assert_eq!(p.highest_mapped(1), Ok(None));
    assert_eq!(p.find_mapped_range(1, 0, 100), Err(Error::NoData));
    // Virtual 10..20 -> data 100..110, virtual 20..25 -> data 200..205.
    for v in 10..20u64 {
        p.inc_data_range(v + 90, v + 91).unwrap();
        p.insert_block(1, v, v + 90).unwrap();
    }
    p.inc_data_range(200, 205).unwrap();
    for v in 20..25u64 {
        p.insert_block(1, v, v + 180).unwrap();
    }
    assert_eq!(p.mapped_count(1), Ok(15));
    assert_eq!(p.highest_mapped(1), Ok(Some(24)));
    let r = p.find_mapped_range(1, 0, 100).unwrap();
    assert_eq!(
        (r.thin_begin, r.thin_end, r.pool_begin, r.maybe_shared),
        (10, 20, 100, false)
    );
    let r = p.find_mapped_range(1, 15, 22).unwrap();
    assert_eq!((r.thin_begin, r.thin_end, r.pool_begin), (15, 20, 105));
    let r = p.find_mapped_range(1, 20, 100).unwrap();
    assert_eq!((r.thin_begin, r.thin_end, r.pool_begin), (20, 25, 200));
    assert_eq!(p.find_mapped_range(1, 25, 1000), Err(Error::NoData));
    assert!(!p.block_is_shared(100).unwrap());
    p.inc_data_range(100, 102).unwrap();
    assert!(p.block_is_shared(100).unwrap());
    p.dec_data_range(100, 102).unwrap();
    assert!(!p.block_is_shared(100).unwrap());
    assert_eq!(p.dec_data_range(300, 301), Err(Error::Inval));
    p.create_snap(2, 1).unwrap();
    assert!(p.find_mapped_range(1, 0, 100).unwrap().maybe_shared);
    p.commit().unwrap();
    check(p.bm()).unwrap();
    p.set_read_only(true);
    assert_eq!(p.create_thin(3), Err(Error::ReadOnly));
    p.set_read_only(false);
    p.create_thin(3).unwrap();
    p.abort().unwrap();
    assert!(!p.changed_this_transaction());
    assert_eq!(p.device_details(3), Err(Error::NoData));
}

#[test]
fn pool_struct_is_small() {
    // The module boxes it, but it is also moved around on creation.
    let sz = std::mem::size_of::<PoolMetadata<rthin_pdata::host::MemBm>>();
    eprintln!("size_of PoolMetadata<MemBm> = {sz}");
    assert!(
        sz < 1024 + std::mem::size_of::<rthin_pdata::host::MemBm>(),
        "{sz}"
    );
}

#[test]
fn metadata_exhaustion_fails_cleanly_and_aborts() {
    let nr = 48;
    let (bm, disk) = mem_bm(nr);
    let mut p = PoolMetadata::format(bm, 128, 100_000).unwrap();
    p.create_thin(1).unwrap();
    p.commit().unwrap();
    let mut committed = 0u64;
    let err = loop {
        let b = match p.alloc_data_block() {
            Ok(b) => b,
            Err(e) => break e,
        };
        if let Err(e) = p.insert_block(1, b * 2, b) {
            break e;
        }
        if b % 500 == 499 {
            match p.commit() {
                Ok(()) => committed = b + 1,
                Err(e) => break e,
            }
        }
    };
    assert_eq!(err, Error::NoSpace);
    assert!(p.failed());
    assert_eq!(p.create_thin(2), Err(Error::ReadOnly));
    p.abort().unwrap();
    assert!(!p.failed());
    assert_eq!(p.mapped_count(1).unwrap(), committed);
    check(p.bm()).unwrap();
    drop(p);
    let bm = HostBm::new(disk, nr, nr);
    let p = PoolMetadata::open(bm, true).unwrap();
    assert_eq!(p.mapped_count(1).unwrap(), committed);
    assert!(committed > 0);
}

#[test]
fn many_devices_split_top_level_and_details_trees() {
    let nr = 4096;
    let (bm, disk) = mem_bm(nr);
    let mut p = PoolMetadata::format(bm, 128, 100_000).unwrap();
    for d in 0..700u64 {
        p.create_thin(d * 3).unwrap();
        for i in 0..(d % 5) {
            let b = p.alloc_data_block().unwrap();
            p.insert_block(d * 3, i * 100, b).unwrap();
        }
    }
    p.commit().unwrap();
    for d in 0..300u64 {
        p.create_snap(5000 + d, d * 3).unwrap();
    }
    for d in (0..700u64).step_by(2) {
        p.delete_thin(d * 3).unwrap();
    }
    p.commit().unwrap();
    let rep = check(p.bm()).unwrap();
    assert_eq!(rep.devices, 350 + 300);
    for d in 0..300u64 {
        let n = p.mapped_count(5000 + d).unwrap();
        assert_eq!(n, d % 5);
        if n > 0 {
            let orig = p.find_block(5000 + d, 0, true).unwrap();
            assert!(orig.shared);
        }
    }
    if tools_present() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("m");
        write_image(&disk, nr, &img);
        let (ok, out) = thin_check(&img);
        assert!(ok, "{out}");
        assert_eq!(parse_dump(&thin_dump(&img, &[])).len(), 650);
    }
}

/// A disk whose reads can be made to fail.
#[derive(Clone)]
struct FlakyReads {
    disk: rthin_pdata::host::MemDisk,
    fail: std::rc::Rc<std::cell::Cell<bool>>,
}

impl rthin_pdata::host::Backing for FlakyReads {
    fn read(&self, b: u64, out: &mut rthin_pdata::Block) -> rthin_pdata::Result<()> {
        if self.fail.get() {
            return Err(Error::Io);
        }
        self.disk.read(b, out)
    }
    fn write(&self, b: u64, data: &rthin_pdata::Block) -> rthin_pdata::Result<()> {
        self.disk.write(b, data)
    }
    fn sync(&self) -> rthin_pdata::Result<()> {
        Ok(())
    }
}

/// Issue 8, item 11: a commit fails before it writes anything (in the module, the data
/// device's flush fails), the abort that follows cannot re-read the committed superblock
/// (the cache is emptied, as dm-bufio's reset empties it, and the metadata device fails
/// reads), and then the pool sets needs_check. The superblock in memory is the aborted
/// transaction's (new mapping roots, old space map roots): writing it would make the
/// uncommitted, inconsistent transaction the one on disk. A failed abort must leave the
/// metadata failed, so that setting needs_check is refused and the disk keeps the last
/// commit.
#[test]
fn failed_abort_never_writes_the_aborted_superblock() {
    let flaky = FlakyReads {
        disk: rthin_pdata::host::MemDisk::new(),
        fail: Default::default(),
    };
    let nr = 512;
    let mut p = PoolMetadata::format(HostBm::new(flaky.clone(), nr, nr), 128, 1000).unwrap();
    p.create_thin(1).unwrap();
    for b in 0..10 {
        p.insert_block(1, b, b).unwrap();
    }
    p.commit().unwrap();
    let committed = flaky.disk.get(0);
    for b in 10..400 {
        p.insert_block(1, b, b).unwrap();
    }
    p.bm().drop_clean();
    flaky.fail.set(true);
    assert!(p.abort().is_err(), "the abort cannot read the superblock");
    assert!(p.failed(), "a failed abort must leave the metadata failed");
    assert!(
        p.set_needs_check().is_err(),
        "needs_check written over a failed abort"
    );
    let _ = rthin_pdata::BlockManager::flush(p.bm());
    assert!(
        flaky.disk.get(0) == committed,
        "the superblock on disk is no longer the last committed one"
    );
    flaky.fail.set(false);
    drop(p);
    let p = PoolMetadata::open(HostBm::new(flaky.clone(), nr, nr), true).unwrap();
    assert_eq!(p.mapped_count(1).unwrap(), 10);
}
