/* cfg.h — the service configuration: one table of keys drives the config
 * file, environment overrides, --help and validation (pgbouncer CF_ABS,
 * redis static_configs[]).
 *
 * File syntax: "key = value" per line; '#' starts a comment; blank lines are
 * ignored; a value may be wrapped in double quotes to keep spaces. Unknown
 * keys, bad values and duplicate keys are errors naming file and line.
 * Environment: RG_<KEY IN UPPER CASE> overrides the file (e.g. RG_SHARDS=4).
 * conf/revenue-guard.conf lists every key with its default; a test checks. */
#ifndef RG_CFG_H
#define RG_CFG_H

#include <stddef.h>
#include <stdio.h>

#define CFG_PATH_MAX 256

typedef struct Config {
	/* ledger */
	char ledger_socket[CFG_PATH_MAX];   /* Unix socket workers connect to */
	int ledger_socket_mode;             /* file mode of that socket, octal in the file */
	char ledger_socket_group[64];       /* group owning the socket ("" = the ledger's) */
	char ledger_allowed_uids[256];      /* SO_PEERCRED: users/uids that may connect ("" and no gids: no check) */
	char ledger_allowed_gids[256];      /* SO_PEERCRED: primary groups/gids that may connect */
	char data_dir[CFG_PATH_MAX];        /* WAL segments and snapshots live here */
	int shards;                         /* shard threads; 0 = what data_dir has, else CPUs */
	int shard_queue_len_max;            /* requests waiting per shard before "busy" */
	int max_connections;                /* ledger socket connections */
	int wal_segment_size_mb;
	int snapshot_interval_records;      /* records between snapshots per shard */
	int reservation_retention_s;        /* how long finished reservations stay queryable */
	int default_reservation_ttl_s;      /* for SKUs created without reservation_ttl_s */
	int default_max_per_order;
	int default_per_session_limit;      /* 0 = no limit */
	/* write-behind to PostgreSQL (rg-ledger) */
	char pg_conninfo[1024];             /* libpq connection string; "" = write-behind off */
	int writebehind_batch_max;          /* WAL records per PostgreSQL transaction */
	int writebehind_delay_ms;           /* longest a batch gathers before it is committed */
	int writebehind_retry_max_ms;       /* cap of the reconnect backoff */
	/* FastCGI front (rg-fcgi) */
	char fcgi_listen[CFG_PATH_MAX];     /* "unix:PATH" | "tcp:HOST:PORT"; "" = fd 0 from the web server */
	int fcgi_workers;                   /* prefork worker processes */
	int fcgi_listen_backlog;            /* listen(2) backlog of fcgi_listen's socket */
	int fcgi_shed_queue_len;            /* per worker: 503 at once past this many waiting; 0 = off */
	char api_prefix[64];                /* stripped from REQUEST_URI when PATH_INFO is empty */
	int request_body_max;               /* bytes */
	int json_depth_max;                 /* nesting of JSON request bodies */
	char admin_token[256];              /* "" = the admin API always answers 401 */
	char cors_allowed_origins[1024];    /* comma-separated exact origins, or "*" */
	int ledger_timeout_ms;              /* per ledger round trip */
	int ledger_retry_after_s;           /* Retry-After of 503 answers */
	char metrics_file[CFG_PATH_MAX];    /* shared counters of all workers ("" = per master) */
	char botcheck_mode[16];             /* off | hmac | turnstile (checked by rg-fcgi) */
	char botcheck_secret[256];
	int botcheck_max_age_s;
	char turnstile_url[512];
	int turnstile_timeout_ms;
	char log_level[16];
} Config;

typedef enum CfgType {
	CFG_STR,
	CFG_INT,
	CFG_MODE,  /* octal file mode, 0..0777 */
	CFG_LEVEL, /* a log level name */
} CfgType;

typedef struct CfgKey {
	const char *name;
	CfgType type;
	size_t offset;     /* into Config */
	size_t size;       /* CFG_STR: buffer size */
	const char *def;   /* default, as it would be written in the file */
	long min, max;     /* CFG_INT bounds */
	const char *help;  /* one line */
} CfgKey;

/* The table; terminated by an entry with name == NULL. */
extern const CfgKey cfg_keys[];

/* Fills cfg with every default. */
void cfg_defaults(Config *cfg);

/* Reads path (NULL: defaults only), then RG_* environment overrides.
 * Returns 0, or -EINVAL with a message "FILE:LINE: ..." in err; a file that
 * cannot be opened gives -errno (e.g. -ENOENT), one that cannot be read -EIO. */
int cfg_load(Config *cfg, const char *path, char *err, size_t err_len)
	__attribute__((warn_unused_result));

/* Sets one key from its text form (as the file and environment do). */
int cfg_set(Config *cfg, const char *key, const char *value, char *err, size_t err_len)
	__attribute__((warn_unused_result));

/* Warns (log_warn) when the file at path holds a secret (admin_token,
 * botcheck_secret, a password in pg_conninfo) and users other than this
 * service could read it: readable by others, writable by group or others, or
 * readable by a group this process is not in. Returns the number of warnings
 * (0 when path is NULL or the file holds no secret). */
int cfg_warn_secret_mode(const Config *cfg, const char *path);

/* Prints every key, its default and help, for --help. */
void cfg_print_help(FILE *out);

#endif
