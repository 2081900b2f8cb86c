#!/bin/bash
# t-logprobs: logprobs end to end (velo-client -> velod -> scheduler -> CPU
# backend -> TOKENS logprobs group -> client JSON) on the bundled model.
# Greedy, prompt as ids, EOS ignored: every token event carries, per token,
# its own logprob and k alternatives; the chosen token is the top-1 and its
# logprob equals the top-1's (greedy on the raw logits); alternatives are in
# descending order, distinct, probabilities sum <= 1; the ids and text are
# those of the same request without logprobs (logprobs change nothing
# else); every stream mode (records with logprobs carry fewer tokens);
# logprobs 0 gives none; 9 is refused by the dataplane's decoder.
. "$(dirname "$0")/lib.sh"

start_velod --set 'models=[{"name": "fortune", "image": "'"$SRC"'/images/models/fortune-5m-fp8.velo", "kv_blocks": 64, "seqs_max": 4, "step_tokens_max": 64, "threads": 1}]'

N=24
gen() { client gen --json --ignore-eos --max-tokens $N --tokens 1,2,3 "$@"; }

# check FILE K: the token events of FILE against the rules above
check() {
	/usr/bin/python3 - "$1" "$2" "$N" <<'PY' || fail "logprobs check ($1, k=$2)"
import json, math, sys
path, k, n_want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ev = [json.loads(l) for l in open(path) if l.startswith("{")]
tok = [e for e in ev if e["event"] == "tokens"]
ids = [i for e in tok for i in e["ids"]]
assert len(ids) == n_want, f"{len(ids)} ids, want {n_want}"
nxt = 0
for e in tok:
    assert e["first_index"] == nxt, "first_index"
    nxt += len(e["ids"])
    if k == 0:
        assert "logprobs" not in e, "logprobs 0 gave logprobs"
        continue
    lps = e.get("logprobs")
    assert lps is not None and len(lps) == len(e["ids"]), f"event without a logprob per token: {e}"
    for tid, lp in zip(e["ids"], lps):
        top = lp["top_logprobs"]
        assert lp["id"] == tid, "logprob of another token"
        assert len(top) == k, f"{len(top)} alternatives, want {k}"
        v = [t["logprob"] for t in top]
        assert all(x <= 0.0 for x in v + [lp["logprob"]]), "logprob > 0"
        assert v == sorted(v, reverse=True), "alternatives not in order"
        assert len({t["id"] for t in top}) == k, "duplicate alternative"
        s = sum(math.exp(x) for x in v)
        assert s <= 1.0 + 1e-5, f"probabilities sum to {s}"
        assert top[0]["id"] == tid, f"greedy chose {tid}, top-1 is {top[0]['id']}"
        assert lp["logprob"] == v[0], "chosen logprob != top-1's"
print(f"ok k={k}: {len(ids)} tokens in {len(tok)} events")
PY
}

ids_of() { sed -n 's/.*"event": "tokens".*"ids": \[\([^]]*\)\].*/\1/p' "$1" | tr -d ' ' | grep . | paste -sd,; }

gen >"$T/ref.json" || fail "gen without logprobs"
check "$T/ref.json" 0
ref=$(ids_of "$T/ref.json")
gen --logprobs 0 >"$T/k0.json" || fail "gen --logprobs 0"
check "$T/k0.json" 0
for k in 1 5 8; do
	gen --logprobs $k >"$T/k$k.json" || fail "gen --logprobs $k"
	check "$T/k$k.json" $k
	[ "$(ids_of "$T/k$k.json")" = "$ref" ] || fail "logprobs $k changed the tokens"
done
# the same numbers whatever k (k = 1's list is k = 8's first entry)
/usr/bin/python3 - "$T/k1.json" "$T/k8.json" <<'PY' || fail "logprobs differ between k = 1 and k = 8"
import json, sys
def lps(p):
    return [lp for l in open(p) if '"tokens"' in l for lp in json.loads(l)["logprobs"]]
a, b = lps(sys.argv[1]), lps(sys.argv[2])
assert len(a) == len(b)
for x, y in zip(a, b):
    assert x["logprob"] == y["logprob"] and x["top_logprobs"][0] == y["top_logprobs"][0], (x, y)
print("ok k=1 and k=8 agree")
PY
# every stream mode: sentence and every-k chunks carry fewer tokens with
# logprobs (one record's worth), same ids
for m in "--stream k:8" "--stream sentence"; do
	# shellcheck disable=SC2086
	gen --logprobs 5 $m >"$T/m.json" || fail "gen $m"
	check "$T/m.json" 5
	[ "$(ids_of "$T/m.json")" = "$ref" ] || fail "$m changed the tokens"
	mx=$(/usr/bin/python3 -c 'import json,sys; print(max(len(json.loads(l)["ids"]) for l in open(sys.argv[1]) if "\"tokens\"" in l))' "$T/m.json")
	[ "$mx" -le 2 ] || fail "$m: $mx tokens in one TOKENS with 5 alternatives (a record holds 2)"
done
# k = 1 records hold 6 tokens
gen --logprobs 1 --stream k:32 >"$T/m1.json" || fail "gen every-k k=1"
check "$T/m1.json" 1
# text prompt, sampled (temperature): logprobs present, top list ordered
client gen --json --max-tokens 8 --temperature 0.8 --seed 7 --logprobs 3 "Once upon" >"$T/t.json" ||
	fail "gen text --logprobs 3"
grep -q '"top_logprobs"' "$T/t.json" || fail "no logprobs for a sampled text prompt"
n=$(counter sched.logprob_tokens)
[ "$n" -ge $((N * 6)) ] || fail "sched.logprob_tokens $n"
echo "ok counters: sched.logprob_tokens $n"
# 9: refused by the dataplane's decoder (bad_param), before the scheduler,
# and counted
bp0=$(counter dp.drop_bad_param)
expect_rc 4 client gen --max-tokens 1 --tokens 1,2 --logprobs 9
grep -q "bad_param" "$T/err" || fail "no reason for logprobs 9: $(cat "$T/err")"
bp1=$(counter dp.drop_bad_param)
[ "$bp1" -gt "$bp0" ] || fail "dp.drop_bad_param $bp0 -> $bp1 for logprobs 9"
echo "ok logprobs 9 refused and counted ($(head -c 80 "$T/err"))"
stop_velod
