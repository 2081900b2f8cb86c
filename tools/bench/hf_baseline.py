#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""hf_baseline.py — the PyTorch baseline velo-bench-gpu is compared with
(PERFORMANCE.md: a speed is a ratio to something measured in the same run).

HF transformers LlamaForCausalLM with Llama-3.1-8B's shapes and random BF16
weights, built on the GPU from a LlamaConfig (no download, no internet on
the GPU machine): eager PyTorch, SDPA attention, no torch.compile (the
auto-compile of static-cache generation is switched off: this is where a
PyTorch user starts, and compile time would not fit a device call).

Figures (each the median of --reps runs after one warm-up; device work is
synchronised before every host-clock read):
  ttft           model forward over a P-token prompt (one sequence, a fresh
                 cache) + argmax of the last position's logits = the first
                 token, P in --ttft; also generate(max_new_tokens=1)
  decode b=1     ms/token = (generate(N + 1 new) - generate(1 new)) / N,
                 with cache_implementation="static" and with the default
                 (dynamic) cache of plain generate()
  streams        B prompts of --in tokens in one batch, generate(--out new,
                 min_new_tokens = --out): decode tok/s = B x (out - 1) /
                 (t(out) - t(1)); end to end = B x out / t(out)
  copy bandwidth a device-to-device copy of 1 GiB through torch (bytes read
                 + written), the same ceiling velo-bench-gpu measures
Writes --json FILE; prints a short table.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time


def parse_list(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--layers", type=int, default=32,
                    help="decoder layers (default 32, Llama-3.1-8B)")
    ap.add_argument("--decode", type=int, default=32,
                    help="new tokens timed in the batch-1 decode (default 32)")
    ap.add_argument("--ttft", default="128,512,2048")
    ap.add_argument("--streams", default="1,8,32,64,128")
    ap.add_argument("--in-tokens", type=int, default=128)
    ap.add_argument("--out-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--time-budget", type=float, default=0,
                    help="skip phases that would start after S seconds")
    ap.add_argument("--commit", default=os.environ.get("VELO_COMMIT", "unknown"))
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()

    t_start = time.perf_counter()
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    dev = torch.device(a.device)
    on_gpu = dev.type == "cuda"
    res = {
        "bench": "hf_baseline", "commit": a.commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "card": torch.cuda.get_device_name(dev) if on_gpu else platform.processor(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(),
        "settings": {"layers": a.layers, "rope": "theta 500000, no llama3 scaling (speed only)", "dtype": "bf16", "attn": "sdpa",
                     "compile": False, "decode_tokens": a.decode,
                     "in_tokens": a.in_tokens, "out_tokens": a.out_tokens,
                     "reps": a.reps,
                     "timing": "torch.cuda.synchronize() before host clocks"},
        "errors": [], "skipped": [],
    }

    def sync():
        if on_gpu:
            torch.cuda.synchronize(dev)

    def budget_ok(what):
        if a.time_budget > 0 and time.perf_counter() - t_start > a.time_budget:
            res["skipped"].append(what)
            return False
        return True

    def timed(fn, reps, warm=True):
        if warm:
            fn()  # warm-up
        ts = []
        for _ in range(reps):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return ts

    def summary(ts, scale=1e3):
        v = sorted(x * scale for x in ts)
        return {"median": statistics.median(v), "min": v[0], "max": v[-1], "n": len(v)}

    # copy bandwidth (bytes read + written), events
    if on_gpu:
        n = 1 << 30
        x = torch.empty(n, dtype=torch.uint8, device=dev).random_(0, 255)
        y = torch.empty_like(x)
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        bw = []
        for r in range(11):
            e0.record()
            y.copy_(x)
            e1.record()
            e1.synchronize()
            if r:
                bw.append(2 * n / (e0.elapsed_time(e1) * 1e-3))
        res["copy_bw_gbs"] = statistics.median(bw) * 1e-9
        del x, y

    # the model: Llama-3.1-8B shapes, random BF16 weights made on the device
    def build():
        cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                          num_hidden_layers=a.layers, num_attention_heads=32,
                          num_key_value_heads=8, head_dim=128,
                          max_position_embeddings=131072, rms_norm_eps=1e-5,
                          rope_theta=500000.0, tie_word_embeddings=False,
                          bos_token_id=128000, eos_token_id=128001, pad_token_id=0)
        cfg._attn_implementation = "sdpa"
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(dev):
                m = LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(torch.float32)
        m = m.to(dtype=torch.bfloat16).eval()
        gc = m.generation_config
        gc.disable_compile = True           # no auto torch.compile for static caches
        gc.pad_token_id = 0
        gc.eos_token_id = None              # run every requested token
        gc.do_sample = False
        for k in ("temperature", "top_p", "top_k"):
            if hasattr(gc, k):
                setattr(gc, k, None)
        return cfg, m

    t0 = time.perf_counter()
    try:
        cfg, model = build()
    except Exception as e:  # keep what was measured (the copy bandwidth)
        res["errors"].append(f"model build: {e!r}")
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"ERROR: model build: {e!r}; wrote {a.json}")
        return 1
    sync()
    res["build_s"] = time.perf_counter() - t0
    res["params"] = sum(p.numel() for p in model.parameters())
    res["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    gen = torch.Generator(device="cpu").manual_seed(1)

    def prompt(b, p):
        return torch.randint(1, cfg.vocab_size, (b, p), generator=gen).to(dev)

    def generate(ids, new, cache):
        kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new,
                  min_new_tokens=new, do_sample=False)
        if cache:
            kw["cache_implementation"] = cache
        out = model.generate(ids, **kw)
        assert out.shape[1] == ids.shape[1] + new, out.shape
        return out

    # TTFT
    res["ttft"] = []
    for p in parse_list(a.ttft):
        if not budget_ok(f"ttft {p}"):
            continue
        ids = prompt(1, p)

        def fwd():
            try:
                out = model(ids, use_cache=True, logits_to_keep=1)
            except TypeError:
                out = model(ids, use_cache=True)
            return int(out.logits[0, -1].argmax())
        try:
            r = {"prompt": p, "forward_ms": summary(timed(fwd, a.reps))}
            r["generate1_ms"] = summary(timed(lambda: generate(ids, 1, None), a.reps))
            res["ttft"].append(r)
        except Exception as e:  # record and go on: one failure keeps the rest
            res["errors"].append(f"ttft {p}: {e!r}")
        print(f"ttft {p}: {res['ttft'][-1] if res['ttft'] else None}", file=sys.stderr)

    # batch-1 decode, static and dynamic cache
    res["decode_b1"] = {}
    ids = prompt(1, 128)
    for cache, key in (("static", "static"), (None, "dynamic")):
        if not budget_ok(f"decode b1 {key}"):
            continue
        try:
            # each with its own warm-up: a static cache of a new length is
            # allocated (and first used) by the first call of that length
            # (2026-11-27, H200: without it the 2-run median of
            # generate(33) gave 52 ms/token against 27 ms warmed)
            t1 = statistics.median(timed(lambda: generate(ids, 1, cache), a.reps))
            tn = statistics.median(timed(lambda: generate(ids, a.decode + 1, cache), a.reps))
            ms = (tn - t1) / a.decode * 1e3
            res["decode_b1"][key] = {"ms_per_token": ms, "tok_s": 1e3 / ms,
                                     "generate_1_s": t1, "generate_n_s": tn,
                                     "prompt": 128, "new_tokens": a.decode}
            print(f"decode b1 {key}: {ms:.2f} ms/token", file=sys.stderr)
        except Exception as e:
            res["errors"].append(f"decode b1 {key}: {e!r}")

    # concurrent streams: static cache when it works, else dynamic
    res["streams"] = []
    for b in parse_list(a.streams):
        if not budget_ok(f"streams {b}"):
            continue
        ids = prompt(b, a.in_tokens)
        for cache in ("static", None):
            try:
                reps = 1 if b > 8 else 2
                t1 = statistics.median(timed(lambda: generate(ids, 1, cache), reps))
                tn = statistics.median(timed(lambda: generate(ids, a.out_tokens, cache), reps))
                step = (tn - t1) / max(a.out_tokens - 1, 1)
                res["streams"].append({"n": b, "cache": cache or "dynamic",
                                       "decode_tok_s": b / step, "step_ms": step * 1e3,
                                       "prefill_s": t1, "e2e_tok_s": b * a.out_tokens / tn})
                print(f"streams {b} ({cache or 'dynamic'}): {b / step:.1f} tok/s",
                      file=sys.stderr)
                break
            except Exception as e:
                res["errors"].append(f"streams {b} {cache or 'dynamic'}: {e!r}")
        if on_gpu:
            torch.cuda.empty_cache()

    res["total_s"] = time.perf_counter() - t_start
    with open(a.json, "w") as f:
        json.dump(res, f, indent=2)

    print(f"HF transformers {res['transformers']}, torch {res['torch']}, {res['card']}, "
          f"BF16 eager, {res['params'] / 1e9:.2f} B params, build {res['build_s']:.1f} s")
    if "copy_bw_gbs" in res:
        print(f"copy bandwidth (torch, 1 GiB d2d): {res['copy_bw_gbs']:.0f} GB/s")
    for k, v in res["decode_b1"].items():
        print(f"decode b=1 ({k} cache): {v['ms_per_token']:.2f} ms/token, "
              f"{v['tok_s']:.1f} tok/s")
    for r in res["ttft"]:
        print(f"TTFT {r['prompt']:5d}: forward {r['forward_ms']['median']:.2f} ms, "
              f"generate(1) {r['generate1_ms']['median']:.2f} ms")
    for r in res["streams"]:
        print(f"streams {r['n']:4d} ({r['cache']}): decode {r['decode_tok_s']:.1f} tok/s, "
              f"step {r['step_ms']:.2f} ms, e2e {r['e2e_tok_s']:.1f} tok/s")
    for e in res["errors"]:
        print("ERROR:", e)
    if res["skipped"]:
        print("SKIPPED (time budget):", ", ".join(res["skipped"]))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
