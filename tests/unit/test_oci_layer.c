/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layer tarballs: writing a folder (every kind of entry, overlay upper folders) into the store
 * and applying it back, determinism of diff_id and blob digest, whiteouts, replacing rules, and
 * hostile layers (".." and absolute paths, symlink and hard-link escapes, size and count limits)
 * refused without touching anything outside the target folder. Each case works in its own
 * temporary folder, removed afterwards.
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
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <zstd.h>

typedef struct fixture {
	char *tmp;
	sw_oci_store *store;
} fixture;

static int setup(void **state)
{
	fixture *f = sw_xcalloc(1, sizeof(*f));
	sw_error *err = NULL;
	if (sw_fs_mkdtemp(&f->tmp, NULL, "sw-layer-test-", &err) < 0) {
		fprintf(stderr, "%s\n", sw_error_msg(err));
		sw_error_free(err);
		free(f);
		return -1;
	}
	cleanup_free char *sdir = sw_path_join(f->tmp, "store");
	if (sw_oci_store_open(&f->store, sdir, true, &err) < 0) {
		fprintf(stderr, "%s\n", sw_error_msg(err));
		sw_error_free(err);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sw_error *err = NULL;
	sw_oci_store_free(f->store);
	int r = sw_fs_rm_rf(f->tmp, &err);
	if (r < 0)
		fprintf(stderr, "%s\n", sw_error_msg(err));
	sw_error_free(err);
	free(f->tmp);
	free(f);
	return r < 0 ? -1 : 0;
}

/* ---------------------------------------------------------------- helpers */

#define CHECK_OK(expr)                                                       \
	do {                                                                 \
		sw_error *check_err_ = NULL;                                 \
		int check_r_ = (expr);                                       \
		if (check_r_ < 0)                                            \
			fail_msg("%s: %s", #expr, sw_error_msg(check_err_)); \
		sw_error_free(check_err_);                                   \
	} while (0)

static char *P(const fixture *f, const char *rel)
{
	return sw_path_join(f->tmp, rel);
}

static void put_file(const char *dir, const char *rel, const char *data, size_t len, mode_t mode)
{
	cleanup_free char *p = sw_path_join(dir, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void put_dir(const char *dir, const char *rel, mode_t mode)
{
	cleanup_free char *p = sw_path_join(dir, rel);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(chmod(p, mode), 0);
}

static void set_mtime(const char *dir, const char *rel, time_t t)
{
	cleanup_free char *p = sw_path_join(dir, rel);
	struct timespec ts[2] = { { t, 0 }, { t, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static bool xattr_supported(const char *dir)
{
	cleanup_free char *p = sw_path_join(dir, ".xattr-probe");
	int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	bool ok = fsetxattr(fd, "user.probe", "1", 1, 0) == 0;
	close(fd);
	unlink(p);
	return ok;
}

typedef struct inode_seen {
	ino_t ino;
	char *path;
} inode_seen;

typedef struct dumper {
	sw_buf out;
	inode_seen *seen;
	size_t n_seen;
	const char *exclude; /* a relative path left out, with what is under it */
} dumper;

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void dump_dir(dumper *d, const char *root, const char *rel);

/* One line per entry: path, type, mode, owner, mtime, size, content digest, link target,
 * device numbers, user./trusted./security.capability xattrs, and the first path of its
 * hard-link group. */
static void dump_entry(dumper *d, const char *root, const char *rel)
{
	cleanup_free char *full = sw_path_join(root, rel);
	struct stat st;
	assert_int_equal(lstat(full, &st), 0);
	char type = S_ISDIR(st.st_mode)    ? 'd'
	            : S_ISREG(st.st_mode)  ? 'f'
	            : S_ISLNK(st.st_mode)  ? 'l'
	            : S_ISCHR(st.st_mode)  ? 'c'
	            : S_ISBLK(st.st_mode)  ? 'b'
	            : S_ISFIFO(st.st_mode) ? 'p'
	                                   : '?';
	sw_error *err = NULL;
	assert_int_equal(sw_buf_printf(&d->out, &err, "%s %c %04o %u:%u", rel, type,
	                               (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
	                               (unsigned)st.st_gid),
	                 0);
	assert_int_equal(sw_buf_printf(&d->out, &err, " mtime=%lld", (long long)st.st_mtim.tv_sec),
	                 0);
	if (type == 'f') {
		cleanup_free char *data = NULL;
		size_t len = 0;
		CHECK_OK(sw_fs_read_file(&data, &len, full, (size_t)64 << 20, &check_err_));
		sw_digest dg;
		sw_oci_digest_bytes(&dg, data, len);
		assert_int_equal(sw_buf_printf(&d->out, &err, " size=%zu %.19s", len, dg.s), 0);
	}
	if (type == 'l') {
		char target[4096];
		ssize_t n = readlink(full, target, sizeof(target) - 1);
		assert_true(n >= 0);
		target[n] = '\0';
		assert_int_equal(sw_buf_printf(&d->out, &err, " -> %s", target), 0);
	}
	if (type == 'c' || type == 'b')
		assert_int_equal(sw_buf_printf(&d->out, &err, " dev=%u:%u", major(st.st_rdev),
		                               minor(st.st_rdev)),
		                 0);
	char names[4096];
	ssize_t nl = llistxattr(full, names, sizeof(names));
	if (nl > 0) {
		const char *v[64];
		size_t n = 0;
		for (ssize_t i = 0; i < nl && n < 64; i += (ssize_t)strlen(names + i) + 1)
			v[n++] = names + i;
		qsort(v, n, sizeof(v[0]), name_cmp);
		for (size_t i = 0; i < n; i++) {
			if (strncmp(v[i], "user.", 5) != 0 && strncmp(v[i], "trusted.", 8) != 0 &&
			    strcmp(v[i], "security.capability") != 0)
				continue;
			char val[256];
			ssize_t vl = lgetxattr(full, v[i], val, sizeof(val));
			assert_true(vl >= 0);
			assert_int_equal(sw_buf_printf(&d->out, &err, " x:%s=%zd", v[i], vl), 0);
			for (ssize_t k = 0; k < vl; k++)
				assert_int_equal(
				        sw_buf_printf(&d->out, &err, "%02x", (unsigned char)val[k]),
				        0);
		}
	}
	if (type != 'd' && st.st_nlink > 1) {
		const char *first = NULL;
		for (size_t i = 0; i < d->n_seen; i++)
			if (d->seen[i].ino == st.st_ino)
				first = d->seen[i].path;
		if (!first) {
			d->seen = sw_xrealloc(d->seen, (d->n_seen + 1) * sizeof(*d->seen));
			d->seen[d->n_seen].ino = st.st_ino;
			d->seen[d->n_seen++].path = sw_xstrdup(rel);
			first = rel;
		}
		assert_int_equal(sw_buf_printf(&d->out, &err, " links=%s", first), 0);
	}
	assert_int_equal(sw_buf_puts(&d->out, "\n", &err), 0);
	if (type == 'd')
		dump_dir(d, root, rel);
}

static void dump_dir(dumper *d, const char *root, const char *rel)
{
	cleanup_free char *full = *rel ? sw_path_join(root, rel) : sw_xstrdup(root);
	DIR *dir = opendir(full);
	assert_non_null(dir);
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		names = sw_xrealloc(names, (n + 1) * sizeof(*names));
		names[n++] = sw_xstrdup(de->d_name);
	}
	closedir(dir);
	if (n > 1)
		qsort(names, n, sizeof(*names), name_cmp);
	for (size_t i = 0; i < n; i++) {
		cleanup_free char *child =
		        *rel ? sw_path_join(rel, names[i]) : sw_xstrdup(names[i]);
		if (!(d->exclude && strcmp(child, d->exclude) == 0))
			dump_entry(d, root, child);
		free(names[i]);
	}
	free(names);
}

/* The whole tree under `root` as text (caller frees). */
static char *dump_tree(const char *root, const char *exclude)
{
	dumper d;
	memset(&d, 0, sizeof(d));
	sw_buf_init(&d.out, (size_t)16 << 20);
	d.exclude = exclude;
	sw_error *err = NULL;
	assert_int_equal(sw_buf_puts(&d.out, "", &err), 0);
	dump_dir(&d, root, "");
	for (size_t i = 0; i < d.n_seen; i++)
		free(d.seen[i].path);
	free(d.seen);
	return sw_buf_steal(&d.out, NULL);
}

/* Read the blob of `info` back: check its digest and size, decompress it, check the diff_id
 * and tar size, and return one line per entry "name type perm size [-> link] [x:names]". */
static char *blob_list(fixture *f, const sw_oci_layer_info *info)
{
	cleanup_free char *blob = NULL;
	size_t len = 0;
	CHECK_OK(sw_oci_store_read_blob(&blob, &len, f->store, &info->blob_digest, (size_t)1 << 30,
	                                &check_err_));
	assert_int_equal((int64_t)len, info->blob_size);
	sw_digest d;
	sw_oci_digest_bytes(&d, blob, len);
	assert_string_equal(d.s, info->blob_digest.s);

	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	assert_int_equal(archive_read_open_memory(a, blob, len), ARCHIVE_OK);
	struct archive_entry *e;
	assert_int_equal(archive_read_next_header(a, &e), ARCHIVE_OK);
	sw_buf tar = SW_BUF_INIT((size_t)1 << 30);
	char buf[65536];
	la_ssize_t n;
	sw_error *err = NULL;
	while ((n = archive_read_data(a, buf, sizeof(buf))) > 0)
		assert_int_equal(sw_buf_append(&tar, buf, (size_t)n, &err), 0);
	assert_int_equal(n, 0);
	archive_read_free(a);
	assert_int_equal((int64_t)tar.len, info->tar_size);
	sw_oci_digest_bytes(&d, tar.data, tar.len);
	assert_string_equal(d.s, info->diff_id.s);

	a = archive_read_new();
	archive_read_support_format_tar(a);
	assert_int_equal(archive_read_open_memory(a, tar.data, tar.len), ARCHIVE_OK);
	sw_buf out = SW_BUF_INIT(0);
	uint64_t count = 0;
	int r;
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
		count++;
		mode_t t = archive_entry_filetype(e);
		char type = archive_entry_hardlink(e) ? 'h'
		            : t == AE_IFDIR           ? 'd'
		            : t == AE_IFREG           ? 'f'
		            : t == AE_IFLNK           ? 'l'
		            : t == AE_IFCHR           ? 'c'
		            : t == AE_IFBLK           ? 'b'
		            : t == AE_IFIFO           ? 'p'
		                                      : '?';
		assert_int_equal(sw_buf_printf(&out, &err, "%s %c %04o %lld",
		                               archive_entry_pathname(e), type,
		                               (unsigned)archive_entry_perm(e),
		                               (long long)archive_entry_size(e)),
		                 0);
		if (archive_entry_hardlink(e))
			assert_int_equal(
			        sw_buf_printf(&out, &err, " -> %s", archive_entry_hardlink(e)), 0);
		const char *xn;
		const void *xv;
		size_t xl;
		archive_entry_xattr_reset(e);
		while (archive_entry_xattr_next(e, &xn, &xv, &xl) == ARCHIVE_OK)
			assert_int_equal(sw_buf_printf(&out, &err, " x:%s", xn), 0);
		assert_int_equal(sw_buf_puts(&out, "\n", &err), 0);
	}
	assert_int_equal(r, ARCHIVE_EOF);
	archive_read_free(a);
	sw_buf_free(&tar);
	assert_int_equal(count, info->entries);
	return sw_buf_steal(&out, NULL);
}

static void apply_blob(fixture *f, const sw_oci_layer_info *info, const char *dest,
                       const sw_oci_apply_opts *opts, sw_oci_apply_stats *stats)
{
	int fd = -1;
	int64_t size = 0;
	CHECK_OK(sw_oci_store_open_blob(&fd, &size, f->store, &info->blob_digest, &check_err_));
	assert_int_equal(size, info->blob_size);
	CHECK_OK(sw_oci_layer_apply_fd(stats, dest, fd, opts, &check_err_));
	close(fd);
}

/* ---------------------------------------------------------------- building layers in memory */

typedef struct tentry {
	char type; /* f file, d folder, l symlink, h hard link, c char device, p fifo */
	const char *name;
	const char *target; /* symlink or hard link target; file content for 'f' */
	int64_t size;       /* 'f': declared size (-1: strlen(target)) */
	mode_t mode;        /* 0: 0644 / 0755 */
} tentry;

static la_ssize_t mem_write_cb(struct archive *a, void *payload, const void *buf, size_t len)
{
	(void)a;
	sw_error *err = NULL;
	if (sw_buf_append(payload, buf, len, &err) < 0) {
		sw_error_free(err);
		return -1;
	}
	return (la_ssize_t)len;
}

/* A tar of `entries`, compressed with `filter` ("gzip", "zstd", "xz" or NULL). */
static char *layer_build(size_t *len, const char *filter, const tentry *entries, size_t n)
{
	sw_buf out = SW_BUF_INIT((size_t)256 << 20);
	struct archive *a = archive_write_new();
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	/* libarchive 3.6's zstd writer appends bytes zstd itself rejects: use libzstd */
	bool zstd = filter && strcmp(filter, "zstd") == 0;
	if (filter && !zstd)
		assert_int_equal(archive_write_add_filter_by_name(a, filter), ARCHIVE_OK);
	assert_int_equal(archive_write_open2(a, &out, NULL, mem_write_cb, NULL, NULL), ARCHIVE_OK);
	struct archive_entry *e = archive_entry_new();
	for (size_t i = 0; i < n; i++) {
		const tentry *t = &entries[i];
		archive_entry_clear(e);
		archive_entry_set_pathname(e, t->name);
		archive_entry_set_mtime(e, 1000000000, 0);
		int64_t size = 0;
		switch (t->type) {
		case 'f':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, t->mode ? t->mode : 0644);
			size = t->size >= 0 ? t->size : (int64_t)strlen(t->target ? t->target : "");
			archive_entry_set_size(e, size);
			break;
		case 'd':
			archive_entry_set_filetype(e, AE_IFDIR);
			archive_entry_set_perm(e, t->mode ? t->mode : 0755);
			break;
		case 'l':
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_set_perm(e, 0777);
			archive_entry_set_symlink(e, t->target);
			break;
		case 'h':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, 0644);
			archive_entry_set_hardlink(e, t->target);
			break;
		case 'c':
			archive_entry_set_filetype(e, AE_IFCHR);
			archive_entry_set_perm(e, 0666);
			archive_entry_set_rdev(e, makedev(1, 3));
			break;
		case 'p':
			archive_entry_set_filetype(e, AE_IFIFO);
			archive_entry_set_perm(e, 0644);
			break;
		default:
			fail();
		}
		int r = archive_write_header(a, e);
		assert_true(r == ARCHIVE_OK || r == ARCHIVE_WARN);
		if (t->type == 'f' && t->target && *t->target) {
			size_t dl = strlen(t->target);
			assert_int_equal(archive_write_data(a, t->target, dl), (la_ssize_t)dl);
		}
	}
	archive_entry_free(e);
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	if (!zstd)
		return sw_buf_steal(&out, len);
	size_t cap = ZSTD_compressBound(out.len);
	char *z = sw_xmalloc(cap);
	*len = ZSTD_compress(z, cap, out.data, out.len, 3);
	assert_false(ZSTD_isError(*len));
	sw_buf_free(&out);
	return z;
}

/* ---------------------------------------------------------------- a tree of every kind */

static const uint32_t cap_net_bind[5] = { 0x02000001, 1u << 10, 0, 0, 0 };

/* Fill `dir` with every kind of entry; returns whether xattrs were set. */
static bool make_tree(const char *dir)
{
	bool root = geteuid() == 0;
	put_dir(dir, "bin", 0755);
	put_file(dir, "bin/tool", "#!/bin/sh\necho tool\n", 20, 0755);
	cleanup_free char *tool = sw_path_join(dir, "bin/tool");
	cleanup_free char *hl = sw_path_join(dir, "bin/tool-hardlink");
	assert_int_equal(link(tool, hl), 0);
	put_dir(dir, "etc", 0755);
	put_file(dir, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 30, 0644);
	put_file(dir, "etc/shadow", "root:*:1::::::\n", 15, 0640);
	put_dir(dir, "usr", 0755);
	put_dir(dir, "usr/bin", 0755);
	put_file(dir, "usr/bin/su", "su", 2, 04755);
	put_file(dir, "usr/bin/wall", "wall", 4, 02755);
	put_dir(dir, "tmp", 01777);
	put_dir(dir, "empty", 0700);
	put_dir(dir, "empty/deeper", 0750);
	cleanup_free char *l1 = sw_path_join(dir, "etc/link");
	assert_int_equal(symlink("passwd", l1), 0);
	cleanup_free char *l2 = sw_path_join(dir, "abs-link");
	assert_int_equal(symlink("/etc/passwd", l2), 0);
	cleanup_free char *l3 = sw_path_join(dir, "dangling");
	assert_int_equal(symlink("../nowhere/at/all", l3), 0);
	put_dir(dir, "run", 0755);
	cleanup_free char *fifo = sw_path_join(dir, "run/fifo");
	assert_int_equal(mkfifo(fifo, 0620), 0);
	cleanup_free char *sock = sw_path_join(dir, "run/sock.skipped");
	/* a socket is skipped: make one with mknod (no need to bind) */
	assert_int_equal(mknod(sock, S_IFSOCK | 0600, 0), 0);
	/* a file bigger than the I/O buffers, with a pattern */
	size_t big = (size_t)700 << 10;
	cleanup_free char *data = sw_xmalloc(big);
	uint32_t x = 12345;
	for (size_t i = 0; i < big; i++) {
		x = x * 1103515245u + 12345u;
		data[i] = (char)((i % 4096) < 2048 ? (x >> 16) : 'a');
	}
	put_file(dir, "big.bin", data, big, 0600);
	put_file(dir, "caf\xc3\xa9", "utf-8 name", 10, 0644);
	const char *longname = "a-rather-long-folder-name-to-go-past-the-ustar-limit-of-one-"
	                       "hundred-bytes-in-the-name-field";
	put_dir(dir, longname, 0755);
	cleanup_free char *longfile = sw_path_join(longname, "and-a-long-file-name-inside-it.txt");
	put_file(dir, longfile, "long", 4, 0644);
	bool xattrs = xattr_supported(dir);
	if (xattrs) {
		cleanup_free char *p = sw_path_join(dir, "etc/passwd");
		assert_int_equal(setxattr(p, "user.foo", "bar", 3, 0), 0);
		cleanup_free char *e = sw_path_join(dir, "empty");
		assert_int_equal(setxattr(e, "user.folder", "yes", 3, 0), 0);
	}
	if (root) {
		cleanup_free char *dev = sw_path_join(dir, "run/null");
		assert_int_equal(mknod(dev, S_IFCHR | 0666, makedev(1, 3)), 0);
		cleanup_free char *blk = sw_path_join(dir, "run/loop9");
		assert_int_equal(mknod(blk, S_IFBLK | 0660, makedev(7, 9)), 0);
		cleanup_free char *owned = sw_path_join(dir, "etc/shadow");
		assert_int_equal(lchown(owned, 1234, 5678), 0);
		assert_int_equal(lchown(l1, 42, 43), 0);
		/* after chown, which clears capabilities */
		assert_int_equal(setxattr(tool, "security.capability", cap_net_bind,
		                          sizeof(cap_net_bind), 0),
		                 0);
		if (xattrs) {
			cleanup_free char *t = sw_path_join(dir, "etc/shadow");
			assert_int_equal(setxattr(t, "trusted.kept", "t", 1, 0), 0);
		}
	}
	set_mtime(dir, "etc/passwd", 1234567890);
	set_mtime(dir, "etc/link", 1234567891);
	set_mtime(dir, "empty/deeper", 1000000001);
	set_mtime(dir, "empty", 1000000002);
	return xattrs;
}

/* ---------------------------------------------------------------- cases */

static void test_oci__layer_roundtrip_every_kind(void **state)
{
	fixture *f = *state;
	cleanup_free char *src = P(f, "src");
	assert_int_equal(mkdir(src, 0755), 0);
	bool xattrs = make_tree(src);
	cleanup_free char *before = dump_tree(src, "run/sock.skipped");

	const sw_oci_compression comps[] = { SW_OCI_COMPRESS_GZIP, SW_OCI_COMPRESS_ZSTD,
		                             SW_OCI_COMPRESS_NONE };
	const char *mts[] = { SW_OCI_MT_LAYER_GZIP, SW_OCI_MT_LAYER_ZSTD, SW_OCI_MT_LAYER };
	for (size_t i = 0; i < SW_ARRAY_SIZE(comps); i++) {
		sw_oci_layer_opts opts = { .compression = comps[i], .source_date_epoch = -1 };
		sw_oci_layer_info info;
		CHECK_OK(sw_oci_layer_write_dir(&info, f->store, src, &opts, &check_err_));
		assert_string_equal(info.media_type, mts[i]);
		if (comps[i] == SW_OCI_COMPRESS_NONE) {
			assert_string_equal(info.diff_id.s, info.blob_digest.s);
			assert_int_equal(info.tar_size, info.blob_size);
		} else {
			assert_true(info.blob_size < info.tar_size);
		}
		cleanup_free char *list = blob_list(f, &info);
		/* sorted, folders before their content, hard link to the first path, no socket,
		 * no "./" prefix */
		assert_non_null(strstr(list, geteuid() == 0
		                                     ? "bin/ d 0755 0\nbin/tool f 0755 20 "
		                                       "x:security.capability\n"
		                                       "bin/tool-hardlink h 0755 0 -> bin/tool\n"
		                                     : "bin/ d 0755 0\nbin/tool f 0755 20\n"
		                                       "bin/tool-hardlink h 0755 0 -> bin/tool\n"));
		assert_non_null(strstr(list, "\netc/ d 0755 0\netc/link l 0777 0\n"));
		assert_null(strstr(list, "sock"));
		assert_null(strstr(list, "./"));
		if (xattrs)
			assert_non_null(strstr(list, "etc/passwd f 0644 30 x:user.foo\n"));

		cleanup_free char *dest = sw_xasprintf("%s/dest%zu", f->tmp, i);
		assert_int_equal(mkdir(dest, 0755), 0);
		sw_oci_apply_opts aopts = { .keep_owners = geteuid() == 0 };
		sw_oci_apply_stats stats;
		apply_blob(f, &info, dest, &aopts, &stats);
		assert_int_equal(stats.entries, info.entries);
		assert_int_equal(stats.whiteouts, 0);
		assert_int_equal(stats.bytes, (700 << 10) + 20 + 30 + 15 + 2 + 4 + 10 + 4);
		cleanup_free char *after = dump_tree(dest, NULL);
		assert_string_equal(before, after);
	}
}

static void test_oci__layer_deterministic(void **state)
{
	fixture *f = *state;
	cleanup_free char *a = P(f, "a");
	cleanup_free char *b = P(f, "b");
	assert_int_equal(mkdir(a, 0755), 0);
	assert_int_equal(mkdir(b, 0755), 0);
	/* the same content created in opposite orders (so readdir order differs) */
	const char *names[] = { "zeta", "alpha", "Mid", "b-dash", "b.dot", "b_under", "0num" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(names); i++) {
		put_file(a, names[i], names[i], strlen(names[i]), 0644);
		const char *n = names[SW_ARRAY_SIZE(names) - 1 - i];
		put_file(b, n, n, strlen(n), 0644);
	}
	put_dir(a, "d", 0755);
	put_file(a, "d/x", "x", 1, 0644);
	put_dir(b, "d", 0755);
	put_file(b, "d/x", "x", 1, 0644);

	for (int comp = SW_OCI_COMPRESS_GZIP; comp <= SW_OCI_COMPRESS_NONE; comp++) {
		sw_oci_layer_opts opts = { .compression = comp, .source_date_epoch = 1000000000 };
		/* mtimes now, after the epoch: all clamped to it */
		sw_oci_layer_info ia, ia2, ib;
		CHECK_OK(sw_oci_layer_write_dir(&ia, f->store, a, &opts, &check_err_));
		CHECK_OK(sw_oci_layer_write_dir(&ia2, f->store, a, &opts, &check_err_));
		CHECK_OK(sw_oci_layer_write_dir(&ib, f->store, b, &opts, &check_err_));
		assert_string_equal(ia.diff_id.s, ia2.diff_id.s);
		assert_string_equal(ia.blob_digest.s, ia2.blob_digest.s);
		assert_string_equal(ia.diff_id.s, ib.diff_id.s);
		assert_string_equal(ia.blob_digest.s, ib.blob_digest.s);
		/* touching mtimes (still after the epoch) changes nothing */
		set_mtime(a, "zeta", time(NULL) + 100);
		set_mtime(a, "d", time(NULL) + 200);
		CHECK_OK(sw_oci_layer_write_dir(&ia2, f->store, a, &opts, &check_err_));
		assert_string_equal(ia.diff_id.s, ia2.diff_id.s);
		assert_string_equal(ia.blob_digest.s, ia2.blob_digest.s);
		/* without clamping the mtimes are in the layer and differ */
		opts.source_date_epoch = -1;
		sw_oci_layer_info na, nb;
		CHECK_OK(sw_oci_layer_write_dir(&na, f->store, a, &opts, &check_err_));
		set_mtime(a, "zeta", 1500000000);
		CHECK_OK(sw_oci_layer_write_dir(&nb, f->store, a, &opts, &check_err_));
		assert_string_not_equal(na.diff_id.s, nb.diff_id.s);
		assert_string_not_equal(na.blob_digest.s, nb.blob_digest.s);
		cleanup_free char *list = blob_list(f, &ia);
		assert_string_equal(list, "0num f 0644 4\n"
		                          "Mid f 0644 3\n"
		                          "alpha f 0644 5\n"
		                          "b-dash f 0644 6\n"
		                          "b.dot f 0644 5\n"
		                          "b_under f 0644 7\n"
		                          "d/ d 0755 0\n"
		                          "d/x f 0644 1\n"
		                          "zeta f 0644 4\n");
	}

	/* the gzip header: no name, no comment, MTIME 0 */
	sw_oci_layer_opts gz = { .compression = SW_OCI_COMPRESS_GZIP, .source_date_epoch = -1 };
	sw_oci_layer_info info;
	CHECK_OK(sw_oci_layer_write_dir(&info, f->store, a, &gz, &check_err_));
	cleanup_free char *blob = NULL;
	size_t len = 0;
	CHECK_OK(sw_oci_store_read_blob(&blob, &len, f->store, &info.blob_digest, 1 << 20,
	                                &check_err_));
	assert_true(len > 10);
	const unsigned char want[8] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0 };
	assert_memory_equal(blob, want, sizeof(want));
	/* zstd frame magic */
	sw_oci_layer_opts zs = { .compression = SW_OCI_COMPRESS_ZSTD, .source_date_epoch = -1 };
	CHECK_OK(sw_oci_layer_write_dir(&info, f->store, a, &zs, &check_err_));
	free(blob);
	blob = NULL;
	CHECK_OK(sw_oci_store_read_blob(&blob, &len, f->store, &info.blob_digest, 1 << 20,
	                                &check_err_));
	const unsigned char zmagic[4] = { 0x28, 0xb5, 0x2f, 0xfd };
	assert_memory_equal(blob, zmagic, sizeof(zmagic));
}

/* The compressed bytes must not depend on how many threads compressed them. */
static void test_oci__layer_deterministic_threads(void **state)
{
	fixture *f = *state;
	cleanup_free char *a = P(f, "a");
	assert_int_equal(mkdir(a, 0755), 0);
	/* a few MiB of mixed content: many compression blocks */
	size_t len = (size_t)3 << 20;
	cleanup_free char *data = sw_xmalloc(len);
	uint32_t x = 99;
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		data[i] = (char)((i / 1000) % 3 ? 'a' + (x >> 16) % 8 : (x >> 24));
	}
	put_file(a, "one", data, len, 0644);
	put_file(a, "two", data + 12345, len / 3, 0644);
	cpu_set_t all, one;
	assert_int_equal(sched_getaffinity(0, sizeof(all), &all), 0);
	for (int comp = SW_OCI_COMPRESS_GZIP; comp <= SW_OCI_COMPRESS_ZSTD; comp++) {
		sw_oci_layer_opts opts = { .compression = comp, .source_date_epoch = 0 };
		sw_oci_layer_info many, single;
		CHECK_OK(sw_oci_layer_write_dir(&many, f->store, a, &opts, &check_err_));
		CPU_ZERO(&one);
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &all)) {
				CPU_SET(c, &one);
				break;
			}
		assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
		CHECK_OK(sw_oci_layer_write_dir(&single, f->store, a, &opts, &check_err_));
		assert_int_equal(sched_setaffinity(0, sizeof(all), &all), 0);
		assert_string_equal(many.diff_id.s, single.diff_id.s);
		assert_string_equal(many.blob_digest.s, single.blob_digest.s);
		cleanup_free char *list = blob_list(f, &single);
		assert_string_equal(list, "one f 0644 3145728\ntwo f 0644 1048576\n");
	}
}

static void test_oci__layer_bad_options(void **state)
{
	fixture *f = *state;
	cleanup_free char *a = P(f, "a");
	assert_int_equal(mkdir(a, 0755), 0);
	sw_oci_layer_opts opts = { .compression = SW_OCI_COMPRESS_GZIP,
		                   .level = 12,
		                   .source_date_epoch = -1 };
	sw_oci_layer_info info;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_layer_write_dir(&info, f->store, a, &opts, &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), "gzip level 12"));
	sw_error_clear(&err);
	cleanup_free char *missing = P(f, "missing");
	assert_true(sw_oci_layer_write_dir(&info, f->store, missing, NULL, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), missing));
	sw_error_free(err);
}

static void test_oci__layer_overlay_upper(void **state)
{
	fixture *f = *state;
	if (geteuid() != 0)
		skip();
	cleanup_free char *up = P(f, "upper");
	assert_int_equal(mkdir(up, 0755), 0);
	cleanup_free char *gone = sw_path_join(up, "gone");
	if (mknod(gone, S_IFCHR, makedev(0, 0)) < 0)
		skip();
	put_file(up, "+plus", "p", 1, 0644);
	put_file(up, "keep", "k", 1, 0644);
	put_dir(up, "opq", 0755);
	put_file(up, "opq/new", "n", 1, 0644);
	cleanup_free char *opq = sw_path_join(up, "opq");
	if (setxattr(opq, "trusted.overlay.opaque", "y", 1, 0) < 0)
		skip();
	put_dir(up, "uopq", 0755);
	cleanup_free char *uopq = sw_path_join(up, "uopq");
	assert_int_equal(setxattr(uopq, "user.overlay.opaque", "y", 1, 0), 0);
	put_dir(up, "sub", 0755);
	cleanup_free char *subx = sw_path_join(up, "sub/x");
	assert_int_equal(mknod(subx, S_IFCHR, makedev(0, 0)), 0);
	put_file(up, "sub/+a", "a", 1, 0644);
	/* a char device that is not 0/0 stays a device */
	cleanup_free char *null = sw_path_join(up, "sub/null");
	assert_int_equal(mknod(null, S_IFCHR | 0666, makedev(1, 3)), 0);
	assert_int_equal(chmod(null, 0666), 0);
	/* a folder with opaque "n" is not opaque */
	put_dir(up, "notopq", 0755);
	cleanup_free char *notopq = sw_path_join(up, "notopq");
	assert_int_equal(setxattr(notopq, "trusted.overlay.opaque", "n", 1, 0), 0);

	sw_oci_layer_opts opts = { .compression = SW_OCI_COMPRESS_ZSTD,
		                   .overlay_upper = true,
		                   .source_date_epoch = -1 };
	sw_oci_layer_info info;
	CHECK_OK(sw_oci_layer_write_dir(&info, f->store, up, &opts, &check_err_));
	cleanup_free char *list = blob_list(f, &info);
	assert_string_equal(list, ".wh.gone f 0000 0\n"
	                          "+plus f 0644 1\n"
	                          "keep f 0644 1\n"
	                          "notopq/ d 0755 0\n"
	                          "opq/ d 0755 0\n"
	                          "opq/.wh..wh..opq f 0000 0\n"
	                          "opq/new f 0644 1\n"
	                          "sub/ d 0755 0\n"
	                          "sub/.wh.x f 0000 0\n"
	                          "sub/+a f 0644 1\n"
	                          "sub/null c 0666 0\n"
	                          "uopq/ d 0755 0\n"
	                          "uopq/.wh..wh..opq f 0000 0\n");

	/* the same folder as a plain tree: devices stay devices, no markers, and the overlay
	 * xattrs are not copied */
	opts.overlay_upper = false;
	CHECK_OK(sw_oci_layer_write_dir(&info, f->store, up, &opts, &check_err_));
	cleanup_free char *plain = blob_list(f, &info);
	assert_non_null(strstr(plain, "gone c 0000 0\n"));
	assert_non_null(strstr(plain, "opq/ d 0755 0\nopq/new f 0644 1\n"));
	assert_null(strstr(plain, ".wh."));
	assert_null(strstr(plain, "overlay"));

	/* an opaque root gets its marker first */
	assert_int_equal(setxattr(up, "trusted.overlay.opaque", "y", 1, 0), 0);
	opts.overlay_upper = true;
	CHECK_OK(sw_oci_layer_write_dir(&info, f->store, up, &opts, &check_err_));
	cleanup_free char *rooted = blob_list(f, &info);
	assert_true(strncmp(rooted, ".wh..wh..opq f 0000 0\n.wh.gone f 0000 0\n", 39) == 0);
}

static const tentry whiteout_layer[] = {
	{ 'f', ".wh.a", "", 0, 0 },          { 'f', "b/.wh.y", "", 0, 0 },
	{ 'd', "d/", NULL, 0, 0755 },        { 'f', "d/new1", "one", -1, 0 },
	{ 'd', "d/sub/", NULL, 0, 0755 },    { 'f', "d/sub/n", "n", -1, 0 },
	{ 'f', "d/.wh..wh..opq", "", 0, 0 }, { 'f', "d/new2", "two", -1, 0 },
	{ 'f', ".wh.missing", "", 0, 0 },    { 'f', "e/.wh..wh..opq", "", 0, 0 },
};

static void make_lower(const char *root)
{
	put_file(root, "a", "a", 1, 0644);
	put_dir(root, "b", 0755);
	put_file(root, "b/x", "x", 1, 0644);
	put_dir(root, "b/y", 0755);
	put_file(root, "b/y/z", "z", 1, 0644);
	put_dir(root, "d", 0700);
	put_file(root, "d/old1", "o", 1, 0644);
	put_dir(root, "d/old2", 0755);
	put_file(root, "d/old2/deep", "o", 1, 0644);
	put_dir(root, "d/sub", 0755);
	put_file(root, "d/sub/lower", "l", 1, 0644);
	put_file(root, "keep", "k", 1, 0644);
	put_dir(root, "e", 0755);
	put_file(root, "e/gone", "g", 1, 0644);
}

static void test_oci__layer_whiteouts(void **state)
{
	fixture *f = *state;
	cleanup_free char *root = P(f, "root");
	assert_int_equal(mkdir(root, 0755), 0);
	make_lower(root);
	size_t len = 0;
	cleanup_free char *layer =
	        layer_build(&len, "gzip", whiteout_layer, SW_ARRAY_SIZE(whiteout_layer));
	sw_oci_apply_stats st;
	CHECK_OK(sw_oci_layer_apply_mem(&st, root, layer, len, NULL, &check_err_));
	assert_int_equal(st.entries, SW_ARRAY_SIZE(whiteout_layer));
	assert_int_equal(st.whiteouts, 5);
	cleanup_free char *tree = dump_tree(root, NULL);
	/* drop the mtimes of folders we did not set: keep only path, type and mode */
	sw_buf short_tree = SW_BUF_INIT(0);
	sw_error *err = NULL;
	for (char *line = strtok(tree, "\n"); line; line = strtok(NULL, "\n")) {
		char *sp = strchr(line, ' ');
		sp = strchr(sp + 1, ' ');
		assert_int_equal(sw_buf_append(&short_tree, line, (size_t)(sp - line), &err), 0);
		assert_int_equal(sw_buf_puts(&short_tree, "\n", &err), 0);
	}
	assert_string_equal(short_tree.data, "b d\n"
	                                     "b/x f\n"
	                                     "d d\n"
	                                     "d/new1 f\n"
	                                     "d/new2 f\n"
	                                     "d/sub d\n"
	                                     "d/sub/n f\n"
	                                     "e d\n"
	                                     "keep f\n");
	sw_buf_free(&short_tree);
	/* the folder entry's mode wins over the lower one */
	cleanup_free char *d = sw_path_join(root, "d");
	struct stat sb;
	assert_int_equal(stat(d, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0755);
	assert_int_equal(sb.st_mtime, 1000000000);

	/* as overlay whiteouts (devices and the opaque xattr) */
	if (geteuid() != 0)
		skip();
	cleanup_free char *ov = P(f, "ov");
	assert_int_equal(mkdir(ov, 0755), 0);
	sw_oci_apply_opts opts = { .whiteouts_as_devices = true };
	CHECK_OK(sw_oci_layer_apply_mem(&st, ov, layer, len, &opts, &check_err_));
	cleanup_free char *a = sw_path_join(ov, "a");
	assert_int_equal(lstat(a, &sb), 0);
	assert_true(S_ISCHR(sb.st_mode));
	assert_int_equal(sb.st_rdev, makedev(0, 0));
	cleanup_free char *y = sw_path_join(ov, "b/y");
	assert_int_equal(lstat(y, &sb), 0);
	assert_true(S_ISCHR(sb.st_mode));
	cleanup_free char *dv = sw_path_join(ov, "d");
	char v[4];
	assert_int_equal(getxattr(dv, "trusted.overlay.opaque", v, sizeof(v)), 1);
	assert_int_equal(v[0], 'y');
	cleanup_free char *n1 = sw_path_join(ov, "d/new1");
	assert_int_equal(access(n1, F_OK), 0);
}

static void test_oci__layer_replace(void **state)
{
	fixture *f = *state;
	cleanup_free char *root = P(f, "root");
	assert_int_equal(mkdir(root, 0755), 0);
	put_file(root, "f", "old", 3, 0644);
	put_dir(root, "d", 0700);
	put_file(root, "d/keep", "k", 1, 0644);
	put_dir(root, "x", 0755);
	put_file(root, "x/y", "y", 1, 0644);
	put_file(f->tmp, "outside", "outside", 7, 0644);
	cleanup_free char *s = sw_path_join(root, "s");
	cleanup_free char *outside = P(f, "outside");
	assert_int_equal(symlink(outside, s), 0);
	cleanup_free char *hl = sw_path_join(root, "hl");
	cleanup_free char *fpath = sw_path_join(root, "f");
	assert_int_equal(link(fpath, hl), 0);

	const tentry entries[] = {
		{ 'd', "d", NULL, 0, 0751 },          /* folder over folder: kept, mode updated */
		{ 'f', "x", "now a file", -1, 0600 }, /* file over folder */
		{ 'd', "f/", NULL, 0, 0755 },         /* folder over file */
		{ 'f', "f/inner", "i", -1, 0 },
		{ 'f', "s", "replaced", -1, 0 }, /* file over symlink: not through it */
		{ 'f', "hl", "new", -1, 0 },     /* file over a hard link: link broken */
		{ 'f', "g", "first", -1, 0 },
		{ 'f', "g", "second", -1, 04711 }, /* a later duplicate wins */
		{ 'l', "x2", "x", 0, 0 },
		{ 'h', "g2", "g", 0, 0 },
		{ 'p', "fifo", NULL, 0, 0 },
	};
	size_t len = 0;
	cleanup_free char *layer = layer_build(&len, "zstd", entries, SW_ARRAY_SIZE(entries));
	CHECK_OK(sw_oci_layer_apply_mem(NULL, root, layer, len, NULL, &check_err_));
	cleanup_free char *dump = dump_tree(root, NULL);
	struct stat st;
	cleanup_free char *d = sw_path_join(root, "d");
	assert_int_equal(lstat(d, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0751);
	cleanup_free char *keep = sw_path_join(root, "d/keep");
	assert_int_equal(access(keep, F_OK), 0);
	cleanup_free char *x = sw_path_join(root, "x");
	assert_int_equal(lstat(x, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(lstat(fpath, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(lstat(s, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	cleanup_free char *content = NULL;
	size_t clen = 0;
	CHECK_OK(sw_fs_read_file(&content, &clen, outside, 100, &check_err_));
	assert_string_equal(content, "outside");
	free(content);
	content = NULL;
	CHECK_OK(sw_fs_read_file(&content, &clen, hl, 100, &check_err_));
	assert_string_equal(content, "new");
	free(content);
	content = NULL;
	cleanup_free char *g = sw_path_join(root, "g");
	CHECK_OK(sw_fs_read_file(&content, &clen, g, 100, &check_err_));
	assert_string_equal(content, "second");
	assert_int_equal(lstat(g, &st), 0);
	assert_int_equal(st.st_mode & 07777, 04711);
	assert_int_equal(st.st_nlink, 2);
	assert_int_equal(st.st_mtime, 1000000000);
	assert_non_null(strstr(dump, "x2 l 0777"));
	assert_non_null(strstr(dump, "fifo p 0644"));
}

typedef struct hostile_case {
	const char *what;
	tentry entries[12];
	size_t n;
	const char *bad;        /* the entry the error must name */
	const char *in_message; /* more text the message must have, or NULL */
	sw_oci_apply_opts opts;
	bool lower_link; /* plant root/lower -> the temp folder first */
} hostile_case;

static void run_hostile(fixture *f, const hostile_case *hc)
{
	cleanup_free char *outer = P(f, "outer");
	cleanup_free char *root = P(f, "outer/root");
	assert_int_equal(mkdir(outer, 0755), 0);
	assert_int_equal(mkdir(root, 0755), 0);
	put_file(f->tmp, "secret", "secret", 6, 0600);
	if (hc->lower_link) {
		cleanup_free char *l = sw_path_join(root, "lower");
		assert_int_equal(symlink(f->tmp, l), 0);
	}
	/* let the mtimes of the folders outside settle: a change shows as a new mtime */
	struct timespec ts[2] = { { 1, 0 }, { 1, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, outer, ts, 0), 0);
	cleanup_free char *before = dump_tree(f->tmp, "outer/root");

	/* names may carry the temp folder's path: %s is replaced by it (without the leading /) */
	tentry entries[12];
	char *owned[12];
	for (size_t i = 0; i < hc->n; i++) {
		entries[i] = hc->entries[i];
		owned[i] = NULL;
		if (strstr(entries[i].name, "%s")) {
			owned[i] = sw_xstrdup(entries[i].name);
			char *at = strstr(owned[i], "%s");
			char *full = sw_xasprintf("%.*s%s%s", (int)(at - owned[i]), owned[i],
			                          f->tmp + 1, at + 2);
			free(owned[i]);
			owned[i] = full;
			entries[i].name = owned[i];
		}
	}
	cleanup_free char *target_abs = NULL;
	for (size_t i = 0; i < hc->n; i++)
		if (entries[i].target && strcmp(entries[i].target, "@tmp") == 0) {
			target_abs = sw_xstrdup(f->tmp);
			entries[i].target = target_abs;
		}
	size_t len = 0;
	cleanup_free char *layer = layer_build(&len, NULL, entries, hc->n);
	cleanup_free char *bad = NULL;
	if (strstr(hc->bad, "%s"))
		bad = sw_xasprintf("%.*s%s%s", (int)(strstr(hc->bad, "%s") - hc->bad), hc->bad,
		                   f->tmp + 1, strstr(hc->bad, "%s") + 2);
	else
		bad = sw_xstrdup(hc->bad);
	for (size_t i = 0; i < hc->n; i++)
		free(owned[i]);

	sw_error *err = NULL;
	int r = sw_oci_layer_apply_mem(NULL, root, layer, len, &hc->opts, &err);
	if (r != SW_ERR_INVALID)
		fail_msg("%s: expected SW_ERR_INVALID, got %d (%s)", hc->what, r,
		         err ? sw_error_msg(err) : "no error");
	cleanup_free char *quoted = sw_xasprintf("'%s'", bad);
	if (!strstr(sw_error_msg(err), quoted))
		fail_msg("%s: the error does not name %s: %s", hc->what, quoted, sw_error_msg(err));
	if (hc->in_message && !strstr(sw_error_msg(err), hc->in_message))
		fail_msg("%s: the error does not say '%s': %s", hc->what, hc->in_message,
		         sw_error_msg(err));
	sw_error_free(err);
	cleanup_free char *after = dump_tree(f->tmp, "outer/root");
	if (strcmp(before, after) != 0)
		fail_msg("%s: something changed outside the target folder:\n--- before\n%s--- "
		         "after\n%s",
		         hc->what, before, after);
	CHECK_OK(sw_fs_rm_rf(outer, &check_err_));
	cleanup_free char *secret = P(f, "secret");
	assert_int_equal(unlink(secret), 0);
}

static void test_oci__layer_hostile(void **state)
{
	fixture *f = *state;
	const hostile_case cases[] = {
		{ "dotdot",
		  { { 'f', "../evil", "evil", -1, 0 } },
		  1,
		  "../evil",
		  "'..'",
		  { 0 },
		  false },
		{ "dotdot deeper",
		  { { 'd', "a/", NULL, 0, 0 }, { 'f', "a/../../evil", "evil", -1, 0 } },
		  2,
		  "a/../../evil",
		  "'..'",
		  { 0 },
		  false },
		{ "absolute",
		  { { 'f', "/abs/evil", "evil", -1, 0 } },
		  1,
		  "/abs/evil",
		  "absolute",
		  { 0 },
		  false },
		{ "absolute into the temp folder",
		  { { 'f', "/%s/outer/evil", "evil", -1, 0 } },
		  1,
		  "/%s/outer/evil",
		  "absolute",
		  { 0 },
		  false },
		{ "symlink to / then through it",
		  { { 'l', "l", "/", 0, 0 }, { 'f', "l/%s/outer/evil", "evil", -1, 0 } },
		  2,
		  "l/%s/outer/evil",
		  "symlink",
		  { 0 },
		  false },
		{ "symlink to ../../ then through it",
		  { { 'l', "l", "../../", 0, 0 }, { 'f', "l/evil", "evil", -1, 0 } },
		  2,
		  "l/evil",
		  "symlink",
		  { 0 },
		  false },
		{ "folder through a symlink",
		  { { 'l', "l", "../../", 0, 0 }, { 'd', "l/newdir/", NULL, 0, 0 } },
		  2,
		  "l/newdir/",
		  "symlink",
		  { 0 },
		  false },
		{ "symlink from a lower layer",
		  { { 'f', "lower/evil", "evil", -1, 0 } },
		  1,
		  "lower/evil",
		  "symlink",
		  { 0 },
		  true },
		{ "symlink deeper in the path",
		  { { 'd', "a/", NULL, 0, 0 },
		    { 'l', "a/l", "../../..", 0, 0 },
		    { 'f', "a/l/outer/evil", "evil", -1, 0 } },
		  3,
		  "a/l/outer/evil",
		  "symlink",
		  { 0 },
		  false },
		{ "hard link to ../../etc/passwd",
		  { { 'h', "x", "../../etc/passwd", 0, 0 } },
		  1,
		  "x",
		  "'..'",
		  { 0 },
		  false },
		{ "hard link to an absolute path",
		  { { 'h', "x", "/etc/passwd", 0, 0 } },
		  1,
		  "x",
		  "absolute",
		  { 0 },
		  false },
		{ "hard link through a symlink",
		  { { 'l', "l", "@tmp", 0, 0 }, { 'h', "x", "l/secret", 0, 0 } },
		  2,
		  "x",
		  "symlink",
		  { 0 },
		  false },
		{ "hard link through a lower symlink",
		  { { 'h', "x", "lower/secret", 0, 0 } },
		  1,
		  "x",
		  "symlink",
		  { 0 },
		  true },
		{ "whiteout through a symlink",
		  { { 'l', "l", "@tmp", 0, 0 }, { 'f', "l/.wh.secret", "", 0, 0 } },
		  2,
		  "l/.wh.secret",
		  "symlink",
		  { 0 },
		  false },
		{ "opaque marker through a symlink",
		  { { 'f', "lower/.wh..wh..opq", "", 0, 0 } },
		  1,
		  "lower/.wh..wh..opq",
		  "symlink",
		  { 0 },
		  true },
		{ "whiteout of ..",
		  { { 'f', ".wh..", "", 0, 0 } },
		  1,
		  ".wh..",
		  "whiteout",
		  { 0 },
		  false },
		{ "entry over the limit",
		  { { 'f', "small", "ok", -1, 0 }, { 'f', "big", NULL, 4096, 0 } },
		  2,
		  "big",
		  "limit",
		  { .max_entry_bytes = 1024 },
		  false },
		{ "too many entries",
		  { { 'f', "f0", "", 0, 0 },
		    { 'f', "f1", "", 0, 0 },
		    { 'f', "f2", "", 0, 0 },
		    { 'f', "f3", "", 0, 0 },
		    { 'f', "f4", "", 0, 0 },
		    { 'f', "f5", "", 0, 0 },
		    { 'f', "f6", "", 0, 0 } },
		  7,
		  "f5",
		  "more than 5 entries",
		  { .max_entries = 5 },
		  false },
		{ "total over the limit",
		  { { 'f', "t0", NULL, 400, 0 },
		    { 'f', "t1", NULL, 400, 0 },
		    { 'f', "t2", NULL, 400, 0 } },
		  3,
		  "t2",
		  "limit of 1000 bytes",
		  { .max_total_bytes = 1000 },
		  false },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(cases); i++)
		run_hostile(f, &cases[i]);

	/* the refusals happen before anything is written for the entry */
	cleanup_free char *root = P(f, "root");
	assert_int_equal(mkdir(root, 0755), 0);
	const tentry big[] = { { 'f', "big", NULL, 4096, 0 } };
	size_t len = 0;
	cleanup_free char *layer = layer_build(&len, NULL, big, 1);
	sw_oci_apply_opts opts = { .max_entry_bytes = 1024 };
	sw_error *err = NULL;
	assert_int_equal(sw_oci_layer_apply_mem(NULL, root, layer, len, &opts, &err),
	                 SW_ERR_INVALID);
	sw_error_free(err);
	cleanup_free char *bigp = sw_path_join(root, "big");
	assert_int_equal(access(bigp, F_OK), -1);

	/* a symlink pointing out is fine by itself; its text is kept verbatim */
	const tentry ok[] = { { 'l', "l", "/", 0, 0 }, { 'l', "m", "../../..", 0, 0 } };
	free(layer);
	layer = layer_build(&len, NULL, ok, 2);
	CHECK_OK(sw_oci_layer_apply_mem(NULL, root, layer, len, NULL, &check_err_));
	char t[16];
	cleanup_free char *m = sw_path_join(root, "m");
	assert_int_equal(readlink(m, t, sizeof(t)), 8);
	assert_memory_equal(t, "../../..", 8);
}

static void test_oci__layer_garbage(void **state)
{
	fixture *f = *state;
	cleanup_free char *root = P(f, "root");
	assert_int_equal(mkdir(root, 0755), 0);
	const char junk[] = "this is not a tar archive at all, not even close to one.......";
	sw_error *err = NULL;
	assert_int_equal(sw_oci_layer_apply_mem(NULL, root, junk, sizeof(junk), NULL, &err),
	                 SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), root));
	sw_error_clear(&err);
	/* a truncated gzip layer, cut in the middle of a file's data */
	size_t dl = 64 << 10;
	cleanup_free char *data = sw_xmalloc(dl + 1);
	uint32_t x = 7;
	for (size_t i = 0; i < dl; i++) {
		x = x * 1103515245u + 12345u;
		data[i] = (char)('a' + (x >> 16) % 26);
	}
	data[dl] = '\0';
	const tentry entries[] = { { 'f', "a", data, -1, 0 }, { 'f', "b", "b", -1, 0 } };
	size_t len = 0;
	cleanup_free char *layer = layer_build(&len, "gzip", entries, 2);
	assert_true(sw_oci_layer_apply_mem(NULL, root, layer, len / 2, NULL, &err) < 0);
	sw_error_clear(&err);
	/* an empty input is an empty layer */
	sw_oci_apply_stats st;
	CHECK_OK(sw_oci_layer_apply_mem(&st, root, "", 0, NULL, &check_err_));
	assert_int_equal(st.entries, 0);
	/* a missing target folder */
	cleanup_free char *missing = P(f, "missing");
	assert_true(sw_oci_layer_apply_mem(NULL, missing, layer, len, NULL, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), missing));
	sw_error_free(err);
}

static void test_oci__layer_compressed_apply(void **state)
{
	fixture *f = *state;
	const char *filters[] = { "gzip", "zstd", "xz", NULL };
	const tentry entries[] = {
		{ 'd', "./etc/", NULL, 0, 0755 },
		{ 'f', "./etc/hostname", "box\n", -1, 0644 },
		{ 'l', "etc/alias", "hostname", 0, 0 },
		{ 'h', "./etc/hostname2", "./etc/hostname", 0, 0 },
		{ 'f', "./usr/share/deep/file", "implicit parents", -1, 0600 },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(filters); i++) {
		cleanup_free char *root = sw_xasprintf("%s/root%zu", f->tmp, i);
		assert_int_equal(mkdir(root, 0755), 0);
		size_t len = 0;
		cleanup_free char *layer =
		        layer_build(&len, filters[i], entries, SW_ARRAY_SIZE(entries));
		/* through a file descriptor too */
		cleanup_free char *lp = sw_xasprintf("%s/layer%zu", f->tmp, i);
		put_file(f->tmp, strrchr(lp, '/') + 1, layer, len, 0644);
		int fd = open(lp, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		sw_oci_apply_stats st;
		CHECK_OK(sw_oci_layer_apply_fd(&st, root, fd, NULL, &check_err_));
		close(fd);
		assert_int_equal(st.entries, 5);
		assert_int_equal(st.bytes, 4 + 16);
		cleanup_free char *dump = dump_tree(root, NULL);
		assert_non_null(strstr(dump, "etc d 0755"));
		assert_non_null(strstr(dump, "etc/alias l 0777 "));
		assert_non_null(strstr(dump, " -> hostname\n"));
		assert_non_null(strstr(dump, "etc/hostname f 0644 "));
		assert_non_null(strstr(dump, " mtime=1000000000 size=4 "));
		assert_non_null(strstr(dump, "links=etc/hostname"));
		assert_non_null(strstr(dump, "usr d 0755"));
		assert_non_null(strstr(dump, "usr/share/deep/file f 0600"));
	}
}

static void test_oci__layer_write_tar(void **state)
{
	fixture *f = *state;
	const tentry entries[] = {
		{ 'd', "./", NULL, 0, 0755 },
		{ 'd', "./etc/", NULL, 0, 0755 },
		{ 'f', "./etc/hosts", "127.0.0.1 localhost\n", -1, 0644 },
		{ 'f', "bin//sh", "#!", -1, 0755 },
		{ 'l', "./etc/alias", "hosts", 0, 0 },
		{ 'h', "./etc/hosts2", "./etc/hosts", 0, 0 },
		{ 'p', "./run/fifo", NULL, 0, 0 },
	};
	const char *filters[] = { "xz", "gzip", NULL };
	for (size_t i = 0; i < SW_ARRAY_SIZE(filters); i++) {
		size_t len = 0;
		cleanup_free char *tar =
		        layer_build(&len, filters[i], entries, SW_ARRAY_SIZE(entries));
		put_file(f->tmp, "in.tar", tar, len, 0644);
		cleanup_free char *tp = P(f, "in.tar");
		sw_oci_layer_opts opts = { .compression = SW_OCI_COMPRESS_GZIP,
			                   .source_date_epoch = 999 };
		sw_oci_layer_info info;
		CHECK_OK(sw_oci_layer_write_tar(&info, f->store, tp, &opts, &check_err_));
		assert_int_equal(info.entries, 6);
		assert_string_equal(info.media_type, SW_OCI_MT_LAYER_GZIP);
		cleanup_free char *list = blob_list(f, &info);
		assert_string_equal(list, "etc/ d 0755 0\n"
		                          "etc/hosts f 0644 20\n"
		                          "bin/sh f 0755 2\n"
		                          "etc/alias l 0777 0\n"
		                          "etc/hosts2 h 0644 0 -> etc/hosts\n"
		                          "run/fifo p 0644 0\n");
		cleanup_free char *root = sw_xasprintf("%s/root%zu", f->tmp, i);
		assert_int_equal(mkdir(root, 0755), 0);
		apply_blob(f, &info, root, NULL, NULL);
		cleanup_free char *hosts = sw_path_join(root, "etc/hosts");
		struct stat st;
		assert_int_equal(stat(hosts, &st), 0);
		assert_int_equal(st.st_mtime, 999); /* clamped */
		assert_int_equal(st.st_nlink, 2);
	}

	const char *bad[] = { "../x", "/etc/x", "a/../../x" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(bad); i++) {
		const tentry e[] = { { 'f', "ok", "ok", -1, 0 }, { 'f', bad[i], "x", -1, 0 } };
		size_t len = 0;
		cleanup_free char *tar = layer_build(&len, "gzip", e, 2);
		put_file(f->tmp, "bad.tar", tar, len, 0644);
		cleanup_free char *tp = P(f, "bad.tar");
		sw_error *err = NULL;
		sw_oci_layer_info info;
		assert_int_equal(sw_oci_layer_write_tar(&info, f->store, tp, NULL, &err),
		                 SW_ERR_INVALID);
		cleanup_free char *quoted = sw_xasprintf("'%s'", bad[i]);
		assert_non_null(strstr(sw_error_msg(err), quoted));
		sw_error_free(err);
	}
	const tentry hl[] = { { 'f', "ok", "ok", -1, 0 }, { 'h', "x", "../../etc/passwd", 0, 0 } };
	size_t len = 0;
	cleanup_free char *tar = layer_build(&len, NULL, hl, 2);
	put_file(f->tmp, "bad.tar", tar, len, 0644);
	cleanup_free char *tp = P(f, "bad.tar");
	sw_error *err = NULL;
	sw_oci_layer_info info;
	assert_int_equal(sw_oci_layer_write_tar(&info, f->store, tp, NULL, &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), "'x'"));
	sw_error_clear(&err);
	cleanup_free char *missing = P(f, "missing.tar");
	assert_true(sw_oci_layer_write_tar(&info, f->store, missing, NULL, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), missing));
	sw_error_free(err);
}

int test_oci_layer_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_oci__layer_roundtrip_every_kind, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_oci__layer_deterministic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__layer_deterministic_threads, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_oci__layer_bad_options, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__layer_overlay_upper, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__layer_whiteouts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__layer_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__layer_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__layer_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__layer_compressed_apply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oci__layer_write_tar, setup, teardown),
	};
	return cmocka_run_group_tests_name("oci_layer", tests, NULL, NULL);
}
