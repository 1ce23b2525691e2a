/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common: the pieces every slipway module stands on. The single error type (sw_error) with its
 * codes and sources, leveled logging with pluggable sinks, allocation that aborts on exhaustion,
 * cleanup attributes for locals, growable buffers with a hard size cap, filesystem helpers
 * (atomic write with fsync, recursive create and remove, path resolution that cannot leave a
 * root) and one HTTP layer over libcurl with retries, backoff and timeouts.
 */
#ifndef SW_COMMON_H
#define SW_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#define SW_WUR __attribute__((warn_unused_result))
#define SW_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ---------------------------------------------------------------- errors */

/* The few codes a caller branches on; everything else is SW_ERR_GENERIC. Always negative. */
typedef enum {
	SW_OK = 0,
	SW_ERR_GENERIC = -1,
	SW_ERR_NOT_FOUND = -2,
	SW_ERR_INVALID = -3,
	SW_ERR_TIMEOUT = -4,
	SW_ERR_CANCELLED = -5,
	SW_ERR_AUTH = -6,
	SW_ERR_CONFLICT = -7,
} sw_error_code;

/* Where the underlying error came from; `sys` holds errno or that library's own code. */
typedef enum {
	SW_ERRSRC_NONE = 0,
	SW_ERRSRC_OS,
	SW_ERRSRC_GIT,
	SW_ERRSRC_CURL,
	SW_ERRSRC_JSON,
	SW_ERRSRC_ARCHIVE,
	SW_ERRSRC_TLS,
	SW_ERRSRC_YAML,
	SW_ERRSRC_HTTP,
} sw_error_source;

typedef struct sw_error {
	int code;               /* an sw_error_code */
	sw_error_source source; /* SW_ERRSRC_* */
	int sys;                /* errno, library code, or HTTP status */
	char *msg;              /* owned, never NULL */
} sw_error;

/*
 * Fill *err (when err is not NULL and *err is NULL; an existing error is kept, the first cause
 * wins) and return `code`, so callers write `return sw_error_set(err, SW_ERR_INVALID, ...)`.
 */
int sw_error_set(sw_error **err, int code, const char *fmt, ...) SW_PRINTF(3, 4);
/* Like sw_error_set with source OS: the message gets ": strerror(errnum)" appended. */
int sw_error_os(sw_error **err, int errnum, const char *fmt, ...) SW_PRINTF(3, 4);
/* An error coming from a library (source, its own code) with a formatted message. */
int sw_error_lib(sw_error **err, int code, sw_error_source source, int sys, const char *fmt, ...)
        SW_PRINTF(5, 6);
/* Prefix context: "ctx: old message". Returns the existing code (SW_ERR_GENERIC if none). */
int sw_error_wrap(sw_error **err, const char *fmt, ...) SW_PRINTF(2, 3);
/* Code of an error, SW_OK for NULL. */
int sw_error_code_of(const sw_error *err);
const char *sw_error_msg(const sw_error *err);
void sw_error_free(sw_error *err);
/* Free *err and set it to NULL (for retry loops that swallow an error). */
void sw_error_clear(sw_error **err);

/* ---------------------------------------------------------------- memory */

void *sw_xmalloc(size_t n);
void *sw_xcalloc(size_t nmemb, size_t n);
void *sw_xrealloc(void *p, size_t n);
char *sw_xstrdup(const char *s);
char *sw_xstrndup(const char *s, size_t n);
char *sw_xasprintf(const char *fmt, ...) SW_PRINTF(1, 2);
char *sw_xvasprintf(const char *fmt, va_list ap) SW_PRINTF(1, 0);

/* NULL-terminated string vectors. */
size_t sw_strv_len(char *const *v);
void sw_strv_free(char **v);
char **sw_strv_dup(char *const *v);
/* Append a copy of s to *v (which may be NULL). */
void sw_strv_push(char ***v, const char *s);

void sw_cleanup_freep(void *p);
void sw_cleanup_closep(int *fd);
void sw_cleanup_filep(FILE **f);
void sw_cleanup_errorp(sw_error **e);
void sw_cleanup_strvp(char ***v);

#define cleanup_free __attribute__((cleanup(sw_cleanup_freep)))
#define cleanup_close __attribute__((cleanup(sw_cleanup_closep)))
#define cleanup_file __attribute__((cleanup(sw_cleanup_filep)))
#define cleanup_error __attribute__((cleanup(sw_cleanup_errorp)))
#define cleanup_strv __attribute__((cleanup(sw_cleanup_strvp)))

static inline void *sw_steal_pointer(void *pp)
{
	void **p = (void **)pp;
	void *r = *p;
	*p = NULL;
	return r;
}
#define steal_pointer(pp) sw_steal_pointer(pp)

static inline int steal_fd(int *fd)
{
	int r = *fd;
	*fd = -1;
	return r;
}

#define SW_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------- logging */

typedef enum {
	SW_LOG_ERROR = 0,
	SW_LOG_WARN = 1,
	SW_LOG_INFO = 2,
	SW_LOG_DEBUG = 3,
	SW_LOG_TRACE = 4,
} sw_log_level;

/* A sink receives one formatted, already-redacted message (no trailing newline). */
typedef void (*sw_log_sink)(sw_log_level level, const char *file, int line, const char *msg,
                            void *payload);

extern sw_log_level sw_log_current_level;

#define SW_LOG(level, ...)                                                      \
	do {                                                                    \
		if ((level) <= sw_log_current_level)                            \
			sw_log_write((level), __FILE__, __LINE__, __VA_ARGS__); \
	} while (0)

void sw_log_write(sw_log_level level, const char *file, int line, const char *fmt, ...)
        SW_PRINTF(4, 5);
void sw_log_set_level(sw_log_level level);
/* Parse "error|warn|info|debug|trace"; -1 when unknown. */
int sw_log_level_parse(const char *s);
/* Replace the sink; NULL restores the stderr text sink. */
void sw_log_set_sink(sw_log_sink sink, void *payload);
/* Built-in sinks: "slipway: level: msg" text on stderr, and one JSON object per line on stderr. */
void sw_log_sink_text(sw_log_level level, const char *file, int line, const char *msg,
                      void *payload);
void sw_log_sink_json(sw_log_level level, const char *file, int line, const char *msg,
                      void *payload);
/*
 * Redact credentials in a string: the password of "scheme://user:pass@host" URLs and the
 * value of "Authorization:" headers. Returns a new string the caller frees.
 */
char *sw_redact(const char *s);

/* The candidate nearest to `word` for a "did you mean" hint: equal ignoring case, else at most
 * 1 edit away (words of 3 characters or less) or 2 (longer ones; a swap of two neighbours is
 * one edit); NULL when none is that close. */
const char *sw_str_nearest(const char *word, const char *const *cands, size_t n);

/* Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot (with the pid,
 * it tells a process from a later one that reuses its pid); -errno when unreadable (-ENOENT:
 * no such process). */
int sw_proc_starttime(unsigned long long *out, pid_t pid);

/* ---------------------------------------------------------------- buffers */

/* A growable byte buffer with a hard cap (`max`, 0 = SW_BUF_DEFAULT_MAX). data is NUL-terminated.
 */
typedef struct sw_buf {
	char *data;
	size_t len;
	size_t cap;
	size_t max;
} sw_buf;

#define SW_BUF_DEFAULT_MAX ((size_t)64 << 20)
#define SW_BUF_INIT(maxbytes)          \
	{                              \
		NULL, 0, 0, (maxbytes) \
	}

void sw_buf_init(sw_buf *b, size_t max);
/* Fails with SW_ERR_INVALID ("exceeds N bytes") when the cap would be passed. */
int sw_buf_append(sw_buf *b, const void *data, size_t len, sw_error **err) SW_WUR;
int sw_buf_puts(sw_buf *b, const char *s, sw_error **err) SW_WUR;
int sw_buf_printf(sw_buf *b, sw_error **err, const char *fmt, ...) SW_PRINTF(3, 4) SW_WUR;
void sw_buf_reset(sw_buf *b);
/* Hand the data out (caller frees; never NULL) and leave the buffer empty. */
char *sw_buf_steal(sw_buf *b, size_t *len_out);
void sw_buf_free(sw_buf *b);

/* ---------------------------------------------------------------- filesystem */

/*
 * Write `len` bytes to `path` atomically: a temporary file in the same folder, fsync, rename,
 * then fsync of the folder. A crash leaves either the old or the new file, never a torn one.
 */
int sw_fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                       sw_error **err) SW_WUR;
/* Same, relative to an open folder fd. */
int sw_fs_write_atomic_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
                          sw_error **err) SW_WUR;
/* Read a whole file, failing with SW_ERR_INVALID past `max` bytes. *out is NUL-terminated. */
int sw_fs_read_file(char **out, size_t *out_len, const char *path, size_t max,
                    sw_error **err) SW_WUR;
int sw_fs_mkdir_p(const char *path, mode_t mode, sw_error **err) SW_WUR;
/* Remove a tree without following symlinks; a missing path is not an error. */
int sw_fs_rm_rf(const char *path, sw_error **err) SW_WUR;
int sw_fs_fsync_dir(const char *path, sw_error **err) SW_WUR;
/* Create a fresh folder "<parent>/<prefix>XXXXXX"; *out is its path (caller frees). */
int sw_fs_mkdtemp(char **out, const char *parent, const char *prefix, sw_error **err) SW_WUR;
/* The folder for temporary files: $TMPDIR or /tmp. */
const char *sw_fs_tmpdir(void);
/* Write all bytes, retrying on EINTR and short writes. */
int sw_fs_write_all(int fd, const void *data, size_t len, sw_error **err) SW_WUR;
/* Mount points at or under `prefix` from /proc/self/mountinfo, deepest first (NULL-terminated;
 * caller frees with sw_strv_free). */
int sw_fs_mounts_under(char ***out, const char *prefix, sw_error **err) SW_WUR;
/* Whether a mount point lies at or under `path` (true also when mountinfo cannot be read). */
bool sw_fs_has_mounts_under(const char *path);
/* Decode the octal escapes (\040 ...) of a mountinfo field in place. */
void sw_fs_mountinfo_unescape(char *s);

/*
 * Resolve `path` as if `root` were "/": ".." never climbs above the root, and symlinks found on
 * the way (absolute or relative) are followed inside the root, like chroot would. The result is
 * a root-relative clean path without leading "/" ("" for the root itself) that the caller frees.
 * With SW_PATH_NOFOLLOW the last component is not followed when it is a symlink. Fails with
 * SW_ERR_INVALID after 40 symlinks.
 */
#define SW_PATH_NOFOLLOW 1
int sw_path_resolve_in_root(char **out, int rootfd, const char *path, int flags,
                            sw_error **err) SW_WUR;
/*
 * Open `path` inside the folder `rootfd` with the same rules (openat2 RESOLVE_IN_ROOT where the
 * kernel has it). Returns the new fd in *out_fd.
 */
int sw_path_open_in_root(int *out_fd, int rootfd, const char *path, int oflags, mode_t mode,
                         sw_error **err) SW_WUR;
/*
 * mkdir -p of `path` inside the folder `rootfd`, each component resolved with
 * sw_path_open_in_root (symlinks followed inside the root, never out of it). Folders it creates
 * get `mode` and, with chown_new, the owner uid:gid. Errors name the component.
 */
int sw_path_mkdir_in_root(int rootfd, const char *path, mode_t mode, bool chown_new, uid_t uid,
                          gid_t gid, sw_error **err) SW_WUR;
/* Lexically clean a path: collapse "//", ".", and "..", keep a leading "/". Caller frees. */
char *sw_path_clean(const char *path);
/* Join two path parts with one "/". Caller frees. */
char *sw_path_join(const char *a, const char *b);

/* ---------------------------------------------------------------- HTTP */

typedef struct sw_http_opts {
	long connect_timeout_ms; /* 0: 10000 */
	long stall_timeout_s;    /* abort when under 1 byte/s for this long; 0: 30 */
	int max_retries;         /* retries after the first attempt; 0: none, -1: default 4 */
	long backoff_base_ms;    /* first backoff; 0: 200. Doubles each try, with jitter */
	long backoff_max_ms;     /* cap of one backoff and of Retry-After; 0: 10000 */
	const char *ca_file;     /* extra CA bundle (verification is always on) */
	const char *client_cert; /* PEM client certificate */
	const char *client_key;  /* PEM client key */
	const char *user_agent;  /* default "slipway/VERSION" */
} sw_http_opts;

typedef struct sw_http_client sw_http_client;

/* Called with response body bytes; return 0 to go on, negative to abort with that error. */
typedef int (*sw_http_write_cb)(const void *data, size_t len, void *payload);
/* Fill buf with up to len request-body bytes; return the count (0 at the end), <0 on error. */
typedef ssize_t (*sw_http_read_cb)(void *buf, size_t len, void *payload);
/* Rewind a streaming body for a retry; return 0 on success, <0 when it cannot rewind. */
typedef int (*sw_http_rewind_cb)(void *payload);

typedef struct sw_http_request {
	const char *method; /* "GET" when NULL */
	const char *url;
	const char *const *headers; /* "Name: value" strings, NULL-terminated; may be NULL */
	const void *body;           /* a body in memory ... */
	size_t body_len;
	sw_http_read_cb read_cb; /* ... or a streamed one of body_size bytes (-1: unknown) */
	sw_http_rewind_cb rewind_cb;
	void *read_payload;
	int64_t body_size;
	sw_http_write_cb write_cb; /* stream the response body; else it goes to response.body */
	void *write_payload;
	size_t max_body; /* cap of response.body; 0: SW_BUF_DEFAULT_MAX */
	bool no_retry;   /* one attempt only (non-idempotent requests) */
	bool follow_redirects;
} sw_http_request;

typedef struct sw_http_response {
	long status;
	sw_buf body;
	char **headers; /* "Name: value" of the final response, NULL-terminated */
	char *effective_url;
	int attempts; /* how many requests were sent */
} sw_http_response;

int sw_http_client_new(sw_http_client **out, const sw_http_opts *opts, sw_error **err) SW_WUR;
void sw_http_client_free(sw_http_client *c);
/*
 * Send one request, retrying connection errors, 408, 429 and 5xx with exponential backoff and
 * jitter (honouring Retry-After up to backoff_max_ms) unless no_retry is set or the body cannot
 * be rewound. Returns 0 when an HTTP answer came (any status: see response.status), a negative
 * code when none did (SW_ERR_TIMEOUT for timeouts); when the transfer was cut after the status
 * line, response.status and headers are still those of the cut answer (else status is 0). The
 * response is the caller's to sw_http_response_free.
 */
int sw_http_do(sw_http_response *out, sw_http_client *c, const sw_http_request *req,
               sw_error **err) SW_WUR;
/* The value of the first header `name` (case-insensitive) or NULL; points into the response. */
const char *sw_http_response_header(const sw_http_response *r, const char *name);
void sw_http_response_free(sw_http_response *r);
/*
 * Sleep as the client does between two attempts: `retry_after_ms` when >= 0 (capped at
 * backoff_max_ms), else the exponential backoff with full jitter for attempt number `attempt`
 * (1 for the first retry). For callers that retry at a higher level (a whole upload session).
 */
void sw_http_client_backoff(sw_http_client *c, int attempt, long retry_after_ms);
/* Total requests sent by this client (for tests and stats). */
uint64_t sw_http_client_requests(const sw_http_client *c);

/* Percent-encode a query value. Caller frees. */
char *sw_url_escape(const char *s);
/* Parse Retry-After (seconds or HTTP date) into milliseconds from now; -1 when absent/bad. */
long sw_http_retry_after_ms(const char *value);

#endif
