/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Platforms ("linux/arm64/v8"): parsing with the usual architecture aliases (x86_64, aarch64,
 * armhf, ...) mapped to the GOARCH names images use, the platform slipway itself runs on, the
 * matching rule, and picking the right manifest out of an image index or Docker manifest list
 * (attestation manifests skipped).
 */
#include "oci/oci.h"

#include <string.h>
#include <sys/utsname.h>

/* Architecture names found in the wild (uname -m, Debian, Go) and what images call them. */
static const struct {
	const char *alias;
	const char *arch;
	const char *variant; /* implied by the alias, or NULL */
} arch_aliases[] = {
	{ "x86_64", "amd64", NULL },    { "x86-64", "amd64", NULL },
	{ "amd64", "amd64", NULL },     { "aarch64", "arm64", NULL },
	{ "arm64", "arm64", NULL },     { "armv8l", "arm", "v7" },
	{ "armv7l", "arm", "v7" },      { "armv7", "arm", "v7" },
	{ "armhf", "arm", "v7" },       { "armv6l", "arm", "v6" },
	{ "armv6", "arm", "v6" },       { "armel", "arm", "v6" },
	{ "armv5tel", "arm", "v5" },    { "armv5l", "arm", "v5" },
	{ "i386", "386", NULL },        { "i486", "386", NULL },
	{ "i586", "386", NULL },        { "i686", "386", NULL },
	{ "ppc64el", "ppc64le", NULL }, { "loongarch64", "loong64", NULL },
};

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool is_digits(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static bool valid_part(const char *s, size_t n)
{
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

int sw_oci_platform_parse(sw_oci_platform *out, const char *s, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return sw_error_set(
		        err, SW_ERR_INVALID,
		        "empty platform (expected OS/ARCH[/VARIANT], e.g. linux/amd64)");
	const char *parts[3] = { NULL, NULL, NULL };
	size_t lens[3] = { 0, 0, 0 };
	size_t n = 0;
	const char *p = s;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t l = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 3)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "platform '%.100s': too many parts (expected "
			                    "OS/ARCH[/VARIANT])",
			                    s);
		if (!valid_part(p, l))
			return sw_error_set(
			        err, SW_ERR_INVALID,
			        "platform '%.100s': part %zu is empty or has characters "
			        "other than [A-Za-z0-9_.-]",
			        s, n + 1);
		parts[n] = p;
		lens[n] = l;
		n++;
		if (!slash)
			break;
		p = slash + 1;
	}
	if (n < 2)
		return sw_error_set(
		        err, SW_ERR_INVALID,
		        "platform '%.100s': expected OS/ARCH[/VARIANT], e.g. linux/amd64", s);
	out->os = sw_xstrndup(parts[0], lens[0]);
	out->architecture = sw_xstrndup(parts[1], lens[1]);
	if (n == 3)
		out->variant = sw_xstrndup(parts[2], lens[2]);
	for (size_t i = 0; i < SW_ARRAY_SIZE(arch_aliases); i++) {
		if (strcmp(out->architecture, arch_aliases[i].alias) != 0)
			continue;
		free(out->architecture);
		out->architecture = sw_xstrdup(arch_aliases[i].arch);
		if (!out->variant && arch_aliases[i].variant)
			out->variant = sw_xstrdup(arch_aliases[i].variant);
		break;
	}
	/* "linux/arm/7" is how some tools spell linux/arm/v7 */
	if (out->variant && is_digits(out->variant) &&
	    (strcmp(out->architecture, "arm") == 0 || strcmp(out->architecture, "arm64") == 0)) {
		char *v = sw_xasprintf("v%s", out->variant);
		free(out->variant);
		out->variant = v;
	}
	return 0;
}

void sw_oci_platform_default(sw_oci_platform *out)
{
	memset(out, 0, sizeof(*out));
	out->os = sw_xstrdup("linux");
	struct utsname u;
	const char *machine = NULL;
	if (uname(&u) == 0)
		machine = u.machine;
	if (!machine || !*machine) {
#if defined(__x86_64__)
		machine = "x86_64";
#elif defined(__aarch64__)
		machine = "aarch64";
#elif defined(__arm__)
		machine = "armv7l";
#elif defined(__i386__)
		machine = "i686";
#else
		machine = "unknown";
#endif
	}
	for (size_t i = 0; i < SW_ARRAY_SIZE(arch_aliases); i++) {
		if (strcmp(machine, arch_aliases[i].alias) != 0)
			continue;
		out->architecture = sw_xstrdup(arch_aliases[i].arch);
		if (arch_aliases[i].variant)
			out->variant = sw_xstrdup(arch_aliases[i].variant);
		break;
	}
	if (!out->architecture)
		out->architecture = sw_xstrdup(machine);
	if (strcmp(out->architecture, "arm64") == 0 && !out->variant)
		out->variant = sw_xstrdup("v8");
}

char *sw_oci_platform_str(const sw_oci_platform *p)
{
	if (!p)
		return sw_xstrdup("unknown");
	const char *os = p->os && *p->os ? p->os : "unknown";
	const char *arch = p->architecture && *p->architecture ? p->architecture : "unknown";
	if (p->variant && *p->variant)
		return sw_xasprintf("%s/%s/%s", os, arch, p->variant);
	return sw_xasprintf("%s/%s", os, arch);
}

void sw_oci_platform_clear(sw_oci_platform *p)
{
	if (!p)
		return;
	free(p->os);
	free(p->architecture);
	free(p->variant);
	free(p->os_version);
	memset(p, 0, sizeof(*p));
}

/* The variant a platform means: arm64 without one is v8. */
static const char *effective_variant(const sw_oci_platform *p)
{
	if (p->variant && *p->variant)
		return p->variant;
	if (str_eq(p->architecture, "arm64"))
		return "v8";
	return NULL;
}

bool sw_oci_platform_match(const sw_oci_platform *want, const sw_oci_platform *have)
{
	static const sw_oci_platform linux_amd64 = { (char *)"linux", (char *)"amd64", NULL, NULL };
	if (!want)
		want = &linux_amd64;
	if (!have || !have->os || !have->architecture || !want->os || !want->architecture)
		return false;
	if (strcmp(want->os, have->os) != 0 || strcmp(want->architecture, have->architecture) != 0)
		return false;
	if (want->variant && *want->variant &&
	    !str_eq(effective_variant(want), effective_variant(have)))
		return false;
	if (want->os_version && *want->os_version && !str_eq(want->os_version, have->os_version))
		return false;
	return true;
}

static bool is_attestation(const sw_oci_descriptor *d)
{
	const char *t = sw_oci_descriptor_annotation(d, "vnd.docker.reference.type");
	return t && strcmp(t, "attestation-manifest") == 0;
}

static bool is_unknown_platform(const sw_oci_platform *p)
{
	return str_eq(p->os, "unknown") && str_eq(p->architecture, "unknown");
}

int sw_oci_index_select(const sw_oci_descriptor **out, const sw_oci_index *ix,
                        const sw_oci_platform *want, sw_error **err)
{
	static const sw_oci_platform linux_amd64 = { (char *)"linux", (char *)"amd64", NULL, NULL };
	*out = NULL;
	if (!want)
		want = &linux_amd64;
	/* first pass: entries that declare a matching platform */
	for (size_t i = 0; i < ix->n_manifests; i++) {
		const sw_oci_descriptor *d = &ix->manifests[i];
		if (!sw_oci_media_type_is_manifest(d->media_type) || is_attestation(d) ||
		    !d->platform || is_unknown_platform(d->platform))
			continue;
		if (sw_oci_platform_match(want, d->platform)) {
			*out = d;
			return 0;
		}
	}
	/* second pass: an entry that declares no platform at all fits any (as containerd does) */
	for (size_t i = 0; i < ix->n_manifests; i++) {
		const sw_oci_descriptor *d = &ix->manifests[i];
		if (sw_oci_media_type_is_manifest(d->media_type) && !is_attestation(d) &&
		    !d->platform) {
			*out = d;
			return 0;
		}
	}

	sw_buf have = SW_BUF_INIT(0);
	size_t n = 0;
	for (size_t i = 0; i < ix->n_manifests && n < 64; i++) {
		const sw_oci_descriptor *d = &ix->manifests[i];
		if (!sw_oci_media_type_is_manifest(d->media_type) || is_attestation(d) ||
		    !d->platform || is_unknown_platform(d->platform))
			continue;
		cleanup_free char *ps = sw_oci_platform_str(d->platform);
		if (sw_buf_printf(&have, NULL, "%s%s", n ? ", " : "", ps) < 0)
			break;
		n++;
	}
	cleanup_free char *ws = sw_oci_platform_str(want);
	int r;
	if (n)
		r = sw_error_set(err, SW_ERR_NOT_FOUND,
		                 "no manifest for platform %s in the index (it has %s)", ws,
		                 have.data);
	else
		r = sw_error_set(err, SW_ERR_NOT_FOUND,
		                 "no manifest for platform %s in the index (it has no platform "
		                 "manifests)",
		                 ws);
	sw_buf_free(&have);
	return r;
}
