#!/bin/bash
# t-bench-gpu-cpu: velo-bench-gpu (the GPU engine benchmark, make bench-gpu)
# runs every phase through the backend ops table on the CPU backend with the
# bundled model, so CI keeps the program that the GPU figures of
# docs/perf.md come from working: the run ends, the JSON parses and holds a
# figure for every phase, each positive.
. "$(dirname "$0")/lib.sh"

[ -x "$BIN/velo-bench-gpu" ] || { echo "skip: velo-bench-gpu not built (CONFIG_TOOLS_BENCH_GPU)"; exit 0; }
IMG=$SRC/images/models/fortune-5m-fp8.velo
timeout 60 "$BIN/velo-bench-gpu" --backend cpu --threads 1 --ctx 16 --decode 8 \
	--runs 2 --reps 2 --ttft 16,32 --streams 1,4 --in 16 --out 8 --bw-mib 64 \
	--json "$T/bg.json" "$IMG" >"$T/bg.out" 2>&1 ||
	{ cat "$T/bg.out"; fail "velo-bench-gpu on the CPU backend failed"; }
/usr/bin/python3 - "$T/bg.json" <<'PY' || fail "velo-bench-gpu JSON incomplete"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["backend"] == "cpu", d["backend"]
assert d["model"]["weight_bytes"] > 0
def pos(x, what):
    assert isinstance(x, (int, float)) and x > 0, (what, x)
pos(d["copy_bw"]["median_gbs"], "copy bandwidth")
pos(d["cold_load"]["total_s"], "cold load")
pos(d["decode_b1"]["tok_s"], "batch-1 tok/s")
pos(d["decode_b1"]["share_of_copy_bw"], "share of copy bandwidth")
assert [t["prompt"] for t in d["ttft"]] == [16, 32], d["ttft"]
for t in d["ttft"]:
    pos(t["ms"]["median"], "TTFT")
assert [x["n"] for x in d["streams"]] == [1, 4], d["streams"]
for x in d["streams"]:
    pos(x["decode_tok_s"], "streams tok/s")
assert not d["skipped"], d["skipped"]
def walk(o, path=""):
    if isinstance(o, dict):
        for k, v in o.items():
            walk(v, path + "." + k)
    elif isinstance(o, list):
        for i, v in enumerate(o):
            walk(v, "%s[%d]" % (path, i))
    elif isinstance(o, float) and o != o:
        raise AssertionError("NaN at " + path)
walk(d)
print("velo-bench-gpu JSON ok")
PY
grep -q "decode batch 1:" "$T/bg.out" || fail "no batch-1 line"
echo "ok velo-bench-gpu --backend cpu: $(grep 'decode batch 1' "$T/bg.out" | cut -c1-80)"
