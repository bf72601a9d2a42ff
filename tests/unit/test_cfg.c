/* test_cfg.c — the config table, the file parser, RG_* overrides and the
 * shipped conf/revenue-guard.conf.
 *
 * Environment: RG_TEST_DATA (tests/, for unit/cfg_bad.txt), RG_TEST_TMP (a
 * scratch directory, created), RG_CONF_FILE (the shipped config file). */
#include "common/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"

static char tmp_dir[512];

static const char *env_or_die(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr, "test_cfg: %s is not set\n", name);
		exit(1);
	}
	return v;
}

static void mkdir_p(const char *dir)
{
	char path[512];

	snprintf(path, sizeof(path), "%s", dir);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(path, 0755);
		*p = '/';
	}
	REQUIRE(mkdir(path, 0755) == 0 || errno == EEXIST);
}

/* Writes text to TMP/name; returns the path (static buffer). */
static const char *write_conf(const char *name, const char *text)
{
	static char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmp_dir, name);
	f = fopen(path, "w");
	REQUIRE(f);
	REQUIRE(fputs(text, f) >= 0);
	REQUIRE(fclose(f) == 0);
	return path;
}

/* RG_* variables from the caller's environment would change every answer. */
static void env_clear(void)
{
	char var[64];

	for (const CfgKey *k = cfg_keys; k->name; k++) {
		snprintf(var, sizeof(var), "RG_%s", k->name);
		for (char *p = var; *p; p++)
			*p = (char)toupper((unsigned char)*p);
		unsetenv(var);
	}
}

static int key_count(void)
{
	int n = 0;

	for (const CfgKey *k = cfg_keys; k->name; k++)
		n++;
	return n;
}

static void test_table(void)
{
	size_t total = 0;
	char err[512];
	Config cfg;

	cfg_defaults(&cfg);
	for (const CfgKey *k = cfg_keys; k->name; k++) {
		CHECK(strspn(k->name, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(k->name));
		CHECK(k->help && *k->help && k->def);
		CHECK(k->offset + k->size <= sizeof(Config));
		CHECK(k->type == CFG_STR || k->size == sizeof(int) || k->type == CFG_LEVEL);
		/* No two keys share a name or overlap a field. */
		for (const CfgKey *o = cfg_keys; o < k; o++) {
			CHECK(strcmp(o->name, k->name) != 0);
			CHECK(o->offset + o->size <= k->offset || k->offset + k->size <= o->offset);
		}
		if (k->type == CFG_INT)
			CHECK(k->min <= k->max);
		CHECK_EQ_INT(cfg_set(&cfg, k->name, k->def, err, sizeof(err)), 0);
		total += k->size;
	}
	/* Non-overlapping fields that add up to the struct cover all of it: a
	 * field added to Config without a table entry fails here. */
	CHECK_EQ_INT(total, sizeof(Config));
}

static void test_defaults(void)
{
	Config a, b;
	char err[512] = "";

	cfg_defaults(&a);
	CHECK(strcmp(a.ledger_socket, "/run/revenue-guard/ledger.sock") == 0);
	CHECK_EQ_INT(a.ledger_socket_mode, 0660);
	CHECK(strcmp(a.ledger_socket_group, "") == 0);
	CHECK(strcmp(a.data_dir, "/var/lib/revenue-guard") == 0);
	CHECK_EQ_INT(a.shards, 0);
	CHECK_EQ_INT(a.shard_queue_len_max, 4096);
	CHECK_EQ_INT(a.max_connections, 1024);
	CHECK_EQ_INT(a.wal_segment_size_mb, 64);
	CHECK_EQ_INT(a.snapshot_interval_records, 1000000);
	CHECK_EQ_INT(a.reservation_retention_s, 86400);
	CHECK_EQ_INT(a.default_reservation_ttl_s, 300);
	CHECK_EQ_INT(a.default_max_per_order, 10);
	CHECK_EQ_INT(a.default_per_session_limit, 0);
	CHECK(strcmp(a.log_level, "info") == 0);

	/* cfg_defaults clears the whole struct first, so memcmp is fair. */
	CHECK_EQ_INT(cfg_load(&b, NULL, err, sizeof(err)), 0);
	CHECK(memcmp(&a, &b, sizeof(a)) == 0);
}

/* The shipped file lists every key once, with its default, each under a
 * comment (pgbouncer optscan.sh); and it loads to exactly the defaults. */
static void test_conf_file(void)
{
	const char *path = env_or_die("RG_CONF_FILE");
	int count[64] = { 0 }, lineno = 0, prev_comment = 0;
	char line[2048], err[512] = "";
	Config file_cfg, def_cfg;
	FILE *f = fopen(path, "r");

	REQUIRE(f);
	while (fgets(line, sizeof(line), f)) {
		char *s = line, *eq, *v, *e;
		const CfgKey *k;

		lineno++;
		s[strcspn(s, "\n")] = '\0';
		while (isspace((unsigned char)*s))
			s++;
		if (!*s || *s == '#') {
			prev_comment = *s == '#';
			continue;
		}
		eq = strchr(s, '=');
		CHECK(eq);
		if (!eq)
			continue;
		for (e = eq; e > s && isspace((unsigned char)e[-1]); e--)
			;
		*e = '\0';
		for (k = cfg_keys; k->name && strcmp(k->name, s) != 0; k++)
			;
		if (!k->name) {
			fprintf(stderr, "%s:%d: key '%s' is not in cfg_keys[]\n", path, lineno, s);
			CHECK(k->name);
			continue;
		}
		count[k - cfg_keys]++;
		if (!prev_comment)
			fprintf(stderr, "%s:%d: key '%s' has no comment above it\n", path, lineno, s);
		CHECK(prev_comment);
		prev_comment = 0;
		for (v = eq + 1; isspace((unsigned char)*v); v++)
			;
		for (e = v + strlen(v); e > v && isspace((unsigned char)e[-1]); e--)
			;
		*e = '\0';
		if (*v == '"' && e - v >= 2 && e[-1] == '"') {
			e[-1] = '\0';
			v++;
		}
		if (strcmp(v, k->def) != 0)
			fprintf(stderr, "%s:%d: %s = '%s', default is '%s'\n", path, lineno,
				k->name, v, k->def);
		CHECK(strcmp(v, k->def) == 0);
	}
	fclose(f);
	for (const CfgKey *k = cfg_keys; k->name; k++) {
		if (count[k - cfg_keys] != 1)
			fprintf(stderr, "%s: key '%s' appears %d times, want once\n", path, k->name,
				count[k - cfg_keys]);
		CHECK_EQ_INT(count[k - cfg_keys], 1);
	}

	CHECK_EQ_INT(cfg_load(&file_cfg, path, err, sizeof(err)), 0);
	if (err[0])
		fprintf(stderr, "%s\n", err);
	cfg_defaults(&def_cfg);
	CHECK(memcmp(&file_cfg, &def_cfg, sizeof(def_cfg)) == 0);
}

static void run_bad_case(int line_no, const char *header, const char *text)
{
	char want_line[32], err[1024] = "";
	const char *expect, *path;
	int want_at, rc;
	Config cfg;

	REQUIRE(sscanf(header, "%d", &want_at) == 1);
	expect = strchr(header, ' ');
	REQUIRE(expect);
	expect++;
	path = write_conf("bad.conf", text);
	rc = cfg_load(&cfg, path, err, sizeof(err));
	snprintf(want_line, sizeof(want_line), ":%d: ", want_at);
	if (rc != -EINVAL || !strstr(err, path) || !strstr(err, want_line) || !strstr(err, expect)) {
		fprintf(stderr, "cfg_bad.txt:%d: case '--- %s': rc %d, error \"%s\"\n",
			line_no, header, rc, err);
		check_failures++;
	}
}

static void test_bad_table(void)
{
	char path[600], text[8192], header[256];
	int line_no = 0, header_line = 0, cases = 0;
	char *line = NULL;
	size_t cap = 0, len = 0;
	ssize_t n;
	FILE *f;

	snprintf(path, sizeof(path), "%s/unit/cfg_bad.txt", env_or_die("RG_TEST_DATA"));
	f = fopen(path, "r");
	REQUIRE(f);
	header[0] = '\0';
	while ((n = getline(&line, &cap, f)) >= 0) {
		line_no++;
		if (strncmp(line, "---", 3) == 0) {
			if (header[0]) {
				run_bad_case(header_line, header, text);
				cases++;
			}
			snprintf(header, sizeof(header), "%s", line + 4);
			header[strcspn(header, "\n")] = '\0';
			header_line = line_no;
			text[0] = '\0';
			len = 0;
			continue;
		}
		if (!header[0])
			continue;
		REQUIRE(len + (size_t)n < sizeof(text));
		memcpy(text + len, line, (size_t)n + 1);
		len += (size_t)n;
	}
	if (header[0]) {
		run_bad_case(header_line, header, text);
		cases++;
	}
	free(line);
	fclose(f);
	CHECK(cases >= 15);
}

static void test_syntax(void)
{
	char text[4096], err[512] = "";
	const char *path;
	Config cfg;

	path = write_conf("syntax.conf",
		"# full-line comment\n"
		"   # indented comment\n"
		"\n"
		"\t\n"
		"data_dir = \"/srv/rg data\"   # comment after a quoted value\n"
		"ledger_socket = /tmp/a#b.sock\n"
		"ledger_socket_group = \"web # group\"\n"
		"shards = 4 # trailing comment\n"
		"log_level = DEBUG\n"
		"ledger_socket_mode = 0600\n"
		"max_connections=7\n"
		"\tdefault_max_per_order\t=\t3\t\n"
		"default_per_session_limit = 2\r\n"
		"snapshot_interval_records = \"5000\"\n"
		"wal_segment_size_mb = 8\n"
		"reservation_retention_s = 60"); /* no final newline */
	CHECK_EQ_INT(cfg_load(&cfg, path, err, sizeof(err)), 0);
	if (err[0])
		fprintf(stderr, "%s\n", err);
	CHECK(strcmp(cfg.data_dir, "/srv/rg data") == 0);
	CHECK(strcmp(cfg.ledger_socket, "/tmp/a#b.sock") == 0);
	CHECK(strcmp(cfg.ledger_socket_group, "web # group") == 0);
	CHECK_EQ_INT(cfg.shards, 4);
	CHECK(strcmp(cfg.log_level, "debug") == 0);
	CHECK_EQ_INT(cfg.ledger_socket_mode, 0600);
	CHECK_EQ_INT(cfg.max_connections, 7);
	CHECK_EQ_INT(cfg.default_max_per_order, 3);
	CHECK_EQ_INT(cfg.default_per_session_limit, 2);
	CHECK_EQ_INT(cfg.snapshot_interval_records, 5000);
	CHECK_EQ_INT(cfg.wal_segment_size_mb, 8);
	CHECK_EQ_INT(cfg.reservation_retention_s, 60);
	CHECK_EQ_INT(cfg.shard_queue_len_max, 4096); /* untouched keys keep defaults */

	/* The limits themselves are accepted: a 255-byte path, a 1024-byte line,
	 * both ends of an int range, mode 0 and 0777. */
	snprintf(text, sizeof(text), "data_dir = /%0254d\n", 0);
	CHECK_EQ_INT(cfg_load(&cfg, write_conf("edge.conf", text), err, sizeof(err)), 0);
	CHECK_EQ_INT(strlen(cfg.data_dir), 255);
	snprintf(text, sizeof(text), "shards = 256 #%01010d\n", 0);
	CHECK_EQ_INT(strlen(text), 1025);
	CHECK_EQ_INT(cfg_load(&cfg, write_conf("edge.conf", text), err, sizeof(err)), 0);
	CHECK_EQ_INT(cfg.shards, 256);
	CHECK_EQ_INT(cfg_load(&cfg, write_conf("edge.conf",
		"default_max_per_order = 2147483647\nshard_queue_len_max = 16\n"
		"ledger_socket_mode = 0\n"), err, sizeof(err)), 0);
	CHECK_EQ_INT(cfg.default_max_per_order, 2147483647);
	CHECK_EQ_INT(cfg.shard_queue_len_max, 16);
	CHECK_EQ_INT(cfg.ledger_socket_mode, 0);
	CHECK_EQ_INT(cfg_load(&cfg, write_conf("edge.conf", "ledger_socket_mode = 777\n"),
		err, sizeof(err)), 0);
	CHECK_EQ_INT(cfg.ledger_socket_mode, 0777);
	/* An empty file is the defaults. */
	CHECK_EQ_INT(cfg_load(&cfg, write_conf("edge.conf", ""), err, sizeof(err)), 0);
}

static void test_env(void)
{
	char err[512] = "";
	const char *path;
	Config cfg;

	path = write_conf("env.conf", "shards = 4\ndata_dir = /from/file\n");
	setenv("RG_SHARDS", "8", 1);
	setenv("RG_DATA_DIR", "/from/env", 1);
	setenv("RG_LEDGER_SOCKET_GROUP", "", 1);
	CHECK_EQ_INT(cfg_load(&cfg, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(cfg.shards, 8);
	CHECK(strcmp(cfg.data_dir, "/from/env") == 0);
	CHECK(strcmp(cfg.ledger_socket_group, "") == 0);
	/* Overrides apply without a file too. */
	CHECK_EQ_INT(cfg_load(&cfg, NULL, err, sizeof(err)), 0);
	CHECK_EQ_INT(cfg.shards, 8);

	setenv("RG_SHARDS", "many", 1);
	err[0] = '\0';
	CHECK_EQ_INT(cfg_load(&cfg, path, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "RG_SHARDS") && strstr(err, "not a number"));
	setenv("RG_SHARDS", " 4", 1);
	CHECK_EQ_INT(cfg_load(&cfg, path, err, sizeof(err)), -EINVAL);
	unsetenv("RG_SHARDS");
	setenv("RG_LEDGER_SOCKET_MODE", "0999", 1);
	err[0] = '\0';
	CHECK_EQ_INT(cfg_load(&cfg, NULL, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "RG_LEDGER_SOCKET_MODE") && strstr(err, "bad mode"));
	env_clear();
	/* A file error is reported before the environment is looked at. */
	setenv("RG_LOG_LEVEL", "loud", 1);
	err[0] = '\0';
	CHECK_EQ_INT(cfg_load(&cfg, write_conf("env.conf", "nope = 1\n"), err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "nope") && !strstr(err, "RG_LOG_LEVEL"));
	env_clear();
}

static void test_missing_and_set(void)
{
	char path[600], err[512] = "";
	Config cfg, before;

	snprintf(path, sizeof(path), "%s/does-not-exist.conf", tmp_dir);
	CHECK_EQ_INT(cfg_load(&cfg, path, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "cannot open") && strstr(err, path));

	/* A refused value changes nothing; a NULL err is allowed. */
	cfg_defaults(&cfg);
	before = cfg;
	CHECK_EQ_INT(cfg_set(&cfg, "shards", "300", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "(key 'shards')") && strstr(err, "0..256"));
	CHECK_EQ_INT(cfg_set(&cfg, "data_dir", "", NULL, 0), 0);
	CHECK_EQ_INT(cfg_set(&cfg, "data_dir", "/var/lib/revenue-guard", NULL, 0), 0);
	CHECK_EQ_INT(cfg_set(&cfg, "log_level", "verbose", NULL, 0), -EINVAL);
	CHECK_EQ_INT(cfg_set(&cfg, "no_such_key", "1", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "unknown key"));
	CHECK(memcmp(&cfg, &before, sizeof(cfg)) == 0);
	CHECK_EQ_INT(cfg_set(&cfg, "log_level", "Warn", NULL, 0), 0);
	CHECK(strcmp(cfg.log_level, "warn") == 0);
}

/* --help shows every key, default and help, the help in one column. */
static void test_help(void)
{
	char *text = NULL, *line, *save = NULL;
	size_t len = 0;
	long help_col = -1;
	int lines = 0;
	FILE *out = open_memstream(&text, &len);

	REQUIRE(out);
	cfg_print_help(out);
	REQUIRE(fclose(out) == 0);
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		for (const CfgKey *k = cfg_keys; k->name; k++) {
			char *name = strstr(line, k->name), *help = strstr(line, k->help);

			if (!name || name[strlen(k->name)] != ' ' || !help)
				continue;
			CHECK(strstr(name + strlen(k->name), k->def));
			if (help_col < 0)
				help_col = help - line;
			CHECK_EQ_INT(help - line, help_col);
			lines++;
		}
	}
	CHECK_EQ_INT(lines, key_count());
	free(text);
}

int main(void)
{
	snprintf(tmp_dir, sizeof(tmp_dir), "%s/cfg", env_or_die("RG_TEST_TMP"));
	mkdir_p(tmp_dir);
	env_clear();

	test_table();
	test_defaults();
	test_conf_file();
	test_bad_table();
	test_syntax();
	test_env();
	test_missing_and_set();
	test_help();
	return check_exit();
}
