#!/usr/bin/env bash
# Boot the rthin test kernel under QEMU with the host's own userland (virtme-ng, root shared
# read-only over 9p), two fresh virtual disks, and run one command inside it.
#
# usage: scripts/vm.sh [--flavour test|bench] [--timeout SECONDS] [--console FILE]
#                      [--memory SIZE (2G)] -- CMD...
#
# The guest sees:   /dev/vda (256 MiB, for metadata), /dev/vdb (2 GiB, for data),
#                   $RTHIN_RESULTS read-write, every other host path read-only,
#                   the test kernel's modules in /lib/modules (plain modprobe finds them),
#                   and the environment variables RTHIN_TOP, RTHIN_KDIR, RTHIN_RESULTS,
#                   RTHIN_MODULE (the rthin.ko to load; default: the work tree's).
# The serial console goes to the console file. The run is bounded: a guest still running
# after the timeout is killed and the run fails. TCG by default; RTHIN_KVM=1 tries KVM;
# RTHIN_ICOUNT=1 runs the guest clock by instructions (see below).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

flavour=test timeout=1200 console= memory=2G
while [ $# -gt 0 ]; do
	case "$1" in
	--flavour) flavour=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--console) console=$2; shift 2 ;;
	--memory) memory=$2; shift 2 ;;
	--) shift; break ;;
	*) die "vm.sh: unknown option $1" ;;
	esac
done
[ $# -gt 0 ] || die "vm.sh: no command"
kdir=${KDIR:-$(kernel_build_dir "$flavour")}
[ -f "$kdir/arch/x86/boot/bzImage" ] || die "no kernel in $kdir"
mkdir -p "$RTHIN_RESULTS/disks"
console=${console:-$RTHIN_RESULTS/console.log}

disks=()
for d in meta:256M data:2G; do
	img=$RTHIN_RESULTS/disks/${d%%:*}.img
	rm -f "$img"
	truncate -s "${d#*:}" "$img"
	disks+=(--disk "$img")
done

accel=(--disable-kvm)
[ "${RTHIN_KVM:-0}" = 1 ] && accel=()
# RTHIN_ICOUNT=1: the guest's clock follows executed instructions (QEMU's -icount, 1 ns per
# instruction, idle time skipped), so timings measure work done, not the host's load. TCG
# then runs the vCPUs in one host thread, in turn.
[ "${RTHIN_ICOUNT:-0}" = 1 ] && accel+=(--qemu-opts "-icount shift=0,sleep=off")
module=${RTHIN_MODULE:-$RTHIN_TOP/rthin.ko}
# virtme-ng cannot always pass the command's exit status back (without its virtio-serial
# script ports it falls back to the console), so the guest writes it to the results folder.
rcfile=$RTHIN_RESULTS/.guest-rc
rm -f "$rcfile"
# The test kernel's modules (kernel.sh installs them) are the guest's /lib/modules, so that a
# plain `modprobe`, as lvm2 runs it, finds them. (/lib is a writable overlay in the guest.)
mods="mkdir -p /lib/modules && mount --bind '$kdir/mods/lib/modules' /lib/modules || echo 'rthin: no /lib/modules in the guest' >&2"
cmd="export RTHIN_TOP='$RTHIN_TOP' RTHIN_KDIR='$kdir' RTHIN_RESULTS='$RTHIN_RESULTS' RTHIN_MODULE='$module'; $mods; cd '$RTHIN_TOP' && { $*; }; echo \$? >'$rcfile'"

# no5lvl: 4-level paging. QEMU's `-cpu max` offers LA57, and with 5-level paging a 6.12
# KASAN kernel can report a false "wild-memory-access" at boot: identify_cpu() clears the
# CPU's feature bits for a moment, pgtable_l5_enabled() (X86_FEATURE_LA57) then reads
# false, and an interrupt in that window touching the 5-level direct map (0xff11...) fails
# KASAN's address check. It hit 2 of 8 checker boots, before any module was loaded.
set +e
timeout --kill-after=20 "$timeout" "$RTHIN_VENV/bin/vng" \
	--run "$kdir/arch/x86/boot/bzImage" "${accel[@]}" --force-9p \
	--cpus 2 --memory "$memory" --rwdir "$RTHIN_RESULTS" "${disks[@]}" \
	--append "hung_task_timeout_secs=30 softlockup_panic=0 no5lvl" \
	--verbose --exec "$cmd" </dev/null >"$console.stdout" 2>"$console"
rc=$?
set -e
if [ $rc = 124 ] || [ $rc = 137 ]; then
	log "guest did not finish within ${timeout}s: killed (console: $console)"
	exit 124
fi
[ -f "$rcfile" ] || die "guest ended without finishing its command (console: $console)"
exit "$(cat "$rcfile")"
