"""device-mapper's ioctls on /dev/mapper/control, as libdevmapper issues them, for the guest
selftests' Python drivers (fuzz_table.py, fuzz_meta.py): much faster than a dmsetup process
per call under TCG. Failures raise OSError with the ioctl's errno."""
import fcntl
import os
import struct

# --- the ioctl interface (include/uapi/linux/dm-ioctl.h) ---------------------------------
DM_HDR = struct.Struct("<3IIIIiIIIQ128s129s7s")        # struct dm_ioctl, 312 bytes
SPEC = struct.Struct("<QQiI16s")                       # struct dm_target_spec, 40 bytes
assert DM_HDR.size == 312 and SPEC.size == 40
DM_DEV_CREATE, DM_DEV_REMOVE, DM_DEV_SUSPEND, DM_DEV_STATUS = 3, 4, 6, 7
DM_TABLE_LOAD, DM_TABLE_CLEAR, DM_TABLE_STATUS, DM_TARGET_MSG = 9, 10, 12, 14
DM_SUSPEND_FLAG, DM_STATUS_TABLE_FLAG, DM_BUFFER_FULL_FLAG = 1 << 1, 1 << 4, 1 << 8


def request(nr, name, payload=b"", flags=0, target_count=0, size=16384):
    """The ioctl number and the buffer (header, then payload) of one call."""
    size = max(size, DM_HDR.size + len(payload) + 8)
    buf = bytearray(size)
    DM_HDR.pack_into(buf, 0, 4, 0, 0, size, DM_HDR.size, target_count, 0, flags, 0, 0, 0,
                     name.encode(), b"", b"")
    buf[DM_HDR.size:DM_HDR.size + len(payload)] = payload
    return (3 << 30) | (DM_HDR.size << 16) | (0xFD << 8) | nr, buf


def table_payload(targets):
    """DM_TABLE_LOAD's payload. targets: [(start, length, type, params)]"""
    payload = bytearray()
    for start, length, ttype, params in targets:
        p = params.encode("utf-8", "surrogateescape") + b"\0"
        n = (SPEC.size + len(p) + 7) & ~7
        spec = SPEC.pack(start & (2**64 - 1), length & (2**64 - 1), 0, n, ttype.encode()[:15])
        payload += spec + p + b"\0" * (n - SPEC.size - len(p))
    return bytes(payload)


def message_payload(sector, text):
    return struct.pack("<Q", sector & (2**64 - 1)) + text.encode("utf-8", "surrogateescape") + b"\0"


class DM:
    def __init__(self):
        self.fd = os.open("/dev/mapper/control", os.O_RDWR)

    def issue(self, req_buf):
        """A call built by request() (failslab.py builds it before arming a fault)."""
        req, buf = req_buf
        fcntl.ioctl(self.fd, req, buf, True)
        return buf

    def call(self, nr, name, payload=b"", flags=0, target_count=0, size=16384):
        return self.issue(request(nr, name, payload, flags, target_count, size))

    def create(self, name):
        dev = DM_HDR.unpack_from(self.call(DM_DEV_CREATE, name))[10]
        return "%d:%d" % (os.major(dev), os.minor(dev))

    def remove(self, name):
        self.call(DM_DEV_REMOVE, name)

    def load(self, name, targets):
        """targets: [(start, length, type, params)]"""
        self.call(DM_TABLE_LOAD, name, table_payload(targets), target_count=len(targets))

    def resume(self, name):
        self.call(DM_DEV_SUSPEND, name)

    def suspend(self, name):
        self.call(DM_DEV_SUSPEND, name, flags=DM_SUSPEND_FLAG)

    def clear(self, name):
        self.call(DM_TABLE_CLEAR, name)

    def status(self, name, table=False):
        buf = self.call(DM_TABLE_STATUS, name, flags=DM_STATUS_TABLE_FLAG if table else 0)
        hdr = DM_HDR.unpack_from(buf)
        out, off = [], hdr[4]
        for _ in range(hdr[5]):
            start, length, _, nxt, ttype = SPEC.unpack_from(buf, off)
            params = bytes(buf[off + SPEC.size:]).split(b"\0", 1)[0].decode(errors="replace")
            out.append("%d %d %s %s" % (start, length, ttype.rstrip(b"\0").decode(errors="replace"), params))
            off = hdr[4] + nxt                  # (relative to the data's start)
        return out

    def message(self, name, sector, text):
        self.call(DM_TARGET_MSG, name, message_payload(sector, text))

    def create_device(self, name, targets):
        """Creates NAME with TARGETS and resumes it; returns its "major:minor". A device whose
        table is refused is removed again (the OSError is raised)."""
        dev = self.create(name)
        try:
            self.load(name, targets)
            self.resume(name)
        except OSError:
            self.remove(name)
            raise
        return dev
