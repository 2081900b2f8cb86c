#!/bin/bash
# Commit confirmed for a hot swap, end to end: velo-mgmtd supervises the
# real velod (runtime model slots, boot/velod.c), loads fortune 1, swaps to
# fortune 2 under velo-bench load and does not confirm: after the window
# (system.swap_confirm_minutes 4, a "minute" is 500 ms here) mgmtd rolls
# the swap back by itself and velod serves 1 again, its route flipped back
# to the warm slot.  A second swap is confirmed and stays.  velod killed
# during a third, unconfirmed swap comes back with the confirmed version.  Every DONE
# names the version that served it (velo-client), and the load sees zero
# failed or lost requests across the swap, the rollback and the confirm.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/t-mgmt.inc"

M=$MGMT_STATE/models
mkdir -p "$M"
for v in 1 2; do
	"$BIN/velo-convert" -q -d fp8 --no-sync --name fortune --model-version $v \
		"$SRC/images/models/src/fortune-5m" -o "$M/fortune-$v.vimg" >"$T/conv.out" 2>&1 ||
		fail "velo-convert: $(cat "$T/conv.out")"
done
start_mgmtd --minute-ms 500
served_by() {	# the version in a DONE (velo-client prints "model NAME VER")
	client gen --max-tokens 4 "The" 2>&1 | sed -n 's/.*model fortune \([0-9]*\);.*/\1/p'
}

expect_rc 0 vctl model load fortune 1
grep -q 'velod: ok fortune 1 loaded, self-test passed' "$T/out" || fail "load: $(cat "$T/out")"
SERVER=$(velod_field listen)
[ "$(served_by)" = 1 ] || fail "DONE does not name fortune 1"

expect_rc 0 vctl configure
expect_rc 0 vctl set system.swap_confirm_minutes 4
expect_rc 0 vctl commit

"$BIN/velo-bench" --server "$SERVER" --key "$KEY" --mode infer --closed 4 \
	--sessions 2 --max-tokens 8 --prompt "The" --duration 7 --timeout-ms 5000 \
	--json "$T/bench.json" >"$T/bench.out" 2>&1 &
BPID=$!
sleep 0.3

# Not confirmed: rolled back by itself.
expect_rc 0 vctl model swap fortune 2
cat "$T/out"
grep -q 'velod: ok fortune now 2, 1 kept warm' "$T/out" || fail "swap: $(cat "$T/out")"
grep -q 'rolls back by itself in 2 s' "$T/out" || fail "no confirm window: $(cat "$T/out")"
[ "$(served_by)" = 2 ] || fail "after the swap, DONE does not name fortune 2"
vctl show status | grep -q '^swap: *fortune 1 -> 2' || fail "status: no pending swap"
# show models lists velod's slots: 2 serving, 1 warm for the rollback
expect_rc 0 vctl show models
grep -Eq '^[0-9]+ +fortune +2 +production +ready +- ' "$T/out" || fail "show models: $(cat "$T/out")"
grep -Eq '^[0-9]+ +fortune +1 +standby +ready +rollback ' "$T/out" || fail "show models: $(cat "$T/out")"
vctl --json show models >"$T/out"
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d["velod_slots"]
assert sorted((x["version"], x["label"], x["hold"]) for x in s) == [("1", "standby", "rollback"), ("2", "production", "")], s' \
	"$T/out" || fail "show models --json velod_slots: $(cat "$T/out")"
rolled() { grep -q 'swap of fortune to 2 not confirmed: rolled back to 1' "$T/mgmtd.err"; }
wait_until 5 rolled || fail "swap not rolled back by itself: $(tail -5 "$T/mgmtd.err")"
[ "$(served_by)" = 1 ] || fail "after the rollback, DONE does not name fortune 1"
vctl show status | grep -q '^loaded: *fortune 1' || fail "status after the rollback: $(vctl show status)"
note "swap to 2 not confirmed: velod serves 1 again"

# Confirmed: stays.
expect_rc 0 vctl model swap fortune 2
expect_rc 0 vctl model confirm fortune
grep -q 'velod: ok fortune stays 2' "$T/out" || fail "confirm: $(cat "$T/out")"
sleep 2.5
[ "$(served_by)" = 2 ] || fail "a confirmed swap did not stay"
vctl show status | grep -q '^swap:' && fail "swap still pending after confirm"

wait "$BPID" || { cat "$T/bench.out"; fail "velo-bench"; }
cat "$T/bench.out"
bench_none_lost "$T/bench.json" "across swap, automatic rollback, swap, confirm"

# velod dies during an unconfirmed swap (2 confirmed, swapped to 1): the
# new velod gets the confirmed 2 back, and nothing is left pending.
expect_rc 0 vctl model swap fortune 1
pid0=$(velod_pid)
kill -KILL "$pid0"
back() { grep -q 'velod restarted during the unconfirmed swap of fortune to 1: loading the confirmed 2' "$T/mgmtd.err"; }
wait_until 10 back || fail "no reload of the confirmed version: $(tail -5 "$T/mgmtd.err")"
serves2() { SERVER=$(velod_field listen); [ "$(served_by)" = 2 ]; }
wait_until 10 serves2 || fail "the restarted velod does not serve the confirmed 2"
vctl show status | grep -q '^swap:' && fail "a swap still pending after the restart"
vctl show status | grep -q '^loaded: *fortune 2' || fail "status: $(vctl show status)"
note "velod killed during an unconfirmed swap: the confirmed version is back"
vctl show counters | grep -E 'model\.|auto_rollbacks' || true
stop_mgmtd
exit 0
