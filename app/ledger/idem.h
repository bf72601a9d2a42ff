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
 * An entry is owned by its reservation, in the shard that made it: only that
 * shard frees it (when the reservation is forgotten), so the shard may keep a
 * pointer to it and read its immutable strings without the lock. The index
 * only links entries; an entry can be out of the index (in_index 0) while its
 * reservation lives on.
 *
 * RECOVERY. Forgetting a reservation after retention is not logged, so
 * replay brings back reservations whose keys the live ledger had already
 * freed and reused, possibly for a SKU of another shard. A key is only ever
 * reused after its holder was forgotten, so of two reservations with one key
 * the newer is the rightful holder: idem_adopt links the newest and leaves
 * the older out (it will be forgotten again on the first tick). That rule
 * does not depend on the order in which shards replay. */
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
	int64_t created_ms;   /* of the reservation: the newest holder wins on replay */
	int32_t quantity;
	uint8_t in_index;
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
/* A new entry, not yet in any index; the caller (its reservation) owns it. */
IdemEntry *idem_entry_new(const char *sku, size_t sku_len, const char *session,
			  size_t session_len, const char *key, size_t key_len, int32_t quantity,
			  const ResId *reservation, int64_t created_ms);
/* With the slot locked and no entry present for its key: links e. */
void idem_link(IdemSlot *slot, IdemEntry *e);
/* Replay: links e unless a newer entry holds its key; an older holder is
 * unlinked (its reservation keeps it, out of the index). Locks itself. */
void idem_adopt(IdemIndex *x, IdemEntry *e);
/* Unlinks e if it is in the index, and frees it (locks its stripe itself). */
void idem_remove(IdemIndex *x, IdemEntry *e);

static inline const char *idem_entry_sku(const IdemEntry *e) { return e->data; }
static inline const char *idem_entry_key(const IdemEntry *e)
{
	return e->data + e->sku_len + e->session_len;
}

#endif
