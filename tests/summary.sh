#!/bin/bash
# summary.sh BUILDDIR — total of the unit, fuzz and integration runs, from
# the closing "<stage>: N passed, M failed" line of each stage's log.
O=$1
p=0; f=0
for s in unit fuzz integration; do
	line=$(grep -E "^$s: [0-9]+ passed, [0-9]+ failed" "$O/results/$s.log" 2>/dev/null | tail -1)
	if [ -z "$line" ]; then
		echo "check: stage $s did not report" >&2
		f=$((f + 1))
		continue
	fi
	set -- $(echo "$line" | grep -oE '[0-9]+')
	p=$((p + $1)); f=$((f + $2))
done
echo "check: $p passed, $f failed"
[ "$f" -eq 0 ]
