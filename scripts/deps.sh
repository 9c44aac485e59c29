#!/usr/bin/env bash
# Install everything rthin needs on a Debian 12 machine, idempotently: Debian packages,
# bindgen (crates.io) and virtme-ng (PyPI, in a venv under the cache). Fast when done.
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
	python3-venv rust-web-clippy rustfmt-web
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

if ! "$HOME/.cargo/bin/bindgen" --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
	command -v cargo >/dev/null || die "cargo is needed to install bindgen"
	log "installing bindgen-cli $BINDGEN_VERSION"
	cargo install --locked --quiet bindgen-cli --version "$BINDGEN_VERSION"
fi

venv=$RTHIN_CACHE/venv
if ! "$venv/bin/vng" --version 2>/dev/null | grep -q "$VNG_VERSION"; then
	log "installing virtme-ng $VNG_VERSION into $venv"
	mkdir -p "$RTHIN_CACHE"
	python3 -m venv "$venv"
	"$venv/bin/pip" install --quiet "virtme-ng==$VNG_VERSION"
fi

# Host-side crates are tested with the machine's cargo (rustup's toolchain).
command -v cargo >/dev/null || die "cargo (rustup) is needed for the host tests"
exit 0
