// SPDX-License-Identifier: MIT
/*
 * repo.c — the model repository: a directory of images (*.vimg) named and
 * versioned by their own headers.  A scan does the FAST check of each
 * (structure, header and metadata checksums; no tensor page is read, so a
 * scan of a directory of 8 GB images takes milliseconds); a load is always
 * preceded by the FULL check (every byte hashed: about 1 s per 10 GB on
 * one core with XXH3), so a corrupt or tampered image is refused before
 * velod sees it.  Labels per model name are kept in labels.json:
 *
 *   { "NAME": { "production": "V1", "canary": { "version": "V2",
 *               "percent": 10 }, "shadow": "V3" } }
 *
 * Bounds: MGMT_MODELS_MAX images (more are skipped and logged).
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../engine/core/image.h"
#include "../tools/lib/log.h"
#include "mgmt.h"

struct mgmt_repo {
	char dir[PATH_MAX];
	json_t *labels;		/* labels.json */
	unsigned n;
	struct mgmt_model m[MGMT_MODELS_MAX];
};

static const char *const label_names[] = {
	[MGMT_LABEL_NONE] = "none", [MGMT_LABEL_PRODUCTION] = "production",
	[MGMT_LABEL_CANARY] = "canary", [MGMT_LABEL_SHADOW] = "shadow",
};

const char *mgmt_label_name(enum mgmt_label l)
{
	return (unsigned)l < 4 ? label_names[l] : "?";
}

int mgmt_label_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (!strcmp(s, label_names[i]))
			return i;
	return -1;
}

static void labels_apply(struct mgmt_repo *r)
{
	for (unsigned i = 0; i < r->n; i++) {
		struct mgmt_model *m = &r->m[i];
		json_t *l = json_object_get(r->labels, m->name), *c;

		m->label = MGMT_LABEL_NONE;
		m->canary_pct = 0;
		if (!l || m->bad)
			continue;
		c = json_object_get(l, "canary");
		if (json_is_string(json_object_get(l, "production")) &&
		    !strcmp(json_string_value(json_object_get(l, "production")),
			    m->version)) {
			m->label = MGMT_LABEL_PRODUCTION;
		} else if (c && json_is_string(json_object_get(c, "version")) &&
			   !strcmp(json_string_value(json_object_get(c, "version")),
				   m->version)) {
			m->label = MGMT_LABEL_CANARY;
			m->canary_pct = (uint32_t)json_integer_value(
				json_object_get(c, "percent"));
		} else if (json_is_string(json_object_get(l, "shadow")) &&
			   !strcmp(json_string_value(json_object_get(l, "shadow")),
				   m->version)) {
			m->label = MGMT_LABEL_SHADOW;
		}
	}
}

static int cmp_model(const void *a, const void *b)
{
	const struct mgmt_model *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->version, y->version);
}

int mgmt_repo_scan(struct mgmt_repo *r)
{
	DIR *d = opendir(r->dir);
	struct dirent *de;

	if (!d)
		return -errno;
	r->n = 0;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		struct mgmt_model *m;
		struct eng_image *img;
		struct stat sb;
		int rc;

		if (l < 6 || strcmp(de->d_name + l - 5, ".vimg"))
			continue;
		if (r->n == MGMT_MODELS_MAX) {
			LOG_W(mgmt, "model repository %s: more than %d images, "
			      "%s and later skipped", r->dir, MGMT_MODELS_MAX,
			      de->d_name);
			break;
		}
		char file[sizeof(m->file)];

		if ((size_t)snprintf(file, sizeof(file), "%s/%s", r->dir,
				     de->d_name) >= sizeof(file))
			continue;
		m = &r->m[r->n];
		memset(m, 0, sizeof(*m));
		memcpy(m->file, file, sizeof(file));
		if (stat(m->file, &sb) || !S_ISREG(sb.st_mode))
			continue;
		m->size = (uint64_t)sb.st_size;
		rc = eng_image_open(m->file, ENG_IMAGE_VERIFY_FAST, &img, m->err,
				    sizeof(m->err));
		if (rc) {
			/* Listed, so the operator sees it and why. */
			m->bad = true;
			snprintf(m->name, sizeof(m->name), "%.*s", (int)(l - 5),
				 de->d_name);
			snprintf(m->version, sizeof(m->version), "?");
		} else {
			const struct eng_image_hdr *h = eng_image_hdr(img);

			snprintf(m->name, sizeof(m->name), "%s", h->name);
			snprintf(m->version, sizeof(m->version), "%s", h->version);
			m->file_xxh = h->file_xxh;
			eng_image_close(img);
		}
		r->n++;
	}
	closedir(d);
	qsort(r->m, r->n, sizeof(r->m[0]), cmp_model);
	labels_apply(r);
	return (int)r->n;
}

struct mgmt_repo *mgmt_repo_open(const char *dir)
{
	struct mgmt_repo *r = calloc(1, sizeof(*r));
	char path[PATH_MAX + 16];
	int rc;

	if (!r) {
		errno = ENOMEM;
		return NULL;
	}
	snprintf(r->dir, sizeof(r->dir), "%s", dir);
	snprintf(path, sizeof(path), "%s/labels.json", dir);
	r->labels = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(r->labels)) {
		json_decref(r->labels);
		r->labels = json_object();
	}
	rc = mgmt_repo_scan(r);
	if (rc < 0) {
		mgmt_repo_close(r);
		errno = -rc;
		return NULL;
	}
	return r;
}

void mgmt_repo_close(struct mgmt_repo *r)
{
	if (!r)
		return;
	json_decref(r->labels);
	free(r);
}

unsigned mgmt_repo_count(const struct mgmt_repo *r)
{
	return r->n;
}

const struct mgmt_model *mgmt_repo_get(const struct mgmt_repo *r, unsigned i)
{
	return i < r->n ? &r->m[i] : NULL;
}

const struct mgmt_model *mgmt_repo_find(const struct mgmt_repo *r,
					const char *name, const char *version)
{
	const struct mgmt_model *best = NULL;

	for (unsigned i = 0; i < r->n; i++) {
		const struct mgmt_model *m = &r->m[i];

		if (strcmp(m->name, name))
			continue;
		if (version) {
			if (!strcmp(m->version, version))
				return m;
			continue;
		}
		if (m->label == MGMT_LABEL_PRODUCTION)
			return m;
		best = m;	/* sorted: the last is the newest */
	}
	return best;
}

int mgmt_repo_verify(const struct mgmt_repo *r, const struct mgmt_model *m,
		     char *err, size_t err_len)
{
	char why[MGMT_MODEL_ERR_LEN];
	struct eng_image *img;
	int rc;

	(void)r;
	why[0] = '\0';
	rc = eng_image_open(m->file, ENG_IMAGE_VERIFY_FULL, &img, why, sizeof(why));
	if (rc) {
		snprintf(err, err_len, "%s: refused: %s", m->file,
			 why[0] ? why : strerror(-rc));
		return rc;
	}
	/* The file may have been replaced since the scan: the name and the
	 * version must still be the ones asked for. */
	if (strcmp(eng_image_hdr(img)->name, m->name) ||
	    strcmp(eng_image_hdr(img)->version, m->version)) {
		snprintf(err, err_len, "%s: refused: now holds %s %s, not %s %s",
			 m->file, eng_image_hdr(img)->name,
			 eng_image_hdr(img)->version, m->name, m->version);
		eng_image_close(img);
		return -ESTALE;
	}
	eng_image_close(img);
	snprintf(err, err_len, "%s: verified (%s %s, %llu bytes, xxh3 %016llx)",
		 m->file, m->name, m->version, (unsigned long long)m->size,
		 (unsigned long long)m->file_xxh);
	return 0;
}

int mgmt_repo_label(struct mgmt_repo *r, const char *name, const char *version,
		    enum mgmt_label label, uint32_t pct)
{
	const struct mgmt_model *m = mgmt_repo_find(r, name, version);
	json_t *labels, *l;
	char path[PATH_MAX + 16], *text;
	int rc;

	if (!m)
		return -ENOENT;
	if ((label == MGMT_LABEL_CANARY) != (pct >= 1 && pct <= 99))
		return -EINVAL;
	if (m->bad && label != MGMT_LABEL_NONE)
		return -EINVAL;
	labels = json_deep_copy(r->labels);
	if (!labels)
		return -ENOMEM;
	l = json_object_get(labels, name);
	if (!l) {
		l = json_object();
		json_object_set_new(labels, name, l);
	}
	/* One version per label, and one label per version. */
	for (int k = MGMT_LABEL_PRODUCTION; k <= MGMT_LABEL_SHADOW; k++) {
		json_t *v = json_object_get(l, label_names[k]);
		const char *ver = json_is_object(v)
			? json_string_value(json_object_get(v, "version"))
			: json_string_value(v);

		if (k == (int)label || (ver && !strcmp(ver, version)))
			json_object_del(l, label_names[k]);
	}
	if (label == MGMT_LABEL_CANARY)
		json_object_set_new(l, "canary",
				    json_pack("{s:s, s:i}", "version", version,
					      "percent", (int)pct));
	else if (label != MGMT_LABEL_NONE)
		json_object_set_new(l, label_names[label], json_string(version));
	if (!json_object_size(l))
		json_object_del(labels, name);
	text = json_dumps(labels, JSON_INDENT(2) | JSON_SORT_KEYS);
	snprintf(path, sizeof(path), "%s/labels.json", r->dir);
	rc = text ? mgmt_file_write_atomic(path, text, strlen(text), 0644)
		  : -ENOMEM;
	free(text);
	if (rc) {
		json_decref(labels);
		return rc == -ENOMEM ? rc : -EIO;
	}
	json_decref(r->labels);
	r->labels = labels;
	labels_apply(r);
	return 0;
}

char *mgmt_repo_labels_save(const struct mgmt_repo *r)
{
	return json_dumps(r->labels, JSON_INDENT(2) | JSON_SORT_KEYS);
}

int mgmt_repo_labels_restore(struct mgmt_repo *r, const char *text)
{
	json_t *labels = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
	char path[PATH_MAX + 16];
	int rc;

	if (!json_is_object(labels)) {
		json_decref(labels);
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "%s/labels.json", r->dir);
	rc = mgmt_file_write_atomic(path, text, strlen(text), 0644);
	if (rc) {
		json_decref(labels);
		return -EIO;
	}
	json_decref(r->labels);
	r->labels = labels;
	labels_apply(r);
	return 0;
}

unsigned mgmt_repo_label_names(const struct mgmt_repo *r, const char **out,
			       unsigned max)
{
	const char *k;
	json_t *v;
	unsigned n = 0;

	json_object_foreach(r->labels, k, v) {
		if (n == max)
			break;
		out[n++] = k;
	}
	return n;
}
