#!/usr/bin/env bash
# Crash consistency with dm-log-writes (issue 11, item 2). A pool's metadata and data devices
# are two linear slices of ONE dm-log-writes device (rt_lw, over the first 200 MiB of
# DATA_DEV; its log on the rest), so that one log holds every write to either in one total
# order: the order in which they became durable (see replay.py for the log format). A
# workload (replay.py work) runs on the pool: O_DIRECT writes of 4-64 KiB to two thins and to
# snapshots of one (snapshot breaks), whole-block discards, snapshots created and deleted
# mid-run, files written and fsync'ed on ext4 on a third thin; every so often it fsyncs every
# thin and puts a mark in the log, and it journals the hash of every 4 KiB it wrote.
#
# The log is then replayed onto META_DEV, to every FLUSH/FUA entry and mark and to points
# between them (the long form), or to a spread of them (the short form), each a state the
# disks could be left in by a crash. At every point: thin_check is clean on the metadata;
# thin_dump lists the thin devices that existed at the last mark (a snapshot made or deleted
# since may or may not be there); the pool opens read-write in rthin AND in upstream dm-thin
# (each on its own copy of the metadata, the replayed data shared and only read), and every
# 4 KiB unit written before the last mark reads back with its data through each (a unit
# written after the mark: its old or one of its new contents); thin_check is clean again
# after each pool closed; at some points the ext4 thin, copied out, mounts (replaying its
# journal), every file fsync'ed before the mark reads back, and e2fsck -fn is clean.
#
# Limit: one log for both devices means a flush of the metadata device also makes the data
# writes completed before it durable (they are below one log-writes device). On separate
# disks it would not; a thin target that forgot to pass a thin's flush to its data device
# would not be caught here (parity/thin_io cover flush passdown).
#
# REPLAY_POINTS: "short:N" (default short:12) or "long"; REPLAY_ROUNDS (default 16) the
# workload's rounds; REPLAY_SEED fixes the workload (printed); REPLAY_EXT4_EVERY (default 4)
# checks ext4 at every Nth point (0: never). Every test: the workload on rthin
# (replay_rthin) or on upstream dm-thin (replay_dmthin); POOL_TGT/THIN_TGT pick one, as
# seeds.sh.
here=${here:-$(cd "$(dirname "$0")" && pwd)}
both=1
[ -n "${THIN_TGT:-}" ] && both=0
. "$here/lib.sh"        # (it changes into a scratch directory)
. "$here/thin_lib.sh"

REPLAY_POINTS=${REPLAY_POINTS:-short:12}
REPLAY_ROUNDS=${REPLAY_ROUNDS:-16}
REPLAY_SEED=${REPLAY_SEED:-$(( $(date +%s) % 100000 ))}
REPLAY_EXT4_EVERY=${REPLAY_EXT4_EVERY:-4}
MAREA=$((8 * 2048))         # the metadata area, sectors
DAREA=$((192 * 2048))       # the data area
ORIG=$((MAREA + DAREA))

t_replay() {
	load_targets
	# Every point is opened in rthin and in dm-thin, whichever ran the workload: replay_dmthin
	# run alone (not after replay_rthin, which loads rthin) found "rthin-pool: unknown target
	# type" at its first point.
	load_rthin
	kmod dm-log-writes
	local dsz t0
	dsz=$(sectors "$DATA_DEV")
	echo "seed $REPLAY_SEED, $REPLAY_ROUNDS rounds, points $REPLAY_POINTS, workload on $POOL_TGT:" \
		"reproduce with REPLAY_SEED=$REPLAY_SEED"
	# Both metadata areas zeroed (the pool formats metadata that is all zeros); the data
	# area's old content is never read (provisioning writes whole blocks).
	dd if=/dev/zero of="$DATA_DEV" bs=1M count=$((MAREA / 2048)) oflag=direct status=none
	dd if=/dev/zero of="$META_DEV" bs=1M count=$((MAREA / 2048)) oflag=direct status=none
	dd if=/dev/zero of="$DATA_DEV" bs=4096 count=1 seek=$((ORIG / 8)) oflag=direct status=none
	dmsetup create rt_orig --table "0 $ORIG linear $DATA_DEV 0"
	dmsetup create rt_log --table "0 $((dsz - ORIG)) linear $DATA_DEV $ORIG"
	dmsetup create rt_lw --table "0 $ORIG log-writes /dev/mapper/rt_orig /dev/mapper/rt_log"
	dmsetup create rt_rmeta --table "0 $MAREA linear /dev/mapper/rt_lw 0"
	dmsetup create rt_rdata --table "0 $DAREA linear /dev/mapper/rt_lw $MAREA"
	dmsetup create rt_rpool --table "0 $DAREA $POOL_TGT /dev/mapper/rt_rmeta /dev/mapper/rt_rdata $BS 32"
	dmsetup message rt_rpool 0 create_thin 0
	dmsetup message rt_rpool 0 create_thin 1
	dmsetup message rt_rpool 0 create_thin 9
	dmsetup create rt_rfs --table "0 131072 $THIN_TGT /dev/mapper/rt_rpool 9"
	mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 /dev/mapper/rt_rfs
	mkdir -p "$TMP/fs"
	mount /dev/mapper/rt_rfs "$TMP/fs"
	t0=$SECONDS
	TMP=$TMP python3 "$here/replay.py" work "$TMP/journal" "$REPLAY_SEED" "$REPLAY_ROUNDS" "$THIN_TGT" ||
		{ umount "$TMP/fs"; fail "the workload failed"; }
	umount "$TMP/fs"
	echo "workload: $((SECONDS - t0)) s; pool: $(dmsetup status rt_rpool)"
	local d
	for d in $(dmsetup ls | awk '/^rt_r[0-9]/ {print $1}') rt_rfs rt_rpool; do dmsetup remove "$d"; done
	check_meta /dev/mapper/rt_rmeta
	dmsetup remove rt_rmeta
	dmsetup remove rt_rdata
	echo "log-writes: $(dmsetup status rt_lw)"
	dmsetup remove rt_lw          # (logs what was still unflushed, and writes the log's super)
	# The replay: onto META_DEV's first 200 MiB; each point's metadata is copied to rt_smeta
	# (the pools write when they open and close); rt_sdata is the replayed data area.
	dmsetup create rt_smeta --table "0 $MAREA linear $META_DEV $((208 * 2048))"
	dmsetup create rt_sdata --table "0 $DAREA linear $META_DEV $MAREA"
	TMP=$TMP python3 "$here/replay.py" check "$TMP/journal" /dev/mapper/rt_log "$META_DEV" "$REPLAY_POINTS" \
		"rthin-pool,thin-pool" "rthin,thin" "$REPLAY_EXT4_EVERY" ||
		{ cp "$TMP/journal" "$RTHIN_RESULTS/replay-journal-$THIN_TGT.txt"; fail "replayed points failed"; }
}

tests=(replay:t_replay)
if [ $both = 1 ]; then
	on_rthin() { POOL_TGT=rthin-pool THIN_TGT=rthin LOG_PFX=rthin; }
	on_dmthin() { POOL_TGT=thin-pool THIN_TGT=thin LOG_PFX=thin; }
	t_replay_rthin() { on_rthin; t_replay; }
	t_replay_dmthin() { on_dmthin; t_replay; }
	tests=(replay_rthin:t_replay_rthin replay_dmthin:t_replay_dmthin)
fi
# REPLAY_ONLY=REGEX: only the tests whose names match.
if [ -n "${REPLAY_ONLY:-}" ]; then
	all=()
	for t in "${tests[@]}"; do [[ ${t%%:*} =~ $REPLAY_ONLY ]] && all+=("$t"); done
	tests=("${all[@]}")
fi
run_suite "${tests[@]}"
