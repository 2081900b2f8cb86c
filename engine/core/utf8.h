/* SPDX-License-Identifier: MIT */
/*
 * utf8.h — the few UTF-8 routines the tokenizer needs: strict validation
 * (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF), decoding
 * of already-validated text, encoding, and the character classes that
 * Hugging Face's Rust code uses (char::is_whitespace, regex \w).
 */
#ifndef VELO_ENG_UTF8_H
#define VELO_ENG_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENG_UTF8_FFFD "\xef\xbf\xbd"	/* U+FFFD REPLACEMENT CHARACTER */

/* eng_utf8_valid() - true if @s[0..@n) is well-formed UTF-8.  ~1 GB/s on ASCII. */
bool eng_utf8_valid(const char *s, size_t n);

/*
 * eng_utf8_seq_len() - length of the sequence that lead byte @b starts
 * (1..4), or 0 for a byte that can never start one (continuation bytes,
 * 0xC0, 0xC1, 0xF5..0xFF).
 */
static inline unsigned eng_utf8_seq_len(uint8_t b)
{
	if (b < 0x80)
		return 1;
	if (b < 0xc2)
		return 0;
	if (b < 0xe0)
		return 2;
	if (b < 0xf0)
		return 3;
	if (b < 0xf5)
		return 4;
	return 0;
}

/*
 * eng_utf8_cont_ok() - whether @b may follow the bytes @seq[0..@have) of a
 * sequence (the second byte's range depends on the lead byte: E0 A0..BF,
 * ED 80..9F, F0 90..BF, F4 80..8F).  @have >= 1.
 */
static inline bool eng_utf8_cont_ok(const uint8_t *seq, unsigned have, uint8_t b)
{
	if (have == 1) {
		switch (seq[0]) {
		case 0xe0: return b >= 0xa0 && b <= 0xbf;
		case 0xed: return b >= 0x80 && b <= 0x9f;
		case 0xf0: return b >= 0x90 && b <= 0xbf;
		case 0xf4: return b >= 0x80 && b <= 0x8f;
		default: break;
		}
	}
	return (b & 0xc0) == 0x80;
}

/* Decode one code point of valid UTF-8 at @s (at least one byte); *cp gets
 * the code point.  Return: its length in bytes. */
static inline unsigned eng_utf8_decode(const char *s, uint32_t *cp)
{
	const uint8_t *p = (const uint8_t *)s;

	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	if (p[0] < 0xe0) {
		*cp = ((uint32_t)(p[0] & 0x1f) << 6) | (p[1] & 0x3f);
		return 2;
	}
	if (p[0] < 0xf0) {
		*cp = ((uint32_t)(p[0] & 0x0f) << 12) |
		      ((uint32_t)(p[1] & 0x3f) << 6) | (p[2] & 0x3f);
		return 3;
	}
	*cp = ((uint32_t)(p[0] & 0x07) << 18) | ((uint32_t)(p[1] & 0x3f) << 12) |
	      ((uint32_t)(p[2] & 0x3f) << 6) | (p[3] & 0x3f);
	return 4;
}

/* Encode @cp (<= 0x10FFFF, not a surrogate) into @out.  Return: 1..4. */
static inline unsigned eng_utf8_encode(uint32_t cp, char *out)
{
	uint8_t *o = (uint8_t *)out;

	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (uint8_t)(0xc0 | (cp >> 6));
		o[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (uint8_t)(0xe0 | (cp >> 12));
		o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (uint8_t)(0xf0 | (cp >> 18));
	o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

/* Unicode White_Space (Rust char::is_whitespace, regex \s, Oniguruma \s). */
bool eng_utf8_is_space(uint32_t cp);

/* Rust regex \w: letters, marks, decimal digits, connector punctuation
 * (approximated through the general category). */
bool eng_utf8_is_word(uint32_t cp);

#endif
