/* rng.c — kernel or seeded random bytes. */
#include "common/rng.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "common/log.h"

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

void rng_init_kernel(Rng *r)
{
	memset(r, 0, sizeof(*r));
}

void rng_init_seeded(Rng *r, uint64_t seed)
{
	memset(r, 0, sizeof(*r));
	r->seeded = 1;
	for (int i = 0; i < 4; i++) { /* splitmix64 expands the seed */
		seed += 0x9e3779b97f4a7c15ULL;
		uint64_t z = seed;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		r->s[i] = z ^ (z >> 31);
	}
}

static void pool_refill(Rng *r)
{
	size_t got = 0;
	while (got < sizeof(r->pool)) {
		ssize_t n = getrandom(r->pool + got, sizeof(r->pool) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_fatal("getrandom failed: %s", strerror(errno));
		}
		got += (size_t)n;
	}
	r->pool_left = sizeof(r->pool);
}

void rng_fill(Rng *r, void *out, size_t len)
{
	uint8_t *p = out;
	while (len > 0) {
		if (r->seeded) {
			uint64_t v = xoshiro_next(r->s);
			size_t n = len < 8 ? len : 8;
			memcpy(p, &v, n);
			p += n;
			len -= n;
			continue;
		}
		if (r->pool_left == 0)
			pool_refill(r);
		size_t n = len < r->pool_left ? len : r->pool_left;
		memcpy(p, r->pool + sizeof(r->pool) - r->pool_left, n);
		r->pool_left -= n;
		p += n;
		len -= n;
	}
}

uint64_t rng_u64(Rng *r)
{
	uint64_t v;
	if (r->seeded)
		return xoshiro_next(r->s);
	rng_fill(r, &v, sizeof(v));
	return v;
}

uint64_t rng_below(Rng *r, uint64_t n)
{
	/* Lemire's rejection keeps the result unbiased. */
	uint64_t threshold = -n % n;
	for (;;) {
		uint64_t v = rng_u64(r);
		if (v >= threshold)
			return v % n;
	}
}
