// Expected tokens.json for the hand-made tokenizers, from tokenizers.js
// (npm @huggingface/tokenizers), same format as tests/fixtures/models/*/tokens.json.
//   cd /tmp && npm install @huggingface/tokenizers
//   NODE_PATH=/tmp/node_modules node ref.mjs   (in this directory)
import fs from "fs";
import { createRequire } from "module";
const require = createRequire(process.env.NODE_PATH + "/");
const { Tokenizer } = require("@huggingface/tokenizers");
const texts = JSON.parse(fs.readFileSync("cases.json", "utf8")).texts;
for (const d of ["bl", "sp", "sp2"]) {
  const tj = JSON.parse(fs.readFileSync(d + "/tokenizer.json", "utf8"));
  const tc = JSON.parse(fs.readFileSync(d + "/tokenizer_config.json", "utf8"));
  const tok = new Tokenizer(tj, tc);
  const cases = texts.map((text) => {
    const ids = tok.encode(text, { add_special_tokens: false }).ids;
    const ids_special = tok.encode(text, { add_special_tokens: true }).ids;
    let decoded = ids.length ? tok.decode(ids) : "";
    if (d === "sp2") {
      // tokenizers.js drops only the leading "▁" of the first token; the
      // Rust Metaspace decoder (decoders/metaspace.rs, decode_chain) drops
      // every "▁" of token 0 when prepend_scheme != never.  Follow Rust.
      const toks = ids.map((id) => tok.model.vocab_r?.get?.(id) ?? tj.added_tokens.find((a) => a.id === id)?.content ?? Object.keys(tj.model.vocab).find((k) => tj.model.vocab[k] === id));
      decoded = toks.map((t, i) => (i === 0 ? t.replaceAll("\u2581", "") : t.replaceAll("\u2581", " "))).join("");
    }
    return { text, ids, ids_special, decoded };
  });
  fs.writeFileSync(d + "/tokens.json", JSON.stringify({ reference: "tokenizers.js 0.2.0", cases }, null, 1));
}
