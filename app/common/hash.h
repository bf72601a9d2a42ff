/* hash.h — the one string hash of the project.
 *
 * It decides which shard owns a SKU (hash % shards), so it is part of the
 * on-disk and on-wire contract: reservation ids carry the low 32 bits of their
 * SKU's hash. Never change it without a format version bump. */
#ifndef RG_HASH_H
#define RG_HASH_H

#include <stddef.h>
#include <stdint.h>

/* 64-bit FNV-1a followed by a murmur3 finaliser (FNV alone mixes the low bits poorly). */
uint64_t hash_bytes(const void *data, size_t len);

/* The routing hash of a SKU: the low 32 bits of hash_bytes. */
static inline uint32_t hash_route(const char *sku, size_t len)
{
	return (uint32_t)hash_bytes(sku, len);
}

static inline unsigned hash_shard(uint32_t route, unsigned shards)
{
	return route % shards;
}

#endif
