/* rng.h — where random bytes come from.
 *
 * Reservation ids must be unguessable, so the service draws them from the
 * kernel (getrandom, buffered so a batch costs one syscall). Tests and the
 * model simulation need the same code driven by a seed, so both sources sit
 * behind one small interface. */
#ifndef RG_RNG_H
#define RG_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct Rng {
	int seeded;         /* 1: deterministic xoshiro256** stream; 0: kernel */
	uint64_t s[4];
	uint8_t pool[512];  /* buffered kernel bytes */
	size_t pool_left;
} Rng;

/* Kernel randomness (getrandom), for the service. */
void rng_init_kernel(Rng *r);
/* A reproducible stream from seed, for tests and simulation only. */
void rng_init_seeded(Rng *r, uint64_t seed);

void rng_fill(Rng *r, void *out, size_t len);
uint64_t rng_u64(Rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t rng_below(Rng *r, uint64_t n);

#endif
