#!/bin/bash
# (b) 5 % loss in both directions, on both sides: velod's seeded rx/tx loss
# injection (data and control) and the client library's.  Many INFERs and
# pings over several sessions: every request gets exactly one answer, none
# lost or duplicated (velo-itest checks), and the loss really happened:
# velod's loss and retransmit counters and the clients' counters are > 0.
. "$(dirname "$0")/lib.sh"

start_velod --set loss.seed=7 --set loss.rx_data=0.05 --set loss.tx_data=0.05 \
	--set loss.rx_ctrl=0.05 --set loss.tx_ctrl=0.05
note "velod on $SERVER with 5 % loss each way"

"$BIN/velo-itest" loss --server "$SERVER" --key "$KEY" --sessions 4 \
	--requests 2000 --pings 400 --loss 0.05 --seed 3 --max-seconds 90 \
	>"$T/itest.out" 2>"$T/itest.err" ||
	{ cat "$T/itest.out" "$T/itest.err"; fail "velo-itest loss"; }
cat "$T/itest.out"

get() { awk -v k="$1" '$1 == k { print $2 }' "$T/itest.out"; }
[ "$(get bad)" = 0 ] || fail "requests without exactly one answer"
for c in client.loss_tx client.loss_rx client.retransmit_requests \
	 client.infer_retries client.gaps; do
	[ "$(get $c)" -gt 0 ] || fail "$c is 0: the run did not exercise loss"
done

ctl counters >"$T/counters"
note "velod counters:"
sed 's/^/#   /' "$T/counters"
loss=$(counter_sum '^dp\..*loss')
retx=$(counter_sum 'retrans')
note "velod: loss drops $loss, retransmit counters $retx"
[ "$loss" -gt 0 ] || fail "velod's loss counters are 0"
[ "$retx" -gt 0 ] || fail "velod's retransmit counters are 0"

# None ran twice: every request reached the engine side exactly once,
# though velod saw resends of many.
eng=$(counter sess.infer_to_engine)
note "velod: $(counter sess.infer_rx) INFERs received, $eng passed to the engine"
[ "$eng" = 2000 ] || fail "$eng requests reached the engine, expected 2000"
stop_velod

# Once more at 20 % loss each way on both sides (RELIABILITY.md's worst
# case), smaller.
start_velod --set loss.seed=11 --set loss.rx_data=0.2 --set loss.tx_data=0.2 \
	--set loss.rx_ctrl=0.2 --set loss.tx_ctrl=0.2
"$BIN/velo-itest" loss --server "$SERVER" --key "$KEY" --sessions 2 \
	--requests 300 --pings 50 --loss 0.2 --seed 5 --max-seconds 60 \
	>"$T/itest.out" 2>"$T/itest.err" ||
	{ cat "$T/itest.out" "$T/itest.err"; fail "velo-itest loss at 20 %"; }
grep -E '^(bad|seconds|client.(loss_tx|loss_rx|retransmit_requests|infer_retries)) ' \
	"$T/itest.out" | sed 's/^/# 20 %: /'
[ "$(get bad)" = 0 ] || fail "20 %: requests without exactly one answer"
eng=$(counter sess.infer_to_engine)
[ "$eng" = 300 ] || fail "20 %: $eng requests reached the engine, expected 300"
stop_velod
exit 0
