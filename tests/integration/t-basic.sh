#!/bin/bash
# (a) velod on loopback: velo-client logs on, pings, sends INFER and gets
# the explicit REJECT NOT_READY "no model loaded"; status; clean shutdown.
. "$(dirname "$0")/lib.sh"

start_velod
note "velod on $SERVER"

expect_rc 0 client ping -n 50
grep -q '50 sent, 50 received, 0 lost' "$T/out" || fail "ping: $(cat "$T/out")"
grep -q '^rtt us: min .* p50 .* p99.9 .* max' "$T/out" || fail "no percentiles"
cat "$T/out"

expect_rc 0 client ping -n 5 --json
grep -q '"received": 5' "$T/out" || fail "ping --json: $(cat "$T/out")"

# INFER: exit 4 (REJECT), the code, its HTTP mapping and the server's text.
expect_rc 4 client gen "Hello there"
grep -q 'REJECT NOT_READY (HTTP 503): no model loaded' "$T/err" ||
	fail "gen: $(cat "$T/err")"
cat "$T/err"

expect_rc 4 client gen --json --max-tokens 8 --temperature 0.7 --top-k 40 \
	--top-p 0.9 --min-p 0.05 --seed 42 --stop "." --model tiny \
	--priority 1 --deadline-ms 5000 --stream sentence "Hello"
grep -q '"event": "reject".*"code": "NOT_READY", "http": 503.*"text": "no model loaded"' \
	"$T/out" || fail "gen --json: $(cat "$T/out")"

expect_rc 4 client gen --tokens 1,2,3,4 --stream k:4
grep -q 'REJECT NOT_READY' "$T/err" || fail "gen --tokens: $(cat "$T/err")"

# A request the server must refuse as invalid (temperature out of range)
# is REJECTed too, never dropped: still exit 4, with its own code.
expect_rc 4 client gen --temperature 1000 "Hello"
grep -q 'REJECT' "$T/err" || fail "invalid request: $(cat "$T/err")"
cat "$T/err"

expect_rc 0 client status
grep -q 'not_ready' "$T/out" || fail "status: $(cat "$T/out")"
cat "$T/out"

# Usage errors are exit 2, an unreachable server exit 3.
expect_rc 2 client frobnicate
expect_rc 3 "$BIN/velo-client" --server 127.0.0.1:1 --key "$KEY" \
	--timeout-ms 300 ping -n 1

stop_velod
exit 0
