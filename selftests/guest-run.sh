#!/usr/bin/env bash
# Runs inside the guest: selftest suites, KTAP to stdout and to $RTHIN_RESULTS/ktap.txt.
# usage: selftests/guest-run.sh [--long | --checker | --checker-long | --soak | --soak-checker |
#                                SUITE...]
#   (none)    make check's suites: every suite; the seeds, the lvm2 workflow, the crash
#             replay and the fault injection on rthin only, the short forms of the replay
#             (12 points), of the fault sweep and of the fuzzers
#   --long    make check-long's: the seeds and the lvm2 workflow on upstream dm-thin (the
#             same scenarios, the reference behaviour), the replay to every FLUSH/FUA and
#             mark (workload on rthin; on dm-thin, 24 points), every fault point on rthin
#             and the short sweep on dm-thin, and the fuzzers' long runs
#   --checker make check's run on the checker kernel (KASAN, kmemleak, DEBUG_OBJECTS): a
#             subset of the suites, then a kmemleak scan after rthin is unloaded; results
#             in ktap-checker.txt and dmesg-checker.log
#   --checker-long  make check-long's on the checker kernel: every suite of make check
#             (failslab with 300 values of N per operation), then the kmemleak scan
#   --soak    make soak's: the soak suite alone (soak.sh; SOAK_SECS, SOAK_ONLY and SOAK_SEED
#             from the environment)
#   --soak-checker  make soak's on the checker kernel: the soak, then the kmemleak scan
#   SUITE...  those selftests/*.sh suites, each as it runs by itself (seeds.sh, lvm.sh,
#             replay.sh, faults.sh: both targets; the fuzzers: their default counts)
# A suite in the lists below may carry VAR=VALUE settings for its run, after its name.
set -u
cd "$(dirname "$0")"
check=(rlinear pool thin thin_io parity "lvm LVM_PASSES=rthin" "seeds SEEDS_ONLY=_rthin$"
	"replay REPLAY_ONLY=_rthin$" "faults FAULTS_ONLY=_rthin$"
	"fuzz_table FUZZ_CASES=1000 FUZZ_DMSETUP_CASES=40" "fuzz_meta FUZZ_META_CASES=8" failslab)
long=("lvm LVM_PASSES=dmthin" "seeds SEEDS_ONLY=_dmthin$"
	"replay REPLAY_ONLY=_rthin$ REPLAY_POINTS=long REPLAY_ROUNDS=8"
	"replay REPLAY_ONLY=_dmthin$ REPLAY_POINTS=short:24" "faults FAULTS_ONLY=_rthin$ FAULTS_N=long"
	"faults FAULTS_ONLY=_dmthin$" "fuzz_table FUZZ_CASES=12000 FUZZ_DMSETUP_CASES=300"
	"fuzz_meta FUZZ_META_CASES=200" "parity POOL_TGT=thin-pool THIN_TGT=thin")
# make check's share on the checker kernel: the IO path's core (provisioning, a snapshot
# break), the abort, suspend and lifetime tests, and the seeds about lifetimes (002) and the
# abort path (004, to read-only), where a use after free or a leak would be, and the
# allocation failures (failslab.sh: it needs this kernel; about 70 s), whose error paths
# the kmemleak scan then checks: about 8 minutes of guest time. Under TCG a test there
# takes 2.5-4 times as long as on the test kernel (thin_write_read 39 s against 11); all of
# make check's suites there (--checker-long) took 74 minutes, so they are make check-long's.
checker=("thin TESTS_ONLY=^thin_(write_read|snapshots)$"
	"thin_io TESTS_ONLY=^thin_io_(flush_after_abort|suspend_during_provisioning|wipe_table)"
	"seeds SEEDS_ONLY=^seeds_00(2_|4_abort_readonly).*_rthin$" failslab)
suites=("$@") tag= leaks=0
case "${1:-}" in
--long) suites=("${long[@]}") ;;
--checker) suites=("${checker[@]}") tag=-checker leaks=1 ;;
--checker-long) suites=("${check[@]/#failslab/failslab FAILSLAB_N=short:300}") tag=-checker leaks=1 ;;
--soak) suites=(soak) ;;
--soak-checker) suites=(soak) tag=-checker leaks=1 ;;
*) [ ${#suites[@]} -gt 0 ] || suites=("${check[@]}") ;;
esac
# The checker kernel's commands run 5-20 times slower under TCG (KASAN, object debugging):
# the tests' hang limits are scaled by RTHIN_SLOW (lib.sh).
[ -z "$tag" ] || export RTHIN_SLOW=${RTHIN_SLOW:-4}
out=$RTHIN_RESULTS/ktap$tag.txt
if [ $leaks = 1 ]; then
	mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
	# What booting left behind is not the tests': scanned now and set aside.
	echo scan >/sys/kernel/debug/kmemleak
	echo clear >/sys/kernel/debug/kmemleak
fi
: >"$out"
echo "rthin guest: kernel $(uname -r), $(nproc) cpus" >&2
rc=0
for entry in "${suites[@]}"; do
	read -r s settings <<<"$entry"
	echo "# suite: $entry" | tee -a "$out"
	# shellcheck disable=SC2086 # (settings: VAR=VALUE words, none with blanks; split, but
	# never globbed: a regex's `*` or `[..]` could match a file here)
	set -f
	env $settings bash "./$s.sh" 2>&1 | tee -a "$out"
	[ "${PIPESTATUS[0]}" = 0 ] || rc=1
	set +f
done
if [ $leaks = 1 ]; then
	echo "# suite: kmemleak" | tee -a "$out"
	bash ./kmemleak.sh 2>&1 | tee -a "$out"
	[ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
dmesg >"$RTHIN_RESULTS/dmesg$tag.log"
echo "# guest done" | tee -a "$out"
exit $rc
