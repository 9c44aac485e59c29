#!/usr/bin/env bash
# Tests of scripts/check-kernel-log on saved sample logs (host side, KTAP output).
# A sample named clean-*.log must pass; every other sample holds one kind of kernel report
# and must be caught, with the report's line number printed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
checker=$here/../../scripts/check-kernel-log
samples=("$here"/samples/*.log)
echo "KTAP version 1"
echo "1..$(( ${#samples[@]} + 1 ))"
n=0 fail=0
for s in "${samples[@]}"; do
	n=$((n + 1))
	name=logcheck_$(basename "$s" .log | tr '-' '_')
	out=$("$checker" "$s" 2>&1); rc=$?
	case "$(basename "$s")" in
	clean-*) [ $rc = 0 ] && ok=1 || ok=0 ;;
	*) [ $rc = 1 ] && grep -q "$(basename "$s"):[0-9]*: kernel report" <<<"$out" && ok=1 || ok=0 ;;
	esac
	if [ $ok = 1 ]; then echo "ok $n $name"; else echo "not ok $n $name"; sed 's/^/# /' <<<"$out"; fail=$((fail + 1)); fi
done
# A missing log is an error, not a clean pass.
n=$((n + 1))
"$checker" "$here/samples/does-not-exist.log" >/dev/null 2>&1; rc=$?
if [ $rc = 2 ]; then echo "ok $n logcheck_missing_log_is_an_error"; else echo "not ok $n logcheck_missing_log_is_an_error"; fail=$((fail + 1)); fi
[ $fail = 0 ]
