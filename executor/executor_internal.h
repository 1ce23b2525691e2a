/* SPDX-License-Identifier: Apache-2.0 */
/*
 * executor internals: helpers shared between the files of the executor module (sw_exec__
 * prefix). Not for other modules. Each section belongs to the file named in its title. The
 * layout on disk is STATE/exec/<id>/ per container or host-side overlay (the "box": owner label,
 * runtime spec, generated /etc files, the rootfs mount point) and STATE/exec/runtime/<name>/ as
 * the OCI runtime's --root.
 */
#ifndef SW_EXECUTOR_INTERNAL_H
#define SW_EXECUTOR_INTERNAL_H

#include "executor/executor.h"

#include <jansson.h>
#include <sys/types.h>

/* ---------------------------------------------------------------- state and boxes (state.c) */

#define SW_EXEC__OWNER_FILE "owner"
#define SW_EXEC__ROOTFS_DIR "rootfs"
#define SW_EXEC__WORK_PREFIX "slipway-work-"
#define SW_EXEC__RUNTIME_DIR "runtime"

/*
 * STATE/exec, created when missing and made canonical (symlinks resolved, as /proc/self/
 * mountinfo shows paths). `state_dir` NULL: $SLIPWAY_STATE_DIR, /var/lib/slipway for root, else
 * the XDG state folder (the parent of the default content store). Caller frees.
 */
int sw_exec__exec_dir(char **out, const char *state_dir, sw_error **err) SW_WUR;

/* One container's (or host overlay's) folder STATE/exec/<id>/ with its owner label. */
typedef struct sw_exec__box {
	char *id;      /* "<prefix>-<16 hex>" */
	char *dir;     /* STATE/exec/<id> (canonical) */
	char *rootfs;  /* dir/rootfs: the mount point */
	char *workdir; /* overlay work folder (a sibling of the upper), NULL when none */
	int dirfd;     /* O_PATH|O_DIRECTORY fd of dir */
	bool mounted;
} sw_exec__box;

/*
 * Create STATE/exec/<id>/ (mode 0700) with its rootfs/ mount point and the owner label: this
 * process's pid and start time, and `runtime_path`/`runtime_root` when a runtime container
 * will use it (NULL for a host-side overlay).
 */
int sw_exec__box_create(sw_exec__box *out, const char *exec_dir, const char *prefix,
                        const char *runtime_path, const char *runtime_root, sw_error **err) SW_WUR;
/* Append "key=value" to the box's owner label. */
int sw_exec__box_label(sw_exec__box *b, const char *key, const char *value, sw_error **err) SW_WUR;
/*
 * Unmount everything under the box (deepest first, detaching busy mounts), remove the work
 * folder and the box folder. The folder is kept (and an error returned) when a mount could not
 * be removed: nothing is ever deleted through a mount.
 */
int sw_exec__box_destroy(sw_exec__box *b, sw_error **err) SW_WUR;
void sw_exec__box_clear(sw_exec__box *b);

/* The owner label of a box folder, parsed. */
typedef struct sw_exec__owner {
	pid_t pid;
	unsigned long long start;
	char *runtime; /* runtime executable, or NULL */
	char *root;    /* runtime --root, or NULL */
	char *workdir; /* overlay work folder, or NULL */
} sw_exec__owner;

int sw_exec__owner_parse(sw_exec__owner *out, const char *text, sw_error **err) SW_WUR;
void sw_exec__owner_clear(sw_exec__owner *o);
/* True when the process of the label still runs (same pid AND same start time). */
bool sw_exec__owner_alive(const sw_exec__owner *o);

/* Unmount everything at or under `prefix`, deepest first; busy ones are detached. */
int sw_exec__unmount_under(const char *prefix, sw_error **err) SW_WUR;

/* Remove a work folder recorded in a label, only when its name is one slipway makes. */
int sw_exec__workdir_remove(const char *workdir, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- overlay (overlay.c) */

/*
 * Mount at `target` an overlay of `lowers` (top first) with `upper` and `workdir` (the work
 * folder is created by the caller, empty). n_lower == 0: bind mount of `upper`. upper NULL: a
 * read-only overlay of the lowers (`empty` is an empty folder added below a single lower, as
 * overlayfs wants two lowers without an upper). Uses the new mount API ("lowerdir+") and falls
 * back to the classic option string on kernels without it.
 */
int sw_exec__overlay_mount_at(const char *target, const char *const *lowers, size_t n_lower,
                              const char *upper, const char *workdir, const char *empty,
                              sw_error **err) SW_WUR;
/* For tests: refuse the new mount API, so the classic option string is used. */
extern bool sw_exec__overlay_no_new_api;
/*
 * Make a fresh work folder beside `upper` (same filesystem, as overlayfs wants), named
 * "PID-START.slipway-work-XXXXXX" after this process.
 */
int sw_exec__workdir_create(char **out, const char *upper, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- users (user.c) */

/* sw_exec_user_resolve plus the home folder of the passwd entry ("/" when none). */
int sw_exec__user_resolve_full(uid_t *uid, gid_t *gid, gid_t **groups, size_t *n_groups,
                               char **home, const char *spec, sw_exec_read_file_cb read_file,
                               void *payload, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- runtime (runtime.c) */

typedef struct sw_exec__runtime {
	char *path; /* the executable */
	char *name; /* its base name: the folder of its --root */
	char *root; /* STATE/exec/runtime/<name> */
	bool crun;  /* crun's command line (--log=file:PATH, --cgroup-manager) */
	/*
	 * crun refuses hybrid cgroup hosts whose cgroup2 hierarchy has controllers; it then runs in
	 * a private mount namespace without /sys/fs/cgroup/unified (legacy cgroup v1 mode).
	 */
	bool hide_unified;
} sw_exec__runtime;

/* Find the runtime ("runc" default, "crun", or a path) and prepare its --root folder. */
int sw_exec__runtime_init(sw_exec__runtime *out, const char *runtime, const char *exec_dir,
                          sw_error **err) SW_WUR;
/* Same, for a runtime executable and root already known (a sweep reading a label). */
void sw_exec__runtime_init_known(sw_exec__runtime *out, const char *path, const char *root);
void sw_exec__runtime_clear(sw_exec__runtime *rt);

/*
 * Start `RUNTIME --root ROOT [log options] ARGS...` with stdin /dev/null and stdout/stderr on
 * the given fds (-1: /dev/null), in its own process group, signals reset. `log` NULL: no log.
 */
int sw_exec__runtime_spawn(pid_t *out_pid, const sw_exec__runtime *rt, const char *log,
                           const char *const *args, int out_fd, int err_fd, sw_error **err) SW_WUR;
/*
 * Run a short runtime command (kill, delete, list) to its end, killing it after timeout_ms.
 * *status is its exit code (128+N for a signal); *output (may be NULL) gets stdout+stderr.
 */
int sw_exec__runtime_cmd(int *status, char **output, const sw_exec__runtime *rt,
                         const char *const *args, int64_t timeout_ms, sw_error **err) SW_WUR;
/* Whether the runtime still has state for `id` (a folder under its root). */
bool sw_exec__runtime_has(const sw_exec__runtime *rt, const char *id);
/* `kill --all ID SIGNAL` (KILL: `kill ID KILL`, the init's death ends the PID namespace);
 * errors ignored (best effort). */
int sw_exec__runtime_kill(const sw_exec__runtime *rt, const char *id, const char *sig);
/* `delete --force ID` when the runtime still knows `id`. */
int sw_exec__runtime_delete(const sw_exec__runtime *rt, const char *id, sw_error **err) SW_WUR;
/* Milliseconds of CLOCK_MONOTONIC. */
int64_t sw_exec__now_ms(void);

/* ---------------------------------------------------------------- runtime spec (spec.c) */

typedef struct sw_exec__spec_in {
	const sw_exec_spec *spec;
	const char *id;
	const char *rootfs; /* the merged mount */
	const char *bundle; /* the box folder: hosts, resolv.conf, hostname live here */
	uid_t uid;
	gid_t gid;
	const gid_t *groups;
	size_t n_groups;
	char *const *env; /* the final environment */
	const char *cwd;
	const char *hostname;
	const char *cgroups_path;
	uint64_t nofile; /* RLIMIT_NOFILE soft and hard; 0: 1048576 */
} sw_exec__spec_in;

/* The runtime spec (config.json) as JSON; caller json_decref()s it. */
json_t *sw_exec__spec_build(const sw_exec__spec_in *in);
/* Docker's default capability set (NULL-terminated), for tests. */
extern const char *const sw_exec__default_caps[];

/* ---------------------------------------------------------------- pods (pod.c, netns.c, docker*.c)
 */

/* The oci pod network (netns.c): a namespace file STATE/exec/netns/<id> with an owner label
 * STATE/exec/netns/<id>.owner (pid, start time, slirp4netns pid and start time). */
typedef struct sw_exec__netns {
	char *path;                     /* the namespace file (bind mount of /proc/PID/ns/net) */
	char *label;                    /* its owner label file */
	pid_t slirp_pid;                /* 0: none */
	unsigned long long slirp_start; /* its start time (field 22 of /proc/PID/stat) */
	int exit_fd; /* write end of slirp4netns's --exit-fd pipe (-1: none): slirp4netns
	              * exits by itself when this process dies */
} sw_exec__netns;
int sw_exec__netns_create(sw_exec__netns *out, const char *exec_dir, const char *name, bool slirp,
                          sw_error **err) SW_WUR;
int sw_exec__netns_destroy(sw_exec__netns *ns, sw_error **err) SW_WUR;
/* Remove dead owners' namespaces and slirp4netns processes under exec_dir/netns. */
int sw_exec__netns_sweep(unsigned *removed, const char *exec_dir, sw_error **err) SW_WUR;

/* The docker backend (docker*.c). A pod of the docker backend is an sw_exec__docker_pod. */
typedef struct sw_exec__docker_pod sw_exec__docker_pod;
int sw_exec__docker_pod_new(sw_exec__docker_pod **out, const sw_exec_backend_opts *b,
                            sw_exec_pod_net net, const char *name, const char *const *aliases,
                            sw_error **err) SW_WUR;
int sw_exec__docker_pod_destroy(sw_exec__docker_pod *p, sw_error **err) SW_WUR;
int sw_exec__docker_pod_run(sw_exec_result *out, sw_exec__docker_pod *p, const sw_exec_task *t,
                            sw_error **err) SW_WUR;
/* The PID (in the host's pid namespace) of the pod's first running container, for setns into
 * its network; SW_ERR_NOT_FOUND when none runs yet. */
int sw_exec__docker_pod_net_pid(pid_t *out, sw_exec__docker_pod *p, sw_error **err) SW_WUR;
const char *sw_exec__docker_pod_name(const sw_exec__docker_pod *p);
int sw_exec__docker_sweep(unsigned *removed, const char *docker_host, sw_error **err) SW_WUR;

#endif
