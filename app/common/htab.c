/* htab.c — intrusive chained hash table. */
#include "common/htab.h"

#include "common/log.h"
#include "common/xmalloc.h"

void htab_init(HTab *t, size_t buckets_pow2)
{
	rg_assert(buckets_pow2 >= 1 && (buckets_pow2 & (buckets_pow2 - 1)) == 0);
	t->buckets = xcalloc(buckets_pow2, sizeof(HNode *));
	t->mask = buckets_pow2 - 1;
	t->count = 0;
}

void htab_free(HTab *t)
{
	free(t->buckets);
	t->buckets = NULL;
	t->count = 0;
}

static void htab_grow(HTab *t)
{
	size_t n = (t->mask + 1) * 2;
	HNode **buckets = xcalloc(n, sizeof(HNode *));
	for (size_t i = 0; i <= t->mask; i++) {
		HNode *node = t->buckets[i];
		while (node) {
			HNode *next = node->next;
			HNode **slot = &buckets[node->hash & (n - 1)];
			node->next = *slot;
			*slot = node;
			node = next;
		}
	}
	free(t->buckets);
	t->buckets = buckets;
	t->mask = n - 1;
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
	HNode **slot = &t->buckets[node->hash & t->mask];
	node->next = *slot;
	*slot = node;
	t->count++;
}

void htab_remove(HTab *t, HNode *node)
{
	HNode **slot = &t->buckets[node->hash & t->mask];
	while (*slot != node) {
		rg_assert(*slot != NULL);
		slot = &(*slot)->next;
	}
	*slot = node->next;
	node->next = NULL;
	t->count--;
}
