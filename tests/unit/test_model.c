/* test_model.c — a seeded, randomised simulation of the book against a simple model.
 *
 * DESIGN. TigerBeetle's VOPR idea at unit scale. A reference model written
 * from API.md alone (plain arrays, linear scans, int64 arithmetic) answers the
 * same random requests as one or two Books (two = two shards sharing one
 * IdemIndex), and after every step the test compares the response (status and
 * body), the WAL records emitted, and every SKU; every CHECK_EVERY steps it
 * compares every retained reservation, the stats and book_next_expiry, and runs
 * book_check_all. Every record goes through record_encode into an in-memory
 * log; at random points the test marks the log durable ("sync", remembering a
 * copy of the model), saves snapshots, and "crashes": drops the unsynced tail,
 * rebuilds the books from the latest snapshot plus the durable records, and
 * demands the recovered books equal the model as of the last sync.
 *
 * Rules the model encodes (API.md and book.h):
 *  - a hold is live while now < expires_ms; every request and tick on a shard
 *    first times out that shard's due holds (TIMEOUT record at now);
 *  - RESERVE checks, in order: idempotency (same session and key: same SKU and
 *    quantity -> REPLAYED with the current state, else IDEMPOTENCY_CONFLICT,
 *    across shards), unknown SKU, quantity > max_per_order, available <
 *    quantity (SOLD_OUT if available is 0, else INSUFFICIENT_STOCK), held +
 *    quantity > per_session_limit (held = the session's reserved and confirmed
 *    retained units of that SKU; limit 0 = none);
 *  - CONFIRM / RELEASE / GET with another session are UNKNOWN_RESERVATION;
 *  - PUT_SKU creates only with stock, and refuses stock < reserved + sold;
 *  - finished reservations (confirmed, released, timeout) are forgotten by
 *    book_tick once finished_ms + retention_ms <= now. Forgetting is not
 *    logged, so a recovered book may briefly hold reservations the model had
 *    already forgotten; they must be identical to what was forgotten, and the
 *    tick right after recovery must forget them again.
 *
 * The steps are split into runs of 500..20500 steps, each with its own
 * configuration drawn from the seed: one shard or two, retention of a day or
 * of 0 ms..5 min, 3..40 SKUs (a few never created), 2..160 sessions.
 *
 * Recovery must keep every idempotency key with its newest holder, even
 * when a key was reused on another shard after its first reservation was
 * forgotten (forgetting is not logged; see idem.h, RECOVERY).
 *
 * Environment: RG_SEED (default: time based), RG_MODEL_STEPS (default 2e6; 5e5 under
 * ASan, 5e4 under TSan), RG_MODEL_TRACE=1 (print every
 * request and answer). A failure prints the seed, the run and step, and the
 * last requests. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "common/buf.h"
#include "common/hash.h"
#include "common/resid.h"
#include "common/rng.h"
#include "common/wire.h"
#include "ledger/book.h"
#include "ledger/idem.h"
#include "ledger/record.h"

#define SKU_POOL_MAX 40
#define SESSION_POOL_MAX 160
#define KEY_POOL 8
#define SHARDS_MAX 2
#define CHECK_EVERY 100
#define HISTORY 40
/* About 12 s in a normal build; ASan runs about 5x slower. The simulation is
 * single-threaded, so TSan (10x slower still) has nothing to find here: a
 * short run keeps the build honest, the ASan and plain runs do the work. */
#if defined(__SANITIZE_THREAD__)
#define DEFAULT_STEPS 50000L
#elif defined(__SANITIZE_ADDRESS__)
#define DEFAULT_STEPS 500000L
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DEFAULT_STEPS 50000L
#elif __has_feature(address_sanitizer)
#define DEFAULT_STEPS 500000L
#endif
#endif
#ifndef DEFAULT_STEPS
#define DEFAULT_STEPS 2000000L
#endif

/* ---- the reference model ---- */

typedef struct MSku {
	int exists;
	int64_t stock, reserved, sold, price;
	int32_t limit, mpo, ttl_s;
	uint8_t name_len;
	char name[WIRE_NAME_MAX + 1];
} MSku;

typedef struct MRes {
	ResId id;
	int sku, session, key;     /* pool indices; key -1 = none */
	int32_t qty;
	uint8_t state;             /* WireResState */
	int64_t created, expires, finished;
} MRes;

typedef struct Model {
	MSku sku[SKU_POOL_MAX];
	MRes *res;
	size_t n, cap;
} Model;

/* A record the model expects the book to emit during this step. */
typedef struct ExpRec {
	uint8_t type;
	unsigned shard;
	int optional;              /* a SKU_PUT that changes nothing may be skipped */
	ResId id;
	int64_t at;
	int sku, session, key;
	int32_t qty;
	int64_t expires;
	MSku settings;
} ExpRec;

typedef struct GotRec {
	unsigned shard;
	Record rec;
} GotRec;

static struct {
	/* the whole test */
	uint64_t seed;
	long steps_total, steps_done;
	int run_no;
	long step;                 /* within the run */
	/* this run's configuration */
	Rng rng;                   /* the test's choices */
	Rng book_rng;              /* the books' ids */
	BookConfig cfg;
	unsigned nshards;
	int nskus, nputable;       /* pool size; SKUs >= nputable are never created */
	char sku_name[SKU_POOL_MAX][WIRE_SKU_MAX + 1];
	uint8_t sku_len[SKU_POOL_MAX];
	unsigned sku_shard[SKU_POOL_MAX];
	int nsessions;
	char session[SESSION_POOL_MAX][WIRE_SESSION_MAX + 1];
	uint8_t session_len[SESSION_POOL_MAX];
	char key[KEY_POOL][WIRE_IDEM_KEY_MAX + 1];
	uint8_t key_len[KEY_POOL];
	int64_t now;
	/* model, its copy at the last sync, and every reservation it forgot */
	Model m, synced;
	MRes *archive;
	size_t narchive, archive_cap;
	/* the system under test and its durable story */
	IdemIndex *idem;
	Book *book[SHARDS_MAX];
	unsigned shard_id[SHARDS_MAX];
	Buf log[SHARDS_MAX];
	uint64_t lsn[SHARDS_MAX];
	size_t durable_len[SHARDS_MAX];
	uint64_t durable_lsn[SHARDS_MAX];
	Buf snap[SHARDS_MAX];
	int has_snap[SHARDS_MAX];
	uint64_t snap_lsn[SHARDS_MAX];
	/* records of the current step */
	GotRec *got;
	size_t ngot, got_cap;
	ExpRec *exp;
	size_t nexp, exp_cap;
	/* recent requests, for the failure report */
	char hist[HISTORY][256];
	long hist_count;
	/* coverage */
	uint64_t count[16][40];
	uint64_t n_sync, n_snap, n_crash, n_replayed_recs, n_tick, n_forgot, n_timeout, n_runs;
	uint64_t n_two_shard_runs, n_small_retention_runs, n_resurrected;
	int trace;                 /* RG_MODEL_TRACE: print every request as it happens */
	long steps_run;            /* steps actually simulated */
} g;

static void history(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void history(const char *fmt, ...)
{
	va_list ap;
	char *line = g.hist[g.hist_count % HISTORY];
	int n = snprintf(line, sizeof(g.hist[0]), "run %d step %ld t=%" PRId64 ": ", g.run_no,
			 g.step, g.now);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(g.hist[0]) - (size_t)n, fmt, ap);
	va_end(ap);
	g.hist_count++;
	if (g.trace)
		fprintf(stderr, "%s\n", line);
}

static void diverge(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void diverge(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "\nDIVERGENCE in run %d at step %ld (t=%" PRId64 ", %u shard(s), retention %" PRId64
		" ms): ", g.run_no, g.step, g.now, g.nshards, g.cfg.retention_ms);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nlast requests (oldest first):\n");
	long first = g.hist_count > HISTORY ? g.hist_count - HISTORY : 0;
	for (long i = first; i < g.hist_count; i++)
		fprintf(stderr, "  %s\n", g.hist[i % HISTORY]);
	fprintf(stderr, "FAILED: reproduce with RG_SEED=%" PRIu64 " RG_MODEL_STEPS=%ld\n", g.seed,
		g.steps_total);
	exit(1);
}

static const char *id_text(const ResId *id)
{
	static char buf[4][RESID_TEXT_LEN + 1];
	static int next;
	char *out = buf[next++ % 4];
	resid_format(id, out);
	return out;
}

static int64_t m_available(const MSku *s) { return s->stock - s->reserved - s->sold; }

static int m_finished(uint8_t state) { return state != WIRE_RES_RESERVED; }

static MRes *m_find(Model *m, const ResId *id)
{
	for (size_t i = 0; i < m->n; i++)
		if (resid_equal(&m->res[i].id, id))
			return &m->res[i];
	return NULL;
}

static MRes *m_find_key(Model *m, int session, int key)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->res[i].session == session && m->res[i].key == key)
			return &m->res[i];
	return NULL;
}

static int64_t m_held(const Model *m, int sku, int session)
{
	int64_t held = 0;
	for (size_t i = 0; i < m->n; i++) {
		const MRes *r = &m->res[i];
		if (r->sku == sku && r->session == session &&
		    (r->state == WIRE_RES_RESERVED || r->state == WIRE_RES_CONFIRMED))
			held += r->qty;
	}
	return held;
}

static void model_copy(Model *dst, const Model *src)
{
	memcpy(dst->sku, src->sku, sizeof(src->sku));
	if (dst->cap < src->n) {
		dst->cap = src->n + 64;
		dst->res = realloc(dst->res, dst->cap * sizeof(MRes));
		REQUIRE(dst->res);
	}
	if (src->n)
		memcpy(dst->res, src->res, src->n * sizeof(MRes));
	dst->n = src->n;
}

static void model_free(Model *m)
{
	free(m->res);
	memset(m, 0, sizeof(*m));
}

static ExpRec *expect_record(uint8_t type, unsigned shard)
{
	if (g.nexp == g.exp_cap) {
		g.exp_cap = g.exp_cap ? 2 * g.exp_cap : 64;
		g.exp = realloc(g.exp, g.exp_cap * sizeof(ExpRec));
		REQUIRE(g.exp);
	}
	ExpRec *e = &g.exp[g.nexp++];
	memset(e, 0, sizeof(*e));
	e->type = type;
	e->shard = shard;
	e->at = g.now;
	e->key = -1;
	return e;
}

/* Times out the due holds of one shard; returns how many. */
static size_t model_expire(unsigned shard)
{
	size_t n = 0;
	for (size_t i = 0; i < g.m.n; i++) {
		MRes *r = &g.m.res[i];
		if (g.sku_shard[r->sku] != shard || r->state != WIRE_RES_RESERVED || g.now < r->expires)
			continue;
		r->state = WIRE_RES_TIMEOUT;
		r->finished = g.now;
		g.m.sku[r->sku].reserved -= r->qty;
		expect_record(REC_TIMEOUT, shard)->id = r->id;
		n++;
	}
	g.n_timeout += n;
	return n;
}

/* Forgets one shard's finished reservations past retention (into the archive). */
static void model_forget(unsigned shard)
{
	size_t keep = 0;
	for (size_t i = 0; i < g.m.n; i++) {
		MRes *r = &g.m.res[i];
		if (g.sku_shard[r->sku] == shard && m_finished(r->state) &&
		    r->finished + g.cfg.retention_ms <= g.now) {
			if (g.narchive == g.archive_cap) {
				g.archive_cap = g.archive_cap ? 2 * g.archive_cap : 1024;
				g.archive = realloc(g.archive, g.archive_cap * sizeof(MRes));
				REQUIRE(g.archive);
			}
			g.archive[g.narchive++] = *r;
			g.n_forgot++;
			continue;
		}
		g.m.res[keep++] = *r;
	}
	g.m.n = keep;
}

static MRes *model_add(const ResId *id, int sku, int session, int key, int32_t qty)
{
	if (g.m.n == g.m.cap) {
		g.m.cap = g.m.cap ? 2 * g.m.cap : 256;
		g.m.res = realloc(g.m.res, g.m.cap * sizeof(MRes));
		REQUIRE(g.m.res);
	}
	MRes *r = &g.m.res[g.m.n++];
	memset(r, 0, sizeof(*r));
	r->id = *id;
	r->sku = sku;
	r->session = session;
	r->key = key;
	r->qty = qty;
	r->state = WIRE_RES_RESERVED;
	r->created = g.now;
	r->expires = g.now + (int64_t)g.m.sku[sku].ttl_s * 1000;
	g.m.sku[sku].reserved += qty;
	return r;
}

/* ---- the books and their log ---- */

static void emit(void *ctx, const Record *rec)
{
	unsigned s = *(const unsigned *)ctx;
	Buf *log = &g.log[s];
	size_t at = log->len;

	buf_put_u32(log, 0);
	record_encode(rec, log);
	put_u32le(log->data + at, (uint32_t)(log->len - at - 4));
	g.lsn[s]++;

	/* The payload must decode back to the same record. */
	Record back;
	if (record_decode(log->data + at + 4, log->len - at - 4, &back) != 0)
		diverge("record %s (sku %.*s stock %" PRId64 " price %" PRId64 " limit %d mpo %d ttl %d "
			"name_len %u, qty %d) does not decode", record_type_name(rec->type), rec->sku_len,
			rec->sku, rec->settings.stock, rec->settings.price_cents,
			rec->settings.per_session_limit, rec->settings.max_per_order,
			rec->settings.reservation_ttl_s, rec->settings.name_len, rec->quantity);
	int same = back.type == rec->type && back.at_ms == rec->at_ms;
	if (rec->type != REC_SKU_PUT)
		same = same && resid_equal(&back.id, &rec->id);
	if (rec->type == REC_RESERVE)
		same = same && back.quantity == rec->quantity && back.expires_ms == rec->expires_ms &&
		       back.sku_len == rec->sku_len && !memcmp(back.sku, rec->sku, rec->sku_len) &&
		       back.session_len == rec->session_len &&
		       !memcmp(back.session, rec->session, rec->session_len) &&
		       back.idem_key_len == rec->idem_key_len &&
		       !memcmp(back.idem_key, rec->idem_key, rec->idem_key_len);
	if (rec->type == REC_SKU_PUT)
		same = same && back.settings.stock == rec->settings.stock &&
		       back.settings.price_cents == rec->settings.price_cents &&
		       back.settings.per_session_limit == rec->settings.per_session_limit &&
		       back.settings.max_per_order == rec->settings.max_per_order &&
		       back.settings.reservation_ttl_s == rec->settings.reservation_ttl_s &&
		       back.settings.name_len == rec->settings.name_len &&
		       !memcmp(back.settings.name, rec->settings.name, rec->settings.name_len);
	if (!same)
		diverge("record %s does not survive encode/decode", record_type_name(rec->type));

	if (g.ngot == g.got_cap) {
		g.got_cap = g.got_cap ? 2 * g.got_cap : 64;
		g.got = realloc(g.got, g.got_cap * sizeof(GotRec));
		REQUIRE(g.got);
	}
	g.got[g.ngot].shard = s;
	g.got[g.ngot].rec = *rec;
	g.ngot++;
}

static int sku_index(const char *sku, size_t len)
{
	for (int i = 0; i < g.nskus; i++)
		if (g.sku_len[i] == len && !memcmp(g.sku_name[i], sku, len))
			return i;
	return -1;
}

static int session_index(const char *s, size_t len)
{
	for (int i = 0; i < g.nsessions; i++)
		if (g.session_len[i] == len && !memcmp(g.session[i], s, len))
			return i;
	return -1;
}

static int key_index(const char *k, size_t len)
{
	if (len == 0)
		return -1;
	for (int i = 0; i < KEY_POOL; i++)
		if (g.key_len[i] == len && !memcmp(g.key[i], k, len))
			return i;
	return -2;
}

static int cmp_type_id(uint8_t ta, const ResId *a, uint8_t tb, const ResId *b)
{
	if (ta != tb)
		return ta < tb ? -1 : 1;
	return memcmp(a->b, b->b, RESID_BYTES);
}

static int got_cmp(const void *x, const void *y)
{
	const GotRec *a = x, *b = y;
	return cmp_type_id(a->rec.type, &a->rec.id, b->rec.type, &b->rec.id);
}

static int exp_cmp(const void *x, const void *y)
{
	const ExpRec *a = x, *b = y;
	return cmp_type_id(a->type, &a->id, b->type, &b->id);
}

/* Compares the records emitted during this step with those the model expects. */
static void check_records(void)
{
	int got_put = 0;
	for (size_t i = 0; i < g.ngot; i++)
		got_put |= g.got[i].rec.type == REC_SKU_PUT;
	size_t keep = 0;
	for (size_t i = 0; i < g.nexp; i++)
		if (!(g.exp[i].optional && !got_put))
			g.exp[keep++] = g.exp[i];
	g.nexp = keep;

	if (g.ngot > 1)
		qsort(g.got, g.ngot, sizeof(GotRec), got_cmp);
	if (g.nexp > 1)
		qsort(g.exp, g.nexp, sizeof(ExpRec), exp_cmp);
	if (g.ngot != g.nexp) {
		for (size_t i = 0; i < g.ngot; i++)
			fprintf(stderr, "  got %s %s at %" PRId64 "\n", record_type_name(g.got[i].rec.type),
				id_text(&g.got[i].rec.id), g.got[i].rec.at_ms);
		for (size_t i = 0; i < g.nexp; i++)
			fprintf(stderr, "  expected %s %s at %" PRId64 "\n", record_type_name(g.exp[i].type),
				id_text(&g.exp[i].id), g.exp[i].at);
		diverge("book emitted %zu record(s), model expects %zu", g.ngot, g.nexp);
	}
	for (size_t i = 0; i < g.ngot; i++) {
		const Record *r = &g.got[i].rec;
		const ExpRec *e = &g.exp[i];
		const char *what = record_type_name(e->type);
		if (r->type != e->type || g.got[i].shard != e->shard)
			diverge("record type/shard: got %s on shard %u, expected %s on shard %u",
				record_type_name(r->type), g.got[i].shard, what, e->shard);
		if (r->at_ms != e->at)
			diverge("%s record at_ms %" PRId64 ", expected %" PRId64, what, r->at_ms, e->at);
		if (e->type != REC_SKU_PUT && !resid_equal(&r->id, &e->id))
			diverge("%s record id %s, expected %s", what, id_text(&r->id), id_text(&e->id));
		if (e->type == REC_RESERVE) {
			if (sku_index(r->sku, r->sku_len) != e->sku ||
			    session_index(r->session, r->session_len) != e->session ||
			    key_index(r->idem_key, r->idem_key_len) != e->key ||
			    r->quantity != e->qty || r->expires_ms != e->expires)
				diverge("RESERVE record fields differ (sku %.*s qty %d expires %" PRId64
					", expected qty %d expires %" PRId64 ")", r->sku_len, r->sku,
					r->quantity, r->expires_ms, e->qty, e->expires);
		}
		if (e->type == REC_SKU_PUT) {
			const WireSkuSettings *s = &r->settings;
			const MSku *m = &e->settings;
			if (sku_index(r->sku, r->sku_len) != e->sku || s->stock != m->stock ||
			    s->price_cents != m->price || s->per_session_limit != m->limit ||
			    s->max_per_order != m->mpo || s->reservation_ttl_s != m->ttl_s ||
			    s->name_len != m->name_len || memcmp(s->name, m->name, m->name_len))
				diverge("SKU_PUT record settings differ for %.*s", r->sku_len, r->sku);
		}
	}
	g.ngot = 0;
	g.nexp = 0;
}

/* ---- comparing book state with the model ---- */

static void compare_sku(const WireSku *w, int i, const char *where)
{
	const MSku *m = &g.m.sku[i];
	if (w->sku_len != g.sku_len[i] || memcmp(w->sku, g.sku_name[i], w->sku_len))
		diverge("%s: SKU name %.*s, expected %s", where, w->sku_len, w->sku, g.sku_name[i]);
	if (w->stock != m->stock || w->reserved != m->reserved || w->sold != m->sold)
		diverge("%s: SKU %s stock/reserved/sold %" PRId64 "/%" PRId64 "/%" PRId64
			", model %" PRId64 "/%" PRId64 "/%" PRId64, where, g.sku_name[i], w->stock,
			w->reserved, w->sold, m->stock, m->reserved, m->sold);
	if (w->price_cents != m->price || w->per_session_limit != m->limit ||
	    w->max_per_order != m->mpo || w->reservation_ttl_s != m->ttl_s)
		diverge("%s: SKU %s settings price/limit/mpo/ttl %" PRId64 "/%d/%d/%d, model %" PRId64
			"/%d/%d/%d", where, g.sku_name[i], w->price_cents, w->per_session_limit,
			w->max_per_order, w->reservation_ttl_s, m->price, m->limit, m->mpo, m->ttl_s);
	if (w->name_len != m->name_len || memcmp(w->name, m->name, m->name_len))
		diverge("%s: SKU %s name differs", where, g.sku_name[i]);
}

static void compare_res(const WireReservation *w, const MRes *r, const char *where)
{
	if (!resid_equal(&w->id, &r->id))
		diverge("%s: reservation id %s, expected %s", where, id_text(&w->id), id_text(&r->id));
	if (w->sku_len != g.sku_len[r->sku] || memcmp(w->sku, g.sku_name[r->sku], w->sku_len) ||
	    w->session_len != g.session_len[r->session] ||
	    memcmp(w->session, g.session[r->session], w->session_len))
		diverge("%s: reservation %s sku/session %.*s/%.*s, expected %s/%s", where,
			id_text(&r->id), w->sku_len, w->sku, w->session_len, w->session,
			g.sku_name[r->sku], g.session[r->session]);
	if (w->quantity != r->qty || w->state != r->state)
		diverge("%s: reservation %s qty %d state %s, expected qty %d state %s", where,
			id_text(&r->id), w->quantity, wire_res_state_name(w->state), r->qty,
			wire_res_state_name(r->state));
	if (w->created_ms != r->created || w->expires_ms != r->expires)
		diverge("%s: reservation %s created/expires %" PRId64 "/%" PRId64 ", expected %" PRId64
			"/%" PRId64, where, id_text(&r->id), w->created_ms, w->expires_ms, r->created,
			r->expires);
	int64_t avail = m_available(&g.m.sku[r->sku]);
	if (w->available != avail)
		diverge("%s: reservation %s available %" PRId64 ", expected %" PRId64, where,
			id_text(&r->id), w->available, avail);
}

typedef struct SkuList {
	WireSku item[SKU_POOL_MAX + 4];
	size_t n;
	int overflow;
} SkuList;

static void collect_sku(void *ctx, const WireSku *sku)
{
	SkuList *l = ctx;
	if (l->n == sizeof(l->item) / sizeof(l->item[0])) {
		l->overflow = 1;
		return;
	}
	l->item[l->n++] = *sku;
}

/* Every SKU of every shard against the model, plus the API invariant. */
static void compare_skus(const char *where)
{
	static SkuList list;
	for (unsigned s = 0; s < g.nshards; s++) {
		list.n = 0;
		list.overflow = 0;
		book_foreach_sku(g.book[s], collect_sku, &list);
		if (list.overflow)
			diverge("%s: shard %u lists too many SKUs", where, s);
		size_t expected = 0;
		for (int i = 0; i < g.nskus; i++)
			expected += g.m.sku[i].exists && g.sku_shard[i] == s;
		if (list.n != expected)
			diverge("%s: shard %u has %zu SKUs, model %zu", where, s, list.n, expected);
		for (size_t k = 0; k < list.n; k++) {
			const WireSku *w = &list.item[k];
			if (!(w->reserved >= 0 && w->sold >= 0 && w->reserved + w->sold <= w->stock))
				diverge("%s: invariant broken for %.*s: reserved %" PRId64 " sold %" PRId64
					" stock %" PRId64, where, w->sku_len, w->sku, w->reserved, w->sold,
					w->stock);
			int i = sku_index(w->sku, w->sku_len);
			if (i < 0 || !g.m.sku[i].exists || g.sku_shard[i] != s)
				diverge("%s: shard %u lists SKU %.*s the model does not have there", where, s,
					w->sku_len, w->sku);
			compare_sku(w, i, where);
		}
	}
}

typedef struct ResList {
	WireReservation *item;
	size_t n, cap;
} ResList;

static void collect_res(void *ctx, const WireReservation *res)
{
	ResList *l = ctx;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 256;
		l->item = realloc(l->item, l->cap * sizeof(WireReservation));
		REQUIRE(l->item);
	}
	l->item[l->n++] = *res;
}

static int wres_cmp(const void *x, const void *y)
{
	const WireReservation *a = x, *b = y;
	return memcmp(a->id.b, b->id.b, RESID_BYTES);
}

static int mres_cmp(const void *x, const void *y)
{
	const MRes *a = *(const MRes *const *)x, *b = *(const MRes *const *)y;
	return memcmp(a->id.b, b->id.b, RESID_BYTES);
}

static const MRes *archive_find(const ResId *id)
{
	for (size_t i = g.narchive; i-- > 0;)
		if (resid_equal(&g.archive[i].id, id))
			return &g.archive[i];
	return NULL;
}

/* Every retained reservation with a key owns that key's entry in the shared
 * index (the index cannot be listed, so stale extra entries show up as
 * wrong REPLAYED / IDEMPOTENCY_CONFLICT answers instead). */
static void compare_idem(const char *where)
{
	for (size_t i = 0; i < g.m.n; i++) {
		MRes *r = &g.m.res[i];
		if (r->key < 0)
			continue;
		IdemSlot slot;
		idem_lock(g.idem, g.session[r->session], g.session_len[r->session], g.key[r->key],
			  g.key_len[r->key], &slot);
		const IdemEntry *e = idem_find(&slot, g.session[r->session], g.session_len[r->session],
					       g.key[r->key], g.key_len[r->key]);
		int ok = e && resid_equal(&e->reservation, &r->id) && e->quantity == r->qty &&
			 e->sku_len == g.sku_len[r->sku] &&
			 !memcmp(idem_entry_sku(e), g.sku_name[r->sku], e->sku_len);
		idem_unlock(&slot);
		if (!ok)
			diverge("%s: idempotency key (%s, %s) of reservation %s (%s, shard %u) %s", where,
				g.session[r->session], g.key[r->key], id_text(&r->id),
				wire_res_state_name(r->state), g.sku_shard[r->sku],
				e ? "points elsewhere" : "is missing from the index");
	}
}

/* Everything: SKUs, every retained reservation, stats, next expiry, the
 * idempotency index and the book's own audit. tolerant 1 (right after replay):
 * the book may also retain reservations the model forgot (forgetting is not
 * logged); each must be finished and equal to the archived one, and keys are
 * not compared yet. tolerant 2 (after the recovery tick): exact. */
static void full_check(const char *where, int tolerant)
{
	static ResList list;
	static const MRes **mine;
	static size_t mine_cap;

	compare_skus(where);
	if (mine_cap < g.m.n + 1) {
		mine_cap = g.m.n + 1024;
		mine = realloc(mine, mine_cap * sizeof(*mine));
		REQUIRE(mine);
	}
	for (unsigned s = 0; s < g.nshards; s++) {
		char why[256] = "";
		int rc = book_check_all(g.book[s], why, sizeof(why));
		CHECK_EQ_INT(rc, 0);
		if (rc != 0)
			diverge("%s: book_check_all on shard %u: %s", where, s, why);

		list.n = 0;
		book_foreach_reservation(g.book[s], collect_res, &list);
		if (list.n > 1)
			qsort(list.item, list.n, sizeof(WireReservation), wres_cmp);
		size_t n = 0, holds = 0;
		int64_t next = INT64_MAX;
		for (size_t i = 0; i < g.m.n; i++) {
			const MRes *r = &g.m.res[i];
			if (g.sku_shard[r->sku] != s)
				continue;
			mine[n++] = r;
			if (r->state == WIRE_RES_RESERVED) {
				holds++;
				if (r->expires < next)
					next = r->expires;
			}
		}
		if (n > 1)
			qsort(mine, n, sizeof(*mine), mres_cmp);
		size_t a = 0, b = 0, extra = 0;
		while (a < list.n || b < n) {
			int c = a == list.n ? 1 : b == n ? -1 : memcmp(list.item[a].id.b, mine[b]->id.b,
									  RESID_BYTES);
			if (c == 0) {
				compare_res(&list.item[a], mine[b], where);
				a++, b++;
			} else if (c > 0) {
				diverge("%s: shard %u lost reservation %s (%s, %s)", where, s,
					id_text(&mine[b]->id), g.sku_name[mine[b]->sku],
					wire_res_state_name(mine[b]->state));
			} else {
				const MRes *old = tolerant == 1 ? archive_find(&list.item[a].id) : NULL;
				if (!old)
					diverge("%s: shard %u has reservation %s (%.*s, %s) the model does not",
						where, s, id_text(&list.item[a].id), list.item[a].sku_len,
						list.item[a].sku, wire_res_state_name(list.item[a].state));
				const WireReservation *w = &list.item[a];
				if (!m_finished(old->state) || w->state != old->state || w->quantity != old->qty ||
				    w->created_ms != old->created || w->expires_ms != old->expires ||
				    sku_index(w->sku, w->sku_len) != old->sku ||
				    session_index(w->session, w->session_len) != old->session)
					diverge("%s: shard %u resurrected reservation %s differs from the forgotten one",
						where, s, id_text(&w->id));
				extra++;
				a++;
			}
		}
		g.n_resurrected += extra;
		const BookStats *st = book_stats(g.book[s]);
		size_t skus = 0;
		for (int i = 0; i < g.nskus; i++)
			skus += g.m.sku[i].exists && g.sku_shard[i] == s;
		if (st->skus != skus || st->holds_active != holds ||
		    st->reservations_retained != n + extra)
			diverge("%s: shard %u stats skus/holds/retained %" PRIu64 "/%" PRIu64 "/%" PRIu64
				", model %zu/%zu/%zu", where, s, st->skus, st->holds_active,
				st->reservations_retained, skus, holds, n + extra);
		if (book_next_expiry(g.book[s]) != next)
			diverge("%s: shard %u next expiry %" PRId64 ", model %" PRId64, where, s,
				book_next_expiry(g.book[s]), next);
	}
	if (tolerant != 1)
		compare_idem(where);
}

/* ---- requests ---- */

static unsigned sku_route_shard(const char *sku, size_t len)
{
	return hash_shard(hash_route(sku, len), g.nshards);
}

static unsigned id_shard(const ResId *id)
{
	return hash_shard(resid_route(id), g.nshards);
}

static void execute(unsigned shard, WireRequest *req, WireResponse *resp)
{
	static uint64_t next_id = 1;
	req->id = next_id++;
	memset(resp, 0xa5, sizeof(*resp));
	book_execute(g.book[shard], req, g.now, resp, emit, &g.shard_id[shard]);
	if (resp->id != req->id || resp->op != req->op)
		diverge("response id/op %" PRIu64 "/%u, request %" PRIu64 "/%u", resp->id, resp->op,
			req->id, req->op);
	if (req->op < 16 && resp->status < 40)
		g.count[req->op][resp->status]++;
	if (g.trace)
		fprintf(stderr, "    -> %s %s\n", wire_status_name(resp->status),
			wire_response_body(resp->op, resp->status) == WIRE_BODY_RESERVATION
			? id_text(&resp->u.reservation.id) : "");
}

static void expect_status(const WireResponse *resp, uint8_t want, const char *what)
{
	if (resp->status != want)
		diverge("%s: book says %s, model says %s", what, wire_status_name(resp->status),
			wire_status_name(want));
}

/* A quantity the wire accepts (1..INT32_MAX), sometimes above max_per_order. */
static int64_t pick_qty(int32_t mpo)
{
	uint64_t r = rng_below(&g.rng, 100);
	int32_t small = mpo < 5 ? mpo : 5;
	int64_t q;
	if (r < 70)
		q = 1 + (int64_t)rng_below(&g.rng, (uint64_t)small);
	else if (r < 90)
		q = 1 + (int64_t)rng_below(&g.rng, (uint64_t)mpo);
	else if (r < 99)
		q = (int64_t)mpo + 1 + (int64_t)rng_below(&g.rng, 3);
	else
		q = INT32_MAX - (int64_t)rng_below(&g.rng, 3);
	return q > INT32_MAX ? INT32_MAX : q;
}

static int pick_existing_sku(void)
{
	int live[SKU_POOL_MAX], n = 0;
	for (int i = 0; i < g.nskus; i++)
		if (g.m.sku[i].exists)
			live[n++] = i;
	if (n == 0 || rng_below(&g.rng, 10) == 0)
		return (int)rng_below(&g.rng, (uint64_t)g.nskus);
	return live[rng_below(&g.rng, (uint64_t)n)];
}

static int pick_session(void)
{
	/* A few hot sessions so per-session limits bite. */
	if (rng_below(&g.rng, 3) == 0)
		return (int)rng_below(&g.rng, g.nsessions < 4 ? (uint64_t)g.nsessions : 4);
	return (int)rng_below(&g.rng, (uint64_t)g.nsessions);
}

static void op_reserve(void)
{
	int sku, session, key;
	int64_t qty;

	MRes *old = NULL;
	if (g.m.n && rng_below(&g.rng, 100) < 15) {
		/* Resend an earlier keyed request, as is or altered. */
		for (int tries = 0; tries < 4 && !old; tries++) {
			MRes *r = &g.m.res[rng_below(&g.rng, g.m.n)];
			if (r->key >= 0)
				old = r;
		}
	}
	if (old) {
		sku = old->sku;
		session = old->session;
		key = old->key;
		qty = old->qty;
		uint64_t r = rng_below(&g.rng, 10);
		if (r >= 6 && r < 8)
			qty = qty == INT32_MAX || (qty > 1 && rng_below(&g.rng, 2)) ? qty - 1 : qty + 1;
		else if (r >= 8)
			sku = pick_existing_sku();
	} else {
		sku = pick_existing_sku();
		session = pick_session();
		key = rng_below(&g.rng, 100) < 40 ? (int)rng_below(&g.rng, KEY_POOL) : -1;
		qty = pick_qty(g.m.sku[sku].exists ? g.m.sku[sku].mpo : 10);
	}

	unsigned shard = g.sku_shard[sku];
	history("RESERVE sku=%s session=%s key=%s qty=%" PRId64 " (shard %u)", g.sku_name[sku],
		g.session[session], key >= 0 ? g.key[key] : "-", qty, shard);
	model_expire(shard);

	/* The model decides. */
	MSku *s = &g.m.sku[sku];
	uint8_t want;
	MRes *hit = key >= 0 ? m_find_key(&g.m, session, key) : NULL;
	int64_t held = 0;
	if (hit)
		want = hit->sku == sku && hit->qty == qty ? WIRE_REPLAYED : WIRE_IDEMPOTENCY_CONFLICT;
	else if (!s->exists)
		want = WIRE_UNKNOWN_SKU;
	else if (qty > s->mpo)
		want = WIRE_QUANTITY_TOO_LARGE;
	else if (m_available(s) < qty)
		want = m_available(s) == 0 ? WIRE_SOLD_OUT : WIRE_INSUFFICIENT_STOCK;
	else if (s->limit > 0 && (held = m_held(&g.m, sku, session)) + qty > s->limit)
		want = WIRE_LIMIT_EXCEEDED;
	else
		want = WIRE_CREATED;

	WireRequest req;
	WireResponse resp;
	memset(&req, 0, sizeof(req));
	req.op = WIRE_OP_RESERVE;
	wire_set_str(req.sku, &req.sku_len, g.sku_name[sku], g.sku_len[sku], WIRE_SKU_MAX);
	wire_set_str(req.session, &req.session_len, g.session[session], g.session_len[session],
		     WIRE_SESSION_MAX);
	if (key >= 0)
		wire_set_str(req.idem_key, &req.idem_key_len, g.key[key], g.key_len[key],
			     WIRE_IDEM_KEY_MAX);
	req.quantity = (int32_t)qty;
	execute(shard, &req, &resp);
	if (resp.status != want && key >= 0) {
		/* Say what the shared index holds for this key: the usual culprit. */
		IdemSlot slot;
		idem_lock(g.idem, g.session[session], g.session_len[session], g.key[key],
			  g.key_len[key], &slot);
		const IdemEntry *e = idem_find(&slot, g.session[session], g.session_len[session],
					       g.key[key], g.key_len[key]);
		if (e) {
			const MRes *in_model = m_find(&g.m, &e->reservation);
			const MRes *archived = archive_find(&e->reservation);
			fprintf(stderr, "index: key held by %s (sku %.*s qty %d); model: %s\n",
				id_text(&e->reservation), e->sku_len, idem_entry_sku(e), e->quantity,
				in_model ? (in_model->key < 0 ? "retained, keyless" : "retained")
				: archived ? "forgotten" : "never seen");
		} else {
			fprintf(stderr, "index: no entry for this key\n");
		}
		idem_unlock(&slot);
	}
	expect_status(&resp, want, "RESERVE");

	const char *what = "RESERVE response";
	switch (want) {
	case WIRE_CREATED: {
		const ResId *id = &resp.u.reservation.id;
		if (resid_route(id) != hash_route(g.sku_name[sku], g.sku_len[sku]))
			diverge("new id %s does not carry its SKU's route", id_text(id));
		if (m_find(&g.m, id) || archive_find(id))
			diverge("new id %s was used before", id_text(id));
		MRes *r = model_add(id, sku, session, key, (int32_t)qty);
		ExpRec *e = expect_record(REC_RESERVE, shard);
		e->id = *id;
		e->sku = sku;
		e->session = session;
		e->key = key;
		e->qty = (int32_t)qty;
		e->expires = r->expires;
		compare_res(&resp.u.reservation, r, what);
		break;
	}
	case WIRE_REPLAYED:
		compare_res(&resp.u.reservation, hit, what);
		break;
	case WIRE_SOLD_OUT:
	case WIRE_INSUFFICIENT_STOCK:
		if (resp.u.available != m_available(s))
			diverge("%s: available %" PRId64 ", model %" PRId64, what, resp.u.available,
				m_available(s));
		break;
	case WIRE_QUANTITY_TOO_LARGE:
		if (resp.u.limit.limit != s->mpo || resp.u.limit.held != 0)
			diverge("%s: too large limit/held %d/%" PRId64 ", model %d/0", what,
				resp.u.limit.limit, resp.u.limit.held, s->mpo);
		break;
	case WIRE_LIMIT_EXCEEDED:
		if (resp.u.limit.limit != s->limit || resp.u.limit.held != held)
			diverge("%s: limit/held %d/%" PRId64 ", model %d/%" PRId64, what,
				resp.u.limit.limit, resp.u.limit.held, s->limit, held);
		break;
	}
}

/* An id to act on: mostly retained ones (preferring live holds), sometimes
 * forgotten, made up, or a real one with a bit flipped. */
static void pick_id(ResId *id, int *owner_session)
{
	uint64_t r = rng_below(&g.rng, 100);
	*owner_session = -1;
	if (g.m.n && r < 75) {
		MRes *pick = &g.m.res[rng_below(&g.rng, g.m.n)];
		for (int tries = 0; tries < 3 && pick->state != WIRE_RES_RESERVED; tries++)
			pick = &g.m.res[rng_below(&g.rng, g.m.n)];
		*id = pick->id;
		*owner_session = pick->session;
		return;
	}
	if (g.narchive && r < 85) {
		const MRes *a = &g.archive[g.narchive - 1 - rng_below(&g.rng, g.narchive < 50 ? g.narchive : 50)];
		*id = a->id;
		*owner_session = a->session;
		return;
	}
	if (g.m.n && r < 92) {
		MRes *pick = &g.m.res[rng_below(&g.rng, g.m.n)];
		*id = pick->id;
		id->b[4 + rng_below(&g.rng, 12)] ^= (uint8_t)(1u << rng_below(&g.rng, 8));
		*owner_session = pick->session;
		return;
	}
	uint8_t random[12];
	rng_fill(&g.rng, random, sizeof(random));
	int sku = (int)rng_below(&g.rng, (uint64_t)g.nskus);
	resid_make(id, rng_below(&g.rng, 2) ? hash_route(g.sku_name[sku], g.sku_len[sku])
					    : (uint32_t)rng_u64(&g.rng), random);
}

static void op_on_reservation(uint8_t op)
{
	ResId id;
	int owner;
	pick_id(&id, &owner);
	int session = owner >= 0 && rng_below(&g.rng, 100) < 85 ? owner : pick_session();
	unsigned shard = id_shard(&id);
	history("%s %s session=%s (shard %u)", wire_op_name(op), id_text(&id), g.session[session],
		shard);
	model_expire(shard);

	MRes *r = m_find(&g.m, &id);
	if (r && r->session != session)
		r = NULL;
	uint8_t want = WIRE_UNKNOWN_RESERVATION;
	if (r && op == WIRE_OP_GET_RESERVATION) {
		want = WIRE_OK;
	} else if (r && op == WIRE_OP_CONFIRM) {
		switch (r->state) {
		case WIRE_RES_RESERVED:
			r->state = WIRE_RES_CONFIRMED;
			r->finished = g.now;
			g.m.sku[r->sku].reserved -= r->qty;
			g.m.sku[r->sku].sold += r->qty;
			expect_record(REC_CONFIRM, shard)->id = r->id;
			want = WIRE_OK;
			break;
		case WIRE_RES_CONFIRMED: want = WIRE_OK; break;
		case WIRE_RES_RELEASED: want = WIRE_RESERVATION_RELEASED; break;
		case WIRE_RES_TIMEOUT: want = WIRE_RESERVATION_EXPIRED; break;
		}
	} else if (r && op == WIRE_OP_RELEASE) {
		switch (r->state) {
		case WIRE_RES_RESERVED:
			r->state = WIRE_RES_RELEASED;
			r->finished = g.now;
			g.m.sku[r->sku].reserved -= r->qty;
			expect_record(REC_RELEASE, shard)->id = r->id;
			want = WIRE_OK;
			break;
		case WIRE_RES_RELEASED: want = WIRE_OK; break;
		case WIRE_RES_CONFIRMED: want = WIRE_ALREADY_CONFIRMED; break;
		case WIRE_RES_TIMEOUT: want = WIRE_RESERVATION_EXPIRED; break;
		}
	}

	WireRequest req;
	WireResponse resp;
	memset(&req, 0, sizeof(req));
	req.op = op;
	req.reservation = id;
	wire_set_str(req.session, &req.session_len, g.session[session], g.session_len[session],
		     WIRE_SESSION_MAX);
	execute(shard, &req, &resp);
	expect_status(&resp, want, wire_op_name(op));
	if (want != WIRE_UNKNOWN_RESERVATION)
		compare_res(&resp.u.reservation, r, wire_op_name(op));
}

static void op_get_sku(void)
{
	int sku = pick_existing_sku();
	unsigned shard = g.sku_shard[sku];
	history("GET_SKU %s (shard %u)", g.sku_name[sku], shard);
	model_expire(shard);

	WireRequest req;
	WireResponse resp;
	memset(&req, 0, sizeof(req));
	req.op = WIRE_OP_GET_SKU;
	wire_set_str(req.sku, &req.sku_len, g.sku_name[sku], g.sku_len[sku], WIRE_SKU_MAX);
	execute(shard, &req, &resp);
	expect_status(&resp, g.m.sku[sku].exists ? WIRE_OK : WIRE_UNKNOWN_SKU, "GET_SKU");
	if (g.m.sku[sku].exists)
		compare_sku(&resp.u.sku, sku, "GET_SKU response");
}

static const char *const names[] = {
	"", "Widget", "Red shoe, size 42", "Caf\xc3\xa9 cr\xc3\xa8me", "{\"json\": \"like\"}",
	"x", "Limited edition \xe2\x80\x94 only today",
};

static void op_put_sku(void)
{
	int sku;
	int creating = 0;
	for (int i = 0; i < g.nputable && !creating; i++)
		creating = !g.m.sku[i].exists;
	/* New SKUs come early and now and then; a ghost SKU is never created. */
	if (creating && rng_below(&g.rng, 3)) {
		do
			sku = (int)rng_below(&g.rng, (uint64_t)g.nputable);
		while (g.m.sku[sku].exists);
	} else {
		sku = (int)rng_below(&g.rng, (uint64_t)g.nputable);
	}
	unsigned shard = g.sku_shard[sku];
	model_expire(shard);
	MSku *s = &g.m.sku[sku];

	WireSkuSettings set;
	memset(&set, 0, sizeof(set));
	uint8_t fields = (uint8_t)rng_below(&g.rng, WIRE_SKU_HAS_ALL + 1);
	if (rng_below(&g.rng, 100) < (s->exists ? 60 : 85))
		fields |= WIRE_SKU_HAS_STOCK;
	else if (s->exists && rng_below(&g.rng, 4) == 0)
		fields = 0;
	set.fields = fields;
	int64_t committed = s->exists ? s->reserved + s->sold : 0;
	int huge = rng_below(&g.rng, 200) == 0;
	uint64_t r = rng_below(&g.rng, 100);
	if (huge)
		set.stock = WIRE_STOCK_MAX - (int64_t)rng_below(&g.rng, 3);
	else if (r < 50)
		set.stock = committed + (int64_t)rng_below(&g.rng, 16);
	else if (r < 70)
		set.stock = (int64_t)rng_below(&g.rng, (uint64_t)committed + 1);
	else
		set.stock = (int64_t)rng_below(&g.rng, 31);
	if (set.stock > WIRE_STOCK_MAX) /* what the wire lets through */
		set.stock = WIRE_STOCK_MAX;
	set.price_cents = rng_below(&g.rng, 50) ? (int64_t)rng_below(&g.rng, 100000) : WIRE_PRICE_MAX;
	set.per_session_limit = rng_below(&g.rng, 10) < 4 ? 0 : 1 + (int32_t)rng_below(&g.rng, 12);
	set.max_per_order = huge ? INT32_MAX : rng_below(&g.rng, 50) ? 1 + (int32_t)rng_below(&g.rng, 10) : 1000;
	r = rng_below(&g.rng, 100);
	set.reservation_ttl_s = r < 30 ? 1 + (int32_t)rng_below(&g.rng, 3)
			      : r < 95 ? 1 + (int32_t)rng_below(&g.rng, 60)
				       : 1 + (int32_t)rng_below(&g.rng, WIRE_TTL_MAX_S);
	if (rng_below(&g.rng, 30) == 0) {
		memset(set.name, 'N', WIRE_NAME_MAX);
		set.name_len = WIRE_NAME_MAX;
	} else {
		const char *n = names[rng_below(&g.rng, sizeof(names) / sizeof(names[0]))];
		wire_set_str(set.name, &set.name_len, n, strlen(n), WIRE_NAME_MAX);
	}

	history("PUT_SKU %s fields=0x%x stock=%" PRId64 " limit=%d mpo=%d ttl=%d (shard %u, %s)",
		g.sku_name[sku], fields, set.stock, set.per_session_limit, set.max_per_order,
		set.reservation_ttl_s, shard, s->exists ? "update" : "create");

	uint8_t want;
	MSku before = *s;
	if (!s->exists && !(fields & WIRE_SKU_HAS_STOCK)) {
		want = WIRE_MISSING_STOCK;
	} else if (s->exists && (fields & WIRE_SKU_HAS_STOCK) && set.stock < s->reserved + s->sold) {
		want = WIRE_STOCK_BELOW_COMMITTED;
	} else {
		want = s->exists ? WIRE_OK : WIRE_CREATED;
		if (!s->exists) {
			memset(s, 0, sizeof(*s));
			s->exists = 1;
			s->limit = g.cfg.default_per_session_limit;
			s->mpo = g.cfg.default_max_per_order;
			s->ttl_s = g.cfg.default_ttl_s;
		}
		if (fields & WIRE_SKU_HAS_STOCK)
			s->stock = set.stock;
		if (fields & WIRE_SKU_HAS_PRICE)
			s->price = set.price_cents;
		if (fields & WIRE_SKU_HAS_SESSION_LIMIT)
			s->limit = set.per_session_limit;
		if (fields & WIRE_SKU_HAS_MAX_PER_ORDER)
			s->mpo = set.max_per_order;
		if (fields & WIRE_SKU_HAS_TTL)
			s->ttl_s = set.reservation_ttl_s;
		if (fields & WIRE_SKU_HAS_NAME) {
			s->name_len = set.name_len;
			memcpy(s->name, set.name, set.name_len);
			s->name[set.name_len] = '\0';
		}
		ExpRec *e = expect_record(REC_SKU_PUT, shard);
		e->sku = sku;
		e->settings = *s;
		e->optional = want == WIRE_OK && before.stock == s->stock && before.price == s->price &&
			      before.limit == s->limit && before.mpo == s->mpo && before.ttl_s == s->ttl_s &&
			      before.name_len == s->name_len && !memcmp(before.name, s->name, s->name_len);
	}

	WireRequest req;
	WireResponse resp;
	memset(&req, 0, sizeof(req));
	req.op = WIRE_OP_PUT_SKU;
	wire_set_str(req.sku, &req.sku_len, g.sku_name[sku], g.sku_len[sku], WIRE_SKU_MAX);
	req.settings = set;
	execute(shard, &req, &resp);
	expect_status(&resp, want, "PUT_SKU");
	if (want != WIRE_MISSING_STOCK)
		compare_sku(&resp.u.sku, sku, "PUT_SKU response");
}

static void tick_shard(unsigned s)
{
	size_t want = model_expire(s);
	model_forget(s);
	size_t got = book_tick(g.book[s], g.now, emit, &g.shard_id[s]);
	if (got != want)
		diverge("book_tick on shard %u timed out %zu, model %zu", s, got, want);
	g.n_tick++;
}

static void op_tick(void)
{
	int all = rng_below(&g.rng, 2) || g.nshards == 1;
	unsigned only = (unsigned)rng_below(&g.rng, g.nshards);
	history("TICK %s", all ? "all shards" : only ? "shard 1" : "shard 0");
	for (unsigned s = 0; s < g.nshards; s++)
		if (all || s == only)
			tick_shard(s);
}

/* ---- durability: sync, snapshot, crash ---- */

static void do_sync(void)
{
	for (unsigned s = 0; s < g.nshards; s++) {
		g.durable_len[s] = g.log[s].len;
		g.durable_lsn[s] = g.lsn[s];
	}
	model_copy(&g.synced, &g.m);
	g.n_sync++;
}

static void do_snapshot(void)
{
	do_sync();
	int all = rng_below(&g.rng, 2) || g.nshards == 1;
	unsigned only = (unsigned)rng_below(&g.rng, g.nshards);
	history("SNAPSHOT %s", all ? "all shards" : only ? "shard 1" : "shard 0");
	for (unsigned s = 0; s < g.nshards; s++) {
		if (!all && s != only)
			continue;
		buf_reset(&g.snap[s]);
		book_save(g.book[s], &g.snap[s]);
		g.has_snap[s] = 1;
		g.snap_lsn[s] = g.lsn[s];
	}
	g.n_snap++;
}

static void open_books(void)
{
	g.idem = idem_new();
	for (unsigned s = 0; s < g.nshards; s++)
		g.book[s] = book_new(&g.cfg, g.idem, &g.book_rng);
}

static void close_books(void)
{
	for (unsigned s = 0; s < g.nshards; s++) {
		book_free(g.book[s]);
		g.book[s] = NULL;
	}
	idem_free(g.idem);
	g.idem = NULL;
}

static void do_crash(void)
{
	history("CRASH (durable lsn %" PRIu64 "/%" PRIu64 ", snapshot lsn %" PRIu64 "/%" PRIu64 ")",
		g.durable_lsn[0], g.durable_lsn[1], g.snap_lsn[0], g.snap_lsn[1]);
	close_books();
	open_books();
	for (unsigned s = 0; s < g.nshards; s++) {
		g.log[s].len = g.durable_len[s];
		g.lsn[s] = g.durable_lsn[s];
		if (g.has_snap[s]) {
			if (book_load(g.book[s], g.snap[s].data, g.snap[s].len) != 0)
				diverge("book_load of shard %u's snapshot failed", s);
		}
		uint64_t lsn = 0;
		for (size_t pos = 0; pos < g.log[s].len; lsn++) {
			REQUIRE(pos + 4 <= g.log[s].len);
			uint32_t len = get_u32le(g.log[s].data + pos);
			pos += 4;
			REQUIRE(pos + len <= g.log[s].len);
			if (!g.has_snap[s] || lsn >= g.snap_lsn[s]) {
				Record rec;
				if (record_decode(g.log[s].data + pos, len, &rec) != 0)
					diverge("shard %u: durable record %" PRIu64 " does not decode", s, lsn);
				int rc = book_replay(g.book[s], &rec);
				if (rc != 0)
					diverge("shard %u: book_replay of record %" PRIu64 " (%s %s at %" PRId64
						" sku=%s session=%s key=%s qty=%d expires=%" PRId64 ") returned %d",
						s, lsn, record_type_name(rec.type), id_text(&rec.id), rec.at_ms,
						rec.sku, rec.session, rec.idem_key, rec.quantity, rec.expires_ms, rc);
				g.n_replayed_recs++;
			}
			pos += len;
		}
		REQUIRE(lsn == g.lsn[s]);
	}
	model_copy(&g.m, &g.synced);
	g.ngot = 0;
	g.nexp = 0;
	full_check("after recovery", 1);
	for (unsigned s = 0; s < g.nshards; s++)
		tick_shard(s);
	check_records();
	full_check("after recovery and tick", 2);
	g.n_crash++;
}

/* ---- one run ---- */

static void advance_time(void)
{
	uint64_t r = rng_below(&g.rng, 1000);
	if (r < 550)
		return;
	if (r < 850)
		g.now += 1 + (int64_t)rng_below(&g.rng, 1000);
	else if (r < 960)
		g.now += 1000 + (int64_t)rng_below(&g.rng, 10000);
	else if (r < 995)
		g.now += 10000 + (int64_t)rng_below(&g.rng, 110000);
	else
		g.now += (int64_t)rng_below(&g.rng, 3600000);
}

static void make_pools(void)
{
	g.nskus = 3 + (int)rng_below(&g.rng, SKU_POOL_MAX - 2);
	g.nputable = g.nskus - (int)rng_below(&g.rng, 3);
	for (int i = 0; i < g.nskus; i++) {
		switch (i % 4) {
		case 0: snprintf(g.sku_name[i], sizeof(g.sku_name[i]), "sku-%d", i); break;
		case 1: snprintf(g.sku_name[i], sizeof(g.sku_name[i]), "A.b:%d_Z", i); break;
		case 2: snprintf(g.sku_name[i], sizeof(g.sku_name[i]), "%d", i); break;
		default: snprintf(g.sku_name[i], sizeof(g.sku_name[i]), "TSHIRT-%d-XL", i); break;
		}
		if (i == 5) { /* the longest SKU the wire allows */
			memset(g.sku_name[i], 'L', WIRE_SKU_MAX);
			g.sku_name[i][WIRE_SKU_MAX] = '\0';
		}
		g.sku_len[i] = (uint8_t)strlen(g.sku_name[i]);
		g.sku_shard[i] = sku_route_shard(g.sku_name[i], g.sku_len[i]);
	}
	g.nsessions = 2 + (int)rng_below(&g.rng, SESSION_POOL_MAX - 1);
	for (int i = 0; i < g.nsessions; i++) {
		switch (i % 3) {
		case 0: snprintf(g.session[i], sizeof(g.session[i]), "s%d", i); break;
		case 1: snprintf(g.session[i], sizeof(g.session[i]), "sess-%d", i / 3); break;
		default: snprintf(g.session[i], sizeof(g.session[i]), "u:%d!#$%%&'()*+,~{}", i); break;
		}
		if (i == 7) {
			memset(g.session[i], '~', WIRE_SESSION_MAX);
			g.session[i][WIRE_SESSION_MAX] = '\0';
		}
		g.session_len[i] = (uint8_t)strlen(g.session[i]);
	}
	static const char *const keys[KEY_POOL - 1] = {
		"k1", "k2", "k3", "order 42", " ", "s0", "sess-0",
	};
	for (int i = 0; i < KEY_POOL - 1; i++) {
		snprintf(g.key[i], sizeof(g.key[i]), "%s", keys[i]);
		g.key_len[i] = (uint8_t)strlen(g.key[i]);
	}
	memset(g.key[KEY_POOL - 1], 'K', WIRE_IDEM_KEY_MAX);
	g.key[KEY_POOL - 1][WIRE_IDEM_KEY_MAX] = '\0';
	g.key_len[KEY_POOL - 1] = WIRE_IDEM_KEY_MAX;
}

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void run(long steps)
{
	uint64_t run_seed = mix(g.seed ^ mix((uint64_t)g.run_no));
	rng_init_seeded(&g.rng, run_seed);
	rng_init_seeded(&g.book_rng, mix(run_seed));
	g.step = 0;
	g.hist_count = 0;

	g.nshards = rng_below(&g.rng, 10) < 4 ? 2 : 1;
	g.cfg.default_ttl_s = 1 + (int32_t)rng_below(&g.rng, 60);
	g.cfg.default_max_per_order = 1 + (int32_t)rng_below(&g.rng, 10);
	g.cfg.default_per_session_limit = rng_below(&g.rng, 2) ? 0 : 1 + (int32_t)rng_below(&g.rng, 12);
	if (rng_below(&g.rng, 10) < 7) {
		g.cfg.retention_ms = 24LL * 3600 * 1000;
	} else {
		static const int64_t small[] = {0, 1, 500, 2000, 10000, 60000, 300000};
		g.cfg.retention_ms = small[rng_below(&g.rng, sizeof(small) / sizeof(small[0]))];
		g.n_small_retention_runs++;
	}
	g.n_two_shard_runs += g.nshards == 2;
	make_pools();
	g.now = 1767225600000LL + (int64_t)rng_below(&g.rng, 1000000000);

	memset(&g.m, 0, sizeof(g.m));
	memset(&g.synced, 0, sizeof(g.synced));
	g.narchive = 0;
	for (unsigned s = 0; s < SHARDS_MAX; s++) {
		g.shard_id[s] = s;
		buf_init(&g.log[s], 4096);
		buf_init(&g.snap[s], 0);
		g.lsn[s] = g.durable_lsn[s] = g.snap_lsn[s] = 0;
		g.durable_len[s] = 0;
		g.has_snap[s] = 0;
	}
	open_books();
	g.ngot = g.nexp = 0;

	long done = 0;
	for (g.step = 1; g.step <= steps; g.step++) {
		advance_time();
		uint64_t r = rng_below(&g.rng, 1000);
		if (r < 360)
			op_reserve();
		else if (r < 510)
			op_on_reservation(WIRE_OP_CONFIRM);
		else if (r < 610)
			op_on_reservation(WIRE_OP_RELEASE);
		else if (r < 690)
			op_on_reservation(WIRE_OP_GET_RESERVATION);
		else if (r < 740)
			op_get_sku();
		else if (r < 830)
			op_put_sku();
		else if (r < 900)
			op_tick();
		else if (r < 960) {
			history("SYNC");
			do_sync();
		} else if (r < 965)
			do_snapshot();
		else if (r < 969)
			do_crash();
		else
			op_get_sku();
		done++;
		check_records();
		compare_skus("after step");
		if (g.step % CHECK_EVERY == 0)
			full_check("periodic", 0);
	}
	g.steps_run += done;
	full_check("end of run", 0);
	do_crash();

	close_books();
	model_free(&g.m);
	model_free(&g.synced);
	for (unsigned s = 0; s < SHARDS_MAX; s++) {
		buf_free(&g.log[s]);
		buf_free(&g.snap[s]);
	}
	g.n_runs++;
}

int main(void)
{
	const char *env = getenv("RG_SEED");
	if (env && *env) {
		g.seed = strtoull(env, NULL, 0);
	} else {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		g.seed = mix((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) % 1000000000000ULL;
	}
	env = getenv("RG_MODEL_TRACE");
	g.trace = env && *env && strcmp(env, "0") != 0;
	env = getenv("RG_MODEL_STEPS");
	g.steps_total = env && *env ? strtol(env, NULL, 0) : DEFAULT_STEPS;
	if (g.steps_total < 1)
		g.steps_total = 1;
	printf("seed=%" PRIu64 " steps=%ld (reproduce: RG_SEED=%" PRIu64 " RG_MODEL_STEPS=%ld)\n", g.seed,
	       g.steps_total, g.seed, g.steps_total);
	fflush(stdout);

	Rng lengths;
	rng_init_seeded(&lengths, g.seed);
	for (g.run_no = 0; g.steps_done < g.steps_total; g.run_no++) {
		long steps = 500 + (long)rng_below(&lengths, 20000);
		if (steps > g.steps_total - g.steps_done)
			steps = g.steps_total - g.steps_done;
		run(steps);
		g.steps_done += steps;
	}

	printf("%" PRIu64 " runs (%" PRIu64 " with two shards, %" PRIu64 " with short retention), %ld steps\n",
	       g.n_runs, g.n_two_shard_runs, g.n_small_retention_runs, g.steps_run);
	printf("syncs %" PRIu64 ", snapshots %" PRIu64 ", crashes %" PRIu64 ", records replayed %" PRIu64
	       ", ticks %" PRIu64 ", timeouts %" PRIu64 ", forgotten %" PRIu64 ", resurrected then forgotten %" PRIu64 "\n",
	       g.n_sync, g.n_snap, g.n_crash, g.n_replayed_recs, g.n_tick, g.n_timeout, g.n_forgot,
	       g.n_resurrected);
	for (int op = 0; op < 16; op++)
		for (int st = 0; st < 40; st++)
			if (g.count[op][st])
				printf("  %-16s %-24s %" PRIu64 "\n", wire_op_name((uint8_t)op),
				       wire_status_name((uint8_t)st), g.count[op][st]);
	free(g.archive);
	free(g.got);
	free(g.exp);
	return check_exit();
}
