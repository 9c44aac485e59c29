# lvm2 in the guest, for selftests/lvm.sh and make demo: a private lvm.conf (udev off, only
# the virtual disks, autoextend at 70% by 25%), lvm2's thin_check through a recording
# wrapper, and dmeventd. Sourced.
# shellcheck shell=bash

# lvm_setup DIR: lvm2 commands from here on use DIR as their system directory.
lvm_setup() {
	LVMDIR=$1
	export LVM_SYSTEM_DIR=$LVMDIR LVM_SUPPRESS_FD_WARNINGS=1
	mkdir -p "$LVMDIR"
	# lvm2's own thin_check goes through this wrapper, which records each run and its status.
	cat >"$LVMDIR/thin_check" <<-EOF
	#!/bin/sh
	/usr/sbin/thin_check "\$@"
	rc=\$?
	echo "thin_check \$* -> \$rc" >>"$LVMDIR/thin_check.log"
	exit \$rc
	EOF
	chmod +x "$LVMDIR/thin_check"
	# The guest has no udev: lvm2 creates the device nodes itself and waits for no uevent.
	cat >"$LVMDIR/lvm.conf" <<-EOF
	devices {
		obtain_device_list_from_udev = 0
		external_device_info_source = "none"
		use_devicesfile = 0
		global_filter = [ "a|^/dev/vd[ab]\$|", "r|.*|" ]
		write_cache_state = 0
	}
	activation {
		udev_sync = 0
		udev_rules = 0
		verify_udev_operations = 0
		monitoring = 1
		thin_pool_autoextend_threshold = 70
		thin_pool_autoextend_percent = 25
	}
	global {
		thin_check_executable = "$LVMDIR/thin_check"
		thin_check_options = [ "-q", "--clear-needs-check-flag" ]
		event_activation = 0
		use_lvmpolld = 0
		notify_dbus = 0
	}
	backup {
		backup = 0
		archive = 0
	}
	log {
		syslog = 0
	}
	EOF
}

# dmeventd, started here rather than by lvm2 so that it has LVM_SYSTEM_DIR (the thin plugin
# runs `lvm lvextend --use-policies`) and its log is kept in $LVMDIR/dmeventd.log.
start_dmeventd() {
	local i
	dmeventd -f -l -d >"$LVMDIR/dmeventd.log" 2>&1 &
	echo $! >"$LVMDIR/dmeventd.pid"
	for i in $(seq 50); do
		[ -p /run/dmeventd-server ] && return 0
		sleep 0.2
	done
	echo "dmeventd did not start: $(cat "$LVMDIR/dmeventd.log")"
	return 1
}
stop_dmeventd() {
	[ -f "$LVMDIR/dmeventd.pid" ] || return 0
	kill "$(cat "$LVMDIR/dmeventd.pid")" 2>/dev/null || true
	rm -f "$LVMDIR/dmeventd.pid"
	sleep 0.5
}
