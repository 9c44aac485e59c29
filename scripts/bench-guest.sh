#!/usr/bin/env bash
# Runs inside the guest for `make bench`: usage bench-guest.sh ROUNDS SECONDS [THIN WORKLOAD...]
# dm-linear against rlinear here, then dm-thin against rthin (bench-thin-guest.sh).
set -euo pipefail
export DM_DISABLE_UDEV=1
rounds=$1 secs=$2
shift 2
# ram0: the data (and rlinear's) ramdisk; ram1: thin pools' metadata.
# ram0 is 1.5 GiB: room for 4 jobs' regions and their snapshot copies.
modprobe -d "$RTHIN_KDIR/mods" brd rd_nr=2 rd_size=1572864
for d in $(modinfo -F depends "$RTHIN_MODULE" | tr ',' ' '); do modprobe -d "$RTHIN_KDIR/mods" "$d"; done
insmod "$RTHIN_MODULE"
size=$(blockdev --getsz /dev/ram0)
dmsetup create bench_linear --table "0 $size linear /dev/ram0 0"
dmsetup create bench_rlinear --table "0 $size rlinear /dev/ram0 0"
raw=$RTHIN_RESULTS/bench-raw.txt
: >"$raw"
devs=(/dev/ram0 /dev/mapper/bench_linear /dev/mapper/bench_rlinear)
for r in $(seq "$rounds"); do
	for rw in randread randwrite; do
		# Each round starts with another device, so no device always runs first or last.
		for i in 0 1 2; do
			dev=${devs[(i + r) % 3]}
			iops=$(fio --name=b --filename="$dev" --rw=$rw --bs=4k --numjobs=2 --direct=1 \
				--ioengine=psync --size=256M --time_based --runtime="$secs" \
				--group_reporting --output-format=json |
				python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["read"]["iops"]+j["write"]["iops"]))')
			echo "$r $rw $(basename "$dev") $iops" | tee -a "$raw"
		done
	done
done
python3 - "$raw" >"$RTHIN_RESULTS/bench.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
med = {}
for rw in ("randread", "randwrite"):
    for dev in ("ram0", "bench_linear", "bench_rlinear"):
        med[rw, dev] = statistics.median(int(r[3]) for r in rows if r[1] == rw and r[2] == dev)
print(f"fio 4k, 2 jobs, direct IO, psync; median of {len(rows) // 6} rounds (IOPS)")
print(f"{'':10} {'ramdisk':>10} {'dm-linear':>10} {'rlinear':>10} {'rlinear/dm-linear':>18}")
for rw in ("randread", "randwrite"):
    a, b, c = med[rw, "ram0"], med[rw, "bench_linear"], med[rw, "bench_rlinear"]
    print(f"{rw:10} {a:>10.0f} {b:>10.0f} {c:>10.0f} {c / b:>18.3f}")
PY
cat "$RTHIN_RESULTS/bench.txt"
dmsetup remove bench_rlinear
dmsetup remove bench_linear
bash "$(dirname "$0")/bench-thin-guest.sh" "$rounds" "$secs" "$@"
