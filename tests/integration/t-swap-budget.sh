#!/bin/bash
# Swaps under a per-device memory budget (model_defaults.device_mem_mb 40:
# one 28.6 MiB slot of the bundled model per device): a new version goes to
# the standby device; with the rollback slot warm on one device and the
# serving one on the other, a third version has no room and is refused
# with the reason (serving untouched); after a rollback, the old version
# still drains on the standby device with requests in flight, so the next
# swap waits for it ("queued N ms for room on device D") and then loads
# there.  Zero failed or lost requests under velo-bench load throughout.
. "$(dirname "$0")/lib.sh"

A=$SRC/images/models/fortune-5m-fp8.velo
for v in 2 3; do
	"$BIN/velo-convert" -q -d fp8 --no-sync --name fortune-5m --model-version $v \
		"$SRC/images/models/src/fortune-5m" -o "$T/v$v.velo" >"$T/conv.out" 2>&1 ||
		fail "velo-convert: $(cat "$T/conv.out")"
done
start_velod --set model_defaults.device_mem_mb=40
expect_rc 0 ctl "model load m $A"
grep -q 'device 0' "$T/out" || fail "load: $(cat "$T/out")"

"$BIN/velo-bench" --server "$SERVER" --key "$KEY" --mode infer --closed 8 \
	--sessions 4 --max-tokens 200 --prompt "The" --duration 6 --timeout-ms 8000 \
	--json "$T/bench.json" >"$T/bench.out" 2>&1 &
BPID=$!
sleep 0.5

expect_rc 0 ctl "model swap m $T/v2.velo"
grep -q '^ok m now 2, 1 kept warm (device 1' "$T/out" || fail "swap 2: $(cat "$T/out")"
sleep 1.5	# long requests (up to 200 tokens) now run on 2
expect_rc 1 ctl "model swap m $T/v3.velo"
grep -q 'no room for m (28 MiB) on device 0 or beside the serving slot (device_mem_mb 40): confirm, roll back or unload first' "$T/out" ||
	fail "swap 3 without room: $(cat "$T/out")"
ctl models | grep -Eq '^[0-9]+ +m +2 +production ' || fail "serving touched: $(ctl models)"
# Roll back: 2 drains on device 1 with its requests; 3 waits for it.
expect_rc 0 ctl "model rollback m"
ctl models >"$T/models.rb"
expect_rc 0 ctl "model swap m $T/v3.velo"
cat "$T/out"
grep -Eq '^ok m now 3, 1 kept warm \(device 1, .*; queued [0-9]+ ms for room on device 1\)' "$T/out" ||
	fail "swap 3 after the rollback: $(cat "$T/out"); slots after the rollback: $(cat "$T/models.rb")"
expect_rc 0 ctl "model confirm m"
ctl models

wait "$BPID" || { cat "$T/bench.out"; fail "velo-bench"; }
cat "$T/bench.out"
bench_none_lost "$T/bench.json" "swaps under a memory budget"
stop_velod
exit 0
