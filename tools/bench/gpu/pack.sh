#!/bin/bash
# SPDX-License-Identifier: MIT
# pack.sh BUILD_DIR DEST — the slim directory a GPU-machine call carries
# (the device tool carries at most 64 MiB): DEST/bin with the programs
# make bench-gpu and tests/gpu/e2e-velod.sh run, DEST/lib with the shared
# libraries they link that are not glibc's (libsodium, jansson, ... — the
# GPU machine's userland may lack them; run-bench-gpu.sh puts DEST/lib on
# LD_LIBRARY_PATH).  Binaries are stripped of debug info.
set -eu
O=${1:?usage: pack.sh BUILD_DIR DEST}
D=${2:?usage: pack.sh BUILD_DIR DEST}
PROGS=${PACK_PROGS:-velo-bench-gpu velo-convert velod velo-client velo-keygen}
rm -rf "$D"
mkdir -p "$D/bin" "$D/lib"
for p in $PROGS; do
	[ -x "$O/bin/$p" ] || { echo "pack.sh: $O/bin/$p not built" >&2; exit 1; }
	strip --strip-debug -o "$D/bin/$p" "$O/bin/$p"
	ldd "$O/bin/$p" | awk '$3 ~ /^\// { print $3 }' | while read -r lib; do
		case "$(basename "$lib")" in
		libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*) ;;
		*) cp -L "$lib" "$D/lib/" ;;
		esac
	done
done
[ -f "$O/.config" ] && cp "$O/.config" "$D/config"
du -sh "$D"
