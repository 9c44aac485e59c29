#!/usr/bin/env bash
# The main job: set up, boot the test VM, load rthin, and show its targets working on the
# VM's default virtual disks.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$RTHIN_TOP/scripts/deps.sh"
"$RTHIN_TOP/scripts/kernel.sh" test >/dev/null
"$RTHIN_TOP/scripts/module.sh" test >/dev/null
mkdir -p "$RTHIN_RESULTS"
"$RTHIN_TOP/scripts/vm.sh" --console "$RTHIN_RESULTS/demo-console.log" -- bash scripts/demo-guest.sh
"$RTHIN_TOP/scripts/check-kernel-log" "$RTHIN_RESULTS/demo-console.log"
echo "rthin: demo done, kernel log clean (console: $RTHIN_RESULTS/demo-console.log)"
