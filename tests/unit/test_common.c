/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The common module's unit test program: errors, buffers, redaction, the filesystem helpers
 * and path resolution inside a root (against a temporary root full of hostile symlinks). The
 * HTTP tests live in test_common_http.c and run from here as a second group.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

int test_common_http_run(void);
/* path.c's switch to force the resolver fallback of sw_path_open_in_root */
extern bool sw_common__path_no_openat2;

/* ---------------------------------------------------------------- helpers */

static char *make_tmpdir(void)
{
	char *d = NULL;
	sw_error *e = NULL;
	if (sw_fs_mkdtemp(&d, NULL, "sw-test-common-", &e) < 0)
		fail_msg("mkdtemp: %s", sw_error_msg(e));
	return d;
}

static void remove_tree(const char *path)
{
	sw_error *e = NULL;
	if (sw_fs_rm_rf(path, &e) < 0)
		fail_msg("rm_rf %s: %s", path, sw_error_msg(e));
}

static void write_file(const char *path, const char *content)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

static char *read_text(const char *path)
{
	char *data = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&data, &len, path, 1 << 20, &e) < 0)
		fail_msg("read %s: %s", path, sw_error_msg(e));
	return data;
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* Names in a folder, sorted and joined with ",". */
static char *list_dir(const char *path)
{
	struct dirent **names = NULL;
	int n = scandir(path, &names, NULL, alphasort);
	assert_true(n >= 0);
	sw_buf b = SW_BUF_INIT(0);
	for (int i = 0; i < n; i++) {
		if (strcmp(names[i]->d_name, ".") != 0 && strcmp(names[i]->d_name, "..") != 0) {
			assert_int_equal(
			        sw_buf_printf(&b, NULL, "%s%s", b.len ? "," : "", names[i]->d_name),
			        0);
		}
		free(names[i]);
	}
	free(names);
	return sw_buf_steal(&b, NULL);
}

/* ---------------------------------------------------------------- errors */

static void test_common__error_first_cause_wins(void **state)
{
	(void)state;
	sw_error *e = NULL;
	assert_int_equal(sw_error_set(&e, SW_ERR_NOT_FOUND, "blob %s missing", "sha256:ab"),
	                 SW_ERR_NOT_FOUND);
	/* a second set keeps the first cause but still returns its own code */
	assert_int_equal(sw_error_set(&e, SW_ERR_INVALID, "later"), SW_ERR_INVALID);
	assert_string_equal(sw_error_msg(e), "blob sha256:ab missing");
	assert_int_equal(sw_error_wrap(&e, "pull '%s'", "app:1"), SW_ERR_NOT_FOUND);
	assert_int_equal(sw_error_wrap(&e, "promote"), SW_ERR_NOT_FOUND);
	assert_string_equal(sw_error_msg(e), "promote: pull 'app:1': blob sha256:ab missing");
	assert_int_equal(sw_error_code_of(e), SW_ERR_NOT_FOUND);
	sw_error_clear(&e);
	assert_null(e);
	assert_int_equal(sw_error_code_of(NULL), SW_OK);

	/* no error slot: the code still comes back */
	assert_int_equal(sw_error_set(NULL, SW_ERR_CONFLICT, "x"), SW_ERR_CONFLICT);
	/* a non-negative code is never returned as success */
	assert_int_equal(sw_error_set(&e, 0, "odd"), SW_ERR_GENERIC);
	sw_error_clear(&e);

	/* wrapping nothing still yields an error */
	assert_int_equal(sw_error_wrap(&e, "ctx"), SW_ERR_GENERIC);
	assert_non_null(strstr(sw_error_msg(e), "ctx: "));
	sw_error_clear(&e);

	assert_int_equal(sw_error_lib(&e, SW_ERR_AUTH, SW_ERRSRC_HTTP, 401, "GET %s", "/v2/"),
	                 SW_ERR_AUTH);
	assert_int_equal(e->source, SW_ERRSRC_HTTP);
	assert_int_equal(e->sys, 401);
	assert_string_equal(e->msg, "GET /v2/");
	sw_error_free(e);
}

static void test_common__error_os_codes(void **state)
{
	(void)state;
	static const struct {
		int errnum;
		int code;
	} cases[] = {
		{ ENOENT, SW_ERR_NOT_FOUND },  { EEXIST, SW_ERR_CONFLICT },
		{ EACCES, SW_ERR_AUTH },       { EPERM, SW_ERR_AUTH },
		{ ELOOP, SW_ERR_INVALID },     { EINVAL, SW_ERR_INVALID },
		{ ETIMEDOUT, SW_ERR_TIMEOUT }, { EIO, SW_ERR_GENERIC },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(cases); i++) {
		sw_error *e = NULL;
		assert_int_equal(sw_error_os(&e, cases[i].errnum, "open '%s'", "f"), cases[i].code);
		assert_int_equal(e->code, cases[i].code);
		assert_int_equal(e->source, SW_ERRSRC_OS);
		assert_int_equal(e->sys, cases[i].errnum);
		cleanup_free char *want = sw_xasprintf("open 'f': %s", strerror(cases[i].errnum));
		assert_string_equal(e->msg, want);
		sw_error_free(e);
	}
}

/* ---------------------------------------------------------------- buffers and redaction */

static void test_common__buf_cap(void **state)
{
	(void)state;
	sw_buf b = SW_BUF_INIT(10);
	sw_error *e = NULL;
	assert_int_equal(sw_buf_puts(&b, "12345678", &e), 0);
	assert_int_equal(sw_buf_append(&b, "abc", 3, &e), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(e), "10 bytes"));
	sw_error_clear(&e);
	assert_int_equal(b.len, 8);
	assert_string_equal(b.data, "12345678");
	assert_int_equal(sw_buf_printf(&b, &e, "%d", 90), 0);
	assert_string_equal(b.data, "1234567890");
	assert_int_equal(sw_buf_append(&b, "x", 1, &e), SW_ERR_INVALID);
	sw_error_clear(&e);
	size_t len = 0;
	cleanup_free char *s = sw_buf_steal(&b, &len);
	assert_int_equal(len, 10);
	assert_string_equal(s, "1234567890");
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	sw_buf_free(&b);
}

static void test_common__redact(void **state)
{
	(void)state;
	cleanup_free char *u =
	        sw_redact("push to https://bob:s3cr3t@registry.example/v2/app failed");
	assert_null(strstr(u, "s3cr3t"));
	assert_non_null(strstr(u, "https://bob:***@registry.example/v2/app failed"));

	cleanup_free char *plain = sw_redact("GET http://127.0.0.1:5000/v2/ ok");
	assert_string_equal(plain, "GET http://127.0.0.1:5000/v2/ ok");

	cleanup_free char *h = sw_redact("Authorization: Bearer abc.def.ghi\r\nAccept: */*");
	assert_null(strstr(h, "abc.def.ghi"));
	assert_non_null(strstr(h, "Bearer"));
	assert_non_null(strstr(h, "Accept: */*"));

	cleanup_free char *basic = sw_redact("authorization: Basic dXNlcjpwYXNz");
	assert_null(strstr(basic, "dXNlcjpwYXNz"));
}

/* ---------------------------------------------------------------- filesystem */

static void test_common__fs_write_atomic(void **state)
{
	(void)state;
	cleanup_free char *dir = make_tmpdir();
	cleanup_free char *path = sw_path_join(dir, "state.json");
	sw_error *e = NULL;
	mode_t old = umask(077);

	assert_int_equal(sw_fs_write_atomic(path, "one", 3, 0644, &e), 0);
	cleanup_free char *a = read_text(path);
	assert_string_equal(a, "one");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644); /* the mode, not the umask */

	/* replaced, with the new mode, and nothing else left in the folder */
	assert_int_equal(sw_fs_write_atomic(path, "second version", 14, 0600, &e), 0);
	cleanup_free char *b = read_text(path);
	assert_string_equal(b, "second version");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	cleanup_free char *names = list_dir(dir);
	assert_string_equal(names, "state.json");

	/* an empty file is a file too */
	assert_int_equal(sw_fs_write_atomic(path, "", 0, 0644, &e), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 0);
	umask(old);

	/* relative to a folder fd, into a sub folder */
	cleanup_free char *sub = sw_path_join(dir, "sub");
	assert_int_equal(mkdir(sub, 0755), 0);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(sw_fs_write_atomic_at(dfd, "sub/x", "at", 2, 0640, &e), 0);
	close(dfd);
	cleanup_free char *x = sw_path_join(sub, "x");
	cleanup_free char *xs = read_text(x);
	assert_string_equal(xs, "at");
	cleanup_free char *subnames = list_dir(sub);
	assert_string_equal(subnames, "x");

	/* a failed rename (the target is a folder) leaves no temporary file behind */
	cleanup_free char *blocker = sw_path_join(dir, "blocker");
	assert_int_equal(mkdir(blocker, 0755), 0);
	assert_true(sw_fs_write_atomic(blocker, "data", 4, 0644, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "blocker"));
	sw_error_clear(&e);
	cleanup_free char *after = list_dir(dir);
	assert_string_equal(after, "blocker,state.json,sub");

	/* a missing folder is an error that names the file */
	cleanup_free char *nodir = sw_path_join(dir, "missing/file");
	assert_int_equal(sw_fs_write_atomic(nodir, "x", 1, 0644, &e), SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(e), "missing/file"));
	sw_error_clear(&e);

	remove_tree(dir);
}

static void test_common__fs_read_file_cap(void **state)
{
	(void)state;
	cleanup_free char *dir = make_tmpdir();
	cleanup_free char *path = sw_path_join(dir, "f");
	char big[100];
	memset(big, 'a', sizeof(big));
	sw_error *e = NULL;
	assert_int_equal(sw_fs_write_atomic(path, big, sizeof(big), 0644, &e), 0);

	char *data = NULL;
	size_t len = 0;
	assert_int_equal(sw_fs_read_file(&data, &len, path, 50, &e), SW_ERR_INVALID);
	assert_null(data);
	assert_non_null(strstr(sw_error_msg(e), "50 bytes"));
	sw_error_clear(&e);

	assert_int_equal(sw_fs_read_file(&data, &len, path, 100, &e), 0);
	assert_int_equal(len, 100);
	assert_int_equal(data[100], '\0');
	assert_memory_equal(data, big, 100);
	free(data);

	cleanup_free char *missing = sw_path_join(dir, "nope");
	assert_int_equal(sw_fs_read_file(&data, &len, missing, 0, &e), SW_ERR_NOT_FOUND);
	sw_error_clear(&e);
	remove_tree(dir);
}

static void test_common__fs_mkdir_p(void **state)
{
	(void)state;
	cleanup_free char *dir = make_tmpdir();
	cleanup_free char *deep = sw_path_join(dir, "a/b//c/");
	sw_error *e = NULL;
	assert_int_equal(sw_fs_mkdir_p(deep, 0755, &e), 0);
	assert_int_equal(sw_fs_mkdir_p(deep, 0755, &e), 0); /* again: fine */
	struct stat st;
	assert_int_equal(stat(deep, &st), 0);
	assert_true(S_ISDIR(st.st_mode));

	cleanup_free char *file = sw_path_join(dir, "a/file");
	write_file(file, "x");
	cleanup_free char *under = sw_path_join(dir, "a/file/d");
	assert_true(sw_fs_mkdir_p(under, 0755, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "a/file"));
	sw_error_clear(&e);
	assert_true(sw_fs_mkdir_p(file, 0755, &e) < 0);
	sw_error_clear(&e);
	remove_tree(dir);
}

static void test_common__fs_rm_rf(void **state)
{
	(void)state;
	cleanup_free char *dir = make_tmpdir();
	cleanup_free char *outside = sw_path_join(dir, "outside");
	cleanup_free char *keep = sw_path_join(dir, "outside/keep");
	cleanup_free char *tree = sw_path_join(dir, "tree");
	cleanup_free char *deep = sw_path_join(dir, "tree/a/b/c");
	sw_error *e = NULL;
	assert_int_equal(sw_fs_mkdir_p(outside, 0755, &e), 0);
	write_file(keep, "precious");
	assert_int_equal(sw_fs_mkdir_p(deep, 0755, &e), 0);
	cleanup_free char *f1 = sw_path_join(dir, "tree/a/b/c/file");
	write_file(f1, "1");
	/* symlinks to a folder and a file outside: removed, never followed */
	cleanup_free char *l1 = sw_path_join(dir, "tree/a/link");
	cleanup_free char *l2 = sw_path_join(dir, "tree/filelink");
	assert_int_equal(symlink(outside, l1), 0);
	assert_int_equal(symlink(keep, l2), 0);
	/* read-only and unreadable folders with content */
	cleanup_free char *ro = sw_path_join(dir, "tree/ro");
	cleanup_free char *rofile = sw_path_join(dir, "tree/ro/f");
	assert_int_equal(mkdir(ro, 0755), 0);
	write_file(rofile, "ro");
	assert_int_equal(chmod(ro, 0555), 0);
	cleanup_free char *closed = sw_path_join(dir, "tree/a/closed");
	cleanup_free char *closedf = sw_path_join(dir, "tree/a/closed/f");
	assert_int_equal(mkdir(closed, 0755), 0);
	write_file(closedf, "c");
	assert_int_equal(chmod(closed, 0), 0);
	/* a FIFO is just another entry */
	cleanup_free char *fifo = sw_path_join(dir, "tree/fifo");
	assert_int_equal(mkfifo(fifo, 0644), 0);

	assert_int_equal(sw_fs_rm_rf(tree, &e), 0);
	assert_false(exists(tree));
	cleanup_free char *kept = read_text(keep);
	assert_string_equal(kept, "precious");

	/* missing is fine; a top-level symlink is removed, not its target */
	assert_int_equal(sw_fs_rm_rf(tree, &e), 0);
	cleanup_free char *top = sw_path_join(dir, "toplink");
	assert_int_equal(symlink(outside, top), 0);
	assert_int_equal(sw_fs_rm_rf(top, &e), 0);
	assert_false(exists(top));
	assert_true(exists(keep));

	/* a plain file; and paths that must not be removed */
	assert_int_equal(sw_fs_rm_rf(keep, &e), 0);
	assert_false(exists(keep));
	assert_int_equal(sw_fs_rm_rf("/", &e), SW_ERR_INVALID);
	sw_error_clear(&e);
	cleanup_free char *dotdot = sw_path_join(dir, "outside/..");
	assert_int_equal(sw_fs_rm_rf(dotdot, &e), SW_ERR_INVALID);
	sw_error_clear(&e);
	assert_true(exists(outside));
	/* a trailing slash names the folder itself */
	cleanup_free char *slashed = sw_xasprintf("%s/", dir);
	assert_int_equal(sw_fs_rm_rf(slashed, &e), 0);
	assert_false(exists(dir));
}

static void test_common__fs_mkdtemp(void **state)
{
	(void)state;
	cleanup_free char *parent = make_tmpdir();
	char *d = NULL;
	sw_error *e = NULL;
	assert_int_equal(sw_fs_mkdtemp(&d, parent, "job-", &e), 0);
	cleanup_free char *prefix = sw_path_join(parent, "job-");
	assert_memory_equal(d, prefix, strlen(prefix));
	assert_int_equal(strlen(d), strlen(prefix) + 6);
	struct stat st;
	assert_int_equal(stat(d, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	free(d);
	cleanup_free char *missing = sw_path_join(parent, "nope");
	assert_int_equal(sw_fs_mkdtemp(&d, missing, "x", &e), SW_ERR_NOT_FOUND);
	assert_null(d);
	sw_error_clear(&e);
	assert_non_null(sw_fs_tmpdir());
	remove_tree(parent);
}

static void test_common__fs_write_all(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	sw_error *e = NULL;
	assert_int_equal(sw_fs_write_all(p[1], "hello", 5, &e), 0);
	char buf[8] = { 0 };
	assert_int_equal(read(p[0], buf, sizeof(buf)), 5);
	assert_string_equal(buf, "hello");
	close(p[0]);
	close(p[1]);
	assert_true(sw_fs_write_all(p[1], "x", 1, &e) < 0); /* closed fd */
	sw_error_clear(&e);
}

/* ---------------------------------------------------------------- paths */

static void test_common__path_clean_join(void **state)
{
	(void)state;
	static const char *const clean[][2] = {
		{ "", "." },
		{ ".", "." },
		{ "/", "/" },
		{ "//", "/" },
		{ "a/b/../c", "a/c" },
		{ "/../a", "/a" },
		{ "../../a/./b/", "../../a/b" },
		{ "a/../..", ".." },
		{ "/a//b///c/.", "/a/b/c" },
		{ "a/b/../../..", ".." },
		{ "./a/", "a" },
		{ "/..", "/" },
		{ "abc/..", "." },
		{ "..a/.b/..", "..a" },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(clean); i++) {
		cleanup_free char *got = sw_path_clean(clean[i][0]);
		assert_string_equal(got, clean[i][1]);
	}
	static const char *const join[][3] = {
		{ "a", "b", "a/b" },  { "a/", "/b", "a/b" },
		{ "/", "x", "/x" },   { "", "b", "b" },
		{ "a", "", "a" },     { "/s//", "blobs/sha256", "/s/blobs/sha256" },
		{ "a//", "//", "a" },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(join); i++) {
		cleanup_free char *got = sw_path_join(join[i][0], join[i][1]);
		assert_string_equal(got, join[i][2]);
	}
}

struct root_fixture {
	char *base;    /* the temporary folder */
	char *root;    /* base/root: the root being resolved in */
	char *outside; /* base/outside: must never be reached */
	int rootfd;
};

static void link_at(const char *root, const char *name, const char *target)
{
	cleanup_free char *p = sw_path_join(root, name);
	if (symlink(target, p) < 0)
		fail_msg("symlink %s -> %s: %s", p, target, strerror(errno));
}

static void mkdir_in(const char *root, const char *name)
{
	cleanup_free char *p = sw_path_join(root, name);
	sw_error *e = NULL;
	if (sw_fs_mkdir_p(p, 0755, &e) < 0)
		fail_msg("%s", sw_error_msg(e));
}

static int root_setup(void **state)
{
	struct root_fixture *f = sw_xcalloc(1, sizeof(*f));
	f->base = make_tmpdir();
	f->root = sw_path_join(f->base, "root");
	f->outside = sw_path_join(f->base, "outside");
	mkdir_in(f->base, "root/etc");
	mkdir_in(f->base, "outside");
	cleanup_free char *secret = sw_path_join(f->outside, "secret");
	write_file(secret, "outside");
	cleanup_free char *host = sw_path_join(f->root, "etc/hostname");
	write_file(host, "inside");
	cleanup_free char *file = sw_path_join(f->root, "file");
	write_file(file, "f");

	link_at(f->root, "a", "/etc");
	link_at(f->root, "b", "../../..");
	link_at(f->root, "c", "c");
	link_at(f->root, "l1", "l2");
	link_at(f->root, "l2", "l1");
	mkdir_in(f->root, "x");
	mkdir_in(f->root, "y");
	mkdir_in(f->root, "z");
	link_at(f->root, "x/d", "../y/l1");
	link_at(f->root, "x/abs", "/etc");
	link_at(f->root, "y/l1", "l2");
	link_at(f->root, "y/l2", "/z/real");
	link_at(f->root, "e", f->outside); /* absolute, to the real outside folder */
	link_at(f->root, "up", "../outside");
	mkdir_in(f->root, "outside");
	link_at(f->root, "evil", "../outside/victim");
	cleanup_free char *victim2 = sw_path_join(f->outside, "victim2");
	link_at(f->root, "evil2", victim2);
	mkdir_in(f->root, f->outside); /* root/<base>/outside, where evil2 lands */
	/* a chain of 40 links works, 41 is too many */
	for (int i = 0; i < 41; i++) {
		char name[32], target[32];
		snprintf(name, sizeof(name), "chain%d", i);
		snprintf(target, sizeof(target), "chain%d", i + 1);
		if (i < 39)
			link_at(f->root, name, target);
		else if (i == 39)
			link_at(f->root, name, "/etc");
		snprintf(name, sizeof(name), "over%d", i);
		snprintf(target, sizeof(target), "over%d", i + 1);
		link_at(f->root, name, i < 40 ? target : "/etc");
	}
	f->rootfd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(f->rootfd >= 0);
	*state = f;
	return 0;
}

static int root_teardown(void **state)
{
	struct root_fixture *f = *state;
	close(f->rootfd);
	remove_tree(f->base);
	free(f->base);
	free(f->root);
	free(f->outside);
	free(f);
	sw_common__path_no_openat2 = false;
	return 0;
}

static void test_common__path_resolve_in_root(void **state)
{
	struct root_fixture *f = *state;
	const char *base_rel = f->base + 1; /* the base folder's path without its leading "/" */
	cleanup_free char *e_secret = sw_xasprintf("%s/outside/secret", base_rel);
	const struct {
		const char *in;
		int flags;
		const char *out;
	} cases[] = {
		{ "", 0, "" },
		{ "/", 0, "" },
		{ ".", 0, "" },
		{ "etc/hostname", 0, "etc/hostname" },
		{ "a", 0, "etc" },
		{ "a/hostname", 0, "etc/hostname" },
		{ "/a/../a/hostname", 0, "etc/hostname" },
		{ "b", 0, "" },
		{ "b/etc/hostname", 0, "etc/hostname" },
		{ "b/../../outside/secret", 0, "outside/secret" },
		{ "../../../etc/hostname", 0, "etc/hostname" },
		{ "x/d", 0, "z/real" },
		{ "x/d/more/../deeper", 0, "z/real/deeper" },
		{ "x/abs/hostname", 0, "etc/hostname" },
		{ "e/secret", 0, e_secret },
		{ "up/secret", 0, "outside/secret" },
		{ "evil", 0, "outside/victim" },
		{ "nope/../../a/x", 0, "etc/x" },
		{ "nope/deeper/../..", 0, "" },
		{ "file/x", 0, "file/x" },
		{ "chain0", 0, "etc" },
		{ "chain0/hostname", 0, "etc/hostname" },
		{ "a", SW_PATH_NOFOLLOW, "a" },
		{ "a/hostname", SW_PATH_NOFOLLOW, "etc/hostname" },
		{ "c", SW_PATH_NOFOLLOW, "c" },
		{ "x/d", SW_PATH_NOFOLLOW, "x/d" },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(cases); i++) {
		char *out = NULL;
		sw_error *e = NULL;
		if (sw_path_resolve_in_root(&out, f->rootfd, cases[i].in, cases[i].flags, &e) < 0)
			fail_msg("resolve '%s': %s", cases[i].in, sw_error_msg(e));
		if (strcmp(out, cases[i].out) != 0)
			fail_msg("resolve '%s': got '%s', want '%s'", cases[i].in, out,
			         cases[i].out);
		assert_true(out[0] != '/');
		cleanup_free char *clean = sw_path_clean(out);
		assert_true(strncmp(clean, "..", 2) != 0);
		free(out);
	}

	/* loops and overlong chains fail with SW_ERR_INVALID */
	const char *loops[] = { "c", "l1", "c/x", "over0", "x/../l2/y" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(loops); i++) {
		char *out = NULL;
		sw_error *e = NULL;
		assert_int_equal(sw_path_resolve_in_root(&out, f->rootfd, loops[i], 0, &e),
		                 SW_ERR_INVALID);
		assert_null(out);
		assert_non_null(strstr(sw_error_msg(e), loops[i]));
		sw_error_free(e);
	}
}

static void check_open_in_root(struct root_fixture *f)
{
	sw_error *e = NULL;
	int fd = -1;
	char buf[64];

	/* reading through an absolute symlink reads the root's file, not the host's */
	assert_int_equal(sw_path_open_in_root(&fd, f->rootfd, "a/hostname", O_RDONLY, 0, &e), 0);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_int_equal(n, 6);
	buf[n] = '\0';
	assert_string_equal(buf, "inside");

	/* an absolute link deeper down restarts from the root too */
	assert_int_equal(sw_path_open_in_root(&fd, f->rootfd, "x/abs/hostname", O_RDONLY, 0, &e),
	                 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_int_equal(n, 6);

	/* escapes do not reach the real outside folder */
	const char *escapes[] = { "b/../../../outside/secret", "up/secret", "../outside/secret" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(escapes); i++) {
		assert_int_equal(sw_path_open_in_root(&fd, f->rootfd, escapes[i], O_RDONLY, 0, &e),
		                 SW_ERR_NOT_FOUND);
		assert_int_equal(fd, -1);
		sw_error_clear(&e);
	}

	/* creating through escaping symlinks creates inside the root */
	const char *creates[] = { "evil", "evil2", "b/created", "a/../../new" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(creates); i++) {
		if (sw_path_open_in_root(&fd, f->rootfd, creates[i], O_WRONLY | O_CREAT | O_TRUNC,
		                         0640, &e) < 0)
			fail_msg("create '%s': %s", creates[i], sw_error_msg(e));
		assert_int_equal(write(fd, "w", 1), 1);
		close(fd);
	}
	cleanup_free char *victim_out = sw_path_join(f->outside, "victim");
	cleanup_free char *victim2_out = sw_path_join(f->outside, "victim2");
	cleanup_free char *victim_in = sw_path_join(f->root, "outside/victim");
	cleanup_free char *victim2_in = sw_xasprintf("%s%s/victim2", f->root, f->outside);
	cleanup_free char *created_in = sw_path_join(f->root, "created");
	cleanup_free char *new_in = sw_path_join(f->root, "new");
	assert_false(exists(victim_out));
	assert_false(exists(victim2_out));
	assert_true(exists(victim_in));
	assert_true(exists(victim2_in));
	assert_true(exists(created_in));
	assert_true(exists(new_in));
	struct stat st;
	assert_int_equal(stat(victim_in, &st), 0);
	assert_int_equal(st.st_size, 1);
	cleanup_free char *outside_names = list_dir(f->outside);
	assert_string_equal(outside_names, "secret");

	/* O_NOFOLLOW refuses a final symlink; loops fail; missing parents are not created */
	assert_int_equal(sw_path_open_in_root(&fd, f->rootfd, "a", O_RDONLY | O_NOFOLLOW, 0, &e),
	                 SW_ERR_INVALID);
	sw_error_clear(&e);
	assert_int_equal(sw_path_open_in_root(&fd, f->rootfd, "c", O_RDONLY, 0, &e),
	                 SW_ERR_INVALID);
	sw_error_clear(&e);
	assert_int_equal(sw_path_open_in_root(&fd, f->rootfd, "over0", O_RDONLY, 0, &e),
	                 SW_ERR_INVALID);
	sw_error_clear(&e);
	assert_int_equal(sw_path_open_in_root(&fd, f->rootfd, "chain0/hostname", O_RDONLY, 0, &e),
	                 0);
	close(fd);
	assert_int_equal(
	        sw_path_open_in_root(&fd, f->rootfd, "missing/dir/f", O_WRONLY | O_CREAT, 0644, &e),
	        SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(e), "missing/dir/f"));
	sw_error_clear(&e);
	/* O_CREAT|O_EXCL does not follow a final symlink */
	assert_int_equal(
	        sw_path_open_in_root(&fd, f->rootfd, "evil", O_WRONLY | O_CREAT | O_EXCL, 0644, &e),
	        SW_ERR_CONFLICT);
	sw_error_clear(&e);

	/* folders open too, the root itself included */
	assert_int_equal(sw_path_open_in_root(&fd, f->rootfd, "b", O_RDONLY | O_DIRECTORY, 0, &e),
	                 0);
	assert_int_equal(fstat(fd, &st), 0);
	close(fd);
	struct stat rst;
	assert_int_equal(fstat(f->rootfd, &rst), 0);
	assert_int_equal(st.st_ino, rst.st_ino);
	assert_int_equal(st.st_dev, rst.st_dev);
}

static void test_common__path_open_in_root_kernel(void **state)
{
	sw_common__path_no_openat2 = false;
	check_open_in_root(*state);
}

static void test_common__path_open_in_root_fallback(void **state)
{
	sw_common__path_no_openat2 = true;
	check_open_in_root(*state);
	sw_common__path_no_openat2 = false;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_common__error_first_cause_wins),
		cmocka_unit_test(test_common__error_os_codes),
		cmocka_unit_test(test_common__buf_cap),
		cmocka_unit_test(test_common__redact),
		cmocka_unit_test(test_common__fs_write_atomic),
		cmocka_unit_test(test_common__fs_read_file_cap),
		cmocka_unit_test(test_common__fs_mkdir_p),
		cmocka_unit_test(test_common__fs_rm_rf),
		cmocka_unit_test(test_common__fs_mkdtemp),
		cmocka_unit_test(test_common__fs_write_all),
		cmocka_unit_test(test_common__path_clean_join),
		cmocka_unit_test_setup_teardown(test_common__path_resolve_in_root, root_setup,
		                                root_teardown),
		cmocka_unit_test_setup_teardown(test_common__path_open_in_root_kernel, root_setup,
		                                root_teardown),
		cmocka_unit_test_setup_teardown(test_common__path_open_in_root_fallback, root_setup,
		                                root_teardown),
	};
	int failed = cmocka_run_group_tests_name("common", tests, NULL, NULL);
	failed += test_common_http_run();
	return failed ? 1 : 0;
}
