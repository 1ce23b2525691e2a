/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The docker backend's own internals, shared by executor/docker*.c only: a client of the Docker
 * Engine API (v1.41, Debian's dockerd 20.10) over its unix socket with libcurl (never any other
 * transport), its JSON calls and error mapping, and the image loader that makes an image of
 * slipway's store known to the daemon (by its config digest, which is Docker's image ID).
 */
#ifndef SW_EXECUTOR_DOCKER_INTERNAL_H
#define SW_EXECUTOR_DOCKER_INTERNAL_H

#include "executor/executor_internal.h"

#include <curl/curl.h>
#include <jansson.h>

#define SW_EXEC__DOCKER_API "v1.41"
#define SW_EXEC__DOCKER_LABEL_OWNER "slipway.owner"
#define SW_EXEC__DOCKER_LABEL_POD "slipway.pod"
#define SW_EXEC__DOCKER_LABEL_POD_ID "slipway.pod.id"

/* A daemon address: "unix:///path" only. */
typedef struct sw_exec__dk {
	char *host;   /* as given or defaulted: "unix:///var/run/docker.sock" */
	char *socket; /* the socket's path */
} sw_exec__dk;

/* docker_host NULL: $DOCKER_HOST, else unix:///var/run/docker.sock. tcp:// etc. are refused. */
int sw_exec__dk_init(sw_exec__dk *out, const char *docker_host, sw_error **err) SW_WUR;
void sw_exec__dk_clear(sw_exec__dk *dk);

/*
 * An easy handle for METHOD http://localhost/v1.41<path> over the socket (no body, no
 * timeout). The caller sets callbacks and frees it.
 */
CURL *sw_exec__dk_handle(const sw_exec__dk *dk, const char *method, const char *path);

/*
 * One request with an optional JSON body; the answer's body is parsed as JSON when it is JSON
 * (else NULL) into *out (may be NULL). *status is the HTTP status. An error only when no answer
 * came (the daemon is not there, the time ran out). timeout_ms 0: none.
 */
int sw_exec__dk_call(long *status, json_t **out, const sw_exec__dk *dk, const char *method,
                     const char *path, json_t *body, long timeout_ms, sw_error **err) SW_WUR;

/*
 * An error for a non-2xx answer: "<what>: HTTP <status>: <daemon's message>", with code
 * SW_ERR_NOT_FOUND for 404, SW_ERR_CONFLICT for 409, else SW_ERR_GENERIC.
 */
int sw_exec__dk_status_error(sw_error **err, long status, json_t *body, const char *what);
/* The "message" of a daemon error answer, or "" (points into body). */
const char *sw_exec__dk_message(json_t *body);

/* A curl error as an sw_error naming the daemon and the request. */
int sw_exec__dk_curl_error(sw_error **err, const sw_exec__dk *dk, CURLcode rc, const char *what,
                           const char *errbuf);

/*
 * Make the image `name` (a store name or "sha256:" manifest digest) known to the daemon and
 * return its Docker image ID ("sha256:<config digest>") in *out_id. When the daemon lacks it,
 * a docker-archive tarball (manifest.json, the config, the layers: gzip and plain blobs as
 * they are, zstd ones decompressed) is streamed to POST /images/load. Loads are serialised in
 * this process, so concurrent runs of one image load it once. *loaded (may be NULL) tells
 * whether this call loaded it.
 */
int sw_exec__dk_image_ensure(sw_digest *out_id, bool *loaded, const sw_exec__dk *dk,
                             sw_oci_store *store, const char *name, sw_error **err) SW_WUR;

/* How many images this process loaded into a daemon (for tests). */
unsigned sw_exec__dk_loads(void);

#endif
