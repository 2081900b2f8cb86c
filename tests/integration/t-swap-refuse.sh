#!/bin/bash
# Runtime model commands that must be refused leave serving untouched, under
# velo-bench load: a corrupt image (one byte flipped in the tensor data) is
# refused by the FULL checksum with its reason, a truncated one by the
# header checks, an image of another version than asked, a load over a
# loaded name, a swap to an unloaded version without its image, rollback and
# confirm with no swap pending, an unknown name.  Then a canary (label
# canary share 30) takes about its share of the admissions, deterministically
# by request id, and is unloaded again; a shadow (label shadow) runs copies
# of the requests whose answers are discarded and counted.  Zero failed or lost requests
# throughout; model.load_failures counts the refused images.
. "$(dirname "$0")/lib.sh"

A=$SRC/images/models/fortune-5m-fp8.velo
B=$T/b.velo
"$BIN/velo-convert" -q -d fp8 --no-sync --name fortune-5m --model-version 2 \
	"$SRC/images/models/src/fortune-5m" -o "$B" >"$T/conv.out" 2>&1 ||
	fail "velo-convert: $(cat "$T/conv.out")"
/usr/bin/python3 - "$B" "$T/bad.velo" "$T/short.velo" <<'PY'
import sys
src, bad, short = sys.argv[1:4]
b = bytearray(open(src, "rb").read())
n = len(b)
b2 = bytearray(b)
b2[n // 2] ^= 0x40            # in the tensor data, far from the header
open(bad, "wb").write(b2)
open(short, "wb").write(b[: n - 4096])
PY
start_velod --set model_defaults.threads=1
ctl "model load m $A" >/dev/null || fail "load A"

"$BIN/velo-bench" --server "$SERVER" --key "$KEY" --mode infer --closed 6 \
	--sessions 3 --max-tokens 8 --prompt "The" --duration 8 --timeout-ms 5000 \
	--json "$T/bench.json" >"$T/bench.out" 2>&1 &
BPID=$!
sleep 0.3

refused() {	# refused PATTERN CMD...: error answer (exit 1) matching PATTERN
	local pat=$1
	shift
	expect_rc 1 ctl "$*"
	grep -q -- "$pat" "$T/out" || fail "'$*': $(cat "$T/out")"
	echo "refused: $*: $(cat "$T/out")"
}
serving_v1() {
	ctl "model status m json" >"$T/st" || fail "status"
	[ "$(ctl models | grep -c '^[0-9]')" = 1 ] || fail "slots: $(ctl models)"
	/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
assert len(d) == 1, d
d = d[0]
assert d["version"] == "1" and d["label"] == "production" and d["routed"], d' "$T/st" ||
		fail "not serving 1 any more: $(cat "$T/st")"
}

f0=$(counter model.load_failures)
refused 'checksum mismatch.*serving untouched' model swap m "$T/bad.velo"
serving_v1
refused 'refused: .*serving untouched' model swap m "$T/short.velo"
refused "is version '2', not '3'" model swap m 3 "$B"
refused 'already loaded (1 on device 0): use model swap' model load m "$B"
refused 'm 2 is not loaded: give its image' model swap m 2
refused 'already serves 1' model swap m 1
refused 'no swap of m to roll back' model rollback m
refused 'no swap of m to confirm' model confirm m
refused 'nosuch is not loaded' model swap nosuch "$B"
refused 'nosuch is not loaded' model unload nosuch
refused 'canary needs share' model load m "$B" label canary
refused 'nonexistent.velo refused: .*serving untouched' model swap m "$T/nonexistent.velo"
serving_v1
f1=$(counter model.load_failures)
[ $((f1 - f0)) = 4 ] || fail "model.load_failures went $f0 -> $f1, 4 refused images expected (corrupt, truncated, version, missing)"

# A canary of 30 % beside production.
expect_rc 0 ctl "model load m $B label canary share 30"
grep -q '^ok m 2 loaded, self-test passed (canary, 30 % of 1' "$T/out" || fail "canary: $(cat "$T/out")"
ctl models
served() { ctl "model served" | awk -v v="$1" '$2 == v { print $3 }'; }
c1=$(served 1) c2=$(served 2)
sleep 2
d1=$(($(served 1) - c1)) d2=$(($(served 2) - c2))
note "with the canary: $d1 served by 1, $d2 by 2"
[ "$d2" -gt 0 ] && [ $((d2 * 100)) -ge $(((d1 + d2) * 15)) ] &&
	[ $((d2 * 100)) -le $(((d1 + d2) * 45)) ] || fail "canary share off: $d1 / $d2"
expect_rc 0 ctl "model unload m 2"
grep -q '^ok m unloaded (2)' "$T/out" || fail "unload canary: $(cat "$T/out")"
serving_v1

# A shadow: copies of the requests run on 2, their answers discarded.
expect_rc 0 ctl "model load m $B label shadow"
grep -q '^ok m 2 loaded, self-test passed (shadow of 1' "$T/out" || fail "shadow: $(cat "$T/out")"
s0=$(counter sched.shadow_done) c1=$(served 1) c2=$(served 2)
sleep 1.5
s1=$(counter sched.shadow_done) d1=$(($(served 1) - c1))
note "with the shadow: $d1 served by 1, $((s1 - s0)) shadow copies done on 2 (answers discarded)"
[ "$((s1 - s0))" -gt 0 ] || fail "no shadow copy ran"
[ "$(served 2)" = "$c2" ] || fail "the shadow sent DONEs: $(ctl 'model served'), $c2 before"
expect_rc 0 ctl "model unload m 2"
serving_v1

wait "$BPID" || { cat "$T/bench.out"; fail "velo-bench"; }
cat "$T/bench.out"
bench_none_lost "$T/bench.json" "during the refusals"
stop_velod
exit 0
