/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Images of slipway's store, made known to a Docker daemon. Docker's image ID is the digest of
 * the config blob, so GET /images/sha256:<config>/json tells whether the daemon has the image;
 * when it does not, a docker-archive tarball (manifest.json with Config, RepoTags
 * "slipway/<manifest digest 12>:latest" and Layers, the config and the layer blobs) is written
 * by libarchive in a thread into a socket pair whose other end is the streamed body of
 * POST /images/load, so nothing is staged on disk. dockerd 20.10 reads gzip and plain layers
 * but not zstd ones: those are decompressed on the way (a first pass measures their size for
 * the tar header). Loads are serialised by one lock in this process and the presence is checked
 * again under it, so concurrent runs of one image load it once.
 */
#include "executor/docker_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

#define LOAD_ANSWER_MAX ((size_t)1 << 20)
#define COPY_CHUNK ((size_t)256 << 10)

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_uint load_count;

unsigned sw_exec__dk_loads(void)
{
	return atomic_load(&load_count);
}

static int image_present(bool *present, const sw_exec__dk *dk, const sw_digest *id, sw_error **err)
{
	*present = false;
	long status = 0;
	cleanup_free char *path = sw_xasprintf("/images/%s/json", id->s);
	json_t *answer = NULL;
	int r = sw_exec__dk_call(&status, &answer, dk, "GET", path, NULL, 60000, err);
	if (r < 0)
		return r;
	if (status == 200)
		*present = true;
	else if (status != 404)
		r = sw_exec__dk_status_error(err, status, answer, "docker: inspect image");
	json_decref(answer);
	return r;
}

/* ---------------------------------------------------------------- the archive writer */

typedef struct writer {
	sw_oci_store *store;
	const sw_oci_manifest *m;
	char *repo_tag;
	int fd; /* our end of the socket pair */
	sw_error *err;
} writer;

static la_ssize_t sock_write(struct archive *a, void *payload, const void *buf, size_t len)
{
	writer *w = payload;
	size_t done = 0;
	while (done < len) {
		ssize_t n = send(w->fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			archive_set_error(a, errno, "send to the daemon");
			return -1;
		}
		done += (size_t)n;
	}
	return (la_ssize_t)len;
}

static int archive_fail(writer *w, struct archive *a, const char *what)
{
	return sw_error_lib(&w->err, SW_ERR_GENERIC, SW_ERRSRC_ARCHIVE, archive_errno(a),
	                    "docker image archive: %s: %s", what,
	                    archive_error_string(a) ? archive_error_string(a) : "error");
}

static int put_header(writer *w, struct archive *a, const char *name, int64_t size)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, size);
	archive_entry_set_mtime(e, 0, 0);
	int r = archive_write_header(a, e);
	archive_entry_free(e);
	return r == ARCHIVE_OK ? 0 : archive_fail(w, a, name);
}

static int put_data(writer *w, struct archive *a, const void *data, size_t len, const char *name)
{
	if (len == 0)
		return 0;
	la_ssize_t n = archive_write_data(a, data, len);
	return n == (la_ssize_t)len ? 0 : archive_fail(w, a, name);
}

static int put_mem(writer *w, struct archive *a, const char *name, const void *data, size_t len)
{
	int r = put_header(w, a, name, (int64_t)len);
	return r < 0 ? r : put_data(w, a, data, len, name);
}

/* Open a zstd blob for reading its decompressed bytes. */
static int zstd_open(struct archive **out, writer *w, int fd, const char *name)
{
	*out = NULL;
	if (lseek(fd, 0, SEEK_SET) < 0)
		return sw_error_os(&w->err, errno, "docker image archive: seek '%s'", name);
	struct archive *r = archive_read_new();
	archive_read_support_filter_zstd(r);
	archive_read_support_format_raw(r);
	struct archive_entry *e = NULL;
	if (archive_read_open_fd(r, fd, 65536) != ARCHIVE_OK ||
	    archive_read_next_header(r, &e) != ARCHIVE_OK) {
		int rc = archive_fail(w, r, name);
		archive_read_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

static int put_layer(writer *w, struct archive *a, const sw_oci_descriptor *d, const char *name)
{
	int fd = -1;
	int64_t size = 0;
	int r = sw_oci_store_open_blob(&fd, &size, w->store, &d->digest, &w->err);
	if (r < 0)
		return sw_error_wrap(&w->err, "docker image archive: layer %s", d->digest.s);
	bool zstd = d->media_type && strstr(d->media_type, "zstd") != NULL;
	cleanup_free char *buf = sw_xmalloc(COPY_CHUNK);
	if (!zstd) {
		r = put_header(w, a, name, size);
		int64_t left = size;
		while (r == 0 && left > 0) {
			ssize_t n = read(fd, buf,
			                 left < (int64_t)COPY_CHUNK ? (size_t)left : COPY_CHUNK);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				r = n < 0 ? sw_error_os(&w->err, errno, "read layer %s",
				                        d->digest.s)
				          : sw_error_set(&w->err, SW_ERR_INVALID,
				                         "layer %s is shorter than its %lld bytes",
				                         d->digest.s, (long long)size);
				break;
			}
			r = put_data(w, a, buf, (size_t)n, name);
			left -= n;
		}
		close(fd);
		return r;
	}
	/* zstd: measure the plain tar, then stream it */
	struct archive *z = NULL;
	int64_t plain = 0;
	r = zstd_open(&z, w, fd, name);
	while (r == 0) {
		la_ssize_t n = archive_read_data(z, buf, COPY_CHUNK);
		if (n < 0)
			r = archive_fail(w, z, name);
		if (n <= 0)
			break;
		plain += n;
	}
	if (z)
		archive_read_free(z);
	z = NULL;
	if (r == 0)
		r = zstd_open(&z, w, fd, name);
	if (r == 0)
		r = put_header(w, a, name, plain);
	int64_t sent = 0;
	while (r == 0) {
		la_ssize_t n = archive_read_data(z, buf, COPY_CHUNK);
		if (n < 0)
			r = archive_fail(w, z, name);
		if (n <= 0)
			break;
		if (sent + n > plain) {
			r = sw_error_set(&w->err, SW_ERR_INVALID, "layer %s changed while read",
			                 d->digest.s);
			break;
		}
		r = put_data(w, a, buf, (size_t)n, name);
		sent += n;
	}
	if (r == 0 && sent != plain)
		r = sw_error_set(&w->err, SW_ERR_INVALID, "layer %s changed while read",
		                 d->digest.s);
	if (z)
		archive_read_free(z);
	close(fd);
	return r;
}

static int write_archive(writer *w)
{
	const sw_oci_manifest *m = w->m;
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	archive_write_set_bytes_in_last_block(a, 1);
	int r = 0;
	if (archive_write_open(a, w, NULL, sock_write, NULL) != ARCHIVE_OK) {
		r = archive_fail(w, a, "open");
		archive_write_free(a);
		return r;
	}
	json_t *layers = json_array();
	cleanup_free char *config_name =
	        sw_xasprintf("%s.json", sw_oci_digest_hex(&m->config.digest));
	char *config = NULL;
	size_t config_len = 0;
	r = sw_oci_store_read_blob(&config, &config_len, w->store, &m->config.digest,
	                           SW_OCI_MAX_CONFIG_BYTES, &w->err);
	if (r < 0)
		sw_error_wrap(&w->err, "docker image archive: config");
	else
		r = put_mem(w, a, config_name, config, config_len);
	free(config);
	for (size_t i = 0; r == 0 && i < m->n_layers; i++) {
		const sw_oci_descriptor *d = &m->layers[i];
		cleanup_free char *name = sw_xasprintf("%s.layer", sw_oci_digest_hex(&d->digest));
		bool seen = false;
		for (size_t j = 0; j < i; j++)
			seen = seen || sw_oci_digest_eq(&m->layers[j].digest, &d->digest);
		if (!seen)
			r = put_layer(w, a, d, name);
		json_array_append_new(layers, json_string(name));
	}
	if (r == 0) {
		json_t *entry = json_pack("{s:s, s:[s], s:O}", "Config", config_name, "RepoTags",
		                          w->repo_tag, "Layers", layers);
		json_t *doc = json_pack("[o]", entry);
		char *text = json_dumps(doc, JSON_COMPACT);
		json_decref(doc);
		if (!text)
			abort();
		r = put_mem(w, a, "manifest.json", text, strlen(text));
		free(text);
	}
	json_decref(layers);
	if (r == 0 && archive_write_close(a) != ARCHIVE_OK)
		r = archive_fail(w, a, "close");
	archive_write_free(a);
	return r;
}

static void *writer_main(void *payload)
{
	writer *w = payload;
	(void)write_archive(w);
	/* the end of the body: the daemon sees EOF */
	shutdown(w->fd, SHUT_WR);
	return NULL;
}

/* ---------------------------------------------------------------- POST /images/load */

static size_t body_read(char *buf, size_t size, size_t n, void *payload)
{
	int fd = *(int *)payload;
	for (;;) {
		ssize_t got = read(fd, buf, size * n);
		if (got >= 0)
			return (size_t)got;
		if (errno != EINTR)
			return CURL_READFUNC_ABORT;
	}
}

static size_t answer_write(char *data, size_t size, size_t n, void *payload)
{
	sw_buf *b = payload;
	sw_error *e = NULL;
	if (sw_buf_append(b, data, size * n, &e) < 0) {
		sw_error_free(e); /* a chatty answer is cut, not fatal */
		return size * n;
	}
	return size * n;
}

/* The first error message of the daemon's JSON-lines answer, or NULL (caller frees). */
static char *answer_error(const sw_buf *b)
{
	const char *p = b->data ? b->data : "";
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		json_t *j = json_loadb(p, len, 0, NULL);
		const char *msg = json_string_value(json_object_get(j, "error"));
		char *out = msg ? sw_xstrdup(msg) : NULL;
		json_decref(j);
		if (out)
			return out;
		p += len + (nl ? 1 : 0);
	}
	return NULL;
}

static int load_image(const sw_exec__dk *dk, sw_oci_store *store, const sw_oci_descriptor *desc,
                      const sw_oci_manifest *m, sw_error **err)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return sw_error_os(err, errno, "docker: load image: socketpair");
	writer w = { .store = store,
		     .m = m,
		     .repo_tag =
		             sw_xasprintf("slipway/%.12s:latest", sw_oci_digest_hex(&desc->digest)),
		     .fd = sv[1] };
	pthread_t th;
	int pe = pthread_create(&th, NULL, writer_main, &w);
	if (pe != 0) {
		close(sv[0]);
		close(sv[1]);
		free(w.repo_tag);
		return sw_error_os(err, pe, "docker: load image: start the writer");
	}
	CURL *h = sw_exec__dk_handle(dk, "POST", "/images/load?quiet=1");
	struct curl_slist *headers = NULL;
	headers = curl_slist_append(headers, "Content-Type: application/x-tar");
	headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
	headers = curl_slist_append(headers, "Expect:");
	sw_buf answer = SW_BUF_INIT(LOAD_ANSWER_MAX);
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, -1L);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, body_read);
	curl_easy_setopt(h, CURLOPT_READDATA, &sv[0]);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, answer_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &answer);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	/* a stalled daemon: under 1 byte/s for 5 minutes */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 300L);
	CURLcode rc = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	/* a writer still sending (the daemon answered early) now fails and ends */
	close(sv[0]);
	pthread_join(th, NULL);
	close(sv[1]);

	int r = 0;
	cleanup_free char *daemon_msg = answer_error(&answer);
	if (w.err) {
		r = sw_error_code_of(w.err);
		sw_error_set(err, r, "%s%s%s", sw_error_msg(w.err), daemon_msg ? ": daemon: " : "",
		             daemon_msg ? daemon_msg : "");
	} else if (rc != CURLE_OK) {
		r = sw_exec__dk_curl_error(err, dk, rc, "POST /images/load", errbuf);
	} else if (status / 100 != 2 || daemon_msg) {
		r = sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_HTTP, (int)status,
		                 "docker: load image: HTTP %ld: %s", status,
		                 daemon_msg ? daemon_msg : (answer.data ? answer.data : ""));
	}
	sw_error_free(w.err);
	free(w.repo_tag);
	sw_buf_free(&answer);
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
	return r;
}

int sw_exec__dk_image_ensure(sw_digest *out_id, bool *loaded, const sw_exec__dk *dk,
                             sw_oci_store *store, const char *name, sw_error **err)
{
	if (loaded)
		*loaded = false;
	if (!store)
		return sw_error_set(err, SW_ERR_INVALID, "image '%s': no image store", name);
	sw_oci_descriptor desc = { 0 };
	sw_oci_manifest m = { 0 };
	int r = sw_oci_store_load_image(&desc, &m, NULL, store, name, NULL, err);
	if (r < 0)
		return sw_error_wrap(err, "image '%s'", name);
	*out_id = m.config.digest;
	bool present = false;
	r = image_present(&present, dk, out_id, err);
	if (r == 0 && !present) {
		pthread_mutex_lock(&load_lock);
		r = image_present(&present, dk, out_id, err);
		if (r == 0 && !present) {
			SW_LOG(SW_LOG_DEBUG, "docker: loading image %s (%s)", name, out_id->s);
			r = load_image(dk, store, &desc, &m, err);
			if (r == 0) {
				atomic_fetch_add(&load_count, 1);
				r = image_present(&present, dk, out_id, err);
				if (r == 0 && !present)
					r = sw_error_set(
					        err, SW_ERR_GENERIC,
					        "docker: the daemon loaded the image but has no "
					        "image %s",
					        out_id->s);
				if (r == 0 && loaded)
					*loaded = true;
			}
		}
		pthread_mutex_unlock(&load_lock);
	}
	sw_oci_manifest_clear(&m);
	sw_oci_descriptor_clear(&desc);
	if (r < 0)
		return sw_error_wrap(err, "image '%s'", name);
	return 0;
}
