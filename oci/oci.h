/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oci: the image model and everything that moves images. Digests (SHA-256, streaming),
 * descriptors, manifests, indexes and image configs (OCI and Docker schema 2 read, OCI written),
 * layer tarballs written from a folder or an overlayfs upper folder and applied safely onto a
 * rootfs, the local content store (an OCI image layout) and the registry client (OCI
 * distribution API: pull, push, mount, auth).
 */
#ifndef SW_OCI_H
#define SW_OCI_H

#include "common/common.h"

#include <jansson.h>

/* ---------------------------------------------------------------- media types */

#define SW_OCI_MT_INDEX "application/vnd.oci.image.index.v1+json"
#define SW_OCI_MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define SW_OCI_MT_CONFIG "application/vnd.oci.image.config.v1+json"
#define SW_OCI_MT_LAYER "application/vnd.oci.image.layer.v1.tar"
#define SW_OCI_MT_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define SW_OCI_MT_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"
#define SW_OCI_MT_EMPTY "application/vnd.oci.empty.v1+json"
#define SW_DOCKER_MT_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define SW_DOCKER_MT_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define SW_DOCKER_MT_CONFIG "application/vnd.docker.container.image.v1+json"
#define SW_DOCKER_MT_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define SW_DOCKER_MT_LAYER "application/vnd.docker.image.rootfs.diff.tar"

#define SW_OCI_ANNOT_REF_NAME "org.opencontainers.image.ref.name"

/* Caps on what is read from outside. */
#define SW_OCI_MAX_MANIFEST_BYTES ((size_t)4 << 20)
#define SW_OCI_MAX_CONFIG_BYTES ((size_t)8 << 20)

/* ---------------------------------------------------------------- digests */

/* "sha256:" + 64 lowercase hex digits, NUL-terminated. */
typedef struct sw_digest {
	char s[72];
} sw_digest;

/* Validate syntax ("sha256:<64 lowercase hex>"); SW_ERR_INVALID names the bad text. */
int sw_oci_digest_parse(sw_digest *out, const char *s, sw_error **err) SW_WUR;
bool sw_oci_digest_is_set(const sw_digest *d);
bool sw_oci_digest_eq(const sw_digest *a, const sw_digest *b);
/* The 64 hex digits (points into d). */
const char *sw_oci_digest_hex(const sw_digest *d);
void sw_oci_digest_bytes(sw_digest *out, const void *data, size_t len);

/* Streaming SHA-256 through OpenSSL EVP. */
typedef struct sw_oci_hasher sw_oci_hasher;
sw_oci_hasher *sw_oci_hasher_new(void);
void sw_oci_hasher_update(sw_oci_hasher *h, const void *data, size_t len);
/* Finish into *out; the hasher can then be freed (or reset for reuse). */
void sw_oci_hasher_final(sw_oci_hasher *h, sw_digest *out);
void sw_oci_hasher_reset(sw_oci_hasher *h);
void sw_oci_hasher_free(sw_oci_hasher *h);

/* ---------------------------------------------------------------- the model */

typedef struct sw_oci_platform {
	char *os;
	char *architecture;
	char *variant;    /* may be NULL */
	char *os_version; /* may be NULL */
} sw_oci_platform;

/* "linux/amd64", "linux/arm64/v8". Missing parts are NULL. */
int sw_oci_platform_parse(sw_oci_platform *out, const char *s, sw_error **err) SW_WUR;
/* The platform slipway runs on (linux/<uname arch mapped to GOARCH>). */
void sw_oci_platform_default(sw_oci_platform *out);
char *sw_oci_platform_str(const sw_oci_platform *p);
void sw_oci_platform_clear(sw_oci_platform *p);
/* Does `have` satisfy `want`? (variant only compared when want has one; amd64 no variant) */
bool sw_oci_platform_match(const sw_oci_platform *want, const sw_oci_platform *have);

typedef struct sw_oci_descriptor {
	char *media_type;
	sw_digest digest;
	int64_t size;
	json_t *annotations;       /* object or NULL; owned */
	sw_oci_platform *platform; /* only in indexes; owned or NULL */
	char *artifact_type;       /* may be NULL */
} sw_oci_descriptor;

void sw_oci_descriptor_clear(sw_oci_descriptor *d);
void sw_oci_descriptor_copy(sw_oci_descriptor *dst, const sw_oci_descriptor *src);
/* The value of annotation `key`, or NULL (points into d). */
const char *sw_oci_descriptor_annotation(const sw_oci_descriptor *d, const char *key);
void sw_oci_descriptor_set_annotation(sw_oci_descriptor *d, const char *key, const char *value);

typedef struct sw_oci_manifest {
	char *media_type; /* as read (OCI or Docker); SW_OCI_MT_MANIFEST when built here */
	sw_oci_descriptor config;
	sw_oci_descriptor *layers;
	size_t n_layers;
	json_t *annotations;
} sw_oci_manifest;

typedef struct sw_oci_index {
	char *media_type;
	sw_oci_descriptor *manifests;
	size_t n_manifests;
	json_t *annotations;
} sw_oci_index;

typedef struct sw_oci_history {
	char *created;
	char *created_by;
	char *comment;
	bool empty_layer;
} sw_oci_history;

/*
 * The image config. The typed fields are a parsed view; `raw` keeps the whole JSON object (with
 * fields slipway does not model) and is what sw_oci_config_serialize writes, after the typed
 * fields are stored back into it.
 */
typedef struct sw_oci_config {
	char *created;
	char *author;
	char *architecture;
	char *os;
	char *variant;
	/* the "config" section */
	char *user;
	char **env;        /* "K=V", NULL-terminated or NULL */
	char **entrypoint; /* NULL when unset */
	char **cmd;        /* NULL when unset */
	char *working_dir;
	char **exposed_ports; /* "80/tcp" */
	char **volumes;
	json_t *labels; /* object or NULL */
	char *stop_signal;
	/* rootfs and history */
	sw_digest *diff_ids;
	size_t n_diff_ids;
	sw_oci_history *history;
	size_t n_history;
	json_t *raw;
} sw_oci_config;

/*
 * Parsers take (buf, len) and validate everything: JSON syntax, schemaVersion 2, the media type
 * (OCI or Docker; with `expected_media_type` non-NULL, the document's must agree), digests,
 * sizes >= 0, required fields. Errors name the field ("manifest: layers[2].digest: ...").
 */
int sw_oci_manifest_parse(sw_oci_manifest *out, const char *buf, size_t len,
                          const char *expected_media_type, sw_error **err) SW_WUR;
int sw_oci_index_parse(sw_oci_index *out, const char *buf, size_t len,
                       const char *expected_media_type, sw_error **err) SW_WUR;
int sw_oci_config_parse(sw_oci_config *out, const char *buf, size_t len, sw_error **err) SW_WUR;
void sw_oci_manifest_clear(sw_oci_manifest *m);
void sw_oci_index_clear(sw_oci_index *ix);
void sw_oci_config_clear(sw_oci_config *c);
/* Sniff a document: returns its mediaType (OCI or Docker manifest or index) or NULL. */
const char *sw_oci_media_type_sniff(const char *buf, size_t len);
bool sw_oci_media_type_is_index(const char *mt);
bool sw_oci_media_type_is_manifest(const char *mt);
bool sw_oci_media_type_is_layer(const char *mt);

/*
 * Serializers write canonical JSON (sorted keys, compact) in OCI media types; the result is a
 * malloc'd string the caller frees, its length in *len.
 */
char *sw_oci_manifest_serialize(const sw_oci_manifest *m, size_t *len);
char *sw_oci_index_serialize(const sw_oci_index *ix, size_t *len);
char *sw_oci_config_serialize(sw_oci_config *c, size_t *len);

/*
 * Pick the manifest for `want` (NULL: linux/amd64) from an index: the first entry that matches,
 * skipping attestation manifests (platform unknown/unknown). SW_ERR_NOT_FOUND lists the
 * platforms the index has.
 */
int sw_oci_index_select(const sw_oci_descriptor **out, const sw_oci_index *ix,
                        const sw_oci_platform *want, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- references */

/*
 * A registry reference "HOST[:PORT]/REPO[:TAG|@DIGEST]". Without a host part (no '.', ':' or
 * "localhost" before the first '/'), "docker.io" is assumed and one-part names get "library/".
 * Tag defaults to "latest" when neither tag nor digest is given.
 */
typedef struct sw_oci_ref {
	char *registry;   /* "127.0.0.1:5000", "registry-1.docker.io" for docker.io */
	char *repository; /* "team/app" */
	char *tag;        /* NULL with a digest only */
	sw_digest digest; /* unset unless "@sha256:..." */
} sw_oci_ref;

int sw_oci_ref_parse(sw_oci_ref *out, const char *s, sw_error **err) SW_WUR;
/* "registry/repo:tag@digest" as the user would write it. Caller frees. */
char *sw_oci_ref_str(const sw_oci_ref *r);
void sw_oci_ref_clear(sw_oci_ref *r);

/* ---------------------------------------------------------------- content store */

/*
 * A local OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/<hex>`. Blobs are written
 * to a temporary file, fsynced and renamed; index.json is rewritten atomically under an
 * exclusive lock (flock on `<dir>/.slipway.lock`), so two writers at once are safe. Tags are
 * index entries carrying the `org.opencontainers.image.ref.name` annotation.
 */
typedef struct sw_oci_store sw_oci_store;

/* Open (creating when `create`) a layout folder. */
int sw_oci_store_open(sw_oci_store **out, const char *dir, bool create, sw_error **err) SW_WUR;
void sw_oci_store_free(sw_oci_store *s);
const char *sw_oci_store_dir(const sw_oci_store *s);
/* The default store: "$SLIPWAY_STATE_DIR/store", else /var/lib/slipway/store for root, else
 * "$XDG_STATE_HOME/slipway/store" (~/.local/state). Caller frees. */
char *sw_oci_store_default_dir(void);

bool sw_oci_store_has_blob(sw_oci_store *s, const sw_digest *d);
/* Path of the blob file (caller frees); it may not exist. */
char *sw_oci_store_blob_path(sw_oci_store *s, const sw_digest *d);
/* Read a whole blob (capped at max bytes) and verify its digest; SW_ERR_NOT_FOUND if absent. */
int sw_oci_store_read_blob(char **out, size_t *out_len, sw_oci_store *s, const sw_digest *d,
                           size_t max, sw_error **err) SW_WUR;
/* Open a blob for streaming; the reader verifies with a hasher of its own. */
int sw_oci_store_open_blob(int *out_fd, int64_t *out_size, sw_oci_store *s, const sw_digest *d,
                           sw_error **err) SW_WUR;
/* Hash the stored file again and compare (SW_ERR_INVALID on mismatch, the bad file removed). */
int sw_oci_store_verify_blob(sw_oci_store *s, const sw_digest *d, sw_error **err) SW_WUR;

/* Streaming blob writer: bytes go to a temporary file and a hasher at once. */
typedef struct sw_oci_blob_writer sw_oci_blob_writer;
int sw_oci_store_blob_begin(sw_oci_blob_writer **out, sw_oci_store *s, sw_error **err) SW_WUR;
int sw_oci_blob_writer_write(sw_oci_blob_writer *w, const void *data, size_t len,
                             sw_error **err) SW_WUR;
/* Bytes written so far. */
int64_t sw_oci_blob_writer_size(const sw_oci_blob_writer *w);
/*
 * fsync and move into place; with `expected` non-NULL the content must match it (else
 * SW_ERR_INVALID and nothing is stored). Frees w in every case.
 */
int sw_oci_blob_writer_commit(sw_digest *out_digest, int64_t *out_size, sw_oci_blob_writer *w,
                              const sw_digest *expected, sw_error **err) SW_WUR;
void sw_oci_blob_writer_abort(sw_oci_blob_writer *w);
/* Store bytes in memory as a blob. */
int sw_oci_store_put_blob(sw_digest *out, sw_oci_store *s, const void *data, size_t len,
                          sw_error **err) SW_WUR;

/* Point `name` at a manifest (or index) descriptor, replacing an older entry of that name. */
int sw_oci_store_tag(sw_oci_store *s, const char *name, const sw_oci_descriptor *desc,
                     sw_error **err) SW_WUR;
int sw_oci_store_untag(sw_oci_store *s, const char *name, sw_error **err) SW_WUR;
/* Find the descriptor tagged `name`, or whose digest is `name` ("sha256:..."). */
int sw_oci_store_resolve(sw_oci_descriptor *out, sw_oci_store *s, const char *name,
                         sw_error **err) SW_WUR;
/* All entries of index.json (descriptors with their ref.name annotations). */
int sw_oci_store_list(sw_oci_index *out, sw_oci_store *s, sw_error **err) SW_WUR;

/*
 * Load an image: resolve `name` in the store; an index is narrowed to `want` (NULL: default
 * platform). Returns the manifest descriptor, the manifest and the config, each verified.
 * Any out parameter may be NULL.
 */
int sw_oci_store_load_image(sw_oci_descriptor *out_desc, sw_oci_manifest *out_manifest,
                            sw_oci_config *out_config, sw_oci_store *s, const char *name,
                            const sw_oci_platform *want, sw_error **err) SW_WUR;

/*
 * Copy the image `desc` (a manifest with its config and layers, or an index with everything it
 * points at) from store `src` into store `dst`, verifying each blob, and tag it `name` there
 * (NULL: no tag). Blobs already in `dst` are not copied again.
 */
int sw_oci_store_copy_image(sw_oci_store *dst, sw_oci_store *src, const sw_oci_descriptor *desc,
                            const char *name, sw_error **err) SW_WUR;

/*
 * Record that blob `d` is known to exist in `registry`/`repository` (for cross-repository
 * mounts) and look such a repository up. The record lives in the store folder.
 */
int sw_oci_store_note_source(sw_oci_store *s, const sw_digest *d, const char *registry,
                             const char *repository, sw_error **err) SW_WUR;
/* A repository of `registry` other than `not_repo` known to hold `d`, or NULL (caller frees). */
char *sw_oci_store_find_source(sw_oci_store *s, const sw_digest *d, const char *registry,
                               const char *not_repo);

/* ---------------------------------------------------------------- layers */

typedef enum {
	SW_OCI_COMPRESS_GZIP = 0,
	SW_OCI_COMPRESS_ZSTD,
	SW_OCI_COMPRESS_NONE,
} sw_oci_compression;

typedef struct sw_oci_layer_opts {
	sw_oci_compression compression;
	int level;                 /* 0: the codec's default */
	bool overlay_upper;        /* convert overlay whiteouts and opaque folders */
	int64_t source_date_epoch; /* clamp mtimes to it; < 0: no clamping */
} sw_oci_layer_opts;

typedef struct sw_oci_layer_info {
	sw_digest diff_id;     /* sha256 of the uncompressed tar */
	sw_digest blob_digest; /* sha256 of the blob as stored */
	int64_t blob_size;
	int64_t tar_size;
	const char *media_type; /* static string */
	uint64_t entries;
} sw_oci_layer_info;

/*
 * Write the tree under `dir` as a pax tar layer into the store, in one streaming pass that
 * yields the diff_id and the blob digest together. Entries are sorted by path; modes (with
 * setuid, setgid, sticky), owners, xattrs, hard links, symlinks, device nodes and empty folders
 * are kept. With overlay_upper, char devices 0/0 become ".wh.NAME" and folders with the
 * trusted.overlay.opaque (or user.overlay.opaque) xattr "y" get ".wh..wh..opq".
 */
int sw_oci_layer_write_dir(sw_oci_layer_info *out, sw_oci_store *s, const char *dir,
                           const sw_oci_layer_opts *opts, sw_error **err) SW_WUR;
/*
 * Re-pack an existing tarball (any compression libarchive reads) as a layer: entries are copied
 * in their order after validation (no "..", no absolute paths, regular types only).
 */
int sw_oci_layer_write_tar(sw_oci_layer_info *out, sw_oci_store *s, const char *tar_path,
                           const sw_oci_layer_opts *opts, sw_error **err) SW_WUR;

typedef struct sw_oci_apply_opts {
	uint64_t max_entries;      /* 0: 1,000,000 */
	uint64_t max_total_bytes;  /* 0: 64 GiB */
	uint64_t max_entry_bytes;  /* 0: 16 GiB */
	bool keep_owners;          /* chown entries (only works as root) */
	bool whiteouts_as_devices; /* write whiteouts as 0/0 char devices (overlay lower) */
} sw_oci_apply_opts;

typedef struct sw_oci_apply_stats {
	uint64_t entries;
	uint64_t bytes;
	uint64_t whiteouts;
} sw_oci_apply_stats;

/*
 * Apply a layer (gzip, zstd or plain; detected) onto the folder `rootfs`, honouring whiteouts
 * and opaque markers. Anything that would write outside the root is refused with an error that
 * names the entry: ".." paths, absolute paths, writes through a symlink, hard links to outside.
 * Entry count and sizes are bounded. stats may be NULL.
 */
int sw_oci_layer_apply_fd(sw_oci_apply_stats *stats, const char *rootfs, int fd,
                          const sw_oci_apply_opts *opts, sw_error **err) SW_WUR;
int sw_oci_layer_apply_mem(sw_oci_apply_stats *stats, const char *rootfs, const void *buf,
                           size_t len, const sw_oci_apply_opts *opts, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- images */

/*
 * Import a root filesystem tarball as a one-layer image tagged `name` in the store: a layer,
 * a config for `platform` (NULL: default) and an OCI manifest. Returns the manifest descriptor.
 */
int sw_oci_image_import(sw_oci_descriptor *out, sw_oci_store *s, const char *tar_path,
                        const char *name, const sw_oci_platform *platform,
                        const sw_oci_layer_opts *opts, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- registry client */

typedef struct sw_oci_credentials {
	char *registry; /* host[:port] it applies to */
	char *username;
	char *password; /* or an identity/registry token */
} sw_oci_credentials;

typedef struct sw_oci_registry_opts {
	sw_http_opts http;
	const char *docker_config; /* NULL: $DOCKER_CONFIG/config.json or ~/.docker/config.json */
	const sw_oci_credentials *credentials; /* slipway's own config; checked first */
	size_t n_credentials;
	const char *const *insecure; /* hosts allowed over plain http, NULL-terminated */
	size_t chunk_size;           /* PATCH chunk size; 0: 16 MiB */
	size_t monolithic_max;       /* blobs up to this go in one PUT; 0: 16 MiB */
} sw_oci_registry_opts;

typedef struct sw_oci_transfer_stats {
	uint64_t blobs_uploaded;
	uint64_t blobs_skipped; /* already there (HEAD) */
	uint64_t blobs_mounted; /* cross-repository mount */
	uint64_t blobs_downloaded;
	uint64_t bytes_up;
	uint64_t bytes_down;
	uint64_t requests;
} sw_oci_transfer_stats;

/* A client for one registry host; keeps connections and Bearer tokens (until they expire). */
typedef struct sw_oci_registry sw_oci_registry;

/*
 * Plain http is used only for 127.0.0.0/8, ::1, "localhost" and hosts in opts->insecure;
 * everything else is https with verification.
 */
int sw_oci_registry_new(sw_oci_registry **out, const char *host, const sw_oci_registry_opts *opts,
                        sw_error **err) SW_WUR;
void sw_oci_registry_free(sw_oci_registry *r);
const sw_oci_transfer_stats *sw_oci_registry_stats(const sw_oci_registry *r);

/*
 * Pull `ref` into the store: the manifest (an index is narrowed to `want`, NULL: default
 * platform), config and layers, every blob verified, interrupted downloads resumed or retried.
 * Blobs already in the store are not downloaded. The manifest is stored as it came (its bytes
 * keep their digest). Returns the platform manifest's descriptor.
 */
int sw_oci_registry_pull(sw_oci_descriptor *out, sw_oci_registry *r, sw_oci_store *s,
                         const sw_oci_ref *ref, const sw_oci_platform *want, sw_error **err) SW_WUR;
/*
 * Push the image `desc` (a manifest; an index with its manifests) from the store to `ref`:
 * blobs first (HEAD to skip, mount from another repository when the store knows one, else
 * upload: POST+PUT up to monolithic_max, chunked PATCH above), the config before the manifest,
 * the manifest last with its own Content-Type, by tag (ref->tag) or by digest.
 */
int sw_oci_registry_push(sw_oci_registry *r, sw_oci_store *s, const sw_oci_descriptor *desc,
                         const sw_oci_ref *ref, sw_error **err) SW_WUR;
/* Fetch a manifest's bytes and descriptor without storing it. */
int sw_oci_registry_get_manifest(char **out, size_t *out_len, sw_oci_descriptor *out_desc,
                                 sw_oci_registry *r, const sw_oci_ref *ref, sw_error **err) SW_WUR;
/*
 * Fetch a small blob (an image config) of ref's repository into memory, verified against
 * `desc` (digest and size); refused past `max` bytes. *out (NUL-terminated) is the caller's.
 */
int sw_oci_registry_get_blob(char **out, size_t *out_len, sw_oci_registry *r, const sw_oci_ref *ref,
                             const sw_oci_descriptor *desc, size_t max, sw_error **err) SW_WUR;

/*
 * Look up credentials for `registry`: slipway's list first, then the Docker config file. When
 * neither has any, returns 0 with out->username NULL; a config file that cannot be parsed is an
 * error naming the file.
 */
int sw_oci_credentials_lookup(sw_oci_credentials *out, const sw_oci_registry_opts *opts,
                              const char *registry, sw_error **err) SW_WUR;
void sw_oci_credentials_clear(sw_oci_credentials *c);

#endif
