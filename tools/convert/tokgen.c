// SPDX-License-Identifier: MIT
/*
 * tokgen.c — a small, complete byte-level BPE tokenizer for synthetic
 * images (velo-convert --random), in Hugging Face's tokenizer.json form so
 * that the tokenizer reads it through the same path as a real checkpoint's:
 * 256 byte tokens (GPT-2 byte-to-unicode alphabet), a few dozen English
 * merges, the Llama-3 or Qwen2 split regex, and the family's special tokens
 * at the shape's special_base.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <velo/compiler.h>

#include "convert.h"

/* Pre-tokenizer split patterns (the public Llama-3 and Qwen2 ones). */
static const char llama3_regex[] =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
	" ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char qwen2_regex[] =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
	" ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *const llama3_specials[] = {
	"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
	"<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
	"<|reserved_special_token_2|>", "<|start_header_id|>",
	"<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
};
static const char *const chatml_specials[] = {
	"<|endoftext|>", "<|im_start|>", "<|im_end|>",
};

static const char tpl_llama3[] =
	"{{ bos_token }}{% for message in messages %}"
	"{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
	" + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
	"{% if add_generation_prompt %}"
	"{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
static const char tpl_chatml[] =
	"{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n'"
	" + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
	"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
static const char tpl_llama2[] =
	"{{ bos_token }}{% for message in messages %}"
	"{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
	"{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";

/* Merges in raw text; each side is a byte or an earlier merge's result. */
static const char *const merges[][2] = {
	{ " ", "t" }, { "h", "e" }, { "i", "n" }, { " ", "a" }, { "e", "r" },
	{ "o", "n" }, { " t", "he" }, { "r", "e" }, { " ", "s" }, { "a", "t" },
	{ "e", "n" }, { " ", "w" }, { "o", "r" }, { "i", "t" }, { "i", "s" },
	{ "a", "n" }, { " ", "o" }, { "e", "s" }, { " ", "c" }, { "e", "d" },
	{ "in", "g" }, { " ", "b" }, { " ", "f" }, { "o", "u" }, { " ", "m" },
	{ " ", "p" }, { "a", "r" }, { " ", "d" }, { "a", "l" }, { "n", "d" },
	{ " a", "nd" }, { " t", "o" }, { " o", "f" }, { " ", "in" },
	{ " ", "is" }, { "l", "l" }, { "l", "e" }, { " ", "h" }, { "i", "on" },
	{ " ", "it" },
};

/* GPT-2 byte-to-unicode: printable bytes stand for themselves, the others
 * for U+0100 onwards, in byte order. */
static unsigned byte_cp(unsigned b)
{
	unsigned n = 0;

	if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)
		return b;
	for (unsigned x = 0; x < b; x++)
		if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174))
			n++;
	return 256 + n;
}

/* Byte-level form of raw text @s into @out (4 bytes per input byte max). */
static void to_bytelevel(const char *s, char *out)
{
	for (; *s; s++) {
		unsigned cp = byte_cp((unsigned char)*s);

		if (cp < 0x80) {
			*out++ = (char)cp;
		} else {
			*out++ = (char)(0xc0 | (cp >> 6));
			*out++ = (char)(0x80 | (cp & 0x3f));
		}
	}
	*out = 0;
}

static json_t *special_entry(unsigned id, const char *content)
{
	return json_pack("{s:I,s:s,s:b,s:b,s:b,s:b,s:b}", "id", (json_int_t)id,
			 "content", content, "single_word", 0, "lstrip", 0,
			 "rstrip", 0, "normalized", 0, "special", 1);
}

static json_t *bytelevel(bool prefix, bool trim, bool regex)
{
	return json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel",
			 "add_prefix_space", prefix, "trim_offsets", trim,
			 "use_regex", regex);
}

int tokgen(const struct shape *s, char **tok_json, size_t *tok_len,
	   char **cfg_json, size_t *cfg_len)
{
	const bool l3 = s->tok == TOK_LLAMA3;
	const char *const *sp = l3 ? llama3_specials : chatml_specials;
	const unsigned nsp = l3 ? ARRAY_SIZE(llama3_specials) : ARRAY_SIZE(chatml_specials);
	const unsigned nm = ARRAY_SIZE(merges);
	json_t *root = NULL, *tcfg = NULL, *vocab, *mlist, *added, *model, *atd;
	char *names[256 + ARRAY_SIZE(merges)];
	const char *tpl, *bos_s, *eos_s;
	char a[256], b[256], buf[64];
	int rc = -ENOMEM;

	if (s->special_base < 256 + nm || s->special_base + nsp > s->cfg.vocab_size)
		return -EINVAL;
	memset(names, 0, sizeof(names));
	vocab = json_object();
	mlist = json_array();
	added = json_array();
	atd = json_object();
	if (!vocab || !mlist || !added || !atd)
		goto out_parts;
	for (unsigned i = 0; i < 256; i++) {
		char raw[2] = { (char)i, 0 };

		names[i] = malloc(4);
		if (!names[i])
			goto out_parts;
		if (i == 0) {	/* to_bytelevel stops at NUL */
			snprintf(names[i], 4, "%c%c", (char)(0xc0 | (byte_cp(0) >> 6)),
				 (char)(0x80 | (byte_cp(0) & 0x3f)));
		} else {
			to_bytelevel(raw, names[i]);
		}
		json_object_set_new(vocab, names[i], json_integer(i));
	}
	for (unsigned i = 0; i < nm; i++) {
		char pair[520];

		to_bytelevel(merges[i][0], a);
		to_bytelevel(merges[i][1], b);
		if (!json_object_get(vocab, a) || !json_object_get(vocab, b)) {
			rc = -EINVAL;	/* the list above is wrong */
			goto out_parts;
		}
		snprintf(pair, sizeof(pair), "%s %s", a, b);
		json_array_append_new(mlist, json_string(pair));
		snprintf(pair, sizeof(pair), "%s%s", a, b);
		names[256 + i] = strdup(pair);
		if (!names[256 + i])
			goto out_parts;
		json_object_set_new(vocab, names[256 + i], json_integer(256 + i));
	}
	for (unsigned i = 0; i < nsp; i++) {
		json_array_append_new(added, special_entry(s->special_base + i, sp[i]));
		snprintf(buf, sizeof(buf), "%u", s->special_base + i);
		json_object_set_new(atd, buf,
				    json_pack("{s:s,s:b,s:b,s:b,s:b,s:b}",
					      "content", sp[i], "lstrip", 0,
					      "normalized", 0, "rstrip", 0,
					      "single_word", 0, "special", 1));
	}
	model = json_pack("{s:s,s:n,s:n,s:n,s:n,s:b,s:b,s:b,s:o,s:o}",
			  "type", "BPE", "dropout", "unk_token",
			  "continuing_subword_prefix", "end_of_word_suffix",
			  "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0,
			  "vocab", vocab, "merges", mlist);
	vocab = mlist = NULL;
	root = json_pack("{s:s,s:n,s:n,s:o}", "version", "1.0", "truncation",
			 "padding", "added_tokens", added);
	added = NULL;
	if (!model || !root)
		goto out_json;
	json_object_set_new(root, "normalizer",
			    l3 ? json_null() : json_pack("{s:s}", "type", "NFC"));
	json_object_set_new(root, "pre_tokenizer",
			    json_pack("{s:s,s:[{s:s,s:{s:s},s:s,s:b},o]}",
				      "type", "Sequence", "pretokenizers",
				      "type", "Split", "pattern", "Regex",
				      l3 ? llama3_regex : qwen2_regex,
				      "behavior", "Isolated", "invert", 0,
				      bytelevel(false, true, false)));
	if (l3) {
		json_object_set_new(root, "post_processor",
			json_pack("{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}],"
				  "s:[{s:{s:s,s:i}},{s:{s:s,s:i}},{s:{s:s,s:i}},{s:{s:s,s:i}}],"
				  "s:{s:{s:s,s:[I],s:[s]}}}",
				  "type", "TemplateProcessing",
				  "single", "SpecialToken", "id", sp[0], "type_id", 0,
				  "Sequence", "id", "A", "type_id", 0,
				  "pair", "SpecialToken", "id", sp[0], "type_id", 0,
				  "Sequence", "id", "A", "type_id", 0,
				  "SpecialToken", "id", sp[0], "type_id", 1,
				  "Sequence", "id", "B", "type_id", 1,
				  "special_tokens", sp[0], "id", sp[0], "ids",
				  (json_int_t)s->special_base, "tokens", sp[0]));
	} else {
		json_object_set_new(root, "post_processor", bytelevel(false, false, false));
	}
	json_object_set_new(root, "decoder", bytelevel(true, true, true));
	json_object_set_new(root, "model", model);
	model = NULL;

	switch (s->cfg.chat_template) {
	case ENG_CHAT_CHATML: tpl = tpl_chatml; break;
	case ENG_CHAT_LLAMA2: tpl = tpl_llama2; break;
	default: tpl = tpl_llama3; break;
	}
	bos_s = l3 ? sp[0] : NULL;
	eos_s = l3 ? sp[9] : sp[2];
	tcfg = json_pack("{s:b,s:b,s:o,s:s,s:o,s:s,s:b,s:I,s:s}",
			 "add_bos_token", l3, "add_eos_token", 0,
			 "added_tokens_decoder", atd,
			 "chat_template", tpl,
			 "bos_token", bos_s ? json_string(bos_s) : json_null(),
			 "eos_token", eos_s,
			 "clean_up_tokenization_spaces", 1,
			 "model_max_length", (json_int_t)s->cfg.max_seq,
			 "tokenizer_class", "PreTrainedTokenizerFast");
	atd = NULL;
	if (!tcfg)
		goto out_json;
	if (!l3)
		json_object_set_new(tcfg, "pad_token", json_string(sp[0]));
	*tok_json = json_dumps(root, JSON_COMPACT);
	*cfg_json = json_dumps(tcfg, JSON_INDENT(2));
	if (!*tok_json || !*cfg_json) {
		free(*tok_json);
		free(*cfg_json);
		goto out_json;
	}
	*tok_len = strlen(*tok_json);
	*cfg_len = strlen(*cfg_json);
	rc = 0;
out_json:
	json_decref(model);
	json_decref(root);
	json_decref(tcfg);
out_parts:
	json_decref(vocab);
	json_decref(mlist);
	json_decref(added);
	json_decref(atd);
	for (unsigned i = 0; i < ARRAY_SIZE(names); i++)
		free(names[i]);
	return rc;
}
