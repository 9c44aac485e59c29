#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Random mixed IO on one block device, checked byte for byte against a model of it.

usage: mixio.py DEVICE MODEL SEED OPS REGION BLOCK
  DEVICE  the device (opened with O_DIRECT)
  MODEL   a file of REGION bytes: what DEVICE's first REGION bytes hold now; rewritten at the
          end with what they should hold after this run
  SEED    random seed (the run is reproducible)
  OPS     how many operations
  REGION  bytes of DEVICE the run touches
  BLOCK   the pool's data block size in bytes (discards cover whole blocks)

Operations, at random: 4 KiB writes (a fresh block is provisioned and zeroed around them; a
shared block has its sharing broken and copied), whole-block writes (provisioned without
zeroing), writes of 4 KiB to 128 KiB at any 4 KiB offset (across blocks), discards of 1 to 4
whole blocks (unmapped: they read back as zeros), and reads of 4 KiB to 128 KiB, each
compared with the model at once. Exit status 1 at the first difference, with where it is.
"""
import fcntl
import mmap
import os
import random
import struct
import sys

BLKDISCARD = 0x1277
dev, model_path, seed, ops, region, block = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
rng = random.Random(seed)
with open(model_path, "rb") as f:
    model = bytearray(f.read())
assert len(model) == region, "model size differs from REGION"
fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)  # page aligned, as O_DIRECT needs
K4 = 4096
counts = {"write": 0, "block_write": 0, "long_write": 0, "discard": 0, "read": 0}


def write(off, n):
    data = rng.randbytes(n)
    buf[:n] = data
    done = os.pwrite(fd, memoryview(buf)[:n], off)
    assert done == n, f"short write at {off}: {done} of {n}"
    model[off:off + n] = data


def read_check(off, n):
    got = os.preadv(fd, [memoryview(buf)[:n]], off)
    assert got == n, f"short read at {off}: {got} of {n}"
    if buf[:n] != model[off:off + n]:
        bad = next(i for i in range(n) if buf[i] != model[off + i])
        print(f"{dev}: byte {off + bad} reads {buf[bad]:#x}, the model says "
              f"{model[off + bad]:#x} (read of {n} bytes at {off}, seed {seed})", flush=True)
        sys.exit(1)


for _ in range(ops):
    r = rng.random()
    if r < 0.30:
        write(rng.randrange(0, region, K4), K4)
        counts["write"] += 1
    elif r < 0.45:
        write(rng.randrange(0, region, block), block)
        counts["block_write"] += 1
    elif r < 0.55:
        n = rng.randrange(K4, 32 * K4 + 1, K4)
        write(rng.randrange(0, region - n + 1, K4), n)
        counts["long_write"] += 1
    elif r < 0.65:
        nb = rng.randint(1, 4)
        off = rng.randrange(0, region - nb * block + 1, block)
        fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", off, nb * block))
        model[off:off + nb * block] = bytes(nb * block)
        counts["discard"] += 1
    else:
        n = rng.randrange(K4, 32 * K4 + 1, K4)
        read_check(rng.randrange(0, region - n + 1, K4), n)
        counts["read"] += 1
# Every byte of the region, at the end.
for off in range(0, region, 1 << 20):
    read_check(off, min(1 << 20, region - off))
os.close(fd)
with open(model_path, "wb") as f:
    f.write(model)
print(f"{dev}: {ops} operations {counts}, all {region} bytes as the model says", flush=True)
