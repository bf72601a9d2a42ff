/* route.c — request path to endpoint (see route.h for the rule). */
#include "fcgi/route.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* One row per (path pattern, method). "*" is the parameter segment. */
typedef struct RouteRow {
	const char *seg[4];
	int count;
	unsigned method;
	RouteId id;
} RouteRow;

static const RouteRow route_rows[] = {
	{ { "v1", "reservations" }, 2, ROUTE_M_POST, ROUTE_RESERVE },
	{ { "v1", "reservations", "*" }, 3, ROUTE_M_GET, ROUTE_GET_RESERVATION },
	{ { "v1", "reservations", "*", "confirm" }, 4, ROUTE_M_POST, ROUTE_CONFIRM },
	{ { "v1", "reservations", "*", "release" }, 4, ROUTE_M_POST, ROUTE_RELEASE },
	{ { "v1", "skus", "*" }, 3, ROUTE_M_GET, ROUTE_GET_SKU },
	{ { "v1", "admin", "skus", "*" }, 4, ROUTE_M_GET, ROUTE_ADMIN_GET_SKU },
	{ { "v1", "admin", "skus", "*" }, 4, ROUTE_M_PUT, ROUTE_ADMIN_PUT_SKU },
	{ { "v1", "health" }, 2, ROUTE_M_GET, ROUTE_HEALTH },
	{ { "metrics" }, 1, ROUTE_M_GET, ROUTE_METRICS },
};

static const char *const route_names[ROUTE_COUNT] = {
	[ROUTE_NONE] = "none",
	[ROUTE_RESERVE] = "reserve",
	[ROUTE_GET_RESERVATION] = "get_reservation",
	[ROUTE_CONFIRM] = "confirm",
	[ROUTE_RELEASE] = "release",
	[ROUTE_GET_SKU] = "get_sku",
	[ROUTE_ADMIN_GET_SKU] = "admin_get_sku",
	[ROUTE_ADMIN_PUT_SKU] = "admin_put_sku",
	[ROUTE_HEALTH] = "health",
	[ROUTE_METRICS] = "metrics",
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int route_unescape(const char *src, size_t len, char *out, size_t out_size, size_t *out_len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		char c = src[i];

		if (c == '%') {
			int hi = i + 2 < len ? hexval(src[i + 1]) : -1;
			int lo = i + 2 < len ? hexval(src[i + 2]) : -1;

			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		if (c == '\0')
			return -EINVAL;
		if (n + 1 >= out_size)
			return -E2BIG;
		out[n++] = c;
	}
	if (out_size == 0)
		return -E2BIG;
	out[n] = '\0';
	*out_len = n;
	return 0;
}

/* Fills seg from one raw segment; a segment that cannot be decoded or kept
 * whole is marked bad and left empty, so it equals no literal. */
static void segment_set(RouteSegment *seg, const char *s, size_t len, int encoded)
{
	int rc = 0;

	if (encoded) {
		rc = route_unescape(s, len, seg->text, sizeof(seg->text), &seg->len);
	} else if (len < sizeof(seg->text) && !memchr(s, '\0', len)) {
		memcpy(seg->text, s, len);
		seg->text[len] = '\0';
		seg->len = len;
	} else {
		rc = -E2BIG;
	}
	seg->bad = rc < 0;
	if (seg->bad) {
		seg->text[0] = '\0';
		seg->len = 0;
	}
}

void route_path_parse(const char *path, size_t len, int encoded, RoutePath *out)
{
	size_t i = 0;

	out->count = 0;
	out->overflow = 0;
	while (i < len) {
		RouteSegment tmp, *seg;
		size_t end;

		while (i < len && path[i] == '/')
			i++;
		if (i == len)
			break;
		for (end = i; end < len && path[end] != '/'; end++)
			;
		seg = out->count < ROUTE_SEGMENTS_MAX && !out->overflow ? &out->seg[out->count] : &tmp;
		segment_set(seg, path + i, end - i, encoded);
		i = end;
		if (!seg->bad && strcmp(seg->text, ".") == 0)
			continue;
		if (!seg->bad && strcmp(seg->text, "..") == 0) {
			if (out->overflow)
				out->overflow--;
			else if (out->count)
				out->count--;
			continue;
		}
		if (seg == &tmp)
			out->overflow++;
		else
			out->count++;
	}
}

/* Where the route starts in uri[0..len): just past api_prefix's segments when
 * the URI starts with all of them (compared decoded, blank segments skipped),
 * else 0. */
static size_t prefix_end(const char *uri, size_t len, const char *prefix)
{
	size_t u = 0, p = 0, plen = strlen(prefix);

	for (;;) {
		char seg[ROUTE_SEGMENT_MAX + 1];
		size_t pe, ue, seg_len;

		while (p < plen && prefix[p] == '/')
			p++;
		if (p == plen)
			return u;
		for (pe = p; pe < plen && prefix[pe] != '/'; pe++)
			;
		while (u < len && uri[u] == '/')
			u++;
		for (ue = u; ue < len && uri[ue] != '/'; ue++)
			;
		if (ue == u || route_unescape(uri + u, ue - u, seg, sizeof(seg), &seg_len) < 0 ||
		    seg_len != pe - p || memcmp(seg, prefix + p, seg_len) != 0)
			return 0;
		u = ue;
		p = pe;
	}
}

/* 1 when the path part of a raw URI holds %2F (any case). */
static int has_encoded_slash(const char *uri, size_t len)
{
	for (size_t i = 0; i + 2 < len; i++) {
		if (uri[i] == '%' && uri[i + 1] == '2' && (uri[i + 2] == 'f' || uri[i + 2] == 'F'))
			return 1;
	}
	return 0;
}

/* The segments joined with '/', or -1 when they do not fit or are not whole. */
static int path_join(const RoutePath *p, char *out, size_t out_len)
{
	size_t n = 0;

	if (p->overflow)
		return -1;
	for (int i = 0; i < p->count; i++) {
		const RouteSegment *seg = &p->seg[i];

		if (seg->bad || n + seg->len + 2 > out_len)
			return -1;
		out[n++] = '/';
		memcpy(out + n, seg->text, seg->len);
		n += seg->len;
	}
	out[n] = '\0';
	return 0;
}

/* out holds PATH_INFO's segments; replaces them with the raw URI's when
 * the URI, without one of the prefixes, is the same path (see route.h). */
static void refine_from_uri(const char *uri, size_t len, const char *script_name,
			    const char *api_prefix, RoutePath *out)
{
	char want[ROUTE_SEGMENTS_MAX * (ROUTE_SEGMENT_MAX + 1) + 1];
	char have[sizeof(want)];
	const char *prefixes[2] = { script_name, api_prefix };
	RoutePath raw;

	if (path_join(out, want, sizeof(want)) < 0)
		return;
	for (int i = 0; i < 2; i++) {
		const char *prefix = prefixes[i] ? prefixes[i] : "";
		size_t start = prefix_end(uri, len, prefix);

		if (!start && prefix[strspn(prefix, "/")])
			continue; /* the URI does not start with this prefix */
		route_path_parse(uri + start, len - start, 1, &raw);
		if (path_join(&raw, have, sizeof(have)) < 0 || strcmp(have, want) != 0)
			continue;
		*out = raw;
		return;
	}
}

void route_path(const char *path_info, const char *request_uri, const char *script_name,
		const char *api_prefix, RoutePath *out)
{
	const char *uri = request_uri ? request_uri : "";
	size_t len = strcspn(uri, "?#"), start;

	if (path_info && *path_info) {
		route_path_parse(path_info, strlen(path_info), 0, out);
		if (has_encoded_slash(uri, len))
			refine_from_uri(uri, len, script_name, api_prefix, out);
		return;
	}
	start = prefix_end(uri, len, api_prefix ? api_prefix : "");
	route_path_parse(uri + start, len - start, 1, out);
}

unsigned route_method(const char *method)
{
	if (!method)
		return ROUTE_M_OTHER;
	if (strcmp(method, "GET") == 0)
		return ROUTE_M_GET;
	if (strcmp(method, "POST") == 0)
		return ROUTE_M_POST;
	if (strcmp(method, "PUT") == 0)
		return ROUTE_M_PUT;
	if (strcmp(method, "OPTIONS") == 0)
		return ROUTE_M_OPTIONS;
	return ROUTE_M_OTHER;
}

static int row_matches(const RouteRow *row, const RoutePath *path, const RouteSegment **param)
{
	if (path->overflow || path->count != row->count)
		return 0;
	*param = NULL;
	for (int i = 0; i < row->count; i++) {
		const RouteSegment *seg = &path->seg[i];

		if (strcmp(row->seg[i], "*") == 0)
			*param = seg;
		else if (seg->bad || strcmp(seg->text, row->seg[i]) != 0)
			return 0;
	}
	return 1;
}

RouteMatch route_match(const RoutePath *path, const char *method)
{
	RouteMatch m = { .outcome = ROUTE_NOT_FOUND, .id = ROUTE_NONE };
	unsigned want = route_method(method);
	const RouteSegment *param = NULL;

	for (size_t i = 0; i < sizeof(route_rows) / sizeof(route_rows[0]); i++) {
		const RouteRow *row = &route_rows[i];

		if (!row_matches(row, path, &param))
			continue;
		m.allow |= row->method | ROUTE_M_OPTIONS;
		m.param = param;
		if (row->method == want) {
			m.outcome = ROUTE_MATCHED;
			m.id = row->id;
		}
	}
	if (m.outcome == ROUTE_MATCHED || !m.allow)
		return m;
	m.outcome = want == ROUTE_M_OPTIONS ? ROUTE_PREFLIGHT : ROUTE_WRONG_METHOD;
	return m;
}

void route_allow_format(unsigned allow, char *out, size_t out_len)
{
	static const struct { unsigned bit; const char *name; } names[] = {
		{ ROUTE_M_GET, "GET" }, { ROUTE_M_POST, "POST" }, { ROUTE_M_PUT, "PUT" },
		{ ROUTE_M_OPTIONS, "OPTIONS" },
	};
	size_t n = 0;

	if (!out_len)
		return;
	out[0] = '\0';
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!(allow & names[i].bit))
			continue;
		int w = snprintf(out + n, out_len - n, "%s%s", n ? ", " : "", names[i].name);
		if (w < 0 || (size_t)w >= out_len - n)
			return;
		n += (size_t)w;
	}
}

const char *route_name(RouteId id)
{
	return id < ROUTE_COUNT ? route_names[id] : "none";
}
