#!/bin/bash
# SPDX-License-Identifier: MIT
# run-bench-gpu.sh BUILD_DIR [RESULTS_DIR] — make bench-gpu, on the GPU
# machine: make the synthetic Llama-3.1-8B images (FP8 and INT4) on local
# disk, run velo-bench-gpu on each (CUDA backend), run the PyTorch baseline
# (tools/bench/hf_baseline.py) in the same run, and print one table with
# the ratios (report.py).  Results (JSON, logs, the table) in RESULTS_DIR
# (default BUILD_DIR/results/bench-gpu).
#
# Takes about 190 s on an H200 (2026-11-27: images 8 + 6 s, velo FP8 63 s,
# HF baseline 35 s, velo INT4 65 s); BENCH_GPU_DEADLINE bounds it.
#
# BUILD_DIR is a configured build (CONFIG_ENGINE_CUDA=y) or a directory
# made from one by tests/gpu/mkcarry.sh (bin/ and the shared libraries
# the GPU machine may lack, in syslib/).  Nothing is built here.
#
# Environment (all optional):
#   BENCH_GPU_DTYPES    weight dtypes (default "fp8 int4")
#   BENCH_GPU_SHAPE     velo-convert --random shape (default llama3-8b)
#   BENCH_GPU_IMGDIR    where the images are written (default /var/tmp/velo-bench-gpu;
#                       existing images are reused)
#   BENCH_GPU_BACKEND   velo-bench-gpu --backend (default cuda)
#   BENCH_GPU_ARGS      more velo-bench-gpu options
#   BENCH_GPU_HF        0: skip the PyTorch baseline; only: run only it
#   BENCH_GPU_HF_ARGS   more hf_baseline.py options
#   BENCH_GPU_DEADLINE  seconds this script may take in all (default 540):
#                       each program gets what is left as its --time-budget,
#                       and steps that would start too late are skipped
#   BENCH_GPU_DRY=1     print the commands instead of running them
#   VELO_COMMIT         the commit measured (a copied tree has no .git)
#   PYTHON              the interpreter with torch (default python3)
set -u -o pipefail

O=$(cd "${1:?usage: run-bench-gpu.sh BUILD_DIR [RESULTS_DIR]}" && pwd) || exit 2
R=${2:-$O/results/bench-gpu}
SRC=$(cd "$(dirname "$0")/../../.." && pwd)
BIN=$O/bin
DTYPES=${BENCH_GPU_DTYPES:-fp8 int4}
SHAPE=${BENCH_GPU_SHAPE:-llama3-8b}
IMGDIR=${BENCH_GPU_IMGDIR:-/var/tmp/velo-bench-gpu}
BACKEND=${BENCH_GPU_BACKEND:-cuda}
ARGS=${BENCH_GPU_ARGS:-}
HF=${BENCH_GPU_HF:-1}
HF_ARGS=${BENCH_GPU_HF_ARGS:-}
DEADLINE=${BENCH_GPU_DEADLINE:-540}
DRY=${BENCH_GPU_DRY:-0}
PY=${PYTHON:-python3}
START=$(date +%s)

mkdir -p "$R" "$IMGDIR" || exit 1
# shared libraries a slim carried build brings (mkcarry.sh: syslib/;
# older carries: lib/)
for d in "$O/lib" "$O/syslib"; do
	[ -d "$d" ] && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
done
if [ -z "${VELO_COMMIT:-}" ]; then
	VELO_COMMIT=$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)
fi
export VELO_COMMIT
LOG=$R/bench-gpu.log

left() { echo $((DEADLINE - ($(date +%s) - START))); }
log() { echo "# $(date -u +%T) (+$(($(date +%s) - START)) s) $*" | tee -a "$LOG"; }
run() {
	if [ "$DRY" = 1 ]; then
		echo "DRY: $*" | tee -a "$LOG"
		return 0
	fi
	"$@"
}

log "velo commit $VELO_COMMIT; build $O; results $R; deadline ${DEADLINE} s"
if command -v nvidia-smi >/dev/null; then
	nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
		--format=csv 2>&1 | tee -a "$LOG"
fi

# velo_image DTYPE: write the image unless it is there
velo_image() {
	local dt=$1 img=$IMGDIR/$SHAPE-$1.velo
	[ -f "$img" ] && return 0
	if [ "$(left)" -lt 60 ]; then
		log "SKIP image $dt: $(left) s left"
		return 1
	fi
	log "velo-convert --random $SHAPE --dtype $dt -> $img"
	# with the known-answer record velo-convert computes on the CPU
	# backend (seconds on 16 cores): velod checks it at load
	# (tests/gpu/e2e-velod.sh); no fsync: the page cache is what the
	# cold-load figure starts from
	run "$BIN/velo-convert" --random "$SHAPE" --dtype "$dt" --no-sync -q \
		-o "$img" 2>&1 | tail -n 3 | tee -a "$LOG"
	[ "$DRY" = 1 ] || [ -f "$img" ]
}

# velo_bench DTYPE SHARE: velo-bench-gpu with SHARE percent of the time left
velo_bench() {
	local dt=$1 img=$IMGDIR/$SHAPE-$1.velo budget
	velo_image "$dt" || { log "SKIP velo $dt: no image"; return; }
	budget=$(($(left) * $2 / 100))
	if [ "$budget" -lt 30 ]; then
		log "SKIP velo $dt: $(left) s left"
		return
	fi
	log "velo-bench-gpu --backend $BACKEND $dt (time budget $budget s)"
	# the image was just written or read: it is in page cache, as the
	# cold-load figure assumes
	run "$BIN/velo-bench-gpu" --backend "$BACKEND" --time-budget "$budget" \
		--json "$R/velo-$dt.json" $ARGS "$img" 2>&1 | tee -a "$LOG"
}

# hf_baseline SHARE
hf_baseline() {
	local budget=$(($(left) * $1 / 100))
	if [ "$budget" -lt 45 ]; then
		log "SKIP HF baseline: $(left) s left"
		return
	fi
	log "hf_baseline.py (time budget $budget s)"
	PYTHONUNBUFFERED=1 run "$PY" "$SRC/tools/bench/hf_baseline.py" --json "$R/hf.json" \
		--time-budget "$budget" $HF_ARGS 2>&1 | tee -a "$LOG"
}

# Order by what matters most when the deadline is short: the first dtype
# (FP8), the baseline, then the others; each takes a share of what is left.
set -- $DTYPES
case "$HF" in
only)	hf_baseline 95 ;;
0)	while [ $# -gt 0 ]; do velo_bench "$1" $((95 / $#)); shift; done ;;
*)	velo_bench "$1" 35
	shift
	hf_baseline $(($# ? 50 : 95))
	while [ $# -gt 0 ]; do velo_bench "$1" $((95 / $#)); shift; done ;;
esac
log "done"
[ "$DRY" = 1 ] && exit 0
run "$PY" "$SRC/tools/bench/gpu/report.py" "$R" 2>&1 | tee "$R/report.txt"
