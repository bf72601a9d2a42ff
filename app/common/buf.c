/* buf.c — growable byte buffer and bounded little-endian reader. */
#include "common/buf.h"

#include <stdlib.h>

#include "common/xmalloc.h"

void buf_init(Buf *b, size_t cap)
{
	b->data = cap ? xmalloc(cap) : NULL;
	b->len = 0;
	b->cap = cap;
}

void buf_free(Buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void buf_reserve(Buf *b, size_t extra)
{
	if (b->len + extra <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void buf_append(Buf *b, const void *data, size_t len)
{
	buf_reserve(b, len);
	memcpy(b->data + b->len, data, len);
	b->len += len;
}

void buf_consume(Buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

void buf_put_u8(Buf *b, uint8_t v)
{
	buf_append(b, &v, 1);
}

void buf_put_u16(Buf *b, uint16_t v)
{
	uint8_t p[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
	buf_append(b, p, 2);
}

void buf_put_u32(Buf *b, uint32_t v)
{
	uint8_t p[4];
	put_u32le(p, v);
	buf_append(b, p, 4);
}

void buf_put_u64(Buf *b, uint64_t v)
{
	uint8_t p[8];
	put_u64le(p, v);
	buf_append(b, p, 8);
}

void buf_put_str8(Buf *b, const char *s, size_t len)
{
	buf_put_u8(b, (uint8_t)len);
	buf_append(b, s, len);
}

static int reader_take(Reader *r, size_t n)
{
	if (r->failed || r->left < n) {
		r->failed = 1;
		return 0;
	}
	return 1;
}

uint8_t reader_u8(Reader *r)
{
	if (!reader_take(r, 1))
		return 0;
	r->left -= 1;
	return *r->p++;
}

uint16_t reader_u16(Reader *r)
{
	if (!reader_take(r, 2))
		return 0;
	uint16_t v = get_u16le(r->p);
	r->p += 2;
	r->left -= 2;
	return v;
}

uint32_t reader_u32(Reader *r)
{
	if (!reader_take(r, 4))
		return 0;
	uint32_t v = get_u32le(r->p);
	r->p += 4;
	r->left -= 4;
	return v;
}

uint64_t reader_u64(Reader *r)
{
	if (!reader_take(r, 8))
		return 0;
	uint64_t v = get_u64le(r->p);
	r->p += 8;
	r->left -= 8;
	return v;
}

void reader_bytes(Reader *r, void *out, size_t len)
{
	if (!reader_take(r, len)) {
		memset(out, 0, len);
		return;
	}
	memcpy(out, r->p, len);
	r->p += len;
	r->left -= len;
}

void reader_str8(Reader *r, char *out, size_t max, uint8_t *len)
{
	uint8_t n = reader_u8(r);
	*len = 0;
	out[0] = '\0';
	if (r->failed)
		return;
	if (n > max || !reader_take(r, n)) {
		r->failed = 1;
		return;
	}
	memcpy(out, r->p, n);
	out[n] = '\0';
	*len = n;
	r->p += n;
	r->left -= n;
}
