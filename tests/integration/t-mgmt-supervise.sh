#!/bin/bash
# velo-mgmtd supervises velod: velod killed (SIGKILL) under velo-bench ping
# load is restarted on the same address with backoff, and the clients get
# explicit errors, not silence (velo-bench counts the lost pings and
# exits 4; velo-itest's sessions are reported closed by the client
# library); a wedged velod (SIGSTOP) is detected by the heartbeat, killed
# and restarted; health and readiness tell the truth meanwhile;
# "restart dataplane" restarts it on request.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/t-mgmt.inc"

start_mgmtd
H=http://127.0.0.1:$METRICS_PORT
pid_is_not() { p=$(velod_pid); [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "$1" ]; }

expect_rc 0 client ping -n 20
grep -q '20 sent, 20 received' "$T/out" || fail "ping before: $(cat "$T/out")"

# 1. SIGKILL under ping load.
pid0=$(velod_pid)
VELO_BENCH_COUNTERS=1 "$BIN/velo-bench" --server "$SERVER" --key "$KEY" \
	--mode ping --rate 2000 --duration 4 --timeout-ms 500 \
	--heartbeat-ms 100 >"$T/bench.out" 2>"$T/bench.err" &
bench=$!
"$BIN/velo-itest" loss --server "$SERVER" --key "$KEY" --sessions 2 \
	--requests 1000000 --pings 1000000 --max-seconds 8 \
	>"$T/itest.out" 2>"$T/itest.err" &
itest=$!
sleep 1
kill -KILL "$pid0" || fail "kill velod"
t0=$(date +%s%N)
wait_until 10 pid_is_not "$pid0" || fail "velod not restarted after SIGKILL"
wait_until 10 velod_running || fail "restarted velod not running"
ms=$((($(date +%s%N) - t0) / 1000000))
note "velod $pid0 killed, $(velod_pid) running after ${ms} ms"
[ "$(velod_field listen)" = "$SERVER" ] || fail "restarted on $(velod_field listen), not $SERVER"
wait "$bench"
rc=$?
cat "$T/bench.out"
[ "$rc" = 4 ] || fail "velo-bench exit $rc, expected 4 (operations lost)"
lost=$(sed -n 's/.* completed, \([0-9]*\) lost.*/\1/p' "$T/bench.out")
[ "${lost:-0}" -gt 0 ] || fail "velo-bench reports no lost pings"
wait "$itest"
rc=$?
cat "$T/itest.err"
[ "$rc" = 1 ] || fail "velo-itest exit $rc, expected 1 (session lost)"
grep -Eq 'session [0-9]+ closed \((Connection timed out|Connection refused|Connection reset by peer)\)|TIMEOUT' \
	"$T/itest.err" || fail "velo-itest: no explicit session loss"
vctl show status | tee "$T/out"
grep -q 'restarts: 1 after exits' "$T/out" || fail "status: restart not counted"
grep -q 'last exit: killed by signal 9' "$T/out" || fail "status: exit cause"
# The new velod serves new sessions on the same address.
expect_rc 0 client ping -n 20
grep -q '20 sent, 20 received' "$T/out" || fail "ping after restart: $(cat "$T/out")"

# 2. Wedged (stopped): health goes 503, mgmtd kills and restarts it.
pid1=$(velod_pid)
curl -s -o /dev/null -w '%{http_code}' "$H/health" | grep -qx 200 || fail "health not 200"
kill -STOP "$pid1"
wait_until 3 sh -c "curl -s -o /dev/null -w '%{http_code}' $H/health | grep -qx 503" ||
	fail "health still 200 with velod stopped"
curl -s "$H/health"
wait_until 10 pid_is_not "$pid1" || fail "wedged velod not replaced"
kill -CONT "$pid1" 2>/dev/null
wait_until 10 velod_running || fail "velod not running after the wedge"
vctl show status | grep -q 'after exits, 1 after wedges' || fail "wedge not counted: $(vctl show status)"
grep -q 'wedged' "$T/mgmtd.err" || fail "no wedge log line"
wait_until 3 sh -c "curl -s -o /dev/null -w '%{http_code}' $H/health | grep -qx 200" ||
	fail "health not back to 200"

# Readiness tells the truth: velod answers but has no model.
ready_says() { curl -s "$H/ready" | grep -q "$1"; }
wait_until 3 ready_says 'engine not_ready' || fail "engine state not heard"
code=$(curl -s -o "$T/ready" -w '%{http_code}' "$H/ready")
cat "$T/ready"
[ "$code" = 503 ] || fail "ready answered $code without a model"
grep -q 'not ready: engine not_ready' "$T/ready" || fail "ready: $(cat "$T/ready")"

# 3. Asked restart: clean stop, immediate start.
pid2=$(velod_pid)
expect_rc 0 vctl restart dataplane
wait_until 5 pid_is_not "$pid2" || fail "restart dataplane: same pid"
wait_until 5 velod_running || fail "not running after restart dataplane"
vctl show status | grep -q '1 asked' || fail "asked restart not counted"

stop_mgmtd
# mgmtd's velod went with it.
pgrep -f "velod -c $T/velod.json" >/dev/null && fail "velod left running after mgmtd stopped"
exit 0
