#!/usr/bin/env bash
# Corrupt metadata, systematically (issue 11, item 6): a pool's metadata image with several
# thin devices, snapshots that share blocks three ways and two-level mapping trees, corrupted
# case by case by fuzz_meta.py (superblock fields, B-tree node headers, keys, child pointers
# to the node itself or its parent, space-map index entries and bitmaps, each with its
# checksum rewritten so the corruption gets past the checksum check; and raw damage), then
# activated and worked in the pool: status, every thin read, written, flushed and discarded,
# messages. Every case must be refused or work, with or without IO errors: no step may hang
# (60 s without progress), and the kernel log must stay free of reports (lockdep, WARNING,
# BUG, Oops, Rust panics). The suite reports how the cases ended.
#
# FUZZ_SEED=N repeats a run; FUZZ_META_CASES (default 200) sets the number of cases. Runs on
# rthin only: upstream dm-thin is not asked to survive these (it has BUG_ONs on some corrupt
# metadata), so outcomes are not compared with it.
here=${here:-$(cd "$(dirname "$0")" && pwd)}
. "$here/lib.sh"        # (it changes into a scratch directory)
. "$here/thin_lib.sh"

FUZZ_SEED=${FUZZ_SEED:-$(( $(date +%s%N) / 1000 % 1000000007 ))}
FUZZ_META_CASES=${FUZZ_META_CASES:-200}
MSZ=$((8 * 2048))                       # the metadata image: 8 MiB, 2048 blocks
TLEN=$((256 * 2048))                    # thin devices: 256 MiB (fuzz_meta.py's THIN_LEN)

# write_blocks DEV N FIRST STRIDE: N 4 KiB random writes, at data blocks FIRST, FIRST+STRIDE...
write_blocks() {
	python3 - "$@" <<-'EOF'
	import mmap, os, sys
	dev, n, first, stride = sys.argv[1], *map(int, sys.argv[2:])
	fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
	buf = mmap.mmap(-1, 4096)
	for i in range(n):
	    buf[:] = os.urandom(4096)
	    os.pwritev(fd, [buf], (first + i * stride) * 65536)
	os.fsync(fd)
	EOF
}

# base_image: builds the image in $TMP/base.img. Thin 0 maps 600 blocks (a two-level mapping
# tree); 1 is its snapshot and 2 a snapshot of 1 (blocks shared three ways: the reference
# count tree), each then writes some blocks of its own; 3 maps a few; 5 is created and
# deleted (freed blocks in the space maps).
base_image() {
	dd if=/dev/zero of="$META_DEV" bs=1M count=8 oflag=direct status=none
	dmsetup create rt_zm --table "0 $MSZ linear $META_DEV 0"
	dmsetup create rt_zp --table "0 $DATA_SECTORS $POOL_TGT /dev/mapper/rt_zm $DATA_DEV $BS 32"
	dmsetup message rt_zp 0 create_thin 0
	dmsetup create rt_zt --table "0 $TLEN $THIN_TGT /dev/mapper/rt_zp 0"
	write_blocks /dev/mapper/rt_zt 600 0 6
	dmsetup suspend rt_zt
	dmsetup message rt_zp 0 create_snap 1 0
	dmsetup message rt_zp 0 create_snap 2 1
	dmsetup resume rt_zt
	dmsetup remove rt_zt
	for id in 1 2; do
		dmsetup create rt_zt --table "0 $TLEN $THIN_TGT /dev/mapper/rt_zp $id"
		write_blocks /dev/mapper/rt_zt 40 $((id * 7)) 30
		dmsetup remove rt_zt
	done
	for id in 3 5; do
		dmsetup message rt_zp 0 create_thin $id
		dmsetup create rt_zt --table "0 $TLEN $THIN_TGT /dev/mapper/rt_zp $id"
		write_blocks /dev/mapper/rt_zt 20 1 100
		dmsetup remove rt_zt
	done
	dmsetup message rt_zp 0 delete 5
	dmsetup status rt_zp
	dmsetup remove rt_zp
	check_meta /dev/mapper/rt_zm
	dd if=/dev/mapper/rt_zm of="$TMP/base.img" bs=1M iflag=direct status=none
}

t_fuzz_meta() {
	local pid kpid
	load_targets
	base_image
	echo "seed $FUZZ_SEED, $FUZZ_META_CASES cases: reproduce with FUZZ_SEED=$FUZZ_SEED" \
		"FUZZ_META_CASES=$FUZZ_META_CASES selftests/guest-run.sh fuzz_meta"
	dmesg --follow-new >"$TMP/kmsg" 2>&1 &
	kpid=$!
	trap 'kill $kpid 2>/dev/null || true' EXIT
	echo start >"$TMP/progress"
	python3 "$here/fuzz_meta.py" "$FUZZ_SEED" "$FUZZ_META_CASES" "$TMP/base.img" \
		/dev/mapper/rt_zm "$DATA_DEV" "$TMP/progress" "$POOL_TGT" "$THIN_TGT" \
		>"$RTHIN_RESULTS/fuzz-meta-$THIN_TGT.txt" 2>&1 &
	pid=$!
	watch_progress $pid "$TMP/progress" || { kill $kpid; tail -5 "$RTHIN_RESULTS/fuzz-meta-$THIN_TGT.txt"; return 1; }
	wait $pid || { tail -20 "$RTHIN_RESULTS/fuzz-meta-$THIN_TGT.txt"; fail "the fuzzer failed ($(cat "$TMP/progress"))"; }
	head -1 "$RTHIN_RESULTS/fuzz-meta-$THIN_TGT.txt"
	tail -1 "$RTHIN_RESULTS/fuzz-meta-$THIN_TGT.txt"
	# The harness restored the image: the pool opens on it and it is still clean.
	dmsetup create rt_zp --table "0 $DATA_SECTORS $POOL_TGT /dev/mapper/rt_zm $DATA_DEV $BS 32"
	dmsetup remove rt_zp
	check_meta /dev/mapper/rt_zm
	sleep 1
	kill $kpid
	wait $kpid 2>/dev/null || true
	python3 "$RTHIN_TOP/scripts/check-kernel-log" "$TMP/kmsg" || fail "kernel reports during the fuzzing"
}

tests=(fuzz_meta:t_fuzz_meta)
run_suite "${tests[@]}"
