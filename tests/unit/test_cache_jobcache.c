/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The "jobcache" group of the cache module's unit test program: pipeline job caches saved and
 * restored (files, folders, symlinks, modes, mtimes), misses, damaged and truncated archives
 * (a miss with a warning, removed), a save killed halfway (the old version stays), two saves of
 * one key at once (one whole version), hostile archives (nothing written outside the
 * workspace), and prune removing job caches least recently restored first. Each case works in
 * its own temporary state folder, removed afterwards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cache/cache.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int test_cache_jobcache_run(void);

typedef struct fixture {
	char *tmp;
	char *state;
	char *ws;
	sw_oci_store *store;
	sw_cache *cache;
} fixture;

#define CHECK_OK(expr)                                                \
	do {                                                          \
		sw_error *err = NULL;                                 \
		int check_r_ = (expr);                                \
		if (check_r_ < 0)                                     \
			fail_msg("%s: %s", #expr, sw_error_msg(err)); \
		sw_error_free(err);                                   \
	} while (0)

static char *P(const char *a, const char *b)
{
	return sw_path_join(a, b);
}

static int setup(void **state)
{
	fixture *f = sw_xcalloc(1, sizeof(*f));
	sw_error *err = NULL;
	cleanup_free char *sdir = NULL;
	if (sw_fs_mkdtemp(&f->tmp, NULL, "sw-jobcache-test-", &err) < 0)
		goto fail;
	f->state = P(f->tmp, "state");
	f->ws = P(f->tmp, "ws");
	sdir = P(f->state, "store");
	if (sw_fs_mkdir_p(f->ws, 0755, &err) < 0 ||
	    sw_oci_store_open(&f->store, sdir, true, &err) < 0 ||
	    sw_cache_open(&f->cache, f->state, f->store, &err) < 0)
		goto fail;
	*state = f;
	return 0;
fail:
	fprintf(stderr, "setup: %s\n", sw_error_msg(err));
	sw_error_free(err);
	return -1;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sw_error *err = NULL;
	sw_cache_free(f->cache);
	sw_oci_store_free(f->store);
	int r = sw_fs_rm_rf(f->tmp, &err);
	if (r < 0)
		fprintf(stderr, "%s\n", sw_error_msg(err));
	sw_error_free(err);
	free(f->state);
	free(f->ws);
	free(f->tmp);
	free(f);
	return r < 0 ? -1 : 0;
}

static void mkfile(const char *root, const char *rel, const char *content, mode_t mode)
{
	cleanup_free char *p = P(root, rel);
	cleanup_free char *dir = sw_xstrdup(p);
	*strrchr(dir, '/') = '\0';
	CHECK_OK(sw_fs_mkdir_p(dir, 0755, &err));
	CHECK_OK(sw_fs_write_atomic(p, content, strlen(content), mode, &err));
	assert_int_equal(chmod(p, mode), 0);
}

static char *slurp(const char *root, const char *rel)
{
	cleanup_free char *p = P(root, rel);
	char *buf = NULL;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, NULL, p, 1 << 24, &e) < 0) {
		sw_error_free(e);
		return NULL;
	}
	return buf;
}

static void assert_file(const char *root, const char *rel, const char *content)
{
	cleanup_free char *got = slurp(root, rel);
	if (!got)
		fail_msg("'%s/%s' is missing", root, rel);
	assert_string_equal(got, content);
}

static bool exists(const char *root, const char *rel)
{
	cleanup_free char *p = *rel ? P(root, rel) : sw_xstrdup(root);
	struct stat st;
	return lstat(p, &st) == 0;
}

static char *archive_path(fixture *f, const char *key)
{
	sw_digest d;
	sw_oci_digest_bytes(&d, key, strlen(key));
	return sw_xasprintf("%s/cache/jobs/%s.tar", f->state, sw_oci_digest_hex(&d));
}

static size_t count_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.' || (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."));
	closedir(d);
	return n;
}

static void restore_expect(fixture *f, const char *key, bool want_hit, bool want_warning)
{
	bool hit = true;
	char *warning = NULL;
	CHECK_OK(sw_cache_job_restore(&hit, &warning, f->cache, key, f->ws, &err));
	assert_int_equal(hit, want_hit);
	if (want_warning) {
		assert_non_null(warning);
		assert_non_null(strstr(warning, key));
		assert_non_null(strstr(warning, "damaged"));
	} else if (warning) {
		fail_msg("unexpected warning: %s", warning);
	}
	free(warning);
}

static void empty_ws(fixture *f)
{
	CHECK_OK(sw_fs_rm_rf(f->ws, &err));
	CHECK_OK(sw_fs_mkdir_p(f->ws, 0755, &err));
}

/* ---------------------------------------------------------------- cases */

static void test_cache__job_roundtrip(void **state)
{
	fixture *f = *state;
	mkfile(f->ws, "node_modules/a/index.js", "module.exports = 1;\n", 0644);
	mkfile(f->ws, "node_modules/.bin/tool", "#!/bin/sh\n", 0755);
	mkfile(f->ws, "node_modules/secret.txt", "s", 0600);
	mkfile(f->ws, "vendor/lib.a", "lib", 0644);
	mkfile(f->ws, "not-cached.txt", "no", 0644);
	cleanup_free char *nm = P(f->ws, "node_modules");
	cleanup_free char *emptyd = P(nm, "empty");
	assert_int_equal(mkdir(emptyd, 0750), 0);
	cleanup_free char *link = P(nm, "link");
	assert_int_equal(symlink("a/index.js", link), 0);
	cleanup_free char *out = P(nm, "outside");
	assert_int_equal(symlink("/etc/passwd", out), 0);
	struct timespec ts[2] = { { 1600000000, 0 }, { 1600000000, 500000000 } };
	cleanup_free char *idx = P(f->ws, "node_modules/a/index.js");
	assert_int_equal(utimensat(AT_FDCWD, idx, ts, 0), 0);
	struct timespec dts[2] = { { 1500000000, 0 }, { 1500000000, 0 } };
	cleanup_free char *adir = P(f->ws, "node_modules/a");
	assert_int_equal(utimensat(AT_FDCWD, adir, dts, 0), 0);

	const char *paths[] = { "node_modules", "vendor/lib.a", "missing/thing", "node_modules/a" };
	uint64_t bytes = 0;
	CHECK_OK(sw_cache_job_save(&bytes, f->cache, "deps-v1 key", f->ws, paths, 4, &err));
	cleanup_free char *ap = archive_path(f, "deps-v1 key");
	struct stat st;
	assert_int_equal(stat(ap, &st), 0);
	assert_int_equal((uint64_t)st.st_size, bytes);

	empty_ws(f);
	mkfile(f->ws, "node_modules/a/index.js", "old content that is replaced\n", 0666);
	restore_expect(f, "deps-v1 key", true, false);
	assert_file(f->ws, "node_modules/a/index.js", "module.exports = 1;\n");
	assert_file(f->ws, "node_modules/.bin/tool", "#!/bin/sh\n");
	assert_file(f->ws, "vendor/lib.a", "lib");
	assert_false(exists(f->ws, "not-cached.txt"));
	assert_int_equal(stat(idx, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_mtim.tv_sec, 1600000000);
	assert_int_equal(st.st_mtim.tv_nsec, 500000000);
	cleanup_free char *tool = P(f->ws, "node_modules/.bin/tool");
	assert_int_equal(stat(tool, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	cleanup_free char *sec = P(f->ws, "node_modules/secret.txt");
	assert_int_equal(stat(sec, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(emptyd, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0750);
	assert_int_equal(stat(adir, &st), 0);
	assert_int_equal(st.st_mtim.tv_sec, 1500000000);
	char target[64] = { 0 };
	assert_int_equal(lstat(link, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_true(readlink(link, target, sizeof(target) - 1) > 0);
	assert_string_equal(target, "a/index.js");
	memset(target, 0, sizeof(target));
	assert_int_equal(lstat(out, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_true(readlink(out, target, sizeof(target) - 1) > 0);
	assert_string_equal(target, "/etc/passwd");

	/* usage counts it */
	sw_cache_usage u;
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_int_equal(u.job_caches, 1);
	assert_int_equal(u.job_cache_bytes, bytes);
}

static void test_cache__job_miss_and_refusals(void **state)
{
	fixture *f = *state;
	restore_expect(f, "never saved", false, false);
	/* paths leaving the workspace are refused */
	mkfile(f->ws, "ok.txt", "ok", 0644);
	cleanup_free char *outside = P(f->tmp, "outside");
	CHECK_OK(sw_fs_mkdir_p(outside, 0755, &err));
	mkfile(outside, "secret", "secret", 0644);
	cleanup_free char *ln = P(f->ws, "escape");
	assert_int_equal(symlink(outside, ln), 0);
	const char *bad[] = { "../outside", "/etc", "escape/secret", "a/../../x" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(bad); i++) {
		sw_error *e = NULL;
		const char *paths[] = { "ok.txt", bad[i] };
		assert_true(sw_cache_job_save(NULL, f->cache, "k", f->ws, paths, 2, &e) < 0);
		assert_non_null(strstr(sw_error_msg(e), bad[i]));
		sw_error_free(e);
	}
	/* nothing was left behind by the refused saves */
	cleanup_free char *jobs = sw_xasprintf("%s/cache/jobs", f->state);
	assert_int_equal(count_dir(jobs), 0);
	/* the symlink itself is stored as a symlink (never followed) */
	const char *paths[] = { "escape" };
	CHECK_OK(sw_cache_job_save(NULL, f->cache, "k", f->ws, paths, 1, &err));
	empty_ws(f);
	restore_expect(f, "k", true, false);
	struct stat st;
	assert_int_equal(lstat(ln, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_false(exists(f->ws, "secret"));
}

static void test_cache__job_damaged(void **state)
{
	fixture *f = *state;
	mkfile(f->ws, "dir/big.bin", "", 0644);
	/* a file large enough that cuts fall inside its content and between entries */
	cleanup_free char *big = sw_xmalloc(100000);
	for (size_t i = 0; i < 100000; i++)
		big[i] = (char)('a' + i % 26);
	cleanup_free char *bigp = P(f->ws, "dir/big.bin");
	CHECK_OK(sw_fs_write_atomic(bigp, big, 100000, 0644, &err));
	mkfile(f->ws, "dir/small.txt", "small", 0644);
	const char *paths[] = { "dir" };
	cleanup_free char *ap = archive_path(f, "key");
	struct stat st;
	/* truncated at several places, and one flipped byte */
	long cuts[] = { 100, 512, 1024, 50000, -512, -1 };
	for (size_t i = 0; i < SW_ARRAY_SIZE(cuts) + 1; i++) {
		CHECK_OK(sw_cache_job_save(NULL, f->cache, "key", f->ws, paths, 1, &err));
		assert_int_equal(stat(ap, &st), 0);
		if (i < SW_ARRAY_SIZE(cuts)) {
			off_t at = cuts[i] >= 0 ? cuts[i] : st.st_size + cuts[i];
			assert_int_equal(truncate(ap, at), 0);
		} else {
			int fd = open(ap, O_RDWR);
			assert_true(fd >= 0);
			assert_int_equal(pwrite(fd, "Z", 1, 3000), 1);
			close(fd);
		}
		cleanup_free char *ws2 = P(f->tmp, "ws2");
		CHECK_OK(sw_fs_rm_rf(ws2, &err));
		CHECK_OK(sw_fs_mkdir_p(ws2, 0755, &err));
		bool hit = true;
		char *warning = NULL;
		CHECK_OK(sw_cache_job_restore(&hit, &warning, f->cache, "key", ws2, &err));
		assert_false(hit);
		if (!warning)
			fail_msg("case %zu: no warning", i);
		assert_non_null(strstr(warning, "'key'"));
		free(warning);
		/* removed, and nothing half restored */
		assert_false(exists(ap, ""));
		assert_false(exists(ws2, "dir/small.txt"));
		assert_false(exists(ws2, "dir/big.bin"));
		/* next time: a plain miss */
		restore_expect(f, "key", false, false);
	}
}

static void test_cache__job_killed_save(void **state)
{
	fixture *f = *state;
	mkfile(f->ws, "cache/v.txt", "version 1", 0644);
	const char *paths[] = { "cache" };
	CHECK_OK(sw_cache_job_save(NULL, f->cache, "key", f->ws, paths, 1, &err));
	/* a save killed halfway: its temporary file (owned by a process that is gone) is left
	 * half written next to the old version */
	cleanup_free char *jobs = sw_xasprintf("%s/cache/jobs", f->state);
	cleanup_free char *dead = sw_xasprintf("%s/999999999-1.job-AbCdEf", jobs);
	CHECK_OK(sw_fs_write_atomic(dead, "half a tar", 10, 0600, &err));
	empty_ws(f);
	restore_expect(f, "key", true, false);
	assert_file(f->ws, "cache/v.txt", "version 1");
	/* usage does not count it; the next save removes it */
	sw_cache_usage u;
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_int_equal(u.job_caches, 1);
	mkfile(f->ws, "cache/v.txt", "version 2", 0644);
	CHECK_OK(sw_cache_job_save(NULL, f->cache, "key", f->ws, paths, 1, &err));
	assert_false(exists(dead, ""));
	assert_int_equal(count_dir(jobs), 1);
	empty_ws(f);
	restore_expect(f, "key", true, false);
	assert_file(f->ws, "cache/v.txt", "version 2");
}

typedef struct saver_arg {
	fixture *f;
	const char *ws;
	int rounds;
	int failures;
} saver_arg;

static void *saver_thread(void *p)
{
	saver_arg *a = p;
	const char *paths[] = { "data" };
	for (int i = 0; i < a->rounds; i++) {
		sw_error *e = NULL;
		if (sw_cache_job_save(NULL, a->f->cache, "shared", a->ws, paths, 1, &e) < 0) {
			fprintf(stderr, "save: %s\n", sw_error_msg(e));
			a->failures++;
		}
		sw_error_free(e);
	}
	return NULL;
}

static void test_cache__job_concurrent_saves(void **state)
{
	fixture *f = *state;
	/* two workspaces with different content of the same names */
	cleanup_free char *wa = P(f->tmp, "wa");
	cleanup_free char *wb = P(f->tmp, "wb");
	cleanup_free char *ba = sw_xmalloc(200001);
	cleanup_free char *bb = sw_xmalloc(200001);
	memset(ba, 'A', 200000);
	memset(bb, 'B', 200000);
	ba[200000] = bb[200000] = '\0';
	for (int i = 0; i < 5; i++) {
		cleanup_free char *rel = sw_xasprintf("data/f%d", i);
		mkfile(wa, rel, ba, 0644);
		mkfile(wb, rel, bb, 0644);
	}
	saver_arg a = { f, wa, 8, 0 }, b = { f, wb, 8, 0 };
	pthread_t ta, tb;
	assert_int_equal(pthread_create(&ta, NULL, saver_thread, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, saver_thread, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	assert_int_equal(a.failures + b.failures, 0);
	/* one whole version: every file from the same workspace */
	restore_expect(f, "shared", true, false);
	cleanup_free char *first = slurp(f->ws, "data/f0");
	assert_non_null(first);
	assert_int_equal(strlen(first), 200000);
	for (int i = 1; i < 5; i++) {
		cleanup_free char *rel = sw_xasprintf("data/f%d", i);
		assert_file(f->ws, rel, first);
	}
	cleanup_free char *jobs = sw_xasprintf("%s/cache/jobs", f->state);
	assert_int_equal(count_dir(jobs), 1);
}

/* Write a job cache archive by hand (with the end block a save writes) holding one entry. */
static void write_hostile(const char *path, const char *entry, mode_t type, const char *link)
{
	size_t cap = 1 << 16, used = 0;
	char *buf = sw_xcalloc(1, cap);
	struct archive *a = archive_write_new();
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_memory(a, buf, cap, &used), ARCHIVE_OK);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, "fine.txt");
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, 4);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	assert_int_equal(archive_write_data(a, "fine", 4), 4);
	archive_entry_clear(e);
	archive_entry_set_pathname(e, entry);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, 0644);
	if (type == AE_IFLNK) {
		archive_entry_set_symlink(e, link);
		archive_entry_set_size(e, 0);
	} else {
		archive_entry_set_size(e, 4);
	}
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	if (type == AE_IFREG)
		assert_int_equal(archive_write_data(a, "evil", 4), 4);
	if (type == AE_IFLNK) {
		/* then a file through that symlink */
		cleanup_free char *through = sw_xasprintf("%s/z.txt", entry);
		archive_entry_clear(e);
		archive_entry_set_pathname(e, through);
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_perm(e, 0644);
		archive_entry_set_size(e, 4);
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		assert_int_equal(archive_write_data(a, "evil", 4), 4);
	}
	archive_entry_free(e);
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	sw_digest d;
	sw_oci_digest_bytes(&d, buf, used);
	char trailer[512] = { 0 };
	snprintf(trailer, sizeof(trailer), "slipway-job-cache 1\nsha256:%s\nsize:%zu\n",
	         sw_oci_digest_hex(&d), used);
	buf = sw_xrealloc(buf, used + 512);
	memcpy(buf + used, trailer, 512);
	CHECK_OK(sw_fs_write_atomic(path, buf, used + 512, 0600, &err));
	free(buf);
}

static void test_cache__job_hostile(void **state)
{
	fixture *f = *state;
	cleanup_free char *jobs = sw_xasprintf("%s/cache/jobs", f->state);
	CHECK_OK(sw_fs_mkdir_p(jobs, 0700, &err));
	cleanup_free char *victim = P(f->tmp, "victim");
	CHECK_OK(sw_fs_mkdir_p(victim, 0755, &err));
	cleanup_free char *abs_target = P(victim, "abs.txt");
	cleanup_free char *ws_link = P(f->ws, "to-victim");
	struct {
		const char *entry;
		mode_t type;
		const char *link;
	} cases[] = {
		{ "../victim/x.txt", AE_IFREG, NULL },
		{ abs_target, AE_IFREG, NULL },
		{ "to-victim/y.txt", AE_IFREG, NULL }, /* through a symlink in the workspace */
	};
	assert_int_equal(symlink(victim, ws_link), 0);
	for (size_t i = 0; i < SW_ARRAY_SIZE(cases); i++) {
		cleanup_free char *ap = archive_path(f, "hostile");
		write_hostile(ap, cases[i].entry, cases[i].type, cases[i].link);
		bool hit = true;
		char *warning = NULL;
		CHECK_OK(sw_cache_job_restore(&hit, &warning, f->cache, "hostile", f->ws, &err));
		assert_false(hit);
		/* the applier named the entry it refused */
		if (!warning || !strstr(warning, cases[i].entry))
			fail_msg("case %zu: warning '%s'", i, warning ? warning : "(none)");
		free(warning);
		/* refused, removed, nothing written outside */
		assert_false(exists(ap, ""));
		assert_int_equal(count_dir(victim), 0);
	}
	/* a symlink entry pointing out, then a file through it, in one archive: the file must not
	 * land outside either (the applier refuses writing through symlinks) */
	cleanup_free char *ap = archive_path(f, "hostile2");
	write_hostile(ap, "esc", AE_IFLNK, victim);
	restore_expect(f, "hostile2", false, true);
	assert_int_equal(count_dir(victim), 0);
}

static void set_mtime(const char *path, time_t t)
{
	struct timespec ts[2] = { { t, 0 }, { t, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void test_cache__job_prune_lru(void **state)
{
	fixture *f = *state;
	cleanup_free char *blob = sw_xmalloc(30001);
	memset(blob, 'x', 30000);
	blob[30000] = '\0';
	mkfile(f->ws, "d/file", blob, 0644);
	const char *paths[] = { "d" };
	const char *keys[] = { "old", "middle", "new" };
	uint64_t sizes[3];
	time_t now = time(NULL);
	for (int i = 0; i < 3; i++) {
		CHECK_OK(sw_cache_job_save(&sizes[i], f->cache, keys[i], f->ws, paths, 1, &err));
		cleanup_free char *ap = archive_path(f, keys[i]);
		set_mtime(ap, now - 3000 + i * 1000);
	}
	/* restoring "old" makes it the most recently used */
	empty_ws(f);
	restore_expect(f, "old", true, false);
	sw_cache_usage u;
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_int_equal(u.job_caches, 3);
	assert_int_equal(u.job_cache_bytes, sizes[0] + sizes[1] + sizes[2]);
	uint64_t keep = u.blob_bytes + u.snapshot_bytes + sizes[0] + sizes[2];
	sw_cache_prune_stats st;
	CHECK_OK(sw_cache_prune(&st, f->cache, keep, &err));
	assert_int_equal(st.job_caches_removed, 1);
	assert_int_equal(st.bytes_freed, sizes[1]);
	assert_int_equal(st.after.job_caches, 2);
	cleanup_free char *pm = archive_path(f, "middle");
	cleanup_free char *po = archive_path(f, "old");
	cleanup_free char *pn = archive_path(f, "new");
	assert_false(exists(pm, ""));
	assert_true(exists(po, ""));
	assert_true(exists(pn, ""));
	/* next: "new" (restored longer ago than "old") */
	CHECK_OK(sw_cache_prune(&st, f->cache, sizes[0], &err));
	assert_int_equal(st.job_caches_removed, 1);
	assert_false(exists(pn, ""));
	assert_true(exists(po, ""));
	/* the cap counts job caches too */
	CHECK_OK(sw_cache_enforce_cap(f->cache, sizes[0] / 2, &err));
	assert_false(exists(po, ""));
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_int_equal(u.job_caches, 0);
	assert_int_equal(u.job_cache_bytes, 0);
}

int test_cache_jobcache_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cache__job_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__job_miss_and_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__job_damaged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__job_killed_save, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__job_concurrent_saves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__job_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__job_prune_lru, setup, teardown),
	};
	return cmocka_run_group_tests_name("jobcache", tests, NULL, NULL);
}
