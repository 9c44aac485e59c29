#!/usr/bin/env bash
# Runs inside the guest for `make bench`: how provisioning's cost grows with the mappings a
# pool already holds. usage: bench-scale-guest.sh ROUNDS IMAGE_DIR N...
#
# For each N, a pool is opened on a copy of IMAGE_DIR/meta-N.img (thin device 0 maps its even
# blocks 0..2N-2; see bench-scale-images.py), then fio provisions 4096 fresh blocks, one 4 KiB
# write each, at odd virtual blocks spread evenly over the whole mapped range, so that the
# inserts land all over the mapping tree. Data goes to a 200 GiB null_blk device that keeps
# nothing (the data is not what is measured); metadata to a 64 MiB memory-backed null_blk.
# Printed per run: provisioning IOPS, the pool's used metadata blocks before and after, and
# the time of an fsync of the thin device right after (a commit of what the provisions changed
# since the last periodic commit; both targets commit every second).
set -euo pipefail
export DM_DISABLE_UDEV=1
rounds=$1 dir=$2
shift 2
NEW=4096
modprobe -d "$RTHIN_KDIR/mods" configfs
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
modprobe -d "$RTHIN_KDIR/mods" null_blk nr_devices=0
nb=/sys/kernel/config/nullb
mkdir $nb/sdata $nb/smeta
echo $((200 * 1024)) >$nb/sdata/size
echo 1 >$nb/sdata/power
echo 64 >$nb/smeta/size
echo 1 >$nb/smeta/memory_backed
echo 1 >$nb/smeta/power
DATA=/dev/sdata META=/dev/smeta          # null_blk names a configfs disk after its folder
modprobe -d "$RTHIN_KDIR/mods" dm-thin-pool
lsmod | grep -q '^rthin ' || insmod "$RTHIN_MODULE"
raw=$RTHIN_RESULTS/bench-scale-raw.txt
: >"$raw"
data_sectors=$(blockdev --getsz "$DATA")

used_meta() { dmsetup status b_pool | awk '{split($5, a, "/"); print a[1]}'; }

for r in $(seq "$rounds"); do
	for n in "$@"; do
		tgts=(thin rthin)
		for i in 0 1; do
			tgt=${tgts[(i + r) % 2]} pool=thin-pool
			[ "$tgt" = rthin ] && pool=rthin-pool
			dd if="$dir/meta-$n.img" of="$META" bs=1M oflag=direct status=none
			dmsetup create b_pool --table "0 $data_sectors $pool $META $DATA 128 0"
			k=$(( n / NEW > 1 ? n / NEW : 1 ))       # new blocks every 2k virtual blocks
			vblocks=$(( 2 * (n > NEW * k ? n : NEW * k) ))
			dmsetup create b_dev --table "0 $((vblocks * 128)) $tgt /dev/mapper/b_pool 0"
			before=$(used_meta)
			iops=$(fio --name=b --filename=/dev/mapper/b_dev --direct=1 --ioengine=psync \
				--bs=4k --offset=64k --rw=write:$((2 * k * 64 - 4))k --size=$((NEW * 2 * k * 64))k \
				--output-format=json |
				python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["write"]["iops"]))')
			commit_ms=$(python3 -c 'import os,sys,time; fd=os.open(sys.argv[1], os.O_WRONLY); t=time.perf_counter(); os.fsync(fd); print(round((time.perf_counter()-t)*1000, 1))' /dev/mapper/b_dev)
			after=$(used_meta)
			dmsetup remove b_dev
			dmsetup remove b_pool
			echo "$r $n $tgt $iops $before $after $commit_ms" | tee -a "$raw"
		done
	done
done
