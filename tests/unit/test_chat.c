// SPDX-License-Identifier: MIT
/*
 * test_chat.c — chat templates (engine/core/chat.c) against transformers:
 * tests/fixtures/models/<name>/logits.json case 2 is the conversation
 * [{"role": "user", "content": "Hi there!"}] rendered by
 * apply_chat_template(add_generation_prompt=True) with that fixture's
 * template, and its ids as the fixture tokenizer encodes that text without
 * added specials.  Our render encoded by our tokenizer must give the same
 * ids, and where the case text is the render itself (llama3, qwen2), the
 * text must match byte for byte.  Then the template rules (system messages, Llama 2's
 * alternation, buffer bounds) on hand-made conversations.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../engine/core/chat.h"
#include "../../engine/core/tokenizer.h"
#include "testutil.h"

/* A special token's text as a C string (NULL: none). */
static const char *piece(const struct eng_tokenizer *tok, uint32_t id,
			 char buf[64])
{
	size_t len = 0;
	const char *p = id != ENG_TOK_NONE ? eng_tok_token(tok, id, &len) : NULL;

	if (!p || len >= 64)
		return NULL;
	memcpy(buf, p, len);
	buf[len] = 0;
	return buf;
}

static void check_fixture(const char *name, enum eng_chat_template tpl,
			  const char *default_system, bool text_is_render)
{
	const char *src = velo_test_srctree();
	char dir[PATH_MAX + 64], path[PATH_MAX + 128], text[1024], err[128];
	struct eng_chat_msg msg = { ENG_CHAT_USER, "Hi there!", 9 };
	struct eng_chat_tokens tk = { .default_system = default_system };
	struct eng_tokenizer *tok;
	json_error_t je;
	json_t *root, *c, *ids;
	uint32_t got[256];
	size_t n = 0, nt = 0;
	uint32_t bos, eos;
	char bos_s[64], eos_s[64];

	assert_non_null(src);
	snprintf(dir, sizeof(dir), "%s/tests/fixtures/models/%s", src, name);
	tok = velo_test_tok_load_dir(dir, 0);
	assert_non_null(tok);
	bos = eng_tok_bos_id(tok);
	eos = eng_tok_eos_id(tok);
	tk.bos = piece(tok, bos, bos_s);
	tk.eos = piece(tok, eos, eos_s);

	snprintf(path, sizeof(path), "%s/logits.json", dir);
	root = json_load_file(path, 0, &je);
	assert_non_null(root);
	c = json_array_get(json_object_get(root, "cases"), 2);
	assert_non_null(c);
	assert_int_equal(eng_chat_render(tpl, &tk, &msg, 1, text, sizeof(text), &n,
					 err, sizeof(err)), 0);
	if (text_is_render &&
	    strcmp(text, json_string_value(json_object_get(c, "text"))))
		fail_msg("%s: rendered '%s', transformers '%s'", name, text,
			 json_string_value(json_object_get(c, "text")));
	assert_int_equal(n, strlen(text));
	assert_int_equal(eng_tok_encode(tok, text, n, false, got, 256, &nt), 0);
	ids = json_object_get(c, "ids");
	assert_int_equal(nt, json_array_size(ids));
	for (size_t i = 0; i < nt; i++)
		assert_int_equal(got[i], json_integer_value(json_array_get(ids, i)));
	json_decref(root);
	eng_tok_free(tok);
}

static void test_fixture_llama3(void **state)
{
	(void)state;
	check_fixture("llama3", ENG_CHAT_LLAMA3, NULL, true);
}

static void test_fixture_llama2(void **state)
{
	(void)state;
	/* the case text of this fixture is the ids decoded again (the
	 * legacy SentencePiece decode adds a space after <s>), so only the
	 * ids say whether the render was right */
	check_fixture("spm", ENG_CHAT_LLAMA2, NULL, false);
}

static void test_fixture_chatml(void **state)
{
	(void)state;
	check_fixture("qwen2", ENG_CHAT_CHATML, "You are a helpful assistant.", true);
}

static const struct eng_chat_tokens TK = { "<s>", "</s>", NULL };

static void expect(enum eng_chat_template tpl, const struct eng_chat_msg *m,
		   unsigned n, const char *want)
{
	char out[512];
	size_t len = 0;

	assert_int_equal(eng_chat_render(tpl, &TK, m, n, out, sizeof(out), &len,
					 NULL, 0), 0);
	assert_string_equal(out, want);
	assert_int_equal(len, strlen(want));
}

static void test_templates(void **state)
{
	const struct eng_chat_msg conv[] = {
		{ ENG_CHAT_SYSTEM, "Be brief.", 9 },
		{ ENG_CHAT_USER, "  Hi\n", 5 },
		{ ENG_CHAT_ASSISTANT, "Hello. ", 7 },
		{ ENG_CHAT_USER, "Why?", 4 },
	};
	const struct eng_chat_msg blank[] = {
		{ ENG_CHAT_SYSTEM, "S", 1 }, { ENG_CHAT_USER, " \n", 2 },
	};

	(void)state;
	expect(ENG_CHAT_LLAMA3, conv, 4,
	       "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
	       "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
	       "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
	       "<|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|>"
	       "<|start_header_id|>assistant<|end_header_id|>\n\n");
	expect(ENG_CHAT_CHATML, conv, 4,
	       "<|im_start|>system\nBe brief.<|im_end|>\n"
	       "<|im_start|>user\n  Hi\n<|im_end|>\n"
	       "<|im_start|>assistant\nHello. <|im_end|>\n"
	       "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n");
	/* the system text joins the first user message, which keeps its
	 * leading spaces (the strip is of the joined text) */
	expect(ENG_CHAT_LLAMA2, conv, 4,
	       "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n  Hi [/INST] Hello. </s>"
	       "<s>[INST] Why? [/INST]");
	/* a blank user message: the strip reaches back into the system
	 * block's trailing newlines */
	expect(ENG_CHAT_LLAMA2, blank, 2, "<s>[INST] <<SYS>>\nS\n<</SYS>> [/INST]");
	expect(ENG_CHAT_LLAMA2, conv + 1, 3,
	       "<s>[INST] Hi [/INST] Hello. </s><s>[INST] Why? [/INST]");
	expect(ENG_CHAT_ZEPHYR, conv, 2,
	       "<|system|>\nBe brief.</s>\n<|user|>\n  Hi\n</s>\n<|assistant|>\n");
}

static void test_rejects(void **state)
{
	const struct eng_chat_msg two_users[] = {
		{ ENG_CHAT_USER, "a", 1 }, { ENG_CHAT_USER, "b", 1 },
	};
	const struct eng_chat_msg ends_assistant[] = {
		{ ENG_CHAT_USER, "a", 1 }, { ENG_CHAT_ASSISTANT, "b", 1 },
	};
	const struct eng_chat_msg bad_role[] = { { (enum eng_chat_role)7, "a", 1 } };
	const struct eng_chat_msg only_sys[] = { { ENG_CHAT_SYSTEM, "a", 1 } };
	const struct eng_chat_msg hi[] = { { ENG_CHAT_USER, "Hello there", 11 } };
	char out[64], err[128];
	size_t n;

	(void)state;
	err[0] = 0;
	assert_int_equal(eng_chat_render(ENG_CHAT_LLAMA2, &TK, two_users, 2, out,
					 sizeof(out), &n, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "alternate"));
	assert_int_equal(eng_chat_render(ENG_CHAT_LLAMA2, &TK, ends_assistant, 2,
					 out, sizeof(out), &n, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(eng_chat_render(ENG_CHAT_LLAMA2, &TK, only_sys, 1, out,
					 sizeof(out), &n, err, sizeof(err)), -EINVAL);
	assert_int_equal(eng_chat_render(ENG_CHAT_LLAMA3, &TK, bad_role, 1, out,
					 sizeof(out), &n, err, sizeof(err)), -EINVAL);
	assert_int_equal(eng_chat_render(ENG_CHAT_LLAMA3, &TK, hi, 0, out,
					 sizeof(out), &n, err, sizeof(err)), -EINVAL);
	assert_int_equal(eng_chat_render(ENG_CHAT_NONE, &TK, hi, 1, out,
					 sizeof(out), &n, err, sizeof(err)), -EOPNOTSUPP);
	/* every buffer size short of the whole text fails cleanly and never
	 * writes past it */
	for (size_t cap = 1; cap <= 64; cap++) {
		char buf[80];
		int rc;

		memset(buf, 'Z', sizeof(buf));
		rc = eng_chat_render(ENG_CHAT_LLAMA3, &TK, hi, 1, buf, cap, &n,
				     err, sizeof(err));
		for (size_t i = cap; i < sizeof(buf); i++)
			assert_int_equal(buf[i], 'Z');
		if (!rc) {
			assert_true(n < cap);
			assert_int_equal(buf[n], 0);
		} else {
			assert_int_equal(rc, -ENOSPC);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixture_llama3),
		cmocka_unit_test(test_fixture_llama2),
		cmocka_unit_test(test_fixture_chatml),
		cmocka_unit_test(test_templates),
		cmocka_unit_test(test_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
