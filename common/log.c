/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Leveled logging. SW_LOG checks the level before anything is formatted; the message is then
 * redacted (URL passwords, Authorization values) and handed to the current sink: text lines or
 * JSON lines on stderr, or whatever the agent installs.
 */
#include "common/common.h"

#include <string.h>
#include <strings.h>
#include <time.h>

sw_log_level sw_log_current_level = SW_LOG_INFO;
static sw_log_sink cur_sink = sw_log_sink_text;
static void *cur_payload;

static const char *const level_names[] = { "error", "warn", "info", "debug", "trace" };

void sw_log_set_level(sw_log_level level)
{
	sw_log_current_level = level;
}

int sw_log_level_parse(const char *s)
{
	for (size_t i = 0; i < SW_ARRAY_SIZE(level_names); i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return (int)i;
	if (strcasecmp(s, "warning") == 0)
		return SW_LOG_WARN;
	return -1;
}

void sw_log_set_sink(sw_log_sink sink, void *payload)
{
	cur_sink = sink ? sink : sw_log_sink_text;
	cur_payload = sink ? payload : NULL;
}

void sw_log_write(sw_log_level level, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *raw = sw_xvasprintf(fmt, ap);
	va_end(ap);
	cleanup_free char *msg = sw_redact(raw);
	cur_sink(level, file, line, msg, cur_payload);
}

void sw_log_sink_text(sw_log_level level, const char *file, int line, const char *msg,
                      void *payload)
{
	(void)payload;
	(void)file;
	(void)line;
	fprintf(stderr, "slipway: %s: %s\n", level_names[level], msg);
}

static void json_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
}

void sw_log_sink_json(sw_log_level level, const char *file, int line, const char *msg,
                      void *payload)
{
	(void)payload;
	struct timespec ts;
	struct tm tm;
	char tbuf[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
	flockfile(stderr);
	fprintf(stderr, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"src\":\"", tbuf,
	        ts.tv_nsec / 1000000, level_names[level]);
	json_escape(stderr, file);
	fprintf(stderr, ":%d\",\"msg\":\"", line);
	json_escape(stderr, msg);
	fputs("\"}\n", stderr);
	funlockfile(stderr);
}

char *sw_redact(const char *s)
{
	sw_buf b = SW_BUF_INIT(0);
	const char *p = s;
	while (*p) {
		/* scheme://user:password@host -> scheme://user:***@host */
		const char *sep = strstr(p, "://");
		const char *auth = strcasestr(p, "authorization:");
		const char *next = NULL;
		int kind = 0;
		if (sep && (!auth || sep < auth))
			next = sep, kind = 1;
		else if (auth)
			next = auth, kind = 2;
		if (!next) {
			(void)!sw_buf_puts(&b, p, NULL);
			break;
		}
		if (kind == 1) {
			const char *h = next + 3;
			size_t n = strcspn(h, "/ \t\n\"'@");
			const char *colon = memchr(h, ':', n);
			(void)!sw_buf_append(&b, p, (size_t)(h - p), NULL);
			if (h[n] == '@' && colon) {
				(void)!sw_buf_append(&b, h, (size_t)(colon - h), NULL);
				(void)!sw_buf_puts(&b, ":***", NULL);
				p = h + n;
			} else {
				p = h;
			}
		} else {
			const char *v = next + strlen("authorization:");
			(void)!sw_buf_append(&b, p, (size_t)(v - p), NULL);
			while (*v == ' ')
				v++;
			/* keep the scheme word ("Bearer", "Basic"), hide the credential */
			size_t w = strcspn(v, " \r\n");
			if (v[w] == ' ') {
				(void)!sw_buf_append(&b, " ", 1, NULL);
				(void)!sw_buf_append(&b, v, w, NULL);
				v += w + 1;
			}
			(void)!sw_buf_puts(&b, " ***", NULL);
			p = v + strcspn(v, "\r\n");
		}
	}
	return sw_buf_steal(&b, NULL);
}
