//! Host figures: insert and look up 1M mappings, metadata blocks used, and
//! (if thin_restore is installed) the blocks thin_restore uses for the same
//! mappings.
//!
//! Run with `cargo run --release --example bench [-- N]`.
use rthin_pdata::host::check::{check, check_with};
use rthin_pdata::host::{HostBm, MemDisk};
use rthin_pdata::PoolMetadata;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let nr_meta = 65_536;
    let disk = MemDisk::new();
    let bm = HostBm::new(disk.clone(), nr_meta, nr_meta);
    let mut p = PoolMetadata::format(bm, 128, n + 1000).unwrap();
    p.create_thin(0).unwrap();

    let t = Instant::now();
    let mut locks = (0, 0, 0);
    for v in 0..n {
        let l0 = p.bm().lock_count();
        let b = p.alloc_data_block().unwrap();
        let l1 = p.bm().lock_count();
        p.insert_block(0, v, b).unwrap();
        let l2 = p.bm().lock_count();
        let _ = p.find_block(0, v, true).unwrap();
        locks.0 += l1 - l0;
        locks.1 += l2 - l1;
        locks.2 += p.bm().lock_count() - l2;
    }
    let ins = t.elapsed();
    let t = Instant::now();
    p.commit().unwrap();
    let commit = t.elapsed();

    let t = Instant::now();
    for v in 0..n {
        assert_eq!(p.find_block(0, v, true).unwrap().block, v);
    }
    let seq = t.elapsed();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let t = Instant::now();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = x % n;
        assert_eq!(p.find_block(0, v, false).unwrap().block, v);
    }
    let rnd = t.elapsed();
    let rep = check(p.bm()).unwrap();
    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    println!("mappings: {n}");
    println!(
        "insert (alloc_data_block + insert_block), sequential: {:.0} ops/s ({:.2?})",
        rate(ins),
        ins
    );
    println!(
        "block locks per provision: alloc_data_block {:.1}, insert_block {:.1}, find_block {:.1}",
        locks.0 as f64 / n as f64,
        locks.1 as f64 / n as f64,
        locks.2 as f64 / n as f64
    );
    println!("commit: {commit:.2?}");
    println!("find_block sequential (blocking): {:.0} ops/s", rate(seq));
    println!(
        "find_block random (non-blocking, all cached): {:.0} ops/s",
        rate(rnd)
    );
    println!(
        "rthin metadata blocks in use: {} (mapping tree nodes {}, {} KiB)",
        rep.metadata_used,
        rep.mapping_tree_nodes,
        rep.metadata_used * 4
    );

    // Random-order inserts (fresh data blocks) into a second device.
    let m = n / 4;
    p.resize_data(n + 1000 + m).unwrap();
    p.create_thin(1).unwrap();
    let mut x = 12345u64;
    let t = Instant::now();
    for _ in 0..m {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = p.alloc_data_block().unwrap();
        p.insert_block(1, x % (16 * n), b).unwrap();
    }
    let t2 = t.elapsed();
    p.commit().unwrap();
    check(p.bm()).unwrap();
    println!(
        "insert random virtual blocks (alloc + insert, {m} ops): {:.0} ops/s",
        m as f64 / t2.as_secs_f64()
    );

    if std::process::Command::new("thin_restore")
        .arg("-V")
        .output()
        .is_ok()
    {
        let dir = std::env::temp_dir().join(format!("rthin-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let xml = dir.join("m.xml");
        std::fs::write(
            &xml,
            format!(
                "<superblock uuid=\"\" time=\"0\" transaction=\"0\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"{}\">\n<device dev_id=\"0\" mapped_blocks=\"{n}\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n<range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"{n}\" time=\"0\"/>\n</device>\n</superblock>\n",
                n + 1000
            ),
        )
        .unwrap();
        let img = dir.join("img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(nr_meta * 4096).unwrap();
        drop(f);
        let out = std::process::Command::new("thin_restore")
            .arg("-i")
            .arg(&xml)
            .arg("-o")
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success());
        let data = std::fs::read(&img).unwrap();
        let d2 = MemDisk::new();
        for (i, c) in data.chunks(4096).enumerate() {
            if c.iter().any(|&b| b != 0) {
                d2.set(i as u64, c.try_into().unwrap());
            }
        }
        let bm2 = HostBm::new(d2, nr_meta, nr_meta);
        let rep2 = check_with(&bm2, false).unwrap();
        println!(
            "thin_restore metadata blocks in use for the same mappings: {} (mapping tree nodes {})",
            rep2.metadata_used, rep2.mapping_tree_nodes
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
