#!/usr/bin/env bash
# Build rthin.ko out of tree against a kernel build tree (default: the cached test kernel).
# usage: scripts/module.sh [test|bench] [extra make args...]    (KDIR=<build tree> overrides)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
flavour=${1:-test}
shift || true
kdir=${KDIR:-$(kernel_build_dir "$flavour")}
[ -f "$kdir/Module.symvers" ] || die "no built kernel in $kdir: run scripts/kernel.sh $flavour"
# The test flavour builds in the work tree; others build in a copy of it, so that building
# for the bench kernel does not clobber the test build.
dir=$RTHIN_TOP
if [ "$flavour" != test ]; then
	dir=$RTHIN_CACHE/module-$flavour
	mkdir -p "$dir"
	(cd "$RTHIN_TOP" && tar cf - Kbuild rust) | (cd "$dir" && tar xf -)
fi
make -s -C "$kdir" M="$dir" "${KMAKE_VARS[@]}" "$@" modules >&2
echo "$dir/rthin.ko"
