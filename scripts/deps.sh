#!/usr/bin/env bash
# Install everything rthin needs on a Debian 12 machine, idempotently: Debian packages,
# bindgen (crates.io, under the cache) and virtme-ng (PyPI, in a venv under the cache).
# Fast when done. Relies on nothing outside what it installs: not on rustup's cargo, not on
# a python3 earlier in PATH, not on anything under the caller's HOME but the cache.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BINDGEN_VERSION=0.73.2
VNG_VERSION=1.42

pkgs=(
	# kernel source and the toolchain the kernel's Rust support accepts
	linux-source-6.12 rustc-web rust-web-src clang-16 libclang-16-dev lld-16 llvm-16
	bc flex bison libelf-dev libssl-dev cpio kmod xz-utils make gcc
	# guest and the tools the tests run inside it
	qemu-system-x86 busybox-static dmsetup thin-provisioning-tools fio util-linux e2fsprogs
	python3 python3-venv rust-web-clippy rustfmt-web
	# lvm2 in the guest (selftests/lvm.sh, make demo): lvm and dmeventd with its thin plugin
	lvm2 dmeventd
	# Debian's cargo for rustc-web: installs bindgen and runs the host crates' tests
	cargo-web
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing Debian packages: ${missing[*]}"
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$BINDGEN" --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
	log "installing bindgen-cli $BINDGEN_VERSION into $RTHIN_TOOLS"
	/usr/bin/cargo install --locked --quiet --root "$RTHIN_TOOLS" bindgen-cli --version "$BINDGEN_VERSION"
fi

# Both commands the test rig runs from the venv must be there: vng, and the virtme-run it execs.
if ! { "$RTHIN_VENV/bin/vng" --version 2>/dev/null | grep -q "$VNG_VERSION" &&
	[ -x "$RTHIN_VENV/bin/virtme-run" ]; }; then
	log "installing virtme-ng $VNG_VERSION into $RTHIN_VENV"
	mkdir -p "$RTHIN_CACHE"
	rm -rf "$RTHIN_VENV"
	/usr/bin/python3 -m venv "$RTHIN_VENV"
	"$RTHIN_VENV/bin/pip" install --quiet "virtme-ng==$VNG_VERSION"
fi
exit 0
