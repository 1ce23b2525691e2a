/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the local content store (an OCI image layout) and of image import: blobs are
 * stored under their digest and verified when read, a corrupted blob is detected and removed,
 * aborted or mismatching writes leave nothing behind, tags land in index.json even when several
 * processes tag at once, images copy between stores, blob sources are remembered, and importing
 * a tarball twice with SOURCE_DATE_EPOCH gives the same manifest digest. Every test works in its
 * own temporary folder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "oci/oci.h"
#include "tests/unit/test_oci.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

/* sha256("hello") */
#define HELLO_DIGEST "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

typedef struct fixture {
	char *tmp;
	char *dir; /* <tmp>/layout */
	sw_oci_store *s;
} fixture;

static int setup(void **state)
{
	fixture *f = sw_xcalloc(1, sizeof(*f));
	sw_error *err = NULL;
	if (sw_fs_mkdtemp(&f->tmp, sw_fs_tmpdir(), "sw-test-store-", &err) < 0) {
		fprintf(stderr, "mkdtemp: %s\n", sw_error_msg(err));
		sw_error_free(err);
		free(f);
		return -1;
	}
	f->dir = sw_path_join(f->tmp, "layout");
	if (sw_oci_store_open(&f->s, f->dir, true, &err) < 0) {
		fprintf(stderr, "open store: %s\n", sw_error_msg(err));
		sw_error_free(err);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	if (!f)
		return 0;
	sw_oci_store_free(f->s);
	sw_error *err = NULL;
	if (f->tmp && sw_fs_rm_rf(f->tmp, &err) < 0)
		sw_error_free(err);
	free(f->tmp);
	free(f->dir);
	free(f);
	return 0;
}

/* Fail the test with the error's message when `expr` returns < 0. */
#define ASSERT_OK(expr)                                              \
	do {                                                         \
		sw_error *e_ = NULL;                                 \
		sw_error **err_ = &e_;                               \
		(void)err_;                                          \
		if ((expr) < 0) {                                    \
			fail_msg("%s: %s", #expr, sw_error_msg(e_)); \
		}                                                    \
	} while (0)

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static char *read_text(const char *path)
{
	char *buf = NULL;
	size_t len = 0;
	sw_error *err = NULL;
	if (sw_fs_read_file(&buf, &len, path, 1 << 24, &err) < 0) {
		sw_error_free(err);
		return NULL;
	}
	return buf;
}

static sw_oci_descriptor make_desc(const char *mt, const sw_digest *d, int64_t size)
{
	sw_oci_descriptor desc;
	memset(&desc, 0, sizeof(desc));
	desc.media_type = sw_xstrdup(mt);
	desc.digest = *d;
	desc.size = size;
	return desc;
}

/* ---------------------------------------------------------------- layout */

static void test_oci__store_layout_created(void **state)
{
	fixture *f = *state;
	cleanup_free char *lp = sw_path_join(f->dir, "oci-layout");
	cleanup_free char *layout = read_text(lp);
	assert_non_null(layout);
	assert_string_equal(layout, "{\"imageLayoutVersion\":\"1.0.0\"}");
	cleanup_free char *ip = sw_path_join(f->dir, "index.json");
	cleanup_free char *index = read_text(ip);
	assert_non_null(index);
	json_error_t jerr;
	json_t *j = json_loads(index, 0, &jerr);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "schemaVersion")), 2);
	assert_string_equal(json_string_value(json_object_get(j, "mediaType")), SW_OCI_MT_INDEX);
	assert_int_equal(json_array_size(json_object_get(j, "manifests")), 0);
	json_decref(j);
	cleanup_free char *blobs = sw_path_join(f->dir, "blobs/sha256");
	struct stat st;
	assert_int_equal(stat(blobs, &st), 0);
	assert_true(S_ISDIR(st.st_mode));

	/* opening it again (without create) works */
	sw_oci_store *again = NULL;
	ASSERT_OK(sw_oci_store_open(&again, f->dir, false, err_));
	assert_string_equal(sw_oci_store_dir(again), f->dir);
	sw_oci_store_free(again);
}

static void test_oci__store_open_errors(void **state)
{
	fixture *f = *state;
	sw_error *err = NULL;
	sw_oci_store *s = NULL;
	cleanup_free char *missing = sw_path_join(f->tmp, "missing");
	assert_int_equal(sw_oci_store_open(&s, missing, false, &err), SW_ERR_NOT_FOUND);
	assert_null(s);
	assert_non_null(strstr(sw_error_msg(err), missing));
	sw_error_clear(&err);
	/* not created as a side effect */
	struct stat st;
	assert_int_not_equal(stat(missing, &st), 0);

	/* a folder with other things in it is not a layout, and is not turned into one */
	cleanup_free char *other = sw_path_join(f->tmp, "other");
	ASSERT_OK(sw_fs_mkdir_p(other, 0755, err_));
	cleanup_free char *note = sw_path_join(other, "notes.txt");
	ASSERT_OK(sw_fs_write_atomic(note, "x", 1, 0644, err_));
	assert_int_equal(sw_oci_store_open(&s, other, false, &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), other));
	sw_error_clear(&err);
	assert_int_equal(sw_oci_store_open(&s, other, true, &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), "notes.txt"));
	sw_error_clear(&err);
	cleanup_free char *ol = sw_path_join(other, "oci-layout");
	assert_int_not_equal(stat(ol, &st), 0);

	/* a wrong layout version */
	cleanup_free char *lp = sw_path_join(f->dir, "oci-layout");
	ASSERT_OK(sw_fs_write_atomic(lp, "{\"imageLayoutVersion\":\"9.0\"}", 28, 0644, err_));
	assert_int_equal(sw_oci_store_open(&s, f->dir, false, &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), "9.0"));
	sw_error_clear(&err);

	/* a file where the folder should be */
	assert_int_equal(sw_oci_store_open(&s, note, true, &err), SW_ERR_INVALID);
	sw_error_clear(&err);
}

/* ---------------------------------------------------------------- blobs */

static void test_oci__store_blob_put_read(void **state)
{
	fixture *f = *state;
	sw_digest d;
	ASSERT_OK(sw_oci_store_put_blob(&d, f->s, "hello", 5, err_));
	assert_string_equal(d.s, HELLO_DIGEST);
	assert_true(sw_oci_store_has_blob(f->s, &d));
	cleanup_free char *path = sw_oci_store_blob_path(f->s, &d);
	cleanup_free char *want =
	        sw_path_join(f->dir, "blobs/sha256/"
	                             "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7"
	                             "425e73043362938b9824");
	assert_string_equal(path, want);
	cleanup_free char *raw = read_text(path);
	assert_string_equal(raw, "hello");

	cleanup_free char *buf = NULL;
	size_t len = 0;
	ASSERT_OK(sw_oci_store_read_blob(&buf, &len, f->s, &d, 100, err_));
	assert_int_equal(len, 5);
	assert_memory_equal(buf, "hello", 5);
	ASSERT_OK(sw_oci_store_verify_blob(f->s, &d, err_));

	int fd = -1;
	int64_t size = 0;
	ASSERT_OK(sw_oci_store_open_blob(&fd, &size, f->s, &d, err_));
	assert_int_equal(size, 5);
	close(fd);

	/* storing it again is fine and changes nothing */
	sw_digest d2;
	ASSERT_OK(sw_oci_store_put_blob(&d2, f->s, "hello", 5, err_));
	assert_true(sw_oci_digest_eq(&d, &d2));
	cleanup_free char *blobs = sw_path_join(f->dir, "blobs/sha256");
	assert_int_equal(count_entries(blobs), 1);

	/* a cap below the size is refused */
	sw_error *err = NULL;
	char *small = NULL;
	assert_int_equal(sw_oci_store_read_blob(&small, &len, f->s, &d, 4, &err), SW_ERR_INVALID);
	assert_null(small);
	sw_error_clear(&err);

	/* an absent blob */
	sw_digest absent;
	sw_oci_digest_bytes(&absent, "nope", 4);
	assert_false(sw_oci_store_has_blob(f->s, &absent));
	assert_int_equal(sw_oci_store_read_blob(&small, &len, f->s, &absent, 100, &err),
	                 SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(err), absent.s));
	sw_error_clear(&err);

	/* streaming writer: several writes, the size and digest come out */
	sw_oci_blob_writer *w = NULL;
	ASSERT_OK(sw_oci_store_blob_begin(&w, f->s, err_));
	ASSERT_OK(sw_oci_blob_writer_write(w, "hel", 3, err_));
	ASSERT_OK(sw_oci_blob_writer_write(w, "lo world", 8, err_));
	assert_int_equal(sw_oci_blob_writer_size(w), 11);
	sw_digest d3;
	int64_t n3 = 0;
	ASSERT_OK(sw_oci_blob_writer_commit(&d3, &n3, w, NULL, err_));
	sw_digest expect;
	sw_oci_digest_bytes(&expect, "hello world", 11);
	assert_true(sw_oci_digest_eq(&d3, &expect));
	assert_int_equal(n3, 11);
	assert_true(sw_oci_store_has_blob(f->s, &expect));
}

static void flip_first_byte(const char *path)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	char c;
	assert_int_equal(pread(fd, &c, 1, 0), 1);
	c ^= 0x20;
	assert_int_equal(pwrite(fd, &c, 1, 0), 1);
	close(fd);
}

static void test_oci__store_blob_corruption(void **state)
{
	fixture *f = *state;
	sw_digest d;
	ASSERT_OK(sw_oci_store_put_blob(&d, f->s, "hello", 5, err_));
	cleanup_free char *path = sw_oci_store_blob_path(f->s, &d);
	flip_first_byte(path);

	sw_error *err = NULL;
	char *buf = NULL;
	size_t len = 0;
	assert_int_equal(sw_oci_store_read_blob(&buf, &len, f->s, &d, 100, &err), SW_ERR_INVALID);
	assert_null(buf);
	assert_non_null(strstr(sw_error_msg(err), d.s));
	assert_non_null(strstr(sw_error_msg(err), "corrupted"));
	sw_error_clear(&err);
	/* removed, so that a later pull fetches it again */
	assert_false(sw_oci_store_has_blob(f->s, &d));

	/* the same through verify */
	ASSERT_OK(sw_oci_store_put_blob(&d, f->s, "hello", 5, err_));
	ASSERT_OK(sw_oci_store_verify_blob(f->s, &d, err_));
	flip_first_byte(path);
	assert_int_equal(sw_oci_store_verify_blob(f->s, &d, &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), d.s));
	sw_error_clear(&err);
	assert_false(sw_oci_store_has_blob(f->s, &d));
}

static void test_oci__store_writer_abort(void **state)
{
	fixture *f = *state;
	sw_oci_blob_writer *w = NULL;
	ASSERT_OK(sw_oci_store_blob_begin(&w, f->s, err_));
	ASSERT_OK(sw_oci_blob_writer_write(w, "partial data", 12, err_));
	cleanup_free char *tmpdir = sw_path_join(f->dir, ".slipway/tmp");
	assert_int_equal(count_entries(tmpdir), 1); /* the temporary file exists meanwhile */
	sw_oci_blob_writer_abort(w);
	assert_int_equal(count_entries(tmpdir), 0);
	cleanup_free char *blobs = sw_path_join(f->dir, "blobs/sha256");
	assert_int_equal(count_entries(blobs), 0);
	sw_oci_blob_writer_abort(NULL);
}

static void test_oci__store_writer_digest_mismatch(void **state)
{
	fixture *f = *state;
	sw_digest wrong;
	sw_oci_digest_bytes(&wrong, "abd", 3);
	sw_oci_blob_writer *w = NULL;
	ASSERT_OK(sw_oci_store_blob_begin(&w, f->s, err_));
	ASSERT_OK(sw_oci_blob_writer_write(w, "abc", 3, err_));
	sw_error *err = NULL;
	sw_digest got;
	assert_int_equal(sw_oci_blob_writer_commit(&got, NULL, w, &wrong, &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), wrong.s));
	sw_error_clear(&err);
	cleanup_free char *blobs = sw_path_join(f->dir, "blobs/sha256");
	cleanup_free char *tmpdir = sw_path_join(f->dir, ".slipway/tmp");
	assert_int_equal(count_entries(blobs), 0);
	assert_int_equal(count_entries(tmpdir), 0);

	/* with the right expectation it is stored */
	sw_digest right;
	sw_oci_digest_bytes(&right, "abc", 3);
	ASSERT_OK(sw_oci_store_blob_begin(&w, f->s, err_));
	ASSERT_OK(sw_oci_blob_writer_write(w, "abc", 3, err_));
	int64_t n = 0;
	ASSERT_OK(sw_oci_blob_writer_commit(&got, &n, w, &right, err_));
	assert_true(sw_oci_digest_eq(&got, &right));
	assert_int_equal(n, 3);
	assert_int_equal(count_entries(blobs), 1);
	assert_int_equal(count_entries(tmpdir), 0);
}

/* ---------------------------------------------------------------- tags */

static void test_oci__store_tag_resolve(void **state)
{
	fixture *f = *state;
	sw_digest d1, d2;
	sw_oci_digest_bytes(&d1, "one", 3);
	sw_oci_digest_bytes(&d2, "two", 3);
	sw_oci_descriptor a = make_desc(SW_OCI_MT_MANIFEST, &d1, 100);
	sw_oci_descriptor b = make_desc(SW_OCI_MT_INDEX, &d2, 200);
	ASSERT_OK(sw_oci_store_tag(f->s, "app:1", &a, err_));
	ASSERT_OK(sw_oci_store_tag(f->s, "app:2", &a, err_));
	ASSERT_OK(sw_oci_store_tag(f->s, "latest", &b, err_));

	sw_oci_descriptor r;
	ASSERT_OK(sw_oci_store_resolve(&r, f->s, "app:1", err_));
	assert_true(sw_oci_digest_eq(&r.digest, &d1));
	assert_string_equal(r.media_type, SW_OCI_MT_MANIFEST);
	assert_int_equal(r.size, 100);
	assert_string_equal(sw_oci_descriptor_annotation(&r, SW_OCI_ANNOT_REF_NAME), "app:1");
	sw_oci_descriptor_clear(&r);

	/* by digest */
	ASSERT_OK(sw_oci_store_resolve(&r, f->s, d2.s, err_));
	assert_string_equal(r.media_type, SW_OCI_MT_INDEX);
	sw_oci_descriptor_clear(&r);

	/* retag replaces the older entry of that name */
	ASSERT_OK(sw_oci_store_tag(f->s, "app:1", &b, err_));
	ASSERT_OK(sw_oci_store_resolve(&r, f->s, "app:1", err_));
	assert_true(sw_oci_digest_eq(&r.digest, &d2));
	sw_oci_descriptor_clear(&r);
	sw_oci_index ix;
	ASSERT_OK(sw_oci_store_list(&ix, f->s, err_));
	assert_int_equal(ix.n_manifests, 3);
	size_t named_app1 = 0;
	for (size_t i = 0; i < ix.n_manifests; i++) {
		const char *n =
		        sw_oci_descriptor_annotation(&ix.manifests[i], SW_OCI_ANNOT_REF_NAME);
		if (n && strcmp(n, "app:1") == 0)
			named_app1++;
	}
	assert_int_equal(named_app1, 1);
	sw_oci_index_clear(&ix);

	/* untag */
	ASSERT_OK(sw_oci_store_untag(f->s, "app:2", err_));
	sw_error *err = NULL;
	assert_int_equal(sw_oci_store_resolve(&r, f->s, "app:2", &err), SW_ERR_NOT_FOUND);
	cleanup_free char *msg = sw_xasprintf("image 'app:2' not found in %s", f->dir);
	assert_string_equal(sw_error_msg(err), msg);
	sw_error_clear(&err);
	assert_int_equal(sw_oci_store_untag(f->s, "app:2", &err), SW_ERR_NOT_FOUND);
	sw_error_clear(&err);
	ASSERT_OK(sw_oci_store_list(&ix, f->s, err_));
	assert_int_equal(ix.n_manifests, 2);
	sw_oci_index_clear(&ix);

	/* bad names */
	const char *bad[] = { "", "a b", "../x", "x/", "-x", "sha256:abc", "x\n", "a//b" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(bad); i++) {
		assert_int_equal(sw_oci_store_tag(f->s, bad[i], &a, &err), SW_ERR_INVALID);
		sw_error_clear(&err);
	}
	/* names the OCI grammar allows */
	const char *good[] = { "v1.0", "team/app:1.2-rc.1", "a--b", "x@y", "A_b+c" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(good); i++)
		ASSERT_OK(sw_oci_store_tag(f->s, good[i], &a, err_));

	/* the file on disk is an OCI index that carries the names */
	cleanup_free char *ip = sw_path_join(f->dir, "index.json");
	json_error_t jerr;
	json_t *j = json_load_file(ip, 0, &jerr);
	assert_non_null(j);
	assert_int_equal(json_array_size(json_object_get(j, "manifests")), 2 + SW_ARRAY_SIZE(good));
	json_decref(j);
	sw_oci_descriptor_clear(&a);
	sw_oci_descriptor_clear(&b);
}

static void test_oci__store_resolve_untagged_blob(void **state)
{
	fixture *f = *state;
	static const char man[] =
	        "{\"schemaVersion\":2,\"mediaType\":\"" SW_OCI_MT_MANIFEST "\",\"config\":{"
	        "\"mediaType\":\"" SW_OCI_MT_CONFIG "\",\"digest\":\"" HELLO_DIGEST
	        "\",\"size\":5},"
	        "\"layers\":[]}";
	sw_digest d;
	ASSERT_OK(sw_oci_store_put_blob(&d, f->s, man, sizeof(man) - 1, err_));
	sw_oci_descriptor r;
	ASSERT_OK(sw_oci_store_resolve(&r, f->s, d.s, err_));
	assert_string_equal(r.media_type, SW_OCI_MT_MANIFEST);
	assert_int_equal(r.size, sizeof(man) - 1);
	sw_oci_descriptor_clear(&r);
	sw_error *err = NULL;
	assert_int_equal(sw_oci_store_resolve(&r, f->s, "nothing", &err), SW_ERR_NOT_FOUND);
	sw_error_clear(&err);
	assert_int_equal(sw_oci_store_resolve(&r, f->s, "sha256:zz", &err), SW_ERR_INVALID);
	sw_error_clear(&err);
}

#define N_CHILDREN 4
#define N_TAGS 50

static void test_oci__store_concurrent_tags(void **state)
{
	fixture *f = *state;
	/* the children also create the layout at the same time */
	cleanup_free char *dir = sw_path_join(f->tmp, "concurrent");
	pid_t pids[N_CHILDREN];
	for (int c = 0; c < N_CHILDREN; c++) {
		pids[c] = fork();
		assert_true(pids[c] >= 0);
		if (pids[c] == 0) {
			sw_oci_store *s = NULL;
			sw_error *err = NULL;
			int rc = 0;
			if (sw_oci_store_open(&s, dir, true, &err) < 0) {
				fprintf(stderr, "child %d: %s\n", c, sw_error_msg(err));
				_exit(3);
			}
			for (int i = 0; i < N_TAGS && rc == 0; i++) {
				char name[64], content[64];
				snprintf(name, sizeof(name), "child%d/tag:%d", c, i);
				snprintf(content, sizeof(content), "%d-%d", c, i);
				sw_digest d;
				sw_oci_digest_bytes(&d, content, strlen(content));
				sw_oci_descriptor desc = make_desc(SW_OCI_MT_MANIFEST, &d, 10);
				if (sw_oci_store_tag(s, name, &desc, &err) < 0) {
					fprintf(stderr, "child %d: %s\n", c, sw_error_msg(err));
					rc = 1;
				}
				sw_oci_descriptor_clear(&desc);
			}
			sw_oci_store_free(s);
			_exit(rc);
		}
	}
	for (int c = 0; c < N_CHILDREN; c++) {
		int status = 0;
		assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	sw_oci_store *s = NULL;
	ASSERT_OK(sw_oci_store_open(&s, dir, false, err_));
	cleanup_free char *ip = sw_path_join(dir, "index.json");
	json_error_t jerr;
	json_t *j = json_load_file(ip, 0, &jerr);
	assert_non_null(j);
	json_t *mans = json_object_get(j, "manifests");
	assert_int_equal(json_array_size(mans), N_CHILDREN * N_TAGS);
	json_decref(j);
	for (int c = 0; c < N_CHILDREN; c++) {
		for (int i = 0; i < N_TAGS; i++) {
			char name[64], content[64];
			snprintf(name, sizeof(name), "child%d/tag:%d", c, i);
			snprintf(content, sizeof(content), "%d-%d", c, i);
			sw_digest d;
			sw_oci_digest_bytes(&d, content, strlen(content));
			sw_oci_descriptor r;
			ASSERT_OK(sw_oci_store_resolve(&r, s, name, err_));
			assert_true(sw_oci_digest_eq(&r.digest, &d));
			sw_oci_descriptor_clear(&r);
		}
	}
	/* no temporary files left next to index.json */
	sw_oci_store_free(s);
	DIR *d = opendir(dir);
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		assert_null(strstr(e->d_name, "tmp"));
	closedir(d);
}

typedef struct tag_thread {
	sw_oci_store *s;
	int id;
	int failures;
} tag_thread;

static void *tag_thread_main(void *arg)
{
	tag_thread *t = arg;
	for (int i = 0; i < N_TAGS / 2; i++) {
		char name[64];
		snprintf(name, sizeof(name), "thread%d:%d", t->id, i);
		sw_digest d;
		sw_oci_digest_bytes(&d, name, strlen(name));
		sw_oci_descriptor desc = make_desc(SW_OCI_MT_MANIFEST, &d, 1);
		sw_error *err = NULL;
		if (sw_oci_store_tag(t->s, name, &desc, &err) < 0) {
			fprintf(stderr, "thread %d: %s\n", t->id, sw_error_msg(err));
			sw_error_free(err);
			t->failures++;
		}
		sw_oci_descriptor_clear(&desc);
	}
	return NULL;
}

static void test_oci__store_concurrent_tags_threads(void **state)
{
	fixture *f = *state;
	pthread_t th[N_CHILDREN];
	tag_thread args[N_CHILDREN];
	for (int i = 0; i < N_CHILDREN; i++) {
		args[i] = (tag_thread){ .s = f->s, .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, tag_thread_main, &args[i]), 0);
	}
	for (int i = 0; i < N_CHILDREN; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].failures, 0);
	}
	sw_oci_index ix;
	ASSERT_OK(sw_oci_store_list(&ix, f->s, err_));
	assert_int_equal(ix.n_manifests, N_CHILDREN * (N_TAGS / 2));
	sw_oci_index_clear(&ix);
}

static void test_oci__store_stale_tmp_swept(void **state)
{
	fixture *f = *state;
	cleanup_free char *tmpdir = sw_path_join(f->dir, ".slipway/tmp");
	ASSERT_OK(sw_fs_mkdir_p(tmpdir, 0755, err_));
	cleanup_free char *old = sw_path_join(tmpdir, "blob-old123");
	cleanup_free char *fresh = sw_path_join(tmpdir, "blob-new123");
	ASSERT_OK(sw_fs_write_atomic(old, "x", 1, 0600, err_));
	ASSERT_OK(sw_fs_write_atomic(fresh, "y", 1, 0600, err_));
	struct timespec ts[2] = { { .tv_sec = time(NULL) - 3 * 24 * 3600 },
		                  { .tv_sec = time(NULL) - 3 * 24 * 3600 } };
	assert_int_equal(utimensat(AT_FDCWD, old, ts, 0), 0);
	sw_oci_store *again = NULL;
	ASSERT_OK(sw_oci_store_open(&again, f->dir, false, err_));
	sw_oci_store_free(again);
	struct stat st;
	assert_int_not_equal(stat(old, &st), 0);
	assert_int_equal(stat(fresh, &st), 0);
}

/* ---------------------------------------------------------------- images */

/* A small image in `s`: config, two layers (arbitrary bytes), manifest. */
static sw_oci_descriptor put_image(sw_oci_store *s, const char *arch, const char *layer_text)
{
	sw_digest l1, l2, cfg, man;
	ASSERT_OK(sw_oci_store_put_blob(&l1, s, layer_text, strlen(layer_text), err_));
	ASSERT_OK(sw_oci_store_put_blob(&l2, s, "second layer", 12, err_));
	cleanup_free char *config = sw_xasprintf(
	        "{\"architecture\":\"%s\",\"os\":\"linux\",\"config\":{\"Env\":[\"A=1\"]},"
	        "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"%s\",\"%s\"]}}",
	        arch, l1.s, l2.s);
	ASSERT_OK(sw_oci_store_put_blob(&cfg, s, config, strlen(config), err_));
	cleanup_free char *manifest = sw_xasprintf(
	        "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
	        "\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"%s\",\"digest\":"
	        "\"%s\",\"size\":%zu},{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":12}]}",
	        SW_OCI_MT_MANIFEST, SW_OCI_MT_CONFIG, cfg.s, strlen(config), SW_OCI_MT_LAYER, l1.s,
	        strlen(layer_text), SW_OCI_MT_LAYER, l2.s);
	ASSERT_OK(sw_oci_store_put_blob(&man, s, manifest, strlen(manifest), err_));
	return make_desc(SW_OCI_MT_MANIFEST, &man, (int64_t)strlen(manifest));
}

static sw_oci_descriptor put_index(sw_oci_store *s, const sw_oci_descriptor *amd64,
                                   const sw_oci_descriptor *arm64)
{
	cleanup_free char *index = sw_xasprintf(
	        "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":["
	        "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%lld,"
	        "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
	        "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%lld,"
	        "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v8\"}}]}",
	        SW_OCI_MT_INDEX, SW_OCI_MT_MANIFEST, amd64->digest.s, (long long)amd64->size,
	        SW_OCI_MT_MANIFEST, arm64->digest.s, (long long)arm64->size);
	sw_digest d;
	ASSERT_OK(sw_oci_store_put_blob(&d, s, index, strlen(index), err_));
	return make_desc(SW_OCI_MT_INDEX, &d, (int64_t)strlen(index));
}

static void test_oci__store_load_image(void **state)
{
	fixture *f = *state;
	sw_oci_descriptor amd = put_image(f->s, "amd64", "amd64 layer");
	sw_oci_descriptor arm = put_image(f->s, "arm64", "arm64 layer");
	sw_oci_descriptor ix = put_index(f->s, &amd, &arm);
	ASSERT_OK(sw_oci_store_tag(f->s, "multi", &ix, err_));
	ASSERT_OK(sw_oci_store_tag(f->s, "single", &arm, err_));

	sw_oci_platform want;
	ASSERT_OK(sw_oci_platform_parse(&want, "linux/arm64", err_));
	sw_oci_descriptor d;
	sw_oci_manifest m;
	sw_oci_config c;
	ASSERT_OK(sw_oci_store_load_image(&d, &m, &c, f->s, "multi", &want, err_));
	assert_true(sw_oci_digest_eq(&d.digest, &arm.digest));
	assert_string_equal(c.architecture, "arm64");
	assert_int_equal(m.n_layers, 2);
	assert_int_equal(c.n_diff_ids, 2);
	sw_oci_descriptor_clear(&d);
	sw_oci_manifest_clear(&m);
	sw_oci_config_clear(&c);

	sw_oci_platform amd_want;
	ASSERT_OK(sw_oci_platform_parse(&amd_want, "linux/amd64", err_));
	ASSERT_OK(sw_oci_store_load_image(&d, NULL, &c, f->s, "multi", &amd_want, err_));
	assert_true(sw_oci_digest_eq(&d.digest, &amd.digest));
	assert_string_equal(c.architecture, "amd64");
	sw_oci_descriptor_clear(&d);
	sw_oci_config_clear(&c);
	sw_oci_platform_clear(&amd_want);

	/* a plain manifest, every out parameter optional */
	ASSERT_OK(sw_oci_store_load_image(NULL, NULL, NULL, f->s, "single", NULL, err_));

	/* a platform the index does not have */
	sw_oci_platform none;
	ASSERT_OK(sw_oci_platform_parse(&none, "linux/s390x", err_));
	sw_error *err = NULL;
	assert_int_equal(sw_oci_store_load_image(&d, NULL, NULL, f->s, "multi", &none, &err),
	                 SW_ERR_NOT_FOUND);
	sw_error_clear(&err);
	sw_oci_platform_clear(&none);

	/* a corrupted config is detected */
	ASSERT_OK(sw_oci_store_load_image(NULL, &m, NULL, f->s, "single", NULL, err_));
	cleanup_free char *cfg_path = sw_oci_store_blob_path(f->s, &m.config.digest);
	flip_first_byte(cfg_path);
	assert_int_equal(sw_oci_store_load_image(NULL, NULL, &c, f->s, "single", &want, &err),
	                 SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), m.config.digest.s));
	sw_error_clear(&err);
	sw_oci_manifest_clear(&m);
	sw_oci_platform_clear(&want);
	sw_oci_descriptor_clear(&amd);
	sw_oci_descriptor_clear(&arm);
	sw_oci_descriptor_clear(&ix);
}

static void test_oci__store_copy_image(void **state)
{
	fixture *f = *state;
	sw_oci_descriptor amd = put_image(f->s, "amd64", "amd64 layer");
	sw_oci_descriptor arm = put_image(f->s, "arm64", "arm64 layer");
	sw_oci_descriptor ix = put_index(f->s, &amd, &arm);
	sw_oci_descriptor_set_annotation(&ix, SW_OCI_ANNOT_REF_NAME, "source-name");
	cleanup_free char *dst_dir = sw_path_join(f->tmp, "dst");
	sw_oci_store *dst = NULL;
	ASSERT_OK(sw_oci_store_open(&dst, dst_dir, true, err_));

	ASSERT_OK(sw_oci_store_copy_image(dst, f->s, &ix, "copied:1", err_));
	/* every blob of both images, and the index: 2 x (2 layers... "second layer" shared) */
	cleanup_free char *src_blobs = sw_path_join(f->dir, "blobs/sha256");
	cleanup_free char *dst_blobs = sw_path_join(dst_dir, "blobs/sha256");
	assert_int_equal(count_entries(dst_blobs), count_entries(src_blobs));
	sw_oci_descriptor r;
	ASSERT_OK(sw_oci_store_resolve(&r, dst, "copied:1", err_));
	assert_true(sw_oci_digest_eq(&r.digest, &ix.digest));
	assert_string_equal(sw_oci_descriptor_annotation(&r, SW_OCI_ANNOT_REF_NAME), "copied:1");
	sw_oci_descriptor_clear(&r);
	sw_oci_config c;
	ASSERT_OK(sw_oci_store_load_image(NULL, NULL, &c, dst, "copied:1", NULL, err_));
	sw_oci_config_clear(&c);
	/* the source tag did not come along */
	sw_error *err = NULL;
	assert_int_equal(sw_oci_store_resolve(&r, dst, "source-name", &err), SW_ERR_NOT_FOUND);
	sw_error_clear(&err);

	/* copying again copies nothing and still works; without a name nothing is tagged */
	ASSERT_OK(sw_oci_store_copy_image(dst, f->s, &amd, NULL, err_));
	sw_oci_index list;
	ASSERT_OK(sw_oci_store_list(&list, dst, err_));
	assert_int_equal(list.n_manifests, 1);
	sw_oci_index_clear(&list);

	/* a corrupted layer in the source: the copy fails, and no manifest points at a hole */
	cleanup_free char *dst2_dir = sw_path_join(f->tmp, "dst2");
	sw_oci_store *dst2 = NULL;
	ASSERT_OK(sw_oci_store_open(&dst2, dst2_dir, true, err_));
	sw_oci_manifest m;
	ASSERT_OK(sw_oci_store_load_image(NULL, &m, NULL, f->s, arm.digest.s, NULL, err_));
	cleanup_free char *layer_path = sw_oci_store_blob_path(f->s, &m.layers[0].digest);
	flip_first_byte(layer_path);
	assert_int_equal(sw_oci_store_copy_image(dst2, f->s, &arm, "x", &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), m.layers[0].digest.s));
	sw_error_clear(&err);
	assert_false(sw_oci_store_has_blob(dst2, &arm.digest));
	assert_false(sw_oci_store_has_blob(dst2, &m.layers[0].digest));
	assert_false(sw_oci_store_has_blob(f->s, &m.layers[0].digest)); /* bad copy dropped */
	assert_int_equal(sw_oci_store_resolve(&r, dst2, "x", &err), SW_ERR_NOT_FOUND);
	sw_error_clear(&err);
	sw_oci_manifest_clear(&m);

	sw_oci_store_free(dst);
	sw_oci_store_free(dst2);
	sw_oci_descriptor_clear(&amd);
	sw_oci_descriptor_clear(&arm);
	sw_oci_descriptor_clear(&ix);
}

/* ---------------------------------------------------------------- blob sources */

static void test_oci__store_sources(void **state)
{
	fixture *f = *state;
	sw_digest d, other;
	sw_oci_digest_bytes(&d, "layer", 5);
	sw_oci_digest_bytes(&other, "other", 5);
	const char *reg = "127.0.0.1:5000";
	char *r = sw_oci_store_find_source(f->s, &d, reg, NULL);
	assert_null(r);
	ASSERT_OK(sw_oci_store_note_source(f->s, &d, reg, "team/a", err_));
	ASSERT_OK(sw_oci_store_note_source(f->s, &d, reg, "team/b", err_));
	r = sw_oci_store_find_source(f->s, &d, reg, "team/b");
	assert_string_equal(r, "team/a");
	free(r);
	r = sw_oci_store_find_source(f->s, &d, reg, NULL);
	assert_string_equal(r, "team/b"); /* the most recent first */
	free(r);
	r = sw_oci_store_find_source(f->s, &d, reg, "team/a");
	assert_string_equal(r, "team/b");
	free(r);
	assert_null(sw_oci_store_find_source(f->s, &d, "127.0.0.1:6000", NULL));
	assert_null(sw_oci_store_find_source(f->s, &other, reg, NULL));
	/* noting the same again moves it to the front, without duplicates */
	ASSERT_OK(sw_oci_store_note_source(f->s, &d, reg, "team/a", err_));
	r = sw_oci_store_find_source(f->s, &d, reg, NULL);
	assert_string_equal(r, "team/a");
	free(r);

	/* bounded: only the last few repositories are kept */
	for (int i = 0; i < 20; i++) {
		char repo[32];
		snprintf(repo, sizeof(repo), "r%d", i);
		ASSERT_OK(sw_oci_store_note_source(f->s, &d, reg, repo, err_));
	}
	r = sw_oci_store_find_source(f->s, &d, reg, NULL);
	assert_string_equal(r, "r19");
	free(r);
	cleanup_free char *path = sw_path_join(f->dir, ".slipway/sources/127.0.0.1_5000.json");
	json_error_t jerr;
	json_t *j = json_load_file(path, 0, &jerr);
	assert_non_null(j);
	size_t n = json_array_size(json_object_get(j, d.s));
	assert_true(n >= 2 && n <= 16);
	json_decref(j);

	sw_error *err = NULL;
	assert_int_equal(sw_oci_store_note_source(f->s, &d, "", "x", &err), SW_ERR_INVALID);
	sw_error_clear(&err);
}

static void test_oci__store_default_dir(void **state)
{
	(void)state;
	const char *old = getenv("SLIPWAY_STATE_DIR");
	cleanup_free char *saved = old ? sw_xstrdup(old) : NULL;
	setenv("SLIPWAY_STATE_DIR", "/srv/slipway-state", 1);
	cleanup_free char *a = sw_oci_store_default_dir();
	assert_string_equal(a, "/srv/slipway-state/store");
	unsetenv("SLIPWAY_STATE_DIR");
	cleanup_free char *b = sw_oci_store_default_dir();
	if (geteuid() == 0) {
		assert_string_equal(b, "/var/lib/slipway/store");
	} else {
		assert_non_null(strstr(b, "slipway/store"));
	}
	if (saved)
		setenv("SLIPWAY_STATE_DIR", saved, 1);
}

/* ---------------------------------------------------------------- import */

static void add_entry(struct archive *a, const char *path, mode_t type, const char *data)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, path);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, type == AE_IFDIR ? 0755 : 0644);
	archive_entry_set_mtime(e, 1800000000, 0);
	archive_entry_set_size(e, data ? (la_int64_t)strlen(data) : 0);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	if (data)
		assert_int_equal(archive_write_data(a, data, strlen(data)),
		                 (la_ssize_t)strlen(data));
	archive_entry_free(e);
}

static char *make_rootfs_tar(const char *tmp)
{
	char *path = sw_path_join(tmp, "rootfs.tar");
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	add_entry(a, "bin", AE_IFDIR, NULL);
	add_entry(a, "bin/hello", AE_IFREG, "#!/bin/sh\necho hello\n");
	add_entry(a, "etc", AE_IFDIR, NULL);
	add_entry(a, "etc/passwd", AE_IFREG, "root:x:0:0:root:/root:/bin/sh\n");
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	return path;
}

static void test_oci__image_import(void **state)
{
	fixture *f = *state;
	cleanup_free char *tar = make_rootfs_tar(f->tmp);
	const char *old = getenv("SOURCE_DATE_EPOCH");
	cleanup_free char *saved = old ? sw_xstrdup(old) : NULL;
	setenv("SOURCE_DATE_EPOCH", "1700000000", 1);

	sw_oci_descriptor d1, d2;
	ASSERT_OK(sw_oci_image_import(&d1, f->s, tar, "base:1", NULL, NULL, err_));
	ASSERT_OK(sw_oci_image_import(&d2, f->s, tar, "base:2", NULL, NULL, err_));
	assert_true(sw_oci_digest_eq(&d1.digest, &d2.digest));
	assert_string_equal(d1.media_type, SW_OCI_MT_MANIFEST);

	sw_oci_descriptor r;
	sw_oci_manifest m;
	sw_oci_config c;
	ASSERT_OK(sw_oci_store_load_image(&r, &m, &c, f->s, "base:1", NULL, err_));
	assert_true(sw_oci_digest_eq(&r.digest, &d1.digest));
	assert_int_equal(m.n_layers, 1);
	assert_string_equal(m.layers[0].media_type, SW_OCI_MT_LAYER_GZIP);
	assert_int_equal(c.n_diff_ids, 1);
	assert_string_equal(c.created, "2023-11-14T22:13:20Z");
	assert_string_equal(c.os, "linux");
	sw_oci_platform host;
	sw_oci_platform_default(&host);
	assert_string_equal(c.architecture, host.architecture);
	sw_oci_platform_clear(&host);
	assert_non_null(c.env);
	assert_string_equal(c.env[0],
	                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	assert_null(c.env[1]);
	assert_int_equal(c.n_history, 1);
	assert_string_equal(c.history[0].created_by, "slipway image import rootfs.tar");

	/* the diff ID is the sha256 of the uncompressed layer, which holds our files */
	cleanup_free char *blob = NULL;
	size_t blen = 0;
	ASSERT_OK(sw_oci_store_read_blob(&blob, &blen, f->s, &m.layers[0].digest, 1 << 20, err_));
	cleanup_free char *root = sw_path_join(f->tmp, "root");
	ASSERT_OK(sw_fs_mkdir_p(root, 0755, err_));
	sw_oci_apply_opts ao = { 0 };
	ASSERT_OK(sw_oci_layer_apply_mem(NULL, root, blob, blen, &ao, err_));
	cleanup_free char *hello = sw_path_join(root, "bin/hello");
	cleanup_free char *content = read_text(hello);
	assert_string_equal(content, "#!/bin/sh\necho hello\n");
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	assert_int_equal(archive_read_open_memory(a, blob, blen), ARCHIVE_OK);
	struct archive_entry *e;
	assert_int_equal(archive_read_next_header(a, &e), ARCHIVE_OK);
	sw_oci_hasher *h = sw_oci_hasher_new();
	char buf[4096];
	la_ssize_t n;
	while ((n = archive_read_data(a, buf, sizeof(buf))) > 0)
		sw_oci_hasher_update(h, buf, (size_t)n);
	sw_digest diff;
	sw_oci_hasher_final(h, &diff);
	sw_oci_hasher_free(h);
	archive_read_free(a);
	assert_string_equal(c.diff_ids[0].s, diff.s);

	sw_oci_descriptor_clear(&r);
	sw_oci_manifest_clear(&m);
	sw_oci_config_clear(&c);

	/* another platform, and no compression */
	sw_oci_platform arm;
	ASSERT_OK(sw_oci_platform_parse(&arm, "linux/arm64/v8", err_));
	sw_oci_layer_opts lo = { .compression = SW_OCI_COMPRESS_NONE,
		                 .source_date_epoch = 1700000000 }; /* as above */
	sw_oci_descriptor d3;
	ASSERT_OK(sw_oci_image_import(&d3, f->s, tar, "base:arm", &arm, &lo, err_));
	ASSERT_OK(sw_oci_store_load_image(NULL, &m, &c, f->s, "base:arm", &arm, err_));
	assert_string_equal(c.architecture, "arm64");
	assert_string_equal(c.variant, "v8");
	assert_string_equal(m.layers[0].media_type, SW_OCI_MT_LAYER);
	assert_string_equal(c.diff_ids[0].s, diff.s);
	assert_true(sw_oci_digest_eq(&m.layers[0].digest, &diff));
	sw_oci_manifest_clear(&m);
	sw_oci_config_clear(&c);
	sw_oci_platform_clear(&arm);

	/* a missing tarball: an error naming it, no tag */
	sw_error *err = NULL;
	cleanup_free char *missing = sw_path_join(f->tmp, "missing.tar");
	assert_true(sw_oci_image_import(NULL, f->s, missing, "nope", NULL, NULL, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), "missing.tar"));
	sw_error_clear(&err);
	assert_int_equal(sw_oci_store_resolve(&r, f->s, "nope", &err), SW_ERR_NOT_FOUND);
	sw_error_clear(&err);

	sw_oci_descriptor_clear(&d1);
	sw_oci_descriptor_clear(&d2);
	sw_oci_descriptor_clear(&d3);
	if (saved)
		setenv("SOURCE_DATE_EPOCH", saved, 1);
	else
		unsetenv("SOURCE_DATE_EPOCH");
}

int test_oci_store_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_oci__store_layout_created, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_blob_put_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_blob_corruption, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_writer_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_writer_digest_mismatch, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_tag_resolve, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_resolve_untagged_blob, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_concurrent_tags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_concurrent_tags_threads, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_stale_tmp_swept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_load_image, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_copy_image, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__store_sources, setup, teardown),
		cmocka_unit_test(test_oci__store_default_dir),
		cmocka_unit_test_setup_teardown(test_oci__image_import, setup, teardown),
	};
	return cmocka_run_group_tests_name("oci_store", tests, NULL, NULL);
}
