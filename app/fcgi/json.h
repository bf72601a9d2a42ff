/* json.h — JSON request bodies in, JSON objects out (json-c).
 *
 * DESIGN. A body is parsed once, with its explicit length, by a strict
 * tokener that validates UTF-8 and stops at json_depth_max levels of nesting;
 * it must be exactly one object (trailing whitespace allowed). Fields are then
 * taken by name with getters that insist on the JSON type — an integer is a
 * json-c int: 1.0, 1e2, "1", true and null are not — and on the field's range
 * and the wire rules of wire.h, so the HTTP layer and the ledger accept
 * exactly the same values. Unknown fields are ignored. The first problem found
 * becomes a 400 invalid_request whose message names the field (the JSON_RULE_*
 * sentences, shared with the handlers that check path and query values).
 * Nothing here needs FastCGI. */
#ifndef RG_JSON_H
#define RG_JSON_H

#include <stddef.h>

#include <json-c/json.h>

#include "common/wire.h"
#include "fcgi/http.h"

#define JSON_TOKEN_MAX 2048 /* bot-check tokens (Turnstile's are at most 2048) */

#define JSON_RULE_SKU "sku must be 1-64 characters of A-Z a-z 0-9 . _ : -"
#define JSON_RULE_SESSION "session must be 1-128 printable ASCII characters without spaces"
#define JSON_RULE_IDEM_KEY "idempotency_key must be 1-128 printable ASCII characters"
#define JSON_RULE_QUANTITY "quantity must be an integer from 1 to 2147483647"
#define JSON_RULE_NAME "name must be a string of at most 200 bytes without control characters"
#define JSON_RULE_TOKEN "token must be a string of at most 2048 characters"

/* POST /v1/reservations */
typedef struct JsonReserve {
	WireRequest req;                 /* op RESERVE with sku, session, idem_key, quantity */
	char token[JSON_TOKEN_MAX + 1];
	int has_token;
} JsonReserve;

/* Parses body[0..len) into a new object (the caller puts it), or returns
 * NULL with a 400 in err: not JSON, nested deeper than depth_max, trailing
 * bytes, or not an object. */
json_object *json_body_parse(const char *body, size_t len, int depth_max, HttpError *err);

/* Each parses a whole body and returns 0, or 400 with err filled. */
int json_body_reserve(const char *body, size_t len, int depth_max, JsonReserve *out,
		      HttpError *err);
/* {"session"} of confirm and release: fills req->session. */
int json_body_session(const char *body, size_t len, int depth_max, WireRequest *req,
		      HttpError *err);
/* PUT /v1/admin/skus/{sku}: "stock" is required, the rest optional; sets
 * set->fields to what was given. */
int json_body_sku_settings(const char *body, size_t len, int depth_max, WireSkuSettings *set,
			   HttpError *err);

/* The reservation object of API.md. */
json_object *json_reservation_new(const WireReservation *r);
/* {"sku","stock","available","reserved","sold"}; with admin also name,
 * price_cents and the per-SKU settings. */
json_object *json_sku_new(const WireSku *s, int admin);

#endif
