#!/bin/bash
# velo-mgmtd's side of model load and hot swap, against t-mgmt-fakevelod.py
# (velod has no model slots yet): a load is checked in full first and
# readiness follows the engine; a swap is checked first, then rolls back by
# itself unless confirmed (system.swap_confirm_minutes; a "minute" is
# 500 ms here), "model confirm" keeps it, a damaged image never reaches
# velod, and a velod that restarted gets the serving model loaded again.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/t-mgmt.inc"

[ -x "$BIN/velo-convert" ] || fail "velo-convert is not built (CONFIG_TOOLS_CONVERT)"
M=$MGMT_STATE/models
mkdir -p "$M"
for v in 1 2 3; do
	"$BIN/velo-convert" -q --align 64 --no-sync --name tiny --model-version $v \
		"$SRC/tests/fixtures/models/llama3" -o "$M/tiny-$v.vimg" >"$T/conv.out" 2>&1 ||
		fail "velo-convert: $(cat "$T/conv.out")"
done
/usr/bin/python3 - "$M/tiny-3.vimg" <<'PY'
import os, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    n = os.path.getsize(p)
    f.seek(n - 64); b = f.read(1)
    f.seek(n - 64); f.write(bytes([b[0] ^ 1]))
PY
export FAKE_VELOD_LOG=$T/fake.log
: >"$FAKE_VELOD_LOG"
start_mgmtd --velod "$SRC/tests/integration/t-mgmt-fakevelod.py" --minute-ms 500
H=http://127.0.0.1:$METRICS_PORT
ready_code() { curl -s -o /dev/null -w '%{http_code}' "$H/ready"; }
ready_is() { [ "$(ready_code)" = "$1" ]; }

wait_until 3 ready_is 503 || fail "ready before any load: $(ready_code)"
expect_rc 0 vctl model load tiny 1
grep -q 'verified (tiny 1.*velod: ok tiny 1 loaded' "$T/out" || fail "load: $(cat "$T/out")"
wait_until 3 ready_is 200 || fail "not ready after a load"
vctl show status | grep -q '^loaded: *tiny 1' || fail "status: loaded"

expect_rc 0 vctl configure
expect_rc 0 vctl set system.swap_confirm_minutes 2
expect_rc 0 vctl commit

# Swap not confirmed: rolled back by itself after 2 "minutes" (1 s).
expect_rc 0 vctl model swap tiny 2
cat "$T/out"
grep -q 'rolls back by itself in 1 s' "$T/out" || fail "swap: $(cat "$T/out")"
vctl show status | grep -q '^swap: *tiny 1 -> 2' || fail "status: no pending swap"
vctl --json show models >"$T/out"
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d["swaps_unconfirmed"]; assert len(s) == 1 and s[0]["from"] == "1" and s[0]["to"] == "2", s' \
	"$T/out" || fail "show models --json: $(cat "$T/out")"
rolled() { grep -q ' model rollback tiny$' "$FAKE_VELOD_LOG"; }
wait_until 4 rolled || fail "swap not rolled back by itself"
vctl show status | grep -q '^loaded: *tiny 1' || fail "after the rollback: $(vctl show status)"
vctl show status | grep -q '^swap:' && fail "swap still pending after the rollback"
grep -q 'swap of tiny to 2 not confirmed: rolled back to 1' "$T/mgmtd.err" || fail "no rollback log"

# Swap confirmed: stays.
expect_rc 0 vctl model swap tiny 2
expect_rc 0 vctl model confirm tiny
sleep 1.5
[ "$(grep -c ' model rollback tiny$' "$FAKE_VELOD_LOG")" = 1 ] || fail "a confirmed swap was rolled back"
vctl show status | grep -q '^loaded: *tiny 2' || fail "loaded after confirm"
# An operator's rollback with nothing to roll back: velod's refusal shown.
expect_rc 1 vctl model rollback tiny
grep -q 'velod: no swap of tiny to roll back' "$T/err" || fail "rollback: $(cat "$T/err")"

# A damaged image never reaches velod.
expect_rc 1 vctl model swap tiny 3
grep -q 'checksum mismatch' "$T/err" || fail "damaged swap: $(cat "$T/err")"
grep -q 'model swap tiny 3' "$FAKE_VELOD_LOG" && fail "damaged image sent to velod"

curl -s "$H/metrics" >"$T/metrics"
grep -qx 'velo_model_swaps_total 2' "$T/metrics" || fail "swaps: $(grep swaps "$T/metrics")"
grep -qx 'velo_ready 1' "$T/metrics" || fail "velo_ready with a model"

# velod dies: the new one gets the serving model (tiny 2) loaded again.
pid0=$(velod_pid)
kill -KILL "$pid0"
reloaded() { grep -v "^$pid0 " "$FAKE_VELOD_LOG" | grep -q 'model load tiny 2 '; }
wait_until 10 reloaded || fail "model not reloaded into the restarted velod"
wait_until 3 ready_is 200 || fail "not ready after the reload"
cat "$FAKE_VELOD_LOG"
stop_mgmtd
exit 0
