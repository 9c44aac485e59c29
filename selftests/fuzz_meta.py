#!/usr/bin/env python3
"""Metadata-image fuzzer for the thin pool (issue 11, item 6), run by fuzz_meta.sh inside the
test guest.

usage: fuzz_meta.py SEED CASES BASE META DATA PROGRESS POOL_TGT THIN_TGT

BASE is a pool's metadata image (made by the caller: several thin devices, snapshots sharing
blocks three ways, mapping trees two levels deep). Each case writes BASE to the metadata
device META with one to three corruptions, generated from SEED, then activates a pool on it
and works it: status; thin devices 0, 2 and 3 activated, read, written, flushed and
discarded (and 9, never created, refused); messages (create, snapshot, delete, metadata
snapshot, transaction id); status again; and tear-down, all through device-mapper's ioctls. Every
step must finish (with success or an error); a hang is caught by the caller, which watches
PROGRESS (each case's number and text go there first, and into the kernel log).

The corruptions know dm-thin's metadata format: the blocks are found by walking the image
from its superblock (the mapping and device-details B-trees, both space maps: index, bitmap
and reference-count blocks), and most corruptions change one field of one structure
(superblock fields, node headers, keys, child pointers made to point at the node itself, its
parent or a block of another kind, space-map index entries and bitmap bits) and then rewrite
the block's checksum, so that they get past the checksum check into the code that trusts
what it read. The rest are raw: bytes flipped without a new checksum, a block zeroed, a block
copied over another. Prints one outcome line per case and the totals.
"""
import fcntl
import mmap
import os
import random
import struct
import subprocess
import sys

from dmioctl import DM
from sb_flags import checksum as dm_checksum   # dm_bm_checksum, with a salt

BLKDISCARD = 0x1277

rng = random.Random(0)        # seeded in main()
BLOCK = 4096
BS = 128                                  # data block size of the pool, sectors
THIN_LEN = 256 * 2048                     # thin devices: 256 MiB, as fuzz_meta.sh makes them
SALT = {"sb": 160774, "node": 121107, "bitmap": 240779, "index": 160478}
INTERNAL, LEAF = 1, 2
ENTRIES_PER_BITMAP = (BLOCK - 16) * 4


def checksum(block, kind):
    return dm_checksum(memoryview(block)[4:], SALT[kind])


def u64(b, off):
    return struct.unpack_from("<Q", b, off)[0]


def u32(b, off):
    return struct.unpack_from("<I", b, off)[0]


# --- the image's structure -------------------------------------------------------------------
class Image:
    """The base image's blocks, and what each reachable one is: kind (for its checksum), a
    description, its parent node (for pointers to an ancestor), and for nodes the layout."""

    def __init__(self, data):
        self.data = data
        self.nr = len(data) // BLOCK
        self.info = {}          # block -> dict(kind, what, parent, value_size, tree)
        sb = self.block(0)
        self.info[0] = dict(kind="sb", what="superblock", parent=None)
        self.walk(u64(sb, 320), "mapping", None, top=True)
        self.walk(u64(sb, 328), "details", None)
        for name, off in (("data-sm", 64), ("meta-sm", 192)):
            self.walk(u64(sb, off + 24), name + "-refcount", None)
        self.walk(u64(sb, 64 + 16), "data-sm-index", None)
        # The metadata space map's index is one block of index entries, not a B-tree.
        mroot = u64(sb, 192 + 16)
        if 0 < mroot < self.nr:
            self.info[mroot] = dict(kind="index", what="meta-sm index", parent=None)
            idx = self.block(mroot)
            nr_meta = u64(sb, 192)
            for i in range((nr_meta + ENTRIES_PER_BITMAP - 1) // ENTRIES_PER_BITMAP):
                b = u64(idx, 16 + 16 * i)
                if 0 < b < self.nr:
                    self.info[b] = dict(kind="bitmap", what="meta-sm bitmap", parent=mroot)

    def block(self, b):
        return self.data[b * BLOCK:(b + 1) * BLOCK]

    def walk(self, root, tree, parent, top=False, depth=0):
        if not 0 < root < self.nr or root in self.info or depth > 8:
            return
        n = self.block(root)
        flags, nr_entries, max_entries, vsize = u32(n, 4), u32(n, 16), u32(n, 20), u32(n, 24)
        leaf = flags & LEAF != 0
        self.info[root] = dict(kind="node", what="%s %s" % (tree, "leaf" if leaf else "internal"),
                               parent=parent, value_size=vsize, max_entries=max_entries,
                               nr_entries=nr_entries, leaf=leaf)
        vals = 32 + 8 * max_entries
        for i in range(min(nr_entries, max_entries)):
            v = u64(n, vals + vsize * i) if vsize >= 8 else None
            if not leaf:
                self.walk(v, tree, root, top, depth + 1)
            elif tree == "mapping" and top:
                self.walk(v, "mapping bottom", root, False, depth + 1)
            elif tree == "data-sm-index":
                if 0 < v < self.nr and v not in self.info:
                    self.info[v] = dict(kind="bitmap", what="data-sm bitmap", parent=root)

    def of(self, pred):
        return [b for b, i in self.info.items() if pred(i)]


# --- corruptions -------------------------------------------------------------------------------
SB_FIELDS = [  # (offset, size, name)
    (4, 4, "flags"), (8, 8, "blocknr"), (32, 8, "magic"), (40, 4, "version"), (44, 4, "time"),
    (48, 8, "trans_id"), (56, 8, "held_root"),
    (64, 8, "data sm nr_blocks"), (72, 8, "data sm nr_allocated"), (80, 8, "data sm index root"),
    (88, 8, "data sm refcount root"),
    (192, 8, "meta sm nr_blocks"), (200, 8, "meta sm nr_allocated"),
    (208, 8, "meta sm index block"), (216, 8, "meta sm refcount root"),
    (320, 8, "mapping root"), (328, 8, "details root"), (336, 4, "data_block_size"),
    (340, 4, "metadata_block_size"), (344, 8, "metadata_nr_blocks"),
    (352, 4, "compat_flags"), (356, 4, "compat_ro_flags"), (360, 4, "incompat_flags"),
]
NODE_FIELDS = [(4, 4, "flags"), (8, 8, "blocknr"), (16, 4, "nr_entries"),
               (20, 4, "max_entries"), (24, 4, "value_size")]


def interesting(img, old, size, block):
    """A value for a field of SIZE bytes that held OLD, in block BLOCK."""
    top = (1 << (8 * size)) - 1
    others = [b for b in img.info if b != block] or [0]
    choices = [0, 1, 2, top, top - 1, 1 << (8 * size - 1), old + 1, max(old - 1, 0), old ^ 1,
               old * 2, img.nr, img.nr - 1, img.nr + 1, block, rng.choice(others),
               rng.getrandbits(8 * size), rng.randrange(0, max(img.nr, 1)), 0xFFFFFF, 255, 256]
    return rng.choice(choices) & top


def put(b, off, size, v):
    struct.pack_into("<I" if size == 4 else "<Q", b, off, v)


def mutate(img, out):
    """Applies one corruption to OUT (a bytearray copy of the image); returns its text."""
    used = sorted(img.info)
    kind = rng.choices(["sb", "node_field", "key", "pointer", "value", "bitmap", "index",
                        "flip", "zero", "copy", "lookalike"],
                       [10, 14, 8, 14, 12, 8, 6, 8, 4, 6, 10])[0]

    def blk(b):
        return memoryview(out)[b * BLOCK:(b + 1) * BLOCK]

    def fix(b):
        k = img.info[b]["kind"]
        put(blk(b), 0, 4, checksum(blk(b), k))

    nodes = img.of(lambda i: i["kind"] == "node")
    if kind == "sb":
        off, size, name = rng.choice(SB_FIELDS)
        b = blk(0)
        old = u64(b, off) if size == 8 else u32(b, off)
        v = interesting(img, old, size, 0)
        put(b, off, size, v)
        fix(0)
        return "superblock %s %d -> %d" % (name, old, v)
    if kind in ("node_field", "key", "pointer", "value") and nodes:
        n = rng.choice(nodes)
        i = img.info[n]
        b = blk(n)
        if kind == "node_field":
            off, size, name = rng.choice(NODE_FIELDS)
            old = u64(b, off) if size == 8 else u32(b, off)
            v = interesting(img, old, size, n)
            put(b, off, size, v)
            fix(n)
            return "%s %d: %s %d -> %d" % (i["what"], n, name, old, v)
        ne = max(min(i["nr_entries"], i["max_entries"]), 1)
        e = rng.randrange(ne)
        if kind == "key":
            off = 32 + 8 * e
            old = u64(b, off)
            nxt = u64(b, 32 + 8 * (e + 1)) if e + 1 < ne else old
            v = rng.choice([interesting(img, old, 8, n), nxt, nxt + 1, u64(b, 32)])
            put(b, off, 8, v)
            fix(n)
            return "%s %d: key %d %d -> %d" % (i["what"], n, e, old, v)
        vs = i["value_size"]
        off = 32 + 8 * i["max_entries"] + vs * e
        if not 0 < vs <= 64 or off + vs > BLOCK:
            return "(no value to corrupt)"
        if kind == "pointer" and not i["leaf"] and vs == 8:
            anc = i["parent"] if i["parent"] is not None else n
            v = rng.choice([n, anc, 0, img.nr, rng.choice(used), (1 << 64) - 1])
            old = u64(b, off)
            put(b, off, 8, v)
            fix(n)
            return "%s %d: child %d %d -> %d" % (i["what"], n, e, old, v)
        sub, size = (rng.randrange(0, vs - 7), 8) if vs >= 8 else (0, 4)
        old = u64(b, off + sub) if size == 8 else u32(b, off + sub)
        v = interesting(img, old, size, n)
        put(b, off + sub, size, v)
        fix(n)
        return "%s %d: value %d (+%d) %d -> %d" % (i["what"], n, e, sub, old, v)
    if kind == "bitmap":
        bms = img.of(lambda i: i["kind"] == "bitmap")
        if bms:
            n = rng.choice(bms)
            b = blk(n)
            if rng.random() < 0.2:
                old = u64(b, 8)
                put(b, 8, 8, interesting(img, old, 8, n))
                fix(n)
                return "%s %d: blocknr %d" % (img.info[n]["what"], n, old)
            k = rng.randrange(1, 64)
            for _ in range(k):
                p = rng.randrange(16, min(BLOCK, 16 + 1024))   # the low blocks are in use
                b[p] ^= 1 << rng.randrange(8)
            fix(n)
            return "%s %d: %d bits flipped" % (img.info[n]["what"], n, k)
    if kind == "index":
        ids = img.of(lambda i: i["kind"] == "index")
        if ids:
            n = ids[0]
            b = blk(n)
            e = rng.randrange(2)
            off, size = rng.choice([(16 + 16 * e, 8), (24 + 16 * e, 4), (28 + 16 * e, 4)])
            old = u64(b, off) if size == 8 else u32(b, off)
            v = interesting(img, old, size, n)
            put(b, off, size, v)
            fix(n)
            return "meta-sm index %d: entry %d +%d %d -> %d" % (n, e, off % 16, old, v)
    if kind == "zero":
        n = rng.choice(used)
        blk(n)[:] = bytes(BLOCK)
        return "%s %d zeroed" % (img.info[n]["what"], n)
    if kind == "copy":
        n, m = rng.choice(used), rng.choice(used)
        blk(n)[:] = bytes(img.block(m))
        return "%s %d copied over %s %d" % (img.info[m]["what"], m, img.info[n]["what"], n)
    if kind == "lookalike":
        # A block of the same kind put in place of another, with its own address and a good
        # checksum: valid on its own, wrong in the structure (shared or looping subtrees).
        n = rng.choice(used)
        same = [m for m in used if m != n and img.info[m]["kind"] == img.info[n]["kind"]]
        if same:
            m = rng.choice(same)
            blk(n)[:] = bytes(img.block(m))
            put(blk(n), 8, 8, n)
            fix(n)
            return "%s %d made a copy of %s %d" % (img.info[n]["what"], n, img.info[m]["what"], m)
    n = rng.choice(used)
    k = rng.randrange(1, 9)
    for _ in range(k):
        blk(n)[rng.randrange(BLOCK)] ^= 1 << rng.randrange(8)
    return "%s %d: %d bytes flipped, checksum left" % (img.info[n]["what"], n, k)


# --- running a case ----------------------------------------------------------------------------
dm = None


def kmsg(text):
    with open("/dev/kmsg", "w") as f:
        f.write(text + "\n")


def write_image(img_bytes):
    fd = os.open(META, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, len(img_bytes))
    buf[:] = img_bytes
    os.pwritev(fd, [buf], 0)
    os.fsync(fd)
    os.close(fd)


def io(dev, errors):
    """Reads, writes, flushes and discards on an active thin device; counts the errors."""
    buf = mmap.mmap(-1, 1 << 20)
    try:
        fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    except OSError as e:
        errors.append("open %s" % e.strerror)
        return
    try:
        # Thin 0 maps every sixth block of its first 225 MiB: reads there cross the tree.
        for off in [0] + [rng.randrange(0, THIN_LEN * 512 >> 20) << 20 for _ in range(3)]:
            try:
                os.preadv(fd, [buf], off)
            except OSError as e:
                errors.append("read %s" % e.strerror)
        small = mmap.mmap(-1, 4096)
        small[:] = os.urandom(4096)
        for off in [rng.randrange(0, THIN_LEN * 512 >> 12) << 12 for _ in range(3)]:
            try:
                os.pwritev(fd, [small], off)
            except OSError as e:
                errors.append("write %s" % e.strerror)
        for what, call in (("fsync", lambda: os.fsync(fd)),
                           ("discard", lambda: fcntl.ioctl(fd, BLKDISCARD, struct.pack(
                               "<QQ", rng.randrange(0, 200) << 20, 1 << 20)))):
            try:
                call()
            except OSError as e:
                errors.append("%s %s" % (what, e.strerror))
    finally:
        os.close(fd)


def pool_status():
    """(transaction id, mode) from the pool's status line."""
    f = dm.status("rt_zp")[0].split()
    if "Fail" in f:
        return None, "Fail"
    return int(f[3]), (f[7] if len(f) > 7 else "?")


def attempt(errors, what, call):
    try:
        return call()
    except OSError as e:
        errors.append("%s: %s" % (what, os.strerror(e.errno)))
        return None


def run_case(image):
    write_image(image)
    try:
        pool = dm.create_device("rt_zp", [(0, data_sectors, POOL_TGT,
                                           "%s %s %d 32" % (META, DATA, BS))])
    except OSError as e:
        return "refused", os.strerror(e.errno)
    errors = []
    tid, mode = attempt(errors, "status", pool_status) or (None, "?")
    # Thin 0 (a two-level mapping tree), 2 (a snapshot of a snapshot) and 3; 9 does not exist
    # and must be refused.
    for dev in (0, 2, 3, 9):
        try:
            t = dm.create_device("rt_zt", [(0, THIN_LEN, THIN_TGT, "%s %d" % (pool, dev))])
        except OSError:
            if dev != 9:
                errors.append("thin %d refused" % dev)
            continue
        if dev == 9:
            errors.append("thin 9 (never created) activated")
        io("/dev/dm-%s" % t.split(":")[1], errors)
        attempt(errors, "thin status", lambda: dm.status("rt_zt"))
        attempt(errors, "thin remove", lambda: dm.remove("rt_zt"))
    msgs = ["create_thin 20", "create_snap 21 0", "delete 2", "reserve_metadata_snap",
            "release_metadata_snap"]
    if tid is not None:
        msgs.append("set_transaction_id %d %d" % (tid, tid + 1))
    for m in msgs:
        attempt(errors, "msg " + m.split()[0], lambda: dm.message("rt_zp", 0, m))
    r = attempt(errors, "status", pool_status)
    mode += ">" + (r[1] if r else "?")
    attempt(errors, "pool remove", lambda: dm.remove("rt_zp"))
    return ("errors" if errors else "worked"), "mode %s; %s" % (mode, ", ".join(errors[:6]))


def main():
    global SEED, CASES, BASE, META, DATA, PROGRESS, POOL_TGT, THIN_TGT, data_sectors, dm
    SEED, CASES, BASE, META, DATA, PROGRESS, POOL_TGT, THIN_TGT = sys.argv[1:9]
    SEED, CASES = int(SEED), int(CASES)
    rng.seed(SEED)
    dm = DM()
    with open(BASE, "rb") as f:
        base = f.read()
    img = Image(base)
    data_sectors = int(subprocess.run(["blockdev", "--getsz", DATA], capture_output=True,
                                      text=True).stdout)
    kinds = {}
    for b, i in img.info.items():
        kinds[i["what"]] = kinds.get(i["what"], 0) + 1
    print("base image: %d blocks reached from the superblock: %s" % (
        len(img.info), ", ".join("%s %d" % kv for kv in sorted(kinds.items()))))
    totals = {}
    for i in range(CASES):
        out = bytearray(base)
        texts = [mutate(img, out) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        text = "; ".join(texts)
        with open(PROGRESS, "w") as f:
            f.write("case %d: %s\n" % (i, text))
        kmsg("rthin fuzz_meta case %d: %s" % (i, text))
        outcome, detail = run_case(bytes(out))
        totals[outcome] = totals.get(outcome, 0) + 1
        print("case %d: %s: %s %s" % (i, text, outcome, detail))
    write_image(base)
    print("totals: %d cases: %s" % (CASES, ", ".join("%s %d" % kv for kv in sorted(totals.items()))))


if __name__ == "__main__":
    main()
