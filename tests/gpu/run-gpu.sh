#!/bin/bash
# SPDX-License-Identifier: MIT
#
# tests/gpu/run-gpu.sh O [LOGDIR] — every GPU check of the CUDA backend, on
# the GPU machine, from a build directory O built elsewhere (binaries in
# O/bin, O/tests/unit); run from the repository root (the HF fixtures).
#   1. test_cuda_host (the host-side unit test, here with a driver present)
#   2. velo-test-cuda: per-op parity, whole model vs the CPU backend, HF
#      fixtures, faults
#      (--routes none), then velo-test-cuda --routes only: the optional
#      routes in a process of their own, each against the default one and
#      the references: cuBLASLt products (VELO_CUDA_LT) and tiled prefill
#      attention (VELO_CUDA_FLASH); their lines carry [lt], [flash])
#   3. benchmarks of synthetic images of real shapes (velo-convert
#      --random): VELO_GPU_BENCH_SHAPES (default llama3-1b; "" for none)
#      x VELO_GPU_BENCH_DTYPES (default "fp8 int4 bf16"): the full bench
#      (VELO_GPU_BENCH_FULL=0 skips it) and TTFT at 128/512/2048 tokens for
#      each route (--bench-paths)
#   with VELO_GPU_GRAPHS=1, velo-test-cuda once more and every benchmark
#      with the decode graphs off (VELO_CUDA_GRAPHS=0; they are on by
#      default), so that both settings are checked
#   4. the scheduler's unit tests (test_sched, test_sched_swap) relinked to
#      load their models on the CUDA backend (tests/gpu/sched_backend.c)
# Logs go to LOGDIR (default $OUT, else O/results); prints a short table.
set -u
O=${1:-build}
LOG=${2:-${OUT:-$O/results}}
mkdir -p "$LOG"
BIN=$O/bin
rc=0
# Libraries a slim carried build brings along (Debian packages the GPU
# machine lacks: cmocka, utf8proc, ...).
[ -d "$O/syslib" ] && export LD_LIBRARY_PATH=$O/syslib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# cuBLASLt for the VELO_CUDA_LT route: the loader's path, else a toolkit's
# or a Python wheel's copy (the backend dlopens $VELO_CUDA_CUBLASLT).
if [ -z "${VELO_CUDA_CUBLASLT:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt.so.1[23] '; then
	dirs="/usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda-12*/lib64 /usr/lib/x86_64-linux-gnu"
	dirs="$dirs $(python3 -c 'import nvidia; print(" ".join(p + "/cublas/lib" for p in nvidia.__path__))' 2>/dev/null)"
	for d in $dirs; do
		for f in "$d"/libcublasLt.so.13 "$d"/libcublasLt.so.12; do
			[ -f "$f" ] && { export VELO_CUDA_CUBLASLT=$f; break 2; }
		done
	done
fi

{
	echo "date: $(date -u +%FT%TZ)"
	echo "commit: ${VELO_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
	[ -f "$O/COMMIT" ] && echo "binaries built at: $(cat "$O/COMMIT") (tests/gpu/mkcarry.sh)"
	echo "cuBLASLt: ${VELO_CUDA_CUBLASLT:-$(ldconfig -p 2>/dev/null | grep -o '/[^ ]*libcublasLt.so.1[23]$' | head -1)}"
} | tee "$LOG/gpu.txt"

if [ -x "$O/tests/unit/test_cuda_host" ]; then
	"$O/tests/unit/test_cuda_host" >"$LOG/test_cuda_host.log" 2>&1
	host_rc=$?
else
	host_rc=missing
fi

set -o pipefail
"$BIN/velo-test-cuda" --routes none 2>&1 | tee "$LOG/velo-test-cuda.log"
test_rc=$?
# The optional routes (VELO_CUDA_LT, VELO_CUDA_FLASH; off by default) in a
# process of their own: a fault of theirs cannot hide the default route's
# results, and their failures are reported apart, not in the exit status.
"$BIN/velo-test-cuda" --routes only 2>&1 | tee "$LOG/velo-test-cuda-routes.log"
routes_rc=$?
set +o pipefail
base_fail=$(grep -c '^FAIL' "$LOG/velo-test-cuda.log")
route_fail=$(grep -c '^FAIL' "$LOG/velo-test-cuda-routes.log")

# The decode graphs (VELO_CUDA_GRAPHS, on by default: every decode step of
# <= 16 sequences replayed from a graph): the same parity checks with them
# off, so that both settings stay checked.
graphs_res=""
if [ "${VELO_GPU_GRAPHS:-0}" = 1 ]; then
	set -o pipefail
	VELO_CUDA_GRAPHS=0 "$BIN/velo-test-cuda" --routes none 2>&1 | tee "$LOG/velo-test-cuda-graphs.log"
	r=$?
	set +o pipefail
	[ $r = 0 ] || rc=1
	graphs_res=$(printf '%-28s %s' "velo-test-cuda (no graphs)" "$(grep -c '^ok' "$LOG/velo-test-cuda-graphs.log") ok, $(grep -c '^FAIL' "$LOG/velo-test-cuda-graphs.log") failed (rc $r)")
fi

# The scheduler's own tests with their models on the CUDA backend.
sched_res=""
for t in test_sched_cuda test_sched_swap_cuda; do
	if [ -x "$O/tests/gpu/$t" ]; then
		VELO_TEST_BACKEND=cuda VELO_TEST_DEVICE=0 "$O/tests/gpu/$t" >"$LOG/$t.log" 2>&1
		r=$?
		[ $r = 0 ] || rc=1
		sched_res="$sched_res$(printf '%-28s %s' "$t" "$(grep -E '^\[  (PASSED|FAILED)' "$LOG/$t.log" | tr '\n' ' ') (rc $r)")
"
	fi
done

: >"$LOG/bench.log"
for shape in ${VELO_GPU_BENCH_SHAPES-llama3-1b}; do
	for dt in ${VELO_GPU_BENCH_DTYPES:-fp8 int4 bf16}; do
		img=/tmp/velo-gpu-$shape-$dt.velo
		# the same synthetic image made by tools/bench/gpu/run-bench-gpu.sh,
		# if it ran first on this machine: no second 8 GB write
		bimg=${BENCH_GPU_IMGDIR:-/var/tmp/velo-bench-gpu}/$shape-$dt.velo
		[ -f "$img" ] || { [ -f "$bimg" ] && img=$bimg; }
		[ -f "$img" ] || "$BIN/velo-convert" -q --no-sync --no-known-answer \
			--random "$shape" --dtype "$dt" -o "$img" >>"$LOG/bench.log" 2>&1
		for g in 0 ${VELO_GPU_GRAPHS:+1}; do
			[ "$g" = 1 ] && [ "${VELO_GPU_GRAPHS}" != 1 ] && continue
			[ "${VELO_GPU_BENCH_FULL:-1}" = 0 ] && continue
			echo "## $shape $dt$([ "$g" = 1 ] && echo ' graphs')" | tee -a "$LOG/bench.log"
			VELO_CUDA_GRAPHS=$g "$BIN/velo-test-cuda" --only-bench --bench "$img" 2>&1 |
				grep -v '^velo-test-cuda:' | tee -a "$LOG/bench.log"
		done
		# time to first token with each route: CUDA-core, flash, lt, both, lt2+flash
		echo "## $shape $dt routes" | tee -a "$LOG/bench.log"
		"$BIN/velo-test-cuda" --only-bench --bench-paths "$img" 2>&1 |
			grep -v '^velo-test-cuda:' | tee -a "$LOG/bench.log"
	done
done

echo
echo "== CUDA backend on $(head -3 "$LOG/gpu.txt" | tail -1 | cut -d, -f1) =="
printf '%-28s %s\n' "test_cuda_host" "$([ "$host_rc" = 0 ] && echo pass || echo "FAIL ($host_rc)")"
printf '%-28s %s\n' "velo-test-cuda" "$(grep -c '^ok' "$LOG/velo-test-cuda.log") ok, $base_fail failed (rc $test_rc)"
grep '^FAIL' "$LOG/velo-test-cuda.log" | head -20
[ -n "$graphs_res" ] && echo "$graphs_res" && grep '^FAIL' "$LOG/velo-test-cuda-graphs.log" | head -10
printf "$sched_res"
printf '%-28s %s\n' "velo-test-cuda --routes only" "$(grep -c '^ok' "$LOG/velo-test-cuda-routes.log") ok, $route_fail failed (rc $routes_rc; optional routes, off by default)"
grep '^FAIL' "$LOG/velo-test-cuda-routes.log" | head -20 | cut -c1-240
# the optional routes' parity lines, one summary each (label:regex)
for r in 'op flash (tiled attention):op flash' 'op lt (cuBLASLt products):op lt ' \
	 'models/fixtures [flash]:\[flash\]' 'models/fixtures [lt]:\[lt\]' \
	 'models/fixtures [lt+flash]:\[lt\+flash\]' 'models [lt2] (FP8 as BF16):\[lt2'; do
	re=${r#*:}
	printf '%-28s %s\n' "  ${r%%:*}" "$(grep -E "$re" "$LOG/velo-test-cuda-routes.log" | grep -c '^ok') ok, $(grep -E "$re" "$LOG/velo-test-cuda-routes.log" | grep -c '^FAIL') failed"
done
[ "$route_fail" = 0 ] && [ "$routes_rc" = 0 ] || echo "  OPTIONAL ROUTES FAILED: keep VELO_CUDA_LT / VELO_CUDA_FLASH off (see the FAIL lines above)"
grep -E '^## |decode batch 1:|prefill  512|^# ttft' "$LOG/bench.log" | cut -c1-260
# exit status: the default route's velo-test-cuda, the host test, the
# no-graphs run and the scheduler tests (each table line shows its own rc)
[ "$host_rc" = 0 ] && [ "$test_rc" = 0 ] || rc=1
exit $rc
