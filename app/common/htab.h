/* htab.h — an intrusive chained hash table.
 *
 * Objects embed an HNode as their first member and carry their own key; the
 * table only links nodes by a precomputed 64-bit hash. Lookups walk one
 * bucket: HTAB_FOR_HASH(table, hash, node) { if (key matches) return node; }
 * The table doubles when it is half full, so chains stay short even for
 * lookups that miss; it never allocates per node. Not thread-safe. */
#ifndef RG_HTAB_H
#define RG_HTAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct HNode {
	struct HNode *next;
	uint64_t hash;
} HNode;

typedef struct HTab {
	HNode **buckets;
	size_t mask;    /* bucket count - 1; bucket count is a power of two */
	size_t count;
} HTab;

void htab_init(HTab *t, size_t buckets_pow2);
/* Frees the bucket array only; the caller owns the nodes. */
void htab_free(HTab *t);
void htab_insert(HTab *t, HNode *node);
/* Unlinks node, which must be in the table. */
void htab_remove(HTab *t, HNode *node);

static inline HNode *htab_bucket(const HTab *t, uint64_t hash)
{
	return t->buckets[hash & t->mask];
}

#define HTAB_FOR_HASH(t, h, node) \
	for (HNode *node = htab_bucket((t), (h)); node; node = node->next) \
		if (node->hash == (h))

#define HTAB_FOR_EACH(t, node) \
	for (size_t htab_i_ = 0; htab_i_ <= (t)->mask; htab_i_++) \
		for (HNode *node = (t)->buckets[htab_i_], *htab_next_ = node ? node->next : NULL; \
		     node; node = htab_next_, htab_next_ = node ? node->next : NULL)

#endif
