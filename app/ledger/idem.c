/* idem.c — the striped, shared idempotency index. */
#include "ledger/idem.h"

#include <pthread.h>
#include <string.h>

#include "common/hash.h"
#include "common/htab.h"
#include "common/log.h"
#include "common/xmalloc.h"

#define IDEM_STRIPES 64

/* IdemEntry starts with the same two fields as HNode, so entries chain in an
 * HTab directly. */
_Static_assert(offsetof(IdemEntry, next) == offsetof(HNode, next) &&
	       offsetof(IdemEntry, hash) == offsetof(HNode, hash), "IdemEntry must start like HNode");

struct IdemIndex {
	struct {
		pthread_mutex_t mu;
		HTab table;
	} stripe[IDEM_STRIPES];
};

static uint64_t idem_hash(const char *session, size_t session_len, const char *key, size_t key_len)
{
	/* Combined like boost's hash_combine, with the key length mixed in, so
	 * ("ab", "c") and ("a", "bc") land apart. */
	uint64_t h = hash_bytes(session, session_len);
	return h ^ (hash_bytes(key, key_len) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2)) ^ key_len;
}

static unsigned stripe_of(uint64_t hash)
{
	return (unsigned)(hash >> 58) % IDEM_STRIPES;
}

IdemIndex *idem_new(void)
{
	IdemIndex *x = xcalloc(1, sizeof(*x));
	for (int i = 0; i < IDEM_STRIPES; i++) {
		pthread_mutex_init(&x->stripe[i].mu, NULL);
		htab_init(&x->stripe[i].table, 64);
	}
	return x;
}

void idem_free(IdemIndex *x)
{
	if (!x)
		return;
	for (int i = 0; i < IDEM_STRIPES; i++) {
		HTAB_FOR_EACH(&x->stripe[i].table, node)
			free(node);
		htab_free(&x->stripe[i].table);
		pthread_mutex_destroy(&x->stripe[i].mu);
	}
	free(x);
}

void idem_lock(IdemIndex *x, const char *session, size_t session_len, const char *key,
	       size_t key_len, IdemSlot *slot)
{
	slot->index = x;
	slot->hash = idem_hash(session, session_len, key, key_len);
	slot->stripe = stripe_of(slot->hash);
	pthread_mutex_lock(&x->stripe[slot->stripe].mu);
}

void idem_unlock(IdemSlot *slot)
{
	pthread_mutex_unlock(&slot->index->stripe[slot->stripe].mu);
}

IdemEntry *idem_find(IdemSlot *slot, const char *session, size_t session_len, const char *key,
		     size_t key_len)
{
	HTAB_FOR_HASH(&slot->index->stripe[slot->stripe].table, slot->hash, node) {
		IdemEntry *e = (IdemEntry *)node;
		if (e->session_len == session_len && e->key_len == key_len &&
		    memcmp(e->data + e->sku_len, session, session_len) == 0 &&
		    memcmp(idem_entry_key(e), key, key_len) == 0)
			return e;
	}
	return NULL;
}

IdemEntry *idem_entry_new(const char *sku, size_t sku_len, const char *session,
			  size_t session_len, const char *key, size_t key_len, int32_t quantity,
			  const ResId *reservation, int64_t created_ms)
{
	IdemEntry *e = xmalloc(sizeof(*e) + sku_len + session_len + key_len);
	e->next = NULL;
	e->hash = idem_hash(session, session_len, key, key_len);
	e->reservation = *reservation;
	e->created_ms = created_ms;
	e->quantity = quantity;
	e->in_index = 0;
	e->sku_len = (uint8_t)sku_len;
	e->session_len = (uint8_t)session_len;
	e->key_len = (uint8_t)key_len;
	memcpy(e->data, sku, sku_len);
	memcpy(e->data + sku_len, session, session_len);
	memcpy(e->data + sku_len + session_len, key, key_len);
	return e;
}

void idem_link(IdemSlot *slot, IdemEntry *e)
{
	rg_assert(e->hash == slot->hash && !e->in_index);
	htab_insert(&slot->index->stripe[slot->stripe].table, (HNode *)e);
	e->in_index = 1;
}

void idem_adopt(IdemIndex *x, IdemEntry *e)
{
	IdemSlot slot;
	const char *session = e->data + e->sku_len;

	idem_lock(x, session, e->session_len, idem_entry_key(e), e->key_len, &slot);
	IdemEntry *held = idem_find(&slot, session, e->session_len, idem_entry_key(e), e->key_len);
	if (held && held->created_ms < e->created_ms) {
		htab_remove(&x->stripe[slot.stripe].table, (HNode *)held);
		held->in_index = 0;
		held = NULL;
	}
	if (!held)
		idem_link(&slot, e);
	idem_unlock(&slot);
}

void idem_remove(IdemIndex *x, IdemEntry *e)
{
	if (e->in_index) {
		unsigned stripe = stripe_of(e->hash);
		pthread_mutex_lock(&x->stripe[stripe].mu);
		htab_remove(&x->stripe[stripe].table, (HNode *)e);
		pthread_mutex_unlock(&x->stripe[stripe].mu);
	}
	free(e);
}
