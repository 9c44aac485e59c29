#!/usr/bin/env bash
# Runs inside the guest: selftest suites, KTAP to stdout and to $RTHIN_RESULTS/ktap.txt.
# usage: selftests/guest-run.sh [--long | SUITE...]
#   (none)    make check's suites: every suite; the seeds on rthin only, the table fuzzer's
#             short run
#   --long    make check-long's: the seeds on upstream dm-thin (the same scenarios, the
#             reference behaviour) and the table fuzzer's long run
#   SUITE...  those selftests/*.sh suites, each as it runs by itself (seeds.sh: both
#             targets; fuzz_table.sh: its default counts)
# A suite in the lists below may carry VAR=VALUE settings for its run, after its name.
set -u
cd "$(dirname "$0")"
check=(rlinear pool thin thin_io parity "seeds SEEDS_ONLY=_rthin$" "fuzz_table FUZZ_CASES=1000 FUZZ_DMSETUP_CASES=40")
long=("seeds SEEDS_ONLY=_dmthin$" "fuzz_table FUZZ_CASES=12000 FUZZ_DMSETUP_CASES=300")
suites=("$@")
if [ "${1:-}" = --long ]; then
	suites=("${long[@]}")
elif [ ${#suites[@]} = 0 ]; then
	suites=("${check[@]}")
fi
out=$RTHIN_RESULTS/ktap.txt
: >"$out"
echo "rthin guest: kernel $(uname -r), $(nproc) cpus" >&2
rc=0
for entry in "${suites[@]}"; do
	read -r s settings <<<"$entry"
	echo "# suite: $entry" | tee -a "$out"
	# shellcheck disable=SC2086 # (settings: VAR=VALUE words, none with blanks)
	env $settings bash "./$s.sh" 2>&1 | tee -a "$out"
	[ "${PIPESTATUS[0]}" = 0 ] || rc=1
done
dmesg >"$RTHIN_RESULTS/dmesg.log"
echo "# guest done" | tee -a "$out"
exit $rc
