/* sql_grep_good.c — NOT compiled: the self-test input of sql_grep.py. Every
 * statement is a literal or a constant with parameters: none may be reported. */
#include <libpq-fe.h>
#include <stdio.h>

#define SQL_PING "SELECT 1"
static const char SQL_STOCK[] =
	"SELECT stock FROM products "
	"WHERE id = $1";

static PGresult *run(PGconn *c, const char *sql, const char *const *values)
{
	return PQexecParams(c, sql, 1, NULL, values, NULL, NULL, 0);
}

void good(PGconn *c, const char *sku, char *buf, size_t len)
{
	static const struct { const char *name, *sql; int n; } stmts[] = {
		{ "stock", SQL_STOCK, 1 },
		{ "ping", "SELECT 1", 0 },
	};
	const char *values[1] = { sku };

	for (int i = 0; i < 2; i++)
		PQprepare(c, stmts[i].name, stmts[i].sql, stmts[i].n, NULL);
	run(c, SQL_STOCK, values);
	PQexec(c, SQL_PING);
	PQexec(c, "BEGIN");
	PQexecParams(c, "SELECT $1::text", 1, NULL, values, NULL, NULL, 0);
	snprintf(buf, len, "sku %s has no stock", sku);
}
