/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Allocation that aborts when memory runs out (slipway is an application; bounded buffers keep
 * memory in check), string vectors, and the functions behind the cleanup attributes.
 */
#include "common/common.h"

#include <string.h>

static void oom(void)
{
	fputs("slipway: out of memory\n", stderr);
	abort();
}

void *sw_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom();
	return p;
}

void *sw_xcalloc(size_t nmemb, size_t n)
{
	void *p = calloc(nmemb ? nmemb : 1, n ? n : 1);
	if (!p)
		oom();
	return p;
}

void *sw_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom();
	return q;
}

char *sw_xstrdup(const char *s)
{
	char *p = strdup(s ? s : "");
	if (!p)
		oom();
	return p;
}

char *sw_xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);
	if (!p)
		oom();
	return p;
}

char *sw_xvasprintf(const char *fmt, va_list ap)
{
	char *p = NULL;
	if (vasprintf(&p, fmt, ap) < 0)
		oom();
	return p;
}

char *sw_xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *p = sw_xvasprintf(fmt, ap);
	va_end(ap);
	return p;
}

size_t sw_strv_len(char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}

void sw_strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

char **sw_strv_dup(char *const *v)
{
	if (!v)
		return NULL;
	size_t n = sw_strv_len(v);
	char **r = sw_xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		r[i] = sw_xstrdup(v[i]);
	return r;
}

void sw_strv_push(char ***v, const char *s)
{
	size_t n = sw_strv_len(*v);
	*v = sw_xrealloc(*v, (n + 2) * sizeof(char *));
	(*v)[n] = sw_xstrdup(s);
	(*v)[n + 1] = NULL;
}

void sw_cleanup_freep(void *p)
{
	free(*(void **)p);
}

void sw_cleanup_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

void sw_cleanup_filep(FILE **f)
{
	if (*f)
		fclose(*f);
}

void sw_cleanup_errorp(sw_error **e)
{
	sw_error_free(*e);
}

void sw_cleanup_strvp(char ***v)
{
	sw_strv_free(*v);
}
