/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The build progress renderer of `slipway build`. On a terminal: a BuildKit-like live view
 * redrawn at most ten times a second ("[+] Building 3.2s (5/9)", one "=> [2/5] RUN make 1.2s"
 * line per step, CACHED for hits, the running step's last output line dimmed under it; finished
 * steps stay). Elsewhere: plain lines ("#3 [2/5] RUN make", "#3 CACHED", "#3 0.512 output",
 * "#3 DONE 1.2s", "#3 ERROR: exit code 2"). Events may come from any thread.
 */
#include "agent/agent.h"
#include "builder/builder.h"

#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_KEEP 4096

typedef struct pstep {
	int no;
	char *title;
	bool cached, done, failed, started;
	int code;
	int64_t start_ms, end_ms;
	char *last;     /* the last complete output line (tty) */
	sw_buf partial; /* output not yet ended by a newline (plain) */
} pstep;

struct sw_progress {
	sw_progress_mode mode;
	FILE *out;
	pthread_mutex_t lock;
	pthread_t ticker;
	bool ticking, stop, finished;
	int64_t t0;
	pstep *steps;
	size_t n_steps;
	int total;
	int drawn; /* lines of the live view on screen */
	bool dirty;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static pstep *step_get(sw_progress *p, int no, const char *title)
{
	for (size_t i = 0; i < p->n_steps; i++)
		if (p->steps[i].no == no)
			return &p->steps[i];
	p->steps = sw_xrealloc(p->steps, (p->n_steps + 1) * sizeof(*p->steps));
	pstep *s = &p->steps[p->n_steps++];
	memset(s, 0, sizeof(*s));
	s->no = no;
	s->title = sw_xstrdup(title ? title : "");
	sw_buf_init(&s->partial, LINE_MAX_KEEP * 4);
	return s;
}

/* ---------------------------------------------------------------- plain */

static void plain_line(sw_progress *p, pstep *s, const char *line, size_t len)
{
	double t = (double)(now_ms() - s->start_ms) / 1000.0;
	fprintf(p->out, "#%d %.3f %.*s\n", s->no, t, (int)len, line);
}

static void plain_output(sw_progress *p, pstep *s, const char *data, size_t len)
{
	size_t i = 0;
	while (i < len) {
		const char *nl = memchr(data + i, '\n', len - i);
		size_t n = nl ? (size_t)(nl - (data + i)) : len - i;
		if (!nl) {
			sw_error *e = NULL;
			if (sw_buf_append(&s->partial, data + i, n, &e) < 0) {
				/* a very long line: print what we have */
				sw_error_free(e);
				plain_line(p, s, s->partial.data, s->partial.len);
				sw_buf_reset(&s->partial);
			}
			return;
		}
		if (s->partial.len) {
			sw_error *e = NULL;
			if (sw_buf_append(&s->partial, data + i, n, &e) < 0)
				sw_error_free(e);
			size_t l = s->partial.len;
			if (l && s->partial.data[l - 1] == '\r')
				l--;
			plain_line(p, s, s->partial.data, l);
			sw_buf_reset(&s->partial);
		} else {
			size_t l = n;
			if (l && data[i + l - 1] == '\r')
				l--;
			plain_line(p, s, data + i, l);
		}
		i += n + 1;
	}
}

static void plain_event(sw_progress *p, const sw_build_event *ev)
{
	switch (ev->kind) {
	case SW_BUILD_EV_STEP_START: {
		pstep *s = step_get(p, ev->step, ev->title);
		s->start_ms = now_ms();
		s->cached = ev->cached;
		fprintf(p->out, "#%d %s\n", ev->step, ev->title ? ev->title : "");
		if (ev->cached)
			fprintf(p->out, "#%d CACHED\n", ev->step);
		break;
	}
	case SW_BUILD_EV_STEP_OUTPUT: {
		pstep *s = step_get(p, ev->step, ev->title);
		plain_output(p, s, ev->text, ev->len);
		break;
	}
	case SW_BUILD_EV_STEP_DONE: {
		pstep *s = step_get(p, ev->step, ev->title);
		if (s->partial.len) {
			plain_line(p, s, s->partial.data, s->partial.len);
			sw_buf_reset(&s->partial);
		}
		if (ev->cached)
			break;
		if (ev->failed) {
			if (ev->code)
				fprintf(p->out, "#%d ERROR: exit code %d\n", ev->step, ev->code);
			else
				fprintf(p->out, "#%d ERROR: %.*s\n", ev->step,
				        (int)(ev->text ? strcspn(ev->text, "\n") : 0),
				        ev->text ? ev->text : "");
		} else {
			fprintf(p->out, "#%d DONE %.1fs\n", ev->step,
			        (double)ev->elapsed_ms / 1000.0);
		}
		break;
	}
	case SW_BUILD_EV_LOG:
		fprintf(p->out, "=> %.*s\n", (int)ev->len, ev->text ? ev->text : "");
		break;
	}
	fflush(p->out);
}

/* ---------------------------------------------------------------- tty */

static int term_width(sw_progress *p)
{
	struct winsize ws;
	if (ioctl(fileno(p->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
		return ws.ws_col;
	return 80;
}

static int term_height(sw_progress *p)
{
	struct winsize ws;
	if (ioctl(fileno(p->out), TIOCGWINSZ, &ws) == 0 && ws.ws_row > 4)
		return ws.ws_row;
	return 24;
}

/* Print one line of at most `width` visible columns (bytes; control characters dropped). */
static void put_clipped(FILE *f, const char *s, int width)
{
	int n = 0;
	for (const char *c = s; *c && n < width; c++) {
		unsigned char u = (unsigned char)*c;
		if (u < 0x20 || u == 0x7f)
			continue;
		fputc(*c, f);
		if ((u & 0xc0) != 0x80)
			n++;
	}
}

static void tty_erase(sw_progress *p)
{
	if (p->drawn > 0)
		fprintf(p->out, "\033[%dA\r\033[J", p->drawn);
	p->drawn = 0;
}

static void tty_draw(sw_progress *p)
{
	int width = term_width(p);
	int height = term_height(p);
	int64_t now = now_ms();
	int done = 0;
	for (size_t i = 0; i < p->n_steps; i++)
		done += p->steps[i].done ? 1 : 0;
	/* overwrite the previous view in place (each line ends with "erase to the end") */
	if (p->drawn > 0)
		fprintf(p->out, "\033[%dA\r", p->drawn);
	int lines = 0;
	fprintf(p->out, "\033[34m[+] Building %.1fs (%d/%d)\033[0m\033[K\n",
	        (double)(now - p->t0) / 1000.0, done,
	        p->total > (int)p->n_steps ? p->total : (int)p->n_steps);
	lines++;
	/* keep to the screen: the last steps that fit */
	size_t first = 0;
	int budget = height - 2;
	int need = 0;
	for (size_t i = p->n_steps; i > 0; i--) {
		pstep *s = &p->steps[i - 1];
		int l = 1 + (!s->done && s->last ? 1 : 0);
		if (need + l > budget) {
			first = i;
			break;
		}
		need += l;
	}
	for (size_t i = first; i < p->n_steps; i++) {
		pstep *s = &p->steps[i];
		int64_t end = s->done ? s->end_ms : now;
		char tbuf[32];
		if (s->cached)
			snprintf(tbuf, sizeof(tbuf), "0.0s");
		else
			snprintf(tbuf, sizeof(tbuf), "%.1fs", (double)(end - s->start_ms) / 1000.0);
		const char *tag = s->failed ? "ERROR " : (s->cached ? "CACHED " : "");
		cleanup_free char *left = sw_xasprintf("=> %s%s", tag, s->title);
		int room = width - (int)strlen(tbuf) - 2;
		if (room < 10)
			room = 10;
		const char *color = s->failed ? "\033[31m" : (s->done ? "\033[34m" : "");
		fputs(color, p->out);
		put_clipped(p->out, left, room);
		int used = (int)strlen(left) < room ? (int)strlen(left) : room;
		fprintf(p->out, "%*s%s\033[0m\033[K\n", room - used + 1 + (int)strlen(tbuf), tbuf,
		        "");
		lines++;
		if (!s->done && s->last) {
			fputs("\033[2m=> => # ", p->out);
			put_clipped(p->out, s->last, width - 10);
			fputs("\033[0m\033[K\n", p->out);
			lines++;
		}
	}
	fputs("\033[J", p->out);
	p->drawn = lines;
	p->dirty = false;
	fflush(p->out);
}

static void *ticker_main(void *arg)
{
	sw_progress *p = arg;
	for (;;) {
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&p->lock);
		if (p->stop) {
			pthread_mutex_unlock(&p->lock);
			break;
		}
		tty_draw(p);
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

static void tty_output(pstep *s, const char *data, size_t len)
{
	/* remember the last complete (or growing) line */
	sw_error *e = NULL;
	for (size_t i = 0; i < len; i++) {
		char c = data[i];
		if (c == '\n' || c == '\r') {
			if (s->partial.len) {
				free(s->last);
				s->last = sw_xstrndup(s->partial.data, s->partial.len);
				sw_buf_reset(&s->partial);
			}
			continue;
		}
		if (s->partial.len < LINE_MAX_KEEP && sw_buf_append(&s->partial, &c, 1, &e) < 0)
			sw_error_clear(&e);
	}
	if (s->partial.len) {
		free(s->last);
		s->last = sw_xstrndup(s->partial.data, s->partial.len);
	}
}

static void tty_event(sw_progress *p, const sw_build_event *ev)
{
	if (ev->n_steps > p->total)
		p->total = ev->n_steps;
	switch (ev->kind) {
	case SW_BUILD_EV_STEP_START: {
		pstep *s = step_get(p, ev->step, ev->title);
		s->started = true;
		s->start_ms = now_ms();
		s->cached = ev->cached;
		if (ev->cached) {
			s->done = true;
			s->end_ms = s->start_ms;
		}
		break;
	}
	case SW_BUILD_EV_STEP_OUTPUT:
		tty_output(step_get(p, ev->step, ev->title), ev->text, ev->len);
		break;
	case SW_BUILD_EV_STEP_DONE: {
		pstep *s = step_get(p, ev->step, ev->title);
		s->done = true;
		s->failed = ev->failed;
		s->code = ev->code;
		s->end_ms = now_ms();
		break;
	}
	case SW_BUILD_EV_LOG:
		/* messages go above the live view and stay */
		tty_erase(p);
		fprintf(p->out, "%.*s\033[K\n", (int)ev->len, ev->text ? ev->text : "");
		break;
	}
	p->dirty = true;
	/* draw at once only when nothing is on screen yet; else the ticker does (10/s) */
	if (!p->drawn)
		tty_draw(p);
}

/* ---------------------------------------------------------------- the interface */

sw_progress *sw_progress_new(sw_progress_mode mode, FILE *out)
{
	sw_progress *p = sw_xcalloc(1, sizeof(*p));
	p->out = out;
	if (mode == SW_PROGRESS_AUTO)
		mode = isatty(fileno(out)) && getenv("TERM") && strcmp(getenv("TERM"), "dumb") != 0
		               ? SW_PROGRESS_TTY
		               : SW_PROGRESS_PLAIN;
	p->mode = mode;
	p->t0 = now_ms();
	pthread_mutex_init(&p->lock, NULL);
	if (mode == SW_PROGRESS_TTY && pthread_create(&p->ticker, NULL, ticker_main, p) == 0)
		p->ticking = true;
	return p;
}

void sw_progress_event(const sw_build_event *ev, void *payload)
{
	sw_progress *p = payload;
	if (!p || p->mode == SW_PROGRESS_QUIET)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->mode == SW_PROGRESS_TTY)
		tty_event(p, ev);
	else
		plain_event(p, ev);
	pthread_mutex_unlock(&p->lock);
}

void sw_progress_finish(sw_progress *p)
{
	if (!p || p->finished)
		return;
	p->finished = true;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_mutex_unlock(&p->lock);
	if (p->ticking) {
		pthread_join(p->ticker, NULL);
		p->ticking = false;
	}
	if (p->mode == SW_PROGRESS_TTY) {
		tty_draw(p);
		p->drawn = 0; /* the final view stays */
	}
	fflush(p->out);
}

void sw_progress_free(sw_progress *p)
{
	if (!p)
		return;
	sw_progress_finish(p);
	for (size_t i = 0; i < p->n_steps; i++) {
		free(p->steps[i].title);
		free(p->steps[i].last);
		sw_buf_free(&p->steps[i].partial);
	}
	free(p->steps);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
