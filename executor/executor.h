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

#include "common/common.h"

#include <signal.h>

typedef enum {
	SW_EXEC_NET_NONE = 0, /* a network namespace with loopback only */
	SW_EXEC_NET_HOST,     /* the host's network */
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

	const char *runtime;   /* "runc" (default), "crun", or a path */
	const char *state_dir; /* slipway's state folder; runtime state and bundles go under
	                        * STATE/exec; NULL: the default state folder */
	const char *id_prefix; /* container id prefix, e.g. "build" (ids are unique) */

	int64_t timeout_ms;            /* 0: none */
	volatile sig_atomic_t *cancel; /* when it becomes non-zero, the container is stopped */
	int64_t kill_grace_ms;         /* SIGTERM then SIGKILL after this; 0: 10000 */
	uint64_t memory_limit;         /* bytes; 0: none */
	uint64_t pids_limit;           /* 0: none */

	sw_exec_output_cb on_output;
	void *payload;
} sw_exec_spec;

typedef struct sw_exec_result {
	int exit_code;  /* the process's exit status, or 128+signal */
	int signal;     /* the signal that ended it, or 0 */
	bool timed_out; /* killed because timeout_ms passed (exit_code then 128+SIGKILL/TERM) */
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

#endif
