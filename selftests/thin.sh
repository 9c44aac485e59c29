#!/usr/bin/env bash
# thin selftests: data written through thin devices reads back, unprovisioned space reads
# as zeros, snapshots share and break sharing, flushes commit, discards unmap, a full pool
# errors writes, bad tables are refused; all as dm-thin's `thin` target does, on metadata
# that thin_check accepts and upstream dm-thin reads.
#
# The targets are parameters, so that every test can be checked against upstream dm-thin:
#   POOL_TGT=thin-pool THIN_TGT=thin selftests/guest-run.sh thin
# runs the suite on upstream's targets (the reference behaviour); the default is rthin's.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"        # (it changes into a scratch directory)
. "$here/thin_lib.sh"

# Random data at a few offsets reads back; the rest reads as zeros; the thin's status and
# the pool's usage count the blocks written; the metadata checks out and upstream reads
# the same data from it.
t_write_read() {
	load_targets
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	expect_mapped rt_thin 0
	expect_used 0
	put rt_thin 0 4096                              # block 0: 4 KiB at its start
	put rt_thin $((5 * BB + 12288)) 4096            # block 5: 4 KiB inside it
	put rt_thin $((10 * BB + 32768)) $((200 * 1024)) # blocks 10-13: across three boundaries
	put rt_thin $((20 * BB + 1536)) 512             # block 20: one sector, not 4 KiB aligned
	put rt_thin $((THIN_BYTES - BB)) $BB            # the last block, whole
	same rt_thin 0 $((32 * BB))                     # the first 2 MiB: data and zeros
	same rt_thin $((THIN_BYTES - 4 * BB)) $((4 * BB))
	same rt_thin $((512 << 20)) $((1 << 20))        # 1 MiB in the middle: zeros
	echo "thin: $(dmsetup status rt_thin) pool: $(dmsetup status rt_pool)"
	expect_mapped rt_thin 8 $((THIN_BLOCKS - 1))
	expect_used 8
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
	expect_dump "device 0 mapped_blocks=8 counted=8 blocks=0,5,10-13,20,$((THIN_BLOCKS - 1))"
	if upstream; then
		echo "cross-check with upstream skipped: upstream is the target under test"
		return 0
	fi
	dmsetup create rt_up --table "$(pool_table "" "" thin-pool)"
	make_thin rt_upthin 0 rt_up thin
	same rt_upthin 0 $((32 * BB)) rt_thin
	same rt_upthin $((THIN_BYTES - 4 * BB)) $((4 * BB)) rt_thin
	expect_mapped rt_upthin 8 $((THIN_BLOCKS - 1))
}

# A 4 KiB write into a fresh block of a pool over garbage: with block zeroing (the
# default) the rest of the block reads as zeros; with skip_block_zeroing the 4 KiB reads back.
t_zeroing() {
	load_targets
	local len=$((256 * BS))       # a 16 MiB pool: every block it hands out is garbage below
	head -c $((len * 512)) /dev/urandom | dd of="$DATA_DEV" bs=1M oflag=direct status=none
	make_pool $len
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin $((3 * BB + 8192)) 4096
	put rt_thin $((7 * BB)) 4096
	same rt_thin 0 $((8 * BB))
	expect_used 2
	dmsetup remove rt_thin
	dmsetup remove rt_pool

	head -c $((len * 512)) /dev/urandom | dd of="$DATA_DEV" bs=1M oflag=direct status=none
	make_pool $len "1 skip_block_zeroing"
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin $((3 * BB + 8192)) 4096
	same rt_thin $((3 * BB + 8192)) 4096
	same rt_thin $((4 * BB)) $BB                    # still unprovisioned: zeros
	if cmp -s <(dd if=/dev/mapper/rt_thin bs=$BB skip=3 count=1 iflag=direct status=none) \
		<(dd if="$TMP/rt_thin.model" bs=$BB skip=3 count=1 status=none); then
		echo "skip_block_zeroing: the rest of the block happens to read zeros"
	else
		echo "skip_block_zeroing: the rest of the block is the garbage below, as expected"
	fi
	expect_used 1
}

# Snapshots: a snapshot keeps the origin's data as it was, the origin and the snapshot
# change independently, and deleting the snapshot frees the blocks only it used.
t_snapshots() {
	load_targets
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $((8 * BB))                       # blocks 0-7
	expect_used 8
	dmsetup suspend rt_thin
	msg create_snap 1 0
	dmsetup resume rt_thin
	make_thin rt_snap 1
	cp --sparse=always "$TMP/rt_thin.model" "$TMP/rt_snap.model"
	expect_mapped rt_snap 8 7
	expect_used 8
	same rt_snap 0 $((8 * BB))
	put rt_thin $((1 * BB + 4096)) 4096             # origin: part of shared block 1
	put rt_thin $((3 * BB)) $BB                     # origin: all of shared block 3
	put rt_thin $((9 * BB)) 4096                    # origin: a new block 9
	same rt_thin 0 $((16 * BB))
	same rt_snap 0 $((16 * BB))                     # the snapshot still reads the old data
	expect_used 11
	put rt_snap $((5 * BB)) $BB                     # snapshot: all of shared block 5
	put rt_snap $((6 * BB + 512)) 1024              # snapshot: part of shared block 6
	put rt_snap $((1 * BB)) 4096                    # snapshot: its own block 1 again
	same rt_snap 0 $((16 * BB))
	same rt_thin 0 $((16 * BB))                     # the origin is unaffected
	echo "origin: $(dmsetup status rt_thin) snapshot: $(dmsetup status rt_snap) pool: $(dmsetup status rt_pool)"
	expect_mapped rt_thin 9 9
	expect_mapped rt_snap 8 7
	expect_used 13
	# A snapshot of a snapshot, taken while both are active.
	dmsetup suspend rt_snap
	msg create_snap 2 1
	dmsetup resume rt_snap
	make_thin rt_snap2 2
	same rt_snap2 0 $((16 * BB)) rt_snap
	dmsetup remove rt_snap2
	msg delete 2
	expect_used 13
	# The snapshot's own blocks (old 1, old 3, new 5, new 6) go with it.
	dmsetup remove rt_snap
	msg delete 1
	expect_used 9
	same rt_thin 0 $((16 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
	expect_dump "device 0 mapped_blocks=9 counted=9 blocks=0-7,9"
}

# Removing and recreating the pool and thin (same metadata) keeps the data, the thin's
# status and the pool's usage; new writes afterwards do not land on old blocks.
t_persistence() {
	load_targets
	make_pool
	msg create_thin 0
	msg create_thin 1
	make_thin rt_thin 0
	make_thin rt_other 1
	model_new rt_thin
	model_new rt_other
	put rt_thin $((2 * BB + 4096)) $((3 * BB))     # blocks 2-5
	put rt_other 0 $((4 * BB))                      # blocks 0-3
	put rt_thin $((100 * BB)) 8192
	local st_thin st_other st_pool
	st_thin=$(dmsetup status rt_thin)
	st_other=$(dmsetup status rt_other)
	st_pool=$(dmsetup status rt_pool | cut -d' ' -f4-7)
	echo "before: $st_thin | $st_other | $st_pool"
	dmsetup remove rt_thin
	dmsetup remove rt_other
	dmsetup remove rt_pool
	dmsetup create rt_pool --table "$(pool_table)"
	make_thin rt_thin 0
	make_thin rt_other 1
	echo "after: $(dmsetup status rt_thin) | $(dmsetup status rt_other) | $(dmsetup status rt_pool | cut -d' ' -f4-7)"
	[ "$(dmsetup status rt_thin)" = "$st_thin" ] || fail "thin 0 status changed"
	[ "$(dmsetup status rt_other)" = "$st_other" ] || fail "thin 1 status changed"
	[ "$(dmsetup status rt_pool | cut -d' ' -f4-7)" = "$st_pool" ] || fail "pool status changed"
	same rt_thin 0 $((128 * BB))
	same rt_other 0 $((8 * BB))
	put rt_other $((10 * BB)) $((4 * BB))           # four new blocks
	put rt_thin $((50 * BB)) $BB                    # and one more
	same rt_thin 0 $((128 * BB))
	same rt_other 0 $((16 * BB))
	expect_used 14
}

# flush_round BLOCK FLUSH: write one block of a fresh thin (with fsync when FLUSH is 1, else
# wait 2 s), then stop every later metadata write from reaching the disk, tear down, and
# look on the disk: the mapping must be there.
flush_round() {
	local blk=$1 flush=$2 t0 t1
	meta_on_linear
	head -c $BB /dev/urandom >"$TMP/blk"
	if [ "$flush" = 1 ]; then
		dd if="$TMP/blk" of=/dev/mapper/rt_thin bs=$BB seek="$blk" oflag=direct conv=fsync status=none
	else
		dd if="$TMP/blk" of=/dev/mapper/rt_thin bs=$BB seek="$blk" oflag=direct status=none
		sleep 2
	fi
	t0=$(date +%s%N)
	dmsetup resume rt_meta
	t1=$(date +%s%N)
	echo "block $blk (fsync $flush): metadata writes cut $(((t1 - t0) / 1000000)) ms after the write returned"
	teardown_meta_on_linear
	check_meta
	expect_dump "device 0 mapped_blocks=1 counted=1 blocks=$blk"
}

# A flush commits the metadata before it completes; without flushes, the pool's periodic
# (1 s) commit puts the mapping on disk. When the commit cannot be written, writing and
# fsyncing a new block fails with EIO (upstream: the write succeeds, the fsync fails), and
# the pool rolls back to the last commit and goes read-only with needs_check.
# The first round alone cannot tell the flush's commit from the periodic one (cutting the
# metadata writes takes 0.3-1 s under TCG); the last part can: it fails if the flush
# completes without committing.
t_flush_commits() {
	load_targets
	kmod dm-flakey
	flush_round 7 1
	flush_round 9 0
	meta_on_linear
	dmsetup resume rt_meta                          # metadata writes fail from now on
	kmsg_mark
	head -c $BB /dev/urandom >"$TMP/blk"
	! dd if="$TMP/blk" of=/dev/mapper/rt_thin bs=$BB seek=3 oflag=direct conv=fsync 2>"$TMP/dd.err" ||
		fail "write and fsync succeeded though the metadata cannot be committed"
	cat "$TMP/dd.err"
	grep -q "Input/output error" "$TMP/dd.err" || fail "no EIO"
	echo "pool: $(dmsetup status rt_pool)"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	for want in "metadata operation 'dm_pool_commit_metadata' failed: error = -5" \
		"aborting current metadata transaction" "switching pool to read-only mode"; do
		kmsg_since | grep -q "$LOG_PFX: .*$want" || fail "no '$want' in the kernel log"
	done
	# The transaction is rolled back: read-only, needs_check, the block unmapped again.
	# (Not checked: the thin's status. Upstream's says "128 -" here: its in-core mapped
	# count is not rolled back, its highest mapped block is.)
	echo "thin: $(dmsetup status rt_thin)"
	[ "$(status_field rt_pool 5)" = ro ] || fail "pool mode $(status_field rt_pool 5), not ro"
	[ "$(status_field rt_pool 8)" = needs_check ] || fail "no needs_check in the pool status"
	[ "$(status_field rt_pool 3)" = "0/$NR_BLOCKS" ] || fail "data usage $(status_field rt_pool 3)"
	cmp <(dd if=/dev/mapper/rt_thin bs=$BB skip=3 count=1 iflag=direct status=none) <(head -c $BB /dev/zero) ||
		fail "the rolled back block does not read zeros"
	teardown_meta_on_linear
	check_meta
	expect_dump "device 0 mapped_blocks=0 counted=0 blocks=-"
}

# Discarding whole blocks unmaps them: the thin's mapped count and the pool's usage drop
# and the range reads zeros. A discard of part of a block keeps the block and the rest of
# its data. Discarding blocks a snapshot shares frees nothing and the snapshot keeps them.
t_discard() {
	load_targets
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $((16 * BB))                      # blocks 0-15
	expect_mapped rt_thin 16 15
	expect_used 16
	blkdiscard -o $((4 * BB)) -l $((8 * BB)) /dev/mapper/rt_thin   # blocks 4-11
	zero_model rt_thin $((4 * BB)) $((8 * BB))
	expect_mapped rt_thin 8 15
	expect_used 8
	same rt_thin 0 $((16 * BB))
	blkdiscard -o $((BB / 2)) -l 4096 /dev/mapper/rt_thin           # inside block 0
	expect_mapped rt_thin 8 15
	same rt_thin 0 $((BB / 2))
	same rt_thin $((BB / 2 + 4096)) $((BB / 2 - 4096 + 15 * BB))
	blkdiscard -o $((12 * BB)) -l $((4 * BB)) /dev/mapper/rt_thin   # blocks 12-15: the highest
	zero_model rt_thin $((12 * BB)) $((4 * BB))
	expect_mapped rt_thin 4 3
	expect_used 4
	same rt_thin $((BB)) $((15 * BB))
	# Shared blocks: the snapshot keeps them.
	dmsetup suspend rt_thin
	msg create_snap 1 0
	dmsetup resume rt_thin
	make_thin rt_snap 1
	cp --sparse=always "$TMP/rt_thin.model" "$TMP/rt_snap.model"
	blkdiscard -o $BB -l $((3 * BB)) /dev/mapper/rt_thin           # blocks 1-3
	zero_model rt_thin $BB $((3 * BB))
	expect_mapped rt_thin 1 0
	expect_mapped rt_snap 4 3
	expect_used 4
	same rt_thin $BB $((15 * BB))
	same rt_snap $BB $((15 * BB))
	# The whole device.
	blkdiscard /dev/mapper/rt_snap
	expect_mapped rt_snap 0
	expect_used 1
	model_new rt_snap
	same rt_snap 0 $((16 * BB))
	dmsetup remove rt_snap
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
}

# A full pool with error_if_no_space: writes needing new blocks fail with ENOSPC, the pool
# says out_of_data_space, written data stays, mapped blocks can still be overwritten; a
# bigger table brings it back to rw.
t_out_of_space() {
	load_targets
	make_pool $((16 * BS)) "1 error_if_no_space"
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $((8 * BB))                       # blocks 0-7
	head -c $((16 * BB)) /dev/urandom >"$TMP/more"
	kmsg_mark
	! dd if="$TMP/more" of=/dev/mapper/rt_thin bs=$BB seek=8 oflag=direct 2>"$TMP/dd.err" ||
		fail "writing 16 blocks into 8 free ones succeeded"
	cat "$TMP/dd.err"
	grep -q "No space left on device" "$TMP/dd.err" || fail "the write did not fail with ENOSPC"
	grep -q "^8+0 records out" "$TMP/dd.err" || fail "not exactly the 8 blocks that fit were written"
	dd if="$TMP/more" of="$TMP/rt_thin.model" bs=$BB count=8 seek=8 conv=notrunc status=none
	echo "pool: $(dmsetup status rt_pool)"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	kmsg_since | grep -q "$LOG_PFX: .*switching pool to out-of-data-space (error IO) mode" ||
		fail "no 'switching pool to out-of-data-space (error IO) mode' in the kernel log"
	[ "$(status_field rt_pool 3)" = 16/16 ] || fail "data usage $(status_field rt_pool 3)"
	[ "$(status_field rt_pool 5)" = out_of_data_space ] || fail "pool mode $(status_field rt_pool 5)"
	expect_mapped rt_thin 16 15
	same rt_thin 0 $((32 * BB))
	put rt_thin $((2 * BB + 4096)) 4096             # a mapped block: still writable
	same rt_thin 0 $((32 * BB))
	! dd if=/dev/urandom of=/dev/mapper/rt_thin bs=4096 count=1 seek=$((40 * 16)) oflag=direct status=none 2>/dev/null ||
		fail "a write to an unmapped block succeeded in a full pool"
	# Grow the pool to 32 blocks.
	kmsg_mark
	dmsetup reload rt_pool --table "$(pool_table $((32 * BS)) "1 error_if_no_space")"
	dmsetup resume rt_pool
	echo "grown: $(dmsetup status rt_pool)"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //'
	[ "$(status_field rt_pool 5)" = rw ] || fail "grown pool mode $(status_field rt_pool 5)"
	put rt_thin $((20 * BB)) $BB
	same rt_thin 0 $((32 * BB))
	expect_used 17
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
}

# Bad thin tables are refused with dm-thin's message (every table is tried, the test fails
# if any is not refused so); deleting an active thin is refused and the thin keeps working.
t_bad_tables() {
	load_targets
	make_pool
	msg create_thin 0
	dmsetup create rt_lin --table "0 65536 linear $DATA_DEV 0"
	local p=/dev/mapper/rt_pool l="0 $THIN_SECTORS $THIN_TGT" i bad=0
	local cases=(
		"$l"                                    "Invalid argument count"
		"$l $p"                                 "Invalid argument count"
		"$l $p 0 /dev/mapper/rt_lin extra"      "Invalid argument count"
		"$l /dev/mapper/rt_no_such_pool 0"      "Error opening pool device"
		"$l /dev/mapper/rt_lin 0"               "Couldn't find pool object"
		"$l $META_DEV 0"                        "Couldn't get pool mapped device"
		"$l $p abc"                             "Invalid device id"
		"$l $p -1"                              "Invalid device id"
		"$l $p 16777216"                        "Invalid device id"
		"$l $p 5"                               "Couldn't open thin internal device"
	)
	for ((i = 0; i < ${#cases[@]}; i += 2)); do
		expect_refused "$THIN_TGT" "${cases[i]}" "${cases[i+1]}" || bad=$((bad + 1))
	done
	dmsetup suspend rt_pool
	expect_refused "$THIN_TGT" "$l $p 0" "Unable to activate thin device while pool is suspended" ||
		bad=$((bad + 1))
	dmsetup resume rt_pool
	[ $bad = 0 ] || fail "$bad tables not refused as dm-thin refuses them"
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $BB
	kmsg_mark
	! msg delete 0 2>/dev/null || fail "deleting an active thin succeeded"
	echo "delete 0: $(kmsg_since | grep -m1 'device-mapper')"
	kmsg_since | grep -q "$LOG_PFX: Deletion of thin device 0 failed." || fail "no deletion warning: $(kmsg_since)"
	put rt_thin $BB $BB
	same rt_thin 0 $((4 * BB))
	expect_mapped rt_thin 2 1
	dmsetup remove rt_thin
	msg delete 0
	expect_used 0
}

# The optional third argument, an external origin device: a bad one is refused with
# dm-thin's message.
t_bad_origin() {
	load_targets
	make_pool
	msg create_thin 0
	local p=/dev/mapper/rt_pool l="0 $THIN_SECTORS $THIN_TGT" bad=0
	expect_refused "$THIN_TGT" "$l $p 0 $p" "Error setting origin device" || bad=$((bad + 1))
	expect_refused "$THIN_TGT" "$l $p 0 /dev/mapper/rt_no_such_origin" "Error opening origin device" ||
		bad=$((bad + 1))
	[ $bad = 0 ] || fail "$bad tables not refused as dm-thin refuses them"
}

# Concurrent writes: fio verifies its data, written by 2 jobs at once; a snapshot taken while
# fio writes elsewhere holds exactly the data from before, also while the origin's shared
# blocks are then overwritten concurrently; the metadata checks out.
# (fio's verify_only is no check here: blocks another fio run wrote at the same offsets
# verify too. So the snapshot is compared with a copy.)
t_concurrency() {
	load_targets
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	local t0=$SECONDS pid running
	fio_verify rt_thin --name=first --offset=0 || fail "fio: first writes"
	echo "first fio: $((SECONDS - t0)) s; thin: $(dmsetup status rt_thin)"
	expect_mapped rt_thin 128 127
	dd if=/dev/mapper/rt_thin of="$TMP/first" bs=1M count=8 iflag=direct status=none
	# More writes (8-16 MiB) in the background; a snapshot midway.
	fio_verify rt_thin --name=second --offset=8M &
	pid=$!
	sleep 2
	kill -0 $pid 2>/dev/null && running=yes || running=no
	dmsetup suspend rt_thin
	msg create_snap 1 0
	dmsetup resume rt_thin
	echo "snapshot taken while fio was running: $running"
	wait $pid || fail "fio: second writes, snapshot taken midway"
	make_thin rt_snap 1
	cmp "$TMP/first" <(dd if=/dev/mapper/rt_snap bs=1M count=8 iflag=direct status=none) ||
		fail "the snapshot's first 8 MiB differ from the origin's before it"
	# Overwrite the shared first 8 MiB of the origin, concurrently, with other data.
	fio_verify rt_thin --name=third --offset=0 --randseed=77 || fail "fio: overwriting shared blocks"
	cmp "$TMP/first" <(dd if=/dev/mapper/rt_snap bs=1M count=8 iflag=direct status=none) ||
		fail "the origin's writes changed the snapshot"
	! cmp -s "$TMP/first" <(dd if=/dev/mapper/rt_thin bs=1M count=8 iflag=direct status=none) ||
		fail "the origin still reads as before its overwrite"
	echo "thin: $(dmsetup status rt_thin) snapshot: $(dmsetup status rt_snap) pool: $(dmsetup status rt_pool)"
	expect_mapped rt_thin 256 255
	dmsetup remove rt_snap
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
	echo "total: $((SECONDS - t0)) s"
}

# Many provisions, sharing breaks and discards in flight at once, on four thin devices of one
# pool (issue 9: the asynchronous provisioning pipeline must keep every byte). Thin 3 is a
# snapshot of thin 0 taken after thin 0's region was written, so writes to either break the
# sharing. Each device has a process doing random 4 KiB, whole-block and long writes,
# whole-block discards and reads, checked against its model as it goes; then every byte of
# each region is compared, and again after the pool is torn down and rebuilt on upstream
# dm-thin's targets (what rthin committed is what dm-thin reads).
t_mixed_concurrency() {
	load_targets
	# Stale data where the pool will allocate: a block provisioned without being zeroed
	# (or copied) reads back as this, not as zeros.
	yes "stale data of a block never zeroed" | head -c $((256 << 20)) |
		dd of="$DATA_DEV" bs=1M iflag=fullblock oflag=direct status=none
	make_pool
	local region=$((32 << 20)) ops=${MIX_OPS:-1500} n pids=() rc=0 t0=$SECONDS
	for n in 0 1 2; do
		msg create_thin $n
		make_thin rt_t$n $n
		truncate -s $region "$TMP/rt_t$n.model"
	done
	head -c $region /dev/urandom >"$TMP/rt_t0.model"
	dd if="$TMP/rt_t0.model" of=/dev/mapper/rt_t0 bs=1M oflag=direct status=none
	dmsetup suspend rt_t0
	msg create_snap 3 0
	dmsetup resume rt_t0
	make_thin rt_t3 3
	cp "$TMP/rt_t0.model" "$TMP/rt_t3.model"
	for n in 0 1 2 3; do
		python3 "$here/mixio.py" /dev/mapper/rt_t$n "$TMP/rt_t$n.model" $((n + 11)) "$ops" $region $BB &
		pids+=($!)
	done
	for n in "${pids[@]}"; do wait "$n" || rc=1; done
	[ $rc = 0 ] || fail "a device read back other than its model"
	echo "mixed IO on 4 devices: $((SECONDS - t0)) s; pool: $(dmsetup status rt_pool)"
	for n in 0 1 2 3; do dmsetup remove rt_t$n; done
	dmsetup remove rt_pool
	check_meta
	dmsetup create rt_pool --table "$(pool_table "" "" thin-pool)"
	for n in 0 1 2 3; do
		make_thin rt_t$n $n rt_pool thin
		same rt_t$n 0 $region
		dmsetup remove rt_t$n
	done
	dmsetup remove rt_pool
	check_meta
}

# More provisions at once than the pool keeps in flight (1024, as dm-thin's mapping pool):
# 1280 writes to fresh blocks are outstanding at once (fio, 5 jobs of depth 256), and the
# data device holds every write 2 s (dm-delay), so the first 1024 zeroings are in flight
# when the rest arrive. Past the cap, the thin's map waits for provisions to finish (the
# pool's throttle) instead of queueing without bound; nothing may hang, every write must
# complete and read back, and the thin maps one block per write.
t_provision_cap() {
	load_targets
	delayed_data 2000
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	local out=$TMP/fio.cap rc=0 t0=$SECONDS
	fio --name=cap --output="$out" --filename=/dev/mapper/rt_thin --direct=1 --ioengine=libaio \
		--iodepth=256 --iodepth_batch_submit=256 --numjobs=5 --rw=write:60k --bs=4k \
		--size=16M --offset_increment=16M --verify=crc32c --do_verify=1 --verify_fatal=1 \
		--group_reporting || rc=$?
	[ $rc = 0 ] || { cat "$out"; fail "fio: writes past the provision cap failed or read back wrong"; }
	echo "1280 provisions at once: $((SECONDS - t0)) s"
	expect_mapped rt_thin 1280 1279
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
}

tests=(
	thin_write_read:t_write_read
	thin_zeroing:t_zeroing
	thin_snapshots:t_snapshots
	thin_persistence:t_persistence
	thin_flush_commits:t_flush_commits
	thin_discard:t_discard
	thin_out_of_space:t_out_of_space
	thin_bad_tables:t_bad_tables
	thin_bad_origin:t_bad_origin
	thin_concurrency:t_concurrency
	thin_mixed_concurrency:t_mixed_concurrency
	thin_provision_cap:t_provision_cap
)
run_suite "${tests[@]}"
