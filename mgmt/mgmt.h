/* SPDX-License-Identifier: MIT */
/*
 * mgmt.h — the management plane's library half (docs/mgmt.md): the framed
 * protocol between veloctl and velo-mgmtd, the command table (grammar, help
 * and completion from one list), the configuration store (candidate, commit,
 * commit confirmed, rollback, kept on disk atomically), the model
 * repository (images verified before load, labels) and velod's line-based
 * control socket client.  velo-mgmtd (mgmtd.c, super.c, metrics.c) and
 * veloctl (veloctl.c) are built on it; the unit tests drive it directly.
 *
 * Nothing here is on the data path: it allocates freely at human speed, but
 * every input is bounded (line, token, frame, file sizes below) and bad
 * input is refused with a message, never a crash.
 */
#ifndef VELO_MGMT_H
#define VELO_MGMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------
 * Framed protocol (veloctl <-> velo-mgmtd), over a Unix stream socket.  One
 * request frame and one reply frame per connection.  Little-endian.
 */
#define MGMT_FRAME_MAGIC	0x544d4756u	/* "VGMT" */
#define MGMT_FRAME_VERSION	1
#define MGMT_FRAME_REQ_MAX	1024		/* a command line */
#define MGMT_FRAME_REPLY_MAX	(256u << 10)	/* show output, JSON */

enum mgmt_frame_type {
	MGMT_FRAME_REQUEST = 1,		/* payload: one command line */
	MGMT_FRAME_REPLY = 2,		/* payload: text or JSON */
};

#define MGMT_FRAME_F_JSON	0x1u	/* request: answer in JSON */

struct mgmt_frame_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;		/* enum mgmt_frame_type */
	uint32_t flags;		/* MGMT_FRAME_F_* */
	int32_t status;		/* reply: 0 ok, else -errno; request: 0 */
	uint32_t len;		/* payload bytes that follow */
	uint32_t reserved;	/* 0 */
};
_Static_assert(sizeof(struct mgmt_frame_hdr) == 24, "mgmt frame header");

/*
 * mgmt_frame_check() - validate a received header against the payload
 * capacity the reader has.
 * Return: 0; -EPROTO for a bad magic, version, type or reserved field;
 * -EMSGSIZE when len exceeds @cap.
 */
int mgmt_frame_check(const struct mgmt_frame_hdr *h, uint16_t type,
		     uint32_t cap);

/*
 * mgmt_frame_send() - write header and payload (blocking, whole).
 * Return: 0 or -errno of write (-EPIPE when the peer left).
 */
int mgmt_frame_send(int fd, uint16_t type, uint32_t flags, int32_t status,
		    const void *buf, uint32_t len);

/*
 * mgmt_frame_recv() - read one frame of @type within @timeout_ms.
 * @h: out, the header; @buf: payload (NUL-terminated: cap + 1 bytes)
 * Return: 0; -ETIMEDOUT; -ECONNRESET on EOF before the frame ended;
 * -EPROTO / -EMSGSIZE as mgmt_frame_check(); -errno of read.
 */
int mgmt_frame_recv(int fd, uint16_t type, struct mgmt_frame_hdr *h,
		    char *buf, uint32_t cap, int timeout_ms);

/* ------------------------------------------------------------------------
 * Command table and strict grammar.  A line is split on blanks into at
 * most MGMT_TOK_MAX tokens of allowed characters only (letters, digits and
 * . _ - : / , + = @); anything else (quotes, ; | & $ ` < > and the like) is
 * refused: there is no shell behind veloctl and nothing to escape to.
 */
#define MGMT_LINE_MAX	512
#define MGMT_TOK_MAX	16
#define MGMT_TOK_LEN	128

enum mgmt_cmd_id {
	MGMT_CMD_HELP = 1,
	MGMT_CMD_SHOW_STATUS,
	MGMT_CMD_SHOW_MODELS,
	MGMT_CMD_SHOW_STATS,
	MGMT_CMD_SHOW_SESSIONS,
	MGMT_CMD_SHOW_CONFIG,
	MGMT_CMD_SHOW_CONFIG_CANDIDATE,
	MGMT_CMD_SHOW_CONFIG_COMPARE,
	MGMT_CMD_SHOW_CONFIG_HISTORY,
	MGMT_CMD_SHOW_COUNTERS,
	MGMT_CMD_MODEL_LOAD,
	MGMT_CMD_MODEL_UNLOAD,
	MGMT_CMD_MODEL_SWAP,
	MGMT_CMD_MODEL_ROLLBACK,
	MGMT_CMD_MODEL_CONFIRM,
	MGMT_CMD_MODEL_VERIFY,
	MGMT_CMD_MODEL_LABEL,
	MGMT_CMD_CONFIGURE,
	MGMT_CMD_SET,
	MGMT_CMD_DELETE,
	MGMT_CMD_COMMIT,
	MGMT_CMD_COMMIT_CONFIRMED,
	MGMT_CMD_ROLLBACK,
	MGMT_CMD_RESTART_DATAPLANE,
	MGMT_CMD_EXIT,
};

/* Argument kinds of the grammar. */
enum mgmt_arg {
	MGMT_ARG_NONE = 0,
	MGMT_ARG_NAME,		/* [A-Za-z0-9_.-]{1,63}, not starting with . or - */
	MGMT_ARG_KEY,		/* dotted configuration key: NAME(.NAME)* */
	MGMT_ARG_VALUE,		/* any allowed token */
	MGMT_ARG_UINT,		/* decimal, range in the table */
	MGMT_ARG_LABEL,		/* production | canary | shadow | none */
};

#define MGMT_ARGS_MAX	4

struct mgmt_cmd {
	const char *words;	/* fixed keywords: "show status" */
	enum mgmt_cmd_id id;
	uint8_t n_args, n_opt;	/* arguments after the words; the last n_opt
				   may be left out */
	enum mgmt_arg args[MGMT_ARGS_MAX];
	uint32_t uint_min, uint_max;	/* MGMT_ARG_UINT range */
	bool local;		/* handled by veloctl itself (exit, configure) */
	bool configure;		/* interactive shell: configure mode only */
	const char *usage;	/* argument names for help: "NAME VERSION" */
	const char *help;
};

/* The table; terminated by an entry with words == NULL. */
extern const struct mgmt_cmd mgmt_cmds[];

struct mgmt_parsed {
	const struct mgmt_cmd *cmd;
	unsigned n_args;
	char args[MGMT_ARGS_MAX][MGMT_TOK_LEN];
};

/*
 * mgmt_cmd_split() - split @line into tokens, refusing disallowed bytes.
 * Return: number of tokens (0 for a blank line); -EINVAL (bad character,
 * @err says which and where), -E2BIG (too many or too long tokens, or the
 * line longer than MGMT_LINE_MAX).
 */
int mgmt_cmd_split(const char *line, char tok[][MGMT_TOK_LEN], unsigned max,
		   char *err, size_t err_len);

/*
 * mgmt_cmd_parse() - match a line against the table, check each argument.
 * Return: 0 (@out filled); -ENOENT for a blank line; -EINVAL with a message
 * in @err (unknown command, missing or extra argument, bad argument).
 */
int mgmt_cmd_parse(const char *line, struct mgmt_parsed *out, char *err,
		   size_t err_len);

/*
 * mgmt_cmd_complete() - keywords that may follow the complete tokens of
 * @line and start with its unfinished last token (empty when the line ends
 * in a blank).  Writes up to @max distinct candidates into @out: pointers
 * into the table's strings, each word ending at a blank or the NUL.
 * Return: the number written.
 */
unsigned mgmt_cmd_complete(const char *line, const char **out, unsigned max);

/*
 * mgmt_cmd_help() - the command list, one "words usage  help" line each.
 * @configure: include configure-mode commands.
 * Return: bytes written (snprintf semantics, truncated to @len).
 */
size_t mgmt_cmd_help(char *buf, size_t len, bool configure);

/* ------------------------------------------------------------------------
 * Configuration store.  The configuration is a JSON object edited by
 * dotted keys; its whole state (running commit history, candidate, a
 * pending confirmation) is one file replaced atomically (temporary file,
 * fsync, rename, fsync of the directory): a crash leaves the old or the new
 * state, never a mix.
 */
#define MGMT_STORE_FILE_MAX	(4u << 20)	/* larger state files refused */

struct mgmt_store;

/*
 * mgmt_store_open() - load @path or start empty when it does not exist.
 * @history_max: commits kept (rollback 0 .. history_max - 1), >= 2
 * Return: the store, or NULL with errno (EINVAL: a malformed file, whose
 * path and reason are logged; ENOMEM).
 */
struct mgmt_store *mgmt_store_open(const char *path, unsigned history_max);
void mgmt_store_close(struct mgmt_store *st);

/* set KEY VALUE on the candidate: VALUE is parsed as JSON (numbers, true,
 * false, null), else taken as a string.  Return: 0; -EINVAL (bad key, a key
 * crossing a non-object). */
int mgmt_store_set(struct mgmt_store *st, const char *key, const char *value,
		   char *err, size_t err_len);
/* Return: 0; -ENOENT when the key is not in the candidate. */
int mgmt_store_delete(struct mgmt_store *st, const char *key);

/*
 * mgmt_store_commit() - make the candidate the running configuration.
 * @now_ms:     wall clock (ms since the epoch), stored with the commit
 * @confirm_ms: 0 for a plain commit; else the change rolls back by itself
 *              at now_ms + confirm_ms unless confirmed (a plain commit
 *              confirms it, as on network appliances)
 * @comment:    kept in the history ("commit", "automatic rollback", ...)
 * A candidate equal to the running configuration with no confirmation
 * pending and confirm_ms 0 commits nothing.
 * Return: 1 when the running configuration changed, 0 when not; -EIO (and
 * the store unchanged in memory) when the file could not be written.
 */
int mgmt_store_commit(struct mgmt_store *st, uint64_t now_ms,
		      uint64_t confirm_ms, const char *comment);

/* rollback N: candidate := the configuration N commits ago (0: running).
 * Return: 0; -ERANGE when there is no such commit. */
int mgmt_store_rollback(struct mgmt_store *st, unsigned n);

/*
 * mgmt_store_tick() - roll back an unconfirmed commit whose time is up.
 * Return: 1 when it rolled back (the running configuration changed), 0
 * when nothing was due, -EIO as commit.
 */
int mgmt_store_tick(struct mgmt_store *st, uint64_t now_ms);

/* Deadline of the pending confirmation (ms since the epoch), 0 if none. */
uint64_t mgmt_store_confirm_deadline(const struct mgmt_store *st);
/* Number of commits held; serial of the running one. */
unsigned mgmt_store_history_count(const struct mgmt_store *st);
uint64_t mgmt_store_serial(const struct mgmt_store *st);

enum mgmt_store_which { MGMT_STORE_RUNNING, MGMT_STORE_CANDIDATE };

/*
 * mgmt_store_show() - the configuration as sorted "set KEY VALUE" lines,
 * or as JSON (@json).  Return: bytes written (snprintf semantics).
 */
size_t mgmt_store_show(const struct mgmt_store *st, enum mgmt_store_which w,
		       bool json, char *buf, size_t len);
/* show | compare: "- set ..." lines only in running, "+ set ..." only in
 * the candidate.  Return: bytes written; 0 means no difference. */
size_t mgmt_store_compare(const struct mgmt_store *st, char *buf, size_t len);
/* The commit history, newest (rollback 0) first. */
size_t mgmt_store_history(const struct mgmt_store *st, char *buf, size_t len);

/*
 * mgmt_store_get() - value of KEY in the running configuration as a JSON
 * text (strings without quotes) in @buf.  Return: 0 or -ENOENT.
 */
int mgmt_store_get(const struct mgmt_store *st, const char *key, char *buf,
		   size_t len);

/*
 * mgmt_store_each() - call @fn for every leaf of the running or candidate
 * configuration under the object @prefix ("velod." or "velod"; the prefix
 * stripped from the keys), with the value as JSON text.  Used to pass the
 * "velod" keys on to velod as --set KEY=VALUE.
 * Return: leaves visited.
 */
unsigned mgmt_store_each(const struct mgmt_store *st, enum mgmt_store_which w,
			 const char *prefix,
			 void (*fn)(void *arg, const char *key,
				    const char *json),
			 void *arg);

/* Top-level keys of the candidate (valid until it changes).  Return: the
 * number written to @out (at most @max). */
unsigned mgmt_store_top_keys(const struct mgmt_store *st, const char **out,
			     unsigned max);

/* ------------------------------------------------------------------------
 * Model repository: a directory of model images (*.vimg), each named and
 * versioned by its own header, checked in full before any load, and labels
 * per model name kept in labels.json in the same directory (atomic writes).
 */
#define MGMT_MODELS_MAX		64
#define MGMT_MODEL_NAME_LEN	64
#define MGMT_MODEL_VERSION_LEN	32
#define MGMT_MODEL_ERR_LEN	256

enum mgmt_label { MGMT_LABEL_NONE, MGMT_LABEL_PRODUCTION, MGMT_LABEL_CANARY,
		  MGMT_LABEL_SHADOW };

struct mgmt_model {
	char file[256];			/* path of the image */
	char name[MGMT_MODEL_NAME_LEN];	/* header name (file name if bad) */
	char version[MGMT_MODEL_VERSION_LEN];
	uint64_t size;			/* bytes */
	uint64_t file_xxh;		/* header's whole-file checksum */
	bool bad;			/* the structural check failed */
	char err[MGMT_MODEL_ERR_LEN];	/* why, when bad */
	enum mgmt_label label;
	uint32_t canary_pct;		/* share of traffic, canary only */
};

struct mgmt_repo;

/*
 * mgmt_repo_open() - scan @dir (FAST check of each image: header and
 * metadata checksums, no tensor data read) and load labels.json.
 * Return: the repository or NULL with errno (ENOENT: no directory).
 */
struct mgmt_repo *mgmt_repo_open(const char *dir);
void mgmt_repo_close(struct mgmt_repo *r);
/* Rescan the directory (labels kept).  Return: images found or -errno. */
int mgmt_repo_scan(struct mgmt_repo *r);
unsigned mgmt_repo_count(const struct mgmt_repo *r);
const struct mgmt_model *mgmt_repo_get(const struct mgmt_repo *r, unsigned i);
/* By name and version; version NULL: the production one, else the newest
 * (by string order).  Return: NULL if none. */
const struct mgmt_model *mgmt_repo_find(const struct mgmt_repo *r,
					const char *name, const char *version);

/*
 * mgmt_repo_verify() - the full check before a load: structure, every
 * checksum (whole file; on a mismatch the damaged tensor is named).
 * Return: 0; -EBADMSG (checksum), -EINVAL (malformed), -ENOTSUP, -errno of
 * open; @err holds the reason ("<file>: ...").
 */
int mgmt_repo_verify(const struct mgmt_repo *r, const struct mgmt_model *m,
		     char *err, size_t err_len);

/*
 * mgmt_repo_label() - give @label to NAME VERSION (canary: @pct 1..99 of
 * the traffic).  A model name has at most one version per label: the one
 * holding it before loses it.  Persisted in labels.json.
 * Return: 0; -ENOENT (no such image), -EINVAL (bad share, a bad image for
 * production or canary), -EIO.
 */
int mgmt_repo_label(struct mgmt_repo *r, const char *name, const char *version,
		    enum mgmt_label label, uint32_t pct);

/*
 * mgmt_repo_labels_save() - the labels as JSON text, to put back with
 * mgmt_repo_labels_restore() when velod refuses what a change asked of it.
 * Return: malloc'ed text (the caller frees it) or NULL (ENOMEM).
 */
char *mgmt_repo_labels_save(const struct mgmt_repo *r);
/* Replace the labels by @text (from mgmt_repo_labels_save()) and persist
 * them.  Return: 0; -EINVAL (not a JSON object); -EIO. */
int mgmt_repo_labels_restore(struct mgmt_repo *r, const char *text);
/* Model names that have a label in labels.json (valid until the labels
 * change).  Return: the number written to @out (at most @max). */
unsigned mgmt_repo_label_names(const struct mgmt_repo *r, const char **out,
			       unsigned max);

const char *mgmt_label_name(enum mgmt_label l);
/* Return: the label, or -1 for an unknown name. */
int mgmt_label_parse(const char *s);

/* ------------------------------------------------------------------------
 * velod's control socket (docs/velod.md): one line out, the answer until
 * EOF back.
 */

/*
 * mgmt_velod_query() - send @cmd to the control socket at @path and read
 * the answer into @buf (NUL-terminated) within @timeout_ms in all.
 * Return: bytes of answer; -ETIMEDOUT (a wedged velod); -ECONNREFUSED or
 * -ENOENT (nothing listens); -EMSGSIZE (answer longer than @len - 1;
 * @buf holds the start); -errno.
 */
int mgmt_velod_query(const char *path, const char *cmd, char *buf, size_t len,
		     int timeout_ms);

/* ------------------------------------------------------------------------
 * Shared helpers.
 */

/*
 * mgmt_file_write_atomic() - write @len bytes to @path through a temporary
 * file in the same directory: write, fsync, rename, fsync the directory.
 * Return: 0 or -errno (the old file untouched).
 */
int mgmt_file_write_atomic(const char *path, const void *buf, size_t len,
			   unsigned mode);

#endif
