#!/bin/bash
# run-fuzz.sh BUILDDIR SECONDS FUZZER... — for each libFuzzer target:
#  1. replay every input kept in tests/fuzz/corpus/<name>/ (past finds
#     included: they must never crash again);
#  2. fuzz for SECONDS from a scratch copy of that corpus (new inputs stay in
#     BUILDDIR/fuzz-work; `make fuzz-merge` folds them back).
# A crash fails the run; its input is kept under BUILDDIR/fuzz-artifacts/.
set -u
O=$1; secs=$2; shift 2
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$O/results/fuzz" "$O/fuzz-artifacts"
pass=0; fail=0
for f in "$@"; do
	name=$(basename "$f"); short=${name#fuzz_}
	corpus="$top/tests/fuzz/corpus/$short"
	work="$O/fuzz-work/$short"
	log="$O/results/fuzz/$name.log"
	mkdir -p "$corpus" "$work"
	opts="-rss_limit_mb=2048 -timeout=10 -artifact_prefix=$O/fuzz-artifacts/$name-"
	dict="$top/tests/fuzz/$short.dict"
	[ -f "$dict" ] && opts="$opts -dict=$dict"
	ok=1
	n_in=$(find "$corpus" -type f | wc -l)
	if [ "$n_in" -gt 0 ]; then
		ASAN_OPTIONS=detect_leaks=1 "$f" $opts -runs=0 "$corpus" >"$log" 2>&1 || ok=0
	fi
	if [ $ok = 1 ]; then
		ASAN_OPTIONS=detect_leaks=1 timeout $((secs + 60)) "$f" $opts \
			-max_total_time="$secs" -print_final_stats=1 "$work" "$corpus" >>"$log" 2>&1 || ok=0
	fi
	execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
	if [ $ok = 1 ]; then
		pass=$((pass + 1))
		printf '  ok   %-24s %4d corpus inputs replayed, %s runs in %ss\n' "$name" "$n_in" "${execs:-?}" "$secs"
	else
		fail=$((fail + 1))
		printf '  FAIL %-24s see %s\n' "$name" "$log"
		grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -5 | sed 's/^/       /'
	fi
done
echo "fuzz: $pass passed, $fail failed"
[ $fail -eq 0 ]
