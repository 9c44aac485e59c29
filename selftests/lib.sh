# Helpers for rthin's guest selftests: KTAP output, module loading, devices. Sourced.
# shellcheck shell=bash

export DM_DISABLE_UDEV=1
: "${RTHIN_TOP:?}" "${RTHIN_KDIR:?}" "${RTHIN_RESULTS:?}" "${RTHIN_MODULE:?}"
META_DEV=${META_DEV:-/dev/vda}
DATA_DEV=${DATA_DEV:-/dev/vdb}
KVER=$(uname -r)
TMP=$(mktemp -d /tmp/rthin-test.XXXXXX)
# How much slower than the test kernel this one runs (guest-run.sh --checker sets it: KASAN
# and the object debugging make commands 5-20 times slower under TCG). Time limits that
# tell a hang from a slow command are multiplied by it; nothing else is.
SLOW=${RTHIN_SLOW:-1}
cd "$TMP" || exit 1   # tools such as fio write state files into the working directory

_ktap_n=0
_ktap_fail=0

# ktap_plan N: start a KTAP document of N tests.
ktap_plan() {
	echo "KTAP version 1"
	echo "1..$1"
}

# run_test NAME FUNCTION: run one test, in a subshell with errexit, and print its result.
# What the test prints goes out as KTAP diagnostics.
run_test() {
	local name=$1 fn=$2 rc out t0=$SECONDS
	_ktap_n=$((_ktap_n + 1))
	rm -f "$TMP/skipped"
	out=$( (set -eE; trap 'echo "FAILED: line $LINENO: $BASH_COMMAND"' ERR; "$fn") 2>&1 ); rc=$?
	[ -n "$out" ] && sed 's/^/# /' <<<"$out"
	echo "# $name: $((SECONDS - t0)) s"
	if [ $rc = 0 ] && [ -e "$TMP/skipped" ]; then
		echo "ok $_ktap_n $name # SKIP"
	elif [ $rc = 0 ]; then
		echo "ok $_ktap_n $name"
	else
		echo "not ok $_ktap_n $name"
		_ktap_fail=$((_ktap_fail + 1))
	fi
	cleanup_dm
}

ktap_done() {
	[ $_ktap_fail = 0 ]
}

# run_suite NAME:FUNCTION...: a KTAP plan, each test, and the suite's exit status. With
# TESTS_ONLY=REGEX in the environment, only the tests whose names match it run.
run_suite() {
	local t sel=()
	for t in "$@"; do
		[[ -z "${TESTS_ONLY:-}" || "${t%%:*}" =~ $TESTS_ONLY ]] && sel+=("$t")
	done
	ktap_plan ${#sel[@]}
	for t in "${sel[@]}"; do run_test "${t%%:*}" "${t#*:}"; done
	ktap_done
}

# expect_refused TARGET TABLE MESSAGE: creating a device with TABLE fails, the kernel log
# says "TARGET: MESSAGE" (or MESSAGE from dm core, where TARGET is empty), and no device is
# left behind. Returns 1 on the first check that fails (also without errexit, so a test can
# go on to its next table), removing rt_bad if it was made.
expect_refused() {
	local tgt=$1 table=$2 msg=$3 log
	kmsg_mark
	if dmsetup create rt_bad --table "$table" 2>/dev/null; then
		dmsetup remove rt_bad >/dev/null 2>&1
		fail "$tgt accepted '$table'"
		return 1
	fi
	log=$(kmsg_since)
	echo "$tgt '$table': $(grep -m1 'device-mapper: table' <<<"$log")"
	grep -q "${tgt:+$tgt: }$msg" <<<"$log" || { fail "$tgt '$table': no '$msg' in the kernel log: $log"; return 1; }
	if dmsetup info rt_bad >/dev/null 2>&1; then
		dmsetup remove rt_bad >/dev/null 2>&1
		fail "$tgt '$table': device left behind"
		return 1
	fi
}

fail() { echo "FAIL: $*"; return 1; }
# skip REASON: ends the running test as skipped (KTAP "# SKIP"). (A marker file, not an exit
# status: under errexit any command's status would end the test with it, so a status that
# meant "skipped" would turn a tool's failure with that status into a skip.)
skip() { echo "SKIP: $*"; : >"$TMP/skipped"; exit 0; }

# watch_progress PID FILE: waits while process PID runs, which writes the step it is at to
# FILE; fails, naming that step, once FILE has not changed for 60 s (PID is left behind).
watch_progress() {
	local pid=$1 file=$2 last now stale=0
	last=$(cat "$file")
	while kill -0 "$pid" 2>/dev/null; do
		sleep 2
		now=$(cat "$file")
		if [ "$now" = "$last" ]; then stale=$((stale + 2)); else stale=0 last=$now; fi
		[ $stale -lt 60 ] || { fail "no progress for 60 s: hung at $now"; return 1; }
	done
}

# An upstream module from the test kernel's own build.
kmod() { modprobe -d "$RTHIN_KDIR/mods" "$@"; }

# insmod rthin.ko, after the upstream modules it depends on (dm-bufio).
insmod_rthin() {
	local d
	for d in $(modinfo -F depends "$RTHIN_MODULE" | tr ',' ' '); do kmod "$d"; done
	insmod "$RTHIN_MODULE"
}
load_rthin() { lsmod | grep -q '^rthin ' || insmod_rthin; }
unload_rthin() { ! lsmod | grep -q '^rthin ' || rmmod rthin; }

# Remove every dm device the tests made (names start with rt_). A device still open (a pool
# under its thins, a linear under a pool) is refused until what stacks on it is gone, so
# remove in passes; the last passes force (a device still open gets an error table).
cleanup_dm() {
	local d pass left force=
	for pass in 1 2 3 4 5 6; do
		left=$(dmsetup ls 2>/dev/null | awk '/^rt_/ {print $1}')
		[ -n "$left" ] || return 0
		[ $pass -lt 5 ] || force=--force
		for d in $left; do
			dmsetup remove $force "$d" >/dev/null 2>&1 || true
		done
	done
	left=$(dmsetup ls 2>/dev/null | awk '/^rt_/ {print $1}')
	[ -z "$left" ] || echo "# cleanup_dm: left behind: $left"
}

devno() { local d; d=$(stat -L -c '%t %T' "$1"); printf '%d:%d' "0x${d% *}" "0x${d#* }"; }
sectors() { blockdev --getsz "$1"; }

# kmsg_mark: a marker in the kernel log; kmsg_since prints the log after the last marker.
kmsg_mark() { _mark="rthin-selftest-mark-$RANDOM-$RANDOM"; echo "$_mark" >/dev/kmsg; }
kmsg_since() { dmesg | sed -n "/$_mark/,\$p" | tail -n +2; }
