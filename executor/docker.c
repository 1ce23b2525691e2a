/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The docker backend of pods: each task is a container of the Docker daemon made from an image
 * of slipway's store (loaded when the daemon lacks it), created with the argv exactly as given
 * (Entrypoint []), attached BEFORE it starts (so no output is lost; the multiplexed stream is
 * split into stdout and stderr), started, waited for with the task's timeout and cancel flag
 * (stop with the grace, then kill), and always removed. The pod's network is the network of its
 * first running container: NONE is NetworkMode "none", HOST "host", PRIVATE Docker's default
 * "bridge" (outbound access through the daemon's bridge; the tests use none and host only);
 * later containers join it with NetworkMode "container:<id>". Docker refuses ExtraHosts with a
 * container: network, so the pod's names resolve through an /etc/hosts of slipway's own,
 * bind-mounted read-only into every container (Docker then does not mount its own). That file
 * lives in a box under STATE/exec (owner-labelled, so the executor's sweep removes it after a
 * crash). Containers carry the labels slipway.owner=<pid>-<start time>, slipway.pod=<name> and
 * slipway.pod.id=<unique pod id>; their output is not logged by the daemon (log driver none:
 * job output may hold secrets). The sweep removes containers whose owner process is gone.
 */
#include "executor/docker_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define CALL_TIMEOUT_MS 120000L
/* after the process ended, how long the attach stream may take to deliver the rest */
#define DRAIN_MS 5000
/* after a stop's grace, how long before a kill and then giving up on the wait */
#define STOP_SLACK_MS 15000
/* how long destroy waits for runs of other threads to see their containers go */
#define DESTROY_WAIT_S 120

typedef enum { FIRST_NONE = 0, FIRST_STARTING, FIRST_RUNNING } first_state;

struct sw_exec__docker_pod {
	sw_exec__dk dk;
	sw_oci_store *store;
	char *name;
	char *pod_id; /* "<name>-<16 hex>": the slipway.pod.id label */
	char *owner;  /* "<pid>-<start time>" */
	char *backend_name;
	sw_exec_pod_net net;
	uint64_t memory_limit;
	uint64_t pids_limit;
	uint32_t cpu_millis;
	int64_t kill_grace_ms;
	sw_exec__box box; /* holds the hosts file */
	char *hosts_path;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	first_state first;
	char *first_id; /* the container whose network the pod shares (FIRST_RUNNING) */
	unsigned active;
	bool destroying;
};

#define cleanup_json __attribute__((cleanup(json_decrefp)))

/* Letters, digits, '-', '_' of s (others become '-'), at most 40. Caller frees. */
static char *sanitize(const char *s)
{
	if (!s || !*s)
		s = "pod";
	size_t n = strlen(s) > 40 ? 40 : strlen(s);
	char *out = sw_xstrndup(s, n);
	for (char *p = out; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			*p = '-';
	if (out[0] == '-' || out[0] == '_')
		out[0] = 'x'; /* Docker names start with a letter or digit */
	return out;
}

static int random_hex(char out[17], sw_error **err)
{
	uint8_t rnd[8];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return sw_error_os(err, errno, "getrandom");
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(out + 2 * i, 3, "%02x", rnd[i]);
	return 0;
}

static int owner_label(char **out, sw_error **err)
{
	unsigned long long start = 0;
	int r = sw_proc_starttime(&start, getpid());
	if (r < 0)
		return sw_error_os(err, -r, "read the start time of this process");
	*out = sw_xasprintf("%d-%llu", (int)getpid(), start);
	return 0;
}

const char *sw_exec__docker_pod_name(const sw_exec__docker_pod *p)
{
	/* the backend's name for messages: "docker (unix:///...)" */
	return p->backend_name;
}

/* ---------------------------------------------------------------- hosts file */

static int write_hosts(sw_exec__docker_pod *p, const char *const *aliases, sw_error **err)
{
	sw_buf b = SW_BUF_INIT(1 << 20);
	int r = 0;
	if (p->net == SW_EXEC_POD_NET_HOST) {
		/* the host's names stay resolvable on the host's network */
		cleanup_free char *host = NULL;
		size_t len = 0;
		sw_error *e = NULL;
		if (sw_fs_read_file(&host, &len, "/etc/hosts", 512 * 1024, &e) == 0) {
			r = sw_buf_append(&b, host, len, err);
			if (r == 0 && len > 0 && host[len - 1] != '\n')
				r = sw_buf_puts(&b, "\n", err);
		}
		sw_error_free(e);
	} else {
		r = sw_buf_puts(&b,
		                "127.0.0.1\tlocalhost slipway\n::1\tlocalhost ip6-localhost "
		                "ip6-loopback\n",
		                err);
	}
	if (r == 0 && aliases && aliases[0]) {
		r = sw_buf_puts(&b, "127.0.0.1\t", err);
		for (size_t i = 0; r == 0 && aliases[i]; i++) {
			for (const char *c = aliases[i]; r == 0 && *c; c++)
				if (*c == ' ' || *c == '\t' || *c == '\n' || *c == '#')
					r = sw_error_set(err, SW_ERR_INVALID,
					                 "pod alias '%s': not a "
					                 "host name",
					                 aliases[i]);
			if (r == 0)
				r = sw_buf_printf(&b, err, "%s%s", i ? " " : "", aliases[i]);
		}
		if (r == 0)
			r = sw_buf_puts(&b, "\n", err);
	}
	if (r == 0) {
		p->hosts_path = sw_path_join(p->box.dir, "hosts");
		r = sw_fs_write_atomic(p->hosts_path, b.data ? b.data : "", b.len, 0644, err);
	}
	sw_buf_free(&b);
	return r;
}

/* ---------------------------------------------------------------- pods */

int sw_exec__docker_pod_new(sw_exec__docker_pod **out, const sw_exec_backend_opts *b,
                            sw_exec_pod_net net, const char *name, const char *const *aliases,
                            sw_error **err)
{
	*out = NULL;
	sw_exec__docker_pod *p = sw_xcalloc(1, sizeof(*p));
	p->box.dirfd = -1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->store = b->store;
	p->net = net;
	p->memory_limit = b->memory_limit;
	p->pids_limit = b->pids_limit;
	p->cpu_millis = b->cpu_millis;
	p->kill_grace_ms = b->kill_grace_ms > 0 ? b->kill_grace_ms : 10000;
	p->name = sanitize(name);
	char hex[17];
	cleanup_free char *exec_dir = NULL;
	int r = sw_exec__dk_init(&p->dk, b->docker_host, err);
	if (r == 0)
		r = owner_label(&p->owner, err);
	if (r == 0)
		r = random_hex(hex, err);
	if (r == 0) {
		p->pod_id = sw_xasprintf("%s-%s", p->name, hex);
		p->backend_name = sw_xasprintf("docker (%s)", p->dk.host);
		r = sw_exec__exec_dir(&exec_dir, b->state_dir, err);
	}
	if (r == 0) {
		/* a daemon that is not there is an error now, not at the first run */
		long status = 0;
		r = sw_exec__dk_call(&status, NULL, &p->dk, "GET", "/_ping", NULL, 30000, err);
		if (r == 0 && status != 200)
			r = sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_HTTP, (int)status,
			                 "docker (%s): ping: HTTP %ld", p->dk.host, status);
	}
	if (r == 0) {
		cleanup_free char *prefix = sw_xasprintf("docker-%s", p->name);
		r = sw_exec__box_create(&p->box, exec_dir, prefix, NULL, NULL, err);
	}
	if (r == 0)
		r = write_hosts(p, aliases, err);
	if (r < 0) {
		sw_error *e = NULL;
		if (sw_exec__docker_pod_destroy(p, &e) < 0)
			SW_LOG(SW_LOG_DEBUG, "docker pod: %s", sw_error_msg(e));
		sw_error_free(e);
		return sw_error_wrap(err, "docker pod '%s'", name ? name : "");
	}
	*out = p;
	return 0;
}

/* Stop (with the grace) then remove a container; a missing one is fine. */
static int container_remove(const sw_exec__dk *dk, const char *id, int64_t grace_ms, bool stop,
                            sw_error **err)
{
	long status = 0;
	if (stop) {
		cleanup_free char *path = sw_xasprintf("/containers/%s/stop?t=%lld", id,
		                                       (long long)((grace_ms + 999) / 1000));
		sw_error *e = NULL;
		if (sw_exec__dk_call(&status, NULL, dk, "POST", path, NULL,
		                     (long)grace_ms + STOP_SLACK_MS, &e) < 0)
			SW_LOG(SW_LOG_DEBUG, "docker: stop %s: %s", id, sw_error_msg(e));
		sw_error_free(e);
	}
	cleanup_free char *path = sw_xasprintf("/containers/%s?force=1&v=1", id);
	cleanup_json json_t *answer = NULL;
	int r = 0;
	/* a removal already in progress (409) finishes on its own shortly: try again */
	for (int attempt = 0; attempt < 20; attempt++) {
		json_decref(answer);
		answer = NULL;
		r = sw_exec__dk_call(&status, &answer, dk, "DELETE", path, NULL, CALL_TIMEOUT_MS,
		                     err);
		if (r < 0 || status != 409)
			break;
		struct timespec ts = { 0, 250 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	if (r < 0)
		return r;
	if (status / 100 == 2 || status == 404)
		return 0;
	cleanup_free char *what = sw_xasprintf("docker: remove container %.12s", id);
	return sw_exec__dk_status_error(err, status, answer, what);
}

/* Ids of the containers with label `label` ("k" or "k=v"), all states. */
static int containers_with_label(json_t **out, const sw_exec__dk *dk, const char *label,
                                 sw_error **err)
{
	*out = NULL;
	cleanup_json json_t *filters = json_pack("{s:[s]}", "label", label);
	cleanup_free char *ftext = json_dumps(filters, JSON_COMPACT);
	cleanup_free char *fesc = sw_url_escape(ftext);
	cleanup_free char *path = sw_xasprintf("/containers/json?all=1&filters=%s", fesc);
	long status = 0;
	json_t *answer = NULL;
	int r = sw_exec__dk_call(&status, &answer, dk, "GET", path, NULL, CALL_TIMEOUT_MS, err);
	if (r < 0)
		return r;
	if (status != 200 || !json_is_array(answer)) {
		r = sw_exec__dk_status_error(err, status, answer, "docker: list containers");
		json_decref(answer);
		return r;
	}
	*out = answer;
	return 0;
}

int sw_exec__docker_pod_destroy(sw_exec__docker_pod *p, sw_error **err)
{
	if (!p)
		return 0;
	int r = 0;
	pthread_mutex_lock(&p->lock);
	p->destroying = true;
	pthread_mutex_unlock(&p->lock);
	if (p->pod_id && p->dk.socket) {
		cleanup_free char *label =
		        sw_xasprintf(SW_EXEC__DOCKER_LABEL_POD_ID "=%s", p->pod_id);
		cleanup_json json_t *list = NULL;
		r = containers_with_label(&list, &p->dk, label, err);
		size_t i;
		json_t *c;
		json_array_foreach (list, i, c) {
			const char *id = json_string_value(json_object_get(c, "Id"));
			const char *state = json_string_value(json_object_get(c, "State"));
			if (!id)
				continue;
			bool running = state && strcmp(state, "running") == 0;
			int rr = container_remove(&p->dk, id, p->kill_grace_ms, running, err);
			r = r < 0 ? r : rr;
		}
	}
	/* runs of other threads end now that their containers are gone */
	pthread_mutex_lock(&p->lock);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += DESTROY_WAIT_S;
	while (p->active > 0) {
		if (pthread_cond_timedwait(&p->cond, &p->lock, &until) == ETIMEDOUT)
			break;
	}
	unsigned active = p->active;
	pthread_mutex_unlock(&p->lock);
	if (active > 0) {
		/* freeing now would pull the pod from under them: leak it, say so */
		return sw_error_set(err, SW_ERR_GENERIC,
		                    "docker pod '%s': %u runs did not end; the pod is not freed",
		                    p->name, active);
	}
	if (p->box.dir) {
		int rr = sw_exec__box_destroy(&p->box, err);
		r = r < 0 ? r : rr;
	}
	sw_exec__box_clear(&p->box);
	free(p->hosts_path);
	free(p->first_id);
	free(p->name);
	free(p->pod_id);
	free(p->owner);
	free(p->backend_name);
	sw_exec__dk_clear(&p->dk);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return r;
}

/* State.Pid of a container, 0 when it does not run. */
static int container_pid(pid_t *out, const sw_exec__dk *dk, const char *id, sw_error **err)
{
	*out = 0;
	cleanup_free char *path = sw_xasprintf("/containers/%s/json", id);
	long status = 0;
	cleanup_json json_t *answer = NULL;
	int r = sw_exec__dk_call(&status, &answer, dk, "GET", path, NULL, CALL_TIMEOUT_MS, err);
	if (r < 0)
		return r;
	if (status == 404)
		return 0;
	if (status != 200)
		return sw_exec__dk_status_error(err, status, answer, "docker: inspect container");
	json_t *state = json_object_get(answer, "State");
	if (json_is_true(json_object_get(state, "Running")))
		*out = (pid_t)json_integer_value(json_object_get(state, "Pid"));
	return 0;
}

int sw_exec__docker_pod_net_pid(pid_t *out, sw_exec__docker_pod *p, sw_error **err)
{
	*out = 0;
	pthread_mutex_lock(&p->lock);
	char *id = p->first == FIRST_RUNNING ? sw_xstrdup(p->first_id) : NULL;
	pthread_mutex_unlock(&p->lock);
	if (!id)
		return sw_error_set(err, SW_ERR_NOT_FOUND, "docker pod '%s': no container runs yet",
		                    p->name);
	pid_t pid = 0;
	int r = container_pid(&pid, &p->dk, id, err);
	free(id);
	if (r < 0)
		return r;
	if (pid <= 0)
		return sw_error_set(err, SW_ERR_NOT_FOUND,
		                    "docker pod '%s': its first container does not run any more",
		                    p->name);
	*out = pid;
	return 0;
}

/* ---------------------------------------------------------------- the output stream */

typedef struct demux {
	const sw_exec_task *t;
	uint8_t hdr[8];
	size_t hdr_len;
	uint32_t left; /* payload bytes left in the current frame */
	int stream;
	bool headers_done; /* the daemon answered the attach: the streams are wired */
	long status;
} demux;

static size_t demux_write(char *data, size_t size, size_t n, void *payload)
{
	demux *d = payload;
	size_t len = size * n, i = 0;
	while (i < len) {
		if (d->left == 0) {
			size_t take = 8 - d->hdr_len < len - i ? 8 - d->hdr_len : len - i;
			memcpy(d->hdr + d->hdr_len, data + i, take);
			d->hdr_len += take;
			i += take;
			if (d->hdr_len < 8)
				break;
			d->hdr_len = 0;
			d->stream = d->hdr[0] == 2 ? SW_EXEC_STDERR : SW_EXEC_STDOUT;
			d->left = (uint32_t)d->hdr[4] << 24 | (uint32_t)d->hdr[5] << 16 |
			          (uint32_t)d->hdr[6] << 8 | (uint32_t)d->hdr[7];
			continue;
		}
		size_t take = d->left < len - i ? d->left : len - i;
		if (d->t->on_output && take > 0)
			d->t->on_output((sw_exec_stream)d->stream, data + i, take, d->t->payload);
		d->left -= (uint32_t)take;
		i += take;
	}
	return len;
}

static size_t demux_header(char *data, size_t size, size_t n, void *payload)
{
	demux *d = payload;
	size_t len = size * n;
	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		const char *sp = memchr(data, ' ', len);
		d->status = sp ? strtol(sp + 1, NULL, 10) : 0;
	} else if ((len == 2 && data[0] == '\r' && data[1] == '\n') ||
	           (len == 1 && data[0] == '\n'))
		d->headers_done = true;
	return len;
}

static size_t sink_buf(char *data, size_t size, size_t n, void *payload)
{
	sw_buf *b = payload;
	sw_error *e = NULL;
	if (sw_buf_append(b, data, size * n, &e) < 0) {
		sw_error_free(e);
		return 0;
	}
	return size * n;
}

static size_t discard(char *data, size_t size, size_t n, void *payload)
{
	(void)data;
	(void)payload;
	return size * n;
}

/* ---------------------------------------------------------------- a run */

typedef struct run {
	sw_exec__docker_pod *p;
	const sw_exec_task *t;
	char *id;
	bool first; /* this run's container gives the pod its network */
	CURLM *multi;
	CURL *attach;
	bool attach_done;
	demux dm;
	CURL *wait;
	bool wait_done;
	CURLcode wait_rc;
	sw_buf wait_answer;
	CURL *stop;
	bool stop_done;
} run;

static json_t *strv_json(char *const *v)
{
	json_t *a = json_array();
	for (size_t i = 0; v && v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *create_body(const run *x, const sw_digest *image, const char *network)
{
	const sw_exec__docker_pod *p = x->p;
	const sw_exec_task *t = x->t;
	json_t *mounts = json_array();
	json_array_append_new(mounts,
	                      json_pack("{s:s, s:s, s:s, s:b}", "Type", "bind", "Source",
	                                p->hosts_path, "Target", "/etc/hosts", "ReadOnly", 1));
	for (size_t i = 0; i < t->n_mounts; i++) {
		const sw_exec_mount *m = &t->mounts[i];
		if (m->type && strcmp(m->type, "tmpfs") == 0) {
			json_array_append_new(mounts,
			                      json_pack("{s:s, s:s, s:b, s:{s:i}}", "Type", "tmpfs",
			                                "Target", m->destination, "ReadOnly",
			                                m->readonly, "TmpfsOptions", "Mode",
			                                (int)(m->mode ? m->mode : 0755)));
		} else {
			json_array_append_new(
			        mounts, json_pack("{s:s, s:s, s:s, s:b}", "Type", "bind", "Source",
			                          m->source ? m->source : "", "Target",
			                          m->destination, "ReadOnly", m->readonly));
		}
	}
	/* Init: docker-init (tini) as PID 1 passes a stop's SIGTERM on to the process, which,
	 * not being a namespace's init, then ends by default instead of ignoring it */
	json_t *host = json_pack("{s:s, s:o, s:b, s:b, s:{s:s}}", "NetworkMode", network, "Mounts",
	                         mounts, "AutoRemove", 0, "Init", 1, "LogConfig", "Type", "none");
	if (p->memory_limit)
		json_object_set_new(host, "Memory", json_integer((json_int_t)p->memory_limit));
	if (p->pids_limit)
		json_object_set_new(host, "PidsLimit", json_integer((json_int_t)p->pids_limit));
	if (p->cpu_millis)
		json_object_set_new(host, "NanoCpus",
		                    json_integer((json_int_t)p->cpu_millis * 1000000));
	json_t *labels = json_pack("{s:s, s:s, s:s}", SW_EXEC__DOCKER_LABEL_OWNER, p->owner,
	                           SW_EXEC__DOCKER_LABEL_POD, p->name, SW_EXEC__DOCKER_LABEL_POD_ID,
	                           p->pod_id);
	json_t *body =
	        json_pack("{s:s, s:o, s:[], s:o, s:s, s:s, s:b, s:b, s:b, s:b, s:o, s:o}", "Image",
	                  image->s, "Cmd", strv_json(t->argv), "Entrypoint", "Env",
	                  strv_json(t->env), "WorkingDir", t->cwd ? t->cwd : "/", "User",
	                  t->user && *t->user ? t->user : "0", "AttachStdin", 0, "AttachStdout", 1,
	                  "AttachStderr", 1, "Tty", 0, "Labels", labels, "HostConfig", host);
	/* Docker refuses a hostname with the host's or another container's network */
	if (x->first && p->net != SW_EXEC_POD_NET_HOST)
		json_object_set_new(body, "Hostname", json_string("slipway"));
	return body;
}

/* Claim the pod's network: become its first container, or get the running first's id. */
static int claim_network(run *x, char **first_id, sw_error **err)
{
	sw_exec__docker_pod *p = x->p;
	*first_id = NULL;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		while (p->first == FIRST_STARTING && !p->destroying)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->destroying) {
			pthread_mutex_unlock(&p->lock);
			return sw_error_set(err, SW_ERR_CANCELLED,
			                    "docker pod '%s' is being removed", p->name);
		}
		if (p->first == FIRST_NONE) {
			p->first = FIRST_STARTING;
			x->first = true;
			pthread_mutex_unlock(&p->lock);
			return 0;
		}
		char *id = sw_xstrdup(p->first_id);
		pthread_mutex_unlock(&p->lock);
		/* the first container may have ended: then this one takes its place */
		pid_t pid = 0;
		int r = container_pid(&pid, &p->dk, id, err);
		if (r < 0) {
			free(id);
			return r;
		}
		if (pid > 0) {
			*first_id = id;
			return 0;
		}
		pthread_mutex_lock(&p->lock);
		if (p->first == FIRST_RUNNING && strcmp(p->first_id, id) == 0) {
			p->first = FIRST_NONE;
			free(p->first_id);
			p->first_id = NULL;
		}
		pthread_mutex_unlock(&p->lock);
		free(id);
	}
}

/* The first container started (or failed to): tell the runs waiting for the network. */
static void publish_network(run *x, bool running)
{
	if (!x->first)
		return;
	sw_exec__docker_pod *p = x->p;
	pthread_mutex_lock(&p->lock);
	if (running) {
		p->first = FIRST_RUNNING;
		free(p->first_id);
		p->first_id = sw_xstrdup(x->id);
	} else if (p->first == FIRST_STARTING ||
	           (p->first == FIRST_RUNNING && p->first_id && strcmp(p->first_id, x->id) == 0)) {
		p->first = FIRST_NONE;
		free(p->first_id);
		p->first_id = NULL;
	}
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (!running)
		x->first = false;
}

static int container_create(run *x, const sw_digest *image, const char *network, sw_error **err)
{
	cleanup_json json_t *body = create_body(x, image, network);
	char hex[17];
	int r = random_hex(hex, err);
	if (r < 0)
		return r;
	cleanup_free char *tname = sanitize(x->t->name ? x->t->name : "task");
	cleanup_free char *path =
	        sw_xasprintf("/containers/create?name=slipway-%s-%s-%.8s", x->p->name, tname, hex);
	long status = 0;
	cleanup_json json_t *answer = NULL;
	r = sw_exec__dk_call(&status, &answer, &x->p->dk, "POST", path, body, CALL_TIMEOUT_MS, err);
	if (r < 0)
		return r;
	const char *id = json_string_value(json_object_get(answer, "Id"));
	if (status != 201 || !id)
		return sw_exec__dk_status_error(err, status, answer, "docker: create container");
	x->id = sw_xstrdup(id);
	return 0;
}

/* Drive the multi handle for up to timeout_ms, noting finished transfers. */
static int pump(run *x, int timeout_ms, sw_error **err)
{
	int running = 0;
	CURLMcode mc = curl_multi_perform(x->multi, &running);
	if (mc == CURLM_OK && running > 0)
		mc = curl_multi_poll(x->multi, NULL, 0, timeout_ms, NULL);
	if (mc == CURLM_OK)
		mc = curl_multi_perform(x->multi, &running);
	if (mc != CURLM_OK)
		return sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_CURL, (int)mc, "docker (%s): %s",
		                    x->p->dk.host, curl_multi_strerror(mc));
	int left = 0;
	for (CURLMsg *m; (m = curl_multi_info_read(x->multi, &left)) != NULL;) {
		if (m->msg != CURLMSG_DONE)
			continue;
		if (m->easy_handle == x->attach)
			x->attach_done = true;
		else if (m->easy_handle == x->wait) {
			x->wait_done = true;
			x->wait_rc = m->data.result;
		} else if (m->easy_handle == x->stop)
			x->stop_done = true;
	}
	if (running == 0 && timeout_ms > 0) {
		/* nothing in flight: do not spin */
		struct timespec ts = { 0, (long)(timeout_ms < 50 ? timeout_ms : 50) * 1000000L };
		nanosleep(&ts, NULL);
	}
	return 0;
}

static void drop_handle(run *x, CURL **h)
{
	if (!*h)
		return;
	curl_multi_remove_handle(x->multi, *h);
	curl_easy_cleanup(*h);
	*h = NULL;
}

/* A start refused because the executable is missing or not executable: Docker's 127/126. */
static int start_exit_code(const char *msg)
{
	if (strstr(msg, "executable file not found") || strstr(msg, "no such file or directory"))
		return 127;
	if (strstr(msg, "permission denied"))
		return 126;
	return -1;
}

static void send_stop(run *x, bool kill_now)
{
	cleanup_free char *path =
	        kill_now ? sw_xasprintf("/containers/%s/kill?signal=KILL", x->id)
	                 : sw_xasprintf("/containers/%s/stop?t=%lld", x->id,
	                                (long long)((x->p->kill_grace_ms + 999) / 1000));
	drop_handle(x, &x->stop);
	x->stop_done = false;
	x->stop = sw_exec__dk_handle(&x->p->dk, "POST", path);
	curl_easy_setopt(x->stop, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(x->stop, CURLOPT_TIMEOUT_MS, (long)x->p->kill_grace_ms + STOP_SLACK_MS);
	curl_multi_add_handle(x->multi, x->stop);
}

static int run_container(sw_exec_result *out, run *x, sw_error **err)
{
	sw_exec__docker_pod *p = x->p;
	const sw_exec_task *t = x->t;
	int r = 0;

	/* attach first, so that nothing the process writes is lost */
	cleanup_free char *apath =
	        sw_xasprintf("/containers/%s/attach?stream=1&stdout=1&stderr=1", x->id);
	x->dm.t = t;
	x->attach = sw_exec__dk_handle(&p->dk, "POST", apath);
	curl_easy_setopt(x->attach, CURLOPT_WRITEFUNCTION, demux_write);
	curl_easy_setopt(x->attach, CURLOPT_WRITEDATA, &x->dm);
	curl_easy_setopt(x->attach, CURLOPT_HEADERFUNCTION, demux_header);
	curl_easy_setopt(x->attach, CURLOPT_HEADERDATA, &x->dm);
	curl_multi_add_handle(x->multi, x->attach);
	int64_t until = sw_exec__now_ms() + 30000;
	while (r == 0 && !x->dm.headers_done && !x->attach_done) {
		if (sw_exec__now_ms() > until)
			r = sw_error_set(err, SW_ERR_TIMEOUT, "docker: attach: no answer in 30 s");
		else
			r = pump(x, 100, err);
	}
	if (r < 0)
		return r;
	if (!x->dm.headers_done || x->dm.status / 100 != 2)
		return sw_error_set(err, SW_ERR_GENERIC,
		                    "docker: attach to container %.12s: HTTP %ld", x->id,
		                    x->dm.status);

	/* start */
	cleanup_free char *spath = sw_xasprintf("/containers/%s/start", x->id);
	long status = 0;
	cleanup_json json_t *answer = NULL;
	r = sw_exec__dk_call(&status, &answer, &p->dk, "POST", spath, NULL, CALL_TIMEOUT_MS, err);
	if (r < 0)
		return r;
	if (status / 100 != 2) {
		int code = start_exit_code(sw_exec__dk_message(answer));
		if (code < 0)
			return sw_exec__dk_status_error(err, status, answer,
			                                "docker: start container");
		SW_LOG(SW_LOG_DEBUG, "docker: start %.12s: %s", x->id, sw_exec__dk_message(answer));
		out->exit_code = code;
		return 0;
	}
	publish_network(x, true);

	/* wait, watching the clock and the cancel flag */
	cleanup_free char *wpath = sw_xasprintf("/containers/%s/wait", x->id);
	x->wait = sw_exec__dk_handle(&p->dk, "POST", wpath);
	curl_easy_setopt(x->wait, CURLOPT_WRITEFUNCTION, sink_buf);
	curl_easy_setopt(x->wait, CURLOPT_WRITEDATA, &x->wait_answer);
	curl_multi_add_handle(x->multi, x->wait);
	int64_t start = sw_exec__now_ms();
	int64_t stop_sent = -1;
	bool killed = false;
	while (!x->wait_done) {
		int64_t now = sw_exec__now_ms();
		if (stop_sent < 0) {
			if (t->timeout_ms > 0 && now - start >= t->timeout_ms)
				out->timed_out = true;
			else if (t->cancel && *t->cancel)
				out->cancelled = true;
			if (out->timed_out || out->cancelled) {
				/* a timeout (or a second cancel) kills at once; a cancel stops with
				 * the grace */
				bool now_kill = out->timed_out || *t->cancel >= 2;
				send_stop(x, now_kill);
				stop_sent = now;
				killed = now_kill;
			}
		} else if (!killed && (now - stop_sent > p->kill_grace_ms + STOP_SLACK_MS ||
		                       (t->cancel && *t->cancel >= 2))) {
			send_stop(x, true);
			killed = true;
		} else if (killed && now - stop_sent > p->kill_grace_ms + 2 * STOP_SLACK_MS) {
			return sw_error_set(err, SW_ERR_TIMEOUT,
			                    "docker: container %.12s did not end after a kill",
			                    x->id);
		}
		r = pump(x, 100, err);
		if (r < 0)
			return r;
	}
	if (x->wait_rc != CURLE_OK)
		return sw_exec__dk_curl_error(err, &p->dk, x->wait_rc, "wait", NULL);
	long wstatus = 0;
	curl_easy_getinfo(x->wait, CURLINFO_RESPONSE_CODE, &wstatus);
	cleanup_json json_t *wj = json_loadb(x->wait_answer.data ? x->wait_answer.data : "",
	                                     x->wait_answer.len, 0, NULL);
	if (wstatus != 200 || !json_is_integer(json_object_get(wj, "StatusCode")))
		return sw_exec__dk_status_error(err, wstatus, wj, "docker: wait for container");
	out->exit_code = (int)json_integer_value(json_object_get(wj, "StatusCode"));
	/* Docker reports 128+N for a process ended by signal N, like a shell; the signal is only
	 * known for certain when slipway sent it */
	if ((out->timed_out || out->cancelled) && out->exit_code > 128 && out->exit_code < 128 + 65)
		out->signal = out->exit_code - 128;

	/* the rest of the output */
	until = sw_exec__now_ms() + DRAIN_MS;
	while (!x->attach_done && sw_exec__now_ms() < until) {
		r = pump(x, 100, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int sw_exec__docker_pod_run(sw_exec_result *out, sw_exec__docker_pod *p, const sw_exec_task *t,
                            sw_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!t->argv || !t->argv[0])
		return sw_error_set(err, SW_ERR_INVALID, "docker: task '%s' has no command",
		                    t->name ? t->name : "");
	pthread_mutex_lock(&p->lock);
	bool destroying = p->destroying;
	if (!destroying)
		p->active++;
	pthread_mutex_unlock(&p->lock);
	if (destroying)
		return sw_error_set(err, SW_ERR_CANCELLED, "docker pod '%s' is being removed",
		                    p->name);

	run x = { .p = p, .t = t, .wait_answer = SW_BUF_INIT(1 << 20) };
	cleanup_free char *first_id = NULL;
	cleanup_free char *network = NULL;
	sw_digest image;
	int r = sw_exec__dk_image_ensure(&image, NULL, &p->dk, p->store, t->image, err);
	if (r == 0)
		r = claim_network(&x, &first_id, err);
	if (r == 0) {
		if (!x.first)
			network = sw_xasprintf("container:%s", first_id);
		else if (p->net == SW_EXEC_POD_NET_HOST)
			network = sw_xstrdup("host");
		else if (p->net == SW_EXEC_POD_NET_PRIVATE)
			network = sw_xstrdup("bridge"); /* Docker's default bridge network */
		else
			network = sw_xstrdup("none");
		r = container_create(&x, &image, network, err);
	}
	if (r == 0) {
		x.multi = curl_multi_init();
		if (!x.multi)
			abort();
		r = run_container(out, &x, err);
	}
	/* whatever happened: the pod's network may go to another run, the container goes */
	if (x.first)
		publish_network(&x, false);
	if (x.multi) {
		drop_handle(&x, &x.attach);
		drop_handle(&x, &x.wait);
		drop_handle(&x, &x.stop);
		curl_multi_cleanup(x.multi);
	}
	if (x.id) {
		sw_error *e = NULL;
		int rr = container_remove(&p->dk, x.id, p->kill_grace_ms, false, r < 0 ? &e : err);
		if (r == 0)
			r = rr;
		else if (rr < 0)
			SW_LOG(SW_LOG_WARN, "docker: %s", sw_error_msg(e));
		sw_error_free(e);
		free(x.id);
	}
	sw_buf_free(&x.wait_answer);
	pthread_mutex_lock(&p->lock);
	p->active--;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (r < 0)
		return sw_error_wrap(err, "docker: task '%s'", t->name ? t->name : t->argv[0]);
	return 0;
}

/* ---------------------------------------------------------------- sweep */

int sw_exec__docker_sweep(unsigned *removed, const char *docker_host, sw_error **err)
{
	if (removed)
		*removed = 0;
	sw_exec__dk dk;
	int r = sw_exec__dk_init(&dk, docker_host, err);
	if (r < 0)
		return r;
	cleanup_json json_t *list = NULL;
	r = containers_with_label(&list, &dk, SW_EXEC__DOCKER_LABEL_OWNER, err);
	size_t i;
	json_t *c;
	json_array_foreach (list, i, c) {
		const char *id = json_string_value(json_object_get(c, "Id"));
		const char *label = json_string_value(
		        json_object_get(json_object_get(c, "Labels"), SW_EXEC__DOCKER_LABEL_OWNER));
		if (!id || !label)
			continue;
		char *end = NULL;
		errno = 0;
		long pid = strtol(label, &end, 10);
		if (errno || end == label || *end != '-' || pid <= 0 || pid > INT32_MAX)
			continue; /* not a label slipway wrote */
		const char *s = end + 1;
		unsigned long long start = strtoull(s, &end, 10);
		if (errno || end == s || *end)
			continue;
		sw_exec__owner o = { .pid = (pid_t)pid, .start = start };
		if (sw_exec__owner_alive(&o))
			continue;
		SW_LOG(SW_LOG_DEBUG, "docker sweep: container %.12s was left by process %ld", id,
		       pid);
		int rr = container_remove(&dk, id, 0, false, err);
		if (rr < 0) {
			r = r < 0 ? r : rr;
			continue;
		}
		if (removed)
			(*removed)++;
	}
	sw_exec__dk_clear(&dk);
	if (r < 0)
		return sw_error_wrap(err, "docker sweep");
	return 0;
}
