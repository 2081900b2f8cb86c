#!/bin/bash
# SPDX-License-Identifier: MIT
#
# tests/gpu/mkcarry.sh O DIR — a slim copy of build directory O with what
# tests/gpu/run-gpu.sh needs on the GPU machine (the run tool carries at
# most 64 MiB): bin/{velo-test-cuda,velo-convert,velod},
# tests/unit/test_cuda_host, tests/gpu/test_sched*_cuda, and syslib/ with
# the Debian libraries the GPU machine may lack (run-gpu.sh puts it on
# LD_LIBRARY_PATH).  Build first: make O=O all gpu-tests.
# Keep DIR out of git (.git/info/exclude), e.g. /gpu-carry/.
set -eu
O=${1:?usage: mkcarry.sh BUILDDIR OUTDIR}
D=${2:?usage: mkcarry.sh BUILDDIR OUTDIR}
rm -rf "$D"
mkdir -p "$D/bin" "$D/tests/unit" "$D/tests/gpu" "$D/syslib"
for f in bin/velo-test-cuda bin/velo-convert bin/velod tests/unit/test_cuda_host \
	 tests/gpu/test_sched_cuda tests/gpu/test_sched_swap_cuda; do
	if [ -f "$O/$f" ]; then
		cp "$O/$f" "$D/$f"
	else
		echo "mkcarry: $O/$f missing (make O=$O all gpu-tests)" >&2
		exit 1
	fi
done
for l in libcmocka.so.0 libutf8proc.so.2 libjansson.so.4 libxxhash.so.0 libpcre2-8.so.0; do
	p=$(ldconfig -p | awk -v l="$l" '$1 == l && /x86-64/ { print $NF; exit }')
	[ -n "$p" ] && cp -L "$p" "$D/syslib/"
done
{ git -C "$O/.." rev-parse --short HEAD 2>/dev/null || git -C "$(dirname "$0")/../.." rev-parse --short HEAD; } > "$D/COMMIT" 2>/dev/null || true
du -sh "$D"
