#!/usr/bin/env python3
"""Allocation failures in the thin targets' ioctl and map paths (issue 11, item 3); used by
failslab.sh, on a kernel with fault injection (the checker kernel).

  failslab.py POOL_TGT THIN_TGT META DATA SPEC

Each operation below runs once per N with the Nth fault-injection site this thread reaches
failing: /proc/thread-self/fail-nth, with failslab counting sleeping allocations too
(failslab.sh sets ignore-gfp-wait to N; page allocations are left out). The thread is the
one issuing the ioctl or the O_DIRECT write, so the failures land in device-mapper's ioctl
path, in the targets' constructors, resume and message handlers (and what they call:
dm-bufio, dm-kcopyd, workqueues, the persistent-data code), and in the thin's map path.
Allocations made by the pool's workers are not reached this way.

An operation is first run unarmed with a large N to count the sites it reaches (C); then N
runs over 1..C ("long") or, for "short:K", over 1..K and K more spread from 1 to C. At each N:
  - the operation fails with an errno or works, and ends (an alarm catches an interruptible
    wait; a task stuck in D state shows in the kernel log as a hung task);
  - its effect is all or nothing: a message that failed left no trace (the same message,
    unarmed, then works) and one that worked did what it says; a device whose table load
    or resume failed is left without a live table and can be removed, and a thin it was
    opening is not left counted open (it can then be deleted);
  - the pool is still read-write, or it went read-only or failed as dm-thin does on a
    metadata error; then it is repaired (thin_check, the needs_check flag cleared) and
    reopened, and that run is counted as degraded;
  - a write that returned success reads back.
At the end the pool is closed, thin_check is clean, and thin 0's data, written before the
first fault, reads back. The kernel log (guest-run.sh) and kmemleak (the checker runs) do
the rest: an error path that leaks or warns fails the run. FAILSLAB_ONLY=REGEX arms only the
sweeps it names (the others' operations run once, unarmed).
"""
import hashlib
import mmap
import os
import re
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dmioctl import (DM, DM_HDR, DM_TABLE_LOAD, DM_DEV_SUSPEND, DM_TARGET_MSG,  # noqa: E402
                     request, table_payload, message_payload)

BS = 128                    # data block, sectors (64 KiB)
BB = BS * 512
THIN_LEN = 2097152          # 1 GiB thins
BASE_BLOCKS = 16            # thin 0's data, written before any fault
SLOW = int(os.environ.get("RTHIN_SLOW", "1"))
ONLY = os.environ.get("FAILSLAB_ONLY", "")   # a regex: only the sweeps it names are armed


class Hang(Exception):
    pass


def on_alarm(sig, frame):
    raise Hang("no answer in %d s" % (60 * SLOW))


def run(*args, check=True):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(args), r.returncode, r.stdout.strip()))
    return r


def load_buf(name, ttype, params, length):
    return request(DM_TABLE_LOAD, name, table_payload([(0, length, ttype, params)]), target_count=1)


def msg_buf(name, text):
    return request(DM_TARGET_MSG, name, message_payload(0, text))


class Armed:
    """fail-nth on this thread: run(n, fn) runs fn with the nth fault site failing."""

    def __init__(self):
        self.fd = os.open("/proc/thread-self/fail-nth", os.O_RDWR)

    def run(self, n, fn):
        """(errno or 0, whether the fault was injected)."""
        err = 0
        os.write(self.fd, b"%d" % n)
        try:
            fn()
        except OSError as e:
            err = e.errno
        finally:
            left = int(os.pread(self.fd, 32, 0))
            os.write(self.fd, b"0")
        return err, left == 0

    def count(self, fn):
        big = 1 << 30
        os.write(self.fd, b"%d" % big)
        try:
            fn()
        finally:
            left = int(os.pread(self.fd, 32, 0))
            os.write(self.fd, b"0")
        return big - left


class Rig:
    def __init__(self, pool_tgt, thin_tgt, meta, data):
        self.pool_tgt, self.thin_tgt, self.meta, self.data = pool_tgt, thin_tgt, meta, data
        self.dsz = int(run("blockdev", "--getsz", data).stdout) // BS * BS
        self.dm = DM()
        self.armed = Armed()
        self.pool_params = "%s %s %d 32 1 skip_block_zeroing" % (meta, data, BS)
        self.want0 = None
        self.stats = {}
        self.problems = []
        self.where = ""         # the sweep and N being checked, for problems
        self.degraded = 0

    # -- devices, unarmed ------------------------------------------------------------------
    def exists(self, name):
        try:
            self.dm.call(7, name)      # DM_DEV_STATUS
            return True
        except OSError:
            return False

    def devnum(self, name):
        dev = DM_HDR.unpack_from(self.dm.call(7, name))[10]
        return os.major(dev), os.minor(dev)

    def node(self, name):
        """/dev/mapper/NAME (the ioctls make no device nodes; udev is off in the guest)."""
        path = "/dev/mapper/" + name
        if os.path.exists(path):
            os.unlink(path)
        os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(*self.devnum(name)))
        return path

    def remove(self, name):
        if self.exists(name):
            self.dm.remove(name)
        if os.path.exists("/dev/mapper/" + name):
            os.unlink("/dev/mapper/" + name)

    def pool_dev(self):
        return "%d:%d" % self.devnum("rt_apool")

    def open_pool(self):
        self.dm.create_device("rt_apool", [(0, self.dsz, self.pool_tgt, self.pool_params)])

    def open_thin(self, dev, name="rt_athin"):
        self.dm.create_device(name, [(0, THIN_LEN, self.thin_tgt, "%s %d" % (self.pool_dev(), dev))])
        return self.node(name)

    def msg(self, text):
        self.dm.message("rt_apool", 0, text)

    def pool_status(self):
        return self.dm.status("rt_apool")[0].split()

    def pool_mode(self):
        st = self.pool_status()
        return "Fail" if st[3] == "Fail" else st[7] + ("+needs_check" if st[10] != "-" else "")

    def txid(self):
        return int(self.pool_status()[3])

    def held_root(self):
        return self.pool_status()[6]

    def close_all(self):
        for name in ("rt_athin", "rt_athin2", "rt_apool"):
            self.remove(name)

    def thin_check(self, clear=False):
        r = run("thin_check", self.meta, check=False)
        if r.returncode and clear:
            # (as LVM does for needs_check; a real inconsistency still fails below)
            run("thin_check", "--clear-needs-check-flag", self.meta, check=False)
            r = run("thin_check", self.meta, check=False)
        return r

    def recover(self, what):
        """After a run that left the pool read-only or failed: repair, reopen."""
        self.degraded += 1
        self.close_all()
        r = self.thin_check(clear=True)
        if r.returncode:
            self.problem("%s: thin_check after the pool degraded: %s" % (what, r.stdout.strip()[-300:]))
            raise RuntimeError("cannot go on")
        self.open_pool()
        if self.pool_mode() != "rw":
            self.problem("%s: the repaired pool opens as %s" % (what, self.pool_mode()))
            raise RuntimeError("cannot go on")

    def problem(self, text):
        print("PROBLEM: %s%s" % (self.where, text), flush=True)
        self.problems.append(text)

    # -- data ------------------------------------------------------------------------------
    def read_hashes(self, path, blocks):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, BB)
        try:
            out = []
            for b in blocks:
                assert os.preadv(fd, [buf], b * BB) == BB
                out.append(hashlib.blake2b(buf, digest_size=8).hexdigest())
            return out
        finally:
            os.close(fd)

    def write_blocks(self, path, blocks):
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, BB)
        try:
            out = []
            for b in blocks:
                buf[:] = os.urandom(BB)
                assert os.pwritev(fd, [buf], b * BB) == BB
                out.append(hashlib.blake2b(buf, digest_size=8).hexdigest())
            os.fsync(fd)
            return out
        finally:
            os.close(fd)

    def check_thin0(self, what):
        self.open_thin(0, "rt_athin2")
        try:
            got = self.read_hashes("/dev/mapper/rt_athin2", range(BASE_BLOCKS))
        finally:
            self.remove("rt_athin2")
        if got != self.want0:
            bad = [i for i in range(BASE_BLOCKS) if got[i] != self.want0[i]]
            self.problem("%s: thin 0's blocks %s changed" % (what, bad))

    # -- the sweep -------------------------------------------------------------------------
    def sweep(self, name, spec, prepare, op, verify):
        """prepare() (unarmed) returns what op needs; op(ctx) runs armed; verify(ctx, err,
        injected) checks and restores (unarmed)."""
        ctx = prepare()
        sites = self.armed.count(lambda: op(ctx))
        verify(ctx, 0, False)
        if ONLY and not re.search(ONLY, name):
            return      # (run once, unarmed: the state is as after its sweep)
        if spec == "long" or sites <= int(spec.split(":")[1]):
            ns = list(range(1, sites + 1))
        else:
            # Every one of the first K sites (device-mapper's ioctl and the start of the
            # constructor or handler: a thin's constructor allocates at N=18 of 473), and K
            # more spread over all of them.
            k = int(spec.split(":")[1])
            ns = sorted(set(range(1, k + 1)) | {1 + i * (sites - 1) // (k - 1) for i in range(k)})
        hit = failed = 0
        t0 = time.time()
        for n in ns:
            self.where = "(%s N=%d) " % (name, n)
            ctx = prepare()
            signal.alarm(60 * SLOW)
            try:
                err, injected = self.armed.run(n, lambda: op(ctx))
                signal.alarm(0)
            except Hang as e:
                print("HANG: %s at N=%d: %s" % (name, n, e), flush=True)
                os._exit(3)
            hit += injected
            failed += err != 0
            try:
                verify(ctx, err, injected)
            except OSError as e:
                self.problem("%s N=%d (errno %d, fault %s): checking after it: %s"
                             % (name, n, err, "injected" if injected else "not reached", e))
                raise RuntimeError("cannot go on")
            mode = self.pool_mode() if self.exists("rt_apool") else "rw"
            if mode != "rw":
                print("%s N=%d: errno %d, pool %s: repaired" % (name, n, err, mode), flush=True)
                self.recover("%s N=%d" % (name, n))
        self.where = ""
        self.stats[name] = (sites, len(ns), hit, failed)
        print("%-22s %4d sites, %3d runs: %3d faults injected, %3d operations failed (%d s)"
              % (name, sites, len(ns), hit, failed, time.time() - t0), flush=True)

    def ioctl(self, req_buf):
        self.dm.issue(req_buf)

def main():
    pool_tgt, thin_tgt, meta, data, spec = sys.argv[1:6]
    signal.signal(signal.SIGALRM, on_alarm)
    r = Rig(pool_tgt, thin_tgt, meta, data)
    zero = bytes(4096)

    def wipe_super():
        fd = os.open(meta, os.O_WRONLY)
        os.pwrite(fd, zero, 0)
        os.fsync(fd)
        os.close(fd)

    # 1. A new pool: the constructor formats the metadata; then resume.
    def p_format():
        r.close_all()
        wipe_super()
        r.dm.create("rt_apool")
        return (load_buf("rt_apool", pool_tgt, r.pool_params, r.dsz), request(DM_DEV_SUSPEND, "rt_apool"))

    def op_load_resume(ctx):
        r.ioctl(ctx[0])
        r.ioctl(ctx[1])

    def v_pool(ctx, err, injected):
        if err:
            # No live table left by the failure: the device goes, and the pool opens.
            r.remove("rt_apool")
            if r.exists("rt_apool"):
                r.problem("pool: the device could not be removed after errno %d" % err)
            r.open_pool()
        if r.pool_mode() != "rw":
            r.problem("pool: opens as %s" % r.pool_mode())
        st = r.pool_status()
        if int(st[3]) != r.expect_txid:
            r.problem("pool: transaction id %s, expected %d" % (st[3], r.expect_txid))

    r.expect_txid = 0
    r.sweep("pool_format", spec, p_format, op_load_resume, v_pool)

    # The base: thin 0 with data, snapshot 1 of it (blocks shared), thin 2 empty.
    r.msg("create_thin 0")
    r.open_thin(0)
    r.want0 = r.write_blocks("/dev/mapper/rt_athin", range(BASE_BLOCKS))
    r.dm.suspend("rt_athin")
    r.msg("create_snap 1 0")
    r.dm.resume("rt_athin")
    r.msg("create_thin 2")
    r.remove("rt_athin")
    r.msg("set_transaction_id 0 1")
    r.expect_txid = 1

    # 2. The pool opened on existing metadata.
    def p_open():
        r.close_all()
        r.dm.create("rt_apool")
        return (load_buf("rt_apool", pool_tgt, r.pool_params, r.dsz), request(DM_DEV_SUSPEND, "rt_apool"))

    r.sweep("pool_open", spec, p_open, op_load_resume, v_pool)
    r.check_thin0("after pool_open")

    # 3. A thin's constructor and resume, on thin 8 (a snapshot of 1). Once the device is
    # gone, thin 8 must be free to delete: a failed constructor left it counted open
    # otherwise (the pool refuses to delete an open thin).
    r.msg("create_snap 8 1")

    def p_thin():
        r.remove("rt_athin")
        r.dm.create("rt_athin")
        return (load_buf("rt_athin", thin_tgt, "%s 8" % r.pool_dev(), THIN_LEN),
                request(DM_DEV_SUSPEND, "rt_athin"))

    def v_thin(ctx, err, injected):
        if err:
            r.remove("rt_athin")
            if r.exists("rt_athin"):
                r.problem("thin: the device could not be removed after errno %d" % err)
            r.open_thin(8)
        got = r.read_hashes(r.node("rt_athin"), range(BASE_BLOCKS))
        if got != r.want0:
            r.problem("thin: thin 8 does not read as thin 0 did")
        r.remove("rt_athin")
        if r.pool_mode() != "rw":
            return      # (sweep() repairs)
        try:
            r.msg("delete 8")
        except OSError as e:
            r.problem("thin: after errno %d, thin 8 cannot be deleted once its device is gone"
                      " (errno %d): still counted open" % (err, e.errno))
            return
        r.msg("create_snap 8 1")

    r.sweep("thin_open", spec, p_thin, op_load_resume, v_thin)

    # 4. Messages: all or nothing.
    def message_sweep(name, text, before, undo_ok, redo):
        """before(): unarmed set-up; the armed message `text`; if it failed, redo (the same
        message unarmed) must work; then undo_ok (unarmed) undoes it."""
        def prep():
            before()
            return msg_buf("rt_apool", text)

        def v(ctx, err, injected):
            if r.pool_mode() != "rw":
                return          # (sweep() repairs; the all-or-nothing check needs a rw pool)
            if err:
                try:
                    redo()
                except OSError as e:
                    r.problem("%s: after the message failed (errno %d), it fails unarmed too (errno %d):"
                              " it left a trace" % (name, err, e.errno))
                    return
            try:
                undo_ok()
            except OSError as e:
                r.problem("%s: undoing it failed (errno %d)" % (name, e.errno))

        r.sweep(name, spec, prep, r.ioctl, v)

    nothing = (lambda: None)
    message_sweep("msg_create_thin", "create_thin 5", nothing, lambda: r.msg("delete 5"),
                  lambda: r.msg("create_thin 5"))
    message_sweep("msg_create_snap", "create_snap 6 0", nothing, lambda: r.msg("delete 6"),
                  lambda: r.msg("create_snap 6 0"))
    message_sweep("msg_delete", "delete 7", lambda: r.msg("create_snap 7 1"), nothing,
                  lambda: r.msg("delete 7"))

    # set_transaction_id: the id moves by one, or (failed) stays.
    def txid_sweep():
        def prep():
            return msg_buf("rt_apool", "set_transaction_id %d %d" % (r.expect_txid, r.expect_txid + 1))

        def v(ctx, err, injected):
            if r.pool_mode() != "rw":
                return
            if err:
                if r.txid() != r.expect_txid:
                    r.problem("set_transaction_id failed (errno %d) but the id changed" % err)
                r.msg("set_transaction_id %d %d" % (r.expect_txid, r.expect_txid + 1))
            r.expect_txid += 1
            if r.txid() != r.expect_txid:
                r.problem("set_transaction_id: transaction id %d, expected %d" % (r.txid(), r.expect_txid))

        r.sweep("msg_set_transaction_id", spec, prep, r.ioctl, v)

    txid_sweep()
    message_sweep("msg_reserve_meta_snap", "reserve_metadata_snap", nothing,
                  lambda: r.msg("release_metadata_snap"), lambda: r.msg("reserve_metadata_snap"))
    message_sweep("msg_release_meta_snap", "release_metadata_snap", lambda: r.msg("reserve_metadata_snap"),
                  nothing, lambda: r.msg("release_metadata_snap"))

    # 5. Writes through the thin's map path: to a new block of thin 2 (provisioning), to a
    # block thin 0 shares with snapshot 1 (a break), and an overwrite in place.
    def write_sweep(name, dev, block_of):
        state = {"k": 0}
        r.open_thin(dev)
        fd = os.open("/dev/mapper/rt_athin", os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, BB)

        def prep():
            state["k"] += 1
            b = block_of(state["k"])
            buf[:] = os.urandom(BB)
            return b, hashlib.blake2b(buf, digest_size=8).hexdigest()

        def op(ctx):
            os.pwritev(fd, [buf], ctx[0] * BB)

        def v(ctx, err, injected):
            os.fsync(fd)
            got = r.read_hashes("/dev/mapper/rt_athin", [ctx[0]])[0]
            if not err and got != ctx[1]:
                r.problem("%s: block %d: the write returned success, the block reads back otherwise" % (name, ctx[0]))

        try:
            r.sweep(name, spec, prep, op, v)
        finally:
            os.close(fd)
            r.remove("rt_athin")

    write_sweep("write_provision", 2, lambda k: 100 + k)
    write_sweep("write_break_sharing", 0, lambda k: k % BASE_BLOCKS)
    # (thin 0's blocks now differ from the base: the base is snapshot 1's from here on)
    write_sweep("write_overwrite", 2, lambda k: 101)

    # The end: snapshot 1 still holds the base data; the pool closes; thin_check is clean.
    r.open_thin(1)
    got = r.read_hashes("/dev/mapper/rt_athin", range(BASE_BLOCKS))
    r.remove("rt_athin")
    if got != r.want0:
        r.problem("snapshot 1's blocks %s changed" % [i for i in range(BASE_BLOCKS) if got[i] != r.want0[i]])
    mode = r.pool_mode()
    r.close_all()
    c = r.thin_check()
    if c.returncode:
        r.problem("thin_check at the end: %s" % c.stdout.strip()[-300:])
    runs = sum(s[1] for s in r.stats.values())
    hit = sum(s[2] for s in r.stats.values())
    print("%d operations, %d runs, %d faults injected, %d operations failed, %d left the pool degraded;"
          " pool %s at the end; %d problems" % (len(r.stats), runs, hit, sum(s[3] for s in r.stats.values()),
                                                r.degraded, mode, len(r.problems)))
    sys.exit(1 if r.problems else 0)


if __name__ == "__main__":
    try:
        main()
    except Hang as e:
        print("HANG: " + str(e), flush=True)
        os._exit(3)
    except RuntimeError as e:
        print("FAILED: %s" % e, flush=True)
        sys.exit(1)
