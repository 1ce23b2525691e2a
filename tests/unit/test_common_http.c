/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the HTTP layer against a scripted HTTP/1.1 server that runs in a thread of the test
 * on 127.0.0.1 (port 0): it answers requests in order from a script (an answer, a connection
 * closed without one, a body that stalls), records every request it read (head and decoded
 * body), and keeps connections alive so reuse can be seen.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

int test_common_http_run(void);

/* ---------------------------------------------------------------- the scripted server */

enum step_kind {
	STEP_ANSWER, /* status, extra headers, body */
	STEP_CLOSE,  /* read the request, close without a word */
	STEP_STALL,  /* send the head and part of the body, then nothing */
};

struct step {
	enum step_kind kind;
	int status;
	const char *headers; /* extra header lines, each ending in "\r\n" */
	const char *body;
	size_t body_len; /* 0: strlen(body) */
};

struct rec {
	char *head; /* request line and headers */
	char *body;
	size_t body_len;
	int conn; /* which connection carried it */
};

#define MAX_CONNS 8
#define MAX_RECS 32

struct conn {
	int fd;
	int id;
	bool stalled;
	sw_buf in;
};

struct server {
	int lfd;
	int port;
	int stop[2];
	pthread_t thread;
	const struct step *steps;
	size_t nsteps;
	size_t next;
	struct rec recs[MAX_RECS];
	size_t nrecs;
	struct conn conns[MAX_CONNS];
	int nconns; /* connections accepted so far */
	int unexpected;
};

static bool send_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* Value of header `name` in a request head (not NUL-terminated at head_len). */
static const char *find_header(const char *head, size_t head_len, const char *name)
{
	size_t n = strlen(name);
	const char *end = head + head_len;
	for (const char *p = memchr(head, '\n', head_len); p && p + 1 < end;
	     p = memchr(p + 1, '\n', (size_t)(end - p - 1))) {
		const char *line = p + 1;
		if ((size_t)(end - line) > n && strncasecmp(line, name, n) == 0 && line[n] == ':')
			return line + n + 1 + strspn(line + n + 1, " ");
	}
	return NULL;
}

/* The server thread cannot use cmocka's asserts (they jump to the test's stack). */
static void must(bool ok)
{
	if (!ok)
		abort();
}

/* Decode a chunked body; -1 while incomplete, else the bytes consumed. */
static ssize_t dechunk(const char *p, size_t len, sw_buf *out)
{
	size_t i = 0;
	for (;;) {
		const char *eol = memmem(p + i, len - i, "\r\n", 2);
		if (!eol)
			return -1;
		size_t size = strtoul(p + i, NULL, 16);
		i = (size_t)(eol - p) + 2;
		if (size == 0) {
			if (len - i < 2)
				return -1;
			return (ssize_t)(i + 2); /* no trailers from curl */
		}
		if (len - i < size + 2)
			return -1;
		must(sw_buf_append(out, p + i, size, NULL) == 0);
		i += size + 2;
	}
}

static void close_conn(struct conn *c)
{
	close(c->fd);
	c->fd = -1;
	sw_buf_free(&c->in);
}

static void answer(struct server *s, struct conn *c, bool head_only)
{
	struct step dflt = { STEP_ANSWER, 500, NULL, "no more scripted answers", 0 };
	const struct step *st = &dflt;
	if (s->next < s->nsteps)
		st = &s->steps[s->next++];
	else
		s->unexpected++;
	if (st->kind == STEP_CLOSE) {
		close_conn(c);
		return;
	}
	size_t blen = st->body ? (st->body_len ? st->body_len : strlen(st->body)) : 0;
	size_t announced = st->kind == STEP_STALL ? blen + 1000 : blen;
	cleanup_free char *h = sw_xasprintf("HTTP/1.1 %d Scripted\r\nContent-Length: %zu\r\n%s\r\n",
	                                    st->status, announced, st->headers ? st->headers : "");
	bool ok = send_all(c->fd, h, strlen(h));
	if (ok && blen && !head_only)
		ok = send_all(c->fd, st->body, blen);
	if (!ok)
		close_conn(c);
	else if (st->kind == STEP_STALL)
		c->stalled = true;
}

/* Handle every complete request in the connection's input. */
static void serve_input(struct server *s, struct conn *c)
{
	while (c->fd >= 0 && !c->stalled && c->in.len) {
		char *end = memmem(c->in.data, c->in.len, "\r\n\r\n", 4);
		if (!end)
			return;
		size_t head_len = (size_t)(end - c->in.data) + 4;
		const char *cl = find_header(c->in.data, head_len, "Content-Length");
		const char *te = find_header(c->in.data, head_len, "Transfer-Encoding");
		sw_buf body = SW_BUF_INIT(0);
		size_t used;
		if (te && strncasecmp(te, "chunked", 7) == 0) {
			ssize_t n = dechunk(c->in.data + head_len, c->in.len - head_len, &body);
			if (n < 0) {
				sw_buf_free(&body);
				return;
			}
			used = head_len + (size_t)n;
		} else {
			size_t blen = cl ? strtoul(cl, NULL, 10) : 0;
			if (c->in.len - head_len < blen)
				return;
			must(sw_buf_append(&body, c->in.data + head_len, blen, NULL) == 0);
			used = head_len + blen;
		}
		if (s->nrecs < MAX_RECS) {
			struct rec *r = &s->recs[s->nrecs++];
			r->head = sw_xstrndup(c->in.data, head_len);
			r->body_len = body.len;
			r->body = sw_buf_steal(&body, NULL);
			r->conn = c->id;
		}
		sw_buf_free(&body);
		bool head_only = strncmp(c->in.data, "HEAD ", 5) == 0;
		memmove(c->in.data, c->in.data + used, c->in.len - used);
		c->in.len -= used;
		answer(s, c, head_only);
	}
}

static void *server_main(void *arg)
{
	struct server *s = arg;
	for (;;) {
		struct pollfd pfd[2 + MAX_CONNS];
		struct conn *who[2 + MAX_CONNS];
		nfds_t n = 0;
		pfd[n].fd = s->stop[0], pfd[n].events = POLLIN, who[n++] = NULL;
		pfd[n].fd = s->lfd, pfd[n].events = POLLIN, who[n++] = NULL;
		for (int i = 0; i < MAX_CONNS; i++) {
			if (s->conns[i].fd >= 0) {
				pfd[n].fd = s->conns[i].fd, pfd[n].events = POLLIN;
				who[n++] = &s->conns[i];
			}
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents & POLLIN) {
			int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
			struct conn *slot = NULL;
			for (int i = 0; fd >= 0 && i < MAX_CONNS && !slot; i++)
				if (s->conns[i].fd < 0)
					slot = &s->conns[i];
			if (slot) {
				slot->fd = fd;
				slot->id = ++s->nconns;
				slot->stalled = false;
				sw_buf_init(&slot->in, 0);
			} else if (fd >= 0) {
				close(fd);
			}
		}
		for (nfds_t i = 2; i < n; i++) {
			struct conn *c = who[i];
			if (!pfd[i].revents || c->fd < 0)
				continue;
			char buf[65536];
			ssize_t got = recv(c->fd, buf, sizeof(buf), 0);
			if (got <= 0) {
				close_conn(c);
				continue;
			}
			if (c->stalled)
				continue;
			must(sw_buf_append(&c->in, buf, (size_t)got, NULL) == 0);
			serve_input(s, c);
		}
	}
	return NULL;
}

static void server_start(struct server *s, const struct step *steps, size_t nsteps)
{
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < MAX_CONNS; i++)
		s->conns[i].fd = -1;
	s->steps = steps;
	s->nsteps = nsteps;
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->lfd, 16), 0);
	socklen_t alen = sizeof(a);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pipe2(s->stop, O_CLOEXEC), 0);
	assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(struct server *s)
{
	assert_int_equal(write(s->stop[1], "x", 1), 1);
	pthread_join(s->thread, NULL);
	close(s->stop[0]);
	close(s->stop[1]);
	close(s->lfd);
	for (int i = 0; i < MAX_CONNS; i++)
		if (s->conns[i].fd >= 0)
			close_conn(&s->conns[i]);
}

static void server_free(struct server *s)
{
	for (size_t i = 0; i < s->nrecs; i++) {
		free(s->recs[i].head);
		free(s->recs[i].body);
	}
}

static char *url_of(const struct server *s, const char *path)
{
	return sw_xasprintf("http://127.0.0.1:%d%s", s->port, path);
}

static sw_http_client *client(long base_ms, long max_ms, int retries)
{
	sw_http_opts o = { 0 };
	o.connect_timeout_ms = 2000;
	o.stall_timeout_s = 5;
	o.backoff_base_ms = base_ms;
	o.backoff_max_ms = max_ms;
	o.max_retries = retries;
	sw_http_client *c = NULL;
	sw_error *e = NULL;
	if (sw_http_client_new(&c, &o, &e) < 0)
		fail_msg("client: %s", sw_error_msg(e));
	return c;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The request line's method, e.g. "PUT". */
static bool rec_method_is(const struct rec *r, const char *m)
{
	size_t n = strlen(m);
	return strncmp(r->head, m, n) == 0 && r->head[n] == ' ';
}

/* ---------------------------------------------------------------- tests */

static void test_common__http_retry_5xx(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_ANSWER, 503, NULL, "busy", 0 },
		{ STEP_ANSWER, 502, NULL, NULL, 0 },
		{ STEP_ANSWER, 200, "X-Final: yes\r\n", "hello", 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(10, 50, 4);
	cleanup_free char *url = url_of(&s, "/v2/");
	sw_http_request req = { .url = url };
	sw_http_response resp;
	sw_error *e = NULL;
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	assert_int_equal(resp.status, 200);
	assert_string_equal(resp.body.data, "hello");
	assert_int_equal(resp.attempts, 3);
	assert_string_equal(resp.effective_url, url);
	assert_string_equal(sw_http_response_header(&resp, "x-final"), "yes");
	assert_int_equal(sw_http_client_requests(c), 3);
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	assert_int_equal(s.nrecs, 3);
	assert_int_equal(s.unexpected, 0);
	/* keep-alive: all three went over one connection */
	assert_int_equal(s.nconns, 1);
	assert_true(rec_method_is(&s.recs[2], "GET"));
	server_free(&s);
}

static void test_common__http_retry_after(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_ANSWER, 429, "Retry-After: 1\r\n", "slow down", 0 },
		{ STEP_ANSWER, 200, NULL, "ok", 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(1, 5000, 2);
	cleanup_free char *url = url_of(&s, "/limited");
	sw_http_request req = { .url = url };
	sw_http_response resp;
	sw_error *e = NULL;
	long t0 = now_ms();
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	long elapsed = now_ms() - t0;
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 2);
	assert_string_equal(resp.body.data, "ok");
	/* base backoff is 1 ms: only Retry-After explains a wait of a second */
	assert_true(elapsed >= 990);
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	server_free(&s);
}

static void test_common__http_retry_after_capped(void **state)
{
	(void)state;
	/* an hour of Retry-After is capped at backoff_max_ms (the test would time out) */
	static const struct step steps[] = {
		{ STEP_ANSWER, 503, "Retry-After: 3600\r\n", NULL, 0 },
		{ STEP_ANSWER, 200, NULL, "ok", 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(1, 50, 1);
	cleanup_free char *url = url_of(&s, "/");
	sw_http_request req = { .url = url };
	sw_http_response resp;
	sw_error *e = NULL;
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 2);
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	server_free(&s);
}

static void test_common__http_closed_connection(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_CLOSE, 0, NULL, NULL, 0 },
		{ STEP_ANSWER, 200, NULL, "second time lucky", 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(10, 50, 3);
	cleanup_free char *url = url_of(&s, "/blob");
	sw_http_request req = { .url = url };
	sw_http_response resp;
	sw_error *e = NULL;
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 2);
	assert_string_equal(resp.body.data, "second time lucky");
	assert_int_equal(sw_http_client_requests(c), 2);
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	assert_int_equal(s.nrecs, 2);
	assert_int_equal(s.nconns, 2);
	server_free(&s);
}

static void test_common__http_connect_refused(void **state)
{
	(void)state;
	/* a port nobody listens on */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t alen = sizeof(a);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	close(fd);
	cleanup_free char *url =
	        sw_xasprintf("http://user:pw@127.0.0.1:%d/v2/x/blobs/uploads/", ntohs(a.sin_port));

	sw_http_client *c = client(5, 20, 2);
	sw_http_request req = { .method = "POST", .url = url };
	sw_http_response resp;
	sw_error *e = NULL;
	int r = sw_http_do(&resp, c, &req, &e);
	assert_true(r < 0);
	assert_int_equal(resp.attempts, 3);
	assert_int_equal(sw_http_client_requests(c), 0);
	assert_int_equal(e->source, SW_ERRSRC_CURL);
	/* the message names the method and the URL, without the password */
	assert_non_null(strstr(e->msg, "POST http://user:***@127.0.0.1:"));
	assert_null(strstr(e->msg, ":pw@"));
	assert_non_null(strstr(e->msg, "after 3 attempts"));
	sw_error_free(e);
	sw_http_response_free(&resp);
	sw_http_client_free(c);
}

static void test_common__http_stall_timeout(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_STALL, 200, NULL, "the beginning of a long body", 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_opts o = { .connect_timeout_ms = 1000, .stall_timeout_s = 1, .max_retries = 0 };
	sw_http_client *c = NULL;
	sw_error *e = NULL;
	assert_int_equal(sw_http_client_new(&c, &o, &e), 0);
	cleanup_free char *url = url_of(&s, "/stall");
	sw_http_request req = { .url = url };
	sw_http_response resp;
	long t0 = now_ms();
	assert_int_equal(sw_http_do(&resp, c, &req, &e), SW_ERR_TIMEOUT);
	long elapsed = now_ms() - t0;
	assert_true(elapsed >= 1000);
	assert_int_equal(resp.attempts, 1);
	assert_non_null(strstr(e->msg, "GET http://127.0.0.1:"));
	assert_int_equal(e->source, SW_ERRSRC_CURL);
	sw_error_free(e);
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	assert_int_equal(s.nrecs, 1);
	server_free(&s);
}

static void test_common__http_no_retries(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_ANSWER, 503, NULL, "down", 0 },
		{ STEP_ANSWER, 503, NULL, "down", 0 },
		{ STEP_ANSWER, 200, NULL, "never reached", 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	cleanup_free char *url = url_of(&s, "/");
	sw_http_response resp;
	sw_error *e = NULL;

	/* max_retries = 0: one attempt; the 503 is returned to the caller, with its body */
	sw_http_client *c = client(1, 10, 0);
	sw_http_request req = { .url = url };
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	assert_int_equal(resp.status, 503);
	assert_int_equal(resp.attempts, 1);
	assert_string_equal(resp.body.data, "down");
	sw_http_response_free(&resp);
	sw_http_client_free(c);

	/* no_retry on a client that would retry: one attempt too */
	c = client(1, 10, 4);
	sw_http_request once = { .method = "POST", .url = url, .no_retry = true };
	assert_int_equal(sw_http_do(&resp, c, &once, &e), 0);
	assert_int_equal(resp.status, 503);
	assert_int_equal(resp.attempts, 1);
	sw_http_response_free(&resp);
	sw_http_client_free(c);

	server_stop(&s);
	assert_int_equal(s.nrecs, 2);
	assert_int_equal(s.next, 2);
	server_free(&s);
}

struct stream {
	const char *data;
	size_t len;
	size_t off;
	size_t chunk; /* bytes per read call */
	int rewinds;
	bool can_rewind;
};

static ssize_t stream_read(void *buf, size_t len, void *payload)
{
	struct stream *st = payload;
	size_t n = st->len - st->off;
	if (n > len)
		n = len;
	if (n > st->chunk)
		n = st->chunk;
	memcpy(buf, st->data + st->off, n);
	st->off += n;
	return (ssize_t)n;
}

static int stream_rewind(void *payload)
{
	struct stream *st = payload;
	if (!st->can_rewind)
		return -1;
	st->rewinds++;
	st->off = 0;
	return 0;
}

static char *make_payload(size_t len)
{
	char *p = sw_xmalloc(len + 1);
	for (size_t i = 0; i < len; i++)
		p[i] = (char)('a' + (i * 7 + i / 13) % 26);
	p[len] = '\0';
	return p;
}

static void test_common__http_put_stream_rewind(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_CLOSE, 0, NULL, NULL, 0 },
		{ STEP_ANSWER, 500, NULL, "oops", 0 },
		{ STEP_ANSWER, 201, "Location: /done\r\n", NULL, 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(5, 20, 3);
	cleanup_free char *url = url_of(&s, "/v2/app/blobs/uploads/1?digest=sha256:x");
	size_t len = 300000;
	cleanup_free char *payload = make_payload(len);
	struct stream st = { payload, len, 0, 7001, 0, true };
	const char *const headers[] = { "Content-Type: application/octet-stream", NULL };
	sw_http_request req = {
		.method = "PUT",
		.url = url,
		.headers = headers,
		.read_cb = stream_read,
		.rewind_cb = stream_rewind,
		.read_payload = &st,
		.body_size = (int64_t)len,
	};
	sw_http_response resp;
	sw_error *e = NULL;
	if (sw_http_do(&resp, c, &req, &e) < 0)
		fail_msg("%s", sw_error_msg(e));
	assert_int_equal(resp.status, 201);
	assert_int_equal(resp.attempts, 3);
	assert_true(st.rewinds >= 2);
	assert_string_equal(sw_http_response_header(&resp, "Location"), "/done");
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	/* every attempt carried the whole body */
	assert_int_equal(s.nrecs, 3);
	for (size_t i = 0; i < s.nrecs; i++) {
		assert_true(rec_method_is(&s.recs[i], "PUT"));
		assert_int_equal(s.recs[i].body_len, len);
		assert_memory_equal(s.recs[i].body, payload, len);
		assert_non_null(strcasestr(s.recs[i].head, "Content-Length: 300000\r\n"));
		assert_null(strcasestr(s.recs[i].head, "Expect:"));
		assert_non_null(
		        strcasestr(s.recs[i].head, "Content-Type: application/octet-stream\r\n"));
	}
	server_free(&s);
}

static void test_common__http_stream_without_rewind(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_ANSWER, 503, NULL, NULL, 0 },
		{ STEP_ANSWER, 503, NULL, NULL, 0 },
		{ STEP_ANSWER, 201, NULL, NULL, 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(1, 5, 3);
	cleanup_free char *url = url_of(&s, "/upload");
	cleanup_free char *payload = make_payload(1000);
	sw_http_response resp;
	sw_error *e = NULL;

	/* no rewind callback: a streamed body is sent once */
	struct stream st = { payload, 1000, 0, 1000, 0, false };
	sw_http_request req = { .method = "PATCH",
		                .url = url,
		                .read_cb = stream_read,
		                .read_payload = &st,
		                .body_size = 1000 };
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	assert_int_equal(resp.status, 503);
	assert_int_equal(resp.attempts, 1);
	sw_http_response_free(&resp);

	/* a rewind callback that fails stops the retries too */
	struct stream st2 = { payload, 1000, 0, 1000, 0, false };
	req.read_payload = &st2;
	req.rewind_cb = stream_rewind;
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	assert_int_equal(resp.status, 503);
	assert_int_equal(resp.attempts, 1);
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	assert_int_equal(s.nrecs, 2);
	assert_true(rec_method_is(&s.recs[0], "PATCH"));
	assert_int_equal(s.recs[0].body_len, 1000);
	server_free(&s);
}

static void test_common__http_chunked_upload(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_ANSWER, 502, NULL, NULL, 0 },
		{ STEP_ANSWER, 202, NULL, NULL, 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(1, 5, 2);
	cleanup_free char *url = url_of(&s, "/chunked");
	size_t len = 50000;
	cleanup_free char *payload = make_payload(len);
	struct stream st = { payload, len, 0, 4096, 0, true };
	sw_http_request req = { .method = "PATCH",
		                .url = url,
		                .read_cb = stream_read,
		                .rewind_cb = stream_rewind,
		                .read_payload = &st,
		                .body_size = -1 };
	sw_http_response resp;
	sw_error *e = NULL;
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	assert_int_equal(resp.status, 202);
	assert_int_equal(resp.attempts, 2);
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	assert_int_equal(s.nrecs, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_non_null(strcasestr(s.recs[i].head, "Transfer-Encoding: chunked"));
		assert_null(strcasestr(s.recs[i].head, "Expect:"));
		assert_int_equal(s.recs[i].body_len, len);
		assert_memory_equal(s.recs[i].body, payload, len);
	}
	server_free(&s);
}

static void test_common__http_methods(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_ANSWER, 201, NULL, NULL, 0 }, /* PUT, empty body */
		{ STEP_ANSWER, 200, "Docker-Content-Digest: sha256:1\r\n", "12345", 0 }, /* HEAD */
		{ STEP_ANSWER, 202, NULL, NULL, 0 }, /* POST with a body */
		{ STEP_ANSWER, 202, NULL, NULL, 0 }, /* empty POST */
		{ STEP_ANSWER, 202, NULL, NULL, 0 }, /* DELETE */
		{ STEP_ANSWER, 201, NULL, NULL, 0 }, /* PUT from memory */
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(1, 5, 0);
	cleanup_free char *url = url_of(&s, "/thing");
	sw_http_response resp;
	sw_error *e = NULL;

	sw_http_request put = { .method = "PUT", .url = url };
	assert_int_equal(sw_http_do(&resp, c, &put, &e), 0);
	assert_int_equal(resp.status, 201);
	sw_http_response_free(&resp);

	sw_http_request head = { .method = "HEAD", .url = url };
	assert_int_equal(sw_http_do(&resp, c, &head, &e), 0);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.body.len, 0);
	assert_string_equal(sw_http_response_header(&resp, "docker-content-digest"), "sha256:1");
	assert_string_equal(sw_http_response_header(&resp, "Content-Length"), "5");
	assert_null(sw_http_response_header(&resp, "Content"));
	sw_http_response_free(&resp);

	const char json[] = "{\"a\":1}";
	const char *const hdrs[] = { "Content-Type: application/json", NULL };
	sw_http_request post = {
		.method = "POST", .url = url, .headers = hdrs, .body = json, .body_len = 7
	};
	assert_int_equal(sw_http_do(&resp, c, &post, &e), 0);
	sw_http_response_free(&resp);
	sw_http_request post0 = { .method = "POST", .url = url };
	assert_int_equal(sw_http_do(&resp, c, &post0, &e), 0);
	sw_http_response_free(&resp);

	sw_http_request del = { .method = "DELETE", .url = url };
	assert_int_equal(sw_http_do(&resp, c, &del, &e), 0);
	assert_int_equal(resp.status, 202);
	sw_http_response_free(&resp);

	sw_http_request putm = { .method = "PUT", .url = url, .body = "manifest", .body_len = 8 };
	assert_int_equal(sw_http_do(&resp, c, &putm, &e), 0);
	sw_http_response_free(&resp);
	assert_int_equal(sw_http_client_requests(c), 6);
	sw_http_client_free(c);
	server_stop(&s);

	assert_int_equal(s.nrecs, 6);
	assert_int_equal(s.nconns, 1);
	const struct rec *r = s.recs;
	assert_true(rec_method_is(&r[0], "PUT"));
	assert_non_null(strcasestr(r[0].head, "Content-Length: 0\r\n"));
	assert_null(strcasestr(r[0].head, "Expect:"));
	assert_null(strcasestr(r[0].head, "Transfer-Encoding"));
	assert_true(rec_method_is(&r[1], "HEAD"));
	assert_true(rec_method_is(&r[2], "POST"));
	assert_int_equal(r[2].body_len, 7);
	assert_memory_equal(r[2].body, json, 7);
	assert_non_null(strcasestr(r[2].head, "Content-Type: application/json\r\n"));
	assert_null(strcasestr(r[2].head, "x-www-form-urlencoded"));
	assert_true(rec_method_is(&r[3], "POST"));
	assert_non_null(strcasestr(r[3].head, "Content-Length: 0\r\n"));
	assert_null(strcasestr(r[3].head, "Content-Type"));
	assert_true(rec_method_is(&r[4], "DELETE"));
	assert_int_equal(r[4].body_len, 0);
	assert_true(rec_method_is(&r[5], "PUT"));
	assert_int_equal(r[5].body_len, 8);
	assert_memory_equal(r[5].body, "manifest", 8);
	assert_non_null(strcasestr(r[5].head, "User-Agent: slipway/"));
	server_free(&s);
}

static void test_common__http_body_cap(void **state)
{
	(void)state;
	static char big[4096];
	memset(big, 'x', sizeof(big));
	static const struct step steps[] = {
		{ STEP_ANSWER, 200, NULL, big, sizeof(big) },
		{ STEP_ANSWER, 200, NULL, big, sizeof(big) },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(1, 5, 3);
	cleanup_free char *url = url_of(&s, "/big");
	sw_http_request req = { .url = url, .max_body = 1000 };
	sw_http_response resp;
	sw_error *e = NULL;
	assert_int_equal(sw_http_do(&resp, c, &req, &e), SW_ERR_INVALID);
	assert_non_null(strstr(e->msg, "GET http://127.0.0.1:"));
	assert_non_null(strstr(e->msg, "exceeds the limit of 1000 bytes"));
	assert_int_equal(resp.attempts, 1); /* not retried */
	sw_error_clear(&e);
	sw_http_response_free(&resp);

	req.max_body = sizeof(big);
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	assert_int_equal(resp.body.len, sizeof(big));
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	server_free(&s);
}

static void test_common__http_final_headers(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_ANSWER, 503, "X-First: 1\r\n", "retry me", 0 },
		{ STEP_ANSWER, 307, "Location: /moved\r\nX-Redirect: 1\r\n", "see there", 0 },
		{ STEP_ANSWER, 200, "X-Last: 1\r\n", "here", 0 },
		{ STEP_ANSWER, 302, "Location: /elsewhere\r\n", NULL, 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(1, 5, 2);
	cleanup_free char *url = url_of(&s, "/start");
	cleanup_free char *moved = url_of(&s, "/moved");
	sw_http_request req = { .url = url, .follow_redirects = true };
	sw_http_response resp;
	sw_error *e = NULL;
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 2);
	assert_string_equal(resp.body.data, "here");
	assert_string_equal(resp.effective_url, moved);
	assert_non_null(sw_http_response_header(&resp, "X-Last"));
	assert_null(sw_http_response_header(&resp, "X-First"));
	assert_null(sw_http_response_header(&resp, "X-Redirect"));
	assert_int_equal(sw_http_client_requests(c), 3);
	sw_http_response_free(&resp);

	/* without follow_redirects the 302 is the answer */
	sw_http_request noredir = { .url = url };
	assert_int_equal(sw_http_do(&resp, c, &noredir, &e), 0);
	assert_int_equal(resp.status, 302);
	assert_string_equal(sw_http_response_header(&resp, "location"), "/elsewhere");
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	assert_int_equal(s.nrecs, 4);
	assert_non_null(strstr(s.recs[2].head, "GET /moved "));
	server_free(&s);
}

static int collect(const void *data, size_t len, void *payload)
{
	return sw_buf_append(payload, data, len, NULL);
}

static int refuse(const void *data, size_t len, void *payload)
{
	(void)data, (void)len, (void)payload;
	return SW_ERR_CANCELLED;
}

static void test_common__http_write_cb(void **state)
{
	(void)state;
	static const struct step steps[] = {
		{ STEP_ANSWER, 500, NULL, "{\"errors\":[]}", 0 },
		{ STEP_ANSWER, 200, NULL, "layer bytes", 0 },
		{ STEP_ANSWER, 200, NULL, "refused", 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_client *c = client(1, 5, 2);
	cleanup_free char *url = url_of(&s, "/blob");
	sw_buf got = SW_BUF_INIT(0);
	sw_http_request req = { .url = url, .write_cb = collect, .write_payload = &got };
	sw_http_response resp;
	sw_error *e = NULL;
	assert_int_equal(sw_http_do(&resp, c, &req, &e), 0);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 2);
	/* only the final answer's body reached the callback */
	assert_string_equal(got.data, "layer bytes");
	assert_int_equal(resp.body.len, 0);
	sw_http_response_free(&resp);
	sw_buf_free(&got);

	/* a callback error aborts with its code, without retries */
	sw_http_request req2 = { .url = url, .write_cb = refuse };
	assert_int_equal(sw_http_do(&resp, c, &req2, &e), SW_ERR_CANCELLED);
	assert_int_equal(resp.attempts, 1);
	assert_non_null(strstr(e->msg, "GET http://127.0.0.1:"));
	sw_error_free(e);
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	server_free(&s);
}

static void test_common__http_tls_settings(void **state)
{
	(void)state;
	/* an https URL against a plain-HTTP server never falls back to plain text */
	static const struct step steps[] = {
		{ STEP_ANSWER, 200, NULL, "plain", 0 },
	};
	struct server s;
	server_start(&s, steps, SW_ARRAY_SIZE(steps));
	sw_http_opts o = { .connect_timeout_ms = 1000, .ca_file = "/nonexistent/ca.pem" };
	sw_http_client *c = NULL;
	sw_error *e = NULL;
	assert_int_equal(sw_http_client_new(&c, &o, &e), 0);
	cleanup_free char *url = sw_xasprintf("https://127.0.0.1:%d/", s.port);
	sw_http_request req = { .url = url };
	sw_http_response resp;
	assert_true(sw_http_do(&resp, c, &req, &e) < 0);
	assert_int_equal(resp.status, 0);
	assert_int_equal(e->source, SW_ERRSRC_CURL);
	assert_non_null(strstr(e->msg, "GET https://127.0.0.1:"));
	sw_error_free(e);
	e = NULL;
	sw_http_response_free(&resp);

	/* other protocols are refused */
	sw_http_request file = { .url = "file:///etc/passwd" };
	assert_true(sw_http_do(&resp, c, &file, &e) < 0);
	assert_int_equal(resp.body.len, 0);
	sw_error_free(e);
	sw_http_response_free(&resp);
	sw_http_client_free(c);
	server_stop(&s);
	server_free(&s);
}

static void test_common__http_retry_after_parse(void **state)
{
	(void)state;
	assert_int_equal(sw_http_retry_after_ms(NULL), -1);
	assert_int_equal(sw_http_retry_after_ms(""), -1);
	assert_int_equal(sw_http_retry_after_ms("garbage"), -1);
	assert_int_equal(sw_http_retry_after_ms("0"), 0);
	assert_int_equal(sw_http_retry_after_ms("5"), 5000);
	assert_int_equal(sw_http_retry_after_ms(" 120 "), 120000);
	/* an HTTP date in the past means now; one in the future, the time until then */
	assert_int_equal(sw_http_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), 0);
	time_t later = time(NULL) + 100;
	struct tm tm;
	gmtime_r(&later, &tm);
	char date[64];
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	long ms = sw_http_retry_after_ms(date);
	assert_true(ms > 90000);
	assert_true(ms <= 100000);
}

static void test_common__http_url_escape(void **state)
{
	(void)state;
	cleanup_free char *a = sw_url_escape("repository:app/web:pull,push");
	assert_string_equal(a, "repository%3Aapp%2Fweb%3Apull%2Cpush");
	cleanup_free char *b = sw_url_escape("a b&c=d~e_f.g-h\xc3\xa9");
	assert_string_equal(b, "a%20b%26c%3Dd~e_f.g-h%C3%A9");
	cleanup_free char *empty = sw_url_escape("");
	assert_string_equal(empty, "");
}

int test_common_http_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_common__http_retry_5xx),
		cmocka_unit_test(test_common__http_retry_after),
		cmocka_unit_test(test_common__http_retry_after_capped),
		cmocka_unit_test(test_common__http_closed_connection),
		cmocka_unit_test(test_common__http_connect_refused),
		cmocka_unit_test(test_common__http_stall_timeout),
		cmocka_unit_test(test_common__http_no_retries),
		cmocka_unit_test(test_common__http_put_stream_rewind),
		cmocka_unit_test(test_common__http_stream_without_rewind),
		cmocka_unit_test(test_common__http_chunked_upload),
		cmocka_unit_test(test_common__http_methods),
		cmocka_unit_test(test_common__http_body_cap),
		cmocka_unit_test(test_common__http_final_headers),
		cmocka_unit_test(test_common__http_write_cb),
		cmocka_unit_test(test_common__http_tls_settings),
		cmocka_unit_test(test_common__http_retry_after_parse),
		cmocka_unit_test(test_common__http_url_escape),
	};
	return cmocka_run_group_tests_name("common_http", tests, NULL, NULL);
}
