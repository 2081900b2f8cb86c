// SPDX-License-Identifier: MIT
/*
 * veloctl — the operator's CLI (docs/mgmt.md).  One program, three ways in:
 *
 *   veloctl [--socket PATH] [--json] COMMAND...   one shot (scripts)
 *   SSH_ORIGINAL_COMMAND="show status" veloctl    SSH forced command:
 *       command="veloctl --socket PATH" in authorized_keys; the client's
 *       command line is read as one veloctl line by the same strict grammar,
 *       never by a shell
 *   veloctl                                        interactive shell (serial
 *       console, ssh -t): line editing, history and TAB completion from
 *       libedit; "configure" enters configuration mode (set, delete,
 *       commit, rollback), "exit" leaves it, then the shell
 *
 * Every line is checked against the command table (mgmt.h) before it is
 * sent: a typo is answered here, and velo-mgmtd checks again.
 * Exit status (one shot): 0 ok, 1 the command failed, 2 usage or grammar,
 * 3 velo-mgmtd unreachable.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <editline/readline.h>

#include "mgmt.h"

#define DEFAULT_SOCKET	"/run/velo/mgmt.sock"
#define REPLY_MS	15000	/* a full image check of a large model */

static const char *sock_path = DEFAULT_SOCKET;
static bool json_out;
static bool configure_mode;
static char reply[MGMT_FRAME_REPLY_MAX + 1];

/* Send one line; print the answer.  Return: 0 ok, 1 failed, 3 no mgmtd. */
static int send_line(const char *line)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct mgmt_frame_hdr h;
	int fd, rc;

	if (strlen(sock_path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "veloctl: socket path too long\n");
		return 3;
	}
	memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		fprintf(stderr, "veloctl: velo-mgmtd at %s: %s\n", sock_path,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return 3;
	}
	rc = mgmt_frame_send(fd, MGMT_FRAME_REQUEST,
			     json_out ? MGMT_FRAME_F_JSON : 0, 0, line,
			     (uint32_t)strlen(line));
	if (!rc)
		rc = mgmt_frame_recv(fd, MGMT_FRAME_REPLY, &h, reply,
				     MGMT_FRAME_REPLY_MAX, REPLY_MS);
	close(fd);
	if (rc) {
		fprintf(stderr, "veloctl: velo-mgmtd at %s: %s\n", sock_path,
			strerror(-rc));
		return 3;
	}
	/* JSON always on stdout (scripts parse it); text errors on stderr. */
	fputs(reply, h.status && !json_out ? stderr : stdout);
	fflush(stdout);
	return h.status ? 1 : 0;
}

/* One line from any way in.  @interactive: configure mode is enforced and
 * the local commands change the shell's state.  Return: exit status; -1
 * to leave the shell. */
static int run_line(const char *line, bool interactive)
{
	struct mgmt_parsed p;
	char err[256];
	int rc = mgmt_cmd_parse(line, &p, err, sizeof(err));

	if (rc == -ENOENT)
		return 0;
	if (rc) {
		if (json_out)
			printf("{\"ok\": false, \"error\": \"grammar\"}\n");
		fprintf(stderr, "error: %s\n", err);
		return 2;
	}
	if (interactive && p.cmd->configure && !configure_mode) {
		fprintf(stderr, "error: '%s' only in configuration mode "
			"(configure)\n", p.cmd->words);
		return 2;
	}
	switch (p.cmd->id) {
	case MGMT_CMD_HELP: {
		static char help[8192];

		mgmt_cmd_help(help, sizeof(help), configure_mode || !interactive);
		fputs(help, stdout);
		return 0;
	}
	case MGMT_CMD_CONFIGURE:
		if (interactive) {
			configure_mode = true;
			printf("entering configuration mode (commit to apply, "
			       "exit to leave)\n");
		}
		return 0;
	case MGMT_CMD_EXIT:
		if (interactive && configure_mode) {
			configure_mode = false;
			return 0;
		}
		return -1;
	default:
		return send_line(line);
	}
}

/* ------------------------------------------------------------------------
 * Interactive shell.
 */

static char *complete_gen(const char *text, int state)
{
	static const char *cand[64];
	static unsigned n, i;

	if (!state) {
		char line[MGMT_LINE_MAX + 1];
		int end = rl_point < 0 ? 0 : rl_point;

		snprintf(line, sizeof(line), "%.*s", end, rl_line_buffer);
		n = mgmt_cmd_complete(line, cand, 64);
		i = 0;
	}
	while (i < n) {
		const char *c = cand[i++];
		size_t l = strcspn(c, " ");
		char *w = malloc(l + 1);

		(void)text;
		if (!w)
			return NULL;
		memcpy(w, c, l);
		w[l] = '\0';
		return w;
	}
	return NULL;
}

static char **complete(const char *text, int start, int end)
{
	(void)start, (void)end;
	rl_attempted_completion_over = 1;	/* never file names */
	return rl_completion_matches(text, complete_gen);
}

static int shell(void)
{
	bool tty = isatty(STDIN_FILENO);
	char *line;

	if (tty) {
		rl_readline_name = "veloctl";
		rl_attempted_completion_function = complete;
		using_history();
		stifle_history(200);
		printf("velo appliance CLI; help lists the commands, TAB completes\n");
	}
	for (;;) {
		int rc;

		if (tty) {
			line = readline(configure_mode ? "velo# " : "velo> ");
		} else {
			size_t cap = 0;
			ssize_t l;

			line = NULL;
			l = getline(&line, &cap, stdin);
			if (l < 0) {
				free(line);
				line = NULL;
			} else if (l && line[l - 1] == '\n') {
				line[l - 1] = '\0';
			}
		}
		if (!line)
			break;
		if (tty && line[0])
			add_history(line);
		rc = run_line(line, true);
		free(line);
		if (rc < 0)
			break;
	}
	if (tty)
		printf("\n");
	return 0;
}

static void usage(FILE *f)
{
	static char help[8192];

	mgmt_cmd_help(help, sizeof(help), true);
	fprintf(f,
"usage: veloctl [-S|--socket PATH] [--json] [COMMAND ...]\n"
"  no COMMAND: interactive shell (or lines from stdin when not a terminal);\n"
"  under an SSH forced command, SSH_ORIGINAL_COMMAND is the command.\n"
"  socket: --socket, else $VELO_MGMT_SOCKET, else " DEFAULT_SOCKET "\n"
"commands:\n%s", help);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *ssh = getenv("SSH_ORIGINAL_COMMAND");
	char line[MGMT_LINE_MAX + 2];
	size_t o = 0;
	int c;

	if (getenv("VELO_MGMT_SOCKET"))
		sock_path = getenv("VELO_MGMT_SOCKET");
	/* "+": options only before the command, whose words may start with
	 * '-' never (the grammar refuses them as names anyway). */
	while ((c = getopt_long(argc, argv, "+S:jh", lo, NULL)) != -1) {
		switch (c) {
		case 'S': sock_path = optarg; break;
		case 'j': json_out = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	line[0] = '\0';
	if (optind < argc) {
		for (int i = optind; i < argc; i++) {
			size_t l = strlen(argv[i]);

			if (o + l + 1 > MGMT_LINE_MAX) {
				fprintf(stderr, "error: command longer than %d bytes\n",
					MGMT_LINE_MAX);
				return 2;
			}
			memcpy(line + o, argv[i], l);
			o += l;
			line[o++] = ' ';
			line[o] = '\0';
		}
	} else if (ssh && ssh[0]) {
		/* The SSH client's words: one line of our grammar.  A leading
		 * "veloctl" (ssh box veloctl show status) and "--json" are
		 * accepted; nothing else is interpreted. */
		const char *s = ssh;

		while (*s == ' ')
			s++;
		if (!strncmp(s, "veloctl ", 8) || !strcmp(s, "veloctl"))
			s += 7;
		while (*s == ' ')
			s++;
		if (!strncmp(s, "--json ", 7) || !strcmp(s, "--json")) {
			json_out = true;
			s += 6;
		}
		if (strlen(s) > MGMT_LINE_MAX) {
			fprintf(stderr, "error: command longer than %d bytes\n",
				MGMT_LINE_MAX);
			return 2;
		}
		snprintf(line, sizeof(line), "%s", s);
		if (!line[strspn(line, " \t")])
			return shell();
	} else {
		return shell();
	}
	{
		int rc = run_line(line, false);

		return rc < 0 ? 0 : rc;
	}
}
