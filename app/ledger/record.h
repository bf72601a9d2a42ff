/* record.h — the ledger's WAL records: what happened, in the order it happened.
 *
 * The book turns each request into zero or more records and applies them;
 * recovery applies the same records read back from the WAL, so live and
 * replayed state can never differ. Write-behind reads them to update
 * PostgreSQL. Records describe effects, not requests: a RESERVE record holds
 * the id, times and quantity that were decided, so replay needs no clock and
 * no randomness.
 *
 * PAYLOAD LAYOUT (little-endian; str8 = u8 length + bytes; framed by wal.c)
 *   u8 type, u8 version (RECORD_VERSION), i64 at_ms, then per type:
 *   SKU_PUT   str8 sku, i64 stock, i64 price_cents, i32 per_session_limit,
 *             i32 max_per_order, i32 reservation_ttl_s, str8 name
 *             (the SKU's complete settings after the change)
 *   RESERVE   resid, str8 sku, str8 session, str8 idempotency_key,
 *             i32 quantity, i64 expires_ms            (at_ms = created_ms)
 *   CONFIRM, RELEASE, TIMEOUT
 *             resid                                   (at_ms = when)
 */
#ifndef RG_RECORD_H
#define RG_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/wire.h"

#define RECORD_VERSION 1

typedef enum RecordType {
	REC_SKU_PUT = 1,
	REC_RESERVE = 2,
	REC_CONFIRM = 3,
	REC_RELEASE = 4,
	REC_TIMEOUT = 5,
} RecordType;

typedef struct Record {
	uint8_t type;                     /* RecordType */
	int64_t at_ms;
	ResId id;                         /* RESERVE, CONFIRM, RELEASE, TIMEOUT */
	uint8_t sku_len, session_len, idem_key_len;
	char sku[WIRE_SKU_MAX + 1];       /* SKU_PUT, RESERVE */
	char session[WIRE_SESSION_MAX + 1];
	char idem_key[WIRE_IDEM_KEY_MAX + 1];
	int32_t quantity;
	int64_t expires_ms;
	WireSkuSettings settings;         /* SKU_PUT: all fields present */
} Record;

/* Appends the payload of rec to out (valid records only; asserted). */
void record_encode(const Record *rec, Buf *out);
/* Decodes one payload; returns 0 or -EBADMSG for anything malformed. */
int record_decode(const uint8_t *data, size_t len, Record *rec) __attribute__((warn_unused_result));

const char *record_type_name(uint8_t type);

#endif
