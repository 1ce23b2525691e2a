/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sw_error type: one allocation carrying a code, the source library, its native code and a
 * message. Context is prefixed on the way up with sw_error_wrap; the first cause is never lost.
 */
#include "common/common.h"

#include <errno.h>
#include <string.h>

static int set_va(sw_error **err, int code, sw_error_source source, int sys, const char *suffix,
                  const char *fmt, va_list ap) SW_PRINTF(6, 0);

static int set_va(sw_error **err, int code, sw_error_source source, int sys, const char *suffix,
                  const char *fmt, va_list ap)
{
	if (code >= 0)
		code = SW_ERR_GENERIC;
	if (err == NULL || *err != NULL)
		return code;
	sw_error *e = sw_xcalloc(1, sizeof(*e));
	char *m = sw_xvasprintf(fmt, ap);
	if (suffix) {
		e->msg = sw_xasprintf("%s: %s", m, suffix);
		free(m);
	} else {
		e->msg = m;
	}
	e->code = code;
	e->source = source;
	e->sys = sys;
	*err = e;
	return code;
}

int sw_error_set(sw_error **err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = set_va(err, code, SW_ERRSRC_NONE, 0, NULL, fmt, ap);
	va_end(ap);
	return r;
}

int sw_error_os(sw_error **err, int errnum, const char *fmt, ...)
{
	char ebuf[128];
	const char *s = strerror_r(errnum, ebuf, sizeof(ebuf));
	int code = SW_ERR_GENERIC;
	if (errnum == ENOENT)
		code = SW_ERR_NOT_FOUND;
	else if (errnum == EEXIST || errnum == EBUSY || errnum == EWOULDBLOCK)
		code = SW_ERR_CONFLICT;
	else if (errnum == ETIMEDOUT)
		code = SW_ERR_TIMEOUT;
	else if (errnum == EACCES || errnum == EPERM)
		code = SW_ERR_AUTH;
	else if (errnum == EINVAL || errnum == ELOOP || errnum == EXDEV || errnum == ENAMETOOLONG)
		code = SW_ERR_INVALID;
	va_list ap;
	va_start(ap, fmt);
	int r = set_va(err, code, SW_ERRSRC_OS, errnum, s, fmt, ap);
	va_end(ap);
	return r;
}

int sw_error_lib(sw_error **err, int code, sw_error_source source, int sys, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = set_va(err, code, source, sys, NULL, fmt, ap);
	va_end(ap);
	return r;
}

int sw_error_wrap(sw_error **err, const char *fmt, ...)
{
	if (err == NULL)
		return SW_ERR_GENERIC;
	if (*err == NULL)
		*err = sw_xcalloc(1, sizeof(**err)), (*err)->code = SW_ERR_GENERIC,
		(*err)->msg = sw_xstrdup("unknown error");
	va_list ap;
	va_start(ap, fmt);
	char *ctx = sw_xvasprintf(fmt, ap);
	va_end(ap);
	char *m = sw_xasprintf("%s: %s", ctx, (*err)->msg);
	free(ctx);
	free((*err)->msg);
	(*err)->msg = m;
	return (*err)->code;
}

int sw_error_code_of(const sw_error *err)
{
	return err ? err->code : SW_OK;
}

const char *sw_error_msg(const sw_error *err)
{
	return err ? err->msg : "no error";
}

void sw_error_free(sw_error *err)
{
	if (!err)
		return;
	free(err->msg);
	free(err);
}

void sw_error_clear(sw_error **err)
{
	if (err) {
		sw_error_free(*err);
		*err = NULL;
	}
}
