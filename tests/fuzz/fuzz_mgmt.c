// SPDX-License-Identifier: MIT
/*
 * fuzz_mgmt — libFuzzer over the management plane's parsers: veloctl's
 * grammar (mgmt_cmd_parse, mgmt_cmd_complete), the frame header check, and
 * the configuration store's set/show/compare on the candidate (nothing is
 * committed, so nothing is written).  First byte selects; the rest is the
 * input.  Invariants: a parsed line has a table entry and arguments of
 * the lengths the table allows; completion returns words of that entry;
 * no crash, no leak, no read past the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../mgmt/mgmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct mgmt_store *st;
	char line[MGMT_LINE_MAX * 2 + 1], err[256], out[8192];
	struct mgmt_parsed p;
	const char *cand[32];
	size_t n;

	if (size < 1)
		return 0;
	n = size - 1 < sizeof(line) - 1 ? size - 1 : sizeof(line) - 1;
	memcpy(line, data + 1, n);
	line[n] = '\0';
	switch (data[0] % 3) {
	case 0:
		if (!mgmt_cmd_parse(line, &p, err, sizeof(err))) {
			if (!p.cmd || !p.cmd->words || p.n_args > p.cmd->n_args)
				abort();
			for (unsigned i = 0; i < p.n_args; i++)
				if (strlen(p.args[i]) >= MGMT_TOK_LEN)
					abort();
		}
		for (unsigned i = 0, k = mgmt_cmd_complete(line, cand, 32); i < k; i++)
			if (!cand[i] || !cand[i][0])
				abort();
		break;
	case 1: {
		struct mgmt_frame_hdr h;

		if (size - 1 >= sizeof(h)) {
			memcpy(&h, data + 1, sizeof(h));
			if (!mgmt_frame_check(&h, MGMT_FRAME_REQUEST, MGMT_FRAME_REQ_MAX) &&
			    h.len > MGMT_FRAME_REQ_MAX)
				abort();
		}
		break;
	}
	default: {
		char *sp = strchr(line, ' ');

		if (!st)
			st = mgmt_store_open("/nonexistent-velo-fuzz/config.json", 4);
		if (!st || !sp)
			break;
		*sp = '\0';
		mgmt_store_set(st, line, sp + 1, err, sizeof(err));
		mgmt_store_show(st, MGMT_STORE_CANDIDATE, false, out, sizeof(out));
		mgmt_store_show(st, MGMT_STORE_CANDIDATE, true, out, sizeof(out));
		mgmt_store_compare(st, out, sizeof(out));
		mgmt_store_delete(st, line);
		mgmt_store_rollback(st, 0);	/* the next input starts empty */
		break;
	}
	}
	return 0;
}
