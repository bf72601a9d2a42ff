/* resid.h — reservation ids.
 *
 * A reservation id is 16 bytes: the low 32 bits of its SKU's routing hash
 * (so any process can route it to the owning shard, whatever the shard count)
 * followed by 96 random bits (so it cannot be guessed). Its text form, the
 * one buyers see, is 32 lowercase hex digits: route first, then randomness. */
#ifndef RG_RESID_H
#define RG_RESID_H

#include <stdint.h>
#include <string.h>

#define RESID_BYTES 16
#define RESID_TEXT_LEN 32

typedef struct ResId {
	uint8_t b[RESID_BYTES];
} ResId;

/* Builds an id from a route hash and 12 random bytes. */
void resid_make(ResId *id, uint32_t route, const uint8_t random[12]);
uint32_t resid_route(const ResId *id);

/* out needs RESID_TEXT_LEN + 1 bytes. */
void resid_format(const ResId *id, char *out);
/* Parses exactly 32 hex digits (either case); returns 0 or -EINVAL. */
int resid_parse(const char *text, size_t len, ResId *id);

static inline int resid_equal(const ResId *a, const ResId *b)
{
	return memcmp(a->b, b->b, RESID_BYTES) == 0;
}

#endif
