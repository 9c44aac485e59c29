#!/usr/bin/env bash
# rlinear selftests: dm-linear's table, status and behaviour, through rthin's safe layer.
. "$(dirname "$0")/lib.sh"

OFF=2048          # offset into the data disk, in sectors
LEN=65536         # 32 MiB

t_registered() {
	load_rthin
	dmsetup targets | grep -E '^rlinear +v1\.4\.0$' || fail "rlinear v1.4.0 not in: $(dmsetup targets)"
}

# Write through rlinear, read below it at the mapped offset, and the other way round.
t_data_roundtrip() {
	dmsetup create rt_lin --table "0 $LEN rlinear $DATA_DEV $OFF"
	head -c 1M /dev/urandom >"$TMP/a"
	head -c 1M /dev/urandom >"$TMP/b"
	# 1 MiB at 4 MiB into the target: sector 8192 of the target, OFF+8192 of the disk.
	dd if="$TMP/a" of=/dev/mapper/rt_lin bs=1M seek=4 oflag=direct status=none
	dd if="$DATA_DEV" of="$TMP/a.below" bs=512 skip=$((OFF + 8192)) count=2048 iflag=direct status=none
	cmp "$TMP/a" "$TMP/a.below" || fail "data written through rlinear is not at the mapped offset"
	dd if="$TMP/b" of="$DATA_DEV" bs=512 seek=$((OFF + 20480)) oflag=direct status=none
	dd if=/dev/mapper/rt_lin of="$TMP/b.above" bs=512 skip=20480 count=2048 iflag=direct status=none
	cmp "$TMP/b" "$TMP/b.above" || fail "data written below is not read back through rlinear"
	# The last sector of the target maps to the last sector of the mapping.
	head -c 512 /dev/urandom >"$TMP/c"
	dd if="$TMP/c" of=/dev/mapper/rt_lin bs=512 seek=$((LEN - 1)) oflag=direct status=none
	dd if="$DATA_DEV" of="$TMP/c.below" bs=512 skip=$((OFF + LEN - 1)) count=1 iflag=direct status=none
	cmp "$TMP/c" "$TMP/c.below" || fail "last sector maps wrong"
	[ "$(sectors /dev/mapper/rt_lin)" = "$LEN" ] || fail "size $(sectors /dev/mapper/rt_lin) != $LEN"
}

# The same tables through linear and rlinear print the same table and status lines.
t_table_status_match_linear() {
	local tables=(
		"0 $LEN %s $DATA_DEV $OFF"
		"0 $LEN %s $(devno "$DATA_DEV") 0"
		"0 1024 %s $DATA_DEV 0
1024 2048 %s $DATA_DEV 100000
3072 8 %s $META_DEV 7"
	)
	local t i=0 ours theirs
	for t in "${tables[@]}"; do
		i=$((i + 1))
		# shellcheck disable=SC2059
		dmsetup create rt_up$i --table "$(printf "${t//%s/linear}")"
		# shellcheck disable=SC2059
		dmsetup create rt_us$i --table "$(printf "${t//%s/rlinear}")"
		for what in table status; do
			theirs=$(dmsetup $what rt_up$i | sed 's/ linear / TARGET /; s/ linear$/ TARGET/')
			ours=$(dmsetup $what rt_us$i | sed 's/ rlinear / TARGET /; s/ rlinear$/ TARGET/')
			echo "$what $i: linear: [$theirs] rlinear: [$ours]"
			[ "$ours" = "$theirs" ] || fail "dmsetup $what differs for table $i"
			[ -n "$ours" ] || fail "empty $what"
		done
		dmsetup table rt_us$i | grep -q rlinear || fail "no rlinear in table"
	done
}

# Bad tables are refused with dm-linear's message (or dm core's), the device is not left
# behind, and the kernel log stays clean (checked by the runner). Where the two differ on
# purpose the expected messages are given as "linear's|rlinear's": dm-linear's sscanf wraps
# an offset that overflows 64 bits and dm core then finds the device too small, while
# rlinear refuses the number itself.
t_bad_tables() {
	local cases=(
		"0 100 %s"                                  "Invalid argument count"
		"0 100 %s $DATA_DEV"                        "Invalid argument count"
		"0 100 %s $DATA_DEV 0 extra"                "Invalid argument count"
		"0 100 %s $DATA_DEV abc"                    "Invalid device sector"
		"0 100 %s $DATA_DEV 12x"                    "Invalid device sector"
		"0 100 %s $DATA_DEV 99999999999999999999"   "too small for target|Invalid device sector"
		"0 100 %s /dev/rthin-no-such-device 0"      "Device lookup failed"
		"0 100 %s 250:250 0"                        "Device lookup failed"
		"0 100 %s $DATA_DEV $(( $(sectors "$DATA_DEV") - 50 ))"  "too small for target"
	)
	local i msg tgt
	for ((i = 0; i < ${#cases[@]}; i += 2)); do
		for tgt in linear rlinear; do
			msg=${cases[i+1]}
			case "$msg" in *"|"*) [ $tgt = linear ] && msg=${msg%|*} || msg=${msg#*|} ;; esac
			# "too small for target" comes from dm core, without the target's name.
			case "$msg" in "too small"*) expect_refused "" "${cases[i]//%s/$tgt}" "$msg" ;;
			*) expect_refused "$tgt" "${cases[i]//%s/$tgt}" "$msg" ;; esac
		done
	done
}

# Suspend, resume and table reloads while fio writes and verifies: no write is lost.
t_suspend_reload_under_io() {
	dmsetup create rt_io --table "0 $LEN rlinear $DATA_DEV $OFF"
	fio --name=w --filename=/dev/mapper/rt_io --rw=randwrite --bs=4k --size=16M \
		--numjobs=2 --offset_increment=16M --direct=1 --ioengine=libaio --iodepth=8 \
		--verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting \
		--output="$TMP/fio.out" &
	local fio=$! n=0
	while kill -0 $fio 2>/dev/null && [ $n -lt 40 ]; do
		n=$((n + 1))
		dmsetup suspend rt_io
		dmsetup resume rt_io
		dmsetup reload rt_io --table "0 $LEN rlinear $DATA_DEV $OFF"
		dmsetup suspend rt_io
		dmsetup resume rt_io
	done
	wait $fio || { cat "$TMP/fio.out"; fail "fio failed or verify found bad data"; }
	echo "suspend/reload cycles while fio ran: $n"
	[ $n -ge 1 ] || fail "fio ended before any suspend/reload cycle"
	grep -q "err= 0" "$TMP/fio.out" || { cat "$TMP/fio.out"; fail "fio reported errors"; }
}

# Remove while IO runs, with a second remove at the same time (the AB-BA scenario of seed
# 000): the removes either fail with EBUSY or succeed, nothing hangs, and with --force the
# device goes away while IO is still running.
t_remove_under_io() {
	dmsetup create rt_rm --table "0 $LEN rlinear $DATA_DEV $OFF"
	fio --name=r --filename=/dev/mapper/rt_rm --rw=randrw --bs=4k --size=32M --direct=1 \
		--ioengine=libaio --iodepth=16 --time_based --runtime=8 --output="$TMP/fio2.out" &
	local fio=$! i
	# Wait until fio has the device open (dm's open count), however slow the guest is.
	for i in $(seq 100); do
		[ "$(dmsetup info -c --noheadings -o open rt_rm)" -gt 0 ] && break
		sleep 0.2
	done
	[ "$(dmsetup info -c --noheadings -o open rt_rm)" -gt 0 ] || fail "fio never opened the device"
	timeout 60 dmsetup remove rt_rm >"$TMP/rm1" 2>&1 &
	local r1=$!
	timeout 60 dmsetup remove rt_rm >"$TMP/rm2" 2>&1 &
	local r2=$!
	local rc1=0 rc2=0
	wait $r1 || rc1=$?
	wait $r2 || rc2=$?
	echo "concurrent removes while open: rc=$rc1 rc=$rc2"
	[ $rc1 != 124 ] && [ $rc2 != 124 ] || fail "a remove hung"
	[ $rc1 != 0 ] && [ $rc2 != 0 ] || fail "an open device was removed without --force"
	grep -qi busy "$TMP/rm1" "$TMP/rm2" || fail "removes did not say busy: $(cat "$TMP/rm1" "$TMP/rm2")"
	# Forced removes, two at once, while fio still runs: the table is swapped for an error
	# target and the device is removed once fio lets go; fio sees errors, nothing hangs.
	timeout 60 dmsetup remove --force --retry rt_rm >"$TMP/rm3" 2>&1 &
	r1=$!
	timeout 60 dmsetup remove --force rt_rm >"$TMP/rm4" 2>&1 &
	r2=$!
	wait $fio || true
	rc1=0 rc2=0
	wait $r1 || rc1=$?
	wait $r2 || rc2=$?
	echo "forced removes: rc=$rc1 rc=$rc2"
	[ $rc1 != 124 ] && [ $rc2 != 124 ] || fail "a forced remove hung"
	sleep 1
	if dmsetup info rt_rm >/dev/null 2>&1; then
		dmsetup remove rt_rm || fail "device could not be removed after IO stopped"
	fi
	! dmsetup info rt_rm >/dev/null 2>&1 || fail "device still there"
}

# The module stays loaded while a table uses it, and loads and unloads cleanly 20 times.
t_module_cycles() {
	load_rthin
	dmsetup create rt_busy --table "0 8 rlinear $DATA_DEV 0"
	! rmmod rthin 2>/dev/null || fail "rthin unloaded while a table uses it"
	dmsetup remove rt_busy
	local i
	for i in $(seq 20); do
		rmmod rthin || fail "rmmod failed at cycle $i"
		! dmsetup targets | grep -q rlinear || fail "rlinear still registered after unload $i"
		insmod "$RTHIN_MODULE" || fail "insmod failed at cycle $i"
		dmsetup targets | grep -q rlinear || fail "rlinear not registered after load $i"
	done
	dmsetup create rt_after --table "0 8 rlinear $DATA_DEV 0"
	dmsetup remove rt_after
}

tests=(
	rlinear_registered:t_registered
	rlinear_data_roundtrip:t_data_roundtrip
	rlinear_table_status_match_linear:t_table_status_match_linear
	rlinear_bad_tables:t_bad_tables
	rlinear_suspend_reload_under_io:t_suspend_reload_under_io
	rlinear_remove_under_io:t_remove_under_io
	rlinear_module_cycles:t_module_cycles
)
run_suite "${tests[@]}"
