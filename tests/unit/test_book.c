/* test_book.c — the book (app/ledger/book.c) against API.md, case by case.
 *
 * Every case drives a Book through book_execute / book_tick with an explicit
 * clock and a seeded Rng, and an emit function that encodes each record the
 * way the WAL would (record_encode into one Buf, u32 length first), decodes it
 * back and keeps the copy, so a case can say exactly which records an
 * operation produced. Every response also goes through the wire codec, so a
 * body the ledger could not send is caught here. After every case
 * book_check_all must pass.
 *
 * Besides the API outcomes: replay of the emitted log and save/load give a
 * book equal to the original (visible state, and hidden state: a seeded
 * random run continued in lockstep on all of them must answer identically);
 * book_replay and book_load refuse records and snapshots that do not fit.
 * The random run prints its seed; RG_TEST_SEED reproduces it. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/hash.h"
#include "common/resid.h"
#include "common/rng.h"
#include "common/wire.h"
#include "ledger/book.h"
#include "ledger/idem.h"
#include "ledger/record.h"
#include "unit/check.h"

#define T0 1796299200000LL /* 2026-12-03T12:00:00.000Z */

/* ---- comparing the value types ------------------------------------------- */

static void check_str(const char *a, size_t alen, const char *b, size_t blen)
{
	CHECK_EQ_INT(alen, blen);
	CHECK(alen == blen && memcmp(a, b, alen) == 0);
}

static void check_cstr(const char *a, size_t alen, const char *b)
{
	check_str(a, alen, b, strlen(b));
}

static void check_settings_equal(const WireSkuSettings *a, const WireSkuSettings *b)
{
	CHECK_EQ_INT(a->stock, b->stock);
	CHECK_EQ_INT(a->price_cents, b->price_cents);
	CHECK_EQ_INT(a->per_session_limit, b->per_session_limit);
	CHECK_EQ_INT(a->max_per_order, b->max_per_order);
	CHECK_EQ_INT(a->reservation_ttl_s, b->reservation_ttl_s);
	check_str(a->name, a->name_len, b->name, b->name_len);
}

static void check_record_equal(const Record *a, const Record *b)
{
	CHECK_EQ_INT(a->type, b->type);
	CHECK_EQ_INT(a->at_ms, b->at_ms);
	switch (a->type) {
	case REC_SKU_PUT:
		check_str(a->sku, a->sku_len, b->sku, b->sku_len);
		check_settings_equal(&a->settings, &b->settings);
		break;
	case REC_RESERVE:
		CHECK(resid_equal(&a->id, &b->id));
		check_str(a->sku, a->sku_len, b->sku, b->sku_len);
		check_str(a->session, a->session_len, b->session, b->session_len);
		check_str(a->idem_key, a->idem_key_len, b->idem_key, b->idem_key_len);
		CHECK_EQ_INT(a->quantity, b->quantity);
		CHECK_EQ_INT(a->expires_ms, b->expires_ms);
		break;
	default:
		CHECK(resid_equal(&a->id, &b->id));
		break;
	}
}

static void check_sku_equal(const WireSku *a, const WireSku *b)
{
	check_str(a->sku, a->sku_len, b->sku, b->sku_len);
	CHECK_EQ_INT(a->stock, b->stock);
	CHECK_EQ_INT(a->reserved, b->reserved);
	CHECK_EQ_INT(a->sold, b->sold);
	CHECK_EQ_INT(a->price_cents, b->price_cents);
	CHECK_EQ_INT(a->per_session_limit, b->per_session_limit);
	CHECK_EQ_INT(a->max_per_order, b->max_per_order);
	CHECK_EQ_INT(a->reservation_ttl_s, b->reservation_ttl_s);
	check_str(a->name, a->name_len, b->name, b->name_len);
}

static void check_res_equal(const WireReservation *a, const WireReservation *b)
{
	CHECK(resid_equal(&a->id, &b->id));
	check_str(a->sku, a->sku_len, b->sku, b->sku_len);
	check_str(a->session, a->session_len, b->session, b->session_len);
	CHECK_EQ_INT(a->quantity, b->quantity);
	CHECK_EQ_INT(a->state, b->state);
	CHECK_EQ_INT(a->created_ms, b->created_ms);
	CHECK_EQ_INT(a->expires_ms, b->expires_ms);
	CHECK_EQ_INT(a->available, b->available);
}

static void check_resp_equal(const WireResponse *a, const WireResponse *b)
{
	CHECK_EQ_INT(a->op, b->op);
	CHECK_EQ_INT(a->status, b->status);
	if (a->op != b->op || a->status != b->status)
		return;
	switch (wire_response_body(a->op, a->status)) {
	case WIRE_BODY_RESERVATION:
		check_res_equal(&a->u.reservation, &b->u.reservation);
		break;
	case WIRE_BODY_SKU:
		check_sku_equal(&a->u.sku, &b->u.sku);
		break;
	case WIRE_BODY_AVAILABLE:
		CHECK_EQ_INT(a->u.available, b->u.available);
		break;
	case WIRE_BODY_LIMIT:
		CHECK_EQ_INT(a->u.limit.limit, b->u.limit.limit);
		CHECK_EQ_INT(a->u.limit.held, b->u.limit.held);
		break;
	default:
		break;
	}
}

/* ---- the emit sink: a WAL in memory -------------------------------------- */

typedef struct Sink {
	Buf log;         /* per record: u32 payload length, payload */
	size_t count;
	Record *recs;    /* decoded copies, in order */
	size_t cap;
} Sink;

static void sink_init(Sink *s)
{
	memset(s, 0, sizeof(*s));
	buf_init(&s->log, 4096);
}

static void sink_free(Sink *s)
{
	buf_free(&s->log);
	free(s->recs);
}

static void sink_emit(void *ctx, const Record *rec)
{
	Sink *s = ctx;
	size_t start = s->log.len;

	buf_put_u32(&s->log, 0);
	record_encode(rec, &s->log);
	size_t len = s->log.len - start - 4;
	put_u32le(s->log.data + start, (uint32_t)len);
	if (s->count == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->recs = realloc(s->recs, s->cap * sizeof(*s->recs));
		REQUIRE(s->recs != NULL);
	}
	Record *d = &s->recs[s->count++];
	int rc = record_decode(s->log.data + start + 4, len, d);
	CHECK_EQ_INT(rc, 0);
	check_record_equal(rec, d);
}

static const Record *sink_last(const Sink *s)
{
	REQUIRE(s->count > 0);
	return &s->recs[s->count - 1];
}

/* ---- a book under test --------------------------------------------------- */

typedef struct Fx {
	BookConfig cfg;
	IdemIndex *idem;
	int own_idem;
	Rng rng;
	Book *b;
	Sink sink;
	int64_t now;
} Fx;

static uint64_t next_request_id;

static BookConfig default_cfg(void)
{
	BookConfig c = {
		.default_ttl_s = 300,
		.default_max_per_order = 10,
		.default_per_session_limit = 0,
		.retention_ms = 3600 * 1000,
	};
	return c;
}

/* shared: an IdemIndex to share with other books, or NULL for a private one. */
static void fx_open(Fx *f, const BookConfig *cfg, IdemIndex *shared)
{
	memset(f, 0, sizeof(*f));
	f->cfg = *cfg;
	f->idem = shared ? shared : idem_new();
	f->own_idem = shared == NULL;
	rng_init_seeded(&f->rng, 1);
	f->b = book_new(&f->cfg, f->idem, &f->rng);
	REQUIRE(f->b != NULL);
	sink_init(&f->sink);
	f->now = T0;
}

static void check_book(Book *b)
{
	char why[256] = "";
	int rc = book_check_all(b, why, sizeof(why));
	if (rc != 0)
		fprintf(stderr, "book_check_all: %s\n", why);
	CHECK_EQ_INT(rc, 0);
	book_check_touched(b);
}

/* Frees without checking: after a failed book_load the book is only fit for
 * book_free (book.h), and book_free must manage that. */
static void fx_discard(Fx *f)
{
	book_free(f->b);
	if (f->own_idem)
		idem_free(f->idem);
	sink_free(&f->sink);
}

static void fx_close(Fx *f)
{
	check_book(f->b);
	fx_discard(f);
}

/* After a book_load that had to return rc. */
static void fx_close_loaded(Fx *f, int rc)
{
	if (rc == 0)
		fx_close(f);
	else
		fx_discard(f);
}

/* Every response the book gives must be one the wire can carry. */
static void check_wire_roundtrip(const WireResponse *resp)
{
	Buf out;
	WireResponse back;
	size_t used = 0;
	const char *why = NULL;

	buf_init(&out, 256);
	wire_encode_response(&out, resp);
	memset(&back, 0, sizeof(back));
	WireDecode d = wire_decode_response(out.data, out.len, &back, &used, &why);
	if (d != WIRE_DECODE_OK)
		fprintf(stderr, "wire_decode_response: %s\n", why ? why : "?");
	CHECK_EQ_INT(d, WIRE_DECODE_OK);
	CHECK_EQ_INT(used, out.len);
	if (d == WIRE_DECODE_OK) {
		CHECK(back.id == resp->id);
		check_resp_equal(resp, &back);
	}
	buf_free(&out);
}

static uint8_t fx_exec(Fx *f, WireRequest *q, WireResponse *resp)
{
	q->id = ++next_request_id;
	memset(resp, 0xa5, sizeof(*resp)); /* whatever the book leaves unset shows */
	book_execute(f->b, q, f->now, resp, sink_emit, &f->sink);
	CHECK(resp->id == q->id);
	CHECK_EQ_INT(resp->op, q->op);
	check_wire_roundtrip(resp);
	book_check_touched(f->b);
	return resp->status;
}

static void req_str(char *dst, uint8_t *len, const char *s, size_t max)
{
	wire_set_str(dst, len, s, strlen(s), max);
}

static void req_init(WireRequest *q, uint8_t op)
{
	memset(q, 0, sizeof(*q));
	q->op = op;
}

/* PUT_SKU with the settings named in fields. */
static uint8_t put_sku(Fx *f, const char *sku, uint8_t fields, int64_t stock, int64_t price,
		       int32_t limit, int32_t max_per_order, int32_t ttl_s, const char *name,
		       WireResponse *resp)
{
	WireRequest q;
	WireResponse local;

	req_init(&q, WIRE_OP_PUT_SKU);
	req_str(q.sku, &q.sku_len, sku, WIRE_SKU_MAX);
	q.settings.fields = fields;
	q.settings.stock = stock;
	q.settings.price_cents = price;
	q.settings.per_session_limit = limit;
	q.settings.max_per_order = max_per_order;
	q.settings.reservation_ttl_s = ttl_s;
	if (name)
		req_str(q.settings.name, &q.settings.name_len, name, WIRE_NAME_MAX);
	return fx_exec(f, &q, resp ? resp : &local);
}

static uint8_t put_stock(Fx *f, const char *sku, int64_t stock)
{
	return put_sku(f, sku, WIRE_SKU_HAS_STOCK, stock, 0, 0, 0, 0, NULL, NULL);
}

/* Creates a SKU with the given stock, per-session limit, max per order and ttl. */
static void make_sku(Fx *f, const char *sku, int64_t stock, int32_t limit, int32_t max_per_order,
		     int32_t ttl_s)
{
	uint8_t st = put_sku(f, sku,
			     WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_SESSION_LIMIT |
			     WIRE_SKU_HAS_MAX_PER_ORDER | WIRE_SKU_HAS_TTL,
			     stock, 0, limit, max_per_order, ttl_s, NULL, NULL);
	REQUIRE(st == WIRE_CREATED);
}

static uint8_t reserve(Fx *f, const char *sku, const char *session, const char *key, int32_t qty,
		       WireResponse *resp)
{
	WireRequest q;
	WireResponse local;

	req_init(&q, WIRE_OP_RESERVE);
	req_str(q.sku, &q.sku_len, sku, WIRE_SKU_MAX);
	req_str(q.session, &q.session_len, session, WIRE_SESSION_MAX);
	req_str(q.idem_key, &q.idem_key_len, key ? key : "", WIRE_IDEM_KEY_MAX);
	q.quantity = qty;
	return fx_exec(f, &q, resp ? resp : &local);
}

/* A reservation that must be created; returns its id. */
static ResId reserve_ok(Fx *f, const char *sku, const char *session, const char *key, int32_t qty)
{
	WireResponse r;
	uint8_t st = reserve(f, sku, session, key, qty, &r);
	CHECK_EQ_INT(st, WIRE_CREATED);
	REQUIRE(st == WIRE_CREATED);
	return r.u.reservation.id;
}

static uint8_t res_op(Fx *f, uint8_t op, const ResId *id, const char *session, WireResponse *resp)
{
	WireRequest q;
	WireResponse local;

	req_init(&q, op);
	q.reservation = *id;
	req_str(q.session, &q.session_len, session, WIRE_SESSION_MAX);
	return fx_exec(f, &q, resp ? resp : &local);
}

static uint8_t get_sku(Fx *f, const char *sku, WireSku *out)
{
	WireRequest q;
	WireResponse r;

	req_init(&q, WIRE_OP_GET_SKU);
	req_str(q.sku, &q.sku_len, sku, WIRE_SKU_MAX);
	uint8_t st = fx_exec(f, &q, &r);
	if (st == WIRE_OK && out)
		*out = r.u.sku;
	return st;
}

static int64_t available(Fx *f, const char *sku)
{
	WireSku s;
	uint8_t st = get_sku(f, sku, &s);
	CHECK_EQ_INT(st, WIRE_OK);
	REQUIRE(st == WIRE_OK);
	CHECK(s.reserved >= 0 && s.sold >= 0 && s.reserved + s.sold <= s.stock);
	return s.stock - s.reserved - s.sold;
}

static void check_counts(Fx *f, const char *sku, int64_t stock, int64_t reserved, int64_t sold)
{
	WireSku s;
	uint8_t st = get_sku(f, sku, &s);
	CHECK_EQ_INT(st, WIRE_OK);
	if (st != WIRE_OK)
		return;
	CHECK_EQ_INT(s.stock, stock);
	CHECK_EQ_INT(s.reserved, reserved);
	CHECK_EQ_INT(s.sold, sold);
}

static uint8_t res_state(Fx *f, const ResId *id, const char *session)
{
	WireResponse r;
	uint8_t st = res_op(f, WIRE_OP_GET_RESERVATION, id, session, &r);
	return st == WIRE_OK ? r.u.reservation.state : 0;
}

static void check_resid_text(const ResId *id, const char *sku)
{
	char text[RESID_TEXT_LEN + 1];
	ResId back;

	resid_format(id, text);
	CHECK_EQ_INT(strlen(text), 32);
	for (int i = 0; i < RESID_TEXT_LEN; i++)
		CHECK((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f'));
	CHECK_EQ_INT(resid_parse(text, strlen(text), &back), 0);
	CHECK(resid_equal(id, &back));
	CHECK_EQ_INT(resid_route(id), hash_route(sku, strlen(sku)));
}

static ResId fake_id(const char *sku, uint8_t seed)
{
	uint8_t random[12];
	ResId id;
	for (int i = 0; i < 12; i++)
		random[i] = (uint8_t)(seed * 31 + i * 7 + 1);
	resid_make(&id, hash_route(sku, strlen(sku)), random);
	return id;
}

static void replay_log(Fx *dst, const Sink *src);
static void check_expiry_index(const Book *b, int64_t now);
static void check_books_equal(const Book *a, const Book *b);

/* ---- PUT_SKU / GET_SKU ----------------------------------------------------- */

static void test_put_sku_create(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;
	WireSku s;

	cfg.default_per_session_limit = 4;
	cfg.default_max_per_order = 6;
	cfg.default_ttl_s = 120;
	fx_open(&f, &cfg, NULL);

	/* Only stock: every other setting comes from BookConfig. */
	f.now = T0 + 5;
	size_t n = f.sink.count;
	CHECK_EQ_INT(put_sku(&f, "tee-1", WIRE_SKU_HAS_STOCK, 50, 0, 0, 0, 0, NULL, &r), WIRE_CREATED);
	check_cstr(r.u.sku.sku, r.u.sku.sku_len, "tee-1");
	CHECK_EQ_INT(r.u.sku.stock, 50);
	CHECK_EQ_INT(r.u.sku.reserved, 0);
	CHECK_EQ_INT(r.u.sku.sold, 0);
	CHECK_EQ_INT(r.u.sku.price_cents, 0);
	CHECK_EQ_INT(r.u.sku.per_session_limit, 4);
	CHECK_EQ_INT(r.u.sku.max_per_order, 6);
	CHECK_EQ_INT(r.u.sku.reservation_ttl_s, 120);
	CHECK_EQ_INT(r.u.sku.name_len, 0);
	CHECK_EQ_INT(f.sink.count - n, 1);
	const Record *rec = sink_last(&f.sink);
	CHECK_EQ_INT(rec->type, REC_SKU_PUT);
	CHECK_EQ_INT(rec->at_ms, T0 + 5);
	check_cstr(rec->sku, rec->sku_len, "tee-1");
	CHECK_EQ_INT(rec->settings.stock, 50);
	CHECK_EQ_INT(rec->settings.price_cents, 0);
	CHECK_EQ_INT(rec->settings.per_session_limit, 4);
	CHECK_EQ_INT(rec->settings.max_per_order, 6);
	CHECK_EQ_INT(rec->settings.reservation_ttl_s, 120);
	CHECK_EQ_INT(rec->settings.name_len, 0);
	CHECK_EQ_INT(get_sku(&f, "tee-1", &s), WIRE_OK);
	check_sku_equal(&s, &r.u.sku);

	/* Every setting given. */
	n = f.sink.count;
	CHECK_EQ_INT(put_sku(&f, "mug.big:2", WIRE_SKU_HAS_ALL, 7, 1299, 2, 3, 60, "Big mug", &r),
		     WIRE_CREATED);
	CHECK_EQ_INT(r.u.sku.stock, 7);
	CHECK_EQ_INT(r.u.sku.price_cents, 1299);
	CHECK_EQ_INT(r.u.sku.per_session_limit, 2);
	CHECK_EQ_INT(r.u.sku.max_per_order, 3);
	CHECK_EQ_INT(r.u.sku.reservation_ttl_s, 60);
	check_cstr(r.u.sku.name, r.u.sku.name_len, "Big mug");
	CHECK_EQ_INT(f.sink.count - n, 1);
	rec = sink_last(&f.sink);
	CHECK_EQ_INT(rec->settings.per_session_limit, 2);
	check_cstr(rec->settings.name, rec->settings.name_len, "Big mug");

	/* Some given, some defaulted; a limit of 0 given explicitly stays 0. */
	CHECK_EQ_INT(put_sku(&f, "cap", WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_SESSION_LIMIT | WIRE_SKU_HAS_TTL,
			     3, 0, 0, 0, 30, NULL, &r), WIRE_CREATED);
	CHECK_EQ_INT(r.u.sku.per_session_limit, 0);
	CHECK_EQ_INT(r.u.sku.max_per_order, 6);
	CHECK_EQ_INT(r.u.sku.reservation_ttl_s, 30);

	/* Creating without stock: refused, nothing created, nothing logged. */
	n = f.sink.count;
	CHECK_EQ_INT(put_sku(&f, "ghost", WIRE_SKU_HAS_PRICE | WIRE_SKU_HAS_NAME, 0, 500, 0, 0, 0,
			     "Ghost", &r), WIRE_MISSING_STOCK);
	CHECK_EQ_INT(put_sku(&f, "ghost", 0, 0, 0, 0, 0, 0, NULL, &r), WIRE_MISSING_STOCK);
	CHECK_EQ_INT(f.sink.count - n, 0);
	CHECK_EQ_INT(get_sku(&f, "ghost", NULL), WIRE_UNKNOWN_SKU);
	CHECK_EQ_INT(reserve(&f, "ghost", "s1", NULL, 1, NULL), WIRE_UNKNOWN_SKU);

	/* Stock 0 is a valid SKU that is sold out. */
	CHECK_EQ_INT(put_stock(&f, "zero", 0), WIRE_CREATED);
	CHECK_EQ_INT(reserve(&f, "zero", "s1", NULL, 1, &r), WIRE_SOLD_OUT);
	CHECK_EQ_INT(r.u.available, 0);

	CHECK_EQ_INT(book_stats(f.b)->skus, 4);
	check_book(f.b);
	fx_close(&f);
}

static void test_put_sku_update(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;
	WireSku s;

	fx_open(&f, &cfg, NULL);
	CHECK_EQ_INT(put_stock(&f, "A", 10), WIRE_CREATED);

	/* Stock changes: 200 OK, one record with the complete settings. */
	f.now += 1000;
	size_t n = f.sink.count;
	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_STOCK, 20, 0, 0, 0, 0, NULL, &r), WIRE_OK);
	CHECK_EQ_INT(r.u.sku.stock, 20);
	CHECK_EQ_INT(r.u.sku.max_per_order, 10);
	CHECK_EQ_INT(f.sink.count - n, 1);
	const Record *rec = sink_last(&f.sink);
	CHECK_EQ_INT(rec->type, REC_SKU_PUT);
	CHECK_EQ_INT(rec->at_ms, f.now);
	CHECK_EQ_INT(rec->settings.stock, 20);
	CHECK_EQ_INT(rec->settings.max_per_order, 10);
	CHECK_EQ_INT(rec->settings.reservation_ttl_s, 300);
	CHECK_EQ_INT(rec->settings.per_session_limit, 0);

	/* Only the price: stock and the rest stay. */
	n = f.sink.count;
	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_PRICE, 0, 999, 0, 0, 0, NULL, &r), WIRE_OK);
	CHECK_EQ_INT(r.u.sku.stock, 20);
	CHECK_EQ_INT(r.u.sku.price_cents, 999);
	CHECK_EQ_INT(f.sink.count - n, 1);
	CHECK_EQ_INT(sink_last(&f.sink)->settings.stock, 20);
	CHECK_EQ_INT(sink_last(&f.sink)->settings.price_cents, 999);

	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_NAME, 0, 0, 0, 0, 0, "Alpha", &r), WIRE_OK);
	check_cstr(r.u.sku.name, r.u.sku.name_len, "Alpha");

	/* No-op updates: 200 with the SKU, no record. */
	n = f.sink.count;
	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_STOCK, 20, 0, 0, 0, 0, NULL, &r), WIRE_OK);
	CHECK_EQ_INT(r.u.sku.stock, 20);
	CHECK_EQ_INT(put_sku(&f, "A", 0, 0, 0, 0, 0, 0, NULL, &r), WIRE_OK);
	CHECK_EQ_INT(r.u.sku.price_cents, 999);
	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_ALL, 20, 999, 0, 10, 300, "Alpha", &r), WIRE_OK);
	check_cstr(r.u.sku.name, r.u.sku.name_len, "Alpha");
	CHECK_EQ_INT(f.sink.count - n, 0);

	/* A name change alone is a change; clearing the name too. */
	n = f.sink.count;
	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_NAME, 0, 0, 0, 0, 0, "Alphb", &r), WIRE_OK);
	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_NAME, 0, 0, 0, 0, 0, "", &r), WIRE_OK);
	CHECK_EQ_INT(r.u.sku.name_len, 0);
	CHECK_EQ_INT(f.sink.count - n, 2);

	/* Commit 3 reserved + 2 sold, then try to go below. */
	reserve_ok(&f, "A", "s1", NULL, 3);
	ResId sold = reserve_ok(&f, "A", "s2", NULL, 2);
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &sold, "s2", NULL), WIRE_OK);
	check_counts(&f, "A", 20, 3, 2);

	n = f.sink.count;
	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_PRICE, 4, 1, 0, 0, 0, NULL, &r),
		     WIRE_STOCK_BELOW_COMMITTED);
	/* The body is the SKU as it is, and nothing changed (not even the price). */
	check_cstr(r.u.sku.sku, r.u.sku.sku_len, "A");
	CHECK_EQ_INT(r.u.sku.stock, 20);
	CHECK_EQ_INT(r.u.sku.reserved, 3);
	CHECK_EQ_INT(r.u.sku.sold, 2);
	CHECK_EQ_INT(r.u.sku.price_cents, 999);
	CHECK_EQ_INT(put_stock(&f, "A", 0), WIRE_STOCK_BELOW_COMMITTED);
	CHECK_EQ_INT(f.sink.count - n, 0);
	CHECK_EQ_INT(get_sku(&f, "A", &s), WIRE_OK);
	CHECK_EQ_INT(s.stock, 20);
	CHECK_EQ_INT(s.price_cents, 999);

	/* Exactly reserved + sold is allowed: available 0. */
	CHECK_EQ_INT(put_stock(&f, "A", 5), WIRE_OK);
	CHECK_EQ_INT(available(&f, "A"), 0);
	CHECK_EQ_INT(reserve(&f, "A", "s3", NULL, 1, &r), WIRE_SOLD_OUT);

	/* A lower max_per_order applies to the next reservation. */
	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_MAX_PER_ORDER, 50, 0, 0, 2, 0,
			     NULL, &r), WIRE_OK);
	CHECK_EQ_INT(reserve(&f, "A", "s3", NULL, 3, &r), WIRE_QUANTITY_TOO_LARGE);
	CHECK_EQ_INT(r.u.limit.limit, 2);
	CHECK_EQ_INT(r.u.limit.held, 0);
	reserve_ok(&f, "A", "s3", NULL, 2);

	check_book(f.b);
	fx_close(&f);
}

/* Catalog adoption: ONLY_IF_NEW creates an unknown SKU, and leaves a known
 * one exactly as the ledger has it (no record, stock untouched). */
static void test_put_sku_only_if_new(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;

	fx_open(&f, &cfg, NULL);
	const uint8_t adopt = WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_NAME | WIRE_SKU_ONLY_IF_NEW;
	CHECK_EQ_INT(put_sku(&f, "A", adopt, 7, 0, 0, 0, 0, "Adopted", &r), WIRE_CREATED);
	CHECK_EQ_INT(r.u.sku.stock, 7);
	size_t n = f.sink.count;
	CHECK_EQ_INT(put_sku(&f, "A", adopt, 99, 0, 0, 0, 0, "Other", &r), WIRE_OK);
	CHECK_EQ_INT(r.u.sku.stock, 7);
	check_cstr(r.u.sku.name, r.u.sku.name_len, "Adopted");
	CHECK_EQ_INT(f.sink.count - n, 0);
	fx_close(&f);
}

static void test_get_sku(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireSku s;

	fx_open(&f, &cfg, NULL);
	CHECK_EQ_INT(get_sku(&f, "A", NULL), WIRE_UNKNOWN_SKU);
	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_ALL, 9, 150, 1, 5, 45, "Thing", NULL), WIRE_CREATED);
	size_t n = f.sink.count;
	CHECK_EQ_INT(get_sku(&f, "A", &s), WIRE_OK);
	check_cstr(s.sku, s.sku_len, "A");
	CHECK_EQ_INT(s.stock, 9);
	CHECK_EQ_INT(s.reserved, 0);
	CHECK_EQ_INT(s.sold, 0);
	CHECK_EQ_INT(s.price_cents, 150);
	CHECK_EQ_INT(s.per_session_limit, 1);
	CHECK_EQ_INT(s.max_per_order, 5);
	CHECK_EQ_INT(s.reservation_ttl_s, 45);
	check_cstr(s.name, s.name_len, "Thing");
	/* SKUs are case-sensitive and whole. */
	CHECK_EQ_INT(get_sku(&f, "a", NULL), WIRE_UNKNOWN_SKU);
	CHECK_EQ_INT(get_sku(&f, "AA", NULL), WIRE_UNKNOWN_SKU);
	CHECK_EQ_INT(f.sink.count - n, 0);
	check_book(f.b);
	fx_close(&f);
}

/* ---- RESERVE ------------------------------------------------------------------ */

static void test_reserve_created(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r, g;

	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 10, 0, 10, 300);
	make_sku(&f, "B-2", 1000, 0, 10, 300);

	f.now = T0 + 123;
	size_t n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "A", "s1", NULL, 3, &r), WIRE_CREATED);
	ResId x = r.u.reservation.id;
	check_resid_text(&x, "A");
	check_cstr(r.u.reservation.sku, r.u.reservation.sku_len, "A");
	check_cstr(r.u.reservation.session, r.u.reservation.session_len, "s1");
	CHECK_EQ_INT(r.u.reservation.quantity, 3);
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_RESERVED);
	CHECK_EQ_INT(r.u.reservation.created_ms, T0 + 123);
	CHECK_EQ_INT(r.u.reservation.expires_ms, T0 + 123 + 300 * 1000);
	CHECK_EQ_INT(r.u.reservation.available, 7);
	CHECK_EQ_INT(f.sink.count - n, 1);
	const Record *rec = sink_last(&f.sink);
	CHECK_EQ_INT(rec->type, REC_RESERVE);
	CHECK(resid_equal(&rec->id, &x));
	check_cstr(rec->sku, rec->sku_len, "A");
	check_cstr(rec->session, rec->session_len, "s1");
	CHECK_EQ_INT(rec->idem_key_len, 0);
	CHECK_EQ_INT(rec->quantity, 3);
	CHECK_EQ_INT(rec->at_ms, T0 + 123);
	CHECK_EQ_INT(rec->expires_ms, T0 + 123 + 300 * 1000);
	CHECK_EQ_INT(available(&f, "A"), 7);

	f.now += 10;
	n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "A", "s2", "key-1", 2, &r), WIRE_CREATED);
	ResId y = r.u.reservation.id;
	CHECK(!resid_equal(&x, &y));
	CHECK_EQ_INT(resid_route(&y), resid_route(&x));
	CHECK_EQ_INT(r.u.reservation.available, 5);
	CHECK_EQ_INT(f.sink.count - n, 1);
	check_cstr(sink_last(&f.sink)->idem_key, sink_last(&f.sink)->idem_key_len, "key-1");
	check_counts(&f, "A", 10, 5, 0);

	/* GET_RESERVATION shows it with the SKU's current availability. */
	CHECK_EQ_INT(res_op(&f, WIRE_OP_GET_RESERVATION, &x, "s1", &g), WIRE_OK);
	CHECK(resid_equal(&g.u.reservation.id, &x));
	CHECK_EQ_INT(g.u.reservation.state, WIRE_RES_RESERVED);
	CHECK_EQ_INT(g.u.reservation.quantity, 3);
	CHECK_EQ_INT(g.u.reservation.created_ms, T0 + 123);
	CHECK_EQ_INT(g.u.reservation.available, 5);

	/* Many: all ids distinct, all routed to their SKU, available counts down. */
	enum { MANY = 200 };
	static ResId ids[MANY];
	for (int i = 0; i < MANY; i++) {
		char session[32];
		snprintf(session, sizeof(session), "buyer-%d", i);
		CHECK_EQ_INT(reserve(&f, "B-2", session, NULL, 1, &r), WIRE_CREATED);
		CHECK_EQ_INT(r.u.reservation.available, 1000 - 1 - i);
		ids[i] = r.u.reservation.id;
		CHECK_EQ_INT(resid_route(&ids[i]), hash_route("B-2", 3));
		for (int j = 0; j < i; j++)
			CHECK(!resid_equal(&ids[i], &ids[j]));
	}
	check_resid_text(&ids[MANY - 1], "B-2");
	CHECK_EQ_INT(available(&f, "B-2"), 1000 - MANY);
	CHECK_EQ_INT(book_stats(f.b)->holds_active, MANY + 2);
	check_book(f.b);
	fx_close(&f);
}

static void test_reserve_sold_out(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;

	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 7, 0, 10, 300);
	for (int i = 0; i < 7; i++) {
		char session[16];
		snprintf(session, sizeof(session), "s%d", i);
		CHECK_EQ_INT(reserve(&f, "A", session, NULL, 1, &r), WIRE_CREATED);
		CHECK_EQ_INT(r.u.reservation.available, 6 - i);
		CHECK_EQ_INT(available(&f, "A"), 6 - i);
	}
	size_t n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "A", "late", NULL, 1, &r), WIRE_SOLD_OUT);
	CHECK_EQ_INT(r.u.available, 0);
	CHECK_EQ_INT(reserve(&f, "A", "late", "k", 3, &r), WIRE_SOLD_OUT);
	CHECK_EQ_INT(r.u.available, 0);
	CHECK_EQ_INT(f.sink.count - n, 0);
	check_counts(&f, "A", 7, 7, 0);

	/* 0 < available < quantity: insufficient, with available in the body. */
	make_sku(&f, "B", 5, 0, 10, 300);
	ResId big = reserve_ok(&f, "B", "s1", NULL, 3);
	n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "B", "s2", NULL, 3, &r), WIRE_INSUFFICIENT_STOCK);
	CHECK_EQ_INT(r.u.available, 2);
	CHECK_EQ_INT(f.sink.count - n, 0);
	CHECK_EQ_INT(reserve(&f, "B", "s2", NULL, 2, &r), WIRE_CREATED);
	CHECK_EQ_INT(r.u.reservation.available, 0);
	CHECK_EQ_INT(reserve(&f, "B", "s3", NULL, 1, &r), WIRE_SOLD_OUT);
	CHECK_EQ_INT(r.u.available, 0);
	/* A release gives the units back at once. */
	CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &big, "s1", NULL), WIRE_OK);
	CHECK_EQ_INT(reserve(&f, "B", "s3", NULL, 3, &r), WIRE_CREATED);
	CHECK_EQ_INT(r.u.reservation.available, 0);

	const BookStats *st = book_stats(f.b);
	CHECK_EQ_INT(st->reserve_sold_out, 3);
	CHECK_EQ_INT(st->reserve_insufficient, 1);
	check_book(f.b);
	fx_close(&f);
}

static void test_quantity_too_large(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;

	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 100, 0, 4, 300);
	CHECK_EQ_INT(put_stock(&f, "D", 100), WIRE_CREATED); /* default max_per_order 10 */
	size_t n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "A", "s1", NULL, 5, &r), WIRE_QUANTITY_TOO_LARGE);
	CHECK_EQ_INT(r.u.limit.limit, 4);
	CHECK_EQ_INT(r.u.limit.held, 0);
	CHECK_EQ_INT(reserve(&f, "D", "s1", "k", 11, &r), WIRE_QUANTITY_TOO_LARGE);
	CHECK_EQ_INT(r.u.limit.limit, 10);
	CHECK_EQ_INT(reserve(&f, "D", "s1", NULL, INT32_MAX, &r), WIRE_QUANTITY_TOO_LARGE);
	CHECK_EQ_INT(f.sink.count - n, 0);
	CHECK_EQ_INT(available(&f, "A"), 100);
	CHECK_EQ_INT(reserve(&f, "A", "s1", NULL, 4, &r), WIRE_CREATED);
	/* The key of a refused attempt is not bound: now it is a new reservation. */
	CHECK_EQ_INT(reserve(&f, "D", "s1", "k", 10, &r), WIRE_CREATED);
	check_book(f.b);
	fx_close(&f);
}

static void test_session_limit(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;

	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 100, 3, 10, 60);
	make_sku(&f, "B", 100, 0, 10, 60);

	ResId r1 = reserve_ok(&f, "A", "s1", NULL, 2);
	size_t n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "A", "s1", NULL, 2, &r), WIRE_LIMIT_EXCEEDED);
	CHECK_EQ_INT(r.u.limit.limit, 3);
	CHECK_EQ_INT(r.u.limit.held, 2);
	CHECK_EQ_INT(f.sink.count - n, 0);
	CHECK_EQ_INT(available(&f, "A"), 98);
	ResId r2 = reserve_ok(&f, "A", "s1", NULL, 1);
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k", 1, &r), WIRE_LIMIT_EXCEEDED);
	CHECK_EQ_INT(r.u.limit.held, 3);

	/* Other sessions and other SKUs are counted apart. */
	reserve_ok(&f, "A", "s2", NULL, 3);
	reserve_ok(&f, "B", "s1", NULL, 10);

	/* Confirmed units still count. */
	f.now += 1000;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &r1, "s1", NULL), WIRE_OK);
	CHECK_EQ_INT(reserve(&f, "A", "s1", NULL, 1, &r), WIRE_LIMIT_EXCEEDED);
	CHECK_EQ_INT(r.u.limit.held, 3);

	/* Released units no longer count. */
	CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &r2, "s1", NULL), WIRE_OK);
	ResId r3 = reserve_ok(&f, "A", "s1", NULL, 1);
	CHECK_EQ_INT(reserve(&f, "A", "s1", NULL, 1, &r), WIRE_LIMIT_EXCEEDED);
	CHECK_EQ_INT(r.u.limit.held, 3);

	/* Timed-out units no longer count. */
	f.now += 60 * 1000;
	CHECK_EQ_INT(reserve(&f, "A", "s1", NULL, 1, &r), WIRE_CREATED);
	CHECK_EQ_INT(res_state(&f, &r3, "s1"), WIRE_RES_TIMEOUT);
	CHECK_EQ_INT(reserve(&f, "A", "s1", NULL, 1, &r), WIRE_LIMIT_EXCEEDED);
	CHECK_EQ_INT(r.u.limit.limit, 3);
	CHECK_EQ_INT(r.u.limit.held, 3);

	/* Raising the limit lets the session buy more. */
	CHECK_EQ_INT(put_sku(&f, "A", WIRE_SKU_HAS_SESSION_LIMIT, 0, 0, 4, 0, 0, NULL, NULL), WIRE_OK);
	reserve_ok(&f, "A", "s1", NULL, 1);
	CHECK_EQ_INT(book_stats(f.b)->reserve_limit, 5);
	check_book(f.b);
	fx_close(&f);
}

static void test_unknown_sku(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;

	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 10, 0, 10, 300);
	size_t n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "nope", "s1", NULL, 1, &r), WIRE_UNKNOWN_SKU);
	CHECK_EQ_INT(reserve(&f, "nope", "s1", "k1", 1, &r), WIRE_UNKNOWN_SKU);
	CHECK_EQ_INT(f.sink.count - n, 0);
	/* The key was not bound by the failed attempt. */
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k1", 1, &r), WIRE_CREATED);
	CHECK_EQ_INT(book_stats(f.b)->reserve_unknown_sku, 2);
	check_book(f.b);
	fx_close(&f);
}

/* ---- idempotency ---------------------------------------------------------------- */

static void test_idempotency(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r, r0;

	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 10, 0, 10, 60);
	make_sku(&f, "B", 10, 0, 10, 60);
	make_sku(&f, "C", 1, 0, 10, 60);

	CHECK_EQ_INT(reserve(&f, "A", "s1", "k1", 2, &r0), WIRE_CREATED);
	ResId x = r0.u.reservation.id;

	/* Same (session, key, sku, quantity): the same reservation, no record. */
	f.now += 500;
	size_t n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k1", 2, &r), WIRE_REPLAYED);
	check_res_equal(&r.u.reservation, &r0.u.reservation);
	CHECK_EQ_INT(f.sink.count - n, 0);
	CHECK_EQ_INT(available(&f, "A"), 8);

	/* Same key, another quantity or another SKU: conflict, nothing changes. */
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k1", 3, &r), WIRE_IDEMPOTENCY_CONFLICT);
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k1", 1, &r), WIRE_IDEMPOTENCY_CONFLICT);
	CHECK_EQ_INT(reserve(&f, "B", "s1", "k1", 2, &r), WIRE_IDEMPOTENCY_CONFLICT);
	CHECK_EQ_INT(reserve(&f, "nope", "s1", "k1", 2, &r), WIRE_IDEMPOTENCY_CONFLICT);
	CHECK_EQ_INT(f.sink.count - n, 0);
	CHECK_EQ_INT(available(&f, "A"), 8);
	CHECK_EQ_INT(available(&f, "B"), 10);

	/* Same key in another session: its own reservation. */
	CHECK_EQ_INT(reserve(&f, "A", "s2", "k1", 2, &r), WIRE_CREATED);
	ResId y = r.u.reservation.id;
	CHECK(!resid_equal(&x, &y));
	CHECK_EQ_INT(f.sink.count - n, 1);
	CHECK_EQ_INT(available(&f, "A"), 6);

	/* Keys are compared exactly (a trailing space is another key). */
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k1 ", 2, &r), WIRE_CREATED);
	CHECK_EQ_INT(reserve(&f, "A", "s1", "K1", 2, &r), WIRE_CREATED);

	/* Without a key nothing is ever replayed. */
	ResId a = reserve_ok(&f, "B", "s1", NULL, 1);
	ResId b = reserve_ok(&f, "B", "s1", NULL, 1);
	CHECK(!resid_equal(&a, &b));

	/* After confirming, a replay shows it confirmed. */
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &x, "s1", NULL), WIRE_OK);
	n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k1", 2, &r), WIRE_REPLAYED);
	CHECK(resid_equal(&r.u.reservation.id, &x));
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_CONFIRMED);
	CHECK_EQ_INT(r.u.reservation.created_ms, r0.u.reservation.created_ms);

	/* After releasing, a replay shows it released and holds nothing new. */
	CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &y, "s2", NULL), WIRE_OK);
	int64_t avail = available(&f, "A");
	size_t n2 = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "A", "s2", "k1", 2, &r), WIRE_REPLAYED);
	CHECK(resid_equal(&r.u.reservation.id, &y));
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_RELEASED);
	CHECK_EQ_INT(r.u.reservation.available, avail);
	CHECK_EQ_INT(f.sink.count - n2, 0);
	(void)n;

	/* A refused attempt (insufficient) does not bind its key. */
	CHECK_EQ_INT(reserve(&f, "C", "s3", "kx", 2, &r), WIRE_INSUFFICIENT_STOCK);
	CHECK_EQ_INT(reserve(&f, "C", "s3", "kx", 1, &r), WIRE_CREATED);
	ResId c = r.u.reservation.id;
	/* ... and once bound, a replay wins over "sold out". */
	CHECK_EQ_INT(reserve(&f, "C", "s3", "kx", 1, &r), WIRE_REPLAYED);
	CHECK(resid_equal(&r.u.reservation.id, &c));

	/* After expiry, a replay shows the timeout (and does not hold again). */
	f.now += 60 * 1000;
	n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "C", "s3", "kx", 1, &r), WIRE_REPLAYED);
	CHECK(resid_equal(&r.u.reservation.id, &c));
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_TIMEOUT);
	CHECK_EQ_INT(r.u.reservation.available, 1);
	for (size_t i = n; i < f.sink.count; i++)
		CHECK_EQ_INT(f.sink.recs[i].type, REC_TIMEOUT);

	CHECK_EQ_INT(book_stats(f.b)->reserve_replayed, 5);
	CHECK_EQ_INT(book_stats(f.b)->reserve_conflict, 4);
	check_book(f.b);
	fx_close(&f);
}

/* Two books sharing one IdemIndex stand for two shards. */
static void test_shared_idem(void)
{
	BookConfig cfg = default_cfg();
	IdemIndex *shared = idem_new();
	Fx f1, f2;
	WireResponse r;

	cfg.retention_ms = 10 * 1000;
	fx_open(&f1, &cfg, shared);
	fx_open(&f2, &cfg, shared);
	make_sku(&f1, "A", 5, 0, 10, 60);
	make_sku(&f2, "B", 5, 0, 10, 60);

	ResId x = reserve_ok(&f1, "A", "s1", "k1", 1);
	size_t n = f2.sink.count;
	CHECK_EQ_INT(reserve(&f2, "B", "s1", "k1", 1, &r), WIRE_IDEMPOTENCY_CONFLICT);
	CHECK_EQ_INT(f2.sink.count - n, 0);
	CHECK_EQ_INT(available(&f2, "B"), 5);
	CHECK_EQ_INT(reserve(&f1, "A", "s1", "k1", 1, &r), WIRE_REPLAYED);
	CHECK(resid_equal(&r.u.reservation.id, &x));

	/* Another session's k1 is free in either book. */
	reserve_ok(&f2, "B", "s2", "k1", 1);
	/* And the other way round. */
	reserve_ok(&f2, "B", "s1", "k2", 1);
	CHECK_EQ_INT(reserve(&f1, "A", "s1", "k2", 1, &r), WIRE_IDEMPOTENCY_CONFLICT);
	CHECK_EQ_INT(available(&f1, "A"), 4);

	/* Once book 1 forgets x (finished + retention), book 2 may use k1. */
	CHECK_EQ_INT(res_op(&f1, WIRE_OP_RELEASE, &x, "s1", NULL), WIRE_OK);
	f1.now += 10 * 1000;
	f2.now = f1.now;
	book_tick(f1.b, f1.now, sink_emit, &f1.sink);
	CHECK_EQ_INT(res_op(&f1, WIRE_OP_GET_RESERVATION, &x, "s1", NULL), WIRE_UNKNOWN_RESERVATION);
	CHECK_EQ_INT(reserve(&f2, "B", "s1", "k1", 1, &r), WIRE_CREATED);

	check_book(f1.b);
	check_book(f2.b);
	fx_close(&f1);
	fx_close(&f2);
	idem_free(shared);
}

/* Two shards race for the same keys from two threads: per key exactly one wins. */
enum { RACE_KEYS = 2000 };

typedef struct Racer {
	Fx *f;
	const char *sku;
	uint8_t status[RACE_KEYS];
} Racer;

static void *racer_main(void *arg)
{
	Racer *rc = arg;
	for (int i = 0; i < RACE_KEYS; i++) {
		char key[32];
		WireRequest q;
		WireResponse r;
		snprintf(key, sizeof(key), "race-%d", i);
		req_init(&q, WIRE_OP_RESERVE);
		req_str(q.sku, &q.sku_len, rc->sku, WIRE_SKU_MAX);
		req_str(q.session, &q.session_len, "racer", WIRE_SESSION_MAX);
		req_str(q.idem_key, &q.idem_key_len, key, WIRE_IDEM_KEY_MAX);
		q.quantity = 1;
		q.id = (uint64_t)i;
		book_execute(rc->f->b, &q, rc->f->now, &r, sink_emit, &rc->f->sink);
		rc->status[i] = r.status;
	}
	return NULL;
}

static void test_shared_idem_race(void)
{
	BookConfig cfg = default_cfg();
	IdemIndex *shared = idem_new();
	Fx f1, f2;
	Racer a, b;
	pthread_t ta, tb;

	fx_open(&f1, &cfg, shared);
	fx_open(&f2, &cfg, shared);
	make_sku(&f1, "A", 10 * RACE_KEYS, 0, 10, 60);
	make_sku(&f2, "B", 10 * RACE_KEYS, 0, 10, 60);
	a.f = &f1;
	a.sku = "A";
	b.f = &f2;
	b.sku = "B";
	REQUIRE(pthread_create(&ta, NULL, racer_main, &a) == 0);
	REQUIRE(pthread_create(&tb, NULL, racer_main, &b) == 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	int wins_a = 0, bad = 0;
	for (int i = 0; i < RACE_KEYS; i++) {
		int ca = a.status[i] == WIRE_CREATED, cb = b.status[i] == WIRE_CREATED;
		int xa = a.status[i] == WIRE_IDEMPOTENCY_CONFLICT, xb = b.status[i] == WIRE_IDEMPOTENCY_CONFLICT;
		if (!((ca && xb) || (cb && xa)))
			bad++;
		wins_a += ca;
	}
	CHECK_EQ_INT(bad, 0);
	CHECK_EQ_INT(available(&f1, "A"), 10 * RACE_KEYS - wins_a);
	CHECK_EQ_INT(available(&f2, "B"), 10 * RACE_KEYS - (RACE_KEYS - wins_a));
	check_book(f1.b);
	check_book(f2.b);
	fx_close(&f1);
	fx_close(&f2);
	idem_free(shared);
}

/* ---- CONFIRM / RELEASE / GET_RESERVATION -------------------------------------- */

static void test_confirm(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;

	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 10, 0, 10, 60);

	ResId x = reserve_ok(&f, "A", "s1", NULL, 3);
	check_counts(&f, "A", 10, 3, 0);
	f.now += 1000;
	size_t n = f.sink.count;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &x, "s1", &r), WIRE_OK);
	CHECK(resid_equal(&r.u.reservation.id, &x));
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_CONFIRMED);
	CHECK_EQ_INT(r.u.reservation.quantity, 3);
	CHECK_EQ_INT(r.u.reservation.available, 7);
	CHECK_EQ_INT(f.sink.count - n, 1);
	CHECK_EQ_INT(sink_last(&f.sink)->type, REC_CONFIRM);
	CHECK(resid_equal(&sink_last(&f.sink)->id, &x));
	CHECK_EQ_INT(sink_last(&f.sink)->at_ms, f.now);
	check_counts(&f, "A", 10, 0, 3);

	/* Confirming twice: OK again, no record, sold unchanged. */
	n = f.sink.count;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &x, "s1", &r), WIRE_OK);
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_CONFIRMED);
	CHECK_EQ_INT(f.sink.count - n, 0);
	check_counts(&f, "A", 10, 0, 3);

	/* A confirmed reservation is not timed out when its hold time passes. */
	f.now += 120 * 1000;
	n = f.sink.count;
	CHECK_EQ_INT(book_tick(f.b, f.now, sink_emit, &f.sink), 0);
	CHECK_EQ_INT(res_state(&f, &x, "s1"), WIRE_RES_CONFIRMED);
	CHECK_EQ_INT(f.sink.count - n, 0);

	/* Confirm after release: released, nothing sold. */
	ResId y = reserve_ok(&f, "A", "s1", NULL, 2);
	CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &y, "s1", NULL), WIRE_OK);
	n = f.sink.count;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &y, "s1", &r), WIRE_RESERVATION_RELEASED);
	CHECK(resid_equal(&r.u.reservation.id, &y));
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_RELEASED);
	CHECK_EQ_INT(f.sink.count - n, 0);
	check_counts(&f, "A", 10, 0, 3);

	/* Confirm one millisecond before expiry works ... */
	int64_t t = f.now;
	ResId z = reserve_ok(&f, "A", "s1", NULL, 1);
	f.now = t + 60 * 1000 - 1;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &z, "s1", &r), WIRE_OK);
	check_counts(&f, "A", 10, 0, 4);

	/* ... at expiry it is too late: status timeout, units back. */
	t = f.now;
	ResId w = reserve_ok(&f, "A", "s1", NULL, 2);
	f.now = t + 60 * 1000;
	n = f.sink.count;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &w, "s1", &r), WIRE_RESERVATION_EXPIRED);
	CHECK(resid_equal(&r.u.reservation.id, &w));
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_TIMEOUT);
	CHECK_EQ_INT(r.u.reservation.available, 6);
	CHECK_EQ_INT(f.sink.count - n, 1); /* the timeout, no confirm */
	CHECK_EQ_INT(sink_last(&f.sink)->type, REC_TIMEOUT);
	CHECK(resid_equal(&sink_last(&f.sink)->id, &w));
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &w, "s1", &r), WIRE_RESERVATION_EXPIRED);
	CHECK_EQ_INT(f.sink.count - n, 1);
	check_counts(&f, "A", 10, 0, 4);

	CHECK_EQ_INT(book_stats(f.b)->confirmed, 2);
	check_book(f.b);
	fx_close(&f);
}

static void test_release(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;

	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 4, 0, 10, 60);

	ResId x = reserve_ok(&f, "A", "s1", NULL, 4);
	CHECK_EQ_INT(reserve(&f, "A", "s2", NULL, 1, NULL), WIRE_SOLD_OUT);
	f.now += 10;
	size_t n = f.sink.count;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &x, "s1", &r), WIRE_OK);
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_RELEASED);
	CHECK_EQ_INT(r.u.reservation.available, 4);
	CHECK_EQ_INT(f.sink.count - n, 1);
	CHECK_EQ_INT(sink_last(&f.sink)->type, REC_RELEASE);
	CHECK(resid_equal(&sink_last(&f.sink)->id, &x));
	CHECK_EQ_INT(sink_last(&f.sink)->at_ms, f.now);
	/* Back at once: the very next request can take them. */
	check_counts(&f, "A", 4, 0, 0);
	CHECK_EQ_INT(book_next_expiry(f.b), INT64_MAX);

	/* Releasing twice: OK, no record. */
	n = f.sink.count;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &x, "s1", &r), WIRE_OK);
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_RELEASED);
	CHECK_EQ_INT(f.sink.count - n, 0);
	CHECK_EQ_INT(available(&f, "A"), 4);

	/* Release after confirm: already confirmed, the sale stands. */
	ResId y = reserve_ok(&f, "A", "s2", NULL, 1);
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &y, "s2", NULL), WIRE_OK);
	n = f.sink.count;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &y, "s2", &r), WIRE_ALREADY_CONFIRMED);
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_CONFIRMED);
	CHECK_EQ_INT(f.sink.count - n, 0);
	check_counts(&f, "A", 4, 0, 1);

	/* Release after expiry: the hold is gone, no record. */
	ResId z = reserve_ok(&f, "A", "s3", NULL, 2);
	f.now += 60 * 1000;
	CHECK_EQ_INT(book_tick(f.b, f.now, sink_emit, &f.sink), 1);
	n = f.sink.count;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &z, "s3", &r), WIRE_RESERVATION_EXPIRED);
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_TIMEOUT);
	CHECK_EQ_INT(f.sink.count - n, 0);
	check_counts(&f, "A", 4, 0, 1);

	CHECK_EQ_INT(book_stats(f.b)->released, 1);
	check_book(f.b);
	fx_close(&f);
}

static void test_wrong_session(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;
	static const char *wrong[] = { "s2", "s", "s10", "S1", "s1 " };
	static const uint8_t ops[] = { WIRE_OP_GET_RESERVATION, WIRE_OP_CONFIRM, WIRE_OP_RELEASE };

	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 10, 0, 10, 60);
	ResId x = reserve_ok(&f, "A", "s1", "k", 2);
	ResId y = reserve_ok(&f, "A", "s1", NULL, 1);
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &y, "s1", NULL), WIRE_OK);

	size_t n = f.sink.count;
	for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++)
		for (size_t j = 0; j < sizeof(ops); j++) {
			CHECK_EQ_INT(res_op(&f, ops[j], &x, wrong[i], &r), WIRE_UNKNOWN_RESERVATION);
			/* Not "already confirmed": another session learns nothing. */
			CHECK_EQ_INT(res_op(&f, ops[j], &y, wrong[i], &r), WIRE_UNKNOWN_RESERVATION);
		}
	CHECK_EQ_INT(f.sink.count - n, 0);
	CHECK_EQ_INT(res_state(&f, &x, "s1"), WIRE_RES_RESERVED);
	CHECK_EQ_INT(res_state(&f, &y, "s1"), WIRE_RES_CONFIRMED);
	check_counts(&f, "A", 10, 2, 1);
	check_book(f.b);
	fx_close(&f);
}

static void test_unknown_reservation(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;
	static const uint8_t ops[] = { WIRE_OP_GET_RESERVATION, WIRE_OP_CONFIRM, WIRE_OP_RELEASE };

	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 10, 0, 10, 60);
	ResId x = reserve_ok(&f, "A", "s1", NULL, 2);
	ResId ids[4];
	memset(&ids[0], 0, sizeof(ids[0]));
	ids[1] = fake_id("A", 1);                  /* right route, unknown randomness */
	ids[2] = fake_id("elsewhere", 2);          /* another SKU's route */
	ids[3] = x;
	ids[3].b[15] ^= 1;                         /* one bit off a real id */
	size_t n = f.sink.count;
	for (size_t i = 0; i < 4; i++)
		for (size_t j = 0; j < sizeof(ops); j++)
			CHECK_EQ_INT(res_op(&f, ops[j], &ids[i], "s1", &r), WIRE_UNKNOWN_RESERVATION);
	CHECK_EQ_INT(f.sink.count - n, 0);
	check_counts(&f, "A", 10, 2, 0);
	check_book(f.b);
	fx_close(&f);
}

/* ---- expiry ---------------------------------------------------------------------- */

static void test_expiry(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;

	fx_open(&f, &cfg, NULL);
	CHECK_EQ_INT(book_next_expiry(f.b), INT64_MAX);
	make_sku(&f, "A", 10, 0, 10, 10);
	make_sku(&f, "B", 1, 0, 10, 5);

	f.now = T0;
	ResId r1 = reserve_ok(&f, "A", "s1", NULL, 2);          /* expires T0+10000 */
	CHECK_EQ_INT(book_next_expiry(f.b), T0 + 10000);
	f.now = T0 + 1000;
	ResId r2 = reserve_ok(&f, "B", "s2", NULL, 1);          /* expires T0+6000 */
	CHECK_EQ_INT(book_next_expiry(f.b), T0 + 6000);
	f.now = T0 + 2000;
	ResId r3 = reserve_ok(&f, "A", "s3", NULL, 3);          /* expires T0+12000 */
	CHECK_EQ_INT(book_next_expiry(f.b), T0 + 6000);

	/* Live while now < expires_ms. */
	size_t n = f.sink.count;
	CHECK_EQ_INT(book_tick(f.b, T0 + 5999, sink_emit, &f.sink), 0);
	f.now = T0 + 5999;
	CHECK_EQ_INT(res_state(&f, &r2, "s2"), WIRE_RES_RESERVED);
	CHECK_EQ_INT(reserve(&f, "B", "s4", NULL, 1, &r), WIRE_SOLD_OUT);
	CHECK_EQ_INT(f.sink.count - n, 0);

	/* At now == expires_ms, without a tick, the units are back: the request
	 * itself times the hold out first (one TIMEOUT record), then reserves. */
	f.now = T0 + 6000;
	n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "B", "s4", NULL, 1, &r), WIRE_CREATED);
	ResId r4 = r.u.reservation.id;
	CHECK_EQ_INT(f.sink.count - n, 2);
	CHECK_EQ_INT(f.sink.recs[n].type, REC_TIMEOUT);
	CHECK(resid_equal(&f.sink.recs[n].id, &r2));
	CHECK_EQ_INT(f.sink.recs[n].at_ms, T0 + 6000);
	CHECK_EQ_INT(f.sink.recs[n + 1].type, REC_RESERVE);
	CHECK_EQ_INT(res_state(&f, &r2, "s2"), WIRE_RES_TIMEOUT);
	CHECK_EQ_INT(book_next_expiry(f.b), T0 + 10000);

	/* The same through GET_SKU: at exactly T0+10000 r1's units show as available. */
	f.now = T0 + 9999;
	CHECK_EQ_INT(available(&f, "A"), 5);
	f.now = T0 + 10000;
	n = f.sink.count;
	CHECK_EQ_INT(available(&f, "A"), 7);
	CHECK_EQ_INT(f.sink.count - n, 1);
	CHECK_EQ_INT(sink_last(&f.sink)->type, REC_TIMEOUT);
	CHECK(resid_equal(&sink_last(&f.sink)->id, &r1));
	CHECK_EQ_INT(book_next_expiry(f.b), T0 + 11000); /* r4 */

	/* book_tick times out everything due, in expiry order, and counts. */
	n = f.sink.count;
	CHECK_EQ_INT(book_tick(f.b, T0 + 20000, sink_emit, &f.sink), 2);
	CHECK_EQ_INT(f.sink.count - n, 2);
	CHECK_EQ_INT(f.sink.recs[n].type, REC_TIMEOUT);
	CHECK(resid_equal(&f.sink.recs[n].id, &r4));
	CHECK_EQ_INT(f.sink.recs[n].at_ms, T0 + 20000);
	CHECK_EQ_INT(f.sink.recs[n + 1].type, REC_TIMEOUT);
	CHECK(resid_equal(&f.sink.recs[n + 1].id, &r3));
	CHECK_EQ_INT(book_next_expiry(f.b), INT64_MAX);
	CHECK_EQ_INT(book_tick(f.b, T0 + 20000, sink_emit, &f.sink), 0);
	f.now = T0 + 20000;
	check_counts(&f, "A", 10, 0, 0);
	check_counts(&f, "B", 1, 0, 0);
	CHECK_EQ_INT(book_stats(f.b)->timed_out, 4);

	/* The wall clock steps back 20 s: nothing comes back to life. */
	f.now = T0;
	n = f.sink.count;
	CHECK_EQ_INT(book_tick(f.b, T0, sink_emit, &f.sink), 0);
	CHECK_EQ_INT(res_state(&f, &r1, "s1"), WIRE_RES_TIMEOUT);
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &r1, "s1", &r), WIRE_RESERVATION_EXPIRED);
	CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &r3, "s3", &r), WIRE_RESERVATION_EXPIRED);
	CHECK_EQ_INT(available(&f, "A"), 10);
	CHECK_EQ_INT(f.sink.count - n, 0);
	/* A hold taken now gets its full ttl from the latest time the book saw. */
	CHECK_EQ_INT(reserve(&f, "A", "s5", NULL, 1, &r), WIRE_CREATED);
	ResId r5 = r.u.reservation.id;
	CHECK_EQ_INT(r.u.reservation.created_ms, T0 + 20000);
	CHECK_EQ_INT(r.u.reservation.expires_ms, T0 + 30000);
	CHECK_EQ_INT(sink_last(&f.sink)->at_ms, T0 + 20000);
	/* A live hold does not expire early either, whatever the clock says. */
	f.now = T0 + 29999;
	CHECK_EQ_INT(res_state(&f, &r5, "s5"), WIRE_RES_RESERVED);
	f.now = T0 + 1000;
	CHECK_EQ_INT(res_state(&f, &r5, "s5"), WIRE_RES_RESERVED);
	CHECK_EQ_INT(book_tick(f.b, T0 + 1000, sink_emit, &f.sink), 0);
	CHECK_EQ_INT(book_tick(f.b, T0 + 30000, sink_emit, &f.sink), 1);

	/* Many holds with the same and with shuffled expiries, released in between:
	 * the heap gives them back in order. */
	f.now = T0 + 40000;
	make_sku(&f, "C", 1000, 0, 10, 10);
	enum { K = 64 };
	ResId ids[K];
	for (int i = 0; i < K; i++) {
		f.now = T0 + 40000 + (i * 37) % 11 * 100; /* clamped: never decreases */
		ids[i] = reserve_ok(&f, "C", "s6", NULL, 1);
	}
	for (int i = 0; i < K; i += 5)
		CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &ids[i], "s6", NULL), WIRE_OK);
	check_expiry_index(f.b, f.now);
	int64_t last = INT64_MIN;
	size_t due = 0;
	CHECK(book_next_expiry(f.b) >= T0 + 50000);
	for (int64_t t = T0 + 40000; book_next_expiry(f.b) != INT64_MAX; t += 50) {
		int64_t next = book_next_expiry(f.b);
		CHECK(next >= last);
		last = next;
		n = f.sink.count;
		due += book_tick(f.b, t, sink_emit, &f.sink);
		for (size_t i = n; i < f.sink.count; i++)
			CHECK_EQ_INT(f.sink.recs[i].type, REC_TIMEOUT);
		check_book(f.b);
		check_expiry_index(f.b, t);
		REQUIRE(t < T0 + 60000);
	}
	CHECK_EQ_INT(due, K - (K + 4) / 5);
	f.now = T0 + 100000;
	check_counts(&f, "C", 1000, 0, 0);
	check_book(f.b);
	fx_close(&f);
}

/* Holds of very different ttls, confirmed and released out of order, then
 * expired step by step: every hold times out exactly when due. */
static void test_expiry_heap(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	static const char *skus[] = { "short", "mid", "long" };
	static const int32_t ttls[] = { 5, 50, 500 };
	enum { N = 600 };
	static ResId ids[N];
	uint64_t z = 12345;

	fx_open(&f, &cfg, NULL);
	for (int k = 0; k < 3; k++)
		make_sku(&f, skus[k], 100000, 0, 10, ttls[k]);
	for (int i = 0; i < N; i++) {
		WireResponse r;
		z = z * 6364136223846793005ULL + 1442695040888963407ULL;
		int k = (int)((z >> 33) % 3);
		f.now = T0 + i * 20;
		CHECK_EQ_INT(reserve(&f, skus[k], "s", NULL, 1, &r), WIRE_CREATED);
		ids[i] = r.u.reservation.id;
		/* finish an earlier hold now and then: removal from the middle */
		if (i > 10 && (z >> 40) % 3 == 0) {
			int j = (int)((z >> 20) % (uint64_t)i);
			res_op(&f, (z >> 50) % 2 ? WIRE_OP_RELEASE : WIRE_OP_CONFIRM, &ids[j], "s", NULL);
		}
		check_expiry_index(f.b, f.now);
	}
	check_book(f.b);
	for (int64_t t = f.now; book_next_expiry(f.b) != INT64_MAX; t += 250) {
		book_tick(f.b, t, sink_emit, &f.sink);
		check_expiry_index(f.b, t);
		REQUIRE(t < T0 + 600 * 1000);
	}
	for (int i = 0; i < N; i++)
		CHECK(res_state(&f, &ids[i], "s") != WIRE_RES_RESERVED);
	check_book(f.b);
	fx_close(&f);
}

/* ---- retention ------------------------------------------------------------------- */

static void test_retention(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	WireResponse r;

	cfg.retention_ms = 60 * 1000;
	fx_open(&f, &cfg, NULL);
	make_sku(&f, "A", 20, 0, 10, 300);

	f.now = T0;
	ResId x = reserve_ok(&f, "A", "s1", "k1", 2);
	f.now = T0 + 1000;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &x, "s1", NULL), WIRE_OK);  /* finished T0+1000 */
	ResId y = reserve_ok(&f, "A", "s1", "k2", 1);
	f.now = T0 + 2000;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_RELEASE, &y, "s1", NULL), WIRE_OK);  /* finished T0+2000 */
	ResId z = reserve_ok(&f, "A", "s1", "k3", 1);                        /* live until T0+302000 */

	CHECK_EQ_INT(book_tick(f.b, T0 + 60999, sink_emit, &f.sink), 0);
	f.now = T0 + 60999;
	CHECK_EQ_INT(res_state(&f, &x, "s1"), WIRE_RES_CONFIRMED);
	CHECK_EQ_INT(book_stats(f.b)->reservations_retained, 3);

	size_t n = f.sink.count;
	CHECK_EQ_INT(book_tick(f.b, T0 + 61000, sink_emit, &f.sink), 0);
	CHECK_EQ_INT(f.sink.count - n, 0); /* forgetting writes nothing */
	f.now = T0 + 61000;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_GET_RESERVATION, &x, "s1", &r), WIRE_UNKNOWN_RESERVATION);
	CHECK_EQ_INT(res_op(&f, WIRE_OP_CONFIRM, &x, "s1", &r), WIRE_UNKNOWN_RESERVATION);
	CHECK_EQ_INT(res_state(&f, &y, "s1"), WIRE_RES_RELEASED);
	CHECK_EQ_INT(book_stats(f.b)->forgotten, 1);
	CHECK_EQ_INT(book_tick(f.b, T0 + 62000, sink_emit, &f.sink), 0);
	f.now = T0 + 62000;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_GET_RESERVATION, &y, "s1", &r), WIRE_UNKNOWN_RESERVATION);
	CHECK_EQ_INT(book_stats(f.b)->forgotten, 2);
	/* A live hold is never forgotten, however old. */
	CHECK_EQ_INT(res_state(&f, &z, "s1"), WIRE_RES_RESERVED);
	/* The sale stays sold. */
	check_counts(&f, "A", 20, 1, 2);

	/* The forgotten keys are free again: independent new reservations. */
	n = f.sink.count;
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k1", 2, &r), WIRE_CREATED);
	CHECK(!resid_equal(&r.u.reservation.id, &x));
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k2", 5, &r), WIRE_CREATED); /* another quantity: fine */
	CHECK(!resid_equal(&r.u.reservation.id, &y));
	CHECK_EQ_INT(f.sink.count - n, 2);
	/* k3 still belongs to the live hold. */
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k3", 1, &r), WIRE_REPLAYED);
	CHECK(resid_equal(&r.u.reservation.id, &z));
	check_counts(&f, "A", 20, 8, 2);

	/* A timed-out hold is kept for retention after its timeout, then forgotten. */
	CHECK_EQ_INT(book_tick(f.b, T0 + 302000, sink_emit, &f.sink), 1);
	CHECK_EQ_INT(book_tick(f.b, T0 + 361999, sink_emit, &f.sink), 0);
	f.now = T0 + 361999;
	CHECK_EQ_INT(res_state(&f, &z, "s1"), WIRE_RES_TIMEOUT);
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k3", 1, &r), WIRE_REPLAYED);
	CHECK_EQ_INT(r.u.reservation.state, WIRE_RES_TIMEOUT);
	/* At T0+362000 the two new holds time out and z is forgotten. */
	CHECK_EQ_INT(book_tick(f.b, T0 + 362000, sink_emit, &f.sink), 2);
	f.now = T0 + 362000;
	CHECK_EQ_INT(res_op(&f, WIRE_OP_GET_RESERVATION, &z, "s1", &r), WIRE_UNKNOWN_RESERVATION);
	CHECK_EQ_INT(reserve(&f, "A", "s1", "k3", 1, &r), WIRE_CREATED);
	CHECK(!resid_equal(&r.u.reservation.id, &z));
	check_book(f.b);

	/* The log now holds k1, k2 and k3 twice each (forgetting is not logged):
	 * replay must take them, and after a tick equal the original. */
	Fx g;
	fx_open(&g, &cfg, NULL);
	replay_log(&g, &f.sink);
	CHECK_EQ_INT(book_tick(g.b, f.now, sink_emit, &g.sink), 0);
	CHECK_EQ_INT(g.sink.count, 0);
	check_books_equal(f.b, g.b);
	g.now = f.now;
	CHECK_EQ_INT(reserve(&g, "A", "s1", "k3", 1, &r), WIRE_REPLAYED);
	CHECK_EQ_INT(reserve(&g, "A", "s1", "k1", 2, &r), WIRE_REPLAYED);
	CHECK_EQ_INT(reserve(&g, "A", "s1", "k1", 3, &r), WIRE_IDEMPOTENCY_CONFLICT);
	fx_close(&g);
	fx_close(&f);
}

/* ---- comparing whole books --------------------------------------------------------- */

typedef struct Views {
	WireSku *skus;
	size_t n_skus, cap_skus;
	WireReservation *res;
	size_t n_res, cap_res;
} Views;

static void views_add_sku(void *ctx, const WireSku *s)
{
	Views *v = ctx;
	if (v->n_skus == v->cap_skus) {
		v->cap_skus = v->cap_skus ? v->cap_skus * 2 : 16;
		v->skus = realloc(v->skus, v->cap_skus * sizeof(*v->skus));
		REQUIRE(v->skus != NULL);
	}
	v->skus[v->n_skus++] = *s;
}

static void views_add_res(void *ctx, const WireReservation *r)
{
	Views *v = ctx;
	if (v->n_res == v->cap_res) {
		v->cap_res = v->cap_res ? v->cap_res * 2 : 64;
		v->res = realloc(v->res, v->cap_res * sizeof(*v->res));
		REQUIRE(v->res != NULL);
	}
	v->res[v->n_res++] = *r;
}

static int cmp_sku(const void *a, const void *b)
{
	const WireSku *x = a, *y = b;
	return strcmp(x->sku, y->sku);
}

static int cmp_res(const void *a, const void *b)
{
	const WireReservation *x = a, *y = b;
	return memcmp(x->id.b, y->id.b, RESID_BYTES);
}

static void views_collect(const Book *b, Views *v)
{
	memset(v, 0, sizeof(*v));
	book_foreach_sku(b, views_add_sku, v);
	book_foreach_reservation(b, views_add_res, v);
	if (v->n_skus)
		qsort(v->skus, v->n_skus, sizeof(*v->skus), cmp_sku);
	if (v->n_res)
		qsort(v->res, v->n_res, sizeof(*v->res), cmp_res);
}

static void views_free(Views *v)
{
	free(v->skus);
	free(v->res);
}

static void check_books_equal(const Book *a, const Book *b)
{
	Views va, vb;
	views_collect(a, &va);
	views_collect(b, &vb);
	CHECK_EQ_INT(va.n_skus, vb.n_skus);
	CHECK_EQ_INT(va.n_res, vb.n_res);
	if (va.n_skus == vb.n_skus)
		for (size_t i = 0; i < va.n_skus; i++)
			check_sku_equal(&va.skus[i], &vb.skus[i]);
	if (va.n_res == vb.n_res)
		for (size_t i = 0; i < va.n_res; i++)
			check_res_equal(&va.res[i], &vb.res[i]);
	views_free(&va);
	views_free(&vb);
}

/* Feeds every record src emitted (decoded from the encoded bytes) to dst. */
static void replay_log(Fx *dst, const Sink *src)
{
	size_t off = 0, n = 0;
	while (off < src->log.len) {
		REQUIRE(off + 4 <= src->log.len);
		uint32_t len = get_u32le(src->log.data + off);
		REQUIRE(off + 4 + len <= src->log.len);
		Record rec;
		REQUIRE(record_decode(src->log.data + off + 4, len, &rec) == 0);
		int rc = book_replay(dst->b, &rec);
		if (rc != 0)
			fprintf(stderr, "replay of record %zu (%s) failed\n", n, record_type_name(rec.type));
		CHECK_EQ_INT(rc, 0);
		off += 4 + len;
		n++;
	}
	CHECK_EQ_INT(n, src->count);
}

/* The expiry index must agree with the reservations: no reserved hold is
 * past now, and book_next_expiry is the earliest expires_ms of a live hold. */
typedef struct ExpiryScan {
	int64_t now, min;
	unsigned overdue;
} ExpiryScan;

static void expiry_scan(void *ctx, const WireReservation *r)
{
	ExpiryScan *x = ctx;
	if (r->state != WIRE_RES_RESERVED)
		return;
	if (r->expires_ms <= x->now)
		x->overdue++;
	if (r->expires_ms < x->min)
		x->min = r->expires_ms;
}

static void check_expiry_index(const Book *b, int64_t now)
{
	ExpiryScan x = { .now = now, .min = INT64_MAX };
	book_foreach_reservation(b, expiry_scan, &x);
	CHECK_EQ_INT(x.overdue, 0);
	CHECK_EQ_INT(book_next_expiry(b), x.min);
}

/* ---- a seeded random run ------------------------------------------------------------ */

typedef struct Sim {
	uint64_t s;          /* the run's own PRNG (the books keep their own Rng) */
	int64_t now, high;   /* the wall clock (may step back) and the latest seen */
	ResId ids[4096];
	uint8_t id_session[4096];
	size_t n_ids;
	unsigned step;
} Sim;

static uint64_t sim_rand(Sim *s)
{
	/* splitmix64 */
	uint64_t z = (s->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned sim_below(Sim *s, unsigned n)
{
	return (unsigned)(sim_rand(s) % n);
}

static const char *const sim_skus[] = { "sku-0", "sku-1", "sku-2", "sku-3", "sku-x" };
static const char *const sim_sessions[] = { "u0", "u1", "u2", "u3", "u4", "u5" };
static const char *const sim_keys[] = { "", "k0", "k1", "k2", "k3", "k4", "k5" };

static int cmp_record_id(const void *a, const void *b)
{
	const Record *x = a, *y = b;
	return memcmp(x->id.b, y->id.b, RESID_BYTES);
}

/* Copies n records and sorts each run of TIMEOUTs with the same at_ms by id:
 * holds that expire in the same millisecond may time out in any order (a
 * loaded book's heap is laid out differently from the original's). */
static Record *records_normalised(const Record *recs, size_t n)
{
	Record *out = malloc((n ? n : 1) * sizeof(*out));
	REQUIRE(out != NULL);
	if (n)
		memcpy(out, recs, n * sizeof(*out));
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		if (out[i].type == REC_TIMEOUT)
			while (j < n && out[j].type == REC_TIMEOUT && out[j].at_ms == out[i].at_ms)
				j++;
		if (j - i > 1)
			qsort(out + i, j - i, sizeof(*out), cmp_record_id);
		i = j;
	}
	return out;
}

/* One random request (or tick), applied to every book in books; the books
 * must answer alike and emit alike. */
static void sim_step(Sim *s, Fx **books, size_t nbooks)
{
	WireRequest q;
	WireResponse r0;
	unsigned dice = sim_below(s, 100);

	/* Time: mostly forward, sometimes still, now and then backwards. */
	unsigned t = sim_below(s, 100);
	if (t < 3)
		s->now -= sim_below(s, 20000);
	else if (t < 70)
		s->now += sim_below(s, 1500);
	if (s->now > s->high)
		s->high = s->now;

	size_t before[8];
	REQUIRE(nbooks <= 8);
	for (size_t i = 0; i < nbooks; i++) {
		books[i]->now = s->now;
		before[i] = books[i]->sink.count;
	}

	if (dice < 8) {
		/* a PUT_SKU, stock sometimes below what is committed */
		uint8_t fields = (uint8_t)(sim_below(s, 64));
		if (sim_below(s, 2))
			fields |= WIRE_SKU_HAS_STOCK;
		req_init(&q, WIRE_OP_PUT_SKU);
		req_str(q.sku, &q.sku_len, sim_skus[sim_below(s, 4)], WIRE_SKU_MAX);
		q.settings.fields = fields;
		q.settings.stock = sim_below(s, 40);
		q.settings.price_cents = sim_below(s, 5000);
		q.settings.per_session_limit = (int32_t)sim_below(s, 8);
		q.settings.max_per_order = 1 + (int32_t)sim_below(s, 12);
		q.settings.reservation_ttl_s = 1 + (int32_t)sim_below(s, 30);
		req_str(q.settings.name, &q.settings.name_len, sim_below(s, 2) ? "Name" : "Other name",
			WIRE_NAME_MAX);
	} else if (dice < 55) {
		req_init(&q, WIRE_OP_RESERVE);
		req_str(q.sku, &q.sku_len, sim_skus[sim_below(s, 5)], WIRE_SKU_MAX);
		req_str(q.session, &q.session_len, sim_sessions[sim_below(s, 6)], WIRE_SESSION_MAX);
		req_str(q.idem_key, &q.idem_key_len, sim_keys[sim_below(s, 7)], WIRE_IDEM_KEY_MAX);
		q.quantity = 1 + (int32_t)sim_below(s, sim_below(s, 4) ? 4 : 14);
	} else if (dice < 85) {
		static const uint8_t ops[] = { WIRE_OP_CONFIRM, WIRE_OP_RELEASE, WIRE_OP_GET_RESERVATION };
		req_init(&q, ops[sim_below(s, 3)]);
		unsigned session = sim_below(s, 6);
		if (s->n_ids && sim_below(s, 20)) {
			/* mostly recent ones, which may still be live */
			size_t i = sim_below(s, 4) ? s->n_ids - 1 - sim_below(s, s->n_ids < 12 ? (unsigned)s->n_ids : 12)
						   : sim_below(s, (unsigned)s->n_ids);
			q.reservation = s->ids[i];
			if (sim_below(s, 8))
				session = s->id_session[i];
		} else {
			q.reservation = fake_id(sim_skus[sim_below(s, 4)], (uint8_t)sim_below(s, 256));
		}
		req_str(q.session, &q.session_len, sim_sessions[session], WIRE_SESSION_MAX);
	} else if (dice < 90) {
		req_init(&q, WIRE_OP_GET_SKU);
		req_str(q.sku, &q.sku_len, sim_skus[sim_below(s, 5)], WIRE_SKU_MAX);
	} else {
		/* a timer tick */
		size_t expect = 0;
		for (size_t i = 0; i < nbooks; i++) {
			size_t got = book_tick(books[i]->b, s->now, sink_emit, &books[i]->sink);
			if (i == 0)
				expect = got;
			CHECK_EQ_INT(got, expect);
		}
		goto compare;
	}

	for (size_t i = 0; i < nbooks; i++) {
		WireResponse ri;
		fx_exec(books[i], &q, i == 0 ? &r0 : &ri);
		if (i > 0) {
			ri.id = r0.id;
			check_resp_equal(&r0, &ri);
		}
	}
	if (q.op == WIRE_OP_RESERVE && r0.status == WIRE_CREATED && s->n_ids < 4096) {
		s->ids[s->n_ids] = r0.u.reservation.id;
		for (uint8_t j = 0; j < 6; j++)
			if (strcmp(sim_sessions[j], q.session) == 0)
				s->id_session[s->n_ids] = j;
		s->n_ids++;
	}
	/* What the answers say must hold for the SKU. */
	if (q.op == WIRE_OP_RESERVE && r0.status == WIRE_SOLD_OUT)
		CHECK_EQ_INT(r0.u.available, 0);
	if (q.op == WIRE_OP_RESERVE && r0.status == WIRE_INSUFFICIENT_STOCK)
		CHECK(r0.u.available > 0 && r0.u.available < q.quantity);
	if (q.op == WIRE_OP_RESERVE && r0.status == WIRE_LIMIT_EXCEEDED)
		CHECK(r0.u.limit.limit > 0 && r0.u.limit.held + q.quantity > r0.u.limit.limit);
	if (wire_response_body(r0.op, r0.status) == WIRE_BODY_RESERVATION)
		CHECK(r0.u.reservation.available >= 0);

compare:
	for (size_t i = 1; i < nbooks; i++) {
		size_t n0 = books[0]->sink.count - before[0], ni = books[i]->sink.count - before[i];
		CHECK_EQ_INT(ni, n0);
		if (ni == n0) {
			Record *x = records_normalised(books[0]->sink.recs + before[0], n0);
			Record *y = records_normalised(books[i]->sink.recs + before[i], ni);
			for (size_t k = 0; k < n0; k++)
				check_record_equal(&x[k], &y[k]);
			free(x);
			free(y);
		}
	}
	for (size_t i = 0; i < nbooks; i++) {
		check_book(books[i]->b);
		check_expiry_index(books[i]->b, s->high);
	}
	s->step++;
}

static int sim_run(Sim *s, Fx **books, size_t nbooks, unsigned steps)
{
	for (unsigned i = 0; i < steps; i++) {
		int before = check_failures;
		sim_step(s, books, nbooks);
		if (check_failures != before) {
			fprintf(stderr, "random run: first divergence at step %u\n", s->step);
			return -1;
		}
	}
	return 0;
}

static uint64_t test_seed(void)
{
	const char *env = getenv("RG_TEST_SEED");
	if (env && *env)
		return strtoull(env, NULL, 0);
	return 20261203;
}

/* Snapshot bytes of a book. */
static void save(const Book *b, Buf *out)
{
	buf_init(out, 4096);
	book_save(b, out);
}

/* Opens a fresh book (own IdemIndex) and loads data into it; returns book_load's result. */
static int load_fresh(Fx *f, const BookConfig *cfg, const uint8_t *data, size_t len)
{
	fx_open(f, cfg, NULL);
	return book_load(f->b, data, len);
}

static void test_replay_and_snapshot_scripted(void)
{
	Fx a, c, d;
	BookConfig cfg = default_cfg();
	WireResponse r;
	Buf snap;

	cfg.retention_ms = 30 * 1000;
	fx_open(&a, &cfg, NULL);
	make_sku(&a, "A", 10, 2, 5, 20);
	CHECK_EQ_INT(put_sku(&a, "B", WIRE_SKU_HAS_ALL, 3, 499, 0, 3, 10, "Bee", NULL), WIRE_CREATED);
	make_sku(&a, "C", 100, 0, 10, 300);
	ResId a1 = reserve_ok(&a, "A", "s1", "k1", 2);
	ResId a2 = reserve_ok(&a, "A", "s2", NULL, 1);
	a.now += 1000;
	CHECK_EQ_INT(res_op(&a, WIRE_OP_CONFIRM, &a1, "s1", NULL), WIRE_OK);
	CHECK_EQ_INT(res_op(&a, WIRE_OP_RELEASE, &a2, "s2", NULL), WIRE_OK);
	ResId b1 = reserve_ok(&a, "B", "s1", "k2", 3);
	a.now += 11 * 1000;                                            /* b1 expires */
	CHECK_EQ_INT(put_stock(&a, "B", 5), WIRE_OK);
	reserve_ok(&a, "B", "s3", "k1", 2);
	reserve_ok(&a, "C", "s3", "k9", 7);
	CHECK_EQ_INT(put_sku(&a, "C", WIRE_SKU_HAS_PRICE | WIRE_SKU_HAS_NAME, 0, 5, 0, 0, 0, "Sea", NULL),
		     WIRE_OK);
	a.now += 40 * 1000;                                            /* a1, a2, b1 forgettable */
	CHECK_EQ_INT(book_tick(a.b, a.now, sink_emit, &a.sink), 1);   /* B/s3 expires */
	ResId c2 = reserve_ok(&a, "C", "s4", NULL, 10);
	CHECK_EQ_INT(res_op(&a, WIRE_OP_CONFIRM, &c2, "s4", NULL), WIRE_OK);
	CHECK_EQ_INT(res_state(&a, &b1, "s1"), 0);
	check_book(a.b);

	/* Replay: the fresh book equals the original. */
	fx_open(&c, &cfg, NULL);
	replay_log(&c, &a.sink);
	CHECK_EQ_INT(book_tick(c.b, a.now, sink_emit, &c.sink), 0);
	CHECK_EQ_INT(c.sink.count, 0);
	check_books_equal(a.b, c.b);
	check_book(c.b);
	c.rng = a.rng; /* so both draw the same next id */
	/* Hidden state too: the key is remembered, the session holds what it did. */
	c.now = a.now;
	CHECK_EQ_INT(reserve(&c, "C", "s3", "k9", 7, &r), WIRE_REPLAYED);
	CHECK_EQ_INT(reserve(&c, "C", "s3", "k9", 6, &r), WIRE_IDEMPOTENCY_CONFLICT);
	CHECK_EQ_INT(reserve(&c, "A", "s1", NULL, 1, &r), WIRE_CREATED); /* a1 forgotten: limit free */
	CHECK_EQ_INT(reserve(&a, "A", "s1", NULL, 1, &r), WIRE_CREATED);
	check_books_equal(a.b, c.b);

	/* Save and load: equal, and both pass the full check. */
	save(a.b, &snap);
	CHECK_EQ_INT(load_fresh(&d, &cfg, snap.data, snap.len), 0);
	check_books_equal(a.b, d.b);
	check_book(a.b);
	check_book(d.b);
	d.now = a.now;
	CHECK_EQ_INT(reserve(&d, "C", "s3", "k9", 7, &r), WIRE_REPLAYED);
	CHECK_EQ_INT(reserve(&d, "A", "s1", NULL, 2, &r), WIRE_LIMIT_EXCEEDED);
	CHECK_EQ_INT(r.u.limit.limit, 2);
	CHECK_EQ_INT(r.u.limit.held, 1);
	/* Saving the loaded book and loading that again changes nothing. */
	Buf snap2;
	Fx e;
	save(d.b, &snap2);
	CHECK_EQ_INT(load_fresh(&e, &cfg, snap2.data, snap2.len), 0);
	check_books_equal(d.b, e.b);
	buf_free(&snap);
	buf_free(&snap2);
	fx_close(&a);
	fx_close(&c);
	fx_close(&d);
	fx_close(&e);
}

/* A random run on A; then B = load(save(A)) and C = replay(log of A) continue
 * in lockstep with A (same Rng state) and must answer exactly like A. */
static void test_replay_and_snapshot_random(void)
{
	BookConfig cfg = default_cfg();
	uint64_t seed = test_seed();

	cfg.retention_ms = 60 * 1000;
	cfg.default_ttl_s = 20;
	cfg.default_per_session_limit = 6;
	fprintf(stderr, "test_book: random run seed %" PRIu64 " (RG_TEST_SEED to repeat)\n", seed);
	for (unsigned round = 0; round < 3; round++) {
		static Sim sim;
		Fx a, b, c, d;
		Buf snap;
		Fx *one[1] = { &a };

		memset(&sim, 0, sizeof(sim));
		sim.s = seed + round;
		sim.now = sim.high = T0;
		fx_open(&a, &cfg, NULL);
		for (int i = 0; i < 4; i++)
			CHECK_EQ_INT(put_sku(&a, sim_skus[i], WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_MAX_PER_ORDER,
					     10 + 10 * i, 0, 0, 4 + i * 3, 0, NULL, NULL), WIRE_CREATED);
		if (sim_run(&sim, one, 1, 1500) != 0) {
			fx_close(&a);
			return;
		}

		/* Bring everyone to the same moment, then compare. */
		a.now = sim.high;
		CHECK_EQ_INT(book_tick(a.b, sim.high, sink_emit, &a.sink), 0);
		save(a.b, &snap);
		CHECK_EQ_INT(load_fresh(&b, &cfg, snap.data, snap.len), 0);
		fx_open(&c, &cfg, NULL);
		replay_log(&c, &a.sink);
		size_t n = c.sink.count;
		CHECK_EQ_INT(book_tick(c.b, sim.high, sink_emit, &c.sink), 0);
		CHECK_EQ_INT(c.sink.count - n, 0);
		check_books_equal(a.b, b.b);
		check_books_equal(a.b, c.b);
		check_book(b.b);
		check_book(c.b);

		/* Continue in lockstep. */
		b.rng = a.rng;
		c.rng = a.rng;
		Fx *all[3] = { &a, &b, &c };
		sim.s = seed + 1000 + round;
		int rc = sim_run(&sim, all, 3, 1500);
		CHECK_EQ_INT(rc, 0);
		check_books_equal(a.b, b.b);
		check_books_equal(a.b, c.b);

		/* The whole log once more, from scratch. */
		fx_open(&d, &cfg, NULL);
		replay_log(&d, &a.sink);
		CHECK_EQ_INT(book_tick(a.b, sim.high, sink_emit, &a.sink), 0);
		CHECK_EQ_INT(book_tick(d.b, sim.high, sink_emit, &d.sink), 0);
		check_books_equal(a.b, d.b);

		const BookStats *st = book_stats(a.b);
		if (round == 0)
			fprintf(stderr, "test_book: random run: %" PRIu64 " created, %" PRIu64 " replayed, %"
				PRIu64 " sold out, %" PRIu64 " limit, %" PRIu64 " confirmed, %" PRIu64
				" released, %" PRIu64 " timed out, %" PRIu64 " forgotten\n",
				st->reserve_created, st->reserve_replayed, st->reserve_sold_out,
				st->reserve_limit, st->confirmed, st->released, st->timed_out, st->forgotten);
		CHECK(st->reserve_created > 100 && st->confirmed > 10 && st->timed_out > 10 &&
		      st->forgotten > 10 && st->reserve_replayed > 0 && st->reserve_conflict > 0);
		buf_free(&snap);
		fx_close(&a);
		fx_close(&b);
		fx_close(&c);
		fx_close(&d);
	}
}

/* ---- book_replay refuses records that do not fit -------------------------------------- */

static Record rec_sku_put(const char *sku, int64_t stock)
{
	Record r;
	memset(&r, 0, sizeof(r));
	r.type = REC_SKU_PUT;
	r.at_ms = T0;
	req_str(r.sku, &r.sku_len, sku, WIRE_SKU_MAX);
	r.settings.fields = WIRE_SKU_HAS_ALL;
	r.settings.stock = stock;
	r.settings.max_per_order = 10;
	r.settings.reservation_ttl_s = 60;
	return r;
}

static Record rec_reserve(const ResId *id, const char *sku, const char *session, const char *key,
			  int32_t qty)
{
	Record r;
	memset(&r, 0, sizeof(r));
	r.type = REC_RESERVE;
	r.at_ms = T0;
	r.id = *id;
	req_str(r.sku, &r.sku_len, sku, WIRE_SKU_MAX);
	req_str(r.session, &r.session_len, session, WIRE_SESSION_MAX);
	req_str(r.idem_key, &r.idem_key_len, key ? key : "", WIRE_IDEM_KEY_MAX);
	r.quantity = qty;
	r.expires_ms = T0 + 60000;
	return r;
}

static Record rec_done(uint8_t type, const ResId *id)
{
	Record r;
	memset(&r, 0, sizeof(r));
	r.type = type;
	r.at_ms = T0 + 1;
	r.id = *id;
	return r;
}

static void test_replay_rejects(void)
{
	Fx f;
	BookConfig cfg = default_cfg();
	Record r;

	fx_open(&f, &cfg, NULL);
	ResId x = fake_id("A", 1), y = fake_id("A", 2), z = fake_id("A", 3);

	/* Transitions of reservations that do not exist; a reserve of an unknown SKU. */
	r = rec_done(REC_CONFIRM, &x);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	r = rec_done(REC_RELEASE, &x);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	r = rec_done(REC_TIMEOUT, &x);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	r = rec_reserve(&x, "A", "s1", NULL, 1);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	check_book(f.b);

	r = rec_sku_put("A", 3);
	CHECK_EQ_INT(book_replay(f.b, &r), 0);
	/* Beyond the stock. */
	r = rec_reserve(&x, "A", "s1", NULL, 4);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	check_counts(&f, "A", 3, 0, 0);
	/* An id that is not routed to its SKU. */
	ResId elsewhere = fake_id("B", 1);
	r = rec_reserve(&elsewhere, "A", "s1", NULL, 1);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);

	r = rec_reserve(&x, "A", "s1", "k", 1);
	CHECK_EQ_INT(book_replay(f.b, &r), 0);
	/* The same id twice (the stock would allow it). */
	r = rec_reserve(&x, "A", "s2", NULL, 1);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	/* The same (session, key) twice. */
	r = rec_reserve(&y, "A", "s1", "k", 1);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	check_counts(&f, "A", 3, 1, 0);
	check_book(f.b);

	/* Stock below what is committed. */
	r = rec_reserve(&y, "A", "s2", NULL, 2);
	CHECK_EQ_INT(book_replay(f.b, &r), 0);
	r = rec_sku_put("A", 2);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	check_counts(&f, "A", 3, 3, 0);

	/* Transitions that cannot happen. */
	r = rec_done(REC_CONFIRM, &x);
	CHECK_EQ_INT(book_replay(f.b, &r), 0);
	r = rec_done(REC_CONFIRM, &x);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	r = rec_done(REC_RELEASE, &x);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	r = rec_done(REC_TIMEOUT, &x);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	r = rec_done(REC_RELEASE, &y);
	CHECK_EQ_INT(book_replay(f.b, &r), 0);
	r = rec_done(REC_CONFIRM, &y);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	r = rec_done(REC_CONFIRM, &z);
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	/* A type the book does not know. */
	r = rec_done(REC_TIMEOUT, &x);
	r.type = 9;
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);
	r.type = 0;
	CHECK_EQ_INT(book_replay(f.b, &r), -EBADMSG);

	check_counts(&f, "A", 3, 0, 1);
	check_book(f.b);
	fx_close(&f);
}

/* record_decode: every truncation, a trailing byte, a bad version or type. */
static void test_record_decode_rejects(void)
{
	Record recs[3];
	ResId x = fake_id("A", 7);
	Record back;

	recs[0] = rec_sku_put("A", 5);
	req_str(recs[0].settings.name, &recs[0].settings.name_len, "Name", WIRE_NAME_MAX);
	recs[1] = rec_reserve(&x, "A", "s1", "key", 2);
	recs[2] = rec_done(REC_CONFIRM, &x);
	for (int i = 0; i < 3; i++) {
		Buf b;
		buf_init(&b, 256);
		record_encode(&recs[i], &b);
		CHECK_EQ_INT(record_decode(b.data, b.len, &back), 0);
		check_record_equal(&recs[i], &back);
		for (size_t len = 0; len < b.len; len++)
			CHECK_EQ_INT(record_decode(b.data, len, &back), -EBADMSG);
		buf_put_u8(&b, 0);
		CHECK_EQ_INT(record_decode(b.data, b.len, &back), -EBADMSG);
		b.len--;
		b.data[1] = RECORD_VERSION + 1;
		CHECK_EQ_INT(record_decode(b.data, b.len, &back), -EBADMSG);
		b.data[1] = RECORD_VERSION;
		b.data[0] = 0;
		CHECK_EQ_INT(record_decode(b.data, b.len, &back), -EBADMSG);
		b.data[0] = 6;
		CHECK_EQ_INT(record_decode(b.data, b.len, &back), -EBADMSG);
		buf_free(&b);
	}
}

/* ---- book_load refuses broken snapshots ---------------------------------------------- */

/* The rules record_decode applies to SKU_PUT: a loaded book must only hold
 * settings it could write to the WAL and read back. */
static void check_sku_settings_valid(void *ctx, const WireSku *s)
{
	int *bad = ctx;
	if (!(s->stock >= 0 && s->stock <= WIRE_STOCK_MAX && s->price_cents >= 0 &&
	      s->price_cents <= WIRE_PRICE_MAX && s->per_session_limit >= 0 && s->max_per_order >= 1 &&
	      s->reservation_ttl_s >= 1 && s->reservation_ttl_s <= WIRE_TTL_MAX_S &&
	      wire_name_valid(s->name, s->name_len) && s->reserved >= 0 && s->sold >= 0 &&
	      s->reserved + s->sold <= s->stock)) {
		fprintf(stderr, "loaded sku %s: stock %lld reserved %lld sold %lld price %lld limit %d "
			"max %d ttl %d\n", s->sku, (long long)s->stock, (long long)s->reserved,
			(long long)s->sold, (long long)s->price_cents, s->per_session_limit,
			s->max_per_order, s->reservation_ttl_s);
		(*bad)++;
	}
}

/* A loaded book must go on working: ticks, a price change on every SKU
 * (whose SKU_PUT record the sink decodes back), GETs. */
static void exercise_loaded(Fx *f)
{
	Views v;
	views_collect(f->b, &v);
	f->now = T0 + 10 * 60 * 1000;
	book_tick(f->b, f->now, sink_emit, &f->sink);
	for (size_t i = 0; i < v.n_skus; i++) {
		WireResponse r;
		CHECK_EQ_INT(put_sku(f, v.skus[i].sku, WIRE_SKU_HAS_PRICE, 0,
				     v.skus[i].price_cents ? v.skus[i].price_cents - 1 : 1,
				     0, 0, 0, NULL, &r), WIRE_OK);
		reserve(f, v.skus[i].sku, "after-load", NULL, 1, &r);
	}
	for (size_t i = 0; i < v.n_res; i++)
		res_op(f, WIRE_OP_GET_RESERVATION, &v.res[i].id, v.res[i].session, NULL);
	f->now += 24 * 3600 * 1000LL;
	book_tick(f->b, f->now, sink_emit, &f->sink);
	views_free(&v);
	check_book(f->b);
}

static void test_load_rejects(void)
{
	Fx a, l;
	BookConfig cfg = default_cfg();
	Buf snap;

	/* One SKU: stock 10, reserved 3, sold 2, plus finished reservations. */
	fx_open(&a, &cfg, NULL);
	CHECK_EQ_INT(put_sku(&a, "A", WIRE_SKU_HAS_ALL, 10, 5, 0, 10, 60, "n", NULL), WIRE_CREATED);
	reserve_ok(&a, "A", "s4", NULL, 1);
	a.now += 60 * 1000;
	reserve_ok(&a, "A", "s1", "k1", 3);
	ResId c = reserve_ok(&a, "A", "s2", "k2", 2);
	CHECK_EQ_INT(res_op(&a, WIRE_OP_CONFIRM, &c, "s2", NULL), WIRE_OK);
	ResId d = reserve_ok(&a, "A", "s3", NULL, 1);
	CHECK_EQ_INT(res_op(&a, WIRE_OP_RELEASE, &d, "s3", NULL), WIRE_OK);
	check_counts(&a, "A", 10, 3, 2);
	save(a.b, &snap);

	CHECK_EQ_INT(load_fresh(&l, &cfg, snap.data, snap.len), 0);
	check_books_equal(a.b, l.b);
	fx_close(&l);
	/* Loading into a non-empty book is a programming error (asserted), not tested. */

	/* Every truncation, and a trailing byte. */
	for (size_t len = 0; len < snap.len; len++) {
		int rc = load_fresh(&l, &cfg, snap.data, len);
		CHECK_EQ_INT(rc, -EBADMSG);
		fx_close_loaded(&l, rc);
	}
	buf_put_u8(&snap, 0);
	int rc0 = load_fresh(&l, &cfg, snap.data, snap.len);
	CHECK_EQ_INT(rc0, -EBADMSG);
	fx_close_loaded(&l, rc0);
	snap.len--;

	/* Magic and version. */
	uint8_t *copy = malloc(snap.len);
	REQUIRE(copy != NULL);
	for (size_t i = 0; i < 8; i++) {
		memcpy(copy, snap.data, snap.len);
		copy[i] ^= 0x01;
		int rc = load_fresh(&l, &cfg, copy, snap.len);
		CHECK_EQ_INT(rc, -EBADMSG);
		fx_close_loaded(&l, rc);
	}

	/* The counters: u32 magic, u32 version, i64 last_now, u64 count, str8 "A", then
	 * i64 stock, reserved, sold, price, i32 limit, max, ttl, str8 name. */
	enum { OFF_STOCK = 4 + 4 + 8 + 8 + 1 + 1, OFF_RESERVED = OFF_STOCK + 8, OFF_SOLD = OFF_STOCK + 16,
	       OFF_PRICE = OFF_STOCK + 24, OFF_LIMIT = OFF_STOCK + 32, OFF_MAX = OFF_STOCK + 36,
	       OFF_TTL = OFF_STOCK + 40, OFF_NAME = OFF_STOCK + 44 };
	REQUIRE(snap.data[24] == 1 && snap.data[25] == 'A');
	REQUIRE(get_u64le(snap.data + OFF_STOCK) == 10);
	REQUIRE(get_u64le(snap.data + OFF_RESERVED) == 3);
	REQUIRE(get_u64le(snap.data + OFF_SOLD) == 2);
	REQUIRE(get_u32le(snap.data + OFF_TTL) == 60);
	REQUIRE(snap.data[OFF_NAME] == 1 && snap.data[OFF_NAME + 1] == 'n');
	static const uint8_t masks[] = { 0x01, 0x02, 0x04, 0x10, 0x40, 0x7f, 0x80, 0xff };
	for (int field = 0; field < 3; field++) {
		size_t off = (size_t)(OFF_STOCK + 8 * field);
		for (size_t byte = 0; byte < 8; byte++)
			for (size_t m = 0; m < sizeof(masks); m++) {
				memcpy(copy, snap.data, snap.len);
				copy[off + byte] ^= masks[m];
				int64_t stock = (int64_t)get_u64le(copy + OFF_STOCK);
				int64_t reserved = (int64_t)get_u64le(copy + OFF_RESERVED);
				int64_t sold = (int64_t)get_u64le(copy + OFF_SOLD);
				/* reserved is recomputed from the holds, so any change shows;
				 * stock and sold only when they break a rule. */
				int ok = reserved == 3 && stock >= 0 && stock <= WIRE_STOCK_MAX && sold >= 0 &&
					 sold <= stock - reserved;
				int rc = load_fresh(&l, &cfg, copy, snap.len);
				if (rc != (ok ? 0 : -EBADMSG))
					fprintf(stderr, "counter flip at %zu ^ 0x%02x: stock %lld reserved %lld "
						"sold %lld: load gave %d\n", off + byte, masks[m], (long long)stock,
						(long long)reserved, (long long)sold, rc);
				CHECK_EQ_INT(rc, ok ? 0 : -EBADMSG);
				if (rc == 0) {
					check_book(l.b);
					check_counts(&l, "A", stock, reserved, sold);
				}
				fx_close_loaded(&l, rc);
			}
	}

	/* Settings no record could carry. */
	struct { size_t off; int width; int64_t value; } bad[] = {
		{ OFF_PRICE, 8, -1 }, { OFF_PRICE, 8, WIRE_PRICE_MAX + 1 },
		{ OFF_LIMIT, 4, -1 }, { OFF_MAX, 4, 0 }, { OFF_MAX, 4, -5 },
		{ OFF_TTL, 4, 0 }, { OFF_TTL, 4, -60 }, { OFF_TTL, 4, WIRE_TTL_MAX_S + 1 },
		{ OFF_NAME + 1, 1, 0x07 }, { OFF_NAME + 1, 1, 0x7f },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(copy, snap.data, snap.len);
		if (bad[i].width == 8)
			put_u64le(copy + bad[i].off, (uint64_t)bad[i].value);
		else if (bad[i].width == 4)
			put_u32le(copy + bad[i].off, (uint32_t)bad[i].value);
		else
			copy[bad[i].off] = (uint8_t)bad[i].value;
		int rc = load_fresh(&l, &cfg, copy, snap.len);
		if (rc != -EBADMSG)
			fprintf(stderr, "bad setting #%zu at %zu accepted\n", i, bad[i].off);
		CHECK_EQ_INT(rc, -EBADMSG);
		fx_close_loaded(&l, rc);
	}
	free(copy);
	buf_free(&snap);
	fx_close(&a);
}

/* Every byte of a small multi-SKU snapshot, flipped: never a crash, and what
 * loads is a book that passes its checks, holds only valid settings and keeps
 * working (its records decode). */
static void test_load_flip_sweep(void)
{
	Fx a, l;
	BookConfig cfg = default_cfg();
	Buf snap;

	cfg.retention_ms = 120 * 1000;
	fx_open(&a, &cfg, NULL);
	CHECK_EQ_INT(put_sku(&a, "A", WIRE_SKU_HAS_ALL, 10, 5, 3, 4, 60, "Ay", NULL), WIRE_CREATED);
	make_sku(&a, "B", 6, 0, 10, 30);
	ResId x = reserve_ok(&a, "A", "s1", "k1", 2);
	reserve_ok(&a, "B", "s1", "k2", 3);
	a.now += 10 * 1000;
	CHECK_EQ_INT(res_op(&a, WIRE_OP_CONFIRM, &x, "s1", NULL), WIRE_OK);
	ResId y = reserve_ok(&a, "A", "s2", NULL, 1);
	CHECK_EQ_INT(res_op(&a, WIRE_OP_RELEASE, &y, "s2", NULL), WIRE_OK);
	reserve_ok(&a, "B", "s3", NULL, 1);
	a.now += 25 * 1000;
	reserve_ok(&a, "A", "s3", "k3", 1);
	check_book(a.b);
	save(a.b, &snap);

	uint8_t *copy = malloc(snap.len);
	REQUIRE(copy != NULL);
	static const uint8_t masks[] = { 0x01, 0x80, 0xff };
	unsigned accepted = 0, rejected = 0;
	for (size_t i = 0; i < snap.len; i++)
		for (size_t m = 0; m < sizeof(masks); m++) {
			memcpy(copy, snap.data, snap.len);
			copy[i] ^= masks[m];
			int rc = load_fresh(&l, &cfg, copy, snap.len);
			CHECK(rc == 0 || rc == -EBADMSG);
			if (rc == 0) {
				int badsku = 0;
				accepted++;
				check_book(l.b);
				book_foreach_sku(l.b, check_sku_settings_valid, &badsku);
				if (badsku)
					fprintf(stderr, "flip at %zu ^ 0x%02x loaded an invalid sku\n", i, masks[m]);
				CHECK_EQ_INT(badsku, 0);
				if (!badsku)
					exercise_loaded(&l);
			} else {
				rejected++;
			}
			fx_close_loaded(&l, rc);
		}
	CHECK(rejected > 0 && accepted > 0);
	fprintf(stderr, "test_book: flip sweep over %zu bytes: %u loads accepted, %u rejected\n",
		snap.len, accepted, rejected);
	free(copy);
	buf_free(&snap);
	fx_close(&a);
}

/* A key reused after its first holder was forgotten: replay brings the
 * first holder back next to the live new one; a snapshot taken before the
 * tick that forgets it again must still load (the newer holder keeps the
 * key). */
static Record sk_recs[16];
static int sk_nrec;

static void sk_emit(void *ctx, const Record *r)
{
	(void)ctx;
	REQUIRE(sk_nrec < 16);
	sk_recs[sk_nrec++] = *r;
}

static WireResponse sk_call(Book *b, uint8_t op, const ResId *id, int64_t now)
{
	WireRequest q;
	WireResponse r;

	memset(&q, 0, sizeof(q));
	q.op = op;
	q.quantity = 1;
	wire_set_str(q.sku, &q.sku_len, "X", 1, WIRE_SKU_MAX);
	wire_set_str(q.session, &q.session_len, "s1", 2, WIRE_SESSION_MAX);
	wire_set_str(q.idem_key, &q.idem_key_len, "K", 1, WIRE_IDEM_KEY_MAX);
	q.settings.fields = WIRE_SKU_HAS_STOCK;
	q.settings.stock = 10;
	if (id)
		q.reservation = *id;
	book_execute(b, &q, now, &r, sk_emit, NULL);
	return r;
}

static void test_snapshot_with_resurrected_key_holder(void)
{
	const int64_t t0 = 1796299200000LL;
	BookConfig cfg = { .default_ttl_s = 300, .default_max_per_order = 10, .retention_ms = 60000 };
	Rng rng;
	char why[256];

	rng_init_seeded(&rng, 1);
	sk_nrec = 0;
	IdemIndex *x1 = idem_new();
	Book *b1 = book_new(&cfg, x1, &rng);
	CHECK_EQ_INT(sk_call(b1, WIRE_OP_PUT_SKU, NULL, t0).status, WIRE_CREATED);
	WireResponse r1 = sk_call(b1, WIRE_OP_RESERVE, NULL, t0);
	CHECK_EQ_INT(r1.status, WIRE_CREATED);
	CHECK_EQ_INT(sk_call(b1, WIRE_OP_RELEASE, &r1.u.reservation.id, t0 + 1).status, WIRE_OK);
	book_tick(b1, t0 + 1 + 60000, sk_emit, NULL);       /* R1 forgotten, not logged */
	CHECK_EQ_INT(sk_call(b1, WIRE_OP_RESERVE, NULL, t0 + 70000).status, WIRE_CREATED);

	IdemIndex *x2 = idem_new();
	Book *b2 = book_new(&cfg, x2, &rng);
	for (int i = 0; i < sk_nrec; i++)
		CHECK_EQ_INT(book_replay(b2, &sk_recs[i]), 0);
	CHECK_EQ_INT(book_check_all(b2, why, sizeof(why)), 0);
	Buf snap;
	buf_init(&snap, 0);
	book_save(b2, &snap);
	IdemIndex *x3 = idem_new();
	Book *b3 = book_new(&cfg, x3, &rng);
	CHECK_EQ_INT(book_load(b3, snap.data, snap.len), 0);
	CHECK_EQ_INT(book_check_all(b3, why, sizeof(why)), 0);
	/* The live holder answers the key. */
	CHECK_EQ_INT(sk_call(b3, WIRE_OP_RESERVE, NULL, t0 + 70001).status, WIRE_REPLAYED);
	buf_free(&snap);
	book_free(b1);
	book_free(b2);
	book_free(b3);
	idem_free(x1);
	idem_free(x2);
	idem_free(x3);
}

int main(void)
{
	test_put_sku_create();
	test_put_sku_update();
	test_put_sku_only_if_new();
	test_get_sku();
	test_reserve_created();
	test_reserve_sold_out();
	test_quantity_too_large();
	test_session_limit();
	test_unknown_sku();
	test_idempotency();
	test_shared_idem();
	test_shared_idem_race();
	test_confirm();
	test_release();
	test_wrong_session();
	test_unknown_reservation();
	test_expiry();
	test_expiry_heap();
	test_retention();
	test_replay_and_snapshot_scripted();
	test_replay_and_snapshot_random();
	test_replay_rejects();
	test_record_decode_rejects();
	test_load_rejects();
	test_load_flip_sweep();
	test_snapshot_with_resurrected_key_holder();
	return check_exit();
}
