/* botcheck.c — the bot check before a reservation: off, hmac or turnstile.
 *
 * DESIGN. Every path fails closed: the only way to return 1 is to reach the
 * end of a check that positively succeeded, and anything unexpected (a parse
 * error, an OpenSSL or libcurl error, a timeout, an odd answer) is a refusal
 * whose reason goes to why for the log. Reasons never carry the secret or the
 * token: logs travel further than secrets should.
 *
 * hmac tokens have one canonical spelling, the one botcheck_sign writes:
 *   <expiry: 1..18 decimal digits, no leading zero> "." <64 lowercase hex>
 * where the hex is HMAC-SHA256(secret, session "|" expiry). Anything else —
 * upper-case hex, a sign, spaces, a leading zero, a longer MAC — is refused
 * before any MAC is computed, so no input can reach the comparison in a form
 * we did not write. 18 digits cannot overflow int64_t and reach far past any
 * real expiry. The MAC is compared with CRYPTO_memcmp so its timing does not
 * tell an attacker how many leading bytes were right; the expiry is checked
 * only after the MAC, so a log line saying "expired" is about a real token.
 *
 * turnstile POSTs the form to siteverify with one libcurl easy handle per
 * Botcheck, kept for connection reuse (TLS handshakes are the slow part).
 * The handle is configured once: whole-request timeout, no signals (the
 * workers may use threads; SIGALRM-based DNS timeouts would be unsafe), only
 * http/https, no redirects (a redirect is a refusal, never a second request
 * carrying our secret elsewhere), and the answer goes into a fixed buffer in
 * the Botcheck — an answer larger than it is a refusal. A Botcheck is
 * therefore not thread-safe; each worker process makes its own at start.
 * curl_global_init is reference-counted by libcurl, so each turnstile
 * Botcheck takes one reference and botcheck_free gives it back; it is not
 * thread-safe in libcurl 7.x, which is fine as workers create their Botcheck
 * before serving. */
#include "fcgi/botcheck.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "common/xmalloc.h"

#define HMAC_SECRET_MIN 16              /* bytes; shorter secrets are guessable offline */
#define HMAC_MAC_BYTES 32               /* SHA-256 */
#define HMAC_MAC_HEX (2 * HMAC_MAC_BYTES)
#define HMAC_EXPIRY_DIGITS_MAX 18       /* < INT64_MAX, so parsing cannot overflow */
#define HMAC_TOKEN_MAX (HMAC_EXPIRY_DIGITS_MAX + 1 + HMAC_MAC_HEX)
#define HMAC_EXPIRY_MAX INT64_C(999999999999999999)
#define HMAC_SIGN_OUT_MIN 96            /* botcheck.h's promise; a token needs 84 */

#define TURNSTILE_TOKEN_MAX 2048        /* Cloudflare documents 2048 characters */
#define TURNSTILE_IP_MAX 63             /* an IPv6 text address with a zone id fits */
#define TURNSTILE_ANSWER_MAX 16384      /* siteverify answers are a few hundred bytes */
#define TURNSTILE_JSON_DEPTH 8          /* the answer is flat; deeper is not siteverify */
#define TURNSTILE_CODE_MAX 48           /* of an error code quoted in why */

struct Botcheck {
	BotcheckMode mode;
	char *secret;
	size_t secret_len;
	int max_age_s;
	char *url;
	int timeout_ms;

	EVP_MAC *mac;                   /* hmac: fetched once, not per request */

	CURL *curl;                     /* turnstile */
	struct curl_slist *headers;
	int curl_global;                /* holds a curl_global_init reference */
	char curl_error[CURL_ERROR_SIZE];
	size_t answer_len;
	int answer_overflow;
	char answer[TURNSTILE_ANSWER_MAX];
};

static void why_set(char *why, size_t why_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void why_set(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (!why || why_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
}

static const char *const mode_names[] = { "off", "hmac", "turnstile" };

int botcheck_mode_parse(const char *name, BotcheckMode *out)
{
	if (!name)
		return -EINVAL;
	for (int i = 0; i < 3; i++) {
		if (strcasecmp(name, mode_names[i]) == 0) {
			*out = (BotcheckMode)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* ---- hmac ---- */

/* HMAC-SHA256(secret, session "|" expiry) into out. mac may be NULL to fetch
 * one for this call (botcheck_sign has no Botcheck). Returns 0 or -EIO. */
static int hmac_compute(EVP_MAC *mac, const char *secret, size_t secret_len, const char *session,
			int64_t expiry_s, unsigned char out[HMAC_MAC_BYTES])
{
	static char digest[] = "SHA256";
	OSSL_PARAM params[2] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_MAC *fetched = NULL;
	EVP_MAC_CTX *ctx = NULL;
	char expiry[24];
	size_t out_len = 0;
	int rc = -EIO;

	int n = snprintf(expiry, sizeof(expiry), "%" PRId64, expiry_s);
	if (n <= 0 || (size_t)n >= sizeof(expiry))
		return -EIO;
	if (!mac) {
		fetched = EVP_MAC_fetch(NULL, "HMAC", NULL);
		if (!fetched)
			return -EIO;
		mac = fetched;
	}
	ctx = EVP_MAC_CTX_new(mac);
	if (!ctx)
		goto fail;
	if (!EVP_MAC_init(ctx, (const unsigned char *)secret, secret_len, params))
		goto fail;
	if (!EVP_MAC_update(ctx, (const unsigned char *)session, strlen(session)) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)"|", 1) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)expiry, (size_t)n))
		goto fail;
	if (!EVP_MAC_final(ctx, out, &out_len, HMAC_MAC_BYTES) || out_len != HMAC_MAC_BYTES)
		goto fail;
	rc = 0;
fail:
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(fetched);
	return rc;
}

/* Writes an empty string — which never verifies — when it cannot sign: out
 * smaller than the header's 96 bytes (even when this token would fit: a
 * caller relying on less would break on a longer expiry), an expiry outside
 * 1..HMAC_EXPIRY_MAX, or an OpenSSL failure. */
void botcheck_sign(const char *secret, const char *session, int64_t expiry_s, char *out, size_t out_len)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char mac[HMAC_MAC_BYTES];

	if (!out || out_len == 0)
		return;
	out[0] = '\0';
	if (out_len < HMAC_SIGN_OUT_MIN || !secret || !session || expiry_s < 1 || expiry_s > HMAC_EXPIRY_MAX)
		return;
	if (hmac_compute(NULL, secret, strlen(secret), session, expiry_s, mac) < 0)
		return;
	int n = snprintf(out, out_len, "%" PRId64 ".", expiry_s);
	for (int i = 0; i < HMAC_MAC_BYTES; i++) {
		out[n++] = hex[mac[i] >> 4];
		out[n++] = hex[mac[i] & 15];
	}
	out[n] = '\0';
	OPENSSL_cleanse(mac, sizeof(mac));
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* upper case too: it is not the canonical spelling */
}

/* Splits a token into its expiry and MAC; returns 0, or -EINVAL with why set. */
static int hmac_parse(const char *token, int64_t *expiry_s, unsigned char mac[HMAC_MAC_BYTES],
		      char *why, size_t why_len)
{
	/* strnlen: a huge token costs no more than a long-enough one. */
	size_t len = strnlen(token, HMAC_TOKEN_MAX + 1);
	size_t digits = 0;
	int64_t expiry = 0;

	if (len == 0) {
		why_set(why, why_len, "hmac: empty token");
		return -EINVAL;
	}
	if (len > HMAC_TOKEN_MAX) {
		why_set(why, why_len, "hmac: token longer than %d bytes", HMAC_TOKEN_MAX);
		return -EINVAL;
	}
	while (digits < len && token[digits] >= '0' && token[digits] <= '9') {
		if (digits == HMAC_EXPIRY_DIGITS_MAX) {
			why_set(why, why_len, "hmac: expiry longer than %d digits", HMAC_EXPIRY_DIGITS_MAX);
			return -EINVAL;
		}
		expiry = expiry * 10 + (token[digits] - '0');
		digits++;
	}
	if (digits == 0 || token[0] == '0' || digits == len || token[digits] != '.') {
		why_set(why, why_len, "hmac: malformed expiry");
		return -EINVAL;
	}
	if (len - digits - 1 != HMAC_MAC_HEX) {
		why_set(why, why_len, "hmac: MAC is not %d hex digits", HMAC_MAC_HEX);
		return -EINVAL;
	}
	const char *hex = token + digits + 1;
	for (int i = 0; i < HMAC_MAC_BYTES; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			why_set(why, why_len, "hmac: MAC is not lowercase hex");
			return -EINVAL;
		}
		mac[i] = (unsigned char)(hi << 4 | lo);
	}
	*expiry_s = expiry;
	return 0;
}

static int hmac_verify(Botcheck *b, const char *session, const char *token, int64_t now_s,
		       char *why, size_t why_len)
{
	unsigned char got[HMAC_MAC_BYTES], want[HMAC_MAC_BYTES];
	int64_t expiry_s;
	int ok = 0;

	if (!session) {
		why_set(why, why_len, "hmac: no session");
		return 0;
	}
	if (hmac_parse(token, &expiry_s, got, why, why_len) < 0)
		return 0;
	if (hmac_compute(b->mac, b->secret, b->secret_len, session, expiry_s, want) < 0) {
		why_set(why, why_len, "hmac: OpenSSL failed to compute the MAC");
		goto out;
	}
	if (CRYPTO_memcmp(got, want, HMAC_MAC_BYTES) != 0) {
		why_set(why, why_len, "hmac: MAC mismatch");
		goto out;
	}
	/* A negative clock would also let expiry_s - now_s overflow below. */
	if (now_s < 0) {
		why_set(why, why_len, "hmac: clock reads before 1970");
		goto out;
	}
	if (expiry_s < now_s) {
		why_set(why, why_len, "hmac: token expired %" PRId64 " s ago", now_s - expiry_s);
		goto out;
	}
	if (expiry_s - now_s > b->max_age_s) {
		why_set(why, why_len, "hmac: expiry %" PRId64 " s ahead, more than max_age_s %d",
			expiry_s - now_s, b->max_age_s);
		goto out;
	}
	ok = 1;
out:
	OPENSSL_cleanse(want, sizeof(want));
	return ok;
}

/* ---- turnstile ---- */

static size_t turnstile_write(char *data, size_t size, size_t nmemb, void *arg)
{
	Botcheck *b = arg;
	size_t n = size * nmemb;

	if (n > sizeof(b->answer) - b->answer_len) {
		b->answer_overflow = 1;
		return 0; /* fewer bytes than given: libcurl aborts the transfer */
	}
	memcpy(b->answer + b->answer_len, data, n);
	b->answer_len += n;
	return n;
}

/* Copies the first error code of a siteverify answer into out, keeping only
 * the characters codes are made of, so a hostile answer cannot forge log
 * lines. */
static void turnstile_error_code(json_object *answer, char *out, size_t out_len)
{
	json_object *codes, *code;
	size_t n = 0;

	out[0] = '\0';
	if (!json_object_object_get_ex(answer, "error-codes", &codes) ||
	    !json_object_is_type(codes, json_type_array) || json_object_array_length(codes) == 0)
		return;
	code = json_object_array_get_idx(codes, 0);
	if (!json_object_is_type(code, json_type_string))
		return;
	for (const char *s = json_object_get_string(code); *s && n + 1 < out_len; s++) {
		if ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_')
			out[n++] = *s;
	}
	out[n] = '\0';
}

/* Judges the answer in b->answer: 1 only for a JSON object whose "success"
 * is the boolean true, with nothing but whitespace after it. */
static int turnstile_judge(Botcheck *b, char *why, size_t why_len)
{
	json_tokener *tok = json_tokener_new_ex(TURNSTILE_JSON_DEPTH);
	json_object *answer = NULL, *success;
	char code[TURNSTILE_CODE_MAX + 1];
	int ok = 0;

	if (!tok) {
		why_set(why, why_len, "turnstile: out of memory");
		return 0;
	}
	answer = json_tokener_parse_ex(tok, b->answer, (int)b->answer_len);
	if (!answer || json_tokener_get_error(tok) != json_tokener_success) {
		why_set(why, why_len, "turnstile: siteverify answer is not JSON");
		goto out;
	}
	for (size_t i = json_tokener_get_parse_end(tok); i < b->answer_len; i++) {
		char c = b->answer[i];
		if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
			why_set(why, why_len, "turnstile: siteverify answer has trailing bytes");
			goto out;
		}
	}
	if (!json_object_is_type(answer, json_type_object)) {
		why_set(why, why_len, "turnstile: siteverify answer is not an object");
		goto out;
	}
	if (!json_object_object_get_ex(answer, "success", &success) ||
	    !json_object_is_type(success, json_type_boolean)) {
		why_set(why, why_len, "turnstile: siteverify answer has no boolean success");
		goto out;
	}
	if (!json_object_get_boolean(success)) {
		turnstile_error_code(answer, code, sizeof(code));
		why_set(why, why_len, "turnstile: siteverify says no (%s)", code[0] ? code : "no error code");
		goto out;
	}
	ok = 1;
out:
	json_object_put(answer);
	json_tokener_free(tok);
	return ok;
}

static int turnstile_verify(Botcheck *b, const char *token, const char *remote_ip,
			    char *why, size_t why_len)
{
	static char no_body[] = "";
	char *secret = NULL, *response = NULL, *ip = NULL, *form = NULL;
	size_t token_len = strnlen(token, TURNSTILE_TOKEN_MAX + 1);
	size_t form_len = 0;
	long status = 0;
	CURLcode rc;
	int ok = 0;

	if (token_len == 0) {
		why_set(why, why_len, "turnstile: empty token");
		return 0;
	}
	if (token_len > TURNSTILE_TOKEN_MAX) {
		why_set(why, why_len, "turnstile: token longer than %d bytes", TURNSTILE_TOKEN_MAX);
		return 0;
	}
	secret = curl_easy_escape(b->curl, b->secret, (int)b->secret_len);
	response = curl_easy_escape(b->curl, token, (int)token_len);
	/* remoteip is optional to siteverify: one too long to be an address is
	 * left out rather than failing a buyer over the web server's variable. */
	int send_ip = remote_ip && remote_ip[0] &&
		      strnlen(remote_ip, TURNSTILE_IP_MAX + 1) <= TURNSTILE_IP_MAX;
	if (send_ip)
		ip = curl_easy_escape(b->curl, remote_ip, 0);
	if (!secret || !response || (send_ip && !ip)) {
		why_set(why, why_len, "turnstile: out of memory");
		goto out;
	}
	form_len = strlen("secret=") + strlen(secret) + strlen("&response=") + strlen(response) +
		   (ip ? strlen("&remoteip=") + strlen(ip) : 0);
	form = xmalloc(form_len + 1);
	snprintf(form, form_len + 1, "secret=%s&response=%s%s%s", secret, response,
		 ip ? "&remoteip=" : "", ip ? ip : "");

	b->answer_len = 0;
	b->answer_overflow = 0;
	b->curl_error[0] = '\0';
	curl_easy_setopt(b->curl, CURLOPT_POSTFIELDSIZE, (long)form_len);
	curl_easy_setopt(b->curl, CURLOPT_POSTFIELDS, form);
	rc = curl_easy_perform(b->curl);
	/* The handle keeps the pointer, not a copy: leave it nothing to dangle. */
	curl_easy_setopt(b->curl, CURLOPT_POSTFIELDSIZE, 0L);
	curl_easy_setopt(b->curl, CURLOPT_POSTFIELDS, no_body);

	if (b->answer_overflow || rc == CURLE_FILESIZE_EXCEEDED) {
		why_set(why, why_len, "turnstile: siteverify answer over %d bytes", TURNSTILE_ANSWER_MAX);
		goto out;
	}
	if (rc != CURLE_OK) {
		why_set(why, why_len, "turnstile: siteverify request failed: %s",
			b->curl_error[0] ? b->curl_error : curl_easy_strerror(rc));
		goto out;
	}
	if (curl_easy_getinfo(b->curl, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status != 200) {
		why_set(why, why_len, "turnstile: siteverify answered HTTP %ld", status);
		goto out;
	}
	ok = turnstile_judge(b, why, why_len);
out:
	/* The form and the escaped secret held the secret: wipe before freeing. */
	if (form)
		OPENSSL_cleanse(form, form_len);
	if (secret)
		OPENSSL_cleanse(secret, strlen(secret));
	free(form);
	curl_free(secret);
	curl_free(response);
	curl_free(ip);
	return ok;
}

/* Configures the easy handle once for every siteverify request. */
static int turnstile_setup(Botcheck *b, char *why, size_t why_len)
{
	CURLcode rc = CURLE_OK;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		why_set(why, why_len, "botcheck: curl_global_init failed");
		return -EIO;
	}
	b->curl_global = 1;
	b->curl = curl_easy_init();
	/* libcurl sends "Expect: 100-continue" for larger bodies and may then
	 * wait a second for a 100 that many servers never send. */
	b->headers = curl_slist_append(NULL, "Expect:");
	if (!b->curl || !b->headers) {
		why_set(why, why_len, "botcheck: cannot create a libcurl handle");
		return -ENOMEM;
	}
#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(b->curl, opt, val); } while (0)
	SET(CURLOPT_URL, b->url);
	SET(CURLOPT_ERRORBUFFER, b->curl_error);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_TIMEOUT_MS, (long)b->timeout_ms);
#if LIBCURL_VERSION_NUM >= 0x075500
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
	SET(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_MAXREDIRS, 0L);
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)TURNSTILE_ANSWER_MAX);
	SET(CURLOPT_WRITEFUNCTION, turnstile_write);
	SET(CURLOPT_WRITEDATA, b);
	SET(CURLOPT_HTTPHEADER, b->headers);
	SET(CURLOPT_USERAGENT, "revenue-guard/" RG_VERSION);
#undef SET
	if (rc != CURLE_OK) {
		why_set(why, why_len, "botcheck: libcurl refused an option: %s", curl_easy_strerror(rc));
		return -EINVAL;
	}
	return 0;
}

/* ---- the object ---- */

Botcheck *botcheck_new(const BotcheckConfig *cfg, char *why, size_t why_len)
{
	Botcheck *b;

	why_set(why, why_len, "%s", "");
	if (!cfg) {
		why_set(why, why_len, "botcheck: no config");
		return NULL;
	}
	switch (cfg->mode) {
	case BOTCHECK_OFF:
		break;
	case BOTCHECK_HMAC:
		if (!cfg->secret || !cfg->secret[0]) {
			why_set(why, why_len, "botcheck: hmac mode needs a secret");
			return NULL;
		}
		if (strlen(cfg->secret) < HMAC_SECRET_MIN) {
			why_set(why, why_len, "botcheck: hmac secret must be at least %d bytes", HMAC_SECRET_MIN);
			return NULL;
		}
		/* 0 or less would refuse every token the moment after it was made. */
		if (cfg->max_age_s <= 0) {
			why_set(why, why_len, "botcheck: hmac mode needs max_age_s > 0");
			return NULL;
		}
		break;
	case BOTCHECK_TURNSTILE:
		if (!cfg->secret || !cfg->secret[0]) {
			why_set(why, why_len, "botcheck: turnstile mode needs a secret");
			return NULL;
		}
		if (!cfg->turnstile_url || (strncmp(cfg->turnstile_url, "https://", 8) != 0 &&
					    strncmp(cfg->turnstile_url, "http://", 7) != 0)) {
			why_set(why, why_len, "botcheck: turnstile mode needs an http:// or https:// URL");
			return NULL;
		}
		/* libcurl reads 0 as "no timeout": a hung siteverify would hang the worker. */
		if (cfg->timeout_ms <= 0) {
			why_set(why, why_len, "botcheck: turnstile mode needs timeout_ms > 0");
			return NULL;
		}
		break;
	default:
		why_set(why, why_len, "botcheck: unknown mode %d", (int)cfg->mode);
		return NULL;
	}

	b = xcalloc(1, sizeof(*b));
	b->mode = cfg->mode;
	b->max_age_s = cfg->max_age_s;
	b->timeout_ms = cfg->timeout_ms;
	if (cfg->mode == BOTCHECK_OFF)
		return b;
	b->secret_len = strlen(cfg->secret);
	b->secret = xstrndup(cfg->secret, b->secret_len);
	if (cfg->mode == BOTCHECK_HMAC) {
		b->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
		if (!b->mac) {
			why_set(why, why_len, "botcheck: OpenSSL has no HMAC");
			goto fail;
		}
		return b;
	}
	b->url = xstrndup(cfg->turnstile_url, strlen(cfg->turnstile_url));
	if (turnstile_setup(b, why, why_len) < 0)
		goto fail;
	return b;
fail:
	botcheck_free(b);
	return NULL;
}

void botcheck_free(Botcheck *b)
{
	if (!b)
		return;
	if (b->curl)
		curl_easy_cleanup(b->curl);
	curl_slist_free_all(b->headers);
	if (b->curl_global)
		curl_global_cleanup();
	EVP_MAC_free(b->mac);
	if (b->secret)
		OPENSSL_cleanse(b->secret, b->secret_len);
	free(b->secret);
	free(b->url);
	free(b);
}

int botcheck_verify(Botcheck *b, const char *session, const char *token, const char *remote_ip,
		    int64_t now_s, char *why, size_t why_len)
{
	why_set(why, why_len, "%s", "");
	if (!b) {
		why_set(why, why_len, "botcheck: not configured");
		return 0;
	}
	if (b->mode == BOTCHECK_OFF)
		return 1;
	if (!token) {
		why_set(why, why_len, "%s: no token", mode_names[b->mode]);
		return 0;
	}
	if (b->mode == BOTCHECK_HMAC)
		return hmac_verify(b, session, token, now_s, why, why_len);
	return turnstile_verify(b, token, remote_ip, why, why_len);
}
