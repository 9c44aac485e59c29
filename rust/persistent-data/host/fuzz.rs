//! Corruption fuzzing harness (host only): damages a valid image in
//! random ways and runs open, lookups, walks and modifications on it.
//! Every outcome must be `Ok` or an `Err`; a panic is a finding.

use super::{HostBm, MemDisk};
use crate::pdata::block::{get_u64, Block, Validator};
use crate::pdata::error::Error;
use crate::pdata::thin::PoolMetadata;
use std::vec::Vec;

/// Metadata device size used by the harness.
pub const NR_META: u64 = 1024;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Builds a committed image with several devices, a snapshot, thousands
/// of mappings and a held metadata snapshot.
pub fn build_base() -> MemDisk {
    let disk = MemDisk::new();
    let bm = HostBm::new(disk.clone(), NR_META, NR_META);
    let r = (|| -> crate::pdata::error::Result<()> {
        let mut p = PoolMetadata::format(bm, 128, 20_000)?;
        p.create_thin(1)?;
        p.create_thin(2)?;
        for i in 0..3000u64 {
            let b = p.alloc_data_block()?;
            p.insert_block(1 + i % 2, i * 3, b)?;
        }
        p.commit()?;
        p.create_snap(3, 1)?;
        for i in 0..400u64 {
            let b = p.alloc_data_block()?;
            p.insert_block(3, i * 5, b)?;
        }
        p.reserve_metadata_snap()?;
        p.remove_range(2, 0, 1500)?;
        p.commit()
    })();
    // The base image is built from scratch by our own code; failing here is
    // a bug in the harness setup, not a fuzz finding.
    if let Err(e) = r {
        std::panic!("building base image: {e:?}");
    }
    disk
}

fn validator_of(d: &Block, b: u64) -> Validator {
    for v in [
        Validator::Superblock,
        Validator::BtreeNode,
        Validator::Bitmap,
        Validator::Index,
    ] {
        if v.check(d, b).is_ok() {
            return v;
        }
    }
    Validator::None
}

/// Applies 1..=4 random corruptions to `disk`; returns a short description.
pub fn corrupt(disk: &MemDisk, rng_seed: u64) -> Vec<(u64, u32)> {
    let mut rng = Rng(rng_seed | 1);
    let used: Vec<u64> = (0..NR_META)
        .filter(|&b| disk.get(b).iter().any(|&x| x != 0))
        .collect();
    let mut what = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let b = used
            .get(rng.below(used.len() as u64) as usize)
            .copied()
            .unwrap_or(0);
        let mut d = disk.get(b);
        let v = validator_of(&d, b);
        let mode = rng.below(8) as u32;
        match mode {
            // Flip bytes, leaving the checksum wrong.
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(4096) as usize;
                    d[i] ^= 1 << rng.below(8);
                }
            }
            // Zero the block.
            1 => d = [0; 4096],
            // Garbage in the header fields, checksum fixed up.
            2 => {
                let i = (rng.below(8) * 8) as usize;
                let val = match rng.below(4) {
                    0 => rng.next(),
                    1 => rng.below(600),
                    2 => u64::MAX,
                    _ => rng.below(NR_META + 10),
                };
                d[i..i + 8].copy_from_slice(&val.to_le_bytes());
            }
            // Garbage in keys/values/bitmap bits, checksum fixed up.
            3 | 4 => {
                for _ in 0..1 + rng.below(6) {
                    let i = (32 + rng.below(4064 / 8) * 8) as usize;
                    let val = match rng.below(3) {
                        0 => rng.next(),
                        1 => rng.below(NR_META + 10),
                        _ => get_u64(&d, i).unwrap_or(0) ^ (1 << rng.below(64)),
                    };
                    d[i..i + 8].copy_from_slice(&val.to_le_bytes());
                }
            }
            // Another block's contents, re-stamped for this location (a
            // misdirected pointer that passes the checksum).
            5 => {
                let o = used
                    .get(rng.below(used.len() as u64) as usize)
                    .copied()
                    .unwrap_or(0);
                d = disk.get(o);
                let ov = validator_of(&d, o);
                ov.prepare_for_write(&mut d, b);
            }
            // A node entry pointing at itself or its parent region (cycles).
            6 => {
                if v == Validator::BtreeNode {
                    let nr = u32::from_le_bytes([d[16], d[17], d[18], d[19]]) as u64;
                    let max = u32::from_le_bytes([d[20], d[21], d[22], d[23]]) as u64;
                    if nr > 0 && max <= 336 {
                        let i = rng.below(nr);
                        let off = (32 + 8 * max + 8 * i) as usize;
                        if off + 8 <= 4096 {
                            let target = if rng.below(2) == 0 {
                                b
                            } else {
                                rng.below(NR_META)
                            };
                            d[off..off + 8].copy_from_slice(&target.to_le_bytes());
                        }
                    }
                }
            }
            // Swap nr_entries / max_entries style counters.
            _ => {
                let i = 16 + (rng.below(3) * 4) as usize;
                let val = rng.below(400) as u32;
                d[i..i + 4].copy_from_slice(&val.to_le_bytes());
            }
        }
        if mode >= 2 && v != Validator::None {
            v.prepare_for_write(&mut d, b);
        }
        disk.set(b, &d);
        what.push((b, mode));
    }
    what
}

/// Counters of what happened in one exercise run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Opens that succeeded.
    pub opened: u32,
    /// Operations that returned an error.
    pub errors: u32,
    /// Operations that succeeded.
    pub oks: u32,
    /// Errors that were [`Error::Corrupt`] or [`Error::WrongBlock`].
    pub corrupt_errors: u32,
}

fn tally<T>(o: &mut Outcome, r: crate::pdata::error::Result<T>) -> Option<T> {
    match r {
        Ok(v) => {
            o.oks += 1;
            Some(v)
        }
        Err(e) => {
            o.errors += 1;
            if matches!(e, Error::Corrupt | Error::WrongBlock) {
                o.corrupt_errors += 1;
            }
            None
        }
    }
}

/// Opens `disk` read-only and read-write and runs a bounded set of
/// operations on it.
pub fn exercise(disk: &MemDisk, seed: u64) -> Outcome {
    let mut o = Outcome::default();
    let mut rng = Rng(seed | 1);
    for ro in [true, false] {
        let bm = HostBm::new(disk.snapshot(), NR_META, NR_META);
        let Some(mut p) = tally(&mut o, PoolMetadata::open(bm, ro)) else {
            continue;
        };
        o.opened += 1;
        let mut devs = Vec::new();
        tally(
            &mut o,
            p.for_each_device(&mut |d, _| {
                devs.push(d);
                if devs.len() > 64 {
                    Err(Error::Inval)
                } else {
                    Ok(())
                }
            }),
        );
        devs.extend([1, 2, 3, 99]);
        for &d in &devs {
            let mut n = 0u32;
            tally(
                &mut o,
                p.for_each_mapping(d, &mut |_, _, _| {
                    n += 1;
                    if n > 50_000 {
                        Err(Error::Inval)
                    } else {
                        Ok(())
                    }
                }),
            );
            for _ in 0..20 {
                let v = rng.below(10_000);
                tally(&mut o, p.find_block(d, v, true));
                tally(&mut o, p.find_block(d, v, false));
            }
            tally(&mut o, p.device_details(d));
        }
        tally(&mut o, p.data_block_count(rng.below(20_000)));
        tally(&mut o, p.metadata_block_count(rng.below(NR_META)));
        if ro {
            continue;
        }
        for step in 0..12 {
            let d = devs
                .get(rng.below(devs.len() as u64) as usize)
                .copied()
                .unwrap_or(1);
            match rng.below(9) {
                0 => {
                    if let Some(b) = tally(&mut o, p.alloc_data_block()) {
                        tally(&mut o, p.insert_block(d, rng.below(10_000), b));
                    }
                }
                1 => {
                    let s = rng.below(10_000);
                    tally(&mut o, p.remove_range(d, s, s + rng.below(2000)));
                }
                2 => {
                    tally(&mut o, p.remove_block(d, rng.below(10_000)));
                }
                3 => {
                    tally(&mut o, p.create_snap(50 + step, d));
                }
                4 => {
                    tally(&mut o, p.delete_thin(d));
                }
                5 => {
                    tally(&mut o, p.create_thin(70 + step));
                }
                6 => {
                    tally(&mut o, p.commit());
                }
                7 => {
                    tally(&mut o, p.release_metadata_snap());
                }
                _ => {
                    tally(&mut o, p.abort());
                }
            }
        }
        tally(&mut o, p.commit());
        // Whatever was committed must open again without panicking.
        let bm = p.into_bm();
        if let Some(p2) = tally(&mut o, PoolMetadata::open(bm, true)) {
            for &d in &devs {
                tally(&mut o, p2.find_block(d, rng.below(10_000), true));
            }
        }
    }
    o
}

/// Applies fuzzer-chosen patches to `disk`. The input is a sequence of
/// records `[block: u16][offset: u16][flags: u8][len: u8][bytes; len]`:
/// `len` bytes are written at `offset` of block `block % NR_META`; if bit 0
/// of `flags` is set the block's checksum is recomputed afterwards (with
/// whichever validator accepted it before), so structural damage gets past
/// the checksum.
pub fn apply_patches(disk: &MemDisk, mut data: &[u8]) {
    while data.len() >= 6 {
        let b = u64::from(u16::from_le_bytes([data[0], data[1]])) % NR_META;
        let off = usize::from(u16::from_le_bytes([data[2], data[3]])) % 4096;
        let flags = data[4];
        let len = usize::from(data[5]).min(data.len() - 6).min(4096 - off);
        let mut blk = disk.get(b);
        let v = validator_of(&blk, b);
        blk[off..off + len].copy_from_slice(&data[6..6 + len]);
        if flags & 1 != 0 && v != Validator::None {
            v.prepare_for_write(&mut blk, b);
        }
        disk.set(b, &blk);
        data = &data[6 + len..];
    }
}
