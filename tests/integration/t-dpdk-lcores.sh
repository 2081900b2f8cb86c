#!/bin/bash
# Several dataplane loops: velod on DPDK with dpdk.queues=2 (net_af_packet
# qpairs=2: the kernel's PACKET_FANOUT_HASH spreads flows over the two
# queues by their 5-tuple, as RSS does on a NIC), one session table and one
# thread per queue, queue 0's loop forwarding between the loops' private
# rings and the scheduler's.  16 concurrent sessions: both loops get some,
# none of a session's datagrams lands on the other loop (no
# unknown-session drops), every text equals the kernel socket's, every
# request of velo-itest (4 sessions x 8 in flight, 5 % loss each way in
# both loops) answered exactly once, the loops' request slots all back
# when idle, 'sessions' and 'stats' cover both loops' tables, and velod
# stops cleanly (the loop threads joined).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/dpdk.inc"

PROMPTS=("A wise man" "The quick brown fox" "You will find" "Money is"
	 "Love and friendship" "A journey of a thousand miles" "Tomorrow" "Luck")
NT=16
ref_texts "$NT" "${PROMPTS[@]}"

vdev="net_af_packet0,iface=$IF_DP,blocksz=4096,framesz=2048,framecnt=512,qpairs=2"
DPDK_VDEV=$vdev start_velod_dpdk --set dpdk.queues=2 "${MODEL_ARGS[@]}"
grep -q 'dataplane: 2 loops' "$T/velod.err" ||
	fail "velod did not start 2 dataplane loops: $(grep -i 'dpdk\|loop' "$T/velod.err" | head -5)"
note "$(grep -o 'dataplane: 2 loops.*' "$T/velod.err")"

# 16 sessions at once (2 per prompt), each its own UDP source port.
pids=()
for i in $(seq 0 15); do
	p=${PROMPTS[$((i % 8))]}
	cl timeout 30 "$BIN/velo-client" --server "$SERVER" --key "$KEY" \
		gen --json --ignore-eos --max-tokens "$NT" "$p" \
		>"$T/mq.$i" 2>"$T/mqerr.$i" &
	pids+=($!)
done
for i in "${!pids[@]}"; do
	wait "${pids[$i]}" || fail "session $i: $(cat "$T/mqerr.$i")"
done
for i in $(seq 0 15); do
	gen_check "$T/mq.$i" >"$T/mqc.$i" || fail "session $i: $(cat "$T/mqc.$i")"
	cmp -s "$T/mqc.$i" "$T/ref.$((i % 8))" ||
		fail "session $i: text differs: $(cut -f3 "$T/mqc.$i")"
done
o0=$(counter sess.opened); o1=$(counter sess.q1.opened)
f0=$(counter pkt.udp_rx); f1=$(counter pkt.q1.udp_rx)
note "16 sessions: loop 0 opened $o0, loop 1 opened $o1; datagrams $f0 / $f1; all texts = socket's"
[ "$o0" -ge 1 ] && [ "$o1" -ge 1 ] || fail "one loop got no session ($o0 / $o1)"
[ $((o0 + o1)) -ge 16 ] || fail "$((o0 + o1)) sessions opened, expected >= 16"
unk=$(counter_sum '^dp\.(q[0-9]+\.)?drop_unknown_session$')
[ "$unk" = 0 ] || fail "$unk datagrams reached a loop without their session"

# sessions / stats list every loop's table: 8 sessions held open (PINGs
# 150 ms apart), spread over both loops by their source ports.  (Sessions
# of the clients above may linger until their timeout: a logon answered
# twice leaves one; the held ones are those idle less than a second.)
pids=()
for i in $(seq 0 7); do
	cl "$BIN/velo-client" --server "$SERVER" --key "$KEY" ping -n 30 \
		--interval-ms 150 >"$T/hold.$i" 2>&1 &
	pids+=($!)
done
sleep 1.5
ctl "sessions json" >"$T/sess.json"
ctl "stats json" >"$T/stats.json"
ctl "sessions" >"$T/sess.txt"
for p in "${pids[@]}"; do wait "$p" || fail "held session: $(cat "$T"/hold.*)"; done
read -r ns n0 n1 act loops smax <<<"$(/usr/bin/python3 - "$T/sess.json" "$T/stats.json" <<'PY'
import json, sys
s, st = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
s = [x for x in s if x["idle_ms"] < 1000]
print(len(s), sum(x["loop"] == 0 for x in s), sum(x["loop"] == 1 for x in s),
      st["sessions_active"], st["dataplane_loops"], st["sessions_max"])
PY
)"
note "8 sessions held open: 'sessions' lists $ns in use (loop 0: $n0, loop 1: $n1); stats: $act active, $loops loops, sessions_max $smax"
[ "$ns" = 8 ] || fail "'sessions json' lists $ns sessions in use, expected 8: $(cat "$T/sess.txt")"
[ "$act" -ge 8 ] || fail "stats sessions_active $act, expected at least 8"
[ "$loops" = 2 ] || fail "stats dataplane_loops $loops, expected 2"
[ "$(($(wc -l <"$T/sess.txt") - 1))" -ge 8 ] || fail "'sessions' text lists $(($(wc -l <"$T/sess.txt") - 1)) sessions"
[ "$n0" -ge 1 ] && [ "$n1" -ge 1 ] || note "(all 8 sessions on one loop: the other's listing not exercised)"

# A captured LOGON replayed from 12 other source ports (so, other loops):
# refused by every loop (one shared nonce cache), zero bytes back.
r0=$(counter dp.drop_replay); q0=$(counter dp.q1.drop_replay)
cl /usr/bin/python3 "$SRC/tests/integration/t-dpdk-replay.py" "$IF_CL" "$DP_IP" \
	"$DP_PORT" "$CL_IP" 12 "$BIN/velo-client" --server "$SERVER" --key "$KEY" \
	ping -n 1 >"$T/replay.out" 2>&1 || { cat "$T/replay.out"; fail "LOGON replay"; }
back=$(awk '$1 == "bytes_back" { print $2 }' "$T/replay.out")
r1=$(( $(counter dp.drop_replay) - r0 )); q1=$(( $(counter dp.q1.drop_replay) - q0 ))
note "LOGON replayed from 12 ports: refused as replays by loop 0: $r1, loop 1: $q1; $back bytes back"
[ "$back" = 0 ] || fail "a replayed LOGON was answered ($back bytes)"
[ $((r1 + q1)) = 12 ] || fail "$((r1 + q1)) of 12 replays counted as replays"
[ "$r1" -ge 1 ] && [ "$q1" -ge 1 ] || note "(all replays reached one loop: the other's refusal not exercised)"

# Exactly once under 5 % loss in both loops, many requests in flight.
stop_velod
DPDK_VDEV=$vdev start_velod_dpdk --set dpdk.queues=2 "${MODEL_ARGS[@]}" \
	--set loss.seed=9 --set loss.rx_data=0.05 --set loss.tx_data=0.05 \
	--set loss.rx_ctrl=0.05 --set loss.tx_ctrl=0.05
cl "$BIN/velo-itest" loss --server "$SERVER" --key "$KEY" --sessions 4 \
	--requests 200 --pings 50 --seed 4 --max-seconds 40 \
	>"$T/itest.out" 2>"$T/itest.err" ||
	{ cat "$T/itest.out" "$T/itest.err"; fail "velo-itest loss, 2 loops"; }
eng=$(counter_sum '^sess\.(q[0-9]+\.)?infer_to_engine$')
[ "$eng" = 200 ] || fail "$eng requests reached the engine, expected 200"
l0=$(counter sess.infer_to_engine); l1=$(counter sess.q1.infer_to_engine)
loss=$(counter_sum '^dp\.(q[0-9]+\.)?.*loss')
note "velo-itest: 200 requests + 50 pings answered exactly once (loop 0: $l0, loop 1: $l1), $loss datagrams dropped by the injectors"
[ "$loss" -gt 0 ] || fail "the loss injectors dropped nothing"
fq=$(counter mux.fwd_requests); fr=$(counter mux.fwd_responses)
note "loop 0 forwarded $fq request records and $fr response records; rings full: $(counter mux.resp_ring_full) / $(counter mux.req_ring_full)"
[ "$fq" -ge 200 ] && [ "$fr" -ge 400 ] || fail "forwarding counters too low: $fq / $fr"
[ "$(counter mux.req_ring_full)" = 0 ] || fail "the scheduler's request ring was full"
slots() { ctl "stats json" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["request_slots_in_use"])'; }
for _ in $(seq 50); do
	[ "$(slots)" = 0 ] && break
	sleep 0.1
done
[ "$(slots)" = 0 ] || fail "request slots still in use when idle: $(slots)"
kv_idle
stop_velod
exit 0
