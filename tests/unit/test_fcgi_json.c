/* test_fcgi_json.c — request bodies: the body gate (413, 415, 400) and the
 * JSON rules of every endpoint, as tables of bodies and the answer each must
 * get; accepted bodies and the values they yield; response objects. */
#include "fcgi/json.h"

#include <string.h>

#include "check.h"
#include "fcgi/http.h"

enum { RESERVE, SESSION, SKU };

/* A body and its answer: status 0 means accepted; else the status, error
 * code, and a word the message must contain (the field it names). */
typedef struct BodyCase {
	int kind;
	const char *body;
	int status;
	const char *code;
	const char *names;
} BodyCase;

#define OK(kind, body) { kind, body, 0, NULL, NULL }
#define BAD(kind, body, field) { kind, body, 400, "invalid_request", field }

static const BodyCase body_cases[] = {
	/* not a JSON object */
	BAD(RESERVE, "", "JSON"),
	BAD(RESERVE, "   ", "JSON"),
	BAD(RESERVE, "{", "JSON"),
	BAD(RESERVE, "{\"sku\":\"a\",}", "JSON"),
	BAD(RESERVE, "[]", "object"),
	BAD(RESERVE, "\"sku\"", "object"),
	BAD(RESERVE, "42", "object"),
	BAD(RESERVE, "null", "object"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\"} x", "JSON"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\"}{}", "JSON"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":NaN,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"\xff\",\"quantity\":1,\"session\":\"s\"}", "JSON"),
	/* json-c's strict mode still takes single-quoted keys; JSON does not */
	BAD(RESERVE, "{'sku':\"a\",\"quantity\":1,\"session\":\"s\"}", "JSON"),
	BAD(RESERVE, "{\"sku\":'a',\"quantity\":1,\"session\":\"s\"}", "JSON"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\"} /* c */", "JSON"),
	BAD(RESERVE, "{sku:\"a\",quantity:1,session:\"s\"}", "JSON"),
	OK(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"it's\"}"),
	/* nesting: 8 levels pass (unknown fields are ignored), 9 do not */
	OK(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\","
		    "\"x\":[[[[[[[1]]]]]]]}"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\","
		     "\"x\":[[[[[[[[1]]]]]]]]}", "nested deeper than 8"),
	OK(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\","
		    "\"x\":[[[[[[{}]]]]]]}"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\","
		     "\"x\":[[[[[[[{}]]]]]]]}", "nested deeper than 8"),
	/* brackets inside strings are not nesting */
	OK(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\","
		    "\"x\":\"[[[[[[[[[[{{{{\",\"y\":\"\\\"[[[[[[[[[[\"}"),
	/* sku */
	BAD(RESERVE, "{\"quantity\":1,\"session\":\"s\"}", "sku is required"),
	BAD(RESERVE, "{\"sku\":\"\",\"quantity\":1,\"session\":\"s\"}", "sku must be 1-64"),
	BAD(RESERVE, "{\"sku\":\"a b\",\"quantity\":1,\"session\":\"s\"}", "sku must be"),
	BAD(RESERVE, "{\"sku\":\"a/b\",\"quantity\":1,\"session\":\"s\"}", "sku must be"),
	BAD(RESERVE, "{\"sku\":\"a\\u0000\",\"quantity\":1,\"session\":\"s\"}", "sku must be"),
	BAD(RESERVE, "{\"sku\":\"\xc3\xa9\",\"quantity\":1,\"session\":\"s\"}", "sku must be"),
	BAD(RESERVE, "{\"sku\":7,\"quantity\":1,\"session\":\"s\"}", "sku must be"),
	BAD(RESERVE, "{\"sku\":null,\"quantity\":1,\"session\":\"s\"}", "sku must be"),
	BAD(RESERVE, "{\"sku\":[\"a\"],\"quantity\":1,\"session\":\"s\"}", "sku must be"),
	BAD(RESERVE, "{\"sku\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
		     "\"quantity\":1,\"session\":\"s\"}", "sku must be"),
	OK(RESERVE, "{\"sku\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
		    "\"quantity\":1,\"session\":\"s\"}"),
	OK(RESERVE, "{\"sku\":\"A-z_0.9:x\",\"quantity\":1,\"session\":\"s\"}"),
	/* quantity: a JSON integer within 1..INT32_MAX, nothing else */
	BAD(RESERVE, "{\"sku\":\"a\",\"session\":\"s\"}", "quantity is required"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":0,\"session\":\"s\"}", "quantity must be an integer from 1 to 2147483647"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":-1,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1.0,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1.5,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1e2,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1E0,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":\"1\",\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":true,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":null,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":[1],\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":2147483648,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":-2147483649,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":18446744073709551616,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":99999999999999999999999,\"session\":\"s\"}", "quantity"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":01,\"session\":\"s\"}", "JSON"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":+1,\"session\":\"s\"}", "JSON"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":0x10,\"session\":\"s\"}", "JSON"),
	OK(RESERVE, "{\"sku\":\"a\",\"quantity\":2147483647,\"session\":\"s\"}"),
	/* session */
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1}", "session is required"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"\"}", "session must be 1-128"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"a b\"}", "session"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"a\\tb\"}", "session"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"caf\xc3\xa9\"}", "session"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":1}", "session"),
	OK(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"!~{}<>\\\"/\"}"),
	/* idempotency_key: optional, 1-128 printable ASCII (spaces allowed) */
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\",\"idempotency_key\":\"\"}", "idempotency_key"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\",\"idempotency_key\":5}", "idempotency_key"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\",\"idempotency_key\":null}", "idempotency_key"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\",\"idempotency_key\":\"a\\nb\"}", "idempotency_key"),
	OK(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\",\"idempotency_key\":\"order 17\"}"),
	/* token: optional string */
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\",\"token\":1}", "token"),
	BAD(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\",\"token\":\"a\\u0000b\"}", "token"),
	OK(RESERVE, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\",\"token\":\"\"}"),
	/* unknown fields and whitespace */
	OK(RESERVE, " \r\n\t{ \"extra\" : {\"a\":[1,2,{}]}, \"sku\" : \"a\", \"quantity\" : 1 , "
		    "\"session\" : \"s\" } \n"),

	/* confirm / release */
	BAD(SESSION, "{}", "session is required"),
	BAD(SESSION, "{\"session\":\"\"}", "session"),
	BAD(SESSION, "{\"session\":[]}", "session"),
	BAD(SESSION, "[\"session\"]", "object"),
	OK(SESSION, "{\"session\":\"s1\",\"reason\":\"changed my mind\"}"),

	/* PUT /v1/admin/skus/{sku} */
	BAD(SKU, "{}", "stock is required"),
	BAD(SKU, "{\"name\":\"x\"}", "stock is required"),
	BAD(SKU, "{\"stock\":-1}", "stock must be an integer from 0 to 2147483647"),
	BAD(SKU, "{\"stock\":2147483648}", "stock"),
	BAD(SKU, "{\"stock\":1.0}", "stock"),
	BAD(SKU, "{\"stock\":\"5\"}", "stock"),
	BAD(SKU, "{\"stock\":5,\"price_cents\":-1}", "price_cents"),
	BAD(SKU, "{\"stock\":5,\"price_cents\":1000000000000001}", "price_cents"),
	BAD(SKU, "{\"stock\":5,\"price_cents\":19.99}", "price_cents"),
	BAD(SKU, "{\"stock\":5,\"per_session_limit\":-1}", "per_session_limit"),
	BAD(SKU, "{\"stock\":5,\"max_per_order\":0}", "max_per_order must be an integer from 1"),
	BAD(SKU, "{\"stock\":5,\"reservation_ttl_s\":0}", "reservation_ttl_s"),
	BAD(SKU, "{\"stock\":5,\"reservation_ttl_s\":604801}", "reservation_ttl_s must be an integer from 1 to 604800"),
	BAD(SKU, "{\"stock\":5,\"name\":7}", "name"),
	BAD(SKU, "{\"stock\":5,\"name\":\"a\\nb\"}", "name"),
	BAD(SKU, "{\"stock\":5,\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}", "name must be a string of at most 200"),
	OK(SKU, "{\"stock\":0}"),
	OK(SKU, "{\"stock\":2147483647,\"price_cents\":1000000000000000,\"per_session_limit\":0,"
		"\"max_per_order\":2147483647,\"reservation_ttl_s\":604800,\"name\":\"\"}"),
};

static int parse(int kind, const char *body, HttpError *err)
{
	size_t len = strlen(body);
	WireSkuSettings set;
	WireRequest req;
	JsonReserve r;

	switch (kind) {
	case RESERVE:
		return json_body_reserve(body, len, 8, &r, err);
	case SESSION:
		memset(&req, 0, sizeof(req));
		return json_body_session(body, len, 8, &req, err);
	default:
		return json_body_sku_settings(body, len, 8, &set, err);
	}
}

static void test_body_table(void)
{
	for (size_t i = 0; i < sizeof(body_cases) / sizeof(body_cases[0]); i++) {
		const BodyCase *c = &body_cases[i];
		HttpError err = { 0 };
		int status = parse(c->kind, c->body, &err);
		int ok = status == c->status &&
			 (!c->status || (err.status == c->status && strcmp(err.code, c->code) == 0 &&
					 strstr(err.message, c->names)));

		if (!ok) {
			fprintf(stderr, "body case %zu '%s': got %d %s \"%s\", want %d %s naming '%s'\n",
				i, c->body, status, status ? err.code : "", status ? err.message : "",
				c->status, c->code ? c->code : "", c->names ? c->names : "");
			check_failures++;
		}
	}
}

/* A JSON body with an embedded NUL byte is refused, not truncated. */
static void test_nul_and_lengths(void)
{
	static const char body[] = "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\"}\0{";
	HttpError err = { 0 };
	JsonReserve r;

	CHECK_EQ_INT(json_body_reserve(body, sizeof(body) - 1, 8, &r, &err), 400);
	CHECK(strstr(err.message, "NUL"));
	/* The explicit length is what counts: the same text cut short is refused. */
	CHECK_EQ_INT(json_body_reserve(body, 20, 8, &r, &err), 400);
	CHECK_EQ_INT(json_body_reserve(body, sizeof(body) - 3, 8, &r, &err), 0);
	/* depth_max is a parameter, not a constant */
	CHECK_EQ_INT(json_body_reserve("{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\",\"x\":{}}",
				       45, 1, &r, &err), 400);
	CHECK(strstr(err.message, "nested deeper than 1"));
}

static void test_accepted_values(void)
{
	const char *body = "{\"session\":\"sess-1\",\"sku\":\"tix:vip\",\"quantity\":3,"
			   "\"idempotency_key\":\"k 1\",\"token\":\"1700000000.abc\",\"other\":null}";
	WireSkuSettings set;
	HttpError err = { 0 };
	WireRequest req = { 0 };
	JsonReserve r;

	REQUIRE(json_body_reserve(body, strlen(body), 8, &r, &err) == 0);
	CHECK_EQ_INT(r.req.op, WIRE_OP_RESERVE);
	CHECK(r.req.sku_len == 7 && strcmp(r.req.sku, "tix:vip") == 0);
	CHECK(r.req.session_len == 6 && strcmp(r.req.session, "sess-1") == 0);
	CHECK(r.req.idem_key_len == 3 && strcmp(r.req.idem_key, "k 1") == 0);
	CHECK_EQ_INT(r.req.quantity, 3);
	CHECK(r.has_token && strcmp(r.token, "1700000000.abc") == 0);

	body = "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\"}";
	REQUIRE(json_body_reserve(body, strlen(body), 8, &r, &err) == 0);
	CHECK_EQ_INT(r.req.idem_key_len, 0);
	CHECK(!r.has_token);

	body = "{\"session\":\"s-2\"}";
	REQUIRE(json_body_session(body, strlen(body), 8, &req, &err) == 0);
	CHECK(req.session_len == 3 && strcmp(req.session, "s-2") == 0);

	body = "{\"stock\":40,\"name\":\"Tour / VIP \xc3\xa9\",\"max_per_order\":2}";
	REQUIRE(json_body_sku_settings(body, strlen(body), 8, &set, &err) == 0);
	CHECK_EQ_INT(set.fields, WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_NAME | WIRE_SKU_HAS_MAX_PER_ORDER);
	CHECK_EQ_INT(set.stock, 40);
	CHECK_EQ_INT(set.max_per_order, 2);
	CHECK(set.name_len == 13 && strcmp(set.name, "Tour / VIP \xc3\xa9") == 0);

	body = "{\"stock\":1,\"price_cents\":1999,\"per_session_limit\":4,\"reservation_ttl_s\":60}";
	REQUIRE(json_body_sku_settings(body, strlen(body), 8, &set, &err) == 0);
	CHECK_EQ_INT(set.fields, WIRE_SKU_HAS_STOCK | WIRE_SKU_HAS_PRICE |
				 WIRE_SKU_HAS_SESSION_LIMIT | WIRE_SKU_HAS_TTL);
	CHECK_EQ_INT(set.price_cents, 1999);
	CHECK_EQ_INT(set.per_session_limit, 4);
	CHECK_EQ_INT(set.reservation_ttl_s, 60);
}

/* ---- the body gate ---------------------------------------------------------------- */

typedef struct MemBody {
	const char *data;
	size_t len, pos;
	int reads;
} MemBody;

static size_t mem_read(void *ctx, char *buf, size_t len)
{
	MemBody *m = ctx;
	size_t n = m->len - m->pos < len ? m->len - m->pos : len;

	/* Hand out at most 7 bytes per call, as a stream would in pieces. */
	if (n > 7)
		n = 7;
	memcpy(buf, m->data + m->pos, n);
	m->pos += n;
	m->reads++;
	return n;
}

typedef struct GateCase {
	const char *content_type;
	long long content_length; /* -1: absent */
	const char *body;
	int status;               /* 0: accepted */
	const char *code;
} GateCase;

static const GateCase gate_cases[] = {
	{ "application/json", 2, "{}", 0, NULL },
	{ "application/json; charset=utf-8", 2, "{}", 0, NULL },
	{ "Application/JSON;Charset=UTF-8", 2, "{}", 0, NULL },
	{ " application/json ; charset=utf-8", 2, "{}", 0, NULL },
	{ "application/json", -1, "{}", 0, NULL },                /* no length: read to the end */
	{ "text/plain", 2, "{}", 415, "unsupported_media_type" },
	{ NULL, 2, "{}", 415, "unsupported_media_type" },
	{ "application/jsonx", 2, "{}", 415, "unsupported_media_type" },
	{ "application/json-patch+json", 2, "{}", 415, "unsupported_media_type" },
	{ "application/x-www-form-urlencoded", 5, "a=1&b", 415, "unsupported_media_type" },
	{ "application/json", 0, "", 400, "invalid_request" },    /* a body is required */
	{ NULL, -1, "", 400, "invalid_request" },
	{ "application/json", 32, "0123456789012345678901234567890123", 413, "body_too_large" },
	{ "application/json", 33, "", 413, "body_too_large" },    /* said too much: not read */
	{ "application/json", 4, "0123456789012345678901234567890123", 413, "body_too_large" },
	{ "application/json", -1, "0123456789012345678901234567890123", 413, "body_too_large" },
	{ "application/json", 32, "01234567890123456789012345678901", 0, NULL }, /* exactly max */
};

static void test_body_gate(void)
{
	char buf[33];

	for (size_t i = 0; i < sizeof(gate_cases) / sizeof(gate_cases[0]); i++) {
		const GateCase *c = &gate_cases[i];
		MemBody mem = { .data = c->body, .len = strlen(c->body) };
		HttpRequest req = { .method = "POST", .content_type = c->content_type,
				    .content_length = c->content_length, .read = mem_read,
				    .read_ctx = &mem, .query = "" };
		HttpError err = { 0 };
		size_t len = 0;
		int status = http_body_read(&req, buf, 32, &len, &err);

		if (status != c->status || (status && strcmp(err.code, c->code) != 0) ||
		    (!status && (len != mem.len || memcmp(buf, c->body, len) != 0))) {
			fprintf(stderr, "gate case %zu: got %d %s, want %d %s\n", i, status,
				status ? err.code : "", c->status, c->code ? c->code : "");
			check_failures++;
		}
		/* Bounded: never more than max + 1 bytes taken; a declared
		 * length over the limit reads nothing at all. */
		CHECK(mem.pos <= 33);
		if (c->content_length > 32)
			CHECK_EQ_INT(mem.reads, 0);
	}
}

static void test_content_type(void)
{
	CHECK(http_content_type_is_json("application/json"));
	CHECK(http_content_type_is_json("APPLICATION/JSON"));
	CHECK(http_content_type_is_json("application/json;charset=utf-8"));
	CHECK(!http_content_type_is_json(NULL));
	CHECK(!http_content_type_is_json(""));
	CHECK(!http_content_type_is_json("application/js"));
	CHECK(!http_content_type_is_json("text/json"));
	CHECK(!http_content_type_is_json("application/json x"));
}

/* ---- response objects ----------------------------------------------------------------- */

static const char *body_text(HttpResponse *resp)
{
	buf_reserve(&resp->body, 1);
	resp->body.data[resp->body.len] = '\0';
	return (const char *)resp->body.data;
}

static void test_objects(void)
{
	WireReservation r = { .quantity = 2, .state = WIRE_RES_CONFIRMED,
			      .created_ms = 1796299200000LL, .expires_ms = 1796299500123LL,
			      .available = 41 };
	WireSku s = { .stock = 50, .reserved = 4, .sold = 5, .price_cents = 1999,
		      .per_session_limit = 2, .max_per_order = 10, .reservation_ttl_s = 300 };
	HttpResponse resp;
	HttpError err;

	for (int i = 0; i < RESID_BYTES; i++)
		r.id.b[i] = (uint8_t)(0xa0 + i);
	wire_set_str(r.sku, &r.sku_len, "tix", 3, WIRE_SKU_MAX);
	wire_set_str(r.session, &r.session_len, "s/1", 3, WIRE_SESSION_MAX);
	wire_set_str(s.sku, &s.sku_len, "tix", 3, WIRE_SKU_MAX);
	wire_set_str(s.name, &s.name_len, "A/B \"VIP\"", 9, WIRE_NAME_MAX);

	http_response_init(&resp);
	http_json(&resp, 201, json_reservation_new(&r));
	CHECK_EQ_INT(resp.status, 201);
	CHECK(strcmp(body_text(&resp),
		     "{\"reservation_id\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\",\"sku\":\"tix\","
		     "\"quantity\":2,\"session\":\"s/1\",\"status\":\"confirmed\","
		     "\"created_at\":\"2026-12-03T12:00:00.000Z\","
		     "\"expires_at\":\"2026-12-03T12:05:00.123Z\",\"available\":41}") == 0);

	http_json(&resp, 200, json_sku_new(&s, 0));
	CHECK(strcmp(body_text(&resp), "{\"sku\":\"tix\",\"stock\":50,\"available\":41,"
				       "\"reserved\":4,\"sold\":5}") == 0);
	http_json(&resp, 200, json_sku_new(&s, 1));
	CHECK(strcmp(body_text(&resp),
		     "{\"sku\":\"tix\",\"name\":\"A/B \\\"VIP\\\"\",\"price_cents\":1999,"
		     "\"stock\":50,\"available\":41,\"reserved\":4,\"sold\":5,"
		     "\"per_session_limit\":2,\"max_per_order\":10,\"reservation_ttl_s\":300}") == 0);

	http_fail(&err, 409, "insufficient_stock", "only %d left", 3);
	json_object *extra = json_object_new_object();
	json_object_object_add(extra, "available", json_object_new_int(3));
	http_error(&resp, &err, extra);
	CHECK_EQ_INT(resp.status, 409);
	CHECK(strcmp(body_text(&resp), "{\"error\":\"insufficient_stock\",\"message\":\"only 3 left\","
				       "\"available\":3}") == 0);
	http_response_free(&resp);
}

int main(void)
{
	test_body_table();
	test_nul_and_lengths();
	test_accepted_values();
	test_body_gate();
	test_content_type();
	test_objects();
	return check_exit();
}
