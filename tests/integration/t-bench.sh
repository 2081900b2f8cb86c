#!/bin/bash
# velo-bench stays usable: short PING (closed and open loop) and INFER runs
# against velod, JSON results that parse and add up; every INFER counted as
# REJECT NOT_READY (no model), none lost.
. "$(dirname "$0")/lib.sh"

start_velod
bench() { "$BIN/velo-bench" --server "$SERVER" --key "$KEY" "$@"; }

expect_rc 0 bench --mode ping --closed 4 --requests 2000 --json "$T/ping.json"
cat "$T/out"
expect_rc 0 bench --mode ping --rate 2000 --poisson --duration 0.5 \
	--json "$T/open.json"
expect_rc 0 bench --mode infer --closed 20 --requests 500 --json "$T/infer.json"
cat "$T/out"
grep -q 'rejects NOT_READY (HTTP 503): 500' "$T/out" || fail "infer rejects"

/usr/bin/python3 - "$T" <<'PY' || fail "JSON results"
import json, sys
t = sys.argv[1]
p = json.load(open(t + "/ping.json"))
r = p["results"]
assert p["tool"] == "velo-bench" and p["settings"]["mode"] == "ping", p
assert r["completed"] == 2000 and r["lost"] == 0, r
rtt = r["latency_ns"]["rtt"]
assert rtt["n"] == 2000 and 0 < rtt["p50"] <= rtt["p99"] <= rtt["max"], rtt
o = json.load(open(t + "/open.json"))["results"]
assert o["lost"] == 0 and 800 <= o["completed"] <= 1200, o
i = json.load(open(t + "/infer.json"))
ri = i["results"]
assert i["settings"]["sessions"] == 2, i["settings"]
assert ri["rejects"] == {"NOT_READY": 500} and ri["lost"] == 0, ri
assert ri["latency_ns"]["end_to_end_rejected"]["n"] == 500, ri
print("# JSON ok: ping p50 %.1f us, infer reject p50 %.1f us" %
      (rtt["p50"] / 1e3, ri["latency_ns"]["end_to_end_rejected"]["p50"] / 1e3))
PY
stop_velod
exit 0
