#!/usr/bin/env bash
# Benchmark: one boot of a kernel without the debug checkers, fio on ramdisks.
# - dm-linear against rlinear: 4k random read and random write, 2 jobs, direct IO;
# - dm-thin against rthin (and dm-linear, the physical limit): provisioning, overwrites, reads
#   of provisioned and unprovisioned blocks, snapshot breaks, 64k sequential writes, with 1
#   and 2 jobs (scripts/bench-thin-guest.sh says how each is set up).
# Targets alternate over several rounds, each round in a rotated order; medians are reported,
# with the spread of per-round ratios, since TCG timing is noisy. Run it on an otherwise idle
# machine. Writes results/bench.txt (the tables) and results/bench.svg (the thin plot).
# usage: scripts/bench.sh [THIN WORKLOAD...]    RTHIN_BENCH_ROUNDS, RTHIN_BENCH_SECONDS
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$RTHIN_TOP/scripts/deps.sh"
"$RTHIN_TOP/scripts/kernel.sh" bench >/dev/null
module=$("$RTHIN_TOP/scripts/module.sh" bench)
mkdir -p "$RTHIN_RESULTS"
RTHIN_MODULE=$module "$RTHIN_TOP/scripts/vm.sh" --flavour bench --timeout 5400 \
	--console "$RTHIN_RESULTS/bench-console.log" -- \
	bash scripts/bench-guest.sh "${RTHIN_BENCH_ROUNDS:-3}" "${RTHIN_BENCH_SECONDS:-5}" "$@"
"$RTHIN_TOP/scripts/check-kernel-log" "$RTHIN_RESULTS/bench-console.log"
echo >>"$RTHIN_RESULTS/bench.txt"
python3 "$RTHIN_TOP/scripts/bench-report.py" "$RTHIN_RESULTS/bench-thin-raw.txt" \
	"$RTHIN_RESULTS/bench.txt" "$RTHIN_RESULTS/bench.svg" >/dev/null
cat "$RTHIN_RESULTS/bench.txt"
log "plot: $RTHIN_RESULTS/bench.svg"
