#!/usr/bin/env bash
# Runs inside the guest for `make demo`.
set -euo pipefail
export DM_DISABLE_UDEV=1
show() { echo "+ $*"; "$@"; }
for d in $(modinfo -F depends "$RTHIN_MODULE" | tr ',' ' '); do modprobe -d "$RTHIN_KDIR/mods" "$d"; done
show insmod "$RTHIN_MODULE"
show dmsetup targets
show dmsetup create demo --table "0 409600 rlinear /dev/vdb 2048"
show dmsetup table demo
show dmsetup status demo
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
show rmmod rthin
