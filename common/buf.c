/* SPDX-License-Identifier: Apache-2.0 */
/* Growable byte buffers that refuse to grow past their cap (like curl's dynbuf). */
#include "common/common.h"

#include <string.h>

void sw_buf_init(sw_buf *b, size_t max)
{
	b->data = NULL;
	b->len = b->cap = 0;
	b->max = max;
}

int sw_buf_append(sw_buf *b, const void *data, size_t len, sw_error **err)
{
	size_t max = b->max ? b->max : SW_BUF_DEFAULT_MAX;
	if (len > max || b->len > max - len)
		return sw_error_set(err, SW_ERR_INVALID, "data exceeds the limit of %zu bytes",
		                    max);
	if (b->len + len + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 256;
		while (ncap < b->len + len + 1)
			ncap *= 2;
		if (ncap > max + 1)
			ncap = max + 1;
		b->data = sw_xrealloc(b->data, ncap);
		b->cap = ncap;
	}
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int sw_buf_puts(sw_buf *b, const char *s, sw_error **err)
{
	return sw_buf_append(b, s, strlen(s), err);
}

int sw_buf_printf(sw_buf *b, sw_error **err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *s = sw_xvasprintf(fmt, ap);
	va_end(ap);
	return sw_buf_append(b, s, strlen(s), err);
}

void sw_buf_reset(sw_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

char *sw_buf_steal(sw_buf *b, size_t *len_out)
{
	char *d = b->data ? b->data : sw_xstrdup("");
	if (len_out)
		*len_out = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return d;
}

void sw_buf_free(sw_buf *b)
{
	if (!b)
		return;
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
