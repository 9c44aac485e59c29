#!/usr/bin/env python3
"""Table-line and message fuzzer for the thin targets (issue 11, item 6), run by fuzz_table.sh
inside the test guest.

usage: fuzz_table.py ENGINE SEED CASES PROGRESS POOL_TGT THIN_TGT

ENGINE is `ioctl` (device-mapper's ioctls on /dev/mapper/control, as libdevmapper issues
them: thousands of cases a minute under TCG) or `dmsetup` (the same cases through dmsetup
create/reload/resume/message, slower). Cases are random or mutated pool and thin table lines
(created as a new device rt_fz, or loaded onto the live pool rt_fpool or its thin rt_fthin)
and pool and thin messages, generated from SEED, so a run is reproducible. Each case must
succeed or fail with an error; the kernel log is checked by the caller. Before each case
its number and text go to PROGRESS, so a hung case can be named.

The devices, made by the caller: rt_fm0/rt_fd0 (metadata and data of the live pool
rt_fpool, thin 0 active as rt_fthin with its first block written), rt_fm1/rt_fd1 (metadata
and data for new pools). Excluded on purpose, because they are valid in dm-thin too and
would only corrupt the harness's own devices or hang upstream as well: the raw disks, a
pool device as another pool's metadata or data device, a device as its own metadata or data
device.
"""
import errno
import os
import random
import re
import subprocess
import sys
import time

ENGINE, SEED, CASES, PROGRESS, POOL_TGT, THIN_TGT = sys.argv[1:7]
SEED, CASES = int(SEED), int(CASES)
rng = random.Random(SEED)        # the cases: the same sequence whatever the outcomes
OUTCOMES = os.environ.get("FUZZ_OUTCOMES")   # a file for one "case outcome" line per case
BS = 128
CANON = {}            # name -> canonical table of the harness's live devices

from dmioctl import DM  # noqa: E402 (the device-mapper ioctls, shared with fuzz_meta.py)


# --- dmsetup -----------------------------------------------------------------------------
class Hang(Exception):
    pass


def dmsetup(*args):
    """Run dmsetup; raise OSError(EIO) on failure, Hang if it runs over 60 s."""
    p = subprocess.Popen(["dmsetup"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0 = time.time()
    while p.poll() is None:
        if time.time() - t0 > 60:
            raise Hang("dmsetup " + " ".join(args))
        time.sleep(0.005)
    out = p.stdout.read().decode(errors="replace")
    if p.returncode:
        raise OSError(errno.EIO, out.strip())
    return out


class DMSetup:
    def create(self, name):
        return None

    def create_load_resume(self, name, targets):
        dmsetup("create", name, "--table", table_text(targets))

    def remove(self, name):
        try:
            dmsetup("remove", name)
        except OSError:
            # A failed `dmsetup create` removes its device itself.
            if subprocess.run(["dmsetup", "info", name], capture_output=True).returncode == 0:
                raise

    def load(self, name, targets):
        dmsetup("reload", name, "--table", table_text(targets))

    def resume(self, name):
        dmsetup("resume", name)

    def suspend(self, name):
        dmsetup("suspend", name)

    def clear(self, name):
        dmsetup("clear", name)

    def status(self, name, table=False):
        return dmsetup("table" if table else "status", name).splitlines()

    def message(self, name, sector, text):
        dmsetup("message", name, str(sector), *(text.replace("\0", "").split() or [""]))


def table_text(targets):
    return "\n".join("%d %d %s %s" % t for t in targets).replace("\0", "")


# --- the generator -----------------------------------------------------------------------
NUMS = ["0", "1", "-1", "7", "8", "127", "128", "129", "192", "256", "1024", "2097152", "2097280",
        "4194304", "2147483647", "2147483648", "4294967295", "4294967296", "9223372036854775807",
        "9223372036854775808", "18446744073709551615", "18446744073709551616",
        "99999999999999999999999999", "16777215", "16777216", "0x80", "080", "+128", "-0", "1e3",
        "12abc", "", " ", "\t", "00000000000000000000128", "3.5", "١٢٨", "\x7f", "%s%n"]
FEATURES = ["skip_block_zeroing", "ignore_discard", "no_discard_passdown", "read_only",
            "error_if_no_space", "SKIP_BLOCK_ZEROING", "Read_Only", "queue_if_no_space",
            "discard_passdown", "bogus", "", "skip_block_zeroing\x00x", "x" * 300]
VERBS = ["create_thin", "create_snap", "delete", "set_transaction_id", "reserve_metadata_snap",
         "release_metadata_snap", "CREATE_THIN", "Delete", "create", "snap", "trim", "", "x" * 200]
TARGETS = [POOL_TGT, THIN_TGT, POOL_TGT.upper(), THIN_TGT + "x", "thin-pool", "thin", "linear",
           "error", "zero", "", "a" * 15, "rthin-pool\x01"]


def num(small=None):
    if small is not None and rng.random() < 0.6:
        return str(rng.choice(small))
    return rng.choice(NUMS)


def dev(kind):
    """A device argument: a token the executor resolves (by path or by major:minor), or junk."""
    r = rng.random()
    if r < 0.75:
        return "@%s:%s" % (kind, rng.choice(["path", "num"]))
    return rng.choice(["/dev/mapper/nope", "/dev/null", "/dev/zero", "/tmp", "0:0", "253:999",
                       "999999:1", "-1:-1", "253", ":", "", "@FM0:path",
                       "/dev/mapper/" + "n" * 200])


def features():
    fs = [rng.choice(FEATURES) for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 5]))]
    r = rng.random()
    if r < 0.6:
        count = str(len(fs))
    elif r < 0.8:
        count = str(len(fs) + rng.choice([-2, -1, 1, 2, 100]))
    else:
        count = num()
    return [count] + fs if (fs or rng.random() < 0.7) else []


def pool_params(meta, data):
    return [meta, data, num([BS, BS, BS, 256, 192, 64, 0, 4194304]), num([32, 0, 1, 1 << 40])] + features()


def thin_params():
    p = [dev("POOL") if rng.random() < 0.95 else "@SELF:num", num([0, 1, 2, 3, 5, 9, 1 << 24])]
    if rng.random() < 0.15:                       # an external origin (never a thin: its own)
        p.append(dev(rng.choice(["FD1", "FM1"])))
    return p


def mutate(tokens):
    tokens = list(tokens)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(7)
        i = rng.randrange(len(tokens) + 1)
        if op == 0 and tokens:
            del tokens[min(i, len(tokens) - 1)]
        elif op == 1 and tokens:
            tokens.insert(i, tokens[min(i, len(tokens) - 1)])
        elif op == 2:
            tokens.insert(i, rng.choice([num(), rng.choice(FEATURES), dev("FM1")]))
        elif op == 3 and tokens:
            tokens[min(i, len(tokens) - 1)] = num()
        elif op == 4 and len(tokens) > 1:
            j = rng.randrange(len(tokens))
            k = rng.randrange(len(tokens))
            tokens[j], tokens[k] = tokens[k], tokens[j]
        elif op == 5 and tokens:
            j = min(i, len(tokens) - 1)
            t = tokens[j]
            if t and not t.startswith("@"):
                c = rng.randrange(len(t))
                tokens[j] = t[:c] + chr(rng.choice([0x20, 0x2d, 0x30, 0x39, 0x7f, 0xff, ord(t[c]) ^ 1])) + t[c + 1:]
        elif op == 6:
            tokens = tokens[:i]
    return tokens


def gen_table(kind):
    """A table: [(start, length, type, params)] for a pool or a thin, valid or not."""
    if kind == "pool":
        meta = rng.choice(["@FM1:path", "@FM1:num"]) if rng.random() < 0.8 else dev(rng.choice(["FM0", "FM1", "FD1"]))
        data = rng.choice(["@FD1:path", "@FD1:num"]) if rng.random() < 0.8 else dev(rng.choice(["FD0", "FD1", "FM1"]))
        params, ttype, length = pool_params(meta, data), POOL_TGT, FD_SECTORS
    else:
        params, ttype, length = thin_params(), THIN_TGT, rng.choice([2097152, 2048, 128, 1, 1 << 40])
    r = rng.random()
    if r < 0.45:
        params = mutate(params)
    if rng.random() < 0.08:
        ttype = rng.choice(TARGETS)
    if rng.random() < 0.1:
        length = rng.choice([0, 1, 127, FD_SECTORS - 128, FD_SECTORS + 128, 2**63, 2**64 - 1, length * 2])
    targets = [(0, length, ttype, " ".join(params))]
    if rng.random() < 0.05:                       # a second target: a gap, an overlap, or adjacent
        start = rng.choice([length, length + 8, max(length - 8, 0)])
        targets.append((start, rng.choice([128, 2048]), rng.choice([ttype, THIN_TGT, "linear"]), " ".join(params)))
    return targets


def gen_message():
    verb = rng.choice(VERBS[:6]) if rng.random() < 0.8 else rng.choice(VERBS)
    want = {"create_thin": 1, "create_snap": 2, "delete": 1, "set_transaction_id": 2}.get(verb, 0)
    n = want if rng.random() < 0.7 else rng.choice([0, 1, 2, 3, 5])
    args = [num([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 0, 16777215]) for _ in range(n)]
    if verb == "set_transaction_id" and n == 2 and rng.random() < 0.5:
        args = ["@TXID", "@TXID+1"]
    words = [verb] + args
    if rng.random() < 0.2:
        words = mutate(words)
    return " ".join(words)


def gen_case():
    r = rng.random()
    if r < 0.40:
        kind = "pool" if rng.random() < 0.55 else "thin"
        return ("create", kind, gen_table(kind))
    if r < 0.60:
        kind = "pool" if rng.random() < 0.5 else "thin"
        return ("reload", kind, gen_table(kind))
    target = "rt_fpool" if rng.random() < 0.9 else "rt_fthin"
    sector = 0 if rng.random() < 0.9 else rng.choice([1, 2**62, 2**64 - 1, 999999999])
    return ("message", target, (sector, gen_message(), rng.random() < 0.05))


# --- the executor ------------------------------------------------------------------------
def devnum(path):
    st = os.stat(path)
    return "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))


PATHS = {"FM0": "/dev/mapper/rt_fm0", "FM1": "/dev/mapper/rt_fm1", "FD0": "/dev/mapper/rt_fd0",
         "FD1": "/dev/mapper/rt_fd1", "POOL": "/dev/mapper/rt_fpool", "THIN": "/dev/mapper/rt_fthin"}
NUMS_OF = {k: devnum(v) for k, v in PATHS.items()}
FD_SECTORS = int(open("/sys/dev/block/%s/size" % NUMS_OF["FD1"]).read())


def resolve(params, self_num, txid):
    def sub(m):
        kind, form = m.group(1), m.group(2)
        if kind == "SELF":
            return self_num or "253:998"
        return PATHS[kind] if form == "path" else NUMS_OF[kind]
    params = re.sub(r"@(FM0|FM1|FD0|FD1|POOL|THIN|SELF):(path|num)", sub, params)
    return params.replace("@TXID+1", str(txid + 1)).replace("@TXID", str(txid))


def pool_txid(dm):
    st = dm.status("rt_fpool")
    try:
        return int(st[0].split()[3])
    except (IndexError, ValueError):
        return 0


counts = {}


outcomes = open(OUTCOMES, "w") if OUTCOMES else None
case_no = 0


def count(kind, outcome):
    counts[(kind, outcome)] = counts.get((kind, outcome), 0) + 1
    if outcomes:
        outcomes.write("%d %s: %s\n" % (case_no, kind, outcome))


def canonical_devices(targets, kind):
    """Whether a reloaded table still names the live device's own devices (so resuming it
    cannot point the live pool or thin at other data)."""
    if len(targets) != 1:
        return False
    words = targets[0][3].split()
    if kind == "pool":
        return words[:2] in (["/dev/mapper/rt_fm0", "/dev/mapper/rt_fd0"], [NUMS_OF["FM0"], NUMS_OF["FD0"]])
    return len(words) >= 1 and words[0] in ("/dev/mapper/rt_fpool", NUMS_OF["POOL"])


def unsafe_meta(params):
    """A new pool's metadata device is never the live pool's data, its thin or the pool
    (dm-thin would format it, overwriting the harness's data): rt_fm1 instead."""
    words = params.split(" ")
    if words and words[0] in [PATHS[k] for k in ("FD0", "THIN", "POOL")] + [NUMS_OF[k] for k in ("FD0", "THIN", "POOL")]:
        words[0] = PATHS["FM1"]
    return " ".join(words)


def restore(dm, name):
    dm.load(name, CANON[name])
    dm.resume(name)


def run_case(dm, i, case):
    """Run one case. Choices the executor makes (resume or not, messages to a new pool)
    come from a generator of the case's own, so that the cases stay the same whatever the
    outcomes, and two targets' outcomes can be compared case by case."""
    global rng
    gen, rng = rng, random.Random(SEED * 1000003 + i)
    try:
        run_case_(dm, i, case)
    finally:
        rng = gen


def run_case_(dm, i, case):
    what, kind, arg = case
    if what == "create":
        self_num = dm.create("rt_fz") if ENGINE == "ioctl" else None
        targets = [(s, l, t, resolve(p, self_num, 0)) for s, l, t, p in arg]
        if kind == "pool":
            targets = [(s, l, t, unsafe_meta(p)) for s, l, t, p in targets]
        progress(i, "create %s: %s" % (kind, table_text(targets)))
        try:
            if ENGINE == "ioctl":
                dm.load("rt_fz", targets)
                dm.resume("rt_fz")
            else:
                dm.create_load_resume("rt_fz", targets)
            count("create " + kind, "accepted")
            dm.status("rt_fz")
            dm.status("rt_fz", table=True)
            if kind == "pool" and targets[0][2] == POOL_TGT:
                for _ in range(rng.randrange(4)):
                    try:
                        dm.message("rt_fz", 0, gen_message().replace("@TXID+1", "1").replace("@TXID", "0"))
                    except OSError:
                        pass
        except OSError:
            count("create " + kind, "rejected")
        if rng.random() < 0.02:
            wipe_fm1()
        try:
            dm.remove("rt_fz")
        except OSError as e:
            if ENGINE == "ioctl" or e.errno != errno.EIO:
                raise
    elif what == "reload":
        name = "rt_fpool" if kind == "pool" else "rt_fthin"
        if kind == "pool":
            arg = [(s, l, t, p.replace("@FM1", "@FM0").replace("@FD1", "@FD0")) for s, l, t, p in arg]
        targets = [(s, l, t, resolve(p, NUMS_OF["POOL" if kind == "pool" else "THIN"], 0)) for s, l, t, p in arg]
        progress(i, "reload %s: %s" % (name, table_text(targets)))
        try:
            dm.load(name, targets)
        except OSError:
            count("reload " + kind, "rejected")
            return
        if canonical_devices(targets, kind) and rng.random() < 0.7:
            try:
                dm.resume(name)
                count("reload " + kind, "accepted")
                dm.status(name)
            except OSError:
                count("reload " + kind, "rejected at resume")
            progress(i, "restore %s" % name)
            restore(dm, name)
        else:
            count("reload " + kind, "accepted (cleared)")
            dm.clear(name)
    else:
        sector, text, suspended = arg
        if "@TXID" in text:
            text = resolve(text, None, pool_txid(dm))
        # Thin 0 holds the harness's data: never delete it (an open thin's delete is refused,
        # but a reload case may have closed it for a moment).
        m = re.match(r"(?i)delete\s+\+?0+\s*$", text)
        if m:
            text = "delete 1"
        progress(i, "message %s %d%s: %r" % (kind, sector, " (suspended)" if suspended else "", text))
        if suspended:
            dm.suspend("rt_fpool")
        try:
            dm.message(kind, sector, text)
            count("message " + kind, "accepted")
        except OSError:
            count("message " + kind, "rejected")
        if suspended:
            dm.resume("rt_fpool")


def wipe_fm1():
    fd = os.open(PATHS["FM1"], os.O_WRONLY)
    os.pwrite(fd, b"\0" * 4096, 0)
    os.fsync(fd)
    os.close(fd)


def progress(i, text):
    with open(PROGRESS, "w") as f:
        f.write("case %d: %s\n" % (i, text))


def check_thin(want):
    fd = os.open(PATHS["THIN"], os.O_RDONLY)
    got = os.pread(fd, len(want), 0)
    os.close(fd)
    return got == want


def main():
    dm = DM() if ENGINE == "ioctl" else DMSetup()
    for name in ("rt_fpool", "rt_fthin"):
        lines = (line.split(None, 3) for line in DM().status(name, table=True))
        CANON[name] = [(int(s), int(n), t, p) for s, n, t, p in lines]
    want = open(sys.argv[7], "rb").read()
    t0 = time.time()
    errors = 0
    global case_no
    for i in range(CASES):
        case = gen_case()
        case_no = i
        try:
            run_case(dm, i, case)
        except Hang as e:
            print("HANG: case %d: %s" % (i, e))
            sys.stdout.flush()
            os._exit(3)
        except OSError as e:
            # The harness's own step failed (removing rt_fz, restoring a live table).
            print("harness step failed at case %d (%s): %s" % (i, case[0], e))
            errors += 1
            if errors > 10:
                break
        if i % 250 == 249 and not check_thin(want):
            print("thin 0's data changed after case %d" % i)
            errors += 1
            break
    t = time.time() - t0
    acc = sum(v for (k, o), v in counts.items() if o.startswith("accepted"))
    rej = sum(v for (k, o), v in counts.items() if not o.startswith("accepted"))
    for (k, o), v in sorted(counts.items()):
        print("%-16s %-20s %d" % (k, o, v))
    print("engine %s seed %d: %d cases in %.0f s: %d accepted, %d rejected" % (ENGINE, SEED, acc + rej, t, acc, rej))
    if not check_thin(want):
        print("thin 0's data changed")
        errors += 1
    if outcomes:
        outcomes.close()
    sys.exit(1 if errors else 0)


main()
