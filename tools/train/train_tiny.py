#!/usr/bin/env python3
"""Train velo's bundled default model: a small Llama-architecture model on the
public-domain fortune cookie databases (Debian's `fortunes`/`fortunes-min`).

It runs where torch, transformers and tokenizers exist (the lent GPU machine):

    tools/fixtures/make_corpus.sh .corpus          # here: builds the corpus
    run(command="python3 tools/train/train_tiny.py --corpus .corpus --out $OUT/tiny",
        carry=[".corpus"])                       # there

and writes a Hugging Face model directory (config.json, model.safetensors in
BF16, tokenizer.json, tokenizer_config.json, generation_config.json) plus
train_log.json (settings, losses, samples, versions) that velo-convert turns
into images/models/ (see docs/bundled-model.md).

Everything is seeded; the corpus order is shuffled with the seed.
"""
import argparse, json, math, os, random, sys, time


def read_corpus(path):
    docs = []
    for root, _, files in os.walk(path):
        for f in sorted(files):
            if f.endswith((".dat", ".u8")):
                continue
            with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            for d in text.split("\n%\n"):
                d = d.strip("\n%")
                if 8 <= len(d) <= 2000:
                    docs.append(d)
    return docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--max-steps", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()

    import torch
    import transformers
    import tokenizers
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    random.seed(a.seed)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    docs = read_corpus(a.corpus)
    random.shuffle(docs)
    n_val = max(50, len(docs) // 100)
    val_docs, train_docs = docs[:n_val], docs[n_val:]
    print(f"corpus: {len(docs)} fortunes, {sum(map(len, docs))/1e6:.2f} MB", flush=True)

    # Byte-level BPE with the Llama-3 split pattern: the C tokenizer's main path.
    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=a.vocab, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(train_docs, trainer)
    bos, eos = tok.token_to_id(specials[0]), tok.token_to_id(specials[1])
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[(specials[0], bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[0],
                                   eos_token=specials[1])
    fast.save_pretrained(a.out)

    def encode(d):
        return [bos] + tok.encode(d, add_special_tokens=False).ids + [eos]

    train_ids = [t for d in train_docs for t in encode(d)]
    val_ids = [t for d in val_docs for t in encode(d)]
    print(f"tokens: train {len(train_ids)}, val {len(val_ids)}", flush=True)

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=a.hidden,
                      intermediate_size=a.ffn, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=a.ctx * 2, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=True,
                      bos_token_id=bos, eos_token_id=eos, initializer_range=0.02)
    model = LlamaForCausalLM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params/1e6:.2f} M", flush=True)
    data = torch.tensor(train_ids, dtype=torch.long, device=dev)
    vdata = torch.tensor(val_ids, dtype=torch.long, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator(device="cpu").manual_seed(a.seed)

    def batch(src, n):
        ix = torch.randint(0, src.numel() - a.ctx - 1, (n,), generator=g)
        return torch.stack([src[i:i + a.ctx] for i in ix.tolist()]), None

    @torch.no_grad()
    def val_loss():
        model.eval()
        ls = []
        for _ in range(10):
            x, y = batch(vdata, a.batch)
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                ls.append(model(input_ids=x, labels=x).loss.item())
        model.train()
        return sum(ls) / len(ls)

    log = {"losses": []}
    t0 = time.time()
    warm = 200
    step = 0
    while step < a.max_steps and time.time() - t0 < a.seconds:
        frac = min(1.0, (time.time() - t0) / a.seconds)
        lr = a.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for pg in opt.param_groups:
            pg["lr"] = lr
        x, y = batch(data, a.batch)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            loss = model(input_ids=x, labels=x).loss  # HF shifts labels itself
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 250 == 0:
            vl = val_loss()
            log["losses"].append({"step": step, "t": round(time.time() - t0, 1),
                                  "train": round(loss.item(), 4), "val": round(vl, 4)})
            print(f"step {step} t {time.time()-t0:.0f}s train {loss.item():.3f} val {vl:.3f}", flush=True)
        step += 1
    vl = val_loss()
    log["losses"].append({"step": step, "t": round(time.time() - t0, 1), "val": round(vl, 4)})
    model.eval()
    samples = []
    for p in ["The", "A wise man", "Love is", "You will", "Computers"]:
        ids = torch.tensor([encode(p)[:-1]], device=dev)
        out = model.generate(ids, max_new_tokens=48, do_sample=False)
        samples.append({"prompt": p, "greedy": tok.decode(out[0].tolist()[1:])})
        print("sample:", repr(samples[-1]["greedy"]), flush=True)
    model = model.to(torch.bfloat16).cpu()
    model.save_pretrained(a.out, safe_serialization=True)
    model.generation_config.save_pretrained(a.out)
    log.update({"steps": step, "seconds": round(time.time() - t0, 1), "params": n_params,
                "settings": vars(a), "samples": samples, "corpus_fortunes": len(docs),
                "train_tokens": len(train_ids), "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "tokenizers": tokenizers.__version__}})
    with open(os.path.join(a.out, "train_log.json"), "w") as fh:
        json.dump(log, fh, indent=1)


if __name__ == "__main__":
    main()
