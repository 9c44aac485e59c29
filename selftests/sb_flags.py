#!/usr/bin/env python3
# sb_flags.py DEVICE [set|clear] FLAG: show, set or clear bits of the flags word of a thin
# pool's metadata superblock (block 0; bit 0 is needs_check), rewriting its checksum as
# dm-thin's superblock validator computes it. Without an action, prints the flags.
import mmap
import os
import struct
import sys

SUPERBLOCK_CSUM_XOR = 160774
THIN_SUPERBLOCK_MAGIC = 27022010
BLOCK = 4096


def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


TABLE = _table()


def checksum(data, salt=SUPERBLOCK_CSUM_XOR):
    # dm_bm_checksum: the kernel's crc32c with seed ~0 and no final inversion, xor a
    # per-block-type constant.
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ salt


def main():
    dev = sys.argv[1]
    # Direct IO, as the pool's own (the page cache may hold stale blocks of the device).
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, BLOCK)
    os.preadv(fd, [buf], 0)
    sb = bytearray(buf)
    csum, flags = struct.unpack_from("<II", sb, 0)
    (magic,) = struct.unpack_from("<Q", sb, 32)
    if magic != THIN_SUPERBLOCK_MAGIC:
        sys.exit("%s: no thin pool superblock (magic %d)" % (dev, magic))
    if checksum(sb[4:]) != csum:
        sys.exit("%s: superblock checksum does not match" % dev)
    if len(sys.argv) == 2:
        print(flags)
        return
    action, bit = sys.argv[2], int(sys.argv[3])
    flags = flags | bit if action == "set" else flags & ~bit
    struct.pack_into("<I", sb, 4, flags)
    struct.pack_into("<I", sb, 0, checksum(sb[4:]))
    buf[:] = bytes(sb)
    os.pwritev(fd, [buf], 0)
    os.fsync(fd)
    os.close(fd)
    print(flags)


if __name__ == "__main__":
    main()
