#!/bin/bash
# Hot swap under load (docs/mgmt.md, "Hot swap"): velod serves version A,
# velo-bench keeps a closed loop of INFERs going over several sessions, and
# the model is swapped back and forth between A and B for the whole bench
# run (each swap loads and self-tests the other version on the other
# device, flips the route between two scheduler polls, and is then
# confirmed, which frees the old slot once its requests finished; every
# tenth swap is rolled back and swapped again first).  Checks: at least
# SWAP_COUNT swaps, zero failed or lost requests (every INFER answered by
# exactly one DONE: bench completed == started, no REJECT, ERROR, timeout or
# loss), every DONE counted on exactly one of the two versions and both
# seen (velod's "model served" tally, equal to the bench's completions; a
# velo-client sample reads the version in DONE itself), and the p99
# latency of the swap phase printed against a steady phase of the same run.
#
# Parameters (environment), so that the same script runs on a two-GPU
# machine (docs/mgmt.md gives the command):
#   SWAP_BACKEND      cpu | cuda                          [cpu]
#   SWAP_IMAGE_A      serving first                       [the bundled model]
#   SWAP_IMAGE_B      the other version                   [A re-converted as version 2]
#   SWAP_DEVICE_A/_B  device index of each version        [0 / 1]
#   SWAP_COUNT        swaps at least                      [100]
#   SWAP_DURATION     seconds of load while swapping      [16]
#   SWAP_PACE         1: swaps spread evenly over the run (about 1.3 x
#                     SWAP_COUNT); 0: back to back         [0]
#   SWAP_STEADY       seconds of the steady phase         [5]
#   SWAP_CLOSED       requests outstanding                [8]
#   SWAP_SESSIONS     client sessions                     [4]
#   SWAP_MAX_TOKENS   tokens per request                  [16]
#   SWAP_THREADS      backend worker threads per slot     [1]
#   SWAP_SET          extra velod --set KEY=VALUE words   []
#   SWAP_P99_MAX      fail when swap p99 / steady p99 exceeds it  [unset: report]
#   SWAP_OUT          directory to keep the bench JSON and a summary in
. "$(dirname "$0")/lib.sh"

BACKEND=${SWAP_BACKEND:-cpu}
A=${SWAP_IMAGE_A:-$SRC/images/models/fortune-5m-fp8.velo}
B=${SWAP_IMAGE_B:-}
DEV_A=${SWAP_DEVICE_A:-0}
DEV_B=${SWAP_DEVICE_B:-1}
COUNT=${SWAP_COUNT:-100}
DURATION=${SWAP_DURATION:-16}
STEADY=${SWAP_STEADY:-5}
CLOSED=${SWAP_CLOSED:-8}
SESSIONS=${SWAP_SESSIONS:-4}
MAXTOK=${SWAP_MAX_TOKENS:-16}
THREADS=${SWAP_THREADS:-1}
PACE=${SWAP_PACE:-0}
# one swap (+ confirm) every GAP_MS when paced
GAP_MS=$((DURATION * 1000 * 100 / (COUNT * 130)))

[ -f "$A" ] || fail "no image $A"
if [ -z "$B" ]; then
	B=$T/b.velo
	"$BIN/velo-convert" -q -d fp8 --no-sync --name fortune-5m --model-version 2 \
		"$SRC/images/models/src/fortune-5m" -o "$B" >"$T/conv.out" 2>&1 ||
		fail "velo-convert: $(cat "$T/conv.out")"
fi
set_args=(--set "model_defaults.backend=\"$BACKEND\"" --set "model_defaults.threads=$THREADS")
for kv in ${SWAP_SET:-}; do set_args+=(--set "$kv"); done
start_velod "${set_args[@]}"

ctl "model load m $A device $DEV_A" >"$T/out" || fail "load A: $(cat "$T/out")"
cat "$T/out"
VA=$(sed -n 's/^ok m \([^ ]*\) loaded.*/\1/p' "$T/out")
ctl "model swap m $B device $DEV_B" >"$T/out" || fail "swap to B: $(cat "$T/out")"
VB=$(sed -n 's/^ok m now \([^ ]*\),.*/\1/p' "$T/out")
ctl "model confirm m" >/dev/null || fail "confirm B"
[ -n "$VA" ] && [ -n "$VB" ] && [ "$VA" != "$VB" ] || fail "versions '$VA' '$VB'"
ctl "model swap m $A device $DEV_A" >/dev/null && ctl "model confirm m" >/dev/null ||
	fail "swap back to A"
note "versions: A=$VA on device $DEV_A, B=$VB on device $DEV_B ($BACKEND)"

bench() {
	"$BIN/velo-bench" --server "$SERVER" --key "$KEY" --mode infer \
		--closed "$CLOSED" --sessions "$SESSIONS" --max-tokens "$MAXTOK" \
		--prompt "The" --timeout-ms 5000 "$@"
}

# 1. steady state
bench --duration "$STEADY" --json "$T/steady.json" >"$T/steady.out" 2>&1 ||
	{ cat "$T/steady.out"; fail "steady phase"; }

# 2. the same load, swapping for the whole run
bench --duration "$DURATION" --json "$T/swap.json" >"$T/swap.out" 2>&1 &
BPID=$!
sleep 0.3
swaps=0 rollbacks=0 cur=A swap_fail=0 t0=$(date +%s%N)
: >"$T/swaps.log"
swap_to() {	# swap_to A|B: swap, answer kept in swaps.log
	local img=$A dev=$DEV_A
	[ "$1" = B ] && img=$B dev=$DEV_B
	ctl "model swap m $img device $dev" >>"$T/swaps.log" 2>&1
}
while kill -0 "$BPID" 2>/dev/null; do
	if [ "$PACE" = 1 ]; then	# the next swap's start time
		due=$((t0 + swaps * GAP_MS * 1000000))
		now=$(date +%s%N)
		[ "$now" -lt "$due" ] && sleep "$(printf '0.%06d' $(((due - now) / 1000)))"
		kill -0 "$BPID" 2>/dev/null || break
	fi
	nxt=B; [ "$cur" = B ] && nxt=A
	swap_to $nxt || { swap_fail=$((swap_fail + 1)); break; }
	swaps=$((swaps + 1))
	if [ $((swaps % 10)) = 5 ]; then
		ctl "model rollback m" >>"$T/swaps.log" 2>&1 || { swap_fail=$((swap_fail + 1)); break; }
		rollbacks=$((rollbacks + 1))
		swap_to $nxt || { swap_fail=$((swap_fail + 1)); break; }
		swaps=$((swaps + 1))
	fi
	ctl "model confirm m" >>"$T/swaps.log" 2>&1 || { swap_fail=$((swap_fail + 1)); break; }
	cur=$nxt
	# a wire-level sample: the DONE names the version
	if [ $((swaps % 20)) = 1 ]; then
		client gen --max-tokens 4 "The" >>"$T/sample.out" 2>&1 || swap_fail=$((swap_fail + 1))
	fi
done
swap_ms=$((($(date +%s%N) - t0) / 1000000))
wait "$BPID"
brc=$?
cat "$T/swap.out"
# 3. steady again (the spread between 1 and 3 is this machine's noise)
bench --duration "$STEADY" --json "$T/steady2.json" >"$T/steady2.out" 2>&1 ||
	{ cat "$T/steady2.out"; fail "second steady phase"; }
[ "$swap_fail" = 0 ] || { tail -5 "$T/swaps.log"; fail "a swap command failed"; }
[ "$brc" = 0 ] || fail "velo-bench exit $brc during the swaps"
note "swaps: $swaps ($rollbacks rolled back and swapped again) in $swap_ms ms of load"
[ "$swaps" -ge "$COUNT" ] || fail "only $swaps swaps in ${DURATION} s (SWAP_COUNT $COUNT): raise SWAP_DURATION"
# the drains finish
for _ in $(seq 50); do
	[ "$(ctl models | grep -c '^[0-9]')" = 1 ] && break
	sleep 0.1
done
ctl models
ctl "model served" | tee "$T/served"
samples=$(grep -c 'model m ' "$T/sample.out")
ctl counters | grep -E '^(model|sched\.(route_changes|slot_cmds|done_|reject|accepted))'

/usr/bin/python3 - "$T" "$VA" "$VB" "$swaps" "$samples" "${SWAP_P99_MAX:-}" \
	>"$T/summary" 2>&1 <<'PY' || { cat "$T/summary"; fail "results"; }
import json, sys
t, va, vb, swaps, samples, p99max = sys.argv[1:7]
st = json.load(open(t + "/steady.json"))["results"]
sw = json.load(open(t + "/swap.json"))["results"]
s2 = json.load(open(t + "/steady2.json"))["results"]
for name, r in (("steady", st), ("swap", sw), ("steady2", s2)):
    bad = {k: r.get(k) for k in ("lost", "timeouts", "errors", "send_errors")
           if r.get(k)}
    assert not bad, (name, bad)
    assert not r.get("rejects"), (name, r["rejects"])
    assert r["completed"] == r["started"] > 0, (name, r["completed"], r["started"])
served = {}
for line in open(t + "/served"):
    name, ver, n = line.split()
    assert name == "m", line
    served[ver] = served.get(ver, 0) + int(n)
assert set(served) <= {va, vb}, ("a DONE from a third version", served)
assert served.get(va, 0) > 0 and served.get(vb, 0) > 0, ("both versions", served)
total = st["completed"] + sw["completed"] + s2["completed"] + int(samples)
assert sum(served.values()) == total, ("DONEs served %d != answers received %d"
                                       % (sum(served.values()), total), served)
def p(r, k, q):
    return r["latency_ns"][k][q] / 1e6
print("requests: steady %d, during swaps %d, steady after %d (+%d samples); "
      "DONE by version: %s"
      % (st["completed"], sw["completed"], s2["completed"], int(samples),
         ", ".join("%s %d" % kv for kv in sorted(served.items()))))
print("failed or lost: 0; swaps: %s" % swaps)
print("%-10s %10s %10s %10s %10s" % ("ms", "e2e p50", "e2e p99", "ttft p50", "ttft p99"))
for name, r in (("steady", st), ("swapping", sw), ("steady2", s2)):
    print("%-10s %10.2f %10.2f %10.2f %10.2f" % (name, p(r, "end_to_end", "p50"),
          p(r, "end_to_end", "p99"), p(r, "ttft", "p50"), p(r, "ttft", "p99")))
ratio = p(sw, "end_to_end", "p99") / p(st, "end_to_end", "p99")
print("p99 e2e during swaps / steady: %.2f (steady after / before: %.2f)"
      % (ratio, p(s2, "end_to_end", "p99") / p(st, "end_to_end", "p99")))
if p99max:
    assert ratio <= float(p99max), "p99 ratio %.2f over %s" % (ratio, p99max)
PY
cat "$T/summary"
if [ -n "${SWAP_OUT:-}" ]; then
	mkdir -p "$SWAP_OUT"
	cp "$T/steady.json" "$T/swap.json" "$T/steady2.json" "$T/summary" "$T/served" "$SWAP_OUT/"
fi
stop_velod
exit 0
