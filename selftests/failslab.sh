#!/usr/bin/env bash
# Allocation failures (issue 11, item 3: "and allocations (failslab)"): failslab.py runs each
# pool and thin operation that runs in the calling thread (the pool's and a thin's table
# load and resume, on new and on existing metadata; every pool message; writes that
# provision, break sharing or overwrite, through the thin's map path) once per N, with the
# Nth slab allocation or other fault site of that thread failing (/proc/thread-self/
# fail-nth), and checks that each fails cleanly or works, all or nothing, and that the pool
# stays consistent (see failslab.py). Needs a kernel with CONFIG_FAILSLAB and the fault
# injection debugfs (the checker kernel); elsewhere the test is skipped.
#
# FAILSLAB_N: "short:K" (default short:30: per operation, N from 1 to K and K more values
# spread over the sites it reaches) or "long" (every N); FAILSLAB_ONLY=REGEX arms only the
# operations it names (pool_format, pool_open, thin_open, msg_*, write_*). POOL_TGT/THIN_TGT
# pick the targets (rthin by default); only rthin runs in the lists (guest-run.sh).
here=${here:-$(cd "$(dirname "$0")" && pwd)}
. "$here/lib.sh"        # (it changes into a scratch directory)
. "$here/thin_lib.sh"

FAILSLAB_N=${FAILSLAB_N:-short:30}
FS=/sys/kernel/debug/failslab
FP=/sys/kernel/debug/fail_page_alloc
FR=/sys/kernel/debug/fail_make_request

t_failslab() {
	# (The test kernel has neither fail-nth nor debugfs: make check's run there found
	# "mount: /sys/kernel/debug: mount point does not exist" when the mount came first.)
	if [ ! -e /proc/self/fail-nth ] || [ ! -d /sys/kernel/debug ]; then
		skip "no fail-nth or debugfs in this kernel (CONFIG_FAILSLAB: the checker kernel)"
	fi
	mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
	if [ ! -d $FS ]; then
		skip "no failslab in this kernel (CONFIG_FAILSLAB: the checker kernel)"
	fi
	load_targets
	# Sleeping slab allocations count too; page allocations are left out (min-order above
	# the largest), and no fault prints a stack trace (the log checker would take it for a
	# report). The old settings come back at the end.
	local old_wait old_order v1 v2 v3 rc=0
	old_wait=$(cat $FS/ignore-gfp-wait) old_order=$(cat $FP/min-order)
	v1=$(cat $FS/verbose) v2=$(cat $FP/verbose) v3=$(cat $FR/verbose)
	echo N >$FS/ignore-gfp-wait
	echo 11 >$FP/min-order
	echo 0 >$FS/verbose; echo 0 >$FP/verbose; echo 0 >$FR/verbose
	wipe_meta
	python3 "$here/failslab.py" "$POOL_TGT" "$THIN_TGT" "$META_DEV" "$DATA_DEV" "$FAILSLAB_N" || rc=$?
	echo "$old_wait" >$FS/ignore-gfp-wait
	echo "$old_order" >$FP/min-order
	echo "$v1" >$FS/verbose; echo "$v2" >$FP/verbose; echo "$v3" >$FR/verbose
	[ $rc = 0 ] || fail "failslab.py exited $rc"
}

t_failslab_rthin() { POOL_TGT=rthin-pool THIN_TGT=rthin LOG_PFX=rthin; t_failslab; }
run_suite failslab_rthin:t_failslab_rthin
