#!/usr/bin/env bash
# Benchmark: one boot of a kernel without the debug checkers; fio 4k random read and
# random write, 2 jobs, direct IO, on a ramdisk, on dm-linear over it and on rlinear over it.
# Prints IOPS and the ratio rlinear/dm-linear. Runs alternate between the three devices
# over several rounds, each round in a rotated order, and the median of each is reported,
# since TCG timing is noisy. Run it on an otherwise idle machine.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$RTHIN_TOP/scripts/deps.sh"
"$RTHIN_TOP/scripts/kernel.sh" bench >/dev/null
module=$("$RTHIN_TOP/scripts/module.sh" bench)
mkdir -p "$RTHIN_RESULTS"
RTHIN_MODULE=$module "$RTHIN_TOP/scripts/vm.sh" --flavour bench --timeout 1800 \
	--console "$RTHIN_RESULTS/bench-console.log" -- \
	bash scripts/bench-guest.sh "${RTHIN_BENCH_ROUNDS:-5}" "${RTHIN_BENCH_SECONDS:-10}"
"$RTHIN_TOP/scripts/check-kernel-log" "$RTHIN_RESULTS/bench-console.log"
cat "$RTHIN_RESULTS/bench.txt"
