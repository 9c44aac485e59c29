#!/usr/bin/env bash
# Build (or reuse) the rthin test kernel from Debian's linux-source-6.12, unpatched.
# usage: scripts/kernel.sh [test|bench|checker]    prints the build directory on stdout
# The build is cached under $RTHIN_CACHE, keyed by source version, config and toolchain;
# with nothing changed, a second run returns in seconds.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

flavour=${1:-test}
[ -f "$RTHIN_TOP/scripts/kconfig/$flavour.config" ] || die "no kernel flavour '$flavour'"
tarball=/usr/src/linux-source-6.12.tar.xz
[ -f "$tarball" ] || die "$tarball missing: run scripts/deps.sh"

src=$(kernel_src_dir)
if [ ! -f "$src/.rthin-unpacked" ]; then
	log "unpacking kernel source into $src"
	rm -rf "$src" "$src.tmp"
	mkdir -p "$src.tmp"
	tar -C "$src.tmp" --strip-components=1 -xf "$tarball"
	mv "$src.tmp" "$src"
	touch "$src/.rthin-unpacked"
fi

out=$(kernel_build_dir "$flavour")
stamp=$out/.rthin-built
if [ -f "$stamp" ] && [ -f "$out/arch/x86/boot/bzImage" ] && [ -f "$out/mods/.rthin-installed" ]; then
	log "kernel ($flavour) cached in $out"
	echo "$out"
	exit 0
fi

if [ ! -f "$stamp" ]; then
	mkdir -p "$out"
	start=$(date +%s)
	log "configuring kernel ($flavour) in $out"
	make -s -C "$src" O="$out" "${KMAKE_VARS[@]}" tinyconfig >&2
	mapfile -t fragments < <(kernel_fragments "$flavour")
	KCONFIG_CONFIG="$out/.config" "$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" \
		"${fragments[@]}" >"$out/config.log" 2>&1
	make -s -C "$src" O="$out" "${KMAKE_VARS[@]}" olddefconfig >&2
	# Every option the fragments ask for must have survived olddefconfig.
	bad=0
	while IFS= read -r line; do
		case "$line" in CONFIG_*=*) ;; *) continue ;; esac
		opt=${line%%=*} val=${line#*=}
		if [ "$val" = n ]; then
			grep -q "^$opt=" "$out/.config" && { log "config: $opt should be off"; bad=1; }
		else
			grep -qx "$opt=$val" "$out/.config" || { log "config: $opt=$val did not stick"; bad=1; }
		fi
	done < <(cat "${fragments[@]}")
	[ $bad = 0 ] || die "kernel config fragments do not apply"
	make -s -C "$src" O="$out" "${KMAKE_VARS[@]}" rustavailable >&2 || die "Rust toolchain not accepted by the kernel"
	log "building kernel ($flavour), this takes a while on 2 cores"
	make -C "$src" O="$out" "${KMAKE_VARS[@]}" -j"$(( $(nproc) + 1 ))" >"$out/build.log" 2>&1 ||
		{ tail -n 40 "$out/build.log" >&2; die "kernel build failed (log: $out/build.log)"; }
	touch "$stamp"
	log "kernel ($flavour) built in $(( $(date +%s) - start )) s"
	# Builds of this flavour under other keys are stale: keep the disk from filling up.
	# RTHIN_KEEP_KBUILDS=1 keeps them (other work trees with other fragments still use them).
	[ "${RTHIN_KEEP_KBUILDS:-0}" = 1 ] ||
	for old in "$RTHIN_CACHE/kbuild-$flavour-"*; do
		[ "$old" = "$out" ] || rm -rf "$old"
	done
fi

# The guest loads upstream dm modules with `modprobe -d $out/mods`.
rm -rf "$out/mods"
make -s -C "$src" O="$out" "${KMAKE_VARS[@]}" INSTALL_MOD_PATH="$out/mods" modules_install >&2
touch "$out/mods/.rthin-installed"
echo "$out"
