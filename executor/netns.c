/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pod networks of the oci backend: persistent network namespaces kept as files under
 * STATE/exec/netns/, made without `ip netns`. A short-lived thread unshares CLONE_NEWNET (the
 * network namespace is a per-thread attribute), brings `lo` up with SIOCSIFFLAGS and bind-mounts
 * /proc/thread-self/ns/net onto an empty file; the namespace lives as long as that mount. Each
 * file has an owner label beside it (<id>.owner, written atomically before the namespace exists:
 * this process's pid and start time, and for a `private` network the pid and start time of the
 * slirp4netns process that drives its tap0). slirp4netns gets the read end of a pipe as its
 * --exit-fd while this process keeps the write end, so it also exits on its own when slipway is
 * killed. The sweep removes the namespaces of dead owners and kills the slirp4netns processes
 * their labels name (only when pid and start time both match).
 */
#include "executor/executor_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define NETNS_DIR "netns"
#define LABEL_SUFFIX ".owner"
#define LOG_SUFFIX ".log"
#define SLIRP_READY_MS 15000
#define SLIRP_STOP_MS 3000
/* A namespace file without a label is taken as abandoned only after this long. */
#define UNLABELLED_GRACE_S 60

/* ---------------------------------------------------------------- labels */

typedef struct ns_label {
	pid_t pid;
	unsigned long long start;
	pid_t slirp_pid;
	unsigned long long slirp_start;
} ns_label;

static int label_write(const char *path, const ns_label *l, sw_error **err)
{
	cleanup_free char *text =
	        l->slirp_pid > 0
	                ? sw_xasprintf("pid=%d\nstart=%llu\nslirp_pid=%d\nslirp_start=%llu\n",
	                               (int)l->pid, l->start, (int)l->slirp_pid, l->slirp_start)
	                : sw_xasprintf("pid=%d\nstart=%llu\n", (int)l->pid, l->start);
	return sw_fs_write_atomic(path, text, strlen(text), 0600, err);
}

static int label_read(ns_label *out, const char *path, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	cleanup_free char *text = NULL;
	size_t len = 0;
	int r = sw_fs_read_file(&text, &len, path, 64 * 1024, err);
	if (r < 0)
		return r;
	sw_exec__owner o;
	r = sw_exec__owner_parse(&o, text, err);
	if (r < 0)
		return sw_error_wrap(err, "%s", path);
	out->pid = o.pid;
	out->start = o.start;
	sw_exec__owner_clear(&o);
	const char *p = strstr(text, "\nslirp_pid=");
	const char *q = strstr(text, "\nslirp_start=");
	if (p && q) {
		char *end = NULL;
		long v = strtol(p + 11, &end, 10);
		unsigned long long s = strtoull(q + 13, NULL, 10);
		if (v > 0 && v <= INT_MAX && end && *end == '\n') {
			out->slirp_pid = (pid_t)v;
			out->slirp_start = s;
		}
	}
	return 0;
}

/* Whether pid runs and started at `start` (so it is the process a label names). */
static bool same_process(pid_t pid, unsigned long long start)
{
	unsigned long long now = 0;
	return pid > 0 && sw_proc_starttime(&now, pid) == 0 && now == start;
}

/* ---------------------------------------------------------------- the namespace */

typedef struct mk_arg {
	const char *path;
	int err_no;
	const char *what;
} mk_arg;

static void *mk_thread(void *payload)
{
	mk_arg *a = payload;
	if (unshare(CLONE_NEWNET) < 0) {
		a->err_no = errno;
		a->what = "unshare(CLONE_NEWNET)";
		return NULL;
	}
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		a->err_no = errno;
		a->what = "socket";
		return NULL;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, "lo", 3);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		a->err_no = errno;
		a->what = "SIOCGIFFLAGS lo";
		close(s);
		return NULL;
	}
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) {
		a->err_no = errno;
		a->what = "SIOCSIFFLAGS lo";
		close(s);
		return NULL;
	}
	close(s);
	/* the namespace outlives this thread through the bind mount */
	if (mount("/proc/thread-self/ns/net", a->path, NULL, MS_BIND, NULL) < 0) {
		a->err_no = errno;
		a->what = "bind-mount the namespace";
	}
	return NULL;
}

/* Unmount (detached) and remove a namespace file; a missing file is fine. */
static int ns_file_remove(const char *path, sw_error **err)
{
	/* bind mounts may be stacked if something went wrong earlier: remove them all */
	for (int i = 0; i < 16; i++) {
		if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0) {
			if (errno == EINVAL || errno == ENOENT)
				break;
			return sw_error_os(err, errno, "unmount network namespace '%s'", path);
		}
	}
	if (unlink(path) < 0 && errno != ENOENT)
		return sw_error_os(err, errno, "remove network namespace '%s'", path);
	return 0;
}

static char *sanitize(const char *name)
{
	char *s = sw_xcalloc(25, 1);
	size_t n = 0;
	for (const char *p = name ? name : ""; *p && n < 24; p++) {
		char c = *p;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_')
			s[n++] = c;
	}
	if (n == 0)
		memcpy(s, "pod", 4);
	return s;
}

/* ---------------------------------------------------------------- slirp4netns */

static char *log_path_of(const char *path)
{
	return sw_xasprintf("%s%s", path, LOG_SUFFIX);
}

/* The last lines of slirp4netns's stderr, for an error message. */
static char *slirp_log_tail(const char *nspath)
{
	cleanup_free char *lp = log_path_of(nspath);
	char *text = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&text, &len, lp, 1 << 20, &e) < 0) {
		sw_error_free(e);
		return sw_xstrdup("(no output)");
	}
	while (len && (text[len - 1] == '\n' || text[len - 1] == ' '))
		text[--len] = '\0';
	if (len > 400) {
		char *t = sw_xstrdup(text + len - 400);
		free(text);
		text = t;
	}
	for (char *p = text; *p; p++)
		if (*p == '\n')
			*p = ' ';
	if (len)
		return text;
	free(text);
	return sw_xstrdup("(no output)");
}

/* Wait up to ms for pid (our child) to exit; true when it did. */
static bool reap(pid_t pid, int64_t ms)
{
	int64_t end = sw_exec__now_ms() + ms;
	for (;;) {
		int st;
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid || (w < 0 && errno == ECHILD))
			return true;
		if (w < 0 && errno != EINTR)
			return false;
		if (sw_exec__now_ms() >= end)
			return false;
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

/* Stop the slirp4netns this process started: close its exit fd, then TERM, then KILL. */
static void slirp_stop(sw_exec__netns *ns)
{
	if (ns->exit_fd >= 0) {
		close(ns->exit_fd);
		ns->exit_fd = -1;
	}
	if (ns->slirp_pid <= 0)
		return;
	pid_t pid = ns->slirp_pid;
	if (!reap(pid, 500)) {
		if (same_process(pid, ns->slirp_start))
			(void)kill(pid, SIGTERM);
		if (!reap(pid, SLIRP_STOP_MS)) {
			if (same_process(pid, ns->slirp_start))
				(void)kill(pid, SIGKILL);
			(void)reap(pid, SLIRP_STOP_MS);
		}
	}
	ns->slirp_pid = 0;
}

static int slirp_start(sw_exec__netns *ns, sw_error **err)
{
	int ready[2] = { -1, -1 }, ex[2] = { -1, -1 };
	if (pipe2(ready, O_CLOEXEC) < 0)
		return sw_error_os(err, errno, "pipe");
	if (pipe2(ex, O_CLOEXEC) < 0) {
		int e = errno;
		close(ready[0]);
		close(ready[1]);
		return sw_error_os(err, e, "pipe");
	}
	/* above the fds the child gets (3 and 4), so that dup2 cannot clobber one of them */
	int ready_w = fcntl(ready[1], F_DUPFD_CLOEXEC, 10);
	int exit_r = fcntl(ex[0], F_DUPFD_CLOEXEC, 10);
	close(ready[1]);
	close(ex[0]);
	cleanup_free char *lp = log_path_of(ns->path);
	int logfd = open(lp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	int r = 0;
	if (ready_w < 0 || exit_r < 0 || logfd < 0 || devnull < 0)
		r = sw_error_os(err, errno, "prepare slirp4netns");

	cleanup_free char *nsarg = sw_xstrdup(ns->path);
	char *argv[] = { "slirp4netns",
		         "--configure",
		         "--mtu=65520",
		         "--disable-host-loopback",
		         "--netns-type=path",
		         "--ready-fd=3",
		         "--exit-fd=4",
		         nsarg,
		         "tap0",
		         NULL };
	pid_t pid = -1;
	if (r == 0) {
		posix_spawn_file_actions_t fa;
		posix_spawnattr_t at;
		posix_spawn_file_actions_init(&fa);
		posix_spawnattr_init(&at);
		sigset_t none, all;
		sigemptyset(&none);
		sigfillset(&all);
		sigdelset(&all, SIGKILL);
		sigdelset(&all, SIGSTOP);
		int sr = posix_spawn_file_actions_adddup2(&fa, devnull, 0);
		if (!sr)
			sr = posix_spawn_file_actions_adddup2(&fa, devnull, 1);
		if (!sr)
			sr = posix_spawn_file_actions_adddup2(&fa, logfd, 2);
		if (!sr)
			sr = posix_spawn_file_actions_adddup2(&fa, ready_w, 3);
		if (!sr)
			sr = posix_spawn_file_actions_adddup2(&fa, exit_r, 4);
		if (!sr)
			sr = posix_spawn_file_actions_addclosefrom_np(&fa, 5);
		/* its own process group: a terminal's Ctrl-C goes to slipway, which stops pods */
		if (!sr)
			sr = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP |
			                                           POSIX_SPAWN_SETSIGMASK |
			                                           POSIX_SPAWN_SETSIGDEF);
		if (!sr)
			sr = posix_spawnattr_setpgroup(&at, 0);
		if (!sr)
			sr = posix_spawnattr_setsigmask(&at, &none);
		if (!sr)
			sr = posix_spawnattr_setsigdefault(&at, &all);
		if (!sr)
			sr = posix_spawnp(&pid, "slirp4netns", &fa, &at, argv, environ);
		posix_spawn_file_actions_destroy(&fa);
		posix_spawnattr_destroy(&at);
		if (sr) {
			pid = -1;
			r = sr == ENOENT ? sw_error_set(err, SW_ERR_NOT_FOUND,
			                                "slirp4netns is not installed (private "
			                                "network)")
			                 : sw_error_os(err, sr, "start slirp4netns");
		}
	}
	if (ready_w >= 0)
		close(ready_w);
	if (exit_r >= 0)
		close(exit_r);
	if (logfd >= 0)
		close(logfd);
	if (devnull >= 0)
		close(devnull);
	if (r < 0) {
		close(ready[0]);
		close(ex[1]);
		return r;
	}
	ns->slirp_pid = pid;
	ns->exit_fd = ex[1];
	(void)sw_proc_starttime(&ns->slirp_start, pid);

	/* ready: it writes "1" to the ready fd once tap0 is configured; EOF means it died */
	int64_t end = sw_exec__now_ms() + SLIRP_READY_MS;
	bool ok = false;
	for (;;) {
		int64_t left = end - sw_exec__now_ms();
		if (left <= 0)
			break;
		struct pollfd pfd = { .fd = ready[0], .events = POLLIN };
		int pr = poll(&pfd, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			break;
		char c;
		ssize_t n = read(ready[0], &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		ok = n == 1;
		break;
	}
	close(ready[0]);
	if (!ok) {
		bool timed_out = sw_exec__now_ms() >= end;
		slirp_stop(ns);
		cleanup_free char *tail = slirp_log_tail(ns->path);
		return sw_error_set(err, timed_out ? SW_ERR_TIMEOUT : SW_ERR_GENERIC,
		                    "slirp4netns for '%s' %s: %s", ns->path,
		                    timed_out ? "was not ready in time" : "failed", tail);
	}
	return 0;
}

/* ---------------------------------------------------------------- create and destroy */

int sw_exec__netns_create(sw_exec__netns *out, const char *exec_dir, const char *name, bool slirp,
                          sw_error **err)
{
	memset(out, 0, sizeof(*out));
	out->exit_fd = -1;
	cleanup_free char *dir = sw_path_join(exec_dir, NETNS_DIR);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return sw_error_os(err, errno, "create '%s'", dir);
	ns_label label = { .pid = getpid() };
	int sr = sw_proc_starttime(&label.start, label.pid);
	if (sr < 0)
		return sw_error_os(err, -sr, "read the start time of this process");
	cleanup_free char *base = sanitize(name);
	for (int attempt = 0;; attempt++) {
		uint8_t rnd[8];
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return sw_error_os(err, errno, "getrandom");
		char hex[17];
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
		cleanup_free char *id = sw_xasprintf("%s-%s", base, hex);
		char *path = sw_path_join(dir, id);
		int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
		if (fd >= 0) {
			close(fd);
			out->path = path;
			break;
		}
		int e = errno;
		if (e != EEXIST || attempt >= 8) {
			int r = sw_error_os(err, e, "create network namespace file '%s'", path);
			free(path);
			return r;
		}
		free(path);
	}
	out->label = sw_xasprintf("%s%s", out->path, LABEL_SUFFIX);
	/* the label first: whatever exists after a crash from here on is labelled */
	int r = label_write(out->label, &label, err);
	if (r == 0) {
		mk_arg a = { .path = out->path };
		pthread_t th;
		int pr = pthread_create(&th, NULL, mk_thread, &a);
		if (pr)
			r = sw_error_os(err, pr, "start a thread");
		else if (pthread_join(th, NULL) == 0 && a.err_no)
			r = sw_error_os(err, a.err_no, "network namespace '%s': %s", out->path,
			                a.what);
	}
	if (r == 0 && slirp) {
		r = slirp_start(out, err);
		if (r == 0) {
			label.slirp_pid = out->slirp_pid;
			label.slirp_start = out->slirp_start;
			r = label_write(out->label, &label, err);
		}
	}
	if (r < 0) {
		sw_error *e2 = NULL;
		if (sw_exec__netns_destroy(out, &e2) < 0) {
			SW_LOG(SW_LOG_WARN, "%s", sw_error_msg(e2));
			sw_error_free(e2);
		}
		return r;
	}
	SW_LOG(SW_LOG_DEBUG, "network namespace %s%s", out->path, slirp ? " with slirp4netns" : "");
	return 0;
}

int sw_exec__netns_destroy(sw_exec__netns *ns, sw_error **err)
{
	int r = 0;
	slirp_stop(ns);
	if (ns->path) {
		r = ns_file_remove(ns->path, err);
		cleanup_free char *lp = log_path_of(ns->path);
		(void)unlink(lp);
	}
	/* the label goes last, and only once the namespace is gone */
	if (r == 0 && ns->label && unlink(ns->label) < 0 && errno != ENOENT)
		r = sw_error_os(err, errno, "remove '%s'", ns->label);
	free(ns->path);
	free(ns->label);
	memset(ns, 0, sizeof(*ns));
	ns->exit_fd = -1;
	return r;
}

/* ---------------------------------------------------------------- sweep */

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* One namespace `id` of the netns folder: removed when its owner is gone. */
static int sweep_one(bool *swept, const char *dir, const char *id, sw_error **err)
{
	*swept = false;
	cleanup_free char *path = sw_path_join(dir, id);
	cleanup_free char *label_path = sw_xasprintf("%s%s", path, LABEL_SUFFIX);
	ns_label l;
	sw_error *e = NULL;
	bool labelled = label_read(&l, label_path, &e) == 0;
	sw_error_free(e);
	if (labelled) {
		sw_exec__owner o = { .pid = l.pid, .start = l.start };
		if (sw_exec__owner_alive(&o))
			return 0;
	} else {
		/* a label being written this instant: leave young files alone */
		struct stat st;
		if (lstat(path, &st) < 0 || time(NULL) - st.st_mtime < UNLABELLED_GRACE_S)
			return 0;
	}
	SW_LOG(SW_LOG_DEBUG, "sweep: network namespace '%s' was left by process %d", path,
	       labelled ? (int)l.pid : 0);
	if (labelled && same_process(l.slirp_pid, l.slirp_start)) {
		(void)kill(l.slirp_pid, SIGKILL);
		/* it is gone once its start time no longer matches (reaped, or a zombie of ours) */
		int64_t end = sw_exec__now_ms() + 2000;
		while (sw_exec__now_ms() < end) {
			char st = 0, buf[512];
			cleanup_free char *sp = sw_xasprintf("/proc/%d/stat", (int)l.slirp_pid);
			int fd = open(sp, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				break;
			ssize_t n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			if (n > 0) {
				buf[n] = '\0';
				char *p = strrchr(buf, ')');
				st = p && p[1] ? p[2] : 0;
			}
			if (st == 'Z' || st == 'X' || !same_process(l.slirp_pid, l.slirp_start))
				break;
			struct timespec ts = { 0, 10 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	int r = ns_file_remove(path, err);
	if (r < 0)
		return sw_error_wrap(err, "sweep");
	cleanup_free char *lp = log_path_of(path);
	(void)unlink(lp);
	if (unlink(label_path) < 0 && errno != ENOENT)
		return sw_error_os(err, errno, "sweep: remove '%s'", label_path);
	*swept = true;
	return 0;
}

int sw_exec__netns_sweep(unsigned *removed, const char *exec_dir, sw_error **err)
{
	if (removed)
		*removed = 0;
	cleanup_free char *dir = sw_path_join(exec_dir, NETNS_DIR);
	cleanup_close int lockfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lockfd < 0)
		return errno == ENOENT ? 0 : sw_error_os(err, errno, "sweep: open '%s'", dir);
	while (flock(lockfd, LOCK_EX) < 0) {
		if (errno != EINTR)
			return sw_error_os(err, errno, "sweep: lock '%s'", dir);
	}
	DIR *d = opendir(dir);
	if (!d)
		return sw_error_os(err, errno, "sweep: read '%s'", dir);
	cleanup_strv char **ids = NULL;
	for (struct dirent *de; (de = readdir(d)) != NULL;) {
		if (de->d_name[0] == '.')
			continue;
		if (ends_with(de->d_name, LABEL_SUFFIX)) {
			/* a label whose namespace file is already gone (a sweep cut short) */
			cleanup_free char *id =
			        sw_xstrndup(de->d_name, strlen(de->d_name) - strlen(LABEL_SUFFIX));
			cleanup_free char *p = sw_path_join(dir, id);
			struct stat st;
			if (lstat(p, &st) < 0 && errno == ENOENT)
				sw_strv_push(&ids, id);
			continue;
		}
		if (ends_with(de->d_name, LOG_SUFFIX))
			continue;
		sw_strv_push(&ids, de->d_name);
	}
	closedir(d);
	unsigned count = 0;
	int first = 0;
	for (size_t i = 0; ids && ids[i]; i++) {
		bool swept = false;
		sw_error *e = NULL;
		int r = sweep_one(&swept, dir, ids[i], &e);
		if (r < 0) {
			SW_LOG(SW_LOG_WARN, "%s", sw_error_msg(e));
			if (!first) {
				first = r;
				if (err && !*err)
					*err = steal_pointer(&e);
			}
			sw_error_free(e);
			continue;
		}
		count += swept;
	}
	if (removed)
		*removed = count;
	return first;
}
