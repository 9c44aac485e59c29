#!/usr/bin/env bash
# The seeds as tests (issue 11, item 4): each test reproduces the scenario of one of the
# bug documents in the project's seeds (000..004: AB-BA deadlocks, a mapped device destroyed
# from the completion of its last bio, COW throttling that waits under a lock, dm-thin's
# abort re-creating its dm-bufio client under the shrinker lock) against the thin targets,
# and checks what a user would: every command returns, every byte written reads back,
# thin_check is clean, and the kernel log has no lockdep report, WARNING, BUG or hung task.
# Where a race is needed it is made likely or certain with dm-delay (bios held in flight),
# dm-flakey/dm-error (metadata IO failing at a chosen moment) and suspended devices.
#
# Every test runs on rthin and on upstream dm-thin (the reference: the same scenario must
# pass there), as NAME_rthin and NAME_dmthin. POOL_TGT=thin-pool THIN_TGT=thin (or
# POOL_TGT=rthin-pool THIN_TGT=rthin) in the environment runs one target only, as thin.sh.
# SEEDS_SEED fixes the random orders of the concurrent loops (printed by each test).
here=${here:-$(cd "$(dirname "$0")" && pwd)}
both=1
[ -n "${THIN_TGT:-}" ] && both=0
. "$here/lib.sh"        # (it changes into a scratch directory)
. "$here/thin_lib.sh"

SEED=${SEEDS_SEED:-$(( $(date +%s) % 100000 ))}
CHURN_SECS=${CHURN_SECS:-45}

# thin_line POOL ID: the table of thin device ID of POOL (1 GiB).
thin_line() { echo "0 $THIN_SECTORS $THIN_TGT /dev/mapper/$1 $2"; }

# bounded CMD...: CMD (a program, not a shell function), given 90 s (times $SLOW); one still
# running then has hung (dm-thin's commands take well under a second here): noted in
# $TMP/hangs, and the test fails on it.
bounded() {
	local rc=0
	timeout -k 10 $((90 * SLOW)) "$@" || rc=$?
	if [ $rc = 124 ] || [ $rc = 137 ]; then echo "hung: $*" >>"$TMP/hangs"; fi
	return $rc
}

# op LOOP NAME CMD...: run CMD bounded, quietly, and count its outcome and time under NAME
# in $TMP/ops (one "LOOP NAME rc ms" line per call). Returns CMD's status.
op() {
	local loop=$1 name=$2 rc=0 t0=${EPOCHREALTIME/./}
	shift 2
	bounded "$@" >/dev/null 2>&1 || rc=$?
	echo "$loop $name $rc $(((${EPOCHREALTIME/./} - t0) / 1000))" >>"$TMP/ops"
	return $rc
}

# op_summary: one line per loop and operation: how many succeeded and failed, and their
# mean and longest time.
op_summary() {
	[ -f "$TMP/ops" ] || return 0
	awk '{k = $1 " " $2; n[k]++; if ($3 == 0) ok[k]++; t[k] += $4; if ($4 > mx[k]) mx[k] = $4}
		END {for (k in n) printf "%s: %d ok, %d failed, mean %d ms, max %d ms\n", k, ok[k], n[k] - ok[k], t[k] / n[k], mx[k]}' "$TMP/ops" | sort
}

# no_hangs: no bounded command hung.
no_hangs() {
	[ ! -s "$TMP/hangs" ] || { cat "$TMP/hangs"; fail "commands hung"; }
}

# no_kernel_reports: the kernel log since the last kmsg_mark has no report (lockdep, WARNING,
# BUG, Oops, hung task...: scripts/check-kernel-log's list).
no_kernel_reports() {
	kmsg_since >"$TMP/kmsg"
	python3 "$RTHIN_TOP/scripts/check-kernel-log" "$TMP/kmsg" || fail "kernel reports during the test"
}

# wait_bounded SECONDS PID...: wait for the PIDs; fail if any is still running after SECONDS
# (times $SLOW: a hang; it is left running) or exited non-zero.
wait_bounded() {
	local limit=$(($1 * SLOW + SECONDS)) p rc=0
	shift
	for p in "$@"; do
		while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $limit ]; do sleep 1; done
		if kill -0 "$p" 2>/dev/null; then
			echo "process $p still running: $(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null)"
			echo "hung: process $p" >>"$TMP/hangs"
			rc=1
		else
			wait "$p" || rc=1
		fi
	done
	return $rc
}

# remove_bounded NAME: dmsetup remove NAME, failing the test if it has not returned after
# 60 s, times $SLOW (the dmsetup is left behind, its output not tied to the test's, so that
# the suite goes on to its next test).
remove_bounded() {
	local pid t0=$SECONDS
	dmsetup remove "$1" >/dev/null 2>"$TMP/remove.err" </dev/null &
	pid=$!
	while kill -0 $pid 2>/dev/null; do
		if [ $((SECONDS - t0)) -ge $((60 * SLOW)) ]; then
			echo "hung: dmsetup remove $1" >>"$TMP/hangs"
			fail "dmsetup remove $1 has not returned after $((60 * SLOW)) s"
			return 1
		fi
		sleep 0.5
	done
	wait $pid || { cat "$TMP/remove.err"; fail "dmsetup remove $1 failed"; }
}

# dump_blocks METADATA DEV_ID: the virtual blocks thin_dump shows mapped in DEV_ID, one a line.
dump_blocks() { thin_mappings "$1" | awk -v d="$2" '$1 == d { for (i = 3; i <= NF; i++) print $i }'; }

# dev_ids METADATA: the thin device ids thin_dump lists, space-separated.
dev_ids() { dump_summary "$1" | awk '{print $2}' | paste -sd' '; }

# ---------------------------------------------------------------------------------------
# Seeds 000 and 001: AB-BA deadlocks between a global lock and per-device locks (Docker's
# devmapper DeviceSet dropping the global lock while holding a device's; libvirt taking the
# domain and nwfilter-update locks in two orders). In rthin the same shape is the pool
# registry (global, rank 3) against a pool's metadata lock (rank 2) and dm's per-device
# suspend/table locks. Concurrent loops drive every path that takes them, in random orders,
# while fio writes and verifies on two thins of the pool:
#   thins:  create_thin, activate, write, suspend/resume, reload, delete-while-active
#           (must be refused), remove, delete;
#   snaps:  suspend the origin (fio running on it), create_snap, resume, activate the
#           snapshot, read, remove, delete;
#   pool:   suspend/resume the pool, reload its table, reserve/release a metadata snapshot,
#           set_transaction_id, status;
#   pool2:  a second pool (the registry) created, a thin on it activated and written, the
#           pool reloaded, suspended, refused removal while its thin is open, removed.
# Checks: no command hangs (lockdep reports any inversion that did not deadlock), fio
# verifies every run, every loop made progress, deleting an open thin was always refused,
# the transaction id counts the set_transaction_id calls, and after teardown both pools'
# metadata pass thin_check and list exactly the devices that should remain.

loop_thins() {
	set +eE
	trap - ERR
	RANDOM=$1
	local n=0 id
	while [ $SECONDS -lt $deadline ]; do
		id=$((10 + n % 8)) n=$((n + 1))
		op thins create_thin dmsetup message rt_pool 0 create_thin $id || continue
		if op thins activate dmsetup create rt_c --table "$(thin_line rt_pool $id)"; then
			for step in $(printf '%s\n' write suspend reload delete_open status | shuf --random-source=<(yes $RANDOM)); do
				case $step in
				write) op thins write dd if=/dev/urandom of=/dev/mapper/rt_c bs=64K count=2 seek=$((RANDOM % 64)) oflag=direct status=none ;;
				suspend) op thins suspend dmsetup suspend rt_c; op thins resume dmsetup resume rt_c ;;
				reload) op thins reload dmsetup reload rt_c --table "0 $THIN_SECTORS $THIN_TGT /dev/mapper/rt_pool $id"
					op thins reload_resume dmsetup resume rt_c ;;
				delete_open) if bounded dmsetup message rt_pool 0 delete $id 2>/dev/null; then echo "deleted open thin $id" >>"$TMP/bad"; fi ;;
				status) op thins status dmsetup status rt_c ;;
				esac
			done
			op thins remove dmsetup remove --retry rt_c
		fi
		for i in 1 2 3 4 5; do op thins delete dmsetup message rt_pool 0 delete $id && break; sleep 0.2; done
	done
}

loop_snaps() {
	set +eE
	trap - ERR
	RANDOM=$1
	local n=0 id
	while [ $SECONDS -lt $deadline ]; do
		id=$((30 + n % 8)) n=$((n + 1))
		op snaps suspend_origin dmsetup suspend rt_io1
		op snaps create_snap dmsetup message rt_pool 0 create_snap $id 1
		op snaps resume_origin dmsetup resume rt_io1
		if op snaps activate dmsetup create rt_s --table "$(thin_line rt_pool $id)"; then
			op snaps read dd if=/dev/mapper/rt_s of=/dev/null bs=64K count=16 skip=$((RANDOM % 64)) iflag=direct status=none
			[ $((RANDOM % 2)) = 0 ] && op snaps status dmsetup status rt_s
			op snaps remove dmsetup remove --retry rt_s
		fi
		for i in 1 2 3 4 5; do op snaps delete dmsetup message rt_pool 0 delete $id && break; sleep 0.2; done
	done
}

loop_pool() {
	set +eE
	trap - ERR
	RANDOM=$1
	local cur
	while [ $SECONDS -lt $deadline ]; do
		case $((RANDOM % 5)) in
		0) op pool suspend dmsetup suspend rt_pool; sleep 0.$((RANDOM % 5)); op pool resume dmsetup resume rt_pool ;;
		1) op pool reload dmsetup reload rt_pool --table "$p1_table"; op pool reload_resume dmsetup resume rt_pool ;;
		2) op pool reserve_msnap dmsetup message rt_pool 0 reserve_metadata_snap; op pool status dmsetup status rt_pool
		   op pool release_msnap dmsetup message rt_pool 0 release_metadata_snap ;;
		3) cur=$(status_field rt_pool 1)
		   op pool set_transaction_id dmsetup message rt_pool 0 set_transaction_id "$cur" $((cur + 1)) && echo x >>"$TMP/txids" ;;
		4) op pool status dmsetup status; op pool table dmsetup table ;;
		esac
	done
}

loop_pool2() {
	set +eE
	trap - ERR
	RANDOM=$1
	local n=0
	while [ $SECONDS -lt $deadline ]; do
		n=$((n + 1))
		op pool2 create dmsetup create rt_pool2 --table "$p2_table" || { sleep 1; continue; }
		op pool2 create_thin dmsetup message rt_pool2 0 create_thin $n
		if op pool2 activate dmsetup create rt_p2t --table "$(thin_line rt_pool2 $n)"; then
			op pool2 write dd if=/dev/urandom of=/dev/mapper/rt_p2t bs=64K count=4 oflag=direct status=none
			case $((RANDOM % 3)) in
			0) op pool2 reload dmsetup reload rt_pool2 --table "$p2_table"; op pool2 reload_resume dmsetup resume rt_pool2 ;;
			1) op pool2 suspend dmsetup suspend rt_pool2; op pool2 resume dmsetup resume rt_pool2 ;;
			2) if bounded dmsetup remove rt_pool2 2>/dev/null; then echo "removed pool2 under its open thin" >>"$TMP/bad"; fi ;;
			esac
			op pool2 remove_thin dmsetup remove --retry rt_p2t
		fi
		op pool2 delete dmsetup message rt_pool2 0 delete $n
		op pool2 remove dmsetup remove --retry rt_pool2
	done
}

loop_fio() {
	set +eE
	trap - ERR
	local runs=0 t0 times=
	# (A run takes 10-40 s under TCG, times $SLOW: none starts in the last 15 s.)
	while [ $SECONDS -lt $((deadline - 15)) ]; do
		t0=$SECONDS
		if ! fio_verify "$1" --name="$1" >"$TMP/fio.$1.out" 2>&1; then
			cat "$TMP/fio.$1.out" >>"$TMP/bad"
			echo "fio on $1: a run failed or verify found bad data" >>"$TMP/bad"
		fi
		runs=$((runs + 1)) times="$times $((SECONDS - t0))s"
	done
	echo "fio $1: $runs verified runs:$times"
}

t_lock_order_churn() {
	load_targets
	local msz=$((64 * 2048)) dsz=$((512 * 2048)) pids=() loop n
	dd if=/dev/zero of="$META_DEV" bs=1M count=4 oflag=direct status=none
	dd if=/dev/zero of="$META_DEV" bs=1M count=4 seek=64 oflag=direct status=none
	dmsetup create rt_m1 --table "0 $msz linear $META_DEV 0"
	dmsetup create rt_m2 --table "0 $msz linear $META_DEV $msz"
	dmsetup create rt_d1 --table "0 $dsz linear $DATA_DEV 0"
	dmsetup create rt_d2 --table "0 $dsz linear $DATA_DEV $dsz"
	p1_table="0 $dsz $POOL_TGT /dev/mapper/rt_m1 /dev/mapper/rt_d1 $BS 32"
	p2_table="0 $dsz $POOL_TGT /dev/mapper/rt_m2 /dev/mapper/rt_d2 $BS 32"
	dmsetup create rt_pool --table "$p1_table"
	msg create_thin 0
	msg create_thin 1
	make_thin rt_io0 0
	make_thin rt_io1 1
	echo "seed $SEED; loops run ${CHURN_SECS}s"
	kmsg_mark
	rm -f "$TMP/ops" "$TMP/hangs"                   # (the scratch directory is the suite's)
	: >"$TMP/bad"
	: >"$TMP/txids"
	deadline=$((SECONDS + CHURN_SECS))
	# (Each loop's output goes to a file: a loop stuck in the kernel must not hold the
	# test's output open.)
	loop_fio rt_io0 >"$TMP/loop.fio0" 2>&1 & pids+=($!)
	loop_fio rt_io1 >"$TMP/loop.fio1" 2>&1 & pids+=($!)
	loop_thins $((SEED + 1)) >"$TMP/loop.thins" 2>&1 & pids+=($!)
	loop_snaps $((SEED + 2)) >"$TMP/loop.snaps" 2>&1 & pids+=($!)
	loop_pool $((SEED + 3)) >"$TMP/loop.pool" 2>&1 & pids+=($!)
	loop_pool2 $((SEED + 4)) >"$TMP/loop.pool2" 2>&1 & pids+=($!)
	wait_bounded $((CHURN_SECS + 150)) "${pids[@]}" || true
	cat "$TMP"/loop.*
	op_summary
	no_hangs
	[ ! -s "$TMP/bad" ] || { cat "$TMP/bad"; fail "wrong results under churn"; }
	for loop in thins snaps pool pool2; do
		n=$(awk -v l=$loop '$1 == l && $3 == 0' "$TMP/ops" | wc -l)
		[ "$n" -ge 5 ] || fail "loop $loop made no progress ($n operations succeeded)"
	done
	n=$(wc -l <"$TMP/txids")
	[ "$(status_field rt_pool 1)" = "$n" ] ||
		fail "transaction id $(status_field rt_pool 1) after $n successful set_transaction_id"
	msg release_metadata_snap 2>/dev/null || true
	remove_bounded rt_io0
	remove_bounded rt_io1
	remove_bounded rt_pool
	! dmsetup info rt_pool2 >/dev/null 2>&1 || remove_bounded rt_pool2
	check_meta /dev/mapper/rt_m1
	check_meta /dev/mapper/rt_m2
	[ "$(dev_ids /dev/mapper/rt_m1)" = "0 1" ] || fail "pool 1 has devices $(dev_ids /dev/mapper/rt_m1), expected 0 1"
	[ -z "$(dev_ids /dev/mapper/rt_m2)" ] || fail "pool 2 has devices $(dev_ids /dev/mapper/rt_m2), expected none"
	no_kernel_reports
}

# ---------------------------------------------------------------------------------------
# Seed 002: dm core destroyed a mapped device from dm_put(), which the completion of its
# last request could call in interrupt context. Here thin devices (and their pool) are
# removed exactly as their last bios complete: the data device is a dm-delay that holds
# every read and write 300 ms, and the bios' completions come from virtio's interrupt
# (through dm-delay and the thin's end_io). Three ways, iterated:
#   retry:    a write in flight, `dmsetup remove --retry` spinning until its writer closes;
#   deferred: fio reads in flight (iodepth 16) and `dmsetup remove --deferred`, so the
#             device goes at the last close, right after the last completion;
#   suspend:  a write in flight, `dmsetup suspend` (waits for it), then remove;
#   pool:     a write provisioning a new block (zeroing held too), the thin removed, and
#             the pool removed at once, then both made again.
# Checks: every remove succeeds and the device is gone, every write succeeded and reads
# back (model), thin_check is clean, and no kernel report.

t_remove_as_bios_complete() {
	load_targets
	delayed_data 300 300
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	model_new rt_thin
	put rt_thin 0 $((16 * BB))                     # blocks 0-15 mapped
	dmsetup remove rt_thin
	kmsg_mark
	local i how pid t0 ways="retry deferred suspend pool" counts=""
	for i in $(seq 1 12); do
		how=$(echo $ways | cut -d' ' -f$(((i - 1) % 4 + 1)))
		make_thin rt_thin 0
		head -c 4096 /dev/urandom >"$TMP/w$i"
		local off=$(((i % 16) * BB + (i % 8) * 4096))
		case $how in
		retry)
			dd if="$TMP/w$i" of=/dev/mapper/rt_thin bs=4096 seek=$off oflag=direct,seek_bytes status=none &
			pid=$!
			sleep 0.1
			bounded dmsetup remove --retry rt_thin 2>/dev/null || fail "remove --retry failed"
			wait $pid || fail "the write in flight failed"
			;;
		deferred)
			# (dd opens the device once; fio would re-create the path as a file once
			# the node is gone.) 1 MiB reads: 16 bios in flight, one per block.
			dd if=/dev/mapper/rt_thin of="$TMP/r$i" bs=1M count=2 iflag=direct status=none &
			pid=$!
			sleep 0.2
			bounded dmsetup remove --deferred rt_thin || fail "remove --deferred failed"
			wait $pid || fail "the reads in flight failed"
			cmp "$TMP/r$i" <(head -c $((2 << 20)) "$TMP/rt_thin.model") || fail "the reads in flight returned wrong data"
			off=
			;;
		suspend)
			dd if="$TMP/w$i" of=/dev/mapper/rt_thin bs=4096 seek=$off oflag=direct,seek_bytes status=none &
			pid=$!
			sleep 0.1
			bounded dmsetup suspend rt_thin || fail "suspend failed"
			wait $pid || fail "the write in flight failed"
			bounded dmsetup remove rt_thin || fail "remove of the suspended thin failed"
			;;
		pool)
			off=$(((100 + i) * BB + 8192))      # a new block: zeroed, then written
			dd if="$TMP/w$i" of=/dev/mapper/rt_thin bs=4096 seek=$off oflag=direct,seek_bytes status=none &
			pid=$!
			sleep 0.2
			bounded dmsetup remove --retry rt_thin 2>/dev/null || fail "remove --retry failed"
			bounded dmsetup remove rt_pool || fail "removing the pool after its last thin failed"
			wait $pid || fail "the write in flight failed"
			dmsetup create rt_pool --table "$(pool_table)"
			;;
		esac
		[ -z "$off" ] || dd if="$TMP/w$i" of="$TMP/rt_thin.model" bs=4096 seek=$off oflag=seek_bytes conv=notrunc status=none
		t0=$SECONDS
		while dmsetup info rt_thin >/dev/null 2>&1 && [ $((SECONDS - t0)) -lt 10 ]; do sleep 0.2; done
		! dmsetup info rt_thin >/dev/null 2>&1 || fail "rt_thin still exists after its removal ($how)"
		[ ! -e /dev/mapper/rt_thin ] || [ -b /dev/mapper/rt_thin ] || fail "/dev/mapper/rt_thin is not a device node"
	done
	echo "12 removals ($ways) as the last bios completed"
	make_thin rt_thin 0
	same rt_thin 0 $((16 * BB))
	same rt_thin $((100 * BB)) $((20 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
	no_kernel_reports
}

# ---------------------------------------------------------------------------------------
# Seed 003: dm-snapshot's COW throttling slept (waiting for kcopyd) holding a read lock that
# a constructor wanted for writing, while kcopyd's completion needed that read lock. rthin's
# equivalents: snapshot breaks are kcopyd copies that hold cells, and the pool's suspend,
# messages and thin constructors take the metadata and registry locks. A snapshot-break
# storm (16 writers, each 4 KiB write into a different shared 64 KiB block, so every one is
# a copy: 384 of them) runs on a data device whose writes dm-delay holds 250 ms (reads 20 ms), while the
# pool is suspended and resumed again and again and snapshots are created, activated and
# removed. Checks: the storm completes, the origin reads back as written and the snapshot as
# before, the pool counts exactly the blocks broken, thin_check is clean, no kernel report.

storm() {
	python3 - "$@" <<-'PY'
	import mmap, os, sys, threading
	dev, src, nblocks, bb, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
	data = open(src, "rb").read()
	errors = []
	def work(t):
	    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
	    buf = mmap.mmap(-1, 4096)
	    try:
	        for b in range(t, nblocks, threads):
	            buf[:] = data[b * 4096:(b + 1) * 4096]
	            os.pwrite(fd, buf, b * bb + (b % 16) * 4096)
	    except OSError as e:
	        errors.append(e)
	    os.close(fd)
	ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
	for t in ts: t.start()
	for t in ts: t.join()
	if errors:
	    sys.exit("storm: %d writers failed: %s" % (len(errors), errors[0]))
	PY
}

t_cow_storm_suspend() {
	rm -f "$TMP/hangs"
	load_targets
	delayed_data 250 20
	make_pool
	msg create_thin 0
	make_thin rt_thin 0
	local nb=384 spid cycles=0 snaps=0 b t0
	head -c $((nb * BB)) /dev/urandom >"$TMP/orig"
	dd if="$TMP/orig" of=/dev/mapper/rt_thin bs=1M oflag=direct status=none
	dmsetup suspend rt_thin
	msg create_snap 1 0
	dmsetup resume rt_thin
	make_thin rt_snap 1
	head -c $((nb * 4096)) /dev/urandom >"$TMP/new"
	kmsg_mark
	t0=$SECONDS
	storm /dev/mapper/rt_thin "$TMP/new" $nb $BB 16 &
	spid=$!
	while kill -0 $spid 2>/dev/null && [ $((SECONDS - t0)) -lt 240 ]; do
		bounded dmsetup suspend rt_pool || fail "suspending the pool failed"
		sleep 0.3
		bounded dmsetup resume rt_pool || fail "resuming the pool failed"
		cycles=$((cycles + 1))
		if [ $((cycles % 2)) = 0 ]; then        # a snapshot of the snapshot (no IO on it)
			bounded dmsetup message rt_pool 0 create_snap $((100 + cycles)) 1 || fail "create_snap during the storm failed"
			bounded dmsetup create rt_ss --table "$(thin_line rt_pool $((100 + cycles)))" ||
				fail "activating a snapshot during the storm failed"
			bounded dmsetup remove rt_ss || fail "removing a snapshot during the storm failed"
			bounded dmsetup message rt_pool 0 delete $((100 + cycles)) || fail "deleting a snapshot during the storm failed"
			snaps=$((snaps + 1))
		fi
		sleep 0.3
	done
	wait_bounded 30 $spid || fail "the snapshot-break storm failed or did not finish"
	echo "storm: $nb breaks in $((SECONDS - t0)) s, $cycles pool suspend/resume cycles, $snaps snapshots made and removed"
	[ $cycles -ge 3 ] || fail "only $cycles suspend/resume cycles during the storm: the test's timing does not hold"
	no_hangs
	python3 - "$TMP/orig" "$TMP/new" "$TMP/want" $nb $BB <<-'PY'
	import sys
	orig, new, want, nb, bb = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
	w, n = bytearray(open(orig, "rb").read()), open(new, "rb").read()
	for b in range(nb):
	    o = b * bb + (b % 16) * 4096
	    w[o:o + 4096] = n[b * 4096:(b + 1) * 4096]
	open(want, "wb").write(w)
	PY
	cmp <(dd if=/dev/mapper/rt_thin bs=1M count=$((nb * BB >> 20)) iflag=direct status=none) "$TMP/want" ||
		fail "the origin does not read back as written"
	cmp <(dd if=/dev/mapper/rt_snap bs=1M count=$((nb * BB >> 20)) iflag=direct status=none) "$TMP/orig" ||
		fail "the snapshot changed"
	echo "pool: $(dmsetup status rt_pool)"
	expect_used $((2 * nb))
	# Removing the pool after the storm hung for good in rthin at c70bcce (4 runs in 6):
	# `dmsetup remove rt_pool` blocked in the pool's Owner<PoolCore> drop, waiting for a
	# reference that a waker kick racing with cancel_delayed_work_sync had leaked (fixed by
	# fdb27dc; c70bcce with that fix, and fdb27dc, passed 6 runs in 6 each). Bounded, so that
	# a hang fails this test and the suite goes on.
	remove_bounded rt_thin
	remove_bounded rt_snap
	remove_bounded rt_pool
	check_meta
	expect_dump "device 0 mapped_blocks=$nb counted=$nb blocks=0-$((nb - 1))" \
		"device 1 mapped_blocks=$nb counted=$nb blocks=0-$((nb - 1))"
	no_kernel_reports
}

# ---------------------------------------------------------------------------------------
# Seed 004: dm-thin's abort re-created its dm-bufio client (registering a shrinker) under
# its metadata lock while the shrinker lock was held by drop_caches waiting for IO that
# needed the pool: an AB-BA deadlock. Here the abort happens while the shrinkers run:
# `echo 3 > /proc/sys/vm/drop_caches` in a loop and a memory hog, with writers provisioning
# new blocks, when the metadata device's table is swapped (one resume) for one that fails
# every write (dm-flakey error_writes: the pool goes read-only, as dm-thin) or every IO
# (dm-error: the abort cannot reread the superblock, the pool goes to failure mode).
# Checks: no hang and no lockdep report; the pool's mode is dm-thin's; committed data still
# reads (read-only); afterwards the metadata on disk is the last commit: thin_check clean,
# thin_repair gives the same mappings, and the pool opens again read-write.

shrinker_loops() {
	( set +eE; while [ ! -e "$TMP/stop" ]; do echo 3 >/proc/sys/vm/drop_caches; sleep 0.05; done ) &
	shrink_pids=($!)
	( set +eE
	  while [ ! -e "$TMP/stop" ]; do
		# (256 MiB a round: a bigger hog's first touch of guest memory stalls the TCG
		# guest's vCPUs long enough for soft-lockup reports, the host being a VM too.)
		python3 -c 'b = bytearray(256 << 20); b[::4096] = b"\x01" * (len(b) // 4096)' 2>/dev/null
		sleep 0.2
	  done ) &
	shrink_pids+=($!)
}

writers() {
	local w
	for w in 1 2 3; do
		( set +eE; b=$((200 + w * 100))
		  while [ ! -e "$TMP/stop" ] && [ $b -lt $((300 + w * 100)) ]; do
			echo $b >>"$TMP/tried"
			dd if=/dev/urandom of=/dev/mapper/rt_thin bs=4096 count=1 seek=$((b * 16)) oflag=direct conv=fsync status=none 2>/dev/null &&
				echo $b >>"$TMP/flushed"
			b=$((b + 1))
		  done ) &
		shrink_pids+=($!)
	done
}

abort_round() {
	local how=$1 msz mode t0 want lost
	rm -f "$TMP/hangs"
	load_targets
	kmod dm-flakey
	no_periodic_commits
	msz=$(sectors "$META_DEV")
	meta_on_linear
	if [ "$how" = fail ]; then
		dmsetup reload rt_meta --table "0 $msz error"
	fi
	model_new rt_thin
	put rt_thin 0 $((8 * BB))
	sync_dev rt_thin                                 # committed: blocks 0-7
	kmsg_mark
	rm -f "$TMP/stop"
	: >"$TMP/tried"
	: >"$TMP/flushed"
	shrinker_loops
	writers
	sleep 1
	t0=$SECONDS
	dmsetup resume rt_meta                           # metadata IO fails from now on
	! bounded dmsetup message rt_pool 0 create_thin 5 2>/dev/null || fail "a message's commit succeeded on a failing metadata device"
	want=ro
	[ "$how" = fail ] && want=Fail
	while mode=$(dmsetup status rt_pool | awk '{print ($4 == "Fail") ? "Fail" : $8}'); [ "$mode" != $want ] && [ $((SECONDS - t0)) -lt 30 ]; do
		sleep 0.5
	done
	echo "pool after the abort ($how): $(dmsetup status rt_pool)"
	kmsg_since | grep 'device-mapper' | sed 's/^\[[ 0-9.]*\] //' | sort | uniq -c | sort -rn | head -8
	[ "$mode" = $want ] || fail "pool mode '$mode', expected '$want' as dm-thin"
	# The mode change is logged in dm-thin's words, which log watchers look for (rthin said
	# "failure mode" before, where dm-thin says "fail mode").
	local said="switching pool to read-only mode"
	[ "$how" = fail ] && said="switching pool to fail mode"
	kmsg_since | grep -q "$LOG_PFX: .*$said" || fail "no '$said' in the kernel log"
	sleep 1                                          # the shrinkers keep running on the aborted pool
	if [ "$how" = ro ]; then
		same rt_thin 0 $((8 * BB))               # committed data still reads
		! dd if=/dev/zero of=/dev/mapper/rt_thin bs=4096 count=1 seek=$((50 * 16)) oflag=direct status=none 2>/dev/null ||
			fail "a write to a new block succeeded on the read-only pool"
	else
		! dd if=/dev/mapper/rt_thin of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null ||
			fail "a read succeeded on the failed pool"
	fi
	! bounded dmsetup message rt_pool 0 create_thin 6 2>/dev/null || fail "the aborted pool accepted a message"
	touch "$TMP/stop"
	wait_bounded 60 "${shrink_pids[@]}" || true
	no_hangs
	teardown_meta_on_linear
	check_meta
	echo "on disk: $(dump_summary | paste -sd' '); writers: $(wc -l <"$TMP/flushed") blocks flushed of $(wc -l <"$TMP/tried") tried"
	# Blocks 0-7 and every block whose write and fsync succeeded before the fault are
	# mapped; nothing else but blocks the writers tried.
	dump_blocks "$META_DEV" 0 >"$TMP/mapped"
	(seq 0 7; cat "$TMP/flushed") | sort -n >"$TMP/must"
	(seq 0 7; cat "$TMP/tried") | sort -n >"$TMP/may"
	lost=$(comm -23 "$TMP/must" <(sort -n "$TMP/mapped") | paste -sd' ')
	if [ -n "$lost" ] && upstream && [ "$how" = ro ]; then
		# An upstream dm-thin bug (6.12 source), not this test's: __commit_transaction
		# clears each thin's 'changed' flag (__write_changed_details) before it writes the
		# superblock. When that commit then fails, the abort records aborted_with_changes =
		# false, and a later flush to the read-only pool passes with no commit
		# (bio_triggers_commit is false): an fsync succeeds for a write the abort threw
		# away. Seen in make check-long (1 run of 1); rthin fails such a flush.
		echo "XFAIL (upstream dm-thin): flushed blocks lost: $lost"
	else
		[ -z "$lost" ] || fail "flushed blocks lost: $lost"
	fi
	[ -z "$(comm -13 "$TMP/may" <(sort -n "$TMP/mapped"))" ] ||
		fail "blocks mapped that nobody wrote: $(comm -13 "$TMP/may" <(sort -n "$TMP/mapped") | paste -sd' ')"
	truncate -s 64M "$TMP/repaired"
	thin_repair -i "$META_DEV" -o "$TMP/repaired" || fail "thin_repair failed"
	check_meta "$TMP/repaired"
	[ "$(dump_summary "$TMP/repaired")" = "$(dump_summary)" ] || fail "thin_repair's metadata differs: $(dump_summary "$TMP/repaired")"
	dmsetup create rt_pool --table "$(pool_table)"
	[ "$(status_field rt_pool 5)" = rw ] || fail "reopened pool: $(dmsetup status rt_pool)"
	make_thin rt_thin 0
	same rt_thin 0 $((8 * BB))
	dmsetup remove rt_thin
	dmsetup remove rt_pool
	check_meta
	no_kernel_reports
}

t_abort_readonly_under_shrinker() { abort_round ro; }
t_abort_fail_under_shrinker() { abort_round fail; }

# ---------------------------------------------------------------------------------------
tests=(
	seeds_000_001_lock_order_churn:t_lock_order_churn
	seeds_002_remove_as_bios_complete:t_remove_as_bios_complete
	seeds_003_cow_storm_suspend:t_cow_storm_suspend
	seeds_004_abort_readonly_under_shrinker:t_abort_readonly_under_shrinker
	seeds_004_abort_fail_under_shrinker:t_abort_fail_under_shrinker
)
if [ $both = 1 ]; then
	# Each test on rthin, then on upstream dm-thin.
	on_rthin() { POOL_TGT=rthin-pool THIN_TGT=rthin LOG_PFX=rthin; }
	on_dmthin() { POOL_TGT=thin-pool THIN_TGT=thin LOG_PFX=thin; }
	all=()
	for tgt in rthin dmthin; do
		for t in "${tests[@]}"; do
			eval "${t#*:}_$tgt() { on_$tgt; ${t#*:}; }"
			all+=("${t%%:*}_$tgt:${t#*:}_$tgt")
		done
	done
	tests=("${all[@]}")
fi
# SEEDS_ONLY=REGEX: only the tests whose names match.
if [ -n "${SEEDS_ONLY:-}" ]; then
	all=()
	for t in "${tests[@]}"; do [[ ${t%%:*} =~ $SEEDS_ONLY ]] && all+=("$t"); done
	tests=("${all[@]}")
fi
run_suite "${tests[@]}"
