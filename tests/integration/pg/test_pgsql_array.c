/* test_pgsql_array.c — the PostgreSQL array literals and UTF-8 cleaning of
 * the write-behind (pgsql.h), byte for byte, with nasty strings.
 *
 * The same strings go through a real PostgreSQL in test_writebehind
 * (scenario "arrays"): here the exact encoding, there the round trip. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "ledger/pgsql.h"

static void check_text(const char *const *items, size_t n, const char *want)
{
	PgsqlArray a;
	pgsql_array_init(&a);
	for (size_t i = 0; i < n; i++)
		pgsql_array_add_text(&a, items[i], strlen(items[i]));
	const char *got = pgsql_array_text(&a);
	if (strcmp(got, want) != 0) {
		fprintf(stderr, "array literal\n  got  %s\n  want %s\n", got, want);
		check_failures++;
	}
	CHECK_EQ_INT(a.n, n);
	pgsql_array_free(&a);
}

static void test_text(void)
{
	check_text(NULL, 0, "{}");
	const char *empty[] = { "" };
	check_text(empty, 1, "{\"\"}");
	const char *null_word[] = { "NULL", "null", " NULL " };
	check_text(null_word, 3, "{\"NULL\",\"null\",\" NULL \"}");
	const char *quotes[] = { "a\"b", "\"", "\\", "\\\"", "end\\" };
	check_text(quotes, 5, "{\"a\\\"b\",\"\\\"\",\"\\\\\",\"\\\\\\\"\",\"end\\\\\"}");
	const char *punct[] = { "a,b", "{x}", "}{", "(1,2)", "'q'", " lead", "trail ", "\ttab\n" };
	check_text(punct, 8, "{\"a,b\",\"{x}\",\"}{\",\"(1,2)\",\"'q'\",\" lead\",\"trail \",\"\ttab\n\"}");
	const char *unicode[] = { "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x8e\x9f", "\xe6\x97\xa5\xe6\x9c\xac" };
	check_text(unicode, 4, "{\"caf\xc3\xa9\",\"\xe2\x82\xac\",\"\xf0\x9f\x8e\x9f\",\"\xe6\x97\xa5\xe6\x9c\xac\"}");
}

static void test_numbers_and_reuse(void)
{
	PgsqlArray a;
	pgsql_array_init(&a);
	pgsql_array_add_i64(&a, 0);
	pgsql_array_add_i64(&a, -1);
	pgsql_array_add_i64(&a, INT64_MAX);
	pgsql_array_add_i64(&a, INT64_MIN);
	CHECK(strcmp(pgsql_array_text(&a), "{0,-1,9223372036854775807,-9223372036854775808}") == 0);
	/* Adding after reading the text keeps the literal well-formed. */
	pgsql_array_add_i64(&a, 7);
	CHECK(strcmp(pgsql_array_text(&a), "{0,-1,9223372036854775807,-9223372036854775808,7}") == 0);
	pgsql_array_reset(&a);
	CHECK(strcmp(pgsql_array_text(&a), "{}") == 0);
	CHECK_EQ_INT(a.n, 0);
	/* Large arrays grow the buffer. */
	for (int i = 0; i < 10000; i++)
		pgsql_array_add_text(&a, "\"\\", 2);
	const char *t = pgsql_array_text(&a);
	CHECK_EQ_INT(strlen(t), 2 + 10000 * 6 + 9999);
	pgsql_array_free(&a);
}

static void check_clean(const char *in, size_t len, const char *want)
{
	char out[256];
	size_t n = pgsql_utf8_clean(in, len, out);
	if (n != strlen(want) || memcmp(out, want, n) != 0) {
		fprintf(stderr, "utf8_clean of %zu bytes: got %zu bytes, want \"%s\"\n", len, n, want);
		check_failures++;
	}
}

#define FFFD "\xef\xbf\xbd"

static void test_utf8_clean(void)
{
	check_clean("plain", 5, "plain");
	check_clean("caf\xc3\xa9", 5, "caf\xc3\xa9");
	check_clean("\xf0\x9f\x8e\x9f", 4, "\xf0\x9f\x8e\x9f");
	check_clean("\xe2\x82\xac", 3, "\xe2\x82\xac");
	check_clean("a\xff" "b", 3, "a" FFFD "b");                 /* never valid */
	check_clean("\x80", 1, FFFD);                              /* stray continuation */
	check_clean("\xc0\xaf", 2, FFFD FFFD);                     /* overlong '/' */
	check_clean("\xe0\x80\xaf", 3, FFFD FFFD FFFD);            /* overlong, 3 bytes */
	check_clean("\xed\xa0\x80", 3, FFFD FFFD FFFD);            /* surrogate U+D800 */
	check_clean("\xf4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD);   /* above U+10FFFF */
	check_clean("\xe2\x82", 2, FFFD FFFD);                     /* truncated at the end */
	check_clean("\xe2\x82x", 3, FFFD FFFD "x");                /* truncated mid-string */
	check_clean("a\0b", 3, "a" FFFD "b");                      /* NUL */
	check_clean("", 0, "");
}

int main(void)
{
	test_text();
	test_numbers_and_reuse();
	test_utf8_clean();
	return check_exit();
}
