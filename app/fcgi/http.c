/* http.c — requests and responses of the FastCGI front (see http.h). */
#include "fcgi/http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "fcgi/route.h"

/* ---- requests --------------------------------------------------------------- */

static size_t fcgx_read(void *ctx, char *buf, size_t len)
{
	int want = len > (size_t)1 << 30 ? 1 << 30 : (int)len;
	int n = FCGX_GetStr(buf, want, (FCGX_Stream *)ctx);

	return n > 0 ? (size_t)n : 0;
}

/* CONTENT_LENGTH as a number: digits only, or -1. */
static long long parse_length(const char *s)
{
	long long v = 0;

	if (!s || !*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > 100000000000000LL)
			return -1;
		v = v * 10 + (*s - '0');
	}
	return v;
}

void http_request_from_env(HttpRequest *req, char **envp, FCGX_Stream *in)
{
	const char *v;

	memset(req, 0, sizeof(*req));
	v = FCGX_GetParam("REQUEST_METHOD", envp);
	req->method = v ? v : "";
	req->path_info = FCGX_GetParam("PATH_INFO", envp);
	req->request_uri = FCGX_GetParam("REQUEST_URI", envp);
	req->script_name = FCGX_GetParam("SCRIPT_NAME", envp);
	req->query = FCGX_GetParam("QUERY_STRING", envp);
	if (!req->query) {
		v = req->request_uri ? strchr(req->request_uri, '?') : NULL;
		req->query = v ? v + 1 : "";
	}
	req->content_type = FCGX_GetParam("CONTENT_TYPE", envp);
	req->content_length = parse_length(FCGX_GetParam("CONTENT_LENGTH", envp));
	/* Apache hides Authorization from CGI unless told (CGIPassAuth); a
	 * rewrite rule can still hand it over under this name. */
	req->authorization = FCGX_GetParam("HTTP_AUTHORIZATION", envp);
	if (!req->authorization)
		req->authorization = FCGX_GetParam("REDIRECT_HTTP_AUTHORIZATION", envp);
	req->origin = FCGX_GetParam("HTTP_ORIGIN", envp);
	req->remote_addr = FCGX_GetParam("REMOTE_ADDR", envp);
	if (in) {
		req->read = fcgx_read;
		req->read_ctx = in;
	}
}

int http_fail(HttpError *err, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	err->status = status;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return status;
}

int http_content_type_is_json(const char *ct)
{
	static const char want[] = "application/json";
	size_t n = sizeof(want) - 1;

	if (!ct)
		return 0;
	ct += strspn(ct, " \t");
	if (strncasecmp(ct, want, n) != 0)
		return 0;
	ct += n;
	ct += strspn(ct, " \t");
	return *ct == '\0' || *ct == ';';
}

int http_body_read(HttpRequest *req, char *buf, size_t max, size_t *len, HttpError *err)
{
	size_t n = 0;

	if (req->content_length > (long long)max)
		return http_fail(err, 413, "body_too_large",
				 "request body must be at most %zu bytes", max);
	/* Read one byte past the limit at most: that is how a lying length shows. */
	while (req->read && !req->body_ended && n <= max) {
		size_t got = req->read(req->read_ctx, buf + n, max + 1 - n);

		if (got == 0) {
			req->body_ended = 1;
			break;
		}
		n += got;
		req->body_read += got;
	}
	if (n > max)
		return http_fail(err, 413, "body_too_large",
				 "request body must be at most %zu bytes", max);
	if (n == 0)
		return http_fail(err, 400, "invalid_request", "a JSON request body is required");
	if (!http_content_type_is_json(req->content_type))
		return http_fail(err, 415, "unsupported_media_type",
				 "Content-Type must be application/json");
	buf[n] = '\0';
	*len = n;
	return 0;
}

int http_drain(HttpRequest *req)
{
	char scratch[4096];
	size_t total = 0;

	while (req->read && !req->body_ended) {
		if (total >= HTTP_DRAIN_MAX)
			return 0;
		size_t got = req->read(req->read_ctx, scratch, sizeof(scratch));
		if (got == 0)
			req->body_ended = 1;
		total += got;
	}
	return 1;
}

int http_query_get(const char *query, const char *name, char *out, size_t out_size,
		   size_t *out_len)
{
	size_t qlen = strnlen(query ? query : "", HTTP_QUERY_SCAN_MAX);
	size_t i = 0;

	while (i < qlen) {
		size_t end = i, eq;
		char key[64];
		size_t key_len;

		while (end < qlen && query[end] != '&')
			end++;
		for (eq = i; eq < end && query[eq] != '='; eq++)
			;
		if (route_unescape(query + i, eq - i, key, sizeof(key), &key_len) == 0 &&
		    strcmp(key, name) == 0) {
			size_t vstart = eq < end ? eq + 1 : end;
			return route_unescape(query + vstart, end - vstart, out, out_size, out_len) == 0
			       ? 1 : -EINVAL;
		}
		i = end + 1;
	}
	return 0;
}

int http_bearer_token(const char *auth, const char **token, size_t *token_len)
{
	size_t len;

	if (!auth)
		return 0;
	auth += strspn(auth, " \t");
	if (strncasecmp(auth, "Bearer", 6) != 0 || (auth[6] != ' ' && auth[6] != '\t'))
		return 0;
	auth += 6;
	auth += strspn(auth, " \t");
	len = strlen(auth);
	while (len && (auth[len - 1] == ' ' || auth[len - 1] == '\t'))
		len--;
	if (!len)
		return 0;
	*token = auth;
	*token_len = len;
	return 1;
}

int http_secret_equal(const char *given, size_t given_len, const char *want, size_t want_len)
{
	/* Every byte of want is looked at whatever given holds, and nothing
	 * branches on a comparison: the time says the lengths, not the secret. */
	volatile unsigned char diff = given_len != want_len;

	for (size_t i = 0; i < want_len; i++)
		diff |= (unsigned char)(want[i] ^ (i < given_len ? given[i] : 0));
	return diff == 0;
}

/* ---- responses -------------------------------------------------------------- */

void http_response_init(HttpResponse *resp)
{
	memset(resp, 0, sizeof(*resp));
	buf_init(&resp->body, 1024);
}

void http_response_reset(HttpResponse *resp)
{
	resp->status = 0;
	resp->content_type = NULL;
	resp->cache_control = NULL;
	resp->headers_len = 0;
	resp->headers[0] = '\0';
	buf_reset(&resp->body);
}

void http_response_free(HttpResponse *resp)
{
	buf_free(&resp->body);
}

int http_header(HttpResponse *resp, const char *name, const char *fmt, ...)
{
	size_t room = sizeof(resp->headers) - resp->headers_len;
	char *at = resp->headers + resp->headers_len;
	va_list ap;
	int n, m;

	n = snprintf(at, room, "%s: ", name);
	if (n < 0 || (size_t)n >= room)
		goto full;
	va_start(ap, fmt);
	m = vsnprintf(at + n, room - (size_t)n, fmt, ap);
	va_end(ap);
	if (m < 0 || (size_t)(n + m) + 2 >= room)
		goto full;
	memcpy(at + n + m, "\r\n", 3);
	resp->headers_len += (size_t)(n + m) + 2;
	return 0;
full:
	*at = '\0';
	return -ENOSPC;
}

void http_json(HttpResponse *resp, int status, json_object *obj)
{
	size_t len = 0;
	const char *text = json_object_to_json_string_length(
		obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

	resp->status = status;
	buf_reset(&resp->body);
	buf_append(&resp->body, text, len);
	json_object_put(obj);
}

void http_error(HttpResponse *resp, const HttpError *err, json_object *extra)
{
	json_object *obj = json_object_new_object();

	json_object_object_add(obj, "error", json_object_new_string(err->code));
	json_object_object_add(obj, "message", json_object_new_string(err->message));
	if (extra) {
		json_object_iter it;

		json_object_object_foreachC(extra, it)
			json_object_object_add(obj, it.key, json_object_get(it.val));
		json_object_put(extra);
	}
	http_json(resp, err->status, obj);
}

/* 1 when origin is one of the comma-separated entries of list (blanks
 * around entries ignored). */
static int origin_listed(const char *list, const char *origin)
{
	size_t olen = strlen(origin);

	while (*list) {
		size_t len;

		list += strspn(list, " \t,");
		len = strcspn(list, ",");
		size_t trimmed = len;
		while (trimmed && (list[trimmed - 1] == ' ' || list[trimmed - 1] == '\t'))
			trimmed--;
		if (trimmed && trimmed == olen && memcmp(list, origin, olen) == 0)
			return 1;
		list += len;
	}
	return 0;
}

void http_cors(HttpResponse *resp, const char *allowed, const char *origin, int preflight,
	       unsigned allow)
{
	const char *value;
	char methods[64];

	if (!allowed || !origin || !*origin)
		return;
	allowed += strspn(allowed, " \t");
	if (!*allowed)
		return;
	if (strcmp(allowed, "*") == 0)
		value = "*";
	else if (origin_listed(allowed, origin))
		value = origin;
	else
		return;
	http_header(resp, "Access-Control-Allow-Origin", "%s", value);
	http_header(resp, "Vary", "Origin");
	if (preflight) {
		route_allow_format(allow, methods, sizeof(methods));
		http_header(resp, "Access-Control-Allow-Methods", "%s", methods);
		http_header(resp, "Access-Control-Allow-Headers", "Content-Type, Authorization");
		http_header(resp, "Access-Control-Max-Age", "600");
	} else {
		/* So a checkout page can read how long to wait after a 503. */
		http_header(resp, "Access-Control-Expose-Headers", "Retry-After");
	}
}

const char *http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	}
	return "Unknown";
}

size_t http_format_head(const HttpResponse *resp, char *out, size_t out_len)
{
	char length[48] = "";
	int n;

	if (resp->status != 204)
		snprintf(length, sizeof(length), "Content-Length: %zu\r\n", resp->body.len);
	n = snprintf(out, out_len, "Status: %d %s\r\nContent-Type: %s\r\nCache-Control: %s\r\n%s%s\r\n",
		     resp->status, http_reason(resp->status),
		     resp->content_type ? resp->content_type : HTTP_JSON,
		     resp->cache_control ? resp->cache_control : "no-store", length, resp->headers);
	if (n < 0)
		return 0;
	return (size_t)n < out_len ? (size_t)n : out_len - 1;
}

int http_send(const HttpResponse *resp, FCGX_Stream *out)
{
	char head[HTTP_HEADERS_MAX + 256];
	size_t n = http_format_head(resp, head, sizeof(head));

	if (FCGX_PutStr(head, (int)n, out) != (int)n)
		return -EIO;
	if (resp->status != 204 && resp->body.len &&
	    FCGX_PutStr((const char *)resp->body.data, (int)resp->body.len, out) != (int)resp->body.len)
		return -EIO;
	return 0;
}
