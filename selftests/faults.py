#!/usr/bin/env python3
"""Fault injection on the thin targets' metadata and data IO (issue 11, item 3); used by
faults.sh.

  faults.py ops SEED ROUNDS OPS
      writes the workload's operations (one JSON line each) to OPS: rounds of O_DIRECT
      writes (whole new blocks, parts of new blocks: zeroing, writes to blocks a snapshot
      shares: copying, overwrites of mapped blocks), whole-block discards, an fsync of every
      thin, snapshots of thin 0 made (origin suspended) and deleted.
  faults.py work OPS JOURNAL THIN_TGT ARM_AT ARM_CMD [MARKDEV]
      runs OPS on pool rt_fpool (thins 0 and 1, created here, as rt_f0/rt_f1); before
      operation ARM_AT runs the shell command ARM_CMD (which arms the fault); every
      operation's outcome goes to JOURNAL, and no failure stops the run. Each operation is
      bounded (60 s): one that does not return is a hang (exit 3). MARKDEV: a log-writes
      device to put a mark "op<N>" in before each operation (the reference run).
  faults.py verify JOURNAL THIN_TGT DUMP
      (DUMP: thin_dump's XML of the metadata) activates every thin the journal says must exist on rt_fpool (and those that may) and
      checks that each 4 KiB unit holds a value it may hold: what was written before the
      last fsync that succeeded (for a write that failed: the old or the new data), or
      anything written after it.
  faults.py classify OPS THIN_DUMP_XML
      the data blocks a reference run left mapped, by kind of first write (see classify()).
  faults.py readall JOURNAL THIN_TGT
      (while a fault is armed) reads every unit of every thin: a read may fail, but one
      that succeeds must return a value the unit may hold.
"""
import fcntl
import json
import mmap
import os
import random
import struct
import subprocess
import sys
import hashlib

UNIT = 4096
BB = 64 * 1024
ZERO = hashlib.blake2b(bytes(UNIT), digest_size=8).hexdigest()
NVB = 24                    # virtual blocks used on each thin


def h(b):
    return hashlib.blake2b(b, digest_size=8).hexdigest()


def run(*args, timeout=60):
    try:
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print("HANG: %s did not return in %d s" % (" ".join(args), timeout), flush=True)
        os._exit(3)
    return r.returncode, r.stdout.strip()


def make_ops(seed, rounds):
    rng = random.Random(seed)
    ops, snaps, nsnap, mapped = [], [], 0, {0: set(), 1: set()}
    for r in range(rounds):
        for _ in range(rng.randint(3, 5)):
            kind = rng.choice(["full", "part", "over", "snapw"] if snaps else ["full", "part", "over"])
            dev = rng.choice([0, 1])
            if kind == "snapw":
                dev = rng.choice(snaps + [0])
            free = [b for b in range(NVB) if b not in mapped.get(dev, ())]
            if kind == "full" and free:
                vb, off, ln = rng.choice(free), 0, BB
            elif kind == "part" and free:
                vb = rng.choice(free)
                ln = rng.choice([1, 2, 4]) * UNIT
                off = rng.randrange(0, (BB - ln) // UNIT + 1) * UNIT
            else:
                vb = rng.choice(sorted(mapped.get(dev, ())) or [rng.randrange(NVB)])
                ln = rng.choice([1, 4]) * UNIT
                off = rng.randrange(0, (BB - ln) // UNIT + 1) * UNIT
            mapped.setdefault(dev, set()).add(vb)
            ops.append({"op": "w", "dev": dev, "off": vb * BB + off, "len": ln})
        if rng.random() < 0.3 and mapped[1]:
            vb = rng.choice(sorted(mapped[1]))
            mapped[1].discard(vb)
            ops.append({"op": "x", "dev": 1, "off": vb * BB, "len": BB})
        ops.append({"op": "sync"})
        if r % 3 == 1:
            sid = 20 + nsnap
            nsnap += 1
            ops.append({"op": "snap", "dev": sid, "origin": 0})
            snaps.append(sid)
            mapped[sid] = set(mapped[0])
        if r % 4 == 2 and len(snaps) > 1:
            sid = snaps.pop(0)
            ops.append({"op": "del", "dev": sid})
            del mapped[sid]
    ops.append({"op": "sync"})
    return ops


class Work:
    def __init__(self, journal, thin):
        self.j = open(journal, "w")
        self.thin = thin
        self.fds = {}
        self.buf = mmap.mmap(-1, BB)

    def log(self, **e):
        self.j.write(json.dumps(e) + "\n")
        self.j.flush()

    def activate(self, dev):
        rc, out = run("dmsetup", "create", "rt_f%d" % dev, "--table", "0 2097152 %s /dev/mapper/rt_fpool %d" % (self.thin, dev))
        if rc == 0:
            self.fds[dev] = os.open("/dev/mapper/rt_f%d" % dev, os.O_RDWR | os.O_DIRECT)
        return rc

    def deactivate(self, dev):
        if dev in self.fds:
            os.close(self.fds.pop(dev))
            run("dmsetup", "remove", "rt_f%d" % dev)

    def do(self, op):
        k = op["op"]
        try:
            if k == "w":
                if op["dev"] not in self.fds:
                    return "skip"
                data = os.urandom(op["len"])
                self.buf[:op["len"]] = data
                op["h"] = [h(data[i:i + UNIT]) for i in range(0, op["len"], UNIT)]
                os.pwritev(self.fds[op["dev"]], [memoryview(self.buf)[:op["len"]]], op["off"])
            elif k == "x":
                fcntl.ioctl(self.fds[op["dev"]], 0x1277, struct.pack("QQ", op["off"], op["len"]))
            elif k == "sync":
                err = None
                for fd in self.fds.values():
                    try:
                        os.fsync(fd)
                    except OSError as e:
                        err = e
                if err:
                    raise err
            elif k == "snap":
                run("dmsetup", "suspend", "rt_f0")
                rc, out = run("dmsetup", "message", "rt_fpool", "0", "create_snap", str(op["dev"]), "0")
                run("dmsetup", "resume", "rt_f0")
                if rc:
                    return "err: " + out
                if self.activate(op["dev"]):
                    return "ok-inactive"
            elif k == "del":
                self.deactivate(op["dev"])
                rc, out = run("dmsetup", "message", "rt_fpool", "0", "delete", str(op["dev"]))
                if rc:
                    return "err: " + out
            return "ok"
        except OSError as e:
            return "err: " + str(e)

    def main(self, ops, arm_at, arm_cmd, markdev):
        for dev in (0, 1):
            rc, out = run("dmsetup", "message", "rt_fpool", "0", "create_thin", str(dev))
            if rc or self.activate(dev):
                sys.exit("setup failed: " + out)
            self.log(op="dev", dev=dev, res="ok")
        self.log(op="sync", res=self.do({"op": "sync"}))
        for i, op in enumerate(ops):
            if i == arm_at:
                rc, out = run("bash", "-c", arm_cmd)
                if rc:
                    sys.exit("arming the fault failed: " + out)
                self.log(op="armed")
            if markdev:
                run("dmsetup", "message", markdev, "0", "mark", "op%d" % i)
            res = self.do(op)
            op["res"] = res
            self.log(**op)
        for dev in list(self.fds):
            self.deactivate(dev)


def model(journal, lenient=False):
    """For each device: {unit: set of values it may hold}, and whether it must exist.
    lenient: an fsync that succeeds after an operation failed promises nothing."""
    may, now, exists = {}, {}, {}
    failed = armed = False
    late = set()              # devices made or deleted by a message once the fault was armed
    for line in open(journal):
        e = json.loads(line)
        k, ok = e["op"], e.get("res", "").startswith("ok")
        if k == "armed":
            armed = True
        if k in ("snap", "del") and armed:
            late.add(e["dev"])
        if lenient and k not in ("dev", "armed") and not ok and e.get("res") != "skip":
            failed = True
        if k == "sync" and ok and failed:
            continue
        if k == "dev":
            may[e["dev"]], now[e["dev"]], exists[e["dev"]] = {}, {}, True
        elif k in ("w", "x") and e.get("res") != "skip":
            d = e["dev"]
            vals = e["h"] if k == "w" else [ZERO] * (e["len"] // UNIT)
            for i, x in enumerate(vals):
                u = e["off"] // UNIT + i
                if ok:
                    now[d][u] = {x}
                else:
                    now[d].setdefault(u, {ZERO}).add(x)
                may[d].setdefault(u, {ZERO}).add(x)
        elif k == "sync" and ok:
            for d in now:
                may[d] = {u: set(xs) for u, xs in now[d].items()}
        elif k == "snap":
            d, o = e["dev"], e["origin"]
            now[d] = {u: set(xs) for u, xs in now[o].items()}
            may[d] = {u: set(xs) for u, xs in may[o].items()}
            exists[d] = ok or None      # None: may exist
        elif k == "del":
            exists[e["dev"]] = False if ok else None
    return may, exists, late


def read_check(journal, thin, dump):
    """Activate the thins and read every unit back; with dump (thin_dump's XML of the
    metadata before the pool opened): a read or activation must not fail, and every thin
    that must exist does. Exit status 1 if a unit is wrong, 2 if every error is a promise
    made after the fault and not kept: a unit holding what it held before an fsync that
    succeeded after an operation had failed (dm-thin's bug of seeds_004), or a snapshot made
    or deleted by a message that succeeded once the fault was armed (dm-thin's pool_message
    ignores its commit's failure)."""
    may, exists, late = model(journal)
    may_lenient, _, _ = model(journal, lenient=True)
    strict = dump is not None
    errs, nread, nfail, only_after_fault = [], 0, 0, True   # (units wrong only by the strict model)
    if strict:
        import xml.etree.ElementTree as ET
        ids = {int(d.get("dev_id")) for d in ET.parse(dump).getroot().findall("device")}
        for d, ex in exists.items():
            # (A message made once the fault was armed that returned success and was lost:
            # its commit failed, and the message said nothing: dm-thin's pool_message
            # ignores its commit's result.)
            if ex is True and d not in ids:
                errs.append("thin %d is gone%s" % (d, " (made after the fault was armed)" if d in late else ""))
                only_after_fault &= d in late
            if ex is False and d in ids:
                errs.append("thin %d, deleted, is back%s" % (d, " (deleted after the fault was armed)" if d in late else ""))
                only_after_fault &= d in late
    buf = mmap.mmap(-1, BB)
    for d in sorted(may):
        if exists[d] is False:
            continue
        rc, out = run("dmsetup", "create", "rt_fv", "--table", "0 2097152 %s /dev/mapper/rt_fpool %d" % (thin, d))
        if rc:
            if strict and exists[d] is True:
                errs.append("thin %d: cannot activate: %s" % (d, out))
                only_after_fault = False
            continue
        fd = os.open("/dev/mapper/rt_fv", os.O_RDONLY | os.O_DIRECT)
        try:
            for blk in sorted({u * UNIT // BB for u in may[d]}):
                try:
                    os.preadv(fd, [buf], blk * BB)
                except OSError as e:
                    nfail += 1
                    if strict:
                        errs.append("thin %d block %d: read failed: %s" % (d, blk, e))
                        only_after_fault = False
                    continue
                for u in range(blk * BB // UNIT, (blk + 1) * BB // UNIT):
                    if u in may[d]:
                        nread += 1
                        x = h(buf[(u * UNIT) % BB:(u * UNIT) % BB + UNIT])
                        if x not in may[d][u]:
                            only_after_fault &= x in may_lenient.get(d, {}).get(u, {ZERO})
                            errs.append("thin %d unit %d (byte %d): %s, expected one of %s"
                                        % (d, u, u * UNIT, x, sorted(may[d][u])))
        finally:
            os.close(fd)
            run("dmsetup", "remove", "rt_fv")
    print("read %d units back (%d block reads failed)%s" % (nread, nfail, "" if errs else ": all as expected"))
    for e in errs[:10]:
        print("WRONG: " + e)
    if errs and only_after_fault:
        print("every error is a promise made after the fault: an fsync that succeeded after an operation"
              " had failed, or a message that succeeded once the fault was armed")
        return 2
    return 1 if errs else 0


def classify(ops_file, dump_file):
    """The data blocks the reference run left mapped, by how their first write reached them:
    "full" (a whole block written), "zero" (part of a new block: the rest zeroed by kcopyd),
    "copy" (part of a block a snapshot shared: copied by kcopyd first). One "KIND BLOCK" line
    each."""
    import xml.etree.ElementTree as ET
    ops = [json.loads(line) for line in open(ops_file)]
    first, owner = {}, {0: 0, 1: 1}       # (dev, vb) -> kind of its first write since shared/new
    shared = set()
    for op in ops:
        if op["op"] == "snap":
            for (d, vb) in list(first):
                if d == op["origin"]:
                    shared.add((d, vb))
                    shared.add((op["dev"], vb))
                    first[(op["dev"], vb)] = first[(d, vb)]
        elif op["op"] == "w":
            key = (op["dev"], op["off"] // BB)
            if key in shared:
                shared.discard(key)
                first[key] = "full" if op["len"] == BB else "copy"
            elif key not in first:
                first[key] = "full" if op["len"] == BB else "zero"
        elif op["op"] == "x":
            first.pop((op["dev"], op["off"] // BB), None)
    out = []
    for d in ET.parse(dump_file).getroot().findall("device"):
        dev = int(d.get("dev_id"))
        for m in d:
            if m.tag == "single_mapping":
                pairs = [(int(m.get("origin_block")), int(m.get("data_block")))]
            elif m.tag == "range_mapping":
                ob, db = int(m.get("origin_begin")), int(m.get("data_begin"))
                pairs = [(ob + i, db + i) for i in range(int(m.get("length")))]
            else:
                continue
            for vb, db in pairs:
                k = first.get((dev, vb))
                if k:
                    out.append((k, db))
    for k, db in sorted(set(out), key=lambda x: x[1]):
        print(k, db)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "ops":
        with open(a[3], "w") as f:
            for op in make_ops(int(a[1]), int(a[2])):
                f.write(json.dumps(op) + "\n")
    elif a[0] == "work":
        ops = [json.loads(line) for line in open(a[1])]
        Work(a[2], a[3]).main(ops, int(a[4]), a[5], a[6] if len(a) > 6 else None)
    elif a[0] == "verify":
        sys.exit(read_check(a[1], a[2], a[3]))
    elif a[0] == "classify":
        classify(a[1], a[2])
    elif a[0] == "readall":
        sys.exit(read_check(a[1], a[2], None))
    else:
        sys.exit(__doc__)
