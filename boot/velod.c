// SPDX-License-Identifier: MIT
/*
 * velod.c — the appliance daemon's main (docs/velod.md).
 *
 * Threads: this main thread (configuration, the control socket, signals
 * through a signalfd, counter dumps), the dataplane thread (dp_run, pinned
 * to dataplane.core) and the scheduler thread (eng_sched, pinned to
 * scheduler.core).  Signals are blocked in every thread and read from the
 * signalfd here, so no handler ever runs inside the poll loops.
 *
 * Configuration: built-in defaults (Kconfig) as a JSON tree, the file
 * merged over it (unknown keys and wrong types are errors), then the
 * command line in order.  --print-config shows the result.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <velo/auth.h>
#include <velo/compiler.h>

#include "../dataplane/dp.h"
#include "../engine/sched.h"
#include "../tools/lib/clock.h"
#include "../tools/lib/counters.h"
#include "../tools/lib/cpu.h"
#include "../tools/lib/log.h"

#define VELOD_VERSION "0.1"
#define CTL_LINE_MAX 256

static const char usage_text[] =
	"usage: velod [-c FILE] [options]\n"
	"  -c, --config FILE        JSON configuration file\n"
	"  -l, --listen ADDR:PORT   UDP listen address (port 0: any free port)\n"
	"  -k, --keys FILE          pre-shared key file (velo-keygen format)\n"
	"  -s, --control PATH       control socket path (\"\" disables it)\n"
	"      --dp-core N          dataplane thread core (-1: unpinned)\n"
	"      --sched-core N       scheduler thread core (-1: unpinned)\n"
	"      --log SPEC           log levels: \"debug\" or \"dp=debug,sess=info\"\n"
	"      --set KEY=VALUE      set a configuration key by its dotted path\n"
	"                           (VALUE is JSON, else a string)\n"
	"      --print-config       print the effective configuration and exit\n"
	"  -q, --query CMD          send CMD to the control socket, print the answer\n"
	"  -h, --help  -V, --version\n"
	"See docs/velod.md for the configuration keys and control commands.\n";

/* ------------------------------------------------------------------------
 * Configuration tree.
 */

static void set(json_t *o, const char *k, json_t *v)
{
	json_object_set_new(o, k, v);
}

static json_t *cfg_defaults(void)
{
	struct dp_config d;
	struct eng_sched_config e;
	json_t *root = json_object(), *o;

	dp_config_default(&d);
	eng_sched_config_default(&e);
	set(root, "listen", json_string(d.sock.listen));
	set(root, "keys", json_string(""));
	set(root, "control_socket", json_string(CONFIG_BOOT_CONTROL_SOCKET));
	set(root, "log", json_string("info"));

	o = json_object();
	set(o, "core", json_integer(CONFIG_BOOT_DP_CORE));
	set(o, "batch", json_integer(d.sock.batch));
	set(o, "busy_poll_us", json_integer(d.sock.busy_poll_us));
	set(o, "idle_backoff", json_boolean(IS_ENABLED(CONFIG_BOOT_IDLE_BACKOFF)));
	set(o, "idle_polls", json_integer(d.idle_polls));
	set(o, "idle_sleep_us", json_integer(d.idle_sleep_us));
	set(o, "rcvbuf", json_integer(d.sock.rcvbuf));
	set(o, "sndbuf", json_integer(d.sock.sndbuf));
	set(o, "transport", json_string("socket"));	/* or "dpdk" */
	set(root, "dataplane", o);

	/* DPDK transport (docs/dpdk.md): used when dataplane.transport is
	 * "dpdk"; "listen" is then the address the port answers for. */
	o = json_object();
	set(o, "eal", json_string(d.dpdk.eal));
	set(o, "port", json_integer(d.dpdk.port));
	set(o, "mbufs", json_integer(d.dpdk.mbufs));
	set(o, "rx_desc", json_integer(d.dpdk.rx_desc));
	set(o, "tx_desc", json_integer(d.dpdk.tx_desc));
	set(o, "queues", json_integer(d.dpdk.queues));
	set(o, "vlan", json_integer(d.dpdk.vlan));
	set(o, "offloads", json_boolean(d.dpdk.offloads));
	set(root, "dpdk", o);

	o = json_object();
	set(o, "core", json_integer(CONFIG_BOOT_SCHED_CORE));
	set(o, "idle_backoff", json_boolean(IS_ENABLED(CONFIG_BOOT_IDLE_BACKOFF)));
	set(o, "idle_polls", json_integer(e.idle_polls));
	set(o, "idle_sleep_us", json_integer(e.idle_sleep_us));
	set(root, "scheduler", o);

	o = json_object();
	set(o, "max", json_integer(d.sess.sessions_max));
	set(o, "mtu", json_integer(d.sess.mtu));
	set(o, "replay_depth", json_integer(d.sess.replay_depth));
	set(o, "heartbeat_ms", json_integer(d.sess.heartbeat_ms));
	set(o, "heartbeat_min_ms", json_integer(d.sess.heartbeat_min_ms));
	set(o, "heartbeat_max_ms", json_integer(d.sess.heartbeat_max_ms));
	set(o, "timeout_ms", json_integer(d.sess.timeout_ms));
	set(o, "logon_window_ms", json_integer(d.sess.logon_window_ms));
	set(o, "nonce_cache", json_integer(d.sess.nonce_cache));
	set(o, "credit_requests", json_integer(d.sess.credit_requests));
	set(o, "credit_tokens", json_integer(d.sess.credit_tokens));
	set(o, "dedup_ids", json_integer(d.sess.dedup_ids));
	set(o, "rate_pps", json_integer(d.sess.rate_pps));
	set(o, "rate_burst", json_integer(d.sess.rate_burst));
	set(o, "logon_rate_pps", json_integer(d.sess.logon_rate_pps));
	set(o, "logon_rate_burst", json_integer(d.sess.logon_rate_burst));
	set(root, "sessions", o);

	o = json_object();
	set(o, "slots", json_integer(CONFIG_DP_REQ_SLOTS));
	set(o, "prompt_tokens_max", json_integer(d.sess.limits.prompt_tokens_max));
	set(o, "text_bytes_max", json_integer(d.sess.limits.text_bytes_max));
	set(o, "max_tokens_max", json_integer(d.sess.limits.max_tokens_max));
	set(o, "vocab_size", json_integer(d.sess.limits.vocab_size));
	set(o, "response_ring", json_integer(CONFIG_DP_RESP_RING));
	set(root, "requests", o);

	o = json_object();
	set(o, "buffers", json_integer(d.sess.frag_buffers));
	set(o, "bytes", json_integer(d.sess.frag_bytes));
	set(o, "timeout_ms", json_integer(d.sess.frag_timeout_ms));
	set(root, "reassembly", o);

	o = json_object();
	set(o, "seed", json_integer((json_int_t)d.loss.seed));
	set(o, "rx_data", json_real(0));
	set(o, "rx_ctrl", json_real(0));
	set(o, "tx_data", json_real(0));
	set(o, "tx_ctrl", json_real(0));
	set(o, "patterns", json_array());
	set(root, "loss", o);
	/* Models loaded (eagerly, self-tested) at start; see docs/velod.md. */
	set(root, "models", json_array());
	/* Runtime loads (model load / swap on the control socket) take their
	 * budget from the "models" entry of the same name, else from here. */
	o = json_object();
	set(o, "backend", json_string("cpu"));
	set(o, "kv_blocks", json_integer(256));
	set(o, "kv_block_tokens", json_integer(0));
	set(o, "seqs_max", json_integer(16));
	set(o, "step_tokens_max", json_integer(256));
	set(o, "threads", json_integer(1));
	set(o, "queue_max", json_integer(0));
	/* devices a swap alternates over: the new version goes to the
	 * device that does not serve the name (two CPU instances stand in
	 * for two GPUs in CI) */
	set(o, "devices", json_integer(2));
	/* memory all slots of one device may hold (MiB; 0: no budget): a
	 * new version goes to the standby device, else beside the serving
	 * one, else waits briefly for a draining slot to free its share */
	set(o, "device_mem_mb", json_integer(0));
	set(root, "model_defaults", o);
	return root;
}

/* Merge @src over @dst: keys must exist in dst with a compatible type. */
static int cfg_merge(json_t *dst, json_t *src, const char *path, char *err,
		     size_t errlen)
{
	const char *k;
	json_t *v;

	json_object_foreach(src, k, v) {
		json_t *d = json_object_get(dst, k);
		char sub[160];
		bool ok;

		snprintf(sub, sizeof(sub), "%.70s%s%.70s", path, *path ? "." : "", k);
		if (!d) {
			snprintf(err, errlen, "unknown configuration key '%s'", sub);
			return -EINVAL;
		}
		if (json_is_object(d)) {
			int rc;

			if (!json_is_object(v)) {
				snprintf(err, errlen, "'%s' must be an object", sub);
				return -EINVAL;
			}
			rc = cfg_merge(d, v, sub, err, errlen);
			if (rc)
				return rc;
			continue;
		}
		switch (json_typeof(d)) {
		case JSON_INTEGER:
			ok = json_is_integer(v);
			break;
		case JSON_REAL:
			ok = json_is_number(v);
			break;
		case JSON_TRUE:
		case JSON_FALSE:
			ok = json_is_boolean(v);
			break;
		case JSON_STRING:
			ok = json_is_string(v);
			break;
		case JSON_ARRAY:
			ok = json_is_array(v);
			break;
		default:
			ok = false;
		}
		if (!ok) {
			snprintf(err, errlen, "'%s' has the wrong type (%s expected)",
				 sub, json_is_integer(d) ? "integer" :
				 json_is_number(d) ? "number" :
				 json_is_boolean(d) ? "true/false" :
				 json_is_string(d) ? "string" : "array");
			return -EINVAL;
		}
		if (json_is_real(d) && json_is_integer(v))
			set(dst, k, json_real((double)json_integer_value(v)));
		else
			json_object_set(dst, k, v);
	}
	return 0;
}

/* --set a.b.c=VALUE */
static int cfg_set(json_t *root, const char *kv, char *err, size_t errlen)
{
	const char *eq = strchr(kv, '=');
	char path[256], *p, *dot;
	json_t *top, *cur, *val;
	json_error_t je;
	int rc;

	if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof(path)) {
		snprintf(err, errlen, "--set expects KEY=VALUE, got '%s'", kv);
		return -EINVAL;
	}
	memcpy(path, kv, eq - kv);
	path[eq - kv] = 0;
	val = json_loads(eq + 1, JSON_DECODE_ANY, &je);
	if (!val)
		val = json_string(eq + 1);
	top = cur = json_object();
	for (p = path; (dot = strchr(p, '.')); p = dot + 1) {
		json_t *o = json_object();

		*dot = 0;
		set(cur, p, o);
		cur = o;
	}
	set(cur, p, val);
	rc = cfg_merge(root, top, "", err, errlen);
	json_decref(top);
	return rc;
}

static json_t *cfg_get(json_t *root, const char *path)
{
	char buf[128], *p = buf, *dot;
	json_t *o = root;

	snprintf(buf, sizeof(buf), "%s", path);
	while (o && (dot = strchr(p, '.'))) {
		*dot = 0;
		o = json_object_get(o, p);
		p = dot + 1;
	}
	return o ? json_object_get(o, p) : NULL;
}

static int get_int(json_t *root, const char *path, long long lo, long long hi,
		   long long *out, char *err, size_t errlen)
{
	json_t *v = cfg_get(root, path);
	long long x = v ? json_integer_value(v) : 0;

	if (!v || x < lo || x > hi) {
		snprintf(err, errlen, "'%s' must be %lld..%lld", path, lo, hi);
		return -EINVAL;
	}
	*out = x;
	return 0;
}

#define GET_U(path, lo, hi, dst)                                              \
	do {                                                                  \
		long long x_;                                                 \
		if (get_int(root, path, lo, hi, &x_, err, errlen))            \
			return -EINVAL;                                       \
		dst = (__typeof__(dst))x_;                                    \
	} while (0)

#define MODEL_KEYS "name, image, label, backend, kv_blocks, kv_block_tokens, " \
	"seqs_max, step_tokens_max, threads, queue_max, device, share"

struct velod_cfg {
	struct eng_sched_model_config models[ENG_SCHED_MODELS_MAX];
	unsigned n_models;
	struct eng_sched_model_config model_defaults;
	unsigned devices;
	uint64_t device_mem_bytes;	/* per device, all slots; 0: no budget */
	struct dp_config dp;
	struct eng_sched_config sched;
	struct dp_rings_config rings;
	int dp_core;
	const char *keys;
	const char *control;
	const char *log;
	char listen[128];
};

/* "models": [{...}]: strings and integers, unknown keys are errors. */
static int models_extract(json_t *root, struct velod_cfg *c, char *err,
			  size_t errlen)
{
	json_t *arr = cfg_get(root, "models"), *o, *v;
	size_t i;

	if (json_array_size(arr) > ENG_SCHED_MODELS_MAX) {
		snprintf(err, errlen, "at most %d models", ENG_SCHED_MODELS_MAX);
		return -EINVAL;
	}
	json_array_foreach(arr, i, o) {
		struct eng_sched_model_config *m = &c->models[i];
		const char *k;

		if (!json_is_object(o)) {
			snprintf(err, errlen, "models[%zu] must be an object", i);
			return -EINVAL;
		}
		memset(m, 0, sizeof(*m));
		m->seqs_max = 16;
		m->step_tokens_max = 256;
		m->kv_blocks = 256;
		json_object_foreach(o, k, v) {
			const char **str = !strcmp(k, "name") ? &m->name :
					   !strcmp(k, "image") ? &m->image :
					   !strcmp(k, "label") ? &m->label :
					   !strcmp(k, "backend") ? &m->backend : NULL;
			uint32_t *num = !strcmp(k, "kv_blocks") ? &m->kv_blocks :
					!strcmp(k, "kv_block_tokens") ? &m->kv_block_tokens :
					!strcmp(k, "seqs_max") ? &m->seqs_max :
					!strcmp(k, "step_tokens_max") ? &m->step_tokens_max :
					!strcmp(k, "threads") ? &m->threads :
					!strcmp(k, "queue_max") ? &m->queue_max :
					!strcmp(k, "device") ? &m->device :
					!strcmp(k, "share") ? &m->share : NULL;

			if (str && json_is_string(v)) {
				*str = json_string_value(v);
			} else if (num && json_is_integer(v) &&
				   json_integer_value(v) >= 0 &&
				   json_integer_value(v) <= (1 << 24)) {
				*num = (uint32_t)json_integer_value(v);
			} else {
				snprintf(err, errlen, "models[%zu].%s: %s", i, k,
					 str || num ? "wrong type or out of range" :
					 "unknown key (known: " MODEL_KEYS ")");
				return -EINVAL;
			}
		}
		if (!m->image || !*m->image) {
			snprintf(err, errlen, "models[%zu].image is required", i);
			return -EINVAL;
		}
		if (m->device >= ENG_SCHED_DEVICES_MAX || m->share > 99) {
			snprintf(err, errlen, "models[%zu]: device < %d, share 0..99", i,
				 ENG_SCHED_DEVICES_MAX);
			return -EINVAL;
		}
	}
	c->n_models = (unsigned)json_array_size(arr);
	{
		struct eng_sched_model_config *d = &c->model_defaults;

		memset(d, 0, sizeof(*d));
		d->backend = json_string_value(cfg_get(root, "model_defaults.backend"));
		GET_U("model_defaults.kv_blocks", 1, 1 << 24, d->kv_blocks);
		GET_U("model_defaults.kv_block_tokens", 0, 1 << 16, d->kv_block_tokens);
		GET_U("model_defaults.seqs_max", 1, 4096, d->seqs_max);
		GET_U("model_defaults.step_tokens_max", 1, 1 << 20, d->step_tokens_max);
		GET_U("model_defaults.threads", 0, 4096, d->threads);
		GET_U("model_defaults.queue_max", 0, 1 << 24, d->queue_max);
		GET_U("model_defaults.devices", 1, ENG_SCHED_DEVICES_MAX, c->devices);
		GET_U("model_defaults.device_mem_mb", 0, 1 << 30, c->device_mem_bytes);
		c->device_mem_bytes <<= 20;
	}
	return 0;
}

static int cfg_extract(json_t *root, struct velod_cfg *c, char *err,
		       size_t errlen)
{
	json_t *pats;
	const unsigned U = 0x7fffffff;
	size_t i;

	dp_config_default(&c->dp);
	eng_sched_config_default(&c->sched);
	snprintf(c->listen, sizeof(c->listen), "%s",
		 json_string_value(cfg_get(root, "listen")));
	c->dp.sock.listen = c->listen;
	c->keys = json_string_value(cfg_get(root, "keys"));
	c->control = json_string_value(cfg_get(root, "control_socket"));
	c->log = json_string_value(cfg_get(root, "log"));

	GET_U("dataplane.core", -1, 4095, c->dp_core);
	GET_U("dataplane.batch", 1, 64, c->dp.sock.batch);
	GET_U("dataplane.busy_poll_us", 0, 1000000, c->dp.sock.busy_poll_us);
	c->dp.idle_backoff = json_is_true(cfg_get(root, "dataplane.idle_backoff"));
	GET_U("dataplane.idle_polls", 1, U, c->dp.idle_polls);
	GET_U("dataplane.idle_sleep_us", 1, 1000000, c->dp.idle_sleep_us);
	GET_U("dataplane.rcvbuf", 0, U, c->dp.sock.rcvbuf);
	GET_U("dataplane.sndbuf", 0, U, c->dp.sock.sndbuf);
	{
		const char *tr = json_string_value(cfg_get(root, "dataplane.transport"));

		if (!strcmp(tr, "socket")) {
			c->dp.transport = DP_TRANSPORT_SOCK;
		} else if (!strcmp(tr, "dpdk")) {
			c->dp.transport = DP_TRANSPORT_DPDK;
		} else {
			snprintf(err, errlen, "'dataplane.transport' must be "
				 "\"socket\" or \"dpdk\"");
			return -EINVAL;
		}
	}
	c->dp.dpdk.eal = json_string_value(cfg_get(root, "dpdk.eal"));
	GET_U("dpdk.port", 0, 65535, c->dp.dpdk.port);
	GET_U("dpdk.mbufs", 0, 1 << 24, c->dp.dpdk.mbufs);
	GET_U("dpdk.rx_desc", 32, 32768, c->dp.dpdk.rx_desc);
	GET_U("dpdk.tx_desc", 32, 32768, c->dp.dpdk.tx_desc);
	GET_U("dpdk.queues", 1, 16, c->dp.dpdk.queues);
	GET_U("dpdk.vlan", 0, 4094, c->dp.dpdk.vlan);
	c->dp.dpdk.offloads = json_is_true(cfg_get(root, "dpdk.offloads"));

	GET_U("scheduler.core", -1, 4095, c->sched.core);
	c->sched.idle_backoff = json_is_true(cfg_get(root, "scheduler.idle_backoff"));
	GET_U("scheduler.idle_polls", 1, U, c->sched.idle_polls);
	GET_U("scheduler.idle_sleep_us", 1, 1000000, c->sched.idle_sleep_us);

	GET_U("sessions.max", 1, 65535, c->dp.sess.sessions_max);
	GET_U("sessions.mtu", PROTO_MTU_MIN, PROTO_MTU_MAX, c->dp.sess.mtu);
	GET_U("sessions.replay_depth", 4, 65536, c->dp.sess.replay_depth);
	GET_U("sessions.heartbeat_ms", 1, U, c->dp.sess.heartbeat_ms);
	GET_U("sessions.heartbeat_min_ms", 1, U, c->dp.sess.heartbeat_min_ms);
	GET_U("sessions.heartbeat_max_ms", 1, U, c->dp.sess.heartbeat_max_ms);
	GET_U("sessions.timeout_ms", 1, U, c->dp.sess.timeout_ms);
	GET_U("sessions.logon_window_ms", 1, U, c->dp.sess.logon_window_ms);
	GET_U("sessions.nonce_cache", 1, 1 << 22, c->dp.sess.nonce_cache);
	GET_U("sessions.credit_requests", 1, U, c->dp.sess.credit_requests);
	GET_U("sessions.credit_tokens", 1, U, c->dp.sess.credit_tokens);
	GET_U("sessions.dedup_ids", 2, 65536, c->dp.sess.dedup_ids);
	GET_U("sessions.rate_pps", 0, U, c->dp.sess.rate_pps);
	GET_U("sessions.rate_burst", 0, U, c->dp.sess.rate_burst);
	GET_U("sessions.logon_rate_pps", 0, U, c->dp.sess.logon_rate_pps);
	GET_U("sessions.logon_rate_burst", 0, U, c->dp.sess.logon_rate_burst);

	GET_U("requests.slots", 1, 1 << 20, c->rings.slots);
	GET_U("requests.prompt_tokens_max", 1, 1 << 24,
	      c->dp.sess.limits.prompt_tokens_max);
	GET_U("requests.text_bytes_max", 64, 1 << 26, c->dp.sess.limits.text_bytes_max);
	GET_U("requests.max_tokens_max", 1, 1 << 24, c->dp.sess.limits.max_tokens_max);
	GET_U("requests.vocab_size", 0, U, c->dp.sess.limits.vocab_size);
	GET_U("requests.response_ring", 2, 1 << 20, c->rings.resp_entries);
	if (c->rings.resp_entries & (c->rings.resp_entries - 1)) {
		snprintf(err, errlen, "'requests.response_ring' must be a power of two");
		return -EINVAL;
	}
	c->rings.prompt_tokens_max = c->dp.sess.limits.prompt_tokens_max;
	c->rings.text_bytes_max = c->dp.sess.limits.text_bytes_max;

	GET_U("reassembly.buffers", 1, 65536, c->dp.sess.frag_buffers);
	GET_U("reassembly.bytes", 64, 64 << 20, c->dp.sess.frag_bytes);
	GET_U("reassembly.timeout_ms", 1, U, c->dp.sess.frag_timeout_ms);

	{
		json_t *seed = cfg_get(root, "loss.seed");

		c->dp.loss.seed = (uint64_t)json_integer_value(seed);
	}
	c->dp.loss.rate[DP_LOSS_RX][DP_LOSS_DATA] = json_number_value(cfg_get(root, "loss.rx_data"));
	c->dp.loss.rate[DP_LOSS_RX][DP_LOSS_CTRL] = json_number_value(cfg_get(root, "loss.rx_ctrl"));
	c->dp.loss.rate[DP_LOSS_TX][DP_LOSS_DATA] = json_number_value(cfg_get(root, "loss.tx_data"));
	c->dp.loss.rate[DP_LOSS_TX][DP_LOSS_CTRL] = json_number_value(cfg_get(root, "loss.tx_ctrl"));
	pats = cfg_get(root, "loss.patterns");
	if (json_array_size(pats) > DP_LOSS_RULES_MAX) {
		snprintf(err, errlen, "at most %d loss.patterns", DP_LOSS_RULES_MAX);
		return -EINVAL;
	}
	for (i = 0; i < json_array_size(pats); i++) {
		json_t *p = json_array_get(pats, i);

		if (!json_is_string(p)) {
			snprintf(err, errlen, "loss.patterns[%zu] must be a string", i);
			return -EINVAL;
		}
		c->dp.loss.patterns[i] = json_string_value(p);
	}
	c->dp.loss.n_patterns = (unsigned)i;
	c->dp.sock.mtu = c->dp.sess.mtu;
	c->sched.text_bytes_max = c->dp.sess.limits.text_bytes_max;
	if (models_extract(root, c, err, errlen))
		return -EINVAL;
	return dp_sess_config_check(&c->dp.sess, err, errlen);
}

/* ------------------------------------------------------------------------
 * Control socket.
 */

/* Model commands waiting for the loader at most (mgmtd's confirm timer may
 * send a rollback while an operator's swap loads). */
#define LOADER_QUEUE 4

/* What the loader keeps on a slot beyond its route (indexed like the
 * scheduler's table). */
enum { HOLD_NONE = 0, HOLD_ROLLBACK, HOLD_DRAIN };

/* The loader thread: runtime model commands, one at a time. */
struct velod_loader {
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;			/* under lock */
	/* jobs waiting, FIFO (under lock): the control connection to answer
	 * and the command; more than LOADER_QUEUE: "error: busy" */
	struct {
		int fd;
		char line[CTL_LINE_MAX];
	} q[LOADER_QUEUE];
	unsigned q_head, q_n;
	char what[CTL_LINE_MAX];	/* the job running, for status */
	/* loader-owned, read racily by status: HOLD_* per slot index */
	uint8_t hold[ENG_SCHED_MODELS_MAX];
	/* DONE records of freed slots per name + version (under lock), so
	 * that "model served" accounts for every request ever served */
	struct {
		char name[ENG_SCHED_NAME_LEN];
		char version[ENG_SCHED_VERSION_LEN];
		uint64_t served;
	} tally[16];
};

struct velod {
	struct velod_cfg cfg;
	struct velod_loader ld;
	struct dp_rings rings;
	struct eng_sched sched;
	struct dp dp;
	pthread_t dp_thread;
	uint64_t start_ns;
	int ctl_fd;
	int sig_fd;
	bool quit;
};

static void counters_print(FILE *f, bool all)
{
	ctr_dump(f, all);
}

static char *counters_json(void)
{
	json_t *o = json_object();
	char name[128], *s;

	for (unsigned b = 0; b < ctr_block_count(); b++) {
		const struct ctr_block *blk = ctr_block_get(b);

		for (unsigned i = 0; i < blk->n; i++) {
			snprintf(name, sizeof(name), "%s.%s", blk->prefix,
				 blk->desc[i].name);
			set(o, name, json_integer((json_int_t)ctr_read(&blk->vals[i])));
		}
	}
	s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}

static uint64_t rd64(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Racy reads of the dataplane's session tables: display only.  Every
 * dataplane loop's sessions (one table per DPDK queue), read from
 * this thread while the loops run: see dp_loop_sess(). */
static void sessions_out(struct velod *v, FILE *f, bool as_json)
{
	uint64_t now = clock_mono_ns();
	json_t *arr = as_json ? json_array() : NULL;

	if (!as_json)
		fprintf(f, "%-18s %4s %-22s %6s %9s %8s %6s %10s %10s %4s %9s %9s %s\n",
			"id", "loop", "peer", "key", "age_ms", "idle_ms", "hb_ms",
			"next_seq", "peer_ack", "infl", "rx", "tx", "name");
	for (unsigned l = 0; l < dp_loops(&v->dp); l++) {
		struct dp_sess_table *t = dp_loop_sess(&v->dp, l);

		for (unsigned i = 0; i < t->cfg.sessions_max; i++) {
			struct dp_sess *s = &t->sess[i];
			struct dp_sess c;
			char peer[64];
			uint64_t id = rd64(&s->id);

			if (!id || __atomic_load_n(&s->state, __ATOMIC_RELAXED) != DP_SESS_ACTIVE)
				continue;
			memcpy(&c, s, sizeof(c));	/* a snapshot, torn at worst */
			c.client_name[sizeof(c.client_name) - 1] = 0;
			dp_addr_format(&c.peer, peer, sizeof(peer));
			if (as_json) {
				json_t *o = json_object();
				char hex[24];

				snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)id);
				set(o, "id", json_string(hex));
				set(o, "loop", json_integer(l));
				set(o, "peer", json_string(peer));
				set(o, "key_id", json_integer(c.key_id));
				set(o, "age_ms", json_integer((json_int_t)((now - c.opened_ns) / 1000000)));
				set(o, "idle_ms", json_integer((json_int_t)((now - c.last_rx_ns) / 1000000)));
				set(o, "heartbeat_ms", json_integer(c.heartbeat_ms));
				set(o, "mtu", json_integer(c.mtu));
				set(o, "next_seq", json_integer((json_int_t)c.tx_seq));
				set(o, "peer_ack", json_integer((json_int_t)c.peer_ack));
				set(o, "in_flight", json_integer(c.inflight_reqs));
				set(o, "rx_datagrams", json_integer((json_int_t)c.rx_datagrams));
				set(o, "tx_datagrams", json_integer((json_int_t)c.tx_datagrams));
				set(o, "name", json_string(c.client_name));
				json_array_append_new(arr, o);
			} else {
				fprintf(f, "%016llx %4u %-22s %6u %9llu %8llu %6u %10llu %10llu %4u %9llu %9llu %s\n",
					(unsigned long long)id, l, peer, c.key_id,
					(unsigned long long)((now - c.opened_ns) / 1000000),
					(unsigned long long)((now - c.last_rx_ns) / 1000000),
					c.heartbeat_ms, (unsigned long long)c.tx_seq,
					(unsigned long long)c.peer_ack, c.inflight_reqs,
					(unsigned long long)c.rx_datagrams,
					(unsigned long long)c.tx_datagrams, c.client_name);
			}
		}
	}
	if (as_json) {
		char *s = json_dumps(arr, JSON_INDENT(1) | JSON_PRESERVE_ORDER);

		fprintf(f, "%s\n", s ? s : "[]");
		free(s);
		json_decref(arr);
	}
}

static void stats_out(struct velod *v, FILE *f, bool as_json)
{
	const struct dp_loss_config *l = &v->cfg.dp.loss;
	json_t *o = json_object(), *loss = json_object();
	/* every dataplane loop's table summed (dp_loop_sess) */
	uint64_t active = 0, smax = 0, frags = 0, rxd = 0, txd = 0, rxb = 0, txb = 0;
	char *s;

	for (unsigned i = 0; i < dp_loops(&v->dp); i++) {
		struct dp_sess_table *t = dp_loop_sess(&v->dp, i);

		active += __atomic_load_n(&t->n_active, __ATOMIC_RELAXED);
		smax += t->cfg.sessions_max;
		frags += __atomic_load_n(&t->frags_used, __ATOMIC_RELAXED);
		rxd += rd64(&t->dp_ctr[DP_CTR_rx_datagrams]);
		txd += rd64(&t->dp_ctr[DP_CTR_tx_datagrams]);
		rxb += rd64(&t->dp_ctr[DP_CTR_rx_bytes]);
		txb += rd64(&t->dp_ctr[DP_CTR_tx_bytes]);
	}

	set(o, "uptime_s", json_integer((json_int_t)((clock_mono_ns() - v->start_ns) / 1000000000ull)));
	{
		char a[80];

		set(o, "listen", json_string(dp_addr_format(&v->dp.sock.local, a,
							    sizeof(a))));
	}
	set(o, "dataplane_loops", json_integer(dp_loops(&v->dp)));
	set(o, "sessions_active", json_integer((json_int_t)active));
	set(o, "sessions_max", json_integer((json_int_t)smax));
	set(o, "request_slots_in_use", json_integer(dp_rings_slots_in_use(&v->rings)));
	set(o, "request_slots", json_integer(v->rings.n_slots));
	set(o, "reassembly_in_use", json_integer((json_int_t)frags));
	set(o, "engine_state", json_string(dp_rings_engine_state(&v->rings) ==
					   PROTO_STATE_READY ? "ready" : "not_ready"));
	{
		char why[ENG_SCHED_WHY_LEN + 96] = "";
		bool ok = eng_sched_ready(&v->sched, why, sizeof(why));

		set(o, "ready", json_boolean(ok));
		set(o, "not_ready_reason", json_string(ok ? "" : why));
		set(o, "models", json_integer(eng_sched_model_count(&v->sched)));
		if (as_json) {
			/* the routed models, for mgmt: NAME/VERSION served */
			json_t *arr = json_array();

			for (unsigned i = 0; i < eng_sched_model_count(&v->sched); i++) {
				struct eng_sched_model_status st;
				json_t *m;

				if (eng_sched_model_status(&v->sched, i, &st) ||
				    st.state != ENG_MODEL_READY ||
				    st.route == ENG_ROUTE_NONE ||
				    st.route == ENG_ROUTE_SHADOW)
					continue;
				m = json_object();
				set(m, "name", json_string(st.name));
				set(m, "version", json_string(st.version));
				set(m, "label", json_string(st.route == ENG_ROUTE_CANARY ?
							    "canary" : "production"));
				json_array_append_new(arr, m);
			}
			set(o, "loaded", arr);
		}
	}
	set(o, "rx_datagrams", json_integer((json_int_t)rxd));
	set(o, "tx_datagrams", json_integer((json_int_t)txd));
	set(o, "rx_bytes", json_integer((json_int_t)rxb));
	set(o, "tx_bytes", json_integer((json_int_t)txb));
	set(loss, "active", json_boolean(v->dp.loss_on));
	set(loss, "seed", json_integer((json_int_t)l->seed));
	set(loss, "rx_data", json_real(l->rate[0][0]));
	set(loss, "rx_ctrl", json_real(l->rate[0][1]));
	set(loss, "tx_data", json_real(l->rate[1][0]));
	set(loss, "tx_ctrl", json_real(l->rate[1][1]));
	set(loss, "patterns", json_integer(l->n_patterns));
	set(o, "loss", loss);
	if (as_json) {
		s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
		fprintf(f, "%s\n", s ? s : "{}");
		free(s);
	} else {
		const char *k;
		json_t *x;

		json_object_foreach(o, k, x) {
			if (json_is_object(x))
				continue;
			s = json_dumps(x, JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
			fprintf(f, "%s %s\n", k, s ? s : "?");
			free(s);
		}
		fprintf(f, "loss %s seed %llu rx_data %g rx_ctrl %g tx_data %g "
			"tx_ctrl %g patterns %u\n", v->dp.loss_on ? "on" : "off",
			(unsigned long long)l->seed, l->rate[0][0], l->rate[0][1],
			l->rate[1][0], l->rate[1][1], l->n_patterns);
	}
	json_decref(o);
}

/* metrics json: the request latency histograms, cumulative as Prometheus
 * wants them: {"time_to_first_token_seconds": {"le": [...], "buckets":
 * [cumulative counts per le], "count": N, "sum": seconds}, ...} */
static void metrics_out(struct velod *v, FILE *f)
{
	json_t *o = json_object();
	char *str;

	for (unsigned h = 0; h < ENG_SCHED_HIST__COUNT; h++) {
		const struct eng_sched_hist *x = &v->sched.hist[h];
		json_t *m = json_object(), *le = json_array(), *b = json_array();
		unsigned n;
		const uint32_t *bound = eng_sched_hist_le_us(h, &n);
		uint64_t cum = 0;

		for (unsigned i = 0; i < n; i++) {
			cum += __atomic_load_n(&x->bucket[i], __ATOMIC_RELAXED);
			json_array_append_new(le, json_real(bound[i] / 1e6));
			json_array_append_new(b, json_integer((json_int_t)cum));
		}
		set(m, "le", le);
		set(m, "buckets", b);
		set(m, "count", json_integer((json_int_t)__atomic_load_n(&x->count,
								      __ATOMIC_RELAXED)));
		set(m, "sum", json_real(__atomic_load_n(&x->sum_us, __ATOMIC_RELAXED) / 1e6));
		set(o, eng_sched_hist_name(h), m);
	}
	str = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER |
			 JSON_REAL_PRECISION(9));
	fprintf(f, "%s\n", str ? str : "{}");
	free(str);
	json_decref(o);
}

static const char *const route_names[] = {
	[ENG_ROUTE_NONE] = "standby", [ENG_ROUTE_PRODUCTION] = "production",
	[ENG_ROUTE_CANARY] = "canary", [ENG_ROUTE_SHADOW] = "shadow",
};
static const char *const hold_names[] = {
	[HOLD_NONE] = "", [HOLD_ROLLBACK] = "rollback", [HOLD_DRAIN] = "draining",
};
static const char *const state_names[] = {
	[ENG_MODEL_EMPTY] = "empty", [ENG_MODEL_LOADING] = "loading",
	[ENG_MODEL_READY] = "ready", [ENG_MODEL_FAILED] = "failed",
};

/* models [json] / model status NAME [json] */
static void models_out(struct velod *v, FILE *f, const char *only, bool as_json)
{
	json_t *arr = json_array();
	unsigned shown = 0;

	for (unsigned i = 0; i < eng_sched_model_count(&v->sched); i++) {
		struct eng_sched_model_status st;
		const char *hold;
		json_t *o;

		if (eng_sched_model_status(&v->sched, i, &st) ||
		    (only && strcmp(only, st.name) && strcmp(only, st.image)))
			continue;
		shown++;
		hold = hold_names[__atomic_load_n(&v->ld.hold[i], __ATOMIC_RELAXED) % 3];
		if (!as_json && !only) {
			if (shown == 1)
				fprintf(f, "%-3s %-20s %-12s %-11s %-7s %-9s %3s %5s %8s %7s %7s %s\n",
					"id", "name", "version", "label", "state", "hold",
					"dev", "infl", "served", "load_s", "test_s", "image");
			fprintf(f, "%-3u %-20s %-12s %-11s %-7s %-9s %3u %5u %8llu %7.3f %7.3f %s%s%s\n",
				st.id, st.name, st.version, route_names[st.route],
				state_names[st.state], hold[0] ? hold : "-", st.device,
				st.inflight, (unsigned long long)st.served, st.load_s,
				st.selftest_s, st.image, st.why[0] ? "  -- " : "", st.why);
			continue;
		}
		o = json_object();
		set(o, "id", json_integer(st.id));
		set(o, "name", json_string(st.name));
		set(o, "version", json_string(st.version));
		set(o, "label", json_string(route_names[st.route]));
		set(o, "state", json_string(state_names[st.state]));
		set(o, "routed", json_boolean(st.state == ENG_MODEL_READY &&
					      st.route != ENG_ROUTE_NONE &&
					      st.route != ENG_ROUTE_SHADOW));
		set(o, "hold", json_string(hold));
		set(o, "device", json_integer(st.device));
		set(o, "share", json_integer(st.share));
		set(o, "inflight", json_integer(st.inflight));
		set(o, "served", json_integer((json_int_t)st.served));
		set(o, "kv_blocks_used", json_integer(st.kv_used));
		set(o, "kv_blocks_free", json_integer(st.kv_free));
		set(o, "kv_blocks_cached", json_integer(st.kv_cached));
		set(o, "image", json_string(st.image));
		set(o, "reason", json_string(st.why));
		set(o, "vocab", json_integer(st.vocab));
		set(o, "ctx_max", json_integer(st.ctx_max));
		set(o, "kv_blocks", json_integer(st.kv_blocks));
		set(o, "kv_block_tokens", json_integer(st.kv_block_tokens));
		set(o, "seqs_max", json_integer(st.seqs_max));
		set(o, "step_tokens_max", json_integer(st.step_tokens_max));
		set(o, "threads", json_integer(st.threads));
		set(o, "mem_bytes", json_integer((json_int_t)st.mem_bytes));
		set(o, "kv_bytes", json_integer((json_int_t)st.kv_bytes));
		set(o, "load_s", json_real(st.load_s));
		set(o, "selftest_s", json_real(st.selftest_s));
		set(o, "selftest_prompt_tokens", json_integer(st.ka_prompt));
		set(o, "selftest_expect_tokens", json_integer(st.ka_expect));
		set(o, "prefill_us_per_token", json_real(st.prefill_us_per_token));
		set(o, "decode_us_per_step", json_real(st.decode_us_per_step));
		json_array_append_new(arr, o);
	}
	if (only && !shown) {
		fprintf(f, "error: no model '%s'\n", only);
	} else if (as_json || only) {
		char *s = json_dumps(only && !as_json ? json_array_get(arr, 0) : arr,
				     JSON_INDENT(1) | JSON_PRESERVE_ORDER);

		if (only && !as_json) {
			/* key value lines */
			json_t *o = json_array_get(arr, 0), *x;
			const char *k;

			json_object_foreach(o, k, x) {
				char *t = json_dumps(x, JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));

				fprintf(f, "%s %s\n", k, t ? t : "?");
				free(t);
			}
		} else {
			fprintf(f, "%s\n", s ? s : "[]");
		}
		free(s);
	} else if (!shown) {
		fprintf(f, "no models loaded\n");
	}
	if (!as_json && !only && v->ld.what[0])
		fprintf(f, "loader: %s\n", v->ld.what);
	json_decref(arr);
}

/* ------------------------------------------------------------------------
 * Runtime model management: the loader thread (docs/velod.md, "Hot swap").
 *
 * The main thread hands a "model load|swap|unload|rollback|confirm" line
 * and its connection to the loader and goes on answering the control
 * socket (mgmtd's heartbeat keeps working during a load); the loader
 * answers on that connection when done.  One job at a time, up to
 * LOADER_QUEUE more wait in order; beyond that "error: busy".  Loading (image FULL verify,
 * tokenizer, backend, self-test) runs here; the scheduler only takes the
 * ready slot or flips a route between two polls (engine/sched.h).  Slots
 * to free ("draining": unrouted, finishing their requests) are retried
 * every 2 ms until the scheduler has no request left on them.
 */

/* Bound of one "model unload": draining slots whose requests last longer
 * are freed later in the background (the answer says so). */
#define UNLOAD_WAIT_MS 30000
/* The loader's nice value (threads it creates inherit it: CPU worker
 * pools of runtime loads, see docs/velod.md). */
#define LOADER_NICE 5


#define ST(sm) eng_sched_slot_status(sm)

static struct eng_sched_model *slot_get(struct velod *v, int i)
{
	return i >= 0 && (unsigned)i < v->sched.n_models ? v->sched.models[i] : NULL;
}

/* Loader thread: remember what a freed slot served. */
static void tally_add(struct velod *v, const char *name, const char *version,
		      uint64_t n)
{
	struct velod_loader *ld = &v->ld;

	pthread_mutex_lock(&ld->lock);
	for (unsigned i = 0; i < ARRAY_SIZE(ld->tally); i++) {
		if (!ld->tally[i].name[0]) {
			snprintf(ld->tally[i].name, sizeof(ld->tally[i].name), "%s", name);
			snprintf(ld->tally[i].version, sizeof(ld->tally[i].version),
				 "%s", version);
		}
		if (!strcmp(ld->tally[i].name, name) &&
		    !strcmp(ld->tally[i].version, version)) {
			ld->tally[i].served += n;
			break;
		}
	}
	pthread_mutex_unlock(&ld->lock);
}

/* Main thread: "model served": DONE records per name and version, of the
 * slots loaded now and of those freed. */
static void served_out(struct velod *v, FILE *f)
{
	struct velod_loader *ld = &v->ld;
	struct eng_sched_model_status st;
	struct {
		char key[ENG_SCHED_NAME_LEN + ENG_SCHED_VERSION_LEN + 2];
		uint64_t n;
	} t[16 + ENG_SCHED_MODELS_MAX];
	unsigned n = 0;

	memset(t, 0, sizeof(t));
	pthread_mutex_lock(&ld->lock);
	for (unsigned i = 0; i < ARRAY_SIZE(ld->tally) && ld->tally[i].name[0]; i++) {
		snprintf(t[n].key, sizeof(t[n].key), "%s %s", ld->tally[i].name,
			 ld->tally[i].version);
		t[n++].n = ld->tally[i].served;
	}
	pthread_mutex_unlock(&ld->lock);
	for (unsigned i = 0; i < eng_sched_model_count(&v->sched); i++) {
		char key[sizeof(t[0].key)];
		unsigned j;

		if (eng_sched_model_status(&v->sched, i, &st))
			continue;
		snprintf(key, sizeof(key), "%s %s", st.name, st.version);
		for (j = 0; j < n && strcmp(t[j].key, key); j++)
			;
		if (j == n)
			snprintf(t[n++].key, sizeof(key), "%s", key);
		t[j].n += st.served;
	}
	for (unsigned i = 0; i < n; i++)
		fprintf(f, "%s %llu\n", t[i].key, (unsigned long long)t[i].n);
}

/* Free the draining slots that have no request left.  Returns how many
 * still drain. */
static unsigned drain_tick(struct velod *v)
{
	unsigned left = 0;

	for (unsigned i = 0; i < ENG_SCHED_MODELS_MAX; i++) {
		struct eng_sched_model *sm;
		char what[ENG_SCHED_NAME_LEN + ENG_SCHED_VERSION_LEN + 2];
		int rc;

		if (v->ld.hold[i] != HOLD_DRAIN)
			continue;
		if (!slot_get(v, (int)i)) {
			v->ld.hold[i] = HOLD_NONE;
			continue;
		}
		snprintf(what, sizeof(what), "%s %s", ST(v->sched.models[i])->name,
			 ST(v->sched.models[i])->version);
		rc = eng_sched_slot_detach(&v->sched, i, &sm);
		if (rc == -EBUSY) {
			left++;
			continue;
		}
		v->ld.hold[i] = HOLD_NONE;
		if (rc)
			continue;
		tally_add(v, ST(sm)->name, ST(sm)->version, ST(sm)->served);
		eng_sched_slot_free(&v->sched, sm);
		v->sched.mctr[ENG_MODEL_CTR_unloads]++;
		LOG_I(boot, "model %s (slot %u) drained and freed", what, i + 1);
	}
	return left;
}

/* The warm rollback slot of @name, or -1. */
static int rollback_slot(struct velod *v, const char *name)
{
	for (unsigned i = 0; i < ENG_SCHED_MODELS_MAX; i++) {
		struct eng_sched_model *sm = slot_get(v, (int)i);

		if (sm && v->ld.hold[i] == HOLD_ROLLBACK && !strcmp(ST(sm)->name, name))
			return (int)i;
	}
	return -1;
}

/* Bytes the slots on device @d hold (serving, warm, draining); *@draining
 * when one of them is draining (its share will come back). */
static uint64_t dev_used(struct velod *v, unsigned d, bool *draining)
{
	uint64_t used = 0;

	for (unsigned i = 0; i < ENG_SCHED_MODELS_MAX; i++) {
		struct eng_sched_model *sm = slot_get(v, (int)i);

		if (!sm || ST(sm)->device != d)
			continue;
		used += ST(sm)->mem_bytes;
		if (v->ld.hold[i] == HOLD_DRAIN)
			*draining = true;
	}
	return used;
}

/* How long a load waits for a draining slot to free room on a device. */
#define DEVICE_WAIT_MS 5000

/*
 * The device of a new slot of about @need bytes (the size of the name's
 * current slot @c; 0 when unknown): @want if given, else the standby
 * device (the one not serving the name), else beside the serving one.
 * Under model_defaults.device_mem_mb, a device without room is skipped;
 * when none has room but one has a draining slot, the load waits for it
 * (bounded by DEVICE_WAIT_MS) and @note says so.  Return: the device, or
 * -1 with the reason written to @f.
 */
static int pick_device(struct velod *v, int want, struct eng_sched_model *c,
		       char *note, size_t notelen, FILE *f)
{
	uint64_t budget = v->cfg.device_mem_bytes, need = c ? ST(c)->mem_bytes : 0;
	uint64_t t0 = clock_mono_ns();
	unsigned cand[ENG_SCHED_DEVICES_MAX] = { 0 }, n = 0;

	note[0] = 0;
	if (want >= 0) {
		cand[n++] = (unsigned)want;
	} else if (c) {
		cand[n++] = (ST(c)->device + 1) % v->cfg.devices;
		if (cand[0] != ST(c)->device)
			cand[n++] = ST(c)->device;	/* beside it */
	} else {
		for (unsigned d = 0; d < v->cfg.devices; d++)
			cand[n++] = d;
	}
	if (!budget)
		return (int)cand[0];
	for (;;) {
		const struct timespec nap = { 0, 2000000 };
		bool draining = false;

		for (unsigned k = 0; k < n; k++)
			if (dev_used(v, cand[k], &draining) + need <= budget) {
				if (clock_mono_ns() - t0 > 1000000)
					snprintf(note, notelen, "; queued %llu ms for "
						 "room on device %u",
						 (unsigned long long)((clock_mono_ns() - t0) /
								      1000000), cand[k]);
				return (int)cand[k];
			}
		if (!draining) {
			fprintf(f, "error: no room for %s (%llu MiB) on device %u%s "
				"(device_mem_mb %llu): confirm, roll back or unload "
				"first (serving untouched)\n", c ? ST(c)->name : "the model",
				(unsigned long long)(need >> 20), cand[0],
				n > 1 ? " or beside the serving slot" : "",
				(unsigned long long)(budget >> 20));
			return -1;
		}
		if (clock_mono_ns() - t0 > DEVICE_WAIT_MS * 1000000ull) {
			fprintf(f, "error: no room on device %u after %d ms: its "
				"draining slots still have requests (serving "
				"untouched)\n", cand[0], DEVICE_WAIT_MS);
			return -1;
		}
		drain_tick(v);
		nanosleep(&nap, NULL);
	}
}

/* The budget of a runtime load: the "models" entry of that name, else
 * model_defaults. */
static void mc_fill(struct velod *v, struct eng_sched_model_config *mc,
		    const char *name, const char *image)
{
	*mc = v->cfg.model_defaults;
	for (unsigned i = 0; i < v->cfg.n_models; i++)
		if (v->cfg.models[i].name && !strcmp(v->cfg.models[i].name, name)) {
			*mc = v->cfg.models[i];
			break;
		}
	mc->name = name;
	mc->image = image;
	mc->label = "production";
	mc->share = 0;
}

static bool is_image_arg(const char *a)
{
	size_t n = strlen(a);

	return strchr(a, '/') || (n > 5 && (!strcmp(a + n - 5, ".velo") ||
					   !strcmp(a + n - 5, ".vimg")));
}

struct job_args {
	const char *name, *version, *image, *label;
	int device;			/* -1: the standby device */
	uint32_t share;
};

/* NAME [VERSION] [IMAGE] [device N] [label L] [share P] */
static int job_parse(char **w, int n, struct job_args *a, FILE *f)
{
	int i = 3;

	memset(a, 0, sizeof(*a));
	a->device = -1;
	if (n < 3) {
		fprintf(f, "error: model %s NAME ...: no name\n", w[1]);
		return -EINVAL;
	}
	a->name = w[2];
	if (strlen(a->name) >= ENG_SCHED_NAME_LEN) {
		fprintf(f, "error: model name longer than %d\n", ENG_SCHED_NAME_LEN - 1);
		return -EINVAL;
	}
	for (; i < n && strcmp(w[i], "device") && strcmp(w[i], "label") &&
	       strcmp(w[i], "share"); i++) {
		if (is_image_arg(w[i]) && !a->image)
			a->image = w[i];
		else if (!a->version && !a->image)
			a->version = w[i];
		else {
			fprintf(f, "error: unexpected '%s'\n", w[i]);
			return -EINVAL;
		}
	}
	for (; i + 1 < n; i += 2) {
		char *end;
		unsigned long x = strtoul(w[i + 1], &end, 10);

		if (!strcmp(w[i], "label")) {
			a->label = w[i + 1];
			continue;
		}
		if (*end || end == w[i + 1]) {
			fprintf(f, "error: %s takes a number\n", w[i]);
			return -EINVAL;
		}
		if (!strcmp(w[i], "device") && x < ENG_SCHED_DEVICES_MAX)
			a->device = (int)x;
		else if (!strcmp(w[i], "share") && x >= 1 && x <= 99)
			a->share = (uint32_t)x;
		else {
			fprintf(f, "error: %s %s out of range (device < %d, share 1..99)\n",
				w[i], w[i + 1], ENG_SCHED_DEVICES_MAX);
			return -EINVAL;
		}
	}
	if (i < n) {
		fprintf(f, "error: '%s' without a value\n", w[i]);
		return -EINVAL;
	}
	if (a->label && strcmp(a->label, "production") && strcmp(a->label, "canary") &&
	    strcmp(a->label, "shadow")) {
		fprintf(f, "error: label production|canary|shadow\n");
		return -EINVAL;
	}
	if (a->share && (!a->label || strcmp(a->label, "canary"))) {
		fprintf(f, "error: share is for a canary\n");
		return -EINVAL;
	}
	if (a->label && !strcmp(a->label, "canary") && !a->share) {
		fprintf(f, "error: a canary needs share 1..99 (percent of admissions)\n");
		return -EINVAL;
	}
	return 0;
}

/* Load @a on @device; on success the slot, not installed. */
static struct eng_sched_model *job_load_slot(struct velod *v,
					     const struct job_args *a,
					     unsigned device, FILE *f)
{
	struct eng_sched_model_config mc;
	struct eng_sched_model *sm;
	char err[ENG_SCHED_WHY_LEN];
	int rc;

	mc_fill(v, &mc, a->name, a->image);
	mc.device = device;
	snprintf(v->ld.what, sizeof(v->ld.what), "loading %s %s on device %u",
		 a->name, a->image, device);
	rc = eng_sched_slot_load(&v->sched, &mc, &sm, err, sizeof(err));
	v->ld.what[0] = 0;
	if (rc) {
		fprintf(f, "error: %s: %s refused: %s (serving untouched)\n",
			a->name, a->image, err);
		return NULL;
	}
	if (a->version && strcmp(a->version, ST(sm)->version)) {
		fprintf(f, "error: %s is version '%s', not '%s' (serving untouched)\n",
			a->image, ST(sm)->version, a->version);
		eng_sched_slot_free(&v->sched, sm);
		v->sched.mctr[ENG_MODEL_CTR_load_failures]++;
		return NULL;
	}
	return sm;
}

static int job_install(struct velod *v, struct eng_sched_model *sm,
		       enum eng_route route, uint32_t share, unsigned *index,
		       FILE *f)
{
	int rc = eng_sched_slot_install(&v->sched, sm, route, share, index);

	if (rc) {
		fprintf(f, "error: %s %s not routed: %s\n", ST(sm)->name,
			ST(sm)->version, rc == -ENOSPC ? "every model slot is in use "
			"(confirm or unload first)" : rc == -EEXIST ?
			"the name has one with that label already" : strerror(-rc));
		eng_sched_slot_free(&v->sched, sm);
		return rc;
	}
	v->ld.hold[*index] = HOLD_NONE;
	return 0;
}

static void job_load(struct velod *v, const struct job_args *a, FILE *f)
{
	int cur = eng_sched_slot_find(&v->sched, a->name, NULL, ENG_ROUTE_PRODUCTION);
	bool canary = a->label && !strcmp(a->label, "canary");
	bool shadow = a->label && !strcmp(a->label, "shadow");
	struct eng_sched_model *sm, *c = slot_get(v, cur);
	char note[80];
	unsigned idx;
	int dev;

	if (!a->image) {
		fprintf(f, "error: model load NAME [VERSION] IMAGE [device N] "
			"[label production|canary share P|shadow]\n");
		return;
	}
	if (!canary && !shadow && c) {
		fprintf(f, "error: %s is already loaded (%s on device %u): use model swap\n",
			a->name, ST(c)->version, ST(c)->device);
		return;
	}
	if ((canary || shadow) && !c) {
		fprintf(f, "error: a %s of %s needs a production slot first\n",
			a->label, a->name);
		return;
	}
	dev = pick_device(v, a->device, c, note, sizeof(note), f);
	if (dev < 0)
		return;
	sm = job_load_slot(v, a, (unsigned)dev, f);
	if (!sm)
		return;
	if (job_install(v, sm, canary ? ENG_ROUTE_CANARY : shadow ? ENG_ROUTE_SHADOW :
			ENG_ROUTE_PRODUCTION, a->share, &idx, f))
		return;
	if (shadow)
		fprintf(f, "ok %s %s loaded, self-test passed (shadow of %s: copies "
			"of its requests, answers discarded; device %u, slot %u, "
			"load %.3f s, self-test %.3f s%s)\n", ST(sm)->name,
			ST(sm)->version, ST(c)->version, ST(sm)->device, idx + 1,
			ST(sm)->load_s, ST(sm)->selftest_s, note);
	else if (canary)
		fprintf(f, "ok %s %s loaded, self-test passed (canary, %u %% of %s, "
			"device %u, slot %u, load %.3f s, self-test %.3f s%s)\n",
			ST(sm)->name, ST(sm)->version, a->share, ST(c)->version,
			ST(sm)->device, idx + 1, ST(sm)->load_s, ST(sm)->selftest_s,
			note);
	else
		fprintf(f, "ok %s %s loaded, self-test passed (production, device %u, "
			"slot %u, load %.3f s, self-test %.3f s%s)\n", ST(sm)->name,
			ST(sm)->version, ST(sm)->device, idx + 1, ST(sm)->load_s,
			ST(sm)->selftest_s, note);
}

static void job_swap(struct velod *v, const struct job_args *a, FILE *f)
{
	int cur = eng_sched_slot_find(&v->sched, a->name, NULL, ENG_ROUTE_PRODUCTION);
	struct eng_sched_model *c = slot_get(v, cur), *sm;
	char curver[ENG_SCHED_VERSION_LEN], rbver[ENG_SCHED_VERSION_LEN];
	char note[80] = "";
	int warm = -1, rb, dev;
	unsigned idx;
	bool loaded = false;

	if (!c) {
		fprintf(f, "error: %s is not loaded\n", a->name);
		return;
	}
	snprintf(curver, sizeof(curver), "%s", ST(c)->version);
	if (a->version && !strcmp(a->version, curver)) {
		fprintf(f, "error: %s already serves %s\n", a->name, curver);
		return;
	}
	if (a->version)
		warm = eng_sched_slot_find(&v->sched, a->name, a->version, ENG_ROUTE_NONE);
	if (warm >= 0 && ST(slot_get(v, warm))->state == ENG_MODEL_READY) {
		/* warm already (the rollback slot, or one still draining) */
		if (eng_sched_slot_route(&v->sched, (unsigned)warm,
					 ENG_ROUTE_PRODUCTION, 0)) {
			fprintf(f, "error: %s %s: route flip refused\n", a->name, a->version);
			return;
		}
		idx = (unsigned)warm;
		sm = slot_get(v, warm);
	} else {
		if (!a->image) {
			fprintf(f, "error: %s %s is not loaded: give its image\n",
				a->name, a->version ? a->version : "?");
			return;
		}
		/* The standby device: the one that does not serve the name
		 * (or beside it, under a memory budget). */
		dev = pick_device(v, a->device, c, note, sizeof(note), f);
		if (dev < 0)
			return;
		sm = job_load_slot(v, a, (unsigned)dev, f);
		if (!sm)
			return;
		if (!strcmp(ST(sm)->version, curver)) {
			fprintf(f, "error: %s is version %s, which %s already serves\n",
				a->image, curver, a->name);
			eng_sched_slot_free(&v->sched, sm);
			return;
		}
		if (job_install(v, sm, ENG_ROUTE_PRODUCTION, 0, &idx, f))
			return;
		loaded = true;
	}
	v->sched.mctr[ENG_MODEL_CTR_swaps]++;
	rb = rollback_slot(v, a->name);
	if (rb < 0) {
		v->ld.hold[cur] = HOLD_ROLLBACK;	/* kept warm */
		snprintf(rbver, sizeof(rbver), "%s", curver);
	} else if (rb == (int)idx) {
		/* back to the confirmed version: nothing left to roll back */
		v->ld.hold[idx] = HOLD_NONE;
		v->ld.hold[cur] = HOLD_DRAIN;
		fprintf(f, "ok %s now %s, %s unloading (the confirmed version "
			"serves again; nothing to roll back)\n", a->name,
			ST(sm)->version, curver);
		return;
	} else {
		/* an unconfirmed version replaced: the rollback stays the
		 * confirmed one */
		v->ld.hold[cur] = HOLD_DRAIN;
		snprintf(rbver, sizeof(rbver), "%s", ST(slot_get(v, rb))->version);
	}
	v->ld.hold[idx] = HOLD_NONE;
	if (loaded)
		fprintf(f, "ok %s now %s, %s kept warm (device %u, slot %u, load "
			"%.3f s, self-test %.3f s%s)\n", a->name, ST(sm)->version, rbver,
			ST(sm)->device, idx + 1, ST(sm)->load_s, ST(sm)->selftest_s,
			note);
	else
		fprintf(f, "ok %s now %s, %s kept warm (slot %u was warm)\n",
			a->name, ST(sm)->version, rbver, idx + 1);
}

static void job_rollback(struct velod *v, const struct job_args *a, FILE *f)
{
	int rb = rollback_slot(v, a->name);
	int cur = eng_sched_slot_find(&v->sched, a->name, NULL, ENG_ROUTE_PRODUCTION);

	if (rb < 0) {
		fprintf(f, "error: no swap of %s to roll back\n", a->name);
		return;
	}
	if (eng_sched_slot_route(&v->sched, (unsigned)rb, ENG_ROUTE_PRODUCTION, 0)) {
		fprintf(f, "error: %s: route flip refused\n", a->name);
		return;
	}
	v->ld.hold[rb] = HOLD_NONE;
	if (cur >= 0)
		v->ld.hold[cur] = HOLD_DRAIN;
	v->sched.mctr[ENG_MODEL_CTR_rollbacks]++;
	fprintf(f, "ok %s back to %s\n", a->name, ST(slot_get(v, rb))->version);
}

static void job_confirm(struct velod *v, const struct job_args *a, FILE *f)
{
	int rb = rollback_slot(v, a->name);
	int cur = eng_sched_slot_find(&v->sched, a->name, NULL, ENG_ROUTE_PRODUCTION);

	if (rb < 0) {
		fprintf(f, "error: no swap of %s to confirm\n", a->name);
		return;
	}
	v->ld.hold[rb] = HOLD_DRAIN;
	v->sched.mctr[ENG_MODEL_CTR_confirms]++;
	fprintf(f, "ok %s stays %s\n", a->name,
		cur >= 0 ? ST(slot_get(v, cur))->version : "?");
}

static void job_unload(struct velod *v, const struct job_args *a, FILE *f)
{
	char vers[160] = "";
	unsigned n = 0, left = 0;
	size_t l = 0;

	for (unsigned i = 0; i < ENG_SCHED_MODELS_MAX; i++) {
		struct eng_sched_model *sm = slot_get(v, (int)i);

		if (!sm || strcmp(ST(sm)->name, a->name) ||
		    (a->version && strcmp(ST(sm)->version, a->version)))
			continue;
		if (eng_sched_slot_route_get(&v->sched, i) != ENG_ROUTE_NONE)
			eng_sched_slot_route(&v->sched, i, ENG_ROUTE_NONE, 0);
		v->ld.hold[i] = HOLD_DRAIN;
		if (l < sizeof(vers) - 40)
			l += (size_t)snprintf(vers + l, sizeof(vers) - l, "%s%s",
					      n ? " " : "", ST(sm)->version);
		n++;
	}
	if (!n) {
		fprintf(f, "error: %s%s%s is not loaded\n", a->name,
			a->version ? " " : "", a->version ? a->version : "");
		return;
	}
	/* Requests admitted before stay on their slot: wait for them here
	 * (the scheduler never waits), bounded. */
	for (unsigned t = 0; t < UNLOAD_WAIT_MS / 2; t++) {
		const struct timespec nap = { 0, 2000000 };

		left = drain_tick(v);
		if (!left || __atomic_load_n(&v->ld.stop, __ATOMIC_RELAXED))
			break;
		nanosleep(&nap, NULL);
	}
	if (left)
		fprintf(f, "ok %s unrouted (%s); %u slot(s) still finishing "
			"requests, freed when done\n", a->name, vers, left);
	else
		fprintf(f, "ok %s unloaded (%s)\n", a->name, vers);
}

static void job_run(struct velod *v, char *line, FILE *f)
{
	char *w[16], *save = NULL;
	struct job_args a;
	int n = 0;

	for (char *t = strtok_r(line, " \t", &save); t && n < 16;
	     t = strtok_r(NULL, " \t", &save))
		w[n++] = t;
	if (n < 2 || job_parse(w, n, &a, f))
		return;
	if (!strcmp(w[1], "load"))
		job_load(v, &a, f);
	else if (!strcmp(w[1], "swap"))
		job_swap(v, &a, f);
	else if (!strcmp(w[1], "rollback"))
		job_rollback(v, &a, f);
	else if (!strcmp(w[1], "confirm"))
		job_confirm(v, &a, f);
	else if (!strcmp(w[1], "unload"))
		job_unload(v, &a, f);
	else
		fprintf(f, "error: unknown model command '%s'\n", w[1]);
}

static void answer_fd(int fd, const char *out, size_t outlen)
{
	for (size_t off = 0; off < outlen;) {
		ssize_t w = write(fd, out + off, outlen - off);

		if (w <= 0)
			break;
		off += (size_t)w;
	}
}

static void *loader_thread(void *arg)
{
	struct velod *v = arg;
	struct velod_loader *ld = &v->ld;
	bool draining = false;

	/* Below the dataplane and the scheduler when they share cores with
	 * it (a 2-core machine): a load's checksum pass and self-test take
	 * tens of milliseconds of CPU that would otherwise stretch steps. */
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), LOADER_NICE))
		LOG_W(boot, "loader: nice %d: %s", LOADER_NICE, strerror(errno));
	pthread_mutex_lock(&ld->lock);
	while (!ld->stop) {
		char line[CTL_LINE_MAX], *out = NULL;
		size_t outlen = 0;
		int fd;
		FILE *f;

		if (!ld->q_n) {
			if (draining) {
				struct timespec ts;

				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_nsec += 2000000;
				if (ts.tv_nsec >= 1000000000) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000;
				}
				pthread_cond_timedwait(&ld->cond, &ld->lock, &ts);
			} else {
				pthread_cond_wait(&ld->cond, &ld->lock);
			}
		}
		if (ld->stop)
			break;
		if (!ld->q_n) {
			pthread_mutex_unlock(&ld->lock);
			draining = drain_tick(v) > 0;
			pthread_mutex_lock(&ld->lock);
			continue;
		}
		memcpy(line, ld->q[ld->q_head].line, sizeof(line));
		fd = ld->q[ld->q_head].fd;
		ld->q_head = (ld->q_head + 1) % LOADER_QUEUE;
		ld->q_n--;
		pthread_mutex_unlock(&ld->lock);

		f = open_memstream(&out, &outlen);
		if (f) {
			job_run(v, line, f);
			fclose(f);
		}
		if (out)
			answer_fd(fd, out, outlen);
		free(out);
		close(fd);
		draining = drain_tick(v) > 0;
		pthread_mutex_lock(&ld->lock);
	}
	pthread_mutex_unlock(&ld->lock);
	return NULL;
}

/* Main thread: hand @line and @fd to the loader.  Return: true when the
 * loader owns @fd now (it answers and closes it). */
static bool loader_submit(struct velod *v, int fd, const char *line, FILE *f)
{
	struct velod_loader *ld = &v->ld;

	if (!ld->started) {
		fprintf(f, "error: no loader thread\n");
		return false;
	}
	pthread_mutex_lock(&ld->lock);
	if (ld->q_n == LOADER_QUEUE) {
		pthread_mutex_unlock(&ld->lock);
		fprintf(f, "error: busy: %d model commands wait already (%s); try "
			"again\n", LOADER_QUEUE, ld->what[0] ? ld->what : "one runs");
		return false;
	}
	{
		unsigned t = (ld->q_head + ld->q_n) % LOADER_QUEUE;

		snprintf(ld->q[t].line, sizeof(ld->q[t].line), "%s", line);
		ld->q[t].fd = fd;
		ld->q_n++;
	}
	pthread_cond_signal(&ld->cond);
	pthread_mutex_unlock(&ld->lock);
	return true;
}

static int loader_start(struct velod *v)
{
	struct velod_loader *ld = &v->ld;
	int rc;

	pthread_mutex_init(&ld->lock, NULL);
	pthread_cond_init(&ld->cond, NULL);
	/* slots loaded from the configuration: nothing held */
	rc = pthread_create(&ld->thread, NULL, loader_thread, v);
	if (rc) {
		pthread_cond_destroy(&ld->cond);
		pthread_mutex_destroy(&ld->lock);
		return -rc;
	}
	pthread_setname_np(ld->thread, "velo-loader");
	ld->started = true;
	return 0;
}

static void loader_stop(struct velod *v)
{
	struct velod_loader *ld = &v->ld;

	if (!ld->started)
		return;
	pthread_mutex_lock(&ld->lock);
	__atomic_store_n(&ld->stop, true, __ATOMIC_RELAXED);
	pthread_cond_signal(&ld->cond);
	pthread_mutex_unlock(&ld->lock);
	pthread_join(ld->thread, NULL);
	for (; ld->q_n; ld->q_n--, ld->q_head = (ld->q_head + 1) % LOADER_QUEUE)
		close(ld->q[ld->q_head].fd);	/* unanswered: shutting down */
	pthread_cond_destroy(&ld->cond);
	pthread_mutex_destroy(&ld->lock);
	ld->started = false;
}

static const char help_text[] =
	"counters [all|json]   non-zero (all) counters, or JSON of all\n"
	"counters help         every counter with what it counts\n"
	"counter NAME          one counter's value\n"
	"sessions [json]       live sessions\n"
	"stats [json]          summary\n"
	"ready                 'ready', or 'not ready: REASON' (exit 1 with -q)\n"
	"metrics json          request latency histograms (TTFT, ITL, queue, e2e)\n"
	"models [json]         configured models: state, version, label, why\n"
	"model status NAME [json]  one model: sizes, self-test, measured costs\n"
	"model load NAME [VERSION] IMAGE [device N] [label production|canary share P|shadow]\n"
	"                      load, self-test and route (a loader thread; the\n"
	"                      answer comes when done; one model command at a time)\n"
	"model swap NAME VERSION|IMAGE|VERSION IMAGE [device N]\n"
	"                      load on the standby device (or flip to the warm\n"
	"                      version) and flip the route; the old one kept warm\n"
	"model rollback NAME   flip back to the warm version\n"
	"model confirm NAME    keep the new version; the warm one is freed\n"
	"model unload NAME [VERSION]  unroute, wait for its requests, free\n"
	"model served          DONE records per model name and version\n"
	"shutdown              clean shutdown\n"
	"help                  this list\n";

/* Answer one command on a connected socket.  Return: true when the loader
 * took the connection (it answers and closes it). */
static bool ctl_answer(struct velod *v, int fd)
{
	char line[CTL_LINE_MAX], orig[CTL_LINE_MAX];
	bool handed = false;
	size_t n = 0;
	struct timeval tv = { 1, 0 };
	char *out = NULL;
	size_t outlen = 0;
	FILE *f;
	char *cmd, *arg, *save = NULL;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (n < sizeof(line) - 1) {
		ssize_t r = read(fd, line + n, sizeof(line) - 1 - n);

		if (r <= 0)
			break;
		n += (size_t)r;
		if (memchr(line, '\n', n))
			break;
	}
	line[n] = 0;
	line[strcspn(line, "\r\n")] = 0;
	memcpy(orig, line, sizeof(orig));
	f = open_memstream(&out, &outlen);
	if (!f)
		return false;
	cmd = strtok_r(line, " \t", &save);
	arg = cmd ? strtok_r(NULL, " \t", &save) : NULL;
	if (!cmd) {
		fprintf(f, "error: empty command (try help)\n");
	} else if (!strcmp(cmd, "counters")) {
		if (arg && !strcmp(arg, "json")) {
			char *s = counters_json();

			fprintf(f, "%s\n", s ? s : "{}");
			free(s);
		} else if (arg && !strcmp(arg, "help")) {
			for (unsigned b = 0; b < ctr_block_count(); b++) {
				const struct ctr_block *blk = ctr_block_get(b);

				for (unsigned i = 0; i < blk->n; i++)
					fprintf(f, "%s.%s\t%s\n", blk->prefix,
						blk->desc[i].name, blk->desc[i].help);
			}
		} else if (arg && strcmp(arg, "all")) {
			fprintf(f, "error: counters [all|json|help]\n");
		} else {
			counters_print(f, arg != NULL);
		}
	} else if (!strcmp(cmd, "counter")) {
		uint64_t x = arg ? ctr_lookup(arg) : (uint64_t)-1;

		if (x == (uint64_t)-1)
			fprintf(f, "error: unknown counter\n");
		else
			fprintf(f, "%llu\n", (unsigned long long)x);
	} else if (!strcmp(cmd, "sessions")) {
		sessions_out(v, f, arg && !strcmp(arg, "json"));
	} else if (!strcmp(cmd, "stats")) {
		stats_out(v, f, arg && !strcmp(arg, "json"));
	} else if (!strcmp(cmd, "ready")) {
		char why[ENG_SCHED_WHY_LEN + 96] = "";

		if (eng_sched_ready(&v->sched, why, sizeof(why)))
			fprintf(f, "ready\n");
		else
			fprintf(f, "error: not ready: %s\n", why);
	} else if (!strcmp(cmd, "metrics")) {
		if (arg && strcmp(arg, "json"))
			fprintf(f, "error: metrics json\n");
		else
			metrics_out(v, f);
	} else if (!strcmp(cmd, "models")) {
		models_out(v, f, NULL, arg && !strcmp(arg, "json"));
	} else if (!strcmp(cmd, "model")) {
		char *name = arg ? strtok_r(NULL, " \t", &save) : NULL;
		char *fmt = name ? strtok_r(NULL, " \t", &save) : NULL;

		if (arg && (!strcmp(arg, "load") || !strcmp(arg, "swap") ||
			    !strcmp(arg, "unload") || !strcmp(arg, "rollback") ||
			    !strcmp(arg, "confirm")))
			handed = loader_submit(v, fd, orig, f);
		else if (arg && !strcmp(arg, "served"))
			served_out(v, f);
		else if (!arg || strcmp(arg, "status") || !name)
			fprintf(f, "error: model status NAME [json] | load | swap | "
				"unload | rollback | confirm (try help)\n");
		else
			models_out(v, f, name, fmt && !strcmp(fmt, "json"));
	} else if (!strcmp(cmd, "shutdown")) {
		fprintf(f, "ok\n");
		v->quit = true;
	} else if (!strcmp(cmd, "help")) {
		fputs(help_text, f);
	} else {
		fprintf(f, "error: unknown command '%s' (try help)\n", cmd);
	}
	fclose(f);
	if (!handed)
		answer_fd(fd, out, outlen);
	free(out);
	return handed;
}

static int ctl_open(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(a.sun_path)) {
		LOG_E(boot, "control socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(a.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(path);	/* a stale socket from an earlier run */
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0) {
		int e = errno;

		LOG_E(boot, "control socket %s: %s", path, strerror(e));
		close(fd);
		return -e;
	}
	chmod(path, 0600);
	return fd;
}

static int query(const char *path, const char *cmd)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char buf[4096];
	bool first = true, error = false;
	int fd;
	ssize_t n;

	if (!path || !*path || strlen(path) >= sizeof(a.sun_path)) {
		fprintf(stderr, "velod: no control socket path (-s)\n");
		return 1;
	}
	strcpy(a.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		fprintf(stderr, "velod: connect %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	if (write(fd, cmd, strlen(cmd)) < 0 || write(fd, "\n", 1) < 0) {
		close(fd);
		return 1;
	}
	shutdown(fd, SHUT_WR);
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		if (first && n >= 6 && !memcmp(buf, "error:", 6))
			error = true;
		first = false;
		fwrite(buf, 1, (size_t)n, stdout);
	}
	close(fd);
	return error ? 1 : 0;
}

/* ------------------------------------------------------------------------
 * Threads and life cycle.
 */

static void *dp_thread(void *arg)
{
	struct velod *v = arg;
	int rc = cpu_pin_self(v->cfg.dp_core);

	if (rc)
		LOG_W(boot, "dataplane: cannot pin to core %d: %s (unpinned)",
		      v->cfg.dp_core, strerror(-rc));
	else if (v->cfg.dp_core >= 0)
		LOG_I(boot, "dataplane thread pinned to core %d", v->cfg.dp_core);
	dp_run(&v->dp);
	return NULL;
}

static void counters_dump_stdout(const char *why)
{
	printf("--- counters (%s)\n", why);
	ctr_dump(stdout, 0);
	printf("---\n");
	fflush(stdout);
}

static int serve(struct velod *v)
{
	while (!v->quit) {
		struct pollfd p[2] = { { .fd = v->sig_fd, .events = POLLIN },
				       { .fd = v->ctl_fd, .events = POLLIN } };
		int n = poll(p, v->ctl_fd >= 0 ? 2 : 1, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			LOG_E(boot, "poll: %s", strerror(errno));
			return -errno;
		}
		if (p[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(v->sig_fd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGUSR1) {
					counters_dump_stdout("SIGUSR1");
				} else {
					LOG_I(boot, "signal %u: shutting down",
					      si.ssi_signo);
					v->quit = true;
				}
			}
		}
		if (v->ctl_fd >= 0 && (p[1].revents & POLLIN)) {
			int c = accept4(v->ctl_fd, NULL, NULL, SOCK_CLOEXEC);

			if (c >= 0 && !ctl_answer(v, c))
				close(c);
		}
	}
	return 0;
}

static int velod_main(struct velod *v)
{
	struct velo_psk *keys;
	char err[256] = "", addr[80];
	sigset_t sigs;
	int n_keys, rc;

	if (!v->cfg.keys || !*v->cfg.keys) {
		LOG_E(boot, "no key file: set \"keys\" in the configuration or -k FILE");
		return -EINVAL;
	}
	if (velo_auth_init()) {
		LOG_E(boot, "libsodium initialisation failed");
		return -EIO;
	}
	keys = calloc(CONFIG_DP_KEYS_MAX, sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	n_keys = velo_keyfile_load(v->cfg.keys, keys, CONFIG_DP_KEYS_MAX, err,
				   sizeof(err));
	if (n_keys < 0) {
		LOG_E(boot, "key file %s: %s", v->cfg.keys,
		      *err ? err : strerror(-n_keys));
		rc = n_keys;
		goto err_free_keys;
	}
	LOG_I(boot, "%d key(s) loaded from %s", n_keys, v->cfg.keys);

	/* Signals: blocked in every thread (inherited), read here. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	v->sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (v->sig_fd < 0) {
		rc = -errno;
		goto err_free_keys;
	}

	rc = dp_rings_init(&v->rings, &v->cfg.rings);
	if (rc) {
		LOG_E(boot, "request rings: %s", strerror(-rc));
		goto err_close_sig;
	}
	rc = eng_sched_init(&v->sched, &v->cfg.sched, &v->rings, true);
	if (rc)
		goto err_fini_rings;
	rc = dp_init(&v->dp, &v->cfg.dp, keys, (unsigned)n_keys, &v->rings);
	if (rc) {
		LOG_E(boot, "dataplane init: %s", strerror(-rc));
		goto err_fini_sched;
	}
	/* Models: eager load and self-test before anything is routed.  A
	 * failed model is kept (unrouted, with its reason) and velod runs
	 * not ready, so that the control socket can say why. */
	for (unsigned i = 0; i < v->cfg.n_models; i++) {
		char merr[ENG_SCHED_WHY_LEN];

		if (eng_sched_model_load(&v->sched, &v->cfg.models[i], merr,
					 sizeof(merr)))
			fprintf(stderr, "velod: model %s: not routed: %s\n",
				v->cfg.models[i].image, merr);
	}
	v->ctl_fd = -1;
	if (v->cfg.control && *v->cfg.control) {
		v->ctl_fd = ctl_open(v->cfg.control);
		if (v->ctl_fd < 0) {
			rc = v->ctl_fd;
			goto err_fini_dp;
		}
	}
	rc = eng_sched_start(&v->sched);
	if (rc)
		goto err_close_ctl;
	rc = loader_start(v);
	if (rc)
		goto err_stop_sched;
	rc = -pthread_create(&v->dp_thread, NULL, dp_thread, v);
	if (rc) {
		loader_stop(v);
		goto err_stop_sched;
	}
	pthread_setname_np(v->dp_thread, "velo-dp");
	v->start_ns = clock_mono_ns();

	{
		char why[ENG_SCHED_WHY_LEN + 96] = "";
		bool ok = eng_sched_ready(&v->sched, why, sizeof(why));

		/* The start-up handshake (mgmtd, tests): the process is up
		 * and answers the protocol and the control socket.  Whether
		 * the engine serves is engine=: ready only when every
		 * configured model passed its self-test (the `ready` command
		 * and `stats` say the same and why).  A failed model does
		 * not fail the start, so that mgmt can ask why instead of
		 * restarting velod in a loop. */
		printf("velod: ready listen=%s control=%s pid=%d models=%u engine=%s%s%s\n",
		       dp_addr_format(&v->dp.sock.local, addr, sizeof(addr)),
		       v->cfg.control && *v->cfg.control ? v->cfg.control : "-",
		       (int)getpid(), eng_sched_model_count(&v->sched),
		       ok ? "ready" : "not_ready", ok ? "" : " reason=",
		       ok ? "" : why);
	}
	fflush(stdout);

	rc = serve(v);

	/* the loader first: it waits on the scheduler for its commands */
	loader_stop(v);
	dp_stop(&v->dp);
	pthread_join(v->dp_thread, NULL);
	eng_sched_stop(&v->sched);
	counters_dump_stdout("exit");
err_stop_sched:
	eng_sched_stop(&v->sched);
err_close_ctl:
	if (v->ctl_fd >= 0) {
		close(v->ctl_fd);
		unlink(v->cfg.control);
	}
err_fini_dp:
	dp_fini(&v->dp);
err_fini_sched:
	eng_sched_fini(&v->sched);
err_fini_rings:
	dp_rings_fini(&v->rings);
err_close_sig:
	close(v->sig_fd);
err_free_keys:
	explicit_bzero(keys, CONFIG_DP_KEYS_MAX * sizeof(*keys));
	free(keys);
	return rc;
}

enum { OPT_DP_CORE = 256, OPT_SCHED_CORE, OPT_LOG, OPT_SET, OPT_PRINT };

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "keys", required_argument, NULL, 'k' },
		{ "control", required_argument, NULL, 's' },
		{ "dp-core", required_argument, NULL, OPT_DP_CORE },
		{ "sched-core", required_argument, NULL, OPT_SCHED_CORE },
		{ "log", required_argument, NULL, OPT_LOG },
		{ "set", required_argument, NULL, OPT_SET },
		{ "print-config", no_argument, NULL, OPT_PRINT },
		{ "query", required_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static struct velod v;
	json_t *root = cfg_defaults(), *file;
	json_error_t je;
	const char *query_cmd = NULL;
	char err[256] = "", kv[512];
	bool print = false;
	int c, rc;

	log_set_ident("velod");
	/* The file first (wherever -c is), then the options in order. */
	for (int i = 1; i < argc; i++) {
		const char *path = NULL;

		if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) &&
		    i + 1 < argc)
			path = argv[i + 1];
		else if (!strncmp(argv[i], "--config=", 9))
			path = argv[i] + 9;
		if (!path)
			continue;
		file = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
		if (!file) {
			fprintf(stderr, "velod: %s:%d: %s\n", path, je.line, je.text);
			return 1;
		}
		if (!json_is_object(file) ||
		    cfg_merge(root, file, "", err, sizeof(err))) {
			fprintf(stderr, "velod: %s: %s\n", path,
				*err ? err : "must be a JSON object");
			return 1;
		}
		json_decref(file);
	}
	while ((c = getopt_long(argc, argv, "c:l:k:s:q:hV", opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 'c':
			break;
		case 'l':
			set(root, "listen", json_string(optarg));
			break;
		case 'k':
			set(root, "keys", json_string(optarg));
			break;
		case 's':
			set(root, "control_socket", json_string(optarg));
			break;
		case OPT_DP_CORE:
			snprintf(kv, sizeof(kv), "dataplane.core=%s", optarg);
			rc = cfg_set(root, kv, err, sizeof(err));
			break;
		case OPT_SCHED_CORE:
			snprintf(kv, sizeof(kv), "scheduler.core=%s", optarg);
			rc = cfg_set(root, kv, err, sizeof(err));
			break;
		case OPT_LOG:
			set(root, "log", json_string(optarg));
			break;
		case OPT_SET:
			rc = cfg_set(root, optarg, err, sizeof(err));
			break;
		case OPT_PRINT:
			print = true;
			break;
		case 'q':
			query_cmd = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 'V':
			printf("velod %s\n", VELOD_VERSION);
			return 0;
		default:
			fputs(usage_text, stderr);
			return 2;
		}
		if (rc) {
			fprintf(stderr, "velod: %s\n", err);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "velod: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (query_cmd) {
		rc = query(json_string_value(json_object_get(root, "control_socket")),
			   query_cmd);
		json_decref(root);
		return rc;
	}
	if (print) {
		json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
		json_decref(root);
		return 0;
	}
	if (cfg_extract(root, &v.cfg, err, sizeof(err))) {
		fprintf(stderr, "velod: configuration: %s\n", err);
		json_decref(root);
		return 1;
	}
	if (log_set_spec(v.cfg.log)) {
		fprintf(stderr, "velod: bad log spec '%s'\n", v.cfg.log);
		json_decref(root);
		return 1;
	}
	rc = velod_main(&v);
	json_decref(root);	/* held strings used until here */
	return rc ? 1 : 0;
}
