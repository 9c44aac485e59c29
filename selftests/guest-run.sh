#!/usr/bin/env bash
# Runs inside the guest: every selftest suite, KTAP to stdout and to $RTHIN_RESULTS/ktap.txt.
# usage: selftests/guest-run.sh [SUITE...]    (default: every selftests/*.sh suite)
set -u
cd "$(dirname "$0")"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(rlinear pool thin thin_io parity)
out=$RTHIN_RESULTS/ktap.txt
: >"$out"
echo "rthin guest: kernel $(uname -r), $(nproc) cpus" >&2
rc=0
for s in "${suites[@]}"; do
	echo "# suite: $s" | tee -a "$out"
	bash "./$s.sh" 2>&1 | tee -a "$out"
	[ "${PIPESTATUS[0]}" = 0 ] || rc=1
done
dmesg >"$RTHIN_RESULTS/dmesg.log"
echo "# guest done" | tee -a "$out"
exit $rc
