/* htab.c — intrusive chained hash table with incremental growth (see htab.h). */
#include "common/htab.h"

#include <string.h>

#include "common/log.h"
#include "common/xmalloc.h"

void htab_init(HTab *t, size_t buckets_pow2)
{
	rg_assert(buckets_pow2 >= 1 && (buckets_pow2 & (buckets_pow2 - 1)) == 0);
	memset(t, 0, sizeof(*t));
	t->buckets = xcalloc(buckets_pow2, sizeof(HNode *));
	t->mask = buckets_pow2 - 1;
}

void htab_free(HTab *t)
{
	free(t->buckets);
	free(t->old);
	memset(t, 0, sizeof(*t));
}

void htab_clear(HTab *t)
{
	free(t->old);
	t->old = NULL;
	memset(t->buckets, 0, (t->mask + 1) * sizeof(HNode *));
	t->count = 0;
}

/* Moves up to n old buckets into the new array; frees the old one once
 * the last has moved. */
static void htab_move(HTab *t, size_t n)
{
	for (; n > 0 && t->old; n--) {
		HNode *node = t->old[t->old_next];
		t->old[t->old_next] = NULL;
		while (node) {
			HNode *next = node->next;
			HNode **slot = &t->buckets[node->hash & t->mask];
			node->next = *slot;
			*slot = node;
			node = next;
		}
		if (t->old_next++ == t->old_mask) {
			free(t->old);
			t->old = NULL;
		}
	}
}

static void htab_grow(HTab *t)
{
	htab_move(t, SIZE_MAX); /* never reached in practice: see htab.h */
	t->old = t->buckets;
	t->old_mask = t->mask;
	t->old_next = 0;
	t->mask = t->mask * 2 + 1;
	t->buckets = xcalloc(t->mask + 1, sizeof(HNode *));
}

void htab_insert(HTab *t, HNode *node)
{
	/* Kept at most half full: a lookup that misses (the book's checks for a
	 * fresh reservation id and a new session's holder, on every reserve)
	 * walks the whole chain, and in a table larger than the cache every node
	 * on it is a cache miss. At <= 1/2 that walk averages a third of a node
	 * rather than three quarters, for one more pointer per node. */
	if (t->count >= (t->mask + 1) / 2)
		htab_grow(t);
	HNode **slot = htab_slot(t, node->hash);
	node->next = *slot;
	*slot = node;
	t->count++;
	htab_move(t, HTAB_MOVE_STEP);
}

void htab_remove(HTab *t, HNode *node)
{
	HNode **slot = htab_slot(t, node->hash);
	while (*slot != node) {
		rg_assert(*slot != NULL);
		slot = &(*slot)->next;
	}
	*slot = node->next;
	node->next = NULL;
	t->count--;
	htab_move(t, HTAB_MOVE_STEP);
}
