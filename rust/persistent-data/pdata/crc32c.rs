//! CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, table driven.

const POLY: u32 = 0x82F6_3B78;

// Evaluated at compile time only: an out-of-bounds index here would be a
// build error, not a runtime panic.
#[allow(clippy::indexing_slicing)]
const fn make_table() -> [[u32; 256]; 4] {
    let mut t = [[0u32; 256]; 4];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 4 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

static TABLE: [[u32; 256]; 4] = make_table();

fn tab(s: usize, i: u32) -> u32 {
    // `i` is always masked to 8 bits and `s < 4`, so the lookups cannot fail.
    TABLE
        .get(s)
        .and_then(|t| t.get((i & 0xff) as usize))
        .copied()
        .unwrap_or(0)
}

/// Raw CRC-32C update: no pre- or post-inversion is applied, matching the
/// kernel's `crc32c(seed, data, len)`.
pub fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut w = [0u8; 4];
        w.copy_from_slice(c);
        crc ^= u32::from_le_bytes(w);
        crc = tab(3, crc) ^ tab(2, crc >> 8) ^ tab(1, crc >> 16) ^ tab(0, crc >> 24);
    }
    for &b in chunks.remainder() {
        crc = tab(0, crc ^ u32::from(b)) ^ (crc >> 8);
    }
    crc
}

/// Standard CRC-32C of `data` (initial value and final xor 0xffffffff).
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// device-mapper's block checksum: `crc32c(~0, data) ^ salt` without a
/// final inversion (this is how `dm_bm_checksum` is defined).
pub fn dm_checksum(data: &[u8], salt: u32) -> u32 {
    crc32c_update(!0, data) ^ salt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        // Unaligned tails take the byte path.
        assert_eq!(crc32c(b"1234567890a"), {
            let mut c = !0u32;
            for b in b"1234567890a" {
                c ^= u32::from(*b);
                for _ in 0..8 {
                    c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
                }
            }
            !c
        });
    }

    #[test]
    fn dm_convention() {
        let d = [7u8; 100];
        assert_eq!(dm_checksum(&d, 160774), !crc32c(&d) ^ 160774);
    }
}
