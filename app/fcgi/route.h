/* route.h — which endpoint of API.md a FastCGI request is for.
 *
 * DESIGN. Web servers hand the path to a FastCGI application differently:
 *   lighttpd  "/api" => (fastcgi)      SCRIPT_NAME=/api  PATH_INFO=/v1/skus/a
 *   Apache    ScriptAlias /api ..., or Alias + SetHandler fcgid-script: the same
 *   nginx     without fastcgi_split_path_info: PATH_INFO empty,
 *             REQUEST_URI=/api/v1/skus/a?x=1 (raw, still percent-encoded)
 * The rule: a non-empty PATH_INFO is the route, already percent-decoded by the
 * server; otherwise the route is REQUEST_URI up to '?', with api_prefix removed
 * when it is a prefix ending at a segment boundary, and each of its segments is
 * percent-decoded here. The path is split on '/' before decoding, so an encoded
 * slash (%2F) stays inside its segment: it makes an id invalid, never a
 * different route. Empty segments (double or trailing slashes) are dropped and
 * "." and ".." are resolved, as the servers themselves do for the paths they
 * decode, so all three give the same answer for the same URL.
 *
 * One refinement: lighttpd decodes %2F in PATH_INFO into a separator, so
 * "/reservations/ID%2Fconfirm" would look like ".../ID/confirm". When the raw
 * REQUEST_URI holds an encoded slash and, minus SCRIPT_NAME (or api_prefix),
 * names the same path as PATH_INFO, its segmentation is used instead, and the
 * encoded slash stays inside its segment as it does under nginx. (Apache
 * refuses %2F itself unless AllowEncodedSlashes is on.)
 *
 * Matching is exact on the literal segments; a parameter segment ({id},
 * {sku}) matches anything, and the handler judges it (an invalid reservation
 * id is 404 unknown_reservation, an invalid sku 404 or 400). A path no route
 * has is ROUTE_NOT_FOUND; a known path with another method is
 * ROUTE_WRONG_METHOD (405 with Allow); OPTIONS on a known path is
 * ROUTE_PREFLIGHT (204, CORS). Nothing here allocates or needs FastCGI. */
#ifndef RG_ROUTE_H
#define RG_ROUTE_H

#include <stddef.h>

#define ROUTE_SEGMENTS_MAX 6   /* the longest route has 4 */
#define ROUTE_SEGMENT_MAX 128  /* decoded bytes kept of one segment; longer is "bad" */

typedef struct RouteSegment {
	char text[ROUTE_SEGMENT_MAX + 1]; /* decoded, NUL-terminated */
	size_t len;
	int bad;                          /* malformed %-escape, %00, or too long */
} RouteSegment;

typedef struct RoutePath {
	RouteSegment seg[ROUTE_SEGMENTS_MAX];
	int count;
	int overflow;                     /* segments beyond ROUTE_SEGMENTS_MAX: no route */
} RoutePath;

typedef enum RouteId {
	ROUTE_NONE = 0,           /* no endpoint (404, 405) */
	ROUTE_RESERVE,            /* POST /v1/reservations */
	ROUTE_GET_RESERVATION,    /* GET  /v1/reservations/{id} */
	ROUTE_CONFIRM,            /* POST /v1/reservations/{id}/confirm */
	ROUTE_RELEASE,            /* POST /v1/reservations/{id}/release */
	ROUTE_GET_SKU,            /* GET  /v1/skus/{sku} */
	ROUTE_ADMIN_GET_SKU,      /* GET  /v1/admin/skus/{sku} */
	ROUTE_ADMIN_PUT_SKU,      /* PUT  /v1/admin/skus/{sku} */
	ROUTE_HEALTH,             /* GET  /v1/health */
	ROUTE_METRICS,            /* GET  /metrics */
	ROUTE_COUNT,
} RouteId;

/* Methods, as bits so a path can list the ones it allows. */
enum {
	ROUTE_M_GET = 1 << 0,
	ROUTE_M_POST = 1 << 1,
	ROUTE_M_PUT = 1 << 2,
	ROUTE_M_OPTIONS = 1 << 3,
	ROUTE_M_OTHER = 1 << 4,   /* HEAD, DELETE, anything else */
};

typedef enum RouteOutcome {
	ROUTE_MATCHED,
	ROUTE_NOT_FOUND,
	ROUTE_WRONG_METHOD,
	ROUTE_PREFLIGHT,
} RouteOutcome;

typedef struct RouteMatch {
	RouteOutcome outcome;
	RouteId id;                 /* ROUTE_MATCHED only, else ROUTE_NONE */
	unsigned allow;             /* methods the path has, ROUTE_M_OPTIONS included */
	const RouteSegment *param;  /* the {id} or {sku} segment (borrowed from the path), or NULL */
} RouteMatch;

/* Computes the route of a request from its CGI parameters (any may be NULL)
 * by the rule above. api_prefix "" or "/" strips nothing. Never fails: an
 * odd path just matches no route. */
void route_path(const char *path_info, const char *request_uri, const char *script_name,
		const char *api_prefix, RoutePath *out);

/* Parses one path (not a whole URI) into segments; encoded: 1 to
 * percent-decode each segment (REQUEST_URI), 0 when already decoded. */
void route_path_parse(const char *path, size_t len, int encoded, RoutePath *out);

/* Matches a path and a REQUEST_METHOD (NULL counts as "other"). */
RouteMatch route_match(const RoutePath *path, const char *method);

/* The method's bit. */
unsigned route_method(const char *method);

/* "GET, PUT, OPTIONS": the Allow header value of a method set. */
void route_allow_format(unsigned allow, char *out, size_t out_len);

/* A short name for logs and metrics labels: "reserve", "get_sku", ... */
const char *route_name(RouteId id);

/* Percent-decodes src[0..len) into out (out_size bytes, NUL-terminated).
 * '+' stays '+' (no value we take can hold a space). Returns 0, -EINVAL for
 * a malformed escape or an encoded NUL, -E2BIG when out is too small. */
int route_unescape(const char *src, size_t len, char *out, size_t out_size, size_t *out_len);

#endif
