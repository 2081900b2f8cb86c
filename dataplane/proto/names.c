// SPDX-License-Identifier: MIT
/*
 * names.c — names of drop reasons, templates and error codes, generated from
 * the X-macro lists in velo/proto.h and velo/codec.h so that a new entry is
 * named everywhere at once.
 */
#include <velo/codec.h>

static const char *const drop_names[PROTO_DROP__COUNT] = {
	[PROTO_DROP_NONE] = "none",
#define X(name, help) [PROTO_DROP_##name] = #name,
	foreach_proto_drop(X)
#undef X
};

const char *proto_drop_name(int reason)
{
	if (reason < 0)
		reason = -reason;
	if (reason >= PROTO_DROP__COUNT)
		return "?";
	return drop_names[reason];
}

const char *proto_template_name(unsigned template_id)
{
	switch (template_id) {
#define X(name, id, help) case id: return #name;
	foreach_proto_template(X)
#undef X
	}
	return NULL;
}

const char *proto_err_name(unsigned code)
{
	switch (code) {
#define X(name, c, http, help) case c: return #name;
	foreach_proto_err(X)
#undef X
	}
	return "?";
}

unsigned proto_err_http(unsigned code)
{
	switch (code) {
#define X(name, c, http, help) case c: return http;
	foreach_proto_err(X)
#undef X
	}
	return 500;
}
