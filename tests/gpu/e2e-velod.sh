#!/bin/bash
# SPDX-License-Identifier: MIT
# e2e-velod.sh BUILD_DIR [IMAGE_8B] — on the GPU machine: velod serving
# velo-client end to end with "backend": "cuda" (kernel socket transport on
# loopback): logon, a streamed INFER on an 8B-shaped image (default: the
# FP8 image make bench-gpu writes) and on the bundled model, DONE for each,
# the server's counters.  Informational: the bundled model's greedy text
# on the CPU backend beside the CUDA one.
#
# BUILD_DIR: a configured build with CONFIG_ENGINE_CUDA=y, or a directory
# made from one by tests/gpu/mkcarry.sh.  E2E_BACKEND=cpu runs the same
# on the CPU backend (what this script is checked with on machines without
# a GPU; the 8B image is then skipped unless E2E_8B=1).
# Exit status 0 when every check passed.
set -u
O=$(cd "${1:?usage: e2e-velod.sh BUILD_DIR [IMAGE_8B]}" && pwd) || exit 2
IMG8=${2:-/var/tmp/velo-bench-gpu/llama3-8b-fp8.velo}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
export O SRC
BACKEND=${E2E_BACKEND:-cuda}
[ "$BACKEND" = cuda ] && E2E_8B=${E2E_8B:-1} || E2E_8B=${E2E_8B:-0}
for d in "$O/lib" "$O/syslib"; do	# mkcarry.sh's syslib/ (lib/: older carries)
	[ -d "$d" ] && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
done
. "$SRC/tests/integration/lib.sh"
IMG5=$SRC/images/models/fortune-5m-fp8.velo
[ -f "$IMG5" ] || fail "bundled model image missing: $IMG5"

# start_velod_wait SECONDS [--set ...]: lib.sh's start_velod with a longer
# wait (an 8B image: FULL verify of 8 GB, upload, self-test).
start_velod_wait() {
	local secs=$1
	shift
	[ -f "$KEY" ] || make_key
	cat >"$T/velod.json" <<JSON
{
  "listen": "127.0.0.1:0",
  "keys": "$KEY",
  "control_socket": "$T/ctl.sock",
  "dataplane": { "core": -1 },
  "scheduler": { "core": -1 }
}
JSON
	rm -f "$T/velod.out"
	"$BIN/velod" -c "$T/velod.json" "$@" >"$T/velod.out" 2>"$T/velod.err" &
	VELOD_PID=$!
	for _ in $(seq $((secs * 10))); do
		if grep -q '^velod: ready' "$T/velod.out" 2>/dev/null; then
			VELOD_PORT=$(sed -n 's/^velod: ready listen=[^ ]*:\([0-9]*\) .*/\1/p' \
				"$T/velod.out" | head -1)
			SERVER=127.0.0.1:$VELOD_PORT
			[ -n "$VELOD_PORT" ] || fail "no port on the ready line"
			return 0
		fi
		kill -0 "$VELOD_PID" 2>/dev/null || fail "velod exited at start: $(cat "$T/velod.err")"
		sleep 0.1
	done
	fail "velod not ready within $secs s"
}

# gen_check MODEL N PROMPT: a streamed greedy INFER of N tokens (EOS
# ignored); token events arrive one by one, DONE ends it; prints the ids.
gen_check() {
	local model=$1 n=$2 p=$3 t0 ms got
	t0=$(date +%s%N)
	expect_rc 0 client gen --json --ignore-eos --max-tokens "$n" --model "$model" "$p"
	ms=$((($(date +%s%N) - t0) / 1000000))
	got=$(sed -n 's/.*"event": "tokens".*"ids": \[\([^]]*\)\].*/\1/p' "$T/out" |
		tr -d ' ' | grep . | paste -sd, | tr ',' '\n' | grep -c .)
	[ "$got" = "$n" ] || fail "$model: $got tokens of $n: $(head -c 600 "$T/out")"
	events=$(grep -c '"event": "tokens"' "$T/out")
	[ "$events" -ge 2 ] || fail "$model: not streamed ($events token events)"
	grep -q '"event": "done"' "$T/out" || fail "$model: no DONE: $(tail -c 400 "$T/out")"
	note "$model ($BACKEND): $n tokens in $events streamed events, DONE, $ms ms wall (client start to DONE)"
	grep '"event": "done"' "$T/out" | head -c 600
	echo
}

models="{\"name\": \"fortune\", \"image\": \"$IMG5\", \"backend\": \"$BACKEND\", \"kv_blocks\": 256, \"seqs_max\": 16, \"step_tokens_max\": 256, \"queue_max\": 64}"
if [ "$E2E_8B" = 1 ]; then
	[ -f "$IMG8" ] || fail "8B image missing: $IMG8 (make bench-gpu writes it)"
	models="$models, {\"name\": \"llama8b\", \"image\": \"$IMG8\", \"backend\": \"$BACKEND\", \"kv_blocks\": 1024, \"seqs_max\": 8, \"step_tokens_max\": 512, \"queue_max\": 32}"
fi
t0=$(date +%s%N)
start_velod_wait 180 --set "models=[$models]"
note "velod ready in $((($(date +%s%N) - t0) / 1000000)) ms: $(head -1 "$T/velod.out")"
ctl models
expect_rc 0 ctl ready

# logon + a ping round trip
expect_rc 0 client ping -n 20
note "ping: $(tail -1 "$T/out")"

gen_check fortune 32 "A wise man"
fortune_ids=$(sed -n 's/.*"event": "tokens".*"ids": \[\([^]]*\)\].*/\1/p' "$T/out" | tr -d ' ' | paste -sd,)
client gen --max-tokens 24 --model fortune "A wise man" 2>/dev/null | head -c 300
echo
if [ "$E2E_8B" = 1 ]; then
	gen_check llama8b 64 "The meaning of life is"
	# four at once on the 8B model: all DONE
	PIDS=()
	for i in 1 2 3 4; do
		client gen --ignore-eos --max-tokens 32 --model llama8b "Client $i asks" \
			>/dev/null 2>"$T/c.$i" &
		PIDS+=($!)
	done
	for p in "${PIDS[@]}"; do wait "$p"; done
	ok=$(grep -l 'done: ' "$T"/c.* | wc -l)
	[ "$ok" = 4 ] || fail "only $ok of 4 concurrent 8B clients got DONE: $(cat "$T"/c.*)"
	note "4 concurrent 8B clients: all DONE"
fi
ctl "counters" | grep -E '^(sched|kv|model|eng|cuda)\.' | head -60
ctl "metrics json" | /usr/bin/env python3 -c 'import json,sys; m=json.load(sys.stdin); t=m.get("time_to_first_token_seconds",{}); print("# TTFT histogram count", t.get("count"), "sum", t.get("sum"))' 2>/dev/null || true
stop_velod

# Informational: the bundled model's greedy ids on the CPU backend
if [ "$BACKEND" != cpu ]; then
	start_velod_wait 30 --set "models=[{\"name\": \"fortune\", \"image\": \"$IMG5\", \"backend\": \"cpu\", \"kv_blocks\": 256, \"seqs_max\": 16, \"step_tokens_max\": 256, \"threads\": 1}]"
	client gen --json --ignore-eos --max-tokens 32 --model fortune "A wise man" >"$T/cpu.out" 2>/dev/null
	cpu_ids=$(sed -n 's/.*"event": "tokens".*"ids": \[\([^]]*\)\].*/\1/p' "$T/cpu.out" | tr -d ' ' | paste -sd,)
	if [ "$cpu_ids" = "$fortune_ids" ]; then
		note "bundled model: 32 greedy ids on $BACKEND identical to the CPU backend's"
	else
		note "bundled model: greedy ids differ from the CPU backend's (FP8 rounding):"
		note "  $BACKEND: $fortune_ids"
		note "  cpu : $cpu_ids"
	fi
	stop_velod
fi
echo "e2e-velod: PASS ($BACKEND)"
exit 0
