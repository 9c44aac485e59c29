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
# has its data.
held_write() {
	head -c $BB /dev/urandom >"$TMP/held.$1"
	dd if="$TMP/held.$1" of=/dev/mapper/rt_thin bs=$BB seek="$1" oflag=direct status=none 2>"$TMP/held.$1.err" &
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

tests=(
	parity_same_metadata_data_device:t_same_metadata_data_device
	parity_pool_io_hints:t_pool_io_hints
	parity_remapped_io_accounting:t_remapped_io_accounting
	parity_metadata_reserve:t_metadata_reserve
	parity_metadata_size_cap:t_metadata_size_cap
	parity_status_commits:t_status_commits
	parity_needs_check_read_only:t_needs_check_read_only
	parity_read_only_discard:t_read_only_discard
	parity_ignore_discard_fixed:t_ignore_discard_fixed
	parity_thin_discard_without_data_discard:t_thin_discard_without_data_discard
	parity_events:t_events
	parity_no_space_queue:t_no_space_queue
	parity_no_space_timeout:t_no_space_timeout
	parity_no_space_commit_retry:t_no_space_commit_retry
	parity_no_space_delete_discard:t_no_space_delete_discard
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
