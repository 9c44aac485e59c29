#!/usr/bin/env bash
# The soak (issue 11, item 5): everything at once, for SOAK_SECS seconds (default 600).
# Three pools, each on its own dm-linear slices of META_DEV and DATA_DEV, each with two thin
# devices: rt_ioN (thin 0: fio, discards, snapshots) and rt_keepN (thin 1: written once with
# random data at the start, read back at the end). Concurrent loops run until the deadline:
#   fioN:        fio with crc32c verify on rt_ioN (thin_lib's fio_verify), run after run;
#   snaps:       a snapshot of rt_ioN or rt_keepN (the origin suspended around create_snap, as
#                dm-thin needs), activated, read (a keep snapshot compared with what was
#                written, then written to: a sharing break), removed and deleted;
#   discard:     writes and whole-block blkdiscards in a 16 MiB region of rt_ioN outside
#                fio's, each range read back against a model (discarded blocks read zeros);
#   reload:      table reloads (the same table) of pools and thins, with the resume that
#                swaps them in, and plain suspend/resume cycles, and status;
#   drop_caches: `echo 3 > /proc/sys/vm/drop_caches` (the shrinkers, dm-bufio's among them);
#   churn:       a fourth pool and a thin on it created, written, read back and removed again
#                and again, so that the module's reference count goes up and down.
# Every command is bounded by `timeout` (a hang fails the test; limits scale by SLOW) and
# counted: each loop prints its operations done and failed.
# End checks: every operation succeeded (fio verified each run), every loop made progress;
# after teardown thin_check is clean on each pool's metadata; each pool reactivated, its keep
# thin and its discard region read back byte for byte (and the churn thin's data); the
# device list is what it was before the test (empty in a fresh guest); the module's reference
# count is back to its start value and `rmmod` succeeds; no kernel report (lockdep, WARNING,
# BUG, KASAN, hung task... scripts/check-kernel-log) in the log since the test started.
#
# Tests: soak_rthin (rthin-pool/rthin) and soak_dmthin (upstream thin-pool/thin: the same
# scenario, the reference); SOAK_ONLY=REGEX runs only the tests whose names match, and
# POOL_TGT/THIN_TGT in the environment run one target only, as seeds.sh. SOAK_SEED fixes the
# loops' random choices (printed; the interleaving still follows the clock). While a test
# runs, its progress goes to $RTHIN_RESULTS/soak.log every 30 s, to watch from the host.
here=${here:-$(cd "$(dirname "$0")" && pwd)}
both=1
[ -n "${THIN_TGT:-}" ] && both=0
. "$here/lib.sh"        # (it changes into a scratch directory)
. "$here/thin_lib.sh"

SOAK_SECS=${SOAK_SECS:-600}
SOAK_SEED=${SOAK_SEED:-$(( $(date +%s) % 100000 ))}
NPOOLS=3
MSZ=$((64 * 2048))                      # a pool's metadata slice of META_DEV, sectors
DSZ=$((512 * 2048))                     # a pool's data slice of DATA_DEV, sectors
CMSZ=$((32 * 2048))                     # the churn pool's slices, after the pools'
CDSZ=$((256 * 2048))
KEEP_BYTES=$((16 << 20))                # what rt_keepN holds from the start
SCR_OFF=$((256 << 20))                  # rt_ioN's discard region (fio works in its first 8 MiB)
SCR_BLOCKS=256                          # ... 16 MiB
CHURN_BLOCKS=64                         # the churn thin's region, 4 MiB
FIO_BYTES=$((8 << 20))                  # what one fio_verify run writes and verifies

pool_line() { echo "0 $DSZ $POOL_TGT /dev/mapper/rt_m$1 /dev/mapper/rt_d$1 $BS 32"; }
cpool_line() { echo "0 $CDSZ $POOL_TGT /dev/mapper/rt_mc /dev/mapper/rt_dc $BS 32"; }
# thin_line POOL ID: the table of thin device ID of POOL (1 GiB).
thin_line() { echo "0 $THIN_SECTORS $THIN_TGT /dev/mapper/$1 $2"; }
# The module that serves the targets under test: its reference count is checked.
target_module() { if upstream; then echo dm_thin_pool; else echo rthin; fi; }

# (seeds.sh has helpers of the same shape; it is not sourced, so the soak has its own, which
# also keep each failure's output and take a time limit.)

# bounded SECS CMD...: CMD (a program, not a shell function) given SECS s, times $SLOW; one
# still running then has hung: noted in $TMP/hangs, which fails the test.
bounded() {
	local secs=$1 rc=0
	shift
	timeout -k 10 $((secs * SLOW)) "$@" || rc=$?
	if [ $rc = 124 ] || [ $rc = 137 ]; then echo "hung (${secs}s): $*" >>"$TMP/hangs"; fi
	return $rc
}

# op [-t SECS] LOOP NAME CMD...: CMD, bounded (default 90 s: a command other than fio takes
# 1-2 s here under TCG with the loops going, 6 s at most in two 600 s runs; a hang is not a
# slow command), counted under LOOP and NAME in $TMP/ops (one "LOOP NAME rc ms" line a
# call); a failure's command and output go to $TMP/errors. Returns CMD's status.
op() {
	local secs=90 loop name rc=0 t0=${EPOCHREALTIME/./} out
	[ "$1" = -t ] && { secs=$2; shift 2; }
	loop=$1 name=$2
	shift 2
	out=$TMP/out.$loop
	bounded "$secs" "$@" >"$out" 2>&1 </dev/null || rc=$?
	echo "$loop $name $rc $(((${EPOCHREALTIME/./} - t0) / 1000))" >>"$TMP/ops"
	if [ $rc != 0 ]; then
		{ echo "$loop $name: exit $rc: $*"; head -n 40 "$out"; } >>"$TMP/errors"
	fi
	return $rc
}

# verify LOOP NAME DEV OFF LEN MODEL MOFF: the LEN bytes at byte OFF of /dev/mapper/DEV read
# back (direct IO) as the bytes at MOFF of the file MODEL; a read and a compare, counted as
# operations NAME_read and NAME of LOOP. Bytes that compared equal are added up in the file
# $VERIFIED.
verify() {
	local loop=$1 name=$2 dev=$3 off=$4 len=$5 model=$6 moff=$7
	op "$loop" "${name}_read" dd if="/dev/mapper/$dev" of="$TMP/got.$loop" bs=64K skip="$off" count="$len" \
		iflag=direct,skip_bytes,count_bytes status=none || return 1
	dd if="$model" of="$TMP/want.$loop" bs=64K skip="$moff" count="$len" iflag=skip_bytes,count_bytes status=none
	op "$loop" "$name" cmp "$TMP/got.$loop" "$TMP/want.$loop" || return 1
	echo "$len" >>"$VERIFIED"
}

# write_chunk LOOP NAME DEV OFF LEN MODEL MOFF: LEN random bytes written at OFF of
# /dev/mapper/DEV (direct IO) and, once the write succeeded, at MOFF of MODEL.
write_chunk() {
	local loop=$1 name=$2 dev=$3 off=$4 len=$5 model=$6 moff=$7
	head -c "$len" /dev/urandom >"$TMP/chunk.$loop"
	op "$loop" "$name" dd if="$TMP/chunk.$loop" of="/dev/mapper/$dev" bs="$len" count=1 seek="$off" \
		oflag=direct,seek_bytes status=none || return 1
	dd if="$TMP/chunk.$loop" of="$model" bs="$len" count=1 seek="$moff" oflag=seek_bytes conv=notrunc status=none
}

# locked DEV FUNCTION ARGS...: FUNCTION ARGS run holding DEV's lock, so that two loops never
# interleave their suspend and resume of one device (one loop's resume would end the
# suspend another's create_snap relies on). Waiting 120 s (times $SLOW) for it is a hang.
locked() {
	local dev=$1 fd rc=0
	shift
	exec {fd}>"$TMP/lock.$dev"
	if ! flock -w $((120 * SLOW)) "$fd"; then
		echo "hung: waiting for $dev's lock to run $*" >>"$TMP/hangs"
		exec {fd}>&-
		return 1
	fi
	"$@" || rc=$?
	exec {fd}>&-
	return $rc
}

# A background loop runs without errexit: a failed operation is counted, and the loop goes on.
quiet_loop() { set +eE; trap - ERR; }

loop_fio() {
	quiet_loop
	local i=$1
	# (A run takes 25-50 s under TCG with the other loops going: none starts in the last
	# 15 s. fio_verify is a shell function: bash -c runs it under `timeout`.)
	while [ $SECONDS -lt $((deadline - 15)) ]; do
		op -t 300 "fio$i" verify bash -c 'fio_verify "$@"' fio_verify "rt_io$i" --name="soak$i"
	done
}

# snap_of LOOP POOL ID ORIGIN_NAME ORIGIN_ID: snapshot ID of the origin, suspended meanwhile.
snap_of() {
	local loop=$1 i=$2 id=$3 origin=$4 oid=$5 rc=0
	op "$loop" suspend_origin dmsetup suspend "$origin" || return 1
	op "$loop" create_snap dmsetup message "rt_pool$i" 0 create_snap "$id" "$oid" || rc=1
	op "$loop" resume_origin dmsetup resume "$origin" || rc=1
	return $rc
}

# (A snapshot is activated holding its pool's lock: dm-thin, and rthin as it, refuse to
# activate a thin device while its pool is suspended, as the reload loop leaves it at times.)
loop_snaps() {
	quiet_loop
	RANDOM=$1
	local n=0 i id off
	while [ $SECONDS -lt $deadline ]; do
		i=$((RANDOM % NPOOLS)) id=$((100 + n % 16)) n=$((n + 1))
		if [ $((n % 2)) = 0 ]; then
			# Of the fio thin: writes in flight while it suspends; the snapshot is read.
			locked "rt_io$i" snap_of snaps "$i" "$id" "rt_io$i" 0 &&
			if locked "rt_pool$i" op snaps activate dmsetup create rt_snap --table "$(thin_line "rt_pool$i" "$id")"; then
				op snaps read dd if=/dev/mapper/rt_snap of=/dev/null bs=64K count=16 \
					skip=$((RANDOM % 128)) iflag=direct status=none
				op snaps remove dmsetup remove rt_snap
			fi
		else
			# Of the keep thin: a 1 MiB window compared with what was written, then a
			# 64 KiB write into the snapshot (a sharing break; the origin must not change).
			locked "rt_keep$i" snap_of snaps "$i" "$id" "rt_keep$i" 1 &&
			if locked "rt_pool$i" op snaps activate dmsetup create rt_snap --table "$(thin_line "rt_pool$i" "$id")"; then
				off=$(((RANDOM % (KEEP_BYTES / BB - 16)) * BB))
				verify snaps keep_snap rt_snap $off $((1 << 20)) "$TMP/keep$i" $off
				op snaps break dd if=/dev/urandom of=/dev/mapper/rt_snap bs=64K count=1 \
					seek=$((RANDOM % (KEEP_BYTES / BB))) oflag=direct status=none
				op snaps remove dmsetup remove rt_snap
			fi
		fi
		op snaps delete dmsetup message "rt_pool$i" 0 delete "$id"
	done
}

loop_discard() {
	quiet_loop
	RANDOM=$1
	local i b n off len s
	while [ $SECONDS -lt $deadline ]; do
		i=$((RANDOM % NPOOLS)) b=$((RANDOM % SCR_BLOCKS)) n=$((1 + RANDOM % 8))
		[ $((b + n)) -le $SCR_BLOCKS ] || n=$((SCR_BLOCKS - b))
		off=$((SCR_OFF + b * BB)) len=$((n * BB))
		if [ $((RANDOM % 2)) = 0 ]; then
			# A write from a 4 KiB offset into the range's first block to its end.
			s=$(((RANDOM % (BB / 4096)) * 4096))
			write_chunk discard write "rt_io$i" $((off + s)) $((len - s)) "$TMP/scratch$i" $((off - SCR_OFF + s))
		else
			# Whole blocks: they are unmapped and read zeros (a discard of part of a block
			# may keep its data or not; the soak does not ask).
			op discard discard blkdiscard -o $off -l $len "/dev/mapper/rt_io$i" &&
				dd if=/dev/zero of="$TMP/scratch$i" bs=$BB count=$n seek=$b conv=notrunc status=none
		fi
		verify discard check "rt_io$i" $off $len "$TMP/scratch$i" $((off - SCR_OFF))
	done
}

# reload_dev LOOP KIND DEV TABLE: DEV's table reloaded (the same one) and swapped in by a resume.
reload_dev() {
	op "$1" "$2_reload" dmsetup reload "$3" --table "$4" && op "$1" "$2_reload_resume" dmsetup resume "$3"
}
# suspend_dev LOOP KIND DEV: DEV suspended for up to 0.4 s, then resumed.
suspend_dev() {
	op "$1" "$2_suspend" dmsetup suspend "$3"
	sleep 0.$((RANDOM % 5))
	op "$1" "$2_resume" dmsetup resume "$3"
}

loop_reload() {
	quiet_loop
	RANDOM=$1
	local i t id
	while [ $SECONDS -lt $deadline ]; do
		i=$((RANDOM % NPOOLS))
		if [ $((RANDOM % 2)) = 0 ]; then t=io id=0; else t=keep id=1; fi
		case $((RANDOM % 5)) in
		0) locked "rt_pool$i" reload_dev reload pool "rt_pool$i" "$(pool_line $i)" ;;
		1) locked "rt_$t$i" reload_dev reload thin "rt_$t$i" "$(thin_line "rt_pool$i" $id)" ;;
		2) locked "rt_pool$i" suspend_dev reload pool "rt_pool$i" ;;
		3) locked "rt_$t$i" suspend_dev reload thin "rt_$t$i" ;;
		# (Status of the soak's own devices by name: a bare `dmsetup status` lists the devices,
		# then asks for each, and fails on one another loop removed in between.)
		4) op reload pool_status dmsetup status "rt_pool$i"    # (a pool's status commits first)
		   op reload thin_status dmsetup status "rt_$t$i" ;;
		esac
		sleep 0.$((RANDOM % 5))
	done
}

loop_drop_caches() {
	quiet_loop
	while [ $SECONDS -lt $deadline ]; do
		op drop_caches drop_caches sh -c 'echo 3 >/proc/sys/vm/drop_caches'
		sleep 1
	done
}

# The churn pool, rt_cpool, and its thin 0, rt_cthin, exist only for a moment each round:
# each table takes a reference on the target's module and gives it back. A round writes
# 64 KiB and reads back a block of the thin's region: the data lives on across rounds.
loop_churn() {
	quiet_loop
	RANDOM=$1
	local n=0 b mod
	mod=$(target_module)
	while [ $SECONDS -lt $deadline ]; do
		n=$((n + 1))
		op churn pool_create dmsetup create rt_cpool --table "$(cpool_line)" || { sleep 1; continue; }
		if op churn thin_create dmsetup create rt_cthin --table "$(thin_line rt_cpool 0)"; then
			cat "/sys/module/$mod/refcnt" >>"$TMP/refs"
			b=$((RANDOM % CHURN_BLOCKS))
			write_chunk churn write rt_cthin $((b * BB)) $BB "$TMP/churn.model" $((b * BB))
			b=$((RANDOM % CHURN_BLOCKS))
			verify churn check rt_cthin $((b * BB)) $BB "$TMP/churn.model" $((b * BB))
			# A thin device made and deleted in the pool's metadata too.
			op churn create_thin dmsetup message rt_cpool 0 create_thin $((1 + n % 4)) &&
				op churn delete dmsetup message rt_cpool 0 delete $((1 + n % 4))
			op churn thin_remove dmsetup remove rt_cthin
		fi
		op churn pool_remove dmsetup remove rt_cpool
	done
}

# loop_summary: for each loop, its operations done and failed; then each operation's count,
# failures, mean and longest time.
loop_summary() {
	awk '{n[$1]++; if ($3 != 0) f[$1]++} END {for (l in n) printf "loop %s: %d operations, %d failed\n", l, n[l], f[l]}' \
		"$TMP/ops" | sort
	awk '{k = $1 " " $2; n[k]++; if ($3 == 0) ok[k]++; t[k] += $4; if ($4 > mx[k]) mx[k] = $4}
		END {for (k in n) printf "  %s: %d ok, %d failed, mean %d ms, max %d ms\n", k, ok[k], n[k] - ok[k], t[k] / n[k], mx[k]}' \
		"$TMP/ops" | sort
}

# progress: one line of operation counts per loop, appended to $RTHIN_RESULTS/soak.log.
progress() {
	{ printf '%s t=%ds/%ds:' "$name" $((SECONDS - t0)) "$SOAK_SECS"
	  awk '{n[$1]++; if ($3 != 0) f[$1]++} END {for (l in n) printf " %s %d/%d", l, n[l] - f[l], n[l]}' "$TMP/ops" 2>/dev/null
	  echo; } >>"$RTHIN_RESULTS/soak.log"
}

# wait_loops SECONDS PID...: wait for the loops; one still running after SECONDS (times
# $SLOW) has hung: noted, and left behind.
wait_loops() {
	local limit=$(($1 * SLOW + SECONDS)) p
	shift
	for p in "$@"; do
		while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $limit ]; do sleep 1; done
		if kill -0 "$p" 2>/dev/null; then
			echo "hung: loop process $p: $(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null)" >>"$TMP/hangs"
		else
			wait "$p" || true
		fi
	done
}

# remove_bounded NAME: dmsetup remove NAME, noting a hang after 60 s (times $SLOW).
remove_bounded() { bounded 60 dmsetup remove "$1" >/dev/null; }

sum_file() { awk '{s += $1} END {print s + 0}' "$1"; }

dm_names() { dmsetup info -c --noheadings -o name 2>/dev/null | grep -v '^No devices found' | sort | paste -sd' '; }

# soak_fail MESSAGE: an end check failed; the other checks still run.
soak_fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

t_soak() {
	load_targets
	local i mod ref0 devs0 pids=() loop ok name t0 fio_runs
	failures=0
	mod=$(target_module)
	name=soak_rthin
	upstream && name=soak_dmthin
	ref0=$(cat "/sys/module/$mod/refcnt")
	devs0=$(dm_names)
	echo "soak on $POOL_TGT/$THIN_TGT for ${SOAK_SECS}s, seed $SOAK_SEED (SOAK_SEED=$SOAK_SEED repeats the" \
		"loops' choices): $NPOOLS pools; $mod's refcount $ref0; devices before: ${devs0:-none}"
	kmsg_mark
	VERIFIED=$TMP/verified                          # the loops' reads compared
	rm -f "$TMP/ops" "$TMP/hangs" "$TMP/errors" "$TMP/refs"
	: >"$TMP/ops"
	: >"$VERIFIED"

	# Set-up: the slices (each pool's metadata wiped: a pool formats metadata that is all
	# zeros), the pools, their thins, and the keep thins' data, flushed.
	for i in $(seq 0 $((NPOOLS - 1))); do
		dd if=/dev/zero of="$META_DEV" bs=1M count=4 seek=$((i * MSZ / 2048)) oflag=direct status=none
		dmsetup create "rt_m$i" --table "0 $MSZ linear $META_DEV $((i * MSZ))"
		dmsetup create "rt_d$i" --table "0 $DSZ linear $DATA_DEV $((i * DSZ))"
		dmsetup create "rt_pool$i" --table "$(pool_line $i)"
		dmsetup message "rt_pool$i" 0 create_thin 0
		dmsetup message "rt_pool$i" 0 create_thin 1
		dmsetup create "rt_io$i" --table "$(thin_line "rt_pool$i" 0)"
		dmsetup create "rt_keep$i" --table "$(thin_line "rt_pool$i" 1)"
		head -c $KEEP_BYTES /dev/urandom >"$TMP/keep$i"
		dd if="$TMP/keep$i" of="/dev/mapper/rt_keep$i" bs=1M oflag=direct conv=fsync status=none
		rm -f "$TMP/scratch$i"
		truncate -s $((SCR_BLOCKS * BB)) "$TMP/scratch$i"     # a fresh thin reads zeros
	done
	dd if=/dev/zero of="$META_DEV" bs=1M count=4 seek=$((NPOOLS * MSZ / 2048)) oflag=direct status=none
	dmsetup create rt_mc --table "0 $CMSZ linear $META_DEV $((NPOOLS * MSZ))"
	dmsetup create rt_dc --table "0 $CDSZ linear $DATA_DEV $((NPOOLS * DSZ))"
	dmsetup create rt_cpool --table "$(cpool_line)"
	dmsetup message rt_cpool 0 create_thin 0
	dmsetup remove rt_cpool
	rm -f "$TMP/churn.model"
	truncate -s $((CHURN_BLOCKS * BB)) "$TMP/churn.model"

	# The loops. (Each one's output goes to a file: a loop stuck in the kernel must not
	# hold the test's output open.)
	export TMP
	export -f fio_verify
	t0=$SECONDS
	deadline=$((SECONDS + SOAK_SECS))
	for i in $(seq 0 $((NPOOLS - 1))); do
		loop_fio "$i" >"$TMP/loop.fio$i" 2>&1 & pids+=($!)
	done
	loop_snaps $((SOAK_SEED + 1)) >"$TMP/loop.snaps" 2>&1 & pids+=($!)
	loop_discard $((SOAK_SEED + 2)) >"$TMP/loop.discard" 2>&1 & pids+=($!)
	loop_reload $((SOAK_SEED + 3)) >"$TMP/loop.reload" 2>&1 & pids+=($!)
	loop_drop_caches >"$TMP/loop.drop_caches" 2>&1 & pids+=($!)
	loop_churn $((SOAK_SEED + 4)) >"$TMP/loop.churn" 2>&1 & pids+=($!)
	while [ $SECONDS -lt $deadline ]; do
		sleep 30
		progress
	done
	# (fio may have just started a run, which has its own 300 s limit.)
	wait_loops 330 "${pids[@]}"
	progress
	echo "loops ran $((SECONDS - t0)) s"
	cat "$TMP"/loop.* 2>/dev/null
	loop_summary

	# Every operation succeeded, none hung, every loop got work done.
	[ ! -s "$TMP/hangs" ] || { cat "$TMP/hangs"; soak_fail "commands hung"; }
	[ ! -s "$TMP/errors" ] || { head -n 120 "$TMP/errors"; soak_fail "$(wc -l <"$TMP/errors") lines of failed operations"; }
	for loop in fio0 fio1 fio2 snaps discard reload drop_caches churn; do
		ok=$(awk -v l=$loop '$1 == l && $3 == 0' "$TMP/ops" | wc -l)
		[ "$ok" -ge 1 ] || soak_fail "loop $loop got nothing done"
	done
	[ -s "$TMP/refs" ] && echo "$mod's refcount while the churn pool and thin were up: $(sort -n "$TMP/refs" | uniq -c | awk '{printf "%s%dx%d", s, $1, $2; s = " "}') (start $ref0)"

	# Teardown, thin_check, then each pool reactivated and its data read back.
	! dmsetup info rt_snap >/dev/null 2>&1 || remove_bounded rt_snap || soak_fail "removing a snapshot left behind"
	! dmsetup info rt_cthin >/dev/null 2>&1 || remove_bounded rt_cthin || soak_fail "removing the churn thin"
	! dmsetup info rt_cpool >/dev/null 2>&1 || remove_bounded rt_cpool || soak_fail "removing the churn pool"
	for i in $(seq 0 $((NPOOLS - 1))); do
		remove_bounded "rt_io$i" && remove_bounded "rt_keep$i" && remove_bounded "rt_pool$i" ||
			soak_fail "tearing down pool $i"
	done
	for i in $(seq 0 $((NPOOLS - 1))) c; do
		bounded 120 thin_check "/dev/mapper/rt_m$i" >"$TMP/check" 2>&1 ||
			{ cat "$TMP/check"; soak_fail "thin_check of pool $i's metadata after the soak"; }
	done
	VERIFIED=$TMP/verified.end                      # the final reads
	: >"$VERIFIED"
	for i in $(seq 0 $((NPOOLS - 1))); do
		bounded 60 dmsetup create "rt_pool$i" --table "$(pool_line $i)" &&
		bounded 60 dmsetup create "rt_io$i" --table "$(thin_line "rt_pool$i" 0)" &&
		bounded 60 dmsetup create "rt_keep$i" --table "$(thin_line "rt_pool$i" 1)" ||
			{ soak_fail "reactivating pool $i"; continue; }
		[ "$(status_field "rt_pool$i" 5)" = rw ] || soak_fail "pool $i reactivated: $(dmsetup status "rt_pool$i")"
		verify final keep "rt_keep$i" 0 $KEEP_BYTES "$TMP/keep$i" 0 ||
			soak_fail "pool $i: the keep thin does not read back as written at the start"
		verify final discard_region "rt_io$i" $SCR_OFF $((SCR_BLOCKS * BB)) "$TMP/scratch$i" 0 ||
			soak_fail "pool $i: the discard region does not read back as its model"
		remove_bounded "rt_io$i" && remove_bounded "rt_keep$i" && remove_bounded "rt_pool$i" ||
			soak_fail "removing reactivated pool $i"
		bounded 120 thin_check "/dev/mapper/rt_m$i" >"$TMP/check" 2>&1 ||
			{ cat "$TMP/check"; soak_fail "thin_check of pool $i's metadata after reactivation"; }
	done
	if bounded 60 dmsetup create rt_cpool --table "$(cpool_line)" &&
		bounded 60 dmsetup create rt_cthin --table "$(thin_line rt_cpool 0)"; then
		verify final churn "rt_cthin" 0 $((CHURN_BLOCKS * BB)) "$TMP/churn.model" 0 ||
			soak_fail "the churn thin does not read back as written"
	else
		soak_fail "reactivating the churn pool"
	fi
	remove_bounded rt_cthin && remove_bounded rt_cpool || soak_fail "removing the reactivated churn pool"
	for i in $(seq 0 $((NPOOLS - 1))) c; do
		remove_bounded "rt_m$i" && remove_bounded "rt_d$i" || soak_fail "removing pool $i's slices"
	done
	fio_runs=$(awk '$1 ~ /^fio/ && $3 == 0' "$TMP/ops" | wc -l)
	echo "bytes verified: fio $fio_runs runs, $((fio_runs * FIO_BYTES >> 20)) MiB written and verified;" \
		"$(($(sum_file "$TMP/verified") >> 10)) KiB read back and compared by the loops;" \
		"$(($(sum_file "$TMP/verified.end") >> 10)) KiB after reactivation"

	# Nothing left behind: no device, no module reference; the module unloads.
	[ "$(dm_names)" = "$devs0" ] || soak_fail "devices after teardown: $(dm_names), before: ${devs0:-none}"
	[ "$(cat "/sys/module/$mod/refcnt")" = "$ref0" ] ||
		soak_fail "$mod's refcount is $(cat "/sys/module/$mod/refcnt") after teardown, $ref0 at the start"
	bounded 60 rmmod "$mod" || soak_fail "rmmod $mod failed"
	[ ! -s "$TMP/hangs" ] || { cat "$TMP/hangs"; soak_fail "commands hung"; }

	kmsg_since >"$TMP/kmsg"
	python3 "$RTHIN_TOP/scripts/check-kernel-log" "$TMP/kmsg" || soak_fail "kernel reports during the soak"
	[ $failures = 0 ]
}

tests=(soak:t_soak)
if [ $both = 1 ]; then
	t_soak_rthin() { POOL_TGT=rthin-pool THIN_TGT=rthin LOG_PFX=rthin; t_soak; }
	t_soak_dmthin() { POOL_TGT=thin-pool THIN_TGT=thin LOG_PFX=thin; t_soak; }
	tests=(soak_rthin:t_soak_rthin soak_dmthin:t_soak_dmthin)
fi
# SOAK_ONLY=REGEX: only the tests whose names match.
if [ -n "${SOAK_ONLY:-}" ]; then
	all=()
	for t in "${tests[@]}"; do [[ ${t%%:*} =~ $SOAK_ONLY ]] && all+=("$t"); done
	tests=("${all[@]}")
fi
run_suite "${tests[@]}"
