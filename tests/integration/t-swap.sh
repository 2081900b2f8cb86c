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
#   SWAP_DURATION     seconds of load while swapping      [20]
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
DURATION=${SWAP_DURATION:-20}
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
# The swap loop talks to the control socket itself (one connection per
# command, as velod -q does, without a process per command).
/usr/bin/python3 - "$T/ctl.sock" "$BPID" "$A" "$DEV_A" "$B" "$DEV_B" "$PACE" \
	"$GAP_MS" "$BIN/velo-client" "$SERVER" "$KEY" "$T" >"$T/loop.out" 2>&1 <<'PY'
import os, socket, subprocess, sys, time
sock, bpid, a, da, b, db, pace, gap_ms, client, server, key, t = sys.argv[1:13]
bpid, pace, gap = int(bpid), pace == "1", int(gap_ms) / 1000.0
log = open(t + "/swaps.log", "w")
def ctl(cmd):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(sock)
    c.sendall(cmd.encode() + b"\n")
    c.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        d = c.recv(4096)
        if not d:
            break
        out += d
    c.close()
    out = out.decode()
    log.write("%s -> %s" % (cmd, out))
    if not out.startswith("ok"):
        raise SystemExit("swap loop: '%s' answered: %s" % (cmd, out.strip()))
def alive():	# the bench (the shell's child, maybe a zombie) still runs
    try:
        st = open("/proc/%d/stat" % bpid).read()
    except OSError:
        return False
    return st[st.rindex(")") + 2] not in "ZX"
img = {"A": (a, da), "B": (b, db)}
swaps = rollbacks = samples = 0
cur, t0 = "A", time.monotonic()
while alive():
    if pace:
        due = t0 + swaps * gap
        if time.monotonic() < due:
            time.sleep(due - time.monotonic())
        if not alive():
            break
    nxt = "B" if cur == "A" else "A"
    ctl("model swap m %s device %s" % img[nxt])
    swaps += 1
    if swaps % 10 == 5:
        ctl("model rollback m")
        rollbacks += 1
        ctl("model swap m %s device %s" % img[nxt])
        swaps += 1
    ctl("model confirm m")
    cur = nxt
    if swaps % 20 == 1:
        # a wire-level sample: the DONE names the version
        r = subprocess.run([client, "--server", server, "--key", key, "gen",
                            "--max-tokens", "4", "The"], capture_output=True,
                           text=True, timeout=10)
        open(t + "/sample.out", "a").write(r.stdout + r.stderr)
        if r.returncode:
            raise SystemExit("velo-client gen failed: " + r.stderr)
        samples += 1
print("%d %d %d %d" % (swaps, rollbacks, samples, (time.monotonic() - t0) * 1000))
PY
loop_rc=$?
read -r swaps rollbacks _ swap_ms < <(tail -1 "$T/loop.out")
wait "$BPID"
brc=$?
cat "$T/swap.out"
# 3. steady again (the spread between 1 and 3 is this machine's noise)
bench --duration "$STEADY" --json "$T/steady2.json" >"$T/steady2.out" 2>&1 ||
	{ cat "$T/steady2.out"; fail "second steady phase"; }
[ "$loop_rc" = 0 ] || { cat "$T/loop.out"; tail -3 "$T/swaps.log"; fail "the swap loop failed"; }
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
samples=$(grep -c 'model m ' "$T/sample.out" 2>/dev/null)
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
