/* sql_grep_bad.c — NOT compiled: the self-test input of sql_grep.py. Every
 * line marked BAD builds SQL text at run time and must be reported. */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

static PGresult *wrap(PGconn *c, const char *sql)
{
	return PQexec(c, sql);
}

static PGresult *wrap2(PGconn *c, int n, const char *q)
{
	return wrap(c, q);
}

void bad(PGconn *c, const char *sku, char *buf, size_t len)
{
	char q[256];
	const char *p = q;

	snprintf(q, sizeof(q), "SELECT stock FROM products WHERE id = '%s'", sku); /* BAD */
	PQexec(c, q); /* BAD */
	sprintf(buf, "UPDATE products SET stock = %d", 3); /* BAD */
	strcat(buf, "DELETE FROM inventory_log"); /* BAD */
	PQexecParams(c, buf, 0, NULL, NULL, NULL, NULL, 0); /* BAD */
	PQsendQuery(c, p); /* BAD */
	PQprepare(c, "s1", sku, 0, NULL); /* BAD */
	wrap(c, buf); /* BAD */
	wrap2(c, 1, sku); /* BAD */
	PQexec(c, sku ? "SELECT 1" : buf); /* BAD */
	PQsendQueryParams(c, strcat(buf, sku), 0, NULL, NULL, NULL, NULL, 0); /* BAD */
}
