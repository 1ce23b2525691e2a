/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layer writer: a folder (or an overlayfs upper folder) or an existing tarball becomes a pax tar
 * layer in the content store in one streaming pass. libarchive writes the tar into a callback
 * that hashes it (the diff_id), compresses it itself (zlib with a fixed gzip header, or libzstd)
 * and streams the result into the store's blob writer, which yields the blob digest. The output
 * is deterministic: entries sorted bytewise per folder (a folder before its content, whiteouts
 * before their siblings), numeric owners only, no atime/ctime, mtimes in whole seconds and
 * optionally clamped to SOURCE_DATE_EPOCH, gzip header without name or time.
 */
#include "oci/oci_internal.h"

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
#include <zlib.h>
#include <zstd.h>

#define OPAQUE_MARKER ".wh..wh..opq"
#define WHITEOUT_PREFIX ".wh."

/* ---------------------------------------------------------------- shared helpers */

int sw_oci__layer_path_clean(char **out, const char *name, const char *what, sw_error **err)
{
	*out = NULL;
	if (!name || !*name)
		return sw_error_set(err, SW_ERR_INVALID, "%s with an empty name", what);
	if (name[0] == '/')
		return sw_error_set(err, SW_ERR_INVALID, "%s '%s': absolute paths are refused",
		                    what, name);
	size_t n = strlen(name);
	char *res = sw_xmalloc(n + 1);
	size_t len = 0;
	const char *p = name;
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t cl = slash ? (size_t)(slash - p) : strlen(p);
		if (cl == 2 && p[0] == '.' && p[1] == '.') {
			free(res);
			return sw_error_set(err, SW_ERR_INVALID,
			                    "%s '%s': '..' components are refused", what, name);
		}
		if (cl > 0 && !(cl == 1 && p[0] == '.')) {
			if (len)
				res[len++] = '/';
			memcpy(res + len, p, cl);
			len += cl;
		}
		p += cl;
		if (*p == '/')
			p++;
	}
	res[len] = '\0';
	*out = res;
	return 0;
}

bool sw_oci__layer_xattr_keep(const char *name)
{
	if (strncmp(name, "trusted.overlay.", 16) == 0 || strncmp(name, "user.overlay.", 13) == 0)
		return false;
	if (strncmp(name, "security.", 9) == 0)
		return strcmp(name, "security.capability") == 0;
	if (strncmp(name, "system.", 7) == 0)
		return false;
	return true;
}

struct archive *sw_oci__layer_reader_new(void)
{
	struct archive *a = archive_read_new();
	if (!a)
		abort();
	/* Only the decompressors built into libarchive (Debian links them all); never
	 * archive_read_support_filter_all, which may run external programs such as lrzip. */
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_filter_xz(a);
	archive_read_support_filter_bzip2(a);
	archive_read_support_filter_lz4(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_empty(a);
	return a;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
	c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
	if (!c_locale)
		abort();
}

locale_t sw_oci__c_locale(void)
{
	pthread_once(&c_locale_once, c_locale_init);
	return c_locale;
}

/* ---------------------------------------------------------------- parallel gzip */

/*
 * gzip in the manner of pigz: the tar is cut into GZ_BLOCK blocks, each deflated on its own
 * (raw deflate primed with the previous GZ_DICT bytes as dictionary, ended with a sync flush;
 * the last one finishes the stream), by worker threads when there is more than one CPU. The
 * concatenation is a single deflate stream inside one gzip member whose header has no name and
 * MTIME 0. The bytes depend only on the input, the level and zlib, never on how many threads
 * ran, so equal trees give equal blobs on any machine with the same zlib.
 */
#define GZ_BLOCK ((size_t)256 << 10)
#define GZ_DICT ((size_t)32 << 10)
#define GZ_MAX_WORKERS 8

enum { SLOT_FREE = 0, SLOT_FILLING, SLOT_READY, SLOT_BUSY, SLOT_DONE };

typedef struct gz_slot {
	unsigned char *in; /* GZ_DICT bytes of dictionary space, then the block */
	size_t dict_len;
	size_t in_len;
	unsigned char *out;
	size_t out_cap;
	size_t out_len;
	uLong crc;
	bool last;
	bool failed;
	int state;
} gz_slot;

typedef struct gz_par {
	int level;
	size_t n_workers; /* 0: compress in the caller's thread */
	pthread_t threads[GZ_MAX_WORKERS];
	z_stream inline_z;
	bool inline_ready;
	gz_slot *slots;
	size_t n_slots;
	uint64_t seq_fill;  /* the block being filled */
	uint64_t seq_ready; /* blocks below this are submitted */
	uint64_t seq_take;  /* next block a worker takes */
	uint64_t seq_write; /* next block to write out */
	pthread_mutex_t mu;
	pthread_cond_t cv_work;
	pthread_cond_t cv_done;
	bool quit;
	bool header_done;
	uLong crc;
	uint64_t isize;
} gz_par;

/* CPUs this thread may run on (taskset, cpusets), at least 1. */
static int cpu_count(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

/* Deflate one block; false on a zlib failure. */
static bool gz_block(z_stream *z, gz_slot *sl)
{
	if (deflateReset(z) != Z_OK)
		return false;
	if (sl->dict_len &&
	    deflateSetDictionary(z, sl->in + GZ_DICT - sl->dict_len, (uInt)sl->dict_len) != Z_OK)
		return false;
	size_t need = deflateBound(z, sl->in_len) + 64;
	if (sl->out_cap < need) {
		free(sl->out);
		sl->out = sw_xmalloc(need);
		sl->out_cap = need;
	}
	z->next_in = sl->in + GZ_DICT;
	z->avail_in = (uInt)sl->in_len;
	sl->out_len = 0;
	for (;;) {
		z->next_out = sl->out + sl->out_len;
		z->avail_out = (uInt)(sl->out_cap - sl->out_len);
		int r = deflate(z, sl->last ? Z_FINISH : Z_SYNC_FLUSH);
		sl->out_len = sl->out_cap - z->avail_out;
		if (r == Z_STREAM_ERROR)
			return false;
		if (sl->last ? r == Z_STREAM_END : (z->avail_in == 0 && z->avail_out > 0))
			break;
		sl->out_cap *= 2;
		sl->out = sw_xrealloc(sl->out, sl->out_cap);
	}
	sl->crc = crc32(0L, sl->in + GZ_DICT, (uInt)sl->in_len);
	return true;
}

static int gz_init_raw(z_stream *z, int level)
{
	memset(z, 0, sizeof(*z));
	return deflateInit2(z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
}

static void *gz_worker(void *payload)
{
	gz_par *p = payload;
	z_stream z;
	bool ok = gz_init_raw(&z, p->level) == Z_OK;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->quit && p->seq_take >= p->seq_ready)
			pthread_cond_wait(&p->cv_work, &p->mu);
		if (p->quit)
			break;
		gz_slot *sl = &p->slots[p->seq_take++ % p->n_slots];
		sl->state = SLOT_BUSY;
		pthread_mutex_unlock(&p->mu);
		bool done = ok && gz_block(&z, sl);
		pthread_mutex_lock(&p->mu);
		sl->failed = !done;
		sl->state = SLOT_DONE;
		pthread_cond_broadcast(&p->cv_done);
	}
	pthread_mutex_unlock(&p->mu);
	if (ok)
		deflateEnd(&z);
	return NULL;
}

static void gz_par_free(gz_par *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->quit = true;
	pthread_cond_broadcast(&p->cv_work);
	pthread_mutex_unlock(&p->mu);
	for (size_t i = 0; i < p->n_workers; i++)
		pthread_join(p->threads[i], NULL);
	if (p->inline_ready)
		deflateEnd(&p->inline_z);
	for (size_t i = 0; i < p->n_slots; i++) {
		free(p->slots[i].in);
		free(p->slots[i].out);
	}
	free(p->slots);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv_work);
	pthread_cond_destroy(&p->cv_done);
	free(p);
}

static gz_par *gz_par_new(int level)
{
	gz_par *p = sw_xcalloc(1, sizeof(*p));
	p->level = level;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv_work, NULL);
	pthread_cond_init(&p->cv_done, NULL);
	int cpus = cpu_count();
	size_t want = cpus > 1 ? (size_t)cpus : 0;
	if (want > GZ_MAX_WORKERS)
		want = GZ_MAX_WORKERS;
	p->n_slots = want ? 2 * want + 2 : 1;
	p->slots = sw_xcalloc(p->n_slots, sizeof(*p->slots));
	for (size_t i = 0; i < p->n_slots; i++)
		p->slots[i].in = sw_xmalloc(GZ_DICT + GZ_BLOCK);
	for (size_t i = 0; i < want; i++) {
		if (pthread_create(&p->threads[i], NULL, gz_worker, p) != 0)
			break;
		p->n_workers++;
	}
	if (p->n_workers == 0) {
		if (gz_init_raw(&p->inline_z, level) != Z_OK) {
			gz_par_free(p);
			return NULL;
		}
		p->inline_ready = true;
	}
	p->slots[0].state = SLOT_FILLING;
	return p;
}

/* ---------------------------------------------------------------- the output pipeline */

/*
 * Tar bytes from libarchive -> SHA-256 (diff_id) -> compressor -> output buffer -> blob writer
 * (which hashes what it stores: the blob digest).
 */
typedef struct layer_sink {
	sw_oci_compression comp;
	sw_oci_hasher *tar_hash;
	int64_t tar_size;
	gz_par *gz;
	ZSTD_CCtx *zc;
	unsigned char *out;
	size_t out_len;
	sw_oci_blob_writer *w;
	sw_error *err; /* the first failure inside a callback */
	bool discard;  /* after a failure: swallow what libarchive still writes */
} layer_sink;

static int sink_flush(layer_sink *s)
{
	if (s->out_len == 0)
		return 0;
	int r = sw_oci_blob_writer_write(s->w, s->out, s->out_len, &s->err);
	s->out_len = 0;
	return r;
}

/* Queue compressed (or plain) bytes for the blob writer. */
static int sink_out(layer_sink *s, const void *data, size_t len)
{
	if (len >= SW_OCI__LAYER_BUF) {
		if (sink_flush(s) < 0)
			return -1;
		return sw_oci_blob_writer_write(s->w, data, len, &s->err) < 0 ? -1 : 0;
	}
	if (s->out_len + len > SW_OCI__LAYER_BUF && sink_flush(s) < 0)
		return -1;
	memcpy(s->out + s->out_len, data, len);
	s->out_len += len;
	return 0;
}

/* Write finished blocks out in order; with `wait`, until block `upto` (excluded) is out. */
static int gz_drain(layer_sink *s, uint64_t upto, bool wait)
{
	gz_par *p = s->gz;
	pthread_mutex_lock(&p->mu);
	while (p->seq_write < upto) {
		gz_slot *sl = &p->slots[p->seq_write % p->n_slots];
		if (sl->state != SLOT_DONE) {
			if (!wait)
				break;
			pthread_cond_wait(&p->cv_done, &p->mu);
			continue;
		}
		pthread_mutex_unlock(&p->mu);
		if (sl->failed) {
			sw_error_set(&s->err, SW_ERR_GENERIC, "gzip compression failed");
			return -1;
		}
		if (!p->header_done) {
			/* magic, deflate, no flags, MTIME 0, no extra flags, OS unix */
			static const unsigned char hdr[10] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3 };
			if (sink_out(s, hdr, sizeof(hdr)) < 0)
				return -1;
			p->header_done = true;
		}
		if (sink_out(s, sl->out, sl->out_len) < 0)
			return -1;
		p->crc = crc32_combine(p->crc, sl->crc, (z_off_t)sl->in_len);
		p->isize += sl->in_len;
		pthread_mutex_lock(&p->mu);
		sl->state = SLOT_FREE;
		p->seq_write++;
	}
	pthread_mutex_unlock(&p->mu);
	return 0;
}

/* Hand the block being filled to the workers and start the next one. */
static int gz_submit(layer_sink *s, bool last)
{
	gz_par *p = s->gz;
	gz_slot *sl = &p->slots[p->seq_fill % p->n_slots];
	sl->last = last;
	if (p->n_workers == 0) {
		sl->failed = !gz_block(&p->inline_z, sl);
		sl->state = SLOT_DONE;
		p->seq_ready = p->seq_fill + 1;
	} else {
		pthread_mutex_lock(&p->mu);
		sl->state = SLOT_READY;
		p->seq_ready = p->seq_fill + 1;
		pthread_cond_signal(&p->cv_work);
		pthread_mutex_unlock(&p->mu);
	}
	if (last)
		return gz_drain(s, p->seq_ready, true);
	uint64_t next = ++p->seq_fill;
	/* the slot of `next` was last used by block next - n_slots: have it written first */
	if (next >= p->n_slots && gz_drain(s, next - p->n_slots + 1, true) < 0)
		return -1;
	if (gz_drain(s, p->seq_ready, false) < 0)
		return -1;
	/* the next block's dictionary: the end of this one (the same slot when there is one) */
	gz_slot *ns = &p->slots[next % p->n_slots];
	size_t dict = sl->in_len < GZ_DICT ? sl->in_len : GZ_DICT;
	memmove(ns->in + GZ_DICT - dict, sl->in + GZ_DICT + sl->in_len - dict, dict);
	ns->dict_len = dict;
	ns->in_len = 0;
	ns->state = SLOT_FILLING;
	return 0;
}

static int gz_feed(layer_sink *s, const unsigned char *data, size_t len)
{
	gz_par *p = s->gz;
	while (len > 0) {
		gz_slot *sl = &p->slots[p->seq_fill % p->n_slots];
		size_t n = GZ_BLOCK - sl->in_len;
		if (n > len)
			n = len;
		memcpy(sl->in + GZ_DICT + sl->in_len, data, n);
		sl->in_len += n;
		data += n;
		len -= n;
		if (sl->in_len == GZ_BLOCK && gz_submit(s, false) < 0)
			return -1;
	}
	return 0;
}

static int gz_finish(layer_sink *s)
{
	if (gz_submit(s, true) < 0)
		return -1;
	unsigned char trailer[8];
	uint32_t crc = (uint32_t)s->gz->crc, isize = (uint32_t)s->gz->isize;
	for (int i = 0; i < 4; i++) {
		trailer[i] = (unsigned char)(crc >> (8 * i));
		trailer[4 + i] = (unsigned char)(isize >> (8 * i));
	}
	return sink_out(s, trailer, sizeof(trailer));
}

static int sink_feed(layer_sink *s, const void *data, size_t len, bool finish)
{
	switch (s->comp) {
	case SW_OCI_COMPRESS_NONE:
		return sink_out(s, data, len);
	case SW_OCI_COMPRESS_GZIP:
		if (gz_feed(s, data, len) < 0)
			return -1;
		return finish ? gz_finish(s) : 0;
	case SW_OCI_COMPRESS_ZSTD: {
		ZSTD_inBuffer in = { data, len, 0 };
		for (;;) {
			ZSTD_outBuffer ob = { s->out, SW_OCI__LAYER_BUF, s->out_len };
			size_t zr = ZSTD_compressStream2(s->zc, &ob, &in,
			                                 finish ? ZSTD_e_end : ZSTD_e_continue);
			s->out_len = ob.pos;
			if (ZSTD_isError(zr)) {
				sw_error_set(&s->err, SW_ERR_GENERIC, "zstd compression failed: %s",
				             ZSTD_getErrorName(zr));
				return -1;
			}
			if (s->out_len == SW_OCI__LAYER_BUF && sink_flush(s) < 0)
				return -1;
			if (finish ? zr == 0 : in.pos == in.size)
				return 0;
		}
	}
	}
	return -1;
}

static la_ssize_t sink_write_cb(struct archive *a, void *payload, const void *buf, size_t len)
{
	(void)a;
	layer_sink *s = payload;
	if (s->discard)
		return (la_ssize_t)len;
	sw_oci_hasher_update(s->tar_hash, buf, len);
	s->tar_size += (int64_t)len;
	if (sink_feed(s, buf, len, false) < 0)
		return -1;
	return (la_ssize_t)len;
}

static void sink_clear(layer_sink *s)
{
	sw_oci_hasher_free(s->tar_hash);
	gz_par_free(s->gz);
	ZSTD_freeCCtx(s->zc);
	free(s->out);
	sw_oci_blob_writer_abort(s->w);
	sw_error_free(s->err);
	memset(s, 0, sizeof(*s));
}

static int sink_init(layer_sink *s, sw_oci_store *store, const sw_oci_layer_opts *opts,
                     sw_error **err)
{
	memset(s, 0, sizeof(*s));
	s->comp = opts->compression;
	int level = opts->level;
	switch (s->comp) {
	case SW_OCI_COMPRESS_NONE:
		break;
	case SW_OCI_COMPRESS_GZIP:
		if (level == 0)
			level = Z_DEFAULT_COMPRESSION;
		else if (level < 1 || level > 9)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "gzip level %d is out of range (1-9)", level);
		s->gz = gz_par_new(level);
		if (!s->gz)
			return sw_error_set(err, SW_ERR_GENERIC, "cannot start gzip compression");
		break;
	case SW_OCI_COMPRESS_ZSTD: {
		if (level == 0)
			level = ZSTD_CLEVEL_DEFAULT;
		else if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
			return sw_error_set(err, SW_ERR_INVALID,
			                    "zstd level %d is out of range (%d-%d)", level,
			                    ZSTD_minCLevel(), ZSTD_maxCLevel());
		s->zc = ZSTD_createCCtx();
		if (!s->zc)
			abort();
		ZSTD_CCtx_setParameter(s->zc, ZSTD_c_compressionLevel, level);
		ZSTD_CCtx_setParameter(s->zc, ZSTD_c_checksumFlag, 1);
		/* libzstd's own workers; its output is the same for any count >= 1 */
		int cpus = cpu_count();
		int workers = cpus > 8 ? 8 : cpus;
		if (ZSTD_isError(ZSTD_CCtx_setParameter(s->zc, ZSTD_c_nbWorkers, workers)))
			SW_LOG(SW_LOG_DEBUG, "layer: libzstd without threads, compressing in one");
		break;
	}
	default:
		return sw_error_set(err, SW_ERR_INVALID, "unknown layer compression %d",
		                    (int)s->comp);
	}
	s->tar_hash = sw_oci_hasher_new();
	s->out = sw_xmalloc(SW_OCI__LAYER_BUF);
	int r = sw_oci_store_blob_begin(&s->w, store, err);
	if (r < 0) {
		sink_clear(s);
		return r;
	}
	return 0;
}

/* Hand the pipeline's own error out, else describe libarchive's. */
static int archive_fail(sw_error **err, layer_sink *s, struct archive *a, const char *action,
                        const char *name)
{
	if (s->err) {
		int code = s->err->code;
		if (err && !*err)
			*err = steal_pointer(&s->err);
		return code;
	}
	const char *msg = archive_error_string(a) ? archive_error_string(a) : "unknown error";
	if (name)
		return sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_ARCHIVE, archive_errno(a),
		                    "%s of '%s': %s", action, name, msg);
	return sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_ARCHIVE, archive_errno(a), "%s: %s",
	                    action, msg);
}

static struct archive *tar_writer_new(layer_sink *s)
{
	struct archive *a = archive_write_new();
	if (!a)
		abort();
	/* pax only where ustar cannot say it (long names, xattrs, big numbers); xattrs only as
	 * SCHILY.xattr records (what Docker, containerd and Go read); names as raw bytes */
	archive_write_set_format_pax_restricted(a);
	archive_write_set_format_option(a, "pax", "xattrheader", "SCHILY");
	/* no blocking: headers and data go to the callback as written, and the tar ends after
	 * its two zero blocks without record padding (like Go's archive/tar) */
	archive_write_set_bytes_per_block(a, 0);
	archive_write_open2(a, s, NULL, sink_write_cb, NULL, NULL);
	return a;
}

static const char *media_type_of(sw_oci_compression c)
{
	switch (c) {
	case SW_OCI_COMPRESS_GZIP:
		return SW_OCI_MT_LAYER_GZIP;
	case SW_OCI_COMPRESS_ZSTD:
		return SW_OCI_MT_LAYER_ZSTD;
	default:
		return SW_OCI_MT_LAYER;
	}
}

/* Close the tar, flush the compressor and store the blob. */
static int sink_finish(sw_oci_layer_info *out, layer_sink *s, struct archive *a, uint64_t entries,
                       sw_error **err)
{
	if (archive_write_close(a) != ARCHIVE_OK)
		return archive_fail(err, s, a, "finish the tar", NULL);
	if (s->comp != SW_OCI_COMPRESS_NONE && sink_feed(s, NULL, 0, true) < 0)
		return archive_fail(err, s, a, "finish compression", NULL);
	if (sink_flush(s) < 0)
		return archive_fail(err, s, a, "store the layer", NULL);
	sw_oci_layer_info info;
	memset(&info, 0, sizeof(info));
	sw_oci_hasher_final(s->tar_hash, &info.diff_id);
	info.tar_size = s->tar_size;
	info.entries = entries;
	info.media_type = media_type_of(s->comp);
	sw_oci_blob_writer *w = steal_pointer(&s->w);
	int r = sw_oci_blob_writer_commit(&info.blob_digest, &info.blob_size, w, NULL, err);
	if (r < 0)
		return r;
	if (out)
		*out = info;
	return 0;
}

static const sw_oci_layer_opts default_opts = {
	.compression = SW_OCI_COMPRESS_GZIP,
	.level = 0,
	.overlay_upper = false,
	.source_date_epoch = -1,
};

static int64_t clamp_mtime(int64_t t, const sw_oci_layer_opts *opts)
{
	if (opts->source_date_epoch >= 0 && t > opts->source_date_epoch)
		return opts->source_date_epoch;
	return t;
}

/* ---------------------------------------------------------------- hard links: (dev, ino) -> path
 */

typedef struct link_slot {
	dev_t dev;
	ino_t ino;
	char *path; /* NULL: free slot */
} link_slot;

typedef struct link_map {
	link_slot *slots;
	size_t cap; /* power of two */
	size_t n;
} link_map;

static size_t link_hash(dev_t dev, ino_t ino)
{
	uint64_t x = (uint64_t)ino ^ ((uint64_t)dev * 0x9e3779b97f4a7c15ULL);
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (size_t)x;
}

static void link_map_grow(link_map *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 64;
	link_slot *ns = sw_xcalloc(ncap, sizeof(*ns));
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->slots[i].path)
			continue;
		size_t j = link_hash(m->slots[i].dev, m->slots[i].ino) & (ncap - 1);
		while (ns[j].path)
			j = (j + 1) & (ncap - 1);
		ns[j] = m->slots[i];
	}
	free(m->slots);
	m->slots = ns;
	m->cap = ncap;
}

/* The path first seen for (dev, ino), or NULL after remembering `path` for it. */
static const char *link_map_seen(link_map *m, dev_t dev, ino_t ino, const char *path)
{
	if ((m->n + 1) * 2 > m->cap)
		link_map_grow(m);
	size_t j = link_hash(dev, ino) & (m->cap - 1);
	while (m->slots[j].path) {
		if (m->slots[j].dev == dev && m->slots[j].ino == ino)
			return m->slots[j].path;
		j = (j + 1) & (m->cap - 1);
	}
	m->slots[j].dev = dev;
	m->slots[j].ino = ino;
	m->slots[j].path = sw_xstrdup(path);
	m->n++;
	return NULL;
}

static void link_map_clear(link_map *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->slots[i].path);
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

/* ---------------------------------------------------------------- writing a folder */

typedef struct walk_ctx {
	struct archive *a;
	struct archive_entry *e;
	layer_sink *sink;
	const sw_oci_layer_opts *opts;
	const char *root; /* the folder given, for l*xattr on entries we do not open */
	link_map links;
	unsigned char *buf;
	uint64_t entries;
} walk_ctx;

/* A folder entry, sorted by rank then tar name. */
typedef struct dent {
	char *name;     /* on disk */
	char *tar_name; /* in the tar (".wh.NAME" for an overlay whiteout) */
	int rank;       /* 0 opaque marker, 1 whiteout, 2 anything else */
	bool whiteout;  /* an overlay whiteout device to convert */
} dent;

static int dent_cmp(const void *pa, const void *pb)
{
	const dent *a = pa, *b = pb;
	if (a->rank != b->rank)
		return a->rank - b->rank;
	return strcmp(a->tar_name, b->tar_name);
}

static void dents_free(dent *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].name);
		free(v[i].tar_name);
	}
	free(v);
}

/* sort helper for xattr names */
static int str_ptr_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Read the xattrs of an entry (through `fd` when >= 0, else `path` without following it) into
 * the archive entry, sorted by name, minus the ones sw_oci__layer_xattr_keep drops. *opaque
 * (may be NULL) is set when an overlay opaque xattr says "y".
 */
static int xattrs_read(walk_ctx *c, int fd, const char *path, bool *opaque, const char *display,
                       sw_error **err)
{
	if (opaque)
		*opaque = false;
	cleanup_free char *list = NULL;
	ssize_t n;
	for (;;) {
		n = fd >= 0 ? flistxattr(fd, NULL, 0) : llistxattr(path, NULL, 0);
		if (n < 0) {
			if (errno == ENOTSUP || errno == ENOSYS)
				return 0;
			return sw_error_os(err, errno, "list xattrs of '%s'", display);
		}
		if (n == 0)
			return 0;
		free(list);
		list = sw_xmalloc((size_t)n + 1);
		n = fd >= 0 ? flistxattr(fd, list, (size_t)n) : llistxattr(path, list, (size_t)n);
		if (n >= 0)
			break;
		if (errno != ERANGE)
			return sw_error_os(err, errno, "list xattrs of '%s'", display);
	}
	list[n] = '\0';
	size_t count = 0;
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(list + i) + 1)
		count++;
	cleanup_free const char **names = sw_xcalloc(count + 1, sizeof(*names));
	size_t kept = 0;
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(list + i) + 1) {
		const char *name = list + i;
		if (!*name)
			continue;
		if (opaque && (strcmp(name, "trusted.overlay.opaque") == 0 ||
		               strcmp(name, "user.overlay.opaque") == 0)) {
			char v[2];
			ssize_t vl = fd >= 0 ? fgetxattr(fd, name, v, sizeof(v))
			                     : lgetxattr(path, name, v, sizeof(v));
			if (vl == 1 && v[0] == 'y')
				*opaque = true;
		}
		if (sw_oci__layer_xattr_keep(name))
			names[kept++] = name;
	}
	qsort(names, kept, sizeof(*names), str_ptr_cmp);
	cleanup_free char *val = NULL;
	for (size_t i = 0; i < kept; i++) {
		ssize_t vl;
		for (;;) {
			vl = fd >= 0 ? fgetxattr(fd, names[i], NULL, 0)
			             : lgetxattr(path, names[i], NULL, 0);
			if (vl < 0)
				break;
			free(val);
			val = sw_xmalloc((size_t)vl + 1);
			vl = fd >= 0 ? fgetxattr(fd, names[i], val, (size_t)vl)
			             : lgetxattr(path, names[i], val, (size_t)vl);
			if (vl >= 0 || errno != ERANGE)
				break;
		}
		if (vl < 0) {
			if (errno == ENODATA)
				continue; /* removed meanwhile */
			return sw_error_os(err, errno, "read xattr %s of '%s'", names[i], display);
		}
		archive_entry_xattr_add_entry(c->e, names[i], val, (size_t)vl);
	}
	return 0;
}

static int write_header(walk_ctx *c, const char *path, sw_error **err)
{
	int ar = archive_write_header(c->a, c->e);
	if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
		return archive_fail(err, c->sink, c->a, "write tar header", path);
	c->entries++;
	return 0;
}

/* An empty, mode 0 regular file: a whiteout or the opaque marker. */
static int write_marker(walk_ctx *c, const char *path, int64_t mtime, sw_error **err)
{
	archive_entry_clear(c->e);
	archive_entry_copy_pathname(c->e, path);
	archive_entry_set_filetype(c->e, AE_IFREG);
	archive_entry_set_perm(c->e, 0);
	archive_entry_set_uid(c->e, 0);
	archive_entry_set_gid(c->e, 0);
	archive_entry_set_size(c->e, 0);
	archive_entry_set_mtime(c->e, (time_t)mtime, 0);
	return write_header(c, path, err);
}

static int copy_file_data(walk_ctx *c, int fd, int64_t size, const char *path, sw_error **err)
{
	int64_t left = size;
	while (left > 0) {
		size_t want = left < (int64_t)SW_OCI__LAYER_BUF ? (size_t)left : SW_OCI__LAYER_BUF;
		ssize_t n = read(fd, c->buf, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sw_error_os(err, errno, "read '%s'", path);
		}
		if (n == 0)
			return sw_error_set(err, SW_ERR_GENERIC,
			                    "'%s' shrank while it was being read", path);
		if (archive_write_data(c->a, c->buf, (size_t)n) < 0)
			return archive_fail(err, c->sink, c->a, "write data", path);
		left -= n;
	}
	return 0;
}

static int walk_dir(walk_ctx *c, int dfd, const char *rel, sw_error **err);

static void entry_common(walk_ctx *c, const char *path, const struct stat *st)
{
	archive_entry_clear(c->e);
	archive_entry_copy_pathname(c->e, path);
	archive_entry_set_perm(c->e, st->st_mode & 07777);
	archive_entry_set_uid(c->e, st->st_uid);
	archive_entry_set_gid(c->e, st->st_gid);
	archive_entry_set_mtime(c->e, (time_t)clamp_mtime(st->st_mtim.tv_sec, c->opts), 0);
}

static int walk_entry(walk_ctx *c, int dfd, const char *rel, const dent *de, sw_error **err)
{
	cleanup_free char *path = sw_xasprintf("%s%s", rel, de->tar_name);
	struct stat st;
	if (fstatat(dfd, de->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT) {
			SW_LOG(SW_LOG_DEBUG, "layer: '%s' vanished during the walk", path);
			return 0;
		}
		return sw_error_os(err, errno, "stat '%s'", path);
	}
	if (de->whiteout)
		return write_marker(c, path, clamp_mtime(st.st_mtim.tv_sec, c->opts), err);

	mode_t type = st.st_mode & S_IFMT;
	if (type == S_IFSOCK) {
		SW_LOG(SW_LOG_DEBUG, "layer: skipping socket '%s'", path);
		return 0;
	}
	if (type != S_IFDIR && type != S_IFREG && type != S_IFLNK && type != S_IFCHR &&
	    type != S_IFBLK && type != S_IFIFO) {
		SW_LOG(SW_LOG_DEBUG, "layer: skipping '%s' of unknown type", path);
		return 0;
	}
	if (type != S_IFDIR && st.st_nlink > 1) {
		const char *first = link_map_seen(&c->links, st.st_dev, st.st_ino, path);
		if (first) {
			entry_common(c, path, &st);
			archive_entry_set_filetype(c->e, AE_IFREG);
			archive_entry_copy_hardlink(c->e, first);
			archive_entry_set_size(c->e, 0);
			return write_header(c, path, err);
		}
	}

	cleanup_free char *full = NULL;
	if (type == S_IFREG) {
		cleanup_close int fd = openat(
		        dfd, de->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0)
			return sw_error_os(err, errno, "open '%s'", path);
		struct stat fst;
		if (fstat(fd, &fst) < 0)
			return sw_error_os(err, errno, "stat '%s'", path);
		if (!S_ISREG(fst.st_mode) || fst.st_ino != st.st_ino)
			return sw_error_set(err, SW_ERR_GENERIC,
			                    "'%s' changed while the layer was being written", path);
		(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
		entry_common(c, path, &fst);
		archive_entry_set_filetype(c->e, AE_IFREG);
		archive_entry_set_size(c->e, fst.st_size);
		int r = xattrs_read(c, fd, NULL, NULL, path, err);
		if (r == 0)
			r = write_header(c, path, err);
		if (r == 0)
			r = copy_file_data(c, fd, fst.st_size, path, err);
		return r;
	}
	if (type == S_IFDIR) {
		int fd = openat(dfd, de->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return sw_error_os(err, errno, "open folder '%s'", path);
		bool opaque = false;
		cleanup_free char *dpath = sw_xasprintf("%s/", path);
		entry_common(c, dpath, &st);
		archive_entry_set_filetype(c->e, AE_IFDIR);
		int r = xattrs_read(c, fd, NULL, c->opts->overlay_upper ? &opaque : NULL, path,
		                    err);
		if (r == 0)
			r = write_header(c, dpath, err);
		if (r == 0 && opaque) {
			cleanup_free char *marker = sw_xasprintf("%s%s", dpath, OPAQUE_MARKER);
			r = write_marker(c, marker, clamp_mtime(st.st_mtim.tv_sec, c->opts), err);
		}
		if (r < 0) {
			close(fd);
			return r;
		}
		return walk_dir(c, fd, dpath, err);
	}

	full = sw_xasprintf("%s/%s%s", c->root, rel, de->name);
	entry_common(c, path, &st);
	if (type == S_IFLNK) {
		size_t cap = (size_t)st.st_size + 1;
		for (;;) {
			cleanup_free char *target = sw_xmalloc(cap + 1);
			ssize_t n = readlinkat(dfd, de->name, target, cap);
			if (n < 0)
				return sw_error_os(err, errno, "read symlink '%s'", path);
			if ((size_t)n < cap) {
				target[n] = '\0';
				archive_entry_set_filetype(c->e, AE_IFLNK);
				archive_entry_copy_symlink(c->e, target);
				break;
			}
			cap *= 2;
		}
	} else if (type == S_IFIFO) {
		archive_entry_set_filetype(c->e, AE_IFIFO);
	} else {
		archive_entry_set_filetype(c->e, type == S_IFCHR ? AE_IFCHR : AE_IFBLK);
		archive_entry_set_rdevmajor(c->e, major(st.st_rdev));
		archive_entry_set_rdevminor(c->e, minor(st.st_rdev));
	}
	int r = xattrs_read(c, -1, full, NULL, path, err);
	if (r < 0)
		return r;
	return write_header(c, path, err);
}

/* Write the content of the folder `dfd` (owned: closed here), whose tar path is `rel`. */
static int walk_dir(walk_ctx *c, int dfd, const char *rel, sw_error **err)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		int e = errno;
		close(dfd);
		return sw_error_os(err, e, "read folder '%s'", *rel ? rel : ".");
	}
	dent *v = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno)
				r = sw_error_os(err, errno, "read folder '%s'", *rel ? rel : ".");
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			v = sw_xrealloc(v, cap * sizeof(*v));
		}
		dent *x = &v[n++];
		memset(x, 0, sizeof(*x));
		x->name = sw_xstrdup(de->d_name);
		if (c->opts->overlay_upper && (de->d_type == DT_CHR || de->d_type == DT_UNKNOWN)) {
			struct stat st;
			if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0))
				x->whiteout = true;
		}
		if (x->whiteout) {
			x->tar_name = sw_xasprintf(WHITEOUT_PREFIX "%s", de->d_name);
			x->rank = 1;
		} else {
			x->tar_name = sw_xstrdup(de->d_name);
			x->rank = strcmp(x->name, OPAQUE_MARKER) == 0         ? 0
			          : strncmp(x->name, WHITEOUT_PREFIX, 4) == 0 ? 1
			                                                      : 2;
		}
	}
	if (r == 0 && n > 1)
		qsort(v, n, sizeof(*v), dent_cmp);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = walk_entry(c, dirfd(d), rel, &v[i], err);
	closedir(d);
	dents_free(v, n);
	return r;
}

static int write_dir(sw_oci_layer_info *out, sw_oci_store *s, const char *dir,
                     const sw_oci_layer_opts *opts, sw_error **err)
{
	int rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sw_error_os(err, errno, "open folder");
	layer_sink sink;
	int r = sink_init(&sink, s, opts, err);
	if (r < 0) {
		close(rootfd);
		return r;
	}
	walk_ctx c;
	memset(&c, 0, sizeof(c));
	c.sink = &sink;
	c.opts = opts;
	c.root = dir;
	c.a = tar_writer_new(&sink);
	c.e = archive_entry_new();
	c.buf = sw_xmalloc(SW_OCI__LAYER_BUF);

	if (opts->overlay_upper) {
		/* an opaque root: everything below is hidden */
		bool opaque = false;
		struct stat st;
		r = xattrs_read(&c, rootfd, NULL, &opaque, ".", err);
		if (r == 0 && opaque && fstat(rootfd, &st) == 0)
			r = write_marker(&c, OPAQUE_MARKER, clamp_mtime(st.st_mtim.tv_sec, opts),
			                 err);
	}
	if (r == 0)
		r = walk_dir(&c, rootfd, "", err);
	else
		close(rootfd);
	if (r == 0)
		r = sink_finish(out, &sink, c.a, c.entries, err);
	/* archive_write_fail would leak libarchive's client state (3.6): close into nothing */
	sink.discard = r < 0;
	archive_write_free(c.a);
	archive_entry_free(c.e);
	link_map_clear(&c.links);
	free(c.buf);
	sink_clear(&sink);
	return r;
}

int sw_oci_layer_write_dir(sw_oci_layer_info *out, sw_oci_store *s, const char *dir,
                           const sw_oci_layer_opts *opts, sw_error **err)
{
	if (out)
		memset(out, 0, sizeof(*out));
	locale_t old = uselocale(sw_oci__c_locale());
	int r = write_dir(out, s, dir, opts ? opts : &default_opts, err);
	uselocale(old);
	if (r < 0)
		return sw_error_wrap(err, "write layer from '%s'", dir);
	return 0;
}

/* ---------------------------------------------------------------- re-packing a tarball */

static bool xattr_already(struct archive_entry *e, const char *name)
{
	const char *n;
	const void *v;
	size_t l;
	archive_entry_xattr_reset(e);
	while (archive_entry_xattr_next(e, &n, &v, &l) == ARCHIVE_OK)
		if (strcmp(n, name) == 0)
			return true;
	return false;
}

/* Copy one input entry (already read) into the output layer. */
static int repack_entry(layer_sink *sink, struct archive *out, struct archive_entry *oe,
                        struct archive *in, struct archive_entry *ie, const char *path,
                        const sw_oci_layer_opts *opts, unsigned char *buf, sw_error **err)
{
	const char *raw = archive_entry_pathname(ie);
	mode_t type = archive_entry_filetype(ie);
	const char *hl = archive_entry_hardlink(ie);
	archive_entry_clear(oe);
	archive_entry_set_perm(oe, archive_entry_perm(ie) & 07777);
	archive_entry_set_uid(oe, archive_entry_uid(ie));
	archive_entry_set_gid(oe, archive_entry_gid(ie));
	int64_t mtime = archive_entry_mtime_is_set(ie) ? (int64_t)archive_entry_mtime(ie) : 0;
	archive_entry_set_mtime(oe, (time_t)clamp_mtime(mtime, opts), 0);
	bool data = false;
	if (hl) {
		cleanup_free char *target = NULL;
		int r = sw_oci__layer_path_clean(&target, hl, "hard link target", err);
		if (r < 0)
			return sw_error_wrap(err, "entry '%s'", raw);
		if (!*target)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "entry '%s': hard link to the root folder", raw);
		archive_entry_copy_pathname(oe, path);
		archive_entry_set_filetype(oe, AE_IFREG);
		archive_entry_copy_hardlink(oe, target);
		archive_entry_set_size(oe, 0);
	} else {
		switch (type) {
		case AE_IFREG:
			archive_entry_copy_pathname(oe, path);
			archive_entry_set_filetype(oe, AE_IFREG);
			archive_entry_set_size(oe, archive_entry_size(ie));
			data = archive_entry_size(ie) > 0;
			break;
		case AE_IFDIR: {
			cleanup_free char *dpath = sw_xasprintf("%s/", path);
			archive_entry_copy_pathname(oe, dpath);
			archive_entry_set_filetype(oe, AE_IFDIR);
			break;
		}
		case AE_IFLNK:
			if (!archive_entry_symlink(ie))
				return sw_error_set(err, SW_ERR_INVALID,
				                    "entry '%s': symlink without a target", raw);
			archive_entry_copy_pathname(oe, path);
			archive_entry_set_filetype(oe, AE_IFLNK);
			archive_entry_copy_symlink(oe, archive_entry_symlink(ie));
			break;
		case AE_IFCHR:
		case AE_IFBLK:
			archive_entry_copy_pathname(oe, path);
			archive_entry_set_filetype(oe, type);
			archive_entry_set_rdevmajor(oe, archive_entry_rdevmajor(ie));
			archive_entry_set_rdevminor(oe, archive_entry_rdevminor(ie));
			break;
		case AE_IFIFO:
			archive_entry_copy_pathname(oe, path);
			archive_entry_set_filetype(oe, AE_IFIFO);
			break;
		default:
			return sw_error_set(err, SW_ERR_INVALID,
			                    "entry '%s': unsupported entry type 0%o", raw,
			                    (unsigned)type);
		}
	}
	const char *xn;
	const void *xv;
	size_t xl;
	archive_entry_xattr_reset(ie);
	while (archive_entry_xattr_next(ie, &xn, &xv, &xl) == ARCHIVE_OK) {
		if (!sw_oci__layer_xattr_keep(xn) || xattr_already(oe, xn))
			continue;
		archive_entry_xattr_add_entry(oe, xn, xv, xl);
	}
	int ar = archive_write_header(out, oe);
	if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
		return archive_fail(err, sink, out, "write tar header", path);
	if (!data)
		return 0;
	for (;;) {
		la_ssize_t n = archive_read_data(in, buf, SW_OCI__LAYER_BUF);
		if (n == 0)
			return 0;
		if (n < 0)
			return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_ARCHIVE,
			                    archive_errno(in), "read entry '%s': %s", raw,
			                    archive_error_string(in));
		if (archive_write_data(out, buf, (size_t)n) < 0)
			return archive_fail(err, sink, out, "write data", path);
	}
}

static int write_tar(sw_oci_layer_info *out, sw_oci_store *s, const char *tar_path,
                     const sw_oci_layer_opts *opts, sw_error **err)
{
	struct archive *in = sw_oci__layer_reader_new();
	if (archive_read_open_filename(in, tar_path, SW_OCI__LAYER_BUF) != ARCHIVE_OK) {
		int e = archive_errno(in);
		int r = sw_error_lib(err, e == ENOENT ? SW_ERR_NOT_FOUND : SW_ERR_GENERIC,
		                     SW_ERRSRC_ARCHIVE, e, "open: %s", archive_error_string(in));
		archive_read_free(in);
		return r;
	}
	layer_sink sink;
	int r = sink_init(&sink, s, opts, err);
	if (r < 0) {
		archive_read_free(in);
		return r;
	}
	struct archive *a = tar_writer_new(&sink);
	struct archive_entry *oe = archive_entry_new();
	unsigned char *buf = sw_xmalloc(SW_OCI__LAYER_BUF);
	uint64_t entries = 0;
	for (;;) {
		struct archive_entry *ie = NULL;
		int ar = archive_read_next_header(in, &ie);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
			r = sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_ARCHIVE, archive_errno(in),
			                 "read: %s", archive_error_string(in));
			break;
		}
		cleanup_free char *path = NULL;
		r = sw_oci__layer_path_clean(&path, archive_entry_pathname(ie), "tar entry", err);
		if (r < 0)
			break;
		if (!*path)
			continue; /* "./": the root itself */
		r = repack_entry(&sink, a, oe, in, ie, path, opts, buf, err);
		if (r < 0)
			break;
		entries++;
	}
	if (r == 0)
		r = sink_finish(out, &sink, a, entries, err);
	sink.discard = r < 0;
	archive_write_free(a);
	archive_entry_free(oe);
	archive_read_free(in);
	free(buf);
	sink_clear(&sink);
	return r;
}

int sw_oci_layer_write_tar(sw_oci_layer_info *out, sw_oci_store *s, const char *tar_path,
                           const sw_oci_layer_opts *opts, sw_error **err)
{
	if (out)
		memset(out, 0, sizeof(*out));
	locale_t old = uselocale(sw_oci__c_locale());
	int r = write_tar(out, s, tar_path, opts ? opts : &default_opts, err);
	uselocale(old);
	if (r < 0)
		return sw_error_wrap(err, "write layer from '%s'", tar_path);
	return 0;
}
