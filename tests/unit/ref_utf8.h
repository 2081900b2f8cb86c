/* SPDX-License-Identifier: MIT */
/*
 * ref_utf8.h — the reference UTF-8 validator the codec's tests and its
 * fuzz target compare proto_utf8_valid() against: decode by bit patterns
 * to a code point, then reject overlongs, surrogates and values above
 * U+10FFFF — a different algorithm from the codec's per-lead-byte ranges,
 * so that the two cannot share a mistake.  Header-only: the fuzz targets
 * are built apart from the unit tests.
 */
#ifndef VELO_TEST_REF_UTF8_H
#define VELO_TEST_REF_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline bool ref_utf8_valid(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		uint8_t c = s[i];
		uint32_t cp, min;
		size_t n;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			n = 2, cp = c & 0x1f, min = 0x80;
		else if ((c & 0xf0) == 0xe0)
			n = 3, cp = c & 0x0f, min = 0x800;
		else if ((c & 0xf8) == 0xf0)
			n = 4, cp = c & 0x07, min = 0x10000;
		else
			return false;
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n;
	}
	return true;
}

#endif
