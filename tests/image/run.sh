#!/bin/bash
# run.sh O — make check-image: the defconfig round trip, reproducibility,
# then the QEMU boot tests of the image of O's configuration (qemu_defconfig).
# One line per test, then "image: N passed, M failed".  Each test is bounded
# (timeout below, its QEMU by a shorter one inside) and cleans up after
# itself (lib.sh's EXIT trap); its log is O/results/image/<test>.log.
set -u
O=$(cd "$1" && pwd) || exit 1
SRC=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$O/results/image"
grep -q '^CONFIG_BOOT_INIT=y' "$O/.config" 2>/dev/null ||
	{ echo "check-image: $O is not an image configuration (make O=$O qemu_defconfig)"; exit 1; }
pass=0; fail=0
start_all=$(date +%s)
# test:seconds — the bound of each (a boot under TCG takes ~45 s, a
# generation ~40 s; the bounds leave 3x for a loaded host).
for tt in t-defconfig:120 t-build:300 t-repro:300 t-boot:480 t-boot-fail:300; do
	t=${tt%:*} tmo=${tt#*:}
	log=$O/results/image/$t.log
	start=$(date +%s%N)
	# t-build: trading here (voice_edge in make check, qemu is O itself).
	if IMAGE_BUILD=${IMAGE_BUILD:-trading} O=$O SRC=$SRC timeout -k 10 "$tmo" bash "$SRC/tests/image/$t.sh" "$O" >"$log" 2>&1; then
		st=ok; pass=$((pass + 1))
	else
		rc=$?
		st=FAIL; fail=$((fail + 1))
		[ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "FAIL $t: timed out after $tmo s" >>"$log"
	fi
	ms=$((($(date +%s%N) - start) / 1000000))
	printf '  %-4s %-28s %3d.%02ds\n' "$st" "$t" $((ms / 1000)) $((ms % 1000 / 10))
	[ "$st" = FAIL ] && grep -aE 'FAIL|rror' "$log" | head -n 8 | sed 's/^/       /'
	grep -aE '^(boot|gen|dpdk):' "$log" | sed 's/^/       /'
done
echo "check-image: $(($(date +%s) - start_all)) s"
echo "image: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
