/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI runtime as a child process: finding runc or crun, its --root under STATE/exec/runtime,
 * and starting it with clean stdio (stdin /dev/null, output on pipes), reset signals, no
 * inherited descriptors, in its own process group (a terminal's Ctrl-C reaches slipway, which
 * then stops the container its own way). posix_spawn (vfork-style) starts it; an exec failure
 * comes back as an error, never as the container's exit code. crun refuses hybrid cgroup hosts
 * whose cgroup2 hierarchy holds controllers; there it runs in a private mount namespace where
 * /sys/fs/cgroup/unified is unmounted, so it sees plain cgroup v1 (that needs fork(), then only
 * async-signal-safe calls before exec, with a close-on-exec pipe to report an exec failure).
 */
#include "executor/executor_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define CMD_OUTPUT_MAX ((size_t)16 << 20)

int64_t sw_exec__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1 when the host is in hybrid cgroup mode with controllers on cgroup2 (crun's refusal). */
static int hybrid_with_v2_controllers(void)
{
	static int cached = -1;
	int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
	if (v >= 0)
		return v;
	struct statfs st;
	v = 0;
	if (statfs("/sys/fs/cgroup", &st) == 0 && st.f_type == TMPFS_MAGIC &&
	    statfs("/sys/fs/cgroup/unified", &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC) {
		char buf[256];
		int fd = open("/sys/fs/cgroup/unified/cgroup.controllers", O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			ssize_t n = read(fd, buf, sizeof(buf));
			v = n > 0;
			close(fd);
		}
	}
	__atomic_store_n(&cached, v, __ATOMIC_RELAXED);
	return v;
}

static char *find_in_path(const char *name)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	cleanup_free char *copy = sw_xstrdup(path);
	char *save = NULL;
	for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char *cand = sw_path_join(*d ? d : ".", name);
		struct stat st;
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
			return cand;
		free(cand);
	}
	return NULL;
}

void sw_exec__runtime_clear(sw_exec__runtime *rt)
{
	free(rt->path);
	free(rt->name);
	free(rt->root);
	memset(rt, 0, sizeof(*rt));
}

void sw_exec__runtime_init_known(sw_exec__runtime *out, const char *path, const char *root)
{
	memset(out, 0, sizeof(*out));
	out->path = sw_xstrdup(path);
	const char *base = strrchr(path, '/');
	out->name = sw_xstrdup(base ? base + 1 : path);
	out->root = sw_xstrdup(root);
	out->crun = strncmp(out->name, "crun", 4) == 0;
	out->hide_unified = out->crun && hybrid_with_v2_controllers();
}

int sw_exec__runtime_init(sw_exec__runtime *out, const char *runtime, const char *exec_dir,
                          sw_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!runtime || !*runtime)
		runtime = "runc";
	cleanup_free char *path = NULL;
	if (strchr(runtime, '/')) {
		if (access(runtime, X_OK) < 0)
			return sw_error_os(err, errno, "OCI runtime '%s'", runtime);
		path = sw_xstrdup(runtime);
	} else {
		path = find_in_path(runtime);
		if (!path)
			return sw_error_set(
			        err, SW_ERR_NOT_FOUND,
			        "OCI runtime '%s' not found in PATH (install runc or crun)",
			        runtime);
	}
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	if (!*base || *base == '.')
		return sw_error_set(err, SW_ERR_INVALID, "OCI runtime '%s': odd name", runtime);
	cleanup_free char *rootdir = sw_path_join(exec_dir, SW_EXEC__RUNTIME_DIR);
	cleanup_free char *root = sw_path_join(rootdir, base);
	int r = sw_fs_mkdir_p(root, 0700, err);
	if (r < 0)
		return sw_error_wrap(err, "OCI runtime state folder");
	sw_exec__runtime_init_known(out, path, root);
	return 0;
}

/* ---------------------------------------------------------------- spawning */

/* Only async-signal-safe calls from here until exec: other threads may hold locks. */
static void child_exec(const sw_exec__runtime *rt, char *const *argv, int devnull, int out_fd,
                       int err_fd, int report_fd)
{
	int e = 0;
	if (report_fd < 3)
		report_fd = fcntl(report_fd, F_DUPFD_CLOEXEC, 3);
	(void)setpgid(0, 0);
	if (rt->hide_unified) {
		if (unshare(CLONE_NEWNS) < 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0 ||
		    (umount2("/sys/fs/cgroup/unified", MNT_DETACH) < 0 && errno != EINVAL))
			goto fail;
	}
	/* lift the fds above stderr first, so that dup2 below cannot clobber one of them */
	int in = fcntl(devnull, F_DUPFD_CLOEXEC, 3);
	int out = fcntl(out_fd >= 0 ? out_fd : devnull, F_DUPFD_CLOEXEC, 3);
	int errfd = fcntl(err_fd >= 0 ? err_fd : devnull, F_DUPFD_CLOEXEC, 3);
	if (in < 0 || out < 0 || errfd < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
	    dup2(errfd, 2) < 0)
		goto fail;
	/* nothing else leaks into the runtime: every other fd closes on exec */
	(void)close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
	sigset_t all;
	sigemptyset(&all);
	(void)sigprocmask(SIG_SETMASK, &all, NULL);
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			(void)sigaction(s, &dfl, NULL);
	execv(rt->path, argv);
fail:
	e = errno;
	(void)!write(report_fd, &e, sizeof(e));
	_exit(127);
}

/*
 * The common case: posix_spawn, which glibc does with CLONE_VM|CLONE_VFORK, so the cost does
 * not grow with the size of this process (a builder holding big buffers forks slowly).
 */
static int spawn_vfork(pid_t *out_pid, const sw_exec__runtime *rt, char **argv, int in, int out,
                       int errfd, sw_error **err)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	sigdelset(&all, SIGKILL);
	sigdelset(&all, SIGSTOP);
	int r = posix_spawn_file_actions_adddup2(&fa, in, 0);
	if (!r)
		r = posix_spawn_file_actions_adddup2(&fa, out, 1);
	if (!r)
		r = posix_spawn_file_actions_adddup2(&fa, errfd, 2);
	if (!r)
		r = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	if (!r)
		r = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
		                                          POSIX_SPAWN_SETSIGDEF);
	if (!r)
		r = posix_spawnattr_setpgroup(&at, 0);
	if (!r)
		r = posix_spawnattr_setsigmask(&at, &none);
	if (!r)
		r = posix_spawnattr_setsigdefault(&at, &all);
	if (!r)
		r = posix_spawn(out_pid, rt->path, &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (r) {
		*out_pid = -1;
		return sw_error_os(err, r, "start %s", rt->path);
	}
	return 0;
}

int sw_exec__runtime_spawn(pid_t *out_pid, const sw_exec__runtime *rt, const char *log,
                           const char *const *args, int out_fd, int err_fd, sw_error **err)
{
	*out_pid = -1;
	cleanup_strv char **argv = NULL;
	sw_strv_push(&argv, rt->path);
	sw_strv_push(&argv, "--root");
	sw_strv_push(&argv, rt->root);
	if (log) {
		if (rt->crun) {
			cleanup_free char *l = sw_xasprintf("--log=file:%s", log);
			sw_strv_push(&argv, l);
			sw_strv_push(&argv, "--log-format=json");
		} else {
			sw_strv_push(&argv, "--log");
			sw_strv_push(&argv, log);
			sw_strv_push(&argv, "--log-format");
			sw_strv_push(&argv, "json");
		}
	}
	for (size_t i = 0; args[i]; i++)
		sw_strv_push(&argv, args[i]);

	cleanup_close int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		return sw_error_os(err, errno, "open /dev/null");
	int in = devnull, out = out_fd >= 0 ? out_fd : devnull,
	    errfd = err_fd >= 0 ? err_fd : devnull;
	if (!rt->hide_unified && in > 2 && out > 2 && errfd > 2)
		return spawn_vfork(out_pid, rt, argv, in, out, errfd, err);

	int report[2];
	if (pipe2(report, O_CLOEXEC) < 0)
		return sw_error_os(err, errno, "pipe");
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(report[0]);
		close(report[1]);
		return sw_error_os(err, e, "fork for %s", rt->name);
	}
	if (pid == 0) {
		close(report[0]);
		child_exec(rt, argv, devnull, out_fd, err_fd, report[1]);
	}
	close(report[1]);
	int child_errno = 0;
	ssize_t n;
	do
		n = read(report[0], &child_errno, sizeof(child_errno));
	while (n < 0 && errno == EINTR);
	close(report[0]);
	if (n == (ssize_t)sizeof(child_errno)) {
		int status;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		return sw_error_os(err, child_errno, "start %s", rt->path);
	}
	*out_pid = pid;
	return 0;
}

int sw_exec__runtime_cmd(int *status, char **output, const sw_exec__runtime *rt,
                         const char *const *args, int64_t timeout_ms, sw_error **err)
{
	*status = -1;
	if (output)
		*output = NULL;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return sw_error_os(err, errno, "pipe");
	pid_t pid;
	int r = sw_exec__runtime_spawn(&pid, rt, NULL, args, p[1], p[1], err);
	close(p[1]);
	if (r < 0) {
		close(p[0]);
		return r;
	}
	sw_buf out = SW_BUF_INIT(CMD_OUTPUT_MAX);
	int64_t deadline = sw_exec__now_ms() + (timeout_ms > 0 ? timeout_ms : 10000);
	bool killed = false;
	for (;;) {
		int64_t left = deadline - sw_exec__now_ms();
		if (left <= 0) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			killed = true;
			break;
		}
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		int pr = poll(&pfd, 1, (int)(left > 1000 ? 1000 : left));
		if (pr < 0 && errno != EINTR)
			break;
		if (pr <= 0)
			continue;
		char buf[4096];
		ssize_t n = read(p[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (output && sw_buf_append(&out, buf, (size_t)n, NULL) < 0)
			sw_buf_reset(&out); /* keep going: the end matters more than the start */
	}
	close(p[0]);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			sw_buf_free(&out);
			return sw_error_os(err, errno, "wait for %s", rt->name);
		}
	}
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	if (output)
		*output = sw_buf_steal(&out, NULL);
	sw_buf_free(&out);
	if (killed)
		return sw_error_set(err, SW_ERR_TIMEOUT, "%s %s: no answer after %lld ms", rt->name,
		                    args[0], (long long)timeout_ms);
	return 0;
}

bool sw_exec__runtime_has(const sw_exec__runtime *rt, const char *id)
{
	cleanup_free char *p = sw_path_join(rt->root, id);
	struct stat st;
	return lstat(p, &st) == 0;
}

int sw_exec__runtime_kill(const sw_exec__runtime *rt, const char *id, const char *sig)
{
	/* --all: every process of the container, not only its init. A shell as PID 1 ignores
	 * SIGTERM (no default action for a namespace's init), but the command it waits for does
	 * not, and the shell then ends with that command's status. */
	const char *args_all[] = { "kill", "--all", id, sig, NULL };
	const char *args_one[] = { "kill", id, sig, NULL };
	const char **args = strcmp(sig, "KILL") == 0 ? args_one : args_all;
	int status = -1;
	sw_error *e = NULL;
	if (sw_exec__runtime_cmd(&status, NULL, rt, args, 10000, &e) < 0) {
		SW_LOG(SW_LOG_DEBUG, "%s kill %s %s: %s", rt->name, id, sig, sw_error_msg(e));
		sw_error_free(e);
		return -1;
	}
	return status == 0 ? 0 : -1;
}

int sw_exec__runtime_delete(const sw_exec__runtime *rt, const char *id, sw_error **err)
{
	if (!sw_exec__runtime_has(rt, id))
		return 0;
	const char *args[] = { "delete", "--force", id, NULL };
	for (int attempt = 0; attempt < 3; attempt++) {
		int status = -1;
		cleanup_free char *out = NULL;
		sw_error *e = NULL;
		int r = sw_exec__runtime_cmd(&status, &out, rt, args, 15000, &e);
		if (!sw_exec__runtime_has(rt, id)) {
			sw_error_free(e);
			return 0;
		}
		if (attempt == 2) {
			if (r < 0) {
				if (err && !*err)
					*err = e;
				else
					sw_error_free(e);
				return sw_error_wrap(err, "delete container %s", id);
			}
			size_t n = strlen(out);
			while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
				out[--n] = '\0';
			return sw_error_set(err, SW_ERR_GENERIC,
			                    "%s delete --force %s: exit code %d%s%s", rt->name, id,
			                    status, *out ? ": " : "", out);
		}
		sw_error_free(e);
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return 0;
}
