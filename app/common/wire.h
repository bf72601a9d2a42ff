/* wire.h — the binary protocol between FastCGI workers (and tools) and rg-ledger.
 *
 * This header and wire.c are the only code that knows the bytes. Everything is
 * little-endian. A connection is a stream of frames in both directions.
 *
 * FRAME
 *   offset size  field
 *   0      4     body_len   bytes after this field; WIRE_HEADER_LEN - 4 <= body_len
 *                           <= WIRE_FRAME_MAX - 4, checked before anything is buffered
 *   4      1     op         WireOp; a response echoes its request's op
 *   5      1     status     WireStatus in responses; 0 in requests
 *   6      2     flags      0 (reserved; non-zero is an error)
 *   8      8     request_id chosen by the client, echoed in the response; lets a
 *                           connection pipeline (responses come back in order
 *                           per shard, not per connection: match by id)
 *   16     ...   payload    per op (requests) or per (op, status) (responses)
 *
 * Field notation in payloads: str8 = u8 length + that many bytes (no NUL);
 * i32/i64 are two's complement; resid = 16 raw bytes (see resid.h).
 *
 * HANDSHAKE. The first frame on a connection must be HELLO, both ways:
 *   request  HELLO  u32 magic (WIRE_MAGIC), u16 version (WIRE_VERSION)
 *   response HELLO  status OK: u32 magic, u16 version, u16 shard count
 *                   status VERSION_MISMATCH: u32 magic, u16 the server's version;
 *                   the server then closes the connection.
 *
 * REQUEST PAYLOADS
 *   PING             (empty)
 *   STATS            (empty)
 *   RESERVE          str8 sku, str8 session, str8 idempotency_key (length 0 = none),
 *                    i32 quantity
 *   CONFIRM, RELEASE, GET_RESERVATION
 *                    resid, str8 session
 *   GET_SKU          str8 sku
 *   PUT_SKU          str8 sku, u8 fields (WIRE_SKU_HAS_* bits for the optional
 *                    settings, plus WIRE_SKU_ONLY_IF_NEW), i64 stock, i64 price_cents, i32 per_session_limit,
 *                    i32 max_per_order, i32 reservation_ttl_s, str8 name
 *                    (absent settings are sent as 0 / empty and ignored)
 *   SHARD_STATS      u16 shard    one shard's figures, answered by the I/O thread
 *   SNAPSHOT         u16 shard    the shard serialises its book now; the snapshot
 *                                 file follows once the WAL through its LSN is durable
 *   AUDIT            u16 shard    the shard checks every SKU's invariants now
 *   (shard must be below the HELLO's shard count; the ledger closes a connection
 *   that names another, like any malformed frame. These three are admin ops: rg-ctl.)
 *
 * RESPONSE PAYLOADS, chosen by wire_response_body(op, status)
 *   RESERVATION  resid, str8 sku, str8 session, i32 quantity, u8 WireResState,
 *                i64 created_ms, i64 expires_ms, i64 available
 *                (RESERVE/CONFIRM/RELEASE/GET_RESERVATION with OK, CREATED,
 *                REPLAYED; CONFIRM/RELEASE with EXPIRED, RELEASED, ALREADY_CONFIRMED)
 *   SKU          str8 sku, i64 stock, i64 reserved, i64 sold, i64 price_cents,
 *                i32 per_session_limit, i32 max_per_order, i32 reservation_ttl_s,
 *                str8 name  (GET_SKU/PUT_SKU with OK or CREATED;
 *                PUT_SKU with STOCK_BELOW_COMMITTED carries the current SKU)
 *   AVAILABLE    i64 available            (SOLD_OUT, INSUFFICIENT_STOCK)
 *   LIMIT        i32 limit, i64 held      (LIMIT_EXCEEDED: per-session limit and
 *                                          units the session holds or bought;
 *                                          QUANTITY_TOO_LARGE: max_per_order, held 0)
 *   STATS        u16 count <= WIRE_STATS_MAX, then count x (str8 name, u64 value)
 *                (STATS and SHARD_STATS with OK; SNAPSHOT with OK: "shard", "lsn" =
 *                the LSN the snapshot covers; AUDIT with OK: "shard", "skus",
 *                "stock", "reserved", "sold", "holds_active")
 *   HELLO        as above
 *   NONE         (empty) every other combination (e.g. SNAPSHOT with BUSY: the
 *                previous snapshot is still being written, ask again; AUDIT with
 *                AUDIT_FAILED: the reason is in the ledger's log)
 *
 * VALIDITY. Decoders reject (WIRE_DECODE_ERROR, with a reason) a frame whose
 * length is out of bounds, whose op or status is unknown, whose flags are
 * non-zero, whose payload is short or has trailing bytes, or whose fields
 * break the rules below. The ledger closes only that connection.
 *   sku              1..64 bytes of [A-Za-z0-9._:-]
 *   session          1..128 bytes of printable ASCII without space (0x21..0x7e)
 *   idempotency_key  0..128 bytes of printable ASCII (0x20..0x7e)
 *   quantity         >= 1 (the SKU's max_per_order is the book's business)
 *   stock            0..WIRE_STOCK_MAX     price_cents  0..WIRE_PRICE_MAX
 *   per_session_limit 0..INT32_MAX (0 = no limit)
 *   max_per_order    1..INT32_MAX          reservation_ttl_s 1..WIRE_TTL_MAX_S
 *   name             0..200 bytes, no control characters (bytes < 0x20, 0x7f)
 */
#ifndef RG_WIRE_H
#define RG_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/resid.h"

#define WIRE_MAGIC 0x31574752u /* the bytes "RGW1" */
#define WIRE_VERSION 1
#define WIRE_HEADER_LEN 16
#define WIRE_FRAME_MAX 4096

#define WIRE_SKU_MAX 64
#define WIRE_SESSION_MAX 128
#define WIRE_IDEM_KEY_MAX 128
#define WIRE_NAME_MAX 200
#define WIRE_STATS_MAX 64 /* 64 x (1 + 47 + 8) bytes fits WIRE_FRAME_MAX */
#define WIRE_STAT_NAME_MAX 47

#define WIRE_STOCK_MAX 2147483647LL
#define WIRE_PRICE_MAX 1000000000000000LL /* 10^15 cents */
#define WIRE_TTL_MAX_S (7 * 24 * 3600)

typedef enum WireOp {
	WIRE_OP_HELLO = 1,
	WIRE_OP_PING = 2,
	WIRE_OP_RESERVE = 3,
	WIRE_OP_CONFIRM = 4,
	WIRE_OP_RELEASE = 5,
	WIRE_OP_GET_RESERVATION = 6,
	WIRE_OP_GET_SKU = 7,
	WIRE_OP_PUT_SKU = 8,
	WIRE_OP_STATS = 9,
	WIRE_OP_SHARD_STATS = 10,
	WIRE_OP_SNAPSHOT = 11,
	WIRE_OP_AUDIT = 12,
} WireOp;

typedef enum WireStatus {
	WIRE_OK = 0,
	WIRE_CREATED = 1,                 /* new reservation, new SKU */
	WIRE_REPLAYED = 2,                /* same (session, idempotency_key) again */
	WIRE_UNKNOWN_SKU = 10,
	WIRE_SOLD_OUT = 11,
	WIRE_INSUFFICIENT_STOCK = 12,
	WIRE_LIMIT_EXCEEDED = 13,
	WIRE_QUANTITY_TOO_LARGE = 14,
	WIRE_IDEMPOTENCY_CONFLICT = 15,
	WIRE_UNKNOWN_RESERVATION = 16,    /* also: session does not match */
	WIRE_RESERVATION_EXPIRED = 17,
	WIRE_RESERVATION_RELEASED = 18,
	WIRE_ALREADY_CONFIRMED = 19,
	WIRE_STOCK_BELOW_COMMITTED = 20,
	WIRE_MISSING_STOCK = 21,          /* PUT_SKU creating a SKU without stock */
	WIRE_AUDIT_FAILED = 22,           /* AUDIT found a broken invariant */
	WIRE_BUSY = 30,                   /* queue full: retry after a moment */
	WIRE_SHUTTING_DOWN = 31,
	WIRE_VERSION_MISMATCH = 32,
} WireStatus;

typedef enum WireResState {
	WIRE_RES_RESERVED = 1,
	WIRE_RES_CONFIRMED = 2,
	WIRE_RES_RELEASED = 3,
	WIRE_RES_TIMEOUT = 4,
} WireResState;

enum {
	WIRE_SKU_HAS_STOCK = 1 << 0,
	WIRE_SKU_HAS_PRICE = 1 << 1,
	WIRE_SKU_HAS_SESSION_LIMIT = 1 << 2,
	WIRE_SKU_HAS_MAX_PER_ORDER = 1 << 3,
	WIRE_SKU_HAS_TTL = 1 << 4,
	WIRE_SKU_HAS_NAME = 1 << 5,
	WIRE_SKU_HAS_ALL = (1 << 6) - 1,
	/* Not a setting: create the SKU if it is unknown, else change nothing
	 * (catalog adoption must never overwrite what the ledger sells). */
	WIRE_SKU_ONLY_IF_NEW = 1 << 6,
};

typedef struct WireSkuSettings {
	uint8_t fields; /* WIRE_SKU_HAS_* */
	int64_t stock;
	int64_t price_cents;
	int32_t per_session_limit;
	int32_t max_per_order;
	int32_t reservation_ttl_s;
	uint8_t name_len;
	char name[WIRE_NAME_MAX + 1];
} WireSkuSettings;

typedef struct WireRequest {
	uint64_t id;
	uint8_t op;                       /* WireOp */
	uint8_t sku_len, session_len, idem_key_len;
	char sku[WIRE_SKU_MAX + 1];
	char session[WIRE_SESSION_MAX + 1];
	char idem_key[WIRE_IDEM_KEY_MAX + 1];
	int32_t quantity;
	ResId reservation;
	WireSkuSettings settings;         /* PUT_SKU */
	uint32_t magic;                   /* HELLO */
	uint16_t version;                 /* HELLO */
	uint16_t shard;                   /* SHARD_STATS, SNAPSHOT, AUDIT */
} WireRequest;

typedef struct WireReservation {
	ResId id;
	uint8_t sku_len, session_len;
	char sku[WIRE_SKU_MAX + 1];
	char session[WIRE_SESSION_MAX + 1];
	int32_t quantity;
	uint8_t state;                    /* WireResState */
	int64_t created_ms;
	int64_t expires_ms;
	int64_t available;                /* the SKU's available units after this operation */
} WireReservation;

typedef struct WireSku {
	uint8_t sku_len;
	char sku[WIRE_SKU_MAX + 1];
	int64_t stock, reserved, sold;    /* available = stock - reserved - sold */
	int64_t price_cents;
	int32_t per_session_limit;
	int32_t max_per_order;
	int32_t reservation_ttl_s;
	uint8_t name_len;
	char name[WIRE_NAME_MAX + 1];
} WireSku;

typedef struct WireStat {
	uint8_t name_len;
	char name[WIRE_STAT_NAME_MAX + 1];
	uint64_t value;
} WireStat;

typedef enum WireBody {
	WIRE_BODY_NONE,
	WIRE_BODY_HELLO,
	WIRE_BODY_RESERVATION,
	WIRE_BODY_SKU,
	WIRE_BODY_AVAILABLE,
	WIRE_BODY_LIMIT,
	WIRE_BODY_STATS,
} WireBody;

typedef struct WireResponse {
	uint64_t id;
	uint8_t op;                       /* WireOp */
	uint8_t status;                   /* WireStatus */
	union {
		struct { uint32_t magic; uint16_t version; uint16_t shards; } hello;
		WireReservation reservation;
		WireSku sku;
		int64_t available;
		struct { int32_t limit; int64_t held; } limit;
		struct { uint16_t count; WireStat item[WIRE_STATS_MAX]; } stats;
	} u;
} WireResponse;

typedef enum WireDecode {
	WIRE_DECODE_OK = 0,
	WIRE_DECODE_NEED_MORE = 1,
	WIRE_DECODE_ERROR = 2,
} WireDecode;

/* Which payload a response with this op and status carries. */
WireBody wire_response_body(uint8_t op, uint8_t status);

/* Append one whole frame to out. The message must be valid (asserted). */
void wire_encode_request(Buf *out, const WireRequest *req);
void wire_encode_response(Buf *out, const WireResponse *resp);

/* Decode the first frame of data[0..len). On OK, *frame_len is the bytes it
 * used. NEED_MORE means the prefix is valid so far but incomplete; ERROR sets
 * *why to a static reason and the connection must be closed. Decoding never
 * reads past len and never allocates. */
WireDecode wire_decode_request(const uint8_t *data, size_t len, WireRequest *req,
			       size_t *frame_len, const char **why);
WireDecode wire_decode_response(const uint8_t *data, size_t len, WireResponse *resp,
				size_t *frame_len, const char **why);

/* Field rules shared with the HTTP layer, so both validate identically. */
int wire_sku_valid(const char *s, size_t len);
int wire_session_valid(const char *s, size_t len);
int wire_idem_key_valid(const char *s, size_t len);
int wire_name_valid(const char *s, size_t len);

/* Names for logs and the HTTP layer's error codes. */
const char *wire_op_name(uint8_t op);
const char *wire_status_name(uint8_t status);   /* "sold_out", "busy", ... */
const char *wire_res_state_name(uint8_t state); /* "reserved", "confirmed", ... */

/* The value of the named figure in a STATS response, 0 when absent. */
uint64_t wire_stat_value(const WireResponse *resp, const char *name);

/* Convenience for building requests: copies a string field and its length. */
void wire_set_str(char *dst, uint8_t *dst_len, const char *src, size_t len, size_t max);

#endif
