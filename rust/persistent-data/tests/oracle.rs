//! External oracle: thin-provisioning-tools read what we write and we read
//! what they write.
mod common;
use common::*;
use rthin_pdata::host::HostBm;
use rthin_pdata::PoolMetadata;

#[test]
fn empty_pool_passes_thin_check() {
    if !tools_present() {
        eprintln!("SKIPPED: thin-provisioning-tools not installed");
        return;
    }
    let (bm, disk) = mem_bm(1024);
    let p = PoolMetadata::format(bm, 128, 10000).unwrap();
    drop(p);
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("meta");
    write_image(&disk, 1024, &img);
    let (ok, out) = thin_check(&img);
    assert!(ok, "thin_check failed:\n{out}");
    let _ = HostBm::new(disk, 1024, 1024);
}

fn check_against_tools(disk: &rthin_pdata::host::MemDisk, nr: u64, expect: &Dump) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("meta");
    write_image(disk, nr, &img);
    let (ok, out) = thin_check(&img);
    assert!(ok, "thin_check failed:\n{out}");
    let xml = thin_dump(&img, &[]);
    let got = parse_dump(&xml);
    assert_eq!(got.len(), expect.len(), "device count differs:\n{xml}");
    for (dev, (mb, maps)) in expect {
        let (gmb, gmaps) = got
            .get(dev)
            .unwrap_or_else(|| panic!("device {dev} missing"));
        assert_eq!(gmaps, maps, "mappings of dev {dev} differ");
        assert_eq!(gmb, mb, "mapped_blocks of dev {dev}");
    }
}

fn model_of(p: &PoolMetadata<rthin_pdata::host::MemBm>) -> Dump {
    let mut d = Dump::new();
    let mut devs = vec![];
    p.for_each_device(&mut |dev, det| {
        devs.push((dev, det.mapped_blocks));
        Ok(())
    })
    .unwrap();
    for (dev, mb) in devs {
        let mut maps = vec![];
        p.for_each_mapping(dev, &mut |v, b, t| {
            maps.push((v, b, t));
            Ok(())
        })
        .unwrap();
        assert_eq!(maps.len() as u64, mb);
        d.insert(dev, (mb, maps));
    }
    d
}

#[test]
fn devices_mappings_snapshots_pass_thin_check() {
    if !tools_present() {
        eprintln!("SKIPPED: thin-provisioning-tools not installed");
        return;
    }
    let nr = 4096;
    let (bm, disk) = mem_bm(nr);
    let mut p = PoolMetadata::format(bm, 128, 100_000).unwrap();
    p.create_thin(1).unwrap();
    p.create_thin(7).unwrap();
    for i in 0..3000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(1, i * 3, b).unwrap();
    }
    p.commit().unwrap();
    p.create_snap(2, 1).unwrap();
    for i in 0..500u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(2, i * 5, b).unwrap();
        let b = p.alloc_data_block().unwrap();
        p.insert_block(7, i, b).unwrap();
    }
    p.remove_range(1, 100, 2000).unwrap();
    p.commit().unwrap();
    let expect = model_of(&p);
    check_against_tools(&disk, nr, &expect);
}
