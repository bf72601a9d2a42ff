/* api.c — one handler per endpoint of API.md (see api.h). */
#include "fcgi/api.h"

#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/xmalloc.h"
#include "fcgi/json.h"
#include "fcgi/route.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct Api {
	const Config *cfg;
	Botcheck *botcheck;
	LedgerConn *ledger;
	Metrics *metrics;
	char *body;          /* request_body_max + 1 bytes, reused by every request */
	unsigned endpoint;   /* of the request being answered, for logs */
	const char *method;
	ApiShedFn shed;      /* NULL: never shed */
	void *shed_ctx;
};

typedef void (*ApiHandler)(Api *api, HttpRequest *req, const RouteSegment *param,
			   HttpResponse *resp);

Api *api_new(const Config *cfg, Botcheck *botcheck, LedgerConn *ledger, Metrics *metrics)
{
	Api *api = xcalloc(1, sizeof(*api));

	api->cfg = cfg;
	api->botcheck = botcheck;
	api->ledger = ledger;
	api->metrics = metrics;
	api->body = xmalloc((size_t)cfg->request_body_max + 1);
	return api;
}

void api_free(Api *api)
{
	if (!api)
		return;
	free(api->body);
	free(api);
}

/* ---- shared answers ---------------------------------------------------------- */

static void answer(HttpResponse *resp, int status, const char *code, const char *message)
{
	HttpError err;

	http_fail(&err, status, code, "%s", message);
	http_error(resp, &err, NULL);
}

/* REQUEST_METHOD as sent, when it is a plain token, for log lines. */
static const char *method_for_log(const char *method)
{
	size_t len = strlen(method);

	if (!len || len > 16 || strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != len)
		return "?";
	return method;
}

static void log_5xx(Api *api, const HttpError *err)
{
	log_warn("%s %s -> %d %s: %s", method_for_log(api->method),
		 api->endpoint == METRICS_PREFLIGHT ? "preflight" : route_name(api->endpoint),
		 err->status, err->code, err->message);
}

/* 503 unavailable with Retry-After; err gets what was answered. */
static void answer_unavailable(Api *api, HttpResponse *resp, const char *why, HttpError *err)
{
	http_fail(err, 503, "unavailable", "%s; retry after %d s", why,
		  api->cfg->ledger_retry_after_s);
	http_error(resp, err, NULL);
	http_header(resp, "Retry-After", "%d", api->cfg->ledger_retry_after_s);
}

static void unavailable(Api *api, HttpResponse *resp, const char *why)
{
	HttpError err;

	answer_unavailable(api, resp, why, &err);
	log_5xx(api, &err);
}

static void unexpected(Api *api, HttpResponse *resp, const WireResponse *w)
{
	HttpError err;

	http_fail(&err, 500, "internal_error", "the ledger gave an unexpected answer (%s)",
		  wire_status_name(w->status));
	http_error(resp, &err, NULL);
	log_5xx(api, &err);
}

/* One round trip. Returns 0 with the answer in w, or -1 with a 503 in resp
 * (ledger down, slow, busy or shutting down). */
static int ask_ledger(Api *api, WireRequest *req, WireResponse *w, HttpResponse *resp)
{
	const char *why = "the ledger is unavailable";
	int rc = ledger_conn_call(api->ledger, req, w, &why);

	if (rc < 0) {
		unavailable(api, resp, why);
		return -1;
	}
	if (w->status == WIRE_BUSY || w->status == WIRE_SHUTTING_DOWN) {
		unavailable(api, resp, w->status == WIRE_BUSY ? "the ledger is busy"
							    : "the ledger is restarting");
		return -1;
	}
	return 0;
}

/* The body of a POST or PUT through the gate; on failure resp has the answer. */
static int read_body(Api *api, HttpRequest *req, size_t *len, HttpResponse *resp)
{
	HttpError err;

	if (http_body_read(req, api->body, (size_t)api->cfg->request_body_max, len, &err) == 0)
		return 0;
	http_error(resp, &err, NULL);
	return -1;
}

static int param_sku(const RouteSegment *param)
{
	return param && !param->bad && wire_sku_valid(param->text, param->len);
}

static int param_resid(const RouteSegment *param, ResId *id)
{
	return param && !param->bad && resid_parse(param->text, param->len, id) == 0;
}

static void no_reservation(HttpResponse *resp)
{
	answer(resp, 404, "unknown_reservation", "no reservation with this id for this session");
}

static void no_sku(HttpResponse *resp)
{
	answer(resp, 404, "unknown_sku", "no sku with this id");
}

static json_object *extra_int(const char *k1, int64_t v1, const char *k2, int64_t v2)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, k1, json_object_new_int64(v1));
	if (k2)
		json_object_object_add(o, k2, json_object_new_int64(v2));
	return o;
}

/* ---- POST /v1/reservations ------------------------------------------------------ */

static MetricsOutcome reserve(Api *api, HttpRequest *req, HttpResponse *resp)
{
	WireResponse w;
	JsonReserve r;
	HttpError err;
	char why[256] = "";
	size_t len;

	if (read_body(api, req, &len, resp) < 0)
		return METRICS_INVALID_REQUEST;
	if (json_body_reserve(api->body, len, api->cfg->json_depth_max, &r, &err)) {
		http_error(resp, &err, NULL);
		return METRICS_INVALID_REQUEST;
	}
	if (api->botcheck &&
	    !botcheck_verify(api->botcheck, r.req.session, r.has_token ? r.token : NULL,
			     req->remote_addr, clock_wall_ms() / 1000, why, sizeof(why))) {
		log_debug("bot check refused a reservation of %s: %s", r.req.sku, why);
		answer(resp, 403, "bot_check_failed",
		       "the bot check failed; reload the page and try again");
		return METRICS_BOT_CHECK_FAILED;
	}
	if (ask_ledger(api, &r.req, &w, resp) < 0)
		return METRICS_UNAVAILABLE;
	switch (w.status) {
	case WIRE_CREATED:
		http_json(resp, 201, json_reservation_new(&w.u.reservation));
		return METRICS_CREATED;
	case WIRE_REPLAYED:
		http_json(resp, 200, json_reservation_new(&w.u.reservation));
		return METRICS_REPLAYED;
	case WIRE_UNKNOWN_SKU:
		http_fail(&err, 404, "unknown_sku", "sku %s does not exist", r.req.sku);
		http_error(resp, &err, NULL);
		return METRICS_UNKNOWN_SKU;
	case WIRE_SOLD_OUT:
		/* API.md: only insufficient_stock carries "available" (here it is 0). */
		http_fail(&err, 409, "sold_out", "sku %s is sold out", r.req.sku);
		http_error(resp, &err, NULL);
		return METRICS_SOLD_OUT;
	case WIRE_INSUFFICIENT_STOCK:
		http_fail(&err, 409, "insufficient_stock",
			  "sku %s has fewer units available (%lld) than requested (%d)", r.req.sku,
			  (long long)w.u.available, (int)r.req.quantity);
		http_error(resp, &err, extra_int("available", w.u.available, NULL, 0));
		return METRICS_INSUFFICIENT_STOCK;
	case WIRE_IDEMPOTENCY_CONFLICT:
		answer(resp, 409, "idempotency_conflict",
		       "idempotency_key was already used with another sku or quantity");
		return METRICS_IDEMPOTENCY_CONFLICT;
	case WIRE_LIMIT_EXCEEDED:
		http_fail(&err, 429, "limit_exceeded",
			  "a session may hold at most %d units of sku %s and this one holds %lld",
			  (int)w.u.limit.limit, r.req.sku, (long long)w.u.limit.held);
		http_error(resp, &err, extra_int("limit", w.u.limit.limit, "held", w.u.limit.held));
		return METRICS_LIMIT_EXCEEDED;
	case WIRE_QUANTITY_TOO_LARGE:
		http_fail(&err, 400, "invalid_request",
			  "quantity must be an integer from 1 to %d (max_per_order of sku %s)",
			  (int)w.u.limit.limit, r.req.sku);
		http_error(resp, &err, NULL);
		return METRICS_INVALID_REQUEST;
	default:
		unexpected(api, resp, &w);
		return METRICS_UNAVAILABLE;
	}
}

static void handle_reserve(Api *api, HttpRequest *req, const RouteSegment *param,
			   HttpResponse *resp)
{
	MetricsOutcome outcome = reserve(api, req, resp);

	if (api->metrics)
		metrics_reservation(api->metrics, outcome);
}

/* ---- reservations by id ------------------------------------------------------------ */

static void handle_get_reservation(Api *api, HttpRequest *req, const RouteSegment *param,
				   HttpResponse *resp)
{
	WireRequest q = { .op = WIRE_OP_GET_RESERVATION };
	char session[WIRE_SESSION_MAX + 2];
	WireResponse w;
	size_t len = 0;
	int rc;

	rc = http_query_get(req->query, "session", session, sizeof(session), &len);
	if (rc == 0) {
		answer(resp, 400, "invalid_request", "the session query parameter is required");
		return;
	}
	if (rc < 0 || !wire_session_valid(session, len)) {
		answer(resp, 400, "invalid_request", JSON_RULE_SESSION);
		return;
	}
	if (!param_resid(param, &q.reservation)) {
		no_reservation(resp);
		return;
	}
	wire_set_str(q.session, &q.session_len, session, len, WIRE_SESSION_MAX);
	if (ask_ledger(api, &q, &w, resp) < 0)
		return;
	if (w.status == WIRE_OK)
		http_json(resp, 200, json_reservation_new(&w.u.reservation));
	else if (w.status == WIRE_UNKNOWN_RESERVATION)
		no_reservation(resp);
	else
		unexpected(api, resp, &w);
}

/* Confirm and release: the same shape, different refusals. */
static void change_reservation(Api *api, HttpRequest *req, const RouteSegment *param,
			       HttpResponse *resp, uint8_t op)
{
	WireRequest q = { .op = op };
	WireResponse w;
	HttpError err;
	size_t len;

	if (read_body(api, req, &len, resp) < 0)
		return;
	if (json_body_session(api->body, len, api->cfg->json_depth_max, &q, &err)) {
		http_error(resp, &err, NULL);
		return;
	}
	if (!param_resid(param, &q.reservation)) {
		no_reservation(resp);
		return;
	}
	if (ask_ledger(api, &q, &w, resp) < 0)
		return;
	switch (w.status) {
	case WIRE_OK:
		http_json(resp, 200, json_reservation_new(&w.u.reservation));
		break;
	case WIRE_UNKNOWN_RESERVATION:
		no_reservation(resp);
		break;
	case WIRE_RESERVATION_EXPIRED:
		answer(resp, 409, "reservation_expired",
		       "the reservation expired before this request and its units were returned");
		break;
	case WIRE_RESERVATION_RELEASED:
		answer(resp, 409, "reservation_released", "the reservation was released");
		break;
	case WIRE_ALREADY_CONFIRMED:
		answer(resp, 409, "already_confirmed",
		       "the reservation is confirmed and can no longer be released");
		break;
	default:
		unexpected(api, resp, &w);
		break;
	}
}

static void handle_confirm(Api *api, HttpRequest *req, const RouteSegment *param,
			   HttpResponse *resp)
{
	change_reservation(api, req, param, resp, WIRE_OP_CONFIRM);
}

static void handle_release(Api *api, HttpRequest *req, const RouteSegment *param,
			   HttpResponse *resp)
{
	change_reservation(api, req, param, resp, WIRE_OP_RELEASE);
}

/* ---- SKUs ---------------------------------------------------------------------------- */

static void get_sku(Api *api, const RouteSegment *param, HttpResponse *resp, int admin)
{
	WireRequest q = { .op = WIRE_OP_GET_SKU };
	WireResponse w;

	if (!param_sku(param)) {
		no_sku(resp);
		return;
	}
	wire_set_str(q.sku, &q.sku_len, param->text, param->len, WIRE_SKU_MAX);
	if (ask_ledger(api, &q, &w, resp) < 0)
		return;
	if (w.status == WIRE_OK) {
		http_json(resp, 200, json_sku_new(&w.u.sku, admin));
		/* Stock pages poll this; a second of caching spares the ledger. */
		if (!admin)
			resp->cache_control = "max-age=1";
	} else if (w.status == WIRE_UNKNOWN_SKU) {
		no_sku(resp);
	} else {
		unexpected(api, resp, &w);
	}
}

static void handle_get_sku(Api *api, HttpRequest *req, const RouteSegment *param,
			   HttpResponse *resp)
{
	get_sku(api, param, resp, 0);
}

/* Bearer admin_token, compared in constant time; an empty token admits no one. */
static int admin_allowed(Api *api, HttpRequest *req, HttpResponse *resp)
{
	const char *want = api->cfg->admin_token, *token;
	size_t token_len;

	if (*want && http_bearer_token(req->authorization, &token, &token_len) &&
	    http_secret_equal(token, token_len, want, strlen(want)))
		return 1;
	answer(resp, 401, "unauthorized",
	       "a valid admin token is required (Authorization: Bearer <token>)");
	http_header(resp, "WWW-Authenticate", "Bearer realm=\"revenue-guard\"");
	return 0;
}

static void handle_admin_get_sku(Api *api, HttpRequest *req, const RouteSegment *param,
				 HttpResponse *resp)
{
	if (admin_allowed(api, req, resp))
		get_sku(api, param, resp, 1);
}

static void handle_admin_put_sku(Api *api, HttpRequest *req, const RouteSegment *param,
				 HttpResponse *resp)
{
	WireRequest q = { .op = WIRE_OP_PUT_SKU };
	WireResponse w;
	HttpError err;
	size_t len;

	if (!admin_allowed(api, req, resp))
		return;
	if (!param_sku(param)) {
		answer(resp, 400, "invalid_request", JSON_RULE_SKU);
		return;
	}
	if (read_body(api, req, &len, resp) < 0)
		return;
	if (json_body_sku_settings(api->body, len, api->cfg->json_depth_max, &q.settings, &err)) {
		http_error(resp, &err, NULL);
		return;
	}
	wire_set_str(q.sku, &q.sku_len, param->text, param->len, WIRE_SKU_MAX);
	if (ask_ledger(api, &q, &w, resp) < 0)
		return;
	switch (w.status) {
	case WIRE_CREATED:
	case WIRE_OK:
		http_json(resp, w.status == WIRE_CREATED ? 201 : 200, json_sku_new(&w.u.sku, 1));
		break;
	case WIRE_STOCK_BELOW_COMMITTED:
		http_fail(&err, 409, "stock_below_committed",
			  "stock %lld is below the %lld units already reserved (%lld) or sold (%lld)",
			  (long long)q.settings.stock, (long long)(w.u.sku.reserved + w.u.sku.sold),
			  (long long)w.u.sku.reserved, (long long)w.u.sku.sold);
		http_error(resp, &err, NULL);
		break;
	case WIRE_MISSING_STOCK:
		answer(resp, 400, "invalid_request", "stock is required");
		break;
	default:
		unexpected(api, resp, &w);
		break;
	}
}

/* ---- health and metrics --------------------------------------------------------------- */

/* STATS rather than PING: the ledger's I/O thread answers both, and STATS
 * also tells how far PostgreSQL is behind. */
static void handle_health(Api *api, HttpRequest *req, const RouteSegment *param,
			  HttpResponse *resp)
{
	WireRequest q = { .op = WIRE_OP_STATS };
	WireResponse w;
	json_object *o;

	if (ask_ledger(api, &q, &w, resp) < 0)
		return;
	if (w.status != WIRE_OK) {
		unexpected(api, resp, &w);
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "status", json_object_new_string("ok"));
	json_object_object_add(o, "ledger", json_object_new_string("ok"));
	json_object_object_add(o, "shards", json_object_new_int((int)ledger_conn_shards(api->ledger)));
	json_object *wb = json_object_new_object();
	json_object_object_add(wb, "lag_records",
			       json_object_new_int64((int64_t)wire_stat_value(&w, "writebehind_lag_records")));
	json_object_object_add(wb, "lag_ms",
			       json_object_new_int64((int64_t)wire_stat_value(&w, "writebehind_lag_ms")));
	json_object_object_add(wb, "connected_shards",
			       json_object_new_int64((int64_t)wire_stat_value(&w, "writebehind_connected_shards")));
	json_object_object_add(o, "writebehind", wb);
	http_json(resp, 200, o);
}

static void handle_metrics(Api *api, HttpRequest *req, const RouteSegment *param,
			   HttpResponse *resp)
{
	WireRequest q = { .op = WIRE_OP_STATS };
	WireResponse w, *shards = NULL;
	unsigned nshards = 0;
	const char *why;
	int rc, up;

	/* A scrape must work while the ledger is down: it is when it matters. */
	rc = ledger_conn_call(api->ledger, &q, &w, &why);
	up = rc == 0 && w.status == WIRE_OK;
	resp->status = 200;
	resp->content_type = METRICS_CONTENT_TYPE;
	buf_reset(&resp->body);
	if (api->metrics) {
		/* Then each shard's figures; all or none, so a scrape never shows a
		 * partial set of shards. Each call has the ledger timeout. */
		uint64_t n = up ? wire_stat_value(&w, "shards") : 0;
		if (n > METRICS_SHARDS_MAX)
			n = METRICS_SHARDS_MAX;
		if (n)
			shards = xmalloc((size_t)n * sizeof(*shards));
		for (unsigned k = 0; k < n; k++) {
			WireRequest sq = { .op = WIRE_OP_SHARD_STATS, .shard = (uint16_t)k };
			if (ledger_conn_call(api->ledger, &sq, &shards[k], &why) != 0 ||
			    shards[k].status != WIRE_OK)
				break;
			nshards = k + 1;
		}
		if (nshards != n)
			nshards = 0;
		metrics_render(api->metrics, up ? &w : NULL, shards, nshards, &resp->body);
		free(shards);
	} else {
		static const char none[] = "# no metrics in this process\n";
		buf_append(&resp->body, none, sizeof(none) - 1);
	}
}

static const ApiHandler handlers[ROUTE_COUNT] = {
	[ROUTE_RESERVE] = handle_reserve,
	[ROUTE_GET_RESERVATION] = handle_get_reservation,
	[ROUTE_CONFIRM] = handle_confirm,
	[ROUTE_RELEASE] = handle_release,
	[ROUTE_GET_SKU] = handle_get_sku,
	[ROUTE_ADMIN_GET_SKU] = handle_admin_get_sku,
	[ROUTE_ADMIN_PUT_SKU] = handle_admin_put_sku,
	[ROUTE_HEALTH] = handle_health,
	[ROUTE_METRICS] = handle_metrics,
};

/* ---- dispatch ------------------------------------------------------------------------ */

void api_set_shed(Api *api, ApiShedFn fn, void *ctx)
{
	api->shed = fn;
	api->shed_ctx = ctx;
}

/* Only what starts new ledger work is shed: reserving and the reads a buyer
 * polls. Confirm and release finish work already admitted (and free units),
 * admin is the operator's way in during a sale, health must report the real
 * state (a shed health check takes a working backend out of rotation) and
 * /metrics must show the overload. */
static int sheddable(RouteId id)
{
	return id == ROUTE_RESERVE || id == ROUTE_GET_RESERVATION || id == ROUTE_GET_SKU;
}

void api_handle(Api *api, HttpRequest *req, HttpResponse *resp)
{
	RoutePath path;
	RouteMatch m;
	char allow[64];

	http_response_reset(resp);
	route_path(req->path_info, req->request_uri, req->script_name, api->cfg->api_prefix, &path);
	m = route_match(&path, req->method);
	route_allow_format(m.allow, allow, sizeof(allow));
	api->method = req->method;
	api->endpoint = m.id;
	switch (m.outcome) {
	case ROUTE_NOT_FOUND:
		answer(resp, 404, "not_found", "there is no such endpoint");
		break;
	case ROUTE_WRONG_METHOD:
		answer(resp, 405, "method_not_allowed", "this endpoint does not take that method");
		http_header(resp, "Allow", "%s", allow);
		break;
	case ROUTE_PREFLIGHT:
		api->endpoint = METRICS_PREFLIGHT;
		resp->status = 204;
		http_header(resp, "Allow", "%s", allow);
		break;
	case ROUTE_MATCHED:
		if (api->shed && sheddable(m.id) && api->shed(api->shed_ctx)) {
			HttpError err;
			answer_unavailable(api, resp, "overloaded", &err);
			if (m.id == ROUTE_RESERVE && api->metrics)
				metrics_reservation(api->metrics, METRICS_UNAVAILABLE);
		} else {
			handlers[m.id](api, req, m.param, resp);
		}
		break;
	}
	http_cors(resp, api->cfg->cors_allowed_origins, req->origin,
		  m.outcome == ROUTE_PREFLIGHT, m.allow);
	if (api->metrics)
		metrics_http(api->metrics, api->endpoint, resp->status);
	log_debug("%s %s -> %d", method_for_log(req->method),
		  api->endpoint == METRICS_PREFLIGHT ? "preflight" : route_name(m.id), resp->status);
}
