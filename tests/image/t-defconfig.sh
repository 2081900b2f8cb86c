#!/bin/bash
# t-defconfig.sh — every images/*_defconfig is minimal savedefconfig output:
# `make O=tmp <name>_defconfig; make O=tmp savedefconfig` gives the same
# bytes back, and loading it warns about nothing (no unknown symbol, no
# value out of range, no dependency that dropped a line).
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0; n=0
for dc in "$SRC"/images/*_defconfig; do
	name=$(basename "$dc" _defconfig)
	o=$tmp/$name
	n=$((n + 1))
	if ! make -s -C "$SRC" O="$o" "${name}_defconfig" >"$tmp/$name.log" 2>&1 ||
	   ! make -s -C "$SRC" O="$o" savedefconfig >>"$tmp/$name.log" 2>&1; then
		echo "FAIL $name: make failed"; sed 's/^/    /' "$tmp/$name.log"; fail=1; continue
	fi
	if grep -qiE 'warning|unknown|invalid|out of range' "$tmp/$name.log"; then
		echo "FAIL $name: kconfig warned"; sed 's/^/    /' "$tmp/$name.log"; fail=1; continue
	fi
	if ! diff -u "$dc" "$o/defconfig" >"$tmp/$name.diff"; then
		echo "FAIL $name: savedefconfig differs (not minimal, or a symbol was dropped)"
		sed 's/^/    /' "$tmp/$name.diff"; fail=1; continue
	fi
	name_sym=$(sed -n 's/^CONFIG_IMAGE_NAME="\(.*\)"$/\1/p' "$o/.config")
	if [ "$name_sym" != "$name" ]; then
		echo "FAIL $name: CONFIG_IMAGE_NAME is \"$name_sym\""; fail=1; continue
	fi
	echo "ok   $name: round trip"
done
[ "$n" -ge 3 ] || { echo "FAIL only $n defconfigs"; fail=1; }
# A check that can fail: a defconfig with a redundant default line must not
# round-trip.
cp "$SRC/images/qemu_defconfig" "$tmp/redundant"
echo 'CONFIG_DP_SOCK=y' >>"$tmp/redundant"
mkdir -p "$tmp/r"
(cd "$tmp/r" && KCONFIG_CONFIG=.config srctree="$SRC" kconfig-conf -s --defconfig="$tmp/redundant" "$SRC/Kconfig" &&
 KCONFIG_CONFIG=.config srctree="$SRC" kconfig-conf --savedefconfig=defconfig "$SRC/Kconfig") >/dev/null 2>&1
if cmp -s "$tmp/redundant" "$tmp/r/defconfig"; then
	echo "FAIL the round-trip check does not see a redundant line"; fail=1
else
	echo "ok   redundant line detected"
fi
exit $fail
