// SPDX-License-Identifier: MIT
/*
 * velo-keygen — make a pre-shared key and append it to a key file.
 *
 *   velo-keygen [-o FILE] [--id N] [--comment TEXT]
 *
 * The file is created with mode 0600 (velod and the client library refuse
 * key files that group or others can read).  The key goes through
 * velo_keyfile_append() (velo/auth.h), so the format is the one velod
 * loads.  Prints the key id on stdout, alone on its line, for scripts.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <velo/auth.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: velo-keygen [-o FILE] [--id N] [--comment TEXT]\n"
		"  Generate a random 32-byte pre-shared key and append it to FILE\n"
		"  (default: $VELO_KEY, else ./velo.key), created with mode 0600.\n"
		"  --id N        key id (1..4294967295); default: a random unused id\n"
		"  --comment T   text kept after the key on its line\n"
		"  Prints the key id.  Exit: 0 ok, 1 error, 2 usage.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "id", required_argument, NULL, 'i' },
		{ "comment", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = getenv("VELO_KEY");
	const char *comment = NULL;
	struct velo_psk psk;
	unsigned long id = 0;
	int o, rc;

	if (!path || !*path)
		path = "velo.key";
	while ((o = getopt_long(argc, argv, "o:i:c:h", opts, NULL)) != -1) {
		char *end;

		switch (o) {
		case 'o':
			path = optarg;
			break;
		case 'i':
			errno = 0;
			id = strtoul(optarg, &end, 10);
			if (errno || *end || id == 0 || id > UINT32_MAX) {
				fprintf(stderr, "velo-keygen: bad key id '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'c':
			comment = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (velo_auth_init()) {
		fprintf(stderr, "velo-keygen: libsodium failed to initialise\n");
		return 1;
	}
	/* A random id collides with one already in the file with odds of
	 * keys/2^31: try a few. */
	for (int tries = 0; tries < 8; tries++) {
		uint32_t kid = (uint32_t)id;

		if (!id)
			do {
				velo_random(&kid, sizeof(kid));
				kid &= 0x7fffffff;
			} while (!kid);
		rc = velo_keyfile_append(path, kid, comment, &psk);
		if (rc != -EEXIST || id)
			break;
	}
	memset(&psk.key, 0, sizeof(psk.key));
	if (rc) {
		fprintf(stderr, "velo-keygen: %s: %s%s\n", path, strerror(-rc),
			rc == -EPERM ? " (the file is readable by others: "
				       "chmod 600 it)" :
			rc == -EEXIST ? " (that key id is in the file already)" :
			"");
		return 1;
	}
	printf("%u\n", psk.key_id);
	return 0;
}
