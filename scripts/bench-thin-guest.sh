#!/usr/bin/env bash
# Runs inside the guest for `make bench`, after bench-guest.sh: dm-thin against rthin (and
# dm-linear as the physical limit) on the same ramdisks, with the same table features.
# usage: bench-thin-guest.sh ROUNDS SECONDS [WORKLOAD...]    (default: every workload)
#
# Every measurement starts from a fresh pool (metadata wiped) with one fresh 1 GiB thin
# device, prepared as the workload needs, then one fio run:
#   provision      one 4 KiB write per fresh 64 KiB block (provisioning and zeroing)
#   provision_skz  the same on a pool with skip_block_zeroing
#   overwrite      4 KiB random writes to provisioned blocks
#   read_mapped    4 KiB random reads of provisioned blocks
#   read_unmapped  4 KiB random reads of a thin device with nothing mapped
#   snap_break     one 4 KiB write per 64 KiB block shared with a snapshot (copy)
#   seq64k         64 KiB sequential writes to a fresh device (whole blocks, no zeroing)
# each with 1, 2 and 4 fio jobs (psync, direct IO; a job's region is its own). The
# provisioning workloads run a fixed amount of IO (each fresh block is written once), the
# others run for SECONDS. Within a round the targets run in rotated order; a ratio is taken
# per round, and the table gives medians over rounds with the ratios' spread.
set -euo pipefail
export DM_DISABLE_UDEV=1
rounds=$1 secs=$2
shift 2
DATA=/dev/ram0 META=/dev/ram1
BS=128                              # data block size, sectors (64 KiB)
JOB_MB=128                          # each job's region (2048 blocks)
data_sectors=$(blockdev --getsz $DATA)
for m in dm-thin-pool dm-delay; do modprobe -d "$RTHIN_KDIR/mods" "$m" || true; done
lsmod | grep -q '^rthin ' || insmod "$RTHIN_MODULE"
# brd allocates a page on its first write: touch every page of the data disk first, so that
# whichever target runs first does not pay for it.
dd if=/dev/zero of=$DATA bs=1M oflag=direct status=none 2>/dev/null || true
raw=$RTHIN_RESULTS/bench-thin-raw.txt
: >"$raw"

# setup TARGET WORKLOAD JOBS: a fresh pool and thin device (dm-thin or rthin), or a linear
# device over the data ramdisk; prints the device to run fio on.
setup() {
	local tgt=$1 w=$2 jobs=$3 feat=""
	if [ "$tgt" = linear ]; then
		dmsetup create b_dev --table "0 $data_sectors linear $DATA 0"
		echo /dev/mapper/b_dev
		return
	fi
	local pool=thin-pool thin=thin
	[ "$tgt" = rthin ] && pool=rthin-pool thin=rthin
	[ "$w" = provision_skz ] && feat="1 skip_block_zeroing"
	dd if=/dev/zero of=$META bs=1M count=4 oflag=direct status=none
	dmsetup create b_pool --table "0 $data_sectors $pool $META $DATA $BS 0 $feat"
	dmsetup message b_pool 0 create_thin 0
	dmsetup create b_dev --table "0 2097152 $thin /dev/mapper/b_pool 0"
	case $w in
	overwrite | read_mapped | snap_break)
		# Provision every job's region first.
		dd if=/dev/zero of=/dev/mapper/b_dev bs=1M count=$((JOB_MB * jobs)) oflag=direct status=none
		;;
	esac
	if [ "$w" = snap_break ]; then
		dmsetup suspend b_dev
		dmsetup message b_pool 0 create_snap 1 0
		dmsetup resume b_dev
	fi
	echo /dev/mapper/b_dev
}

teardown() {
	dmsetup remove b_dev
	dmsetup remove b_pool 2>/dev/null || true
}

# run DEV WORKLOAD JOBS: fio, prints IOPS.
run() {
	local dev=$1 w=$2 jobs=$3 args
	local common=(--name=b --filename="$dev" --numjobs="$jobs" --direct=1 --ioengine=psync
		--group_reporting --output-format=json --size=${JOB_MB}M --offset_increment=${JOB_MB}M)
	case $w in
	provision | provision_skz | snap_break) args=(--rw=write:60k --bs=4k) ;;
	seq64k) args=(--rw=write --bs=64k) ;;
	overwrite) args=(--rw=randwrite --bs=4k --time_based --runtime="$secs") ;;
	read_mapped | read_unmapped) args=(--rw=randread --bs=4k --time_based --runtime="$secs") ;;
	esac
	fio "${common[@]}" "${args[@]}" |
		python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["read"]["iops"]+j["write"]["iops"]))'
}

workloads=(provision provision_skz overwrite read_mapped read_unmapped snap_break seq64k)
[ $# = 0 ] || workloads=("$@")
for r in $(seq "$rounds"); do
	for w in "${workloads[@]}"; do
		for jobs in ${RTHIN_BENCH_JOBS:-1 2 4}; do
			tgts=(thin rthin)
			case $w in provision_skz | read_mapped | seq64k) tgts+=(linear) ;; esac
			n=${#tgts[@]}
			for i in $(seq 0 $((n - 1))); do
				tgt=${tgts[(i + r) % n]}
				dev=$(setup "$tgt" "$w" "$jobs")
				iops=$(run "$dev" "$w" "$jobs")
				teardown
				echo "$r $w $jobs $tgt $iops" | tee -a "$raw"
			done
		done
	done
done
rmmod rthin
