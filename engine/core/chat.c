// SPDX-License-Identifier: MIT
/*
 * chat.c — chat templates rendered in C (see chat.h).  Each family is the
 * reference Jinja template of tools/fixtures/make_fixtures.py written out
 * as appends; the comments quote what each piece renders.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "../../tools/lib/errbuf.h"
#include "chat.h"

struct out {
	char *p;
	size_t cap, n;
	bool full;
};

static void put(struct out *o, const char *s, size_t len)
{
	if (o->full || len >= o->cap - o->n) {	/* keep room for the NUL */
		o->full = true;
		return;
	}
	memcpy(o->p + o->n, s, len);
	o->n += len;
}

static void puts_(struct out *o, const char *s)
{
	if (s)
		put(o, s, strlen(s));
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
	       c == '\f';
}

/* Jinja's trim / Python's str.strip() on ASCII whitespace.  (Python also
 * strips Unicode spaces such as U+00A0 and U+3000; a message that starts or
 * ends with one renders with it kept here.) */
static void put_stripped(struct out *o, const char *s, size_t len)
{
	while (len && is_ws(*s)) {
		s++;
		len--;
	}
	while (len && is_ws(s[len - 1]))
		len--;
	put(o, s, len);
}

static const char *role_name(enum eng_chat_role r)
{
	switch (r) {
	case ENG_CHAT_SYSTEM: return "system";
	case ENG_CHAT_USER: return "user";
	case ENG_CHAT_ASSISTANT: return "assistant";
	}
	return NULL;
}

const char *eng_chat_template_name(enum eng_chat_template tpl)
{
	switch (tpl) {
	case ENG_CHAT_LLAMA3: return "llama3";
	case ENG_CHAT_LLAMA2: return "llama2";
	case ENG_CHAT_CHATML: return "chatml";
	case ENG_CHAT_ZEPHYR: return "zephyr";
	case ENG_CHAT_NONE: break;
	}
	return "none";
}

/* <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>
 * ... <|start_header_id|>assistant<|end_header_id|>\n\n */
static void llama3(struct out *o, const struct eng_chat_tokens *tk,
		   const struct eng_chat_msg *m, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (!i)
			puts_(o, tk->bos);
		puts_(o, "<|start_header_id|>");
		puts_(o, role_name(m[i].role));
		puts_(o, "<|end_header_id|>\n\n");
		put_stripped(o, m[i].text, m[i].len);
		puts_(o, "<|eot_id|>");
	}
	puts_(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* [<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n]
 * <|im_start|>user\nHi<|im_end|>\n ... <|im_start|>assistant\n */
static void chatml(struct out *o, const struct eng_chat_tokens *tk,
		   const struct eng_chat_msg *m, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (!i && m[i].role != ENG_CHAT_SYSTEM && tk->default_system) {
			puts_(o, "<|im_start|>system\n");
			puts_(o, tk->default_system);
			puts_(o, "<|im_end|>\n");
		}
		puts_(o, "<|im_start|>");
		puts_(o, role_name(m[i].role));
		puts_(o, "\n");
		put(o, m[i].text, m[i].len);
		puts_(o, "<|im_end|>\n");
	}
	puts_(o, "<|im_start|>assistant\n");
}

/* <s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nHi [/INST] answer </s><s>[INST] ...
 * [/INST] — roles alternate user/assistant after an optional system. */
static int llama2(struct out *o, const struct eng_chat_tokens *tk,
		  const struct eng_chat_msg *m, unsigned n, char *err,
		  size_t errlen)
{
	const struct eng_chat_msg *sys = NULL;

	if (m[0].role == ENG_CHAT_SYSTEM) {
		sys = &m[0];
		m++;
		n--;
	}
	if (!n || m[n - 1].role != ENG_CHAT_USER) {
		velo_errf(err, errlen, "llama2 chat: the conversation must end "
			  "with a user message");
		return -EINVAL;
	}
	for (unsigned i = 0; i < n; i++) {
		bool user = m[i].role == ENG_CHAT_USER;

		if (user != (i % 2 == 0)) {
			velo_errf(err, errlen, "llama2 chat: roles must alternate "
				  "user/assistant (message %u)", i + (sys ? 2 : 1));
			return -EINVAL;
		}
		if (user) {
			puts_(o, tk->bos);
			puts_(o, "[INST] ");
			/* the template joins the system text to the first user
			 * message and strips the whole: nothing leads it but
			 * "<<SYS>>", and trailing whitespace may reach back
			 * past the user text when that is blank */
			if (!i && sys) {
				size_t mark = o->n;

				puts_(o, "<<SYS>>\n");
				put(o, sys->text, sys->len);
				puts_(o, "\n<</SYS>>\n\n");
				put(o, m[i].text, m[i].len);
				while (!o->full && o->n > mark && is_ws(o->p[o->n - 1]))
					o->n--;
			} else {
				put_stripped(o, m[i].text, m[i].len);
			}
			puts_(o, " [/INST]");
		} else {
			puts_(o, " ");
			put_stripped(o, m[i].text, m[i].len);
			puts_(o, " ");
			puts_(o, tk->eos);
		}
	}
	return 0;
}

/* <|system|>\nsys</s>\n<|user|>\nHi</s>\n<|assistant|>\n (TinyLlama) */
static void zephyr(struct out *o, const struct eng_chat_tokens *tk,
		   const struct eng_chat_msg *m, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		puts_(o, "<|");
		puts_(o, role_name(m[i].role));
		puts_(o, "|>\n");
		put(o, m[i].text, m[i].len);
		puts_(o, tk->eos);
		puts_(o, "\n");
	}
	puts_(o, "<|assistant|>\n");
}

int eng_chat_render(enum eng_chat_template tpl, const struct eng_chat_tokens *tk,
		    const struct eng_chat_msg *msgs, unsigned n, char *out,
		    size_t cap, size_t *n_out, char *err, size_t errlen)
{
	static const struct eng_chat_tokens none = { 0 };
	struct out o = { .p = out, .cap = cap };
	int rc = 0;

	if (!tk)
		tk = &none;
	if (!n || !msgs || !out || !cap) {
		velo_errf(err, errlen, "chat: no messages");
		return -EINVAL;
	}
	for (unsigned i = 0; i < n; i++) {
		if (!role_name(msgs[i].role)) {
			velo_errf(err, errlen, "chat: message %u has unknown role %u",
				  i + 1, (unsigned)msgs[i].role);
			return -EINVAL;
		}
		if (msgs[i].len && !msgs[i].text) {
			velo_errf(err, errlen, "chat: message %u has no text", i + 1);
			return -EINVAL;
		}
	}
	switch (tpl) {
	case ENG_CHAT_LLAMA3:
		llama3(&o, tk, msgs, n);
		break;
	case ENG_CHAT_CHATML:
		chatml(&o, tk, msgs, n);
		break;
	case ENG_CHAT_LLAMA2:
		rc = llama2(&o, tk, msgs, n, err, errlen);
		break;
	case ENG_CHAT_ZEPHYR:
		zephyr(&o, tk, msgs, n);
		break;
	default:
		velo_errf(err, errlen, "chat: the model has no chat template");
		return -EOPNOTSUPP;
	}
	if (rc)
		return rc;
	if (o.full) {
		velo_errf(err, errlen, "chat: the rendered prompt exceeds %zu bytes",
			  cap - 1);
		return -ENOSPC;
	}
	out[o.n] = 0;
	if (n_out)
		*n_out = o.n;
	return 0;
}
