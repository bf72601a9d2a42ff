/* http.h — the HTTP side of a FastCGI request: what came in, what goes out.
 *
 * DESIGN. A request is the handful of CGI parameters the API looks at plus a
 * body reader; its body is read only when a handler asks, through one bounded
 * gate (http_body_read) that answers 413 from Content-Length without reading,
 * stops at the limit if the length lies, and checks the media type. A response
 * is a status, a few extra header lines and a body in our own buffer; it is
 * formatted by hand ("Status:" header first, as CGI wants) and written with
 * FCGX_PutStr — never FCGX_FPrintF, whose printf lacks %zu. Every response
 * carries Content-Type (JSON unless said otherwise) and Cache-Control
 * (no-store unless said otherwise). Everything but http_request_from_fcgx,
 * http_send and http_drain is pure, so tests drive it without FastCGI. */
#ifndef RG_HTTP_H
#define RG_HTTP_H

#include <stddef.h>

#include <fcgiapp.h>
#include <json-c/json.h>

#include "common/buf.h"

#define HTTP_HEADERS_MAX 2048   /* bytes of extra header lines in one response */
#define HTTP_MESSAGE_MAX 256    /* bytes of an error message */
#define HTTP_DRAIN_MAX (64 * 1024) /* unread body discarded to keep a connection */

#define HTTP_JSON "application/json; charset=utf-8"

/* Reads up to len body bytes into buf; returns the count, 0 at the end. */
typedef size_t (*HttpReadFn)(void *ctx, char *buf, size_t len);

typedef struct HttpRequest {
	const char *method;         /* REQUEST_METHOD; never NULL ("" when absent) */
	const char *path_info;      /* may be NULL */
	const char *request_uri;    /* may be NULL */
	const char *script_name;    /* may be NULL */
	const char *query;          /* QUERY_STRING, or what follows '?' in REQUEST_URI; never NULL */
	const char *content_type;   /* may be NULL */
	long long content_length;   /* -1 when absent or not a number */
	const char *authorization;  /* HTTP_AUTHORIZATION; may be NULL */
	const char *origin;         /* HTTP_ORIGIN; may be NULL */
	const char *remote_addr;    /* may be NULL */
	HttpReadFn read;            /* NULL: no body */
	void *read_ctx;
	size_t body_read;           /* bytes taken through read so far */
	int body_ended;             /* read reported the end */
} HttpRequest;

/* A problem to answer with an error body. */
typedef struct HttpError {
	int status;
	const char *code;           /* static: "invalid_request", ... */
	char message[HTTP_MESSAGE_MAX];
} HttpError;

typedef struct HttpResponse {
	int status;
	const char *content_type;   /* static; NULL means HTTP_JSON */
	const char *cache_control;  /* static; NULL means "no-store" */
	char headers[HTTP_HEADERS_MAX]; /* extra "Name: value\r\n" lines */
	size_t headers_len;
	Buf body;
} HttpResponse;

/* Fills req from FastCGI parameters. envp and stream are borrowed for the
 * life of the request; stream may be NULL (no body). */
void http_request_from_env(HttpRequest *req, char **envp, FCGX_Stream *in);

/* Sets err; returns err->status, so handlers can "return http_fail(...)". */
int http_fail(HttpError *err, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* 1 when a Content-Type names application/json (any case; parameters such
 * as charset allowed), else 0. NULL is 0. */
int http_content_type_is_json(const char *content_type);

/* The body gate. Reads the whole body into buf (at least max + 1 bytes) and
 * sets *len. Returns 0, or an HTTP status with err filled:
 *   413 body_too_large          Content-Length > max (nothing read), or more
 *                               than max bytes arrive whatever it said
 *   400 invalid_request         no body
 *   415 unsupported_media_type  a body that is not application/json */
int http_body_read(HttpRequest *req, char *buf, size_t max, size_t *len, HttpError *err);

/* Looks up name in a query string and percent-decodes its first value into
 * out (out_size bytes). Returns 1 when found, 0 when absent, -EINVAL for a
 * bad escape or a value that does not fit. Looks at most at the first
 * HTTP_QUERY_SCAN_MAX bytes of the query. */
#define HTTP_QUERY_SCAN_MAX 4096
int http_query_get(const char *query, const char *name, char *out, size_t out_size,
		   size_t *out_len);

/* "Bearer <token>" with the scheme in any case: points *token at the token
 * (not NUL-terminated beyond the header's end) and returns 1, else 0. */
int http_bearer_token(const char *authorization, const char **token, size_t *token_len);

/* Compares a secret in time that depends only on the lengths: 1 when equal. */
int http_secret_equal(const char *given, size_t given_len, const char *want, size_t want_len);

/* ---- responses ---- */

void http_response_init(HttpResponse *resp);
void http_response_reset(HttpResponse *resp);
void http_response_free(HttpResponse *resp);

/* Appends "name: value\r\n"; a line that does not fit is dropped (returns
 * -ENOSPC; ours are bounded well under HTTP_HEADERS_MAX). */
int http_header(HttpResponse *resp, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Sets the status and a JSON body; takes ownership of obj. */
void http_json(HttpResponse *resp, int status, json_object *obj);

/* {"error": code, "message": message} plus the fields of extra (an object,
 * or NULL; ownership taken), with err's status. */
void http_error(HttpResponse *resp, const HttpError *err, json_object *extra);

/* Adds the CORS headers when allowed (cors_allowed_origins: "" none, "*" any,
 * else comma-separated exact origins) admits origin. For a preflight also
 * the allowed methods (allow, ROUTE_M_* bits), headers and max age. */
void http_cors(HttpResponse *resp, const char *allowed, const char *origin, int preflight,
	       unsigned allow);

/* The reason phrase of a status we send ("Created"); "Unknown" otherwise. */
const char *http_reason(int status);

/* Formats the head (status, content type, cache control, extra headers and
 * the blank line) into out; returns its length (truncated at out_len - 1). */
size_t http_format_head(const HttpResponse *resp, char *out, size_t out_len);

/* Writes the response to the FastCGI output stream. Returns 0 or -EIO. */
int http_send(const HttpResponse *resp, FCGX_Stream *out);

/* Discards what is left of the body, at most HTTP_DRAIN_MAX bytes; returns
 * 1 when it reached the end (the connection can serve another request). */
int http_drain(HttpRequest *req);

#endif
