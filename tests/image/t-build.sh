#!/bin/bash
# t-build.sh — every images/*_defconfig configures and compiles: for each,
# `make O=tmp <name>_defconfig`, a check that the image defaults to the DPDK
# transport (CONFIG_BOOT_DP_TRANSPORT_DPDK=y, velo-init then hands velod the
# bound NIC), then a build of the programs the image carries (velod,
# velo-init, velo-mgmtd, veloctl, velo-client, velo-keygen: the whole of
# libvelo-core, with that configuration's CONFIG_ values; benches and unit
# tests are left out to keep it short) in a temporary O=.
# Env: IMAGE_BUILD="all" (default) or a list of names to compile (the
# others are configured and checked only).  A build of the image programs
# takes ~25 s on this 2-core VM when idle, 70-100 s while others build, so
# make check compiles voice_edge (t-image-build), check-image compiles
# trading here and qemu as its own image: each is compiled by some test.
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
tmp=$(mktemp -d /tmp/velo-image-build.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
want=${IMAGE_BUILD:-all}
progs="velod velo-init velo-mgmtd veloctl velo-client velo-keygen"
fail=0; n=0
for dc in "$SRC"/images/*_defconfig; do
	name=$(basename "$dc" _defconfig)
	o=$tmp/$name
	n=$((n + 1))
	if ! make -s -C "$SRC" O="$o" "${name}_defconfig" >"$tmp/$name.log" 2>&1; then
		echo "FAIL $name: configure"; sed 's/^/    /' "$tmp/$name.log"; fail=1; continue
	fi
	for sym in CONFIG_DP_DPDK CONFIG_BOOT_INIT CONFIG_BOOT_DP_TRANSPORT_DPDK; do
		grep -q "^$sym=y" "$o/.config" || { echo "FAIL $name: $sym is not y"; fail=1; continue 2; }
	done
	case " $want " in
	*" all "*|*" $name "*) ;;
	*) echo "ok   $name: configured, DPDK transport (not compiled here: IMAGE_BUILD=$want)"; continue ;;
	esac
	start=$(date +%s%N)
	targets=
	for p in $progs; do targets="$targets $o/bin/$p"; done
	# shellcheck disable=SC2086
	if ! make -s -C "$SRC" -j"$(nproc)" O="$o" $targets >>"$tmp/$name.log" 2>&1; then
		echo "FAIL $name: compile"; grep -E 'error|Error' "$tmp/$name.log" | head -n 20 | sed 's/^/    /'
		fail=1; continue
	fi
	for p in $progs; do
		[ -x "$o/bin/$p" ] || { echo "FAIL $name: no $p"; fail=1; continue 2; }
	done
	# The compiled velo-init carries the configuration's values.
	grep -aq "uio_pci_generic\|vfio-pci" "$o/bin/velo-init" || { echo "FAIL $name: velo-init without its NIC driver"; fail=1; continue; }
	echo "ok   $name: configured, DPDK transport, compiled ($(( ($(date +%s%N) - start) / 1000000 )) ms)"
	rm -rf "$o"
done
[ "$n" -ge 3 ] || { echo "FAIL only $n defconfigs"; fail=1; }
# The top-level defconfig (make run) stays on the socket transport: no
# velo-init, velod's own default ("transport": "socket").
if make -s -C "$SRC" O="$tmp/top" defconfig >"$tmp/top.log" 2>&1 &&
   ! grep -q '^CONFIG_BOOT_DP_TRANSPORT_DPDK=y' "$tmp/top/.config" &&
   grep -q '"transport", json_string("socket")' "$SRC/boot/velod.c"; then
	echo "ok   defconfig (make run): socket transport"
else
	echo "FAIL defconfig (make run) is not on the socket transport"; fail=1
fi
exit $fail
