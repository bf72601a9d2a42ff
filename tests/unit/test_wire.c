/* test_wire.c — the wire codec and the ledger client.
 *
 * Round trips of every request op and every response body, a stream of frames
 * fed one byte at a time, the table of bad frames in wire_malformed.txt, the
 * field validators on their edges, and a LedgerClient against a small server
 * thread on a Unix socket (handshake, pipelining, timeouts, a vanished peer). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/ledger_client.h"
#include "common/wire.h"
#include "unit/check.h"

/* ---- helpers ---- */

static void set(char *dst, uint8_t *len, const char *s, size_t max)
{
	wire_set_str(dst, len, s, strlen(s), max);
}

static void check_str(const char *a, uint8_t alen, const char *b, uint8_t blen)
{
	CHECK_EQ_INT(alen, blen);
	CHECK(memcmp(a, b, alen) == 0);
	CHECK(a[alen] == '\0');
}

static void fill_resid(ResId *id, uint8_t seed)
{
	for (int i = 0; i < RESID_BYTES; i++)
		id->b[i] = (uint8_t)(seed + i * 17);
}

static void check_request_equal(const WireRequest *a, const WireRequest *b)
{
	const WireSkuSettings *x = &a->settings, *y = &b->settings;

	CHECK(a->id == b->id);
	CHECK_EQ_INT(a->op, b->op);
	check_str(a->sku, a->sku_len, b->sku, b->sku_len);
	check_str(a->session, a->session_len, b->session, b->session_len);
	check_str(a->idem_key, a->idem_key_len, b->idem_key, b->idem_key_len);
	CHECK_EQ_INT(a->quantity, b->quantity);
	CHECK(resid_equal(&a->reservation, &b->reservation));
	CHECK_EQ_INT(x->fields, y->fields);
	CHECK_EQ_INT(x->stock, y->stock);
	CHECK_EQ_INT(x->price_cents, y->price_cents);
	CHECK_EQ_INT(x->per_session_limit, y->per_session_limit);
	CHECK_EQ_INT(x->max_per_order, y->max_per_order);
	CHECK_EQ_INT(x->reservation_ttl_s, y->reservation_ttl_s);
	check_str(x->name, x->name_len, y->name, y->name_len);
	CHECK_EQ_INT(a->magic, b->magic);
	CHECK_EQ_INT(a->version, b->version);
}

static void check_response_equal(const WireResponse *a, const WireResponse *b)
{
	CHECK(a->id == b->id);
	CHECK_EQ_INT(a->op, b->op);
	CHECK_EQ_INT(a->status, b->status);
	switch (wire_response_body(a->op, a->status)) {
	case WIRE_BODY_NONE:
		break;
	case WIRE_BODY_HELLO:
		CHECK_EQ_INT(a->u.hello.magic, b->u.hello.magic);
		CHECK_EQ_INT(a->u.hello.version, b->u.hello.version);
		/* VERSION_MISMATCH carries no shard count. */
		if (a->status == WIRE_OK)
			CHECK_EQ_INT(a->u.hello.shards, b->u.hello.shards);
		else
			CHECK_EQ_INT(b->u.hello.shards, 0);
		break;
	case WIRE_BODY_RESERVATION: {
		const WireReservation *x = &a->u.reservation, *y = &b->u.reservation;
		CHECK(resid_equal(&x->id, &y->id));
		check_str(x->sku, x->sku_len, y->sku, y->sku_len);
		check_str(x->session, x->session_len, y->session, y->session_len);
		CHECK_EQ_INT(x->quantity, y->quantity);
		CHECK_EQ_INT(x->state, y->state);
		CHECK_EQ_INT(x->created_ms, y->created_ms);
		CHECK_EQ_INT(x->expires_ms, y->expires_ms);
		CHECK_EQ_INT(x->available, y->available);
		break;
	}
	case WIRE_BODY_SKU: {
		const WireSku *x = &a->u.sku, *y = &b->u.sku;
		check_str(x->sku, x->sku_len, y->sku, y->sku_len);
		CHECK_EQ_INT(x->stock, y->stock);
		CHECK_EQ_INT(x->reserved, y->reserved);
		CHECK_EQ_INT(x->sold, y->sold);
		CHECK_EQ_INT(x->price_cents, y->price_cents);
		CHECK_EQ_INT(x->per_session_limit, y->per_session_limit);
		CHECK_EQ_INT(x->max_per_order, y->max_per_order);
		CHECK_EQ_INT(x->reservation_ttl_s, y->reservation_ttl_s);
		check_str(x->name, x->name_len, y->name, y->name_len);
		break;
	}
	case WIRE_BODY_AVAILABLE:
		CHECK_EQ_INT(a->u.available, b->u.available);
		break;
	case WIRE_BODY_LIMIT:
		CHECK_EQ_INT(a->u.limit.limit, b->u.limit.limit);
		CHECK_EQ_INT(a->u.limit.held, b->u.limit.held);
		break;
	case WIRE_BODY_STATS:
		CHECK_EQ_INT(a->u.stats.count, b->u.stats.count);
		for (unsigned i = 0; i < a->u.stats.count && i < b->u.stats.count; i++) {
			const WireStat *x = &a->u.stats.item[i], *y = &b->u.stats.item[i];
			check_str(x->name, x->name_len, y->name, y->name_len);
			CHECK(x->value == y->value);
		}
		break;
	}
}

/* ---- sample messages ---- */

enum { N_REQUESTS = 14 };

static void sample_request(int i, WireRequest *r)
{
	memset(r, 0, sizeof(*r));
	r->id = 1000 + (uint64_t)i;
	switch (i) {
	case 0:
		r->op = WIRE_OP_HELLO;
		r->magic = WIRE_MAGIC;
		r->version = WIRE_VERSION;
		break;
	case 1:
		r->op = WIRE_OP_PING;
		r->id = UINT64_MAX; /* all 64 bits survive */
		break;
	case 2:
		r->op = WIRE_OP_RESERVE;
		set(r->sku, &r->sku_len, "sneaker-42:red_v1.0", WIRE_SKU_MAX);
		set(r->session, &r->session_len, "sess!~#abc", WIRE_SESSION_MAX);
		r->quantity = 3;
		break;
	case 3:
		r->op = WIRE_OP_RESERVE;
		memset(r->sku, 'Z', WIRE_SKU_MAX);
		r->sku_len = WIRE_SKU_MAX;
		memset(r->session, 'q', WIRE_SESSION_MAX);
		r->session_len = WIRE_SESSION_MAX;
		memset(r->idem_key, ' ', WIRE_IDEM_KEY_MAX);
		r->idem_key_len = WIRE_IDEM_KEY_MAX;
		r->quantity = INT32_MAX;
		break;
	case 4:
		r->op = WIRE_OP_CONFIRM;
		fill_resid(&r->reservation, 4);
		set(r->session, &r->session_len, "s-4", WIRE_SESSION_MAX);
		break;
	case 5:
		r->op = WIRE_OP_RELEASE;
		fill_resid(&r->reservation, 5);
		set(r->session, &r->session_len, "s-5", WIRE_SESSION_MAX);
		break;
	case 6:
		r->op = WIRE_OP_GET_RESERVATION;
		fill_resid(&r->reservation, 6);
		set(r->session, &r->session_len, "s-6", WIRE_SESSION_MAX);
		break;
	case 7:
		r->op = WIRE_OP_GET_SKU;
		set(r->sku, &r->sku_len, "A", WIRE_SKU_MAX);
		break;
	case 8:
		r->op = WIRE_OP_PUT_SKU;
		set(r->sku, &r->sku_len, "SKU-8", WIRE_SKU_MAX);
		r->settings.fields = WIRE_SKU_HAS_ALL;
		r->settings.stock = WIRE_STOCK_MAX;
		r->settings.price_cents = WIRE_PRICE_MAX;
		r->settings.per_session_limit = 0;
		r->settings.max_per_order = INT32_MAX;
		r->settings.reservation_ttl_s = WIRE_TTL_MAX_S;
		memset(r->settings.name, 0xc3, WIRE_NAME_MAX); /* UTF-8 lead bytes are fine */
		r->settings.name_len = WIRE_NAME_MAX;
		break;
	case 9:
		/* Only some settings: the rest travel as 0 and come back as 0. */
		r->op = WIRE_OP_PUT_SKU;
		set(r->sku, &r->sku_len, "SKU-9", WIRE_SKU_MAX);
		r->settings.fields = WIRE_SKU_HAS_PRICE | WIRE_SKU_HAS_NAME;
		r->settings.price_cents = 1999;
		set(r->settings.name, &r->settings.name_len, "Limited drop", WIRE_NAME_MAX);
		break;
	case 10:
		r->op = WIRE_OP_STATS;
		break;
	case 11:
		r->op = WIRE_OP_SHARD_STATS;
		r->shard = 0;
		break;
	case 12:
		r->op = WIRE_OP_SNAPSHOT;
		r->shard = 7;
		break;
	case 13:
		r->op = WIRE_OP_AUDIT;
		r->shard = UINT16_MAX; /* whether it exists is the server's to say */
		break;
	}
}

enum { N_RESPONSES = 17 };

static void sample_response(int i, WireResponse *r)
{
	memset(r, 0, sizeof(*r));
	r->id = 5000 + (uint64_t)i;
	switch (i) {
	case 0:
		r->op = WIRE_OP_HELLO;
		r->u.hello.magic = WIRE_MAGIC;
		r->u.hello.version = WIRE_VERSION;
		r->u.hello.shards = 8;
		break;
	case 1:
		r->op = WIRE_OP_HELLO;
		r->status = WIRE_VERSION_MISMATCH;
		r->u.hello.magic = WIRE_MAGIC;
		r->u.hello.version = 7;
		break;
	case 2:
		r->op = WIRE_OP_PING;
		break;
	case 3:
	case 4:
		r->op = i == 3 ? WIRE_OP_RESERVE : WIRE_OP_RELEASE;
		r->status = i == 3 ? WIRE_CREATED : WIRE_ALREADY_CONFIRMED;
		fill_resid(&r->u.reservation.id, (uint8_t)i);
		set(r->u.reservation.sku, &r->u.reservation.sku_len, "SKU-1", WIRE_SKU_MAX);
		set(r->u.reservation.session, &r->u.reservation.session_len, "s1", WIRE_SESSION_MAX);
		r->u.reservation.quantity = 2;
		r->u.reservation.state = i == 3 ? WIRE_RES_RESERVED : WIRE_RES_CONFIRMED;
		r->u.reservation.created_ms = 1796299200000LL;
		r->u.reservation.expires_ms = 1796299800000LL;
		r->u.reservation.available = 41;
		break;
	case 5:
	case 6:
		r->op = i == 5 ? WIRE_OP_GET_SKU : WIRE_OP_PUT_SKU;
		r->status = i == 5 ? WIRE_OK : WIRE_STOCK_BELOW_COMMITTED;
		set(r->u.sku.sku, &r->u.sku.sku_len, "SKU-2", WIRE_SKU_MAX);
		r->u.sku.stock = 100;
		r->u.sku.reserved = 7;
		r->u.sku.sold = 90;
		r->u.sku.price_cents = 12345;
		r->u.sku.per_session_limit = 2;
		r->u.sku.max_per_order = 1;
		r->u.sku.reservation_ttl_s = 600;
		set(r->u.sku.name, &r->u.sku.name_len, "Flash \"sale\" item", WIRE_NAME_MAX);
		break;
	case 7:
		r->op = WIRE_OP_RESERVE;
		r->status = WIRE_SOLD_OUT;
		r->u.available = 0;
		break;
	case 8:
		r->op = WIRE_OP_RESERVE;
		r->status = WIRE_INSUFFICIENT_STOCK;
		r->u.available = 3;
		break;
	case 9:
		r->op = WIRE_OP_RESERVE;
		r->status = WIRE_LIMIT_EXCEEDED;
		r->u.limit.limit = 2;
		r->u.limit.held = 2;
		break;
	case 10:
		r->op = WIRE_OP_STATS;
		r->u.stats.count = 0;
		break;
	case 11:
		r->op = WIRE_OP_STATS;
		r->u.stats.count = WIRE_STATS_MAX;
		for (unsigned k = 0; k < WIRE_STATS_MAX; k++) {
			WireStat *st = &r->u.stats.item[k];
			memset(st->name, 'a' + (int)(k % 26), WIRE_STAT_NAME_MAX);
			st->name_len = WIRE_STAT_NAME_MAX;
			st->value = UINT64_MAX - k;
		}
		break;
	case 12:
		r->op = WIRE_OP_CONFIRM;
		r->status = WIRE_UNKNOWN_RESERVATION;
		break;
	case 13:
		r->op = WIRE_OP_RESERVE;
		r->status = WIRE_BUSY;
		break;
	case 14:
		r->op = WIRE_OP_SNAPSHOT;
		r->u.stats.count = 2;
		set(r->u.stats.item[0].name, &r->u.stats.item[0].name_len, "shard", WIRE_STAT_NAME_MAX);
		r->u.stats.item[0].value = 1;
		set(r->u.stats.item[1].name, &r->u.stats.item[1].name_len, "lsn", WIRE_STAT_NAME_MAX);
		r->u.stats.item[1].value = 123456789;
		break;
	case 15:
		r->op = WIRE_OP_AUDIT;
		r->status = WIRE_AUDIT_FAILED;
		break;
	case 16:
		r->op = WIRE_OP_SHARD_STATS;
		r->u.stats.count = 1;
		set(r->u.stats.item[0].name, &r->u.stats.item[0].name_len, "fsync_le_2500us",
		    WIRE_STAT_NAME_MAX);
		r->u.stats.item[0].value = 42;
		break;
	}
}

/* ---- round trips ---- */

static void test_request_round_trip(void)
{
	for (int i = 0; i < N_REQUESTS; i++) {
		WireRequest in, out;
		Buf b;
		size_t used = 0;
		const char *why = NULL;

		sample_request(i, &in);
		buf_init(&b, 0);
		wire_encode_request(&b, &in);
		CHECK_EQ_INT(get_u32le(b.data), b.len - 4);
		CHECK_EQ_INT(wire_decode_request(b.data, b.len, &out, &used, &why), WIRE_DECODE_OK);
		CHECK_EQ_INT(used, b.len);
		check_request_equal(&in, &out);
		/* A request is not a response: status 0 is OK for any op, but the
		 * payloads differ, so most must fail as a response. Just never crash. */
		WireResponse resp;
		(void)wire_decode_response(b.data, b.len, &resp, &used, &why);
		buf_free(&b);
	}

	/* Absent PUT_SKU settings are sent as 0 whatever the struct holds. */
	WireRequest in, out;
	Buf b;
	size_t used;
	const char *why;
	sample_request(9, &in);
	in.settings.stock = -77;
	in.settings.reservation_ttl_s = 0;
	buf_init(&b, 0);
	wire_encode_request(&b, &in);
	CHECK_EQ_INT(wire_decode_request(b.data, b.len, &out, &used, &why), WIRE_DECODE_OK);
	CHECK_EQ_INT(out.settings.stock, 0);
	CHECK_EQ_INT(out.settings.price_cents, 1999);
	buf_free(&b);
}

static void test_response_round_trip(void)
{
	for (int i = 0; i < N_RESPONSES; i++) {
		WireResponse in, out;
		Buf b;
		size_t used = 0;
		const char *why = NULL;

		sample_response(i, &in);
		buf_init(&b, 0);
		wire_encode_response(&b, &in);
		CHECK_EQ_INT(get_u32le(b.data), b.len - 4);
		CHECK(b.len <= WIRE_FRAME_MAX);
		CHECK_EQ_INT(wire_decode_response(b.data, b.len, &out, &used, &why), WIRE_DECODE_OK);
		if (why)
			fprintf(stderr, "response %d: %s\n", i, why);
		CHECK_EQ_INT(used, b.len);
		check_response_equal(&in, &out);
		buf_free(&b);
	}
}

/* The exact bytes of two frames, so the layout cannot drift unnoticed. */
static void test_golden_bytes(void)
{
	static const uint8_t ping[] = {
		0x0c, 0, 0, 0, 0x02, 0, 0, 0, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
	};
	static const uint8_t hello[] = {
		0x12, 0, 0, 0, 0x01, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0,
		'R', 'G', 'W', '1', 0x01, 0x00,
	};
	/* The admin ops carry the shard as a u16 after the header. */
	static const uint8_t snapshot[] = {
		0x0e, 0, 0, 0, 0x0b, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0x03, 0x01,
	};
	WireRequest r = { .op = WIRE_OP_PING, .id = 0x0102030405060708ULL };
	Buf b;

	buf_init(&b, 0);
	wire_encode_request(&b, &r);
	CHECK(b.len == sizeof(ping) && memcmp(b.data, ping, sizeof(ping)) == 0);
	buf_reset(&b);
	r = (WireRequest){ .op = WIRE_OP_HELLO, .id = 1, .magic = WIRE_MAGIC, .version = WIRE_VERSION };
	wire_encode_request(&b, &r);
	CHECK(b.len == sizeof(hello) && memcmp(b.data, hello, sizeof(hello)) == 0);
	buf_reset(&b);
	r = (WireRequest){ .op = WIRE_OP_SNAPSHOT, .id = 2, .shard = 0x0103 };
	wire_encode_request(&b, &r);
	CHECK(b.len == sizeof(snapshot) && memcmp(b.data, snapshot, sizeof(snapshot)) == 0);
	buf_free(&b);
}

static void test_response_body_table(void)
{
	static const struct { uint8_t op, status; WireBody body; } t[] = {
		{ WIRE_OP_HELLO, WIRE_OK, WIRE_BODY_HELLO },
		{ WIRE_OP_HELLO, WIRE_VERSION_MISMATCH, WIRE_BODY_HELLO },
		{ WIRE_OP_HELLO, WIRE_BUSY, WIRE_BODY_NONE },
		{ WIRE_OP_PING, WIRE_OK, WIRE_BODY_NONE },
		{ WIRE_OP_RESERVE, WIRE_OK, WIRE_BODY_RESERVATION },
		{ WIRE_OP_RESERVE, WIRE_CREATED, WIRE_BODY_RESERVATION },
		{ WIRE_OP_RESERVE, WIRE_REPLAYED, WIRE_BODY_RESERVATION },
		{ WIRE_OP_RESERVE, WIRE_SOLD_OUT, WIRE_BODY_AVAILABLE },
		{ WIRE_OP_RESERVE, WIRE_INSUFFICIENT_STOCK, WIRE_BODY_AVAILABLE },
		{ WIRE_OP_RESERVE, WIRE_LIMIT_EXCEEDED, WIRE_BODY_LIMIT },
		{ WIRE_OP_RESERVE, WIRE_QUANTITY_TOO_LARGE, WIRE_BODY_LIMIT },
		{ WIRE_OP_RESERVE, WIRE_UNKNOWN_SKU, WIRE_BODY_NONE },
		{ WIRE_OP_RESERVE, WIRE_IDEMPOTENCY_CONFLICT, WIRE_BODY_NONE },
		{ WIRE_OP_RESERVE, WIRE_ALREADY_CONFIRMED, WIRE_BODY_NONE },
		{ WIRE_OP_CONFIRM, WIRE_OK, WIRE_BODY_RESERVATION },
		{ WIRE_OP_CONFIRM, WIRE_RESERVATION_EXPIRED, WIRE_BODY_RESERVATION },
		{ WIRE_OP_CONFIRM, WIRE_RESERVATION_RELEASED, WIRE_BODY_RESERVATION },
		{ WIRE_OP_CONFIRM, WIRE_ALREADY_CONFIRMED, WIRE_BODY_RESERVATION },
		{ WIRE_OP_CONFIRM, WIRE_UNKNOWN_RESERVATION, WIRE_BODY_NONE },
		{ WIRE_OP_RELEASE, WIRE_OK, WIRE_BODY_RESERVATION },
		{ WIRE_OP_RELEASE, WIRE_RESERVATION_EXPIRED, WIRE_BODY_RESERVATION },
		{ WIRE_OP_RELEASE, WIRE_SOLD_OUT, WIRE_BODY_NONE },
		{ WIRE_OP_GET_RESERVATION, WIRE_OK, WIRE_BODY_RESERVATION },
		{ WIRE_OP_GET_RESERVATION, WIRE_RESERVATION_EXPIRED, WIRE_BODY_NONE },
		{ WIRE_OP_GET_SKU, WIRE_OK, WIRE_BODY_SKU },
		{ WIRE_OP_GET_SKU, WIRE_UNKNOWN_SKU, WIRE_BODY_NONE },
		{ WIRE_OP_GET_SKU, WIRE_STOCK_BELOW_COMMITTED, WIRE_BODY_NONE },
		{ WIRE_OP_PUT_SKU, WIRE_OK, WIRE_BODY_SKU },
		{ WIRE_OP_PUT_SKU, WIRE_CREATED, WIRE_BODY_SKU },
		{ WIRE_OP_PUT_SKU, WIRE_STOCK_BELOW_COMMITTED, WIRE_BODY_SKU },
		{ WIRE_OP_PUT_SKU, WIRE_MISSING_STOCK, WIRE_BODY_NONE },
		{ WIRE_OP_STATS, WIRE_OK, WIRE_BODY_STATS },
		{ WIRE_OP_STATS, WIRE_BUSY, WIRE_BODY_NONE },
		{ WIRE_OP_SHARD_STATS, WIRE_OK, WIRE_BODY_STATS },
		{ WIRE_OP_SNAPSHOT, WIRE_OK, WIRE_BODY_STATS },
		{ WIRE_OP_SNAPSHOT, WIRE_BUSY, WIRE_BODY_NONE },
		{ WIRE_OP_AUDIT, WIRE_OK, WIRE_BODY_STATS },
		{ WIRE_OP_AUDIT, WIRE_AUDIT_FAILED, WIRE_BODY_NONE },
		{ 0, WIRE_OK, WIRE_BODY_NONE },
		{ 200, WIRE_OK, WIRE_BODY_NONE },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		WireBody got = wire_response_body(t[i].op, t[i].status);
		if (got != t[i].body)
			fprintf(stderr, "body(%u, %u) = %d\n", t[i].op, t[i].status, (int)got);
		CHECK_EQ_INT(got, t[i].body);
	}
}

static void test_names(void)
{
	static const char *const status[] = {
		[WIRE_OK] = "ok", [WIRE_CREATED] = "created", [WIRE_REPLAYED] = "replayed",
		[WIRE_UNKNOWN_SKU] = "unknown_sku", [WIRE_SOLD_OUT] = "sold_out",
		[WIRE_INSUFFICIENT_STOCK] = "insufficient_stock",
		[WIRE_LIMIT_EXCEEDED] = "limit_exceeded",
		[WIRE_QUANTITY_TOO_LARGE] = "quantity_too_large",
		[WIRE_IDEMPOTENCY_CONFLICT] = "idempotency_conflict",
		[WIRE_UNKNOWN_RESERVATION] = "unknown_reservation",
		[WIRE_RESERVATION_EXPIRED] = "reservation_expired",
		[WIRE_RESERVATION_RELEASED] = "reservation_released",
		[WIRE_ALREADY_CONFIRMED] = "already_confirmed",
		[WIRE_STOCK_BELOW_COMMITTED] = "stock_below_committed",
		[WIRE_MISSING_STOCK] = "missing_stock", [WIRE_AUDIT_FAILED] = "audit_failed",
		[WIRE_BUSY] = "busy",
		[WIRE_SHUTTING_DOWN] = "shutting_down", [WIRE_VERSION_MISMATCH] = "version_mismatch",
	};
	static const char *const ops[] = {
		NULL, "hello", "ping", "reserve", "confirm", "release", "get_reservation",
		"get_sku", "put_sku", "stats", "shard_stats", "snapshot", "audit",
	};
	static const char *const states[] = { NULL, "reserved", "confirmed", "released", "timeout" };

	for (unsigned s = 0; s < 256; s++) {
		const char *want = s < sizeof(status) / sizeof(status[0]) && status[s] ? status[s] : "unknown";
		CHECK(strcmp(wire_status_name((uint8_t)s), want) == 0);
	}
	for (unsigned op = 0; op < 256; op++) {
		const char *want = op < sizeof(ops) / sizeof(ops[0]) && ops[op] ? ops[op] : "unknown";
		CHECK(strcmp(wire_op_name((uint8_t)op), want) == 0);
	}
	for (unsigned st = 0; st < 256; st++) {
		const char *want = st < sizeof(states) / sizeof(states[0]) && states[st] ? states[st] : "unknown";
		CHECK(strcmp(wire_res_state_name((uint8_t)st), want) == 0);
	}
}

static void test_validators(void)
{
	char big[256];
	memset(big, 'a', sizeof(big));

	CHECK(!wire_sku_valid("", 0));
	CHECK(wire_sku_valid("a", 1));
	CHECK(wire_sku_valid("AZaz09._:-", 10));
	CHECK(wire_sku_valid(big, WIRE_SKU_MAX));
	CHECK(!wire_sku_valid(big, WIRE_SKU_MAX + 1));
	CHECK(!wire_sku_valid("a/b", 3));
	CHECK(!wire_sku_valid("a b", 3));
	CHECK(!wire_sku_valid("a\0b", 3));
	CHECK(!wire_sku_valid("a+b", 3));
	CHECK(!wire_sku_valid("\xc3\xa9", 2));
	CHECK(wire_sku_valid("ab/", 2)); /* only len bytes count */

	CHECK(!wire_session_valid("", 0));
	CHECK(wire_session_valid("!", 1));
	CHECK(wire_session_valid("~", 1));
	CHECK(wire_session_valid(big, WIRE_SESSION_MAX));
	CHECK(!wire_session_valid(big, WIRE_SESSION_MAX + 1));
	CHECK(!wire_session_valid("a b", 3));
	CHECK(!wire_session_valid("a\tb", 3));
	CHECK(!wire_session_valid("a\x7f", 2));
	CHECK(!wire_session_valid("a\x80", 2));

	CHECK(wire_idem_key_valid("", 0));
	CHECK(wire_idem_key_valid(" ", 1));
	CHECK(wire_idem_key_valid("order 17 ~", 10));
	CHECK(wire_idem_key_valid(big, WIRE_IDEM_KEY_MAX));
	CHECK(!wire_idem_key_valid(big, WIRE_IDEM_KEY_MAX + 1));
	CHECK(!wire_idem_key_valid("a\nb", 3));
	CHECK(!wire_idem_key_valid("\x7f", 1));
	CHECK(!wire_idem_key_valid("\xff", 1));

	CHECK(wire_name_valid("", 0));
	CHECK(wire_name_valid("Sneaker \"Red\" 42 \xe2\x82\xac", 20));
	CHECK(wire_name_valid(big, WIRE_NAME_MAX));
	CHECK(!wire_name_valid(big, WIRE_NAME_MAX + 1));
	CHECK(!wire_name_valid("a\x01", 2));
	CHECK(!wire_name_valid("a\x1f", 2));
	CHECK(!wire_name_valid("a\x7f", 2));
	CHECK(!wire_name_valid("a\0", 2));
}

static void test_set_str(void)
{
	char dst[8];
	uint8_t len = 99;

	wire_set_str(dst, &len, "abcdefghij", 10, 7);
	CHECK_EQ_INT(len, 7);
	CHECK(strcmp(dst, "abcdefg") == 0);
	wire_set_str(dst, &len, "xy", 2, 7);
	CHECK_EQ_INT(len, 2);
	CHECK(strcmp(dst, "xy") == 0);
	wire_set_str(dst, &len, NULL, 0, 7);
	CHECK_EQ_INT(len, 0);
	CHECK(dst[0] == '\0');
}

/* ---- streams fed one byte at a time ---- */

static void test_stream_bytewise(void)
{
	Buf b;
	size_t off = 0, got_frames = 0;

	buf_init(&b, 0);
	for (int i = 0; i < N_REQUESTS; i++) {
		WireRequest r;
		sample_request(i, &r);
		wire_encode_request(&b, &r);
	}
	for (size_t have = 0; have <= b.len; have++) {
		WireRequest out, want;
		size_t used = 0;
		const char *why = NULL;
		WireDecode d = wire_decode_request(b.data + off, have - off, &out, &used, &why);
		if (d == WIRE_DECODE_NEED_MORE)
			continue;
		CHECK_EQ_INT(d, WIRE_DECODE_OK);
		if (d != WIRE_DECODE_OK) {
			fprintf(stderr, "request stream at %zu: %s\n", have, why ? why : "?");
			break;
		}
		/* OK exactly when the frame's last byte arrives, not later. */
		CHECK_EQ_INT(used, have - off);
		sample_request((int)got_frames, &want);
		check_request_equal(&want, &out);
		off += used;
		got_frames++;
	}
	CHECK_EQ_INT(got_frames, N_REQUESTS);
	CHECK_EQ_INT(off, b.len);

	buf_reset(&b);
	off = got_frames = 0;
	for (int i = 0; i < N_RESPONSES; i++) {
		WireResponse r;
		sample_response(i, &r);
		wire_encode_response(&b, &r);
	}
	for (size_t have = 0; have <= b.len; have++) {
		WireResponse out, want;
		size_t used = 0;
		const char *why = NULL;
		WireDecode d = wire_decode_response(b.data + off, have - off, &out, &used, &why);
		if (d == WIRE_DECODE_NEED_MORE)
			continue;
		CHECK_EQ_INT(d, WIRE_DECODE_OK);
		if (d != WIRE_DECODE_OK) {
			fprintf(stderr, "response stream at %zu: %s\n", have, why ? why : "?");
			break;
		}
		CHECK_EQ_INT(used, have - off);
		sample_response((int)got_frames, &want);
		check_response_equal(&want, &out);
		off += used;
		got_frames++;
	}
	CHECK_EQ_INT(got_frames, N_RESPONSES);
	CHECK_EQ_INT(off, b.len);

	/* All at once: frames come out back to back from one buffer. */
	off = got_frames = 0;
	for (;;) {
		WireResponse out;
		size_t used;
		const char *why;
		if (wire_decode_response(b.data + off, b.len - off, &out, &used, &why) != WIRE_DECODE_OK)
			break;
		off += used;
		got_frames++;
	}
	CHECK_EQ_INT(got_frames, N_RESPONSES);
	CHECK_EQ_INT(off, b.len);
	buf_free(&b);
}

/* ---- the table of malformed frames ---- */

static char *trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

static void put_le(Buf *b, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		buf_put_u8(b, (uint8_t)(v >> (8 * i)));
}

/* Parses the bytes column (syntax at the top of wire_malformed.txt).
 * Returns 0 or -EINVAL. */
static int parse_bytes(const char *s, Buf *out)
{
	static const struct { const char *prefix; int bytes; int is_signed; } ints[] = {
		{ "u8:", 1, 0 }, { "u16:", 2, 0 }, { "u32:", 4, 0 }, { "u64:", 8, 0 },
		{ "i32:", 4, 1 }, { "i64:", 8, 1 },
	};
	long len_at = -1;

	while (*s) {
		char *end;
		if (*s == ' ' || *s == '\t') {
			s++;
			continue;
		}
		if (*s == '\'') {
			const char *close = strchr(s + 1, '\'');
			if (!close)
				return -EINVAL;
			buf_append(out, s + 1, (size_t)(close - s - 1));
			s = close + 1;
			continue;
		}
		if (strncmp(s, "LEN", 3) == 0) {
			len_at = (long)out->len;
			buf_put_u32(out, 0);
			s += 3;
			continue;
		}
		size_t k, nints = sizeof(ints) / sizeof(ints[0]);
		for (k = 0; k < nints; k++)
			if (strncmp(s, ints[k].prefix, strlen(ints[k].prefix)) == 0)
				break;
		if (k < nints) {
			const char *num = s + strlen(ints[k].prefix);
			uint64_t v;
			errno = 0;
			if (ints[k].is_signed)
				v = (uint64_t)strtoll(num, &end, 0);
			else
				v = strtoull(num, &end, 0);
			if (end == num || errno)
				return -EINVAL;
			put_le(out, v, ints[k].bytes);
			s = end;
			continue;
		}
		unsigned long byte = strtoul(s, &end, 16);
		if (end != s + 2 || byte > 0xff)
			return -EINVAL;
		s = end;
		unsigned long repeat = 1;
		if (*s == '*') {
			repeat = strtoul(s + 1, &end, 10);
			if (end == s + 1)
				return -EINVAL;
			s = end;
		}
		while (repeat--)
			buf_put_u8(out, (uint8_t)byte);
	}
	if (len_at >= 0)
		put_u32le(out->data + len_at, (uint32_t)(out->len - (size_t)len_at - 4));
	return 0;
}

static WireDecode decode_as(int is_request, const uint8_t *data, size_t len, size_t *used,
			    const char **why)
{
	static WireRequest req;
	static WireResponse resp;

	if (is_request)
		return wire_decode_request(data, len, &req, used, why);
	return wire_decode_response(data, len, &resp, used, why);
}

static void test_malformed_table(void)
{
	const char *dir = getenv("RG_TEST_DATA");
	char path[4096], line[4096];
	FILE *f;
	int rows = 0, errors = 0, lineno = 0;

	snprintf(path, sizeof(path), "%s/unit/wire_malformed.txt", dir ? dir : "tests");
	f = fopen(path, "r");
	if (!f)
		fprintf(stderr, "cannot open %s (set RG_TEST_DATA to the tests directory)\n", path);
	REQUIRE(f);
	while (fgets(line, sizeof(line), f)) {
		char *col[5], *p = line;
		int n = 0;

		lineno++;
		REQUIRE(strchr(line, '\n') || feof(f)); /* no silently split lines */
		if (*trim(line) == '\0' || *trim(line) == '#')
			continue;
		while (n < 5) {
			char *bar = n < 4 ? strchr(p, '|') : NULL;
			if (bar)
				*bar = '\0';
			col[n++] = trim(p);
			if (!bar)
				break;
			p = bar + 1;
		}
		if (n != 5) {
			fprintf(stderr, "%s:%d: need 5 columns\n", path, lineno);
			CHECK(n == 5);
			continue;
		}
		const char *name = col[0], *want_why = col[3];
		int is_request = strcmp(col[1], "req") == 0;
		CHECK(is_request || strcmp(col[1], "resp") == 0);
		WireDecode want;
		if (strcmp(col[2], "error") == 0)
			want = WIRE_DECODE_ERROR;
		else if (strcmp(col[2], "need_more") == 0)
			want = WIRE_DECODE_NEED_MORE;
		else if (strcmp(col[2], "ok") == 0)
			want = WIRE_DECODE_OK;
		else {
			fprintf(stderr, "%s:%d: bad expect '%s'\n", path, lineno, col[2]);
			CHECK(0);
			continue;
		}

		Buf b;
		buf_init(&b, 0);
		if (parse_bytes(col[4], &b) < 0) {
			fprintf(stderr, "%s:%d: bad bytes\n", path, lineno);
			CHECK(0);
			buf_free(&b);
			continue;
		}
		size_t used = 0;
		const char *why = NULL;
		/* Decoders must not read past len: decode from an exact-size heap
		 * copy so ASan catches any over-read. */
		uint8_t *copy = malloc(b.len ? b.len : 1);
		REQUIRE(copy);
		memcpy(copy, b.data, b.len);
		WireDecode got = decode_as(is_request, copy, b.len, &used, &why);
		if (got != want || (want == WIRE_DECODE_ERROR && (!why || !strstr(why, want_why)))) {
			fprintf(stderr, "%s:%d: %s: got %d (%s), want %s (%s)\n", path, lineno, name,
				(int)got, why ? why : "-", col[2], want_why);
			check_failures++;
		}
		if (want == WIRE_DECODE_OK) {
			CHECK_EQ_INT(used, b.len);
			for (size_t k = 0; k < b.len; k++)
				CHECK_EQ_INT(decode_as(is_request, copy, k, &used, &why), WIRE_DECODE_NEED_MORE);
		}
		free(copy);
		buf_free(&b);
		rows++;
		errors += want == WIRE_DECODE_ERROR;
	}
	fclose(f);
	printf("wire_malformed.txt: %d rows (%d errors)\n", rows, errors);
	CHECK(rows >= 25);
}

/* ---- the client against a server thread ---- */

enum ServeMode {
	SERVE_ECHO,       /* HELLO OK, answer each PING (a read's worth in reverse order) */
	SERVE_MISMATCH,   /* HELLO -> VERSION_MISMATCH, then close */
	SERVE_SILENT,     /* HELLO OK, never answer anything else */
	SERVE_MUTE,       /* never answer, not even HELLO */
	SERVE_HANG_UP,    /* HELLO OK, then close */
};

typedef struct Server {
	int listen_fd;
	enum ServeMode mode;
	pthread_t thread;
	int requests;     /* frames seen, for the test to check */
} Server;

static void send_all(int fd, const Buf *b)
{
	size_t off = 0;
	while (off < b->len) {
		ssize_t n = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* the client went away; the test will notice */
		off += (size_t)n;
	}
}

static void *server_main(void *arg)
{
	Server *s = arg;
	int fd = accept(s->listen_fd, NULL, NULL);
	Buf in, out;

	if (fd < 0)
		return NULL;
	buf_init(&in, 0);
	buf_init(&out, 0);
	for (;;) {
		WireRequest req;
		WireResponse resp[64];
		size_t used, nresp = 0, nreq = 0;
		const char *why;
		int close_after = 0;

		/* Answer what is buffered (64 at most per batch) before reading more. */
		while (nresp < 64 &&
		       wire_decode_request(in.data, in.len, &req, &used, &why) == WIRE_DECODE_OK) {
			buf_consume(&in, used);
			nreq++;
			s->requests++;
			WireResponse *r = &resp[nresp];
			memset(r, 0, sizeof(*r));
			r->id = req.id;
			r->op = req.op;
			if (s->mode == SERVE_MUTE)
				continue;
			if (req.op == WIRE_OP_HELLO) {
				r->u.hello.magic = WIRE_MAGIC;
				if (s->mode == SERVE_MISMATCH) {
					r->status = WIRE_VERSION_MISMATCH;
					r->u.hello.version = WIRE_VERSION + 1;
					close_after = 1;
				} else {
					r->u.hello.version = WIRE_VERSION;
					r->u.hello.shards = 4;
					close_after = s->mode == SERVE_HANG_UP;
				}
				nresp++;
			} else if (s->mode == SERVE_ECHO) {
				nresp++;
			}
		}
		if (nreq) {
			/* Reverse order: the client must match responses by id. */
			buf_reset(&out);
			while (nresp)
				wire_encode_response(&out, &resp[--nresp]);
			send_all(fd, &out);
			if (close_after)
				break;
			continue;
		}

		buf_reserve(&in, 4096);
		ssize_t n = recv(fd, in.data + in.len, in.cap - in.len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		in.len += (size_t)n;
	}
	close(fd);
	buf_free(&in);
	buf_free(&out);
	return NULL;
}

static char tmp_dir[2048];

static void mkdir_p(const char *path)
{
	char buf[2048];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(buf, 0700);
			*p = '/';
		}
	}
	mkdir(buf, 0700);
}

static void socket_path(char *out, size_t size, const char *tag)
{
	int n = snprintf(out, size, "%s/wire-%ld-%s.sock", tmp_dir, (long)getpid(), tag);
	REQUIRE(n > 0 && (size_t)n < sizeof(((struct sockaddr_un *)0)->sun_path));
}

static void make_addr(struct sockaddr_un *addr, const char *path)
{
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	REQUIRE(strlen(path) < sizeof(addr->sun_path));
	memcpy(addr->sun_path, path, strlen(path) + 1);
}

static int listen_at(const char *path)
{
	struct sockaddr_un addr;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	REQUIRE(fd >= 0);
	make_addr(&addr, path);
	unlink(path);
	REQUIRE(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	REQUIRE(listen(fd, 8) == 0);
	return fd;
}

static void server_start(Server *s, const char *path, enum ServeMode mode)
{
	memset(s, 0, sizeof(*s));
	s->mode = mode;
	s->listen_fd = listen_at(path); /* listening before connect: no race */
	REQUIRE(pthread_create(&s->thread, NULL, server_main, s) == 0);
}

static void server_stop(Server *s, const char *path)
{
	pthread_join(s->thread, NULL);
	close(s->listen_fd);
	unlink(path);
}

static WireRequest ping_request(void)
{
	WireRequest r;
	memset(&r, 0, sizeof(r));
	r.op = WIRE_OP_PING;
	return r;
}

static void test_client_echo(void)
{
	char path[256];
	Server s;
	LedgerClient *c = NULL;
	WireRequest req;
	WireResponse resp;

	socket_path(path, sizeof(path), "echo");
	server_start(&s, path, SERVE_ECHO);
	REQUIRE(ledger_client_connect(path, 2000, &c) == 0);
	CHECK_EQ_INT(ledger_client_shards(c), 4);

	/* One call: ids start at 1 (the HELLO took it) and count up. */
	req = ping_request();
	CHECK_EQ_INT(ledger_client_call(c, &req, &resp, 2000), 0);
	CHECK(req.id == 2);
	CHECK(resp.id == req.id);
	CHECK_EQ_INT(resp.op, WIRE_OP_PING);
	CHECK_EQ_INT(resp.status, WIRE_OK);

	/* Pipelined: many requests, one flush, answers matched by id. A caller's
	 * own id is kept. */
	enum { N = 40 };
	uint64_t ids[N];
	int seen[N] = { 0 };
	for (int i = 0; i < N; i++) {
		req = ping_request();
		if (i == 7)
			req.id = 1u << 20;
		ledger_client_send(c, &req);
		ids[i] = req.id;
		CHECK(req.id != 0);
	}
	CHECK(ids[0] == 3 && ids[7] == 1u << 20 && ids[8] == 10);
	CHECK_EQ_INT(ledger_client_flush(c), 0);
	for (int k = 0; k < N; k++) {
		int rc = ledger_client_recv(c, &resp, 2000);
		CHECK_EQ_INT(rc, 0);
		if (rc < 0)
			break;
		for (int i = 0; i < N; i++)
			if (ids[i] == resp.id)
				seen[i]++;
	}
	for (int i = 0; i < N; i++)
		CHECK_EQ_INT(seen[i], 1);

	/* Nothing more is coming: a short wait times out. */
	CHECK_EQ_INT(ledger_client_recv(c, &resp, 0), -ETIMEDOUT);
	ledger_client_close(c);
	server_stop(&s, path);
	CHECK_EQ_INT(s.requests, 2 + N);
}

static void test_client_failures(void)
{
	char path[256];
	Server s;
	LedgerClient *c = NULL;
	WireRequest req;
	WireResponse resp;

	/* No socket file. */
	socket_path(path, sizeof(path), "none");
	unlink(path);
	CHECK_EQ_INT(ledger_client_connect(path, 500, &c), -ENOENT);

	/* A socket file nobody listens on (a crashed ledger leaves one). */
	socket_path(path, sizeof(path), "stale");
	{
		struct sockaddr_un addr;
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);
		REQUIRE(fd >= 0);
		make_addr(&addr, path);
		unlink(path);
		REQUIRE(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
		close(fd);
		CHECK_EQ_INT(ledger_client_connect(path, 500, &c), -ECONNREFUSED);
		unlink(path);
	}

	/* The ledger speaks another version. */
	socket_path(path, sizeof(path), "mismatch");
	server_start(&s, path, SERVE_MISMATCH);
	CHECK_EQ_INT(ledger_client_connect(path, 2000, &c), -EPROTO);
	server_stop(&s, path);

	/* The ledger never answers the HELLO. */
	socket_path(path, sizeof(path), "mute");
	server_start(&s, path, SERVE_MUTE);
	int64_t t0 = clock_mono_ns();
	CHECK_EQ_INT(ledger_client_connect(path, 100, &c), -ETIMEDOUT);
	CHECK(clock_mono_ns() - t0 >= 90 * 1000000LL);
	server_stop(&s, path);

	/* A ledger too busy to accept: the first client fills the backlog (and
	 * waits for a HELLO in vain), the next blocks in connect itself. Both
	 * must give up on time instead of hanging. */
	socket_path(path, sizeof(path), "backlog");
	{
		struct sockaddr_un addr;
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);
		REQUIRE(fd >= 0);
		make_addr(&addr, path);
		unlink(path);
		REQUIRE(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
		REQUIRE(listen(fd, 0) == 0);
		for (int i = 0; i < 2; i++) {
			t0 = clock_mono_ns();
			CHECK_EQ_INT(ledger_client_connect(path, 50, &c), -ETIMEDOUT);
			int64_t ms = (clock_mono_ns() - t0) / 1000000;
			CHECK(ms >= 45 && ms < 2000);
		}
		close(fd);
		unlink(path);
	}

	/* The ledger takes requests but never answers them. */
	socket_path(path, sizeof(path), "silent");
	server_start(&s, path, SERVE_SILENT);
	REQUIRE(ledger_client_connect(path, 2000, &c) == 0);
	req = ping_request();
	t0 = clock_mono_ns();
	CHECK_EQ_INT(ledger_client_call(c, &req, &resp, 50), -ETIMEDOUT);
	int64_t waited = clock_mono_ns() - t0;
	CHECK(waited >= 45 * 1000000LL && waited < 2000 * 1000000LL);
	ledger_client_close(c);
	server_stop(&s, path);

	/* The ledger hangs up: recv sees the close, and a later send must come
	 * back as -EPIPE instead of killing us with SIGPIPE. */
	socket_path(path, sizeof(path), "hangup");
	server_start(&s, path, SERVE_HANG_UP);
	REQUIRE(ledger_client_connect(path, 2000, &c) == 0);
	CHECK_EQ_INT(ledger_client_recv(c, &resp, 2000), -ECONNRESET);
	req = ping_request();
	ledger_client_send(c, &req);
	int rc = ledger_client_flush(c);
	CHECK(rc == -EPIPE || rc == -ECONNRESET);
	ledger_client_close(c);
	server_stop(&s, path);
}

int main(void)
{
	const char *tmp = getenv("RG_TEST_TMP");

	/* The default action, so a missing MSG_NOSIGNAL would kill the test. */
	signal(SIGPIPE, SIG_DFL);
	snprintf(tmp_dir, sizeof(tmp_dir), "%s", tmp && *tmp ? tmp : "/tmp");
	mkdir_p(tmp_dir);

	test_request_round_trip();
	test_response_round_trip();
	test_golden_bytes();
	test_response_body_table();
	test_names();
	test_validators();
	test_set_str();
	test_stream_bytewise();
	test_malformed_table();
	test_client_echo();
	test_client_failures();
	return check_exit();
}
