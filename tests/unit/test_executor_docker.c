/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The docker backend of pods against a real Docker daemon, named by SW_TEST_DOCKER_HOST
 * ("unix:///path"; tests/integration/test_docker_backend.sh starts a private dockerd and sets
 * it); without it the whole group says why and skips. A busybox image is imported into a
 * store of the group's own, then: the image is loaded into the daemon once (also when two runs
 * want it at once), stdout and stderr arrive separated and complete, exit codes (127 for a
 * missing executable), env, cwd and users, bind (read-write and read-only) and tmpfs mounts, a
 * timeout and a cancel (container gone), two containers of one pod talking over 127.0.0.1 and
 * by alias, the host network, the sweep of a container labelled with a dead owner, and destroy
 * stopping a running service. Every case ends by checking that no container of this process
 * is left in the daemon and no box under the state folder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "executor/docker_internal.h"
#include "executor/executor.h"
#include "executor/executor_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define IMAGE "busybox:docker-test"
#define IMAGE_EP "busybox:docker-test-ep"     /* with an Entrypoint and a Cmd of its own */
#define IMAGE_ZSTD "busybox:docker-test-zstd" /* the same rootfs, a zstd layer */
#define PATH_ENV "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static const char *g_host;    /* SW_TEST_DOCKER_HOST */
static char *g_tmp;           /* the group's folder: the store and the rootfs tarball */
static sw_oci_store *g_store; /* holds IMAGE */
static sw_exec__dk g_dk;      /* a client for checks */
static sw_digest g_image_id;  /* Docker's ID of IMAGE (its config digest) */

/* ---------------------------------------------------------------- helpers */

#define OK(expr)                                                     \
	do {                                                         \
		sw_error *e_ = NULL;                                 \
		if ((expr) < 0)                                      \
			fail_msg("%s: %s", #expr, sw_error_msg(e_)); \
	} while (0)

typedef struct fixture {
	char *tmp;
	char *state;
	sw_buf out, err;
	volatile sig_atomic_t cancel;
	const char *cancel_on; /* set cancel when stdout contains this */
	pthread_mutex_t lock;
} fixture;

static char *owner_label(void)
{
	unsigned long long start = 0;
	assert_int_equal(sw_proc_starttime(&start, getpid()), 0);
	return sw_xasprintf("%d-%llu", (int)getpid(), start);
}

static json_t *api(long *status, const char *method, const char *path, json_t *body)
{
	json_t *out = NULL;
	sw_error *e = NULL;
	if (sw_exec__dk_call(status, &out, &g_dk, method, path, body, 60000, &e) < 0)
		fail_msg("%s %s: %s", method, path, sw_error_msg(e));
	return out;
}

/* How many containers (any state) carry `label` ("k=v"). */
static size_t count_labelled(const char *label)
{
	json_t *filters = json_pack("{s:[s]}", "label", label);
	char *text = json_dumps(filters, JSON_COMPACT);
	char *esc = sw_url_escape(text);
	char *path = sw_xasprintf("/containers/json?all=1&filters=%s", esc);
	long status = 0;
	json_t *list = api(&status, "GET", path, NULL);
	assert_int_equal(status, 200);
	size_t n = json_array_size(list);
	json_decref(list);
	json_decref(filters);
	free(text);
	free(esc);
	free(path);
	return n;
}

/* Nothing of this process in the daemon, no box in the state folder. */
static void assert_clean(fixture *f)
{
	cleanup_free char *owner = owner_label();
	cleanup_free char *label = sw_xasprintf("slipway.owner=%s", owner);
	size_t n = count_labelled(label);
	if (n)
		fail_msg("%zu containers of this process are left in the daemon", n);
	cleanup_free char *exec = sw_xasprintf("%s/exec", f->state);
	DIR *d = opendir(exec);
	if (d) {
		for (struct dirent *de; (de = readdir(d)) != NULL;)
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				fail_msg("left in %s: %s", exec, de->d_name);
		closedir(d);
	}
}

static int setup(void **state)
{
	fixture *f = sw_xcalloc(1, sizeof(*f));
	sw_error *e = NULL;
	if (sw_fs_mkdtemp(&f->tmp, NULL, "sw-test-docker-", &e) < 0) {
		fprintf(stderr, "%s\n", sw_error_msg(e));
		sw_error_free(e);
		free(f);
		return -1;
	}
	f->state = sw_path_join(f->tmp, "state");
	sw_buf_init(&f->out, 0);
	sw_buf_init(&f->err, 0);
	pthread_mutex_init(&f->lock, NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sw_error *e = NULL;
	if (sw_fs_rm_rf(f->tmp, &e) < 0) {
		fprintf(stderr, "teardown: %s\n", sw_error_msg(e));
		sw_error_free(e);
	}
	free(f->tmp);
	free(f->state);
	sw_buf_free(&f->out);
	sw_buf_free(&f->err);
	pthread_mutex_destroy(&f->lock);
	free(f);
	return 0;
}

static void on_output(sw_exec_stream stream, const char *data, size_t len, void *payload)
{
	fixture *f = payload;
	pthread_mutex_lock(&f->lock);
	sw_buf *b = stream == SW_EXEC_STDOUT ? &f->out : &f->err;
	assert_int_equal(sw_buf_append(b, data, len, NULL), 0);
	if (f->cancel_on && stream == SW_EXEC_STDOUT && f->out.data &&
	    strstr(f->out.data, f->cancel_on))
		f->cancel = 1;
	pthread_mutex_unlock(&f->lock);
}

static sw_exec__docker_pod *pod_new(fixture *f, sw_exec_pod_net net, const char *const *aliases)
{
	sw_exec_backend_opts b = {
		.kind = SW_EXEC_BACKEND_DOCKER,
		.state_dir = f->state,
		.docker_host = g_host,
		.store = g_store,
		.kill_grace_ms = 1000,
	};
	sw_exec__docker_pod *p = NULL;
	OK(sw_exec__docker_pod_new(&p, &b, net, "test", aliases, &e_));
	return p;
}

static void pod_destroy(sw_exec__docker_pod *p)
{
	OK(sw_exec__docker_pod_destroy(p, &e_));
}

static char *env_default[] = { PATH_ENV, NULL };

static sw_exec_task task(fixture *f, char *const *argv)
{
	sw_exec_task t = {
		.image = IMAGE,
		.argv = argv,
		.env = env_default,
		.name = "job",
		.on_output = on_output,
		.payload = f,
	};
	return t;
}

static sw_exec_result run_ok(sw_exec__docker_pod *p, const sw_exec_task *t)
{
	sw_exec_result res;
	OK(sw_exec__docker_pod_run(&res, p, t, &e_));
	return res;
}

static const char *out_text(fixture *f)
{
	return f->out.data ? f->out.data : "";
}

/* ---------------------------------------------------------------- cases */

typedef struct bg_run {
	sw_exec__docker_pod *p;
	sw_exec_task t;
	sw_exec_result res;
	int rc;
	char *msg;
} bg_run;

static void *bg_main(void *payload)
{
	bg_run *b = payload;
	sw_error *e = NULL;
	b->rc = sw_exec__docker_pod_run(&b->res, b->p, &b->t, &e);
	if (b->rc < 0)
		b->msg = sw_xstrdup(sw_error_msg(e));
	sw_error_free(e);
	return NULL;
}

static void remove_image(void)
{
	long status = 0;
	cleanup_free char *path = sw_xasprintf("/images/%s?force=1", g_image_id.s);
	json_t *j = api(&status, "DELETE", path, NULL);
	json_decref(j);
	assert_true(status == 200 || status == 404);
}

static void test_docker__load_once(void **state)
{
	fixture *f = *state;
	remove_image();
	unsigned before = sw_exec__dk_loads();
	/* two runs want the missing image at once: one load */
	sw_exec__docker_pod *p1 = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	sw_exec__docker_pod *p2 = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *argv[] = { "echo", "loaded", NULL };
	bg_run b1 = { .p = p1, .t = task(f, argv) }, b2 = { .p = p2, .t = task(f, argv) };
	pthread_t t1, t2;
	assert_int_equal(pthread_create(&t1, NULL, bg_main, &b1), 0);
	assert_int_equal(pthread_create(&t2, NULL, bg_main, &b2), 0);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	if (b1.rc < 0 || b2.rc < 0)
		fail_msg("run: %s", b1.msg ? b1.msg : b2.msg);
	assert_int_equal(b1.res.exit_code, 0);
	assert_int_equal(b2.res.exit_code, 0);
	assert_string_equal(out_text(f), "loaded\nloaded\n");
	assert_int_equal(sw_exec__dk_loads(), before + 1);
	/* the daemon knows it by the config digest, tagged slipway/<manifest digest 12> */
	long status = 0;
	cleanup_free char *path = sw_xasprintf("/images/%s/json", g_image_id.s);
	json_t *img = api(&status, "GET", path, NULL);
	assert_int_equal(status, 200);
	assert_string_equal(json_string_value(json_object_get(img, "Id")), g_image_id.s);
	const char *tag = json_string_value(json_array_get(json_object_get(img, "RepoTags"), 0));
	assert_non_null(tag);
	assert_true(strncmp(tag, "slipway/", 8) == 0);
	json_decref(img);
	/* a later run does not load again */
	sw_exec_task t = task(f, argv);
	sw_exec_result res = run_ok(p1, &t);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(sw_exec__dk_loads(), before + 1);
	pod_destroy(p1);
	pod_destroy(p2);
	assert_clean(f);
}

static void test_docker__load_zstd(void **state)
{
	fixture *f = *state;
	/* dockerd 20.10 cannot read zstd layers: the loader sends them decompressed */
	sw_oci_manifest m = { 0 };
	OK(sw_oci_store_load_image(NULL, &m, NULL, g_store, IMAGE_ZSTD, NULL, &e_));
	assert_non_null(strstr(m.layers[0].media_type, "zstd"));
	sw_digest id = m.config.digest;
	sw_oci_manifest_clear(&m);
	long status = 0;
	cleanup_free char *path = sw_xasprintf("/images/%s?force=1", id.s);
	json_decref(api(&status, "DELETE", path, NULL));
	unsigned before = sw_exec__dk_loads();
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *argv[] = { "sh", "-c", "ls /bin/busybox && cat /etc/group", NULL };
	sw_exec_task t = task(f, argv);
	t.image = IMAGE_ZSTD;
	sw_exec_result res = run_ok(p, &t);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(out_text(f), "/bin/busybox\nroot:x:0:\nnogroup:x:65534:\n");
	assert_int_equal(sw_exec__dk_loads(), before + 1);
	pod_destroy(p);
	assert_clean(f);
}

static void test_docker__output_streams(void **state)
{
	fixture *f = *state;
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *argv[] = { "sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2", NULL };
	sw_exec_task t = task(f, argv);
	sw_exec_result res = run_ok(p, &t);
	assert_int_equal(res.exit_code, 0);
	assert_false(res.timed_out);
	assert_false(res.cancelled);
	assert_string_equal(out_text(f), "out1\nout2\n");
	assert_string_equal(f->err.data, "err1\nerr2\n");

	/* 4 MiB through many frames, every byte there */
	sw_buf_reset(&f->out);
	char *big[] = { "sh", "-c", "yes 0123456789abcdef | head -c 4194304", NULL };
	t = task(f, big);
	res = run_ok(p, &t);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(f->out.len, 4194304);
	for (size_t i = 0; i < f->out.len; i++)
		if (f->out.data[i] != "0123456789abcdef\n"[i % 17])
			fail_msg("byte %zu of the output is wrong", i);
	pod_destroy(p);
	assert_clean(f);
}

static void test_docker__exit_codes(void **state)
{
	fixture *f = *state;
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *three[] = { "sh", "-c", "exit 3", NULL };
	sw_exec_task t = task(f, three);
	assert_int_equal(run_ok(p, &t).exit_code, 3);
	char *missing[] = { "/no/such/program", NULL };
	t = task(f, missing);
	assert_int_equal(run_ok(p, &t).exit_code, 127);
	char *missing_in_path[] = { "no-such-program", NULL };
	t = task(f, missing_in_path);
	assert_int_equal(run_ok(p, &t).exit_code, 127);
	/* a process ended by a signal: 128+N (PID 1 itself ignores a SIGKILL from inside) */
	char *killed[] = { "sh", "-c", "sh -c 'kill -9 $$'; exit $?", NULL };
	t = task(f, killed);
	assert_int_equal(run_ok(p, &t).exit_code, 137);
	pod_destroy(p);
	assert_clean(f);
}

static void test_docker__env_cwd_user(void **state)
{
	fixture *f = *state;
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *env[] = { PATH_ENV, "GREETING=hello world", "EMPTY=", NULL };
	char *argv[] = { "sh", "-c", "echo \"$GREETING|${EMPTY-unset}|$(pwd)|$(id -u):$(id -g)\"",
		         NULL };
	sw_exec_task t = task(f, argv);
	t.env = env;
	t.cwd = "/work/sub";
	t.user = "nobody";
	sw_exec_result res = run_ok(p, &t);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(out_text(f), "hello world||/work/sub|65534:65534\n");

	sw_buf_reset(&f->out);
	t.cwd = NULL;
	t.user = "1234:5678";
	res = run_ok(p, &t);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(out_text(f), "hello world||/|1234:5678\n");

	sw_buf_reset(&f->out);
	t.user = NULL; /* root, whatever the image says */
	res = run_ok(p, &t);
	assert_string_equal(out_text(f), "hello world||/|0:0\n");
	pod_destroy(p);
	assert_clean(f);
}

static void write_file(const char *path, const char *content)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

static void test_docker__mounts(void **state)
{
	fixture *f = *state;
	cleanup_free char *rw = sw_path_join(f->tmp, "rw");
	cleanup_free char *ro = sw_path_join(f->tmp, "ro");
	assert_int_equal(mkdir(rw, 0755), 0);
	assert_int_equal(mkdir(ro, 0755), 0);
	cleanup_free char *in = sw_path_join(rw, "in.txt");
	cleanup_free char *ro_file = sw_path_join(ro, "keep.txt");
	write_file(in, "from the host\n");
	write_file(ro_file, "read only\n");
	sw_exec_mount mounts[] = {
		{ .type = "bind", .source = rw, .destination = "/data" },
		{ .type = "bind", .source = ro, .destination = "/ro", .readonly = true },
		{ .type = "tmpfs", .destination = "/scratch", .mode = 01777 },
	};
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *argv[] = { "sh", "-c",
		         "cat /data/in.txt; echo written >/data/out.txt; cat /ro/keep.txt; "
		         "if echo x >/ro/new.txt; then echo ro-writable; fi; "
		         "echo t >/scratch/t && stat -c %a /scratch; "
		         "grep -q ' /scratch tmpfs ' /proc/mounts && echo tmpfs",
		         NULL };
	sw_exec_task t = task(f, argv);
	t.mounts = mounts;
	t.n_mounts = SW_ARRAY_SIZE(mounts);
	sw_exec_result res = run_ok(p, &t);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(out_text(f), "from the host\nread only\n1777\ntmpfs\n");
	cleanup_free char *out = sw_path_join(rw, "out.txt");
	char *data = NULL;
	size_t len = 0;
	OK(sw_fs_read_file(&data, &len, out, 1024, &e_));
	assert_string_equal(data, "written\n");
	free(data);
	cleanup_free char *ro_new = sw_path_join(ro, "new.txt");
	assert_int_equal(access(ro_new, F_OK), -1);

	/* a bind mount of a missing host folder is an error, not a folder made for it */
	cleanup_free char *gone = sw_path_join(f->tmp, "gone");
	sw_exec_mount bad = { .type = "bind", .source = gone, .destination = "/gone" };
	t.mounts = &bad;
	t.n_mounts = 1;
	sw_error *e = NULL;
	assert_true(sw_exec__docker_pod_run(&res, p, &t, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "create container"));
	sw_error_free(e);
	assert_int_equal(access(gone, F_OK), -1);
	pod_destroy(p);
	assert_clean(f);
}

static void test_docker__timeout(void **state)
{
	fixture *f = *state;
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *argv[] = { "sleep", "30", NULL };
	sw_exec_task t = task(f, argv);
	t.timeout_ms = 1000;
	int64_t t0 = sw_exec__now_ms();
	sw_exec_result res = run_ok(p, &t);
	int64_t took = sw_exec__now_ms() - t0;
	assert_true(res.timed_out);
	assert_false(res.cancelled);
	/* sleep as PID 1 ignores SIGTERM: killed after the 1 s grace */
	assert_int_equal(res.exit_code, 137);
	assert_int_equal(res.signal, SIGKILL);
	assert_true(took < 15000);
	pod_destroy(p);
	assert_clean(f);
}

static void test_docker__cancel(void **state)
{
	fixture *f = *state;
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	/* a shell that ends on SIGTERM */
	char *argv[] = { "sh", "-c",
		         "trap 'echo term; exit 143' TERM; echo ready; "
		         "while :; do sleep 0.1; done",
		         NULL };
	sw_exec_task t = task(f, argv);
	t.cancel = &f->cancel;
	f->cancel_on = "ready";
	int64_t t0 = sw_exec__now_ms();
	sw_exec_result res = run_ok(p, &t);
	assert_true(sw_exec__now_ms() - t0 < 15000);
	assert_true(res.cancelled);
	assert_false(res.timed_out);
	assert_int_equal(res.exit_code, 143);
	assert_string_equal(out_text(f), "ready\nterm\n");
	pod_destroy(p);
	assert_clean(f);
}

static void test_docker__pod_network(void **state)
{
	fixture *f = *state;
	const char *aliases[] = { "db", "cache", NULL };
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, aliases);
	pid_t pid = 0;
	sw_error *e = NULL;
	assert_int_equal(sw_exec__docker_pod_net_pid(&pid, p, &e), SW_ERR_NOT_FOUND);
	sw_error_free(e);

	/* the service: busybox httpd on 8080 */
	char *svc_argv[] = { "sh", "-c",
		             "mkdir -p /tmp/www && echo served >/tmp/www/x && "
		             "exec httpd -f -p 8080 -h /tmp/www",
		             NULL };
	volatile sig_atomic_t svc_cancel = 0;
	bg_run svc = { .p = p, .t = task(f, svc_argv) };
	svc.t.name = "svc-db";
	svc.t.cancel = &svc_cancel;
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, bg_main, &svc), 0);
	/* the service's container gives the pod its network */
	for (int i = 0; i < 300; i++) {
		e = NULL;
		if (sw_exec__docker_pod_net_pid(&pid, p, &e) == 0)
			break;
		sw_error_free(e);
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	assert_true(pid > 0);
	char nspath[64];
	snprintf(nspath, sizeof(nspath), "/proc/%d/ns/net", (int)pid);
	struct stat st_pod, st_self;
	assert_int_equal(stat(nspath, &st_pod), 0);
	assert_int_equal(stat("/proc/self/ns/net", &st_self), 0);
	assert_true(st_pod.st_ino != st_self.st_ino); /* none: not the host's network */

	char *job_argv[] = { "sh", "-c",
		             "for i in $(seq 100); do wget -q -O /tmp/a http://127.0.0.1:8080/x "
		             "&& break; sleep 0.1; done; cat /tmp/a; "
		             "wget -q -O- http://db:8080/x; wget -q -O- http://cache:8080/x; "
		             "grep -c . /etc/hosts >/dev/null && ls /sys/class/net | sort | "
		             "tr '\\n' ' '",
		             NULL };
	sw_exec_task t = task(f, job_argv);
	t.timeout_ms = 60000;
	sw_exec_result res = run_ok(p, &t);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(out_text(f), "served\nserved\nserved\nlo ");

	svc_cancel = 1;
	pthread_join(th, NULL);
	if (svc.rc < 0)
		fail_msg("service: %s", svc.msg);
	assert_true(svc.res.cancelled);
	pod_destroy(p);
	assert_clean(f);
}

static void test_docker__host_network(void **state)
{
	fixture *f = *state;
	const char *aliases[] = { "db", NULL };
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_HOST, aliases);
	char *argv[] = { "sh", "-c", "hostname; grep -w db /etc/hosts", NULL };
	sw_exec_task t = task(f, argv);
	sw_exec_result res = run_ok(p, &t);
	assert_int_equal(res.exit_code, 0);
	char host[256] = "";
	assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
	cleanup_free char *want = sw_xasprintf("%s\n127.0.0.1\tdb\n", host);
	assert_string_equal(out_text(f), want);
	pod_destroy(p);
	assert_clean(f);
}

static void test_docker__sweep(void **state)
{
	fixture *f = *state;
	pid_t dead = fork();
	assert_true(dead >= 0);
	if (dead == 0)
		_exit(0);
	assert_int_equal(waitpid(dead, NULL, 0), dead);
	cleanup_free char *dead_owner = sw_xasprintf("%d-12345", (int)dead);
	cleanup_free char *live_owner = owner_label();
	const char *owners[] = { dead_owner, live_owner };
	char ids[2][80];
	for (int i = 0; i < 2; i++) {
		json_t *body = json_pack("{s:s, s:[s,s], s:{s:s}}", "Image", g_image_id.s, "Cmd",
		                         "sleep", "300", "Labels", "slipway.owner", owners[i]);
		long status = 0;
		json_t *answer = api(&status, "POST", "/containers/create", body);
		assert_int_equal(status, 201);
		snprintf(ids[i], sizeof(ids[i]), "%s",
		         json_string_value(json_object_get(answer, "Id")));
		json_decref(answer);
		json_decref(body);
		cleanup_free char *start = sw_xasprintf("/containers/%s/start", ids[i]);
		answer = api(&status, "POST", start, NULL);
		assert_int_equal(status, 204);
		json_decref(answer);
	}
	unsigned removed = 0;
	OK(sw_exec__docker_sweep(&removed, g_host, &e_));
	assert_int_equal(removed, 1);
	long status = 0;
	for (int i = 0; i < 2; i++) {
		cleanup_free char *path = sw_xasprintf("/containers/%s/json", ids[i]);
		json_decref(api(&status, "GET", path, NULL));
		assert_int_equal(status, i == 0 ? 404 : 200);
	}
	/* the live owner's one stays; remove it ourselves */
	cleanup_free char *path = sw_xasprintf("/containers/%s?force=1", ids[1]);
	json_decref(api(&status, "DELETE", path, NULL));
	assert_int_equal(status, 204);
	assert_clean(f);
}

static void test_docker__destroy_running(void **state)
{
	fixture *f = *state;
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *argv[] = { "sleep", "300", NULL };
	bg_run svc = { .p = p, .t = task(f, argv) };
	svc.t.name = "svc";
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, bg_main, &svc), 0);
	pid_t pid = 0;
	for (int i = 0; i < 300 && pid == 0; i++) {
		sw_error *e = NULL;
		if (sw_exec__docker_pod_net_pid(&pid, p, &e) < 0) {
			sw_error_free(e);
			struct timespec ts = { 0, 100 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	assert_true(pid > 0);
	cleanup_free char *owner = owner_label();
	cleanup_free char *label = sw_xasprintf("slipway.owner=%s", owner);
	assert_int_equal(count_labelled(label), 1);
	int64_t t0 = sw_exec__now_ms();
	pod_destroy(p); /* stops the service (grace 1 s), waits for its run to end */
	assert_true(sw_exec__now_ms() - t0 < 30000);
	pthread_join(th, NULL);
	/* the run saw its container go: an exit or an error, never a hang */
	free(svc.msg);
	assert_int_equal(count_labelled(label), 0);
	assert_clean(f);
}

static void test_docker__argv_exactly(void **state)
{
	fixture *f = *state;
	/* the image's Entrypoint and Cmd play no part: argv is what runs */
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *argv[] = { "echo", "mine", NULL };
	sw_exec_task t = task(f, argv);
	t.image = IMAGE_EP;
	sw_exec_result res = run_ok(p, &t);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(out_text(f), "mine\n");
	pod_destroy(p);
	assert_clean(f);
}

typedef struct pub_run {
	sw_exec_pod *p;
	sw_exec_task t;
	sw_exec_result res;
	int rc;
} pub_run;

static void *pub_main(void *payload)
{
	pub_run *b = payload;
	sw_error *e = NULL;
	b->rc = sw_exec_pod_run(&b->res, b->p, &b->t, &e);
	sw_error_free(e);
	return NULL;
}

static void test_docker__public_api(void **state)
{
	fixture *f = *state;
	/* through executor.h (pod.c): a service, the TCP readiness check, a job by alias */
	sw_exec_backend_opts b = { .kind = SW_EXEC_BACKEND_DOCKER,
		                   .state_dir = f->state,
		                   .docker_host = g_host,
		                   .store = g_store,
		                   .kill_grace_ms = 1000 };
	const char *aliases[] = { "web", NULL };
	sw_exec_pod *p = NULL;
	OK(sw_exec_pod_new(&p, &b, SW_EXEC_POD_NET_NONE, "pub", aliases, &e_));
	cleanup_free char *want = sw_xasprintf("docker (%s)", g_host);
	assert_string_equal(sw_exec_pod_backend_name(p), want);
	char *svc_argv[] = { "sh", "-c",
		             "sleep 1; mkdir -p /tmp/www && echo public >/tmp/www/x && "
		             "exec httpd -f -p 8080 -h /tmp/www",
		             NULL };
	volatile sig_atomic_t svc_cancel = 0;
	pub_run svc = { .p = p, .t = task(f, svc_argv) };
	svc.t.name = "svc-web";
	svc.t.cancel = &svc_cancel;
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, pub_main, &svc), 0);
	OK(sw_exec_pod_wait_tcp(p, 8080, 60000, 100, NULL, &e_));
	char *job_argv[] = { "wget", "-q", "-O-", "http://web:8080/x", NULL };
	sw_exec_task t = task(f, job_argv);
	sw_exec_result res;
	OK(sw_exec_pod_run(&res, p, &t, &e_));
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(out_text(f), "public\n");
	svc_cancel = 1;
	pthread_join(th, NULL);
	assert_int_equal(svc.rc, 0);
	assert_true(svc.res.cancelled);
	OK(sw_exec_pod_destroy(p, &e_));
	assert_clean(f);
}

static void test_docker__errors(void **state)
{
	fixture *f = *state;
	sw_exec__docker_pod *p = pod_new(f, SW_EXEC_POD_NET_NONE, NULL);
	char *argv[] = { "true", NULL };
	sw_exec_task t = task(f, argv);
	t.image = "no-such-image:1";
	sw_exec_result res;
	sw_error *e = NULL;
	assert_true(sw_exec__docker_pod_run(&res, p, &t, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "no-such-image:1"));
	sw_error_free(e);
	pod_destroy(p);

	sw_exec_backend_opts b = { .kind = SW_EXEC_BACKEND_DOCKER,
		                   .state_dir = f->state,
		                   .docker_host = "tcp://127.0.0.1:2375",
		                   .store = g_store };
	e = NULL;
	assert_int_equal(sw_exec__docker_pod_new(&p, &b, SW_EXEC_POD_NET_NONE, "x", NULL, &e),
	                 SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(e), "unix://"));
	sw_error_free(e);

	/* no daemon behind the socket: an error naming it, at once */
	cleanup_free char *nowhere = sw_xasprintf("unix://%s/no-docker.sock", f->tmp);
	b.docker_host = nowhere;
	e = NULL;
	assert_true(sw_exec__docker_pod_new(&p, &b, SW_EXEC_POD_NET_NONE, "x", NULL, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), nowhere));
	sw_error_free(e);
	assert_clean(f);
}

/* ---------------------------------------------------------------- the group */

static int report(sw_error *e)
{
	fprintf(stderr, "test_executor_docker: %s\n", sw_error_msg(e));
	sw_error_free(e);
	return -1;
}

static int make_image(void)
{
	sw_error *e = NULL;
	if (sw_fs_mkdtemp(&g_tmp, NULL, "sw-test-docker-group-", &e) < 0)
		return report(e);
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
	         "set -e; r='%s/rootfs'; mkdir -p \"$r/bin\" \"$r/etc\" \"$r/root\" \"$r/tmp\"; "
	         "chmod 1777 \"$r/tmp\"; chmod 0700 \"$r/root\"; "
	         "cp /bin/busybox \"$r/bin/busybox\"; chmod 0755 \"$r/bin/busybox\"; "
	         "for a in $(/bin/busybox --list); do case $a in busybox|*/*) continue;; esac; "
	         "ln -sf busybox \"$r/bin/$a\"; done; "
	         "printf 'root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:"
	         "/nonexistent:/bin/false\\n' >\"$r/etc/passwd\"; "
	         "printf 'root:x:0:\\nnogroup:x:65534:\\n' >\"$r/etc/group\"; "
	         "cd \"$r\" && tar --numeric-owner --owner=0 --group=0 -cf ../rootfs.tar "
	         "bin etc root tmp",
	         g_tmp);
	if (system(cmd) != 0) {
		fprintf(stderr, "test_executor_docker: cannot make the busybox rootfs\n");
		return -1;
	}
	cleanup_free char *store = sw_path_join(g_tmp, "store");
	cleanup_free char *tar = sw_path_join(g_tmp, "rootfs.tar");
	sw_oci_layer_opts zstd = { .compression = SW_OCI_COMPRESS_ZSTD, .source_date_epoch = -1 };
	if (sw_oci_store_open(&g_store, store, true, &e) < 0 ||
	    sw_oci_image_import(NULL, g_store, tar, IMAGE, NULL, NULL, &e) < 0 ||
	    sw_oci_image_import(NULL, g_store, tar, IMAGE_ZSTD, NULL, &zstd, &e) < 0 ||
	    sw_exec__dk_init(&g_dk, g_host, &e) < 0)
		return report(e);
	sw_oci_manifest m = { 0 };
	if (sw_oci_store_load_image(NULL, &m, NULL, g_store, IMAGE, NULL, &e) < 0)
		return report(e);
	g_image_id = m.config.digest;
	/* IMAGE_EP: Entrypoint ["/bin/false"], Cmd ["echo", "image-cmd"] */
	sw_oci_config c = { 0 };
	char *text = NULL;
	size_t len = 0;
	int r = sw_oci_store_read_blob(&text, &len, g_store, &m.config.digest,
	                               SW_OCI_MAX_CONFIG_BYTES, &e);
	if (r == 0)
		r = sw_oci_config_parse(&c, text, len, &e);
	free(text);
	if (r == 0) {
		sw_strv_free(c.entrypoint);
		sw_strv_free(c.cmd);
		c.entrypoint = NULL;
		c.cmd = NULL;
		sw_strv_push(&c.entrypoint, "/bin/false");
		sw_strv_push(&c.cmd, "echo");
		sw_strv_push(&c.cmd, "image-cmd");
		text = sw_oci_config_serialize(&c, &len);
		r = sw_oci_store_put_blob(&m.config.digest, g_store, text, len, &e);
		m.config.size = (int64_t)len;
		free(text);
	}
	sw_oci_descriptor d = { .media_type = SW_OCI_MT_MANIFEST };
	if (r == 0) {
		text = sw_oci_manifest_serialize(&m, &len);
		r = sw_oci_store_put_blob(&d.digest, g_store, text, len, &e);
		d.size = (int64_t)len;
		free(text);
	}
	if (r == 0)
		r = sw_oci_store_tag(g_store, IMAGE_EP, &d, &e);
	sw_oci_config_clear(&c);
	sw_oci_manifest_clear(&m);
	return r < 0 ? report(e) : 0;
}

#define T(name) cmocka_unit_test_setup_teardown(test_docker__##name, setup, teardown)

int test_executor_docker_run(void);
int test_executor_docker_run(void)
{
	g_host = getenv("SW_TEST_DOCKER_HOST");
	if (!g_host || !*g_host) {
		printf("[  SKIPPED ] executor_docker: skipped: SW_TEST_DOCKER_HOST is not set (run "
		       "tests/integration/test_docker_backend.sh, which starts a private dockerd)\n");
		return 0;
	}
	if (access("/bin/busybox", X_OK) != 0) {
		printf("[  SKIPPED ] executor_docker: skipped: /bin/busybox is missing (install "
		       "busybox-static)\n");
		return 0;
	}
	int failed = 1;
	if (make_image() < 0)
		goto out;
	const struct CMUnitTest tests[] = {
		T(load_once),    T(load_zstd),    T(output_streams), T(exit_codes),
		T(env_cwd_user), T(mounts),       T(timeout),        T(cancel),
		T(pod_network),  T(host_network), T(sweep),          T(destroy_running),
		T(argv_exactly), T(public_api),   T(errors),
	};
	failed = cmocka_run_group_tests_name("executor_docker", tests, NULL, NULL);
out:
	sw_oci_store_free(g_store);
	sw_exec__dk_clear(&g_dk);
	sw_error *e = NULL;
	if (g_tmp && sw_fs_rm_rf(g_tmp, &e) < 0) {
		fprintf(stderr, "%s\n", sw_error_msg(e));
		sw_error_free(e);
	}
	free(g_tmp);
	return failed;
}
