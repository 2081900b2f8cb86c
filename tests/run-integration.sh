#!/bin/bash
# run-integration.sh BUILDDIR — run every tests/integration/t-*.sh against
# the programs in BUILDDIR/bin (each starts and stops its own velod on
# 127.0.0.1, in its own temp dir), keep each log under
# BUILDDIR/results/integration/, print one line per test and the total.
# Exit status: non-zero when a test failed.
set -u
O=$(cd "$1" && pwd) || exit 1
SRC=$(cd "$(dirname "$0")/.." && pwd)
TEST_TIMEOUT=${TEST_TIMEOUT:-150}
mkdir -p "$O/results/integration"
unset VELO_KEY
pass=0; fail=0
for t in "$SRC"/tests/integration/t-*.sh; do
	name=$(basename "$t" .sh)
	log=$O/results/integration/$name.log
	start=$(date +%s%N)
	tmo=$TEST_TIMEOUT
	# t-dpdk*: the first one builds the DPDK configuration (dpdk.inc).
	case $name in t-dpdk*) tmo=$((TEST_TIMEOUT * 2)) ;; esac
	if O=$O SRC=$SRC timeout -k 5 "$tmo" bash "$t" >"$log" 2>&1; then
		st=ok; pass=$((pass + 1))
	else
		st=FAIL; fail=$((fail + 1))
	fi
	ms=$((($(date +%s%N) - start) / 1000000))
	printf '  %-4s %-28s %3d.%02ds\n' "$st" "$name" $((ms / 1000)) $((ms % 1000 / 10))
	[ "$st" = FAIL ] && grep -E 'FAIL|rror' "$log" | head -n 8 | sed 's/^/       /'
done
echo "$pass $fail" >"$O/results/integration.sum"
echo "integration: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
