#!/usr/bin/env python3
"""Crash-consistency replay for the thin targets (issue 11, item 2); used by replay.sh.

  replay.py work JOURNAL SEED ROUNDS THIN_TGT
      the workload, on the pool rt_rpool (thins 0 and 1 active as rt_r0/rt_r1, thin 9 as
      rt_rfs with ext4 mounted on $TMP/fs) over a dm-log-writes device LOGDEV: O_DIRECT writes
      of 4-64 KiB to the thins and to snapshots of thin 0 (snapshot breaks), whole-block
      discards, snapshots created and deleted mid-run, files written and fsync'ed on ext4.
      Every so often it fsyncs every thin and puts a mark in rt_lw's log (`mark m<N>`); each
      event goes to JOURNAL (one JSON line: the hashes of each 4 KiB unit written).
  replay.py check JOURNAL LOG REPLAY_DEV POINTS POOL_TGTS THIN_TGTS EXT4_EVERY
      replays LOG (the log-writes log device) onto REPLAY_DEV point by point and checks
      each point (see Checker.point()); POINTS: "short:N" (N points: FLUSH/FUA entries and
      marks spread over the run, a third of them points between two) or "long" (every
      FLUSH/FUA entry and every mark, and a point between every fourth two).
  replay.py selftest
      checks the model (what a point may hold, Model.expect()) on small journals; KTAP.

The dm-log-writes log format (drivers/md/dm-log-writes.c, version 1), all little-endian:
  sector 0: the super: u64 magic 0x6a736677736872, u64 version 1, u64 nr_entries,
            u32 sectorsize (the logged device's logical block size).
  from byte `sectorsize` on, nr_entries entries, each:
    one sectorsize block: u64 sector, u64 nr_sectors (both in sectorsize units), u64 flags,
            u64 data_len; a mark's name (data_len bytes) follows in the same block;
    then nr_sectors blocks of the data written (none for discards, flushes, marks).
  flags: 1 FLUSH, 2 FUA, 4 DISCARD, 8 MARK, 16 METADATA (REQ_META).
A write is logged once it has completed AND a later flush has completed (or, for FUA, when
it completes), in completion order, so that the log is the order in which writes became
durable; a flush entry follows the writes it covered. A prefix of the log is therefore a
state the disk could be in after a crash: everything up to some flush, and some of the
writes completed after it. nr_entries is rewritten at each FUA write and mark, and when the
target is removed (it then logs the still unflushed writes and a "dm-log-writes-end" mark).
Discards are replayed as nothing: a discarded range's content is undefined, and the thin
targets never read a data block they do not map (provisioning writes the whole block).
"""
import hashlib
import json
import mmap
import os
import random
import struct
import subprocess
import sys
import time

UNIT = 4096
BB = 64 * 1024              # the pools' data block size (replay.sh's BS)
ZERO = hashlib.blake2b(bytes(UNIT), digest_size=8).hexdigest()
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8
MAGIC = 0x6a736677736872


def h(b):
    return hashlib.blake2b(b, digest_size=8).hexdigest()


def run(*args, check=True):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(args), r.returncode, r.stdout.strip()))
    return r


# ---------------------------------------------------------------------------------------
# The log.

def read_log(path):
    """The entries of a dm-log-writes log: (index, flags, sector, nr_sectors, log offset of
    the data, mark name), all in bytes except index and flags."""
    fd = os.open(path, os.O_RDONLY)
    try:
        magic, version, nr, ss = struct.unpack("<QQQI", os.pread(fd, 28, 0))
        if magic != MAGIC or version != 1:
            raise RuntimeError("%s: not a dm-log-writes log (magic %x version %d)" % (path, magic, version))
        entries, off = [], ss
        for i in range(nr):
            sector, nsec, flags, dlen = struct.unpack("<QQQQ", os.pread(fd, 32, off))
            name = os.pread(fd, dlen, off + 32).decode() if flags & MARK else None
            entries.append((i, flags, sector * ss, nsec * ss, off + ss, name))
            off += ss + (0 if flags & DISCARD else nsec * ss)
        return entries
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# The workload.

class Work:
    def __init__(self, journal, seed, logdev, pool, thin):
        self.j = open(journal, "w")
        self.rng = random.Random(seed)
        self.logdev, self.pool, self.thin = logdev, pool, thin
        self.buf = mmap.mmap(-1, BB)
        self.fds = {}          # dev id -> fd of its active device
        self.marks = 0
        self.nsnaps = 0

    def event(self, **e):
        self.j.write(json.dumps(e) + "\n")
        self.j.flush()

    def activate(self, dev):
        name = "rt_r%d" % dev
        run("dmsetup", "create", name, "--table", "0 2097152 %s /dev/mapper/%s %d" % (self.thin, self.pool, dev))
        self.fds[dev] = os.open("/dev/mapper/" + name, os.O_RDWR | os.O_DIRECT)

    def deactivate(self, dev):
        os.close(self.fds.pop(dev))
        run("dmsetup", "remove", "rt_r%d" % dev)

    def write(self, dev, off, length):
        data = os.urandom(length)
        self.buf[:length] = data
        n = os.pwritev(self.fds[dev], [memoryview(self.buf)[:length]], off)
        assert n == length
        self.event(ev="w", dev=dev, unit=off // UNIT, h=[h(data[i:i + UNIT]) for i in range(0, length, UNIT)])

    def discard(self, dev, block, nblocks):
        import fcntl
        fcntl.ioctl(self.fds[dev], 0x1277, struct.pack("QQ", block * BB, nblocks * BB))   # BLKDISCARD
        self.event(ev="x", dev=dev, unit=block * BB // UNIT, n=nblocks * BB // UNIT)

    def mark(self):
        """fsync every thin (each flush makes the pool commit), then a mark in the log: every
        event before it is durable."""
        for fd in self.fds.values():
            os.fsync(fd)
        name = "m%d" % self.marks
        self.marks += 1
        run("dmsetup", "message", self.logdev, "0", "mark", name)
        self.event(ev="mark", name=name)

    def msg(self, *words):
        run("dmsetup", "message", self.pool, "0", *words)

    def fs_file(self, n):
        path = os.path.join(os.environ["TMP"], "fs", "f%d" % n)
        data = os.urandom(self.rng.choice([4096, 20000, 70000]))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        dfd = os.open(os.path.dirname(path), os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        self.event(ev="f", name="f%d" % n, h=h(data))

    def main(self, rounds):
        for dev in (0, 1):
            self.activate(dev)
        # Thin 9 carries ext4 (made and mounted by replay.sh before the log's first mark).
        self.event(ev="dev", dev=0)
        self.event(ev="dev", dev=1)
        self.event(ev="dev", dev=9, fs=1)
        self.mark()
        snaps, nfile = [], 0
        rng = self.rng
        for r in range(rounds):
            for _ in range(rng.randint(6, 14)):
                dev = rng.choice([0, 0, 1] + snaps)
                unit = rng.randrange(0, 48 * BB // UNIT)           # 48 blocks of each thin
                length = rng.choice([1, 1, 2, 4, 16]) * UNIT
                length = min(length, BB - unit * UNIT % BB)        # within one block
                self.write(dev, unit * UNIT, length)
            if rng.random() < 0.3:
                self.discard(1, rng.randrange(0, 48), rng.randint(1, 3))
            if r % 2 == 0:
                self.fs_file(nfile)
                nfile += 1
            kind = r % 5
            if kind == 1 or kind == 3:
                # A snapshot of thin 0, taken as LVM does: origin suspended.
                self.mark()
                sid = 20 + self.nsnaps
                self.nsnaps += 1
                run("dmsetup", "suspend", "rt_r0")
                self.msg("create_snap", str(sid), "0")
                run("dmsetup", "resume", "rt_r0")
                self.event(ev="snap", dev=sid, origin=0)
                self.activate(sid)
                snaps.append(sid)
            elif kind == 4 and len(snaps) > 1:
                sid = snaps.pop(0)
                self.deactivate(sid)
                self.msg("delete", str(sid))
                self.event(ev="del", dev=sid)
            if r % 2 == 1 or rng.random() < 0.3:
                self.mark()
        self.mark()
        self.event(ev="end")


# ---------------------------------------------------------------------------------------
# The model: what each device holds at each mark, and what may differ after it.

class Model:
    def __init__(self, journal):
        self.events = [json.loads(line) for line in open(journal)]
        self.at = {}      # mark name -> (devices {dev: {unit: hash}}, files {name: hash}, fs_dev)
        self.after = {}   # mark name -> (may {dev: {unit: set}}, created {dev: units}, deleted set, files)
        state, files, fsdev = {}, {}, None
        order = []
        for e in self.events:
            ev = e["ev"]
            if ev == "dev":
                state[e["dev"]] = {}
                if e.get("fs"):
                    fsdev = e["dev"]
            elif ev == "w":
                for i, x in enumerate(e["h"]):
                    state[e["dev"]][e["unit"] + i] = x
            elif ev == "x":
                for i in range(e["n"]):
                    state[e["dev"]][e["unit"] + i] = ZERO
            elif ev == "snap":
                state[e["dev"]] = dict(state[e["origin"]])
            elif ev == "del":
                del state[e["dev"]]
            elif ev == "f":
                files[e["name"]] = e["h"]
            elif ev == "mark":
                self.at[e["name"]] = ({d: dict(u) for d, u in state.items()}, dict(files), fsdev)
                order.append(e["name"])
        self.order = order
        # What may have happened after each mark, until the next one.
        cur = None
        for e in self.events:
            ev = e["ev"]
            if ev == "mark":
                cur = e["name"]
                self.after[cur] = ({}, {}, set(), {})
                continue
            if cur is None:
                continue
            may, created, deleted, nfiles = self.after[cur]
            if ev == "w":
                for i, x in enumerate(e["h"]):
                    may.setdefault(e["dev"], {}).setdefault(e["unit"] + i, set()).add(x)
            elif ev == "x":
                for i in range(e["n"]):
                    may.setdefault(e["dev"], {}).setdefault(e["unit"] + i, set()).add(ZERO)
            elif ev == "snap":
                # (taken right after a mark: the origin's state is the mark's)
                created[e["dev"]] = self.at[cur][0][e["origin"]]
            elif ev == "del":
                deleted.add(e["dev"])
            elif ev == "f":
                nfiles[e["name"]] = e["h"]

    def expect(self, mark):
        """For the state after `mark`: ({dev: {unit: set of hashes}} of the devices that must
        exist, {dev: ...} of those that may, files that must exist, files that may). A unit
        written or discarded after the mark may hold its old content or any of its new ones,
        in a snapshot made after the mark as in any other device (a unit the mark's state
        does not hold reads as zeros)."""
        state, files, fsdev = self.at[mark]
        may, created, deleted, nfiles = self.after[mark]

        def want(dev, units):
            w = {u: {x} for u, x in units.items()}
            for u, xs in may.get(dev, {}).items():
                w.setdefault(u, {ZERO}).update(xs)
            return w

        must_devs, may_devs = {}, {}
        for dev, units in state.items():
            (may_devs if dev in deleted else must_devs)[dev] = want(dev, units)
        for dev, units in created.items():
            may_devs[dev] = want(dev, units)
        return must_devs, may_devs, files, nfiles, fsdev

def thin_ids(meta):
    out = run("thin_dump", meta).stdout
    import xml.etree.ElementTree as ET
    return {int(d.get("dev_id")) for d in ET.fromstring(out).findall("device")}


def read_units(path, units):
    """{unit: hash} of the given 4 KiB units of a device, read with O_DIRECT by 64 KiB block."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, BB)
    got = {}
    try:
        for blk in sorted({u * UNIT // BB for u in units}):
            n = os.preadv(fd, [buf], blk * BB)
            assert n == BB
            for u in range(blk * BB // UNIT, (blk + 1) * BB // UNIT):
                if u in units:
                    got[u] = h(buf[(u * UNIT) % BB:(u * UNIT) % BB + UNIT])
    finally:
        os.close(fd)
    return got


class Checker:
    def __init__(self, model, tmp, pool_tgt, thin_tgt):
        self.m, self.tmp = model, tmp
        self.pool_tgt, self.thin_tgt = pool_tgt, thin_tgt
        self.meta, self.data = "/dev/mapper/rt_smeta", "/dev/mapper/rt_sdata"
        self.msz = int(run("blockdev", "--getsz", self.meta).stdout)
        self.dsz = int(run("blockdev", "--getsz", self.data).stdout)
        self.stats = {"points": 0, "ext4": 0, "units": 0}
        self.times = {}

    def timed(self, what, fn, *args, **kw):
        t0 = time.time()
        try:
            return fn(*args, **kw)
        finally:
            self.times[what] = self.times.get(what, 0) + time.time() - t0

    def open_check(self, tgt_pool, tgt_thin, mark, ids, fs_check):
        """Activate the pool with the scratch metadata, each thin, and read every unit the
        model knows back; then tear down (which commits) and thin_check again."""
        must, may, files, nfiles, fsdev = self.m.expect(mark)
        run("dmsetup", "create", "rt_spool", "--table",
            "0 %d %s %s %s 128 32" % (self.dsz, tgt_pool, self.meta, self.data))
        errs = []
        try:
            st = run("dmsetup", "status", "rt_spool").stdout.split()
            if st[3] == "Fail" or st[7] != "rw" or st[10] != "-":
                errs.append("%s: the pool opens as: %s" % (tgt_pool, " ".join(st)))
            # (Every thin in one dmsetup call, and out in another: under TCG a dmsetup
            # costs a tenth of a second.)
            names = {dev: "rt_st%d" % dev for dev in ids}
            run("dmsetup", "create", "--concise", ";".join(
                "%s,,,rw,0 2097152 %s /dev/mapper/rt_spool %d" % (names[d], tgt_thin, d) for d in sorted(ids)))
            try:
                for dev in sorted(ids):
                    path = "/dev/mapper/" + names[dev]
                    if dev == fsdev:
                        if fs_check:
                            errs += self.timed("ext4", self.check_fs, path, files, nfiles)
                        continue
                    want = must.get(dev, may.get(dev))
                    got = read_units(path, set(want))
                    self.stats["units"] += len(got)
                    bad = sorted(u for u in want if got[u] not in want[u])
                    if bad:
                        errs.append("%s: thin %d: %d units of %d wrong, first unit %d (byte %d): %s, expected one of %s"
                                    % (tgt_thin, dev, len(bad), len(want), bad[0], bad[0] * UNIT,
                                       got[bad[0]], sorted(want[bad[0]])))
            finally:
                run("dmsetup", "remove", *names.values())
        finally:
            run("dmsetup", "remove", "rt_spool")
        r = run("thin_check", self.meta, check=False)
        if r.returncode:
            errs.append("%s: thin_check after the pool closed: %s" % (tgt_pool, r.stdout.strip()))
        return errs

    def check_fs(self, dev, files, nfiles):
        """The ext4 thin, copied out (nothing may write to the replayed data), mounted (which
        replays its journal): every file fsync'ed by the mark reads back; then e2fsck."""
        img = os.path.join(self.tmp, "fs.img")
        mnt = os.path.join(self.tmp, "fsmnt")
        os.makedirs(mnt, exist_ok=True)
        run("dd", "if=" + dev, "of=" + img, "bs=1M", "count=64", "iflag=direct", "status=none")
        errs = []
        run("mount", "-o", "loop", img, mnt)
        try:
            for name, x in files.items():
                try:
                    got = h(open(os.path.join(mnt, name), "rb").read())
                except OSError as e:
                    errs.append("ext4: fsync'ed file %s: %s" % (name, e))
                    continue
                if got != x and got != nfiles.get(name):
                    errs.append("ext4: fsync'ed file %s reads back wrong" % name)
        finally:
            run("umount", mnt)
        r = run("e2fsck", "-fn", img, check=False)
        if r.returncode:
            errs.append("ext4: e2fsck: %s" % r.stdout.strip()[-600:])
        os.unlink(img)
        self.stats["ext4"] += 1
        return errs

    def point(self, replay_dev, mark, idx, fs_check):
        """Check the replayed state (everything logged before entry idx) after `mark`."""
        # The metadata area, copied to the scratch metadata device: the pools write to it
        # when they open and close, and the replay must stay as it was.
        run("dd", "if=" + replay_dev, "of=" + self.meta, "bs=1M", "count=%d" % (self.msz // 2048),
            "oflag=direct", "status=none")
        errs = []
        r = self.timed("thin_check", run, "thin_check", self.meta, check=False)
        if r.returncode:
            return ["thin_check: " + r.stdout.strip()]
        ids = self.timed("thin_dump", thin_ids, self.meta)
        must, may, _, _, _ = self.m.expect(mark)
        if not set(must) <= ids or not ids <= set(must) | set(may):
            errs.append("devices %s, expected %s (and maybe %s)" % (sorted(ids), sorted(must), sorted(may)))
            return errs
        errs += self.timed(self.pool_tgt[0], self.open_check, self.pool_tgt[0], self.thin_tgt[0], mark, ids, fs_check)
        if len(self.pool_tgt) > 1:
            run("dd", "if=" + replay_dev, "of=" + self.meta, "bs=1M", "count=%d" % (self.msz // 2048),
                "oflag=direct", "status=none")
            errs += self.timed(self.pool_tgt[1], self.open_check, self.pool_tgt[1], self.thin_tgt[1], mark, ids, False)
        self.stats["points"] += 1
        return errs


def choose_points(entries, marks_at, spec, rng):
    """Entry counts to replay to (each point: the first N entries): the FLUSH/FUA entries and
    marks after the first mark, and points between them."""
    first = marks_at[0] + 1
    syncs = [e[0] + 1 for e in entries if e[0] >= first - 1 and e[1] & (FLUSH | FUA | MARK)]
    syncs = sorted(set(syncs))
    between = []
    for a, b in zip(syncs, syncs[1:]):
        if b - a > 1:
            between.append(rng.randrange(a + 1, b))
    if spec == "long":
        return sorted(set(syncs + between[::4]))
    n = int(spec.split(":")[1])
    k = max(1, n * 2 // 3)
    pick = [syncs[i * (len(syncs) - 1) // max(1, k - 1)] for i in range(k)] if syncs else []
    pick += rng.sample(between, min(len(between), n - len(pick)))
    return sorted(set(pick))


def check(journal, log, replay_dev, spec, pool_tgt, thin_tgt, ext4_every):
    model = Model(journal)
    entries = read_log(log)
    marks_at = [e[0] for e in entries if e[1] & MARK and e[5] in model.at]
    names = {e[0]: e[5] for e in entries if e[1] & MARK}
    if not marks_at:
        sys.exit("no workload marks in the log")
    missing = set(model.order) - {names[i] for i in marks_at}
    if missing:
        sys.exit("marks missing from the log: %s" % sorted(missing))
    rng = random.Random(len(entries))
    points = choose_points(entries, marks_at, spec, rng)
    c = Checker(model, os.environ["TMP"], pool_tgt.split(","), thin_tgt.split(","))
    nflush = sum(1 for e in entries if e[1] & (FLUSH | FUA))
    print("log: %d entries, %d MiB of writes, %d FLUSH/FUA, %d marks; %d points to check"
          % (len(entries), sum(e[3] for e in entries if not e[1] & DISCARD) >> 20, nflush,
             len(marks_at), len(points)), flush=True)
    # REPLAY_MUTATE=drop_meta: replay no metadata write but the superblock's (block 0), as a
    # disk that loses what it was told to flush would: a check of the checker, which must
    # then fail.
    mutate = os.environ.get("REPLAY_MUTATE") == "drop_meta"
    msz_bytes = c.msz * 512
    lfd = os.open(log, os.O_RDONLY)
    rfd = os.open(replay_dev, os.O_WRONLY)
    done, failed, mark, t0 = 0, 0, None, time.time()
    for n, p in enumerate(points):
        t1 = time.time()
        for e in entries[done:p]:
            idx, flags, off, length, doff, name = e
            if flags & MARK:
                if name in model.at:
                    mark = name
            elif length and not flags & DISCARD:
                if mutate and UNIT <= off < msz_bytes:
                    continue
                os.pwrite(rfd, os.pread(lfd, length, doff), off)
        done = p
        os.fsync(rfd)
        c.times["replay"] = c.times.get("replay", 0) + time.time() - t1
        errs = c.point(replay_dev, mark, p, ext4_every and n % ext4_every == 0)
        if errs:
            failed += 1
            print("point %d (entry %d, after mark %s): FAILED" % (n, p, mark))
            for e in errs:
                print("  " + e)
            if failed >= 3:
                break
    print("checked %d points (%d with ext4 mounted and checked, %d units read) in %d s, %d failed"
          % (c.stats["points"], c.stats["ext4"], c.stats["units"], time.time() - t0, failed))
    print("time: " + ", ".join("%s %.0f s" % kv for kv in sorted(c.times.items())), flush=True)
    sys.exit(1 if failed else 0)


# ---------------------------------------------------------------------------------------
# A check of the model itself (host side, KTAP output): small journals, and what expect()
# must allow at a mark.

def selftest():
    import tempfile
    A, B, C = "a" * 16, "b" * 16, "c" * 16

    def model(*events):
        with tempfile.NamedTemporaryFile("w", suffix=".journal", delete=False) as f:
            for e in events:
                f.write(json.dumps(e) + "\n")
        try:
            return Model(f.name)
        finally:
            os.unlink(f.name)

    def w(dev, unit, x):
        return {"ev": "w", "dev": dev, "unit": unit, "h": [x]}

    def mark(n):
        return {"ev": "mark", "name": "m%d" % n}

    dev0 = {"ev": "dev", "dev": 0}
    cases = []

    # The failure of REPLAY_SEED=82714 (CI at c12867d): snapshot 22 of thin 0, made right
    # after mark m6 and then written (a snapshot break) before m7, was checked against the
    # origin's content at m6 alone, so a replay point after the pool had committed the
    # break read back "wrong". The old expect() left a new snapshot's writes out.
    m = model(dev0, w(0, 5, A), mark(0), {"ev": "snap", "dev": 22, "origin": 0},
              w(22, 5, B), w(22, 7, C), mark(1))
    must, may, _, _, _ = m.expect("m0")
    cases.append(("snapshot_written_after_its_mark",
                  22 not in must and may.get(22, {}).get(5) == {A, B} and may[22].get(7) == {ZERO, C}))
    must, may, _, _, _ = m.expect("m1")
    cases.append(("snapshot_written_before_the_next_mark", must.get(22, {}).get(5) == {B}))

    m = model(dev0, w(0, 5, A), mark(0), {"ev": "snap", "dev": 22, "origin": 0}, w(0, 5, B), mark(1))
    must, may, _, _, _ = m.expect("m0")
    cases.append(("origin_written_after_a_snapshot",
                  must[0][5] == {A, B} and may[22][5] == {A}))

    m = model(dev0, w(0, 5, A), w(0, 6, A), mark(0),
              {"ev": "x", "dev": 0, "unit": 0, "n": 16}, mark(1))
    must, _, _, _, _ = m.expect("m0")
    cases.append(("discard_after_a_mark", must[0][5] == {A, ZERO} and must[0][9] == {ZERO}))
    must, _, _, _, _ = m.expect("m1")
    cases.append(("discard_before_the_next_mark", must[0][5] == {ZERO}))

    m = model(dev0, {"ev": "dev", "dev": 1}, w(1, 3, A), mark(0), {"ev": "del", "dev": 1}, mark(1))
    must, may, _, _, _ = m.expect("m0")
    cases.append(("deleted_after_a_mark", 1 not in must and may[1][3] == {A}))
    must, may, _, _, _ = m.expect("m1")
    cases.append(("deleted_before_the_next_mark", 1 not in must and 1 not in may))

    print("KTAP version 1")
    print("1..%d" % len(cases))
    for n, (name, ok) in enumerate(cases, 1):
        print("%sok %d replay_model_%s" % ("" if ok else "not ", n, name))
    return all(ok for _, ok in cases)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "work":
        Work(a[1], int(a[2]), "rt_lw", "rt_rpool", a[4]).main(int(a[3]))
    elif a[0] == "check":
        check(a[1], a[2], a[3], a[4], a[5], a[6], int(a[7]))
    elif a[0] == "selftest":
        sys.exit(0 if selftest() else 1)
    else:
        sys.exit(__doc__)
