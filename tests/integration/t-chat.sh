#!/bin/bash
# t-chat: chat prompts and logit biases end to end (velo-client -> velod ->
# scheduler -> CPU backend).  Three fixture models converted here (llama3,
# Mistral/SentencePiece with the Llama 2 template, Qwen2 with ChatML); for
# each, the chat [{"user": "Hi there!"}] must generate exactly what the same
# prompt as transformers' apply_chat_template ids (the fixture's logits.json
# case 2) generates as --tokens: greedy decoding on the CPU backend is
# deterministic, so a render or encode that differs from HF in one id shows.
# Then logit_bias: -100 bans the greedy token, +100 forces another; bad
# biases and a chat to a model without a template are refused with reasons.
. "$(dirname "$0")/lib.sh"

[ -x "$BIN/velo-convert" ] || { echo "skip: velo-convert not built"; exit 0; }
models=
for f in llama3 spm qwen2; do
	"$BIN/velo-convert" -q --no-sync --dtype bf16 --name "fx-$f" \
		"$SRC/tests/fixtures/models/$f" -o "$T/$f.velo" >"$T/conv-$f.log" 2>&1 ||
		{ cat "$T/conv-$f.log"; fail "velo-convert $f"; }
	models="$models{\"name\": \"$f\", \"image\": \"$T/$f.velo\", \"kv_blocks\": 64, \"seqs_max\": 4, \"step_tokens_max\": 64, \"threads\": 1},"
done
models="$models{\"name\": \"fortune\", \"image\": \"$SRC/images/models/fortune-5m-fp8.velo\", \"kv_blocks\": 64, \"seqs_max\": 4, \"step_tokens_max\": 64, \"threads\": 1}"
start_velod --set "models=[$models]"

# ids MODEL ARGS...: the generated ids (greedy, 12 tokens, EOS ignored)
ids() {
	local m=$1
	shift
	client gen --json --ignore-eos --max-tokens 12 --model "$m" "$@" |
		sed -n 's/.*"event": "tokens".*"ids": \[\([^]]*\)\].*/\1/p' |
		tr -d ' ' | grep . | paste -sd,
}
# prompt_tokens MODEL ARGS...: usage.prompt_tokens of the DONE
prompt_tokens() {
	local m=$1
	shift
	client gen --json --ignore-eos --max-tokens 1 --model "$m" "$@" |
		sed -n 's/.*"event": "done".*"prompt_tokens": \([0-9]*\).*/\1/p'
}

for f in llama3 spm qwen2; do
	ref=$(/usr/bin/python3 -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['cases'][2]['ids'])))" \
		"$SRC/tests/fixtures/models/$f/logits.json") || fail "fixture $f"
	n_ref=$(echo "$ref" | tr ',' '\n' | wc -l)
	want=$(ids "$f" --tokens "$ref")
	got=$(ids "$f" --user "Hi there!")
	[ -n "$want" ] || fail "$f: no tokens for the reference ids"
	[ "$got" = "$want" ] || fail "$f: chat generated [$got], the HF ids [$want]"
	n=$(prompt_tokens "$f" --user "Hi there!")
	[ "$n" = "$n_ref" ] || fail "$f: chat prompt is $n tokens, transformers' $n_ref"
	echo "ok $f: chat prompt = apply_chat_template's $n_ref ids, same 12 tokens"
done
# a longer conversation renders and runs (system, user, assistant, user)
expect_rc 0 client gen --max-tokens 4 --model llama3 --system "Be brief." \
	--user "Hi" --assistant "Hello." --user "Why?"
# Llama 2 needs alternating roles: refused with the reason
expect_rc 4 client gen --max-tokens 4 --model spm --user a --user b
grep -q "alternate" "$T/err" || fail "no reason for the refused conversation: $(cat "$T/err")"
# a model without a chat template refuses a chat
expect_rc 4 client gen --max-tokens 4 --model fortune --user "Hi"
grep -q "no chat template" "$T/err" || fail "no reason: $(cat "$T/err")"

# logit_bias on the bundled model, greedy, prompt as ids
first() { ids fortune --tokens 1,2,3 "$@" | cut -d, -f1; }
t0=$(first)
[ -n "$t0" ] || fail "no first token"
t1=$(first --logit-bias "$t0:-100")
[ -n "$t1" ] && [ "$t1" != "$t0" ] || fail "bias -100 on $t0 did not ban it (got $t1)"
force=$(( (t0 + 7) % 2048 ))
t2=$(first --logit-bias "$force:100")
[ "$t2" = "$force" ] || fail "bias +100 on $force gave $t2"
echo "ok logit_bias: greedy $t0, banned -> $t1, forced $force -> $t2"
expect_rc 4 client gen --max-tokens 1 --model fortune --tokens 1,2 --logit-bias 999999:1
grep -q "beyond the vocabulary" "$T/err" || fail "no reason: $(cat "$T/err")"
# out of range: the dataplane's decoder refuses it (bad_param) before the
# scheduler sees it
expect_rc 4 client gen --max-tokens 1 --model fortune --tokens 1,2 --logit-bias 5:250
echo "ok refusals: roles, no template, bias id, bias range ($(head -c 80 "$T/err"))"
rej=$(counter sched.reject_invalid)
[ "$rej" -ge 3 ] || fail "sched.reject_invalid $rej, expected >= 3"
stop_velod
