/* test_htab.c — the hash table against a reference, across incremental growth.
 *
 * A seeded run inserts and removes nodes (hashes drawn from a small range too,
 * so chains hold equal and colliding hashes) and after every operation checks
 * the one being touched, and periodically every node: each present node is
 * found by HTAB_FOR_HASH in the one chain htab_slot names, no removed node is,
 * HTAB_FOR_EACH visits each present node exactly once, and count agrees. It
 * also checks that growth is incremental: right after the insert that starts
 * it the old array is still there and every lookup works across both arrays,
 * and it is gone within (old buckets / HTAB_MOVE_STEP) operations, long
 * before the next growth. RG_TEST_SEED reproduces a run. */
#include "common/htab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/rng.h"

#define NODES 20000

typedef struct Item {
	HNode node;
	int present;
	unsigned visits;
} Item;

static Item items[NODES];

static int found(const HTab *t, const Item *it)
{
	HTAB_FOR_HASH(t, it->node.hash, node)
		if (node == &it->node)
			return 1;
	return 0;
}

static void check_all(const HTab *t, size_t present)
{
	for (size_t i = 0; i < NODES; i++)
		items[i].visits = 0;
	size_t seen = 0;
	HTAB_FOR_EACH(t, node) {
		((Item *)node)->visits++;
		seen++;
	}
	CHECK_EQ_INT(seen, present);
	CHECK_EQ_INT(t->count, present);
	for (size_t i = 0; i < NODES; i++) {
		CHECK_EQ_INT(items[i].visits, items[i].present ? 1 : 0);
		CHECK_EQ_INT(found(t, &items[i]), items[i].present);
	}
}

/* Random inserts and removals, biased to grow, then to shrink. */
static void random_run(uint64_t seed)
{
	Rng rng;
	rng_init_seeded(&rng, seed);
	HTab t;
	htab_init(&t, 1);
	memset(items, 0, sizeof(items));
	size_t present = 0, growths = 0;
	int was_growing = 0;

	for (int step = 0; step < 6 * NODES; step++) {
		uint64_t r;
		rng_fill(&rng, &r, sizeof(r));
		Item *it = &items[r % NODES];
		int grow_phase = step < 3 * NODES;
		int insert = (r >> 32) % 10 < (grow_phase ? 7u : 3u);
		if (insert && !it->present) {
			/* a third from a tiny range: equal hashes and long chains */
			it->node.hash = (r >> 40) % 3 == 0 ? (r >> 44) % 64 : r * 0x9e3779b97f4a7c15ULL;
			htab_insert(&t, &it->node);
			it->present = 1;
			present++;
		} else if (!insert && it->present) {
			htab_remove(&t, &it->node);
			it->present = 0;
			present--;
		} else {
			continue;
		}
		CHECK_EQ_INT(found(&t, it), it->present);
		int started = t.old && !was_growing;
		growths += (size_t)started;
		was_growing = t.old != NULL;
		if (started || step % 997 == 0)
			check_all(&t, present);
	}
	check_all(&t, present);
	printf("random run: %zu growths, %zu nodes left, %zu buckets\n", growths, present, t.mask + 1);
	CHECK(growths >= 10);
	htab_free(&t);
}

/* The insert that starts growth leaves both arrays in use, and draining
 * them takes the promised number of operations. */
static void growth_is_incremental(void)
{
	HTab t;
	htab_init(&t, 1024);
	memset(items, 0, sizeof(items));
	size_t i = 0;
	while (!t.old) {
		REQUIRE(i < NODES);
		items[i].node.hash = (uint64_t)i * 0x9e3779b97f4a7c15ULL;
		htab_insert(&t, &items[i].node);
		items[i++].present = 1;
	}
	size_t old_buckets = t.old_mask + 1;
	CHECK_EQ_INT(old_buckets, 1024);
	CHECK_EQ_INT(t.mask + 1, 2048);
	CHECK(t.old_next > 0 && t.old_next <= HTAB_MOVE_STEP); /* only a step moved */
	check_all(&t, i);
	size_t ops = 1;
	while (t.old) {
		REQUIRE(i < NODES);
		items[i].node.hash = (uint64_t)i * 0x9e3779b97f4a7c15ULL;
		htab_insert(&t, &items[i].node);
		items[i++].present = 1;
		ops++;
		if (ops % 16 == 0)
			check_all(&t, i);
	}
	CHECK_EQ_INT(ops, (old_buckets + HTAB_MOVE_STEP - 1) / HTAB_MOVE_STEP);
	CHECK(t.count < (t.mask + 1) / 2); /* done long before the next growth */
	check_all(&t, i);

	/* Cleared in the middle of the next growth: empty, one array. */
	while (!t.old) {
		REQUIRE(i < NODES);
		items[i].node.hash = (uint64_t)i * 0x9e3779b97f4a7c15ULL;
		htab_insert(&t, &items[i].node);
		items[i++].present = 1;
	}
	htab_clear(&t);
	CHECK_EQ_INT(t.count, 0);
	CHECK(t.old == NULL);
	size_t left = 0;
	HTAB_FOR_EACH(&t, node)
		left++;
	CHECK_EQ_INT(left, 0);
	htab_free(&t);
}

int main(void)
{
	uint64_t seed = 20261204;
	const char *e = getenv("RG_TEST_SEED");
	if (e)
		seed = strtoull(e, NULL, 10);
	printf("test_htab: seed %llu (RG_TEST_SEED to repeat)\n", (unsigned long long)seed);
	growth_is_incremental();
	random_run(seed);
	return check_exit();
}
