/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The git watcher of `slipway agent`: one thread that polls the configured repositories when
 * they are due (each every poll_ms, jittered by +-10%, backing off by doubling up to 10 minutes
 * while it fails, back to normal after a success), fetches each into a bare mirror under
 * STATE/agent/mirrors/<name>.git with libgit2 (created on the first poll, remote "origin" with
 * forced refspecs for every branch and every tag, pruned), and turns the new commits
 * of the branches and tags that match the repository's patterns into work items of the
 * journal. A ref's new head is recorded in the journal only after its items were added: a crash
 * in between adds the same ids again, which the journal ignores. Credentials come from the
 * config (user and password, a token as user "oauth2", an ssh key); a server that refuses them
 * is reported once per poll instead of being asked forever. URLs are shown without password.
 */
#include "agent/agent_internal.h"
#include "pipeline/pipeline.h"

#include <errno.h>
#include <git2.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MAX_MS (10 * 60 * 1000)
#define MAX_COMMITS_PER_POLL 100
#define MAX_CRED_CALLS 3

/* One watched repository: a private copy of its config and its schedule. */
typedef struct wrepo {
	sw_agent_repo c;
	uint64_t gen;      /* changes when its config changes (reload) */
	int64_t next_ms;   /* monotonic time of the next poll */
	unsigned failures; /* polls failed in a row */
	bool more;         /* the last poll capped its commits: poll again soon */
	char **seen;       /* refs seen at the last poll (to forget the deleted ones) */
} wrepo;

struct sw_watcher {
	char *state_dir;
	sw_journal *j;
	sw_sched *s;
	sw_watch_hooks hooks;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;     /* under lock; also read by the fetch callbacks */
	bool poll_now; /* under lock */
	wrepo *repos;  /* under lock */
	size_t n_repos;
	uint64_t next_gen;
	unsigned seed;
};

/* ---------------------------------------------------------------- time and small helpers */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* `ms` jittered by +-10%. */
static int64_t jitter(sw_watcher *w, int64_t ms)
{
	if (ms <= 0)
		return 0;
	double f = 0.9 + 0.2 * ((double)rand_r(&w->seed) / (double)RAND_MAX);
	return (int64_t)((double)ms * f);
}

/* The delay before the next poll: poll_ms, or doubling from it while failing (capped). */
static int64_t next_delay(const wrepo *r)
{
	int64_t d = r->c.poll_ms > 0 ? r->c.poll_ms : 60000;
	if (r->failures == 0)
		return d;
	if (d >= BACKOFF_MAX_MS)
		return d;
	for (unsigned i = 0; i < r->failures && d < BACKOFF_MAX_MS; i++)
		d *= 2;
	return d < BACKOFF_MAX_MS ? d : BACKOFF_MAX_MS;
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool strv_eq(char *const *a, char *const *b)
{
	size_t na = sw_strv_len(a), nb = sw_strv_len(b);
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++) {
		if (strcmp(a[i], b[i]) != 0)
			return false;
	}
	return true;
}

static bool strv_has(char *const *v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++) {
		if (strcmp(v[i], s) == 0)
			return true;
	}
	return false;
}

/* What the watcher uses of a repository's config (vars and the pipeline file are the
 * scheduler's business). */
static bool repo_same(const sw_agent_repo *a, const sw_agent_repo *b)
{
	return str_eq(a->url, b->url) && strv_eq(a->branches, b->branches) &&
	       strv_eq(a->tags, b->tags) && a->poll_ms == b->poll_ms &&
	       a->every_commit == b->every_commit && str_eq(a->username, b->username) &&
	       str_eq(a->password, b->password) && str_eq(a->token, b->token) &&
	       str_eq(a->ssh_key, b->ssh_key);
}

static char *xstrdup_or_null(const char *s)
{
	return s ? sw_xstrdup(s) : NULL;
}

static void repo_copy(sw_agent_repo *d, const sw_agent_repo *s)
{
	memset(d, 0, sizeof(*d));
	d->name = sw_xstrdup(s->name);
	d->url = sw_xstrdup(s->url);
	d->branches = s->branches ? sw_strv_dup(s->branches) : NULL;
	d->tags = s->tags ? sw_strv_dup(s->tags) : NULL;
	d->poll_ms = s->poll_ms;
	d->every_commit = s->every_commit;
	d->pipeline_file = xstrdup_or_null(s->pipeline_file);
	d->username = xstrdup_or_null(s->username);
	d->password = xstrdup_or_null(s->password);
	d->token = xstrdup_or_null(s->token);
	d->ssh_key = xstrdup_or_null(s->ssh_key);
	d->vars = s->vars ? sw_strv_dup(s->vars) : NULL;
	d->line = s->line;
	d->column = s->column;
}

static void secret_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void repo_clear(sw_agent_repo *r)
{
	free(r->name);
	free(r->url);
	sw_strv_free(r->branches);
	sw_strv_free(r->tags);
	free(r->pipeline_file);
	free(r->username);
	secret_free(r->password);
	secret_free(r->token);
	free(r->ssh_key);
	sw_strv_free(r->vars);
	memset(r, 0, sizeof(*r));
}

static void wrepo_clear(wrepo *r)
{
	repo_clear(&r->c);
	sw_strv_free(r->seen);
	r->seen = NULL;
}

/* ---------------------------------------------------------------- URLs */

static bool url_is_ssh(const char *url)
{
	if (strncmp(url, "ssh://", 6) == 0 || strncmp(url, "ssh+git://", 10) == 0 ||
	    strncmp(url, "git+ssh://", 10) == 0)
		return true;
	if (strstr(url, "://"))
		return false;
	/* scp-like "user@host:path" */
	const char *colon = strchr(url, ':');
	const char *slash = strchr(url, '/');
	return colon && (!slash || colon < slash) && strchr(url, '@') && url[0] != '/';
}

static bool url_is_https(const char *url)
{
	return strncmp(url, "https://", 8) == 0;
}

/* ---------------------------------------------------------------- one poll */

/* What one poll of one repository works with (a copy: reloads may happen meanwhile). */
typedef struct poll_ctx {
	sw_watcher *w;
	const sw_agent_repo *c;
	char *url;          /* the URL without its password (stored in the mirror, shown) */
	char *url_password; /* the password the URL carried, or NULL */
	unsigned cred_calls;
	bool userpass_given, sshkey_given;
	bool cred_refused; /* we stopped answering the credentials callback */
	bool cred_none;    /* the server asked and nothing was configured */
	bool cancelled;    /* the watcher is stopping */
	unsigned new_work;
	bool capped;
} poll_ctx;

static bool stopping(sw_watcher *w)
{
	pthread_mutex_lock(&w->lock);
	bool s = w->stop;
	pthread_mutex_unlock(&w->lock);
	return s;
}

/* The libgit2 adapter of this file: "watch REPO (URL): WHAT: libgit2's message". */
static int watch_fail(sw_error **err, const poll_ctx *pc, int gerr, const char *fmt, ...)
        SW_PRINTF(4, 5);
static int watch_fail(sw_error **err, const poll_ctx *pc, int gerr, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *what = sw_xvasprintf(fmt, ap);
	va_end(ap);
	const git_error *ge = git_error_last();
	cleanup_free char *raw = NULL;
	if (ge && ge->message && *ge->message)
		raw = sw_xasprintf("%s: %s", what, ge->message);
	else
		raw = sw_xstrdup(what);
	git_error_clear();
	const char *secret = pc->url_password  ? pc->url_password
	                     : pc->c->password ? pc->c->password
	                                       : pc->c->token;
	cleanup_free char *msg = sw_git_scrub(raw, secret);
	int code = gerr == GIT_ENOTFOUND ? SW_ERR_NOT_FOUND
	           : gerr == GIT_EAUTH   ? SW_ERR_AUTH
	                                 : SW_ERR_GENERIC;
	return sw_error_lib(err, code, SW_ERRSRC_GIT, gerr, "%s", msg);
}

static int cred_cb(git_credential **out, const char *url, const char *username_from_url,
                   unsigned int allowed_types, void *payload)
{
	(void)url;
	poll_ctx *pc = payload;
	const sw_agent_repo *c = pc->c;
	/* libgit2 asks again and again while the server says no: answer a few times only */
	if (++pc->cred_calls > MAX_CRED_CALLS) {
		pc->cred_refused = true;
		git_error_set_str(GIT_ERROR_NET, "too many authentication attempts");
		return GIT_EAUTH;
	}
	if (allowed_types & GIT_CREDENTIAL_USERPASS_PLAINTEXT) {
		const char *user = c->username         ? c->username
		                   : c->token          ? "oauth2"
		                   : username_from_url ? username_from_url
		                                       : NULL;
		const char *pass = c->token      ? c->token
		                   : c->password ? c->password
		                                 : pc->url_password;
		if (!user || !pass) {
			pc->cred_none = true;
			git_error_set_str(GIT_ERROR_NET, "the server asks for credentials");
			return GIT_EAUTH;
		}
		/* asked again: the server refused them, and they would not change */
		if (pc->userpass_given) {
			pc->cred_refused = true;
			git_error_set_str(GIT_ERROR_NET, "authentication failed");
			return GIT_EAUTH;
		}
		pc->userpass_given = true;
		return git_credential_userpass_plaintext_new(out, user, pass);
	}
	const char *ssh_user = username_from_url ? username_from_url
	                       : c->username     ? c->username
	                                         : "git";
	if (allowed_types & GIT_CREDENTIAL_SSH_KEY) {
		if (pc->sshkey_given) {
			pc->cred_refused = true;
			git_error_set_str(GIT_ERROR_NET, "authentication failed");
			return GIT_EAUTH;
		}
		pc->sshkey_given = true;
		if (c->ssh_key)
			return git_credential_ssh_key_new(out, ssh_user, NULL, c->ssh_key, NULL);
		return git_credential_ssh_key_from_agent(out, ssh_user);
	}
	if (allowed_types & GIT_CREDENTIAL_USERNAME)
		return git_credential_username_new(out, ssh_user);
	pc->cred_none = true;
	git_error_set_str(GIT_ERROR_NET, "no usable credential type");
	return GIT_EAUTH;
}

static int transfer_cb(const git_indexer_progress *stats, void *payload)
{
	(void)stats;
	poll_ctx *pc = payload;
	if (stopping(pc->w)) {
		pc->cancelled = true;
		return -1;
	}
	return 0;
}

static int sideband_cb(const char *str, int len, void *payload)
{
	(void)str;
	(void)len;
	return transfer_cb(NULL, payload);
}

char *sw_watcher_mirror_path(const char *state_dir, const char *name)
{
	cleanup_free char *leaf = sw_xasprintf("agent/mirrors/%s.git", name);
	return sw_path_join(state_dir, leaf);
}

/* Open the mirror, creating it (in a temporary folder renamed into place) when missing; its
 * "origin" is set to the URL without password. */
static int mirror_open(git_repository **out, bool *created, const char *path, poll_ctx *pc,
                       sw_error **err)
{
	*out = NULL;
	*created = false;
	struct stat st;
	int g;
	if (stat(path, &st) == 0) {
		/* the fetch uses an in-memory remote with the configured URL (mirror_fetch), so
		 * the mirror's own "origin" is only a note for people looking at it */
		g = git_repository_open_bare(out, path);
		if (g == 0)
			return 0;
		/* a mirror that cannot be used is made again */
		SW_LOG(SW_LOG_WARN, "watch %s: the mirror '%s' is damaged (%s): made again",
		       pc->c->name, path, git_error_last() ? git_error_last()->message : "?");
		git_error_clear();
		if (sw_fs_rm_rf(path, err) < 0)
			return -1;
	} else if (errno != ENOENT) {
		return sw_error_os(err, errno, "watch %s: '%s'", pc->c->name, path);
	}

	cleanup_free char *parent = sw_xstrdup(path);
	*strrchr(parent, '/') = '\0';
	if (sw_fs_mkdir_p(parent, 0755, err) < 0)
		return -1;
	cleanup_free char *tmp = NULL;
	if (sw_fs_mkdtemp(&tmp, parent, ".new-", err) < 0)
		return -1;
	git_repository *repo = NULL;
	git_remote *rem = NULL;
	git_config *cfg = NULL;
	int ret = -1;
	git_repository_init_options io;
	git_repository_init_options_init(&io, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
	io.flags = GIT_REPOSITORY_INIT_BARE | GIT_REPOSITORY_INIT_MKPATH;
	if ((g = git_repository_init_ext(&repo, tmp, &io)) < 0) {
		ret = watch_fail(err, pc, g, "create the mirror '%s'", path);
		goto out;
	}
	if ((g = git_remote_create_with_fetchspec(&rem, repo, "origin", pc->url,
	                                          "+refs/heads/*:refs/heads/*")) < 0 ||
	    (g = git_remote_add_fetch(repo, "origin", "+refs/tags/*:refs/tags/*")) < 0 ||
	    (g = git_repository_config(&cfg, repo)) < 0 ||
	    (g = git_config_set_bool(cfg, "remote.origin.prune", 1)) < 0 ||
	    (g = git_config_set_bool(cfg, "remote.origin.mirror", 1)) < 0) {
		ret = watch_fail(err, pc, g, "set up the mirror '%s'", path);
		goto out;
	}
	git_config_free(cfg);
	cfg = NULL;
	git_remote_free(rem);
	rem = NULL;
	git_repository_free(repo);
	repo = NULL;
	if (rename(tmp, path) < 0) {
		ret = sw_error_os(err, errno, "watch %s: rename '%s' to '%s'", pc->c->name, tmp,
		                  path);
		goto out;
	}
	if ((g = git_repository_open_bare(out, path)) < 0) {
		ret = watch_fail(err, pc, g, "open the mirror '%s'", path);
		goto out;
	}
	*created = true;
	ret = 0;
out:
	git_config_free(cfg);
	git_remote_free(rem);
	git_repository_free(repo);
	if (ret < 0) {
		sw_error *e = NULL;
		if (sw_fs_rm_rf(tmp, &e) < 0)
			sw_error_free(e);
	}
	return ret;
}

static int mirror_fetch(git_repository *repo, poll_ctx *pc, sw_error **err)
{
	const char *url = pc->c->url;
	int feats = git_libgit2_features();
	if (url_is_ssh(url) && !(feats & GIT_FEATURE_SSH))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "fetch '%s': ssh not supported by this libgit2", pc->url);
	if (url_is_https(url) && !(feats & GIT_FEATURE_HTTPS))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "fetch '%s': https not supported by this libgit2", pc->url);
	/* An in-memory remote: git_remote_lookup reads remote.origin.* through the config's
	 * regular expressions, and libgit2 1.5 leaks ~100 kB of pcre2 data each time (an idle
	 * agent polling 20 repositories every second grew by 300 MB in a minute). */
	git_remote *rem = NULL;
	git_remote_create_options ro;
	git_remote_create_options_init(&ro, GIT_REMOTE_CREATE_OPTIONS_VERSION);
	ro.repository = repo;
	ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
	int g = git_remote_create_with_opts(&rem, pc->url, &ro);
	if (g < 0)
		return watch_fail(err, pc, g, "fetch '%s'", pc->url);
	char *specs[] = { "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*" };
	git_strarray refspecs = { .strings = specs, .count = 2 };
	git_fetch_options fo;
	git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
	fo.prune = GIT_FETCH_PRUNE;
	fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_ALL;
	fo.update_fetchhead = 0;
	fo.callbacks.credentials = cred_cb;
	fo.callbacks.transfer_progress = transfer_cb;
	fo.callbacks.sideband_progress = sideband_cb;
	fo.callbacks.payload = pc;
	g = git_remote_fetch(rem, &refspecs, &fo, "slipway watch");
	git_remote_free(rem);
	if (g == 0)
		return 0;
	if (pc->cancelled) {
		git_error_clear();
		return sw_error_set(err, SW_ERR_CANCELLED, "fetch '%s': cancelled", pc->url);
	}
	if (pc->cred_refused) {
		git_error_clear();
		return sw_error_set(err, SW_ERR_AUTH, "credentials refused for %s", pc->url);
	}
	if (pc->cred_none) {
		git_error_clear();
		return sw_error_set(err, SW_ERR_AUTH,
		                    "credentials refused for %s (none configured for it)", pc->url);
	}
	return watch_fail(err, pc, g, "fetch '%s'", pc->url);
}

static bool matches_any(char *const *patterns, const char *name)
{
	for (size_t i = 0; patterns && patterns[i]; i++) {
		if (sw_pl_glob_match(patterns[i], name))
			return true;
	}
	return false;
}

/* Add one work item; *added counts it when it was new. */
static int add_item(poll_ctx *pc, const char *sha, const char *ref, const char *tag, sw_error **err)
{
	cleanup_free char *id = tag ? sw_xasprintf("git:%s:%s:tag:%s", pc->c->name, sha, tag)
	                            : sw_xasprintf("git:%s:%s", pc->c->name, sha);
	sw_work wk = {
		.id = id,
		.source = pc->c->name,
		.kind = (char *)"git",
		.sha = (char *)sha,
		.ref = (char *)ref,
		.state = SW_WORK_QUEUED,
		.exit_code = -1,
		.queued_at = wall_ms(),
	};
	bool added = false;
	if (sw_journal_add(&added, pc->w->j, &wk, err) < 0)
		return sw_error_wrap(err, "watch %s: queue %s", pc->c->name, id);
	if (added) {
		pc->new_work++;
		SW_LOG(SW_LOG_INFO, "watch %s: new work %s (%s)", pc->c->name, id, ref);
	}
	return 0;
}

/* The commits of a branch to start: its head alone, or every commit since `old` (oldest first,
 * at most MAX_COMMITS_PER_POLL; *upto gets the last one taken when capped). */
static int branch_commits(char ***out, bool *capped, git_repository *repo, const git_oid *head,
                          const git_oid *old, bool every, poll_ctx *pc, const char *ref,
                          sw_error **err)
{
	*out = NULL;
	*capped = false;
	char sha[GIT_OID_HEXSZ + 1];
	if (!old || !every) {
		git_oid_tostr(sha, sizeof(sha), head);
		sw_strv_push(out, sha);
		return 0;
	}
	git_revwalk *walk = NULL;
	int g;
	if ((g = git_revwalk_new(&walk, repo)) < 0 ||
	    (g = git_revwalk_sorting(walk, GIT_SORT_TOPOLOGICAL | GIT_SORT_REVERSE)) < 0 ||
	    (g = git_revwalk_push(walk, head)) < 0 || (g = git_revwalk_hide(walk, old)) < 0) {
		git_revwalk_free(walk);
		return watch_fail(err, pc, g, "list the new commits of %s", ref);
	}
	git_oid oid;
	size_t n = 0, total = 0;
	while ((g = git_revwalk_next(&oid, walk)) == 0) {
		total++;
		if (n < MAX_COMMITS_PER_POLL) {
			git_oid_tostr(sha, sizeof(sha), &oid);
			sw_strv_push(out, sha);
			n++;
		}
	}
	git_revwalk_free(walk);
	if (g != GIT_ITEROVER) {
		sw_strv_free(*out);
		*out = NULL;
		return watch_fail(err, pc, g, "list the new commits of %s", ref);
	}
	git_error_clear();
	if (total > n) {
		*capped = true;
		SW_LOG(SW_LOG_INFO,
		       "watch %s: %zu new commits on %s: the oldest %d are queued now, the rest at "
		       "the next polls",
		       pc->c->name, total, ref, MAX_COMMITS_PER_POLL);
	}
	if (!*out)
		*out = sw_xcalloc(1, sizeof(char *));
	return 0;
}

/* One ref of the mirror: start what is new, then record its head. */
static int handle_ref(poll_ctx *pc, git_repository *repo, const char *refname, bool is_tag,
                      bool first_poll, sw_error **err)
{
	const char *shortname = refname + (is_tag ? 10 : 11);
	git_object *obj = NULL;
	int g = git_revparse_single(&obj, repo, refname);
	git_object *peeled = NULL;
	if (g == 0)
		g = git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT);
	git_object_free(obj);
	if (g < 0) {
		/* a tag of a tree or a blob: nothing to build */
		SW_LOG(SW_LOG_DEBUG, "watch %s: %s is not a commit", pc->c->name, refname);
		git_error_clear();
		return 0;
	}
	git_oid head = *git_object_id(peeled);
	git_object_free(peeled);
	char head_sha[GIT_OID_HEXSZ + 1];
	git_oid_tostr(head_sha, sizeof(head_sha), &head);

	cleanup_free char *old_sha = sw_journal_ref_get(pc->w->j, pc->c->name, refname);
	if (old_sha && strcmp(old_sha, head_sha) == 0)
		return 0;
	const char *record = head_sha;
	cleanup_free char *record_buf = NULL;
	if (is_tag) {
		/* the tags a repository has when it is first watched are history, not new work */
		if (!first_poll && add_item(pc, head_sha, refname, shortname, err) < 0)
			return -1;
	} else {
		git_oid old;
		bool have_old = old_sha && git_oid_fromstr(&old, old_sha) == 0;
		if (have_old) {
			/* a force-push (or an old head the mirror does not have): the new head only
			 */
			git_commit *oc = NULL;
			bool known = git_commit_lookup(&oc, repo, &old) == 0;
			git_commit_free(oc);
			if (!known || git_graph_descendant_of(repo, &head, &old) != 1) {
				SW_LOG(SW_LOG_INFO,
				       "watch %s: %s was rewritten (force-push): %.12s",
				       pc->c->name, refname, head_sha);
				have_old = false;
			}
			git_error_clear();
		}
		cleanup_strv char **shas = NULL;
		bool capped = false;
		if (branch_commits(&shas, &capped, repo, &head, have_old ? &old : NULL,
		                   pc->c->every_commit, pc, refname, err) < 0)
			return -1;
		for (size_t i = 0; shas[i]; i++) {
			if (add_item(pc, shas[i], refname, NULL, err) < 0)
				return -1;
		}
		if (capped) {
			pc->capped = true;
			record = record_buf = sw_xstrdup(shas[sw_strv_len(shas) - 1]);
		}
	}
	/* after the items: a crash in between adds the same ids again, which are ignored */
	if (sw_journal_ref_set(pc->w->j, pc->c->name, refname, record, err) < 0)
		return sw_error_wrap(err, "watch %s: record %s", pc->c->name, refname);
	return 0;
}

/* The refs of the mirror that match the repository's patterns, "refs/heads/..." then
 * "refs/tags/...". */
static int matching_refs(char ***out, git_repository *repo, poll_ctx *pc, sw_error **err)
{
	*out = NULL;
	static const char *const globs[] = { "refs/heads/*", "refs/tags/*" };
	for (int k = 0; k < 2; k++) {
		char *const *patterns = k == 0 ? pc->c->branches : pc->c->tags;
		static char *const star[] = { (char *)"*", NULL };
		if (k == 0 && !patterns)
			patterns = star;
		if (!patterns)
			continue;
		git_reference_iterator *it = NULL;
		int g = git_reference_iterator_glob_new(&it, repo, globs[k]);
		if (g < 0)
			return watch_fail(err, pc, g, "list the refs of the mirror");
		const char *name;
		while ((g = git_reference_next_name(&name, it)) == 0) {
			const char *shortname = name + (k == 0 ? 11 : 10);
			if (matches_any(patterns, shortname))
				sw_strv_push(out, name);
		}
		git_reference_iterator_free(it);
		if (g != GIT_ITEROVER)
			return watch_fail(err, pc, g, "list the refs of the mirror");
		git_error_clear();
	}
	if (!*out)
		*out = sw_xcalloc(1, sizeof(char *));
	return 0;
}

/* Poll one repository: fetch, then queue what is new. `seen` (in and out) is the list of the
 * refs the previous poll saw (those gone now are forgotten in the journal). */
static int poll_repo(poll_ctx *pc, char ***seen, sw_error **err)
{
	const sw_agent_repo *c = pc->c;
	cleanup_free char *path = sw_watcher_mirror_path(pc->w->state_dir, c->name);
	git_repository *repo = NULL;
	bool created = false;
	char **refs = NULL;
	git_config *cfg = NULL;
	int ret = -1;
	if (mirror_open(&repo, &created, path, pc, err) < 0)
		goto out;
	int seen_flag = 0;
	if (!created) {
		git_config *snap = NULL;
		if (git_repository_config_snapshot(&snap, repo) == 0) {
			if (git_config_get_bool(&seen_flag, snap, "slipway.polled") < 0)
				seen_flag = 0;
			git_config_free(snap);
		}
		git_error_clear();
	}
	bool first_poll = !seen_flag;
	if (mirror_fetch(repo, pc, err) < 0)
		goto out;
	if (matching_refs(&refs, repo, pc, err) < 0)
		goto out;
	for (size_t i = 0; refs[i]; i++) {
		if (stopping(pc->w)) {
			ret = sw_error_set(err, SW_ERR_CANCELLED, "watch %s: cancelled", c->name);
			goto out;
		}
		bool is_tag = strncmp(refs[i], "refs/tags/", 10) == 0;
		if (handle_ref(pc, repo, refs[i], is_tag, first_poll, err) < 0)
			goto out;
	}
	/* refs gone since the last poll (deleted, or no longer matching) are forgotten */
	for (size_t i = 0; *seen && (*seen)[i]; i++) {
		if (strv_has(refs, (*seen)[i]))
			continue;
		if (sw_journal_ref_set(pc->w->j, c->name, (*seen)[i], NULL, err) < 0) {
			sw_error_wrap(err, "watch %s: forget %s", c->name, (*seen)[i]);
			goto out;
		}
	}
	sw_strv_free(*seen);
	*seen = refs;
	refs = NULL;
	if (first_poll) {
		int g;
		if ((g = git_repository_config(&cfg, repo)) < 0 ||
		    (g = git_config_set_bool(cfg, "slipway.polled", 1)) < 0) {
			ret = watch_fail(err, pc, g, "mark the mirror '%s'", path);
			goto out;
		}
	}
	ret = 0;
out:
	git_config_free(cfg);
	sw_strv_free(refs);
	git_repository_free(repo);
	return ret;
}

/* ---------------------------------------------------------------- the thread */

static wrepo *find_repo(sw_watcher *w, const char *name)
{
	for (size_t i = 0; i < w->n_repos; i++) {
		if (strcmp(w->repos[i].c.name, name) == 0)
			return &w->repos[i];
	}
	return NULL;
}

/* Poll repository `name` (its config copied under the lock) and update its schedule. */
static void poll_one(sw_watcher *w, wrepo *r)
{
	/* called with the lock held; released while polling */
	sw_agent_repo c;
	repo_copy(&c, &r->c);
	uint64_t gen = r->gen;
	char **seen = r->seen ? sw_strv_dup(r->seen) : NULL;
	pthread_mutex_unlock(&w->lock);

	poll_ctx pc = { .w = w, .c = &c };
	pc.url = sw_git_url_safe(c.url, &pc.url_password);
	sw_error *err = NULL;
	int rc = poll_repo(&pc, &seen, &err);
	bool cancelled = rc < 0 && sw_error_code_of(err) == SW_ERR_CANCELLED;
	if (rc == 0) {
		if (pc.new_work > 0 && w->s)
			sw_sched_kick(w->s);
		if (w->hooks.polled)
			w->hooks.polled(c.name, pc.new_work, w->hooks.payload);
		SW_LOG(SW_LOG_DEBUG, "watch %s: polled, %u new", c.name, pc.new_work);
	} else if (!cancelled) {
		/* work added before the error is queued all the same */
		if (pc.new_work > 0 && w->s)
			sw_sched_kick(w->s);
		cleanup_free char *msg = sw_redact(sw_error_msg(err));
		if (w->hooks.poll_error)
			w->hooks.poll_error(c.name, msg, w->hooks.payload);
		pthread_mutex_lock(&w->lock);
		wrepo *cur = find_repo(w, c.name);
		unsigned failures = cur && cur->gen == gen ? cur->failures + 1 : 1;
		pthread_mutex_unlock(&w->lock);
		wrepo tmp = { .c = c, .failures = failures };
		SW_LOG(SW_LOG_WARN, "watch %s: %s (next try in %.1fs)", c.name, msg,
		       (double)next_delay(&tmp) / 1000.0);
	}
	sw_error_free(err);
	free(pc.url);
	secret_free(pc.url_password);

	pthread_mutex_lock(&w->lock);
	r = find_repo(w, c.name);
	if (r && r->gen == gen && !cancelled) {
		r->failures = rc == 0 ? 0 : r->failures + 1;
		r->more = rc == 0 && pc.capped;
		r->next_ms = mono_ms() + (r->more ? 0 : jitter(w, next_delay(r)));
		if (rc == 0) {
			sw_strv_free(r->seen);
			r->seen = seen;
			seen = NULL;
		}
	}
	sw_strv_free(seen);
	repo_clear(&c);
}

static void *watch_thread(void *arg)
{
	sw_watcher *w = arg;
	pthread_mutex_lock(&w->lock);
	while (!w->stop) {
		bool all = w->poll_now;
		w->poll_now = false;
		int64_t now = mono_ms();
		/* poll the due repositories, one at a time, by name (the list may change while
		 * the lock is released) */
		cleanup_strv char **due = NULL;
		for (size_t i = 0; i < w->n_repos; i++) {
			if (all || w->repos[i].next_ms <= now)
				sw_strv_push(&due, w->repos[i].c.name);
		}
		for (size_t i = 0; due && due[i] && !w->stop; i++) {
			wrepo *r = find_repo(w, due[i]);
			if (r)
				poll_one(w, r);
		}
		if (w->stop || w->poll_now)
			continue;
		int64_t next = INT64_MAX;
		for (size_t i = 0; i < w->n_repos; i++) {
			if (w->repos[i].next_ms < next)
				next = w->repos[i].next_ms;
		}
		now = mono_ms();
		if (next <= now)
			continue;
		if (next == INT64_MAX)
			next = now + 3600 * 1000;
		struct timespec ts = { .tv_sec = next / 1000, .tv_nsec = (next % 1000) * 1000000 };
		pthread_cond_timedwait(&w->cond, &w->lock, &ts);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* ---------------------------------------------------------------- API */

/* Replace the list of repositories (lock held): unchanged ones keep their schedule, new and
 * changed ones are due now. */
static void set_repos(sw_watcher *w, const sw_agent_config *cfg)
{
	wrepo *nv = sw_xcalloc(cfg->n_repos ? cfg->n_repos : 1, sizeof(*nv));
	int64_t now = mono_ms();
	for (size_t i = 0; i < cfg->n_repos; i++) {
		const sw_agent_repo *src = &cfg->repos[i];
		wrepo *old = find_repo(w, src->name);
		wrepo *d = &nv[i];
		repo_copy(&d->c, src);
		if (old && repo_same(&old->c, src)) {
			d->gen = old->gen;
			d->next_ms = old->next_ms;
			d->failures = old->failures;
			d->more = old->more;
			d->seen = old->seen;
			old->seen = NULL;
		} else {
			d->gen = ++w->next_gen;
			d->next_ms = now;
			if (old) {
				d->seen = old->seen;
				old->seen = NULL;
			}
		}
	}
	for (size_t i = 0; i < w->n_repos; i++)
		wrepo_clear(&w->repos[i]);
	free(w->repos);
	w->repos = nv;
	w->n_repos = cfg->n_repos;
}

int sw_watcher_start(sw_watcher **out, const sw_agent_config *cfg, sw_journal *j, sw_sched *s,
                     const sw_watch_hooks *hooks, sw_error **err)
{
	*out = NULL;
	if (!cfg || !j)
		return sw_error_set(err, SW_ERR_INVALID, "watcher: no config or journal");
	if (!cfg->state_dir || !*cfg->state_dir)
		return sw_error_set(err, SW_ERR_INVALID, "watcher: no state folder");
	git_libgit2_init();
	sw_watcher *w = sw_xcalloc(1, sizeof(*w));
	w->state_dir = sw_xstrdup(cfg->state_dir);
	w->j = j;
	w->s = s;
	if (hooks)
		w->hooks = *hooks;
	w->seed = (unsigned)(wall_ms() ^ (int64_t)getpid());
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	set_repos(w, cfg);
	cleanup_free char *mirrors = sw_path_join(w->state_dir, "agent/mirrors");
	if (sw_fs_mkdir_p(mirrors, 0755, err) < 0)
		goto fail;
	int e = pthread_create(&w->thread, NULL, watch_thread, w);
	if (e != 0) {
		sw_error_os(err, e, "watcher: start its thread");
		goto fail;
	}
	w->started = true;
	*out = w;
	return 0;
fail:
	sw_watcher_stop(w);
	return -1;
}

int sw_watcher_reload(sw_watcher *w, const sw_agent_config *cfg, sw_error **err)
{
	if (!w || !cfg)
		return sw_error_set(err, SW_ERR_INVALID, "watcher: no config");
	pthread_mutex_lock(&w->lock);
	set_repos(w, cfg);
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

void sw_watcher_poll_now(sw_watcher *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->poll_now = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void sw_watcher_stop(sw_watcher *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	if (w->started)
		pthread_join(w->thread, NULL);
	for (size_t i = 0; i < w->n_repos; i++)
		wrepo_clear(&w->repos[i]);
	free(w->repos);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w->state_dir);
	free(w);
	git_libgit2_shutdown();
}
