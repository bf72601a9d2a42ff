/* fuzz_http.c — rg-fcgi's request path, from CGI parameters to the answer.
 *
 * The entry point is the one worker.c uses after FastCGI has delivered a
 * request: http_request_from_env (parameters) and api_handle (route, body
 * gate, JSON validation, handler, CORS), with the body read from memory
 * instead of an FCGX_Stream. The ledger socket does not exist, so a request
 * that passes every check ends at the 503 of an unreachable ledger; at that
 * point the harness re-validates its body and builds the WireRequest the
 * handler would send: it must pass the wire rules (the encoder asserts them)
 * and survive a decode. So "what HTTP accepts, the ledger accepts" is checked
 * without a ledger.
 *
 * INPUT. Text: "NAME=value" lines (the CGI parameters), an empty line, then
 * the body. E.g. "REQUEST_METHOD=POST\nREQUEST_URI=/api/v1/reservations\n
 * CONTENT_TYPE=application/json\n\n{...}". The body is handed out in chunks
 * whose size depends on the body length, to exercise the gate's loop. With
 * a parameter FUZZ_BOTCHECK the request goes to an Api in hmac bot-check
 * mode, so reservation tokens are parsed too.
 *
 * PROPERTIES
 *   - the status is one API.md uses; 503 has Retry-After, 405 has Allow;
 *   - a JSON answer other than 204 is an object with string "error" and
 *     "message" (no success is possible without a ledger);
 *   - the head has only CRLF-terminated lines of printable bytes (no header
 *     injection from any parameter);
 *   - never more than request_body_max + 1 bytes are read. */
#include "fuzz.h"

#include <string.h>

#include "common/cfg.h"
#include "common/log.h"
#include "common/wire.h"
#include "fcgi/api.h"
#include "fcgi/http.h"
#include "fcgi/json.h"
#include "fcgi/ledger_conn.h"
#include "fcgi/route.h"

#define ENV_MAX 32
#define ADMIN_TOKEN "fuzz-admin-token"

static Config cfg;
static LedgerConn *ledger;
static Api *api, *api_hmac;
static Botcheck *botcheck;
static HttpResponse resp;

typedef struct Body {
	const char *p;
	size_t left, chunk, taken;
} Body;

static size_t body_read(void *ctx, char *buf, size_t len)
{
	Body *b = ctx;
	size_t n = b->left < len ? b->left : len;

	if (n > b->chunk)
		n = b->chunk;
	memcpy(buf, b->p, n);
	b->p += n;
	b->left -= n;
	b->taken += n;
	return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[256];

	fuzz_setup();
	cfg_defaults(&cfg);
	FUZZ_CHECK(cfg_set(&cfg, "admin_token", ADMIN_TOKEN, err, sizeof(err)) == 0);
	FUZZ_CHECK(cfg_set(&cfg, "cors_allowed_origins", "https://shop.example, https://b.example",
			   err, sizeof(err)) == 0);
	log_level = LOG_ERROR; /* every request here ends in a 5xx WARN */
	ledger = ledger_conn_new("/nonexistent/rg-fuzz/ledger.sock", 100, NULL);
	api = api_new(&cfg, NULL, ledger, NULL);
	/* Inputs with the parameter FUZZ_BOTCHECK also pass hmac token parsing. */
	botcheck = botcheck_new(&(BotcheckConfig){ .mode = BOTCHECK_HMAC,
						   .secret = "fuzz-botcheck-secret-0123456789",
						   .max_age_s = 300 }, err, sizeof(err));
	FUZZ_CHECK(botcheck != NULL);
	api_hmac = api_new(&cfg, botcheck, ledger, NULL);
	http_response_init(&resp);
	return 0;
}

static int status_known(int status)
{
	static const int known[] = { 200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415, 429,
				     500, 503 };
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (known[i] == status)
			return 1;
	return 0;
}

static void check_head(void)
{
	static char head[HTTP_HEADERS_MAX + 256];
	size_t n = http_format_head(&resp, head, sizeof(head));

	FUZZ_CHECK(n >= 4 && n < sizeof(head) - 1);
	FUZZ_CHECK(strncmp(head, "Status: ", 8) == 0);
	FUZZ_CHECK(memcmp(head + n - 4, "\r\n\r\n", 4) == 0);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)head[i];
		if (c == '\r')
			FUZZ_CHECK(i + 1 < n && head[i + 1] == '\n');
		else if (c == '\n')
			FUZZ_CHECK(i > 0 && head[i - 1] == '\r');
		else
			FUZZ_CHECK(c >= 0x20 && c != 0x7f);
	}
}

static void check_error_body(void)
{
	struct json_tokener *tok = json_tokener_new();
	json_object *o, *e, *m;

	FUZZ_CHECK(tok != NULL);
	o = json_tokener_parse_ex(tok, (const char *)resp.body.data, (int)resp.body.len);
	FUZZ_CHECK(o != NULL && json_tokener_get_error(tok) == json_tokener_success);
	FUZZ_CHECK(json_object_is_type(o, json_type_object));
	FUZZ_CHECK(json_object_object_get_ex(o, "error", &e) && json_object_is_type(e, json_type_string));
	FUZZ_CHECK(json_object_object_get_ex(o, "message", &m) && json_object_is_type(m, json_type_string));
	json_object_put(o);
	json_tokener_free(tok);
}

/* The request the handler was about to send, rebuilt from the same inputs,
 * must be one the ledger accepts. */
static void check_wire(const HttpRequest *req, const char *body, size_t body_len)
{
	static WireRequest q, back;
	static JsonReserve r;
	RoutePath path;
	RouteMatch m;
	HttpError err;
	size_t used = 0;
	const char *why = NULL;
	Buf out;

	route_path(req->path_info, req->request_uri, req->script_name, cfg.api_prefix, &path);
	m = route_match(&path, req->method);
	if (m.outcome != ROUTE_MATCHED)
		return;
	memset(&q, 0, sizeof(q));
	switch (m.id) {
	case ROUTE_RESERVE:
		FUZZ_CHECK(json_body_reserve(body, body_len, cfg.json_depth_max, &r, &err) == 0);
		q = r.req;
		break;
	case ROUTE_CONFIRM:
	case ROUTE_RELEASE:
		q.op = m.id == ROUTE_CONFIRM ? WIRE_OP_CONFIRM : WIRE_OP_RELEASE;
		FUZZ_CHECK(json_body_session(body, body_len, cfg.json_depth_max, &q, &err) == 0);
		FUZZ_CHECK(resid_parse(m.param->text, m.param->len, &q.reservation) == 0);
		break;
	case ROUTE_ADMIN_PUT_SKU:
		q.op = WIRE_OP_PUT_SKU;
		FUZZ_CHECK(json_body_sku_settings(body, body_len, cfg.json_depth_max, &q.settings,
						  &err) == 0);
		FUZZ_CHECK(!m.param->bad && wire_sku_valid(m.param->text, m.param->len));
		wire_set_str(q.sku, &q.sku_len, m.param->text, m.param->len, WIRE_SKU_MAX);
		break;
	case ROUTE_GET_RESERVATION: {
		char session[WIRE_SESSION_MAX + 2];
		size_t len = 0;
		q.op = WIRE_OP_GET_RESERVATION;
		FUZZ_CHECK(http_query_get(req->query, "session", session, sizeof(session), &len) == 1);
		wire_set_str(q.session, &q.session_len, session, len, WIRE_SESSION_MAX);
		FUZZ_CHECK(resid_parse(m.param->text, m.param->len, &q.reservation) == 0);
		break;
	}
	case ROUTE_GET_SKU:
	case ROUTE_ADMIN_GET_SKU:
		q.op = WIRE_OP_GET_SKU;
		FUZZ_CHECK(!m.param->bad && wire_sku_valid(m.param->text, m.param->len));
		wire_set_str(q.sku, &q.sku_len, m.param->text, m.param->len, WIRE_SKU_MAX);
		break;
	default:
		return; /* health, metrics: nothing to send but STATS */
	}
	buf_init(&out, 256);
	wire_encode_request(&out, &q); /* asserts the wire rules */
	FUZZ_CHECK(wire_decode_request(out.data, out.len, &back, &used, &why) == WIRE_DECODE_OK);
	FUZZ_CHECK(used == out.len);
	buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char text[1 << 16];
	char *envp[ENV_MAX + 1];
	int nenv = 0;
	HttpRequest req;
	Body body;
	size_t i = 0;

	if (size >= sizeof(text))
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	/* Parameters up to the first empty line; a NUL ends a value early, as
	 * it would in FastCGI's own parameter strings. */
	while (i < size && text[i] != '\n') {
		char *line = text + i;
		char *nl = memchr(line, '\n', size - i);
		size_t len = nl ? (size_t)(nl - line) : size - i;
		line[len] = '\0';
		if (nenv < ENV_MAX && strchr(line, '='))
			envp[nenv++] = line;
		i += len + 1;
	}
	envp[nenv] = NULL;
	if (i < size)
		i++; /* the empty line */
	else
		i = size;
	body.p = (const char *)data + i;
	body.left = size - i;
	body.chunk = 1 + body.left % 61;
	body.taken = 0;

	http_request_from_env(&req, envp, NULL);
	req.read = body_read;
	req.read_ctx = &body;
	api_handle(FCGX_GetParam("FUZZ_BOTCHECK", envp) ? api_hmac : api, &req, &resp);

	if (fuzz_verbose)
		fprintf(stderr, "fuzz_http: %d %.*s\n", resp.status, (int)resp.body.len,
			(const char *)resp.body.data);
	FUZZ_CHECK(status_known(resp.status));
	FUZZ_CHECK(body.taken <= (size_t)cfg.request_body_max + 1);
	check_head();
	if (resp.status == 405)
		FUZZ_CHECK(strstr(resp.headers, "Allow: ") != NULL);
	if (resp.status == 503)
		FUZZ_CHECK(strstr(resp.headers, "Retry-After: ") != NULL);
	if (!resp.content_type && resp.status != 204)
		check_error_body();
	if (resp.status == 503)
		check_wire(&req, (const char *)data + i, size - i);
	return 0;
}
