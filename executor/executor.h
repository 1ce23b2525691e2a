/* SPDX-License-Identifier: Apache-2.0 */
/*
 * executor: running one container. The root filesystem is an overlayfs over read-only lower
 * folders (unpacked layer snapshots, overlay-format whiteouts) with a fresh upper folder that
 * the caller keeps afterwards (it is the new layer's diff). The process runs under a real OCI
 * runtime (runc or crun) with a generated runtime spec: Docker's default capabilities, /proc,
 * /dev, /sys, /etc/hosts, /etc/resolv.conf, bind/tmpfs mounts, network none or host. Output
 * streams to a callback; a timeout or a cancel kills the whole container. Everything slipway
 * makes for a container (runtime state, mount point, bundle) is labelled with the owning
 * process so that a later sweep removes what a killed slipway left behind.
 */
#ifndef SW_EXECUTOR_H
#define SW_EXECUTOR_H

#include "cache/cache.h"
#include "common/common.h"
#include "oci/oci.h"

#include <signal.h>

typedef enum {
	SW_EXEC_NET_NONE = 0, /* a network namespace with loopback only */
	SW_EXEC_NET_HOST,     /* the host's network */
	SW_EXEC_NET_PATH,     /* join the network namespace at sw_exec_spec.netns_path */
} sw_exec_net;

typedef struct sw_exec_mount {
	const char *type;        /* "bind" or "tmpfs" */
	const char *source;      /* host path for bind; NULL for tmpfs */
	const char *destination; /* absolute path in the container */
	bool readonly;
	mode_t mode; /* tmpfs mode (0: 0755) */
} sw_exec_mount;

typedef enum { SW_EXEC_STDOUT = 1, SW_EXEC_STDERR = 2 } sw_exec_stream;

/* Called from the executing thread with output as it arrives (not NUL-terminated). */
typedef void (*sw_exec_output_cb)(sw_exec_stream stream, const char *data, size_t len,
                                  void *payload);

typedef struct sw_exec_spec {
	/* root filesystem: lower folders, TOP FIRST (the order of overlayfs lowerdir=) */
	const char *const *lower_dirs;
	size_t n_lower;
	const char *upper_dir; /* created when missing; kept for the caller */
	bool readonly_rootfs;  /* no upper folder: the rootfs is the read-only lowers */

	char *const *argv;    /* the process; argv[0] searched in the container's PATH */
	char *const *env;     /* "K=V", NULL-terminated */
	const char *cwd;      /* absolute; created in the rootfs when missing; NULL: "/" */
	const char *user;     /* "uid[:gid]" or "name[:group]" resolved through the rootfs's
	                       * /etc/passwd and /etc/group; NULL: root */
	const char *hostname; /* NULL: "slipway" */

	const sw_exec_mount *mounts;
	size_t n_mounts;
	sw_exec_net network;
	const char *netns_path;         /* SW_EXEC_NET_PATH: a network namespace file */
	const char *const *extra_hosts; /* names that resolve to 127.0.0.1 in /etc/hosts,
	                                 * NULL-terminated or NULL */
	uint32_t cpu_millis;            /* CPU quota in thousandths of a CPU; 0: none */
	const char *const *dns;         /* nameservers for /etc/resolv.conf, NULL-terminated;
	                                 * NULL: the host's file with SW_EXEC_NET_HOST,
	                                 * else 127.0.0.1 (lookups fail at once) */

	const char *runtime;   /* "runc" (default), "crun", or a path */
	const char *state_dir; /* slipway's state folder; runtime state and bundles go under
	                        * STATE/exec; NULL: the default state folder */
	const char *id_prefix; /* container id prefix, e.g. "build" (ids are unique) */

	int64_t timeout_ms;            /* 0: none */
	volatile sig_atomic_t *cancel; /* non-zero: stop the container (SIGTERM to every process,
	                                * SIGKILL after the grace); 2 or more: SIGKILL at once */
	int64_t kill_grace_ms;         /* SIGTERM then SIGKILL after this; 0: 10000 */
	uint64_t memory_limit;         /* bytes; 0: none */
	uint64_t pids_limit;           /* 0: none */

	sw_exec_output_cb on_output;
	void *payload;
} sw_exec_spec;

typedef struct sw_exec_result {
	int exit_code;  /* the process's exit status, or 128+signal */
	int signal;     /* the signal that ended it, or 0 */
	bool timed_out; /* killed (SIGKILL, at once) because timeout_ms passed */
	bool cancelled; /* killed because *cancel became non-zero */
} sw_exec_result;

/*
 * Run one container to its end: mount the overlay, write the runtime spec, `RUNTIME run`,
 * stream the output, wait, then delete the container and unmount, whatever happened. A process
 * that exits non-zero is NOT an error: see result.exit_code. Errors are for what prevented the
 * run (no runtime, mount failure, the executable not found is exit code 127 as in Docker).
 */
int sw_exec_container_run(sw_exec_result *out, const sw_exec_spec *spec, sw_error **err) SW_WUR;

/*
 * Remove what slipway processes that no longer live left behind under STATE/exec: runtime
 * containers (killed and deleted), overlay mounts, bundle folders. Returns how many containers
 * were removed in *removed (may be NULL). Live owners' containers are never touched.
 */
int sw_exec_sweep(unsigned *removed, const char *state_dir, const char *runtime,
                  sw_error **err) SW_WUR;

/*
 * Resolve "user[:group]" (names or numbers) through the files etc/passwd and etc/group found
 * by `read_file` (which returns a malloc'd file content for a path in the image, or
 * SW_ERR_NOT_FOUND). A numeric user that is not in passwd is fine (gid 0 unless given); an
 * unknown name is SW_ERR_NOT_FOUND naming it. Supplementary groups from etc/group go in
 * *groups (caller frees) when groups is not NULL.
 */
typedef int (*sw_exec_read_file_cb)(char **out, size_t *out_len, const char *path, void *payload,
                                    sw_error **err);
int sw_exec_user_resolve(uid_t *uid, gid_t *gid, gid_t **groups, size_t *n_groups, const char *spec,
                         sw_exec_read_file_cb read_file, void *payload, sw_error **err) SW_WUR;

/*
 * Mount an overlay of `lower_dirs` (top first) with `upper_dir` at a fresh mount point under
 * STATE/exec, for host-side work on a rootfs (COPY, WORKDIR). *out_mountpoint is the merged
 * folder; sw_exec_overlay_unmount removes the mount and its work folder. With n_lower == 0 the
 * upper folder itself is bind-mounted (a scratch rootfs).
 */
int sw_exec_overlay_mount(char **out_mountpoint, const char *state_dir,
                          const char *const *lower_dirs, size_t n_lower, const char *upper_dir,
                          sw_error **err) SW_WUR;
int sw_exec_overlay_unmount(const char *mountpoint, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- pods: jobs and services */

/*
 * A pod is what one pipeline job runs in: one network shared by the job's container and its
 * service containers (services are reachable on 127.0.0.1 and by their names), and the backend
 * that runs containers from images of slipway's store.
 *
 * Backend `oci`: containers under runc/crun over overlayfs (lower folders: the image's layer
 * snapshots from the cache, a fresh upper folder per container, removed afterwards). The pod's
 * network is a network namespace of slipway's own, kept as a file under STATE/exec/netns/ with
 * an owner label: `none` has loopback only; `private` adds a tap device driven by a slirp4netns
 * process (outbound access, no inbound); `host` is the host's network (no namespace).
 * Backend `docker`: the Docker Engine API over its unix socket (libcurl); images are loaded from
 * the store when the daemon does not have them (by config digest); containers are labelled
 * slipway.owner=<pid>-<starttime> and share the network of the pod's first container
 * (NetworkMode container:<id>); `private` uses Docker's default bridge network.
 */
typedef enum { SW_EXEC_BACKEND_OCI = 0, SW_EXEC_BACKEND_DOCKER } sw_exec_backend_kind;
typedef enum {
	SW_EXEC_POD_NET_NONE = 0,
	SW_EXEC_POD_NET_PRIVATE,
	SW_EXEC_POD_NET_HOST
} sw_exec_pod_net;

typedef struct sw_exec_backend_opts {
	sw_exec_backend_kind kind;
	const char *state_dir;   /* NULL: the default state folder */
	const char *runtime;     /* oci: "runc" (default), "crun" or a path */
	const char *docker_host; /* docker: "unix:///path"; NULL: $DOCKER_HOST, else
	                          * unix:///var/run/docker.sock */
	sw_oci_store *store;     /* where images come from (kept, not owned) */
	sw_cache *cache;         /* oci: layer snapshots (kept, not owned) */
	uint64_t memory_limit;   /* per container, bytes; 0: none */
	uint64_t pids_limit;     /* per container; 0: none */
	uint32_t cpu_millis;     /* per container; 0: none */
	int64_t kill_grace_ms;   /* SIGTERM, then SIGKILL after this; 0: 10000 */
} sw_exec_backend_opts;

typedef struct sw_exec_pod sw_exec_pod;

/*
 * Make a pod: the network (a namespace, and slirp4netns for `private`, for oci) and the names
 * that resolve to 127.0.0.1 inside it (`aliases`, NULL-terminated or NULL; the services' names).
 * `name` labels what is made ("unit", "db"): letters, digits, '-', '_' are kept in ids.
 * The options are copied; store and cache must outlive the pod.
 */
int sw_exec_pod_new(sw_exec_pod **out, const sw_exec_backend_opts *b, sw_exec_pod_net net,
                    const char *name, const char *const *aliases, sw_error **err) SW_WUR;
/*
 * Remove the pod: containers still running in it are stopped (grace, then kill), then the
 * network (slirp4netns stopped, namespace file unmounted and removed). Frees p, even on error.
 */
int sw_exec_pod_destroy(sw_exec_pod *p, sw_error **err) SW_WUR;

/* One container to run in a pod from an image of the store. */
typedef struct sw_exec_task {
	const char *image; /* a store name ("app:dev") or a manifest digest ("sha256:...") */
	char *const *argv; /* the process (entrypoint/cmd already resolved by the caller) */
	char *const *env;  /* "K=V", complete (the caller merged the image's Env) */
	const char *cwd;   /* NULL: "/" */
	const char *user;  /* NULL: root */
	const sw_exec_mount *mounts;
	size_t n_mounts;
	const char *name; /* label for ids ("job-unit", "svc-db") */
	int64_t timeout_ms;
	volatile sig_atomic_t *cancel;
	sw_exec_output_cb on_output;
	void *payload;
} sw_exec_task;

/*
 * Run a task in the pod to its end (blocking); several threads may run tasks of one pod at once
 * (services in the background, the job, a readiness command). Same result rules as
 * sw_exec_container_run. For oci, the image's layers are unpacked into cache snapshots on first
 * use; for docker, the image is loaded into the daemon when missing.
 */
int sw_exec_pod_run(sw_exec_result *out, sw_exec_pod *p, const sw_exec_task *t,
                    sw_error **err) SW_WUR;

/*
 * Wait until a TCP connection to 127.0.0.1:port inside the pod's network succeeds, trying every
 * interval_ms (0: 200): 0 when it did, SW_ERR_TIMEOUT after timeout_ms (0: no limit),
 * SW_ERR_CANCELLED when *cancel became non-zero. For docker, the pod's first container must be
 * running (until it does, attempts count as failed).
 */
int sw_exec_pod_wait_tcp(sw_exec_pod *p, int port, int64_t timeout_ms, int64_t interval_ms,
                         volatile sig_atomic_t *cancel, sw_error **err) SW_WUR;

/* The backend's name for messages: "oci (runc)", "docker (unix:///...)". */
const char *sw_exec_pod_backend_name(const sw_exec_pod *p);

/*
 * Remove what dead slipway processes left of pods: network namespace files (unmounted),
 * slirp4netns processes they started (checked by pid and start time), and for docker the
 * containers labelled with a dead owner. Live owners' things are never touched.
 * sw_exec_sweep calls the oci part (after its containers); this one does the oci part too and
 * adds docker when docker_host is not NULL. *removed counts namespaces and docker containers.
 */
int sw_exec_pod_sweep(unsigned *removed, const char *state_dir, const char *docker_host,
                      sw_error **err) SW_WUR;

#endif
