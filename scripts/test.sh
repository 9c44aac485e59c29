#!/usr/bin/env bash
# Every rthin test: host tests (log checker, replay model, persistent-data crate), then the
# guest selftests in QEMU with the kernel log checked. Installs and builds what it needs first.
# Ends with one line `N passed, N failed`; exits non-zero on any failure.
#
# usage: scripts/test.sh [--long | --soak | SUITE...]
#   (none)    make check: the host tests and the guest's default suites on the test kernel,
#             then make check's share on the checker kernel (guest-run.sh --checker; the
#             kernel is built first if need be; RTHIN_CHECKER=0 leaves this part out)
#   --long    make check-long: the guest's long forms (selftests/guest-run.sh --long), then
#             every suite on the checker kernel (--checker-long; RTHIN_CHECKER=0: not that)
#   --soak    make soak: the soak only (selftests/soak.sh), for SOAK_SECS seconds (default
#             600), the tests SOAK_ONLY=REGEX picks (default: soak_rthin), on the kernel
#             flavour FLAVOUR=test (default) or checker (then a kmemleak scan; the checker
#             kernel must be built already: scripts/kernel.sh checker)
#   SUITE...  the host tests and these guest suites, on the test kernel
set -uo pipefail
. "$(dirname "$0")/lib.sh"

long=0 soak=0
[ "${1:-}" = --long ] && long=1
[ "${1:-}" = --soak ] && soak=1
flavour=test tag=
if [ $soak = 1 ]; then
	SOAK_SECS=${SOAK_SECS:-600} SOAK_ONLY=${SOAK_ONLY:-_rthin} flavour=${FLAVOUR:-test}
	[[ $SOAK_SECS =~ ^[0-9]+$ ]] || die "SOAK_SECS=$SOAK_SECS: a number of seconds, please"
	[[ $SOAK_ONLY != *"'"* ]] || die "SOAK_ONLY: no quotes, please"
	case $flavour in
	test) ;;
	checker) tag=-checker ;;
	*) die "FLAVOUR=$flavour: test or checker" ;;
	esac
fi

rm -rf "$RTHIN_RESULTS"
mkdir -p "$RTHIN_RESULTS"
passed=0 failed=0 problems=()

# Count KTAP results in a file: `ok N` (SKIPs not counted) and `not ok N`.
count_ktap() {
	local p f
	p=$(grep -E '^ok [0-9]+ ' "$1" | grep -vc '# SKIP' || true)
	f=$(grep -cE '^not ok [0-9]+ ' "$1" || true)
	passed=$((passed + p)) failed=$((failed + f))
	echo "rthin: $2: $p passed, $f failed" >&2
	[ "$f" = 0 ] || problems+=("$2: $f failed")
}

step() { echo "rthin: == $* ==" >&2; }

step "dependencies"
"$RTHIN_TOP/scripts/deps.sh" || die "installing dependencies failed"

# (check-long, soak: the host tests are make check's.)
if [ $long = 0 ] && [ $soak = 0 ]; then
	step "host: kernel log checker"
	bash "$RTHIN_TOP/selftests/logcheck/run.sh" | tee "$RTHIN_RESULTS/logcheck.ktap"
	count_ktap "$RTHIN_RESULTS/logcheck.ktap" "log checker"

	step "host: replay model"
	/usr/bin/python3 "$RTHIN_TOP/selftests/replay.py" selftest | tee "$RTHIN_RESULTS/replay-model.ktap"
	count_ktap "$RTHIN_RESULTS/replay-model.ktap" "replay model"

	if [ -f "$RTHIN_TOP/rust/persistent-data/Cargo.toml" ]; then
		step "host: persistent-data (cargo test)"
		(cd "$RTHIN_TOP/rust/persistent-data" && "$CARGO" test --release 2>&1) | tee "$RTHIN_RESULTS/cargo-test.log"
		rc=${PIPESTATUS[0]}
		p=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\1/p' "$RTHIN_RESULTS/cargo-test.log" | paste -sd+ | bc)
		f=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\2/p' "$RTHIN_RESULTS/cargo-test.log" | paste -sd+ | bc)
		passed=$((passed + ${p:-0})) failed=$((failed + ${f:-0}))
		if [ "$rc" != 0 ]; then failed=$((failed + 1)); problems+=("cargo test exited $rc"); fi
	fi
fi

# guest_pass FLAVOUR TIMEOUT COMMAND: the kernel flavour (built, or found built), rthin built
# against it, COMMAND run in the guest, its KTAP results counted and its kernel log checked.
# The files of a flavour other than test carry its name: results/ktap-checker.txt,
# console-checker.log, dmesg-checker.log.
guest_pass() {
	local flavour=$1 timeout=$2 cmd=$3 tag= t0 rc ktap plans ran console kdir
	[ "$flavour" = test ] || tag=-$flavour
	step "$flavour kernel"
	t0=$(date +%s)
	if [ "$flavour" = checker ] && [ $soak = 1 ]; then
		kdir=$(kernel_build_dir checker)
		[ -f "$kdir/.rthin-built" ] && [ -f "$kdir/arch/x86/boot/bzImage" ] && [ -f "$kdir/mods/.rthin-installed" ] ||
			die "the checker kernel is not built (no $kdir): build it with scripts/kernel.sh checker (about 13 minutes on 2 quiet cores), then run this again"
	else
		"$RTHIN_TOP/scripts/kernel.sh" "$flavour" >/dev/null || { problems+=("$flavour kernel build failed"); failed=$((failed + 1)); return; }
	fi
	echo "rthin: $flavour kernel ready in $(( $(date +%s) - t0 )) s" >&2

	step "module ($flavour kernel)"
	# (For another flavour than test, module.sh builds in a copy of the tree under the cache.)
	RTHIN_MODULE=$("$RTHIN_TOP/scripts/module.sh" "$flavour") ||
		{ problems+=("module build ($flavour) failed"); failed=$((failed + 1)); return; }
	export RTHIN_MODULE

	step "guest selftests ($flavour kernel)"
	t0=$(date +%s)
	console=$RTHIN_RESULTS/console$tag.log
	"$RTHIN_TOP/scripts/vm.sh" --flavour "$flavour" --console "$console" --timeout "$timeout" -- "$cmd"
	rc=$?
	[ $rc = 0 ] || problems+=("guest ($flavour kernel) exited $rc")
	echo "rthin: guest ($flavour kernel) ran $(( $(date +%s) - t0 )) s" >&2
	ktap=$RTHIN_RESULTS/ktap$tag.txt
	if [ -f "$ktap" ]; then
		cat "$ktap"
		count_ktap "$ktap" "guest selftests ($flavour kernel)"
		grep -q '^# guest done' "$ktap" || { failed=$((failed + 1)); problems+=("guest ($flavour kernel) did not finish its tests"); }
		plans=$(sed -nE 's/^1\.\.([0-9]+)$/\1/p' "$ktap" | paste -sd+ | bc)
		ran=$(grep -cE '^(not )?ok [0-9]+ ' "$ktap" || true)
		[ "${plans:-0}" = "$ran" ] || { failed=$((failed + 1)); problems+=("guest ($flavour kernel) planned ${plans:-0} tests, reported $ran"); }
	else
		failed=$((failed + 1)); problems+=("guest ($flavour kernel) wrote no results")
	fi

	step "kernel log ($flavour kernel)"
	logs=("$console")
	[ -f "$RTHIN_RESULTS/dmesg$tag.log" ] && logs+=("$RTHIN_RESULTS/dmesg$tag.log")
	if "$RTHIN_TOP/scripts/check-kernel-log" "${logs[@]}"; then
		echo "rthin: guest kernel log clean ($flavour kernel)" >&2
	else
		failed=$((failed + 1)); problems+=("kernel reports in the guest log ($flavour kernel)")
	fi
}

# (make check's guest part took 1739 s with the kernel cached; the long forms' replay and fault
# sweep run for more than an hour. The timeouts catch a wedged guest, with room for a slower
# host. make check and check-long build the checker kernel if need be; make soak
# FLAVOUR=checker asks for it to be built already (guest_pass).)
if [ $soak = 1 ]; then
	# The guest's time: each soak test selected runs SOAK_SECS, plus its set-up, the wait
	# for the loops' last commands (up to 330 s), teardown and the final reads: 600 s,
	# times 4 on the checker kernel (guest-run.sh's RTHIN_SLOW there); and the boot.
	n=0
	for t in soak_rthin soak_dmthin; do [[ $t =~ $SOAK_ONLY ]] && n=$((n + 1)); done
	[ $n -gt 0 ] || die "SOAK_ONLY=$SOAK_ONLY selects no soak test (soak_rthin, soak_dmthin)"
	slow=1
	[ "$flavour" = checker ] && slow=4
	log "soak: $n test(s) matching '$SOAK_ONLY', ${SOAK_SECS}s each, on the $flavour kernel"
	guest_pass "$flavour" "${RTHIN_GUEST_TIMEOUT:-$((n * (SOAK_SECS + 600 * slow) + 300))}" \
		"SOAK_SECS=$SOAK_SECS SOAK_ONLY='$SOAK_ONLY' ${SOAK_SEED:+SOAK_SEED=$SOAK_SEED }bash selftests/guest-run.sh --soak${tag}"
elif [ $long = 1 ]; then
	# The long forms on the test kernel, then every suite of make check on the checker kernel.
	guest_pass test "${RTHIN_GUEST_TIMEOUT:-9000}" "bash selftests/guest-run.sh --long"
	[ "${RTHIN_CHECKER:-1}" = 0 ] || guest_pass checker "${RTHIN_GUEST_TIMEOUT:-14400}" "bash selftests/guest-run.sh --checker-long"
elif [ $# -gt 0 ]; then
	# Chosen suites: on the test kernel only.
	guest_pass test "${RTHIN_GUEST_TIMEOUT:-3600}" "bash selftests/guest-run.sh $(printf "'%s' " "$@")"
else
	guest_pass test "${RTHIN_GUEST_TIMEOUT:-3600}" "bash selftests/guest-run.sh"
	# Then make check's share on the checker kernel (KASAN, kmemleak, DEBUG_OBJECTS, overflow
	# checks; guest-run.sh --checker): RTHIN_CHECKER=0 skips it, for a quick run while
	# developing, never for a change's last run.
	[ "${RTHIN_CHECKER:-1}" = 0 ] || guest_pass checker "${RTHIN_GUEST_TIMEOUT:-2400}" "bash selftests/guest-run.sh --checker"
fi

for p in "${problems[@]}"; do echo "rthin: problem: $p" >&2; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ ${#problems[@]} = 0 ]
