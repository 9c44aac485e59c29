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

/// Writes thin_dump-style XML for `model`.
fn xml_for(model: &Dump, nr_data: u64, time: u32) -> String {
    let mut s = format!(
        "<superblock uuid=\"\" time=\"{time}\" transaction=\"3\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"{nr_data}\">\n"
    );
    for (dev, (mb, maps)) in model {
        s += &format!(
            "  <device dev_id=\"{dev}\" mapped_blocks=\"{mb}\" transaction=\"1\" creation_time=\"0\" snap_time=\"{time}\">\n"
        );
        let mut i = 0;
        while i < maps.len() {
            // Emit runs as range mappings to exercise both forms.
            let (o, d, t) = maps[i];
            let mut n = 1;
            while i + n < maps.len() && maps[i + n] == (o + n as u64, d + n as u64, t) {
                n += 1;
            }
            if n > 1 {
                s += &format!(
                    "    <range_mapping origin_begin=\"{o}\" data_begin=\"{d}\" length=\"{n}\" time=\"{t}\"/>\n"
                );
            } else {
                s += &format!(
                    "    <single_mapping origin_block=\"{o}\" data_block=\"{d}\" time=\"{t}\"/>\n"
                );
            }
            i += n;
        }
        s += "  </device>\n";
    }
    s += "</superblock>\n";
    s
}

fn restore(xml: &str, nr_meta: u64, dir: &std::path::Path) -> std::path::PathBuf {
    let x = dir.join("in.xml");
    std::fs::write(&x, xml).unwrap();
    let img = dir.join("restored");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(nr_meta * 4096).unwrap();
    drop(f);
    let out = std::process::Command::new("thin_restore")
        .arg("-i")
        .arg(&x)
        .arg("-o")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "thin_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

#[test]
fn reads_thin_restore_output_and_modifies_it() {
    if !tools_present() {
        eprintln!("SKIPPED: thin-provisioning-tools not installed");
        return;
    }
    let mut model = Dump::new();
    let mut rng = 12345u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut data = 0u64;
    for dev in [0u64, 3, 17] {
        let mut maps = vec![];
        let mut v = 0u64;
        for _ in 0..4000 {
            v += 1 + next() % 4;
            maps.push((v, data, (next() % 3) as u32));
            data += 1 + (next() % 2);
        }
        model.insert(dev, (maps.len() as u64, maps));
    }
    // A device sharing some data blocks with device 0 (as a snapshot would).
    let shared: Vec<_> = model[&0].1.iter().take(500).cloned().collect();
    model.insert(40, (shared.len() as u64, shared));
    let nr_data = data + 1000;
    let dir = tempfile::tempdir().unwrap();
    let nr_meta = 2048;
    let img = restore(&xml_for(&model, nr_data, 2), nr_meta, dir.path());
    let (disk, n) = read_image(&img);
    assert_eq!(n, nr_meta);

    // Our independent checker agrees with the tools' reference counts.
    let bm = HostBm::new(disk.clone(), nr_meta, nr_meta);
    let rep = rthin_pdata::host::check::check_with(&bm, false).unwrap();
    assert_eq!(rep.devices, 4);
    let mut p = PoolMetadata::open(bm, false).unwrap();
    assert_eq!(p.transaction_id(), 3);
    assert_eq!(p.time(), 2);
    assert_eq!(p.nr_data_blocks(), nr_data);
    assert_eq!(model_of(&p), model);
    for (dev, (_, maps)) in &model {
        for &(o, d, t) in maps.iter().step_by(97) {
            let r = p.find_block(*dev, o, true).unwrap();
            assert_eq!(r.block, d);
            assert_eq!(r.shared, 2 > t);
        }
    }
    let shared_block = model[&40].1[0].1;
    assert_eq!(p.data_block_count(shared_block).unwrap(), 2);

    // Modify what the tools wrote, then hand it back to them.
    p.delete_thin(3).unwrap();
    p.create_snap(5, 17).unwrap();
    for i in 0..300u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(5, i * 11, b).unwrap();
    }
    p.remove_range(0, 0, 2000).unwrap();
    p.commit().unwrap();
    rthin_pdata::host::check::check_with(p.bm(), false).unwrap();
    let expect = model_of(&p);
    assert_eq!(expect.len(), 4);
    check_against_tools(&disk, nr_meta, &expect);
}

#[test]
fn metadata_snapshot_visible_to_thin_dump() {
    if !tools_present() {
        eprintln!("SKIPPED: thin-provisioning-tools not installed");
        return;
    }
    let nr = 2048;
    let (bm, disk) = mem_bm(nr);
    let mut p = PoolMetadata::format(bm, 256, 50_000).unwrap();
    p.create_thin(1).unwrap();
    for i in 0..1000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(1, i, b).unwrap();
    }
    p.reserve_metadata_snap().unwrap();
    let snap_model = model_of(&p);
    let held = p.held_root();
    assert_ne!(held, 0);
    for i in 0..1000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert_block(1, i, b).unwrap();
    }
    p.create_thin(2).unwrap();
    p.commit().unwrap();
    rthin_pdata::host::check::check(p.bm()).unwrap();
    let live = model_of(&p);
    check_against_tools(&disk, nr, &live);
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("meta");
    write_image(&disk, nr, &img);
    let xml = thin_dump(&img, &["-m"]);
    assert_eq!(parse_dump(&xml), snap_model);
    p.release_metadata_snap().unwrap();
    p.commit().unwrap();
    rthin_pdata::host::check::check(p.bm()).unwrap();
    check_against_tools(&disk, nr, &live);
}
