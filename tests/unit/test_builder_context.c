/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The build context and copying: matching COPY sources (wildcards, the root, sources that are
 * missing or excluded by .dockerignore), the digest of a step's inputs (stable when a file is
 * only touched, changed by bytes, modes and names, blind to ignored files) and its stat cache
 * (an unchanged tree is not read again), Docker's COPY rules into a folder standing in for a
 * mounted rootfs (files, folders' contents, owners, modes, symlinks, hard links, symlinks in
 * the image that point outside), ADD's archive extraction (every compression, hostile
 * entries) and downloads from a small HTTP server on 127.0.0.1. Each case has its own
 * temporary folder, removed afterwards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "builder/builder_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

int test_builder_context_run(void);

extern uint64_t sw_build__context_bytes_hashed;

typedef struct fixture {
	char *tmp;
	char *ctx; /* the build context */
	char *dst; /* stands for a mounted rootfs */
	char *old_state;
} fixture;

#define CHECK_OK(expr)                                                       \
	do {                                                                 \
		sw_error *check_err_ = NULL;                                 \
		int check_r_ = (expr);                                       \
		if (check_r_ < 0)                                            \
			fail_msg("%s: %s", #expr, sw_error_msg(check_err_)); \
		sw_error_free(check_err_);                                   \
	} while (0)

static int setup(void **state)
{
	fixture *f = sw_xcalloc(1, sizeof(*f));
	sw_error *err = NULL;
	if (sw_fs_mkdtemp(&f->tmp, NULL, "sw-context-test-", &err) < 0) {
		fprintf(stderr, "%s\n", sw_error_msg(err));
		sw_error_free(err);
		free(f);
		return -1;
	}
	f->ctx = sw_path_join(f->tmp, "ctx");
	f->dst = sw_path_join(f->tmp, "rootfs");
	if (mkdir(f->ctx, 0755) < 0 || mkdir(f->dst, 0755) < 0)
		return -1;
	const char *old = getenv("SLIPWAY_STATE_DIR");
	f->old_state = old ? sw_xstrdup(old) : NULL;
	cleanup_free char *sd = sw_path_join(f->tmp, "state");
	setenv("SLIPWAY_STATE_DIR", sd, 1);
	*state = f;
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
	if (f->old_state)
		setenv("SLIPWAY_STATE_DIR", f->old_state, 1);
	else
		unsetenv("SLIPWAY_STATE_DIR");
	free(f->old_state);
	free(f->tmp);
	free(f->ctx);
	free(f->dst);
	free(f);
	return r < 0 ? -1 : 0;
}

/* ---------------------------------------------------------------- helpers */

static char *P(const char *dir, const char *rel)
{
	return sw_path_join(dir, rel);
}

static void put_dir(const char *dir, const char *rel, mode_t mode)
{
	cleanup_free char *p = P(dir, rel);
	CHECK_OK(sw_fs_mkdir_p(p, 0755, &check_err_));
	assert_int_equal(chmod(p, mode), 0);
}

static void put_file(const char *dir, const char *rel, const char *data, mode_t mode)
{
	cleanup_free char *p = P(dir, rel);
	cleanup_free char *parent = sw_xstrdup(p);
	*strrchr(parent, '/') = '\0';
	CHECK_OK(sw_fs_mkdir_p(parent, 0755, &check_err_));
	unlink(p);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	CHECK_OK(sw_fs_write_all(fd, data, strlen(data), &check_err_));
	close(fd);
	assert_int_equal(chmod(p, mode), 0);
}

static void put_link(const char *dir, const char *rel, const char *target)
{
	cleanup_free char *p = P(dir, rel);
	unlink(p);
	assert_int_equal(symlink(target, p), 0);
}

static char *slurp(const char *dir, const char *rel)
{
	cleanup_free char *p = P(dir, rel);
	char *data = NULL;
	size_t len;
	sw_error *err = NULL;
	if (sw_fs_read_file(&data, &len, p, 1 << 20, &err) < 0) {
		sw_error_free(err);
		return NULL;
	}
	return data;
}

static struct stat lst(const char *dir, const char *rel)
{
	cleanup_free char *p = P(dir, rel);
	struct stat st;
	memset(&st, 0, sizeof(st));
	if (lstat(p, &st) < 0)
		st.st_mode = 0;
	return st;
}

static bool exists(const char *dir, const char *rel)
{
	return lst(dir, rel).st_mode != 0;
}

static void assert_content(const char *dir, const char *rel, const char *want)
{
	cleanup_free char *got = slurp(dir, rel);
	if (!got)
		fail_msg("'%s' in '%s' cannot be read", rel, dir);
	assert_string_equal(got, want);
}

/* Let file times age past the stat cache's "too recent to trust" margin. */
static void age(void)
{
	struct timespec ts = { 0, 60 * 1000 * 1000 };
	nanosleep(&ts, NULL);
}

static sw_dockerignore *ignore_of(const char *text)
{
	sw_dockerignore *di = NULL;
	CHECK_OK(sw_dockerignore_parse(&di, text, strlen(text), ".dockerignore", &check_err_));
	return di;
}

/*
 * ctx/
 *   a.txt b.txt c.md secret.txt link->a.txt suid (4755)
 *   sub/d.txt sub/deep/e.txt sub/h1 sub/h2 (hard links) sub/ln->d.txt
 *   ignored/keep.txt ignored/other.txt  vendor/lib.txt
 */
static const char *IGNORE_TEXT = "secret.txt\nignored\n!ignored/keep.txt\nvendor\n";

static void make_context(const fixture *f)
{
	put_file(f->ctx, "a.txt", "alpha\n", 0644);
	put_file(f->ctx, "b.txt", "bravo\n", 0600);
	put_file(f->ctx, "c.md", "charlie\n", 0644);
	put_file(f->ctx, "secret.txt", "hunter2\n", 0600);
	put_link(f->ctx, "link", "a.txt");
	put_file(f->ctx, "suid", "#!/bin/sh\n", 04755);
	put_file(f->ctx, "sub/d.txt", "delta\n", 0644);
	put_file(f->ctx, "sub/deep/e.txt", "echo\n", 0755);
	put_file(f->ctx, "sub/h1", "hotel\n", 0644);
	cleanup_free char *h1 = P(f->ctx, "sub/h1");
	cleanup_free char *h2 = P(f->ctx, "sub/h2");
	assert_int_equal(link(h1, h2), 0);
	put_link(f->ctx, "sub/ln", "d.txt");
	put_file(f->ctx, "ignored/keep.txt", "kept\n", 0644);
	put_file(f->ctx, "ignored/other.txt", "other\n", 0644);
	put_file(f->ctx, "vendor/lib.txt", "lib\n", 0644);
	put_file(f->ctx, ".dockerignore", IGNORE_TEXT, 0644);
}

static char *joined(char **v)
{
	sw_buf b = SW_BUF_INIT(0);
	for (size_t i = 0; v && v[i]; i++)
		CHECK_OK(sw_buf_printf(&b, &check_err_, "%s%s", i ? " " : "", v[i]));
	return sw_buf_steal(&b, NULL);
}

static char *match_str(sw_build__context *c, const char *a, const char *b)
{
	char *srcs[3] = { (char *)a, (char *)b, NULL };
	char **out = NULL;
	CHECK_OK(sw_build__context_match(&out, c, srcs, &check_err_));
	char *s = joined(out);
	sw_strv_free(out);
	return s;
}

static int match_fail(char **msg, sw_build__context *c, const char *a)
{
	char *srcs[2] = { (char *)a, NULL };
	char **out = NULL;
	sw_error *err = NULL;
	int r = sw_build__context_match(&out, c, srcs, &err);
	assert_true(r < 0);
	assert_null(out);
	*msg = sw_xstrdup(sw_error_msg(err));
	sw_error_free(err);
	return r;
}

/* ---------------------------------------------------------------- matching */

static void test_builder__context_match(void **state)
{
	fixture *f = *state;
	make_context(f);
	sw_dockerignore *di = ignore_of(IGNORE_TEXT);
	sw_build__context *c = NULL;
	CHECK_OK(sw_build__context_open(&c, f->ctx, di, NULL, &check_err_));
	assert_string_equal(sw_build__context_dir(c), f->ctx);

	const struct {
		const char *a, *b, *want;
	} cases[] = {
		{ "*.txt", NULL, "a.txt b.txt" }, /* secret.txt is ignored */
		{ ".", NULL, "." },
		{ "/", NULL, "." },
		{ "./", NULL, "." },
		{ "../a.txt", NULL, "a.txt" }, /* cannot leave the context */
		{ "../../../etc/../a.txt", NULL, "a.txt" },
		{ "/sub//d.txt", NULL, "sub/d.txt" },
		{ "sub/*/e.txt", NULL, "sub/deep/e.txt" },
		{ "s?b/d.txt", NULL, "sub/d.txt" },
		{ "[ab].txt", NULL, "a.txt b.txt" },
		{ "[^a].txt", NULL, "b.txt" },
		{ "[!a].txt", NULL, "a.txt" }, /* Go: "!" is no negation */
		{ "sub/*", NULL, "sub/d.txt sub/deep sub/h1 sub/h2 sub/ln" },
		{ "c.md", "*.txt", "c.md a.txt b.txt" }, /* sources in order */
		{ "link", NULL, "link" },
		{ "ignored", NULL, "ignored" }, /* something under it is re-included */
		{ "ignored/keep.txt", NULL, "ignored/keep.txt" },
		{ "ignored/*", NULL, "ignored/keep.txt" },
		{ "*", NULL, ".dockerignore a.txt b.txt c.md ignored link sub suid" },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(cases); i++) {
		cleanup_free char *got = match_str(c, cases[i].a, cases[i].b);
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("match %s %s: got '%s', want '%s'", cases[i].a,
			         cases[i].b ? cases[i].b : "", got, cases[i].want);
	}

	char *msg = NULL;
	assert_int_equal(match_fail(&msg, c, "missing.txt"), SW_ERR_NOT_FOUND);
	assert_string_equal(msg, "\"missing.txt\" not found in the build context");
	free(msg);
	assert_int_equal(match_fail(&msg, c, "*.nothing"), SW_ERR_NOT_FOUND);
	assert_string_equal(msg, "\"*.nothing\" not found in the build context");
	free(msg);
	assert_int_equal(match_fail(&msg, c, "../../outside"), SW_ERR_NOT_FOUND);
	assert_non_null(strstr(msg, "\"../../outside\" not found in the build context"));
	free(msg);
	const char *excluded[] = { "secret.txt", "vendor", "vendor/lib.txt", "ignored/other.txt" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(excluded); i++) {
		assert_int_equal(match_fail(&msg, c, excluded[i]), SW_ERR_NOT_FOUND);
		cleanup_free char *want =
		        sw_xasprintf("\"%s\" not found in the build context: it is "
		                     "excluded by .dockerignore",
		                     excluded[i]);
		assert_string_equal(msg, want);
		free(msg);
	}
	/* a symlink leaving the context resolves inside it */
	put_link(f->ctx, "escape", "/../../../../etc/passwd");
	assert_int_equal(match_fail(&msg, c, "escape"), SW_ERR_NOT_FOUND);
	free(msg);
	sw_build__context_free(c);
	sw_dockerignore_free(di);
}

/* ---------------------------------------------------------------- digests */

static sw_digest digest_of(sw_build__context *c, const char *path)
{
	char *paths[2] = { (char *)path, NULL };
	sw_digest d;
	CHECK_OK(sw_build__context_digest(&d, c, paths, &check_err_));
	assert_true(sw_oci_digest_is_set(&d));
	return d;
}

static sw_digest fresh_digest(const fixture *f, const sw_dockerignore *di, const char *path)
{
	sw_build__context *c = NULL;
	CHECK_OK(sw_build__context_open(&c, f->ctx, di, NULL, &check_err_));
	sw_digest d = digest_of(c, path);
	sw_build__context_free(c);
	return d;
}

#define assert_digest_eq(a, b) assert_string_equal((a).s, (b).s)
#define assert_digest_ne(a, b) assert_string_not_equal((a).s, (b).s)

static void set_time(const char *dir, const char *rel, time_t t)
{
	cleanup_free char *p = P(dir, rel);
	struct timespec ts[2] = { { t, 0 }, { t, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void test_builder__context_digest(void **state)
{
	fixture *f = *state;
	make_context(f);
	sw_dockerignore *di = ignore_of(IGNORE_TEXT);
	sw_digest d0 = fresh_digest(f, di, ".");
	sw_digest again = fresh_digest(f, di, ".");
	assert_digest_eq(d0, again);

	/* touching keeps it, with or without the stat cache */
	set_time(f->ctx, "a.txt", 1000000000);
	set_time(f->ctx, "sub", 1000000000);
	set_time(f->ctx, "link", 1000000000);
	sw_digest touched = fresh_digest(f, di, ".");
	assert_digest_eq(d0, touched);

	/* bytes change it; the same bytes again give the same digest */
	put_file(f->ctx, "sub/deep/e.txt", "Echo\n", 0755);
	sw_digest changed = fresh_digest(f, di, ".");
	assert_digest_ne(d0, changed);
	put_file(f->ctx, "sub/deep/e.txt", "echo\n", 0755);
	assert_digest_eq(d0, fresh_digest(f, di, "."));

	/* modes, special bits, names, link targets change it */
	cleanup_free char *a = P(f->ctx, "a.txt");
	assert_int_equal(chmod(a, 0755), 0);
	assert_digest_ne(d0, fresh_digest(f, di, "."));
	assert_int_equal(chmod(a, 0644), 0);
	assert_digest_eq(d0, fresh_digest(f, di, "."));
	cleanup_free char *suid = P(f->ctx, "suid");
	assert_int_equal(chmod(suid, 0755), 0);
	assert_digest_ne(d0, fresh_digest(f, di, "."));
	assert_int_equal(chmod(suid, 04755), 0);
	cleanup_free char *a2 = P(f->ctx, "a2.txt");
	assert_int_equal(rename(a, a2), 0);
	assert_digest_ne(d0, fresh_digest(f, di, "."));
	assert_int_equal(rename(a2, a), 0);
	put_link(f->ctx, "link", "b.txt");
	assert_digest_ne(d0, fresh_digest(f, di, "."));
	put_link(f->ctx, "link", "a.txt");
	/* a hard link becoming a copy changes it */
	put_file(f->ctx, "sub/h2", "hotel\n", 0644);
	assert_digest_ne(d0, fresh_digest(f, di, "."));
	cleanup_free char *h1 = P(f->ctx, "sub/h1");
	cleanup_free char *h2 = P(f->ctx, "sub/h2");
	assert_int_equal(unlink(h2), 0);
	assert_int_equal(link(h1, h2), 0);
	assert_digest_eq(d0, fresh_digest(f, di, "."));

	/* ignored files do not count; a re-included one does */
	put_file(f->ctx, "secret.txt", "changed\n", 0600);
	put_file(f->ctx, "vendor/new.txt", "new\n", 0644);
	put_file(f->ctx, "ignored/other.txt", "changed\n", 0644);
	assert_digest_eq(d0, fresh_digest(f, di, "."));
	put_file(f->ctx, "ignored/keep.txt", "changed\n", 0644);
	assert_digest_ne(d0, fresh_digest(f, di, "."));
	put_file(f->ctx, "ignored/keep.txt", "kept\n", 0644);
	assert_digest_eq(d0, fresh_digest(f, di, "."));
	/* without .dockerignore rules they count */
	assert_digest_ne(d0, fresh_digest(f, NULL, "."));

	/* owners of context files do not count (COPY writes 0:0); they do for other trees */
	cleanup_free char *b = P(f->ctx, "b.txt");
	char *paths[] = { "b.txt", NULL };
	sw_digest t0, t1;
	CHECK_OK(sw_build__tree_digest(&t0, f->ctx, paths, &check_err_));
	assert_int_equal(chown(b, 1234, 1234), 0);
	assert_digest_eq(d0, fresh_digest(f, di, "."));
	CHECK_OK(sw_build__tree_digest(&t1, f->ctx, paths, &check_err_));
	assert_digest_ne(t0, t1);

	/* the path as given counts: the same bytes under another name differ */
	assert_digest_ne(fresh_digest(f, di, "a.txt"), fresh_digest(f, di, "link"));
	assert_digest_ne(fresh_digest(f, di, "sub"), fresh_digest(f, di, "sub/deep"));
	/* a missing path fails */
	sw_build__context *c = NULL;
	CHECK_OK(sw_build__context_open(&c, f->ctx, di, NULL, &check_err_));
	char *missing[] = { "nope", NULL };
	sw_digest d;
	sw_error *err = NULL;
	assert_int_equal(sw_build__context_digest(&d, c, missing, &err), SW_ERR_NOT_FOUND);
	sw_error_free(err);
	sw_build__context_free(c);
	sw_dockerignore_free(di);
}

static uint64_t hashed(void)
{
	return __atomic_load_n(&sw_build__context_bytes_hashed, __ATOMIC_RELAXED);
}

static void test_builder__context_statcache(void **state)
{
	fixture *f = *state;
	make_context(f);
	for (int i = 0; i < 40; i++) {
		char rel[64], data[64];
		snprintf(rel, sizeof(rel), "many/f%02d.txt", i);
		snprintf(data, sizeof(data), "file number %d\n", i);
		put_file(f->ctx, rel, data, 0644);
	}
	age();
	sw_dockerignore *di = ignore_of(IGNORE_TEXT);
	cleanup_free char *cache = P(f->tmp, "state/context.statcache");

	sw_build__context *c = NULL;
	CHECK_OK(sw_build__context_open(&c, f->ctx, di, cache, &check_err_));
	uint64_t h0 = hashed();
	sw_digest cold = digest_of(c, ".");
	assert_true(hashed() > h0);
	sw_build__context_free(c);
	struct stat cst;
	assert_int_equal(stat(cache, &cst), 0);
	assert_true(cst.st_size > 0);

	/* a second process: nothing is read */
	CHECK_OK(sw_build__context_open(&c, f->ctx, di, cache, &check_err_));
	h0 = hashed();
	sw_digest warm = digest_of(c, ".");
	assert_digest_eq(cold, warm);
	assert_int_equal(hashed() - h0, 0);
	/* nor by a second digest in the same process */
	sw_digest warm2 = digest_of(c, "many");
	assert_int_equal(hashed() - h0, 0);
	assert_digest_ne(warm, warm2);
	sw_build__context_free(c);
	/* nothing changed: the cache file was not rewritten */
	struct stat cst2;
	assert_int_equal(stat(cache, &cst2), 0);
	assert_int_equal(cst.st_ino, cst2.st_ino);

	/* touching re-reads (the ctime moved) but keeps the digest; then it is cached again */
	set_time(f->ctx, "many/f03.txt", 1000000000);
	age();
	CHECK_OK(sw_build__context_open(&c, f->ctx, di, cache, &check_err_));
	h0 = hashed();
	assert_digest_eq(cold, digest_of(c, "."));
	assert_int_equal(hashed() - h0, strlen("file number 3\n"));
	sw_build__context_free(c);
	CHECK_OK(sw_build__context_open(&c, f->ctx, di, cache, &check_err_));
	h0 = hashed();
	assert_digest_eq(cold, digest_of(c, "."));
	assert_int_equal(hashed() - h0, 0);
	sw_build__context_free(c);

	/* one file changed: only it is read */
	put_file(f->ctx, "many/f07.txt", "a changed file\n", 0644);
	age();
	CHECK_OK(sw_build__context_open(&c, f->ctx, di, cache, &check_err_));
	h0 = hashed();
	sw_digest one = digest_of(c, ".");
	assert_int_equal(hashed() - h0, strlen("a changed file\n"));
	assert_digest_ne(cold, one);
	sw_build__context_free(c);

	/* same size, same mtime, other bytes: the ctime gives it away */
	cleanup_free char *p = P(f->ctx, "many/f08.txt");
	struct stat before;
	assert_int_equal(stat(p, &before), 0);
	put_file(f->ctx, "many/f08.txt", "FILE NUMBER 8\n", 0644);
	struct timespec ts[2] = { before.st_atim, before.st_mtim };
	assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
	age();
	CHECK_OK(sw_build__context_open(&c, f->ctx, di, cache, &check_err_));
	h0 = hashed();
	sw_digest two = digest_of(c, ".");
	assert_int_equal(hashed() - h0, strlen("FILE NUMBER 8\n"));
	assert_digest_ne(one, two);
	sw_build__context_free(c);
	assert_digest_eq(two, fresh_digest(f, di, "."));

	/* a corrupt cache file is ignored */
	CHECK_OK(sw_fs_write_atomic(cache, "SWSTATC1\xff\xff\xff\x7f garbage", 20, 0600,
	                            &check_err_));
	CHECK_OK(sw_build__context_open(&c, f->ctx, di, cache, &check_err_));
	assert_digest_eq(two, digest_of(c, "."));
	sw_build__context_free(c);
	sw_dockerignore_free(di);
}

/* A context of 2,000 files and 15 MB: time of a digest, cold and with the stat cache. */
static void test_builder__context_digest_speed(void **state)
{
	fixture *f = *state;
	char *buf = sw_xmalloc(15000);
	for (int i = 0; i < 2000; i++) {
		char rel[64];
		snprintf(rel, sizeof(rel), "src/d%02d/file%04d.dat", i % 50, i);
		for (int k = 0; k < 7500; k++)
			buf[k] = (char)('a' + (i + k) % 26);
		cleanup_free char *p = P(f->ctx, rel);
		cleanup_free char *parent = sw_xstrdup(p);
		*strrchr(parent, '/') = '\0';
		CHECK_OK(sw_fs_mkdir_p(parent, 0755, &check_err_));
		int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		assert_true(fd >= 0);
		CHECK_OK(sw_fs_write_all(fd, buf, 7500, &check_err_));
		close(fd);
	}
	free(buf);
	age();
	cleanup_free char *cache = P(f->tmp, "state/speed.statcache");
	struct timespec t0, t1, t2, t3;
	sw_build__context *c = NULL;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_OK(sw_build__context_open(&c, f->ctx, NULL, cache, &check_err_));
	sw_digest cold = digest_of(c, ".");
	sw_build__context_free(c);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	uint64_t h0 = hashed();
	clock_gettime(CLOCK_MONOTONIC, &t2);
	CHECK_OK(sw_build__context_open(&c, f->ctx, NULL, cache, &check_err_));
	sw_digest warm = digest_of(c, ".");
	sw_build__context_free(c);
	clock_gettime(CLOCK_MONOTONIC, &t3);
	assert_digest_eq(cold, warm);
	assert_int_equal(hashed() - h0, 0);
	double cold_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
	double warm_ms = (double)(t3.tv_sec - t2.tv_sec) * 1e3 + (t3.tv_nsec - t2.tv_nsec) / 1e6;
	fprintf(stderr, "context digest, 2000 files / 15 MB: cold %.1f ms, warm %.1f ms\n", cold_ms,
	        warm_ms);
	assert_true(warm_ms < cold_ms);
}

/* ---------------------------------------------------------------- copy */

static int do_copy(const fixture *f, const char *dest, const char *a, const char *b,
                   const sw_build__copy_opts *o, sw_error **err)
{
	char *srcs[3] = { (char *)a, (char *)b, NULL };
	sw_build__copy_opts def = { .source_date_epoch = -1 };
	return sw_build__copy(NULL, f->dst, dest, f->ctx, srcs, o ? o : &def, err);
}

static void test_builder__copy_rules(void **state)
{
	fixture *f = *state;
	make_context(f);
	cleanup_free char *suidp = P(f->ctx, "suid");
	assert_int_equal(chown(suidp, 1000, 1000), 0);
	assert_int_equal(chmod(suidp, 04755), 0);
	set_time(f->ctx, "a.txt", 1234567890);

	/* file to file, parents created 0755 root-owned */
	CHECK_OK(do_copy(f, "/out/x/a2.txt", "a.txt", NULL, NULL, &check_err_));
	assert_content(f->dst, "out/x/a2.txt", "alpha\n");
	struct stat st = lst(f->dst, "out/x/a2.txt");
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(st.st_mtim.tv_sec, 1234567890);
	assert_int_equal(lst(f->dst, "out/x").st_mode & 07777, 0755);

	/* a file into an existing folder of the image */
	put_dir(f->dst, "etc", 0700);
	CHECK_OK(do_copy(f, "/etc", "b.txt", NULL, NULL, &check_err_));
	assert_content(f->dst, "etc/b.txt", "bravo\n");
	assert_int_equal(lst(f->dst, "etc/b.txt").st_mode & 07777, 0600);
	assert_int_equal(lst(f->dst, "etc").st_mode & 07777, 0700); /* untouched */

	/* several files to "dir/"; a trailing slash with one file */
	CHECK_OK(do_copy(f, "/multi/", "a.txt", "c.md", NULL, &check_err_));
	assert_content(f->dst, "multi/a.txt", "alpha\n");
	assert_content(f->dst, "multi/c.md", "charlie\n");
	CHECK_OK(do_copy(f, "/one/", "a.txt", NULL, NULL, &check_err_));
	assert_content(f->dst, "one/a.txt", "alpha\n");
	/* several sources without a slash: still a folder */
	CHECK_OK(do_copy(f, "/noslash", "a.txt", "c.md", NULL, &check_err_));
	assert_content(f->dst, "noslash/c.md", "charlie\n");

	/* a folder copies its content; the created dest is 0755 */
	CHECK_OK(do_copy(f, "/app", "sub", NULL, NULL, &check_err_));
	assert_content(f->dst, "app/d.txt", "delta\n");
	assert_content(f->dst, "app/deep/e.txt", "echo\n");
	assert_false(exists(f->dst, "app/sub"));
	assert_int_equal(lst(f->dst, "app").st_mode & 07777, 0755);
	assert_int_equal(lst(f->dst, "app/deep/e.txt").st_mode & 07777, 0755);
	/* symlinks stay symlinks, hard links stay hard links */
	struct stat ln = lst(f->dst, "app/ln");
	assert_true(S_ISLNK(ln.st_mode));
	char target[64] = "";
	cleanup_free char *lnp = P(f->dst, "app/ln");
	assert_int_equal(readlink(lnp, target, sizeof(target)), 5);
	assert_memory_equal(target, "d.txt", 5);
	struct stat h1 = lst(f->dst, "app/h1"), h2 = lst(f->dst, "app/h2");
	assert_int_equal(h1.st_ino, h2.st_ino);
	assert_int_equal(h1.st_nlink, 2);

	/* the root with .dockerignore: ignored files stay out, re-included ones come */
	sw_dockerignore *di = ignore_of(IGNORE_TEXT);
	sw_build__copy_opts o = { .ignore = di, .source_date_epoch = -1 };
	CHECK_OK(do_copy(f, "/ctx/", ".", NULL, &o, &check_err_));
	assert_content(f->dst, "ctx/a.txt", "alpha\n");
	assert_false(exists(f->dst, "ctx/secret.txt"));
	assert_false(exists(f->dst, "ctx/vendor"));
	assert_content(f->dst, "ctx/ignored/keep.txt", "kept\n");
	assert_false(exists(f->dst, "ctx/ignored/other.txt"));
	/* setuid kept; context owners become 0:0 */
	st = lst(f->dst, "ctx/suid");
	assert_int_equal(st.st_mode & 07777, 04755);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(st.st_gid, 0);
	/* keep_owners (--from sources) keeps them, setuid included */
	sw_build__copy_opts keep = { .keep_owners = true, .source_date_epoch = -1 };
	CHECK_OK(do_copy(f, "/keep/", "suid", NULL, &keep, &check_err_));
	st = lst(f->dst, "keep/suid");
	assert_int_equal(st.st_uid, 1000);
	assert_int_equal(st.st_mode & 07777, 04755);

	/* a source given by name that is a symlink is followed */
	CHECK_OK(do_copy(f, "/followed", "link", NULL, NULL, &check_err_));
	assert_true(S_ISREG(lst(f->dst, "followed").st_mode));
	assert_content(f->dst, "followed", "alpha\n");

	/* existing files are replaced, even by a different kind */
	put_file(f->dst, "repl/a.txt", "old\n", 0600);
	put_link(f->dst, "repl/ln", "/nowhere");
	CHECK_OK(do_copy(f, "/repl/", "a.txt", NULL, NULL, &check_err_));
	assert_content(f->dst, "repl/a.txt", "alpha\n");
	put_file(f->ctx, "ln", "not a link\n", 0644);
	CHECK_OK(do_copy(f, "/repl/", "ln", NULL, NULL, &check_err_));
	assert_true(S_ISREG(lst(f->dst, "repl/ln").st_mode));
	/* a folder cannot replace a file, nor a file a folder */
	sw_error *err = NULL;
	assert_true(do_copy(f, "/repl/a.txt", "sub", NULL, NULL, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), "cannot copy to non-directory"));
	sw_error_clear(&err);
	put_dir(f->dst, "repl2/a.txt", 0755);
	assert_true(do_copy(f, "/repl2/", "a.txt", NULL, NULL, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), "cannot replace the folder '/repl2/a.txt'"));
	sw_error_clear(&err);
	/* folders merge into existing ones */
	put_file(f->ctx, "y/a.txt/inner", "i\n", 0644);
	CHECK_OK(do_copy(f, "/repl2/", "y", NULL, NULL, &check_err_));
	assert_content(f->dst, "repl2/a.txt/inner", "i\n");

	/* fifos and devices are recreated (from --from sources, as root) */
	put_dir(f->ctx, "special", 0755);
	cleanup_free char *fifo = P(f->ctx, "special/fifo");
	cleanup_free char *dev = P(f->ctx, "special/null");
	assert_int_equal(mkfifo(fifo, 0640), 0);
	assert_int_equal(mknod(dev, S_IFCHR | 0666, makedev(1, 3)), 0);
	assert_int_equal(chmod(dev, 0666), 0);
	CHECK_OK(do_copy(f, "/dev2", "special", NULL, &keep, &check_err_));
	st = lst(f->dst, "dev2/fifo");
	assert_true(S_ISFIFO(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0640);
	st = lst(f->dst, "dev2/null");
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(st.st_rdev, makedev(1, 3));
	assert_int_equal(st.st_mode & 07777, 0666);

	/* SOURCE_DATE_EPOCH clamps times */
	sw_build__copy_opts sde = { .source_date_epoch = 1000 };
	CHECK_OK(do_copy(f, "/sde/", "sub", NULL, &sde, &check_err_));
	assert_int_equal(lst(f->dst, "sde/d.txt").st_mtim.tv_sec, 1000);
	assert_int_equal(lst(f->dst, "sde/deep").st_mtim.tv_sec, 1000);

	sw_build__copy_stats stats;
	char *srcs[] = { "sub", NULL };
	sw_build__copy_opts def = { .source_date_epoch = -1 };
	CHECK_OK(sw_build__copy(&stats, f->dst, "/stats", f->ctx, srcs, &def, &check_err_));
	assert_int_equal(stats.files, 5); /* d.txt deep/e.txt h1 h2 ln */
	assert_int_equal(stats.bytes, strlen("delta\necho\nhotel\n"));

	/* a missing source */
	assert_int_equal(do_copy(f, "/x", "missing", NULL, NULL, &err), SW_ERR_NOT_FOUND);
	sw_error_free(err);
	sw_dockerignore_free(di);
}

static void test_builder__copy_chown_chmod(void **state)
{
	fixture *f = *state;
	make_context(f);
	sw_build__copy_opts o = {
		.chown = true,
		.uid = 1000,
		.gid = 1000,
		.chmod = true,
		.mode = 0640,
		.source_date_epoch = -1,
	};
	CHECK_OK(do_copy(f, "/srv/app", "sub", NULL, &o, &check_err_));
	const char *all[] = { "srv/app/d.txt", "srv/app/deep", "srv/app/deep/e.txt", "srv/app/h1",
		              "srv/app/h2" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(all); i++) {
		struct stat st = lst(f->dst, all[i]);
		if (st.st_uid != 1000 || st.st_gid != 1000 || (st.st_mode & 07777) != 0640)
			fail_msg("%s: %u:%u %o", all[i], st.st_uid, st.st_gid, st.st_mode & 07777);
	}
	struct stat ln = lst(f->dst, "srv/app/ln");
	assert_true(S_ISLNK(ln.st_mode));
	assert_int_equal(ln.st_uid, 1000);
	/* created destination folders: 0755, the chown user */
	struct stat app = lst(f->dst, "srv/app");
	assert_int_equal(app.st_mode & 07777, 0755);
	assert_int_equal(app.st_uid, 1000);
	assert_int_equal(lst(f->dst, "srv").st_uid, 1000);
	/* a file */
	CHECK_OK(do_copy(f, "/srv/one.txt", "a.txt", NULL, &o, &check_err_));
	struct stat one = lst(f->dst, "srv/one.txt");
	assert_int_equal(one.st_uid, 1000);
	assert_int_equal(one.st_mode & 07777, 0640);
}

static void test_builder__copy_no_escape(void **state)
{
	fixture *f = *state;
	make_context(f);
	cleanup_free char *outside = P(f->tmp, "outside");
	assert_int_equal(mkdir(outside, 0755), 0);

	/* "/evil -> /../../../<tmp>/outside": followed inside the root */
	cleanup_free char *t1 = sw_xasprintf("/../../../..%s", outside);
	put_link(f->dst, "evil", t1);
	CHECK_OK(do_copy(f, "/evil/a.txt", "a.txt", NULL, NULL, &check_err_));
	cleanup_free char *inside = sw_xasprintf("%s/a.txt", outside + 1);
	assert_content(f->dst, inside, "alpha\n");
	assert_false(exists(outside, "a.txt"));
	/* the same as a folder destination, with a folder source */
	CHECK_OK(do_copy(f, "/evil/", "sub", NULL, NULL, &check_err_));
	assert_false(exists(outside, "d.txt"));
	/* a relative one */
	put_link(f->dst, "rel", "../../../../../../outside");
	CHECK_OK(do_copy(f, "/rel", "a.txt", NULL, NULL, &check_err_));
	assert_content(f->dst, "outside", "alpha\n"); /* "/outside" did not exist: a file */
	assert_false(exists(outside, "a.txt"));
	/* a file destination that is a symlink to outside */
	cleanup_free char *victim = P(outside, "passwd");
	put_file(outside, "passwd", "root:x:0:0\n", 0644);
	cleanup_free char *t2 = sw_xasprintf("/../..%s", victim);
	put_link(f->dst, "passwd", t2);
	CHECK_OK(do_copy(f, "/passwd", "a.txt", NULL, NULL, &check_err_));
	assert_content(outside, "passwd", "root:x:0:0\n");
	cleanup_free char *vin = sw_xasprintf("%s", victim + 1);
	assert_content(f->dst, vin, "alpha\n");
	/* a symlink below the destination folder is never written through */
	put_dir(f->dst, "app", 0755);
	put_link(f->dst, "app/deep", outside);
	sw_error *err = NULL;
	assert_true(do_copy(f, "/app", "sub", NULL, NULL, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), "cannot copy to non-directory: /app/deep"));
	sw_error_free(err);
	assert_false(exists(outside, "e.txt"));
	/* a symlink in the image at a file's place is replaced, not followed */
	put_dir(f->dst, "app2", 0755);
	put_link(f->dst, "app2/d.txt", victim);
	CHECK_OK(do_copy(f, "/app2/", "sub/d.txt", NULL, NULL, &check_err_));
	assert_true(S_ISREG(lst(f->dst, "app2/d.txt").st_mode));
	assert_content(outside, "passwd", "root:x:0:0\n");
}

/* ---------------------------------------------------------------- ADD */

typedef struct tentry {
	const char *name;
	char type; /* f d l h */
	const char *data;
	mode_t mode;
} tentry;

static la_ssize_t file_write_cb(struct archive *a, void *payload, const void *buf, size_t len)
{
	(void)a;
	int fd = *(int *)payload;
	return write(fd, buf, len);
}

static void make_tar(const char *path, const char *filter, const tentry *ents, size_t n)
{
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	archive_write_set_bytes_in_last_block(a, 1); /* no zero padding after a zstd frame */
	if (filter)
		assert_int_equal(archive_write_add_filter_by_name(a, filter), ARCHIVE_OK);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(archive_write_open(a, &fd, NULL, file_write_cb, NULL), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, ents[i].name);
		archive_entry_set_uid(e, 5);
		archive_entry_set_gid(e, 6);
		archive_entry_set_mtime(e, 1600000000, 0);
		archive_entry_set_perm(e, ents[i].mode);
		size_t len = 0;
		switch (ents[i].type) {
		case 'd':
			archive_entry_set_filetype(e, AE_IFDIR);
			break;
		case 'l':
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_set_symlink(e, ents[i].data);
			break;
		case 'h':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_hardlink(e, ents[i].data);
			break;
		default:
			archive_entry_set_filetype(e, AE_IFREG);
			len = strlen(ents[i].data);
			archive_entry_set_size(e, (la_int64_t)len);
		}
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		if (len)
			assert_int_equal(archive_write_data(a, ents[i].data, len), (la_ssize_t)len);
		archive_entry_free(e);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	close(fd);
}

static const tentry pkg[] = {
	{ "pkg/", 'd', NULL, 0750 },           { "pkg/a", 'f', "archived\n", 04711 },
	{ "pkg/l", 'l', "a", 0777 },           { "pkg/h", 'h', "pkg/a", 0644 },
	{ "/abs/b", 'f', "absolute\n", 0644 }, { "./dot/c", 'f', "dotted\n", 0600 },
};

static void test_builder__add_archive(void **state)
{
	fixture *f = *state;
	const char *filters[] = { NULL, "gzip", "bzip2", "xz", "zstd" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(filters); i++) {
		char name[64];
		snprintf(name, sizeof(name), "pkg%zu.tar%s%s", i, filters[i] ? "." : "",
		         filters[i] ? filters[i] : "");
		cleanup_free char *tar = P(f->ctx, name);
		make_tar(tar, filters[i], pkg, SW_ARRAY_SIZE(pkg));
		char dest[64];
		snprintf(dest, sizeof(dest), "/opt/x%zu", i);
		sw_build__copy_opts o = { .add_semantics = true, .source_date_epoch = -1 };
		sw_build__copy_stats stats;
		char *srcs[] = { name, NULL };
		CHECK_OK(sw_build__copy(&stats, f->dst, dest, f->ctx, srcs, &o, &check_err_));
		cleanup_free char *root = sw_xasprintf("%s%s", f->dst, dest);
		assert_content(root, "pkg/a", "archived\n");
		assert_content(root, "abs/b", "absolute\n");
		assert_content(root, "dot/c", "dotted\n");
		struct stat a = lst(root, "pkg/a"), h = lst(root, "pkg/h");
		assert_int_equal(a.st_mode & 07777, 04711);
		assert_int_equal(a.st_uid, 5); /* archive owners are kept */
		assert_int_equal(a.st_gid, 6);
		assert_int_equal(a.st_mtim.tv_sec, 1600000000);
		assert_int_equal(a.st_ino, h.st_ino);
		assert_true(S_ISLNK(lst(root, "pkg/l").st_mode));
		struct stat d = lst(root, "pkg");
		assert_int_equal(d.st_mode & 07777, 0750);
		assert_int_equal(d.st_mtim.tv_sec, 1600000000);
		assert_int_equal(stats.files, 5);
		assert_false(exists(root, name));
	}
	/* COPY never extracts */
	sw_build__copy_opts copy = { .source_date_epoch = -1 };
	CHECK_OK(do_copy(f, "/copied/", "pkg1.tar.gzip", NULL, &copy, &check_err_));
	assert_true(S_ISREG(lst(f->dst, "copied/pkg1.tar.gzip").st_mode));
	/* not an archive (text; gzip of something else): copied as it is */
	put_file(f->ctx, "notes.txt", "just text\n", 0644);
	cleanup_free char *gz = P(f->ctx, "data.gz");
	{
		struct archive *a = archive_write_new();
		archive_write_set_format_raw(a);
		archive_write_add_filter_gzip(a);
		int fd = open(gz, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		assert_int_equal(archive_write_open(a, &fd, NULL, file_write_cb, NULL), ARCHIVE_OK);
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_pathname(e, "x");
		archive_entry_set_size(e, 5);
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		assert_int_equal(archive_write_data(a, "hello", 5), 5);
		archive_entry_free(e);
		archive_write_close(a);
		archive_write_free(a);
		close(fd);
	}
	sw_build__copy_opts add = { .add_semantics = true, .source_date_epoch = -1 };
	CHECK_OK(do_copy(f, "/plain/", "notes.txt", "data.gz", &add, &check_err_));
	assert_content(f->dst, "plain/notes.txt", "just text\n");
	assert_true(S_ISREG(lst(f->dst, "plain/data.gz").st_mode));

	/* hostile archives: refused, naming the entry, nothing written outside */
	cleanup_free char *outside = P(f->tmp, "outside");
	assert_int_equal(mkdir(outside, 0755), 0);
	const tentry evil[] = {
		{ "ok", 'f', "fine\n", 0644 },
		{ "../../../../../../outside/evil", 'f', "pwned\n", 0644 },
	};
	cleanup_free char *evilp = P(f->ctx, "evil.tar");
	make_tar(evilp, NULL, evil, SW_ARRAY_SIZE(evil));
	sw_error *err = NULL;
	assert_int_equal(do_copy(f, "/e/", "evil.tar", NULL, &add, &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), "'../../../../../../outside/evil'"));
	assert_non_null(strstr(sw_error_msg(err), "outside of the destination"));
	sw_error_clear(&err);
	assert_false(exists(outside, "evil"));
	const tentry hl[] = {
		{ "h", 'h', "../../etc/shadow", 0644 },
	};
	make_tar(evilp, NULL, hl, SW_ARRAY_SIZE(hl));
	assert_int_equal(do_copy(f, "/e/", "evil.tar", NULL, &add, &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), "'h'"));
	sw_error_clear(&err);
	/* a symlink entry then a file through it: lands inside the root */
	cleanup_free char *abs_out = sw_xasprintf("/../../../..%s", outside);
	const tentry through[] = {
		{ "door", 'l', abs_out, 0777 },
		{ "door/evil", 'f', "pwned\n", 0644 },
	};
	make_tar(evilp, NULL, through, SW_ARRAY_SIZE(through));
	CHECK_OK(do_copy(f, "/t/", "evil.tar", NULL, &add, &check_err_));
	assert_false(exists(outside, "evil"));
	cleanup_free char *landed = sw_xasprintf("%s/evil", outside + 1);
	assert_content(f->dst, landed, "pwned\n");
}

/* ---------------------------------------------------------------- download */

struct server {
	int lfd;
	int port;
	int stop[2];
	pthread_t thread;
	int requests;
};

static const char BODY[] = "downloaded content\n";

static void *serve(void *arg)
{
	struct server *s = arg;
	for (;;) {
		struct pollfd p[2] = { { s->lfd, POLLIN, 0 }, { s->stop[0], POLLIN, 0 } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		int c = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		char req[4096];
		size_t n = 0;
		while (n < sizeof(req) - 1) {
			ssize_t k = recv(c, req + n, sizeof(req) - 1 - n, 0);
			if (k <= 0)
				break;
			n += (size_t)k;
			req[n] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		req[n] = '\0';
		s->requests++;
		char resp[1024];
		int len;
		if (strncmp(req, "GET /files/hello.txt", 20) == 0 ||
		    strncmp(req, "GET /files/ ", 12) == 0)
			len = snprintf(resp, sizeof(resp),
			               "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n"
			               "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n"
			               "Content-Disposition: attachment; filename=\"named.bin\"\r\n"
			               "Connection: close\r\n\r\n%s",
			               strlen(BODY), BODY);
		else
			len = snprintf(resp, sizeof(resp),
			               "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
			               "Connection: close\r\n\r\n");
		(void)!send(c, resp, (size_t)len, MSG_NOSIGNAL);
		close(c);
	}
	return NULL;
}

static void server_start(struct server *s)
{
	memset(s, 0, sizeof(*s));
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->lfd, 8), 0);
	socklen_t sl = sizeof(sa);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sa, &sl), 0);
	s->port = ntohs(sa.sin_port);
	assert_int_equal(pipe2(s->stop, O_CLOEXEC), 0);
	assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(struct server *s)
{
	(void)!write(s->stop[1], "x", 1);
	pthread_join(s->thread, NULL);
	close(s->stop[0]);
	close(s->stop[1]);
	close(s->lfd);
}

static void test_builder__download(void **state)
{
	fixture *f = *state;
	struct server s;
	server_start(&s);
	cleanup_free char *dir = P(f->tmp, "dl");
	assert_int_equal(mkdir(dir, 0700), 0);
	cleanup_free char *url = sw_xasprintf("http://127.0.0.1:%d/files/hello.txt?x=1", s.port);
	sw_digest want;
	sw_oci_digest_bytes(&want, BODY, strlen(BODY));

	char *path = NULL;
	CHECK_OK(sw_build__download(&path, url, want.s, dir, &check_err_));
	cleanup_free char *expect = P(dir, "hello.txt");
	assert_string_equal(path, expect);
	assert_content(dir, "hello.txt", BODY);
	struct stat st = lst(dir, "hello.txt");
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_mtim.tv_sec, 1445412480);
	free(path);

	/* no checksum; a URL ending in "/" takes Content-Disposition's name */
	cleanup_free char *url2 = sw_xasprintf("http://127.0.0.1:%d/files/", s.port);
	CHECK_OK(sw_build__download(&path, url2, NULL, dir, &check_err_));
	cleanup_free char *expect2 = P(dir, "named.bin");
	assert_string_equal(path, expect2);
	free(path);

	/* a bad checksum: refused, nothing left behind */
	cleanup_free char *dir2 = P(f->tmp, "dl2");
	assert_int_equal(mkdir(dir2, 0700), 0);
	const char *bad = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
	sw_error *err = NULL;
	path = NULL;
	assert_int_equal(sw_build__download(&path, url, bad, dir2, &err), SW_ERR_INVALID);
	assert_null(path);
	cleanup_free char *msg =
	        sw_xasprintf("checksum mismatch: expected %s, got %s", bad, want.s);
	assert_non_null(strstr(sw_error_msg(err), msg));
	sw_error_clear(&err);
	assert_int_equal(rmdir(dir2), 0); /* empty */

	/* 404, and schemes other than http(s) */
	cleanup_free char *url3 = sw_xasprintf("http://127.0.0.1:%d/missing", s.port);
	assert_int_equal(sw_build__download(&path, url3, NULL, dir, &err), SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(err), "HTTP 404"));
	sw_error_clear(&err);
	assert_int_equal(sw_build__download(&path, "file:///etc/passwd", NULL, dir, &err),
	                 SW_ERR_INVALID);
	sw_error_clear(&err);
	assert_int_equal(sw_build__download(&path, url, "md5:abc", dir, &err), SW_ERR_INVALID);
	sw_error_clear(&err);
	server_stop(&s);
}

int test_builder_context_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_builder__context_match, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder__context_digest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder__context_statcache, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder__context_digest_speed, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_builder__copy_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder__copy_chown_chmod, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder__copy_no_escape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder__add_archive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder__download, setup, teardown),
	};
	return cmocka_run_group_tests_name("builder_context", tests, NULL, NULL);
}
