# Common settings for rthin's scripts. Sourced, not run.
# shellcheck shell=bash

RTHIN_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RTHIN_CACHE=${RTHIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rthin}
RTHIN_RESULTS=${RTHIN_RESULTS:-$RTHIN_TOP/results}

# Everything the scripts run comes from what scripts/deps.sh installs, never from the
# caller's environment: Debian's packages under /usr, and under the cache bindgen
# ($RTHIN_TOOLS/bin) and virtme-ng's venv ($RTHIN_VENV/bin: vng runs `virtme-run` from PATH).
# The kernel's Rust support wants a rustc with the `core` source beside it: Debian's
# rustc-web gives that, and Debian's cargo-web drives the same rustc for the host crates.
RTHIN_TOOLS=$RTHIN_CACHE/tools
RTHIN_VENV=$RTHIN_CACHE/venv
BINDGEN=$RTHIN_TOOLS/bin/bindgen
export PATH=/usr/lib/llvm-16/bin:$RTHIN_VENV/bin:$RTHIN_TOOLS/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
KMAKE_VARS=(LLVM=1 RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
            BINDGEN="$BINDGEN" CLIPPY_DRIVER=/usr/bin/clippy-driver)

die() { echo "rthin: $*" >&2; exit 1; }
log() { echo "rthin: $*" >&2; }

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Version of Debian's kernel source package: part of the kernel cache key.
kernel_src_version() {
	dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null || echo none
}

# Kernel source tree, unpacked once from Debian's tarball (never patched).
kernel_src_dir() {
	echo "$RTHIN_CACHE/src/linux-$(kernel_src_version)"
}

# Config fragments of a kernel flavour, merged in this order over tinyconfig: base.config,
# then the flavour's own; the checker flavour is the test kernel's plus its own checkers.
kernel_fragments() {
	local d=$RTHIN_TOP/scripts/kconfig
	echo "$d/base.config"
	[ "$1" = checker ] && echo "$d/test.config"
	echo "$d/$1.config"
}

# Cache key of a kernel build: source version, config fragments, toolchain.
kernel_key() {
	local flavour=$1
	{
		kernel_src_version
		# (the test flavour's key is what it was before there were other fragment lists)
		kernel_fragments "$flavour" | xargs cat
		/usr/bin/rustc --version
		"$BINDGEN" --version 2>/dev/null
		/usr/lib/llvm-16/bin/clang --version | head -1
		gcc --version | head -1
	} | sha256sum | cut -c1-16
}

# Build directory (O=) of a kernel flavour: `test`, `bench` or `checker`.
kernel_build_dir() {
	local flavour=${1:-test}
	echo "$RTHIN_CACHE/kbuild-$flavour-$(kernel_key "$flavour")"
}
