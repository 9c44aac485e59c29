#!/usr/bin/env bash
# Runs inside the guest for `make demo`: rthin's targets on the VM's two disks,
# /dev/vda (metadata) and /dev/vdb (data), then lvm2 creating and autoextending a thin pool
# on rthin.
set -euo pipefail
export DM_DISABLE_UDEV=1
show() { echo "+ $*"; "$@"; }
for d in $(modinfo -F depends "$RTHIN_MODULE" | tr ',' ' '); do modprobe -d "$RTHIN_KDIR/mods" "$d"; done
show insmod "$RTHIN_MODULE"
show dmsetup targets

echo "== rlinear: dm-linear's interface, through rthin's safe layer"
show dmsetup create demo --table "0 409600 rlinear /dev/vdb 2048"
show dmsetup table demo
show mkfs.ext4 -q /dev/mapper/demo
mkdir -p /tmp/demo-mnt
show mount /dev/mapper/demo /tmp/demo-mnt
head -c 4M /dev/urandom >/tmp/demo-file
show cp /tmp/demo-file /tmp/demo-mnt/file
show umount /tmp/demo-mnt
show mount /dev/mapper/demo /tmp/demo-mnt
show cmp /tmp/demo-file /tmp/demo-mnt/file
echo "file written through rlinear reads back intact after remount"
show umount /tmp/demo-mnt
show fsck.ext4 -fn /dev/mapper/demo
show dmsetup remove demo

echo "== rthin-pool and rthin: a thin pool in dm-thin's on-disk format, and thin volumes on it"
show dd if=/dev/zero of=/dev/vda bs=1M count=4 oflag=direct status=none
size=$(blockdev --getsz /dev/vdb)
show dmsetup create pool --table "0 $size rthin-pool /dev/vda /dev/vdb 128 32"
show dmsetup status pool
show dmsetup message pool 0 create_thin 0
show dmsetup create thin0 --table "0 8388608 rthin /dev/mapper/pool 0"
echo "a 4 GiB thin volume on a 2 GiB disk: space is given out as it is written"
show mkfs.ext4 -q -E nodiscard /dev/mapper/thin0
show mount /dev/mapper/thin0 /tmp/demo-mnt
show cp /tmp/demo-file /tmp/demo-mnt/file
show sync
show dmsetup status thin0 pool
echo "snapshot: suspend the origin, create_snap, resume"
show dmsetup suspend thin0
show dmsetup message pool 0 create_snap 1 0
show dmsetup resume thin0
head -c 4M /dev/urandom >/tmp/demo-file2
show cp /tmp/demo-file2 /tmp/demo-mnt/file
show umount /tmp/demo-mnt
show dmsetup create snap1 --table "0 8388608 rthin /dev/mapper/pool 1"
show mount -o ro,noload /dev/mapper/snap1 /tmp/demo-mnt
show cmp /tmp/demo-file /tmp/demo-mnt/file
echo "the snapshot still holds the file as it was; the origin has the new one"
show umount /tmp/demo-mnt
show mount /dev/mapper/thin0 /tmp/demo-mnt
show cmp /tmp/demo-file2 /tmp/demo-mnt/file
show cp /tmp/demo-file /tmp/demo-mnt/scratch
show sync
show dmsetup status pool
show rm /tmp/demo-mnt/scratch
show fstrim -v /tmp/demo-mnt
echo "blocks freed in a transaction count as free once it commits (every second, as dm-thin)"
show sleep 2
show dmsetup status pool
echo "fstrim gave the deleted file's blocks back to the pool (used data blocks went down)"
show umount /tmp/demo-mnt
show dmsetup status thin0 snap1 pool
show dmsetup message pool 0 set_transaction_id 0 1
show dmsetup table pool thin0
show dmsetup remove snap1
show dmsetup remove thin0
show dmsetup remove pool
echo "== the metadata rthin wrote, read by thin-provisioning-tools"
show thin_check /dev/vda
show thin_ls --format "DEV,MAPPED_BLOCKS,EXCLUSIVE_BLOCKS,SHARED_BLOCKS" /dev/vda 2>/dev/null || true
echo "== upstream dm-thin activates the same pool and reads the same files"
show modprobe -d "$RTHIN_KDIR/mods" dm-thin-pool
show dmsetup create pool --table "0 $size thin-pool /dev/vda /dev/vdb 128 32"
show dmsetup create thin0 --table "0 8388608 thin /dev/mapper/pool 0"
show mount -o ro,noload /dev/mapper/thin0 /tmp/demo-mnt
show cmp /tmp/demo-file2 /tmp/demo-mnt/file
show umount /tmp/demo-mnt
show dmsetup remove thin0
show dmsetup remove pool
show rmmod rthin

echo "== lvm2 on rthin: with dm_thin_names=1, rthin registers thin-pool and thin (dm-thin's"
echo "   names and version), so lvm2 and dmeventd drive rthin as they would drive dm-thin"
show rmmod dm_thin_pool
show insmod "$RTHIN_MODULE" dm_thin_names=1
show dmsetup targets
. selftests/lvm_lib.sh
lvm_setup /tmp/demo-lvm
echo "lvm.conf: udev off, thin_pool_autoextend_threshold = 70, thin_pool_autoextend_percent = 25"
start_dmeventd
wipefs -qa /dev/vda /dev/vdb
show pvcreate -q /dev/vda /dev/vdb
show vgcreate -q demo /dev/vda /dev/vdb
show lvcreate -q --type thin-pool -L 64M -n pool demo
show lvcreate -q -V 1G -T demo/pool -n vol
show lvs -a -o lv_name,lv_size,data_percent,metadata_percent,seg_monitor demo
show dmsetup table demo-pool-tpool
echo "160 MiB into the 64 MiB pool: dmeventd extends it at 70% full; a write that finds it"
echo "full waits (queue_if_no_space) until it has grown, so none fails"
head -c 160M /dev/urandom >/tmp/demo-fill
show dd if=/tmp/demo-fill of=/dev/demo/vol bs=1M oflag=direct status=none
show lvs -o lv_name,lv_size,data_percent,metadata_percent demo
show cmp -n $((160 << 20)) /tmp/demo-fill /dev/demo/vol
echo "every block reads back; the pool grew by itself from 64 MiB to the size lvs shows, by"
echo "dmeventd's lvextend --use-policies (its log, as far as it has been written out):"
grep -iE "extend" /tmp/demo-lvm/dmeventd.log || echo "(no extend line in dmeventd's log yet)"
show vgchange -q -an demo
show vgchange -q -ay demo
echo "lvm2 ran thin_check on rthin's metadata before activating the pool again:"
show cat /tmp/demo-lvm/thin_check.log
show cmp -n $((160 << 20)) /tmp/demo-fill /dev/demo/vol
show lvremove -q -y demo
show vgremove -q demo
show pvremove -q /dev/vda /dev/vdb
stop_dmeventd
show rmmod rthin
