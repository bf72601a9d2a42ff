/* botcheck.h — proof that a buyer is a person, checked before a reservation.
 *
 * The seed design had the edge verify a Cloudflare Turnstile token; shops
 * without one can sign tokens in their own backend. Three modes:
 *   off        every request passes (the default)
 *   hmac       token = "<expiry unix seconds>.<hex HMAC-SHA256(secret, session|expiry)>";
 *              checked offline: the MAC must match in constant time and the
 *              expiry must not have passed (nor lie more than max_age_s ahead)
 *   turnstile  the token is POSTed to a siteverify URL (secret, response, and
 *              remoteip when known) with libcurl, with a timeout; https:// in
 *              production, http:// allowed for tests on loopback; only an
 *              HTTP 200 with {"success": true} passes
 * Any failure — missing token, bad MAC, expired, siteverify says no, times
 * out or is unreachable — is a refusal (the caller answers 403
 * bot_check_failed): a flash sale must fail closed against bots. */
#ifndef RG_BOTCHECK_H
#define RG_BOTCHECK_H

#include <stddef.h>
#include <stdint.h>

typedef enum BotcheckMode {
	BOTCHECK_OFF = 0,
	BOTCHECK_HMAC = 1,
	BOTCHECK_TURNSTILE = 2,
} BotcheckMode;

typedef struct BotcheckConfig {
	BotcheckMode mode;
	const char *secret;          /* hmac: the shared secret; turnstile: the site secret */
	int max_age_s;               /* hmac: how far ahead an expiry may lie */
	const char *turnstile_url;   /* e.g. https://challenges.cloudflare.com/turnstile/v0/siteverify */
	int timeout_ms;              /* turnstile: whole request */
} BotcheckConfig;

typedef struct Botcheck Botcheck;

/* Parses "off|hmac|turnstile" (any case); returns 0 or -EINVAL. */
int botcheck_mode_parse(const char *name, BotcheckMode *out) __attribute__((warn_unused_result));

/* A Botcheck is not thread-safe (turnstile keeps one CURL handle and one
 * answer buffer): one per worker process. The config strings are copied.
 * Returns NULL with a message in why when the config cannot work: hmac with
 * a secret under 16 bytes or max_age_s <= 0; turnstile without a secret, an
 * http(s) URL, or a timeout_ms > 0 (libcurl reads 0 as "wait forever"). */
Botcheck *botcheck_new(const BotcheckConfig *cfg, char *why, size_t why_len);
void botcheck_free(Botcheck *b);

/* 1 when the request may go on, 0 when it must be refused. token may be
 * NULL; remote_ip may be NULL. now_s is the current unix time. A refusal's
 * reason (for logs, never for the buyer) goes to why. */
int botcheck_verify(Botcheck *b, const char *session, const char *token, const char *remote_ip,
		    int64_t now_s, char *why, size_t why_len);

/* Makes an hmac-mode token (for shops' backends, tests and the demo). out
 * needs 96 bytes; on any failure it gets "" (which never verifies). */
void botcheck_sign(const char *secret, const char *session, int64_t expiry_s, char *out, size_t out_len);

#endif
