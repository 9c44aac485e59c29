//! libFuzzer target: patch a valid pool image with fuzzer-chosen bytes
//! (optionally fixing up checksums) and run open, lookups, walks and
//! modifications on it. Any panic is a bug.
//!
//! `cargo +nightly fuzz run open_lookup` from `rust/persistent-data`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rthin_pdata::host::fuzz::{apply_patches, build_base, exercise};
use rthin_pdata::host::MemDisk;
use std::sync::OnceLock;

// MemDisk is single-threaded (Rc); keep the base image as raw blocks.
static BASE: OnceLock<Vec<(u64, [u8; 4096])>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let base = BASE.get_or_init(|| {
        let d = build_base();
        (0..rthin_pdata::host::fuzz::NR_META)
            .map(|b| (b, d.get(b)))
            .filter(|(_, x)| x.iter().any(|&c| c != 0))
            .collect()
    });
    let disk = MemDisk::new();
    for (b, blk) in base {
        disk.set(*b, blk);
    }
    apply_patches(&disk, data);
    let seed = data
        .iter()
        .fold(7u64, |a, &c| a.wrapping_mul(31).wrapping_add(u64::from(c)));
    let _ = exercise(&disk, seed);
});
