/* book.c — one shard's inventory book (see book.h for the design). */
#include "ledger/book.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/hash.h"
#include "common/htab.h"
#include "common/log.h"
#include "common/xmalloc.h"

#define BOOK_SNAPSHOT_MAGIC 0x4b4f4f42u /* "BOOK" */
#define BOOK_SNAPSHOT_VERSION 1

typedef struct Sku {
	HNode node;                    /* keyed by hash_bytes(id) */
	struct Sku *touched_next;      /* on b->touched while touched */
	char *name;                    /* NULL when empty */
	int64_t stock, reserved, sold; /* available = stock - reserved - sold */
	int64_t price_cents;
	int32_t per_session_limit;     /* 0 = none */
	int32_t max_per_order;
	int32_t ttl_s;
	int64_t check_reserved;        /* scratch for book_check_all */
	uint8_t touched;
	uint8_t id_len;
	char id[WIRE_SKU_MAX + 1];
} Sku;

/* What one session holds of one SKU, for per-session limits. */
typedef struct Holder {
	HNode node;                    /* keyed by holder_hash(sku's hash, session) */
	Sku *sku;
	int64_t held;                  /* units in its reserved + confirmed reservations */
	uint32_t refs;                 /* retained reservations pointing here */
	uint32_t check_refs;           /* scratch for book_check_all */
	int64_t check_held;
	uint8_t session_len;
	char session[];
} Holder;

typedef struct Reservation {
	HNode node;                    /* keyed by 8 random bytes of the id */
	ResId id;
	Sku *sku;
	Holder *holder;                /* owns the session string */
	IdemEntry *idem;               /* NULL without an idempotency key */
	int64_t created_ms, expires_ms, finished_ms;
	int32_t quantity;
	uint8_t state;                 /* WireResState */
	union {
		size_t heap_index;             /* while reserved: place in the expiry heap */
		struct Reservation *done_next; /* once finished: the retention queue */
	} u;
} Reservation;

struct Book {
	BookConfig cfg;
	IdemIndex *idem;
	Rng *rng;
	HTab skus, holders, reservations;
	Reservation **heap;            /* live holds, min-heap on expires_ms */
	size_t heap_len, heap_cap;
	Reservation *done_head, *done_tail; /* finished, oldest first */
	Sku *touched;
	int64_t last_now_ms;
	BookStats stats;
};

/* ---- lookups -------------------------------------------------------------- */

static uint64_t reservation_hash(const ResId *id)
{
	return get_u64le(id->b + 4); /* random bits: already a good hash */
}

static uint64_t holder_hash(uint64_t sku_hash, const char *session, size_t len)
{
	return sku_hash * 31 + hash_bytes(session, len);
}

static Sku *sku_find(const Book *b, const char *id, size_t len)
{
	uint64_t h = hash_bytes(id, len);
	HTAB_FOR_HASH(&b->skus, h, node) {
		Sku *s = (Sku *)node;
		if (s->id_len == len && memcmp(s->id, id, len) == 0)
			return s;
	}
	return NULL;
}

static Reservation *reservation_find(const Book *b, const ResId *id)
{
	uint64_t h = reservation_hash(id);
	HTAB_FOR_HASH(&b->reservations, h, node) {
		Reservation *r = (Reservation *)node;
		if (resid_equal(&r->id, id))
			return r;
	}
	return NULL;
}

static Holder *holder_find_hashed(const Book *b, const Sku *sku, uint64_t h, const char *session,
				  size_t len)
{
	HTAB_FOR_HASH(&b->holders, h, node) {
		Holder *x = (Holder *)node;
		if (x->sku == sku && x->session_len == len && memcmp(x->session, session, len) == 0)
			return x;
	}
	return NULL;
}

static Holder *holder_find(const Book *b, const Sku *sku, const char *session, size_t len)
{
	return holder_find_hashed(b, sku, holder_hash(sku->node.hash, session, len), session, len);
}

static Holder *holder_get(Book *b, Sku *sku, const char *session, size_t len)
{
	uint64_t h = holder_hash(sku->node.hash, session, len);
	Holder *x = holder_find_hashed(b, sku, h, session, len);
	if (x)
		return x;
	x = xmalloc(sizeof(*x) + len);
	x->node.hash = h;
	x->sku = sku;
	x->held = 0;
	x->refs = 0;
	x->session_len = (uint8_t)len;
	memcpy(x->session, session, len);
	htab_insert(&b->holders, &x->node);
	return x;
}

static void holder_unref(Book *b, Holder *x)
{
	rg_assert(x->refs > 0);
	if (--x->refs > 0)
		return;
	rg_assert(x->held == 0);
	htab_remove(&b->holders, &x->node);
	free(x);
}

static void sku_touch(Book *b, Sku *s)
{
	if (s->touched)
		return;
	s->touched = 1;
	s->touched_next = b->touched;
	b->touched = s;
}

/* ---- the expiry heap ------------------------------------------------------ */

static void heap_set(Book *b, size_t i, Reservation *r)
{
	b->heap[i] = r;
	r->u.heap_index = i;
}

static void heap_up(Book *b, size_t i)
{
	Reservation *r = b->heap[i];
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (b->heap[parent]->expires_ms <= r->expires_ms)
			break;
		heap_set(b, i, b->heap[parent]);
		i = parent;
	}
	heap_set(b, i, r);
}

static void heap_down(Book *b, size_t i)
{
	Reservation *r = b->heap[i];
	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= b->heap_len)
			break;
		if (child + 1 < b->heap_len && b->heap[child + 1]->expires_ms < b->heap[child]->expires_ms)
			child++;
		if (b->heap[child]->expires_ms >= r->expires_ms)
			break;
		heap_set(b, i, b->heap[child]);
		i = child;
	}
	heap_set(b, i, r);
}

static void heap_push(Book *b, Reservation *r)
{
	if (b->heap_len == b->heap_cap) {
		b->heap_cap = b->heap_cap ? b->heap_cap * 2 : 1024;
		b->heap = xrealloc(b->heap, b->heap_cap * sizeof(*b->heap));
	}
	b->heap[b->heap_len] = r;
	heap_up(b, b->heap_len++);
}

static void heap_remove(Book *b, Reservation *r)
{
	size_t i = r->u.heap_index;
	rg_assert(i < b->heap_len && b->heap[i] == r);
	Reservation *last = b->heap[--b->heap_len];
	if (last == r)
		return;
	heap_set(b, i, last);
	heap_up(b, i);
	heap_down(b, last->u.heap_index);
}

/* ---- apply: the only code that changes state ------------------------------ */

static void sku_set(Sku *s, const WireSkuSettings *set)
{
	s->stock = set->stock;
	s->price_cents = set->price_cents;
	s->per_session_limit = set->per_session_limit;
	s->max_per_order = set->max_per_order;
	s->ttl_s = set->reservation_ttl_s;
	free(s->name);
	s->name = set->name_len ? xstrndup(set->name, set->name_len) : NULL;
}

static int apply_sku_put(Book *b, const Record *rec)
{
	Sku *s = sku_find(b, rec->sku, rec->sku_len);
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		s->node.hash = hash_bytes(rec->sku, rec->sku_len);
		s->id_len = rec->sku_len;
		memcpy(s->id, rec->sku, rec->sku_len);
		htab_insert(&b->skus, &s->node);
	} else if (rec->settings.stock < s->reserved + s->sold) {
		return -EBADMSG;
	}
	sku_set(s, &rec->settings);
	sku_touch(b, s);
	return 0;
}

/* Replay: whether rec's key is held by an older live hold of this book, which
 * no valid log produces (a key is reused only once its holder is forgotten).
 * A newer live holder is fine: rec is then a forgotten reservation brought
 * back by replay or by a snapshot taken before the tick that forgets it
 * again. Holders in other books cannot be inspected from here; idem_adopt
 * settles those by age. */
static int key_held_by_live_hold(Book *b, const Record *rec)
{
	IdemSlot slot;
	idem_lock(b->idem, rec->session, rec->session_len, rec->idem_key, rec->idem_key_len, &slot);
	IdemEntry *held = idem_find(&slot, rec->session, rec->session_len, rec->idem_key,
				    rec->idem_key_len);
	Reservation *r = held ? reservation_find(b, &held->reservation) : NULL;
	int live = r && r->idem == held && r->state == WIRE_RES_RESERVED &&
		   r->created_ms <= rec->at_ms;
	idem_unlock(&slot);
	return live;
}

/* slot: the idempotency stripe when the caller already holds it locked (a
 * live RESERVE that found no entry); NULL on replay and snapshot load. */
static int apply_reserve(Book *b, const Record *rec, IdemSlot *slot)
{
	Sku *s = sku_find(b, rec->sku, rec->sku_len);
	if (!s || reservation_find(b, &rec->id) ||
	    s->reserved + s->sold + rec->quantity > s->stock ||
	    resid_route(&rec->id) != (uint32_t)s->node.hash) /* = hash_route of its id */
		return -EBADMSG;

	if (!slot && rec->idem_key_len && key_held_by_live_hold(b, rec))
		return -EBADMSG; /* a key is only reused once its holder is forgotten */

	IdemEntry *idem = NULL;
	if (rec->idem_key_len) {
		idem = idem_entry_new(rec->sku, rec->sku_len, rec->session, rec->session_len,
				      rec->idem_key, rec->idem_key_len, rec->quantity, &rec->id,
				      rec->at_ms);
		if (slot) /* live: decide_reserve found the key free and holds its stripe */
			idem_link(slot, idem);
		else      /* replay: the newest holder of a key wins (idem.h, RECOVERY) */
			idem_adopt(b->idem, idem);
	}

	Reservation *r = xmalloc(sizeof(*r));
	r->node.hash = reservation_hash(&rec->id);
	r->id = rec->id;
	r->sku = s;
	r->holder = holder_get(b, s, rec->session, rec->session_len);
	r->idem = idem;
	r->created_ms = rec->at_ms;
	r->expires_ms = rec->expires_ms;
	r->finished_ms = 0;
	r->quantity = rec->quantity;
	r->state = WIRE_RES_RESERVED;
	htab_insert(&b->reservations, &r->node);
	heap_push(b, r);
	r->holder->refs++;
	r->holder->held += r->quantity;
	s->reserved += r->quantity;
	sku_touch(b, s);
	return 0;
}

static void finish(Book *b, Reservation *r, uint8_t state, int64_t at_ms)
{
	heap_remove(b, r);
	r->state = state;
	r->finished_ms = at_ms;
	r->u.done_next = NULL;
	if (b->done_tail)
		b->done_tail->u.done_next = r;
	else
		b->done_head = r;
	b->done_tail = r;
}

static int apply_transition(Book *b, const Record *rec)
{
	Reservation *r = reservation_find(b, &rec->id);
	if (!r || r->state != WIRE_RES_RESERVED)
		return -EBADMSG;
	Sku *s = r->sku;
	s->reserved -= r->quantity;
	switch (rec->type) {
	case REC_CONFIRM:
		s->sold += r->quantity;
		finish(b, r, WIRE_RES_CONFIRMED, rec->at_ms);
		break;
	case REC_RELEASE:
		r->holder->held -= r->quantity;
		finish(b, r, WIRE_RES_RELEASED, rec->at_ms);
		break;
	default: /* REC_TIMEOUT */
		r->holder->held -= r->quantity;
		finish(b, r, WIRE_RES_TIMEOUT, rec->at_ms);
		break;
	}
	sku_touch(b, s);
	return 0;
}

static int apply(Book *b, const Record *rec, IdemSlot *slot)
{
	switch (rec->type) {
	case REC_SKU_PUT:
		return apply_sku_put(b, rec);
	case REC_RESERVE:
		return apply_reserve(b, rec, slot);
	case REC_CONFIRM:
	case REC_RELEASE:
	case REC_TIMEOUT:
		return apply_transition(b, rec);
	}
	return -EBADMSG;
}

/* Applies a record the book itself decided, then hands it to the WAL. */
static void commit(Book *b, const Record *rec, IdemSlot *slot, BookEmitFn emit, void *ctx)
{
	int rc = apply(b, rec, slot);
	rg_assert(rc == 0);
	emit(ctx, rec);
}

/* Forgets a finished reservation for good (after retention). */
static void forget(Book *b, Reservation *r)
{
	rg_assert(r->state != WIRE_RES_RESERVED);
	htab_remove(&b->reservations, &r->node);
	if (r->state == WIRE_RES_CONFIRMED)
		r->holder->held -= r->quantity;
	holder_unref(b, r->holder);
	if (r->idem)
		idem_remove(b->idem, r->idem);
	free(r);
	b->stats.forgotten++;
}

/* ---- decide: requests become records -------------------------------------- */

static int64_t sku_available(const Sku *s)
{
	return s->stock - s->reserved - s->sold;
}

static void view_reservation(const Reservation *r, WireReservation *v)
{
	v->id = r->id;
	wire_set_str(v->sku, &v->sku_len, r->sku->id, r->sku->id_len, WIRE_SKU_MAX);
	wire_set_str(v->session, &v->session_len, r->holder->session, r->holder->session_len,
		     WIRE_SESSION_MAX);
	v->quantity = r->quantity;
	v->state = r->state;
	v->created_ms = r->created_ms;
	v->expires_ms = r->expires_ms;
	v->available = sku_available(r->sku);
}

static void view_sku(const Sku *s, WireSku *v)
{
	wire_set_str(v->sku, &v->sku_len, s->id, s->id_len, WIRE_SKU_MAX);
	v->stock = s->stock;
	v->reserved = s->reserved;
	v->sold = s->sold;
	v->price_cents = s->price_cents;
	v->per_session_limit = s->per_session_limit;
	v->max_per_order = s->max_per_order;
	v->reservation_ttl_s = s->ttl_s;
	wire_set_str(v->name, &v->name_len, s->name ? s->name : "", s->name ? strlen(s->name) : 0,
		     WIRE_NAME_MAX);
}

static void expire_due(Book *b, int64_t now_ms, BookEmitFn emit, void *ctx, size_t *count)
{
	while (b->heap_len > 0 && b->heap[0]->expires_ms <= now_ms) {
		Record rec = { .type = REC_TIMEOUT, .at_ms = now_ms, .id = b->heap[0]->id };
		commit(b, &rec, NULL, emit, ctx);
		b->stats.timed_out++;
		(*count)++;
	}
}

static void decide_reserve(Book *b, const WireRequest *q, int64_t now_ms, WireResponse *resp,
			   BookEmitFn emit, void *ctx)
{
	IdemSlot slot;
	int locked = 0;

	if (q->idem_key_len) {
		idem_lock(b->idem, q->session, q->session_len, q->idem_key, q->idem_key_len, &slot);
		locked = 1;
		IdemEntry *e = idem_find(&slot, q->session, q->session_len, q->idem_key, q->idem_key_len);
		if (e) {
			int same = e->sku_len == q->sku_len && e->quantity == q->quantity &&
				   memcmp(idem_entry_sku(e), q->sku, q->sku_len) == 0;
			ResId id = e->reservation;
			idem_unlock(&slot);
			if (!same) {
				resp->status = WIRE_IDEMPOTENCY_CONFLICT;
				b->stats.reserve_conflict++;
				return;
			}
			/* Same SKU, so the reservation lives in this very book. */
			Reservation *r = reservation_find(b, &id);
			rg_assert(r != NULL);
			resp->status = WIRE_REPLAYED;
			view_reservation(r, &resp->u.reservation);
			b->stats.reserve_replayed++;
			return;
		}
	}

	Sku *s = sku_find(b, q->sku, q->sku_len);
	if (!s) {
		resp->status = WIRE_UNKNOWN_SKU;
		b->stats.reserve_unknown_sku++;
		goto out;
	}
	if (q->quantity > s->max_per_order) {
		resp->status = WIRE_QUANTITY_TOO_LARGE;
		resp->u.limit.limit = s->max_per_order;
		resp->u.limit.held = 0;
		b->stats.reserve_too_large++;
		goto out;
	}
	int64_t available = sku_available(s);
	if (available < q->quantity) {
		resp->status = available == 0 ? WIRE_SOLD_OUT : WIRE_INSUFFICIENT_STOCK;
		resp->u.available = available;
		if (available == 0)
			b->stats.reserve_sold_out++;
		else
			b->stats.reserve_insufficient++;
		goto out;
	}
	Holder *holder = holder_find(b, s, q->session, q->session_len);
	int64_t held = holder ? holder->held : 0;
	if (s->per_session_limit > 0 && held + q->quantity > s->per_session_limit) {
		resp->status = WIRE_LIMIT_EXCEEDED;
		resp->u.limit.limit = s->per_session_limit;
		resp->u.limit.held = held;
		b->stats.reserve_limit++;
		goto out;
	}

	Record rec = { .type = REC_RESERVE, .at_ms = now_ms, .quantity = q->quantity,
		       .expires_ms = now_ms + (int64_t)s->ttl_s * 1000 };
	uint8_t random[12];
	do {
		rng_fill(b->rng, random, sizeof(random));
		resid_make(&rec.id, (uint32_t)s->node.hash /* = hash_route(s->id) */, random);
	} while (reservation_find(b, &rec.id));
	wire_set_str(rec.sku, &rec.sku_len, s->id, s->id_len, WIRE_SKU_MAX);
	wire_set_str(rec.session, &rec.session_len, q->session, q->session_len, WIRE_SESSION_MAX);
	wire_set_str(rec.idem_key, &rec.idem_key_len, q->idem_key, q->idem_key_len, WIRE_IDEM_KEY_MAX);
	commit(b, &rec, locked ? &slot : NULL, emit, ctx);
	resp->status = WIRE_CREATED;
	view_reservation(reservation_find(b, &rec.id), &resp->u.reservation);
	b->stats.reserve_created++;
out:
	if (locked)
		idem_unlock(&slot);
}

/* CONFIRM, RELEASE and GET_RESERVATION: a reservation is only visible to its
 * own session, so a wrong session looks exactly like a wrong id. */
static void decide_on_reservation(Book *b, const WireRequest *q, int64_t now_ms,
				  WireResponse *resp, BookEmitFn emit, void *ctx)
{
	Reservation *r = reservation_find(b, &q->reservation);
	if (!r || r->holder->session_len != q->session_len ||
	    memcmp(r->holder->session, q->session, q->session_len) != 0) {
		resp->status = WIRE_UNKNOWN_RESERVATION;
		return;
	}
	resp->status = WIRE_OK;
	if (q->op == WIRE_OP_CONFIRM) {
		if (r->state == WIRE_RES_RESERVED) {
			Record rec = { .type = REC_CONFIRM, .at_ms = now_ms, .id = r->id };
			commit(b, &rec, NULL, emit, ctx);
			b->stats.confirmed++;
		} else if (r->state == WIRE_RES_RELEASED) {
			resp->status = WIRE_RESERVATION_RELEASED;
		} else if (r->state == WIRE_RES_TIMEOUT) {
			resp->status = WIRE_RESERVATION_EXPIRED;
		}
	} else if (q->op == WIRE_OP_RELEASE) {
		if (r->state == WIRE_RES_RESERVED) {
			Record rec = { .type = REC_RELEASE, .at_ms = now_ms, .id = r->id };
			commit(b, &rec, NULL, emit, ctx);
			b->stats.released++;
		} else if (r->state == WIRE_RES_CONFIRMED) {
			resp->status = WIRE_ALREADY_CONFIRMED;
		} else if (r->state == WIRE_RES_TIMEOUT) {
			resp->status = WIRE_RESERVATION_EXPIRED;
		}
	}
	view_reservation(r, &resp->u.reservation);
}

static void merge_settings(WireSkuSettings *out, const WireSkuSettings *in)
{
	if (in->fields & WIRE_SKU_HAS_STOCK)
		out->stock = in->stock;
	if (in->fields & WIRE_SKU_HAS_PRICE)
		out->price_cents = in->price_cents;
	if (in->fields & WIRE_SKU_HAS_SESSION_LIMIT)
		out->per_session_limit = in->per_session_limit;
	if (in->fields & WIRE_SKU_HAS_MAX_PER_ORDER)
		out->max_per_order = in->max_per_order;
	if (in->fields & WIRE_SKU_HAS_TTL)
		out->reservation_ttl_s = in->reservation_ttl_s;
	if (in->fields & WIRE_SKU_HAS_NAME) {
		out->name_len = in->name_len;
		memcpy(out->name, in->name, in->name_len);
		out->name[in->name_len] = '\0';
	}
	out->fields = WIRE_SKU_HAS_ALL;
}

static void decide_put_sku(Book *b, const WireRequest *q, int64_t now_ms, WireResponse *resp,
			   BookEmitFn emit, void *ctx)
{
	Sku *s = sku_find(b, q->sku, q->sku_len);
	Record rec = { .type = REC_SKU_PUT, .at_ms = now_ms };
	WireSkuSettings *set = &rec.settings;

	wire_set_str(rec.sku, &rec.sku_len, q->sku, q->sku_len, WIRE_SKU_MAX);
	if (!s) {
		if (!(q->settings.fields & WIRE_SKU_HAS_STOCK)) {
			resp->status = WIRE_MISSING_STOCK;
			return;
		}
		set->per_session_limit = b->cfg.default_per_session_limit;
		set->max_per_order = b->cfg.default_max_per_order;
		set->reservation_ttl_s = b->cfg.default_ttl_s;
		merge_settings(set, &q->settings);
		commit(b, &rec, NULL, emit, ctx);
		resp->status = WIRE_CREATED;
		view_sku(sku_find(b, q->sku, q->sku_len), &resp->u.sku);
		return;
	}

	WireSku now;
	view_sku(s, &now);
	if (q->settings.fields & WIRE_SKU_ONLY_IF_NEW) {
		resp->status = WIRE_OK; /* known already: adoption changes nothing */
		resp->u.sku = now;
		return;
	}
	set->stock = now.stock;
	set->price_cents = now.price_cents;
	set->per_session_limit = now.per_session_limit;
	set->max_per_order = now.max_per_order;
	set->reservation_ttl_s = now.reservation_ttl_s;
	set->name_len = now.name_len;
	memcpy(set->name, now.name, now.name_len + 1);
	merge_settings(set, &q->settings);
	if (set->stock < s->reserved + s->sold) {
		resp->status = WIRE_STOCK_BELOW_COMMITTED;
		resp->u.sku = now;
		return;
	}
	int same = set->stock == now.stock && set->price_cents == now.price_cents &&
		   set->per_session_limit == now.per_session_limit &&
		   set->max_per_order == now.max_per_order &&
		   set->reservation_ttl_s == now.reservation_ttl_s && set->name_len == now.name_len &&
		   memcmp(set->name, now.name, now.name_len) == 0;
	if (!same)
		commit(b, &rec, NULL, emit, ctx);
	resp->status = WIRE_OK;
	view_sku(s, &resp->u.sku);
}

void book_execute(Book *b, const WireRequest *req, int64_t now_ms, WireResponse *resp,
		  BookEmitFn emit, void *ctx)
{
	size_t expired = 0;

	if (now_ms < b->last_now_ms)
		now_ms = b->last_now_ms; /* the wall clock stepped back: hold time still */
	b->last_now_ms = now_ms;
	expire_due(b, now_ms, emit, ctx, &expired);

	resp->id = req->id;
	resp->op = req->op;
	resp->status = WIRE_OK;
	switch (req->op) {
	case WIRE_OP_RESERVE:
		decide_reserve(b, req, now_ms, resp, emit, ctx);
		break;
	case WIRE_OP_CONFIRM:
	case WIRE_OP_RELEASE:
	case WIRE_OP_GET_RESERVATION:
		decide_on_reservation(b, req, now_ms, resp, emit, ctx);
		break;
	case WIRE_OP_GET_SKU: {
		Sku *s = sku_find(b, req->sku, req->sku_len);
		if (s)
			view_sku(s, &resp->u.sku);
		else
			resp->status = WIRE_UNKNOWN_SKU;
		break;
	}
	case WIRE_OP_PUT_SKU:
		decide_put_sku(b, req, now_ms, resp, emit, ctx);
		break;
	default:
		log_fatal("book_execute: op %s is not the book's", wire_op_name(req->op));
	}
}

size_t book_tick(Book *b, int64_t now_ms, BookEmitFn emit, void *ctx)
{
	size_t expired = 0;

	if (now_ms < b->last_now_ms)
		now_ms = b->last_now_ms;
	b->last_now_ms = now_ms;
	expire_due(b, now_ms, emit, ctx, &expired);
	while (b->done_head && b->done_head->finished_ms + b->cfg.retention_ms <= now_ms) {
		Reservation *r = b->done_head;
		b->done_head = r->u.done_next;
		if (!b->done_head)
			b->done_tail = NULL;
		forget(b, r);
	}
	return expired;
}

int64_t book_next_expiry(const Book *b)
{
	return b->heap_len ? b->heap[0]->expires_ms : INT64_MAX;
}

int book_replay(Book *b, const Record *rec)
{
	if (rec->at_ms > b->last_now_ms)
		b->last_now_ms = rec->at_ms;
	return apply(b, rec, NULL);
}

static void prefetch_bucket(const HTab *t, uint64_t hash, int stage)
{
	HNode **slot = htab_slot(t, hash);
	/* A prefetch never faults, so an empty bucket's NULL is harmless. */
	__builtin_prefetch(stage == 0 ? (const void *)slot : (const void *)*slot);
}

/* The lookups of one record or request: its SKU, the SKU's holder of the
 * session (session_len > 0) and the reservation (id non-NULL). */
static void prefetch_keys(const Book *b, const char *sku, size_t sku_len, const char *session,
			  size_t session_len, const ResId *id, int stage)
{
	if (sku_len > 0) {
		uint64_t sku_hash = hash_bytes(sku, sku_len);
		prefetch_bucket(&b->skus, sku_hash, stage);
		if (session_len > 0)
			prefetch_bucket(&b->holders, holder_hash(sku_hash, session, session_len), stage);
	}
	if (id)
		prefetch_bucket(&b->reservations, reservation_hash(id), stage);
}

void book_prefetch(const Book *b, const Record *rec, int stage)
{
	int reserve = rec->type == REC_RESERVE;
	int has_sku = reserve || rec->type == REC_SKU_PUT;
	prefetch_keys(b, rec->sku, has_sku ? rec->sku_len : 0, rec->session,
		      reserve ? rec->session_len : 0, rec->type == REC_SKU_PUT ? NULL : &rec->id, stage);
}

void book_prefetch_request(const Book *b, const WireRequest *q)
{
	switch (q->op) {
	case WIRE_OP_RESERVE:
		/* Its new id is drawn at random when it is applied: no hint. */
		prefetch_keys(b, q->sku, q->sku_len, q->session, q->session_len, NULL, 0);
		break;
	case WIRE_OP_CONFIRM:
	case WIRE_OP_RELEASE:
	case WIRE_OP_GET_RESERVATION:
		prefetch_keys(b, NULL, 0, NULL, 0, &q->reservation, 0);
		break;
	case WIRE_OP_GET_SKU:
	case WIRE_OP_PUT_SKU:
		prefetch_keys(b, q->sku, q->sku_len, NULL, 0, NULL, 0);
		break;
	default:
		break;
	}
}

/* ---- life cycle, checks, stats ---------------------------------------------- */

Book *book_new(const BookConfig *cfg, IdemIndex *idem, Rng *rng)
{
	Book *b = xcalloc(1, sizeof(*b));
	b->cfg = *cfg;
	b->idem = idem;
	b->rng = rng;
	htab_init(&b->skus, 256);
	htab_init(&b->holders, 1024);
	htab_init(&b->reservations, 1024);
	return b;
}

void book_free(Book *b)
{
	if (!b)
		return;
	HTAB_FOR_EACH(&b->reservations, node) {
		Reservation *r = (Reservation *)node;
		if (r->idem)
			idem_remove(b->idem, r->idem);
		free(r);
	}
	HTAB_FOR_EACH(&b->holders, node)
		free(node);
	HTAB_FOR_EACH(&b->skus, node) {
		free(((Sku *)node)->name);
		free(node);
	}
	htab_free(&b->reservations);
	htab_free(&b->holders);
	htab_free(&b->skus);
	free(b->heap);
	free(b);
}

void book_check_touched(Book *b)
{
	while (b->touched) {
		Sku *s = b->touched;
		rg_assert(s->reserved >= 0 && s->sold >= 0);
		rg_assert(s->reserved + s->sold <= s->stock);
		s->touched = 0;
		b->touched = s->touched_next;
	}
}

int book_check_all(Book *b, char *why, size_t why_len)
{
	size_t live = 0;

	HTAB_FOR_EACH(&b->skus, node)
		((Sku *)node)->check_reserved = 0;
	HTAB_FOR_EACH(&b->holders, node) {
		((Holder *)node)->check_held = 0;
		((Holder *)node)->check_refs = 0;
	}
	HTAB_FOR_EACH(&b->reservations, node) {
		Reservation *r = (Reservation *)node;
		r->holder->check_refs++;
		if (r->state == WIRE_RES_RESERVED) {
			live++;
			r->sku->check_reserved += r->quantity;
			if (r->u.heap_index >= b->heap_len || b->heap[r->u.heap_index] != r) {
				snprintf(why, why_len, "hold of %s is not in the expiry heap", r->sku->id);
				return -1;
			}
		}
		if (r->state == WIRE_RES_RESERVED || r->state == WIRE_RES_CONFIRMED)
			r->holder->check_held += r->quantity;
	}
	if (live != b->heap_len) {
		snprintf(why, why_len, "%zu live holds but %zu in the expiry heap", live, b->heap_len);
		return -1;
	}
	HTAB_FOR_EACH(&b->skus, node) {
		const Sku *s = (const Sku *)node;
		if (s->check_reserved != s->reserved || s->sold < 0 || s->reserved + s->sold > s->stock) {
			snprintf(why, why_len, "sku %s: stock %lld reserved %lld (holds say %lld) sold %lld",
				 s->id, (long long)s->stock, (long long)s->reserved,
				 (long long)s->check_reserved, (long long)s->sold);
			return -1;
		}
	}
	HTAB_FOR_EACH(&b->holders, node) {
		const Holder *x = (const Holder *)node;
		if (x->check_held != x->held || x->check_refs != x->refs) {
			snprintf(why, why_len, "session %.*s on %s: held %lld (reservations say %lld)",
				 x->session_len, x->session, x->sku->id, (long long)x->held,
				 (long long)x->check_held);
			return -1;
		}
	}
	return 0;
}

const BookStats *book_stats(const Book *b)
{
	BookStats *st = (BookStats *)&b->stats; /* the derived gauges are refreshed on read */
	st->skus = b->skus.count;
	st->holds_active = b->heap_len;
	st->reservations_retained = b->reservations.count;
	return st;
}

void book_foreach_sku(const Book *b, BookSkuFn fn, void *ctx)
{
	HTAB_FOR_EACH(&b->skus, node) {
		WireSku v;
		view_sku((const Sku *)node, &v);
		fn(ctx, &v);
	}
}

void book_foreach_reservation(const Book *b, BookReservationFn fn, void *ctx)
{
	HTAB_FOR_EACH(&b->reservations, node) {
		WireReservation v;
		view_reservation((const Reservation *)node, &v);
		fn(ctx, &v);
	}
}

/* ---- snapshots ----------------------------------------------------------------
 *
 * Layout (little-endian, str8 = u8 length + bytes):
 *   u32 magic "BOOK", u32 version, i64 last_now_ms
 *   u64 sku count, then per SKU: str8 id, i64 stock, i64 reserved, i64 sold,
 *       i64 price_cents, i32 per_session_limit, i32 max_per_order, i32 ttl_s, str8 name
 *   u64 reservation count, then per reservation: resid, str8 sku, str8 session,
 *       str8 idempotency_key, i32 quantity, u8 state, i64 created_ms,
 *       i64 expires_ms, i64 finished_ms
 * Finished reservations come in retention order, so loading rebuilds the queue. */

static void save_reservation(const Reservation *r, Buf *out)
{
	buf_append(out, r->id.b, RESID_BYTES);
	buf_put_str8(out, r->sku->id, r->sku->id_len);
	buf_put_str8(out, r->holder->session, r->holder->session_len);
	if (r->idem)
		buf_put_str8(out, idem_entry_key(r->idem), r->idem->key_len);
	else
		buf_put_str8(out, "", 0);
	buf_put_u32(out, (uint32_t)r->quantity);
	buf_put_u8(out, r->state);
	buf_put_u64(out, (uint64_t)r->created_ms);
	buf_put_u64(out, (uint64_t)r->expires_ms);
	buf_put_u64(out, (uint64_t)r->finished_ms);
}

void book_save(const Book *b, Buf *out)
{
	buf_put_u32(out, BOOK_SNAPSHOT_MAGIC);
	buf_put_u32(out, BOOK_SNAPSHOT_VERSION);
	buf_put_u64(out, (uint64_t)b->last_now_ms);
	buf_put_u64(out, b->skus.count);
	HTAB_FOR_EACH(&b->skus, node) {
		const Sku *s = (const Sku *)node;
		buf_put_str8(out, s->id, s->id_len);
		buf_put_u64(out, (uint64_t)s->stock);
		buf_put_u64(out, (uint64_t)s->reserved);
		buf_put_u64(out, (uint64_t)s->sold);
		buf_put_u64(out, (uint64_t)s->price_cents);
		buf_put_u32(out, (uint32_t)s->per_session_limit);
		buf_put_u32(out, (uint32_t)s->max_per_order);
		buf_put_u32(out, (uint32_t)s->ttl_s);
		buf_put_str8(out, s->name ? s->name : "", s->name ? strlen(s->name) : 0);
	}
	buf_put_u64(out, b->reservations.count);
	for (size_t i = 0; i < b->heap_len; i++)
		save_reservation(b->heap[i], out);
	for (const Reservation *r = b->done_head; r; r = r->u.done_next)
		save_reservation(r, out);
}

static int load_sku(Book *b, Reader *rd)
{
	Record rec = { .type = REC_SKU_PUT };
	WireSkuSettings *set = &rec.settings;
	int64_t reserved, sold;

	reader_str8(rd, rec.sku, WIRE_SKU_MAX, &rec.sku_len);
	set->stock = (int64_t)reader_u64(rd);
	reserved = (int64_t)reader_u64(rd);
	sold = (int64_t)reader_u64(rd);
	set->price_cents = (int64_t)reader_u64(rd);
	set->per_session_limit = (int32_t)reader_u32(rd);
	set->max_per_order = (int32_t)reader_u32(rd);
	set->reservation_ttl_s = (int32_t)reader_u32(rd);
	reader_str8(rd, set->name, WIRE_NAME_MAX, &set->name_len);
	/* The settings must pass the rules record_decode applies to SKU_PUT: the
	 * next change of this SKU writes them to the WAL, and every response
	 * carries them over the wire. */
	if (rd->failed || !wire_sku_valid(rec.sku, rec.sku_len) || sku_find(b, rec.sku, rec.sku_len) ||
	    set->stock < 0 || set->stock > WIRE_STOCK_MAX || reserved < 0 || sold < 0 ||
	    reserved > set->stock || sold > set->stock - reserved ||
	    set->price_cents < 0 || set->price_cents > WIRE_PRICE_MAX || set->per_session_limit < 0 ||
	    set->max_per_order < 1 || set->reservation_ttl_s < 1 ||
	    set->reservation_ttl_s > WIRE_TTL_MAX_S || !wire_name_valid(set->name, set->name_len))
		return -EBADMSG;
	if (apply_sku_put(b, &rec) != 0)
		return -EBADMSG;
	Sku *s = sku_find(b, rec.sku, rec.sku_len);
	s->sold = sold;
	s->check_reserved = reserved; /* the saved count; book_load compares it with the holds */
	return 0;
}

static int load_reservation(Book *b, Reader *rd)
{
	Record rec = { .type = REC_RESERVE };
	uint8_t state;
	int64_t finished_ms;

	reader_bytes(rd, rec.id.b, RESID_BYTES);
	reader_str8(rd, rec.sku, WIRE_SKU_MAX, &rec.sku_len);
	reader_str8(rd, rec.session, WIRE_SESSION_MAX, &rec.session_len);
	reader_str8(rd, rec.idem_key, WIRE_IDEM_KEY_MAX, &rec.idem_key_len);
	rec.quantity = (int32_t)reader_u32(rd);
	state = reader_u8(rd);
	rec.at_ms = (int64_t)reader_u64(rd);
	rec.expires_ms = (int64_t)reader_u64(rd);
	finished_ms = (int64_t)reader_u64(rd);
	if (rd->failed || !wire_session_valid(rec.session, rec.session_len) || rec.quantity < 1 ||
	    state < WIRE_RES_RESERVED || state > WIRE_RES_TIMEOUT)
		return -EBADMSG;

	/* A finished reservation is loaded as the hold it was, then finished:
	 * the same apply steps as the log, so the counters cannot drift. Its
	 * SKU's stock may since have dropped below what the hold needed, so
	 * lift it for the moment. */
	Sku *s = sku_find(b, rec.sku, rec.sku_len);
	if (!s)
		return -EBADMSG;
	int64_t stock = s->stock, sold = s->sold;
	s->stock = INT64_MAX / 2;
	int rc = apply_reserve(b, &rec, NULL);
	if (rc == 0 && state != WIRE_RES_RESERVED) {
		static const uint8_t type_of[] = {
			[WIRE_RES_CONFIRMED] = REC_CONFIRM,
			[WIRE_RES_RELEASED] = REC_RELEASE,
			[WIRE_RES_TIMEOUT] = REC_TIMEOUT,
		};
		Record done = { .type = type_of[state], .at_ms = finished_ms, .id = rec.id };
		rc = apply_transition(b, &done);
	}
	s->stock = stock;
	s->sold = sold; /* confirming above counted the sale again */
	return rc;
}

int book_load(Book *b, const uint8_t *data, size_t len)
{
	Reader rd;
	reader_init(&rd, data, len);

	rg_assert(b->skus.count == 0 && b->reservations.count == 0);
	if (reader_u32(&rd) != BOOK_SNAPSHOT_MAGIC || reader_u32(&rd) != BOOK_SNAPSHOT_VERSION)
		return -EBADMSG;
	b->last_now_ms = (int64_t)reader_u64(&rd);
	uint64_t skus = reader_u64(&rd);
	for (uint64_t i = 0; i < skus && !rd.failed; i++)
		if (load_sku(b, &rd) != 0)
			return -EBADMSG;
	uint64_t reservations = reader_u64(&rd);
	for (uint64_t i = 0; i < reservations && !rd.failed; i++)
		if (load_reservation(b, &rd) != 0)
			return -EBADMSG;
	if (rd.failed || rd.left != 0)
		return -EBADMSG;
	HTAB_FOR_EACH(&b->skus, node) {
		Sku *s = (Sku *)node;
		if (s->reserved != s->check_reserved || s->reserved + s->sold > s->stock)
			return -EBADMSG;
	}
	book_check_touched(b);
	return 0;
}
