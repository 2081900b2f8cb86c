#!/bin/bash
# The model repository and the metrics endpoint.  Images made by
# velo-convert from the test fixtures: two good versions, one with a
# damaged tensor (passes the fast header check, refused by the full check
# before any load, naming the tensor), one truncated (refused at the scan).
# Labels (production, canary share) persist.  /metrics is scraped with
# curl and checked for vLLM's names and the appliance's counters, with
# values that follow real events (forged datagrams -> auth failures,
# refused images); /health and /ready tell the truth.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/t-mgmt.inc"

[ -x "$BIN/velo-convert" ] || fail "velo-convert is not built (CONFIG_TOOLS_CONVERT)"
M=$MGMT_STATE/models
mkdir -p "$M"
conv() {
	"$BIN/velo-convert" -q --align 64 --no-sync --name tiny --model-version "$1" \
		"$SRC/tests/fixtures/models/$2" -o "$M/$3" >"$T/conv.out" 2>&1 ||
		fail "velo-convert $2: $(cat "$T/conv.out")"
}
conv 1 llama3 tiny-1.vimg
conv 2 qwen2 tiny-2.vimg
conv 3 qwen2 tiny-3.vimg
# Damage one byte near the end of the data region (a tensor, not the header).
/usr/bin/python3 - "$M/tiny-3.vimg" <<'PY'
import os, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    n = os.path.getsize(p)
    f.seek(n - 100); b = f.read(1)
    f.seek(n - 100); f.write(bytes([b[0] ^ 0x5a]))
PY
head -c 4096 "$M/tiny-1.vimg" >"$M/trunc.vimg"

start_mgmtd
H=http://127.0.0.1:$METRICS_PORT

expect_rc 0 vctl show models
cat "$T/out"
grep -Eq '^tiny +1 .* ok ' "$T/out" || fail "tiny 1 not listed ok"
grep -Eq '^tiny +3 .* ok ' "$T/out" || fail "tiny 3 should pass the fast check"
grep -Eq '^trunc +\? .* REFUSED ' "$T/out" || fail "truncated image not refused at scan"

expect_rc 0 vctl model verify tiny 1
grep -q 'verified (tiny 1' "$T/out" || fail "verify tiny 1: $(cat "$T/out")"

# The damaged image: refused before load, with the reason and the tensor.
expect_rc 1 vctl model load tiny 3
cat "$T/err"
grep -q "tiny-3.vimg: refused: tensor '.*': checksum mismatch" "$T/err" ||
	fail "damaged image: $(cat "$T/err")"
expect_rc 1 vctl model swap tiny 3
grep -q 'checksum mismatch' "$T/err" || fail "swap to a damaged image not refused"
expect_rc 1 vctl model load trunc
grep -q 'trunc.vimg: refused: ' "$T/err" || fail "truncated: $(cat "$T/err")"
cat "$T/err"
expect_rc 1 vctl model load nosuch
grep -q 'no image of nosuch' "$T/err" || fail "missing model: $(cat "$T/err")"

# A good image passes the check and goes to velod; velod's answer is the
# operator's answer (today velod has no model slots and says so).
"$BIN/veloctl" -S "$MGMT_STATE/mgmt.sock" model load tiny 1 >"$T/out" 2>"$T/err"
rc=$?
cat "$T/out" "$T/err"
grep -q 'verified (tiny 1' "$T/out" "$T/err" || fail "load tiny 1: not verified first"
loaded=0
if [ "$rc" = 0 ]; then
	vctl show models | grep -q 'loaded in velod: tiny 1' || fail "load not recorded"
	# velod loads models at start: mgmtd restarted it with tiny 1, whose
	# self-test must pass before it is ready.
	engine_ready() { vctl show status | grep -q '^engine: *ready'; }
	wait_until 15 engine_ready || fail "engine not ready after the load: $(vctl show status)"
	SERVER=$(velod_field listen)
	loaded=1
	note "tiny 1 loaded, self-test passed, engine ready"
	# One generation, so that the success counter has something to count.
	expect_rc 0 client gen --max-tokens 4 "Hello"
	note "generated: $(cat "$T/out")"
else
	grep -q 'velod' "$T/err" || fail "load tiny 1 failed without velod's reason"
	note "velod can not load models: load verified, refused by velod"
fi

# Labels, persisted in labels.json.
expect_rc 0 vctl model label tiny 1 production
expect_rc 0 vctl model label tiny 2 canary 10
expect_rc 1 vctl model label tiny 3 production
grep -q 'checksum mismatch' "$T/err" || fail "damaged image labelled production"
expect_rc 2 vctl model label tiny 2 canary 100
expect_rc 1 vctl model label tiny 2 shadow 5
expect_rc 0 vctl show models
grep -Eq '^tiny +1 +production ' "$T/out" || fail "production label: $(cat "$T/out")"
grep -Eq '^tiny +2 +canary:10% ' "$T/out" || fail "canary label: $(cat "$T/out")"
grep -q '"production": "1"' "$M/labels.json" || fail "labels.json: $(cat "$M/labels.json")"

# Forged traffic, so that the auth counters have something true to say.
"$BIN/velo-itest" forge --server "$SERVER" --key "$KEY" >"$T/forge.out" 2>&1 ||
	fail "velo-itest forge: $(cat "$T/forge.out")"

# Metrics.
curl -s -f -o "$T/metrics" "$H/metrics" || fail "GET /metrics"
for name in vllm:time_to_first_token_seconds_bucket vllm:inter_token_latency_seconds_count \
	vllm:request_queue_time_seconds_sum vllm:e2e_request_latency_seconds_count \
	vllm:kv_cache_usage_perc vllm:num_requests_running vllm:num_requests_waiting \
	'vllm:request_success_total{finished_reason="stop"}' \
	'vllm:request_success_total{finished_reason="length"}' \
	'velo_dataplane_drops_total{reason="bad_tag"}' velo_retransmits_total \
	'velo_auth_failures_total{reason="bad_tag"}' velo_model_swaps_total \
	'velo_velod_restarts_total{cause="exit"}' velo_model_images_refused_total \
	velo_velod_up velo_ready 'velo_counter{name="dp.rx_datagrams"}' \
	'velo_counter{name="mgmt.metrics_scrapes"}'; do
	grep -qF "$name" "$T/metrics" || fail "/metrics has no $name"
done
val() { grep -v "^#" "$T/metrics" | grep -F "$1 " | head -1 | awk '{ print $NF }'; }
[ "$(val velo_velod_up)" = 1 ] || fail "velo_velod_up $(val velo_velod_up)"
[ "$(val velo_ready)" = "$loaded" ] || fail "velo_ready $(val velo_ready), model loaded: $loaded"
done_n=$(grep '^vllm:request_success_total' "$T/metrics" | awk '{ s += $NF } END { print s + 0 }')
[ "$done_n" = "$loaded" ] || fail "vllm:request_success_total sums to $done_n, $loaded generation(s) done"
[ "$(val 'velo_auth_failures_total{reason="bad_tag"}')" -ge 1 ] ||
	fail "forged datagrams not counted as auth failures"
[ "$(val velo_model_images_refused_total)" -ge 4 ] ||
	fail "refused images: $(val velo_model_images_refused_total)"
# Every sample line is "name{labels} number".
bad=$(grep -v '^#' "$T/metrics" | grep -Evc '^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+-]+$')
[ "$bad" = 0 ] || fail "$bad malformed metric lines"
note "$(grep -vc '^#' "$T/metrics") samples scraped"

[ "$(curl -s -o /dev/null -w '%{http_code}' "$H/health")" = 200 ] || fail "health"
code=$(curl -s -o "$T/ready" -w '%{http_code}' "$H/ready")
if [ "$loaded" = 1 ]; then
	[ "$code" = 200 ] || fail "ready $code with a model that passed its self-test"
	grep -qx 'ready' "$T/ready" || fail "ready text: $(cat "$T/ready")"
	# Unload: velod restarted without models, not ready any more.
	expect_rc 0 vctl model unload tiny
	not_ready() { curl -s "$H/ready" | grep -q '^not ready: engine not_ready'; }
	wait_until 15 not_ready || fail "still ready after unload: $(curl -s "$H/ready")"
else
	[ "$code" = 503 ] || fail "ready without a model"
	grep -q '^not ready' "$T/ready" || fail "ready text: $(cat "$T/ready")"
fi
[ "$(curl -s -o /dev/null -w '%{http_code}' "$H/nope")" = 404 ] || fail "404"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$H/metrics")" = 405 ] || fail "405"

stop_mgmtd
exit 0
