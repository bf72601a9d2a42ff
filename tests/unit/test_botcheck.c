/* test_botcheck.c — the bot check in its three modes.
 *
 * hmac: a known vector computed outside our code (openssl dgst), round trips,
 * and a table of tokens that must be refused — wrong session or secret, every
 * flipped MAC digit, every truncation, non-canonical spellings, expiry edges.
 * turnstile: a fake siteverify server on 127.0.0.1 (a thread with a listening
 * socket on an ephemeral port) records each form and answers from a script:
 * success, refusals, HTTP errors, malformed or oversized answers, a redirect,
 * silence until the client gives up; plus a port that refuses connections.
 * No traffic leaves 127.0.0.1. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fcgi/botcheck.h"
#include "unit/check.h"

#define SECRET "revenue-guard-test-secret-0123"

/* HMAC-SHA256(SECRET, "sess-42|1767225600"), computed with
 *   printf '%s' 'sess-42|1767225600' | openssl dgst -sha256 -hmac 'revenue-guard-test-secret-0123'
 * and checked with Python's hmac module. */
#define VECTOR_SESSION "sess-42"
#define VECTOR_EXPIRY INT64_C(1767225600)
#define VECTOR_TOKEN "1767225600.316a715cbc7598c23863c070209ffb4ee554d76f1df4b166781ec550057af875"

#define MAX_AGE_S 3600

/* ---- helpers ---- */

static Botcheck *hmac_new(const char *secret)
{
	BotcheckConfig cfg = { .mode = BOTCHECK_HMAC, .secret = secret, .max_age_s = MAX_AGE_S };
	char why[256];
	Botcheck *b = botcheck_new(&cfg, why, sizeof(why));

	if (!b)
		fprintf(stderr, "botcheck_new: %s\n", why);
	REQUIRE(b);
	return b;
}

/* Verifies and checks that a refusal says why and a pass says nothing. */
static int verify(Botcheck *b, const char *session, const char *token, int64_t now_s, char *why, size_t why_len)
{
	int ok = botcheck_verify(b, session, token, "192.0.2.1", now_s, why, why_len);

	CHECK(ok == 0 || ok == 1);
	if (ok)
		CHECK(why[0] == '\0');
	else
		CHECK(why[0] != '\0');
	return ok;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- mode names ---- */

static void test_mode_parse(void)
{
	BotcheckMode m = BOTCHECK_TURNSTILE;

	CHECK_EQ_INT(botcheck_mode_parse("off", &m), 0);
	CHECK_EQ_INT(m, BOTCHECK_OFF);
	CHECK_EQ_INT(botcheck_mode_parse("hmac", &m), 0);
	CHECK_EQ_INT(m, BOTCHECK_HMAC);
	CHECK_EQ_INT(botcheck_mode_parse("turnstile", &m), 0);
	CHECK_EQ_INT(m, BOTCHECK_TURNSTILE);
	/* Case-insensitive, like log_level_parse. */
	CHECK_EQ_INT(botcheck_mode_parse("HMAC", &m), 0);
	CHECK_EQ_INT(m, BOTCHECK_HMAC);

	m = BOTCHECK_TURNSTILE;
	CHECK_EQ_INT(botcheck_mode_parse("", &m), -EINVAL);
	CHECK_EQ_INT(botcheck_mode_parse("hmac ", &m), -EINVAL);
	CHECK_EQ_INT(botcheck_mode_parse("of", &m), -EINVAL);
	CHECK_EQ_INT(botcheck_mode_parse("recaptcha", &m), -EINVAL);
	CHECK_EQ_INT(botcheck_mode_parse(NULL, &m), -EINVAL);
	CHECK_EQ_INT(m, BOTCHECK_TURNSTILE); /* untouched on error */
}

/* ---- botcheck_new ---- */

static void expect_new_refused(const BotcheckConfig *cfg, const char *needle)
{
	char why[256] = "";
	Botcheck *b = botcheck_new(cfg, why, sizeof(why));

	CHECK(b == NULL);
	botcheck_free(b);
	CHECK(why[0] != '\0');
	if (needle && !strstr(why, needle)) {
		fprintf(stderr, "why \"%s\" lacks \"%s\"\n", why, needle);
		CHECK(0);
	}
}

static void test_new(void)
{
	BotcheckConfig cfg;
	char why[256];
	Botcheck *b;

	expect_new_refused(NULL, NULL);

	cfg = (BotcheckConfig){ .mode = BOTCHECK_HMAC, .secret = NULL, .max_age_s = 60 };
	expect_new_refused(&cfg, "secret");
	cfg.secret = "";
	expect_new_refused(&cfg, "secret");
	cfg.secret = "fifteen-bytes!!";
	expect_new_refused(&cfg, "16");
	cfg.secret = "sixteen-bytes!!!";
	cfg.max_age_s = 0;
	expect_new_refused(&cfg, "max_age_s");
	cfg.max_age_s = 60;
	b = botcheck_new(&cfg, why, sizeof(why));
	CHECK(b != NULL);
	botcheck_free(b);

	cfg = (BotcheckConfig){ .mode = BOTCHECK_TURNSTILE, .secret = "s",
				.turnstile_url = "https://127.0.0.1/siteverify", .timeout_ms = 1000 };
	cfg.secret = NULL;
	expect_new_refused(&cfg, "secret");
	cfg.secret = "";
	expect_new_refused(&cfg, "secret");
	cfg.secret = "s";
	cfg.turnstile_url = NULL;
	expect_new_refused(&cfg, "URL");
	cfg.turnstile_url = "";
	expect_new_refused(&cfg, "URL");
	cfg.turnstile_url = "ftp://127.0.0.1/siteverify";
	expect_new_refused(&cfg, "URL");
	cfg.turnstile_url = "file:///etc/passwd";
	expect_new_refused(&cfg, "URL");
	cfg.turnstile_url = "127.0.0.1/siteverify";
	expect_new_refused(&cfg, "URL");
	cfg.turnstile_url = "https://127.0.0.1/siteverify";
	cfg.timeout_ms = 0;
	expect_new_refused(&cfg, "timeout_ms");
	cfg.timeout_ms = 1000;
	b = botcheck_new(&cfg, why, sizeof(why));
	CHECK(b != NULL);
	botcheck_free(b);

	cfg = (BotcheckConfig){ .mode = (BotcheckMode)7 };
	expect_new_refused(&cfg, "mode");

	/* A caller without a why buffer gets NULL all the same. */
	cfg = (BotcheckConfig){ .mode = BOTCHECK_HMAC };
	CHECK(botcheck_new(&cfg, NULL, 0) == NULL);

	/* The config strings are copied: the caller's may change afterwards. */
	char secret[] = SECRET;
	cfg = (BotcheckConfig){ .mode = BOTCHECK_HMAC, .secret = secret, .max_age_s = MAX_AGE_S };
	b = botcheck_new(&cfg, why, sizeof(why));
	REQUIRE(b);
	memset(secret, 'x', strlen(secret));
	CHECK_EQ_INT(verify(b, VECTOR_SESSION, VECTOR_TOKEN, VECTOR_EXPIRY - 10, why, sizeof(why)), 1);
	botcheck_free(b);
	botcheck_free(NULL);
}

/* ---- off ---- */

static void test_off(void)
{
	BotcheckConfig cfg = { .mode = BOTCHECK_OFF };
	char why[64] = "stale";
	Botcheck *b = botcheck_new(&cfg, why, sizeof(why));

	REQUIRE(b);
	CHECK_EQ_INT(botcheck_verify(b, NULL, NULL, NULL, 0, why, sizeof(why)), 1);
	CHECK_EQ_INT(botcheck_verify(b, "s", "garbage", "::1", 1, why, sizeof(why)), 1);
	CHECK_EQ_INT(botcheck_verify(b, "s", "garbage", NULL, 1, NULL, 0), 1);
	botcheck_free(b);
}

/* ---- hmac ---- */

static void test_hmac_vector(void)
{
	char token[96], why[256];
	Botcheck *b = hmac_new(SECRET);

	botcheck_sign(SECRET, VECTOR_SESSION, VECTOR_EXPIRY, token, sizeof(token));
	CHECK(strcmp(token, VECTOR_TOKEN) == 0);
	CHECK_EQ_INT(verify(b, VECTOR_SESSION, VECTOR_TOKEN, VECTOR_EXPIRY - 100, why, sizeof(why)), 1);
	botcheck_free(b);
}

static void test_hmac_round_trip(void)
{
	const int64_t now = 1800000000;
	char token[96], why[256];
	Botcheck *b = hmac_new(SECRET);
	Botcheck *other = hmac_new(SECRET "-other");

	botcheck_sign(SECRET, "buyer-1", now + 60, token, sizeof(token));
	CHECK(strlen(token) == 10 + 1 + 64);
	CHECK_EQ_INT(verify(b, "buyer-1", token, now, why, sizeof(why)), 1);
	/* Reusable within its life: the check has no state of its own. */
	CHECK_EQ_INT(verify(b, "buyer-1", token, now + 30, why, sizeof(why)), 1);

	CHECK_EQ_INT(verify(b, "buyer-2", token, now, why, sizeof(why)), 0);
	CHECK(strstr(why, "mismatch") != NULL);
	CHECK(strstr(why, token + 11) == NULL); /* never the MAC in the log */
	CHECK(strstr(why, SECRET) == NULL);
	CHECK_EQ_INT(verify(b, "buyer-1 ", token, now, why, sizeof(why)), 0);
	CHECK_EQ_INT(verify(b, "", token, now, why, sizeof(why)), 0);
	CHECK_EQ_INT(verify(b, NULL, token, now, why, sizeof(why)), 0);
	CHECK_EQ_INT(verify(other, "buyer-1", token, now, why, sizeof(why)), 0);

	/* An empty session is still a session the MAC binds. */
	botcheck_sign(SECRET, "", now + 60, token, sizeof(token));
	CHECK_EQ_INT(verify(b, "", token, now, why, sizeof(why)), 1);
	CHECK_EQ_INT(verify(b, "x", token, now, why, sizeof(why)), 0);

	/* The session|expiry split cannot be shifted: "a|1" + expiry 23 is not
	 * "a" + expiry 123 because "|1" is part of the signed session. */
	botcheck_sign(SECRET, "a|1", 23, token, sizeof(token));
	CHECK_EQ_INT(verify(b, "a", token, 20, why, sizeof(why)), 0);
	CHECK_EQ_INT(verify(b, "a|1", token, 20, why, sizeof(why)), 1);

	botcheck_free(other);
	botcheck_free(b);
}

static void test_hmac_time(void)
{
	const int64_t now = 1800000000;
	char token[96], why[256];
	Botcheck *b = hmac_new(SECRET);

	/* The expiry second itself still passes; the next one does not. */
	botcheck_sign(SECRET, "s", now, token, sizeof(token));
	CHECK_EQ_INT(verify(b, "s", token, now, why, sizeof(why)), 1);
	CHECK_EQ_INT(verify(b, "s", token, now + 1, why, sizeof(why)), 0);
	CHECK(strstr(why, "expired") != NULL);
	botcheck_sign(SECRET, "s", now - 1, token, sizeof(token));
	CHECK_EQ_INT(verify(b, "s", token, now, why, sizeof(why)), 0);
	CHECK(strstr(why, "expired") != NULL);
	botcheck_sign(SECRET, "s", 1, token, sizeof(token));
	CHECK_EQ_INT(verify(b, "s", token, now, why, sizeof(why)), 0);

	/* Exactly max_age_s ahead passes; one more second is too far. */
	botcheck_sign(SECRET, "s", now + MAX_AGE_S, token, sizeof(token));
	CHECK_EQ_INT(verify(b, "s", token, now, why, sizeof(why)), 1);
	botcheck_sign(SECRET, "s", now + MAX_AGE_S + 1, token, sizeof(token));
	CHECK_EQ_INT(verify(b, "s", token, now, why, sizeof(why)), 0);
	CHECK(strstr(why, "max_age_s") != NULL);
	/* The largest expiry we sign, far in the future: refused, no overflow. */
	botcheck_sign(SECRET, "s", INT64_C(999999999999999999), token, sizeof(token));
	CHECK(token[0] != '\0');
	CHECK_EQ_INT(verify(b, "s", token, now, why, sizeof(why)), 0);
	CHECK_EQ_INT(verify(b, "s", token, INT64_C(999999999999999999), why, sizeof(why)), 1);

	/* A clock before 1970 is a broken clock, not a reason to pass. */
	botcheck_sign(SECRET, "s", 10, token, sizeof(token));
	CHECK_EQ_INT(verify(b, "s", token, -5, why, sizeof(why)), 0);
	CHECK_EQ_INT(verify(b, "s", token, INT64_MIN, why, sizeof(why)), 0);
	CHECK_EQ_INT(verify(b, "s", token, INT64_MAX, why, sizeof(why)), 0);

	botcheck_free(b);
}

static void test_hmac_malformed(void)
{
	const int64_t now = VECTOR_EXPIRY - 100;
	const char *mac = strchr(VECTOR_TOKEN, '.') + 1;
	char token[256], why[256];
	Botcheck *b = hmac_new(SECRET);

	CHECK_EQ_INT(verify(b, VECTOR_SESSION, VECTOR_TOKEN, now, why, sizeof(why)), 1);

	/* Every MAC digit changed, and every expiry digit. */
	for (size_t i = 0; i < strlen(VECTOR_TOKEN); i++) {
		if (VECTOR_TOKEN[i] == '.')
			continue;
		snprintf(token, sizeof(token), "%s", VECTOR_TOKEN);
		token[i] = token[i] == '0' ? '1' : '0';
		CHECK(strcmp(token, VECTOR_TOKEN) != 0);
		CHECK_EQ_INT(verify(b, VECTOR_SESSION, token, now, why, sizeof(why)), 0);
	}
	/* Every truncation, down to the empty string. */
	for (size_t len = 0; len < strlen(VECTOR_TOKEN); len++) {
		snprintf(token, sizeof(token), "%.*s", (int)len, VECTOR_TOKEN);
		CHECK_EQ_INT(verify(b, VECTOR_SESSION, token, now, why, sizeof(why)), 0);
	}

	/* Spellings other than the canonical one. Upper-case hex is refused:
	 * botcheck_sign never writes it, so a token carrying it did not come
	 * from a signer of ours. */
	static const char *const prefixes[] = {
		"+1767225600.", "-1767225600.", " 1767225600.", "01767225600.", "1767225600 .",
		"1767225600..", "1767225600,", "1767225600", "0x6954e380.", "1767225600a.",
		"1.767225600.", "17672256OO.", ".", "",
	};
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		snprintf(token, sizeof(token), "%s%s", prefixes[i], mac);
		CHECK_EQ_INT(verify(b, VECTOR_SESSION, token, now, why, sizeof(why)), 0);
	}
	snprintf(token, sizeof(token), "%s", VECTOR_TOKEN);
	for (char *p = strchr(token, '.'); *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	CHECK_EQ_INT(verify(b, VECTOR_SESSION, token, now, why, sizeof(why)), 0);
	CHECK(strstr(why, "lowercase") != NULL);
	snprintf(token, sizeof(token), "%s", VECTOR_TOKEN);
	token[strlen(token) - 1] = 'F'; /* a single upper-case digit is enough */
	CHECK_EQ_INT(verify(b, VECTOR_SESSION, token, now, why, sizeof(why)), 0);

	static const char *const suffixes[] = { "0", "\n", " ", ".", "%00", "\t" };
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(token, sizeof(token), "%s%s", VECTOR_TOKEN, suffixes[i]);
		CHECK_EQ_INT(verify(b, VECTOR_SESSION, token, now, why, sizeof(why)), 0);
	}
	snprintf(token, sizeof(token), " %s", VECTOR_TOKEN);
	CHECK_EQ_INT(verify(b, VECTOR_SESSION, token, now, why, sizeof(why)), 0);
	/* A MAC of non-hex characters of the right length. */
	snprintf(token, sizeof(token), "1767225600.%064d", 0);
	token[20] = 'g';
	CHECK_EQ_INT(verify(b, VECTOR_SESSION, token, now, why, sizeof(why)), 0);
	/* 19 digits: more than an expiry may have (and than int64_t holds). */
	snprintf(token, sizeof(token), "9999999999999999999.%s", mac);
	CHECK_EQ_INT(verify(b, VECTOR_SESSION, token, now, why, sizeof(why)), 0);

	CHECK_EQ_INT(verify(b, VECTOR_SESSION, "", now, why, sizeof(why)), 0);
	CHECK_EQ_INT(verify(b, VECTOR_SESSION, NULL, now, why, sizeof(why)), 0);
	CHECK(strstr(why, "no token") != NULL);

	/* A megabyte of digits: refused as too long, not read to the end. */
	size_t huge_len = 1 << 20;
	char *huge = malloc(huge_len + 1);
	REQUIRE(huge);
	memset(huge, '1', huge_len);
	huge[huge_len] = '\0';
	CHECK_EQ_INT(verify(b, VECTOR_SESSION, huge, now, why, sizeof(why)), 0);
	CHECK(strstr(why, "longer") != NULL);
	snprintf(huge, huge_len + 1, "%s", VECTOR_TOKEN);
	memset(huge + strlen(VECTOR_TOKEN), 'a', huge_len - strlen(VECTOR_TOKEN));
	CHECK_EQ_INT(verify(b, VECTOR_SESSION, huge, now, why, sizeof(why)), 0);
	free(huge);

	/* why may be tiny or absent. */
	char small[4];
	CHECK_EQ_INT(botcheck_verify(b, VECTOR_SESSION, "1.2", NULL, now, small, sizeof(small)), 0);
	CHECK(strlen(small) < sizeof(small));
	CHECK_EQ_INT(botcheck_verify(b, VECTOR_SESSION, "1.2", NULL, now, NULL, 0), 0);
	CHECK_EQ_INT(botcheck_verify(NULL, VECTOR_SESSION, VECTOR_TOKEN, NULL, now, why, sizeof(why)), 0);

	botcheck_free(b);
}

static void test_hmac_sign_edges(void)
{
	char token[96];

	/* Too small an output, or an expiry verify would not accept: "". */
	snprintf(token, sizeof(token), "stale");
	botcheck_sign(SECRET, "s", VECTOR_EXPIRY, token, 95);
	CHECK(token[0] == '\0');
	snprintf(token, sizeof(token), "stale");
	botcheck_sign(SECRET, "s", 0, token, sizeof(token));
	CHECK(token[0] == '\0');
	snprintf(token, sizeof(token), "stale");
	botcheck_sign(SECRET, "s", -1, token, sizeof(token));
	CHECK(token[0] == '\0');
	snprintf(token, sizeof(token), "stale");
	botcheck_sign(SECRET, "s", INT64_C(1000000000000000000), token, sizeof(token));
	CHECK(token[0] == '\0');
	snprintf(token, sizeof(token), "stale");
	botcheck_sign(NULL, "s", VECTOR_EXPIRY, token, sizeof(token));
	CHECK(token[0] == '\0');
	botcheck_sign(SECRET, "s", VECTOR_EXPIRY, NULL, 0);
}

/* ---- a fake siteverify server ---- */

typedef enum Reply {
	REPLY_SUCCESS,
	REPLY_FAILURE,
	REPLY_HTTP500,
	REPLY_MALFORMED,
	REPLY_EMPTY,
	REPLY_SUCCESS_STRING,
	REPLY_NOT_OBJECT,
	REPLY_TRAILING,
	REPLY_TOO_DEEP,
	REPLY_HUGE_LENGTH,
	REPLY_HUGE_STREAM,
	REPLY_REDIRECT,
	REPLY_HANG,
} Reply;

#define FAKE_REQUEST_MAX 16384
#define FAKE_HUGE 20000         /* over the 16 KiB answer cap */
#define FAKE_IO_MS 10000        /* a safety bound: no test waits this long */

static struct {
	int listen_fd;
	int port;
	pthread_t thread;
	pthread_mutex_t lock;   /* guards everything below */
	int stop;
	Reply reply;
	int requests;
	char request_line[256];
	char content_type[128];
	char body[FAKE_REQUEST_MAX];
} fake = { .listen_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER };

static int fake_stopping(void)
{
	pthread_mutex_lock(&fake.lock);
	int stop = fake.stop;
	pthread_mutex_unlock(&fake.lock);
	return stop;
}

/* Waits up to FAKE_IO_MS for fd to be readable; 1 when it is. */
static int fake_wait(int fd)
{
	for (int waited = 0; waited < FAKE_IO_MS && !fake_stopping(); waited += 50) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 50) > 0)
			return 1;
	}
	return 0;
}

/* Copies the header value after name (case-insensitive) up to CR into out. */
static void fake_header(const char *head, const char *name, char *out, size_t out_len)
{
	const char *p = strcasestr(head, name);

	out[0] = '\0';
	if (!p)
		return;
	p += strlen(name);
	while (*p == ' ')
		p++;
	snprintf(out, out_len, "%.*s", (int)strcspn(p, "\r\n"), p);
}

/* Reads one request; returns the body length or -1. */
static int fake_read_request(int fd, char *buf, size_t cap, char **body)
{
	size_t len = 0;
	char *end = NULL;
	long content_length = -1;
	char value[32];

	while (len + 1 < cap) {
		if (!fake_wait(fd))
			return -1;
		ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
		if (n <= 0)
			return -1;
		len += (size_t)n;
		buf[len] = '\0';
		if (!end && (end = strstr(buf, "\r\n\r\n")) != NULL) {
			*end = '\0'; /* buf is now the head, end + 4 the body */
			fake_header(buf, "\r\ncontent-length:", value, sizeof(value));
			content_length = value[0] ? strtol(value, NULL, 10) : 0;
		}
		if (end && (long)(len - (size_t)(end + 4 - buf)) >= content_length) {
			*body = end + 4;
			return (int)content_length;
		}
	}
	return -1;
}

static void fake_send(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		if (n <= 0)
			return; /* the client gave up, as some tests want it to */
		data += n;
		len -= (size_t)n;
	}
}

static void fake_answer(int fd, int status, const char *extra_headers, const char *body, int with_length)
{
	char head[512];
	int n;

	if (with_length)
		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
			     "%sConnection: close\r\n\r\n", status, strlen(body), extra_headers);
	else
		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n%sConnection: close\r\n\r\n",
			     status, extra_headers);
	fake_send(fd, head, (size_t)n);
	fake_send(fd, body, strlen(body));
}

/* {"success":true,"pad":"xxx…"} of FAKE_HUGE bytes: valid and positive, so
 * only the size cap can refuse it. */
static char *fake_huge_body(void)
{
	static const char head[] = "{\"success\":true,\"pad\":\"";
	char *s = malloc(FAKE_HUGE + 1);

	REQUIRE(s);
	memset(s, 'x', FAKE_HUGE);
	memcpy(s, head, strlen(head));
	s[FAKE_HUGE - 2] = '"';
	s[FAKE_HUGE - 1] = '}';
	s[FAKE_HUGE] = '\0';
	return s;
}

static void fake_serve(int fd)
{
	char *buf = malloc(FAKE_REQUEST_MAX), *body = NULL, *huge;
	int body_len;
	Reply reply;

	REQUIRE(buf);
	body_len = fake_read_request(fd, buf, FAKE_REQUEST_MAX, &body);
	pthread_mutex_lock(&fake.lock);
	fake.requests++;
	if (body_len >= 0) {
		snprintf(fake.request_line, sizeof(fake.request_line), "%.*s", (int)strcspn(buf, "\r\n"), buf);
		fake_header(buf, "\r\ncontent-type:", fake.content_type, sizeof(fake.content_type));
		snprintf(fake.body, sizeof(fake.body), "%.*s", body_len, body);
	} else {
		fake.request_line[0] = fake.content_type[0] = fake.body[0] = '\0';
	}
	reply = fake.reply;
	pthread_mutex_unlock(&fake.lock);
	free(buf);
	if (body_len < 0)
		return;

	switch (reply) {
	case REPLY_SUCCESS:
		fake_answer(fd, 200, "", "{\"success\": true, \"error-codes\": [], "
			    "\"challenge_ts\": \"2026-12-03T12:00:00.000Z\", \"hostname\": \"shop.example\"}\n", 1);
		break;
	case REPLY_FAILURE:
		fake_answer(fd, 200, "", "{\"success\":false,\"error-codes\":[\"invalid-input-response\"]}", 1);
		break;
	case REPLY_HTTP500:
		fake_answer(fd, 500, "", "{\"success\":true}", 1);
		break;
	case REPLY_MALFORMED:
		fake_answer(fd, 200, "", "{\"success\": true", 1);
		break;
	case REPLY_EMPTY:
		fake_answer(fd, 200, "", "", 1);
		break;
	case REPLY_SUCCESS_STRING:
		fake_answer(fd, 200, "", "{\"success\":\"true\"}", 1);
		break;
	case REPLY_NOT_OBJECT:
		fake_answer(fd, 200, "", "[true]", 1);
		break;
	case REPLY_TRAILING:
		fake_answer(fd, 200, "", "{\"success\":true} {\"success\":false}", 1);
		break;
	case REPLY_TOO_DEEP:
		fake_answer(fd, 200, "", "{\"success\":true,\"x\":[[[[[[[[[[[[1]]]]]]]]]]]]}", 1);
		break;
	case REPLY_HUGE_LENGTH:
		huge = fake_huge_body();
		fake_answer(fd, 200, "", huge, 1);
		free(huge);
		break;
	case REPLY_HUGE_STREAM:
		/* No Content-Length: the client only learns the size by reading. */
		huge = fake_huge_body();
		fake_answer(fd, 200, "", huge, 0);
		free(huge);
		break;
	case REPLY_REDIRECT: {
		char location[128];
		snprintf(location, sizeof(location), "Location: http://127.0.0.1:%d/ok\r\n", fake.port);
		fake_answer(fd, 302, location, "{\"success\":true}", 1);
		break;
	}
	case REPLY_HANG:
		/* Say nothing until the client hangs up. */
		while (fake_wait(fd)) {
			char sink[256];
			if (recv(fd, sink, sizeof(sink), 0) <= 0)
				break;
		}
		break;
	}
}

static void *fake_main(void *arg)
{
	(void)arg;
	while (!fake_stopping()) {
		struct pollfd p = { .fd = fake.listen_fd, .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		int fd = accept(fake.listen_fd, NULL, NULL);
		if (fd < 0)
			continue;
		fake_serve(fd);
		close(fd);
	}
	return NULL;
}

/* A socket bound to 127.0.0.1 on an ephemeral port; listening or not. */
static int loopback_socket(int listening, int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
	socklen_t sa_len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	REQUIRE(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	REQUIRE(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	if (listening)
		REQUIRE(listen(fd, 16) == 0);
	REQUIRE(getsockname(fd, (struct sockaddr *)&sa, &sa_len) == 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

static void fake_start(void)
{
	fake.listen_fd = loopback_socket(1, &fake.port);
	REQUIRE(pthread_create(&fake.thread, NULL, fake_main, NULL) == 0);
}

static void fake_stop(void)
{
	pthread_mutex_lock(&fake.lock);
	fake.stop = 1;
	pthread_mutex_unlock(&fake.lock);
	pthread_join(fake.thread, NULL);
	close(fake.listen_fd);
}

static void fake_script(Reply reply)
{
	pthread_mutex_lock(&fake.lock);
	fake.reply = reply;
	pthread_mutex_unlock(&fake.lock);
}

static int fake_requests(void)
{
	pthread_mutex_lock(&fake.lock);
	int n = fake.requests;
	pthread_mutex_unlock(&fake.lock);
	return n;
}

/* ---- turnstile ---- */

/* Characters that must be escaped in a form, in secret, token and address. */
#define TS_SECRET "sk&x=1 +%/\xc3\xa9"
#define TS_SECRET_FORM "sk%26x%3D1%20%2B%25%2F%C3%A9"
#define TS_TOKEN "tok+en/=&?~._-"
#define TS_TOKEN_FORM "tok%2Ben%2F%3D%26%3F~._-"
#define TS_IP "2001:db8::1"
#define TS_IP_FORM "2001%3Adb8%3A%3A1"

static Botcheck *turnstile_new(int port, int timeout_ms)
{
	char url[128], why[256];
	BotcheckConfig cfg = { .mode = BOTCHECK_TURNSTILE, .secret = TS_SECRET, .turnstile_url = url,
			       .timeout_ms = timeout_ms };
	Botcheck *b;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/siteverify", port);
	b = botcheck_new(&cfg, why, sizeof(why));
	if (!b)
		fprintf(stderr, "botcheck_new: %s\n", why);
	REQUIRE(b);
	return b;
}

static int turnstile(Botcheck *b, Reply reply, const char *token, const char *ip, char *why, size_t why_len)
{
	fake_script(reply);
	int ok = botcheck_verify(b, "sess-1", token, ip, 0, why, why_len);

	CHECK(ok == 0 || ok == 1);
	if (ok) {
		CHECK(why[0] == '\0');
	} else {
		CHECK(why[0] != '\0');
		/* The log line never carries the secret or the token. */
		CHECK(strstr(why, TS_SECRET) == NULL && strstr(why, TS_SECRET_FORM) == NULL);
		CHECK(strstr(why, "tok+en") == NULL && strstr(why, TS_TOKEN_FORM) == NULL);
	}
	return ok;
}

static void test_turnstile(void)
{
	char why[512], expected[512];
	Botcheck *b;
	int before;

	fake_start();
	b = turnstile_new(fake.port, 5000);

	/* success, and the form as siteverify expects it */
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, TS_TOKEN, TS_IP, why, sizeof(why)), 1);
	snprintf(expected, sizeof(expected), "secret=%s&response=%s&remoteip=%s",
		 TS_SECRET_FORM, TS_TOKEN_FORM, TS_IP_FORM);
	pthread_mutex_lock(&fake.lock);
	if (strcmp(fake.body, expected) != 0)
		fprintf(stderr, "form: %s\nwant: %s\n", fake.body, expected);
	CHECK(strcmp(fake.body, expected) == 0);
	CHECK(strncmp(fake.request_line, "POST /siteverify HTTP/1.", 24) == 0);
	CHECK(strcmp(fake.content_type, "application/x-www-form-urlencoded") == 0);
	pthread_mutex_unlock(&fake.lock);

	/* without a remote address there is no remoteip field */
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, "t", NULL, why, sizeof(why)), 1);
	snprintf(expected, sizeof(expected), "secret=%s&response=t", TS_SECRET_FORM);
	pthread_mutex_lock(&fake.lock);
	CHECK(strcmp(fake.body, expected) == 0);
	pthread_mutex_unlock(&fake.lock);
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, "t", "", why, sizeof(why)), 1);
	pthread_mutex_lock(&fake.lock);
	CHECK(strcmp(fake.body, expected) == 0);
	pthread_mutex_unlock(&fake.lock);

	/* refusals of every kind; the handle stays usable between them */
	CHECK_EQ_INT(turnstile(b, REPLY_FAILURE, "t", TS_IP, why, sizeof(why)), 0);
	CHECK(strstr(why, "invalid-input-response") != NULL);
	CHECK_EQ_INT(turnstile(b, REPLY_HTTP500, "t", TS_IP, why, sizeof(why)), 0);
	CHECK(strstr(why, "500") != NULL);
	CHECK_EQ_INT(turnstile(b, REPLY_MALFORMED, "t", TS_IP, why, sizeof(why)), 0);
	CHECK_EQ_INT(turnstile(b, REPLY_EMPTY, "t", TS_IP, why, sizeof(why)), 0);
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS_STRING, "t", TS_IP, why, sizeof(why)), 0);
	CHECK_EQ_INT(turnstile(b, REPLY_NOT_OBJECT, "t", TS_IP, why, sizeof(why)), 0);
	CHECK_EQ_INT(turnstile(b, REPLY_TRAILING, "t", TS_IP, why, sizeof(why)), 0);
	CHECK_EQ_INT(turnstile(b, REPLY_TOO_DEEP, "t", TS_IP, why, sizeof(why)), 0);
	CHECK_EQ_INT(turnstile(b, REPLY_HUGE_LENGTH, "t", TS_IP, why, sizeof(why)), 0);
	CHECK(strstr(why, "16384") != NULL);
	CHECK_EQ_INT(turnstile(b, REPLY_HUGE_STREAM, "t", TS_IP, why, sizeof(why)), 0);
	CHECK(strstr(why, "16384") != NULL);
	before = fake_requests();
	CHECK_EQ_INT(turnstile(b, REPLY_REDIRECT, "t", TS_IP, why, sizeof(why)), 0);
	CHECK(strstr(why, "302") != NULL);
	CHECK_EQ_INT(fake_requests(), before + 1); /* the redirect was not followed */
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, "t", TS_IP, why, sizeof(why)), 1);

	/* tokens refused without asking */
	before = fake_requests();
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, NULL, TS_IP, why, sizeof(why)), 0);
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, "", TS_IP, why, sizeof(why)), 0);
	char long_token[2050];
	memset(long_token, 'a', sizeof(long_token) - 1);
	long_token[sizeof(long_token) - 1] = '\0';
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, long_token, TS_IP, why, sizeof(why)), 0);
	CHECK_EQ_INT(fake_requests(), before);
	/* 2048 bytes is still a token */
	long_token[2048] = '\0';
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, long_token, TS_IP, why, sizeof(why)), 1);
	/* a remote "address" too long to be one is left out, not sent */
	char long_ip[80];
	memset(long_ip, '1', sizeof(long_ip) - 1);
	long_ip[sizeof(long_ip) - 1] = '\0';
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, "t", long_ip, why, sizeof(why)), 1);
	pthread_mutex_lock(&fake.lock);
	CHECK(strstr(fake.body, "remoteip") == NULL);
	pthread_mutex_unlock(&fake.lock);
	botcheck_free(b);

	/* a server that never answers: refused once timeout_ms has passed */
	const int timeout_ms = 300;
	b = turnstile_new(fake.port, timeout_ms);
	int64_t start = now_ms();
	CHECK_EQ_INT(turnstile(b, REPLY_HANG, "t", TS_IP, why, sizeof(why)), 0);
	int64_t elapsed = now_ms() - start;
	fprintf(stderr, "hang refused after %lld ms (timeout %d ms): %s\n", (long long)elapsed, timeout_ms, why);
	CHECK(elapsed >= timeout_ms / 2);
	CHECK(elapsed < timeout_ms + 2000);
	/* and the same handle works again afterwards */
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, "t", TS_IP, why, sizeof(why)), 1);
	botcheck_free(b);

	fake_stop();

	/* a port that refuses connections: bound, never listening */
	int port, fd = loopback_socket(0, &port);
	b = turnstile_new(port, 5000);
	start = now_ms();
	CHECK_EQ_INT(turnstile(b, REPLY_SUCCESS, "t", TS_IP, why, sizeof(why)), 0);
	CHECK(now_ms() - start < 5000);
	fprintf(stderr, "closed port refused: %s\n", why);
	botcheck_free(b);
	close(fd);
}

int main(void)
{
	/* Every request goes to 127.0.0.1 directly, whatever proxy the
	 * environment names. */
	unsetenv("http_proxy");
	unsetenv("HTTP_PROXY");
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("all_proxy");
	unsetenv("ALL_PROXY");
	setenv("no_proxy", "*", 1);
	setenv("NO_PROXY", "*", 1);

	test_mode_parse();
	test_new();
	test_off();
	test_hmac_vector();
	test_hmac_round_trip();
	test_hmac_time();
	test_hmac_malformed();
	test_hmac_sign_edges();
	test_turnstile();
	return check_exit();
}
