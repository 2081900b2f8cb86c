#!/bin/bash
# run.sh O — make check-image: the defconfig round trip, then the QEMU boot
# test of the image of O's configuration (qemu_defconfig).  One line per
# test, then "image: N passed, M failed".
set -u
O=$(cd "$1" && pwd) || exit 1
SRC=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$O/results/image"
pass=0; fail=0
for t in t-defconfig t-repro t-boot; do
	log=$O/results/image/$t.log
	start=$(date +%s%N)
	if O=$O SRC=$SRC timeout -k 5 600 bash "$SRC/tests/image/$t.sh" "$O" >"$log" 2>&1; then
		st=ok; pass=$((pass + 1))
	else
		st=FAIL; fail=$((fail + 1))
	fi
	ms=$((($(date +%s%N) - start) / 1000000))
	printf '  %-4s %-28s %3d.%02ds\n' "$st" "$t" $((ms / 1000)) $((ms % 1000 / 10))
	[ "$st" = FAIL ] && grep -E 'FAIL|rror' "$log" | head -n 8 | sed 's/^/       /'
	grep -E '^(boot|BOOT)' "$log" | sed 's/^/       /'
done
echo "image: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
