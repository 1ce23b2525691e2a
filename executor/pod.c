/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pods: what one pipeline job runs in. The public sw_exec_pod_* functions keep what both
 * backends share (the list of running tasks, each with a cancel flag of its own that also
 * follows the caller's flag, so that removing the pod stops whatever still runs in it, and the
 * TCP readiness probe run from inside the pod's network) and hand the rest to the backend: the
 * docker backend's sw_exec__docker_pod_* (docker*.c), or, for `oci`, this file: the network is a
 * namespace file from netns.c (joined by path by every container of the pod; HOST uses the
 * host's), and each task runs with sw_exec_container_run over the image's layer snapshots from
 * the cache (top first) and a fresh upper folder from the cache's scratch space, removed after
 * the run. The pod's names (its services) resolve to 127.0.0.1 through /etc/hosts; a `private`
 * pod's resolver is slirp4netns's DNS forwarder.
 */
#include "executor/executor_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define WATCH_TICK_MS 50
#define CONNECT_MAX_MS 1000

/* slirp4netns's DNS forwarder inside a private pod (its default --cidr 10.0.2.0/24) */
static const char *const slirp_dns[] = { "10.0.2.3", NULL };

/* One task running in the pod. */
typedef struct running_task {
	volatile sig_atomic_t cancel;  /* what the container watches */
	volatile sig_atomic_t *caller; /* the caller's flag, or NULL */
	struct running_task *next;
} running_task;

struct sw_exec_pod {
	sw_exec_backend_kind kind;
	sw_exec_pod_net net;
	sw_exec__docker_pod *docker;

	/* oci */
	char *name;     /* for container ids */
	char *hostname; /* the containers' hostname */
	char **aliases; /* names on 127.0.0.1 */
	char *state_dir;
	char *runtime;
	sw_oci_store *store;
	sw_cache *cache;
	uint64_t memory_limit;
	uint64_t pids_limit;
	uint32_t cpu_millis;
	int64_t kill_grace_ms;
	sw_exec__netns ns;
	bool has_ns;
	char *backend_name;

	/* running tasks and the thread that passes the callers' cancels on */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	running_task *running;
	bool destroying;
	bool watcher_stop;
	bool watcher_started;
	pthread_t watcher;
};

/* ---------------------------------------------------------------- names */

/* Letters, digits, '-', '_' of `name` (at most max), or `fallback` when none. */
static char *keep_id_chars(const char *name, size_t max, bool underscore, const char *fallback)
{
	char *s = sw_xcalloc(max + 1, 1);
	size_t n = 0;
	for (const char *p = name ? name : ""; *p && n < max; p++) {
		char c = *p;
		if (c == '_' && !underscore)
			c = '-';
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_')
			s[n++] = c;
	}
	/* a hostname neither starts nor ends with '-' */
	while (!underscore && n && s[n - 1] == '-')
		s[--n] = '\0';
	size_t lead = underscore ? 0 : strspn(s, "-");
	if (!s[lead]) {
		free(s);
		return sw_xstrdup(fallback);
	}
	if (lead)
		memmove(s, s + lead, strlen(s + lead) + 1);
	return s;
}

const char *sw_exec_pod_backend_name(const sw_exec_pod *p)
{
	if (p->kind == SW_EXEC_BACKEND_DOCKER)
		return sw_exec__docker_pod_name(p->docker);
	return p->backend_name;
}

/* ---------------------------------------------------------------- cancel watcher */

static void deadline_in(struct timespec *ts, int64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static void *watcher_main(void *payload)
{
	sw_exec_pod *p = payload;
	pthread_mutex_lock(&p->lock);
	while (!p->watcher_stop) {
		for (running_task *t = p->running; t; t = t->next)
			if (t->caller && *t->caller > t->cancel)
				t->cancel = *t->caller; /* 2: a second cancel, no grace */
		struct timespec ts;
		deadline_in(&ts, WATCH_TICK_MS);
		(void)pthread_cond_timedwait(&p->cond, &p->lock, &ts);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static int pod_alloc(sw_exec_pod **out, const sw_exec_backend_opts *b, sw_exec_pod_net net,
                     sw_error **err)
{
	sw_exec_pod *p = sw_xcalloc(1, sizeof(*p));
	p->kind = b->kind;
	p->net = net;
	p->ns.exit_fd = -1;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	int r = pthread_create(&p->watcher, NULL, watcher_main, p);
	if (r) {
		pthread_cond_destroy(&p->cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return sw_error_os(err, r, "pod: start a thread");
	}
	p->watcher_started = true;
	*out = p;
	return 0;
}

/* Stop the running tasks and wait until none is left, then stop the watcher. */
static void pod_quiesce(sw_exec_pod *p)
{
	pthread_mutex_lock(&p->lock);
	p->destroying = true;
	for (running_task *t = p->running; t; t = t->next)
		t->cancel = 1;
	/* each container stops within its grace period (then it is killed) */
	while (p->running) {
		struct timespec ts;
		deadline_in(&ts, WATCH_TICK_MS);
		(void)pthread_cond_timedwait(&p->cond, &p->lock, &ts);
		for (running_task *t = p->running; t; t = t->next)
			t->cancel = 1;
	}
	p->watcher_stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (p->watcher_started) {
		pthread_join(p->watcher, NULL);
		p->watcher_started = false;
	}
}

static void pod_free(sw_exec_pod *p)
{
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p->name);
	free(p->hostname);
	sw_strv_free(p->aliases);
	free(p->state_dir);
	free(p->runtime);
	free(p->backend_name);
	free(p);
}

static int task_enter(sw_exec_pod *p, running_task *t, volatile sig_atomic_t *caller,
                      sw_error **err)
{
	memset(t, 0, sizeof(*t));
	t->caller = caller;
	t->cancel = caller ? *caller : 0;
	pthread_mutex_lock(&p->lock);
	if (p->destroying) {
		pthread_mutex_unlock(&p->lock);
		return sw_error_set(err, SW_ERR_CANCELLED, "pod: being removed");
	}
	t->next = p->running;
	p->running = t;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

static void task_leave(sw_exec_pod *p, running_task *t)
{
	pthread_mutex_lock(&p->lock);
	for (running_task **pp = &p->running; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* ---------------------------------------------------------------- new and destroy */

static int oci_pod_init(sw_exec_pod *p, const sw_exec_backend_opts *b, const char *name,
                        const char *const *aliases, sw_error **err)
{
	if (!b->store || !b->cache)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "pod: the oci backend needs a store and a "
		                    "cache");
	p->name = keep_id_chars(name, 24, true, "pod");
	p->hostname = keep_id_chars(name, 63, false, "slipway");
	p->aliases = sw_strv_dup((char *const *)aliases);
	p->state_dir = b->state_dir ? sw_xstrdup(b->state_dir) : NULL;
	p->runtime = b->runtime ? sw_xstrdup(b->runtime) : NULL;
	p->store = b->store;
	p->cache = b->cache;
	p->memory_limit = b->memory_limit;
	p->pids_limit = b->pids_limit;
	p->cpu_millis = b->cpu_millis;
	p->kill_grace_ms = b->kill_grace_ms;
	cleanup_free char *exec_dir = NULL;
	int r = sw_exec__exec_dir(&exec_dir, b->state_dir, err);
	if (r < 0)
		return r;
	/* a missing runtime is found now, before anything else is made */
	sw_exec__runtime rt;
	r = sw_exec__runtime_init(&rt, b->runtime, exec_dir, err);
	if (r < 0)
		return sw_error_wrap(err, "pod '%s'", p->name);
	p->backend_name = sw_xasprintf("oci (%s)", rt.name);
	sw_exec__runtime_clear(&rt);
	if (p->net == SW_EXEC_POD_NET_HOST)
		return 0;
	r = sw_exec__netns_create(&p->ns, exec_dir, p->name, p->net == SW_EXEC_POD_NET_PRIVATE,
	                          err);
	if (r < 0)
		return sw_error_wrap(err, "pod '%s': network", p->name);
	p->has_ns = true;
	return 0;
}

int sw_exec_pod_new(sw_exec_pod **out, const sw_exec_backend_opts *b, sw_exec_pod_net net,
                    const char *name, const char *const *aliases, sw_error **err)
{
	*out = NULL;
	if (net != SW_EXEC_POD_NET_NONE && net != SW_EXEC_POD_NET_PRIVATE &&
	    net != SW_EXEC_POD_NET_HOST)
		return sw_error_set(err, SW_ERR_INVALID, "pod: unknown network kind %d", (int)net);
	if (b->kind != SW_EXEC_BACKEND_OCI && b->kind != SW_EXEC_BACKEND_DOCKER)
		return sw_error_set(err, SW_ERR_INVALID, "pod: unknown backend %d", (int)b->kind);
	sw_exec_pod *p = NULL;
	int r = pod_alloc(&p, b, net, err);
	if (r < 0)
		return r;
	if (b->kind == SW_EXEC_BACKEND_DOCKER)
		r = sw_exec__docker_pod_new(&p->docker, b, net, name, aliases, err);
	else
		r = oci_pod_init(p, b, name, aliases, err);
	if (r < 0) {
		pod_quiesce(p);
		pod_free(p);
		return r;
	}
	*out = p;
	return 0;
}

int sw_exec_pod_destroy(sw_exec_pod *p, sw_error **err)
{
	if (!p)
		return 0;
	pod_quiesce(p);
	int r = 0;
	if (p->kind == SW_EXEC_BACKEND_DOCKER) {
		if (p->docker)
			r = sw_exec__docker_pod_destroy(p->docker, err);
	} else if (p->has_ns) {
		r = sw_exec__netns_destroy(&p->ns, err);
		if (r < 0)
			sw_error_wrap(err, "pod '%s'", p->name);
	}
	pod_free(p);
	return r;
}

/* ---------------------------------------------------------------- running a task (oci) */

static int oci_run(sw_exec_result *out, sw_exec_pod *p, const sw_exec_task *t,
                   volatile sig_atomic_t *cancel, sw_error **err)
{
	if (!t->image || !*t->image)
		return sw_error_set(err, SW_ERR_INVALID, "pod '%s': a task without an image",
		                    p->name);
	sw_oci_manifest man;
	sw_oci_config cfg;
	memset(&man, 0, sizeof(man));
	memset(&cfg, 0, sizeof(cfg));
	int r = sw_oci_store_load_image(NULL, &man, &cfg, p->store, t->image, NULL, err);
	if (r < 0)
		return sw_error_wrap(err, "image '%s'", t->image);
	char **lowers = NULL;
	size_t n = man.n_layers;
	cleanup_free char *upper = NULL;
	cleanup_free char *prefix = keep_id_chars(t->name ? t->name : p->name, 32, true, "pod");
	if (cfg.n_diff_ids != n) {
		r = sw_error_set(err, SW_ERR_INVALID,
		                 "image '%s': %zu layers but %zu diff IDs in its config", t->image,
		                 n, cfg.n_diff_ids);
		goto out;
	}
	lowers = sw_xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		/* overlayfs wants the top layer first */
		r = sw_cache_snapshot_get(&lowers[n - 1 - i], p->cache, &man.layers[i],
		                          &cfg.diff_ids[i], err);
		if (r < 0) {
			sw_error_wrap(err, "image '%s': layer %zu", t->image, i + 1);
			goto out;
		}
	}
	r = sw_cache_scratch_dir(&upper, p->cache, "pod-upper-", err);
	if (r < 0)
		goto out;

	sw_exec_spec s = {
		.lower_dirs = (const char *const *)lowers,
		.n_lower = n,
		.upper_dir = upper,
		.argv = t->argv,
		.env = t->env,
		.cwd = t->cwd,
		.user = t->user,
		.hostname = p->hostname,
		.mounts = t->mounts,
		.n_mounts = t->n_mounts,
		.network = p->has_ns ? SW_EXEC_NET_PATH : SW_EXEC_NET_HOST,
		.netns_path = p->has_ns ? p->ns.path : NULL,
		.extra_hosts = (const char *const *)p->aliases,
		.cpu_millis = p->cpu_millis,
		.dns = p->net == SW_EXEC_POD_NET_PRIVATE ? slirp_dns : NULL,
		.runtime = p->runtime,
		.state_dir = p->state_dir,
		.id_prefix = prefix,
		.timeout_ms = t->timeout_ms,
		.cancel = cancel,
		.kill_grace_ms = p->kill_grace_ms,
		.memory_limit = p->memory_limit,
		.pids_limit = p->pids_limit,
		.on_output = t->on_output,
		.payload = t->payload,
	};
	r = sw_exec_container_run(out, &s, err);
	if (r < 0)
		sw_error_wrap(err, "pod '%s'", p->name);
out:
	if (upper) {
		sw_error *e = NULL;
		if (sw_fs_rm_rf(upper, &e) < 0) {
			SW_LOG(SW_LOG_WARN, "pod '%s': %s", p->name, sw_error_msg(e));
			sw_error_free(e);
		}
	}
	for (size_t i = 0; lowers && i < n; i++)
		free(lowers[i]);
	free(lowers);
	sw_oci_manifest_clear(&man);
	sw_oci_config_clear(&cfg);
	return r;
}

int sw_exec_pod_run(sw_exec_result *out, sw_exec_pod *p, const sw_exec_task *t, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	running_task rt;
	int r = task_enter(p, &rt, t->cancel, err);
	if (r < 0)
		return r;
	if (p->kind == SW_EXEC_BACKEND_DOCKER) {
		sw_exec_task t2 = *t;
		t2.cancel = &rt.cancel;
		r = sw_exec__docker_pod_run(out, p->docker, &t2, err);
	} else {
		r = oci_run(out, p, t, &rt.cancel, err);
	}
	task_leave(p, &rt);
	return r;
}

/* ---------------------------------------------------------------- TCP readiness */

typedef struct tcp_probe {
	sw_exec_pod *p;
	int port;
	int64_t timeout_ms;
	int64_t interval_ms;
	volatile sig_atomic_t *cancel;
	int result;
	sw_error *err;
} tcp_probe;

/* One connection attempt to 127.0.0.1:port in this thread's network: true when it succeeded. */
static bool try_connect(int port, int64_t max_ms)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		return false;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bool ok = false;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		ok = true;
	} else if (errno == EINPROGRESS) {
		struct pollfd pfd = { .fd = s, .events = POLLOUT };
		int e = 0;
		socklen_t len = sizeof(e);
		ok = poll(&pfd, 1, (int)max_ms) == 1 &&
		     getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e == 0;
	}
	close(s);
	return ok;
}

/* Join the pod's network in this (dedicated) thread; SW_ERR_NOT_FOUND: not yet there. */
static int join_network(sw_exec_pod *p, sw_error **err)
{
	cleanup_close int fd = -1;
	if (p->kind == SW_EXEC_BACKEND_DOCKER) {
		pid_t pid = 0;
		int r = sw_exec__docker_pod_net_pid(&pid, p->docker, err);
		if (r < 0)
			return r;
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return errno == ENOENT ? sw_error_set(err, SW_ERR_NOT_FOUND,
			                                      "the pod's container is gone")
			                       : sw_error_os(err, errno, "open '%s'", path);
	} else if (p->has_ns) {
		fd = open(p->ns.path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return sw_error_os(err, errno, "open '%s'", p->ns.path);
	} else {
		return 0; /* the host's network: this thread is there already */
	}
	if (setns(fd, CLONE_NEWNET) < 0)
		return sw_error_os(err, errno, "join the pod's network namespace");
	return 0;
}

static void *probe_main(void *payload)
{
	tcp_probe *a = payload;
	int64_t start = sw_exec__now_ms();
	int64_t deadline = a->timeout_ms > 0 ? start + a->timeout_ms : 0;
	bool joined = false;
	for (;;) {
		if (a->cancel && *a->cancel) {
			a->result = sw_error_set(&a->err, SW_ERR_CANCELLED,
			                         "waiting for 127.0.0.1:%d: cancelled", a->port);
			return NULL;
		}
		int64_t now = sw_exec__now_ms();
		if (!joined) {
			sw_error *e = NULL;
			int r = join_network(a->p, &e);
			if (r == 0) {
				joined = true;
			} else if (r != SW_ERR_NOT_FOUND) {
				a->result = r;
				a->err = e;
				return NULL;
			} else {
				sw_error_free(e);
			}
		}
		if (joined) {
			int64_t max = CONNECT_MAX_MS;
			if (deadline && deadline - now < max)
				max = deadline - now > 0 ? deadline - now : 0;
			if (try_connect(a->port, max)) {
				a->result = 0;
				return NULL;
			}
		}
		now = sw_exec__now_ms();
		if (deadline && now >= deadline) {
			a->result = sw_error_set(&a->err, SW_ERR_TIMEOUT,
			                         "nothing answered on 127.0.0.1:%d within %lld ms",
			                         a->port, (long long)a->timeout_ms);
			return NULL;
		}
		/* sleep the interval, watching the cancel flag and the deadline */
		int64_t wake = now + a->interval_ms;
		if (deadline && wake > deadline)
			wake = deadline;
		while ((now = sw_exec__now_ms()) < wake && !(a->cancel && *a->cancel)) {
			int64_t step = wake - now < 20 ? wake - now : 20;
			struct timespec ts = { 0, (long)step * 1000000 };
			nanosleep(&ts, NULL);
		}
	}
}

int sw_exec_pod_wait_tcp(sw_exec_pod *p, int port, int64_t timeout_ms, int64_t interval_ms,
                         volatile sig_atomic_t *cancel, sw_error **err)
{
	if (port <= 0 || port > 65535)
		return sw_error_set(err, SW_ERR_INVALID, "readiness: bad TCP port %d", port);
	tcp_probe a = {
		.p = p,
		.port = port,
		.timeout_ms = timeout_ms,
		.interval_ms = interval_ms > 0 ? interval_ms : 200,
		.cancel = cancel,
	};
	/* a thread of its own: setns changes the network of the calling thread only */
	pthread_t th;
	int r = pthread_create(&th, NULL, probe_main, &a);
	if (r)
		return sw_error_os(err, r, "readiness: start a thread");
	pthread_join(th, NULL);
	if (a.result < 0) {
		if (err && !*err)
			*err = steal_pointer(&a.err);
		sw_error_free(a.err);
	}
	return a.result;
}

/* ---------------------------------------------------------------- sweep */

int sw_exec_pod_sweep(unsigned *removed, const char *state_dir, const char *docker_host,
                      sw_error **err)
{
	if (removed)
		*removed = 0;
	cleanup_free char *exec_dir = NULL;
	int r = sw_exec__exec_dir(&exec_dir, state_dir, err);
	if (r < 0)
		return r;
	unsigned n_ns = 0, n_docker = 0;
	r = sw_exec__netns_sweep(&n_ns, exec_dir, err);
	if (r == 0 && docker_host)
		r = sw_exec__docker_sweep(&n_docker, docker_host, err);
	if (removed)
		*removed = n_ns + n_docker;
	return r;
}
