#![allow(dead_code, unreachable_pub, missing_docs)]
use rthin_pdata::host::{MemBm, MemDisk};
use rthin_pdata::BLOCK_SIZE;
use std::io::Write;
use std::path::Path;
use std::process::Command;

pub fn tools_present() -> bool {
    Command::new("thin_check").arg("--version").output().is_ok()
}

pub fn write_image(disk: &MemDisk, nr_blocks: u64, path: &Path) {
    use std::os::unix::fs::FileExt;
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(nr_blocks * BLOCK_SIZE as u64).unwrap();
    for b in 0..nr_blocks.min(disk.len_blocks()) {
        let d = disk.get(b);
        if d.iter().any(|&x| x != 0) {
            f.write_all_at(&d, b * BLOCK_SIZE as u64).unwrap();
        }
    }
    f.flush().unwrap();
    assert_eq!(
        std::fs::metadata(path).unwrap().len(),
        nr_blocks * BLOCK_SIZE as u64
    );
}

pub fn read_image(path: &Path) -> (MemDisk, u64) {
    let data = std::fs::read(path).unwrap();
    let disk = MemDisk::new();
    let n = data.len() / BLOCK_SIZE;
    for b in 0..n {
        let mut blk = [0u8; BLOCK_SIZE];
        blk.copy_from_slice(&data[b * BLOCK_SIZE..(b + 1) * BLOCK_SIZE]);
        if blk.iter().any(|&x| x != 0) {
            disk.set(b as u64, &blk);
        }
    }
    (disk, n as u64)
}

pub fn thin_check(path: &Path) -> (bool, String) {
    let out = Command::new("thin_check").arg(path).output().unwrap();
    let s = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), s)
}

pub fn thin_dump(path: &Path, extra: &[&str]) -> String {
    let out = Command::new("thin_dump")
        .args(extra)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "thin_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn attr(line: &str, name: &str) -> Option<u64> {
    let pat = format!(" {}=\"", name);
    let i = line.find(&pat)? + pat.len();
    let rest = &line[i..];
    let j = rest.find('"')?;
    rest[..j].parse().ok()
}

/// Parsed thin_dump output: dev -> (mapped_blocks, sorted (virt, data, time)).
pub type Dump = std::collections::BTreeMap<u64, (u64, Vec<(u64, u64, u32)>)>;

pub fn parse_dump(xml: &str) -> Dump {
    let mut out = Dump::new();
    let mut cur = None;
    for line in xml.lines() {
        let l = line.trim();
        if l.starts_with("<device ") {
            let dev = attr(l, "dev_id").unwrap();
            out.insert(dev, (attr(l, "mapped_blocks").unwrap(), Vec::new()));
            cur = Some(dev);
        } else if l.starts_with("<single_mapping ") {
            let e = &mut out.get_mut(&cur.unwrap()).unwrap().1;
            e.push((
                attr(l, "origin_block").unwrap(),
                attr(l, "data_block").unwrap(),
                attr(l, "time").unwrap() as u32,
            ));
        } else if l.starts_with("<range_mapping ") {
            let e = &mut out.get_mut(&cur.unwrap()).unwrap().1;
            let (o, d, n, t) = (
                attr(l, "origin_begin").unwrap(),
                attr(l, "data_begin").unwrap(),
                attr(l, "length").unwrap(),
                attr(l, "time").unwrap() as u32,
            );
            for i in 0..n {
                e.push((o + i, d + i, t));
            }
        }
    }
    out
}

pub fn mem_bm(nr: u64) -> (MemBm, MemDisk) {
    let disk = MemDisk::new();
    (rthin_pdata::host::HostBm::new(disk.clone(), nr, nr), disk)
}
