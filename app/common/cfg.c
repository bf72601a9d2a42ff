/* cfg.c — the table of config keys, and the file and environment readers.
 *
 * DESIGN. cfg_keys[] is the single source of truth: the file parser, the RG_*
 * overrides, cfg_defaults() and --help walk it, and a unit test checks
 * conf/revenue-guard.conf against it (pgbouncer optscan). cfg_set() is the one
 * place a value is validated, so a value is judged the same way wherever it
 * comes from, and it changes nothing on error. The file is strict on purpose:
 * an unknown or repeated key is far more often a typo or a merge accident than
 * an intent, and a ledger running on a silently ignored setting is worse than
 * one that refuses to start. */
#include "common/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

#define CFG_LINE_MAX 1024 /* longest line of the file, newline excluded */
#define CFG_KEYS_MAX 64   /* bound of the duplicate tracking in cfg_read_file */

/* Every field's size goes in the table, so a test can check none is missing. */
#define KEY(f, type, def, lo, hi, help) \
	{ #f, type, offsetof(Config, f), sizeof(((Config *)0)->f), def, lo, hi, help }

const CfgKey cfg_keys[] = {
	KEY(ledger_socket, CFG_STR, "/run/revenue-guard/ledger.sock", 0, 0, "socket the FastCGI workers connect to"),
	KEY(ledger_socket_mode, CFG_MODE, "0660", 0, 0777, "file mode of the ledger socket"),
	KEY(ledger_socket_group, CFG_STR, "", 0, 0, "group of the ledger socket (empty: the ledger's)"),
	KEY(ledger_allowed_uids, CFG_STR, "", 0, 0, "users (names or uids, comma-separated) that may connect besides root and the ledger (both lists empty: no check)"),
	KEY(ledger_allowed_gids, CFG_STR, "", 0, 0, "primary groups (names or gids, comma-separated) that may connect"),
	KEY(data_dir, CFG_STR, "/var/lib/revenue-guard", 0, 0, "WAL segments and snapshots live here"),
	KEY(shards, CFG_INT, "0", 0, 256, "shard threads (0: as in data_dir, else CPUs)"),
	KEY(shard_queue_len_max, CFG_INT, "4096", 16, 1048576, "requests queued per shard before \"busy\""),
	KEY(max_connections, CFG_INT, "1024", 1, 65536, "connections to the ledger socket"),
	KEY(wal_segment_size_mb, CFG_INT, "64", 1, 4096, "size at which a new WAL segment starts"),
	KEY(snapshot_interval_records, CFG_INT, "1000000", 1000, 1000000000, "WAL records between snapshots, per shard"),
	KEY(reservation_retention_s, CFG_INT, "86400", 60, 31536000, "how long finished reservations stay queryable"),
	KEY(default_reservation_ttl_s, CFG_INT, "300", 1, 604800, "hold time of SKUs created without one"),
	KEY(default_max_per_order, CFG_INT, "10", 1, INT_MAX, "units per order of SKUs created without a limit"),
	KEY(default_per_session_limit, CFG_INT, "0", 0, INT_MAX, "units per session of SKUs created without one (0: none)"),
	KEY(pg_conninfo, CFG_STR, "", 0, 0, "libpq connection string of the write-behind (empty: off)"),
	KEY(writebehind_batch_max, CFG_INT, "1000", 1, 100000, "WAL records per write-behind transaction"),
	KEY(writebehind_delay_ms, CFG_INT, "20", 0, 10000, "longest a write-behind batch gathers records before it is committed (fewer, larger PostgreSQL transactions under load)"),
	KEY(writebehind_retry_max_ms, CFG_INT, "5000", 100, 600000, "longest wait between PostgreSQL reconnects"),
	KEY(fcgi_listen, CFG_STR, "", 0, 0, "rg-fcgi socket: unix:PATH or tcp:HOST:PORT (empty: fd 0, from the web server)"),
	KEY(fcgi_workers, CFG_INT, "4", 1, 256, "rg-fcgi worker processes when it listens itself"),
	KEY(fcgi_listen_backlog, CFG_INT, "1024", 1, 65535, "connections the kernel queues on fcgi_listen before refusing"),
	KEY(fcgi_shed_queue_len, CFG_INT, "64", 0, 65535, "per worker: shed (503 at once) ledger-bound requests while more connections wait unaccepted (0: off)"),
	KEY(api_prefix, CFG_STR, "/api", 0, 0, "URL prefix of the API, routed on when PATH_INFO is empty"),
	KEY(request_body_max, CFG_INT, "4096", 256, 1048576, "largest request body in bytes (larger: 413)"),
	KEY(json_depth_max, CFG_INT, "8", 1, 64, "deepest nesting of a JSON request body"),
	KEY(admin_token, CFG_STR, "", 0, 0, "bearer token of the admin API (empty: admin API disabled)"),
	KEY(cors_allowed_origins, CFG_STR, "", 0, 0, "comma-separated origins allowed by CORS, or * (empty: no CORS)"),
	KEY(ledger_timeout_ms, CFG_INT, "2000", 10, 60000, "longest wait for one ledger answer"),
	KEY(ledger_retry_after_s, CFG_INT, "1", 1, 3600, "Retry-After of 503 answers while the ledger is unavailable"),
	KEY(metrics_file, CFG_STR, "", 0, 0, "counters file shared by all rg-fcgi processes (empty: in memory)"),
	KEY(botcheck_mode, CFG_STR, "off", 0, 0, "bot check before reserving: off, hmac or turnstile"),
	KEY(botcheck_secret, CFG_STR, "", 0, 0, "hmac: shared secret; turnstile: site secret"),
	KEY(botcheck_max_age_s, CFG_INT, "300", 1, 86400, "hmac: how far ahead a token's expiry may lie"),
	KEY(turnstile_url, CFG_STR, "", 0, 0, "turnstile: siteverify URL"),
	KEY(turnstile_timeout_ms, CFG_INT, "2000", 100, 60000, "turnstile: longest wait for siteverify"),
	KEY(log_level, CFG_LEVEL, "info", 0, 0, "error, warn, info or debug"),
	{ NULL, CFG_STR, 0, 0, NULL, 0, 0, NULL },
};
_Static_assert(sizeof(cfg_keys) / sizeof(cfg_keys[0]) <= CFG_KEYS_MAX, "raise CFG_KEYS_MAX");

static __attribute__((format(printf, 3, 4)))
void cfg_err(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !err_len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

static const CfgKey *cfg_find(const char *name)
{
	for (const CfgKey *k = cfg_keys; k->name; k++) {
		if (strcmp(k->name, name) == 0)
			return k;
	}
	return NULL;
}

int cfg_set(Config *cfg, const char *key, const char *value, char *err, size_t err_len)
{
	const CfgKey *k = cfg_find(key);
	size_t len = strlen(value);
	const char *why;
	LogLevel level;
	char *field, *end;
	long lv = 0;

	if (!k) {
		cfg_err(err, err_len, "unknown key (key '%s')", key);
		return -EINVAL;
	}
	field = (char *)cfg + k->offset;
	switch (k->type) {
	case CFG_STR:
		if (len >= k->size) {
			cfg_err(err, err_len, "value too long, at most %zu bytes (key '%s')",
				k->size - 1, key);
			return -EINVAL;
		}
		memcpy(field, value, len + 1);
		return 0;
	case CFG_INT:
		errno = 0;
		lv = strtol(value, &end, 10);
		/* strtol skips leading blanks and stops at junk; a value is a number only. */
		why = end == value || *end || isspace((unsigned char)*value) ? "not a number" :
		      errno == ERANGE || lv < k->min || lv > k->max ? "out of range" : NULL;
		if (why) {
			cfg_err(err, err_len, "%s '%.40s', expected an integer in %ld..%ld (key '%s')",
				len ? why : "empty value", value, k->min, k->max, key);
			return -EINVAL;
		}
		break;
	case CFG_MODE:
		/* strtol base 8 would take " 7" or "-7"; insist on octal digits. */
		errno = 0;
		if (!len || strspn(value, "01234567") != len ||
		    (lv = strtol(value, NULL, 8)) > k->max || errno == ERANGE) {
			cfg_err(err, err_len, "bad mode '%.40s', expected octal 0..0777 (key '%s')",
				value, key);
			return -EINVAL;
		}
		break;
	case CFG_LEVEL:
		/* A name that parses is short enough for the field. */
		if (log_level_parse(value, &level) < 0) {
			cfg_err(err, err_len, "unknown log level '%.40s', expected "
				"error|warn|info|debug (key '%s')", value, key);
			return -EINVAL;
		}
		/* Store the canonical lower-case name, whatever case was given. */
		for (size_t i = 0; i <= len; i++)
			field[i] = (char)tolower((unsigned char)value[i]);
		return 0;
	}
	/* The field is an int (offsetof of one), so the cast is aligned. */
	*(int *)(void *)field = (int)lv;
	return 0;
}

void cfg_defaults(Config *cfg)
{
	char err[256];

	memset(cfg, 0, sizeof(*cfg));
	for (const CfgKey *k = cfg_keys; k->name; k++) {
		/* A default the table itself refuses is a programming error. */
		if (cfg_set(cfg, k->name, k->def, err, sizeof(err)) < 0)
			log_fatal("config table: default of %s: %s", k->name, err);
	}
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	*e = '\0';
	return s;
}

/* Splits one line (modified in place) into key and value. Returns NULL, with
 * *key NULL for a blank or comment line, or an error text (with *key set when
 * the key was already read). */
static const char *parse_line(char *line, char **key, char **value)
{
	char *s = trim(line), *eq, *v, *p;

	*key = NULL;
	if (!*s || *s == '#')
		return NULL;
	eq = strchr(s, '=');
	if (!eq)
		return "missing '=' in 'key = value'";
	*eq = '\0';
	s = trim(s);
	if (!*s)
		return "missing key before '='";
	*key = s;
	if (strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != strlen(s))
		return "invalid key name";
	v = trim(eq + 1);
	if (*v == '"') {
		p = strchr(v + 1, '"');
		if (!p)
			return "unterminated quote";
		*p++ = '\0';
		p += strspn(p, " \t");
		if (*p && *p != '#')
			return "unexpected text after closing quote";
		*value = v + 1;
		return NULL;
	}
	/* '#' starts a comment only after blanks, so "a#b" stays a value. */
	for (p = v; *p; p++) {
		if (*p == '#' && (p == v || isspace((unsigned char)p[-1]))) {
			*p = '\0';
			break;
		}
	}
	*value = trim(v);
	return NULL;
}

/* Reads one line, newline dropped, into line[CFG_LINE_MAX + 2]. Returns its
 * length, CFG_LINE_MAX + 1 for any longer line (the caller refuses it), or -1
 * at the end of the file. fgets cannot be used: it does not say how many bytes
 * it read, so after a NUL byte the rest of a long line would be taken for a
 * line of its own and could set a key from inside a comment. *nul is set when
 * the line holds a NUL byte. */
static long read_line(FILE *f, char *line, int *nul)
{
	size_t n = 0;
	int c, any = 0;

	*nul = 0;
	while ((c = getc(f)) != EOF) {
		any = 1;
		if (c == '\n')
			break;
		if (c == '\0')
			*nul = 1;
		line[n] = (char)c;
		if (++n > CFG_LINE_MAX)
			break;
	}
	line[n] = '\0';
	return any ? (long)n : -1;
}

static int cfg_read_file(Config *cfg, const char *path, char *err, size_t err_len)
{
	char line[CFG_LINE_MAX + 2], what[CFG_LINE_MAX / 2];
	int seen_line[CFG_KEYS_MAX] = { 0 };
	int lineno = 0, rc = -EINVAL;
	char *key, *value;
	const char *why;
	const CfgKey *k;
	FILE *f;

	f = fopen(path, "r");
	if (!f) {
		rc = -errno;
		cfg_err(err, err_len, "cannot open %s: %s", path, strerror(-rc));
		return rc;
	}
	for (;;) {
		int nul;
		long len = read_line(f, line, &nul);

		if (len < 0)
			break;
		lineno++;
		if (len > CFG_LINE_MAX) {
			snprintf(what, sizeof(what), "line too long, at most %d bytes", CFG_LINE_MAX);
			goto bad;
		}
		if (nul) {
			snprintf(what, sizeof(what), "NUL byte in line (not a text file?)");
			goto bad;
		}
		why = parse_line(line, &key, &value);
		if (why) {
			snprintf(what, sizeof(what), "%s%s%.64s%s", why,
				 key ? " (key '" : "", key ? key : "", key ? "')" : "");
			goto bad;
		}
		if (!key)
			continue;
		k = cfg_find(key);
		if (k && seen_line[k - cfg_keys]) {
			snprintf(what, sizeof(what), "duplicate key, first set on line %d (key '%s')",
				 seen_line[k - cfg_keys], key);
			goto bad;
		}
		if (cfg_set(cfg, key, value, what, sizeof(what)) < 0)
			goto bad;
		seen_line[k - cfg_keys] = lineno;
	}
	rc = 0;
	if (ferror(f)) {
		cfg_err(err, err_len, "cannot read %s: %s", path, strerror(errno));
		rc = -EIO;
	}
	fclose(f);
	return rc;
bad:
	cfg_err(err, err_len, "%s:%d: %s", path, lineno, what);
	fclose(f);
	return rc;
}

int cfg_load(Config *cfg, const char *path, char *err, size_t err_len)
{
	char var[64], what[CFG_LINE_MAX / 2];
	const char *value;
	int rc;

	cfg_defaults(cfg);
	if (path) {
		rc = cfg_read_file(cfg, path, err, err_len);
		if (rc < 0)
			return rc;
	}
	for (const CfgKey *k = cfg_keys; k->name; k++) {
		snprintf(var, sizeof(var), "RG_%s", k->name);
		for (size_t i = 3; var[i]; i++)
			var[i] = (char)toupper((unsigned char)var[i]);
		value = getenv(var);
		if (!value)
			continue;
		rc = cfg_set(cfg, k->name, value, what, sizeof(what));
		if (rc < 0) {
			cfg_err(err, err_len, "environment %s: %s", var, what);
			return rc;
		}
	}
	return 0;
}

/* True if conninfo carries a password: "password=" in a keyword string, or
 * user:password@ in a postgresql:// URI. Errs on the side of "yes". */
static int conninfo_has_password(const char *conninfo)
{
	const char *at, *colon;

	if (strstr(conninfo, "password"))
		return 1;
	if (strncmp(conninfo, "postgres", 8) != 0 || !(at = strchr(conninfo, '@')))
		return 0;
	colon = strchr(conninfo + 8, ':');                   /* "postgresql:" */
	colon = colon ? strchr(colon + 1, ':') : NULL;       /* "user:" */
	return colon && colon < at;
}

/* True if this process has gid as its effective or a supplementary group. */
static int in_group(gid_t gid)
{
	gid_t groups[256];
	int n;

	if (getegid() == gid)
		return 1;
	n = getgroups((int)(sizeof(groups) / sizeof(groups[0])), groups);
	for (int i = 0; i < n; i++)
		if (groups[i] == gid)
			return 1;
	return 0;
}

int cfg_warn_secret_mode(const Config *cfg, const char *path)
{
	const char *secret = cfg->admin_token[0] ? "admin_token" :
			     cfg->botcheck_secret[0] ? "botcheck_secret" :
			     conninfo_has_password(cfg->pg_conninfo) ? "the password in pg_conninfo" :
			     NULL;
	struct stat st;
	int warned = 0;

	/* cfg does not say where a secret came from: one set through RG_* counts
	 * too, erring towards a warning. */
	if (!path || !secret || stat(path, &st) != 0)
		return 0;
	if (st.st_mode & S_IROTH) {
		log_warn("%s holds %s and is readable by every user (mode %04o): chmod o-r it, or "
			 "set secrets through RG_* environment variables", path, secret,
			 (unsigned)(st.st_mode & 07777));
		warned++;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		log_warn("%s holds %s and is writable by group or others (mode %04o): chmod go-w it",
			 path, secret, (unsigned)(st.st_mode & 07777));
		warned++;
	}
	/* Group read is how rg-fcgi (web server group) shares the file; a group
	 * this process is not in is someone else's. */
	if ((st.st_mode & S_IRGRP) && !in_group(st.st_gid)) {
		log_warn("%s holds %s and is readable by group %u, which this process is not in "
			 "(mode %04o): make the group the service's own, or chmod g-r it",
			 path, secret, (unsigned)st.st_gid, (unsigned)(st.st_mode & 07777));
		warned++;
	}
	return warned;
}

void cfg_print_help(FILE *out)
{
	char def[CFG_PATH_MAX + 2];
	int name_w = 3, def_w = 7;

	for (const CfgKey *k = cfg_keys; k->name; k++) {
		name_w = (int)strlen(k->name) > name_w ? (int)strlen(k->name) : name_w;
		def_w = (int)strlen(k->def) + 2 > def_w ? (int)strlen(k->def) + 2 : def_w;
	}
	fprintf(out, "  %-*s  %-*s  %s\n", name_w, "KEY", def_w, "DEFAULT", "MEANING");
	for (const CfgKey *k = cfg_keys; k->name; k++) {
		/* Quote strings so an empty default is visible. */
		snprintf(def, sizeof(def), k->type == CFG_STR ? "\"%s\"" : "%s", k->def);
		fprintf(out, "  %-*s  %-*s  %s\n", name_w, k->name, def_w, def, k->help);
	}
}
