#!/usr/bin/env bash
# thin IO-path selftests: each test reproduces one defect of the thin IO path found by the
# review in issue 8 ("The thin IO path: dm-thin's data guarantees, suspend semantics and pool
# lifetime"), named by its item number there, and checks dm-thin's behaviour instead. Where
# a defect needs a precise interleaving, the test makes it deterministic: dm-delay under the
# data or metadata device, dm-flakey cutting metadata writes, and rthin's commit_period_ms
# module parameter set to 0 so that no periodic commit hides a missing one.
#
# As thin.sh, the targets are parameters: POOL_TGT=thin-pool THIN_TGT=thin runs the suite on
# upstream dm-thin, the reference behaviour.
here=${here:-$(cd "$(dirname "$0")" && pwd)}
. "$here/lib.sh"        # (it changes into a scratch directory)
. "$here/thin_lib.sh"

# Item 1, "FUA before its mapping is committed": W1 provisions block 5 (its zeroing and its
# write held 4 s each by dm-delay); a FUA write W2 to the same block arrives meanwhile and
# waits in W1's cell. Block 5's mapping must be committed before W2 is served, however W2
# came back to the worker. W2 is served once block 5 is zeroed and mapped, and its own write
# is held 4 s too. The metadata writes are cut 1.5 s after the zeroing is done, with W2 in
# flight, so only a commit made before W2 was served reaches the disk. (A block device's
# O_DSYNC write is followed by an fsync at close, which would commit too, later: cutting the
# metadata first keeps that one off the disk.) The steps follow the devices, not the clock
# from the start: W2 starts once W1 holds its new block (a run on a loaded machine once let
# W2 come first and provision the block itself), and the cut is timed from the end of the
# zeroing, as the data device counts it.
t_fua_waits_in_cell() {
	load_targets
	kmod dm-flakey
	no_periodic_commits
	delayed_data 4000
	meta_on_linear
	echo 1 >"$(sysblk "$DATA_DEV")/queue/iostats"
	local p1 p2
	dd if=/dev/urandom of=/dev/mapper/rt_thin bs=4096 count=1 seek=$((5 * 16)) oflag=direct status=none &
	p1=$!
	await 30 "W1 to allocate block 5" eval '[ "$(pool_used rt_pool --noflush)" = 1 ]'
	dd if=/dev/urandom of=/dev/mapper/rt_thin bs=4096 count=1 seek=$((5 * 16 + 2)) oflag=direct,dsync status=none 2>/dev/null &
	p2=$!
	await 30 "block 5's zeroing" eval '[ "$(sectors_written "$DATA_DEV")" -ge $BS ]'
	sleep 1.5
	kill -0 $p2 2>/dev/null || fail "W2 was done 1.5 s after block 5 was zeroed: the test's timing does not hold"
	dmsetup resume rt_meta                          # no metadata write reaches the disk now
	echo "metadata writes cut with W2 in flight"
	wait $p1
	wait $p2 || echo "W2's fsync failed (metadata writes are cut)"
	teardown_meta_on_linear
	check_meta
	expect_dump "device 0 mapped_blocks=1 counted=1 blocks=5"
}

# Item 2, "A flush that succeeds after an abort threw away acknowledged writes": with the
# metadata writes failing, a write to a new block succeeds (its mapping only in memory),
# and the fsync after it fails: the commit fails and the transaction is aborted, mapping
# and all. Every later fsync must fail too: the acknowledged write is lost, whatever the
# pool's mode says now (dm-thin's dm_thin_aborted_changes).
t_flush_after_abort() {
	load_targets
	kmod dm-flakey
	no_periodic_commits
	meta_on_linear
	dmsetup resume rt_meta                          # metadata writes fail from now on
	if ! dd if=/dev/urandom of=/dev/mapper/rt_thin bs=4096 count=1 seek=16 oflag=direct status=none 2>/dev/null; then
		# Only where periodic commits stay on (upstream): one failed before the write was
		# mapped, so nothing was acknowledged; rthin's test runs have none.
		echo "the write failed: a periodic commit failed first, nothing acknowledged was lost"
		upstream || fail "the write to a new block failed though no commit was due"
		return 0
	fi
	! sync_dev rt_thin 2>/dev/null || fail "the first fsync after the failed commit succeeded"
	echo "pool: $(dmsetup status rt_pool)"
	local i
	for i in 1 2 3; do
		! sync_dev rt_thin 2>/dev/null || fail "fsync $i after the abort succeeded: the write it covers is lost"
	done
	! dd if=/dev/zero of=/dev/mapper/rt_thin bs=4096 count=1 seek=16 oflag=direct,dsync status=none 2>/dev/null ||
		fail "a FUA write after the abort succeeded"
	teardown_meta_on_linear
}

# sysblk DEV: DEV's directory in /sys/block (a dm device by its minor: the guest has no udev
# symlinks).
sysblk() {
	case "$1" in
	/dev/mapper/*) echo "/sys/block/dm-$(dmsetup info -c --noheadings -o minor "${1#/dev/mapper/}" | tr -d ' ')" ;;
	*) echo "/sys/block/$(basename "$(readlink -f "$1")")" ;;
	esac
}

# dev_writes DEV: writes DEV completed or has in flight (its /sys/block stat fields 5 and 9).
dev_writes() {
	awk '{print $5 + $9}' "$(sysblk "$1")/stat"
}

# sectors_written DEV: sectors DEV has written (its /sys/block stat field 7; a dm device
# counts them only with queue/iostats set).
sectors_written() {
	awk '{print $7}' "$(sysblk "$1")/stat"
}

# await SECONDS WHAT CMD...: polls CMD every 0.05 s until it succeeds; the test fails if it
# has not after SECONDS.
await() {
	local n=$(($1 * 20)) secs=$1 what=$2
	shift 2
	while ! "$@"; do
		n=$((n - 1))
		[ $n -gt 0 ] || fail "waited $secs s for $what"
		sleep 0.05
	done
}

# Item 3, "A suspended pool keeps writing": with the pool suspended, a thin's 4 KiB write to
# a new block (which needs zeroing) must write nothing to the data or the metadata device
# until the pool resumes; suspending the thin meanwhile must not hang (it completes once the
# pool resumes, as with dm-thin, whose thins the pool suspends internally); after resume the
# write lands and reads back.
t_suspended_pool_writes_nothing() {
	load_targets
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 4096
	dmsetup suspend rt_pool
	local m0 d0 m1 d1 wpid spid i
	sleep 1
	m0=$(dev_writes "$META_DEV") d0=$(dev_writes "$DATA_DEV")
	head -c 4096 /dev/urandom >"$TMP/chunk5"
	dd if="$TMP/chunk5" of=/dev/mapper/rt_thin bs=4096 seek=$((5 * 16)) oflag=direct status=none &
	wpid=$!
	sleep 3
	m1=$(dev_writes "$META_DEV") d1=$(dev_writes "$DATA_DEV")
	echo "writes while the pool is suspended: metadata $m0 -> $m1, data $d0 -> $d1"
	if [ "$m1" != "$m0" ] || [ "$d1" != "$d0" ]; then
		dmsetup resume rt_pool                  # so that the cleanup does not hang
		wait $wpid || true
		fail "the suspended pool wrote to its devices"
	fi
	dmsetup suspend rt_thin &
	spid=$!
	sleep 1
	dmsetup resume rt_pool
	for i in $(seq 60); do kill -0 $spid 2>/dev/null || break; sleep 1; done
	! kill -0 $spid 2>/dev/null || fail "suspending the thin still hangs 60 s after the pool resumed"
	wait $spid || fail "suspending the thin failed"
	wait $wpid || fail "the write held during the suspend failed"
	dmsetup resume rt_thin
	dd if="$TMP/chunk5" of="$TMP/rt_thin.model" bs=4096 seek=$((5 * 16)) conv=notrunc status=none
	same rt_thin 0 $((8 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
	expect_dump "device 0 mapped_blocks=2 counted=2 blocks=0,5"
}

# leak_round HOW: the pool has 5 data blocks, thin A (rt_thin) uses 4 of them; a read of A's
# block 2 is held in flight 8 s (dm-delay); meanwhile A gives up block 2's data block: by a
# discard (HOW=discard), or by a whole-block write that breaks its sharing (HOW=cow: A had a
# snapshot, since deleted, so the block counts as shared though nothing else holds it, and
# the new mapping frees it). A commits, and thin B writes a whole block, which gets the
# freed data block. A's read, issued before any of it, must return A's data, not B's.
leak_round() {
	local how=$1 rpid
	SECONDS=0
	load_targets
	delayed_data 0 8000                             # reads held 8 s, writes not
	wipe_meta
	dmsetup create rt_pool --table "$(pool_table $((5 * BS)))"
	msg create_thin 0
	msg create_thin 1
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $((4 * BB))                      # A: blocks 0-3, data blocks 0-3
	if [ "$how" = cow ]; then
		dmsetup suspend rt_thin
		msg create_snap 2 0
		dmsetup resume rt_thin
		msg delete 2
	else
		put rt_thin $((4 * BB)) $BB             # A: block 4, the pool is full
	fi
	make_thin rt_other 1
	dd if="$TMP/rt_thin.model" of="$TMP/want2" bs=$BB skip=2 count=1 status=none
	dd if=/dev/mapper/rt_thin of="$TMP/read2" bs=$BB skip=2 count=1 iflag=direct status=none &
	rpid=$!
	sleep 0.5                                       # the read is held by dm-delay now
	if [ "$how" = cow ]; then
		put rt_thin $((2 * BB)) $BB             # breaks the sharing of block 2 (no copy)
	else
		blkdiscard -f -o $((2 * BB)) -l $BB /dev/mapper/rt_thin   # -f: no probing reads
	fi
	sync_dev rt_thin                                # commit: the freed block may be reused
	head -c $BB /dev/urandom >"$TMP/other"
	dd if="$TMP/other" of=/dev/mapper/rt_other bs=$BB count=1 oflag=direct status=none
	local t_other=$SECONDS
	wait $rpid
	echo "$how: B wrote at ${t_other}s, A's read returned at ${SECONDS}s; pool $(dmsetup status rt_pool | cut -d' ' -f4-6)"
	! cmp -s "$TMP/read2" "$TMP/other" || fail "A's read returned the data B wrote into A's old block"
	cmp -s "$TMP/read2" "$TMP/want2" || fail "A's read of block 2 did not return A's data from before"
}

# Item 3, with provisioning in flight: the pool is suspended while a thin's write provisions
# a block (its zeroing and write held 2 s each by dm-delay). The suspend lets the provision
# finish and commits it: once `dmsetup suspend` returns, the mapping is on disk and nothing
# more is written to either device until resume.
t_suspend_during_provisioning() {
	load_targets
	delayed_data 2000
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	local wpid m0 d0 m1 d1
	head -c 4096 /dev/urandom >"$TMP/chunk7"
	dd if="$TMP/chunk7" of=/dev/mapper/rt_thin bs=4096 seek=$((7 * 16 + 1)) oflag=direct status=none &
	wpid=$!
	sleep 1
	dmsetup suspend rt_pool
	m0=$(dev_writes "$META_DEV") d0=$(dev_writes /dev/vdb)
	kill -0 $wpid 2>/dev/null && echo "the write is still running after the pool suspended" || echo "the write finished before the suspend returned"
	dd if="$META_DEV" of="$TMP/meta.img" bs=1M count=8 iflag=direct status=none
	echo "thin_dump of the suspended pool's metadata: $(thin_dump "$TMP/meta.img" 2>&1 | grep -c mapping) mapping lines"
	sleep 2
	m1=$(dev_writes "$META_DEV") d1=$(dev_writes /dev/vdb)
	dmsetup resume rt_pool
	wait $wpid || fail "the write failed"
	[ "$m1" = "$m0" ] && [ "$d1" = "$d0" ] || fail "writes while suspended: metadata $m0 -> $m1, data $d0 -> $d1"
	thin_dump "$TMP/meta.img" | grep -q 'origin_block="7"' || fail "the provision was not committed by the suspend"
	dd if="$TMP/chunk7" of="$TMP/rt_thin.model" bs=4096 seek=$((7 * 16 + 1)) conv=notrunc status=none
	same rt_thin 0 $((8 * BB))
}

# Item 4, "IO in flight to a block that is being unmapped", by a discard.
t_discard_waits_for_io() {
	leak_round discard
}

# Item 4, by an overwrite that breaks sharing and frees the block.
t_cow_waits_for_shared_reads() {
	leak_round cow
}

# Item 5, "Wiping or replacing a pool's table orphans its core": a thin writes block 3, the
# pool's table is wiped and loaded again, the thin writes block 9, and a create_thin message
# is sent. The thin keeps the pool alive, so the reloaded table finds the same pool: both
# mappings and the new device are on disk after removal.
t_wipe_table_keeps_pool() {
	load_targets
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin $((3 * BB)) $BB
	dmsetup wipe_table rt_pool
	dmsetup reload rt_pool --table "$(pool_table)"
	dmsetup resume rt_pool
	put rt_thin $((9 * BB)) $BB
	msg create_thin 1
	same rt_thin 0 $((16 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
	expect_dump "device 0 mapped_blocks=2 counted=2 blocks=3,9" "device 1 mapped_blocks=0 counted=0 blocks=-"
}

# Item 7, "Read-only mode escalates to Fail": three whole-block writes provision blocks (held
# 2 s by dm-delay) when a failed commit (metadata writes cut, then a message) turns the pool
# read-only. Their mappings must fail quietly: the writes fail, and the pool stays
# read-only, not failed.
t_readonly_stays_readonly() {
	load_targets
	kmod dm-flakey
	no_periodic_commits
	delayed_data 2000
	meta_on_linear
	local b pids=() failed=0
	head -c $BB /dev/urandom >"$TMP/blk"
	for b in 1 2 3; do
		dd if="$TMP/blk" of=/dev/mapper/rt_thin bs=$BB seek=$b oflag=direct status=none 2>/dev/null &
		pids+=($!)
	done
	sleep 0.7
	dmsetup resume rt_meta                          # metadata writes fail from now on
	kmsg_mark
	msg create_thin 1 2>/dev/null || true           # its commit fails: abort, read-only
	for b in "${pids[@]}"; do wait "$b" || failed=$((failed + 1)); done
	echo "pool: $(dmsetup status rt_pool); $failed of 3 in-flight writes failed"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	[ "$(status_field rt_pool 5)" = ro ] || fail "pool is '$(dmsetup status rt_pool | cut -d' ' -f4-)', not read-only"
	[ $failed = 3 ] || fail "$((3 - failed)) writes whose mappings the abort threw away succeeded"
	! kmsg_since | grep -q "switching pool to fail mode" || fail "the pool switched to fail mode"
	teardown_meta_on_linear
}

# Item 9, "GFP_KERNEL under the metadata mutex in a thin's constructor": the metadata lock is
# taken in map, hence in memory reclaim, and rthin tells lockdep so. Opening thin devices
# (first and second tables of a device) must then allocate nothing under that lock that
# could recurse into reclaim: lockdep reports it at once otherwise.
t_thin_ctr_noio() {
	load_targets
	kmsg_mark
	make_pool
	msg create_thin 0
	msg create_thin 1
	make_thin rt_thin 0
	make_thin rt_thin_b 1
	make_thin rt_thin_c 1
	put rt_thin 0 4096
	! kmsg_since | grep -q "possible circular locking dependency" || {
		kmsg_since | sed -n '/possible circular locking/,/^ *$/p' | head -40
		fail "lockdep: an allocation under the metadata lock can recurse into reclaim"
	}
}

# dev_reads DEV: reads DEV completed (its /sys/block stat field 1).
dev_reads() {
	awk '{print $1}' "$(sysblk "$1")/stat"
}

# Item 10, "Two constructors on one unregistered metadata device can both format it": pool
# table A opens fresh metadata, its reads held 3 s by dm-delay; table B (another pool device)
# names the same metadata meanwhile. B must wait for A's constructor and then be refused
# without reading the metadata at all: the race reads the metadata exactly as often as A's
# constructor alone does.
t_pool_ctr_serialised() {
	load_targets
	kmod dm-delay
	local msz r0 r1 r2 pa pb
	msz=$(sectors "$META_DEV")
	wipe_meta
	dmsetup create rt_meta --table "0 $msz delay $META_DEV 0 3000 $META_DEV 0 0 $META_DEV 0 0"
	echo 1 >"$(sysblk /dev/mapper/rt_meta)/queue/iostats"
	r0=$(dev_reads /dev/mapper/rt_meta)
	dmsetup create rt_pool --table "$(pool_table "" "" "" /dev/mapper/rt_meta)"
	dmsetup remove rt_pool
	wipe_meta
	r1=$(dev_reads /dev/mapper/rt_meta)
	dmsetup create rt_pool --table "$(pool_table "" "" "" /dev/mapper/rt_meta)" &
	pa=$!
	sleep 1
	kmsg_mark
	dmsetup create rt_pool_b --table "$(pool_table "" "" "" /dev/mapper/rt_meta)" 2>/dev/null &
	pb=$!
	wait $pa || fail "pool A was refused"
	! wait $pb || fail "pool B was created on metadata in use"
	r2=$(dev_reads /dev/mapper/rt_meta)
	echo "metadata reads: $((r1 - r0)) by A's constructor alone, $((r2 - r1)) by A's and B's"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	kmsg_since | grep -q "metadata device already in use by a pool" || fail "B refused without dm-thin's message"
	[ $((r2 - r1)) = $((r1 - r0)) ] || fail "B read the metadata while A was opening it"
	msg create_thin 0
	dmsetup remove rt_pool
	check_meta /dev/mapper/rt_meta
}

# Item 13, "Overflow panics on crafted metadata": a thin whose mapping sits at the top of the
# 64-bit block range (thin_restore takes it) makes the thin's status arithmetic overflow.
# The status must not panic, and must read as upstream's (unsigned 64-bit C arithmetic).
t_crafted_status() {
	load_targets
	local top=$(((1 << 57) - 1))                    # (top + 1) * BS == 2^64, as BS == 2^7
	cat >"$TMP/crafted.xml" <<-XML
	<superblock uuid="" time="0" transaction="1" flags="0" version="2" data_block_size="$BS" nr_data_blocks="$NR_BLOCKS">
	  <device dev_id="0" mapped_blocks="2" transaction="0" creation_time="0" snap_time="0">
	    <single_mapping origin_block="0" data_block="0" time="0"/>
	    <single_mapping origin_block="$top" data_block="1" time="0"/>
	  </device>
	</superblock>
	XML
	wipe_meta
	thin_restore -i "$TMP/crafted.xml" -o "$META_DEV" >/dev/null
	dmsetup create rt_pool --table "$(pool_table)"
	make_thin rt_thin 0
	local got want
	got=$(dmsetup status rt_thin)
	echo "status: $got"
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	upstream && return 0
	dmsetup create rt_up --table "$(pool_table "" "" thin-pool)"
	make_thin rt_upthin 0 rt_up thin
	want=$(dmsetup status rt_upthin)
	echo "upstream: $want"
	[ "${got#* * * }" = "${want#* * * }" ] || fail "status '$got', upstream's '$want'"
}

tests=(
	thin_io_fua_waits_in_cell:t_fua_waits_in_cell
	thin_io_flush_after_abort:t_flush_after_abort
	thin_io_suspended_pool_writes_nothing:t_suspended_pool_writes_nothing
	thin_io_suspend_during_provisioning:t_suspend_during_provisioning
	thin_io_discard_waits_for_io:t_discard_waits_for_io
	thin_io_cow_waits_for_shared_reads:t_cow_waits_for_shared_reads
	thin_io_wipe_table_keeps_pool:t_wipe_table_keeps_pool
	thin_io_readonly_stays_readonly:t_readonly_stays_readonly
	thin_io_thin_ctr_noio:t_thin_ctr_noio
	thin_io_pool_ctr_serialised:t_pool_ctr_serialised
	thin_io_crafted_status:t_crafted_status
)
run_suite "${tests[@]}"
