/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One container from start to end. The rootfs overlay is mounted in a labelled box under
 * STATE/exec/<id>/, the user is resolved through the rootfs's own /etc files, a missing working
 * folder is created, the generated hosts (with the pod's names on 127.0.0.1), resolv.conf, hostname
 * and config.json go beside the mount, and `RUNTIME run` runs the process with stdin /dev/null and
 * both output streams on pipes, read with poll() and handed to the caller as they come. A cancel
 * sends SIGTERM to every process through `RUNTIME kill --all`, then SIGKILL after the grace period;
 * a timeout (or a second cancel) sends SIGKILL at once; the PID namespace takes every other
 * process of the container down with its init. Whatever happened, the
 * runtime's state is deleted, the mount-point stubs the runtime had to create in the rootfs (/proc,
 * /dev, /sys, /etc/hosts ... when the image lacks them) are removed again so the upper folder holds
 * only the process's changes, the overlay is unmounted and the box removed. Nothing here calls
 * sync(2) or copies a rootfs: the cost per container is a mount, a few small files and the
 * runtime's own start.
 */
#include "executor/executor_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define TICK_MS 100
#define STDERR_TAIL 8192
#define ETC_FILE_MAX ((size_t)4 << 20)

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Set once pivot_root failed on this machine: later containers start with --no-pivot. */
static bool no_pivot;

static void cleanup_jsonp(json_t **j)
{
	json_decref(*j);
}
#define cleanup_json __attribute__((cleanup(cleanup_jsonp)))

/* ---------------------------------------------------------------- files in the rootfs */

/* sw_exec_read_file_cb over the mounted rootfs (an O_PATH fd in payload). */
static int rootfs_read(char **out, size_t *out_len, const char *path, void *payload, sw_error **err)
{
	*out = NULL;
	*out_len = 0;
	int rootfd = *(int *)payload;
	int fd = -1;
	sw_error *e = NULL;
	if (sw_path_open_in_root(&fd, rootfd, path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0, &e) < 0) {
		int sys = e ? e->sys : 0;
		if (sys == ENOENT || sys == ENOTDIR) {
			sw_error_free(e);
			return sw_error_set(err, SW_ERR_NOT_FOUND, "%s: not in the image", path);
		}
		if (err && !*err)
			*err = e;
		else
			sw_error_free(e);
		return SW_ERR_GENERIC;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return sw_error_set(err, SW_ERR_INVALID, "%s: not a regular file", path);
	}
	sw_buf b = SW_BUF_INIT(ETC_FILE_MAX);
	char buf[16384];
	int r = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = sw_error_os(err, errno, "read %s", path);
			break;
		}
		if (n == 0)
			break;
		r = sw_buf_append(&b, buf, (size_t)n, err);
		if (r < 0) {
			sw_error_wrap(err, "%s", path);
			break;
		}
	}
	close(fd);
	if (r < 0) {
		sw_buf_free(&b);
		return r;
	}
	*out = sw_buf_steal(&b, out_len);
	return 0;
}

/* ---------------------------------------------------------------- mount-point stubs */

/*
 * A path the runtime will create in the rootfs as a mount point because the image lacks it:
 * `rel` is the first missing component (root-relative), `parent` the folder it goes in, whose
 * times are put back after the stub is removed again (as BuildKit's mount stub cleaner does).
 */
typedef struct stub {
	char *rel;
	char *parent;
	struct timespec times[2];
} stub;

typedef struct stubs {
	stub *v;
	size_t n;
} stubs;

static void stubs_clear(stubs *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->v[i].rel);
		free(s->v[i].parent);
	}
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

static void stubs_note(stubs *s, int rootfd, const char *dest)
{
	cleanup_free char *rel = NULL;
	sw_error *e = NULL;
	if (sw_path_resolve_in_root(&rel, rootfd, dest, 0, &e) < 0) {
		sw_error_free(e);
		return;
	}
	/* find the first component that does not exist */
	for (char *p = rel; *p;) {
		char *slash = strchr(p, '/');
		char saved = slash ? *slash : '\0';
		if (slash)
			*slash = '\0';
		struct stat st;
		if (fstatat(rootfd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				return;
			for (size_t i = 0; i < s->n; i++)
				if (strcmp(s->v[i].rel, rel) == 0)
					return;
			char *ls = strrchr(rel, '/');
			cleanup_free char *parent =
			        ls ? sw_xstrndup(rel, (size_t)(ls - rel)) : sw_xstrdup("");
			struct stat pst;
			if (fstatat(rootfd, *parent ? parent : ".", &pst, AT_SYMLINK_NOFOLLOW) < 0)
				return;
			s->v = sw_xrealloc(s->v, (s->n + 1) * sizeof(*s->v));
			stub *st2 = &s->v[s->n++];
			st2->rel = sw_xstrdup(rel);
			st2->parent = steal_pointer(&parent);
			st2->times[0] = pst.st_atim;
			st2->times[1] = pst.st_mtim;
			return;
		}
		if (!slash)
			return;
		*slash = saved;
		p = slash + 1;
	}
}

/* Remove an empty file or a tree of empty folders and empty files (what a runtime makes). */
static bool remove_stub_at(int parentfd, const char *name, int depth)
{
	struct stat st;
	if (fstatat(parentfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT;
	if (S_ISREG(st.st_mode))
		return st.st_size == 0 && unlinkat(parentfd, name, 0) == 0;
	if (!S_ISDIR(st.st_mode) || depth > 16)
		return false;
	int fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return false;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return false;
	}
	bool ok = true;
	for (struct dirent *de; ok && (de = readdir(d)) != NULL;) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		ok = remove_stub_at(dirfd(d), de->d_name, depth + 1);
	}
	closedir(d);
	return ok && unlinkat(parentfd, name, AT_REMOVEDIR) == 0;
}

static void stubs_remove(stubs *s, int rootfd)
{
	for (size_t i = s->n; i-- > 0;) {
		stub *st = &s->v[i];
		int pfd = -1;
		sw_error *e = NULL;
		/* resolved in the root again: the process may have swapped folders for symlinks */
		if (sw_path_open_in_root(&pfd, rootfd, *st->parent ? st->parent : "/",
		                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, &e) < 0) {
			sw_error_free(e);
			continue;
		}
		const char *base = strrchr(st->rel, '/');
		base = base ? base + 1 : st->rel;
		if (remove_stub_at(pfd, base, 0))
			(void)futimens(pfd, st->times);
		close(pfd);
	}
}

/*
 * Docker's RLIMIT_NOFILE (1048576), or the current hard limit when it is lower and this
 * process lacks CAP_SYS_RESOURCE to raise it (the runtime could not set it either).
 */
static uint64_t nofile_limit(void)
{
	const uint64_t want = 1048576;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_max == RLIM_INFINITY ||
	    rl.rlim_max >= want)
		return want;
	cleanup_free char *status = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&status, &len, "/proc/self/status", 1 << 20, &e) < 0) {
		sw_error_free(e);
		return rl.rlim_max;
	}
	const char *eff = strstr(status, "\nCapEff:");
	unsigned long long caps = eff ? strtoull(eff + 9, NULL, 16) : 0;
	return (caps & (1ULL << CAP_SYS_RESOURCE)) ? want : (uint64_t)rl.rlim_max;
}

/* ---------------------------------------------------------------- bundle files */

static int write_bundle_file(int dirfd, const char *name, const char *data, size_t len,
                             sw_error **err)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return sw_error_os(err, errno, "create bundle file '%s'", name);
	int r = sw_fs_write_all(fd, data, len, err);
	close(fd);
	return r;
}

static int write_etc_files(const sw_exec__box *box, const sw_exec_spec *spec, const char *hostname,
                           sw_error **err)
{
	sw_buf hosts = SW_BUF_INIT(0);
	int r = sw_buf_printf(&hosts, err,
	                      "127.0.0.1\tlocalhost %s\n"
	                      "::1\tlocalhost ip6-localhost ip6-loopback\n",
	                      hostname);
	/* the pod's other containers (services), reachable on the shared loopback */
	for (size_t i = 0; r == 0 && spec->extra_hosts && spec->extra_hosts[i]; i++)
		r = sw_buf_printf(&hosts, err, "127.0.0.1\t%s\n", spec->extra_hosts[i]);
	if (r == 0)
		r = write_bundle_file(box->dirfd, "hosts", hosts.data, hosts.len, err);
	sw_buf_free(&hosts);
	if (r < 0)
		return r;
	cleanup_free char *resolv = NULL;
	size_t rlen = 0;
	if (spec->dns && spec->dns[0]) {
		sw_buf b = SW_BUF_INIT(0);
		for (size_t i = 0; r == 0 && spec->dns[i]; i++)
			r = sw_buf_printf(&b, err, "nameserver %s\n", spec->dns[i]);
		resolv = sw_buf_steal(&b, &rlen);
		if (r < 0)
			return r;
	} else if (spec->network == SW_EXEC_NET_HOST) {
		sw_error *e = NULL;
		if (sw_fs_read_file(&resolv, &rlen, "/etc/resolv.conf", 1 << 20, &e) < 0) {
			sw_error_free(e);
			resolv = sw_xstrdup("");
			rlen = 0;
		}
	} else {
		/* no network: lookups fail at once on the loopback instead of timing out */
		resolv = sw_xstrdup("nameserver 127.0.0.1\n");
		rlen = strlen(resolv);
	}
	r = write_bundle_file(box->dirfd, "resolv.conf", resolv, rlen, err);
	if (r < 0)
		return r;
	cleanup_free char *hn = sw_xasprintf("%s\n", hostname);
	return write_bundle_file(box->dirfd, "hostname", hn, strlen(hn), err);
}

static bool env_has(char *const *env, const char *key)
{
	size_t n = strlen(key);
	for (size_t i = 0; env && env[i]; i++)
		if (strncmp(env[i], key, n) == 0 && env[i][n] == '=')
			return true;
	return false;
}

static bool hostname_ok(const char *h)
{
	size_t n = strlen(h);
	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
		      (h[i] >= '0' && h[i] <= '9') || h[i] == '-' || h[i] == '.'))
			return false;
	return true;
}

/* A name for /etc/hosts: a hostname, or a service name with '_' (resolvers take it there). */
static bool host_alias_ok(const char *h)
{
	cleanup_free char *copy = sw_xstrdup(h);
	for (char *p = copy; *p; p++)
		if (*p == '_')
			*p = '-';
	return hostname_ok(copy);
}

static int validate(const sw_exec_spec *spec, sw_error **err)
{
	if (!spec->argv || !spec->argv[0] || !spec->argv[0][0])
		return sw_error_set(err, SW_ERR_INVALID, "container: no command");
	if (spec->readonly_rootfs && spec->n_lower == 0)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "container: a read-only rootfs needs lower folders");
	if (!spec->readonly_rootfs && (!spec->upper_dir || !*spec->upper_dir))
		return sw_error_set(err, SW_ERR_INVALID, "container: no upper folder");
	if (spec->cwd && spec->cwd[0] != '/')
		return sw_error_set(err, SW_ERR_INVALID,
		                    "container: working folder '%s' is not absolute", spec->cwd);
	if (spec->hostname && !hostname_ok(spec->hostname))
		return sw_error_set(err, SW_ERR_INVALID, "container: bad hostname '%s'",
		                    spec->hostname);
	if (spec->network == SW_EXEC_NET_PATH && (!spec->netns_path || spec->netns_path[0] != '/'))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "container: network namespace path '%s' is not absolute",
		                    spec->netns_path ? spec->netns_path : "(null)");
	for (size_t i = 0; spec->extra_hosts && spec->extra_hosts[i]; i++)
		if (!host_alias_ok(spec->extra_hosts[i]))
			return sw_error_set(err, SW_ERR_INVALID, "container: bad host name '%s'",
			                    spec->extra_hosts[i]);
	for (size_t i = 0; spec->dns && spec->dns[i]; i++)
		if (!*spec->dns[i] || strpbrk(spec->dns[i], " \t\n#;"))
			return sw_error_set(err, SW_ERR_INVALID, "container: bad nameserver '%s'",
			                    spec->dns[i]);
	for (size_t i = 0; i < spec->n_mounts; i++) {
		const sw_exec_mount *m = &spec->mounts[i];
		bool bind = !m->type || strcmp(m->type, "bind") == 0;
		if (!bind && strcmp(m->type, "tmpfs") != 0)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "container: mount type '%s' (bind or tmpfs only)",
			                    m->type);
		if (!m->destination || m->destination[0] != '/')
			return sw_error_set(err, SW_ERR_INVALID,
			                    "container: mount destination '%s' is not absolute",
			                    m->destination ? m->destination : "(null)");
		if (bind && (!m->source || m->source[0] != '/'))
			return sw_error_set(err, SW_ERR_INVALID,
			                    "container: bind source '%s' is not absolute",
			                    m->source ? m->source : "(null)");
	}
	for (size_t i = 0; spec->env && spec->env[i]; i++)
		if (!strchr(spec->env[i], '=') || spec->env[i][0] == '=')
			return sw_error_set(err, SW_ERR_INVALID,
			                    "container: environment entry '%s' is not K=V",
			                    spec->env[i]);
	return 0;
}

/* ---------------------------------------------------------------- running */

typedef struct run_state {
	const sw_exec_spec *spec;
	const sw_exec__runtime *rt;
	const sw_exec__box *box;
	sw_exec_result *res;
	char tail[STDERR_TAIL]; /* the end of stderr, to know what the output already says */
	size_t tail_len;
	int status;         /* the runtime's exit code (128+N for a signal) */
	int64_t runtime_us; /* time spent in the runtime (spawn to exit) */
} run_state;

static void tail_add(run_state *st, const char *data, size_t len)
{
	if (len >= STDERR_TAIL) {
		memcpy(st->tail, data + len - STDERR_TAIL, STDERR_TAIL);
		st->tail_len = STDERR_TAIL;
		return;
	}
	if (st->tail_len + len > STDERR_TAIL) {
		size_t drop = st->tail_len + len - STDERR_TAIL;
		memmove(st->tail, st->tail + drop, st->tail_len - drop);
		st->tail_len -= drop;
	}
	memcpy(st->tail + st->tail_len, data, len);
	st->tail_len += len;
}

/* Read what is there; false at EOF or error. */
static bool drain(run_state *st, int fd, sw_exec_stream stream)
{
	char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN;
		if (n == 0)
			return false;
		if (stream == SW_EXEC_STDERR)
			tail_add(st, buf, (size_t)n);
		if (st->spec->on_output)
			st->spec->on_output(stream, buf, (size_t)n, st->spec->payload);
		if ((size_t)n < sizeof(buf))
			return true;
	}
}

typedef enum { PHASE_RUN, PHASE_TERM, PHASE_KILL, PHASE_ABANDON } kill_phase;

static int run_runtime(run_state *st, bool pivot_off, sw_error **err)
{
	const sw_exec_spec *spec = st->spec;
	int po[2] = { -1, -1 }, pe[2] = { -1, -1 };
	if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
		int e = errno;
		if (po[0] >= 0) {
			close(po[0]);
			close(po[1]);
		}
		return sw_error_os(err, e, "pipe");
	}
	cleanup_free char *log = sw_path_join(st->box->dir, "runtime.log");
	const char *args[8];
	size_t na = 0;
	args[na++] = "run";
	args[na++] = "--bundle";
	args[na++] = st->box->dir;
	args[na++] = "--no-new-keyring";
	if (pivot_off)
		args[na++] = "--no-pivot";
	args[na++] = st->box->id;
	args[na] = NULL;
	pid_t pid;
	int64_t t0 = now_us();
	int r = sw_exec__runtime_spawn(&pid, st->rt, log, args, po[1], pe[1], err);
	close(po[1]);
	close(pe[1]);
	if (r < 0) {
		close(po[0]);
		close(pe[0]);
		return r;
	}
	fcntl(po[0], F_SETFL, O_NONBLOCK);
	fcntl(pe[0], F_SETFL, O_NONBLOCK);
	int pidfd = pidfd_open(pid, 0);

	int64_t start = sw_exec__now_ms();
	int64_t deadline = spec->timeout_ms > 0 ? start + spec->timeout_ms : 0;
	int64_t grace = spec->kill_grace_ms > 0 ? spec->kill_grace_ms : 10000;
	int64_t phase_end = 0, exited_at = 0;
	kill_phase phase = PHASE_RUN;
	bool signal_sent = false, exited = false, out_open = true, err_open = true;
	int wstatus = 0;
	for (;;) {
		if (!exited) {
			pid_t w = waitpid(pid, &wstatus, WNOHANG);
			if (w == pid) {
				exited = true;
				exited_at = sw_exec__now_ms();
			}
		}
		int64_t now = sw_exec__now_ms();
		if (exited && ((!out_open && !err_open) || now - exited_at > 2000))
			break; /* past 2 s a stray process holds the pipes: stop reading */
		if (!exited && phase == PHASE_RUN) {
			if (spec->cancel && *spec->cancel)
				st->res->cancelled = true;
			else if (deadline && now >= deadline)
				st->res->timed_out = true;
			if (st->res->timed_out || (spec->cancel && *spec->cancel >= 2)) {
				/* a timeout (or a second cancel) kills the whole tree at once */
				phase = PHASE_KILL;
				phase_end = now + 5000;
				signal_sent = false;
			} else if (st->res->cancelled) {
				phase = PHASE_TERM;
				phase_end = now + grace;
				signal_sent = false;
			}
		}
		if (!exited && phase == PHASE_TERM && spec->cancel && *spec->cancel >= 2)
			phase_end = 0; /* a second cancel: no more grace */
		if (!exited && phase == PHASE_TERM) {
			if (!signal_sent)
				signal_sent =
				        sw_exec__runtime_kill(st->rt, st->box->id, "TERM") == 0;
			if (sw_exec__now_ms() >= phase_end) {
				phase = PHASE_KILL;
				phase_end = sw_exec__now_ms() + 5000;
				signal_sent = false;
			}
		}
		if (!exited && phase == PHASE_KILL) {
			/* the init's death ends its PID namespace: every process goes with it */
			if (!signal_sent)
				signal_sent =
				        sw_exec__runtime_kill(st->rt, st->box->id, "KILL") == 0;
			if (sw_exec__now_ms() >= phase_end) {
				SW_LOG(SW_LOG_WARN, "%s does not stop container %s: killing it",
				       st->rt->name, st->box->id);
				kill(-pid, SIGKILL);
				kill(pid, SIGKILL);
				phase = PHASE_ABANDON;
			}
		}

		struct pollfd pfd[3];
		nfds_t n = 0;
		int out_i = -1, err_i = -1;
		if (out_open) {
			out_i = (int)n;
			pfd[n++] = (struct pollfd){ .fd = po[0], .events = POLLIN };
		}
		if (err_open) {
			err_i = (int)n;
			pfd[n++] = (struct pollfd){ .fd = pe[0], .events = POLLIN };
		}
		if (!exited && pidfd >= 0)
			pfd[n++] = (struct pollfd){ .fd = pidfd, .events = POLLIN };
		int timeout = TICK_MS;
		if (deadline && phase == PHASE_RUN && deadline - now < timeout)
			timeout = deadline - now > 0 ? (int)(deadline - now) : 0;
		if (exited)
			timeout = 50;
		int pr = poll(pfd, n, timeout);
		if (pr < 0 && errno != EINTR)
			break;
		if (pr <= 0)
			continue;
		if (out_i >= 0 && pfd[out_i].revents)
			out_open = drain(st, po[0], SW_EXEC_STDOUT);
		if (err_i >= 0 && pfd[err_i].revents)
			err_open = drain(st, pe[0], SW_EXEC_STDERR);
	}
	/* what is left in the pipes after a stray holder was given up on */
	if (out_open)
		(void)drain(st, po[0], SW_EXEC_STDOUT);
	if (err_open)
		(void)drain(st, pe[0], SW_EXEC_STDERR);
	close(po[0]);
	close(pe[0]);
	if (pidfd >= 0)
		close(pidfd);
	if (!exited) {
		while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
			;
	}
	st->status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus)
	                                : 128 + (WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
	st->runtime_us += now_us() - t0;
	return 0;
}

/* The last error the runtime logged (its --log, JSON lines), or NULL. */
static char *runtime_error(const sw_exec__box *box)
{
	cleanup_free char *path = sw_path_join(box->dir, "runtime.log");
	cleanup_free char *text = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&text, &len, path, 1 << 20, &e) < 0) {
		sw_error_free(e);
		return NULL;
	}
	char *msg = NULL, *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		cleanup_json json_t *j = json_loads(line, 0, NULL);
		const char *level = json_string_value(json_object_get(j, "level"));
		const char *m = json_string_value(json_object_get(j, "msg"));
		if (level && m && strcmp(level, "error") == 0) {
			free(msg);
			msg = sw_xstrdup(m);
		}
	}
	return msg;
}

static bool contains_ci(const char *hay, const char *needle)
{
	return strcasestr(hay, needle) != NULL;
}

/* Docker's exit codes for a process that could not be executed: 127 missing, 126 refused. */
static int exec_failure_code(const char *msg)
{
	if (!strstr(msg, "exec: \"") && !contains_ci(msg, "executable"))
		return 0;
	if (contains_ci(msg, "not found") || contains_ci(msg, "no such file"))
		return 127;
	if (contains_ci(msg, "permission denied") || contains_ci(msg, "exec format error"))
		return 126;
	return 0;
}

static void emit_unless_seen(run_state *st, const char *msg)
{
	if (!st->spec->on_output)
		return;
	size_t n = strlen(msg);
	if (n < STDERR_TAIL && memmem(st->tail, st->tail_len, msg, n))
		return;
	cleanup_free char *line = sw_xasprintf("%s\n", msg);
	st->spec->on_output(SW_EXEC_STDERR, line, strlen(line), st->spec->payload);
}

static int run_attempts(sw_exec_result *out, run_state *st, sw_error **err);

/* The part of the run between a mounted rootfs and the runtime's deletion. */
static int run_in_box(sw_exec_result *out, const sw_exec_spec *spec, const sw_exec__runtime *rt,
                      const sw_exec__box *box, int rootfd, stubs *stubs_out, int64_t *runtime_us,
                      sw_error **err)
{
	uid_t uid;
	gid_t gid;
	cleanup_free gid_t *groups = NULL;
	size_t n_groups = 0;
	cleanup_free char *home = NULL;
	int r = sw_exec__user_resolve_full(&uid, &gid, &groups, &n_groups, &home, spec->user,
	                                   rootfs_read, &rootfd, err);
	if (r < 0)
		return sw_error_wrap(err, "container user");
	const char *cwd = spec->cwd && *spec->cwd ? spec->cwd : "/";
	if (!spec->readonly_rootfs) {
		r = sw_path_mkdir_in_root(rootfd, cwd, 0755, false, 0, 0, err);
		if (r < 0)
			return sw_error_wrap(err, "working folder '%s'", cwd);
		static const char *const fixed[] = {
			"/proc", "/dev", "/sys", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"
		};
		for (size_t i = 0; i < SW_ARRAY_SIZE(fixed); i++)
			stubs_note(stubs_out, rootfd, fixed[i]);
		for (size_t i = 0; i < spec->n_mounts; i++)
			stubs_note(stubs_out, rootfd, spec->mounts[i].destination);
	}
	const char *hostname = spec->hostname ? spec->hostname : "slipway";
	r = write_etc_files(box, spec, hostname, err);
	if (r < 0)
		return r;

	cleanup_strv char **env = sw_strv_dup(spec->env);
	if (!env_has(env, "PATH"))
		sw_strv_push(&env, DEFAULT_PATH);
	if (!env_has(env, "HOME")) {
		cleanup_free char *h = sw_xasprintf("HOME=%s", home);
		sw_strv_push(&env, h);
	}
	cleanup_free char *cgroups_path = sw_xasprintf("slipway/%s", box->id);
	sw_exec__spec_in in = {
		.spec = spec,
		.id = box->id,
		.rootfs = box->rootfs,
		.bundle = box->dir,
		.uid = uid,
		.gid = gid,
		.groups = groups,
		.n_groups = n_groups,
		.env = env,
		.cwd = cwd,
		.hostname = hostname,
		.cgroups_path = cgroups_path,
		.nofile = nofile_limit(),
	};
	cleanup_json json_t *j = sw_exec__spec_build(&in);
	cleanup_free char *text = json_dumps(j, JSON_COMPACT);
	if (!text)
		return sw_error_set(err, SW_ERR_GENERIC, "runtime spec: JSON encoding failed");
	r = write_bundle_file(box->dirfd, "config.json", text, strlen(text), err);
	if (r < 0)
		return r;

	run_state st = { .spec = spec, .rt = rt, .box = box, .res = out };
	r = run_attempts(out, &st, err);
	*runtime_us = st.runtime_us;
	return r;
}

/* Run the runtime (again without pivot_root when it failed) and read its verdict. */
static int run_attempts(sw_exec_result *out, run_state *st, sw_error **err)
{
	const sw_exec__runtime *rt = st->rt;
	const sw_exec__box *box = st->box;
	int r;
	bool pivot_off = __atomic_load_n(&no_pivot, __ATOMIC_RELAXED);
	for (int attempt = 0;; attempt++) {
		if (st->spec->cancel && *st->spec->cancel)
			return sw_error_set(err, SW_ERR_CANCELLED,
			                    "container %s: cancelled before it started", box->id);
		r = run_runtime(st, pivot_off, err);
		if (r < 0)
			return r;
		out->exit_code = st->status;
		if (st->status == 0 || out->timed_out || out->cancelled)
			break;
		cleanup_free char *msg = runtime_error(box);
		if (!msg)
			break; /* the process's own non-zero exit */
		if (!pivot_off && attempt == 0 && strstr(msg, "pivot_root")) {
			SW_LOG(SW_LOG_INFO, "%s: pivot_root failed (%s): using --no-pivot",
			       rt->name, msg);
			__atomic_store_n(&no_pivot, true, __ATOMIC_RELAXED);
			pivot_off = true;
			sw_error *e2 = NULL;
			if (sw_exec__runtime_delete(rt, box->id, &e2) < 0) {
				if (err && !*err)
					*err = e2;
				else
					sw_error_free(e2);
				return SW_ERR_GENERIC;
			}
			cleanup_free char *logp = sw_path_join(box->dir, "runtime.log");
			(void)unlink(logp);
			continue;
		}
		int code = exec_failure_code(msg);
		if (code) {
			emit_unless_seen(st, msg);
			out->exit_code = code;
			break;
		}
		return sw_error_set(err, SW_ERR_GENERIC, "%s run: %s", rt->name, msg);
	}
	if (out->exit_code > 128 && out->exit_code < 128 + NSIG)
		out->signal = out->exit_code - 128;
	return 0;
}

int sw_exec_container_run(sw_exec_result *out, const sw_exec_spec *spec, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	int64_t t_start = now_us(), runtime_us = 0;
	int r = validate(spec, err);
	if (r < 0)
		return r;
	cleanup_free char *exec_dir = NULL;
	r = sw_exec__exec_dir(&exec_dir, spec->state_dir, err);
	if (r < 0)
		return r;
	sw_exec__runtime rt;
	r = sw_exec__runtime_init(&rt, spec->runtime, exec_dir, err);
	if (r < 0)
		return r;
	sw_exec__box box;
	r = sw_exec__box_create(&box, exec_dir, spec->id_prefix, rt.path, rt.root, err);
	if (r < 0) {
		sw_exec__runtime_clear(&rt);
		return r;
	}

	int rootfd = -1;
	stubs stb = { 0 };
	cleanup_free char *empty = NULL;
	if (!spec->readonly_rootfs) {
		r = sw_fs_mkdir_p(spec->upper_dir, 0755, err);
		if (r == 0 && spec->n_lower > 0)
			r = sw_exec__workdir_create(&box.workdir, spec->upper_dir, err);
		if (r == 0 && box.workdir)
			r = sw_exec__box_label(&box, "workdir", box.workdir, err);
	} else if (spec->n_lower == 1) {
		empty = sw_path_join(box.dir, "empty");
		if (mkdir(empty, 0755) < 0)
			r = sw_error_os(err, errno, "create '%s'", empty);
	}
	if (r == 0) {
		r = sw_exec__overlay_mount_at(box.rootfs, spec->lower_dirs, spec->n_lower,
		                              spec->readonly_rootfs ? NULL : spec->upper_dir,
		                              box.workdir, empty, err);
		box.mounted = r == 0;
	}
	if (r == 0) {
		rootfd = open(box.rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (rootfd < 0)
			r = sw_error_os(err, errno, "open rootfs '%s'", box.rootfs);
	}
	if (r == 0)
		r = run_in_box(out, spec, &rt, &box, rootfd, &stb, &runtime_us, err);
	int64_t t_ran = now_us();

	/* cleanup, whatever happened: the runtime's state, stubs, the mount, the box */
	sw_error *e2 = NULL;
	if (sw_exec__runtime_delete(&rt, box.id, &e2) < 0) {
		if (r == 0) {
			r = SW_ERR_GENERIC;
			if (err && !*err)
				*err = steal_pointer(&e2);
		}
		sw_error_free(e2);
		e2 = NULL;
	}
	if (rootfd >= 0) {
		stubs_remove(&stb, rootfd);
		close(rootfd);
	}
	stubs_clear(&stb);
	if (sw_exec__box_destroy(&box, &e2) < 0) {
		SW_LOG(SW_LOG_WARN, "container %s: %s", box.id, sw_error_msg(e2));
		if (r == 0) {
			r = SW_ERR_GENERIC;
			if (err && !*err)
				*err = steal_pointer(&e2);
		}
		sw_error_free(e2);
	}
	int64_t t_end = now_us();
	SW_LOG(SW_LOG_DEBUG,
	       "container %s: %lld us in total: %lld us in %s, %lld us before, %lld us after",
	       box.id, (long long)(t_end - t_start), (long long)runtime_us, rt.name,
	       (long long)(t_ran - t_start - runtime_us), (long long)(t_end - t_ran));
	sw_exec__box_clear(&box);
	sw_exec__runtime_clear(&rt);
	return r;
}
