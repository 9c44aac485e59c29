#!/usr/bin/env bash
# Benchmark: one boot of a kernel without the debug checkers, fio on ramdisks.
# - dm-linear against rlinear: 4k random read and random write, 2 jobs, direct IO;
# - dm-thin against rthin (and dm-linear, the physical limit): provisioning, overwrites, reads
#   of provisioned and unprovisioned blocks, snapshot breaks, 64k sequential writes, with 1
#   and 2 jobs (scripts/bench-thin-guest.sh says how each is set up).
# Targets alternate over several rounds, each round in a rotated order; medians are reported,
# with the spread of per-round ratios, since TCG timing is noisy. Run it on an otherwise idle
# machine. Writes results/bench.txt (the tables) and results/bench.svg (the thin plot).
# usage: scripts/bench.sh [THIN WORKLOAD... | scale]
#        RTHIN_BENCH_ROUNDS (3), RTHIN_BENCH_SECONDS (5), RTHIN_BENCH_JOBS ('1 2 4'),
#        RTHIN_ICOUNT=1 (guest clock by instructions: see scripts/vm.sh)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$RTHIN_TOP/scripts/deps.sh"
"$RTHIN_TOP/scripts/kernel.sh" bench >/dev/null
module=$("$RTHIN_TOP/scripts/module.sh" bench)
mkdir -p "$RTHIN_RESULTS"
# Thin workloads named on the command line (default: all); `scale` names the cost-growth
# runs (bench-scale-guest.sh), whose metadata images are made here and kept in the cache.
workloads=() scale=1
if [ $# -gt 0 ]; then
	scale=0
	for w in "$@"; do
		if [ "$w" = scale ]; then scale=1; else workloads+=("$w"); fi
	done
fi
jobs=${RTHIN_BENCH_JOBS:-1 2 4} rounds=${RTHIN_BENCH_ROUNDS:-3} secs=${RTHIN_BENCH_SECONDS:-5}
guest="RTHIN_BENCH_JOBS='$jobs' bash scripts/bench-guest.sh $rounds $secs ${workloads[*]}"
if [ $# -gt 0 ] && [ ${#workloads[@]} = 0 ]; then
	guest=true
fi
if [ $scale = 1 ]; then
	scale_sizes=(10000 100000 1000000)
	scale_dir=$RTHIN_CACHE/bench-scale
	python3 "$RTHIN_TOP/scripts/bench-scale-images.py" "$scale_dir" "${scale_sizes[@]}"
	guest+=" && bash scripts/bench-scale-guest.sh $rounds $scale_dir ${scale_sizes[*]}"
fi
rm -f "$RTHIN_RESULTS"/bench{,-raw,-thin-raw,-scale-raw}.txt
RTHIN_MODULE=$module "$RTHIN_TOP/scripts/vm.sh" --flavour bench --timeout 5400 --memory 4G \
	--console "$RTHIN_RESULTS/bench-console.log" -- "$guest"
"$RTHIN_TOP/scripts/check-kernel-log" "$RTHIN_RESULTS/bench-console.log"
touch "$RTHIN_RESULTS/bench.txt"
echo >>"$RTHIN_RESULTS/bench.txt"
python3 "$RTHIN_TOP/scripts/bench-report.py" "$RTHIN_RESULTS/bench-thin-raw.txt" \
	"$RTHIN_RESULTS/bench.txt" "$RTHIN_RESULTS/bench.svg" "$RTHIN_RESULTS/bench-scale-raw.txt" >/dev/null
cat "$RTHIN_RESULTS/bench.txt"
log "plot: $RTHIN_RESULTS/bench.svg"
