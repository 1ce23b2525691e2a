/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Users of a container: "user[:group]" (names or numbers) resolved through the image's own
 * etc/passwd and etc/group, with the rules of runc's libcontainer/user that Docker applies. A
 * number matches a passwd entry by name or uid, and one without an entry is fine (gid 0); a
 * name must exist. An explicit group (name or number) replaces the primary group and drops the
 * supplementary ones; otherwise the supplementary groups are those of etc/group that list the
 * user by name. The files come from a callback, so the rootfs is read through
 * sw_path_open_in_root (a symlinked /etc cannot escape) and tests feed memory.
 */
#include "executor/executor_internal.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#define ID_MAX 2147483647UL

/* A whole decimal id in 0..2^31-1; false for anything else. */
static bool parse_id(unsigned long *out, const char *s)
{
	if (!s || !*s)
		return false;
	unsigned long v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > ID_MAX)
			return false;
	}
	*out = v;
	return true;
}

/* Split one line into at most `max` ':'-separated fields (in place); returns the count. */
static size_t split_fields(char **fields, size_t max, char *line)
{
	size_t n = 0;
	char *p = line;
	while (n < max) {
		fields[n++] = p;
		char *c = strchr(p, ':');
		if (!c)
			break;
		*c = '\0';
		p = c + 1;
	}
	return n;
}

typedef struct pw_match {
	bool found;
	char *name;
	unsigned long uid, gid;
	char *home;
} pw_match;

/* First passwd entry whose name is `arg`, or whose uid is `num` when arg is numeric. */
static void find_passwd(pw_match *m, char *text, const char *arg, bool numeric, unsigned long num)
{
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#' || line[0] == '+' || line[0] == '-')
			continue;
		char *f[7];
		size_t n = split_fields(f, 7, line);
		unsigned long uid, gid;
		if (n < 4 || !parse_id(&uid, f[2]) || !parse_id(&gid, f[3]))
			continue;
		if (strcmp(f[0], arg) == 0 || (numeric && uid == num)) {
			m->found = true;
			m->name = sw_xstrdup(f[0]);
			m->uid = uid;
			m->gid = gid;
			m->home = sw_xstrdup(n >= 6 && f[5][0] ? f[5] : "/");
			return;
		}
	}
}

static int read_db(char **out, const char *path, sw_exec_read_file_cb read_file, void *payload,
                   sw_error **err)
{
	*out = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	int r = read_file(out, &len, path, payload, &e);
	if (r == SW_ERR_NOT_FOUND) {
		sw_error_free(e);
		*out = sw_xstrdup("");
		return 0;
	}
	if (r < 0) {
		if (err && !*err)
			*err = e;
		else
			sw_error_free(e);
		return r;
	}
	if (!*out)
		*out = sw_xstrdup("");
	return 0;
}

int sw_exec__user_resolve_full(uid_t *uid, gid_t *gid, gid_t **groups, size_t *n_groups,
                               char **home, const char *spec, sw_exec_read_file_cb read_file,
                               void *payload, sw_error **err)
{
	*uid = 0;
	*gid = 0;
	if (groups)
		*groups = NULL;
	if (n_groups)
		*n_groups = 0;
	if (home)
		*home = NULL;
	cleanup_free char *copy = sw_xstrdup(spec && *spec ? spec : "0");
	char *colon = strchr(copy, ':');
	const char *group_arg = NULL;
	if (colon) {
		*colon = '\0';
		group_arg = colon + 1;
		if (!*group_arg)
			return sw_error_set(err, SW_ERR_INVALID, "user '%s': empty group", spec);
	}
	const char *user_arg = copy;
	if (!*user_arg)
		return sw_error_set(err, SW_ERR_INVALID, "user '%s': empty user name", spec);
	unsigned long unum = 0;
	bool unumeric = parse_id(&unum, user_arg);
	if (!unumeric && strspn(user_arg, "0123456789") == strlen(user_arg))
		return sw_error_set(err, SW_ERR_INVALID, "user '%s': uid out of range", spec);

	cleanup_free char *passwd = NULL;
	int r = read_db(&passwd, "/etc/passwd", read_file, payload, err);
	if (r < 0)
		return sw_error_wrap(err, "user '%s': read /etc/passwd", spec);
	pw_match pw = { 0 };
	find_passwd(&pw, passwd, user_arg, unumeric, unum);
	cleanup_free char *pw_name = pw.name;
	cleanup_free char *pw_home = pw.home;
	if (!pw.found && !unumeric)
		return sw_error_set(err, SW_ERR_NOT_FOUND,
		                    "unable to find user %s: no matching entries in passwd file",
		                    user_arg);
	unsigned long out_uid = pw.found ? pw.uid : unum;
	unsigned long out_gid = pw.found ? pw.gid : 0;

	gid_t *sup = NULL;
	size_t n_sup = 0;
	unsigned long gnum = 0;
	bool gnumeric = group_arg && parse_id(&gnum, group_arg);
	if (group_arg && !gnumeric && strspn(group_arg, "0123456789") == strlen(group_arg))
		return sw_error_set(err, SW_ERR_INVALID, "user '%s': gid out of range", spec);
	if (group_arg || pw_name) {
		cleanup_free char *group = NULL;
		r = read_db(&group, "/etc/group", read_file, payload, err);
		if (r < 0)
			return sw_error_wrap(err, "user '%s': read /etc/group", spec);
		bool gfound = false;
		char *save = NULL;
		for (char *line = strtok_r(group, "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save)) {
			if (line[0] == '#' || line[0] == '+' || line[0] == '-')
				continue;
			char *f[4];
			size_t n = split_fields(f, 4, line);
			unsigned long g;
			if (n < 3 || !parse_id(&g, f[2]))
				continue;
			if (group_arg) {
				if (strcmp(f[0], group_arg) == 0 || (gnumeric && g == gnum)) {
					gfound = true;
					out_gid = g;
					break;
				}
				continue;
			}
			/* implicit group: is the user listed as a member? */
			bool member = false;
			char *msave = NULL;
			for (char *m = n >= 4 ? strtok_r(f[3], ",", &msave) : NULL; m && !member;
			     m = strtok_r(NULL, ",", &msave))
				member = strcmp(m, pw_name) == 0;
			if (!member)
				continue;
			bool dup = false;
			for (size_t i = 0; i < n_sup && !dup; i++)
				dup = sup[i] == (gid_t)g;
			if (dup)
				continue;
			sup = sw_xrealloc(sup, (n_sup + 1) * sizeof(*sup));
			sup[n_sup++] = (gid_t)g;
		}
		if (group_arg && !gfound) {
			if (!gnumeric)
				return sw_error_set(
				        err, SW_ERR_NOT_FOUND,
				        "unable to find group %s: no matching entries in "
				        "group file",
				        group_arg);
			out_gid = gnum;
		}
	}
	*uid = (uid_t)out_uid;
	*gid = (gid_t)out_gid;
	if (groups) {
		*groups = sup;
		if (n_groups)
			*n_groups = n_sup;
	} else {
		free(sup);
	}
	if (home)
		*home = pw_home ? steal_pointer(&pw_home) : sw_xstrdup("/");
	return 0;
}

int sw_exec_user_resolve(uid_t *uid, gid_t *gid, gid_t **groups, size_t *n_groups, const char *spec,
                         sw_exec_read_file_cb read_file, void *payload, sw_error **err)
{
	return sw_exec__user_resolve_full(uid, gid, groups, n_groups, NULL, spec, read_file,
	                                  payload, err);
}
