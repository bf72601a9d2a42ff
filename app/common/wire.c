/* wire.c — encoder and incremental decoder of the ledger's binary protocol.
 *
 * DESIGN. The byte layout and the validity rules live at the top of wire.h;
 * this file is their only implementation. One validator per direction
 * (request_invalid, response_invalid) states the field rules once: encoders
 * assert it returns NULL, decoders return its reason as the error. So a frame
 * we encode is always one we would accept, and the reason a peer's frame was
 * refused names the rule it broke.
 *
 * Decoding happens in two steps. The 16-byte header is checked as soon as its
 * bytes are there (the length as soon as its 4 bytes are), so garbage or an
 * absurd length is refused before any payload is waited for (redis
 * processMultibulkBuffer). Once the whole frame is present, the payload is read
 * with a bounded Reader; a str8 longer than its field is refused at once (it
 * would not fit the struct), a payload that runs out or has bytes left over is
 * refused next, and only then are the values checked against the rules, so a
 * short frame reports "payload short" rather than a bogus field error. */
#include "common/wire.h"

#include <string.h>

#include "common/log.h"

/* A Reader plus the first structural reason a payload failed, if any. */
typedef struct Dec {
	Reader r;
	const char *why;
} Dec;

static int op_known(uint8_t op)
{
	return op >= WIRE_OP_HELLO && op <= WIRE_OP_AUDIT;
}

static int res_state_known(uint8_t state)
{
	return state >= WIRE_RES_RESERVED && state <= WIRE_RES_TIMEOUT;
}

static int in_range(int64_t v, int64_t lo, int64_t hi)
{
	return v >= lo && v <= hi;
}

int wire_sku_valid(const char *s, size_t len)
{
	if (len < 1 || len > WIRE_SKU_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '-'))
			return 0;
	}
	return 1;
}

static int bytes_within(const char *s, size_t len, unsigned char lo, unsigned char hi)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < lo || c > hi)
			return 0;
	}
	return 1;
}

int wire_session_valid(const char *s, size_t len)
{
	return len >= 1 && len <= WIRE_SESSION_MAX && bytes_within(s, len, 0x21, 0x7e);
}

int wire_idem_key_valid(const char *s, size_t len)
{
	return len <= WIRE_IDEM_KEY_MAX && bytes_within(s, len, 0x20, 0x7e);
}

int wire_name_valid(const char *s, size_t len)
{
	if (len > WIRE_NAME_MAX)
		return 0;
	/* Bytes >= 0x80 pass: names are UTF-8 text, only control bytes are refused. */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

WireBody wire_response_body(uint8_t op, uint8_t status)
{
	int done = status == WIRE_OK || status == WIRE_CREATED || status == WIRE_REPLAYED;

	switch (op) {
	case WIRE_OP_HELLO:
		if (status == WIRE_OK || status == WIRE_VERSION_MISMATCH)
			return WIRE_BODY_HELLO;
		break;
	case WIRE_OP_RESERVE:
		if (done)
			return WIRE_BODY_RESERVATION;
		if (status == WIRE_SOLD_OUT || status == WIRE_INSUFFICIENT_STOCK)
			return WIRE_BODY_AVAILABLE;
		if (status == WIRE_LIMIT_EXCEEDED || status == WIRE_QUANTITY_TOO_LARGE)
			return WIRE_BODY_LIMIT;
		break;
	case WIRE_OP_CONFIRM:
	case WIRE_OP_RELEASE:
		/* A refused confirm/release still shows the reservation as it is. */
		if (done || status == WIRE_RESERVATION_EXPIRED ||
		    status == WIRE_RESERVATION_RELEASED || status == WIRE_ALREADY_CONFIRMED)
			return WIRE_BODY_RESERVATION;
		break;
	case WIRE_OP_GET_RESERVATION:
		if (done)
			return WIRE_BODY_RESERVATION;
		break;
	case WIRE_OP_GET_SKU:
		if (status == WIRE_OK || status == WIRE_CREATED)
			return WIRE_BODY_SKU;
		break;
	case WIRE_OP_PUT_SKU:
		if (status == WIRE_OK || status == WIRE_CREATED || status == WIRE_STOCK_BELOW_COMMITTED)
			return WIRE_BODY_SKU;
		break;
	case WIRE_OP_STATS:
	case WIRE_OP_SHARD_STATS:
	case WIRE_OP_SNAPSHOT:
	case WIRE_OP_AUDIT:
		if (status == WIRE_OK)
			return WIRE_BODY_STATS;
		break;
	}
	return WIRE_BODY_NONE;
}

const char *wire_op_name(uint8_t op)
{
	switch (op) {
	case WIRE_OP_HELLO: return "hello";
	case WIRE_OP_PING: return "ping";
	case WIRE_OP_RESERVE: return "reserve";
	case WIRE_OP_CONFIRM: return "confirm";
	case WIRE_OP_RELEASE: return "release";
	case WIRE_OP_GET_RESERVATION: return "get_reservation";
	case WIRE_OP_GET_SKU: return "get_sku";
	case WIRE_OP_PUT_SKU: return "put_sku";
	case WIRE_OP_STATS: return "stats";
	case WIRE_OP_SHARD_STATS: return "shard_stats";
	case WIRE_OP_SNAPSHOT: return "snapshot";
	case WIRE_OP_AUDIT: return "audit";
	}
	return "unknown";
}

/* These strings are the API's error codes (API.md): changing one breaks clients. */
const char *wire_status_name(uint8_t status)
{
	switch (status) {
	case WIRE_OK: return "ok";
	case WIRE_CREATED: return "created";
	case WIRE_REPLAYED: return "replayed";
	case WIRE_UNKNOWN_SKU: return "unknown_sku";
	case WIRE_SOLD_OUT: return "sold_out";
	case WIRE_INSUFFICIENT_STOCK: return "insufficient_stock";
	case WIRE_LIMIT_EXCEEDED: return "limit_exceeded";
	case WIRE_QUANTITY_TOO_LARGE: return "quantity_too_large";
	case WIRE_IDEMPOTENCY_CONFLICT: return "idempotency_conflict";
	case WIRE_UNKNOWN_RESERVATION: return "unknown_reservation";
	case WIRE_RESERVATION_EXPIRED: return "reservation_expired";
	case WIRE_RESERVATION_RELEASED: return "reservation_released";
	case WIRE_ALREADY_CONFIRMED: return "already_confirmed";
	case WIRE_STOCK_BELOW_COMMITTED: return "stock_below_committed";
	case WIRE_MISSING_STOCK: return "missing_stock";
	case WIRE_AUDIT_FAILED: return "audit_failed";
	case WIRE_BUSY: return "busy";
	case WIRE_SHUTTING_DOWN: return "shutting_down";
	case WIRE_VERSION_MISMATCH: return "version_mismatch";
	}
	return "unknown";
}

const char *wire_res_state_name(uint8_t state)
{
	switch (state) {
	case WIRE_RES_RESERVED: return "reserved";
	case WIRE_RES_CONFIRMED: return "confirmed";
	case WIRE_RES_RELEASED: return "released";
	case WIRE_RES_TIMEOUT: return "timeout";
	}
	return "unknown";
}

/* The name table doubles as the list of known statuses, so adding a status
 * without a name (and an API error code) makes the decoder refuse it. */
static int status_known(uint8_t status)
{
	return strcmp(wire_status_name(status), "unknown") != 0;
}

void wire_set_str(char *dst, uint8_t *dst_len, const char *src, size_t len, size_t max)
{
	size_t n = len < max ? len : max;

	rg_assert(max <= UINT8_MAX);
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
	*dst_len = (uint8_t)n;
}

/* ---- validation: the rules of wire.h, shared by encoders and decoders ---- */

static const char *settings_invalid(const WireSkuSettings *s)
{
	if (s->fields & ~(WIRE_SKU_HAS_ALL | WIRE_SKU_ONLY_IF_NEW))
		return "put_sku: unknown field bits";
	if ((s->fields & WIRE_SKU_HAS_STOCK) && !in_range(s->stock, 0, WIRE_STOCK_MAX))
		return "put_sku: stock out of range";
	if ((s->fields & WIRE_SKU_HAS_PRICE) && !in_range(s->price_cents, 0, WIRE_PRICE_MAX))
		return "put_sku: price out of range";
	if ((s->fields & WIRE_SKU_HAS_SESSION_LIMIT) && s->per_session_limit < 0)
		return "put_sku: negative per_session_limit";
	if ((s->fields & WIRE_SKU_HAS_MAX_PER_ORDER) && s->max_per_order < 1)
		return "put_sku: max_per_order below 1";
	if ((s->fields & WIRE_SKU_HAS_TTL) && !in_range(s->reservation_ttl_s, 1, WIRE_TTL_MAX_S))
		return "put_sku: reservation_ttl_s out of range";
	if ((s->fields & WIRE_SKU_HAS_NAME) && !wire_name_valid(s->name, s->name_len))
		return "put_sku: bad name";
	return NULL;
}

static const char *request_invalid(const WireRequest *req)
{
	switch (req->op) {
	case WIRE_OP_HELLO:
		/* Any version is well-formed: refusing it is the server's answer to give. */
		if (req->magic != WIRE_MAGIC)
			return "hello: bad magic";
		return NULL;
	case WIRE_OP_PING:
	case WIRE_OP_STATS:
	case WIRE_OP_SHARD_STATS: /* any u16: whether the shard exists is the server's to say */
	case WIRE_OP_SNAPSHOT:
	case WIRE_OP_AUDIT:
		return NULL;
	case WIRE_OP_RESERVE:
		if (!wire_sku_valid(req->sku, req->sku_len))
			return "reserve: bad sku";
		if (!wire_session_valid(req->session, req->session_len))
			return "reserve: bad session";
		if (!wire_idem_key_valid(req->idem_key, req->idem_key_len))
			return "reserve: bad idempotency key";
		if (req->quantity < 1)
			return "reserve: quantity below 1";
		return NULL;
	case WIRE_OP_CONFIRM:
	case WIRE_OP_RELEASE:
	case WIRE_OP_GET_RESERVATION:
		if (!wire_session_valid(req->session, req->session_len))
			return "reservation op: bad session";
		return NULL;
	case WIRE_OP_GET_SKU:
		if (!wire_sku_valid(req->sku, req->sku_len))
			return "get_sku: bad sku";
		return NULL;
	case WIRE_OP_PUT_SKU:
		if (!wire_sku_valid(req->sku, req->sku_len))
			return "put_sku: bad sku";
		return settings_invalid(&req->settings);
	}
	return "unknown op";
}

static const char *sku_invalid(const WireSku *s)
{
	if (!wire_sku_valid(s->sku, s->sku_len))
		return "sku body: bad sku";
	if (!in_range(s->stock, 0, WIRE_STOCK_MAX))
		return "sku body: stock out of range";
	if (!in_range(s->price_cents, 0, WIRE_PRICE_MAX))
		return "sku body: price out of range";
	if (s->per_session_limit < 0)
		return "sku body: negative per_session_limit";
	if (s->max_per_order < 1)
		return "sku body: max_per_order below 1";
	if (!in_range(s->reservation_ttl_s, 1, WIRE_TTL_MAX_S))
		return "sku body: reservation_ttl_s out of range";
	if (!wire_name_valid(s->name, s->name_len))
		return "sku body: bad name";
	return NULL;
}

static const char *response_invalid(const WireResponse *resp)
{
	if (!op_known(resp->op))
		return "unknown op";
	if (!status_known(resp->status))
		return "unknown status";
	switch (wire_response_body(resp->op, resp->status)) {
	case WIRE_BODY_NONE:
	case WIRE_BODY_AVAILABLE:
	case WIRE_BODY_LIMIT:
		return NULL;
	case WIRE_BODY_HELLO:
		return resp->u.hello.magic == WIRE_MAGIC ? NULL : "hello: bad magic";
	case WIRE_BODY_RESERVATION: {
		const WireReservation *r = &resp->u.reservation;
		if (!wire_sku_valid(r->sku, r->sku_len))
			return "reservation body: bad sku";
		if (!wire_session_valid(r->session, r->session_len))
			return "reservation body: bad session";
		if (r->quantity < 1)
			return "reservation body: quantity below 1";
		if (!res_state_known(r->state))
			return "reservation body: unknown state";
		return NULL;
	}
	case WIRE_BODY_SKU:
		return sku_invalid(&resp->u.sku);
	case WIRE_BODY_STATS:
		if (resp->u.stats.count > WIRE_STATS_MAX)
			return "stats: too many";
		for (unsigned i = 0; i < resp->u.stats.count; i++)
			if (resp->u.stats.item[i].name_len > WIRE_STAT_NAME_MAX)
				return "stats: name too long";
		return NULL;
	}
	return "unknown body";
}

/* ---- encoding ---- */

/* Appends the header with a zero body_len; frame_end patches it. */
static size_t frame_begin(Buf *out, uint8_t op, uint8_t status, uint64_t id)
{
	size_t start = out->len;

	buf_put_u32(out, 0);
	buf_put_u8(out, op);
	buf_put_u8(out, status);
	buf_put_u16(out, 0);
	buf_put_u64(out, id);
	return start;
}

static void frame_end(Buf *out, size_t start)
{
	size_t body_len = out->len - start - 4;

	rg_assert(body_len >= WIRE_HEADER_LEN - 4 && body_len <= WIRE_FRAME_MAX - 4);
	put_u32le(out->data + start, (uint32_t)body_len);
}

static void put_i32(Buf *out, int32_t v)
{
	buf_put_u32(out, (uint32_t)v);
}

static void put_i64(Buf *out, int64_t v)
{
	buf_put_u64(out, (uint64_t)v);
}

void wire_encode_request(Buf *out, const WireRequest *req)
{
	const WireSkuSettings *s = &req->settings;
	size_t start;

	rg_assert(request_invalid(req) == NULL);
	start = frame_begin(out, req->op, 0, req->id);
	switch (req->op) {
	case WIRE_OP_HELLO:
		buf_put_u32(out, req->magic);
		buf_put_u16(out, req->version);
		break;
	case WIRE_OP_PING:
	case WIRE_OP_STATS:
		break;
	case WIRE_OP_SHARD_STATS:
	case WIRE_OP_SNAPSHOT:
	case WIRE_OP_AUDIT:
		buf_put_u16(out, req->shard);
		break;
	case WIRE_OP_RESERVE:
		buf_put_str8(out, req->sku, req->sku_len);
		buf_put_str8(out, req->session, req->session_len);
		buf_put_str8(out, req->idem_key, req->idem_key_len);
		put_i32(out, req->quantity);
		break;
	case WIRE_OP_CONFIRM:
	case WIRE_OP_RELEASE:
	case WIRE_OP_GET_RESERVATION:
		buf_append(out, req->reservation.b, RESID_BYTES);
		buf_put_str8(out, req->session, req->session_len);
		break;
	case WIRE_OP_GET_SKU:
		buf_put_str8(out, req->sku, req->sku_len);
		break;
	case WIRE_OP_PUT_SKU:
		/* Absent settings go out as 0 / empty whatever the struct holds. */
		buf_put_str8(out, req->sku, req->sku_len);
		buf_put_u8(out, s->fields);
		put_i64(out, s->fields & WIRE_SKU_HAS_STOCK ? s->stock : 0);
		put_i64(out, s->fields & WIRE_SKU_HAS_PRICE ? s->price_cents : 0);
		put_i32(out, s->fields & WIRE_SKU_HAS_SESSION_LIMIT ? s->per_session_limit : 0);
		put_i32(out, s->fields & WIRE_SKU_HAS_MAX_PER_ORDER ? s->max_per_order : 0);
		put_i32(out, s->fields & WIRE_SKU_HAS_TTL ? s->reservation_ttl_s : 0);
		if (s->fields & WIRE_SKU_HAS_NAME)
			buf_put_str8(out, s->name, s->name_len);
		else
			buf_put_str8(out, "", 0);
		break;
	}
	frame_end(out, start);
}

void wire_encode_response(Buf *out, const WireResponse *resp)
{
	size_t start;

	rg_assert(response_invalid(resp) == NULL);
	start = frame_begin(out, resp->op, resp->status, resp->id);
	switch (wire_response_body(resp->op, resp->status)) {
	case WIRE_BODY_NONE:
		break;
	case WIRE_BODY_HELLO:
		buf_put_u32(out, resp->u.hello.magic);
		buf_put_u16(out, resp->u.hello.version);
		if (resp->status == WIRE_OK)
			buf_put_u16(out, resp->u.hello.shards);
		break;
	case WIRE_BODY_RESERVATION: {
		const WireReservation *r = &resp->u.reservation;
		buf_append(out, r->id.b, RESID_BYTES);
		buf_put_str8(out, r->sku, r->sku_len);
		buf_put_str8(out, r->session, r->session_len);
		put_i32(out, r->quantity);
		buf_put_u8(out, r->state);
		put_i64(out, r->created_ms);
		put_i64(out, r->expires_ms);
		put_i64(out, r->available);
		break;
	}
	case WIRE_BODY_SKU: {
		const WireSku *s = &resp->u.sku;
		buf_put_str8(out, s->sku, s->sku_len);
		put_i64(out, s->stock);
		put_i64(out, s->reserved);
		put_i64(out, s->sold);
		put_i64(out, s->price_cents);
		put_i32(out, s->per_session_limit);
		put_i32(out, s->max_per_order);
		put_i32(out, s->reservation_ttl_s);
		buf_put_str8(out, s->name, s->name_len);
		break;
	}
	case WIRE_BODY_AVAILABLE:
		put_i64(out, resp->u.available);
		break;
	case WIRE_BODY_LIMIT:
		put_i32(out, resp->u.limit.limit);
		put_i64(out, resp->u.limit.held);
		break;
	case WIRE_BODY_STATS:
		buf_put_u16(out, resp->u.stats.count);
		for (unsigned i = 0; i < resp->u.stats.count; i++) {
			const WireStat *st = &resp->u.stats.item[i];
			buf_put_str8(out, st->name, st->name_len);
			buf_put_u64(out, st->value);
		}
		break;
	}
	frame_end(out, start);
}

/* ---- decoding ---- */

static void dec_fail(Dec *d, const char *why)
{
	if (!d->why)
		d->why = why;
	d->r.failed = 1; /* later reads return zeros and change nothing */
}

static int32_t dec_i32(Dec *d)
{
	return (int32_t)reader_u32(&d->r);
}

static int64_t dec_i64(Dec *d)
{
	return (int64_t)reader_u64(&d->r);
}

/* A str8 into out[max + 1]. Too long for its field is refused here, since it
 * cannot be stored; running past the payload leaves the reader failed. */
static void dec_str8(Dec *d, char *out, size_t max, uint8_t *len, const char *too_long)
{
	uint8_t n = reader_u8(&d->r);

	*len = 0;
	out[0] = '\0';
	if (d->r.failed)
		return;
	if (n > max) {
		dec_fail(d, too_long);
		return;
	}
	reader_bytes(&d->r, out, n);
	if (d->r.failed) {
		out[0] = '\0';
		return;
	}
	out[n] = '\0';
	*len = n;
}

/* Checks what the bytes present allow. Returns NEED_MORE (header fine so
 * far, frame incomplete), ERROR (*why set) or OK (whole frame present, header
 * valid; *frame_len set). A response's status must be known, a request's 0. */
static WireDecode decode_header(const uint8_t *data, size_t len, int is_request,
				size_t *frame_len, const char **why)
{
	uint32_t body_len;

	if (len < 4)
		return WIRE_DECODE_NEED_MORE;
	body_len = get_u32le(data);
	if (body_len < WIRE_HEADER_LEN - 4 || body_len > WIRE_FRAME_MAX - 4) {
		*why = "frame length out of bounds";
		return WIRE_DECODE_ERROR;
	}
	if (len < WIRE_HEADER_LEN)
		return WIRE_DECODE_NEED_MORE;
	if (!op_known(data[4])) {
		*why = "unknown op";
		return WIRE_DECODE_ERROR;
	}
	if (is_request && data[5] != 0) {
		*why = "status set in a request";
		return WIRE_DECODE_ERROR;
	}
	if (!is_request && !status_known(data[5])) {
		*why = "unknown status";
		return WIRE_DECODE_ERROR;
	}
	if (get_u16le(data + 6) != 0) {
		*why = "non-zero flags";
		return WIRE_DECODE_ERROR;
	}
	if (len < 4 + (size_t)body_len)
		return WIRE_DECODE_NEED_MORE;
	*frame_len = 4 + (size_t)body_len;
	return WIRE_DECODE_OK;
}

/* The structural verdict once every field has been read. */
static const char *dec_finish(const Dec *d)
{
	if (d->why)
		return d->why;
	if (d->r.failed)
		return "payload short";
	if (d->r.left)
		return "trailing bytes";
	return NULL;
}

static void decode_settings(Dec *d, WireSkuSettings *s)
{
	s->fields = reader_u8(&d->r);
	s->stock = dec_i64(d);
	s->price_cents = dec_i64(d);
	s->per_session_limit = dec_i32(d);
	s->max_per_order = dec_i32(d);
	s->reservation_ttl_s = dec_i32(d);
	dec_str8(d, s->name, WIRE_NAME_MAX, &s->name_len, "put_sku: name too long");
}

/* Absent settings are ignored (wire.h): zero them so nobody acts on them. */
static void settings_clear_absent(WireSkuSettings *s)
{
	if (!(s->fields & WIRE_SKU_HAS_STOCK))
		s->stock = 0;
	if (!(s->fields & WIRE_SKU_HAS_PRICE))
		s->price_cents = 0;
	if (!(s->fields & WIRE_SKU_HAS_SESSION_LIMIT))
		s->per_session_limit = 0;
	if (!(s->fields & WIRE_SKU_HAS_MAX_PER_ORDER))
		s->max_per_order = 0;
	if (!(s->fields & WIRE_SKU_HAS_TTL))
		s->reservation_ttl_s = 0;
	if (!(s->fields & WIRE_SKU_HAS_NAME)) {
		s->name_len = 0;
		s->name[0] = '\0';
	}
}

WireDecode wire_decode_request(const uint8_t *data, size_t len, WireRequest *req,
			       size_t *frame_len, const char **why)
{
	WireDecode rc = decode_header(data, len, 1, frame_len, why);
	Dec d = { .why = NULL };
	const char *bad;

	if (rc != WIRE_DECODE_OK)
		return rc;
	memset(req, 0, sizeof(*req));
	req->op = data[4];
	req->id = get_u64le(data + 8);
	reader_init(&d.r, data + WIRE_HEADER_LEN, *frame_len - WIRE_HEADER_LEN);
	switch (req->op) {
	case WIRE_OP_HELLO:
		req->magic = reader_u32(&d.r);
		req->version = reader_u16(&d.r);
		break;
	case WIRE_OP_PING:
	case WIRE_OP_STATS:
		break;
	case WIRE_OP_SHARD_STATS:
	case WIRE_OP_SNAPSHOT:
	case WIRE_OP_AUDIT:
		req->shard = reader_u16(&d.r);
		break;
	case WIRE_OP_RESERVE:
		dec_str8(&d, req->sku, WIRE_SKU_MAX, &req->sku_len, "reserve: sku too long");
		dec_str8(&d, req->session, WIRE_SESSION_MAX, &req->session_len,
			 "reserve: session too long");
		dec_str8(&d, req->idem_key, WIRE_IDEM_KEY_MAX, &req->idem_key_len,
			 "reserve: idempotency key too long");
		req->quantity = dec_i32(&d);
		break;
	case WIRE_OP_CONFIRM:
	case WIRE_OP_RELEASE:
	case WIRE_OP_GET_RESERVATION:
		reader_bytes(&d.r, req->reservation.b, RESID_BYTES);
		dec_str8(&d, req->session, WIRE_SESSION_MAX, &req->session_len,
			 "reservation op: session too long");
		break;
	case WIRE_OP_GET_SKU:
		dec_str8(&d, req->sku, WIRE_SKU_MAX, &req->sku_len, "get_sku: sku too long");
		break;
	case WIRE_OP_PUT_SKU:
		dec_str8(&d, req->sku, WIRE_SKU_MAX, &req->sku_len, "put_sku: sku too long");
		decode_settings(&d, &req->settings);
		break;
	}
	bad = dec_finish(&d);
	if (!bad)
		bad = request_invalid(req);
	if (bad) {
		*why = bad;
		return WIRE_DECODE_ERROR;
	}
	settings_clear_absent(&req->settings);
	return WIRE_DECODE_OK;
}

static void decode_reservation(Dec *d, WireReservation *r)
{
	reader_bytes(&d->r, r->id.b, RESID_BYTES);
	dec_str8(d, r->sku, WIRE_SKU_MAX, &r->sku_len, "reservation body: sku too long");
	dec_str8(d, r->session, WIRE_SESSION_MAX, &r->session_len,
		 "reservation body: session too long");
	r->quantity = dec_i32(d);
	r->state = reader_u8(&d->r);
	r->created_ms = dec_i64(d);
	r->expires_ms = dec_i64(d);
	r->available = dec_i64(d);
}

static void decode_sku(Dec *d, WireSku *s)
{
	dec_str8(d, s->sku, WIRE_SKU_MAX, &s->sku_len, "sku body: sku too long");
	s->stock = dec_i64(d);
	s->reserved = dec_i64(d);
	s->sold = dec_i64(d);
	s->price_cents = dec_i64(d);
	s->per_session_limit = dec_i32(d);
	s->max_per_order = dec_i32(d);
	s->reservation_ttl_s = dec_i32(d);
	dec_str8(d, s->name, WIRE_NAME_MAX, &s->name_len, "sku body: name too long");
}

static void decode_stats(Dec *d, WireResponse *resp)
{
	uint16_t count = reader_u16(&d->r);

	/* Checked before the loop: item[] has WIRE_STATS_MAX slots. */
	if (count > WIRE_STATS_MAX) {
		dec_fail(d, "stats: too many");
		return;
	}
	resp->u.stats.count = count;
	for (unsigned i = 0; i < count && !d->r.failed; i++) {
		WireStat *st = &resp->u.stats.item[i];
		dec_str8(d, st->name, WIRE_STAT_NAME_MAX, &st->name_len, "stats: name too long");
		st->value = reader_u64(&d->r);
	}
}

WireDecode wire_decode_response(const uint8_t *data, size_t len, WireResponse *resp,
				size_t *frame_len, const char **why)
{
	WireDecode rc = decode_header(data, len, 0, frame_len, why);
	Dec d = { .why = NULL };
	const char *bad;

	if (rc != WIRE_DECODE_OK)
		return rc;
	memset(resp, 0, sizeof(*resp));
	resp->op = data[4];
	resp->status = data[5];
	resp->id = get_u64le(data + 8);
	reader_init(&d.r, data + WIRE_HEADER_LEN, *frame_len - WIRE_HEADER_LEN);
	switch (wire_response_body(resp->op, resp->status)) {
	case WIRE_BODY_NONE:
		break;
	case WIRE_BODY_HELLO:
		resp->u.hello.magic = reader_u32(&d.r);
		resp->u.hello.version = reader_u16(&d.r);
		if (resp->status == WIRE_OK)
			resp->u.hello.shards = reader_u16(&d.r);
		break;
	case WIRE_BODY_RESERVATION:
		decode_reservation(&d, &resp->u.reservation);
		break;
	case WIRE_BODY_SKU:
		decode_sku(&d, &resp->u.sku);
		break;
	case WIRE_BODY_AVAILABLE:
		resp->u.available = dec_i64(&d);
		break;
	case WIRE_BODY_LIMIT:
		resp->u.limit.limit = dec_i32(&d);
		resp->u.limit.held = dec_i64(&d);
		break;
	case WIRE_BODY_STATS:
		decode_stats(&d, resp);
		break;
	}
	bad = dec_finish(&d);
	if (!bad)
		bad = response_invalid(resp);
	if (bad) {
		*why = bad;
		return WIRE_DECODE_ERROR;
	}
	return WIRE_DECODE_OK;
}

uint64_t wire_stat_value(const WireResponse *resp, const char *name)
{
	for (int i = 0; i < resp->u.stats.count; i++)
		if (strcmp(resp->u.stats.item[i].name, name) == 0)
			return resp->u.stats.item[i].value;
	return 0;
}
