/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The console report of `slipway run`. PLAIN (not a terminal): every complete output line of a
 * job as "[stage/job] line" (a partial last line is held until its newline or the job's end
 * state; lines over 4 KiB are cut into 4 KiB pieces), state changes as "[stage/job] running",
 * "[stage/job] passed in 1.2s", "[stage/job] failed in 3.0s: exit code 2", free lines as they
 * come. TTY: a live view of stages and jobs (state, elapsed time, the job's last output line cut
 * to the terminal width) redrawn in place by a background thread at most ten times a second,
 * with ANSI cursor movement as agent/progress.c does; free lines go above it and stay. QUIET:
 * nothing until the end. Every mode ends with the summary: a table (JOB, STAGE, RESULT,
 * DURATION, ATTEMPTS, columns aligned), the build line ("build: 5 steps, 4 cached (80%), 1.2s")
 * and, in QUIET mode, the free lines that were held back. Calls may come from any thread.
 */
#include "reporters/reporters.h"
#include "reporters/reporters_internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#define LINE_PIECE 4096
#define DEFAULT_WIDTH 100

typedef struct cjob {
	char *stage, *name, *label; /* label: "stage/job" */
	sw_job_state state;
	char *detail;
	bool started, ended;
	int64_t start_ms, end_ms;
	unsigned attempts;
	char *part; /* PLAIN: the line not yet ended; TTY: the growing line */
	size_t plen;
	bool cut;   /* PLAIN: the last piece was cut at LINE_PIECE, a newline ends nothing */
	char *last; /* TTY: the last complete line */
} cjob;

struct sw_console {
	sw_console_mode mode;
	FILE *out;
	pthread_mutex_t lock;
	pthread_t ticker;
	bool ticking, stop, finished, printed;
	int64_t t0;
	cjob *jobs;
	size_t n_jobs;
	char **held_lines; /* QUIET: free lines for the summary */
	bool have_build;
	unsigned steps, cached;
	double build_s;
	int drawn; /* TTY: lines of the live view on screen */
	sw_console_clock_fn clock;
	void *clock_payload;
	int width_override;
};

static const char *const state_names[] = {
	[SW_JOB_PENDING] = "pending",
	[SW_JOB_RUNNING] = "running",
	[SW_JOB_PASSED] = "passed",
	[SW_JOB_FAILED] = "failed",
	[SW_JOB_ALLOWED_FAILURE] = "allowed failure",
	[SW_JOB_TIMED_OUT] = "timed out",
	[SW_JOB_SKIPPED] = "skipped",
	[SW_JOB_CANCELLED] = "cancelled",
	[SW_JOB_ERROR] = "error",
};

const char *sw_job_state_name(sw_job_state s)
{
	if ((unsigned)s >= SW_ARRAY_SIZE(state_names) || !state_names[s])
		return "unknown";
	return state_names[s];
}

static bool state_final(sw_job_state s)
{
	return s != SW_JOB_PENDING && s != SW_JOB_RUNNING;
}

static int64_t now_ms(sw_console *c)
{
	if (c->clock)
		return c->clock(c->clock_payload);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "1.2s", "2m05s", "1h02m03s" */
static void fmt_duration(char *buf, size_t size, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	if (ms < 60000) {
		snprintf(buf, size, "%.1fs", (double)ms / 1000.0);
		return;
	}
	int64_t s = ms / 1000;
	if (s < 3600)
		snprintf(buf, size, "%dm%02ds", (int)(s / 60), (int)(s % 60));
	else
		snprintf(buf, size, "%dh%02dm%02ds", (int)(s / 3600), (int)(s / 60 % 60),
		         (int)(s % 60));
}

static int64_t job_elapsed(sw_console *c, const cjob *j)
{
	if (!j->started)
		return 0;
	return (j->ended ? j->end_ms : now_ms(c)) - j->start_ms;
}

/* ---------------------------------------------------------------- plain */

static void plain_print(sw_console *c, cjob *j, const char *line, size_t len)
{
	if (len && line[len - 1] == '\r')
		len--;
	if (len)
		fprintf(c->out, "[%s] %.*s\n", j->label, (int)len, line);
	else
		fprintf(c->out, "[%s]\n", j->label);
	c->printed = true;
}

static void plain_output(sw_console *c, cjob *j, const char *data, size_t len)
{
	if (!j->part)
		j->part = sw_xmalloc(LINE_PIECE);
	while (len) {
		const char *nl = memchr(data, '\n', len);
		size_t seg = nl ? (size_t)(nl - data) : len;
		while (seg) {
			if (!j->plen && seg >= LINE_PIECE) {
				/* a whole piece straight from the input */
				plain_print(c, j, data, LINE_PIECE);
				j->cut = true;
				data += LINE_PIECE;
				len -= LINE_PIECE;
				seg -= LINE_PIECE;
				continue;
			}
			size_t k = LINE_PIECE - j->plen < seg ? LINE_PIECE - j->plen : seg;
			memcpy(j->part + j->plen, data, k);
			j->plen += k;
			data += k;
			len -= k;
			seg -= k;
			j->cut = false;
			if (j->plen == LINE_PIECE) {
				plain_print(c, j, j->part, j->plen);
				j->plen = 0;
				j->cut = true;
			}
		}
		if (!nl)
			break;
		if (j->plen || !j->cut)
			plain_print(c, j, j->part, j->plen);
		j->plen = 0;
		j->cut = false;
		data++;
		len--;
	}
}

static void plain_flush_partial(sw_console *c, cjob *j)
{
	if (j->plen)
		plain_print(c, j, j->part, j->plen);
	j->plen = 0;
	j->cut = false;
}

static void plain_state(sw_console *c, cjob *j)
{
	bool has_detail = j->detail && *j->detail;
	if (j->state == SW_JOB_PENDING && !has_detail)
		return;
	char dur[32] = "";
	if (state_final(j->state) && j->started) {
		char d[24];
		fmt_duration(d, sizeof(d), job_elapsed(c, j));
		snprintf(dur, sizeof(dur), " in %s", d);
	}
	fprintf(c->out, "[%s] %s%s%s%s\n", j->label, sw_job_state_name(j->state), dur,
	        has_detail ? ": " : "", has_detail ? j->detail : "");
	c->printed = true;
}

/* ---------------------------------------------------------------- tty */

static int term_width(sw_console *c)
{
	if (c->width_override > 0)
		return c->width_override;
	struct winsize ws;
	int fd = fileno(c->out);
	if (fd >= 0 && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return DEFAULT_WIDTH;
}

static int term_height(sw_console *c)
{
	struct winsize ws;
	int fd = fileno(c->out);
	if (fd >= 0 && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 4)
		return ws.ws_row;
	return 40;
}

/* Print s cut to `width` columns (control characters dropped); returns the columns used. */
static int put_clipped(FILE *f, const char *s, int width)
{
	int n = 0;
	for (const char *p = s; *p; p++) {
		unsigned char u = (unsigned char)*p;
		if (u < 0x20 || u == 0x7f)
			continue;
		if ((u & 0xc0) != 0x80) {
			if (n >= width)
				break;
			n++;
		}
		fputc(*p, f);
	}
	return n;
}

static const char *state_color(sw_job_state s)
{
	switch (s) {
	case SW_JOB_RUNNING:
		return "\033[36m";
	case SW_JOB_PASSED:
		return "\033[32m";
	case SW_JOB_FAILED:
	case SW_JOB_TIMED_OUT:
	case SW_JOB_ERROR:
		return "\033[31m";
	case SW_JOB_ALLOWED_FAILURE:
		return "\033[33m";
	case SW_JOB_SKIPPED:
	case SW_JOB_CANCELLED:
		return "\033[2m";
	default:
		return "";
	}
}

static void tty_erase(sw_console *c)
{
	if (c->drawn > 0)
		fprintf(c->out, "\033[%dA\r\033[J", c->drawn);
	c->drawn = 0;
}

static void tty_job_line(sw_console *c, const cjob *j, int name_w, int width)
{
	char el[24] = "";
	if (j->started)
		fmt_duration(el, sizeof(el), job_elapsed(c, j));
	/* "   name  state            elapsed  last line" */
	int used = fprintf(c->out, "   ");
	used += put_clipped(c->out, j->name, name_w);
	int nl = (int)strlen(j->name);
	for (int k = nl < name_w ? nl : name_w; k < name_w + 2; k++, used++)
		fputc(' ', c->out);
	fprintf(c->out, "%s%-15s\033[0m %8s", state_color(j->state), sw_job_state_name(j->state),
	        el);
	used += 15 + 1 + 8;
	const char *tail = j->state == SW_JOB_RUNNING && j->plen ? NULL : j->last;
	cleanup_free char *growing = NULL;
	if (j->state == SW_JOB_RUNNING && j->plen)
		tail = growing = sw_xstrndup(j->part, j->plen);
	if (!tail && j->detail && *j->detail && state_final(j->state))
		tail = j->detail;
	if (tail && width - used - 2 > 4) {
		fputs("  \033[2m", c->out);
		put_clipped(c->out, tail, width - used - 2);
		fputs("\033[0m", c->out);
	}
	fputs("\033[K\n", c->out);
}

static void tty_draw(sw_console *c)
{
	int width = term_width(c);
	int height = term_height(c);
	size_t done = 0;
	int name_w = 4;
	for (size_t i = 0; i < c->n_jobs; i++) {
		done += state_final(c->jobs[i].state);
		int l = (int)strlen(c->jobs[i].name);
		if (l > name_w)
			name_w = l;
	}
	if (name_w > width / 3)
		name_w = width / 3;
	/* does everything fit? stage headers + jobs + the title */
	int need = 1 + (int)c->n_jobs;
	for (size_t i = 0; i < c->n_jobs; i++)
		need += !i || strcmp(c->jobs[i].stage, c->jobs[i - 1].stage) != 0;
	bool compact = need > height - 1;

	if (c->drawn > 0)
		fprintf(c->out, "\033[%dA\r", c->drawn);
	int lines = 0;
	char el[24];
	fmt_duration(el, sizeof(el), now_ms(c) - c->t0);
	fprintf(c->out, "\033[1m[+] Pipeline %s (%zu/%zu jobs done)\033[0m\033[K\n", el, done,
	        c->n_jobs);
	lines++;
	size_t hidden = 0;
	const char *stage = NULL;
	for (size_t i = 0; i < c->n_jobs; i++) {
		cjob *j = &c->jobs[i];
		if (compact && (state_final(j->state) || lines >= height - 2)) {
			hidden++;
			continue;
		}
		if (!stage || strcmp(stage, j->stage) != 0) {
			stage = j->stage;
			fputs(" ", c->out);
			put_clipped(c->out, stage, width - 2);
			fputs("\033[K\n", c->out);
			lines++;
		}
		tty_job_line(c, j, name_w, width);
		lines++;
	}
	if (hidden) {
		fprintf(c->out, " \033[2m(%zu more jobs)\033[0m\033[K\n", hidden);
		lines++;
	}
	fputs("\033[J", c->out);
	c->drawn = lines;
	fflush(c->out);
}

static void *ticker_main(void *arg)
{
	sw_console *c = arg;
	for (;;) {
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&c->lock);
		if (c->stop) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		tty_draw(c);
		pthread_mutex_unlock(&c->lock);
	}
	return NULL;
}

static void tty_output(cjob *j, const char *data, size_t len)
{
	if (!j->part)
		j->part = sw_xmalloc(LINE_PIECE);
	for (size_t i = 0; i < len; i++) {
		char ch = data[i];
		if (ch == '\n' || ch == '\r') {
			if (j->plen) {
				free(j->last);
				j->last = sw_xstrndup(j->part, j->plen);
				j->plen = 0;
			}
			continue;
		}
		if (j->plen < LINE_PIECE)
			j->part[j->plen++] = ch;
	}
}

/* ---------------------------------------------------------------- the interface */

sw_console *sw_console_new(sw_console_mode mode, FILE *out)
{
	sw_console *c = sw_xcalloc(1, sizeof(*c));
	c->out = out ? out : stderr;
	if (mode == SW_CONSOLE_AUTO) {
		int fd = fileno(c->out);
		const char *term = getenv("TERM");
		mode = fd >= 0 && isatty(fd) && term && strcmp(term, "dumb") != 0
		               ? SW_CONSOLE_TTY
		               : SW_CONSOLE_PLAIN;
	}
	c->mode = mode;
	pthread_mutex_init(&c->lock, NULL);
	c->t0 = now_ms(c);
	if (mode == SW_CONSOLE_TTY && pthread_create(&c->ticker, NULL, ticker_main, c) == 0)
		c->ticking = true;
	return c;
}

void sw_console__set_clock(sw_console *c, sw_console_clock_fn clock, void *payload)
{
	pthread_mutex_lock(&c->lock);
	c->clock = clock;
	c->clock_payload = payload;
	c->t0 = now_ms(c);
	pthread_mutex_unlock(&c->lock);
}

void sw_console__set_width(sw_console *c, int columns)
{
	pthread_mutex_lock(&c->lock);
	c->width_override = columns;
	pthread_mutex_unlock(&c->lock);
}

size_t sw_console_add_job(sw_console *c, const char *stage, const char *job)
{
	pthread_mutex_lock(&c->lock);
	c->jobs = sw_xrealloc(c->jobs, (c->n_jobs + 1) * sizeof(*c->jobs));
	cjob *j = &c->jobs[c->n_jobs];
	memset(j, 0, sizeof(*j));
	j->stage = sw_xstrdup(stage ? stage : "");
	j->name = sw_xstrdup(job ? job : "");
	j->label = sw_xasprintf("%s/%s", j->stage, j->name);
	size_t id = c->n_jobs++;
	pthread_mutex_unlock(&c->lock);
	return id;
}

void sw_console_job_state(sw_console *c, size_t job, sw_job_state s, const char *detail)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	if (job >= c->n_jobs || c->finished) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	cjob *j = &c->jobs[job];
	int64_t now = now_ms(c);
	if (s == SW_JOB_RUNNING) {
		if (j->state != SW_JOB_RUNNING)
			j->attempts++;
		if (!j->started) {
			j->started = true;
			j->start_ms = now;
		}
		j->ended = false;
	} else if (state_final(s)) {
		j->ended = true;
		j->end_ms = now;
	}
	j->state = s;
	free(j->detail);
	j->detail = detail ? sw_xstrdup(detail) : NULL;
	switch (c->mode) {
	case SW_CONSOLE_PLAIN:
		if (state_final(s))
			plain_flush_partial(c, j);
		plain_state(c, j);
		fflush(c->out);
		break;
	case SW_CONSOLE_TTY:
		if (state_final(s) && j->plen) {
			free(j->last);
			j->last = sw_xstrndup(j->part, j->plen);
			j->plen = 0;
		}
		if (!c->drawn)
			tty_draw(c);
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&c->lock);
}

void sw_console_job_output(sw_console *c, size_t job, const char *data, size_t len)
{
	if (!c || !len)
		return;
	pthread_mutex_lock(&c->lock);
	if (job < c->n_jobs && !c->finished) {
		if (c->mode == SW_CONSOLE_PLAIN) {
			plain_output(c, &c->jobs[job], data, len);
			fflush(c->out);
		} else if (c->mode == SW_CONSOLE_TTY) {
			tty_output(&c->jobs[job], data, len);
		}
	}
	pthread_mutex_unlock(&c->lock);
}

void sw_console_line(sw_console *c, const char *fmt, ...)
{
	if (!c)
		return;
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *line = sw_xvasprintf(fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&c->lock);
	switch (c->mode) {
	case SW_CONSOLE_PLAIN:
		fprintf(c->out, "%s\n", line);
		c->printed = true;
		fflush(c->out);
		break;
	case SW_CONSOLE_TTY:
		/* above the live view, where it stays */
		tty_erase(c);
		fprintf(c->out, "%s\033[K\n", line);
		c->printed = true;
		if (!c->finished)
			tty_draw(c);
		else
			fflush(c->out);
		break;
	default:
		sw_strv_push(&c->held_lines, line);
		break;
	}
	pthread_mutex_unlock(&c->lock);
}

void sw_console_build_stats(sw_console *c, unsigned steps, unsigned cached, double seconds)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->have_build = true;
	c->steps = steps;
	c->cached = cached;
	c->build_s = seconds;
	pthread_mutex_unlock(&c->lock);
}

static void pad(FILE *f, const char *s, size_t w, bool last)
{
	fputs(s, f);
	if (last)
		return;
	for (size_t k = strlen(s); k < w + 2; k++)
		fputc(' ', f);
}

static void print_summary(sw_console *c)
{
	if (c->printed)
		fputc('\n', c->out);
	if (c->n_jobs) {
		enum { NCOL = 5 };
		static const char *const head[NCOL] = { "JOB", "STAGE", "RESULT", "DURATION",
			                                "ATTEMPTS" };
		size_t w[NCOL];
		for (int k = 0; k < NCOL; k++)
			w[k] = strlen(head[k]);
		char(*cells)[2][32] = sw_xcalloc(c->n_jobs, sizeof(*cells));
		for (size_t i = 0; i < c->n_jobs; i++) {
			cjob *j = &c->jobs[i];
			if (j->started)
				fmt_duration(cells[i][0], sizeof(cells[i][0]), job_elapsed(c, j));
			else
				snprintf(cells[i][0], sizeof(cells[i][0]), "-");
			snprintf(cells[i][1], sizeof(cells[i][1]), "%u", j->attempts);
			size_t l[NCOL] = { strlen(j->name), strlen(j->stage),
				           strlen(sw_job_state_name(j->state)), strlen(cells[i][0]),
				           strlen(cells[i][1]) };
			for (int k = 0; k < NCOL; k++)
				if (l[k] > w[k])
					w[k] = l[k];
		}
		for (int k = 0; k < NCOL; k++)
			pad(c->out, head[k], w[k], k == NCOL - 1);
		fputc('\n', c->out);
		for (size_t i = 0; i < c->n_jobs; i++) {
			cjob *j = &c->jobs[i];
			const char *row[NCOL] = { j->name, j->stage, sw_job_state_name(j->state),
				                  cells[i][0], cells[i][1] };
			for (int k = 0; k < NCOL; k++)
				pad(c->out, row[k], w[k], k == NCOL - 1);
			fputc('\n', c->out);
		}
		free(cells);
	}
	if (c->have_build) {
		char d[24];
		fmt_duration(d, sizeof(d), (int64_t)(c->build_s * 1000.0 + 0.5));
		unsigned pct =
		        c->steps ? (unsigned)((c->cached * 100ull + c->steps / 2) / c->steps) : 0;
		fprintf(c->out, "build: %u steps, %u cached (%u%%), %s\n", c->steps, c->cached, pct,
		        d);
	}
	for (size_t i = 0; c->held_lines && c->held_lines[i]; i++)
		fprintf(c->out, "%s\n", c->held_lines[i]);
}

static void stop_ticker(sw_console *c)
{
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_mutex_unlock(&c->lock);
	if (c->ticking) {
		pthread_join(c->ticker, NULL);
		c->ticking = false;
	}
}

void sw_console_finish(sw_console *c)
{
	if (!c)
		return;
	stop_ticker(c);
	pthread_mutex_lock(&c->lock);
	if (c->finished) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	c->finished = true;
	if (c->mode == SW_CONSOLE_TTY)
		tty_erase(c);
	if (c->mode == SW_CONSOLE_PLAIN)
		for (size_t i = 0; i < c->n_jobs; i++)
			plain_flush_partial(c, &c->jobs[i]);
	print_summary(c);
	fflush(c->out);
	pthread_mutex_unlock(&c->lock);
}

void sw_console_free(sw_console *c)
{
	if (!c)
		return;
	stop_ticker(c);
	if (c->mode == SW_CONSOLE_TTY && !c->finished) {
		tty_erase(c);
		fflush(c->out);
	}
	for (size_t i = 0; i < c->n_jobs; i++) {
		cjob *j = &c->jobs[i];
		free(j->stage);
		free(j->name);
		free(j->label);
		free(j->detail);
		free(j->part);
		free(j->last);
	}
	free(c->jobs);
	sw_strv_free(c->held_lines);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
