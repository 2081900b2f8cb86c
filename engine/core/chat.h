/* SPDX-License-Identifier: MIT */
/*
 * chat.h — chat templates: a conversation (INFER with PROTO_INFER_CHAT) to
 * the prompt text the model was trained on, for the template families a
 * model image names (enum eng_chat_template, from the converter).
 *
 * The output is what Hugging Face's tokenizer.apply_chat_template(messages,
 * tokenize=False, add_generation_prompt=True) renders with the reference
 * templates of those families (tools/fixtures/make_fixtures.py holds them;
 * tests/unit/test_chat.c compares against the texts and token ids that
 * transformers produced for the fixtures).  The text is then encoded with
 * eng_tok_encode(add_special = false): the template already holds the BOS
 * and the special tokens, which the tokenizer matches as added tokens —
 * as transformers does, a special token's text inside a message is
 * matched too.
 *
 * Rendering is a copy of the messages with fixed strings between them: no
 * allocation, bounded by the output buffer.
 */
#ifndef VELO_ENG_CHAT_H
#define VELO_ENG_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

enum eng_chat_role {
	ENG_CHAT_SYSTEM = 0,	/* = PROTO_ROLE_* on the wire */
	ENG_CHAT_USER = 1,
	ENG_CHAT_ASSISTANT = 2,
};

struct eng_chat_msg {
	enum eng_chat_role role;
	const char *text;	/* UTF-8, not NUL-terminated */
	size_t len;
};

/* Strings the templates splice in (from the tokenizer: the BOS and EOS
 * tokens' text); NULL or "" when the model has none. */
struct eng_chat_tokens {
	const char *bos;
	const char *eos;
	/* ChatML: the system message used when the conversation has none
	 * (Qwen2's "You are a helpful assistant."); NULL: none. */
	const char *default_system;
};

/*
 * eng_chat_render() - the prompt text of @msgs under template @tpl, ending
 * with the generation prompt (the assistant's header).
 * @out, @cap: output buffer; NUL-terminated on success.
 * @n_out:     the length written, without the NUL.
 * @err:       a one-line reason on failure (may be NULL).
 * Return: 0; -EOPNOTSUPP (ENG_CHAT_NONE or unknown template: the model has
 * no chat format); -EINVAL (no messages, an unknown role, a conversation
 * the template refuses — Llama 2 needs user/assistant alternating after an
 * optional system message, and must end with the user); -ENOSPC (@cap too
 * small).
 */
int eng_chat_render(enum eng_chat_template tpl, const struct eng_chat_tokens *tk,
		    const struct eng_chat_msg *msgs, unsigned n, char *out,
		    size_t cap, size_t *n_out, char *err, size_t errlen);

/* Name of a template family ("llama3", "llama2", "chatml", "zephyr",
 * "none"). */
const char *eng_chat_template_name(enum eng_chat_template tpl);

#endif
