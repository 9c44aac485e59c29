#!/usr/bin/env bash
# Runs inside the guest for `make demo`: rthin's targets on the VM's two disks,
# /dev/vda (metadata) and /dev/vdb (data).
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

echo "== rthin-pool: a thin pool in dm-thin's on-disk format"
show dd if=/dev/zero of=/dev/vda bs=1M count=4 oflag=direct status=none
size=$(blockdev --getsz /dev/vdb)
show dmsetup create pool --table "0 $size rthin-pool /dev/vda /dev/vdb 128 32"
show dmsetup status pool
show dmsetup message pool 0 create_thin 0
show dmsetup message pool 0 create_thin 1
show dmsetup message pool 0 create_snap 2 0
show dmsetup message pool 0 set_transaction_id 0 1
show dmsetup status pool
show dmsetup table pool
show dmsetup remove pool
echo "== the metadata rthin wrote, read by thin-provisioning-tools"
show thin_check /dev/vda
show thin_dump /dev/vda
show rmmod rthin
