/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The checkout of a pipeline's commit with libgit2: a local repository (work tree or bare) is
 * opened in place, a URL is cloned bare into a temporary folder that is removed afterwards. The
 * revision (branch, tag, full or abbreviated sha, "origin/x" in a clone; HEAD by default) is
 * peeled to a commit whose tree is written into the destination as plain files (modes and
 * symlinks kept, no .git), and what the runner's variables need is read from it: sha, branch,
 * tag, ref name, message, author, time and the paths the commit changed. This file owns the
 * libgit2 error adapter; URLs are shown without their password in every message.
 */
#include "agent/agent_internal.h"

#include <dirent.h>
#include <errno.h>
#include <git2.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- libgit2 setup and errors */

static pthread_once_t git_once = PTHREAD_ONCE_INIT;

static void git_init_once(void)
{
	/* never shut down: the library stays usable for the life of the process */
	git_libgit2_init();
}

/* The repository as messages show it: a URL without its password. */
typedef struct repo_ctx {
	const char *repo;     /* as given */
	char *display;        /* shown in messages */
	const char *rev;      /* as given, may be NULL */
	const char *password; /* points into a copy; scrubbed from library messages */
	char *url_copy;
} repo_ctx;

char *sw_git_url_safe(const char *url, char **password_out)
{
	*password_out = NULL;
	const char *scheme = strstr(url, "://");
	if (!scheme)
		return sw_xstrdup(url);
	const char *auth = scheme + 3;
	size_t hostlen = strcspn(auth, "/?#");
	const char *at = memrchr(auth, '@', hostlen);
	if (!at)
		return sw_xstrdup(url);
	const char *colon = memchr(auth, ':', (size_t)(at - auth));
	if (!colon)
		return sw_xstrdup(url);
	*password_out = sw_xstrndup(colon + 1, (size_t)(at - colon - 1));
	return sw_xasprintf("%.*s%s", (int)(colon - url), url, at);
}

char *sw_git_scrub(const char *s, const char *secret)
{
	char *red = sw_redact(s);
	if (!secret || strlen(secret) < 3)
		return red;
	size_t sl = strlen(secret);
	sw_buf b = SW_BUF_INIT(0);
	const char *p = red;
	const char *hit;
	while ((hit = strstr(p, secret)) != NULL) {
		if (sw_buf_append(&b, p, (size_t)(hit - p), NULL) < 0 ||
		    sw_buf_puts(&b, "***", NULL) < 0)
			break;
		p = hit + sl;
	}
	if (sw_buf_puts(&b, p, NULL) < 0) {
		sw_buf_free(&b);
		return red;
	}
	free(red);
	return sw_buf_steal(&b, NULL);
}

static int code_of_git(int gerr)
{
	switch (gerr) {
	case GIT_ENOTFOUND:
		return SW_ERR_NOT_FOUND;
	case GIT_EAMBIGUOUS:
	case GIT_EINVALIDSPEC:
	case GIT_EINVALID:
		return SW_ERR_INVALID;
	case GIT_EAUTH:
	case GIT_ECERTIFICATE:
		return SW_ERR_AUTH;
	default:
		return SW_ERR_GENERIC;
	}
}

/* The libgit2 adapter: "git checkout of 'REPO' at 'REV': WHAT: libgit2's message". */
static int git_fail(sw_error **err, const repo_ctx *rc, int gerr, const char *fmt, ...)
        SW_PRINTF(4, 5);
static int git_fail(sw_error **err, const repo_ctx *rc, int gerr, const char *fmt, ...)
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
	cleanup_free char *msg = sw_git_scrub(raw, rc->password);
	return sw_error_lib(err, code_of_git(gerr), SW_ERRSRC_GIT, gerr,
	                    "git checkout of '%s' at '%s': %s", rc->display,
	                    rc->rev ? rc->rev : "HEAD", msg);
}

/* ---------------------------------------------------------------- commit info */

void sw_git_commit_clear(sw_git_commit *c)
{
	if (!c)
		return;
	free(c->branch);
	free(c->tag);
	free(c->ref_name);
	free(c->message);
	free(c->title);
	free(c->author);
	sw_strv_free(c->changed);
	memset(c, 0, sizeof(*c));
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct path_set {
	char **v;
	size_t n, cap;
} path_set;

static void path_set_add(path_set *s, const char *p)
{
	if (!p || !*p)
		return;
	if (s->n + 2 > s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->v = sw_xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	s->v[s->n++] = sw_xstrdup(p);
	s->v[s->n] = NULL;
}

/* Paths changed by the commit vs its first parent (every file of a root commit). Both sides of
 * a rename count. Sorted, no duplicates. */
static int changed_paths(char ***out, git_repository *repo, git_commit *commit, const repo_ctx *rc,
                         sw_error **err)
{
	git_tree *tree = NULL, *ptree = NULL;
	git_commit *parent = NULL;
	git_diff *diff = NULL;
	path_set s = { 0 };
	int g;
	if ((g = git_commit_tree(&tree, commit)) < 0) {
		g = git_fail(err, rc, g, "read the commit's tree");
		goto out;
	}
	if (git_commit_parentcount(commit) > 0) {
		if ((g = git_commit_parent(&parent, commit, 0)) < 0 ||
		    (g = git_commit_tree(&ptree, parent)) < 0) {
			g = git_fail(err, rc, g, "read the first parent");
			goto out;
		}
	}
	git_diff_options opts;
	git_diff_options_init(&opts, GIT_DIFF_OPTIONS_VERSION);
	if ((g = git_diff_tree_to_tree(&diff, repo, ptree, tree, &opts)) < 0) {
		g = git_fail(err, rc, g, "list the changed files");
		goto out;
	}
	size_t nd = git_diff_num_deltas(diff);
	for (size_t i = 0; i < nd; i++) {
		const git_diff_delta *d = git_diff_get_delta(diff, i);
		path_set_add(&s, d->old_file.path);
		if (!d->old_file.path || strcmp(d->old_file.path, d->new_file.path) != 0)
			path_set_add(&s, d->new_file.path);
	}
	if (s.n > 1)
		qsort(s.v, s.n, sizeof(*s.v), str_cmp);
	size_t w = 0;
	for (size_t i = 0; i < s.n; i++) {
		if (w > 0 && strcmp(s.v[w - 1], s.v[i]) == 0) {
			free(s.v[i]);
			continue;
		}
		s.v[w++] = s.v[i];
	}
	if (!s.v)
		s.v = sw_xcalloc(1, sizeof(*s.v));
	s.v[w] = NULL;
	*out = s.v;
	s.v = NULL;
	g = 0;
out:
	sw_strv_free(s.v);
	git_diff_free(diff);
	git_tree_free(ptree);
	git_tree_free(tree);
	git_commit_free(parent);
	return g;
}

/* A branch (local, then remote-tracking without the remote's name when `remotes`) whose tip
 * is `oid`; the branch HEAD points to wins. NULL when none. */
static char *branch_at(git_repository *repo, const git_oid *oid, bool remotes)
{
	git_reference *head = NULL;
	if (git_repository_head(&head, repo) == 0) {
		const git_oid *t = git_reference_target(head);
		if (git_reference_is_branch(head) && t && git_oid_equal(t, oid)) {
			char *r = sw_xstrdup(git_reference_shorthand(head));
			git_reference_free(head);
			return r;
		}
		git_reference_free(head);
	}
	char *best = NULL;
	for (int pass = 0; pass < (remotes ? 2 : 1) && !best; pass++) {
		git_branch_iterator *it = NULL;
		if (git_branch_iterator_new(&it, repo,
		                            pass ? GIT_BRANCH_REMOTE : GIT_BRANCH_LOCAL) < 0)
			continue;
		git_reference *ref = NULL;
		git_branch_t type;
		while (git_branch_next(&ref, &type, it) == 0) {
			const git_oid *t = git_reference_target(ref);
			const char *name = git_reference_shorthand(ref);
			if (pass) {
				const char *slash = strchr(name, '/');
				name = slash ? slash + 1 : NULL;
			}
			if (t && name && strcmp(name, "HEAD") != 0 && git_oid_equal(t, oid) &&
			    (!best || strcmp(name, best) < 0)) {
				free(best);
				best = sw_xstrdup(name);
			}
			git_reference_free(ref);
		}
		git_branch_iterator_free(it);
	}
	return best;
}

typedef struct tag_find {
	git_repository *repo;
	const git_oid *want;
	char *best;
} tag_find;

static int tag_cb(const char *name, git_oid *oid, void *payload)
{
	tag_find *tf = payload;
	git_object *obj = NULL, *peeled = NULL;
	if (git_object_lookup(&obj, tf->repo, oid, GIT_OBJECT_ANY) == 0 &&
	    git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT) == 0 &&
	    git_oid_equal(git_object_id(peeled), tf->want)) {
		const char *shortname = strncmp(name, "refs/tags/", 10) == 0 ? name + 10 : name;
		if (!tf->best || strcmp(shortname, tf->best) < 0) {
			free(tf->best);
			tf->best = sw_xstrdup(shortname);
		}
	}
	git_object_free(peeled);
	git_object_free(obj);
	git_error_clear();
	return 0;
}

/* A tag pointing (peeled) at the commit `oid`, the first by name; NULL when none. */
static char *tag_at(git_repository *repo, const git_oid *oid)
{
	tag_find tf = { repo, oid, NULL };
	(void)git_tag_foreach(repo, tag_cb, &tf);
	return tf.best;
}

/* ---------------------------------------------------------------- checkout */

static bool is_url(const char *repo)
{
	if (strstr(repo, "://"))
		return true;
	/* scp-like "user@host:path", when no such local path exists */
	const char *colon = strchr(repo, ':');
	const char *slash = strchr(repo, '/');
	struct stat st;
	return colon && (!slash || colon < slash) && strchr(repo, '@') && stat(repo, &st) < 0;
}

static int dest_prepare(const char *dest, sw_error **err)
{
	DIR *d = opendir(dest);
	if (d) {
		struct dirent *de;
		bool empty = true;
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
				empty = false;
				break;
			}
		}
		closedir(d);
		if (!empty)
			return sw_error_set(err, SW_ERR_CONFLICT,
			                    "git checkout: the folder '%s' is not empty", dest);
		return 0;
	}
	if (errno != ENOENT)
		return sw_error_os(err, errno, "git checkout: open '%s'", dest);
	return sw_fs_mkdir_p(dest, 0755, err);
}

/* Clone `url` bare (every branch and tag) into `dir`. */
static int clone_bare(git_repository **out, const char *url, const char *dir, const repo_ctx *rc,
                      sw_error **err)
{
	git_clone_options opts;
	git_clone_options_init(&opts, GIT_CLONE_OPTIONS_VERSION);
	opts.bare = 1;
	opts.checkout_opts.checkout_strategy = GIT_CHECKOUT_NONE;
	opts.fetch_opts.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_ALL;
	int g = git_clone(out, url, dir, &opts);
	if (g < 0)
		return git_fail(err, rc, g, "clone");
	return 0;
}

/* Resolve the revision to an object; in a clone "x" may also mean "origin/x". Fills the ref
 * it named (NULL for a sha or an expression). */
static int resolve_rev(git_object **obj, git_reference **ref, git_repository *repo, const char *rev,
                       bool cloned, const repo_ctx *rc, sw_error **err)
{
	*obj = NULL;
	*ref = NULL;
	const char *spec = rev && *rev ? rev : "HEAD";
	int g = git_revparse_single(obj, repo, spec);
	cleanup_free char *remote = NULL;
	if (g == GIT_ENOTFOUND && cloned && strcmp(spec, "HEAD") != 0) {
		remote = sw_xasprintf("origin/%s", spec);
		git_error_clear();
		g = git_revparse_single(obj, repo, remote);
		if (g == 0)
			spec = remote;
		else
			g = GIT_ENOTFOUND;
	}
	if (g < 0) {
		if (g == GIT_ENOTFOUND || g == GIT_EINVALIDSPEC || g == GIT_EAMBIGUOUS) {
			git_error_clear();
			return sw_error_set(
			        err, g == GIT_EAMBIGUOUS ? SW_ERR_INVALID : SW_ERR_NOT_FOUND,
			        "git checkout of '%s': %s revision '%s'", rc->display,
			        g == GIT_EAMBIGUOUS ? "ambiguous" : "unknown", rev ? rev : "HEAD");
		}
		return git_fail(err, rc, g, "resolve the revision");
	}
	if (strcmp(spec, "HEAD") != 0 && git_reference_dwim(ref, repo, spec) < 0) {
		*ref = NULL;
		git_error_clear();
	}
	return 0;
}

static void fill_refs(sw_git_commit *out, git_repository *repo, const git_oid *oid,
                      git_reference *ref, const char *rev, bool cloned)
{
	bool head = !rev || !*rev || strcmp(rev, "HEAD") == 0;
	if (head) {
		git_reference *h = NULL;
		if (!git_repository_head_detached(repo) && git_repository_head(&h, repo) == 0 &&
		    git_reference_is_branch(h))
			out->branch = sw_xstrdup(git_reference_shorthand(h));
		git_reference_free(h);
		if (!out->branch)
			out->tag = tag_at(repo, oid); /* a detached HEAD is like a sha */
	} else if (ref && git_reference_is_branch(ref)) {
		out->branch = sw_xstrdup(git_reference_shorthand(ref));
	} else if (ref && git_reference_is_remote(ref)) {
		const char *s = git_reference_shorthand(ref);
		const char *slash = strchr(s, '/');
		out->branch = sw_xstrdup(slash ? slash + 1 : s);
	} else if (ref && git_reference_is_tag(ref)) {
		out->tag = sw_xstrdup(git_reference_shorthand(ref));
	} else {
		/* a sha (or an expression): a branch whose tip it is, and a tag pointing at it */
		out->branch = branch_at(repo, oid, cloned);
		out->tag = tag_at(repo, oid);
	}
	out->ref_name = sw_xstrdup(out->branch ? out->branch
	                           : out->tag  ? out->tag
	                                       : out->short_sha);
}

static void fill_commit(sw_git_commit *out, git_commit *commit)
{
	git_oid_tostr(out->sha, sizeof(out->sha), git_commit_id(commit));
	memcpy(out->short_sha, out->sha, 8);
	out->short_sha[8] = '\0';
	const char *msg = git_commit_message(commit);
	out->message = sw_xstrdup(msg ? msg : "");
	size_t tl = strcspn(out->message, "\n");
	while (tl > 0 && out->message[tl - 1] == '\r')
		tl--;
	out->title = sw_xstrndup(out->message, tl);
	const git_signature *a = git_commit_author(commit);
	out->author =
	        sw_xasprintf("%s <%s>", a && a->name ? a->name : "", a && a->email ? a->email : "");
	out->time = (int64_t)git_commit_time(commit);
}

int sw_git_checkout(sw_git_commit *out, const char *repo, const char *rev, const char *dest,
                    const char *tmp_dir, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!repo || !*repo)
		return sw_error_set(err, SW_ERR_INVALID, "git checkout: no repository given");
	if (!dest || !*dest)
		return sw_error_set(err, SW_ERR_INVALID, "git checkout: no destination given");
	pthread_once(&git_once, git_init_once);

	repo_ctx rc = { .repo = repo, .rev = rev };
	char *pw = NULL;
	rc.display = sw_git_url_safe(repo, &pw);
	rc.password = rc.url_copy = pw;

	git_repository *r = NULL;
	git_object *obj = NULL;
	git_object *cobj = NULL;
	git_reference *ref = NULL;
	char *clone_dir = NULL;
	int ret;
	bool cloned = is_url(repo);

	if ((ret = dest_prepare(dest, err)) < 0)
		goto out;
	if (cloned) {
		if ((ret = sw_fs_mkdtemp(&clone_dir, tmp_dir ? tmp_dir : sw_fs_tmpdir(),
		                         "slipway-git-", err)) < 0)
			goto out;
		cleanup_free char *bare = sw_path_join(clone_dir, "repo.git");
		if ((ret = clone_bare(&r, repo, bare, &rc, err)) < 0)
			goto out;
	} else {
		int g = git_repository_open_ext(&r, repo, 0, NULL);
		if (g < 0) {
			ret = git_fail(err, &rc, g, "open the repository");
			goto out;
		}
	}
	if ((ret = resolve_rev(&obj, &ref, r, rev, cloned, &rc, err)) < 0)
		goto out;
	int g = git_object_peel(&cobj, obj, GIT_OBJECT_COMMIT);
	if (g < 0) {
		git_error_clear();
		ret = sw_error_set(err, SW_ERR_INVALID,
		                   "git checkout of '%s': revision '%s' is not a commit",
		                   rc.display, rev ? rev : "HEAD");
		goto out;
	}
	git_commit *commit = (git_commit *)cobj;
	fill_commit(out, commit);
	fill_refs(out, r, git_commit_id(commit), ref, rev, cloned);
	if ((ret = changed_paths(&out->changed, r, commit, &rc, err)) < 0)
		goto out;

	/* Files only, into dest: the repository's index and work tree are left alone. Submodules
	 * (gitlinks) are not checked out: their folders stay empty, as after a plain clone. */
	git_checkout_options co;
	git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
	co.checkout_strategy = GIT_CHECKOUT_FORCE | GIT_CHECKOUT_RECREATE_MISSING |
	                       GIT_CHECKOUT_DONT_UPDATE_INDEX | GIT_CHECKOUT_DONT_WRITE_INDEX;
	co.target_directory = dest;
	co.dir_mode = 0755;
	co.file_mode = 0; /* from the tree: 0644 or 0755 */
	git_tree *tree = NULL;
	if ((g = git_commit_tree(&tree, commit)) < 0) {
		ret = git_fail(err, &rc, g, "read the commit's tree");
		goto out;
	}
	co.baseline = NULL;
	g = git_checkout_tree(r, (git_object *)tree, &co);
	git_tree_free(tree);
	if (g < 0) {
		ret = git_fail(err, &rc, g, "write the files into '%s'", dest);
		goto out;
	}
	ret = 0;
out:
	if (ret < 0)
		sw_git_commit_clear(out);
	git_reference_free(ref);
	git_object_free(cobj);
	git_object_free(obj);
	git_repository_free(r);
	if (clone_dir) {
		sw_error *e = NULL;
		if (sw_fs_rm_rf(clone_dir, &e) < 0)
			SW_LOG(SW_LOG_DEBUG, "git: remove '%s': %s", clone_dir, sw_error_msg(e));
		sw_error_free(e);
		free(clone_dir);
	}
	free(rc.display);
	free(rc.url_copy);
	return ret;
}
