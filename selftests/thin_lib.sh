# Helpers for the thin target's guest suites (thin.sh, thin_io.sh): targets under test,
# pools and thin devices, data models, status and thin_dump checks. Sourced after lib.sh.
# shellcheck shell=bash

POOL_TGT=${POOL_TGT:-rthin-pool}
THIN_TGT=${THIN_TGT:-rthin}

BS=128                                   # data block size, sectors (64 KiB)
BB=$((BS * 512))                         # data block size, bytes
DATA_SECTORS=$(sectors "$DATA_DEV")
NR_BLOCKS=$((DATA_SECTORS / BS))
THIN_SECTORS=2097152                     # thin devices are 1 GiB
THIN_BYTES=$((THIN_SECTORS * 512))
THIN_BLOCKS=$((THIN_SECTORS / BS))

upstream() { [ "$THIN_TGT" = thin ]; }
LOG_PFX=rthin                            # dm-thin logs as "thin: ...", rthin as "rthin: ..."
upstream && LOG_PFX=thin

# check_meta [DEVICE]: thin_check passes on the metadata (its report only when it fails).
check_meta() {
	local out
	out=$(thin_check "${1:-$META_DEV}" 2>&1) || { echo "$out"; fail "thin_check ${1:-$META_DEV}"; }
}

# dm-thin-pool always (the cross-checks use it), rthin when it is the target under test.
load_targets() {
	kmod dm-thin-pool
	upstream || load_rthin
}

wipe_meta() { dd if=/dev/zero of="$META_DEV" bs=1M count=4 oflag=direct status=none; }
# pool_table [LEN] [FEATURES] [TARGET] [METADATA DEVICE]
pool_table() {
	echo "0 ${1:-$DATA_SECTORS} ${3:-$POOL_TGT} ${4:-$META_DEV} $DATA_DEV $BS 32 ${2:-}"
}
# make_pool [LEN] [FEATURES]: a fresh pool rt_pool.
make_pool() { wipe_meta; dmsetup create rt_pool --table "$(pool_table "$@")"; }
# make_thin NAME ID [POOL] [TARGET]: activate thin device ID of the pool as NAME (1 GiB).
make_thin() {
	dmsetup create "$1" --table "0 $THIN_SECTORS ${4:-$THIN_TGT} /dev/mapper/${3:-rt_pool} $2"
}
msg() { dmsetup message rt_pool 0 "$@"; }
# status_field NAME N [--noflush]: field N of NAME's status (--noflush: a pool's, without the
# commit a status makes first).
status_field() { dmsetup status ${3:-} "$1" | awk -v f="$2" '{print $(f + 3)}'; }
pool_used() { status_field "${1:-rt_pool}" 3 ${2:-} | cut -d/ -f1; }

# expect_used N: the pool reports N data blocks in use.
expect_used() {
	[ "$(pool_used)" = "$1" ] || fail "pool uses $(pool_used) data blocks, expected $1: $(dmsetup status rt_pool)"
}

# expect_mapped NAME N [HIGHEST]: the thin's status says N blocks mapped, the highest HIGHEST.
expect_mapped() {
	local want got
	if [ "$2" = 0 ]; then want="0 -"; else want="$(($2 * BS)) $(((${3} + 1) * BS - 1))"; fi
	got=$(dmsetup status "$1" | cut -d' ' -f4-)
	[ "$got" = "$want" ] || fail "$1 status '$got', expected '$want'"
}

# Every thin device has a model: a sparse file of what it should read back.
model_new() { rm -f "$TMP/$1.model"; truncate -s "$THIN_BYTES" "$TMP/$1.model"; }

# put NAME OFFSET LEN: write LEN random bytes at byte OFFSET of NAME (direct IO), and into
# its model.
put() {
	head -c "$3" /dev/urandom >"$TMP/chunk"
	dd if="$TMP/chunk" of="/dev/mapper/$1" bs="$3" count=1 seek="$2" oflag=direct,seek_bytes status=none
	dd if="$TMP/chunk" of="$TMP/$1.model" bs="$3" count=1 seek="$2" oflag=seek_bytes conv=notrunc status=none
}

# zero_model NAME OFFSET LEN: NAME should now read zeros there.
zero_model() {
	dd if=/dev/zero of="$TMP/$1.model" bs="$3" count=1 seek="$2" oflag=seek_bytes conv=notrunc status=none
}

# same NAME OFFSET LEN [MODEL]: bytes OFFSET..+LEN of NAME read back as its model says
# (or as MODEL's).
same() {
	local m=${4:-$1}
	cmp <(dd if="/dev/mapper/$1" bs=64K skip="$2" count="$3" iflag=direct,skip_bytes,count_bytes status=none) \
		<(dd if="$TMP/$m.model" bs=64K skip="$2" count="$3" iflag=skip_bytes,count_bytes status=none) ||
		fail "$1: bytes $2..+$3 differ from ${m}'s model"
}

# thin_mappings [METADATA]: for each device thin_dump lists, one line "DEV_ID MAPPED_BLOCKS
# VBLOCK...": its id, the mapped count its details hold, and the virtual blocks it maps.
thin_mappings() {
	thin_dump "${1:-$META_DEV}" | python3 -c '
import sys, xml.etree.ElementTree as ET
for d in ET.parse(sys.stdin).getroot().findall("device"):
    blocks = []
    for m in d:
        if m.tag == "range_mapping":
            b, n = int(m.get("origin_begin")), int(m.get("length"))
        elif m.tag == "single_mapping":
            b, n = int(m.get("origin_block")), 1
        else:
            continue
        blocks.extend(range(b, b + n))
    print(d.get("dev_id"), d.get("mapped_blocks"), *blocks)
'
}

# thin_dump's XML, reduced to one line per device: its mapped block count, the mappings
# counted, and the virtual blocks mapped (as ranges).
dump_summary() {
	thin_mappings "${1:-$META_DEV}" | python3 -c '
import sys
for line in sys.stdin:
    dev, mapped, *blocks = line.split()
    blocks = sorted(map(int, blocks))
    ranges, i = [], 0
    while i < len(blocks):
        j = i
        while j + 1 < len(blocks) and blocks[j + 1] == blocks[j] + 1:
            j += 1
        ranges.append(str(blocks[i]) if i == j else "%d-%d" % (blocks[i], blocks[j]))
        i = j + 1
    print("device %s mapped_blocks=%s counted=%d blocks=%s" % (dev, mapped, len(blocks), ",".join(ranges) or "-"))
'
}

# expect_dump LINE...: thin_dump of the metadata shows exactly these device lines.
expect_dump() {
	local want got
	got=$(dump_summary)
	want=$(printf '%s\n' "$@")
	echo "thin_dump: $got"
	[ "$got" = "$want" ] || fail "thin_dump shows [$got], expected [$want]"
}

# meta_on_linear: a fresh pool whose metadata device is rt_meta, a linear over META_DEV,
# with thin 0 active as rt_thin; rt_meta's next table (swapped in by one resume) fails
# every write (dm-flakey error_writes).
meta_on_linear() {
	local msz
	msz=$(sectors "$META_DEV")
	wipe_meta
	dmsetup create rt_meta --table "0 $msz linear $META_DEV 0"
	dmsetup create rt_pool --table "$(pool_table "" "" "" /dev/mapper/rt_meta)"
	msg create_thin 0
	make_thin rt_thin 0
	dmsetup reload rt_meta --table "0 $msz flakey $META_DEV 0 0 1 1 error_writes"
}

# teardown_meta_on_linear: remove thin and pool, and rt_meta (healthy again) too.
teardown_meta_on_linear() {
	local msz
	msz=$(sectors "$META_DEV")
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	dmsetup reload rt_meta --table "0 $msz linear $META_DEV 0"
	dmsetup resume rt_meta
	dmsetup remove rt_meta
}

# fio_verify NAME ARGS...: fio with crc32c verification on /dev/mapper/NAME: 2 jobs of
# random 4 KiB writes to disjoint 4 MiB regions, then each verifies what it wrote.
fio_verify() {
	local dev=$1 out rc=0
	shift
	out=$TMP/fio.$RANDOM
	fio --output-format=terse --terse-version=3 --filename="/dev/mapper/$dev" --direct=1 \
		--ioengine=libaio --iodepth=8 --rw=randwrite --bs=4k --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --numjobs=2 --size=4M --offset_increment=4M "$@" >"$out" 2>&1 || rc=$?
	[ $rc = 0 ] || cat "$out"
	return $rc
}

# no_periodic_commits: rthin commits only when asked to (flush, FUA, message, suspend) for
# the rest of the test. Upstream has no such knob: its 1 s commit stays, which can only make
# a test pass that would otherwise fail, never the other way round.
no_periodic_commits() {
	upstream && return 0
	[ -w /sys/module/rthin/parameters/commit_period_ms ] ||
		{ echo "this rthin has no commit_period_ms: its 1 s commits stay"; return 0; }
	echo 0 >/sys/module/rthin/parameters/commit_period_ms
	trap 'echo 1000 >/sys/module/rthin/parameters/commit_period_ms' EXIT
}

# delayed_data WRITE_MS [READ_MS]: from here on the pool's data device is rt_data, a dm-delay
# over DATA_DEV that holds every write (zeroing and copying by kcopyd included) for WRITE_MS
# ms and every read for READ_MS ms (default 0); flushes pass at once.
delayed_data() {
	local name=rt_data
	# (A device a hung test left behind keeps its name: take another.)
	! dmsetup info $name >/dev/null 2>&1 || name=rt_data_$RANDOM
	kmod dm-delay
	dmsetup create $name --table "0 $DATA_SECTORS delay $DATA_DEV 0 ${2:-0} $DATA_DEV 0 $1 $DATA_DEV 0 0"
	DATA_DEV=/dev/mapper/$name
}

# sync_dev NAME: fsync the thin device NAME (an empty flush reaches its target).
sync_dev() {
	python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); os.fsync(fd)' "/dev/mapper/$1"
}
