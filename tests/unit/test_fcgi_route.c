/* test_fcgi_route.c — which endpoint a request reaches under lighttpd, Apache
 * mod_fcgid and nginx (their CGI parameters differ), method matching (404,
 * 405 with Allow, OPTIONS preflight), query parsing, admin tokens, and the
 * dispatch of api_handle for the answers that need no ledger (a ledger that
 * is not there gives 503 with Retry-After). No processes. */
#include "fcgi/route.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "common/cfg.h"
#include "fcgi/api.h"
#include "fcgi/http.h"
#include "fcgi/ledger_conn.h"
#include "fcgi/metrics.h"

/* One request's CGI parameters and where it must land. param: the decoded
 * {id}/{sku} segment ("!bad" for a segment that cannot be decoded). allow:
 * the Allow value for 405 and preflight. */
typedef struct RouteCase {
	const char *server;
	const char *script_name, *path_info, *request_uri, *prefix, *method;
	RouteOutcome outcome;
	RouteId id;
	const char *param;
	const char *allow;
} RouteCase;

static const RouteCase route_cases[] = {
	/* lighttpd: "/api" => ( fastcgi ): SCRIPT_NAME=/api, PATH_INFO=the rest */
	{ "lighttpd", "/api", "/v1/health", "/api/v1/health", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "lighttpd", "/api", "/v1/reservations", "/api/v1/reservations", "/api", "POST", ROUTE_MATCHED, ROUTE_RESERVE, NULL, NULL },
	{ "lighttpd", "/api", "/v1/reservations/0123abcd", "/api/v1/reservations/0123abcd?session=s1", "/api", "GET",
	  ROUTE_MATCHED, ROUTE_GET_RESERVATION, "0123abcd", NULL },
	{ "lighttpd", "/api", "/v1/reservations/0123abcd/confirm", "/api/v1/reservations/0123abcd/confirm", "/api", "POST",
	  ROUTE_MATCHED, ROUTE_CONFIRM, "0123abcd", NULL },
	{ "lighttpd", "/api", "/v1/reservations/0123abcd/release", "/api/v1/reservations/0123abcd/release", "/api", "POST",
	  ROUTE_MATCHED, ROUTE_RELEASE, "0123abcd", NULL },
	{ "lighttpd", "/api", "/metrics", "/api/metrics", "/api", "GET", ROUTE_MATCHED, ROUTE_METRICS, NULL, NULL },
	/* PATH_INFO wins over REQUEST_URI, whatever the prefix */
	{ "lighttpd", "/api", "/v1/health", "/elsewhere/v1/skus/x", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "lighttpd", "/api", "/v1/health", "/api/v1/health", "", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	/* Apache mod_fcgid, ScriptAlias /api /usr/lib/cgi-bin/rg-fcgi, or Alias +
	 * SetHandler fcgid-script: PATH_INFO decoded by the server */
	{ "apache", "/api", "/v1/skus/tix", "/api/v1/skus/tix", "/api", "GET", ROUTE_MATCHED, ROUTE_GET_SKU, "tix", NULL },
	{ "apache", "/api", "/v1/skus/a:b", "/api/v1/skus/a%3Ab", "/api", "GET", ROUTE_MATCHED, ROUTE_GET_SKU, "a:b", NULL },
	{ "apache", "/api", "/v1/admin/skus/tix", "/api/v1/admin/skus/tix", "/api", "PUT", ROUTE_MATCHED, ROUTE_ADMIN_PUT_SKU, "tix", NULL },
	{ "apache", "/api", "/v1/admin/skus/tix", "/api/v1/admin/skus/tix", "/api", "GET", ROUTE_MATCHED, ROUTE_ADMIN_GET_SKU, "tix", NULL },
	/* already decoded once (from a%2541): never decoded again */
	{ "apache", "/api", "/v1/skus/a%41", "/api/v1/skus/a%2541", "/api", "GET", ROUTE_MATCHED, ROUTE_GET_SKU, "a%41", NULL },
	{ "apache", "/api", "/v1//health", "/api/v1//health", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	/* lighttpd decodes %2F into PATH_INFO; the raw URI keeps it in its segment */
	{ "lighttpd", "/api", "/v1/reservations/abc/confirm", "/api/v1/reservations/abc%2Fconfirm?session=s", "/api",
	  "GET", ROUTE_MATCHED, ROUTE_GET_RESERVATION, "abc/confirm", NULL },
	{ "lighttpd", "/shop", "/v1/skus/a/b", "/shop/v1/skus/a%2fb", "/api", "GET", ROUTE_MATCHED,
	  ROUTE_GET_SKU, "a/b", NULL },
	{ "lighttpd", NULL, "/v1/skus/a/b", "/api/v1/skus/a%2Fb", "/api", "GET", ROUTE_MATCHED,
	  ROUTE_GET_SKU, "a/b", NULL },
	/* ... but only when both name the same path (here a rewrite changed it) */
	{ "lighttpd", "/api", "/v1/skus/a/b", "/old/skus/a%2Fb", "/api", "GET", ROUTE_NOT_FOUND,
	  ROUTE_NONE, NULL, NULL },
	/* nginx without fastcgi_split_path_info: no PATH_INFO, raw REQUEST_URI */
	{ "nginx", "/api/v1/health", "", "/api/v1/health", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "nginx", "/api/v1/health", NULL, "/api/v1/health", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "nginx", "/api/v1/reservations/0123abcd", "", "/api/v1/reservations/0123abcd?session=s1&x=/y", "/api", "GET",
	  ROUTE_MATCHED, ROUTE_GET_RESERVATION, "0123abcd", NULL },
	{ "nginx", "/api/v1/skus/a%3Ab", "", "/api/v1/skus/a%3Ab?x=1", "/api", "GET", ROUTE_MATCHED, ROUTE_GET_SKU, "a:b", NULL },
	{ "nginx", "/api/v1/skus/a%2541", "", "/api/v1/skus/a%2541", "/api", "GET", ROUTE_MATCHED, ROUTE_GET_SKU, "a%41", NULL },
	{ "nginx", "/api/v1/skus/a%2Fb", "", "/api/v1/skus/a%2Fb", "/api", "GET", ROUTE_MATCHED, ROUTE_GET_SKU, "a/b", NULL },
	{ "nginx", "/api/v1/skus/a%00b", "", "/api/v1/skus/a%00b", "/api", "GET", ROUTE_MATCHED, ROUTE_GET_SKU, "!bad", NULL },
	{ "nginx", "/api/v1/skus/a%zzb", "", "/api/v1/skus/a%zzb", "/api", "GET", ROUTE_MATCHED, ROUTE_GET_SKU, "!bad", NULL },
	{ "nginx", "/api/v1/skus/a%4", "", "/api/v1/skus/a%4", "/api", "GET", ROUTE_MATCHED, ROUTE_GET_SKU, "!bad", NULL },
	{ "nginx", "/%61pi/v1/%68ealth", "", "/%61pi/v1/%68ealth", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "nginx", "//api//v1///health", "", "//api//v1///health", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "nginx", "/api/v1/health/", "", "/api/v1/health/", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "nginx", "/api/v1/./skus/../health", "", "/api/v1/./skus/../health", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "nginx", "/api/v1/skus/%2e%2e", "", "/api/v1/skus/%2e%2e", "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "nginx", "/api/metrics", "", "/api/metrics", "/api", "GET", ROUTE_MATCHED, ROUTE_METRICS, NULL, NULL },
	{ "nginx", "/api/v1/health", "", "/api/v1/health", "/api/", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "nginx", "/shop/api/v1/health", "", "/shop/api/v1/health", "/shop/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "nginx", "/v1/health", "", "/v1/health", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "nginx", "/v1/health", "", "/v1/health", "", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "nginx", "/api/v1/health", "", "/api/v1/health", "", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "nginx", "/apix/v1/health", "", "/apix/v1/health", "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "nginx", "/api", "", "/api", "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "nginx", "/api", "", "/api?v1/health", "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "nginx", "/api/v1/a/b/c/d/e/f/g", "", "/api/v1/a/b/c/d/e/f/g", "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "nginx", "/api/v1/a/b/c/d/e/f/../../../../../../health", "", "/api/v1/a/b/c/d/e/f/../../../../../../health", "/api", "GET", ROUTE_MATCHED, ROUTE_HEALTH, NULL, NULL },
	{ "none", NULL, NULL, NULL, "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	/* methods */
	{ "any", NULL, "/v1/reservations", NULL, "/api", "GET", ROUTE_WRONG_METHOD, ROUTE_NONE, NULL, "POST, OPTIONS" },
	{ "any", NULL, "/v1/reservations/x", NULL, "/api", "DELETE", ROUTE_WRONG_METHOD, ROUTE_NONE, "x", "GET, OPTIONS" },
	{ "any", NULL, "/v1/reservations/x/confirm", NULL, "/api", "GET", ROUTE_WRONG_METHOD, ROUTE_NONE, "x", "POST, OPTIONS" },
	{ "any", NULL, "/v1/skus/x", NULL, "/api", "PUT", ROUTE_WRONG_METHOD, ROUTE_NONE, "x", "GET, OPTIONS" },
	{ "any", NULL, "/v1/admin/skus/x", NULL, "/api", "POST", ROUTE_WRONG_METHOD, ROUTE_NONE, "x", "GET, PUT, OPTIONS" },
	{ "any", NULL, "/v1/health", NULL, "/api", "HEAD", ROUTE_WRONG_METHOD, ROUTE_NONE, NULL, "GET, OPTIONS" },
	{ "any", NULL, "/v1/health", NULL, "/api", "get", ROUTE_WRONG_METHOD, ROUTE_NONE, NULL, "GET, OPTIONS" },
	{ "any", NULL, "/v1/health", NULL, "/api", NULL, ROUTE_WRONG_METHOD, ROUTE_NONE, NULL, "GET, OPTIONS" },
	{ "any", NULL, "/v1/admin/skus/x", NULL, "/api", "OPTIONS", ROUTE_PREFLIGHT, ROUTE_NONE, "x", "GET, PUT, OPTIONS" },
	{ "any", NULL, "/v1/reservations", NULL, "/api", "OPTIONS", ROUTE_PREFLIGHT, ROUTE_NONE, NULL, "POST, OPTIONS" },
	{ "any", NULL, "/v1/nothing", NULL, "/api", "OPTIONS", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "any", NULL, "/v1/nothing", NULL, "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "any", NULL, "/v1", NULL, "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "any", NULL, "/V1/health", NULL, "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "any", NULL, "/v1/skus", NULL, "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "any", NULL, "/v1/skus/a/b", NULL, "/api", "GET", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
	{ "any", NULL, "/v1/reservations/x/cancel", NULL, "/api", "POST", ROUTE_NOT_FOUND, ROUTE_NONE, NULL, NULL },
};

static void test_route_table(void)
{
	for (size_t i = 0; i < sizeof(route_cases) / sizeof(route_cases[0]); i++) {
		const RouteCase *c = &route_cases[i];
		RoutePath path;
		RouteMatch m;
		char allow[64];
		int ok;

		route_path(c->path_info, c->request_uri, c->script_name, c->prefix, &path);
		m = route_match(&path, c->method);
		route_allow_format(m.allow, allow, sizeof(allow));
		ok = m.outcome == c->outcome && m.id == c->id;
		if (c->param)
			ok = ok && m.param &&
			     (strcmp(c->param, "!bad") == 0 ? m.param->bad
							    : !m.param->bad && strcmp(m.param->text, c->param) == 0);
		if (c->allow)
			ok = ok && strcmp(allow, c->allow) == 0;
		if (!ok) {
			fprintf(stderr, "route case %zu (%s %s PATH_INFO=%s REQUEST_URI=%s prefix=%s): "
				"got outcome %d id %s param '%s'%s allow '%s'\n", i, c->server,
				c->method ? c->method : "(null)", c->path_info ? c->path_info : "(null)",
				c->request_uri ? c->request_uri : "(null)", c->prefix, m.outcome,
				route_name(m.id), m.param ? m.param->text : "",
				m.param && m.param->bad ? " (bad)" : "", allow);
			check_failures++;
		}
	}
}

static void test_segments(void)
{
	char longer[400];
	RoutePath path;
	RouteMatch m;

	/* A segment longer than any id is kept as "bad", not cut to a valid one. */
	memset(longer, 'a', sizeof(longer));
	memcpy(longer, "/v1/skus/", 9);
	longer[sizeof(longer) - 1] = '\0';
	route_path(longer, NULL, NULL, "/api", &path);
	m = route_match(&path, "GET");
	CHECK(m.outcome == ROUTE_MATCHED && m.id == ROUTE_GET_SKU && m.param && m.param->bad);

	char out[8];
	size_t len = 0;
	CHECK_EQ_INT(route_unescape("a%41+%2f", 8, out, sizeof(out), &len), 0);
	CHECK(len == 4 && strcmp(out, "aA+/") == 0);
	CHECK_EQ_INT(route_unescape("%", 1, out, sizeof(out), &len), -EINVAL);
	CHECK_EQ_INT(route_unescape("%0", 2, out, sizeof(out), &len), -EINVAL);
	CHECK_EQ_INT(route_unescape("%00", 3, out, sizeof(out), &len), -EINVAL);
	CHECK_EQ_INT(route_unescape("%g0", 3, out, sizeof(out), &len), -EINVAL);
	CHECK_EQ_INT(route_unescape("12345678", 8, out, sizeof(out), &len), -E2BIG);
	CHECK_EQ_INT(route_unescape("1234567", 7, out, sizeof(out), &len), 0);
	CHECK_EQ_INT(route_unescape("", 0, out, sizeof(out), &len), 0);
	CHECK_EQ_INT(len, 0);
	CHECK(strcmp(route_name(ROUTE_RESERVE), "reserve") == 0);
	CHECK(strcmp(route_name(ROUTE_COUNT), "none") == 0);
}

static void test_query(void)
{
	char out[16], big[HTTP_QUERY_SCAN_MAX + 64];
	size_t len = 0;

	CHECK_EQ_INT(http_query_get("session=s1", "session", out, sizeof(out), &len), 1);
	CHECK(len == 2 && strcmp(out, "s1") == 0);
	CHECK_EQ_INT(http_query_get("a=1&session=s%2B1&b", "session", out, sizeof(out), &len), 1);
	CHECK(strcmp(out, "s+1") == 0);
	/* '+' stays '+': no value we read may contain a space */
	CHECK_EQ_INT(http_query_get("session=a+b", "session", out, sizeof(out), &len), 1);
	CHECK(strcmp(out, "a+b") == 0);
	CHECK_EQ_INT(http_query_get("session=a&session=b", "session", out, sizeof(out), &len), 1);
	CHECK(strcmp(out, "a") == 0);
	CHECK_EQ_INT(http_query_get("%73ession=x", "session", out, sizeof(out), &len), 1);
	CHECK(strcmp(out, "x") == 0);
	CHECK_EQ_INT(http_query_get("session=", "session", out, sizeof(out), &len), 1);
	CHECK_EQ_INT(len, 0);
	CHECK_EQ_INT(http_query_get("session", "session", out, sizeof(out), &len), 1);
	CHECK_EQ_INT(len, 0);
	CHECK_EQ_INT(http_query_get("sessionx=1&xsession=2", "session", out, sizeof(out), &len), 0);
	CHECK_EQ_INT(http_query_get("", "session", out, sizeof(out), &len), 0);
	CHECK_EQ_INT(http_query_get(NULL, "session", out, sizeof(out), &len), 0);
	CHECK_EQ_INT(http_query_get("session=%zz", "session", out, sizeof(out), &len), -EINVAL);
	CHECK_EQ_INT(http_query_get("session=a%00b", "session", out, sizeof(out), &len), -EINVAL);
	CHECK_EQ_INT(http_query_get("session=0123456789abcdefg", "session", out, sizeof(out), &len),
		     -EINVAL);
	/* Only the first HTTP_QUERY_SCAN_MAX bytes are looked at. */
	memset(big, 'x', sizeof(big));
	memcpy(big, "y=", 2);
	memcpy(big + HTTP_QUERY_SCAN_MAX + 10, "&session=a", 11);
	CHECK_EQ_INT(http_query_get(big, "session", out, sizeof(out), &len), 0);
}

static void test_tokens(void)
{
	const char *t;
	size_t len;

	CHECK(http_bearer_token("Bearer abc", &t, &len) && len == 3 && memcmp(t, "abc", 3) == 0);
	CHECK(http_bearer_token("bearer  abc \t", &t, &len) && len == 3);
	CHECK(!http_bearer_token("Bearer", &t, &len));
	CHECK(!http_bearer_token("Bearer ", &t, &len));
	CHECK(!http_bearer_token("Basic YWxhZGRpbjpvcGVu", &t, &len));
	CHECK(!http_bearer_token("Bearerabc", &t, &len));
	CHECK(!http_bearer_token(NULL, &t, &len));
	CHECK(http_secret_equal("sekret", 6, "sekret", 6));
	CHECK(!http_secret_equal("sekreT", 6, "sekret", 6));
	CHECK(!http_secret_equal("sekre", 5, "sekret", 6));
	CHECK(!http_secret_equal("sekrets", 7, "sekret", 6));
	CHECK(!http_secret_equal("", 0, "sekret", 6));
}

/* ---- api_handle without a ledger ------------------------------------------------------ */

typedef struct MemBody {
	const char *data;
	size_t len, pos;
} MemBody;

static size_t mem_read(void *ctx, char *buf, size_t len)
{
	MemBody *m = ctx;
	size_t n = m->len - m->pos < len ? m->len - m->pos : len;

	memcpy(buf, m->data + m->pos, n);
	m->pos += n;
	return n;
}

typedef struct Fixture {
	Config cfg;
	Metrics *metrics;
	LedgerConn *ledger;
	Api *api;
	HttpResponse resp;
	char head[HTTP_HEADERS_MAX + 256];
	char body[4096];
} Fixture;

/* Runs one request given as "NAME=value" strings (NULL-terminated) and an
 * optional body; leaves the formatted head and body in f. */
static void run(Fixture *f, const char *body, char **env)
{
	MemBody mem = { .data = body ? body : "", .len = body ? strlen(body) : 0 };
	HttpRequest req;

	http_request_from_env(&req, env, NULL);
	req.read = mem_read;
	req.read_ctx = &mem;
	api_handle(f->api, &req, &f->resp);
	http_format_head(&f->resp, f->head, sizeof(f->head));
	snprintf(f->body, sizeof(f->body), "%.*s", (int)f->resp.body.len,
		 (const char *)f->resp.body.data);
}

#define RUN(f, body, ...) run(f, body, (char *[]){ __VA_ARGS__, NULL })

static void test_api_dispatch(void)
{
	char err[256];
	Fixture f;

	cfg_defaults(&f.cfg);
	snprintf(f.cfg.admin_token, sizeof(f.cfg.admin_token), "sekret");
	snprintf(f.cfg.cors_allowed_origins, sizeof(f.cfg.cors_allowed_origins),
		 "https://a.example, https://shop.example");
	f.cfg.ledger_retry_after_s = 3;
	REQUIRE(metrics_open("", &f.metrics, err, sizeof(err)) == 0);
	f.ledger = ledger_conn_new("/nonexistent/rg-test/ledger.sock", 100, f.metrics);
	f.api = api_new(&f.cfg, NULL, f.ledger, f.metrics);
	http_response_init(&f.resp);

	RUN(&f, NULL, "REQUEST_METHOD=GET", "REQUEST_URI=/api/v1/nothing");
	CHECK_EQ_INT(f.resp.status, 404);
	CHECK(strcmp(f.head, "Status: 404 Not Found\r\nContent-Type: application/json; charset=utf-8\r\n"
			     "Cache-Control: no-store\r\nContent-Length: 59\r\n\r\n") == 0);
	CHECK(strcmp(f.body, "{\"error\":\"not_found\",\"message\":\"there is no such endpoint\"}") == 0);

	RUN(&f, NULL, "REQUEST_METHOD=DELETE", "PATH_INFO=/v1/admin/skus/x");
	CHECK_EQ_INT(f.resp.status, 405);
	CHECK(strstr(f.head, "\r\nAllow: GET, PUT, OPTIONS\r\n"));
	CHECK(strstr(f.body, "\"error\":\"method_not_allowed\""));

	/* CORS: an allowed origin gets the headers, another gets none. */
	RUN(&f, NULL, "REQUEST_METHOD=OPTIONS", "PATH_INFO=/v1/reservations",
	    "HTTP_ORIGIN=https://shop.example");
	CHECK_EQ_INT(f.resp.status, 204);
	CHECK(strstr(f.head, "Access-Control-Allow-Origin: https://shop.example\r\n"));
	CHECK(strstr(f.head, "Vary: Origin\r\n"));
	CHECK(strstr(f.head, "Access-Control-Allow-Methods: POST, OPTIONS\r\n"));
	CHECK(strstr(f.head, "Access-Control-Allow-Headers: Content-Type, Authorization\r\n"));
	CHECK(strstr(f.head, "Access-Control-Max-Age: 600\r\n"));
	CHECK(!strstr(f.head, "Content-Length"));
	CHECK_EQ_INT(f.resp.body.len, 0);
	RUN(&f, NULL, "REQUEST_METHOD=OPTIONS", "PATH_INFO=/v1/reservations",
	    "HTTP_ORIGIN=https://shop.example.evil");
	CHECK_EQ_INT(f.resp.status, 204);
	CHECK(!strstr(f.head, "Access-Control"));
	RUN(&f, NULL, "REQUEST_METHOD=GET", "PATH_INFO=/v1/nothing", "HTTP_ORIGIN=https://a.example");
	CHECK(strstr(f.head, "Access-Control-Allow-Origin: https://a.example\r\n"));
	CHECK(!strstr(f.head, "Access-Control-Allow-Methods"));

	/* The ledger is not there: 503 with Retry-After, and again at once. */
	RUN(&f, NULL, "REQUEST_METHOD=GET", "PATH_INFO=/v1/health");
	CHECK_EQ_INT(f.resp.status, 503);
	CHECK(strstr(f.head, "\r\nRetry-After: 3\r\n"));
	CHECK(strstr(f.body, "{\"error\":\"unavailable\",\"message\":\""));
	RUN(&f, "{\"sku\":\"a\",\"quantity\":1,\"session\":\"s\"}", "REQUEST_METHOD=POST",
	    "PATH_INFO=/v1/reservations", "CONTENT_TYPE=application/json");
	CHECK_EQ_INT(f.resp.status, 503);
	CHECK(strstr(f.head, "\r\nRetry-After: 3\r\n"));

	/* Validation comes before the ledger. */
	RUN(&f, "{\"sku\":\"a\",\"quantity\":0,\"session\":\"s\"}", "REQUEST_METHOD=POST",
	    "PATH_INFO=/v1/reservations", "CONTENT_TYPE=application/json");
	CHECK_EQ_INT(f.resp.status, 400);
	CHECK(strstr(f.body, "quantity must be"));
	RUN(&f, "{\"sku\":\"a\"}", "REQUEST_METHOD=POST", "PATH_INFO=/v1/reservations",
	    "CONTENT_TYPE=text/plain");
	CHECK_EQ_INT(f.resp.status, 415);
	RUN(&f, "{}", "REQUEST_METHOD=POST", "PATH_INFO=/v1/reservations",
	    "CONTENT_TYPE=application/json", "CONTENT_LENGTH=5000");
	CHECK_EQ_INT(f.resp.status, 413);
	CHECK(strstr(f.body, "\"error\":\"body_too_large\""));

	RUN(&f, NULL, "REQUEST_METHOD=GET", "PATH_INFO=/v1/reservations/0123456789abcdef0123456789abcdef");
	CHECK_EQ_INT(f.resp.status, 400);
	CHECK(strstr(f.body, "session"));
	RUN(&f, NULL, "REQUEST_METHOD=GET", "PATH_INFO=/v1/reservations/0123456789abcdef0123456789abcdef",
	    "QUERY_STRING=session=a%20b");
	CHECK_EQ_INT(f.resp.status, 400);
	/* QUERY_STRING missing: taken from REQUEST_URI (a malformed id is 404) */
	RUN(&f, NULL, "REQUEST_METHOD=GET", "REQUEST_URI=/api/v1/reservations/not-an-id?session=s");
	CHECK_EQ_INT(f.resp.status, 404);
	CHECK(strstr(f.body, "\"error\":\"unknown_reservation\""));
	RUN(&f, "{\"session\":\"s\"}", "REQUEST_METHOD=POST", "PATH_INFO=/v1/reservations/xyz/confirm",
	    "CONTENT_TYPE=application/json");
	CHECK_EQ_INT(f.resp.status, 404);
	CHECK(strstr(f.body, "\"error\":\"unknown_reservation\""));
	RUN(&f, NULL, "REQUEST_METHOD=POST", "PATH_INFO=/v1/reservations/xyz/release");
	CHECK_EQ_INT(f.resp.status, 400);
	RUN(&f, NULL, "REQUEST_METHOD=GET", "REQUEST_URI=/api/v1/skus/a%2Fb");
	CHECK_EQ_INT(f.resp.status, 404);
	CHECK(strstr(f.body, "\"error\":\"unknown_sku\""));

	/* Admin: no token, a wrong one, the right one in another case of the scheme. */
	RUN(&f, "{\"stock\":1}", "REQUEST_METHOD=PUT", "PATH_INFO=/v1/admin/skus/tix",
	    "CONTENT_TYPE=application/json");
	CHECK_EQ_INT(f.resp.status, 401);
	CHECK(strstr(f.head, "\r\nWWW-Authenticate: Bearer realm=\"revenue-guard\"\r\n"));
	CHECK(strstr(f.body, "\"error\":\"unauthorized\""));
	RUN(&f, NULL, "REQUEST_METHOD=GET", "PATH_INFO=/v1/admin/skus/tix",
	    "HTTP_AUTHORIZATION=Bearer sekreT");
	CHECK_EQ_INT(f.resp.status, 401);
	CHECK(!strstr(f.body, "sekre"));
	RUN(&f, "{\"stock\":1}", "REQUEST_METHOD=PUT", "PATH_INFO=/v1/admin/skus/a b",
	    "CONTENT_TYPE=application/json", "HTTP_AUTHORIZATION=bearer sekret");
	CHECK_EQ_INT(f.resp.status, 400);
	CHECK(strstr(f.body, "sku must be"));
	RUN(&f, "{\"name\":\"x\"}", "REQUEST_METHOD=PUT", "PATH_INFO=/v1/admin/skus/tix",
	    "CONTENT_TYPE=application/json", "REDIRECT_HTTP_AUTHORIZATION=Bearer sekret");
	CHECK_EQ_INT(f.resp.status, 400);
	CHECK(strstr(f.body, "stock is required"));
	/* An empty admin_token admits no one. */
	f.cfg.admin_token[0] = '\0';
	RUN(&f, NULL, "REQUEST_METHOD=GET", "PATH_INFO=/v1/admin/skus/tix", "HTTP_AUTHORIZATION=Bearer ");
	CHECK_EQ_INT(f.resp.status, 401);

	/* /metrics works without a ledger, and counts what happened above. */
	RUN(&f, NULL, "REQUEST_METHOD=GET", "PATH_INFO=/metrics");
	CHECK_EQ_INT(f.resp.status, 200);
	CHECK(strstr(f.head, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	CHECK(strstr(f.body, "rg_http_requests_total{endpoint=\"none\",status=\"404\"} 2\n"));
	CHECK(strstr(f.body, "rg_http_requests_total{endpoint=\"reserve\",status=\"503\"} 1\n"));
	CHECK(strstr(f.body, "rg_reservations_total{outcome=\"unavailable\"} 1\n"));
	CHECK(strstr(f.body, "rg_reservations_total{outcome=\"invalid_request\"} 3\n"));
	CHECK(strstr(f.body, "rg_ledger_roundtrip_seconds_bucket{le=\"+Inf\"} 0\n"));
	CHECK(strstr(f.body, "rg_ledger_up 0\n"));
	CHECK_EQ_INT(metrics_http_count(f.metrics, METRICS_PREFLIGHT, 204), 2);
	CHECK_EQ_INT(metrics_http_count(f.metrics, ROUTE_ADMIN_PUT_SKU, 401), 1);
	CHECK_EQ_INT(metrics_reservation_count(f.metrics, METRICS_UNAVAILABLE), 1);

	http_response_free(&f.resp);
	api_free(f.api);
	ledger_conn_free(f.ledger);
	metrics_close(f.metrics);
}

/* Two mappings of one metrics_file (as two worker processes would have)
 * see each other's counts; a file of another layout is reset. */
static void test_metrics_file(void)
{
	const char *tmp = getenv("RG_TEST_TMP");
	char path[512], err[256] = "";
	Metrics *a, *b;
	FILE *f;

	snprintf(path, sizeof(path), "%s/rg-metrics-%d.bin", tmp && *tmp ? tmp : "/tmp",
		 (int)getpid());
	if (tmp && *tmp)
		REQUIRE(mkdir(tmp, 0755) == 0 || errno == EEXIST);
	f = fopen(path, "w");
	REQUIRE(f && fputs("an older layout", f) >= 0 && fclose(f) == 0);
	REQUIRE(metrics_open(path, &a, err, sizeof(err)) == 0);
	REQUIRE(metrics_open(path, &b, err, sizeof(err)) == 0);
	CHECK_EQ_INT(metrics_http_count(b, ROUTE_HEALTH, 200), 0);
	metrics_http(a, ROUTE_HEALTH, 200);
	metrics_http(b, ROUTE_HEALTH, 200);
	metrics_http(a, ROUTE_HEALTH, 299); /* a status we never send: "other" */
	metrics_reservation(b, METRICS_SOLD_OUT);
	CHECK_EQ_INT(metrics_http_count(a, ROUTE_HEALTH, 200), 2);
	CHECK_EQ_INT(metrics_http_count(b, ROUTE_HEALTH, 299), 1);
	CHECK_EQ_INT(metrics_reservation_count(a, METRICS_SOLD_OUT), 1);
	metrics_close(a);
	metrics_close(b);
	/* Reopened, the counts are still there. */
	REQUIRE(metrics_open(path, &a, err, sizeof(err)) == 0);
	CHECK_EQ_INT(metrics_http_count(a, ROUTE_HEALTH, 200), 2);
	metrics_close(a);
	unlink(path);
	CHECK(metrics_open("/nonexistent/dir/metrics.bin", &a, err, sizeof(err)) < 0);
	CHECK(strstr(err, "metrics_file"));
}

int main(void)
{
	test_metrics_file();
	test_route_table();
	test_segments();
	test_query();
	test_tokens();
	test_api_dispatch();
	return check_exit();
}
