/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's scheduler: one dispatcher thread takes QUEUED items from the journal while fewer
 * than `concurrency` run (and their source is below its own limit), round-robin over the
 * sources that have queued work (sources in name order, the oldest item first within one), marks
 * each RUNNING (attempts + 1) in the journal before a worker thread runs it, and records the
 * final state the run function returns. Drain stops the taking; cancel_all raises every running
 * item's cancel flag (1 with grace, 2 without).
 */
#include "agent/agent_internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

typedef struct slot {
	struct sw_sched *s;
	sw_work w;
	volatile sig_atomic_t cancel;
	pthread_t thread;
	bool done;
	struct slot *next;
} slot;

typedef struct source_limit {
	char *source;
	int limit;
} source_limit;

struct sw_sched {
	pthread_mutex_t lock;
	pthread_cond_t wake; /* the dispatcher: kicks, finished items, new limits, stop */
	pthread_cond_t idle; /* wait_idle: an item finished */
	sw_journal *j;
	sw_sched_run_fn run;
	void *payload;
	int concurrency;
	bool draining, stopping, kicked;
	slot *slots; /* running and finished-but-not-joined */
	unsigned n_running;
	source_limit *limits;
	size_t n_limits;
	char *last_source;
	pthread_t dispatcher;
};

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec deadline_in(int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

static void cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

/* Called with the lock held. */
static int source_limit_of(sw_sched *s, const char *source)
{
	for (size_t i = 0; i < s->n_limits; i++)
		if (strcmp(s->limits[i].source, source) == 0)
			return s->limits[i].limit;
	return 0;
}

static unsigned running_of(sw_sched *s, const char *source)
{
	unsigned n = 0;
	for (slot *t = s->slots; t; t = t->next)
		n += !t->done && strcmp(t->w.source, source) == 0;
	return n;
}

static bool has_room(sw_sched *s, const char *source)
{
	int lim = source_limit_of(s, source);
	return lim <= 0 || running_of(s, source) < (unsigned)lim;
}

/* The next item to run: round-robin over the sources with room. Lock held. -1: none. */
static ssize_t pick(sw_sched *s, const sw_work *q, size_t n)
{
	const char *best = NULL, *first = NULL;
	for (size_t i = 0; i < n; i++) {
		const char *src = q[i].source;
		if (!has_room(s, src))
			continue;
		if (!first || strcmp(src, first) < 0)
			first = src;
		if (s->last_source && strcmp(src, s->last_source) <= 0)
			continue;
		if (!best || strcmp(src, best) < 0)
			best = src;
	}
	if (!best)
		best = first;
	if (!best)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (strcmp(q[i].source, best) == 0)
			return (ssize_t)i;
	return -1;
}

static void *worker(void *arg)
{
	slot *t = arg;
	sw_sched *s = t->s;
	sw_work_state st = s->run(&t->w, &t->cancel, s->payload);
	t->w.state = st;
	t->w.finished_at = wall_ms();
	sw_error *err = NULL;
	if (sw_journal_update(s->j, &t->w, &err) < 0) {
		SW_LOG(SW_LOG_ERROR, "%s: %s", t->w.id, sw_error_msg(err));
		sw_error_free(err);
	}
	SW_LOG(SW_LOG_DEBUG, "scheduler: %s finished: %s", t->w.id, sw_work_state_name(st));
	pthread_mutex_lock(&s->lock);
	t->done = true;
	s->n_running--;
	pthread_cond_broadcast(&s->wake);
	pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Join the workers that finished. Lock held (they no longer take it once done). */
static void reap(sw_sched *s)
{
	for (slot **pp = &s->slots; *pp;) {
		slot *t = *pp;
		if (!t->done) {
			pp = &t->next;
			continue;
		}
		pthread_join(t->thread, NULL);
		*pp = t->next;
		sw_work_clear(&t->w);
		free(t);
	}
}

/* Start one item if there is room and work. Lock held; returns true when one started. */
static bool start_one(sw_sched *s)
{
	if (s->draining || s->n_running >= (unsigned)s->concurrency)
		return false;
	sw_work *q = NULL;
	size_t n = 0;
	sw_error *err = NULL;
	if (sw_journal_list(&q, &n, s->j, SW_WORK_QUEUED, &err) < 0) {
		sw_error_free(err);
		return false;
	}
	ssize_t i = pick(s, q, n);
	if (i < 0) {
		sw_work_list_free(q, n);
		return false;
	}
	slot *t = sw_xcalloc(1, sizeof(*t));
	t->s = s;
	t->w = q[i];
	memset(&q[i], 0, sizeof(q[i]));
	sw_work_list_free(q, n);
	t->w.state = SW_WORK_RUNNING;
	t->w.attempts++;
	t->w.started_at = wall_ms();
	t->w.finished_at = 0;
	t->w.exit_code = -1;
	if (sw_journal_update(s->j, &t->w, &err) < 0) {
		SW_LOG(SW_LOG_ERROR, "scheduler: cannot start %s: %s", t->w.id, sw_error_msg(err));
		sw_error_free(err);
		sw_work_clear(&t->w);
		free(t);
		return false;
	}
	free(s->last_source);
	s->last_source = sw_xstrdup(t->w.source);
	if (pthread_create(&t->thread, NULL, worker, t) != 0) {
		SW_LOG(SW_LOG_ERROR, "scheduler: cannot start a thread for %s", t->w.id);
		t->w.state = SW_WORK_QUEUED;
		t->w.attempts--;
		if (sw_journal_update(s->j, &t->w, &err) < 0)
			sw_error_free(err);
		sw_work_clear(&t->w);
		free(t);
		return false;
	}
	SW_LOG(SW_LOG_DEBUG, "scheduler: started %s (attempt %d)", t->w.id, t->w.attempts);
	t->next = s->slots;
	s->slots = t;
	s->n_running++;
	return true;
}

static void *dispatch(void *arg)
{
	sw_sched *s = arg;
	pthread_mutex_lock(&s->lock);
	while (!s->stopping) {
		reap(s);
		s->kicked = false;
		if (start_one(s))
			continue;
		if (s->kicked)
			continue;
		struct timespec dl = deadline_in(1000);
		pthread_cond_timedwait(&s->wake, &s->lock, &dl);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int sw_sched_new(sw_sched **out, sw_journal *j, int concurrency, sw_sched_run_fn run, void *payload,
                 sw_error **err)
{
	*out = NULL;
	sw_sched *s = sw_xcalloc(1, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	cond_init_mono(&s->wake);
	cond_init_mono(&s->idle);
	s->j = j;
	s->run = run;
	s->payload = payload;
	s->concurrency = concurrency > 0 ? concurrency : 1;
	int e = pthread_create(&s->dispatcher, NULL, dispatch, s);
	if (e != 0) {
		pthread_cond_destroy(&s->wake);
		pthread_cond_destroy(&s->idle);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return sw_error_os(err, e, "scheduler: cannot start its thread");
	}
	*out = s;
	return 0;
}

void sw_sched_kick(sw_sched *s)
{
	pthread_mutex_lock(&s->lock);
	s->kicked = true;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->lock);
}

void sw_sched_set_concurrency(sw_sched *s, int concurrency)
{
	pthread_mutex_lock(&s->lock);
	s->concurrency = concurrency > 0 ? concurrency : 1;
	s->kicked = true;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->lock);
}

void sw_sched_set_source_limit(sw_sched *s, const char *source, int limit)
{
	pthread_mutex_lock(&s->lock);
	size_t i;
	for (i = 0; i < s->n_limits; i++)
		if (strcmp(s->limits[i].source, source) == 0)
			break;
	if (i == s->n_limits) {
		s->limits = sw_xrealloc(s->limits, (s->n_limits + 1) * sizeof(*s->limits));
		s->limits[s->n_limits++].source = sw_xstrdup(source);
	}
	s->limits[i].limit = limit;
	s->kicked = true;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->lock);
}

void sw_sched_counts(sw_sched *s, unsigned *running, unsigned *queued)
{
	if (running) {
		pthread_mutex_lock(&s->lock);
		*running = s->n_running;
		pthread_mutex_unlock(&s->lock);
	}
	if (queued) {
		sw_work *q = NULL;
		size_t n = 0;
		sw_error *err = NULL;
		if (sw_journal_list(&q, &n, s->j, SW_WORK_QUEUED, &err) < 0) {
			sw_error_free(err);
			n = 0;
		}
		sw_work_list_free(q, n);
		*queued = (unsigned)n;
	}
}

void sw_sched_drain(sw_sched *s)
{
	pthread_mutex_lock(&s->lock);
	s->draining = true;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->lock);
}

bool sw_sched_draining(sw_sched *s)
{
	pthread_mutex_lock(&s->lock);
	bool d = s->draining;
	pthread_mutex_unlock(&s->lock);
	return d;
}

void sw_sched_cancel_all(sw_sched *s, int how)
{
	pthread_mutex_lock(&s->lock);
	for (slot *t = s->slots; t; t = t->next)
		if (!t->done && t->cancel < how)
			t->cancel = how;
	pthread_mutex_unlock(&s->lock);
}

bool sw_sched_wait_idle(sw_sched *s, int64_t timeout_ms)
{
	struct timespec dl = deadline_in(timeout_ms < 0 ? 0 : timeout_ms);
	pthread_mutex_lock(&s->lock);
	while (s->n_running > 0) {
		if (timeout_ms < 0) {
			pthread_cond_wait(&s->idle, &s->lock);
		} else if (pthread_cond_timedwait(&s->idle, &s->lock, &dl) == ETIMEDOUT) {
			break;
		}
	}
	bool idle = s->n_running == 0;
	pthread_mutex_unlock(&s->lock);
	return idle;
}

void sw_sched_free(sw_sched *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	s->draining = true;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->dispatcher, NULL);
	/* workers still running (free without wait_idle) are waited for */
	for (slot *t = s->slots, *next; t; t = next) {
		next = t->next;
		pthread_join(t->thread, NULL);
		sw_work_clear(&t->w);
		free(t);
	}
	for (size_t i = 0; i < s->n_limits; i++)
		free(s->limits[i].source);
	free(s->limits);
	free(s->last_source);
	pthread_cond_destroy(&s->wake);
	pthread_cond_destroy(&s->idle);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
