/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry references ("HOST[:PORT]/REPO[:TAG][@sha256:...]") parsed with the rules of Docker's
 * reference grammar: a first component is a host when it has a '.' or ':' or is "localhost";
 * without one the reference points at Docker Hub (registry-1.docker.io), where one-part names
 * live under "library/". Every part is checked and a bad one is named in the error.
 */
#include "oci/oci.h"

#include <string.h>

#define DOCKER_HUB "registry-1.docker.io"
/* Docker's limit on HOST/REPO, and ours on the whole text. */
#define NAME_MAX_LEN 255
#define REF_MAX_LEN 1024
#define TAG_MAX_LEN 128

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
static bool valid_tag(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > TAG_MAX_LEN)
		return false;
	if (!is_alnum(t[0]) && t[0] != '_')
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_alnum(t[i]) && t[i] != '_' && t[i] != '.' && t[i] != '-')
			return false;
	return true;
}

/* One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* over s[0..n). */
static bool valid_component(const char *s, size_t n)
{
	size_t i = 0;
	if (n == 0 || !is_lower_alnum(s[0]))
		return false;
	while (i < n) {
		while (i < n && is_lower_alnum(s[i]))
			i++;
		if (i == n)
			return true;
		if (s[i] == '.') {
			i++;
		} else if (s[i] == '_') {
			i++;
			if (i < n && s[i] == '_')
				i++;
		} else if (s[i] == '-') {
			while (i < n && s[i] == '-')
				i++;
		} else {
			return false;
		}
		if (i == n || !is_lower_alnum(s[i]))
			return false;
	}
	return true;
}

static int check_repository(const char *repo, sw_error **err)
{
	if (!*repo)
		return sw_error_set(err, SW_ERR_INVALID, "missing repository name");
	for (const char *c = repo; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			return sw_error_set(err, SW_ERR_INVALID,
			                    "repository name '%.256s' must be lowercase", repo);
	const char *p = repo;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (!valid_component(p, n))
			return sw_error_set(err, SW_ERR_INVALID,
			                    "repository name '%.256s': component '%.*s' is invalid "
			                    "(lowercase letters and digits, separated by '.', '_', "
			                    "'__' or '-')",
			                    repo, (int)(n > 128 ? 128 : n), p);
		if (!slash)
			return 0;
		p = slash + 1;
	}
}

static bool valid_port(const char *p)
{
	size_t n = strlen(p);
	if (n == 0 || n > 5)
		return false;
	long v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (p[i] - '0');
	}
	return v > 0 && v <= 65535;
}

/* host[:port]: dot-separated labels of [A-Za-z0-9-] (no '-' at either end), or [IPv6]. */
static int check_host(const char *host, sw_error **err)
{
	const char *port = NULL;
	if (host[0] == '[') {
		const char *end = strchr(host, ']');
		if (!end || end == host + 1)
			goto bad;
		for (const char *c = host + 1; c < end; c++)
			if (!is_hex(*c) && *c != ':' && *c != '.')
				goto bad;
		if (end[1] == ':')
			port = end + 2;
		else if (end[1] != '\0')
			goto bad;
	} else {
		const char *colon = strchr(host, ':');
		size_t n = colon ? (size_t)(colon - host) : strlen(host);
		if (colon)
			port = colon + 1;
		size_t i = 0;
		if (n == 0)
			goto bad;
		while (i < n) {
			size_t start = i;
			while (i < n && (is_alnum(host[i]) || host[i] == '-'))
				i++;
			if (i == start || host[start] == '-' || host[i - 1] == '-')
				goto bad;
			if (i < n) {
				if (host[i] != '.' || i + 1 == n)
					goto bad;
				i++;
			}
		}
	}
	if (port && !valid_port(port))
		return sw_error_set(
		        err, SW_ERR_INVALID,
		        "registry '%.256s': port '%.16s' is not a number from 1 to 65535", host,
		        port);
	return 0;
bad:
	return sw_error_set(err, SW_ERR_INVALID, "registry host '%.256s' is invalid", host);
}

static bool is_docker_hub(const char *host)
{
	return strcmp(host, "docker.io") == 0 || strcmp(host, "index.docker.io") == 0 ||
	       strcmp(host, DOCKER_HUB) == 0;
}

int sw_oci_ref_parse(sw_oci_ref *out, const char *s, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return sw_error_set(err, SW_ERR_INVALID, "empty image reference");
	if (strlen(s) > REF_MAX_LEN)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "image reference longer than %d characters", REF_MAX_LEN);

	cleanup_free char *name = NULL;
	sw_digest digest = { { 0 } };
	const char *at = strchr(s, '@');
	if (at) {
		cleanup_error sw_error *derr = NULL;
		if (sw_oci_digest_parse(&digest, at + 1, &derr) < 0)
			return sw_error_set(err, SW_ERR_INVALID, "after '@': %s",
			                    sw_error_msg(derr));
		name = sw_xstrndup(s, (size_t)(at - s));
	} else {
		name = sw_xstrdup(s);
	}
	if (!*name)
		return sw_error_set(err, SW_ERR_INVALID, "missing repository name before '@'");

	/* a host, when the first component looks like one */
	const char *host = NULL;
	char *rest = name;
	char *slash = strchr(name, '/');
	if (slash) {
		size_t n = (size_t)(slash - name);
		if (memchr(name, '.', n) || memchr(name, ':', n) ||
		    (n == 9 && strncmp(name, "localhost", 9) == 0)) {
			*slash = '\0';
			host = name;
			rest = slash + 1;
		}
	}

	/* the tag: after the last ':' of the path (a host's port was cut off above) */
	const char *tag = NULL;
	char *colon = strrchr(rest, ':');
	if (colon) {
		*colon = '\0';
		tag = colon + 1;
		if (!valid_tag(tag))
			return sw_error_set(err, SW_ERR_INVALID,
			                    "tag '%.200s' is invalid (up to 128 of A-Z a-z 0-9 _ . "
			                    "-, not starting with '.' or '-')",
			                    tag);
	}

	if (check_repository(rest, err) < 0)
		return SW_ERR_INVALID;
	if (host && check_host(host, err) < 0)
		return SW_ERR_INVALID;

	const char *registry = host && !is_docker_hub(host) ? host : DOCKER_HUB;
	char *repository;
	if (strcmp(registry, DOCKER_HUB) == 0 && !strchr(rest, '/'))
		repository = sw_xasprintf("library/%s", rest);
	else
		repository = sw_xstrdup(rest);
	if (strlen(host ? host : "docker.io") + 1 + strlen(rest) > NAME_MAX_LEN) {
		free(repository);
		return sw_error_set(err, SW_ERR_INVALID, "image name longer than %d characters",
		                    NAME_MAX_LEN);
	}

	out->registry = sw_xstrdup(registry);
	out->repository = repository;
	out->digest = digest;
	if (tag)
		out->tag = sw_xstrdup(tag);
	else if (!at)
		out->tag = sw_xstrdup("latest");
	return 0;
}

char *sw_oci_ref_str(const sw_oci_ref *r)
{
	bool has_digest = sw_oci_digest_is_set(&r->digest);
	return sw_xasprintf("%s/%s%s%s%s%s", r->registry ? r->registry : DOCKER_HUB,
	                    r->repository ? r->repository : "", r->tag ? ":" : "",
	                    r->tag ? r->tag : "", has_digest ? "@" : "",
	                    has_digest ? r->digest.s : "");
}

void sw_oci_ref_clear(sw_oci_ref *r)
{
	if (!r)
		return;
	free(r->registry);
	free(r->repository);
	free(r->tag);
	memset(r, 0, sizeof(*r));
}
