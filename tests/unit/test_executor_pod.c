/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pods of the oci backend (runc), run from test_executor's main(): a busybox image imported into
 * a store of the case's own state folder, containers of one pod talking over the shared loopback
 * (by 127.0.0.1 and by the service's name), the TCP readiness probe (success, timeout, cancel,
 * isolation from the host's loopback), a private pod's tap0 driven by slirp4netns (never
 * addressed: only its interface and resolv.conf are looked at), a host pod, the memory/pids/CPU
 * limits (and a fork bomb stopped by the pids limit), cancels by the caller and by removing the
 * pod, and the sweep of a namespace whose owner is dead. Every case checks that nothing is left:
 * no mounts, no namespace files, no slirp4netns process.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "executor/executor.h"
#include "executor/executor_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

int test_executor_pod_groups(void);

static bool g_can_run;
static bool g_have_slirp;
static char *g_base; /* holds the busybox rootfs tarball */
static char *g_tar;

#define IMAGE "busybox:pod"

/* ---------------------------------------------------------------- fixture */

typedef struct pod_fixture {
	char *tmp;
	char *state;
	sw_oci_store *store;
	sw_cache *cache;
	sw_exec_backend_opts opts;
} pod_fixture;

static int pod_setup(void **state)
{
	pod_fixture *f = sw_xcalloc(1, sizeof(*f));
	sw_error *e = NULL;
	if (sw_fs_mkdtemp(&f->tmp, NULL, "sw-test-pod-", &e) < 0)
		goto fail;
	f->state = sw_path_join(f->tmp, "state");
	setenv("SLIPWAY_STATE_DIR", f->state, 1);
	if (g_can_run) {
		cleanup_free char *sd = sw_path_join(f->state, "store");
		sw_oci_descriptor d;
		memset(&d, 0, sizeof(d));
		if (sw_oci_store_open(&f->store, sd, true, &e) < 0 ||
		    sw_cache_open(&f->cache, f->state, f->store, &e) < 0 ||
		    sw_oci_image_import(&d, f->store, g_tar, IMAGE, NULL, NULL, &e) < 0)
			goto fail;
		sw_oci_descriptor_clear(&d);
	}
	f->opts = (sw_exec_backend_opts){ .kind = SW_EXEC_BACKEND_OCI,
		                          .state_dir = f->state,
		                          .runtime = "runc",
		                          .store = f->store,
		                          .cache = f->cache,
		                          .kill_grace_ms = 1000 };
	*state = f;
	return 0;
fail:
	fprintf(stderr, "pod setup: %s\n", sw_error_msg(e));
	sw_error_free(e);
	return -1;
}

static int pod_teardown(void **state)
{
	pod_fixture *f = *state;
	sw_error *e = NULL;
	sw_cache_free(f->cache);
	sw_oci_store_free(f->store);
	if (sw_exec__unmount_under(f->tmp, &e) < 0) {
		fprintf(stderr, "teardown: %s\n", sw_error_msg(e));
		sw_error_free(e);
		return -1;
	}
	if (sw_fs_rm_rf(f->tmp, &e) < 0) {
		fprintf(stderr, "teardown: %s\n", sw_error_msg(e));
		sw_error_free(e);
	}
	unsetenv("SLIPWAY_STATE_DIR");
	free(f->tmp);
	free(f->state);
	free(f);
	return 0;
}

#define NEED_PODS()                                                                          \
	do {                                                                                 \
		if (!g_can_run) {                                                            \
			print_message("skipped: needs root, overlayfs, busybox and runc\n"); \
			skip();                                                              \
		}                                                                            \
	} while (0)

/* ---------------------------------------------------------------- helpers */

static char *netns_dir(pod_fixture *f)
{
	cleanup_free char *real = realpath(f->state, NULL);
	assert_non_null(real);
	return sw_xasprintf("%s/exec/netns", real);
}

/* The names in STATE/exec/netns (namespace files, labels, logs). */
static size_t netns_entries(pod_fixture *f, char ***names)
{
	cleanup_free char *dir = netns_dir(f);
	DIR *d = opendir(dir);
	size_t n = 0;
	if (names)
		*names = NULL;
	if (!d)
		return 0;
	for (struct dirent *de; (de = readdir(d)) != NULL;) {
		if (de->d_name[0] == '.')
			continue;
		if (names)
			sw_strv_push(names, de->d_name);
		n++;
	}
	closedir(d);
	return n;
}

/* The one label file in STATE/exec/netns (fails when there is not exactly one). */
static char *the_label(pod_fixture *f)
{
	cleanup_strv char **names = NULL;
	netns_entries(f, &names);
	char *found = NULL;
	for (size_t i = 0; names && names[i]; i++) {
		size_t n = strlen(names[i]);
		if (n > 6 && strcmp(names[i] + n - 6, ".owner") == 0) {
			assert_null(found);
			cleanup_free char *dir = netns_dir(f);
			found = sw_path_join(dir, names[i]);
		}
	}
	assert_non_null(found);
	return found;
}

static pid_t label_slirp_pid(const char *label)
{
	cleanup_free char *text = NULL;
	size_t len = 0;
	assert_int_equal(sw_fs_read_file(&text, &len, label, 4096, NULL), 0);
	const char *p = strstr(text, "slirp_pid=");
	return p ? (pid_t)atoi(p + 10) : 0;
}

/* Whether pid runs slirp4netns (a zombie has an empty command line: gone). */
static bool is_slirp(pid_t pid)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return strstr(buf, "slirp4netns") != NULL;
}

/* Any slirp4netns process whose command line names a path under `prefix`. */
static bool slirp_under(const char *prefix)
{
	DIR *d = opendir("/proc");
	assert_non_null(d);
	bool found = false;
	for (struct dirent *de; !found && (de = readdir(d)) != NULL;) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		char path[300], buf[4096];
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		if (!strstr(buf, "slirp4netns"))
			continue;
		for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
			if (strncmp(buf + i, prefix, strlen(prefix)) == 0)
				found = true;
	}
	closedir(d);
	return found;
}

/* Nothing left of pods: no mounts, no namespace files, no slirp4netns, no boxes. */
static void assert_pods_clean(pod_fixture *f)
{
	cleanup_free char *real = realpath(f->tmp, NULL);
	assert_non_null(real);
	cleanup_strv char **mounts = NULL;
	assert_int_equal(sw_fs_mounts_under(&mounts, real, NULL), 0);
	if (mounts[0])
		fail_msg("still mounted: %s", mounts[0]);
	cleanup_strv char **names = NULL;
	if (netns_entries(f, &names))
		fail_msg("left in exec/netns: %s", names[0]);
	assert_false(slirp_under(real));
	cleanup_free char *exec = sw_xasprintf("%s/state/exec", real);
	DIR *d = opendir(exec);
	if (d) {
		for (struct dirent *de; (de = readdir(d)) != NULL;)
			if (de->d_name[0] != '.' && strcmp(de->d_name, "runtime") &&
			    strcmp(de->d_name, "netns"))
				fail_msg("left in %s: %s", exec, de->d_name);
		closedir(d);
	}
}

typedef struct capture {
	sw_buf out, err;
	pthread_mutex_t lock;
} capture;

static void capture_init(capture *c)
{
	sw_buf_init(&c->out, 0);
	sw_buf_init(&c->err, 0);
	pthread_mutex_init(&c->lock, NULL);
}

static void capture_free(capture *c)
{
	sw_buf_free(&c->out);
	sw_buf_free(&c->err);
	pthread_mutex_destroy(&c->lock);
}

static void on_output(sw_exec_stream stream, const char *data, size_t len, void *payload)
{
	capture *c = payload;
	pthread_mutex_lock(&c->lock);
	int r = sw_buf_append(stream == SW_EXEC_STDOUT ? &c->out : &c->err, data, len, NULL);
	pthread_mutex_unlock(&c->lock);
	assert_int_equal(r, 0);
}

static sw_exec_pod *pod_new(pod_fixture *f, sw_exec_pod_net net, const char *const *aliases)
{
	sw_exec_pod *p = NULL;
	sw_error *e = NULL;
	if (sw_exec_pod_new(&p, &f->opts, net, "unit", aliases, &e) < 0)
		fail_msg("pod new: %s", sw_error_msg(e));
	return p;
}

static void pod_destroy(sw_exec_pod *p)
{
	sw_error *e = NULL;
	if (sw_exec_pod_destroy(p, &e) < 0)
		fail_msg("pod destroy: %s", sw_error_msg(e));
}

/* Run argv in the pod to its end; the output lands in *c. */
static sw_exec_result run_task(sw_exec_pod *p, char *const *argv, capture *c)
{
	sw_exec_task t = { .image = IMAGE,
		           .argv = argv,
		           .name = "job-unit",
		           .on_output = on_output,
		           .payload = c };
	sw_exec_result res;
	sw_error *e = NULL;
	if (sw_exec_pod_run(&res, p, &t, &e) < 0)
		fail_msg("pod run: %s", sw_error_msg(e));
	return res;
}

/* A task running in a thread of its own (a service). */
typedef struct bg_task {
	sw_exec_pod *p;
	char *const *argv;
	capture c;
	volatile sig_atomic_t cancel;
	sw_exec_result res;
	int r;
	char *msg;
	pthread_t th;
} bg_task;

static void *bg_main(void *payload)
{
	bg_task *b = payload;
	sw_exec_task t = { .image = IMAGE,
		           .argv = b->argv,
		           .name = "svc-db",
		           .cancel = &b->cancel,
		           .on_output = on_output,
		           .payload = &b->c };
	sw_error *e = NULL;
	b->r = sw_exec_pod_run(&b->res, b->p, &t, &e);
	if (b->r < 0)
		b->msg = sw_xstrdup(sw_error_msg(e));
	sw_error_free(e);
	return NULL;
}

static void bg_start(bg_task *b, sw_exec_pod *p, char *const *argv)
{
	memset(b, 0, sizeof(*b));
	b->p = p;
	b->argv = argv;
	capture_init(&b->c);
	assert_int_equal(pthread_create(&b->th, NULL, bg_main, b), 0);
}

static void bg_join(bg_task *b)
{
	assert_int_equal(pthread_join(b->th, NULL), 0);
}

static void bg_free(bg_task *b)
{
	capture_free(&b->c);
	free(b->msg);
}

/* ---------------------------------------------------------------- cases */

/* The runtime spec of a container that joins a pod's namespace, with a CPU quota. */
static void test_executor_pod__spec(void **state)
{
	(void)state;
	char *argv[] = { "true", NULL };
	sw_exec_spec s = { .argv = argv,
		           .network = SW_EXEC_NET_PATH,
		           .netns_path = "/state/exec/netns/unit-0011",
		           .cpu_millis = 1500 };
	sw_exec__spec_in in = { .spec = &s,
		                .id = "t-1",
		                .rootfs = "/x/rootfs",
		                .bundle = "/x",
		                .cwd = "/",
		                .hostname = "unit" };
	json_t *j = sw_exec__spec_build(&in);
	json_t *l = json_object_get(j, "linux");
	json_t *ns = json_object_get(l, "namespaces");
	bool found = false;
	for (size_t i = 0; i < json_array_size(ns); i++) {
		json_t *n = json_array_get(ns, i);
		if (strcmp(json_string_value(json_object_get(n, "type")), "network") == 0) {
			assert_string_equal(json_string_value(json_object_get(n, "path")),
			                    "/state/exec/netns/unit-0011");
			found = true;
		}
	}
	assert_true(found);
	json_t *cpu = json_object_get(json_object_get(l, "resources"), "cpu");
	assert_int_equal(json_integer_value(json_object_get(cpu, "quota")), 150000);
	assert_int_equal(json_integer_value(json_object_get(cpu, "period")), 100000);
	json_decref(j);

	/* no quota without cpu_millis, and a fresh namespace (no path) for NONE */
	s.cpu_millis = 0;
	s.network = SW_EXEC_NET_NONE;
	j = sw_exec__spec_build(&in);
	l = json_object_get(j, "linux");
	assert_null(json_object_get(json_object_get(l, "resources"), "cpu"));
	ns = json_object_get(l, "namespaces");
	for (size_t i = 0; i < json_array_size(ns); i++)
		assert_null(json_object_get(json_array_get(ns, i), "path"));
	json_decref(j);
}

static void test_executor_pod__loopback_and_names(void **state)
{
	NEED_PODS();
	pod_fixture *f = *state;
	static const char *const aliases[] = { "db", "cache_1", NULL };
	sw_exec_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, aliases);
	assert_string_equal(sw_exec_pod_backend_name(p), "oci (runc)");
	assert_int_equal(netns_entries(f, NULL), 2); /* the namespace and its label */

	/* a service: answers every connection with "pong <line>" */
	char *srv[] = { "nc", "-ll", "-p", "5555",
		        "-e", "sh",  "-c", "read l; echo \"pong $l\"; echo \"got $l\" >&2",
		        NULL };
	bg_task svc;
	bg_start(&svc, p, srv);
	sw_error *e = NULL;
	if (sw_exec_pod_wait_tcp(p, 5555, 20000, 50, NULL, &e) < 0)
		fail_msg("wait: %s (service: %s)", sw_error_msg(e), svc.msg ? svc.msg : "-");

	capture c;
	capture_init(&c);
	char *job[] = { "sh", "-c",
		        "echo one | nc db 5555; echo two | nc 127.0.0.1 5555; "
		        "echo three | nc cache_1 5555; cat /etc/hosts; hostname",
		        NULL };
	sw_exec_result res = run_task(p, job, &c);
	assert_int_equal(res.exit_code, 0);
	assert_non_null(strstr(c.out.data, "pong one\npong two\npong three\n"));
	assert_non_null(strstr(c.out.data, "127.0.0.1\tdb\n"));
	assert_non_null(strstr(c.out.data, "127.0.0.1\tcache_1\n"));
	assert_non_null(strstr(c.out.data, "127.0.0.1\tlocalhost unit\n"));
	assert_true(strlen(c.out.data) > 5 &&
	            strcmp(c.out.data + strlen(c.out.data) - 5, "unit\n") == 0);
	/* loopback only */
	sw_buf_reset(&c.out);
	char *ifs[] = { "sh", "-c", "ls /sys/class/net; cat /etc/resolv.conf", NULL };
	res = run_task(p, ifs, &c);
	assert_string_equal(c.out.data, "lo\nnameserver 127.0.0.1\n");

	/* removing the pod stops the service that still runs */
	int64_t t0 = sw_exec__now_ms();
	pod_destroy(p);
	bg_join(&svc);
	assert_true(sw_exec__now_ms() - t0 < 8000);
	assert_int_equal(svc.r, 0);
	assert_true(svc.res.cancelled);
	pthread_mutex_lock(&svc.c.lock);
	assert_non_null(svc.c.err.data);
	assert_non_null(strstr(svc.c.err.data, "got one"));
	assert_non_null(strstr(svc.c.err.data, "got three"));
	pthread_mutex_unlock(&svc.c.lock);
	bg_free(&svc);
	capture_free(&c);
	assert_pods_clean(f);
}

/* A listening socket on the host's 127.0.0.1; *port gets its port. */
static int host_listener(int *port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s, 16), 0);
	socklen_t len = sizeof(sa);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return s;
}

static void test_executor_pod__wait_tcp(void **state)
{
	NEED_PODS();
	pod_fixture *f = *state;
	int port = 0;
	int lfd = host_listener(&port);
	sw_exec_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);

	/* nothing listens in the pod (the host's listener is not in its network) */
	sw_error *e = NULL;
	int64_t t0 = sw_exec__now_ms();
	assert_int_equal(sw_exec_pod_wait_tcp(p, port, 600, 100, NULL, &e), SW_ERR_TIMEOUT);
	int64_t took = sw_exec__now_ms() - t0;
	assert_true(took >= 550 && took < 3000);
	assert_non_null(strstr(sw_error_msg(e), "127.0.0.1"));
	sw_error_clear(&e);

	/* cancelled */
	volatile sig_atomic_t cancel = 1;
	assert_int_equal(sw_exec_pod_wait_tcp(p, port, 5000, 100, &cancel, &e), SW_ERR_CANCELLED);
	sw_error_clear(&e);
	assert_int_equal(sw_exec_pod_wait_tcp(p, 0, 5000, 100, NULL, &e), SW_ERR_INVALID);
	sw_error_clear(&e);

	/* a caller's cancel stops a running task */
	char *sl[] = { "sleep", "60", NULL };
	bg_task b;
	bg_start(&b, p, sl);
	struct timespec ts = { 0, 400 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	t0 = sw_exec__now_ms();
	b.cancel = 1;
	bg_join(&b);
	assert_true(sw_exec__now_ms() - t0 < 5000);
	if (b.r < 0)
		assert_non_null(strstr(b.msg, "cancel")); /* cancelled before it started */
	else
		assert_true(b.res.cancelled);
	bg_free(&b);
	pod_destroy(p);

	/* a host pod sees the host's listener */
	p = pod_new(f, SW_EXEC_POD_NET_HOST, NULL);
	assert_int_equal(netns_entries(f, NULL), 0);
	if (sw_exec_pod_wait_tcp(p, port, 5000, 50, NULL, &e) < 0)
		fail_msg("host wait: %s", sw_error_msg(e));
	pod_destroy(p);
	close(lfd);
	assert_pods_clean(f);
}

static void test_executor_pod__host(void **state)
{
	NEED_PODS();
	pod_fixture *f = *state;
	static const char *const aliases[] = { "db", NULL };
	sw_exec_pod *p = pod_new(f, SW_EXEC_POD_NET_HOST, aliases);
	capture c;
	capture_init(&c);
	char *argv[] = { "sh", "-c", "ls /sys/class/net | sort; grep -c db /etc/hosts", NULL };
	sw_exec_result res = run_task(p, argv, &c);
	assert_int_equal(res.exit_code, 0);
	FILE *h = popen("ls /sys/class/net | sort; echo 1", "r");
	assert_non_null(h);
	char want[4096];
	size_t n = fread(want, 1, sizeof(want) - 1, h);
	want[n] = '\0';
	assert_int_equal(pclose(h), 0);
	assert_string_equal(c.out.data, want);
	capture_free(&c);
	pod_destroy(p);
	assert_pods_clean(f);
}

static void test_executor_pod__private(void **state)
{
	NEED_PODS();
	if (!g_have_slirp) {
		print_message("skipped: slirp4netns is not installed\n");
		skip();
	}
	pod_fixture *f = *state;
	sw_exec_pod *p = pod_new(f, SW_EXEC_POD_NET_PRIVATE, NULL);
	cleanup_free char *label = the_label(f);
	pid_t slirp = label_slirp_pid(label);
	assert_true(slirp > 0);
	assert_true(is_slirp(slirp));

	capture c;
	capture_init(&c);
	/* only looked at, never addressed: the tap device and the resolver's configuration */
	char *argv[] = { "sh", "-c",
		         "ls /sys/class/net; cat /sys/class/net/tap0/flags /sys/class/net/tap0/mtu "
		         "/etc/resolv.conf",
		         NULL };
	sw_exec_result res = run_task(p, argv, &c);
	assert_int_equal(res.exit_code, 0);
	char ifs[64];
	unsigned flags = 0, mtu = 0;
	char rest[256];
	assert_int_equal(sscanf(c.out.data, "lo\n%63s\n%x\n%u\n%255[^\n]", ifs, &flags, &mtu, rest),
	                 4);
	assert_string_equal(ifs, "tap0");
	assert_true(flags & 0x1); /* IFF_UP */
	assert_int_equal(mtu, 65520);
	assert_string_equal(rest, "nameserver 10.0.2.3");
	capture_free(&c);

	pod_destroy(p);
	assert_false(is_slirp(slirp));
	assert_pods_clean(f);
}

static void test_executor_pod__limits(void **state)
{
	NEED_PODS();
	pod_fixture *f = *state;
	f->opts.memory_limit = 64 << 20;
	f->opts.pids_limit = 20;
	f->opts.cpu_millis = 500;
	sw_exec_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	capture c;
	capture_init(&c);
	char *argv[] = { "cat",
		         "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
		         "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
		         "/sys/fs/cgroup/memory/memory.limit_in_bytes",
		         "/sys/fs/cgroup/pids/pids.max",
		         NULL };
	sw_exec_result res = run_task(p, argv, &c);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(c.out.data, "50000\n100000\n67108864\n20\n");

	/* a fork bomb meets the pids limit: the shell cannot fork and gives up */
	sw_buf_reset(&c.out);
	sw_buf_reset(&c.err);
	char *bomb[] = { "sh", "-c", "for i in $(seq 1 60); do sleep 30 & done; echo survived",
		         NULL };
	res = run_task(p, bomb, &c);
	assert_int_not_equal(res.exit_code, 0);
	assert_false(res.timed_out);
	assert_true(c.out.data == NULL || !strstr(c.out.data, "survived"));
	assert_non_null(c.err.data);
	assert_non_null(strstr(c.err.data, "fork"));
	capture_free(&c);
	pod_destroy(p);
	assert_pods_clean(f);
}

static void test_executor_pod__errors(void **state)
{
	NEED_PODS();
	pod_fixture *f = *state;
	sw_error *e = NULL;
	sw_exec_pod *p = NULL;
	sw_exec_backend_opts o = f->opts;
	o.runtime = "no-such-runtime-xyz";
	assert_true(sw_exec_pod_new(&p, &o, SW_EXEC_POD_NET_NONE, "unit", NULL, &e) < 0);
	assert_null(p);
	assert_non_null(strstr(sw_error_msg(e), "no-such-runtime-xyz"));
	sw_error_clear(&e);
	o = f->opts;
	o.cache = NULL;
	assert_int_equal(sw_exec_pod_new(&p, &o, SW_EXEC_POD_NET_NONE, "unit", NULL, &e),
	                 SW_ERR_INVALID);
	sw_error_clear(&e);

	p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *argv[] = { "true", NULL };
	sw_exec_task t = { .image = "missing:image", .argv = argv };
	sw_exec_result res;
	assert_true(sw_exec_pod_run(&res, p, &t, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "missing:image"));
	sw_error_clear(&e);
	pod_destroy(p);
	assert_pods_clean(f);
}

static void test_executor_pod__sweep(void **state)
{
	NEED_PODS();
	if (!g_have_slirp) {
		print_message("skipped: slirp4netns is not installed\n");
		skip();
	}
	pod_fixture *f = *state;
	sw_exec_pod *dead = pod_new(f, SW_EXEC_POD_NET_PRIVATE, NULL);
	cleanup_free char *label = the_label(f);
	pid_t slirp = label_slirp_pid(label);
	assert_true(is_slirp(slirp));
	cleanup_free char *text = NULL;
	size_t len = 0;
	assert_int_equal(sw_fs_read_file(&text, &len, label, 4096, NULL), 0);
	const char *sl = strstr(text, "slirp_pid=");
	assert_non_null(sl);

	/* its owner is now a process that has exited */
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0)
		_exit(0);
	assert_int_equal(waitpid(child, NULL, 0), child);
	cleanup_free char *fake = sw_xasprintf("pid=%d\nstart=1\n%s", (int)child, sl);
	assert_int_equal(sw_fs_write_atomic(label, fake, strlen(fake), 0600, NULL), 0);
	cleanup_free char *nsfile = sw_xstrndup(label, strlen(label) - 6);
	assert_true(access(nsfile, F_OK) == 0);

	/* a live pod's namespace beside it */
	sw_exec_pod *live = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	assert_int_equal(netns_entries(f, NULL), 5); /* 2 files, 2 labels, a log */

	unsigned removed = 0;
	sw_error *e = NULL;
	if (sw_exec_sweep(&removed, f->state, "runc", &e) < 0)
		fail_msg("sweep: %s", sw_error_msg(e));
	assert_false(is_slirp(slirp));
	assert_false(access(nsfile, F_OK) == 0);
	assert_false(access(label, F_OK) == 0);
	assert_int_equal(netns_entries(f, NULL), 2);
	cleanup_free char *real = realpath(f->tmp, NULL);
	cleanup_strv char **mounts = NULL;
	assert_int_equal(sw_fs_mounts_under(&mounts, real, NULL), 0);
	assert_non_null(mounts[0]); /* the live one */
	assert_null(mounts[1]);

	/* the live pod still works; the swept one is removed without complaint */
	capture c;
	capture_init(&c);
	char *argv[] = { "ls", "/sys/class/net", NULL };
	sw_exec_result res = run_task(live, argv, &c);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(c.out.data, "lo\n");
	capture_free(&c);
	pod_destroy(dead);
	pod_destroy(live);

	/* the oci part of the pod sweep: nothing left to do */
	assert_int_equal(sw_exec_pod_sweep(&removed, f->state, NULL, &e), 0);
	assert_int_equal(removed, 0);
	assert_pods_clean(f);
}

/* slipway SIGKILLed with a private pod: slirp4netns goes by itself, the next sweep does the rest */
static void test_executor_pod__killed_owner(void **state)
{
	NEED_PODS();
	if (!g_have_slirp) {
		print_message("skipped: slirp4netns is not installed\n");
		skip();
	}
	pod_fixture *f = *state;
	int pfd[2];
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		sw_exec_pod *p = NULL;
		sw_error *e = NULL;
		if (sw_exec_pod_new(&p, &f->opts, SW_EXEC_POD_NET_PRIVATE, "killed", NULL, &e) < 0)
			_exit(2);
		(void)!write(pfd[1], "x", 1);
		for (;;)
			pause();
	}
	close(pfd[1]);
	char c = 0;
	ssize_t n = read(pfd[0], &c, 1);
	close(pfd[0]);
	if (n != 1) {
		waitpid(child, NULL, 0);
		fail_msg("the child could not make its pod");
	}
	cleanup_free char *label = the_label(f);
	pid_t slirp = label_slirp_pid(label);
	assert_true(is_slirp(slirp));
	assert_int_equal(kill(child, SIGKILL), 0);
	assert_int_equal(waitpid(child, NULL, 0), child);

	/* its exit fd closed with its owner */
	int64_t end = sw_exec__now_ms() + 5000;
	while (is_slirp(slirp) && sw_exec__now_ms() < end) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	assert_false(is_slirp(slirp));
	assert_int_equal(netns_entries(f, NULL), 3); /* the namespace, its label and log */

	unsigned removed = 0;
	sw_error *e = NULL;
	if (sw_exec_pod_sweep(&removed, f->state, NULL, &e) < 0)
		fail_msg("sweep: %s", sw_error_msg(e));
	assert_int_equal(removed, 1);
	assert_pods_clean(f);
}

/* ---------------------------------------------------------------- group */

static bool have(const char *cmd)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "command -v %s >/dev/null 2>&1", cmd);
	return system(buf) == 0;
}

static int pod_group_setup(void **state)
{
	(void)state;
	g_can_run = false;
	if (geteuid() != 0 || access("/bin/busybox", X_OK) != 0 || !have("runc"))
		return 0;
	g_have_slirp = have("slirp4netns");
	sw_error *e = NULL;
	if (sw_fs_mkdtemp(&g_base, NULL, "sw-test-pod-image-", &e) < 0) {
		fprintf(stderr, "%s\n", sw_error_msg(e));
		sw_error_free(e);
		return -1;
	}
	g_tar = sw_path_join(g_base, "rootfs.tar");
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
	         "set -e; r='%s/rootfs'; mkdir -p \"$r/bin\" \"$r/etc\" \"$r/root\" \"$r/tmp\"; "
	         "chmod 0755 \"$r\"; chmod 1777 \"$r/tmp\"; chmod 0700 \"$r/root\"; "
	         "cp /bin/busybox \"$r/bin/busybox\"; chmod 0755 \"$r/bin/busybox\"; "
	         "for a in $(/bin/busybox --list); do case $a in busybox|*/*) continue;; esac; "
	         "ln -sf busybox \"$r/bin/$a\"; done; "
	         "printf 'root:x:0:0:root:/root:/bin/sh\\n' >\"$r/etc/passwd\"; "
	         "printf 'root:x:0:\\n' >\"$r/etc/group\"; "
	         "tar -C \"$r\" -cf '%s' .",
	         g_base, g_tar);
	if (system(cmd) != 0)
		return -1;
	g_can_run = true;
	return 0;
}

static int pod_group_teardown(void **state)
{
	(void)state;
	if (g_base) {
		sw_error *e = NULL;
		if (sw_fs_rm_rf(g_base, &e) < 0) {
			fprintf(stderr, "%s\n", sw_error_msg(e));
			sw_error_free(e);
		}
	}
	free(g_base);
	free(g_tar);
	g_base = g_tar = NULL;
	return 0;
}

#define P(name) cmocka_unit_test_setup_teardown(test_executor_pod__##name, pod_setup, pod_teardown)

int test_executor_pod_groups(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_executor_pod__spec),
		P(loopback_and_names),
		P(wait_tcp),
		P(host),
		P(private),
		P(limits),
		P(errors),
		P(sweep),
		P(killed_owner),
	};
	return cmocka_run_group_tests_name("executor_pod_runc", tests, pod_group_setup,
	                                   pod_group_teardown);
}
