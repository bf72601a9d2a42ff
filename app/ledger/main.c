/* main.c — rg-ledger: the sharded, durable inventory ledger daemon.
 *
 * Start-up order matters: load config, lock the data directory (two ledgers on
 * one WAL would each acknowledge sales the other overwrites), settle the shard
 * count, recover every shard, and only then open the socket, so nobody is
 * answered before the state is whole. PostgreSQL is not needed to start or
 * to sell: with pg_conninfo set, the write-behind writers and the catalog
 * adoption start after the shards and wait for it on their own threads. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/log.h"
#include "common/xmalloc.h"
#include "ledger/catalog.h"
#include "ledger/idem.h"
#include "ledger/server.h"
#include "ledger/shard.h"
#include "ledger/writebehind.h"

#define SHARDS_MAX 256
#define INFLIGHT_PER_CONNECTION 4096

static void usage(FILE *out)
{
	fprintf(out,
		"usage: rg-ledger [--config FILE] [--check-config] [--allow-wal-corruption]\n"
		"                 [--help] [--version]\n"
		"\n"
		"The Revenue Guard ledger: one owner thread per SKU shard, durable group\n"
		"commit, crash recovery. Config keys (file \"key = value\", or RG_<KEY>):\n\n");
	cfg_print_help(out);
}

/* Every connection is a descriptor, plus the WAL, snapshots, PostgreSQL and
 * the event loop's own: raise the soft limit to fit max_connections. */
static void raise_fd_limit(int max_connections)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)max_connections + 256;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
		log_warn("open files limit %llu is below max_connections + 256 (%llu): connections "
			 "beyond it wait until others close", (unsigned long long)rl.rlim_cur,
			 (unsigned long long)want);
}

/* Holds an exclusive lock on DATA_DIR/LOCK for the life of the process. */
static int lock_data_dir(const char *dir)
{
	char path[CFG_PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/LOCK", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		log_error("cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		log_error("%s is in use by another rg-ledger (%s)", dir, strerror(errno));
		close(fd);
		return -1;
	}
	return fd; /* kept open: the lock lives as long as the process */
}

/* The shard count is part of the data: SKU ownership follows hash % shards.
 * The first start records it in DATA_DIR/SHARDS; later starts must match. */
static int settle_shards(const char *dir, int configured)
{
	char path[CFG_PATH_MAX + 16];
	int recorded = 0;
	snprintf(path, sizeof(path), "%s/SHARDS", dir);
	FILE *f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%d", &recorded) != 1 || recorded < 1 || recorded > SHARDS_MAX) {
			log_error("%s is damaged", path);
			fclose(f);
			return -1;
		}
		fclose(f);
	}
	if (recorded) {
		if (configured && configured != recorded) {
			log_error("%s was written with %d shards but shards = %d; start with shards = %d "
				  "(or 0 to follow the data): re-sharding existing data is not supported",
				  dir, recorded, configured, recorded);
			return -1;
		}
		return recorded;
	}
	int n = configured ? configured : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	if (n > SHARDS_MAX)
		n = SHARDS_MAX;
	char tmp[CFG_PATH_MAX + 24];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%d\n", n) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0 ||
	    fclose(f) != 0 || rename(tmp, path) != 0) {
		log_error("cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return n;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "allow-wal-corruption", no_argument, NULL, 'A' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL;
	int check_only = 0, allow_corruption = 0, opt;
	char why[512] = "";

	while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c': config_path = optarg; break;
		case 'C': check_only = 1; break;
		case 'A': allow_corruption = 1; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("rg-ledger %s\n", RG_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "rg-ledger: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}

	Config cfg;
	if (cfg_load(&cfg, config_path, why, sizeof(why)) != 0) {
		fprintf(stderr, "rg-ledger: %s\n", why);
		return 2;
	}
	if (log_level_parse(cfg.log_level, &log_level) != 0)
		log_level = LOG_INFO;
	gid_t gid = (gid_t)-1;
	if (cfg.ledger_socket_group[0]) {
		struct group *g = getgrnam(cfg.ledger_socket_group);
		if (!g) {
			fprintf(stderr, "rg-ledger: ledger_socket_group '%s' does not exist\n",
				cfg.ledger_socket_group);
			return 2;
		}
		gid = g->gr_gid;
	}
	/* libpq's parse errors may quote the string: never print it (password). */
	if (cfg.pg_conninfo[0] && !writebehind_conninfo_valid(cfg.pg_conninfo)) {
		fprintf(stderr, "rg-ledger: pg_conninfo is not a valid libpq connection string or URI\n");
		return 2;
	}
	if (check_only) {
		printf("rg-ledger: configuration %s is valid\n", config_path ? config_path : "(defaults)");
		return 0;
	}

	if (mkdir(cfg.data_dir, 0750) != 0 && errno != EEXIST) {
		log_error("cannot create data_dir %s: %s", cfg.data_dir, strerror(errno));
		return 1;
	}
	if (lock_data_dir(cfg.data_dir) < 0)
		return 1;
	raise_fd_limit(cfg.max_connections);
	int nshards = settle_shards(cfg.data_dir, cfg.shards);
	if (nshards < 0)
		return 1;

	/* Threads inherit this mask: only the server's signalfd sees these. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP); /* catalog reload */
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	Server *srv = NULL;
	ServerConfig scfg = { .socket_path = cfg.ledger_socket, .socket_mode = cfg.ledger_socket_mode,
			      .socket_gid = gid, .max_connections = cfg.max_connections,
			      .inflight_max = INFLIGHT_PER_CONNECTION };
	IdemIndex *idem = idem_new();
	Shard **shards = xcalloc((size_t)nshards, sizeof(Shard *));
	char **dirs = xcalloc((size_t)nshards, sizeof(char *));
	WriteBehind *wb = NULL;
	Catalog *catalog = NULL;
	int rc = 1;

	if (server_open(&scfg, &srv, why, sizeof(why)) != 0) {
		log_error("%s", why);
		goto out;
	}
	for (int i = 0; i < nshards; i++) {
		ShardConfig sc = {
			.index = (unsigned)i,
			.wal_segment_size = (size_t)cfg.wal_segment_size_mb << 20,
			.queue_len_max = (size_t)cfg.shard_queue_len_max,
			.snapshot_interval_records = (uint64_t)cfg.snapshot_interval_records,
			.allow_wal_corruption = allow_corruption,
			.book = {
				.default_ttl_s = cfg.default_reservation_ttl_s,
				.default_max_per_order = cfg.default_max_per_order,
				.default_per_session_limit = cfg.default_per_session_limit,
				.retention_ms = (int64_t)cfg.reservation_retention_s * 1000,
			},
		};
		snprintf(sc.dir, sizeof(sc.dir), "%s/shard-%03d", cfg.data_dir, i);
		dirs[i] = xstrndup(sc.dir, strlen(sc.dir));
		if (shard_open(&sc, idem, server_post_replies, srv, &shards[i], why, sizeof(why)) != 0) {
			log_error("shard %d: %s", i, why);
			goto out;
		}
	}
	if (server_listen(srv, why, sizeof(why)) != 0) {
		log_error("%s", why);
		goto out;
	}
	server_set_shards(srv, shards, (unsigned)nshards);
	/* Before the shards start: from the first batch on, WAL segments stay
	 * until PostgreSQL has them. */
	if (cfg.pg_conninfo[0])
		for (int i = 0; i < nshards; i++)
			shard_enable_writebehind(shards[i]);
	for (int i = 0; i < nshards; i++)
		if (shard_start(shards[i]) != 0)
			log_fatal("cannot start the threads of shard %d", i);
	if (cfg.pg_conninfo[0]) {
		WriteBehindConfig wbc = { .conninfo = cfg.pg_conninfo,
					  .batch_max = cfg.writebehind_batch_max,
					  .retry_max_ms = cfg.writebehind_retry_max_ms };
		int err = writebehind_start(&wbc, shards, (const char *const *)dirs, (unsigned)nshards, &wb);
		if (err == 0)
			err = catalog_start(cfg.pg_conninfo, cfg.writebehind_retry_max_ms, shards,
					    (unsigned)nshards, &catalog);
		if (err != 0)
			log_fatal("cannot start the write-behind threads: %s", strerror(-err));
		server_set_reload_hook(srv, catalog_reload, catalog);
	} else {
		log_info("pg_conninfo is empty: write-behind to PostgreSQL and catalog adoption are off");
	}
	int run_rc = server_run(srv);
	if (run_rc != 0)
		log_error("event loop failed: %s", strerror(-run_rc));
	/* Answer first: every request already queued is made durable and its
	 * answer delivered, while the shards' final snapshots are written. */
	for (int i = 0; i < nshards; i++)
		shard_drain(shards[i]);
	server_deliver(srv);
	/* The writers go next: a transaction they abandon is applied again at
	 * the next start (exactly once in effect), and the shards' final batch
	 * waits in the WAL like any other. */
	catalog_stop(catalog);
	writebehind_stop(wb);
	for (int i = 0; i < nshards; i++)
		shard_stop(shards[i]);
	rc = run_rc == 0 ? 0 : 1;
	if (rc == 0)
		log_info("stopped cleanly");
out:
	server_close(srv);
	for (int i = 0; i < nshards; i++)
		shard_close(shards[i]);
	free(shards);
	for (int i = 0; i < nshards; i++)
		free(dirs[i]);
	free(dirs);
	idem_free(idem);
	return rc;
}
