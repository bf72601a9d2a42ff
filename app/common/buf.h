/* buf.h — a growable byte buffer, plus little-endian put/get helpers.
 *
 * Every binary format in the project (wire frames, WAL records, snapshots) is
 * little-endian and built with these helpers, so byte order lives in one place. */
#ifndef RG_BUF_H
#define RG_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct Buf {
	uint8_t *data;
	size_t len;
	size_t cap;
} Buf;

void buf_init(Buf *b, size_t cap);
void buf_free(Buf *b);
void buf_reserve(Buf *b, size_t extra);
void buf_append(Buf *b, const void *data, size_t len);
/* Drops the first n bytes, keeping the rest. */
void buf_consume(Buf *b, size_t n);
static inline void buf_reset(Buf *b) { b->len = 0; }

void buf_put_u8(Buf *b, uint8_t v);
void buf_put_u16(Buf *b, uint16_t v);
void buf_put_u32(Buf *b, uint32_t v);
void buf_put_u64(Buf *b, uint64_t v);
/* A string as u8 length + bytes; len must be <= 255. */
void buf_put_str8(Buf *b, const char *s, size_t len);

static inline void put_u32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void put_u64le(uint8_t *p, uint64_t v)
{
	put_u32le(p, (uint32_t)v);
	put_u32le(p + 4, (uint32_t)(v >> 32));
}
static inline uint16_t get_u16le(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get_u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_u64le(const uint8_t *p)
{
	return (uint64_t)get_u32le(p) | (uint64_t)get_u32le(p + 4) << 32;
}

/* A bounded reader: every get checks the remaining length first and sets
 * r->failed instead of reading past the end, so a decoder can read all its
 * fields and check once. */
typedef struct Reader {
	const uint8_t *p;
	size_t left;
	int failed;
} Reader;

static inline void reader_init(Reader *r, const void *data, size_t len)
{
	r->p = data;
	r->left = len;
	r->failed = 0;
}
uint8_t reader_u8(Reader *r);
uint16_t reader_u16(Reader *r);
uint32_t reader_u32(Reader *r);
uint64_t reader_u64(Reader *r);
void reader_bytes(Reader *r, void *out, size_t len);
/* Reads a u8-length string of at most max bytes into out (NUL-terminated,
 * out has max + 1 bytes); sets *len. Longer strings fail the reader. */
void reader_str8(Reader *r, char *out, size_t max, uint8_t *len);

#endif
