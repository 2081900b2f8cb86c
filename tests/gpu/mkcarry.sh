#!/bin/bash
# SPDX-License-Identifier: MIT
#
# tests/gpu/mkcarry.sh O DIR — the slim copy of build directory O that a
# GPU-machine call carries (the run tool carries at most 64 MiB), with what
# every GPU-side script runs from it:
#   tests/gpu/run-gpu.sh (make check-gpu): bin/velo-test-cuda, velo-convert,
#     velod, tests/unit/test_cuda_host, tests/gpu/test_sched*_cuda;
#   tools/bench/gpu/run-bench-gpu.sh (make bench-gpu): bin/velo-bench-gpu;
#   tests/gpu/e2e-velod.sh: bin/velo-client, velo-keygen;
#   tests/integration/t-swap.sh with SWAP_BACKEND=cuda: bin/velo-bench;
# debug info stripped, and syslib/ with the shared libraries they link that
# are not glibc's (the GPU machine's userland may lack them; the scripts put
# syslib/ on LD_LIBRARY_PATH).  COMMIT names the tree they were built from.
# Build first: make O=O all gpu-tests.  Keep DIR out of git
# (.git/info/exclude), e.g. /gpu-carry/.
set -eu
O=${1:?usage: mkcarry.sh BUILDDIR OUTDIR}
D=${2:?usage: mkcarry.sh BUILDDIR OUTDIR}
FILES=${CARRY_FILES:-bin/velo-test-cuda bin/velo-convert bin/velod bin/velo-bench-gpu \
	bin/velo-client bin/velo-keygen bin/velo-bench tests/unit/test_cuda_host \
	tests/gpu/test_sched_cuda tests/gpu/test_sched_swap_cuda}
rm -rf "$D"
mkdir -p "$D/bin" "$D/tests/unit" "$D/tests/gpu" "$D/syslib"
for f in $FILES; do
	if [ ! -f "$O/$f" ]; then
		echo "mkcarry: $O/$f missing (make O=$O all gpu-tests)" >&2
		exit 1
	fi
	strip --strip-debug -o "$D/$f" "$O/$f"
	ldd "$O/$f" | awk '$3 ~ /^\// { print $3 }' | while read -r lib; do
		case "$(basename "$lib")" in
		libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*) ;;
		*) cp -L "$lib" "$D/syslib/" ;;
		esac
	done
done
[ -f "$O/.config" ] && cp "$O/.config" "$D/config"
{ git -C "$(dirname "$0")/../.." rev-parse --short HEAD 2>/dev/null || echo unknown; } >"$D/COMMIT"
du -sh "$D"
