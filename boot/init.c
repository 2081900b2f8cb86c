// SPDX-License-Identifier: MIT
/*
 * velo-init — the first program of an appliance image (PID 1).
 *
 * Brings the box up in a fixed order, one step after another from the table
 * below; each step is logged on the console with its start time and its
 * duration since boot, a failed step by its name and its reason.  Nothing
 * here aborts: a failed step is recorded, the steps that do not depend on it
 * still run, and the box ends with a shell on the serial console either way
 * (veloctl when mgmtd is up, a rescue shell otherwise), so the operator can
 * always reach it.  As PID 1 it then reaps orphans and respawns the console
 * shell forever.
 *
 * The settings come from Kconfig (boot/Kconfig, BOOT_*), and the kernel
 * command line may override them: velo.dp_nic=, velo.dp_driver=, velo.dp_addr=,
 * velo.mgmt_if=, velo.mgmt_addr=, velo.mgmt_gw=, velo.hugepages=,
 * velo.isolated=, velo.ready_s=, velo.shell=sh.
 *
 * Console lines, grep-able by tests and by an operator:
 *   velo-init: [   0.012] step mount ...
 *   velo-init: [   0.015] step mount ok (3 ms)
 *   velo-init: [   4.210] step hugepages FAILED (1 ms): only 10 of 256 pages
 *   velo-init: ready in 12345 ms
 *   velo-init: NOT READY: failed: hugepages
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <velo/compiler.h>

#define INIT_PATH "/usr/sbin:/usr/bin:/sbin:/bin"
#define INIT_LOG "/run/velo/boot.log"
#define INIT_MGMT_SOCK "/run/velo/mgmt.sock"
#define INIT_MGMTD_LOG "/run/velo/mgmtd.log"
#define INIT_VELOD_CONF "/etc/velo/velod.json"	/* image's base: keys, models */
#define INIT_VELOD_RUN_CONF "/run/velo/velod.json"	/* base + this boot's dataplane */
#define INIT_STATE_DIR "/var/lib/velo"
#define INIT_REASON_MAX 256
#define INIT_VAL_MAX 128

#ifndef CONFIG_BOOT_HUGEPAGES
#define CONFIG_BOOT_HUGEPAGES 0
#define CONFIG_BOOT_ISOLATED_CPUS ""
#define CONFIG_BOOT_DP_NIC ""
#define CONFIG_BOOT_DP_NIC_DRIVER "vfio-pci"
#define CONFIG_BOOT_MGMT_IF "auto"
#define CONFIG_BOOT_MGMT_ADDR ""
#define CONFIG_BOOT_MGMT_GW ""
#endif
#ifndef CONFIG_BOOT_DP_ADDR
#define CONFIG_BOOT_DP_ADDR ""
#define CONFIG_BOOT_DP_EAL ""
#endif
#ifndef CONFIG_IMAGE_VELOD_PORT
#define CONFIG_IMAGE_VELOD_PORT 7400
#endif

/* Settings after the kernel command line was applied. */
static struct {
	char dp_nic[INIT_VAL_MAX];
	char dp_driver[INIT_VAL_MAX];
	char mgmt_if[INIT_VAL_MAX];
	char mgmt_addr[INIT_VAL_MAX];
	char mgmt_gw[INIT_VAL_MAX];
	char isolated[INIT_VAL_MAX];
	char shell[INIT_VAL_MAX];
	long hugepages;
	long ready_s;
	char dp_addr[INIT_VAL_MAX];
	char dp_pci[INIT_VAL_MAX]; /* resolved PCI address */
	bool dp_bound;		   /* dp_pci is bound to dp_driver */
	bool dp_dpdk;		   /* velod runs the DPDK transport on dp_pci */
	char listen[INIT_VAL_MAX + 16]; /* velod's listen address, for mgmtd */
	bool mgmtd_up;
} cfg;

static struct timespec t0;
static int log_fd = -1;

static long ms_since_boot(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	long ms = ms_since_boot();
	int n = snprintf(line, sizeof(line), "velo-init: [%4ld.%03ld] ", ms / 1000, ms % 1000);

	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDOUT_FILENO, line, n) < 0) {
		/* no console: the log file still has it */
	}
	if (log_fd >= 0 && write(log_fd, line, n) < 0) {
		/* /run full: the console has it */
	}
}

static int write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int err;

	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	err = n < 0 ? -errno : 0;
	close(fd);
	return err;
}

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return 0;
}

/* Run a program, wait for it (bounded by @timeout_s), return its exit status
 * or -errno.  Output goes to the console. */
static int run(int timeout_s, const char *const argv[])
{
	pid_t pid = fork();
	int st, waited_ms = 0;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (waited_ms >= timeout_s * 1000) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -ETIMEDOUT;
		}
		usleep(10000);
		waited_ms += 10;
	}
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return -EINTR;
}

/* Bounded copy; a longer value is cut (every value is a short name). */
static void copy_val(char *dst, const char *src, size_t len)
{
	size_t n = strnlen(src, len - 1);

	memcpy(dst, src, n);
	dst[n] = 0;
}

/* ---- steps -------------------------------------------------------------- */

static int step_mount(char *why, size_t len)
{
	static const struct {
		const char *src, *dst, *type, *opts;
		unsigned long flags;
	} m[] = {
		{ "proc", "/proc", "proc", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC },
		{ "sysfs", "/sys", "sysfs", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC },
		{ "devtmpfs", "/dev", "devtmpfs", "mode=0755", MS_NOSUID },
		{ "devpts", "/dev/pts", "devpts", "gid=5,mode=620,ptmxmode=0666", MS_NOSUID | MS_NOEXEC },
		{ "tmpfs", "/run", "tmpfs", "mode=0755", MS_NOSUID | MS_NODEV },
		{ "tmpfs", "/tmp", "tmpfs", "mode=1777", MS_NOSUID | MS_NODEV },
		{ "hugetlbfs", "/dev/hugepages", "hugetlbfs", "mode=1770", 0 },
	};
	int bad = 0;

	for (size_t i = 0; i < ARRAY_SIZE(m); i++) {
		mkdir(m[i].dst, 0755);
		if (mount(m[i].src, m[i].dst, m[i].type, m[i].flags, m[i].opts) < 0 && errno != EBUSY) {
			snprintf(why, len, "%s on %s: %s", m[i].type, m[i].dst, strerror(errno));
			bad = -errno;
		}
	}
	mkdir("/run/velo", 0755);
	if (log_fd < 0)
		log_fd = open(INIT_LOG, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (symlink("/proc/self/fd", "/dev/fd") < 0 && errno != EEXIST) {
		/* only shells need it */
	}
	return bad;
}

/* velo.KEY=VALUE words of /proc/cmdline override the Kconfig defaults. */
static int step_cmdline(char *why, size_t len)
{
	char line[4096];
	char *save = NULL;
	int n = 0;

	if (read_file("/proc/cmdline", line, sizeof(line)) < 0) {
		snprintf(why, len, "/proc/cmdline: %s", strerror(errno));
		return -EIO;
	}
	for (char *w = strtok_r(line, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
		static const struct {
			const char *key;
			char *dst;
		} k[] = {
			{ "velo.dp_nic=", cfg.dp_nic },
			{ "velo.dp_driver=", cfg.dp_driver },
			{ "velo.dp_addr=", cfg.dp_addr },
			{ "velo.mgmt_if=", cfg.mgmt_if },
			{ "velo.mgmt_addr=", cfg.mgmt_addr },
			{ "velo.mgmt_gw=", cfg.mgmt_gw },
			{ "velo.isolated=", cfg.isolated },
			{ "velo.shell=", cfg.shell },
		};

		for (size_t i = 0; i < ARRAY_SIZE(k); i++)
			if (!strncmp(w, k[i].key, strlen(k[i].key))) {
				copy_val(k[i].dst, w + strlen(k[i].key), INIT_VAL_MAX);
				n++;
			}
		if (!strncmp(w, "velo.hugepages=", 15)) {
			cfg.hugepages = strtol(w + 15, NULL, 10);
			n++;
		}
		if (!strncmp(w, "velo.ready_s=", 13)) {
			cfg.ready_s = strtol(w + 13, NULL, 10);
			n++;
		}
	}
	say("  %d override(s): dp_nic=%s dp_driver=%s dp_addr=%s mgmt_if=%s mgmt_addr=%s "
	    "hugepages=%ld", n, cfg.dp_nic, cfg.dp_driver, cfg.dp_addr, cfg.mgmt_if,
	    cfg.mgmt_addr, cfg.hugepages);
	return 0;
}

/* Modules listed one per line in /etc/velo/modules (the image recipe writes
 * the NIC and DPDK binding modules there). */
static int step_modules(char *why, size_t len)
{
	FILE *f = fopen("/etc/velo/modules", "re");
	char mod[128];
	int bad = 0, n = 0;

	if (!f)
		return 0;
	while (fgets(mod, sizeof(mod), f)) {
		mod[strcspn(mod, " \n")] = 0;
		if (!mod[0] || mod[0] == '#')
			continue;
		const char *argv[] = { "modprobe", mod, NULL };
		int rc = run(30, argv);

		n++;
		if (rc != 0) {
			snprintf(why, len, "modprobe %s: %s", mod, rc < 0 ? strerror(-rc) : "failed");
			bad = -EIO;
		}
	}
	fclose(f);
	say("  %d module(s)", n);
	return bad;
}

static int step_hugepages(char *why, size_t len)
{
	char v[32];
	long got;

	if (cfg.hugepages <= 0)
		return 0;
	snprintf(v, sizeof(v), "%ld", cfg.hugepages);
	if (write_file("/proc/sys/vm/nr_hugepages", v) < 0 ||
	    read_file("/proc/sys/vm/nr_hugepages", v, sizeof(v)) < 0) {
		snprintf(why, len, "nr_hugepages: %s", strerror(errno));
		return -EIO;
	}
	got = strtol(v, NULL, 10);
	say("  %ld of %ld 2 MiB pages", got, cfg.hugepages);
	if (got < cfg.hugepages) {
		snprintf(why, len, "only %ld of %ld pages (memory fragmented or too small)", got,
			 cfg.hugepages);
		return -ENOMEM;
	}
	return 0;
}

/* Parse a cpulist ("0,2-3") into a bit mask of the first 1024 cores. */
static int cpulist_parse(const char *s, unsigned long long mask[16])
{
	memset(mask, 0, 16 * sizeof(mask[0]));
	while (*s) {
		char *end;
		long a = strtol(s, &end, 10), b = a;

		if (end == s)
			return -EINVAL;
		if (*end == '-')
			b = strtol(end + 1, &end, 10);
		if (a < 0 || b < a || b >= 1024)
			return -EINVAL;
		for (long c = a; c <= b; c++)
			mask[c / 64] |= 1ULL << (c % 64);
		if (*end == ',')
			end++;
		else if (*end)
			return -EINVAL;
		s = end;
	}
	return 0;
}

static int step_isolcpus(char *why, size_t len)
{
	unsigned long long want[16], have[16];
	char iso[512];

	if (!cfg.isolated[0])
		return 0;
	if (read_file("/sys/devices/system/cpu/isolated", iso, sizeof(iso)) < 0)
		iso[0] = 0;
	say("  isolated: \"%s\", wanted \"%s\"", iso, cfg.isolated);
	if (cpulist_parse(cfg.isolated, want) < 0) {
		snprintf(why, len, "bad core list \"%s\"", cfg.isolated);
		return -EINVAL;
	}
	if (cpulist_parse(iso, have) < 0)
		memset(have, 0, sizeof(have));
	for (int i = 0; i < 16; i++)
		if (want[i] & ~have[i]) {
			snprintf(why, len, "cores \"%s\" not all isolated (isolated: \"%s\"; add isolcpus=)",
				 cfg.isolated, iso);
			return -EINVAL;
		}
	return 0;
}

/* "virtio": the first virtio-net function in PCI order (QEMU scripts place
 * the dataplane NIC before the management one). */
static int find_virtio_net(char *out, size_t len)
{
	struct dirent **ents;
	int n = scandir("/sys/bus/pci/devices", &ents, NULL, alphasort);
	int found = -ENODEV;

	if (n < 0)
		return -errno;
	for (int i = 0; i < n; i++) {
		char p[PATH_MAX], ven[16], dev[16];

		if (found < 0 && ents[i]->d_name[0] != '.') {
			snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vendor", ents[i]->d_name);
			if (read_file(p, ven, sizeof(ven)) == 0 && !strcmp(ven, "0x1af4")) {
				snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/device", ents[i]->d_name);
				if (read_file(p, dev, sizeof(dev)) == 0 &&
				    (!strcmp(dev, "0x1000") || !strcmp(dev, "0x1041"))) {
					copy_val(out, ents[i]->d_name, len);
					found = 0;
				}
			}
		}
		free(ents[i]);
	}
	free(ents);
	return found;
}

/* "0000:00:03.0": domain:bus:slot.function, hex. */
static bool is_pci_addr(const char *s)
{
	static const char pat[] = "xxxx:xx:xx.x";

	if (strlen(s) != sizeof(pat) - 1)
		return false;
	for (size_t i = 0; pat[i]; i++)
		if (pat[i] == 'x' ? !isxdigit((unsigned char)s[i]) : s[i] != pat[i])
			return false;
	return true;
}

/* "52:54:00:00:00:03" */
static bool is_mac(const char *s)
{
	if (strlen(s) != 17)
		return false;
	for (int i = 0; i < 17; i++)
		if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
			return false;
	return true;
}

/* PCI address of the device behind kernel interface @ifname: its "device"
 * link, or that device's parent (a virtio NIC's "device" is virtioN, which
 * sits under the PCI function). */
static int netdev_pci(const char *ifname, char *out, size_t len)
{
	char p[PATH_MAX], real[PATH_MAX];

	snprintf(p, sizeof(p), "/sys/class/net/%s/device", ifname);
	if (!realpath(p, real))
		return -errno;
	for (int up = 0; up < 2; up++) {
		char *b = strrchr(real, '/');

		if (!b)
			break;
		if (is_pci_addr(b + 1)) {
			copy_val(out, b + 1, len);
			return 0;
		}
		*b = 0;
	}
	return -ENODEV;
}

/* The kernel interface whose MAC is @mac, into @ifname (its driver must be
 * loaded: the modules step runs first). */
static int ifname_by_mac(const char *mac, char *ifname, size_t len)
{
	struct dirent **ents;
	int n = scandir("/sys/class/net", &ents, NULL, alphasort);
	int found = -ENODEV;

	if (n < 0)
		return -errno;
	for (int i = 0; i < n; i++) {
		char p[PATH_MAX], addr[32];

		if (found < 0 && ents[i]->d_name[0] != '.') {
			snprintf(p, sizeof(p), "/sys/class/net/%s/address", ents[i]->d_name);
			if (read_file(p, addr, sizeof(addr)) == 0 && !strcasecmp(addr, mac)) {
				copy_val(ifname, ents[i]->d_name, len);
				found = 0;
			}
		}
		free(ents[i]);
	}
	free(ents);
	return found;
}

/* The PCI function of the kernel interface whose MAC is @mac. */
static int find_by_mac(const char *mac, char *out, size_t len)
{
	char ifname[INIT_VAL_MAX];
	int rc = ifname_by_mac(mac, ifname, sizeof(ifname));

	if (rc < 0)
		return rc;
	rc = netdev_pci(ifname, out, len);
	if (rc == 0)
		say("  %s is %s (PCI %s)", mac, ifname, out);
	return rc;
}

static int step_dp_nic(char *why, size_t len)
{
	char p[PATH_MAX], link[PATH_MAX];
	const char *drv = cfg.dp_driver;
	ssize_t n;
	int rc;

	if (!cfg.dp_nic[0]) {
		say("  no dataplane NIC configured (socket transport)");
		return 0;
	}
	if (!strcmp(cfg.dp_nic, "virtio")) {
		rc = find_virtio_net(cfg.dp_pci, sizeof(cfg.dp_pci));
		if (rc < 0) {
			snprintf(why, len, "no virtio-net PCI function found");
			return rc;
		}
	} else if (is_mac(cfg.dp_nic)) {
		rc = find_by_mac(cfg.dp_nic, cfg.dp_pci, sizeof(cfg.dp_pci));
		if (rc < 0) {
			snprintf(why, len, "no PCI network interface with MAC %s", cfg.dp_nic);
			return rc;
		}
	} else if (is_pci_addr(cfg.dp_nic)) {
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s", cfg.dp_nic);
		if (access(p, F_OK) != 0) {
			snprintf(why, len, "no PCI device %s", cfg.dp_nic);
			return -ENODEV;
		}
		copy_val(cfg.dp_pci, cfg.dp_nic, sizeof(cfg.dp_pci));
	} else {
		snprintf(why, len, "dp_nic \"%s\" is not a PCI address, a MAC address or \"virtio\"",
			 cfg.dp_nic);
		return -EINVAL;
	}
	if (!strcmp(drv, "vfio-pci")) {
		/* No IOMMU in QEMU TCG (nor on some boxes): vfio's no-IOMMU mode
		 * gives DPDK the device without DMA isolation. */
		if (access("/sys/kernel/iommu_groups/0", F_OK) != 0) {
			const char *argv[] = { "modprobe", "vfio", "enable_unsafe_noiommu_mode=1", NULL };

			run(30, argv);
			if (write_file("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "1") < 0) {
				snprintf(why, len, "no IOMMU and this kernel's vfio has no no-IOMMU mode "
					 "(CONFIG_VFIO_NOIOMMU): use uio_pci_generic or an IOMMU");
				return -ENOTSUP;
			}
			say("  no IOMMU: vfio no-IOMMU mode");
		}
	}
	{
		const char *argv[] = { "modprobe", drv, NULL };

		rc = run(30, argv);
		if (rc != 0) {
			snprintf(why, len, "modprobe %s failed", drv);
			return -ENOENT;
		}
	}
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/driver_override", cfg.dp_pci);
	if ((rc = write_file(p, drv)) < 0) {
		snprintf(why, len, "%s: %s", p, strerror(-rc));
		return rc;
	}
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/driver/unbind", cfg.dp_pci);
	write_file(p, cfg.dp_pci); /* no driver yet is fine */
	if ((rc = write_file("/sys/bus/pci/drivers_probe", cfg.dp_pci)) < 0) {
		snprintf(why, len, "drivers_probe %s: %s", cfg.dp_pci, strerror(-rc));
		return rc;
	}
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/driver", cfg.dp_pci);
	n = readlink(p, link, sizeof(link) - 1);
	if (n < 0) {
		snprintf(why, len, "%s bound to no driver", cfg.dp_pci);
		return -ENODEV;
	}
	link[n] = 0;
	if (strcmp(strrchr(link, '/') + 1, drv)) {
		snprintf(why, len, "%s bound to %s, not %s", cfg.dp_pci, strrchr(link, '/') + 1, drv);
		return -EBUSY;
	}
	say("  %s bound to %s", cfg.dp_pci, drv);
	cfg.dp_bound = true;
	return 0;
}

/* velod's configuration for this boot (INIT_VELOD_RUN_CONF): the image's
 * base (keys, models and their budgets) plus the dataplane this boot found.
 * DPDK transport: the EAL allow-list holds exactly the NIC bound above (no
 * other device is probed, the management NIC stays the kernel's), velod
 * answers for dp_addr on it.  Without a bound NIC it falls back to the
 * socket transport on the management side, and says so: the box serves,
 * but not as configured, so the step fails. */
static int step_dp_config(char *why, size_t len)
{
	bool want_dpdk = IS_ENABLED(CONFIG_BOOT_DP_TRANSPORT_DPDK) && cfg.dp_nic[0];
	json_t *root, *o;
	json_error_t je;
	char eal[512] = "";
	int rc = 0;

	root = json_load_file(INIT_VELOD_CONF, JSON_REJECT_DUPLICATES, &je);
	if (!json_is_object(root)) {
		snprintf(why, len, "%s:%d: %s", INIT_VELOD_CONF, je.line,
			 root ? "not an object" : je.text);
		json_decref(root);
		return -EINVAL;
	}
	if (want_dpdk && cfg.dp_bound) {
		snprintf(eal, sizeof(eal), "-a %s %s", cfg.dp_pci, CONFIG_BOOT_DP_EAL);
		snprintf(cfg.listen, sizeof(cfg.listen), "%s:%d", cfg.dp_addr,
			 CONFIG_IMAGE_VELOD_PORT);
		cfg.dp_dpdk = true;
	} else {
		snprintf(cfg.listen, sizeof(cfg.listen), "0.0.0.0:%d", CONFIG_IMAGE_VELOD_PORT);
		if (want_dpdk) {
			snprintf(why, len, "dataplane NIC not bound: velod falls back to the socket "
				 "transport on the management interface");
			rc = -ENODEV;
		}
	}
	json_object_set_new(root, "listen", json_string(cfg.listen));
	o = json_object_get(root, "dataplane");
	if (!json_is_object(o)) {
		o = json_object();
		json_object_set_new(root, "dataplane", o);
	}
	json_object_set_new(o, "transport", json_string(cfg.dp_dpdk ? "dpdk" : "socket"));
	if (cfg.dp_dpdk) {
		o = json_object_get(root, "dpdk");
		if (!json_is_object(o)) {
			o = json_object();
			json_object_set_new(root, "dpdk", o);
		}
		json_object_set_new(o, "eal", json_string(eal));
	}
	if (json_dump_file(root, INIT_VELOD_RUN_CONF, JSON_INDENT(2) | JSON_SORT_KEYS) < 0) {
		snprintf(why, len, "cannot write %s", INIT_VELOD_RUN_CONF);
		rc = -EIO;
	}
	json_decref(root);
	say("  transport %s, listen %s%s%s%s", cfg.dp_dpdk ? "dpdk" : "socket", cfg.listen,
	    eal[0] ? ", eal \"" : "", eal, eal[0] ? "\"" : "");
	return rc;
}

/* "auto": the first interface other than lo, after the dataplane NIC left
 * the kernel. */
static int step_mgmt_net(char *why, size_t len)
{
	const char *lo[] = { "ip", "link", "set", "lo", "up", NULL };
	int rc;

	run(10, lo);
	if (is_mac(cfg.mgmt_if)) {
		char mac[INIT_VAL_MAX];

		copy_val(mac, cfg.mgmt_if, sizeof(mac));
		if (ifname_by_mac(mac, cfg.mgmt_if, sizeof(cfg.mgmt_if)) < 0) {
			snprintf(why, len, "no network interface with MAC %s", mac);
			return -ENODEV;
		}
	} else if (!strcmp(cfg.mgmt_if, "auto")) {
		struct dirent **ents;
		int n = scandir("/sys/class/net", &ents, NULL, alphasort);

		cfg.mgmt_if[0] = 0;
		for (int i = 0; i < n; i++) {
			char pci[INIT_VAL_MAX] = "";

			/* Not the dataplane NIC, also when binding it failed. */
			if (cfg.dp_pci[0])
				netdev_pci(ents[i]->d_name, pci, sizeof(pci));
			if (!cfg.mgmt_if[0] && ents[i]->d_name[0] != '.' &&
			    strcmp(ents[i]->d_name, "lo") && (!cfg.dp_pci[0] || strcmp(pci, cfg.dp_pci)))
				copy_val(cfg.mgmt_if, ents[i]->d_name, sizeof(cfg.mgmt_if));
			free(ents[i]);
		}
		if (n >= 0)
			free(ents);
		if (!cfg.mgmt_if[0]) {
			snprintf(why, len, "no network interface left for management");
			return -ENODEV;
		}
	}
	const char *up[] = { "ip", "link", "set", cfg.mgmt_if, "up", NULL };
	if ((rc = run(10, up)) != 0) {
		snprintf(why, len, "ip link set %s up failed", cfg.mgmt_if);
		return -EIO;
	}
	if (cfg.mgmt_addr[0]) {
		const char *addr[] = { "ip", "addr", "add", cfg.mgmt_addr, "dev", cfg.mgmt_if, NULL };

		if ((rc = run(10, addr)) != 0) {
			snprintf(why, len, "ip addr add %s dev %s failed", cfg.mgmt_addr, cfg.mgmt_if);
			return -EIO;
		}
	}
	if (cfg.mgmt_gw[0]) {
		const char *gw[] = { "ip", "route", "add", "default", "via", cfg.mgmt_gw, NULL };

		if ((rc = run(10, gw)) != 0) {
			snprintf(why, len, "default route via %s failed", cfg.mgmt_gw);
			return -EIO;
		}
	}
	say("  %s %s gw %s", cfg.mgmt_if, cfg.mgmt_addr, cfg.mgmt_gw[0] ? cfg.mgmt_gw : "none");
	return 0;
}

static int step_dropbear(char *why, size_t len)
{
	const char *key = "/etc/dropbear/dropbear_ed25519_host_key";
	int rc;

	if (access("/usr/sbin/dropbear", X_OK) != 0) {
		say("  no dropbear in this image");
		return 0;
	}
	mkdir("/etc/dropbear", 0700);
	if (access(key, F_OK) != 0) {
		/* A fresh host key each boot of an initramfs: the image bytes stay
		 * reproducible and carry no secret. */
		const char *gen[] = { "dropbearkey", "-t", "ed25519", "-f", key, NULL };

		if ((rc = run(60, gen)) != 0) {
			snprintf(why, len, "dropbearkey failed");
			return -EIO;
		}
	}
	/* -s: keys only; -j -k: no port forwarding; the forced command in
	 * authorized_keys makes every login a veloctl. */
	const char *db[] = { "dropbear", "-r", key, "-s", "-j", "-k", "-p", "22",
			     "-P", "/run/dropbear.pid", NULL };
	if ((rc = run(10, db)) != 0) {
		snprintf(why, len, "dropbear exited %d", rc);
		return -EIO;
	}
	return 0;
}

static bool file_has(const char *path, const char *needle)
{
	char buf[8192];

	if (read_file(path, buf, sizeof(buf)) < 0)
		return false;
	return strstr(buf, needle) != NULL;
}

static int step_mgmtd(char *why, size_t len)
{
	const char *conf = access(INIT_VELOD_RUN_CONF, R_OK) == 0 ? INIT_VELOD_RUN_CONF
								 : INIT_VELOD_CONF;
	pid_t pid;
	int fd;

	mkdir(INIT_STATE_DIR, 0755);
	if (!cfg.listen[0])
		snprintf(cfg.listen, sizeof(cfg.listen), "0.0.0.0:%d", CONFIG_IMAGE_VELOD_PORT);
	pid = fork();
	if (pid < 0) {
		snprintf(why, len, "fork: %s", strerror(errno));
		return -errno;
	}
	if (pid == 0) {
		fd = open(INIT_MGMTD_LOG, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		setsid();
		execlp("velo-mgmtd", "velo-mgmtd", "--state", INIT_STATE_DIR, "--models",
		       INIT_STATE_DIR "/models", "--socket", INIT_MGMT_SOCK, "--velod-socket",
		       CONFIG_BOOT_CONTROL_SOCKET, "--velod-config", conf, "--listen",
		       cfg.listen, "--metrics", "0.0.0.0:9400",
		       "--start-ms", "600000", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 600; i++) {
		int st;

		if (file_has(INIT_MGMTD_LOG, "velo-mgmtd: ready")) {
			cfg.mgmtd_up = true;
			say("  velo-mgmtd pid %d ready (log %s)", (int)pid, INIT_MGMTD_LOG);
			return 0;
		}
		if (waitpid(pid, &st, WNOHANG) == pid) {
			snprintf(why, len, "velo-mgmtd exited (status %d), see %s", st, INIT_MGMTD_LOG);
			return -ECHILD;
		}
		usleep(100000);
	}
	snprintf(why, len, "no ready line from velo-mgmtd in 60 s");
	return -ETIMEDOUT;
}

/* Ready only when velod says every model passed its known-answer self-test
 * (velod's `ready` control command, through mgmtd's `show status`). */
static int step_ready(char *why, size_t len)
{
	long deadline = ms_since_boot() + cfg.ready_s * 1000;

	if (!cfg.mgmtd_up) {
		snprintf(why, len, "velo-mgmtd is not running");
		return -ENOTCONN;
	}
	while (ms_since_boot() < deadline) {
		const char *argv[] = { "velod", "-s", CONFIG_BOOT_CONTROL_SOCKET, "-q", "ready", NULL };
		pid_t pid = fork();
		int st = -1;

		if (pid == 0) {
			int fd = open("/dev/null", O_WRONLY);

			if (fd >= 0) {
				dup2(fd, STDOUT_FILENO);
				dup2(fd, STDERR_FILENO);
			}
			execvp(argv[0], (char *const *)argv);
			_exit(127);
		}
		if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
			return 0;
		usleep(200000);
	}
	snprintf(why, len, "velod not ready after %ld s (models' self-test; see %s)", cfg.ready_s,
		 INIT_MGMTD_LOG);
	return -ETIMEDOUT;
}

static const struct init_step {
	const char *name;
	int (*fn)(char *why, size_t len);
} steps[] = {
	{ "mount", step_mount },	   { "cmdline", step_cmdline },
	{ "modules", step_modules },	   { "hugepages", step_hugepages },
	{ "isolcpus", step_isolcpus },	   { "dp-nic", step_dp_nic },
	{ "dp-config", step_dp_config },   { "mgmt-net", step_mgmt_net },
	{ "dropbear", step_dropbear },	   { "mgmtd", step_mgmtd },
	{ "ready", step_ready },
};

/* ---- console ------------------------------------------------------------ */

static pid_t console_start(void)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	setsid();
	int fd = open("/dev/console", O_RDWR);
	if (fd >= 0) {
		ioctl(fd, TIOCSCTTY, 1);
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	if (cfg.mgmtd_up && strcmp(cfg.shell, "sh")) {
		execlp("veloctl", "veloctl", "--socket", INIT_MGMT_SOCK, (char *)NULL);
	}
	execl("/bin/sh", "sh", "-l", (char *)NULL);
	_exit(127);
}

int main(int argc, char **argv)
{
	char failed[INIT_REASON_MAX] = "";
	pid_t console;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	setenv("PATH", INIT_PATH, 1);
	setenv("HOME", "/root", 1);
	setenv("TERM", "vt100", 0);
	umask(022);
	copy_val(cfg.dp_nic, CONFIG_BOOT_DP_NIC, sizeof(cfg.dp_nic));
	copy_val(cfg.dp_driver, CONFIG_BOOT_DP_NIC_DRIVER, sizeof(cfg.dp_driver));
	copy_val(cfg.dp_addr, CONFIG_BOOT_DP_ADDR, sizeof(cfg.dp_addr));
	copy_val(cfg.mgmt_if, CONFIG_BOOT_MGMT_IF, sizeof(cfg.mgmt_if));
	copy_val(cfg.mgmt_addr, CONFIG_BOOT_MGMT_ADDR, sizeof(cfg.mgmt_addr));
	copy_val(cfg.mgmt_gw, CONFIG_BOOT_MGMT_GW, sizeof(cfg.mgmt_gw));
	copy_val(cfg.isolated, CONFIG_BOOT_ISOLATED_CPUS, sizeof(cfg.isolated));
	cfg.hugepages = CONFIG_BOOT_HUGEPAGES;
	cfg.ready_s = 600;
	if (getpid() != 1)
		say("warning: pid %d, not 1 (testing?)", (int)getpid());

	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		char why[INIT_REASON_MAX] = "";
		long start = ms_since_boot();
		int rc;

		say("step %s ...", steps[i].name);
		rc = steps[i].fn(why, sizeof(why));
		if (rc == 0) {
			say("step %s ok (%ld ms)", steps[i].name, ms_since_boot() - start);
		} else {
			say("step %s FAILED (%ld ms): %s", steps[i].name, ms_since_boot() - start,
			    why[0] ? why : strerror(-rc));
			size_t l = strlen(failed);
			snprintf(failed + l, sizeof(failed) - l, "%s%s", l ? "," : "", steps[i].name);
		}
	}
	if (!failed[0])
		say("ready in %ld ms", ms_since_boot());
	else
		say("NOT READY: failed: %s (box kept up; console shell follows)", failed);

	if (getpid() != 1 && argc > 1 && !strcmp(argv[1], "--no-console"))
		return failed[0] ? 1 : 0;
	console = console_start();
	/* PID 1: reap everything, respawn the console shell (at most once a
	 * second, so a shell that cannot start does not spin). */
	for (;;) {
		int st;
		pid_t r = wait(&st);

		if (r < 0) {
			sleep(1);
			continue;
		}
		if (r == console) {
			sleep(1);
			console = console_start();
		}
	}
}
