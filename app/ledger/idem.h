/* idem.h — the idempotency index: (session, idempotency_key) -> reservation.
 *
 * DESIGN. Reservations live in the shard that owns their SKU, but API.md
 * requires "the same key with another SKU" to be refused, and two SKUs may
 * sit in different shards. So this one index is shared by all shards. It is
 * split into stripes, each with its own mutex; a shard holds one stripe's
 * lock from the lookup until it has inserted the new reservation, so two
 * shards can never both create a reservation under the same key. The stripe
 * is held for microseconds and only by requests that carry a key; SKU state
 * itself stays lock-free.
 *
 * An entry is owned by the shard that inserted it: only that shard removes
 * it (when the reservation is forgotten), so the shard may keep a pointer to
 * it and read its immutable strings without the lock. */
#ifndef RG_IDEM_H
#define RG_IDEM_H

#include <stddef.h>
#include <stdint.h>

#include "common/resid.h"

typedef struct IdemIndex IdemIndex;

typedef struct IdemEntry {
	struct IdemEntry *next;
	uint64_t hash;
	ResId reservation;
	int32_t quantity;
	uint8_t sku_len, session_len, key_len;
	char data[];          /* sku, session, key; not NUL-terminated */
} IdemEntry;

typedef struct IdemSlot {
	IdemIndex *index;
	uint64_t hash;
	unsigned stripe;
} IdemSlot;

IdemIndex *idem_new(void);
/* Frees the index and every entry still in it. */
void idem_free(IdemIndex *x);

/* Locks the stripe of (session, key) and returns it in *slot; the caller
 * must idem_unlock it. */
void idem_lock(IdemIndex *x, const char *session, size_t session_len, const char *key,
	       size_t key_len, IdemSlot *slot);
void idem_unlock(IdemSlot *slot);

/* With the slot locked: the entry for (session, key), or NULL. */
IdemEntry *idem_find(IdemSlot *slot, const char *session, size_t session_len, const char *key,
		     size_t key_len);
/* With the slot locked and no entry present: adds one and returns it. */
IdemEntry *idem_insert(IdemSlot *slot, const char *sku, size_t sku_len, const char *session,
		       size_t session_len, const char *key, size_t key_len, int32_t quantity,
		       const ResId *reservation);
/* Removes and frees e (locks its stripe itself). */
void idem_remove(IdemIndex *x, IdemEntry *e);

static inline const char *idem_entry_sku(const IdemEntry *e) { return e->data; }
static inline const char *idem_entry_key(const IdemEntry *e)
{
	return e->data + e->sku_len + e->session_len;
}

#endif
