/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's unit test program. Group "git": checkouts with libgit2 of real repositories made
 * with the git command (HEAD, branches, annotated and lightweight tags, abbreviated shas, a bare
 * repository, a file:// clone), the files written (modes, symlinks, no .git), the commit's
 * changed paths, and error messages (the revision named, a URL's password never shown). Group
 * "workspace": globs over a workspace (never following symlinks), copying paths out (modes,
 * mtimes, symlinks kept as links) and removing trees without crossing mounts. Each case works
 * in its own temporary folder, removed afterwards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "agent/agent_internal.h"
#include "test_agent_gitlab.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define CHECK_OK(expr)                                                \
	do {                                                          \
		sw_error *err = NULL;                                 \
		int check_r_ = (expr);                                \
		if (check_r_ < 0)                                     \
			fail_msg("%s: %s", #expr, sw_error_msg(err)); \
		sw_error_free(err);                                   \
	} while (0)

typedef struct fixture {
	char *tmp;
	char *repo;    /* a work tree: main (2 commits), feature, tags v1 (annotated), light */
	char sha1[41]; /* the root commit */
	char sha2[41]; /* main's tip */
} fixture;

static char *P(const char *a, const char *b)
{
	return sw_path_join(a, b);
}

static void sh(const char *dir, const char *script)
{
	cleanup_free char *cmd = sw_xasprintf(
	        "cd '%s' && export GIT_AUTHOR_NAME='Ada Tester' GIT_AUTHOR_EMAIL=ada@example.com "
	        "GIT_COMMITTER_NAME='Ada Tester' GIT_COMMITTER_EMAIL=ada@example.com "
	        "GIT_CONFIG_NOSYSTEM=1 HOME='%s' && set -e && %s",
	        dir, dir, script);
	int st = system(cmd);
	if (st != 0)
		fail_msg("shell failed (%d): %s", st, script);
}

static void sh_out(char *out, size_t len, const char *dir, const char *script)
{
	cleanup_free char *cmd = sw_xasprintf("cd '%s' && %s", dir, script);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, len - 1, f);
	out[n] = '\0';
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
	assert_int_equal(pclose(f), 0);
}

static char *slurp(const char *path)
{
	char *buf = NULL;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, NULL, path, 1 << 20, &e) < 0) {
		sw_error_free(e);
		return NULL;
	}
	return buf;
}

static void assert_file(const char *dir, const char *rel, const char *content)
{
	cleanup_free char *p = P(dir, rel);
	cleanup_free char *got = slurp(p);
	if (!got)
		fail_msg("'%s' is missing", p);
	assert_string_equal(got, content);
}

static bool exists(const char *dir, const char *rel)
{
	cleanup_free char *p = rel ? P(dir, rel) : sw_xstrdup(dir);
	struct stat st;
	return lstat(p, &st) == 0;
}

static bool dir_empty(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *de;
	bool empty = true;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			empty = false;
	}
	closedir(d);
	return empty;
}

static char *joined(char **v)
{
	sw_buf b = SW_BUF_INIT(0);
	for (size_t i = 0; v && v[i]; i++) {
		if ((i && sw_buf_puts(&b, ",", NULL) < 0) || sw_buf_puts(&b, v[i], NULL) < 0)
			fail();
	}
	return sw_buf_steal(&b, NULL);
}

static int setup_tmp(void **state)
{
	fixture *f = sw_xcalloc(1, sizeof(*f));
	sw_error *err = NULL;
	if (sw_fs_mkdtemp(&f->tmp, NULL, "sw-agent-test-", &err) < 0) {
		fprintf(stderr, "setup: %s\n", sw_error_msg(err));
		sw_error_free(err);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int setup_git(void **state)
{
	if (setup_tmp(state) < 0)
		return -1;
	fixture *f = *state;
	f->repo = P(f->tmp, "repo");
	sh(f->tmp, "git init -q -b main repo && cd repo && "
	           "printf 'hello\\n' > a.txt && printf 'see\\n' > c.txt && "
	           "printf '#!/bin/sh\\necho hi\\n' > run.sh && chmod 755 run.sh && "
	           "ln -s a.txt link && mkdir d && printf 'x\\n' > d/x && "
	           "git add -A && git commit -q -m 'first commit' -m 'the body' && "
	           "git tag -a v1 -m 'release 1' && git branch feature && "
	           "printf 'changed\\n' > a.txt && git rm -q d/x && printf 'new\\n' > b.txt && "
	           "git mv c.txt e.txt && git add -A && git commit -q -m 'second' && "
	           "git tag light");
	sh_out(f->sha1, sizeof(f->sha1), f->repo, "git rev-parse v1^{commit}");
	sh_out(f->sha2, sizeof(f->sha2), f->repo, "git rev-parse HEAD");
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sw_error *err = NULL;
	int r = sw_fs_rm_rf(f->tmp, &err);
	if (r < 0)
		fprintf(stderr, "%s\n", sw_error_msg(err));
	sw_error_free(err);
	free(f->repo);
	free(f->tmp);
	free(f);
	return r < 0 ? -1 : 0;
}

/* ---------------------------------------------------------------- git */

static void check_second(const char *dest)
{
	assert_file(dest, "a.txt", "changed\n");
	assert_file(dest, "b.txt", "new\n");
	assert_file(dest, "e.txt", "see\n");
	assert_false(exists(dest, "c.txt"));
	assert_false(exists(dest, "d/x"));
	assert_false(exists(dest, ".git"));
}

static void test_agent__git_head(void **state)
{
	fixture *f = *state;
	cleanup_free char *dest = P(f->tmp, "ws");
	sw_git_commit c;
	CHECK_OK(sw_git_checkout(&c, f->repo, NULL, dest, f->tmp, &err));
	assert_string_equal(c.sha, f->sha2);
	assert_int_equal(strncmp(c.short_sha, f->sha2, 8), 0);
	assert_int_equal(strlen(c.short_sha), 8);
	assert_string_equal(c.branch, "main");
	assert_null(c.tag);
	assert_string_equal(c.ref_name, "main");
	assert_string_equal(c.title, "second");
	assert_string_equal(c.author, "Ada Tester <ada@example.com>");
	assert_true(c.time > 1600000000);
	/* add, modify, delete and both sides of a rename */
	cleanup_free char *ch = joined(c.changed);
	assert_string_equal(ch, "a.txt,b.txt,c.txt,d/x,e.txt");
	check_second(dest);
	/* executable bits and symlinks are kept */
	cleanup_free char *run = P(dest, "run.sh");
	struct stat st;
	assert_int_equal(stat(run, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0755);
	cleanup_free char *a = P(dest, "a.txt");
	assert_int_equal(stat(a, &st), 0);
	assert_int_equal(st.st_mode & 0111, 0);
	cleanup_free char *link = P(dest, "link");
	assert_int_equal(lstat(link, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	char target[64] = { 0 };
	assert_int_equal(readlink(link, target, sizeof(target) - 1), 5);
	assert_string_equal(target, "a.txt");
	/* the repository's own work tree and index are untouched */
	char status[256];
	sh_out(status, sizeof(status), f->repo, "git status --porcelain");
	assert_string_equal(status, "");
	sw_git_commit_clear(&c);
	/* "HEAD" means the same */
	cleanup_free char *dest2 = P(f->tmp, "ws2");
	CHECK_OK(sw_git_checkout(&c, f->repo, "HEAD", dest2, NULL, &err));
	assert_string_equal(c.sha, f->sha2);
	assert_string_equal(c.branch, "main");
	sw_git_commit_clear(&c);
}

static void test_agent__git_branch_root_commit(void **state)
{
	fixture *f = *state;
	cleanup_free char *dest = P(f->tmp, "ws");
	sw_git_commit c;
	CHECK_OK(sw_git_checkout(&c, f->repo, "feature", dest, f->tmp, &err));
	assert_string_equal(c.sha, f->sha1);
	assert_string_equal(c.branch, "feature");
	assert_null(c.tag);
	assert_string_equal(c.ref_name, "feature");
	assert_string_equal(c.title, "first commit");
	assert_string_equal(c.message, "first commit\n\nthe body\n");
	/* a root commit: every file */
	cleanup_free char *ch = joined(c.changed);
	assert_string_equal(ch, "a.txt,c.txt,d/x,link,run.sh");
	assert_file(dest, "a.txt", "hello\n");
	assert_file(dest, "d/x", "x\n");
	assert_false(exists(dest, "b.txt"));
	assert_false(exists(dest, ".git"));
	sw_git_commit_clear(&c);
}

static void test_agent__git_tags(void **state)
{
	fixture *f = *state;
	cleanup_free char *d1 = P(f->tmp, "annotated");
	sw_git_commit c;
	CHECK_OK(sw_git_checkout(&c, f->repo, "v1", d1, NULL, &err));
	assert_string_equal(c.sha, f->sha1);
	assert_string_equal(c.tag, "v1");
	assert_null(c.branch);
	assert_string_equal(c.ref_name, "v1");
	assert_file(d1, "a.txt", "hello\n");
	sw_git_commit_clear(&c);

	cleanup_free char *d2 = P(f->tmp, "light");
	CHECK_OK(sw_git_checkout(&c, f->repo, "light", d2, NULL, &err));
	assert_string_equal(c.sha, f->sha2);
	assert_string_equal(c.tag, "light");
	assert_null(c.branch);
	assert_string_equal(c.ref_name, "light");
	check_second(d2);
	sw_git_commit_clear(&c);
}

static void test_agent__git_short_sha(void **state)
{
	fixture *f = *state;
	cleanup_free char *dest = P(f->tmp, "ws");
	char abbrev[8];
	memcpy(abbrev, f->sha1, 7);
	abbrev[7] = '\0';
	sw_git_commit c;
	CHECK_OK(sw_git_checkout(&c, f->repo, abbrev, dest, NULL, &err));
	assert_string_equal(c.sha, f->sha1);
	/* a sha: the branch whose tip it is, and the tag pointing at it */
	assert_string_equal(c.branch, "feature");
	assert_string_equal(c.tag, "v1");
	assert_string_equal(c.ref_name, "feature");
	assert_file(dest, "a.txt", "hello\n");
	sw_git_commit_clear(&c);

	/* a sha nothing points at: no branch, no tag, the short sha as ref name */
	sh(f->repo,
	   "git checkout -q -b other && printf 'more\\n' > m.txt && git add m.txt && "
	   "git commit -q -m third && printf 'more2\\n' > m.txt && git commit -q -am fourth "
	   "&& git checkout -q main");
	char sha3[41];
	sh_out(sha3, sizeof(sha3), f->repo, "git rev-parse other~1");
	cleanup_free char *d2 = P(f->tmp, "ws2");
	CHECK_OK(sw_git_checkout(&c, f->repo, sha3, d2, NULL, &err));
	assert_string_equal(c.sha, sha3);
	assert_null(c.branch);
	assert_null(c.tag);
	assert_string_equal(c.ref_name, c.short_sha);
	cleanup_free char *ch = joined(c.changed);
	assert_string_equal(ch, "m.txt");
	assert_file(d2, "m.txt", "more\n");
	sw_git_commit_clear(&c);
}

static void test_agent__git_bare_and_url(void **state)
{
	fixture *f = *state;
	sh(f->tmp, "git clone -q --bare repo bare.git");
	cleanup_free char *bare = P(f->tmp, "bare.git");
	cleanup_free char *d1 = P(f->tmp, "from-bare");
	sw_git_commit c;
	CHECK_OK(sw_git_checkout(&c, bare, NULL, d1, NULL, &err));
	assert_string_equal(c.sha, f->sha2);
	assert_string_equal(c.branch, "main");
	check_second(d1);
	cleanup_free char *run = P(d1, "run.sh");
	struct stat st;
	assert_int_equal(stat(run, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0755);
	sw_git_commit_clear(&c);

	/* a file:// URL is cloned into tmp_dir, which is clean afterwards */
	cleanup_free char *tmpd = P(f->tmp, "scratch");
	CHECK_OK(sw_fs_mkdir_p(tmpd, 0700, &err));
	cleanup_free char *url = sw_xasprintf("file://%s", bare);
	cleanup_free char *d2 = P(f->tmp, "from-url");
	CHECK_OK(sw_git_checkout(&c, url, NULL, d2, tmpd, &err));
	assert_string_equal(c.sha, f->sha2);
	assert_string_equal(c.branch, "main");
	check_second(d2);
	cleanup_free char *link = P(d2, "link");
	assert_int_equal(lstat(link, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_true(dir_empty(tmpd));
	sw_git_commit_clear(&c);

	/* a branch of the remote by its plain name, and a tag */
	cleanup_free char *d3 = P(f->tmp, "from-url-feature");
	CHECK_OK(sw_git_checkout(&c, url, "feature", d3, tmpd, &err));
	assert_string_equal(c.sha, f->sha1);
	assert_string_equal(c.branch, "feature");
	assert_file(d3, "d/x", "x\n");
	sw_git_commit_clear(&c);
	cleanup_free char *d4 = P(f->tmp, "from-url-tag");
	CHECK_OK(sw_git_checkout(&c, url, "v1", d4, tmpd, &err));
	assert_string_equal(c.sha, f->sha1);
	assert_string_equal(c.tag, "v1");
	sw_git_commit_clear(&c);
	cleanup_free char *d5 = P(f->tmp, "from-url-origin");
	CHECK_OK(sw_git_checkout(&c, url, "origin/feature", d5, tmpd, &err));
	assert_string_equal(c.sha, f->sha1);
	assert_string_equal(c.branch, "feature");
	sw_git_commit_clear(&c);
	assert_true(dir_empty(tmpd));
}

static void test_agent__git_errors(void **state)
{
	fixture *f = *state;
	cleanup_free char *dest = P(f->tmp, "ws");
	sw_git_commit c;
	sw_error *e = NULL;
	assert_int_equal(sw_git_checkout(&c, f->repo, "no-such-branch", dest, NULL, &e),
	                 SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(e), "no-such-branch"));
	assert_non_null(strstr(sw_error_msg(e), f->repo));
	sw_error_clear(&e);

	/* not a repository */
	cleanup_free char *plain = P(f->tmp, "plain");
	CHECK_OK(sw_fs_mkdir_p(plain, 0755, &err));
	cleanup_free char *dest2 = P(f->tmp, "ws2");
	assert_true(sw_git_checkout(&c, plain, NULL, dest2, NULL, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), plain));
	sw_error_clear(&e);

	/* a destination that is not empty */
	cleanup_free char *full = P(f->tmp, "full");
	CHECK_OK(sw_fs_mkdir_p(full, 0755, &err));
	cleanup_free char *junk = P(full, "junk");
	CHECK_OK(sw_fs_write_atomic(junk, "j", 1, 0644, &err));
	assert_true(sw_git_checkout(&c, f->repo, NULL, full, NULL, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "not empty"));
	sw_error_clear(&e);

	/* a URL's password never shows (port 1 on loopback: refused at once) */
	cleanup_free char *tmpd = P(f->tmp, "scratch");
	CHECK_OK(sw_fs_mkdir_p(tmpd, 0700, &err));
	cleanup_free char *dest3 = P(f->tmp, "ws3");
	assert_true(sw_git_checkout(&c, "http://robot:Sup3rSecretPw@127.0.0.1:1/team/app.git",
	                            "main", dest3, tmpd, &e) < 0);
	const char *m = sw_error_msg(e);
	assert_null(strstr(m, "Sup3rSecretPw"));
	assert_non_null(strstr(m, "http://robot@127.0.0.1:1/team/app.git"));
	assert_non_null(strstr(m, "main"));
	sw_error_clear(&e);
	assert_true(dir_empty(tmpd));

	/* an unknown revision of a clone names it, and the URL without its password */
	sh(f->tmp, "git clone -q --bare repo bare.git");
	cleanup_free char *url = sw_xasprintf("file://%s/bare.git", f->tmp);
	cleanup_free char *dest4 = P(f->tmp, "ws4");
	assert_int_equal(sw_git_checkout(&c, url, "v9", dest4, tmpd, &e), SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(e), "'v9'"));
	assert_non_null(strstr(sw_error_msg(e), url));
	sw_error_clear(&e);
	assert_true(dir_empty(tmpd));
}

/* ---------------------------------------------------------------- workspace */

static void mkfile(const char *root, const char *rel, const char *content, mode_t mode)
{
	cleanup_free char *p = P(root, rel);
	cleanup_free char *dir = sw_xstrdup(p);
	*strrchr(dir, '/') = '\0';
	CHECK_OK(sw_fs_mkdir_p(dir, 0755, &err));
	CHECK_OK(sw_fs_write_atomic(p, content, strlen(content), mode, &err));
	assert_int_equal(chmod(p, mode), 0);
}

/* A workspace: src/a.c src/b.h src/sub/c.c build/out.tar.gz build/x.txt top.txt, .hidden,
 * out -> /etc (a symlink leaving the root), linkdir -> src. */
static char *make_ws(fixture *f)
{
	char *ws = P(f->tmp, "ws");
	mkfile(ws, "src/a.c", "int a;\n", 0640);
	mkfile(ws, "src/b.h", "int b;\n", 0644);
	mkfile(ws, "src/sub/c.c", "int c;\n", 0644);
	mkfile(ws, "build/out.tar.gz", "tarball", 0644);
	mkfile(ws, "build/x.txt", "#!/bin/sh\n", 0755);
	mkfile(ws, "top.txt", "top\n", 0600);
	mkfile(ws, ".hidden", "h", 0644);
	cleanup_free char *out = P(ws, "out");
	assert_int_equal(symlink("/etc", out), 0);
	cleanup_free char *ld = P(ws, "linkdir");
	assert_int_equal(symlink("src", ld), 0);
	return ws;
}

static char *glob_str(const char *ws, const char *const *pats, size_t n)
{
	char **v = NULL;
	CHECK_OK(sw_ws_glob(&v, ws, pats, n, &err));
	char *s = joined(v);
	sw_strv_free(v);
	return s;
}

static void test_agent__ws_glob(void **state)
{
	fixture *f = *state;
	cleanup_free char *ws = make_ws(f);
	struct {
		const char *pat;
		const char *want;
	} cases[] = {
		{ "src/*.c", "src/a.c" },
		{ "src/**/*.c", "src/a.c,src/sub/c.c" },
		{ "**/*.c", "src/a.c,src/sub/c.c" },
		{ "?op.txt", "top.txt" },
		{ "src/[ab].*", "src/a.c,src/b.h" },
		{ "src/[!a].*", "src/b.h" },
		{ "build/*.tar.gz", "build/out.tar.gz" },
		{ "top.txt", "top.txt" },
		{ "./build", "build" },
		{ "build/", "build" },
		{ "nothing/here.txt", "" },
		{ "*.nomatch", "" },
		/* symlinks are not followed, but match themselves */
		{ "linkdir/*.c", "" },
		{ "linkdir/a.c", "" },
		{ "out/*", "" },
		{ "out", "out" },
		{ "*", ".hidden,build,linkdir,out,src,top.txt" },
		{ "**",
		  ".hidden,build,build/out.tar.gz,build/x.txt,linkdir,out,src,src/a.c,src/b.h,"
		  "src/sub,src/sub/c.c,top.txt" },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(cases); i++) {
		const char *pats[] = { cases[i].pat };
		cleanup_free char *got = glob_str(ws, pats, 1);
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("glob '%s': got '%s', want '%s'", cases[i].pat, got,
			         cases[i].want);
	}
	/* several patterns: sorted, no duplicates */
	const char *pats[] = { "top.txt", "src/*.c", "src/a.c", "build/*" };
	cleanup_free char *got = glob_str(ws, pats, 4);
	assert_string_equal(got, "build/out.tar.gz,build/x.txt,src/a.c,top.txt");

	/* leaving the root is an error naming the pattern */
	const char *bad[] = { "../x", "src/../../etc", "/etc/passwd", "" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(bad); i++) {
		char **v = NULL;
		sw_error *e = NULL;
		assert_int_equal(sw_ws_glob(&v, ws, &bad[i], 1, &e), SW_ERR_INVALID);
		assert_null(v);
		cleanup_free char *quoted = sw_xasprintf("'%s'", bad[i]);
		assert_non_null(strstr(sw_error_msg(e), quoted));
		sw_error_free(e);
	}
}

static void test_agent__ws_copy_out(void **state)
{
	fixture *f = *state;
	cleanup_free char *ws = make_ws(f);
	/* fixed times to compare */
	struct timespec ts[2] = { { 1500000000, 0 }, { 1500000000, 123456789 } };
	cleanup_free char *ac = P(ws, "src/a.c");
	assert_int_equal(utimensat(AT_FDCWD, ac, ts, 0), 0);
	cleanup_free char *bdir = P(ws, "build");
	struct timespec dts[2] = { { 1400000000, 0 }, { 1400000000, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, bdir, dts, 0), 0);
	cleanup_free char *dest = P(f->tmp, "out");
	char *paths[] = { "src/a.c", "build", "build/x.txt", "out", "linkdir", "top.txt", NULL };
	uint64_t bytes = 0;
	CHECK_OK(sw_ws_copy_out(&bytes, ws, paths, dest, &err));
	assert_int_equal(bytes, strlen("int a;\n") + strlen("tarball") + strlen("#!/bin/sh\n") +
	                                strlen("top\n"));
	assert_file(dest, "src/a.c", "int a;\n");
	assert_file(dest, "build/out.tar.gz", "tarball");
	assert_file(dest, "build/x.txt", "#!/bin/sh\n");
	assert_false(exists(dest, "src/b.h"));
	struct stat st;
	cleanup_free char *dac = P(dest, "src/a.c");
	assert_int_equal(stat(dac, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_mtim.tv_sec, 1500000000);
	assert_int_equal(st.st_mtim.tv_nsec, 123456789);
	cleanup_free char *dx = P(dest, "build/x.txt");
	assert_int_equal(stat(dx, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	cleanup_free char *dtop = P(dest, "top.txt");
	assert_int_equal(stat(dtop, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	cleanup_free char *db = P(dest, "build");
	assert_int_equal(stat(db, &st), 0);
	assert_int_equal(st.st_mtim.tv_sec, 1400000000);
	/* symlinks are copied as symlinks: nothing of /etc was read */
	cleanup_free char *dout = P(dest, "out");
	assert_int_equal(lstat(dout, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	char target[64] = { 0 };
	assert_true(readlink(dout, target, sizeof(target) - 1) > 0);
	assert_string_equal(target, "/etc");
	cleanup_free char *dld = P(dest, "linkdir");
	assert_int_equal(lstat(dld, &st), 0);
	assert_true(S_ISLNK(st.st_mode));

	/* a path through a symlink is refused (and nothing of what it points at is copied) */
	cleanup_free char *dest2 = P(f->tmp, "out2");
	char *through[] = { "out/passwd", NULL };
	sw_error *e = NULL;
	assert_true(sw_ws_copy_out(NULL, ws, through, dest2, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "out/passwd"));
	sw_error_clear(&e);
	assert_false(exists(dest2, "out/passwd"));
	assert_false(exists(dest2, "passwd"));
	char *climb[] = { "../ws/top.txt", NULL };
	assert_int_equal(sw_ws_copy_out(NULL, ws, climb, dest2, &e), SW_ERR_INVALID);
	sw_error_clear(&e);
	/* a missing path is nothing to copy */
	char *missing[] = { "nope/none.txt", NULL };
	CHECK_OK(sw_ws_copy_out(&bytes, ws, missing, dest2, &err));
	assert_int_equal(bytes, 0);
}

static void test_agent__ws_remove_tree(void **state)
{
	fixture *f = *state;
	cleanup_free char *ws = make_ws(f);
	/* a symlink to a file outside: the file survives */
	cleanup_free char *keep = P(f->tmp, "keep.txt");
	CHECK_OK(sw_fs_write_atomic(keep, "keep", 4, 0644, &err));
	cleanup_free char *kl = P(ws, "src/keep-link");
	assert_int_equal(symlink(keep, kl), 0);
	cleanup_free char *kl2 = P(ws, "keepdir");
	assert_int_equal(symlink(f->tmp, kl2), 0);
	/* a folder without permissions */
	cleanup_free char *ro = P(ws, "src/sub");
	assert_int_equal(chmod(ro, 0500), 0);

	/* a mount inside: refused, nothing removed */
	cleanup_free char *mnt = P(ws, "build/mnt");
	CHECK_OK(sw_fs_mkdir_p(mnt, 0755, &err));
	bool mounted = mount("tmpfs", mnt, "tmpfs", 0, "size=1m") == 0;
	if (mounted) {
		mkfile(mnt, "inner.txt", "inner", 0644);
		sw_error *e = NULL;
		assert_int_equal(sw_ws_remove_tree(ws, &e), SW_ERR_CONFLICT);
		assert_non_null(strstr(sw_error_msg(e), mnt));
		sw_error_free(e);
		assert_file(mnt, "inner.txt", "inner");
		assert_file(ws, "top.txt", "top\n");
		assert_int_equal(umount2(mnt, MNT_DETACH), 0);
	} else {
		fprintf(stderr, "ws_remove_tree: cannot mount tmpfs (%s): mount case skipped\n",
		        strerror(errno));
	}
	CHECK_OK(sw_ws_remove_tree(ws, &err));
	assert_false(exists(ws, NULL));
	assert_file(f->tmp, "keep.txt", "keep");
	/* missing is not an error */
	CHECK_OK(sw_ws_remove_tree(ws, &err));
}

/* LeakSanitizer: libgit2 1.5 (Debian 12) leaks pcre2 match data in its regexp search when
 * git_clone creates the remote (git_remote_create); not ours to free. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libpcre2-8.so\n";
}

int test_agent_metrics_run(void);

int test_agent_watch_run(void);   /* test_agent_watch.c: group "watch" */
int test_agent_config_run(void);  /* test_agent_config.c: group "config" */
int test_agent_journal_run(void); /* test_agent_journal.c: groups "journal", "sched" */

int main(void)
{
	const struct CMUnitTest git[] = {
		cmocka_unit_test_setup_teardown(test_agent__git_head, setup_git, teardown),
		cmocka_unit_test_setup_teardown(test_agent__git_branch_root_commit, setup_git,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_agent__git_tags, setup_git, teardown),
		cmocka_unit_test_setup_teardown(test_agent__git_short_sha, setup_git, teardown),
		cmocka_unit_test_setup_teardown(test_agent__git_bare_and_url, setup_git, teardown),
		cmocka_unit_test_setup_teardown(test_agent__git_errors, setup_git, teardown),
	};
	const struct CMUnitTest workspace[] = {
		cmocka_unit_test_setup_teardown(test_agent__ws_glob, setup_tmp, teardown),
		cmocka_unit_test_setup_teardown(test_agent__ws_copy_out, setup_tmp, teardown),
		cmocka_unit_test_setup_teardown(test_agent__ws_remove_tree, setup_tmp, teardown),
	};
	const struct CMUnitTest gitlab[] = { SW_TEST_AGENT_GITLAB_TESTS };
	int failed = cmocka_run_group_tests_name("git", git, NULL, NULL);
	failed += cmocka_run_group_tests_name("gitlab", gitlab, NULL, NULL);
	failed += cmocka_run_group_tests_name("workspace", workspace, NULL, NULL);
	failed += test_agent_config_run();  /* test_agent_config.c */
	failed += test_agent_journal_run(); /* test_agent_journal.c: journal, sched */
	failed += test_agent_watch_run();
	failed += test_agent_metrics_run(); /* test_agent_metrics.c */
	return failed ? 1 : 0;
}
