#!/usr/bin/env python3
"""Writes the small hand-made tokenizers used by test_tokenizer.c and
fuzz_tokenizer.c (run once; the outputs are committed):
  bl/   byte-level BPE, Llama-3 split regex, ignore_merges, special tokens
  sp/   SentencePiece-style BPE, legacy normalizer (Prepend+Replace),
        byte fallback, fuse_unk, Replace/ByteFallback/Fuse/Strip decoder
  sp2/  the same model with a Metaspace pre-tokenizer (prepend_scheme
        first) and a Metaspace decoder, NFC normalizer
Expected ids come from ref.mjs (tokenizers.js) and are cross-checked
against Hugging Face's Rust tokenizers through the real fixtures."""
import json, os

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}

B2U = bytes_to_unicode()
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

def add_merges(vocab, merges, pairs):
    for a, b in pairs:
        assert a in vocab and b in vocab, (a, b)
        merges.append([a, b])
        if a + b not in vocab:
            vocab[a + b] = len(vocab)

def write(d, tok, cfg):
    os.makedirs(d, exist_ok=True)
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"), ensure_ascii=False, indent=1)
    json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"), ensure_ascii=False, indent=1)

def added(i, content, special=True, lstrip=False, rstrip=False, normalized=None, single_word=False):
    return {"id": i, "content": content, "single_word": single_word, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": (not special) if normalized is None else normalized,
            "special": special}

# ---- byte level ------------------------------------------------------
G = B2U[ord(" ")]
C = B2U[ord("\n")]
vocab = {B2U[b]: b for b in range(256)}
merges = []
add_merges(vocab, merges, [
    (G, "t"), ("h", "e"), (G + "t", "he"), ("i", "n"), (G, "a"), ("e", "r"), ("o", "n"),
    (G, "s"), ("r", "e"), ("a", "t"), (G, "w"), ("o", "r"), ("e", "n"), (G, "o"), ("i", "s"),
    ("l", "l"), ("in", "g"), (G, "b"), ("i", "t"), ("e", "d"), (G + "w", "or"), ("l", "d"),
    (G + "wor", "ld"), ("H", "e"), ("He", "ll"), ("Hell", "o"), (G, "i"), (G + "i", "s"),
    ("'", "s"), ("'", "m"), (G, G), (G + G, G + G), (C, C), ("1", "2"), ("12", "3"),
    ("ä", "ö"), (B2U[0xe4], B2U[0xbd]), ("t", "he"), ("T", "he"), (G + "a", "n"),
    (G + "an", "d"), (G + "o", "f"), (G + "t", "o"), ("o", "u"), (G, "y"), (G + "y", "ou"),
])
n = len(vocab)
tok = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [added(n, "<|begin_of_text|>"), added(n + 1, "<|eot_id|>"),
                     added(n + 2, "<mask>", lstrip=True),
                     added(n + 3, " hello world", special=False)],
    "normalizer": None,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
    "post_processor": {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                  {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [n], "tokens": ["<|begin_of_text|>"]}}}]},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
              "ignore_merges": True, "vocab": vocab, "merges": merges},
}
write("bl", tok, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                  "clean_up_tokenization_spaces": True,
                  "chat_template": "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>{% endfor %}",
                  "tokenizer_class": "PreTrainedTokenizerFast"})

# ---- SentencePiece style ----------------------------------------------
S = "\u2581"
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    vocab["<0x%02X>" % b] = len(vocab)
for ch in [S] + list("etaoinshrdlucmwfgypbvkTHIWA,.!?'") + ["é", "ö", "你"]:
    vocab[ch] = len(vocab)
merges = []
add_merges(vocab, merges, [
    (S, "t"), ("h", "e"), (S + "t", "he"), ("i", "n"), (S, "a"), ("e", "r"), ("o", "n"),
    (S, "s"), ("r", "e"), ("a", "t"), (S, "w"), ("o", "r"), ("e", "n"), (S, "o"), ("i", "s"),
    ("l", "l"), ("in", "g"), (S, "b"), ("i", "t"), ("e", "d"), (S + "w", "or"), ("l", "d"),
    (S + "wor", "ld"), ("H", "e"), ("He", "ll"), ("Hell", "o"), (S, "H"), ("e", "ll"), ("ell", "o"), (S + "H", "ello"),
    (S, S), (S + S, S + S), ("é", "t"), (S, "é"), ("'", "s"), (S, "I"), ("t", "he"), (S, "T"),
    (S + "T", "he"), (S + "a", "n"), (S + "an", "d"), (S + "o", "f"), (S + "t", "o"),
])
model = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
         "ignore_merges": False, "vocab": vocab, "merges": [a + " " + b for a, b in merges]}
specials = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")]
tmpl = {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
tok = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials,
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": S}, {"type": "Replace", "pattern": {"String": " "}, "content": S}]},
    "pre_tokenizer": None,
    "post_processor": tmpl,
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": S}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": model,
}
write("sp", tok, {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                  "eos_token": "</s>", "unk_token": "<unk>", "clean_up_tokenization_spaces": False,
                  "legacy": True, "tokenizer_class": "LlamaTokenizer"})

tok2 = dict(tok)
tok2["added_tokens"] = specials + [added(len(vocab), "<|im_end|>", rstrip=True)]
tok2["normalizer"] = {"type": "NFC"}
tok2["pre_tokenizer"] = {"type": "Metaspace", "replacement": S, "prepend_scheme": "first", "split": False}
tok2["decoder"] = {"type": "Metaspace", "replacement": S, "prepend_scheme": "first", "split": False}
write("sp2", tok2, {"bos_token": "<s>", "eos_token": "</s>", "clean_up_tokenization_spaces": False})
