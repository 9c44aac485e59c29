#!/usr/bin/env bash
# lvm2 drives the thin targets (issue 10, item 7): Debian's lvm2, dmeventd and
# thin-provisioning-tools run a real LVM thin workflow on the guest's two disks, first on
# upstream dm-thin (the reference: lvm2 loads dm_thin_pool itself with /sbin/modprobe), then
# on rthin loaded with dm_thin_names=1, which registers its targets as `thin-pool` and `thin`.
# The same steps, the same checks, on both:
#   pvcreate/vgcreate; a thin pool; two thin volumes with ext4, files written and checked;
#   a thin snapshot, checked and removed; lvextend of the pool's data and of its metadata;
#   dmeventd monitoring with thin_pool_autoextend_threshold, a fill past the pool's size that
#   it extends with no write failing; vgchange -an/-ay with lvm2's own thin_check; lvremove.
# lvm2 runs with udev sync off and its own lvm.conf (LVM_SYSTEM_DIR) in a scratch directory.
# usage: bash selftests/lvm.sh       LVM_PASSES="dmthin rthin" (the default) picks passes
here=${here:-$(cd "$(dirname "$0")" && pwd)}
. "$here/lib.sh"        # (it changes into a scratch directory)

VG=lvmt                 # not rt_*: the VG's devices live from test to test of a pass
POOL_DM=$VG-pool-tpool  # the thin-pool target's device, as lvm2 names it
MNT=$TMP/mnt
mkdir -p "$MNT"
. "$here/lvm_lib.sh"
lvm_setup "$TMP/lvm"

# lvfield LV FIELD: an lvs field of $VG/LV in bytes (sizes) or as lvs prints it.
lvfield() { lvs --noheadings --nosuffix --units b -o "$2" "$VG/$1" | tr -d ' '; }
# pool_total data|meta: the kernel's total data or metadata blocks of the pool.
pool_total() {
	local f=6
	[ "$1" = meta ] && f=5
	dmsetup status "$POOL_DM" | awk -v f=$f '{split($f, a, "/"); print a[2]}'
}
pool_used_data() { dmsetup status "$POOL_DM" | awk '{split($6, a, "/"); print a[1]}'; }

# Which module provides the thin targets in this pass.
check_provider() {
	if [ "$PASS" = rthin ]; then
		! lsmod | grep -q '^dm_thin_pool ' || fail "dm_thin_pool is loaded on the rthin pass"
		[ "$(cat /sys/module/rthin/refcnt)" -gt 0 ] || fail "rthin is not in use: $(dmsetup table)"
	else
		[ "$(cat /sys/module/dm_thin_pool/refcnt 2>/dev/null)" -gt 0 ] ||
			fail "dm_thin_pool not in use: $(lsmod)"
	fi
}

# put_file LV NAME SIZE_MB: mount LV, write NAME of random bytes, record its checksum.
put_file() {
	mount "/dev/$VG/$1" "$MNT"
	head -c "${3}M" /dev/urandom >"$MNT/$2"
	sync
	sha256sum "$MNT/$2" | cut -d' ' -f1 >"$LVMDIR/$1.$2.sum"
	umount "$MNT"
}
# check_files VG/LV [MOUNT OPTIONS]: every file put on LV reads back with its checksum, after
# a fresh mount (the page cache dropped).
check_files() {
	local s f
	echo 3 >/proc/sys/vm/drop_caches
	mount ${2:+-o "$2"} "/dev/$1" "$MNT"
	for s in "$LVMDIR/${1#*/}".*.sum; do
		f=${s##*/}; f=${f#*.}; f=${f%.sum}
		[ "$(sha256sum "$MNT/$f" | cut -d' ' -f1)" = "$(cat "$s")" ] ||
			{ umount "$MNT"; fail "$1: $f does not read back as written"; return 1; }
	done
	umount "$MNT"
}

# Whatever a failed test left: the VG's devices, the VG, the PV labels.
lvm_reset() {
	umount "$MNT" 2>/dev/null || true
	vgchange -an "$VG" >/dev/null 2>&1 || true
	local d
	for d in $(dmsetup ls 2>/dev/null | awk -v p="^$VG-" '$1 ~ p {print $1}'); do
		dmsetup remove --force "$d" >/dev/null 2>&1 || true
	done
	wipefs -qa /dev/vda /dev/vdb
	rm -f "$LVMDIR"/*.sum "$LVMDIR/thin_check.log"
}

# Setting up a pass: the targets' module, dmeventd.
t_setup() {
	lvm_reset
	stop_dmeventd
	unload_rthin_names
	# On dm-thin, lvm2 must load dm_thin_pool itself, with a plain /sbin/modprobe (the test
	# kernel's modules are in the guest's /lib/modules); on rthin, dm-thin's names are rthin's.
	! lsmod | grep -q '^dm_thin_pool ' || rmmod dm_thin_pool
	if [ "$PASS" = dmthin ]; then
		modprobe --dry-run dm-thin-pool || fail "modprobe does not find the test kernel's dm-thin-pool"
	else
		load_rthin_names
	fi
	start_dmeventd || fail "no dmeventd"
}

load_rthin_names() {
	local d
	unload_rthin
	for d in $(modinfo -F depends "$RTHIN_MODULE" | tr ',' ' '); do kmod "$d"; done
	insmod "$RTHIN_MODULE" dm_thin_names=1
}
unload_rthin_names() {
	[ "$(cat /sys/module/rthin/parameters/dm_thin_names 2>/dev/null)" = Y ] && rmmod rthin
	return 0
}

# Item 7: the module parameter. With dm-thin's targets registered, rthin refuses to load with
# dm_thin_names=1 and says what to do; with its default names it loads beside dm-thin; with
# dm-thin gone, it registers thin-pool and thin with dm-thin's version (1.23.0).
t_names_param() {
	local d log
	unload_rthin
	kmod dm-thin-pool
	for d in $(modinfo -F depends "$RTHIN_MODULE" | tr ',' ' '); do kmod "$d"; done
	kmsg_mark
	if insmod "$RTHIN_MODULE" dm_thin_names=1 2>"$TMP/insmod.err"; then
		rmmod rthin
		fail "rthin loaded with dm_thin_names=1 while dm-thin's targets are registered"
	fi
	log=$(kmsg_since)
	echo "insmod: $(cat "$TMP/insmod.err")"
	echo "kernel: $(grep dm_thin_names <<<"$log" || true)"
	grep -q "rthin: dm_thin_names=1: a target named 'thin-pool' is registered already" <<<"$log" ||
		fail "no clear message in the kernel log: $log"
	grep -q "modprobe -r dm_thin_pool" <<<"$log" || fail "the message does not say what to do"
	! lsmod | grep -q '^rthin ' || fail "rthin stayed loaded"
	insmod "$RTHIN_MODULE"
	dmsetup targets | grep -q '^rthin-pool ' || fail "rthin-pool not registered: $(dmsetup targets)"
	dmsetup targets | grep -q '^thin-pool ' || fail "dm-thin's thin-pool gone: $(dmsetup targets)"
	rmmod rthin
	rmmod dm_thin_pool
	load_rthin_names
	dmsetup targets
	dmsetup targets | grep -qx 'thin-pool *v1\.23\.0' || fail "no thin-pool v1.23.0"
	dmsetup targets | grep -qx 'thin *v1\.23\.0' || fail "no thin v1.23.0"
	! dmsetup targets | grep -q '^rthin' || fail "rthin's own names registered too"
	# A dm-thin module loaded now cannot take the names (dm-thin's init fails).
	! modprobe dm-thin-pool 2>/dev/null || fail "dm-thin-pool loaded beside rthin's thin-pool"
}

# pvcreate, vgcreate, a thin pool (256 MiB of data, 4 MiB of metadata) and two 1 GiB thin
# volumes with ext4, a file on each that reads back. (dmeventd watches the pool from here on;
# the tests before autoextend stay below its threshold.)
t_pool_thins() {
	pvcreate -q /dev/vda /dev/vdb
	vgcreate -q "$VG" /dev/vda /dev/vdb
	lvcreate -q --type thin-pool -L 256M --poolmetadatasize 4M -n pool "$VG" /dev/vdb
	lvcreate -q -V 1G -T "$VG/pool" -n thin1
	lvcreate -q -V 1G -T "$VG/pool" -n thin2
	lvs -a "$VG"
	check_provider
	dmsetup table "$POOL_DM"
	mkfs.ext4 -q "/dev/$VG/thin1"
	mkfs.ext4 -q "/dev/$VG/thin2"
	put_file thin1 a 16
	put_file thin2 b 16
	check_files "$VG/thin1"
	check_files "$VG/thin2"
	[ "$(pool_used_data)" -gt 0 ] || fail "the pool uses no data blocks: $(dmsetup status "$POOL_DM")"
	lvs -o lv_name,lv_size,data_percent,metadata_percent "$VG"
}

# A thin snapshot of thin1 keeps the file as it was when thin1 changes; its removal leaves
# thin1 whole and gives the snapshot's own blocks back.
t_snapshot() {
	lvcreate -q -s -n snap "$VG/thin1"
	lvchange -q -ay -K "$VG/snap"
	cp "$LVMDIR/thin1.a.sum" "$LVMDIR/snap.a.sum"
	put_file thin1 a 16            # thin1's file changes; the snapshot keeps the old one
	put_file snap c 8              # and the snapshot gets one of its own
	check_files "$VG/snap"
	check_files "$VG/thin1"
	local before after
	before=$(pool_used_data)
	lvremove -q -y "$VG/snap"
	! lvs "$VG/snap" >/dev/null 2>&1 || fail "snap still listed"
	! dmsetup info "$VG-snap" >/dev/null 2>&1 || fail "snap's device left behind"
	after=$(pool_used_data)
	echo "data blocks in use: $before with the snapshot, $after after its removal"
	[ "$after" -lt "$before" ] || fail "removing the snapshot freed no data blocks"
	check_files "$VG/thin1"
}

# lvextend of the pool's data: lvm2 reloads the pool with a longer data device, and the
# kernel's pool counts the new blocks.
t_extend_data() {
	local chunk size total before
	chunk=$(lvfield pool chunk_size)
	before=$(lvfield pool lv_size)
	lvextend -q -L +64M "$VG/pool"
	size=$(lvfield pool lv_size)
	total=$(pool_total data)
	echo "pool: $before bytes, $size after lvextend; the kernel's: $total blocks of $chunk bytes"
	[ "$size" = $((before + (64 << 20))) ] || fail "pool size $size after lvextend -L +64M"
	[ $((total * chunk)) = "$size" ] || fail "the kernel's pool has $total blocks of $chunk bytes"
	put_file thin2 d 8
	check_files "$VG/thin2"
}

# lvextend --poolmetadatasize: lvm2 grows the metadata LV and resumes the pool on it; the
# kernel's pool takes the new size (dm-thin grows its metadata space on resume) and lvm2
# reports the metadata use against it.
t_extend_metadata() {
	local size total pct before
	before=$(lvfield pool lv_metadata_size)
	lvextend -q --poolmetadatasize +4M "$VG/pool"
	size=$(lvfield pool lv_metadata_size)
	total=$(pool_total meta)
	pct=$(lvs --noheadings -o metadata_percent "$VG/pool" | tr -d ' ')
	echo "metadata: $before bytes, $size after lvextend; the kernel's: $total blocks of 4096 bytes, $pct% used"
	[ "$size" = $((before + (4 << 20))) ] || fail "metadata size $size after lvextend --poolmetadatasize +4M"
	[ $((total * 4096)) = "$size" ] || fail "the kernel's pool did not grow its metadata: $total blocks"
	put_file thin2 e 8
	check_files "$VG/thin2"
}

# dmeventd watches the pool; a 1 GiB thin volume written with 320 MiB needs more than the
# pool has free: the pool is extended at 70% full, by 25% each time, as often as it takes,
# and no write fails (the pool queues writes while it is full, lvm2's default). fio writes
# with a checksum and the offset in every block and reads it all back.
t_autoextend() {
	local mon before after free chunk
	mon=$(lvs --noheadings -o seg_monitor "$VG/pool" | tr -d ' ')
	[ "$mon" = monitored ] || fail "the pool is not monitored by dmeventd: '$mon'"
	before=$(lvfield pool lv_size)
	chunk=$(lvfield pool chunk_size)
	free=$((before - $(pool_used_data) * chunk))
	echo "pool: $before bytes, $free free"
	[ "$free" -lt $((320 << 20)) ] || fail "test setup: the pool has room for the writes already"
	lvcreate -q -V 1G -T "$VG/pool" -n thin3
	fio --name=fill --filename="/dev/$VG/thin3" --rw=write --bs=1M --size=320M \
		--ioengine=libaio --iodepth=8 --direct=1 --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --output="$TMP/fio.out" ||
		{ cat "$TMP/fio.out"; fail "fio failed: a write or a verify failed"; }
	grep -E "err=|WRITE:|READ:" "$TMP/fio.out"
	after=$(lvfield pool lv_size)
	echo "pool: $before bytes before, $after after; $(dmsetup status "$POOL_DM")"
	lvs -o lv_name,lv_size,data_percent,metadata_percent "$VG"
	[ "$after" -gt "$before" ] || fail "the pool did not grow"
	! dmsetup status "$POOL_DM" | grep -q out_of_data_space || fail "the pool is still out of data space"
	grep "Extending logical volume" "$LVMDIR/dmeventd.log" || fail "dmeventd extended nothing"
}

# vgchange -an puts every device away; vgchange -ay brings them back, lvm2 running its
# thin_check on the pool's metadata first (it passes), and every file and block reads back.
t_deactivate_activate() {
	vgchange -q -an "$VG"
	! dmsetup ls | grep -q "^$VG-" || fail "devices left after vgchange -an: $(dmsetup ls)"
	rm -f "$LVMDIR/thin_check.log"
	vgchange -q -ay "$VG"
	cat "$LVMDIR/thin_check.log"
	grep -q "thin_check -q --clear-needs-check-flag .*$VG-pool_tmeta -> 0" "$LVMDIR/thin_check.log" ||
		fail "lvm2 did not run thin_check on the pool's metadata, or it failed"
	check_provider
	check_files "$VG/thin1"
	check_files "$VG/thin2"
	fio --name=fill --filename="/dev/$VG/thin3" --rw=write --bs=1M --size=320M \
		--ioengine=libaio --iodepth=8 --direct=1 --verify=crc32c --verify_only \
		--verify_fatal=1 --output="$TMP/fio.out" ||
		{ cat "$TMP/fio.out"; fail "thin3's blocks do not read back"; }
}

# lvremove of the thin volumes and the pool, then the VG and the PVs: nothing left in the
# kernel, the module no longer in use.
t_lvremove() {
	local before after
	before=$(pool_used_data)
	lvremove -q -y "$VG/thin3"
	after=$(pool_used_data)
	echo "data blocks in use: $before, $after after removing thin3"
	[ "$after" -lt "$before" ] || fail "removing thin3 freed no data blocks"
	lvremove -q -y "$VG"
	! dmsetup ls | grep -q "^$VG-" || fail "devices left after lvremove: $(dmsetup ls)"
	vgremove -q "$VG"
	pvremove -q /dev/vda /dev/vdb
	stop_dmeventd
	if [ "$PASS" = rthin ]; then
		[ "$(cat /sys/module/rthin/refcnt)" = 0 ] || fail "rthin still in use"
	else
		[ "$(cat /sys/module/dm_thin_pool/refcnt)" = 0 ] || fail "dm_thin_pool still in use"
	fi
}

steps=(pool_thins snapshot extend_data extend_metadata autoextend deactivate_activate lvremove)
tests=()
for PASS in ${LVM_PASSES:-dmthin rthin}; do
	[ "$PASS" = rthin ] && tests+=("names_param:t_names_param")
	for s in setup "${steps[@]}"; do
		eval "t_${PASS}_$s() { PASS=$PASS; t_$s; }"
		tests+=("${PASS}_$s:t_${PASS}_$s")
	done
done
run_suite "${tests[@]}"
rc=$?
lvm_reset
stop_dmeventd
unload_rthin_names
exit $rc
