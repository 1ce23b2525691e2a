/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cache module's unit test program: layer snapshots (unpacked with overlay-style whiteouts,
 * verified against the diff ID, made once, adopted, raced for by two processes), the build
 * cache index (put, lookup, list order, stale entries), usage and prune (least recently used
 * first, blobs and layers of tagged images kept, sizes that add up, the lock that keeps running
 * builds' snapshots), the size cap, sizes with units and the sweep of scratch folders left by
 * dead processes. Each case works in its own temporary state folder, removed afterwards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cache/cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>

typedef struct fixture {
	char *tmp;
	char *state;
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

static int setup(void **state)
{
	fixture *f = sw_xcalloc(1, sizeof(*f));
	sw_error *err = NULL;
	cleanup_free char *sdir = NULL;
	if (sw_fs_mkdtemp(&f->tmp, NULL, "sw-cache-test-", &err) < 0)
		goto fail;
	f->state = sw_path_join(f->tmp, "state");
	sdir = sw_path_join(f->state, "store");
	if (sw_oci_store_open(&f->store, sdir, true, &err) < 0 ||
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
	free(f->tmp);
	free(f);
	return r < 0 ? -1 : 0;
}

/* ---------------------------------------------------------------- helpers */

static char *P(const char *dir, const char *rel)
{
	return sw_path_join(dir, rel);
}

static void put_file(const char *dir, const char *rel, const char *data, mode_t mode)
{
	cleanup_free char *p = P(dir, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	size_t len = strlen(data);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void put_dir(const char *dir, const char *rel, mode_t mode)
{
	cleanup_free char *p = P(dir, rel);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(chmod(p, mode), 0);
}

static char *read_text(const char *dir, const char *rel)
{
	cleanup_free char *p = P(dir, rel);
	char *buf = NULL;
	sw_error *err = NULL;
	if (sw_fs_read_file(&buf, NULL, p, 1 << 20, &err) < 0)
		fail_msg("%s", sw_error_msg(err));
	return buf;
}

static char *new_dir(fixture *f, const char *name)
{
	char *p = P(f->tmp, name);
	assert_int_equal(mkdir(p, 0755), 0);
	return p;
}

/* A layer written from `dir` into the store; *desc is the caller's to clear. */
static void make_layer(sw_oci_descriptor *desc, sw_digest *diff_id, fixture *f, const char *dir,
                       bool overlay_upper)
{
	sw_oci_layer_opts o = { .compression = SW_OCI_COMPRESS_GZIP,
		                .overlay_upper = overlay_upper,
		                .source_date_epoch = 1000 };
	sw_oci_layer_info info;
	CHECK_OK(sw_oci_layer_write_dir(&info, f->store, dir, &o, &err));
	memset(desc, 0, sizeof(*desc));
	desc->media_type = sw_xstrdup(info.media_type);
	desc->digest = info.blob_digest;
	desc->size = info.blob_size;
	*diff_id = info.diff_id;
}

/* A layer with `n` files of distinct content named after `tag`. */
static void make_simple_layer(sw_oci_descriptor *desc, sw_digest *diff_id, fixture *f,
                              const char *tag, int n)
{
	cleanup_free char *name = sw_xasprintf("src-%s", tag);
	cleanup_free char *dir = new_dir(f, name);
	for (int i = 0; i < n; i++) {
		char rel[64], data[128];
		snprintf(rel, sizeof(rel), "f%03d", i);
		snprintf(data, sizeof(data), "%s file %d %0*d\n", tag, i, 40, i);
		put_file(dir, rel, data, 0644);
	}
	make_layer(desc, diff_id, f, dir, false);
}

static void entry_fill(sw_cache_entry *e, const char *keyseed, const sw_oci_descriptor *blob,
                       const sw_digest *diff_id, int64_t last_used)
{
	memset(e, 0, sizeof(*e));
	sw_digest k;
	sw_oci_digest_bytes(&k, keyseed, strlen(keyseed));
	snprintf(e->key, sizeof(e->key), "%s", k.s);
	e->diff_id = *diff_id;
	e->blob.media_type = blob->media_type;
	e->blob.digest = blob->digest;
	e->blob.size = blob->size;
	e->created_by = (char *)keyseed;
	e->created = last_used;
	e->last_used = last_used;
}

static void put_entry(fixture *f, const char *keyseed, const sw_oci_descriptor *blob,
                      const sw_digest *diff_id, int64_t last_used)
{
	sw_cache_entry e;
	entry_fill(&e, keyseed, blob, diff_id, last_used);
	CHECK_OK(sw_cache_put(f->cache, &e, &err));
}

static char *key_of(const char *keyseed)
{
	sw_digest k;
	sw_oci_digest_bytes(&k, keyseed, strlen(keyseed));
	return sw_xstrdup(k.s);
}

static char *snapshot_path(fixture *f, const sw_digest *diff_id)
{
	return sw_xasprintf("%s/cache/snapshots/%s", f->state, sw_oci_digest_hex(diff_id));
}

static void set_snapshot_used(fixture *f, const sw_digest *diff_id, time_t t)
{
	cleanup_free char *p =
	        sw_xasprintf("%s/cache/snapshots/%s.info", f->state, sw_oci_digest_hex(diff_id));
	struct timespec ts[2] = { { t, 0 }, { t, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static bool exists(const char *p)
{
	struct stat st;
	return lstat(p, &st) == 0;
}

static size_t count_dir(const char *p)
{
	DIR *d = opendir(p);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static size_t tmp_count(fixture *f)
{
	cleanup_free char *p = sw_xasprintf("%s/cache/tmp", f->state);
	return count_dir(p);
}

static uint64_t du(const char *p)
{
	/* an independent measure: `du -s -B1` */
	cleanup_free char *cmd = sw_xasprintf("du -s -B1 '%s'", p);
	FILE *pp = popen(cmd, "r");
	assert_non_null(pp);
	unsigned long long v = 0;
	assert_int_equal(fscanf(pp, "%llu", &v), 1);
	pclose(pp);
	return v;
}

/* Tag an image in the store whose only layer is `layer` (diff ID `diff_id`). */
static void tag_image(fixture *f, const char *name, const sw_oci_descriptor *layer,
                      const sw_digest *diff_id)
{
	cleanup_free char *cfg = sw_xasprintf(
	        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
	        "\"diff_ids\":[\"%s\"]}}",
	        diff_id->s);
	sw_digest cd;
	CHECK_OK(sw_oci_store_put_blob(&cd, f->store, cfg, strlen(cfg), &err));
	sw_oci_manifest m = { 0 };
	m.media_type = SW_OCI_MT_MANIFEST;
	m.config.media_type = SW_OCI_MT_CONFIG;
	m.config.digest = cd;
	m.config.size = (int64_t)strlen(cfg);
	m.layers = (sw_oci_descriptor *)layer;
	m.n_layers = 1;
	size_t len = 0;
	cleanup_free char *ms = sw_oci_manifest_serialize(&m, &len);
	assert_non_null(ms);
	sw_oci_descriptor d = { 0 };
	d.media_type = SW_OCI_MT_MANIFEST;
	d.size = (int64_t)len;
	CHECK_OK(sw_oci_store_put_blob(&d.digest, f->store, ms, len, &err));
	CHECK_OK(sw_oci_store_tag(f->store, name, &d, &err));
}

/* ---------------------------------------------------------------- snapshots */

static void test_cache__snapshot_unpack(void **state)
{
	fixture *f = *state;
	/* a base layer: files, modes, owners, a symlink */
	cleanup_free char *base = new_dir(f, "base");
	put_dir(base, "etc", 0755);
	put_file(base, "etc/hello", "hello\n", 0640);
	put_dir(base, "data", 0750);
	put_file(base, "data/old", "old\n", 0600);
	cleanup_free char *owned = P(base, "data/old");
	assert_int_equal(chown(owned, 1000, 1001), 0);
	cleanup_free char *ln = P(base, "hello-link");
	assert_int_equal(symlink("etc/hello", ln), 0);
	sw_oci_descriptor l1;
	sw_digest d1;
	make_layer(&l1, &d1, f, base, false);

	/* an overlay upper folder: etc/hello deleted (0/0 char device), data made opaque */
	cleanup_free char *up = new_dir(f, "upper");
	put_dir(up, "etc", 0755);
	cleanup_free char *wh = P(up, "etc/hello");
	assert_int_equal(mknod(wh, S_IFCHR | 0000, makedev(0, 0)), 0);
	put_dir(up, "data", 0750);
	cleanup_free char *data = P(up, "data");
	assert_int_equal(setxattr(data, "trusted.overlay.opaque", "y", 1, 0), 0);
	put_file(up, "data/inner", "inner\n", 0644);
	put_file(up, "new", "new\n", 0755);
	sw_oci_descriptor l2;
	sw_digest d2;
	make_layer(&l2, &d2, f, up, true);

	cleanup_free char *s1 = NULL, *s2 = NULL;
	CHECK_OK(sw_cache_snapshot_get(&s1, f->cache, &l1, &d1, &err));
	CHECK_OK(sw_cache_snapshot_get(&s2, f->cache, &l2, &d2, &err));
	cleanup_free char *want1 = snapshot_path(f, &d1);
	assert_string_equal(s1, want1);
	assert_true(sw_cache_snapshot_has(f->cache, &d1));
	assert_true(sw_cache_snapshot_has(f->cache, &d2));

	/* the base layer as it was */
	cleanup_free char *t = read_text(s1, "etc/hello");
	assert_string_equal(t, "hello\n");
	struct stat st;
	cleanup_free char *p = P(s1, "etc/hello");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	cleanup_free char *p2 = P(s1, "data/old");
	assert_int_equal(lstat(p2, &st), 0);
	assert_int_equal(st.st_uid, 1000);
	assert_int_equal(st.st_gid, 1001);
	cleanup_free char *p3 = P(s1, "hello-link");
	char target[64] = { 0 };
	assert_int_equal(readlink(p3, target, sizeof(target) - 1), 9);
	assert_string_equal(target, "etc/hello");
	/* the root of a snapshot is a usable "/" */
	assert_int_equal(lstat(s1, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);

	/* the upper layer alone: the whiteout is a 0/0 char device again, data is opaque */
	cleanup_free char *q = P(s2, "etc/hello");
	assert_int_equal(lstat(q, &st), 0);
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(st.st_rdev, makedev(0, 0));
	cleanup_free char *q2 = P(s2, "data");
	char v[4] = { 0 };
	assert_int_equal(getxattr(q2, "trusted.overlay.opaque", v, sizeof(v)), 1);
	assert_int_equal(v[0], 'y');
	cleanup_free char *t2 = read_text(s2, "data/inner");
	assert_string_equal(t2, "inner\n");
	cleanup_free char *t3 = read_text(s2, "new");
	assert_string_equal(t3, "new\n");
	cleanup_free char *q3 = P(s2, "data/old");
	assert_false(exists(q3));
	/* nothing left in tmp/ */
	assert_int_equal(tmp_count(f), 0);

	/* and the two, as overlay lower folders, give the upper layer's view */
	cleanup_free char *merged = new_dir(f, "merged");
	cleanup_free char *o = sw_xasprintf("lowerdir=%s:%s", s2, s1);
	if (mount("overlay", merged, "overlay", MS_RDONLY, o) < 0)
		fail_msg("mount overlay: %s", strerror(errno));
	cleanup_free char *m1 = P(merged, "etc/hello");
	cleanup_free char *m2 = P(merged, "data/old");
	cleanup_free char *m3 = P(merged, "data/inner");
	cleanup_free char *m4 = P(merged, "hello-link");
	bool hidden = !exists(m1) && !exists(m2);
	bool shown = exists(m3) && exists(m4);
	assert_int_equal(umount2(merged, MNT_DETACH), 0);
	assert_true(hidden);
	assert_true(shown);
	sw_oci_descriptor_clear(&l1);
	sw_oci_descriptor_clear(&l2);
}

static void test_cache__snapshot_get_twice(void **state)
{
	fixture *f = *state;
	sw_oci_descriptor l;
	sw_digest d;
	make_simple_layer(&l, &d, f, "twice", 5);
	cleanup_free char *s = NULL, *s2 = NULL;
	CHECK_OK(sw_cache_snapshot_get(&s, f->cache, &l, &d, &err));
	struct stat a, b;
	assert_int_equal(lstat(s, &a), 0);
	/* a file slipped in shows whether the second get unpacked again */
	put_file(s, "marker", "m", 0644);
	time_t old = time(NULL) - 3600;
	set_snapshot_used(f, &d, old);
	CHECK_OK(sw_cache_snapshot_get(&s2, f->cache, &l, &d, &err));
	assert_string_equal(s, s2);
	assert_int_equal(lstat(s2, &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	cleanup_free char *m = P(s2, "marker");
	assert_true(exists(m));
	/* the second get marked it used now */
	cleanup_free char *info = sw_xasprintf("%s.info", s);
	assert_int_equal(lstat(info, &b), 0);
	assert_true(b.st_mtime >= time(NULL) - 60);
	/* without the blob, a get of an existing snapshot still works */
	cleanup_free char *bp = sw_oci_store_blob_path(f->store, &l.digest);
	assert_int_equal(unlink(bp), 0);
	cleanup_free char *s3 = NULL;
	CHECK_OK(sw_cache_snapshot_get(&s3, f->cache, &l, &d, &err));
	sw_oci_descriptor_clear(&l);
}

static void test_cache__snapshot_bad_diff_id(void **state)
{
	fixture *f = *state;
	sw_oci_descriptor l;
	sw_digest d, other;
	make_simple_layer(&l, &d, f, "liar", 3);
	sw_oci_digest_bytes(&other, "not this layer", 14);
	cleanup_free char *s = NULL;
	sw_error *lerr = NULL;
	assert_int_equal(sw_cache_snapshot_get(&s, f->cache, &l, &other, &lerr), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(lerr), "not the diff ID"));
	assert_non_null(strstr(sw_error_msg(lerr), other.s));
	sw_error_clear(&lerr);
	assert_null(s);
	assert_false(sw_cache_snapshot_has(f->cache, &other));
	assert_int_equal(tmp_count(f), 0);

	/* a blob whose bytes changed in the store is refused too */
	cleanup_free char *bp = sw_oci_store_blob_path(f->store, &l.digest);
	int fd = open(bp, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	unsigned char byte;
	assert_int_equal(pread(fd, &byte, 1, l.size / 2), 1);
	byte ^= 0x55;
	assert_int_equal(pwrite(fd, &byte, 1, l.size / 2), 1);
	close(fd);
	assert_int_equal(sw_cache_snapshot_get(&s, f->cache, &l, &d, &lerr), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(lerr), "blob is damaged"));
	sw_error_clear(&lerr);
	assert_false(sw_oci_store_has_blob(f->store, &l.digest)); /* the store dropped it */
	assert_false(sw_cache_snapshot_has(f->cache, &d));
	assert_int_equal(tmp_count(f), 0);

	/* no blob at all: not found */
	sw_oci_descriptor missing = { 0 };
	missing.media_type = SW_OCI_MT_LAYER_GZIP;
	sw_oci_digest_bytes(&missing.digest, "absent", 6);
	missing.size = 6;
	assert_int_equal(sw_cache_snapshot_get(&s, f->cache, &missing, &other, &lerr),
	                 SW_ERR_NOT_FOUND);
	sw_error_clear(&lerr);
	sw_oci_descriptor_clear(&l);
}

static void test_cache__snapshot_adopt(void **state)
{
	fixture *f = *state;
	cleanup_free char *up = NULL;
	CHECK_OK(sw_cache_scratch_dir(&up, f->cache, "upper-", &err));
	struct stat st;
	assert_int_equal(lstat(up, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0755);
	put_file(up, "made-by-run", "first\n", 0644);
	sw_digest d;
	sw_oci_digest_bytes(&d, "adopted layer", 13);
	assert_false(sw_cache_snapshot_has(f->cache, &d));
	CHECK_OK(sw_cache_snapshot_adopt(f->cache, up, &d, &err));
	assert_false(exists(up));
	assert_true(sw_cache_snapshot_has(f->cache, &d));
	cleanup_free char *sp = snapshot_path(f, &d);
	cleanup_free char *t = read_text(sp, "made-by-run");
	assert_string_equal(t, "first\n");

	/* a second adoption of the same layer keeps the first and drops the folder */
	cleanup_free char *up2 = NULL;
	CHECK_OK(sw_cache_scratch_dir(&up2, f->cache, "upper-", &err));
	put_file(up2, "made-by-run", "second\n", 0644);
	CHECK_OK(sw_cache_snapshot_adopt(f->cache, up2, &d, &err));
	assert_false(exists(up2));
	cleanup_free char *t2 = read_text(sp, "made-by-run");
	assert_string_equal(t2, "first\n");

	/* a get of an adopted snapshot needs no blob */
	cleanup_free char *got = NULL;
	CHECK_OK(sw_cache_snapshot_get(&got, f->cache, NULL, &d, &err));
	assert_string_equal(got, sp);
	assert_int_equal(tmp_count(f), 0);

	/* its size is on record and matches du */
	sw_cache_usage u;
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_int_equal(u.snapshot_bytes, du(sp));
	assert_int_equal(u.entries, 0);
}

/* Two processes ask for the same snapshot at once: both succeed, one folder remains. */
static void test_cache__snapshot_race(void **state)
{
	fixture *f = *state;
	sw_oci_descriptor l;
	sw_digest d;
	make_simple_layer(&l, &d, f, "race", 400);
	int go[2];
	assert_int_equal(pipe(go), 0);
	pid_t kids[2];
	for (int k = 0; k < 2; k++) {
		kids[k] = fork();
		assert_true(kids[k] >= 0);
		if (kids[k] == 0) {
			close(go[1]);
			char ch;
			if (read(go[0], &ch, 1) != 0)
				_exit(10);
			sw_oci_store *s = NULL;
			sw_cache *c = NULL;
			sw_error *err = NULL;
			cleanup_free char *sdir = P(f->state, "store");
			if (sw_oci_store_open(&s, sdir, false, &err) < 0 ||
			    sw_cache_open(&c, f->state, s, &err) < 0)
				_exit(11);
			char *path = NULL;
			if (sw_cache_snapshot_get(&path, c, &l, &d, &err) < 0) {
				fprintf(stderr, "child: %s\n", sw_error_msg(err));
				_exit(12);
			}
			char *t = read_text(path, "f399");
			int ok = strncmp(t, "race file 399 ", 14) == 0;
			sw_cache_free(c);
			sw_oci_store_free(s);
			_exit(ok ? 0 : 13);
		}
	}
	close(go[0]);
	close(go[1]); /* both children start now */
	for (int k = 0; k < 2; k++) {
		int status = 0;
		assert_int_equal(waitpid(kids[k], &status, 0), kids[k]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	cleanup_free char *snaps = sw_xasprintf("%s/cache/snapshots", f->state);
	assert_int_equal(count_dir(snaps), 2); /* the folder and its size file */
	assert_true(sw_cache_snapshot_has(f->cache, &d));
	cleanup_free char *sp = snapshot_path(f, &d);
	assert_int_equal(count_dir(sp), 400);
	assert_int_equal(tmp_count(f), 0);
	sw_oci_descriptor_clear(&l);
}

/* ---------------------------------------------------------------- index */

static void test_cache__put_lookup_list(void **state)
{
	fixture *f = *state;
	sw_oci_descriptor la, lb, lc;
	sw_digest da, db, dc;
	make_simple_layer(&la, &da, f, "a", 2);
	make_simple_layer(&lb, &db, f, "b", 2);
	make_simple_layer(&lc, &dc, f, "c", 2);
	time_t now = time(NULL);
	put_entry(f, "RUN a", &la, &da, now - 300);
	put_entry(f, "RUN b", &lb, &db, now - 100);
	put_entry(f, "RUN c", &lc, &dc, now - 200);

	sw_cache_entry *v = NULL;
	size_t n = 0;
	CHECK_OK(sw_cache_list(&v, &n, f->cache, &err));
	assert_int_equal(n, 3);
	assert_string_equal(v[0].created_by, "RUN b");
	assert_string_equal(v[1].created_by, "RUN c");
	assert_string_equal(v[2].created_by, "RUN a");
	assert_true(sw_oci_digest_eq(&v[2].diff_id, &da));
	assert_true(sw_oci_digest_eq(&v[2].blob.digest, &la.digest));
	assert_int_equal(v[2].blob.size, la.size);
	assert_string_equal(v[2].blob.media_type, la.media_type);
	assert_int_equal(v[2].last_used, now - 300);
	assert_int_equal(v[2].created, now - 300);
	sw_cache_entries_free(v, n);

	/* a hit marks the entry used now: it comes first */
	cleanup_free char *ka = key_of("RUN a");
	sw_cache_entry e;
	CHECK_OK(sw_cache_lookup(&e, f->cache, ka, &err));
	assert_string_equal(e.key, ka);
	assert_string_equal(e.created_by, "RUN a");
	assert_true(sw_oci_digest_eq(&e.diff_id, &da));
	assert_true(e.last_used >= now);
	assert_int_equal(e.created, now - 300);
	sw_cache_entry_clear(&e);
	CHECK_OK(sw_cache_list(&v, &n, f->cache, &err));
	assert_int_equal(n, 3);
	assert_string_equal(v[0].created_by, "RUN a");
	assert_true(v[0].last_used >= now);
	assert_int_equal(v[0].created, now - 300);
	sw_cache_entries_free(v, n);

	/* misses and bad keys */
	sw_error *lerr = NULL;
	cleanup_free char *kx = key_of("RUN x");
	assert_int_equal(sw_cache_lookup(&e, f->cache, kx, &lerr), SW_ERR_NOT_FOUND);
	sw_error_clear(&lerr);
	assert_int_equal(sw_cache_lookup(&e, f->cache, "sha256:nothex", &lerr), SW_ERR_INVALID);
	sw_error_clear(&lerr);

	/* a put replaces; a put without the blob in the store is refused */
	put_entry(f, "RUN a", &lb, &db, now - 50);
	CHECK_OK(sw_cache_lookup(&e, f->cache, ka, &err));
	assert_true(sw_oci_digest_eq(&e.diff_id, &db));
	sw_cache_entry_clear(&e);
	sw_oci_descriptor ghost = { 0 };
	ghost.media_type = SW_OCI_MT_LAYER_GZIP;
	sw_oci_digest_bytes(&ghost.digest, "ghost", 5);
	ghost.size = 5;
	entry_fill(&e, "RUN ghost", &ghost, &da, now);
	assert_int_equal(sw_cache_put(f->cache, &e, &lerr), SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(lerr), ghost.digest.s));
	sw_error_clear(&lerr);
	sw_oci_descriptor_clear(&la);
	sw_oci_descriptor_clear(&lb);
	sw_oci_descriptor_clear(&lc);
}

static void test_cache__stale_entry(void **state)
{
	fixture *f = *state;
	sw_oci_descriptor l;
	sw_digest d;
	make_simple_layer(&l, &d, f, "stale", 2);
	put_entry(f, "RUN stale", &l, &d, time(NULL));
	cleanup_free char *key = key_of("RUN stale");
	cleanup_free char *file = sw_xasprintf("%s/cache/index/%s.json", f->state, key + 7);
	assert_true(exists(file));
	cleanup_free char *bp = sw_oci_store_blob_path(f->store, &l.digest);
	assert_int_equal(unlink(bp), 0);
	sw_cache_entry e;
	sw_error *lerr = NULL;
	assert_int_equal(sw_cache_lookup(&e, f->cache, key, &lerr), SW_ERR_NOT_FOUND);
	sw_error_clear(&lerr);
	assert_false(exists(file));
	sw_cache_entry *v = NULL;
	size_t n = 0;
	CHECK_OK(sw_cache_list(&v, &n, f->cache, &err));
	assert_int_equal(n, 0);
	sw_cache_entries_free(v, n);

	/* a damaged entry file is a miss, and goes */
	put_file(
	        f->state,
	        "cache/index/0000000000000000000000000000000000000000000000000000000000000000.json",
	        "{not json", 0600);
	assert_int_equal(
	        sw_cache_lookup(
	                &e, f->cache,
	                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
	                &lerr),
	        SW_ERR_NOT_FOUND);
	sw_error_clear(&lerr);
	sw_oci_descriptor_clear(&l);
}

/* ---------------------------------------------------------------- usage and prune */

typedef struct three {
	sw_oci_descriptor l[3];
	sw_digest d[3];
	char *snap[3];
	uint64_t snap_bytes[3];
} three;

/* Layers A, B, C with entries used 3000, 2000 and 1000 seconds ago and their snapshots used
 * at the same times. */
static void make_three(three *t, fixture *f)
{
	const char *tags[3] = { "A", "B", "C" };
	time_t now = time(NULL);
	for (int i = 0; i < 3; i++) {
		make_simple_layer(&t->l[i], &t->d[i], f, tags[i], 20 + 10 * i);
		cleanup_free char *seed = sw_xasprintf("RUN make %s", tags[i]);
		put_entry(f, seed, &t->l[i], &t->d[i], now - 3000 + 1000 * i);
		CHECK_OK(sw_cache_snapshot_get(&t->snap[i], f->cache, &t->l[i], &t->d[i], &err));
		set_snapshot_used(f, &t->d[i], now - 3000 + 1000 * i);
		t->snap_bytes[i] = du(t->snap[i]);
		/* the blobs were written back then too (prune keeps blobs written while a
		 * build runs) */
		cleanup_free char *bp = sw_oci_store_blob_path(f->store, &t->l[i].digest);
		time_t when = now - 3000 + 1000 * i;
		struct timespec ts[2] = { { when, 0 }, { when, 0 } };
		assert_int_equal(utimensat(AT_FDCWD, bp, ts, 0), 0);
	}
}

static void three_clear(three *t)
{
	for (int i = 0; i < 3; i++) {
		sw_oci_descriptor_clear(&t->l[i]);
		free(t->snap[i]);
	}
}

static bool blob_there(fixture *f, const sw_oci_descriptor *l)
{
	return sw_oci_store_has_blob(f->store, &l->digest);
}

static bool entry_there(fixture *f, const char *seed)
{
	cleanup_free char *key = key_of(seed);
	cleanup_free char *file = sw_xasprintf("%s/cache/index/%s.json", f->state, key + 7);
	return exists(file);
}

typedef struct seen {
	int entries, blobs, snapshots;
	uint64_t bytes;
} seen;

static void on_removed(const char *kind, const char *name, const char *detail, uint64_t bytes,
                       void *payload)
{
	seen *s = payload;
	assert_non_null(name);
	if (strcmp(kind, "entry") == 0) {
		assert_non_null(detail);
		s->entries++;
	} else if (strcmp(kind, "blob") == 0) {
		s->blobs++;
	} else {
		assert_string_equal(kind, "snapshot");
		s->snapshots++;
	}
	s->bytes += bytes;
}

static void test_cache__prune_keep_bytes(void **state)
{
	fixture *f = *state;
	three t;
	make_three(&t, f);
	/* an image in the store uses layer A */
	tag_image(f, "app:1", &t.l[0], &t.d[0]);

	sw_cache_usage u;
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_int_equal(u.entries, 3);
	assert_int_equal(u.blob_bytes, (uint64_t)(t.l[0].size + t.l[1].size + t.l[2].size));
	assert_int_equal(u.snapshot_bytes, t.snap_bytes[0] + t.snap_bytes[1] + t.snap_bytes[2]);
	uint64_t total = u.blob_bytes + u.snapshot_bytes;

	/* one byte less than everything minus the blobs of A and B: A's entry goes (its blob
	 * and snapshot stay: the image uses them), then B's entry and blob, then (still one byte
	 * over) B's snapshot; C stays */
	uint64_t keep = total - (uint64_t)t.l[0].size - (uint64_t)t.l[1].size - 1;
	sw_cache_prune_stats st;
	seen s = { 0 };
	CHECK_OK(sw_cache_prune_report(&st, f->cache, keep, on_removed, &s, &err));
	assert_false(st.busy);
	assert_int_equal(st.entries_removed, 2);
	assert_int_equal(st.blobs_removed, 1);
	assert_int_equal(st.snapshots_removed, 1);
	assert_int_equal(st.bytes_freed, (uint64_t)t.l[1].size + t.snap_bytes[1]);
	assert_int_equal(s.entries, 2);
	assert_int_equal(s.blobs, 1);
	assert_int_equal(s.snapshots, 1);
	assert_int_equal(s.bytes, st.bytes_freed);
	assert_false(entry_there(f, "RUN make A"));
	assert_true(blob_there(f, &t.l[0]));
	assert_true(exists(t.snap[0]));
	assert_false(entry_there(f, "RUN make B"));
	assert_false(blob_there(f, &t.l[1]));
	assert_false(exists(t.snap[1]));
	assert_true(entry_there(f, "RUN make C"));
	assert_true(blob_there(f, &t.l[2]));
	assert_true(exists(t.snap[2]));
	/* what is left adds up */
	assert_int_equal(st.after.entries, 1);
	assert_int_equal(st.after.blob_bytes, (uint64_t)t.l[2].size);
	assert_int_equal(st.after.snapshot_bytes, t.snap_bytes[0] + t.snap_bytes[2]);
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_int_equal(u.entries, st.after.entries);
	assert_int_equal(u.blob_bytes, st.after.blob_bytes);
	assert_int_equal(u.snapshot_bytes, st.after.snapshot_bytes);
	assert_true(u.blob_bytes + u.snapshot_bytes <= keep);

	/* keep nothing: all goes but what the image uses */
	CHECK_OK(sw_cache_prune(&st, f->cache, 0, &err));
	assert_int_equal(st.entries_removed, 1);
	assert_int_equal(st.blobs_removed, 1);
	assert_int_equal(st.snapshots_removed, 1);
	assert_false(blob_there(f, &t.l[2]));
	assert_false(exists(t.snap[2]));
	assert_true(blob_there(f, &t.l[0]));
	assert_true(exists(t.snap[0]));
	assert_int_equal(st.after.entries, 0);
	assert_int_equal(st.after.blob_bytes, 0);
	assert_int_equal(st.after.snapshot_bytes, t.snap_bytes[0]);
	assert_int_equal(tmp_count(f), 0);

	/* untagged, the image no longer holds A's snapshot */
	CHECK_OK(sw_oci_store_untag(f->store, "app:1", &err));
	CHECK_OK(sw_cache_prune(&st, f->cache, 0, &err));
	assert_int_equal(st.snapshots_removed, 1);
	assert_false(exists(t.snap[0]));
	assert_int_equal(st.after.snapshot_bytes, 0);
	three_clear(&t);
}

/* An entry shared blob: removing one of two entries that use a blob keeps it. */
static void test_cache__prune_shared_blob(void **state)
{
	fixture *f = *state;
	sw_oci_descriptor l;
	sw_digest d;
	make_simple_layer(&l, &d, f, "shared", 4);
	time_t now = time(NULL);
	put_entry(f, "RUN one", &l, &d, now - 500);
	put_entry(f, "RUN two", &l, &d, now - 10);
	sw_cache_usage u;
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_int_equal(u.entries, 2);
	assert_int_equal(u.blob_bytes, (uint64_t)l.size); /* counted once */
	sw_cache_prune_stats st;
	/* keeping less than the blob: the older entry goes first, yet the blob stays for the
	 * other; then the other goes with it */
	CHECK_OK(sw_cache_prune(&st, f->cache, (uint64_t)l.size - 1, &err));
	assert_int_equal(st.entries_removed, 2);
	assert_int_equal(st.blobs_removed, 1);
	assert_false(blob_there(f, &l));
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_int_equal(u.entries, 0);
	sw_oci_descriptor_clear(&l);
}

/* While another handle is open (a build running), prune keeps snapshots and recent entries. */
static void test_cache__prune_busy(void **state)
{
	fixture *f = *state;
	three t;
	make_three(&t, f);
	sw_cache *other = NULL;
	CHECK_OK(sw_cache_open(&other, f->state, f->store, &err));
	/* the running build uses C after it started */
	cleanup_free char *kc = key_of("RUN make C");
	sw_cache_entry e;
	CHECK_OK(sw_cache_lookup(&e, other, kc, &err));
	sw_cache_entry_clear(&e);

	sw_cache_prune_stats st;
	CHECK_OK(sw_cache_prune(&st, f->cache, 0, &err));
	assert_true(st.busy);
	assert_int_equal(st.entries_removed, 2);
	assert_int_equal(st.blobs_removed, 2);
	assert_int_equal(st.snapshots_removed, 0);
	assert_int_equal(st.snapshots_kept, 2);
	assert_false(entry_there(f, "RUN make A"));
	assert_false(blob_there(f, &t.l[0]));
	assert_false(entry_there(f, "RUN make B"));
	assert_true(entry_there(f, "RUN make C"));
	assert_true(blob_there(f, &t.l[2]));
	for (int i = 0; i < 3; i++)
		assert_true(exists(t.snap[i]));
	assert_int_equal(st.after.snapshot_bytes,
	                 t.snap_bytes[0] + t.snap_bytes[1] + t.snap_bytes[2]);

	/* the build is over: now the snapshots go, and C too */
	sw_cache_free(other);
	CHECK_OK(sw_cache_prune(&st, f->cache, 0, &err));
	assert_false(st.busy);
	assert_int_equal(st.entries_removed, 1);
	assert_int_equal(st.snapshots_removed, 3);
	for (int i = 0; i < 3; i++)
		assert_false(exists(t.snap[i]));
	assert_int_equal(st.after.blob_bytes + st.after.snapshot_bytes, 0);
	/* our own handle still holds its shared lock: a second prune works the same */
	CHECK_OK(sw_cache_prune(&st, f->cache, 0, &err));
	assert_false(st.busy);
	three_clear(&t);
}

/* A prune from another process while this one holds a handle. */
static void test_cache__prune_busy_other_process(void **state)
{
	fixture *f = *state;
	three t;
	make_three(&t, f);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		sw_oci_store *s = NULL;
		sw_cache *c = NULL;
		sw_error *err = NULL;
		cleanup_free char *sdir = P(f->state, "store");
		sw_cache_prune_stats st;
		if (sw_oci_store_open(&s, sdir, false, &err) < 0 ||
		    sw_cache_open(&c, f->state, s, &err) < 0 || sw_cache_prune(&st, c, 0, &err) < 0)
			_exit(11);
		_exit(st.busy && st.snapshots_removed == 0 && st.entries_removed == 3 ? 0 : 12);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	for (int i = 0; i < 3; i++)
		assert_true(exists(t.snap[i]));
	three_clear(&t);
}

static void test_cache__enforce_cap(void **state)
{
	fixture *f = *state;
	three t;
	make_three(&t, f);
	sw_cache_usage u;
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	uint64_t total = u.blob_bytes + u.snapshot_bytes;
	/* under the cap: nothing happens */
	CHECK_OK(sw_cache_enforce_cap(f->cache, total, &err));
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_int_equal(u.blob_bytes + u.snapshot_bytes, total);
	assert_int_equal(u.entries, 3);
	/* over it: down to 80% of it, oldest first */
	uint64_t cap = total - 1;
	CHECK_OK(sw_cache_enforce_cap(f->cache, cap, &err));
	CHECK_OK(sw_cache_usage_get(&u, f->cache, &err));
	assert_true(u.blob_bytes + u.snapshot_bytes <= cap - cap / 5);
	assert_false(entry_there(f, "RUN make A"));
	assert_true(entry_there(f, "RUN make C"));
	/* 0: no cap */
	CHECK_OK(sw_cache_enforce_cap(f->cache, 0, &err));
	three_clear(&t);
}

static void test_cache__size_parse(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {
		{ "0", 0 },
		{ "123", 123 },
		{ "10B", 10 },
		{ "1k", 1000 },
		{ "1K", 1000 },
		{ "2kB", 2000 },
		{ "3M", 3000000 },
		{ "4G", 4000000000ULL },
		{ "5gb", 5000000000ULL },
		{ "1T", 1000000000000ULL },
		{ "1KiB", 1024 },
		{ "3MiB", 3ULL << 20 },
		{ "10GiB", 10ULL << 30 },
		{ "2tib", 2ULL << 40 },
		{ "512 MiB", 512ULL << 20 },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(ok); i++) {
		uint64_t v = 1;
		CHECK_OK(sw_cache_size_parse(&v, ok[i].s, &err));
		if (v != ok[i].v)
			fail_msg("'%s': got %llu", ok[i].s, (unsigned long long)v);
	}
	const char *bad[] = {
		"", "k", "-1", "10x", "1.5G", "10 GiBs", "99999999999999999999", "20000000TiB"
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(bad); i++) {
		uint64_t v;
		sw_error *lerr = NULL;
		if (sw_cache_size_parse(&v, bad[i], &lerr) != SW_ERR_INVALID)
			fail_msg("'%s' was accepted", bad[i]);
		assert_non_null(strstr(sw_error_msg(lerr), "size '"));
		sw_error_free(lerr);
	}
	uint64_t v = 7;
	setenv("SLIPWAY_CACHE_MAX_BYTES", "2GiB", 1);
	CHECK_OK(sw_cache_cap_from_env(&v, &err));
	assert_int_equal(v, 2ULL << 30);
	setenv("SLIPWAY_CACHE_MAX_BYTES", "lots", 1);
	sw_error *lerr = NULL;
	assert_int_equal(sw_cache_cap_from_env(&v, &lerr), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(lerr), "SLIPWAY_CACHE_MAX_BYTES"));
	sw_error_free(lerr);
	unsetenv("SLIPWAY_CACHE_MAX_BYTES");
	CHECK_OK(sw_cache_cap_from_env(&v, &err));
	assert_int_equal(v, 0);
}

/* ---------------------------------------------------------------- tmp sweep */

static long long own_start_time(void)
{
	char buf[1024];
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n > 0);
	buf[n] = '\0';
	char *p = strrchr(buf, ')') + 2;
	for (int i = 3; i < 22; i++)
		p = strchr(p, ' ') + 1;
	return strtoll(p, NULL, 10);
}

static void test_cache__tmp_sweep(void **state)
{
	fixture *f = *state;
	cleanup_free char *tmp = sw_xasprintf("%s/cache/tmp", f->state);
	/* a process that is gone */
	pid_t dead = fork();
	assert_true(dead >= 0);
	if (dead == 0)
		_exit(0);
	assert_int_equal(waitpid(dead, NULL, 0), dead);

	cleanup_free char *dead_dir = sw_xasprintf("%s/%d-12345.upper-aaaaaa", tmp, (int)dead);
	assert_int_equal(mkdir(dead_dir, 0755), 0);
	put_file(dead_dir, "left-behind", "x", 0644);
	/* our own pid with another start time: a process that had our pid before */
	cleanup_free char *reused =
	        sw_xasprintf("%s/%d-%lld.upper-bbbbbb", tmp, (int)getpid(), own_start_time() + 1);
	assert_int_equal(mkdir(reused, 0755), 0);
	/* ours, alive */
	cleanup_free char *mine = NULL;
	CHECK_OK(sw_cache_scratch_dir(&mine, f->cache, "upper-", &err));
	put_file(mine, "in-use", "y", 0644);
	/* no owner: old goes, new stays */
	cleanup_free char *old_junk = sw_xasprintf("%s/junk-old", tmp);
	cleanup_free char *new_junk = sw_xasprintf("%s/junk-new", tmp);
	assert_int_equal(mkdir(old_junk, 0755), 0);
	assert_int_equal(mkdir(new_junk, 0755), 0);
	time_t two_days = time(NULL) - 2 * 86400;
	struct timespec ts[2] = { { two_days, 0 }, { two_days, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, old_junk, ts, 0), 0);

	/* the sweep runs when a handle opens */
	sw_cache *c2 = NULL;
	CHECK_OK(sw_cache_open(&c2, f->state, f->store, &err));
	assert_false(exists(dead_dir));
	assert_false(exists(reused));
	assert_true(exists(mine));
	cleanup_free char *inuse = P(mine, "in-use");
	assert_true(exists(inuse));
	assert_false(exists(old_junk));
	assert_true(exists(new_junk));
	/* a lease was taken and is given back */
	cleanup_free char *leases = sw_xasprintf("%s/cache/leases", f->state);
	assert_int_equal(count_dir(leases), 2);
	sw_cache_free(c2);
	assert_int_equal(count_dir(leases), 1);
}

int test_cache_jobcache_run(void);

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cache__snapshot_unpack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__snapshot_get_twice, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__snapshot_bad_diff_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__snapshot_adopt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__snapshot_race, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__put_lookup_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__stale_entry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__prune_keep_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__prune_shared_blob, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__prune_busy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache__prune_busy_other_process, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_cache__enforce_cap, setup, teardown),
		cmocka_unit_test(test_cache__size_parse),
		cmocka_unit_test_setup_teardown(test_cache__tmp_sweep, setup, teardown),
	};
	int failed = cmocka_run_group_tests_name("cache", tests, NULL, NULL);
	/* the job caches group lives in test_cache_jobcache.c */
	failed += test_cache_jobcache_run();
	return failed ? 1 : 0;
}
