#!/usr/bin/env bash
# dm-thin parity selftests (issue 10): each test checks one behaviour of Linux 6.12's dm-thin
# that LVM and other users of the kernel interface rely on, named by its item in issue 10.
# Every test asserts what upstream dm-thin does, so that
#   POOL_TGT=thin-pool THIN_TGT=thin bash selftests/parity.sh
# passes on upstream's targets (the reference) as it does on rthin's (the default).
here=${here:-$(cd "$(dirname "$0")" && pwd)}
. "$here/lib.sh"        # (it changes into a scratch directory)
. "$here/thin_lib.sh"

# dmname NAME: the kernel's name of /dev/mapper/NAME (dm-N), for its sysfs directory.
dmname() { dmsetup info -c --noheadings -o blkdevname "$1"; }
# queue_attrs NAME: the queue limits of /dev/mapper/NAME that targets set, one line.
queue_attrs() {
	local q a out=
	q=/sys/block/$(dmname "$1")/queue
	for a in minimum_io_size optimal_io_size max_sectors_kb discard_granularity discard_max_bytes; do
		out+="$a=$(cat "$q/$a") "
	done
	echo "$out"
}

# null_data [ARGS]: from here on the data device is a 1 GiB memory-backed null_blk device,
# which takes no discards (null_blk's default); ARGS are more null_blk parameters.
null_data() {
	kmod null_blk nr_devices=1 gb=1 memory_backed=1 "$@"
	trap 'cleanup_dm; rmmod null_blk' EXIT
	DATA_DEV=/dev/nullb0
	DATA_SECTORS=$(sectors "$DATA_DEV")
}

# small_meta SECTORS: from here on the metadata device is rt_meta, a linear over the first
# SECTORS of META_DEV (wiped).
small_meta() {
	wipe_meta
	dmsetup create rt_meta --table "0 $1 linear $META_DEV 0"
	META_DEV=/dev/mapper/rt_meta
}

# Item 6, "a metadata device equal to the data device is refused": the same path twice is
# refused with dm-thin's message. (rthin also refuses two names of one device; dm-thin takes
# them and formats its metadata over the data, so that case is checked on rthin only.)
t_same_metadata_data_device() {
	load_targets
	expect_refused "$POOL_TGT" "0 $DATA_SECTORS $POOL_TGT $DATA_DEV $DATA_DEV $BS 32" \
		"Error setting metadata or data device"
	upstream && return 0
	expect_refused "$POOL_TGT" "0 $DATA_SECTORS $POOL_TGT $DATA_DEV $(devno "$DATA_DEV") $BS 32" \
		"Error setting metadata or data device"
}

# Item 6, "pool io_hints set io_min/io_opt to the block size", with dm-thin's discard limits:
# the pool's and a thin's queue limits are upstream's, for two block sizes, each discard
# feature, a data device that takes discards (virtio) and one that does not, with a largest
# IO smaller than a block (null_blk, max_sectors=96).
t_pool_io_hints() {
	load_targets
	local dev bs feat want got bad=0
	for dev in virtio null; do
		[ $dev = null ] && null_data max_sectors=96
		for bs in 128 2048; do
			for feat in "" "1 ignore_discard" "1 no_discard_passdown"; do
				wipe_meta
				dmsetup create rt_pool --table "0 $DATA_SECTORS thin-pool $META_DEV $DATA_DEV $bs 32 $feat"
				msg create_thin 0
				make_thin rt_thin 0 rt_pool thin
				want="pool: $(queue_attrs rt_pool) thin: $(queue_attrs rt_thin) $(status_field rt_pool 6)"
				dmsetup remove rt_thin
				dmsetup remove rt_pool
				wipe_meta
				dmsetup create rt_pool --table "0 $DATA_SECTORS $POOL_TGT $META_DEV $DATA_DEV $bs 32 $feat"
				msg create_thin 0
				make_thin rt_thin 0
				got="pool: $(queue_attrs rt_pool) thin: $(queue_attrs rt_thin) $(status_field rt_pool 6)"
				dmsetup remove rt_thin
				dmsetup remove rt_pool
				echo "$dev, block $bs, features '$feat': $got"
				[ "$got" = "$want" ] || { echo "  upstream: $want"; bad=$((bad + 1)); }
			done
			# The optimal IO size is the block size.
			[[ "$got" = "pool: "*"optimal_io_size=$((bs * 512)) "* ]] || bad=$((bad + 1))
		done
	done
	[ $bad = 0 ] || fail "$bad limits differ from upstream's"
}

# Item 6, "accounts_remapped_io set as dm-thin sets it": a thin device's IO accounting starts
# when a bio is sent to its data block, so a write held while the pool is suspended is not
# yet in flight, and is counted once it is done; a read of an unprovisioned block (served
# without going to a data block) is counted when it completes.
t_remapped_io_accounting() {
	load_targets
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	local st=/sys/block/$(dmname rt_thin)/stat infl=/sys/block/$(dmname rt_thin)/inflight
	local reads writes pid inflight
	read -r reads _ _ _ writes _ <"$st"
	dd if=/dev/mapper/rt_thin of=/dev/null bs=4096 count=1 skip=100 iflag=direct status=none
	dmsetup suspend rt_pool
	dd if=/dev/urandom of=/dev/mapper/rt_thin bs=4096 count=1 seek=16 oflag=direct status=none &
	pid=$!
	sleep 2
	inflight=$(awk '{print $1 + $2}' "$infl")
	dmsetup resume rt_pool
	wait $pid || fail "the write failed"
	echo "in flight while the pool was suspended: $inflight; stat before: reads $reads writes $writes; after: $(cat "$st")"
	[ "$inflight" = 0 ] || fail "$inflight bios in flight on the thin while the pool held them"
	read -r r2 _ _ _ w2 _ <"$st"
	[ "$w2" = $((writes + 1)) ] || fail "writes counted: $((w2 - writes)), expected 1"
	[ "$r2" = $((reads + 1)) ] || fail "reads counted: $((r2 - reads)), expected 1"
}

# Item 3, "metadata reserve = min(4096, total/10) blocks as dm-thin": a pool's used metadata
# on metadata upstream formatted is what upstream reports; and a small metadata device
# (512 KiB) filled by creating thin devices goes to out-of-metadata-space mode, read-only
# without needs_check, once a commit leaves nothing free but the reserve; its metadata
# checks out. Old rthin kept a quarter of the device back, and went on until the metadata
# was full, failing a commit and setting needs_check.
t_metadata_reserve() {
	load_targets
	local used_up used n=0
	small_meta 1024
	dmsetup create rt_pool --table "$(pool_table "" "" thin-pool)"
	used_up=$(status_field rt_pool 2)
	dmsetup remove rt_pool
	dmsetup create rt_pool --table "$(pool_table)"
	used=$(status_field rt_pool 2)
	echo "metadata used/total: upstream $used_up, $POOL_TGT $used"
	[ "$used" = "$used_up" ] || fail "used metadata $used, upstream says $used_up"
	kmsg_mark
	while [ $n -lt 400 ] && msg create_thin $n 2>/dev/null; do n=$((n + 1)); done
	echo "$n thin devices created; pool: $(dmsetup status rt_pool)"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	[ $n -lt 400 ] || fail "400 thin devices fit in 128 metadata blocks"
	[ "$(status_field rt_pool 5)" = ro ] || fail "pool mode $(status_field rt_pool 5), not ro"
	[ "$(status_field rt_pool 8)" = - ] || fail "needs_check is set"
	used=$(status_field rt_pool 2)
	[ "${used%/*}" = "${used#*/}" ] || fail "used metadata $used: a full pool reports all of it used"
	kmsg_since | grep -q "$LOG_PFX: No free metadata blocks" || fail "no 'No free metadata blocks' in the kernel log"
	kmsg_since | grep -q "$LOG_PFX: .*switching pool to read-only mode" || fail "no switch to read-only mode"
	! kmsg_since | grep -q "aborting current metadata transaction" || fail "a metadata transaction was aborted"
	dmsetup remove rt_pool
	check_meta
}

# Item 3, "the 16 GiB metadata-size warning and cap, as dm-thin": a metadata device of 17 GiB
# (rt_meta: 68 linears over the 256 MiB META_DEV; the pool writes only its first blocks) is
# used up to dm-thin's limit, 4161600 blocks, with dm-thin's warning.
t_metadata_size_cap() {
	load_targets
	local msz i table=
	msz=$(sectors "$META_DEV")
	wipe_meta
	for ((i = 0; i < 68; i++)); do table+="$((i * msz)) $msz linear $META_DEV 0"$'\n'; done
	dmsetup create rt_meta <<<"$table"
	echo "metadata device: $(sectors /dev/mapper/rt_meta) sectors"
	kmsg_mark
	dmsetup create rt_pool --table "$(pool_table "" "" "" /dev/mapper/rt_meta)"
	echo "pool: $(dmsetup status rt_pool)"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	kmsg_since | grep -q "$LOG_PFX: Metadata device .* is larger than 33292800 sectors: excess space will not be used." ||
		fail "no warning about the metadata device's size"
	[ "$(status_field rt_pool 2 | cut -d/ -f2)" = 4161600 ] || fail "metadata total not 4161600 blocks"
	[ "$(status_field rt_pool 9)" = 1024 ] || fail "metadata low water mark not 1024"
}

# Item 3, "growing the metadata device on resume" (lvextend --poolmetadatasize, which
# suspends the pool, grows its metadata LV and resumes the pool with the same table): a pool
# on a 512 KiB linear, filled with thin devices into out-of-metadata-space mode, grows to the
# linear's new 2 MiB when it resumes: the status shows 512 metadata blocks and dm-thin's new
# low water mark (128), the pool is writable again (more thin devices, a thin written and
# read back), with dm-thin's log line. Shrinking the linear under it is refused on resume,
# with dm-thin's message; grown back, the pool resumes. The metadata checks out and
# upstream dm-thin opens it with the new size and reads the thin back. Old rthin kept its
# metadata size and stayed read-only.
t_metadata_resize() {
	load_targets
	local base=$META_DEV n=0 k
	small_meta 1024
	dmsetup create rt_pool --table "$(pool_table)"
	while [ $n -lt 400 ] && msg create_thin $n 2>/dev/null; do n=$((n + 1)); done
	echo "$n thin devices created; pool: $(dmsetup status rt_pool | cut -d' ' -f4-)"
	[ "$(status_field rt_pool 5)" = ro ] || fail "pool mode $(status_field rt_pool 5), not ro"
	[ "$(status_field rt_pool 2 | cut -d/ -f2)" = 128 ] || fail "metadata total $(status_field rt_pool 2)"
	kmsg_mark
	dmsetup suspend rt_pool
	dmsetup reload rt_meta --table "0 4096 linear $base 0"
	dmsetup resume rt_meta
	dmsetup resume rt_pool
	echo "grown: $(dmsetup status rt_pool | cut -d' ' -f4-)"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	[ "$(status_field rt_pool 2 | cut -d/ -f2)" = 512 ] || fail "metadata total $(status_field rt_pool 2), not 512"
	[ "$(status_field rt_pool 5)" = rw ] || fail "pool mode $(status_field rt_pool 5), not rw"
	[ "$(status_field rt_pool 9)" = 128 ] || fail "metadata low water mark $(status_field rt_pool 9), not 128"
	kmsg_since | grep -q "$LOG_PFX: .*growing the metadata device from 128 to 512 blocks" ||
		fail "no 'growing the metadata device from 128 to 512 blocks' in the kernel log"
	for k in 1 2 3 4 5 6 7 8 9 10; do msg create_thin $((n + k)) || fail "create_thin $((n + k)) after growing"; done
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $((4 * BB))
	same rt_thin 0 $((8 * BB))
	# Shrinking is refused.
	kmsg_mark
	dmsetup suspend rt_pool
	dmsetup reload rt_meta --table "0 2048 linear $base 0"
	dmsetup resume rt_meta
	! dmsetup resume rt_pool 2>/dev/null || fail "the pool resumed on a smaller metadata device"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	kmsg_since | grep -q "$LOG_PFX: .*metadata device (256 blocks) too small: expected 512" ||
		fail "no 'metadata device (256 blocks) too small: expected 512' in the kernel log"
	dmsetup reload rt_meta --table "0 4096 linear $base 0"
	dmsetup resume rt_meta
	dmsetup resume rt_pool
	[ "$(status_field rt_pool 5)" = rw ] || fail "pool mode $(status_field rt_pool 5) after growing back"
	same rt_thin 0 $((8 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
	dmsetup create rt_pool --table "$(pool_table "" "" thin-pool)"
	echo "upstream: $(dmsetup status rt_pool | cut -d' ' -f4-)"
	[ "$(status_field rt_pool 2 | cut -d/ -f2)" = 512 ] || fail "upstream: metadata total $(status_field rt_pool 2)"
	make_thin rt_thin 0 rt_pool thin
	same rt_thin 0 $((8 * BB))
}

# status_round BLOCK FLAGS: write BLOCK of a fresh thin (no flush), ask for the pool's status
# with FLAGS, then cut every later metadata write and tear down; print thin_dump's device line.
status_round() {
	meta_on_linear
	# One whole-block direct write from a file (dd given a short block from a pipe ends with
	# an fdatasync, which commits).
	head -c $BB /dev/urandom >"$TMP/blk"
	dd if="$TMP/blk" of=/dev/mapper/rt_thin bs=$BB seek="$1" oflag=direct status=none
	dmsetup status $2 rt_pool >/dev/null
	dmsetup resume rt_meta
	teardown_meta_on_linear
	check_meta
	dump_summary
}

# Item 3, "an INFO status commits first, as dm-thin": after a status the mapping of a block
# just written is on disk, with no flush and no periodic commit (rthin's are off); a status
# with --noflush commits nothing (checked on rthin only: upstream's periodic commit may).
t_status_commits() {
	load_targets
	kmod dm-flakey
	no_periodic_commits
	local got
	got=$(status_round 5 "")
	echo "after a status: $got"
	[ "$got" = "device 0 mapped_blocks=1 counted=1 blocks=5" ] || fail "the status did not commit the new mapping"
	got=$(status_round 6 --noflush)
	echo "after a status --noflush: $got"
	upstream && return 0
	[ "$got" = "device 0 mapped_blocks=0 counted=0 blocks=-" ] || fail "the --noflush status committed"
}

# Item 3, "a pool whose on-disk superblock has needs_check set opens read-only until
# repaired": with the flag set on disk, the pool activates read-only (messages refused, no
# new blocks, mapped data still read back; a longer table is taken without growing the
# data space), with dm-thin's log lines; once thin_check clears the flag, it is writable.
t_needs_check_read_only() {
	load_targets
	make_pool $((DATA_SECTORS / 2))
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $((2 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	python3 "$here/sb_flags.py" "$META_DEV" set 1 >/dev/null
	thin_check "$META_DEV" >/dev/null 2>&1 || echo "thin_check: fails on the flagged metadata"
	kmsg_mark
	dmsetup create rt_pool --table "$(pool_table $((DATA_SECTORS / 2)))"
	echo "pool: $(dmsetup status rt_pool)"
	[ "$(dmsetup status rt_pool | cut -d' ' -f8-)" = "ro discard_passdown queue_if_no_space needs_check 1024 " ] ||
		fail "the pool is not read-only with needs_check"
	! msg create_thin 1 2>/dev/null || fail "a message was served"
	make_thin rt_thin 0
	same rt_thin 0 $((4 * BB))
	! dd if=/dev/urandom of=/dev/mapper/rt_thin bs=4096 count=1 seek=$((8 * BB / 4096)) oflag=direct status=none 2>/dev/null ||
		fail "a write to an unprovisioned block succeeded"
	put rt_thin $BB 4096                            # a mapped block: still writable
	same rt_thin 0 $((4 * BB))
	dmsetup reload rt_pool --table "$(pool_table)"
	dmsetup resume rt_pool
	[ "$(status_field rt_pool 3)" = "2/$((NR_BLOCKS / 2))" ] || fail "data space $(status_field rt_pool 3)"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	for want in "unable to switch pool to write mode until repaired." "switching pool to read-only mode" \
		"unable to grow the data device until repaired."; do
		kmsg_since | grep -q "$LOG_PFX: .*$want" || fail "no '$want' in the kernel log"
	done
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	thin_check --clear-needs-check-flag "$META_DEV"
	[ "$(python3 "$here/sb_flags.py" "$META_DEV")" = 0 ] || fail "thin_check left the flag set"
	dmsetup create rt_pool --table "$(pool_table)"
	echo "repaired: $(dmsetup status rt_pool)"
	[ "$(dmsetup status rt_pool | cut -d' ' -f8-)" = "rw discard_passdown queue_if_no_space - 1024 " ] ||
		fail "the repaired pool is not writable"
	make_thin rt_thin 0
	put rt_thin $((8 * BB)) 4096
	same rt_thin 0 $((16 * BB))
}

# Item 4, "discards in read-only mode complete as no-ops (not EIO)": with the pool's table
# reloaded read_only, a discard of mapped blocks succeeds and unmaps nothing.
t_read_only_discard() {
	load_targets
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $((4 * BB))
	dmsetup suspend rt_pool
	dmsetup reload rt_pool --table "$(pool_table "" "1 read_only")"
	dmsetup resume rt_pool
	[ "$(status_field rt_pool 5)" = ro ] || fail "pool mode $(status_field rt_pool 5), not ro"
	blkdiscard -o 0 -l $((2 * BB)) /dev/mapper/rt_thin || fail "a discard in read-only mode failed"
	expect_mapped rt_thin 4 3
	same rt_thin 0 $((8 * BB))
}

# reload_refused TABLE MESSAGE: reloading rt_pool with TABLE fails with MESSAGE in the log.
reload_refused() {
	kmsg_mark
	if dmsetup reload rt_pool --table "$1" 2>/dev/null; then
		fail "reload with '$1' accepted"
		return 1
	fi
	echo "'$1': $(kmsg_since | grep -m1 'device-mapper: table')"
	kmsg_since | grep -q "$POOL_TGT: $2" || { fail "no '$2' in the kernel log"; return 1; }
}

# Item 4, "ignore_discard cannot change after the first table load": a reload that turns
# discards off or on is refused, with dm-thin's message; one that keeps them is taken.
t_ignore_discard_fixed() {
	load_targets
	make_pool "" "1 ignore_discard"
	reload_refused "$(pool_table "")" "Discard support cannot be disabled once enabled"
	dmsetup reload rt_pool --table "$(pool_table "" "2 ignore_discard skip_block_zeroing")"
	dmsetup resume rt_pool
	[ "$(status_field rt_pool 6)" = ignore_discard ] || fail "status says $(status_field rt_pool 6)"
	dmsetup remove rt_pool
	make_pool
	reload_refused "$(pool_table "" "1 ignore_discard")" "Discard support cannot be disabled once enabled"
	dmsetup reload rt_pool --table "$(pool_table "" "1 no_discard_passdown")"
	dmsetup resume rt_pool
	[ "$(status_field rt_pool 6)" = no_discard_passdown ] || fail "status says $(status_field rt_pool 6)"
}

# Item 4, "thins keep discard support when the data device has none": over a data device
# without discards (null_blk) a thin still takes them and unmaps, while the pool turns
# passdown off and says so.
t_thin_discard_without_data_discard() {
	load_targets
	null_data
	echo "data device: discard_max_bytes=$(cat /sys/block/nullb0/queue/discard_max_bytes)"
	kmsg_mark
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $((4 * BB))
	echo "pool: $(dmsetup status rt_pool); thin: $(queue_attrs rt_thin)"
	blkdiscard -o $BB -l $((2 * BB)) /dev/mapper/rt_thin || fail "the thin refused a discard"
	zero_model rt_thin $BB $((2 * BB))
	expect_mapped rt_thin 2 3
	same rt_thin 0 $((8 * BB))
	[ "$(status_field rt_pool 6)" = no_discard_passdown ] || fail "status says $(status_field rt_pool 6)"
	kmsg_since | grep -q "$LOG_PFX: Data device (.*) discard unsupported: Disabling discard passdown." ||
		fail "no warning that passdown is off"
}

# tmpfs_data MIB: from here on the data device is a loop device over a file of MIB MiB on a
# tmpfs of its own. It takes discards by punching holes in the file, so the blocks discarded
# on the data device are those whose bytes became holes (data_blocks); its discards are
# counted in its stat (discard_sectors).
tmpfs_data() {
	mkdir -p "$TMP/tmpfs"
	mount -t tmpfs -o size=$(($1 + 1))M rt_tmpfs "$TMP/tmpfs"
	truncate -s "${1}M" "$TMP/tmpfs/data"
	DATA_FILE=$TMP/tmpfs/data
	DATA_DEV=$(losetup --find --show "$DATA_FILE")
	DATA_LOOP=$DATA_DEV
	DATA_SECTORS=$(sectors "$DATA_DEV")
	trap 'cleanup_dm; losetup -d "$DATA_LOOP"; umount "$TMP/tmpfs"' EXIT
}
# data_blocks: the data blocks (of BB bytes) of the tmpfs data file holding any data.
data_blocks() {
	python3 - "$DATA_FILE" "$BB" <<'PY'
import os, sys
fd, bb = os.open(sys.argv[1], os.O_RDONLY), int(sys.argv[2])
size, off, out = os.fstat(fd).st_size, 0, set()
while off < size:
    try:
        d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    out.update(range(d // bb, (h - 1) // bb + 1))
    off = h
print(*sorted(out))
PY
}
# discard_sectors DEV: sectors discarded on DEV (a whole disk) since it was made, from its stat.
discard_sectors() { awk '{print $14}' "/sys/block/$(basename "$1")/stat"; }
# mapped_data_blocks [METADATA]: the data blocks thin_dump shows mapped by any device.
mapped_data_blocks() {
	thin_dump "${1:-$META_DEV}" | python3 -c '
import sys, xml.etree.ElementTree as ET
out = set()
for m in ET.parse(sys.stdin).getroot().iter():
    if m.tag == "range_mapping":
        b = int(m.get("data_begin"))
        out.update(range(b, b + int(m.get("length"))))
    elif m.tag == "single_mapping":
        out.add(int(m.get("data_block")))
print(*sorted(out))
'
}
# minus "A" "B": the words of A that are not in B.
minus() { comm -23 <(tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort) <(tr ' ' '\n' <<<"$2" | sed '/^$/d' | sort) | sort -n | xargs; }

# Item 4, "discard passdown": a thin holds blocks 0-9, shares 0-7 with a snapshot and has its
# own copies of 4-5 (written after the snapshot) and 8-9. Discarding its blocks 0-15 frees
# exactly those four data blocks: with passdown they, and nothing else, are discarded on the
# data device (holes in the tmpfs file, the data device's discard count), while the blocks
# the snapshot still holds keep their data; with no_discard_passdown nothing reaches it. The
# thin's discard unmaps in both cases, and the metadata checks out. Old rthin never
# discarded on the data device.
t_discard_passdown() {
	load_targets
	tmpfs_data 8
	local feat before after freed gone sectors0 sectors
	for feat in "" "1 no_discard_passdown"; do
		blkdiscard "$DATA_DEV"
		make_pool $((64 * BS)) "$feat"
		msg create_thin 0
		make_thin rt_thin 0
		model_new rt_thin
		put rt_thin 0 $((8 * BB))               # blocks 0-7
		dmsetup suspend rt_thin
		msg create_snap 1 0
		dmsetup resume rt_thin
		put rt_thin $((4 * BB)) $((2 * BB))     # blocks 4-5: the snapshot keeps the old ones
		put rt_thin $((8 * BB)) $((2 * BB))     # blocks 8-9
		before=$(data_blocks)
		sectors0=$(discard_sectors "$DATA_DEV")
		blkdiscard -o 0 -l $((16 * BB)) /dev/mapper/rt_thin
		zero_model rt_thin 0 $((16 * BB))
		after=$(data_blocks)
		sectors=$(($(discard_sectors "$DATA_DEV") - sectors0))
		echo "features '$feat': pool $(dmsetup status rt_pool | cut -d' ' -f4-)"
		expect_mapped rt_thin 0
		same rt_thin 0 $((16 * BB))
		dmsetup remove rt_thin
		dmsetup remove rt_pool
		check_meta
		freed=$(minus "$before" "$(mapped_data_blocks)")
		gone=$(minus "$before" "$after")
		echo "  data blocks with data before: [$before], after: [$after]; freed: [$freed];" \
			"discarded: [$gone], $sectors sectors"
		[ "$(wc -w <<<"$before")" = 12 ] || fail "not 12 data blocks written"
		[ "$(wc -w <<<"$freed")" = 4 ] || fail "not 4 data blocks freed"
		if [ -z "$feat" ]; then
			[ "$gone" = "$freed" ] || fail "discarded on the data device: [$gone], freed: [$freed]"
			[ "$sectors" = $((4 * BS)) ] || fail "$sectors sectors discarded on the data device, not $((4 * BS))"
		else
			[ -z "$gone" ] && [ "$sectors" = 0 ] || fail "no_discard_passdown: blocks [$gone] ($sectors sectors) discarded"
		fi
	done
}

# Item 4, "discard passdown", with the data device slow: a discarded block is not free (nor
# given to another write) until its discard on the data device has completed, and the thin's
# discard completes after it. In a full pool of 16 blocks on a dm-delay that holds writes
# (the passdown too) for 4 s, one block of the thin is discarded; while its passdown is
# held, a write needing a new block waits, the pool out of data space; once the passdown is
# done the discard completes, the write gets the freed block and its data reads back, and
# the discarded block reads zeros. (With the block freed at once, the write would be given
# it while its discard was still on the way to the disk.) Old rthin passed nothing down.
t_discard_passdown_in_flight() {
	load_targets
	tmpfs_data 4
	delayed_data 0
	local loop=$DATA_LOOP dpid i seen=
	full_pool 16
	expect_used 16
	dmsetup reload "${DATA_DEV#/dev/mapper/}" --table "0 $DATA_SECTORS delay $loop 0 0 $loop 0 4000 $loop 0 0"
	dmsetup resume "${DATA_DEV#/dev/mapper/}"
	blkdiscard -f -o $((5 * BB)) -l $BB /dev/mapper/rt_thin &
	dpid=$!
	for i in $(seq 100); do
		# dm-delay's status counts the writes it holds (its IO accounting does not).
		[ "$(dmsetup status "${DATA_DEV#/dev/mapper/}" | awk '{print $5}')" -gt 0 ] && { seen=1; break; }
		kill -0 $dpid 2>/dev/null || break
		sleep 0.05
	done
	[ -n "$seen" ] || fail "no discard reached the data device"
	kill -0 $dpid 2>/dev/null || fail "the discard completed before its passdown"
	held_write 20
	wait_mode out_of_data_space
	expect_pending "while the passdown of the only block to be freed was held"
	kill -0 $dpid 2>/dev/null || fail "the discard completed before its passdown"
	echo "passdown held: $(dmsetup status rt_pool | cut -d' ' -f4-)"
	wait $dpid || fail "the discard failed"
	for i in $(seq 150); do
		kill -0 "$held_pid" 2>/dev/null || break
		upstream && dmsetup status rt_pool >/dev/null   # (upstream leaves the mode at a commit)
		sleep 0.2
	done
	held_done 20
	zero_model rt_thin $((5 * BB)) $BB
	wait_mode rw
	echo "after: $(dmsetup status rt_pool | cut -d' ' -f4-)"
	expect_used 16
	same rt_thin 0 $((32 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
}

# events NAME: the event counter of NAME; wait_event NAME N: wait (at most 10 s) until it
# goes past N.
events() { dmsetup info -c --noheadings -o events "$1"; }
wait_event() { timeout 10 dmsetup wait "$1" "$2" >/dev/null; }

# Item 2, "events where dm-thin raises them": crossing the data low water mark (32 blocks of
# a 64-block pool), crossing the metadata low water mark (32 of 128 metadata blocks) and a
# pool mode change (a read_only reload) each raise an event on the pool (its event counter,
# which `dmsetup wait` and dmeventd watch), with dm-thin's log lines.
t_events() {
	load_targets
	local ev n=1
	small_meta 1024
	dmsetup create rt_pool --table "$(pool_table $((64 * BS)))"
	msg create_thin 0
	make_thin rt_thin 0
	ev=$(events rt_pool)
	kmsg_mark
	dd if=/dev/urandom of=/dev/mapper/rt_thin bs=$BB count=40 oflag=direct status=none
	wait_event rt_pool "$ev" || fail "no event when the data low water mark was crossed"
	echo "data: events $ev -> $(events rt_pool); pool: $(dmsetup status rt_pool)"
	kmsg_since | grep -q "$LOG_PFX: .*reached low water mark for data device: sending event." ||
		fail "no data low water mark warning"
	ev=$(events rt_pool)
	kmsg_mark
	while [ "$(events rt_pool)" = "$ev" ] && [ $n -lt 100 ] && msg create_thin $n; do n=$((n + 1)); done
	echo "metadata: events $ev -> $(events rt_pool) after $n thin devices; pool: $(dmsetup status rt_pool)"
	[ "$(events rt_pool)" != "$ev" ] || fail "no event when the metadata low water mark was crossed"
	kmsg_since | grep -q "$LOG_PFX: .*reached low water mark for metadata device: sending event." ||
		fail "no metadata low water mark warning"
	[ "$(status_field rt_pool 5)" = rw ] || fail "the event came with mode $(status_field rt_pool 5)"
	ev=$(events rt_pool)
	dmsetup suspend rt_pool
	dmsetup reload rt_pool --table "$(pool_table $((64 * BS)) "1 read_only")"
	dmsetup resume rt_pool
	wait_event rt_pool "$ev" || fail "no event when the pool went read-only"
	echo "read-only: events $ev -> $(events rt_pool)"
}

# nst_param: the no_space_timeout module parameter of the pool target under test.
nst_param() {
	if upstream; then
		echo /sys/module/dm_thin_pool/parameters/no_space_timeout
	else
		echo /sys/module/rthin/parameters/no_space_timeout
	fi
}

# set_no_space_timeout SECS [optional]: held writes fail after SECS (0: never) for the rest of
# the test; the old value comes back when it ends. (Never 0 here: a test that fails with a
# write held would leave its cleanup waiting forever for that write.) With "optional", a
# target without the parameter is no failure here: the test goes on to the behaviour it
# checks (so that, on a module without queueing, it fails on that behaviour).
set_no_space_timeout() {
	local p
	p=$(nst_param)
	if [ ! -w "$p" ]; then
		[ "${2:-}" = optional ] && { echo "# no $p"; return 0; }
		fail "no $p"
		return 1
	fi
	_nst_old=$(cat "$p")
	echo "$1" >"$p"
	trap 'echo "$_nst_old" >"$(nst_param)"' EXIT
}

# wait_mode MODE: wait (at most 10 s) until rt_pool's status says MODE.
wait_mode() {
	local i
	for i in $(seq 100); do
		[ "$(status_field rt_pool 5)" = "$1" ] && return 0
		sleep 0.1
	done
	fail "pool mode $(status_field rt_pool 5), not $1 after 10 s: $(dmsetup status rt_pool)"
}

# full_pool BLOCKS: rt_pool of BLOCKS data blocks and its thin rt_thin (id 0), whose blocks
# 0..BLOCKS-1 are written: no block is free.
full_pool() {
	make_pool $(($1 * BS))
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $(($1 * BB))
}

# held_write BLOCK: start writing one random block at BLOCK of rt_thin (direct IO) in the
# background, its process in held_pid; held_done BLOCK: it succeeded, and rt_thin's model
# has its data. The write is one pwrite, with no lseek: Linux 6.12's lseek of a block device
# takes its inode lock, which a BLKDISCARD holds until the discard completes, so a `dd
# seek=` would wait for a blkdiscard of the same device before its write reached the pool
# (in discard_passdown_in_flight, it waited for the passdown and never found the pool full).
held_write() {
	head -c $BB /dev/urandom >"$TMP/held.$1"
	python3 - /dev/mapper/rt_thin "$TMP/held.$1" $(($1 * BB)) 2>"$TMP/held.$1.err" <<'PY' &
import mmap, os, sys
data = open(sys.argv[2], "rb").read()
buf = mmap.mmap(-1, len(data))              # page-aligned, as O_DIRECT needs
buf.write(data)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
try:
    n = os.pwritev(fd, [buf], int(sys.argv[3]))
except OSError as e:
    sys.exit("write of %s: %s" % (sys.argv[1], e.strerror))
if n != len(data):
    sys.exit("short write of %s: %d bytes" % (sys.argv[1], n))
PY
	held_pid=$!
}
held_done() {
	wait "$held_pid" || { cat "$TMP/held.$1.err"; fail "the held write of block $1 failed"; return 1; }
	dd if="$TMP/held.$1" of="$TMP/rt_thin.model" bs=$BB seek="$1" conv=notrunc status=none
}
# expect_pending: the write held_write started has not completed (yet).
expect_pending() {
	kill -0 "$held_pid" 2>/dev/null || { cat "$TMP"/held.*.err; fail "the write needing a block did not wait: $1"; }
}

# Item 1, "out of data space: writes are held, not failed" (queue_if_no_space, the default):
# in a full pool, a write that needs a block waits; the pool says out_of_data_space and raises
# an event; mapped blocks are read and overwritten meanwhile; a noflush suspend of the thin
# (LVM's) completes, and the write is still held after it; growing the pool (a reload with a
# longer table and a resume, as lvextend) completes the write, its data reads back, and the
# pool is rw again. Old rthin failed the write at once with ENOSPC.
t_no_space_queue() {
	load_targets
	set_no_space_timeout 60 optional
	full_pool 16
	local ev
	ev=$(events rt_pool)
	kmsg_mark
	held_write 20
	wait_event rt_pool "$ev" || fail "no event when the pool ran out of data space"
	wait_mode out_of_data_space
	sleep 2
	expect_pending "after 2 s"
	echo "full: $(dmsetup status rt_pool); events $ev -> $(events rt_pool)"
	[ "$(status_field rt_pool 7)" = queue_if_no_space ] || fail "status says $(status_field rt_pool 7)"
	kmsg_since | grep -q "$LOG_PFX: .*switching pool to out-of-data-space (queue IO) mode" ||
		fail "no 'switching pool to out-of-data-space (queue IO) mode' in the kernel log"
	put rt_thin $((3 * BB + 4096)) 4096             # a mapped block: still writable
	same rt_thin 0 $((32 * BB))                     # mapped blocks read back, others zeros
	timeout 20 dmsetup suspend --noflush rt_thin || fail "a noflush suspend of the thin did not complete"
	dmsetup resume rt_thin
	sleep 1
	expect_pending "after a noflush suspend of the thin"
	ev=$(events rt_pool)
	dmsetup reload rt_pool --table "$(pool_table $((32 * BS)))"
	dmsetup resume rt_pool
	held_done 20
	wait_mode rw
	echo "grown: $(dmsetup status rt_pool); events $ev -> $(events rt_pool)"
	[ "$(status_field rt_pool 3)" = 17/32 ] || fail "data usage $(status_field rt_pool 3), not 17/32"
	[ "$(events rt_pool)" -gt "$ev" ] || fail "no event when the pool grew"
	same rt_thin 0 $((32 * BB))
	expect_mapped rt_thin 17 20
}

# Item 1, "held IO fails after no_space_timeout": with the module parameter at 3 s, a write
# held in a full pool fails with ENOSPC after about 3 s; the pool then says error_if_no_space
# (as dm-thin, still out_of_data_space) and fails the next such write at once; growing the
# pool brings back rw and queue_if_no_space. Old rthin failed the write at once.
t_no_space_timeout() {
	load_targets
	set_no_space_timeout 3
	full_pool 16
	local ev t0 took
	ev=$(events rt_pool)
	kmsg_mark
	head -c $BB /dev/urandom >"$TMP/blk"
	t0=$SECONDS
	! timeout 60 dd if="$TMP/blk" of=/dev/mapper/rt_thin bs=$BB seek=20 oflag=direct status=none 2>"$TMP/dd.err" ||
		fail "a write needing a block succeeded in a full pool"
	took=$((SECONDS - t0))
	echo "failed after $took s: $(cat "$TMP/dd.err"); pool: $(dmsetup status rt_pool); events $ev -> $(events rt_pool)"
	grep -q "No space left on device" "$TMP/dd.err" || fail "the write did not fail with ENOSPC"
	[ "$took" -ge 2 ] && [ "$took" -le 20 ] || fail "the write failed after $took s, not after about 3 s"
	[ "$(status_field rt_pool 5)" = out_of_data_space ] || fail "pool mode $(status_field rt_pool 5)"
	[ "$(status_field rt_pool 7)" = error_if_no_space ] || fail "status says $(status_field rt_pool 7)"
	[ "$(events rt_pool)" -ge $((ev + 2)) ] || fail "not two events (out of space, timeout): $ev -> $(events rt_pool)"
	kmsg_since | grep -q "$LOG_PFX: .*switching pool to out-of-data-space (error IO) mode" ||
		fail "no 'switching pool to out-of-data-space (error IO) mode' in the kernel log"
	t0=$SECONDS
	! timeout 60 dd if="$TMP/blk" of=/dev/mapper/rt_thin bs=$BB seek=21 oflag=direct status=none 2>"$TMP/dd.err" ||
		fail "a write needing a block succeeded in a full pool"
	took=$((SECONDS - t0))
	[ "$took" -le 2 ] || fail "after the timeout, a write still waited $took s"
	dmsetup reload rt_pool --table "$(pool_table $((32 * BS)))"
	dmsetup resume rt_pool
	wait_mode rw
	echo "grown: $(dmsetup status rt_pool)"
	[ "$(status_field rt_pool 7)" = queue_if_no_space ] || fail "status says $(status_field rt_pool 7) after growing"
	put rt_thin $((20 * BB)) $BB
	same rt_thin 0 $((32 * BB))
}

# Item 1, "when no block is free, commit first and retry": in a full pool whose last commit
# counts every block in use, blocks discarded since (not committed; rthin's periodic commits
# are off) are given to new writes, which succeed. rthin commits and allocates again at once,
# and never goes out of data space (checked on rthin only). Upstream counts blocks freed in
# the open transaction as free, so it does not commit first: it goes out of data space and
# holds the writes until the next commit, which a status makes (polled here; its periodic
# commit was not seen to do it). Old rthin failed the writes with ENOSPC.
t_no_space_commit_retry() {
	load_targets
	no_periodic_commits
	full_pool 16
	expect_used 16                                  # (an INFO status commits, as dm-thin's)
	blkdiscard -o $((4 * BB)) -l $((4 * BB)) /dev/mapper/rt_thin
	zero_model rt_thin $((4 * BB)) $((4 * BB))
	head -c $((4 * BB)) /dev/urandom >"$TMP/new"
	kmsg_mark
	dd if="$TMP/new" of=/dev/mapper/rt_thin bs=$BB seek=20 oflag=direct status=none 2>"$TMP/dd.err" &
	local pid=$! i
	for i in $(seq 150); do
		kill -0 $pid 2>/dev/null || break
		upstream && dmsetup status rt_pool >/dev/null
		sleep 0.2
	done
	wait $pid || { cat "$TMP/dd.err"; fail "writing 4 blocks in place of 4 discarded ones failed"; return 1; }
	dd if="$TMP/new" of="$TMP/rt_thin.model" bs=$BB seek=20 conv=notrunc status=none
	echo "pool: $(dmsetup status rt_pool)"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	wait_mode rw
	expect_used 16
	same rt_thin 0 $((32 * BB))
	upstream && return 0
	! kmsg_since | grep -q "out-of-data-space" || fail "rthin went out of data space instead of committing"
}

# Item 1, "out_of_data_space clears when space returns by discards and deletes": a write
# held in a full pool completes, and the pool is rw again, once a thin device is deleted
# (the message commits), and again once blocks are discarded (the next commit: a status).
t_no_space_delete_discard() {
	load_targets
	set_no_space_timeout 30 optional
	make_pool $((16 * BS))
	msg create_thin 0
	msg create_thin 1
	make_thin rt_thin 0
	make_thin rt_thin1 1
	model_new rt_thin
	put rt_thin 0 $((8 * BB))                       # blocks 0-7
	put rt_thin1 0 $((8 * BB))
	held_write 20
	wait_mode out_of_data_space
	expect_pending "in a full pool"
	dmsetup remove rt_thin1
	msg delete 1
	held_done 20
	wait_mode rw
	echo "after a delete: $(dmsetup status rt_pool)"
	put rt_thin $((24 * BB)) $((7 * BB))            # blocks 24-30: full again
	held_write 40
	wait_mode out_of_data_space
	expect_pending "in a full pool, again"
	blkdiscard -o 0 -l $((2 * BB)) /dev/mapper/rt_thin
	zero_model rt_thin 0 $((2 * BB))
	dmsetup status rt_pool >/dev/null
	held_done 40
	wait_mode rw
	echo "after a discard: $(dmsetup status rt_pool)"
	expect_used 15
	same rt_thin 0 $((64 * BB))
}

# ---- Item 5, external origins: `<pool dev> <dev id> <origin dev>`. ----

# The origin ends 37 sectors into block 20: its last block is partial.
ORIGIN_SECTORS=$((20 * BS + 37))

# make_origin [SECTORS]: rt_origin, a linear of SECTORS (default ORIGIN_SECTORS) over a
# ramdisk (brd, 16 MiB) filled with random data; ORIGIN is its path. $TMP/origin.model is
# what a thin over it reads where it maps nothing: the origin's data, then zeros.
make_origin() {
	kmod brd rd_nr=1 rd_size=16384
	trap 'cleanup_dm; rmmod brd' EXIT
	head -c $((16 << 20)) /dev/urandom | dd of=/dev/ram0 bs=1M iflag=fullblock oflag=direct status=none
	dmsetup create rt_origin --table "0 ${1:-$ORIGIN_SECTORS} linear /dev/ram0 0"
	ORIGIN=/dev/mapper/rt_origin
	origin_model
}
# origin_model: $TMP/origin.model again, from the origin as it is now.
origin_model() {
	dd if="$ORIGIN" of="$TMP/origin.model" bs=64K iflag=direct status=none
	truncate -s "$THIN_BYTES" "$TMP/origin.model"
}
# make_othin NAME ID [ORIGIN] [POOL] [TARGET]: activate thin ID over ORIGIN (default $ORIGIN)
# as NAME; its model starts as the origin's.
make_othin() {
	dmsetup create "$1" --table "0 $THIN_SECTORS ${5:-$THIN_TGT} /dev/mapper/${4:-rt_pool} $2 ${3:-$ORIGIN}"
	cp "$TMP/origin.model" "$TMP/$1.model"
}
# origin_thin [ORIGIN]: a fresh pool rt_pool, its thin 0 active over ORIGIN (default $ORIGIN)
# as rt_thin.
origin_thin() {
	make_pool
	msg create_thin 0
	make_othin rt_thin 0 "${1:-$ORIGIN}"
}
# origin_block NAME BLOCK: NAME's BLOCK should read the origin's data again.
origin_block() {
	dd if="$TMP/origin.model" of="$TMP/$1.model" bs=$BB skip="$2" seek="$2" count=1 conv=notrunc status=none
}
# same_at NAME OFFSET LEN: one read of LEN bytes at byte OFFSET of NAME (direct IO) gives
# what its model says.
same_at() {
	cmp <(dd if="/dev/mapper/$1" bs="$3" count=1 skip="$2" iflag=direct,skip_bytes status=none) \
		<(dd if="$TMP/$1.model" bs="$3" count=1 skip="$2" iflag=skip_bytes status=none) ||
		fail "$1: the read of $3 bytes at byte $2 differs from its model"
}
origin_sum() { dd if="$ORIGIN" bs=64K iflag=direct status=none | sha256sum | cut -d' ' -f1; }
# stale_data: the data device's first 32 MiB hold non-zero junk, so that a new block whose
# rest is neither copied nor zeroed reads back as junk, not zeros.
stale_data() {
	yes "stale data of a block never zeroed" | head -c $((32 << 20)) |
		dd of="$DATA_DEV" bs=1M iflag=fullblock oflag=direct status=none
}

# Item 5, "reads of unprovisioned blocks come from the origin device": a thin over a
# patterned origin whose size is not a multiple of the block size reads the origin's data
# where it maps nothing, and zeros past the origin's end: whole-block reads (the block where
# the origin ends is half origin, half zeros), a 4 KiB read across the end, one sector each
# side of it, 1 MiB across many blocks; reads provision nothing. Once the origin grows (a
# reload of it), a suspend and resume of the thin makes the new part read through, as
# dm-thin reads the origin's size on resume. Old rthin refused the table line.
t_external_origin_read() {
	load_targets
	make_origin
	origin_thin
	same rt_thin 0 $((24 * BB))
	same_at rt_thin $(((ORIGIN_SECTORS - 5) * 512)) 4096
	same_at rt_thin $(((ORIGIN_SECTORS - 1) * 512)) 512
	same_at rt_thin $((ORIGIN_SECTORS * 512)) 512
	same_at rt_thin $((19 * BB)) $((1 << 20))
	same_at rt_thin $((3 * BB + 1024)) 8192
	cmp -n $((ORIGIN_SECTORS * 512)) /dev/mapper/rt_origin "$TMP/rt_thin.model" || fail "the model is not the origin"
	expect_mapped rt_thin 0
	expect_used 0
	dmsetup reload rt_origin --table "0 $((ORIGIN_SECTORS + 3 * BS)) linear /dev/ram0 0"
	dmsetup resume rt_origin
	dmsetup suspend rt_thin
	dmsetup resume rt_thin
	origin_model
	cp "$TMP/origin.model" "$TMP/rt_thin.model"
	same rt_thin $((19 * BB)) $((8 * BB))
	same_at rt_thin $(((ORIGIN_SECTORS + 3 * BS - 1) * 512)) 4096
	expect_mapped rt_thin 0
}

# Item 5, "the first write copies from the origin": writes to unprovisioned blocks of a
# thin over an origin keep the rest of the block's origin data (4 KiB inside a block, the
# first and last sector of another), a whole-block write reads back, a write into the block
# where the origin ends keeps the origin's part and reads zeros after it (the data device
# holds junk there), and one past the origin's end reads zeros around it. A discard of a
# provisioned block makes it read the origin again; one of an unprovisioned block changes
# nothing. The origin (set read-only) is never written: its checksum is the same after, and
# the kernel log has no write to a read-only device.
t_external_origin_write() {
	load_targets
	make_origin
	stale_data
	origin_thin
	local sum
	sum=$(origin_sum)
	blockdev --setro "$ORIGIN"
	kmsg_mark
	put rt_thin $((2 * BB + 8192)) 4096             # block 2: 4 KiB inside it
	put rt_thin $((3 * BB)) 512                     # block 3: its first sector,
	put rt_thin $((4 * BB - 512)) 512               #   then its last
	put rt_thin $((5 * BB)) $BB                     # block 5: whole
	put rt_thin $((20 * BB + 4096)) 4096            # block 20: inside the origin's 37 sectors
	put rt_thin $((21 * BB + 8192)) 4096            # block 21: past the origin's end
	same rt_thin 0 $((24 * BB))
	expect_mapped rt_thin 5 21
	blkdiscard -o $((2 * BB)) -l $BB /dev/mapper/rt_thin
	origin_block rt_thin 2
	blkdiscard -o $((7 * BB)) -l $BB /dev/mapper/rt_thin
	same rt_thin 0 $((24 * BB))
	expect_mapped rt_thin 4 21
	put rt_thin $((2 * BB + 512)) 1024              # block 2 again: a new copy of the origin's
	same rt_thin 0 $((24 * BB))
	sync_dev rt_thin
	blockdev --setrw "$ORIGIN"
	[ "$(origin_sum)" = "$sum" ] || fail "the origin changed"
	! kmsg_since | grep -i "read-only block-device" || fail "a write went to the read-only origin"
}

# Item 5, "the first write copies from the origin", without zeroing and with FUA: in a pool
# with skip_block_zeroing, a write to an unprovisioned block the origin covers still copies
# the origin's block (as dm-thin's: a copy is not a zeroing), and in the block where the
# origin ends, the origin's part (the rest holds what the data device held: not checked);
# a FUA write (O_SYNC direct IO) to an unprovisioned block keeps the origin's data too.
t_external_origin_skip_zeroing() {
	load_targets
	make_origin
	stale_data
	make_pool "" "1 skip_block_zeroing"
	msg create_thin 0
	make_othin rt_thin 0
	put rt_thin $((2 * BB + 8192)) 4096
	put rt_thin $((20 * BB + 4096)) 4096
	same rt_thin $((2 * BB)) $BB
	same rt_thin $((20 * BB)) $((37 * 512))
	head -c 4096 /dev/urandom >"$TMP/w"
	dd if="$TMP/w" of=/dev/mapper/rt_thin bs=4096 seek=$((6 * BB / 4096 + 1)) oflag=direct,sync status=none
	dd if="$TMP/w" of="$TMP/rt_thin.model" bs=4096 seek=$((6 * BB / 4096 + 1)) conv=notrunc status=none
	same rt_thin $((6 * BB)) $BB
	same rt_thin $((21 * BB)) $((3 * BB))
	expect_mapped rt_thin 3 20
}

# Item 5, "snapshots share the origin": a snapshot of a thin over an external origin, active
# over the same origin, reads the origin where neither maps a block and the thin's data where
# the thin wrote before the snapshot (in the block where the origin ends, too). After writes
# to each (breaking the sharing of a shared block, and copying unprovisioned blocks from the
# origin, and past its end), each reads back its own data, and the origin is unchanged.
t_external_origin_snapshot() {
	load_targets
	make_origin
	stale_data
	origin_thin
	local sum
	sum=$(origin_sum)
	put rt_thin $((BB + 4096)) 4096
	put rt_thin $((20 * BB)) 4096
	dmsetup suspend rt_thin
	msg create_snap 1 0
	dmsetup resume rt_thin
	make_othin rt_snap 1
	cp "$TMP/rt_thin.model" "$TMP/rt_snap.model"
	same rt_snap 0 $((24 * BB))
	put rt_thin $BB 4096                            # shared block 1: the thin breaks sharing
	put rt_snap $((BB + 8192)) 4096                 #   and the snapshot writes its own
	put rt_snap $((20 * BB + 16384)) 4096           # shared block 20: the snapshot breaks it
	put rt_thin $((4 * BB + 512)) 1024              # block 4, in neither: copied for each
	put rt_snap $((4 * BB + 4096)) 4096
	put rt_snap $((21 * BB)) 4096                   # block 21: past the origin's end
	same rt_thin 0 $((24 * BB))
	same rt_snap 0 $((24 * BB))
	expect_mapped rt_thin 3 20
	expect_mapped rt_snap 4 21
	[ "$(origin_sum)" = "$sum" ] || fail "the origin changed"
}

# Item 5, "data survives": what thin devices over an origin wrote (copies of origin blocks,
# the block where the origin ends, whole blocks, blocks past the end) reads back after the
# pool is taken down and activated again, its metadata checks out; and on rthin, upstream
# dm-thin's targets read the same from the same metadata and origin.
t_external_origin_persistence() {
	load_targets
	make_origin
	stale_data
	origin_thin
	put rt_thin 4096 4096
	put rt_thin $((8 * BB)) $BB
	put rt_thin $((20 * BB + 20480)) 4096
	put rt_thin $((30 * BB + 512)) 512
	same rt_thin 0 $((32 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
	expect_dump "device 0 mapped_blocks=4 counted=4 blocks=0,8,20,30"
	dmsetup create rt_pool --table "$(pool_table)"
	dmsetup create rt_thin --table "0 $THIN_SECTORS $THIN_TGT /dev/mapper/rt_pool 0 $ORIGIN"
	same rt_thin 0 $((32 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	if upstream; then
		echo "cross-check with upstream skipped: upstream is the target under test"
		return 0
	fi
	dmsetup create rt_up --table "$(pool_table "" "" thin-pool)"
	dmsetup create rt_upthin --table "0 $THIN_SECTORS thin /dev/mapper/rt_up 0 $ORIGIN"
	same rt_upthin 0 $((32 * BB)) rt_thin
}

# Item 5, "the table line": a thin over an origin (by path or major:minor) is taken, its
# table names the origin as dm-thin's does (major:minor after the device id), and the origin
# is held open while the thin exists (its removal is refused) and released with it. Refused,
# with dm-thin's messages: the origin's path equal to the pool's, a missing origin, a fourth
# argument.
t_external_origin_table() {
	load_targets
	make_origin
	make_pool
	msg create_thin 0
	local p=/dev/mapper/rt_pool l="0 $THIN_SECTORS $THIN_TGT" want bad=0
	want="0 $THIN_SECTORS $THIN_TGT $(devno "$p") 0 $(devno "$ORIGIN")"
	make_othin rt_thin 0
	echo "table: $(dmsetup table rt_thin)"
	[ "$(dmsetup table rt_thin)" = "$want" ] || fail "table '$(dmsetup table rt_thin)', expected '$want'"
	! dmsetup remove rt_origin 2>/dev/null || fail "the origin was removed under the thin"
	dmsetup remove rt_thin
	make_othin rt_thin 0 "$(devno "$ORIGIN")"
	[ "$(dmsetup table rt_thin)" = "$want" ] || fail "by number: table '$(dmsetup table rt_thin)'"
	same rt_thin 0 $((24 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_origin || fail "the origin is still held after the thin's removal"
	ORIGIN=/dev/ram0
	expect_refused "$THIN_TGT" "$l $p 0 $p" "Error setting origin device" || bad=$((bad + 1))
	expect_refused "$THIN_TGT" "$l $p 0 /dev/mapper/rt_no_such_origin" "Error opening origin device" ||
		bad=$((bad + 1))
	expect_refused "$THIN_TGT" "$l $p 0 $ORIGIN 1" "Invalid argument count" || bad=$((bad + 1))
	[ $bad = 0 ] || fail "$bad tables not refused as dm-thin refuses them"
}

# now_ms: a clock in milliseconds.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Item 5, copies in flight: with the origin's reads held 3 s (dm-delay), a 4 KiB write to an
# unprovisioned block waits for its copy; a read of that block issued once the block is
# allocated (the copy in flight) reads either the origin's block or the origin's block with
# the write, never a half-copied or zeroed block; then the block reads as the model says. A
# whole-block write of another block is not held by the origin's delay (no copy, as
# dm-thin's overwrite), and reads back.
t_external_origin_copy_in_flight() {
	load_targets
	make_origin
	kmod dm-delay
	dmsetup create rt_odelay --table "0 $ORIGIN_SECTORS delay $ORIGIN 0 3000 $ORIGIN 0 0"
	stale_data
	origin_thin /dev/mapper/rt_odelay
	local pid t0 ms i got
	head -c 4096 /dev/urandom >"$TMP/w"
	dd if="$TMP/w" of=/dev/mapper/rt_thin bs=4096 seek=$((4 * BB / 4096 + 3)) oflag=direct status=none &
	pid=$!
	for i in $(seq 100); do [ "$(pool_used rt_pool --noflush)" = 1 ] && break; sleep 0.05; done
	[ "$(pool_used rt_pool --noflush)" = 1 ] || fail "no block allocated for the write"
	kill -0 $pid 2>/dev/null || fail "the write completed before its copy from the delayed origin could"
	dd if=/dev/mapper/rt_thin of="$TMP/r" bs=$BB skip=4 count=1 iflag=direct status=none
	wait $pid || fail "the write failed"
	dd if="$TMP/w" of="$TMP/rt_thin.model" bs=4096 seek=$((4 * BB / 4096 + 3)) conv=notrunc status=none
	if cmp -s "$TMP/r" <(dd if="$TMP/rt_thin.model" bs=$BB skip=4 count=1 status=none); then
		got="the origin's block with the write"
	elif cmp -s "$TMP/r" <(dd if="$TMP/origin.model" bs=$BB skip=4 count=1 status=none); then
		got="the origin's block"
	else
		fail "the read during the copy gave neither the origin's block nor it with the write"
	fi
	echo "the read during the copy gave $got"
	same rt_thin $((4 * BB)) $BB                    # (unprovisioned blocks read slowly)
	head -c $BB /dev/urandom >"$TMP/w"
	t0=$(now_ms)
	dd if="$TMP/w" of=/dev/mapper/rt_thin bs=$BB seek=6 oflag=direct status=none
	ms=$(($(now_ms) - t0))
	dd if="$TMP/w" of="$TMP/rt_thin.model" bs=$BB seek=6 conv=notrunc status=none
	echo "whole-block write: $ms ms"
	[ $ms -lt 2500 ] || fail "the whole-block write took $ms ms: it waited for a copy from the origin"
	same rt_thin $((4 * BB)) $BB
	same rt_thin $((6 * BB)) $BB
	expect_mapped rt_thin 2 6
}

tests=(
	parity_same_metadata_data_device:t_same_metadata_data_device
	parity_pool_io_hints:t_pool_io_hints
	parity_remapped_io_accounting:t_remapped_io_accounting
	parity_metadata_reserve:t_metadata_reserve
	parity_metadata_size_cap:t_metadata_size_cap
	parity_metadata_resize:t_metadata_resize
	parity_status_commits:t_status_commits
	parity_needs_check_read_only:t_needs_check_read_only
	parity_read_only_discard:t_read_only_discard
	parity_ignore_discard_fixed:t_ignore_discard_fixed
	parity_thin_discard_without_data_discard:t_thin_discard_without_data_discard
	parity_discard_passdown:t_discard_passdown
	parity_discard_passdown_in_flight:t_discard_passdown_in_flight
	parity_events:t_events
	parity_no_space_queue:t_no_space_queue
	parity_no_space_timeout:t_no_space_timeout
	parity_no_space_commit_retry:t_no_space_commit_retry
	parity_no_space_delete_discard:t_no_space_delete_discard
	parity_external_origin_read:t_external_origin_read
	parity_external_origin_write:t_external_origin_write
	parity_external_origin_skip_zeroing:t_external_origin_skip_zeroing
	parity_external_origin_snapshot:t_external_origin_snapshot
	parity_external_origin_persistence:t_external_origin_persistence
	parity_external_origin_table:t_external_origin_table
	parity_external_origin_copy_in_flight:t_external_origin_copy_in_flight
)
# Arguments: run only the tests so named.
if [ $# -gt 0 ]; then
	sel=()
	for t in "${tests[@]}"; do
		for a in "$@"; do [ "${t%%:*}" = "$a" ] && sel+=("$t"); done
	done
	tests=("${sel[@]}")
fi
run_suite "${tests[@]}"
