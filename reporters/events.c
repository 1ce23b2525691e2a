/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON-lines event log of `slipway run --events FILE`: one compact JSON object per line,
 * "time" (RFC 3339, UTC, milliseconds) and "type" first, then the caller's fields. Each line is
 * formatted outside the lock and written whole with a single write(2) under a mutex, straight to
 * the file (no stdio buffering), so job threads never interleave and a reader following the
 * file sees complete lines only. The path "-" means standard output. A NULL log accepts every
 * call and does nothing.
 */
#include "reporters/reporters.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

struct sw_events {
	int fd;
	bool own_fd;
	pthread_mutex_t lock;
};

int sw_events_open(sw_events **out, const char *path, sw_error **err)
{
	*out = NULL;
	int fd;
	bool own = true;
	if (strcmp(path, "-") == 0) {
		fd = STDOUT_FILENO;
		own = false;
	} else {
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
		if (fd < 0)
			return sw_error_os(err, errno, "open events file '%s'", path);
	}
	sw_events *ev = sw_xcalloc(1, sizeof(*ev));
	ev->fd = fd;
	ev->own_fd = own;
	pthread_mutex_init(&ev->lock, NULL);
	*out = ev;
	return 0;
}

/* "2024-05-01T12:34:56.789Z" */
static void rfc3339_now(char out[32])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void sw_events_emit(sw_events *ev, const char *type, json_t *fields)
{
	if (!ev) {
		json_decref(fields);
		return;
	}
	char when[32];
	rfc3339_now(when);
	json_t *o = json_object();
	json_object_set_new(o, "time", json_string(when));
	json_object_set_new(o, "type", json_string(type ? type : "event"));
	if (json_is_object(fields))
		json_object_update_missing(o, fields);
	else if (fields)
		json_object_set(o, "data", fields);
	json_decref(fields);
	char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(o);
	if (!line)
		return;
	size_t len = strlen(line);
	line = sw_xrealloc(line, len + 2);
	line[len++] = '\n';
	line[len] = '\0';
	pthread_mutex_lock(&ev->lock);
	sw_error *e = NULL;
	if (sw_fs_write_all(ev->fd, line, len, &e) < 0) {
		SW_LOG(SW_LOG_DEBUG, "events: %s", sw_error_msg(e));
		sw_error_free(e);
	}
	pthread_mutex_unlock(&ev->lock);
	free(line);
}

void sw_events_close(sw_events *ev)
{
	if (!ev)
		return;
	if (ev->own_fd)
		close(ev->fd);
	pthread_mutex_destroy(&ev->lock);
	free(ev);
}
