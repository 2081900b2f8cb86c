#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""report.py RESULTS_DIR — one table of make bench-gpu's results: velo's
figures per weight dtype (velo-<dtype>.json from velo-bench-gpu) beside the
PyTorch baseline (hf.json from tools/bench/hf_baseline.py), as ratios
(PERFORMANCE.md: a speed is a ratio to something measured in the same run).
Writes RESULTS_DIR/bench-gpu.json with everything and the ratios.
Standard library only."""
import glob
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"# {path}: {e}", file=sys.stderr)
        return None


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def ratio(a, b):
    return a / b if a and b else None


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = sys.argv[1]
    velo = {}
    for p in sorted(glob.glob(os.path.join(d, "velo-*.json"))):
        j = load(p)
        if j:
            velo[os.path.basename(p)[5:-5]] = j
    hf = load(os.path.join(d, "hf.json")) or {}
    out = {"velo": velo, "hf": hf, "ratios": {}}

    hf_b1 = (hf.get("decode_b1") or {}).get("static") or (hf.get("decode_b1") or {}).get("dynamic")
    hf_dyn = (hf.get("decode_b1") or {}).get("dynamic")
    hf_ttft = {r["prompt"]: r["forward_ms"]["median"] for r in hf.get("ttft", [])}
    hf_st = {r["n"]: r for r in hf.get("streams", [])}

    cols = list(velo)
    any_v = next(iter(velo.values()), {})
    card = any_v.get("card") or hf.get("card", "?")
    print(f"make bench-gpu: {card}; velo commit {any_v.get('commit', '?')}, "
          f"{any_v.get('date', hf.get('date', '?'))}")
    if hf:
        print(f"PyTorch baseline: HF transformers {hf.get('transformers')} / torch "
              f"{hf.get('torch')}, BF16 eager, random Llama-3.1-8B-shaped weights, "
              f"card {hf.get('card')}")
    for k, v in velo.items():
        bw = v.get("copy_bw", {})
        print(f"velo {k}: copy bandwidth {fmt(bw.get('median_gbs'))} GB/s ({bw.get('method')}); "
              f"{v['model']['weight_bytes'] / 1e9:.3f} GB weights read per token, KV "
              f"{v['model']['kv_dtype']}; kernels {v['model'].get('kernels')}")
    if hf.get("copy_bw_gbs"):
        print(f"torch copy bandwidth: {hf['copy_bw_gbs']:.1f} GB/s")
    print()

    rows = []

    def row(name, vals, hfv, better="higher", unit=""):
        rows.append((name, vals, hfv, better))

    # batch-1 decode
    row("decode b=1 ms/token", [v["decode_b1"]["ms"]["median"] if v["decode_b1"]["ms"]["n"] else None
                                for v in velo.values()],
        hf_b1 and hf_b1["ms_per_token"], "lower")
    row("decode b=1 tok/s", [v["decode_b1"]["tok_s"] or None for v in velo.values()],
        hf_b1 and hf_b1["tok_s"])
    row("  share of copy bw %", [100 * v["decode_b1"]["share_of_copy_bw"] or None
                                 for v in velo.values()], None)
    for p in sorted({t["prompt"] for v in velo.values() for t in v["ttft"]} | set(hf_ttft)):
        vals = []
        for v in velo.values():
            m = [t["ms"]["median"] for t in v["ttft"] if t["prompt"] == p]
            vals.append(m[0] if m else None)
        row(f"TTFT {p} ms", vals, hf_ttft.get(p), "lower")
    for n in sorted({s["n"] for v in velo.values() for s in v["streams"]} | set(hf_st)):
        vals, e2e = [], []
        for v in velo.values():
            m = [s for s in v["streams"] if s["n"] == n]
            vals.append(m[0]["decode_tok_s"] if m else None)
            e2e.append(m[0]["e2e_tok_s"] if m else None)
        h = hf_st.get(n)
        row(f"{n} streams decode tok/s", vals, h and h["decode_tok_s"])
        row(f"{n} streams e2e tok/s", e2e, h and h["e2e_tok_s"])
    row("cold load to 1st token s", [v["cold_load"]["total_s"] for v in velo.values()],
        None, "lower")

    w = 28
    head = f"{'':{w}}" + "".join(f"{'velo ' + c:>12}" for c in cols) + f"{'HF bf16':>12}" + \
        "".join(f"{c + ' vs HF':>12}" for c in cols)
    print(head)
    for name, vals, hfv, better in rows:
        line = f"{name:{w}}" + "".join(f"{fmt(x, '.2f'):>12}" for x in vals) + f"{fmt(hfv, '.2f'):>12}"
        rs = []
        for c, x in zip(cols, vals):
            r = ratio(hfv, x) if better == "lower" else ratio(x, hfv)
            rs.append(r)
            if r is not None:
                out["ratios"][f"{c}: {name.strip()}"] = r
        line += "".join(f"{fmt(r, '.2f') + 'x' if r else '-':>12}" for r in rs)
        print(line)
    print("(ratios: how many times faster velo is than HF transformers, same card, same run;"
          " HF decode b=1 with a static cache" +
          (f", {hf_dyn['ms_per_token']:.2f} ms/token with plain generate()" if hf_dyn else "") + ")")
    for k, v in velo.items():
        if v.get("skipped"):
            print(f"velo {k} SKIPPED: {v['skipped']}")
    for e in hf.get("errors", []):
        print(f"HF ERROR: {e}")
    if hf.get("skipped"):
        print(f"HF SKIPPED: {', '.join(hf['skipped'])}")
    with open(os.path.join(d, "bench-gpu.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {os.path.join(d, 'bench-gpu.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
