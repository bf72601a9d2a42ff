/* json.c — request body parsing and response objects (see json.h). */
#include "fcgi/json.h"

#include <stdint.h>
#include <string.h>

#include "common/clock.h"
#include "common/resid.h"

/* A pass over body before json-c sees it, for two things json-c gets wrong
 * for us. It counts every value as a level (a scalar inside 8 containers is
 * its 9th), so the rule of API.md, "nested at most 8 deep", is counted here.
 * And even in strict mode it takes 'single-quoted' object keys, which JSON
 * has not: a quote outside a string is refused here. Returns the deepest
 * nesting of objects and arrays, or -1 with *bad at a stray single quote. */
static int json_scan(const char *body, size_t len, size_t *bad)
{
	int depth = 0, deepest = 0, in_string = 0;

	for (size_t i = 0; i < len; i++) {
		char c = body[i];

		if (in_string) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = 0;
		} else if (c == '"') {
			in_string = 1;
		} else if (c == '\'') {
			*bad = i;
			return -1;
		} else if (c == '{' || c == '[') {
			if (++depth > deepest)
				deepest = depth;
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
	return deepest;
}

json_object *json_body_parse(const char *body, size_t len, int depth_max, HttpError *err)
{
	struct json_tokener *tok;
	enum json_tokener_error e;
	json_object *obj;
	const char *nul;
	size_t end, bad = 0;
	int depth;

	if (len > INT32_MAX) {
		http_fail(err, 400, "invalid_request", "request body is too large to parse");
		return NULL;
	}
	/* json-c would stop at a raw NUL; no valid JSON text holds one. */
	nul = memchr(body, '\0', len);
	if (nul) {
		http_fail(err, 400, "invalid_request",
			  "request body is not valid JSON (NUL byte at byte %zu)", (size_t)(nul - body));
		return NULL;
	}
	depth = json_scan(body, len, &bad);
	if (depth < 0) {
		http_fail(err, 400, "invalid_request",
			  "request body is not valid JSON (unexpected character at byte %zu)", bad);
		return NULL;
	}
	if (depth > depth_max) {
		http_fail(err, 400, "invalid_request", "request body is nested deeper than %d levels",
			  depth_max);
		return NULL;
	}
	/* One more level for the scalars inside the deepest containers. */
	tok = json_tokener_new_ex(depth_max + 1);
	if (!tok) {
		http_fail(err, 400, "invalid_request", "request body cannot be parsed");
		return NULL;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, body, (int)len);
	e = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (!obj && e == json_tokener_continue && end == len) {
		/* A bare top-level number or literal waits for a terminator:
		 * the end of the body is one. */
		obj = json_tokener_parse_ex(tok, "", 1);
		e = json_tokener_get_error(tok);
	}
	json_tokener_free(tok);

	if (e != json_tokener_success) {
		json_object_put(obj);
		if (e == json_tokener_error_depth)
			http_fail(err, 400, "invalid_request",
				  "request body is nested deeper than %d levels", depth_max);
		else if (e == json_tokener_continue)
			http_fail(err, 400, "invalid_request",
				  "request body is not valid JSON (it ends too early)");
		else
			http_fail(err, 400, "invalid_request",
				  "request body is not valid JSON (%s at byte %zu)",
				  json_tokener_error_desc(e), end);
		return NULL;
	}
	while (end < len && strchr(" \t\r\n", body[end]))
		end++;
	if (end < len) {
		http_fail(err, 400, "invalid_request",
			  "request body is not valid JSON (extra data at byte %zu)", end);
		goto fail;
	}
	/* NULL here is the JSON value null. */
	if (!obj || !json_object_is_type(obj, json_type_object)) {
		http_fail(err, 400, "invalid_request", "request body must be a JSON object");
		goto fail;
	}
	return obj;
fail:
	json_object_put(obj);
	return NULL;
}

/* ---- field getters: 1 present and valid, 0 absent, -1 invalid (err set) ---- */

static int get_int(json_object *obj, const char *field, int64_t min, int64_t max, int64_t *out,
		   HttpError *err)
{
	json_object *v;
	int64_t n;

	if (!json_object_object_get_ex(obj, field, &v))
		return 0;
	/* json-c parses out-of-range integers saturated (INT64_MAX for 2^64),
	 * which the range check below turns away. */
	if (!json_object_is_type(v, json_type_int))
		goto bad;
	n = json_object_get_int64(v);
	if (n < min || n > max)
		goto bad;
	*out = n;
	return 1;
bad:
	http_fail(err, 400, "invalid_request", "%s must be an integer from %lld to %lld", field,
		  (long long)min, (long long)max);
	return -1;
}

typedef int (*StrRule)(const char *s, size_t len);

static int rule_idem_key(const char *s, size_t len)
{
	return len >= 1 && wire_idem_key_valid(s, len);
}

static int rule_token(const char *s, size_t len)
{
	return len <= JSON_TOKEN_MAX && strlen(s) == len;
}

/* A string field judged by rule; on success copies it into out (out_size
 * bytes, always more than the rule allows). */
static int get_str(json_object *obj, const char *field, StrRule rule, const char *message,
		   char *out, size_t out_size, size_t *out_len, HttpError *err)
{
	json_object *v;
	const char *s;
	size_t len;

	if (!json_object_object_get_ex(obj, field, &v))
		return 0;
	if (!json_object_is_type(v, json_type_string))
		goto bad;
	s = json_object_get_string(v);
	len = (size_t)json_object_get_string_len(v);
	if (!rule(s, len) || len >= out_size)
		goto bad;
	memcpy(out, s, len);
	out[len] = '\0';
	*out_len = len;
	return 1;
bad:
	http_fail(err, 400, "invalid_request", "%s", message);
	return -1;
}

/* The wire keeps string lengths in a byte. */
static int get_str8(json_object *obj, const char *field, StrRule rule, const char *message,
		    char *out, size_t out_size, uint8_t *out_len, HttpError *err)
{
	size_t len = 0;
	int rc = get_str(obj, field, rule, message, out, out_size, &len, err);

	*out_len = (uint8_t)len;
	return rc;
}

static int missing(HttpError *err, const char *field)
{
	http_fail(err, 400, "invalid_request", "%s is required", field);
	return -1;
}

/* ---- bodies ------------------------------------------------------------------ */

int json_body_reserve(const char *body, size_t len, int depth_max, JsonReserve *out,
		      HttpError *err)
{
	WireRequest *req = &out->req;
	json_object *obj = json_body_parse(body, len, depth_max, err);
	size_t token_len = 0;
	int64_t quantity = 0;
	int rc;

	if (!obj)
		return err->status;
	memset(out, 0, sizeof(*out));
	req->op = WIRE_OP_RESERVE;
	rc = get_str8(obj, "sku", wire_sku_valid, JSON_RULE_SKU, req->sku, sizeof(req->sku),
		      &req->sku_len, err);
	if (rc == 0)
		rc = missing(err, "sku");
	if (rc < 0)
		goto out;
	rc = get_int(obj, "quantity", 1, INT32_MAX, &quantity, err);
	if (rc == 0)
		rc = missing(err, "quantity");
	if (rc < 0)
		goto out;
	req->quantity = (int32_t)quantity;
	rc = get_str8(obj, "session", wire_session_valid, JSON_RULE_SESSION, req->session,
		      sizeof(req->session), &req->session_len, err);
	if (rc == 0)
		rc = missing(err, "session");
	if (rc < 0)
		goto out;
	rc = get_str8(obj, "idempotency_key", rule_idem_key, JSON_RULE_IDEM_KEY, req->idem_key,
		      sizeof(req->idem_key), &req->idem_key_len, err);
	if (rc < 0)
		goto out;
	rc = get_str(obj, "token", rule_token, JSON_RULE_TOKEN, out->token, sizeof(out->token),
		     &token_len, err);
	if (rc < 0)
		goto out;
	out->has_token = rc == 1;
	rc = 0;
out:
	json_object_put(obj);
	return rc < 0 ? err->status : 0;
}

int json_body_session(const char *body, size_t len, int depth_max, WireRequest *req,
		      HttpError *err)
{
	json_object *obj = json_body_parse(body, len, depth_max, err);
	int rc;

	if (!obj)
		return err->status;
	rc = get_str8(obj, "session", wire_session_valid, JSON_RULE_SESSION, req->session,
		      sizeof(req->session), &req->session_len, err);
	if (rc == 0)
		rc = missing(err, "session");
	json_object_put(obj);
	return rc < 0 ? err->status : 0;
}

int json_body_sku_settings(const char *body, size_t len, int depth_max, WireSkuSettings *set,
			   HttpError *err)
{
	static const struct {
		const char *field;
		int64_t min, max;
		uint8_t bit;
	} ints[] = {
		{ "stock", 0, WIRE_STOCK_MAX, WIRE_SKU_HAS_STOCK },
		{ "price_cents", 0, WIRE_PRICE_MAX, WIRE_SKU_HAS_PRICE },
		{ "per_session_limit", 0, INT32_MAX, WIRE_SKU_HAS_SESSION_LIMIT },
		{ "max_per_order", 1, INT32_MAX, WIRE_SKU_HAS_MAX_PER_ORDER },
		{ "reservation_ttl_s", 1, WIRE_TTL_MAX_S, WIRE_SKU_HAS_TTL },
	};
	json_object *obj = json_body_parse(body, len, depth_max, err);
	int64_t v[sizeof(ints) / sizeof(ints[0])] = { 0 };
	int rc = 0;

	if (!obj)
		return err->status;
	memset(set, 0, sizeof(*set));
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		rc = get_int(obj, ints[i].field, ints[i].min, ints[i].max, &v[i], err);
		if (rc < 0)
			goto out;
		if (rc == 1)
			set->fields |= ints[i].bit;
	}
	if (!(set->fields & WIRE_SKU_HAS_STOCK)) {
		rc = missing(err, "stock");
		goto out;
	}
	set->stock = v[0];
	set->price_cents = v[1];
	set->per_session_limit = (int32_t)v[2];
	set->max_per_order = (int32_t)v[3];
	set->reservation_ttl_s = (int32_t)v[4];
	rc = get_str8(obj, "name", wire_name_valid, JSON_RULE_NAME, set->name, sizeof(set->name),
		      &set->name_len, err);
	if (rc == 1)
		set->fields |= WIRE_SKU_HAS_NAME;
out:
	json_object_put(obj);
	return rc < 0 ? err->status : 0;
}

/* ---- response objects ------------------------------------------------------- */

json_object *json_reservation_new(const WireReservation *r)
{
	char id[RESID_TEXT_LEN + 1], created[25], expires[25];
	json_object *o = json_object_new_object();

	resid_format(&r->id, id);
	clock_format_iso(r->created_ms, created);
	clock_format_iso(r->expires_ms, expires);
	json_object_object_add(o, "reservation_id", json_object_new_string(id));
	json_object_object_add(o, "sku", json_object_new_string_len(r->sku, r->sku_len));
	json_object_object_add(o, "quantity", json_object_new_int(r->quantity));
	json_object_object_add(o, "session", json_object_new_string_len(r->session, r->session_len));
	json_object_object_add(o, "status", json_object_new_string(wire_res_state_name(r->state)));
	json_object_object_add(o, "created_at", json_object_new_string(created));
	json_object_object_add(o, "expires_at", json_object_new_string(expires));
	json_object_object_add(o, "available", json_object_new_int64(r->available));
	return o;
}

json_object *json_sku_new(const WireSku *s, int admin)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "sku", json_object_new_string_len(s->sku, s->sku_len));
	if (admin) {
		json_object_object_add(o, "name", json_object_new_string_len(s->name, s->name_len));
		json_object_object_add(o, "price_cents", json_object_new_int64(s->price_cents));
	}
	json_object_object_add(o, "stock", json_object_new_int64(s->stock));
	json_object_object_add(o, "available",
			       json_object_new_int64(s->stock - s->reserved - s->sold));
	json_object_object_add(o, "reserved", json_object_new_int64(s->reserved));
	json_object_object_add(o, "sold", json_object_new_int64(s->sold));
	if (admin) {
		json_object_object_add(o, "per_session_limit",
				       json_object_new_int(s->per_session_limit));
		json_object_object_add(o, "max_per_order", json_object_new_int(s->max_per_order));
		json_object_object_add(o, "reservation_ttl_s",
				       json_object_new_int(s->reservation_ttl_s));
	}
	return o;
}
