#!/usr/bin/env bash
# After the suites, on the checker kernel (guest-run.sh --checker): rthin's memory is all given
# back. rthin is unloaded (every device it served is gone by now), then kmemleak scans twice
# (an object is reported once it has been unreferenced across scans for a few seconds). A leak
# whose allocation backtrace runs through rthin or device-mapper fails the test; others (the
# guest's 9p and virtio setup has a few) are counted and listed in the results folder.
here=${here:-$(cd "$(dirname "$0")" && pwd)}
. "$here/lib.sh"        # (it changes into a scratch directory)

t_no_leaks() {
	local f=$RTHIN_RESULTS/kmemleak.txt ours all
	dmsetup remove_all >/dev/null 2>&1 || true
	lsmod | grep -q '^rthin ' && rmmod rthin
	echo "rthin unloaded"
	echo scan >/sys/kernel/debug/kmemleak
	sleep 6
	echo scan >/sys/kernel/debug/kmemleak
	cat /sys/kernel/debug/kmemleak >"$f"
	all=$(grep -c '^unreferenced object' "$f" || true)
	# One report per object: its header line, then its backtrace; ours name rthin or dm code.
	ours=$(awk '/^unreferenced object/ {if (o) n++; o=0} /rthin|\[dm_|dm_bufio|dm_kcopyd|dm_table|dm_thin|\[dm-/ {o=1} END {if (o) n++; print n+0}' "$f")
	echo "kmemleak: $all unreferenced objects, $ours from rthin or device-mapper (list: $f)"
	[ "$ours" = 0 ] || { grep -B2 -A14 -E 'rthin|dm_' "$f" | head -60; fail "memory leaked"; }
}

run_suite kmemleak_after_unload:t_no_leaks
