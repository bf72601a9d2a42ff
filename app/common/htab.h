/* htab.h — an intrusive chained hash table that grows without stalling.
 *
 * Objects embed an HNode as their first member and carry their own key; the
 * table only links nodes by a precomputed 64-bit hash. Lookups walk one
 * bucket: HTAB_FOR_HASH(table, hash, node) { if (key matches) return node; }
 * It never allocates per node. Not thread-safe.
 *
 * DESIGN. The table doubles when it is half full, so chains stay short even
 * for lookups that miss. Moving every node at once would stall its owner for
 * as long as a walk over all of them takes — 55 ms at a million nodes, on a
 * shard thread in the middle of a sale — so growth is incremental (as in
 * redis's dict): the old array stays beside the new one and every insert and
 * removal moves HTAB_MOVE_STEP of its buckets over. Until a bucket has
 * moved, its hashes live in the old array — new nodes too — so a lookup
 * still walks exactly one chain (htab_slot picks it). The old array is empty
 * long before the new one is half full: it has half the buckets and is
 * drained at HTAB_MOVE_STEP per insert. */
#ifndef RG_HTAB_H
#define RG_HTAB_H

#include <stddef.h>
#include <stdint.h>

#define HTAB_MOVE_STEP 8 /* old buckets moved per insert or removal while growing */

typedef struct HNode {
	struct HNode *next;
	uint64_t hash;
} HNode;

typedef struct HTab {
	HNode **buckets;
	size_t mask;     /* bucket count - 1; bucket count is a power of two */
	HNode **old;     /* while growing: the previous array, else NULL */
	size_t old_mask;
	size_t old_next; /* old buckets below this one have moved */
	size_t count;
} HTab;

void htab_init(HTab *t, size_t buckets_pow2);
/* Frees the bucket arrays only; the caller owns the nodes. */
void htab_free(HTab *t);
/* Forgets every node (the caller owns them), keeping the current size. */
void htab_clear(HTab *t);
void htab_insert(HTab *t, HNode *node);
/* Unlinks node, which must be in the table. */
void htab_remove(HTab *t, HNode *node);

/* The bucket that holds (or would hold) hash. */
static inline HNode **htab_slot(const HTab *t, uint64_t hash)
{
	if (t->old && (hash & t->old_mask) >= t->old_next)
		return &t->old[hash & t->old_mask];
	return &t->buckets[hash & t->mask];
}

static inline HNode *htab_bucket(const HTab *t, uint64_t hash)
{
	return *htab_slot(t, hash);
}

#define HTAB_FOR_HASH(t, h, node) \
	for (HNode *node = htab_bucket((t), (h)); node; node = node->next) \
		if (node->hash == (h))

/* Every bucket of both arrays (moved old buckets are empty). The body may
 * free the node it is given, but must not insert or remove. */
static inline size_t htab_slots(const HTab *t)
{
	return t->mask + 1 + (t->old ? t->old_mask + 1 : 0);
}

static inline HNode *htab_slot_head(const HTab *t, size_t i)
{
	return i <= t->mask ? t->buckets[i] : t->old[i - t->mask - 1];
}

/* The head of slot i, fetching the one HTAB_WALK_AHEAD slots on into the
 * cache meanwhile: nodes are scattered over memory, and a walk over a table
 * larger than the cache would otherwise wait for them one at a time (a
 * snapshot of a million SKUs spent nine tenths of its time there). */
#define HTAB_WALK_AHEAD 32

static inline HNode *htab_walk_head(const HTab *t, size_t i)
{
	if (i + HTAB_WALK_AHEAD < htab_slots(t))
		__builtin_prefetch(htab_slot_head(t, i + HTAB_WALK_AHEAD));
	return htab_slot_head(t, i);
}

#define HTAB_FOR_EACH(t, node) \
	for (size_t htab_i_ = 0; htab_i_ < htab_slots(t); htab_i_++) \
		for (HNode *node = htab_walk_head((t), htab_i_), *htab_next_ = node ? node->next : NULL; \
		     node; node = htab_next_, htab_next_ = node ? node->next : NULL)

#endif
