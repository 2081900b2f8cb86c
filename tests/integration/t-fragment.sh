#!/bin/bash
# (d) A prompt larger than one datagram goes as FRAGMENTs; velod reassembles
# it and answers the INFER (REJECT NOT_READY: parsed, not dropped).
. "$(dirname "$0")/lib.sh"

start_velod
long=$(head -c 6000 /dev/zero | tr '\0' 'a')
expect_rc 4 client -v gen "$long"
grep -q 'REJECT NOT_READY (HTTP 503): no model loaded' "$T/err" ||
	fail "long text prompt: $(cat "$T/err")"
n=$(awk '$1 == "client.fragments_sent" { print $2 }' "$T/err")
note "6000-byte text prompt: ${n:-0} fragments"
[ "${n:-0}" -ge 5 ] || fail "the prompt was not fragmented"

# Token ids: 3000 x 4 bytes.
ids=$(seq -s, 1 3000)
expect_rc 4 client -v gen --tokens "$ids"
grep -q 'REJECT NOT_READY' "$T/err" || fail "long token prompt: $(cat "$T/err")"

# And the same under client-side loss: lost fragments are sent again.
expect_rc 4 client -v --loss 0.2 --loss-seed 5 gen "$long"
grep -q 'REJECT NOT_READY' "$T/err" || fail "lossy long prompt: $(cat "$T/err")"

drops=$(counter_sum '^dp\.drop_(bad_fragment|no_buffer)$')
[ "$drops" = 0 ] || fail "velod dropped fragments ($drops)"
stop_velod
exit 0
