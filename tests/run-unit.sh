#!/bin/bash
# run-unit.sh BUILDDIR TEST... — run each cmocka unit test binary, keep its
# log, and print one line per binary and a total.  Exit status: failures.
set -u
O=$1; shift
mkdir -p "$O/results/unit"
pass=0; fail=0; failed=()
for t in "$@"; do
	name=$(basename "$t")
	log="$O/results/unit/$name.log"
	start=$(date +%s.%N)
	if (cd "$(dirname "$0")/.." && timeout 300 "$t") >"$log" 2>&1; then
		st=ok
	else
		st=FAIL
	fi
	n_ok=$(grep -c '^\[       OK \]' "$log")
	n_bad=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | grep -oE '[0-9]+' | head -1)
	n_bad=${n_bad:-0}
	[ "$st" = FAIL ] && [ "$n_bad" = 0 ] && n_bad=1
	pass=$((pass + n_ok)); fail=$((fail + n_bad))
	printf '  %-4s %-28s %3d passed %3d failed  %5.2fs\n' "$st" "$name" "$n_ok" "$n_bad" \
		"$(awk "BEGIN{print $(date +%s.%N) - $start}")"
	[ "$st" = FAIL ] && { failed+=("$name"); sed -n '1,200p' "$log" | grep -E 'FAIL|ERROR|error|Assert|assert' | head -20 | sed 's/^/       /'; }
done
echo "unit: $pass passed, $fail failed"
[ ${#failed[@]} -eq 0 ]
