/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cache handle: opening STATE/cache (folders, the shared lock every handle holds, this
 * handle's lease), the sweep of scratch folders left by processes that are gone, scratch
 * folders themselves, owner tags (pid plus process start time, robust to pid reuse), sizes as
 * users write them, and the small string counter the other files share.
 */
#include "cache/cache_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#define STALE_UNOWNED_SECONDS (24 * 60 * 60)

/* ---------------------------------------------------------------- owner tags */

/* The start time (clock ticks after boot, field 22 of /proc/PID/stat) of a process; 0 when
 * /proc cannot tell, -1 when the process does not exist. */
static long long proc_start_time(pid_t pid)
{
	unsigned long long v = 0;
	int r = sw_proc_starttime(&v, pid);
	if (r == 0)
		return (long long)v;
	if (r != -ENOENT)
		return 0;
	/* no such process, unless /proc is missing altogether */
	if (access("/proc/self/stat", R_OK) < 0)
		return kill(pid, 0) == 0 || errno == EPERM ? 0 : -1;
	return -1;
}

void sw_cache__owner_tag(char *buf)
{
	pid_t pid = getpid();
	long long start = proc_start_time(pid);
	snprintf(buf, SW_CACHE__OWNER_MAX, "%d-%lld", (int)pid, start < 0 ? 0 : start);
}

int sw_cache__owner_alive(const char *name)
{
	char *end = NULL;
	errno = 0;
	long pid = strtol(name, &end, 10);
	if (errno || end == name || *end != '-' || pid <= 0 || pid > INT_MAX)
		return -1;
	const char *s = end + 1;
	long long start = strtoll(s, &end, 10);
	if (end == s || *end != '.' || start < 0)
		return -1;
	long long now = proc_start_time((pid_t)pid);
	if (now < 0)
		return 0;
	/* 0: /proc could not tell the start time, so the pid alone has to do */
	if (now == 0 || start == 0)
		return 1;
	return now == start ? 1 : 0;
}

/* ---------------------------------------------------------------- sweeping tmp/ */

/*
 * Remove what processes that are gone left in tmp/: scratch folders whose owner tag names a
 * dead process, and anything without an owner tag older than a day. Folders of live owners are
 * kept, however old (a long build is still using them). Failures are only logged: a sweep
 * must not stop the cache from opening.
 */
static void sweep_tmp(sw_cache *c)
{
	DIR *d = opendir(c->tmp);
	if (!d)
		return;
	time_t now = time(NULL);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		int alive = sw_cache__owner_alive(de->d_name);
		if (alive == 1)
			continue;
		cleanup_free char *p = sw_path_join(c->tmp, de->d_name);
		if (alive < 0) {
			struct stat st;
			if (lstat(p, &st) < 0 || now - st.st_mtime < STALE_UNOWNED_SECONDS)
				continue;
		}
		if (sw_fs_has_mounts_under(p)) {
			SW_LOG(SW_LOG_DEBUG, "cache: keep '%s': something is mounted under it", p);
			continue;
		}
		sw_error *e = NULL;
		if (sw_fs_rm_rf(p, &e) < 0)
			SW_LOG(SW_LOG_DEBUG, "cache: sweep: %s", sw_error_msg(e));
		else
			SW_LOG(SW_LOG_DEBUG, "cache: removed stale scratch folder '%s'", p);
		sw_error_free(e);
	}
	closedir(d);
}

/* Leftover temporary files of atomic writes (".NAME.tmp-XXXXXX") older than a day. */
static void sweep_dot_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	time_t now = time(NULL);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] != '.' || !strstr(de->d_name, ".tmp-"))
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) && now - st.st_mtime >= STALE_UNOWNED_SECONDS)
			(void)unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

/* Leases of processes that are gone (a handle that was never freed). */
static void sweep_leases(sw_cache *c)
{
	DIR *d = opendir(c->leases);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (sw_cache__owner_alive(de->d_name) == 0)
			(void)unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

/* ---------------------------------------------------------------- open and free */

static int open_lock_file(int *out, const char *root, const char *name, sw_error **err)
{
	cleanup_free char *p = sw_path_join(root, name);
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return sw_error_os(err, errno, "open the cache lock '%s'", p);
	*out = fd;
	return 0;
}

static int flock_retry(int fd, int op)
{
	int r;
	do {
		r = flock(fd, op);
	} while (r < 0 && errno == EINTR);
	return r;
}

static int write_lease(sw_cache *c, sw_error **err)
{
	char owner[SW_CACHE__OWNER_MAX];
	sw_cache__owner_tag(owner);
	char *tmpl = sw_xasprintf("%s/%s.XXXXXX", c->leases, owner);
	int fd = mkostemp(tmpl, O_CLOEXEC);
	if (fd < 0) {
		int r = sw_error_os(err, errno, "create the cache lease '%s'", tmpl);
		free(tmpl);
		return r;
	}
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%lld\n", (long long)c->opened);
	int r = sw_fs_write_all(fd, buf, (size_t)n, err);
	close(fd);
	if (r < 0) {
		unlink(tmpl);
		free(tmpl);
		return sw_error_wrap(err, "write the cache lease");
	}
	c->lease_path = tmpl;
	return 0;
}

int sw_cache_open(sw_cache **out, const char *state_dir, sw_oci_store *store, sw_error **err)
{
	*out = NULL;
	if (!state_dir || !*state_dir)
		return sw_error_set(err, SW_ERR_INVALID, "cache: no state folder given");
	if (!store)
		return sw_error_set(err, SW_ERR_INVALID, "cache: no content store given");
	sw_cache *c = sw_xcalloc(1, sizeof(*c));
	c->lock_fd = -1;
	c->index_lock_fd = -1;
	pthread_mutex_init(&c->index_mu, NULL);
	c->pid = getpid();
	c->store = store;
	c->root = sw_path_join(state_dir, "cache");
	c->snapshots = sw_path_join(c->root, "snapshots");
	c->index = sw_path_join(c->root, "index");
	c->tmp = sw_path_join(c->root, "tmp");
	c->leases = sw_path_join(c->root, "leases");
	int r;
	const char *dirs[] = { c->root, c->snapshots, c->index, c->tmp, c->leases };
	for (size_t i = 0; i < SW_ARRAY_SIZE(dirs); i++) {
		if ((r = sw_fs_mkdir_p(dirs[i], 0700, err)) < 0)
			goto fail;
	}
	if ((r = open_lock_file(&c->lock_fd, c->root, "lock", err)) < 0 ||
	    (r = open_lock_file(&c->index_lock_fd, c->root, "index.lock", err)) < 0)
		goto fail;
	if (flock_retry(c->lock_fd, LOCK_SH) < 0) {
		r = sw_error_os(err, errno, "lock the cache '%s'", c->root);
		goto fail;
	}
	c->opened = (int64_t)time(NULL);
	if ((r = write_lease(c, err)) < 0)
		goto fail;
	sweep_tmp(c);
	sweep_leases(c);
	sweep_dot_tmp(c->index);
	sweep_dot_tmp(c->snapshots);
	*out = c;
	return 0;
fail:
	sw_error_wrap(err, "open the build cache in '%s'", state_dir);
	sw_cache_free(c);
	return r;
}

void sw_cache_free(sw_cache *c)
{
	if (!c)
		return;
	/* A forked child shares the parent's lock (same open file) and must not drop its lease:
	 * closing our descriptor releases nothing while the parent keeps its own. */
	if (c->lease_path && c->pid == getpid())
		(void)unlink(c->lease_path);
	if (c->index_lock_fd >= 0)
		close(c->index_lock_fd);
	if (c->lock_fd >= 0)
		close(c->lock_fd);
	free(c->lease_path);
	free(c->root);
	free(c->snapshots);
	free(c->index);
	free(c->tmp);
	free(c->leases);
	pthread_mutex_destroy(&c->index_mu);
	free(c);
}

/* ---------------------------------------------------------------- scratch folders */

int sw_cache_scratch_dir(char **out_path, sw_cache *c, const char *prefix, sw_error **err)
{
	*out_path = NULL;
	if (!prefix)
		prefix = "scratch-";
	if (strchr(prefix, '/') || strlen(prefix) > 64)
		return sw_error_set(err, SW_ERR_INVALID, "cache: bad scratch folder prefix '%s'",
		                    prefix);
	char owner[SW_CACHE__OWNER_MAX];
	sw_cache__owner_tag(owner);
	cleanup_free char *pfx = sw_xasprintf("%s.%s", owner, prefix);
	char *p = NULL;
	int r = sw_fs_mkdtemp(&p, c->tmp, pfx, err);
	if (r < 0)
		return sw_error_wrap(err, "cache: scratch folder");
	/* mkdtemp makes 0700; an overlay upper's (or a snapshot's) root becomes the container's
	 * "/" and must be traversable by every user (tmp/ itself stays 0700). */
	if (chmod(p, 0755) < 0) {
		r = sw_error_os(err, errno, "cache: chmod scratch folder '%s'", p);
		rmdir(p);
		free(p);
		return r;
	}
	*out_path = p;
	return 0;
}

/* ---------------------------------------------------------------- sizes */

int sw_cache_size_parse(uint64_t *out, const char *s, sw_error **err)
{
	static const struct {
		const char *suffix;
		uint64_t mult;
	} units[] = {
		{ "", 1 },
		{ "b", 1 },
		{ "k", 1000ULL },
		{ "kb", 1000ULL },
		{ "m", 1000ULL * 1000 },
		{ "mb", 1000ULL * 1000 },
		{ "g", 1000ULL * 1000 * 1000 },
		{ "gb", 1000ULL * 1000 * 1000 },
		{ "t", 1000ULL * 1000 * 1000 * 1000 },
		{ "tb", 1000ULL * 1000 * 1000 * 1000 },
		{ "kib", 1ULL << 10 },
		{ "mib", 1ULL << 20 },
		{ "gib", 1ULL << 30 },
		{ "tib", 1ULL << 40 },
	};
	*out = 0;
	const char *p = s ? s : "";
	while (*p == ' ')
		p++;
	if (!isdigit((unsigned char)*p))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "size '%s': expected a number with an optional unit (k, M, G, "
		                    "KiB, MiB, GiB)",
		                    s ? s : "");
	errno = 0;
	char *end = NULL;
	unsigned long long v = strtoull(p, &end, 10);
	if (errno == ERANGE)
		return sw_error_set(err, SW_ERR_INVALID, "size '%s' is too large", s);
	while (*end == ' ')
		end++;
	for (size_t i = 0; i < SW_ARRAY_SIZE(units); i++) {
		if (strcasecmp(end, units[i].suffix) != 0)
			continue;
		if (v > UINT64_MAX / units[i].mult)
			return sw_error_set(err, SW_ERR_INVALID, "size '%s' is too large", s);
		*out = (uint64_t)v * units[i].mult;
		return 0;
	}
	return sw_error_set(err, SW_ERR_INVALID,
	                    "size '%s': unknown unit '%s' (use k, M, G, T, KiB, MiB, GiB or TiB)",
	                    s, end);
}

int sw_cache_cap_from_env(uint64_t *out, sw_error **err)
{
	*out = 0;
	const char *v = getenv("SLIPWAY_CACHE_MAX_BYTES");
	if (!v || !*v)
		return 0;
	if (sw_cache_size_parse(out, v, err) < 0)
		return sw_error_wrap(err, "SLIPWAY_CACHE_MAX_BYTES");
	return 0;
}

/* ---------------------------------------------------------------- string counter */

static size_t str_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return (size_t)(h ^ (h >> 29));
}

static size_t strmap_slot(const sw_cache__strmap *m, const char *key)
{
	size_t j = str_hash(key) & (m->cap - 1);
	while (m->keys[j] && strcmp(m->keys[j], key) != 0)
		j = (j + 1) & (m->cap - 1);
	return j;
}

int64_t sw_cache__strmap_add(sw_cache__strmap *m, const char *key, int64_t delta)
{
	if ((m->n + 1) * 2 > m->cap) {
		sw_cache__strmap old = *m;
		m->cap = old.cap ? old.cap * 2 : 64;
		m->keys = sw_xcalloc(m->cap, sizeof(*m->keys));
		m->vals = sw_xcalloc(m->cap, sizeof(*m->vals));
		for (size_t i = 0; i < old.cap; i++) {
			if (!old.keys[i])
				continue;
			size_t j = strmap_slot(m, old.keys[i]);
			m->keys[j] = old.keys[i];
			m->vals[j] = old.vals[i];
		}
		free(old.keys);
		free(old.vals);
	}
	size_t j = strmap_slot(m, key);
	if (!m->keys[j]) {
		m->keys[j] = sw_xstrdup(key);
		m->n++;
	}
	m->vals[j] += delta;
	return m->vals[j];
}

int64_t sw_cache__strmap_get(const sw_cache__strmap *m, const char *key)
{
	if (!m->cap)
		return 0;
	size_t j = strmap_slot(m, key);
	return m->keys[j] ? m->vals[j] : 0;
}

bool sw_cache__strmap_has(const sw_cache__strmap *m, const char *key)
{
	return m->cap && m->keys[strmap_slot(m, key)] != NULL;
}

void sw_cache__strmap_free(sw_cache__strmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->keys[i]);
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof(*m));
}
