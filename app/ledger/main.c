/* main.c — rg-ledger: the sharded, durable inventory ledger daemon.
 *
 * Start-up order matters: load config, lock the data directory (two ledgers on
 * one WAL would each acknowledge sales the other overwrites), settle the shard
 * count, recover every shard, and only then open the socket, so nobody is
 * answered before the state is whole. PostgreSQL is not needed to start or
 * to sell: with pg_conninfo set, the write-behind writers and the catalog
 * adoption start after the shards and wait for it on their own threads.
 *
 * Under systemd (Type=notify) it reports READY=1 only once every shard has
 * recovered and the socket listens, STOPPING=1 when SIGTERM starts the drain,
 * and RELOADING=1/READY=1 around SIGHUP. With WatchdogSec= set, a watchdog
 * thread sends WATCHDOG=1 only after a probe went all the way through: a
 * PING answered by the I/O thread and a read answered by every shard (shard
 * thread and syncer), so a stuck loop or shard stops the pings and systemd
 * restarts the ledger. Without NOTIFY_SOCKET all of this is a no-op. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "common/cfg.h"
#include "common/clock.h"
#include "common/fileio.h"
#include "common/hash.h"
#include "common/ledger_client.h"
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
	/* The rename is durable only once the directory is: like the WAL, a
	 * failure here stops the start. */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = dfd < 0 ? -errno : fileio_fsync(dfd);
	if (dfd >= 0)
		close(dfd);
	if (rc != 0) {
		log_error("cannot sync directory %s: %s", dir, strerror(-rc));
		return -1;
	}
	return n;
}

/* ---- systemd watchdog: proves the I/O thread and every shard answer ----------- */

typedef struct Watchdog {
	const char *socket_path;
	unsigned nshards;
	int interval_ms;              /* half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises */
	int stop_pipe[2];
	pthread_t thread;
	LedgerClient *client;         /* the probe connection, reopened after any error */
	char (*probe_sku)[WIRE_SKU_MAX + 1]; /* per shard, a SKU name that shard owns */
	int healthy;                  /* the last probe's verdict, to log only changes */
} Watchdog;

/* For each shard, "rg:watchdog:N" with the first N that routes to it. Should a
 * shop ever name a SKU so, the probe reads it, which proves just as much. */
static void watchdog_pick_skus(Watchdog *w)
{
	unsigned found = 0;

	w->probe_sku = xcalloc(w->nshards, sizeof(*w->probe_sku));
	for (unsigned i = 0; found < w->nshards; i++) {
		char name[WIRE_SKU_MAX + 1];
		int len = snprintf(name, sizeof(name), "rg:watchdog:%u", i);
		unsigned k = hash_shard(hash_route(name, (size_t)len), w->nshards);
		if (!w->probe_sku[k][0]) {
			memcpy(w->probe_sku[k], name, (size_t)len + 1);
			found++;
		}
	}
}

/* One PING (answered by the I/O thread) and one GET_SKU per shard (answered
 * by its shard thread once its syncer released the batch), all within the
 * interval. Returns 1 when everything answered, 0 otherwise (why says what). */
static int watchdog_probe(Watchdog *w, char *why, size_t why_len)
{
	int64_t deadline;
	int rc;

	if (!w->client) {
		rc = ledger_client_connect(w->socket_path, w->interval_ms, &w->client);
		if (rc != 0) {
			w->client = NULL;
			snprintf(why, why_len, "cannot connect to %s: %s", w->socket_path, strerror(-rc));
			return 0;
		}
	}
	WireRequest ping = { .op = WIRE_OP_PING };
	ledger_client_send(w->client, &ping);
	for (unsigned i = 0; i < w->nshards; i++) {
		WireRequest get = { .op = WIRE_OP_GET_SKU };
		wire_set_str(get.sku, &get.sku_len, w->probe_sku[i], strlen(w->probe_sku[i]),
			     WIRE_SKU_MAX);
		ledger_client_send(w->client, &get);
	}
	rc = ledger_client_flush(w->client);
	deadline = clock_mono_ns() + (int64_t)w->interval_ms * 1000000;
	for (unsigned got = 0; rc == 0 && got <= w->nshards; got++) {
		WireResponse resp;
		int64_t left_ms = (deadline - clock_mono_ns()) / 1000000;
		rc = ledger_client_recv(w->client, &resp, left_ms > 0 ? (int)left_ms : 0);
		/* busy or shutting down: that shard did not prove it is working */
		if (rc == 0 && (resp.status == WIRE_BUSY || resp.status == WIRE_SHUTTING_DOWN)) {
			snprintf(why, why_len, "a probe was answered %s",
				 resp.status == WIRE_BUSY ? "busy" : "shutting down");
			rc = -EAGAIN;
		}
	}
	if (rc != 0) {
		if (rc != -EAGAIN)
			snprintf(why, why_len, "no answer from every shard within %d ms (%s)",
				 w->interval_ms, strerror(-rc));
		ledger_client_close(w->client); /* late answers must not count next time */
		w->client = NULL;
		return 0;
	}
	return 1;
}

static void *watchdog_main(void *arg)
{
	Watchdog *w = arg;
	struct pollfd pfd = { .fd = w->stop_pipe[0], .events = POLLIN };

	log_set_thread("watchdog");
	for (;;) {
		char why[256] = "";
		int64_t t0 = clock_mono_ns();
		int ok = watchdog_probe(w, why, sizeof(why));

		if (ok)
			sd_notify(0, "WATCHDOG=1");
		if (ok != w->healthy) {
			if (ok)
				log_info("every shard answers again: pinging systemd's watchdog");
			else
				log_warn("%s: not pinging systemd's watchdog", why);
			w->healthy = ok;
		}
		int64_t left_ms = w->interval_ms - (clock_mono_ns() - t0) / 1000000;
		if (poll(&pfd, 1, left_ms > 0 ? (int)left_ms : 0) != 0)
			break; /* stop asked (or the pipe broke) */
	}
	ledger_client_close(w->client);
	return NULL;
}

/* Starts the watchdog thread when systemd asked for one (WATCHDOG_USEC for
 * this pid); returns NULL otherwise. */
static Watchdog *watchdog_start(const char *socket_path, unsigned nshards)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return NULL;
	Watchdog *w = xcalloc(1, sizeof(*w));
	w->socket_path = socket_path;
	w->nshards = nshards;
	w->interval_ms = usec / 2000 > 0 ? (int)(usec / 2000) : 1;
	w->healthy = 1;
	watchdog_pick_skus(w);
	if (pipe2(w->stop_pipe, O_CLOEXEC) != 0 || pthread_create(&w->thread, NULL, watchdog_main, w) != 0)
		log_fatal("cannot start the watchdog thread: %s", strerror(errno));
	pthread_setname_np(w->thread, "rg-watchdog"); /* tests find it by name */
	log_info("systemd watchdog: probing every shard every %d ms", w->interval_ms);
	return w;
}

static void watchdog_stop(Watchdog *w)
{
	if (!w)
		return;
	close(w->stop_pipe[1]); /* poll sees POLLHUP */
	pthread_join(w->thread, NULL);
	close(w->stop_pipe[0]);
	free(w->probe_sku);
	free(w);
}

/* ---- SIGHUP --------------------------------------------------------------------- */

typedef struct Reload {
	const char *config_path;      /* NULL: defaults and environment only */
	Config *cfg;                  /* the running configuration */
	Catalog *catalog;             /* NULL when pg_conninfo is empty */
} Reload;

/* On the I/O thread, for each SIGHUP: reads the config file again. A file
 * that no longer loads is logged and changes nothing. log_level takes effect
 * at once; every other key is fixed for the life of the process (sockets,
 * data layout, shard and PostgreSQL settings) and a change is only reported,
 * so the operator knows a restart is due. Then catalog adoption runs again
 * (new products rows), on the catalog's own thread. */
static void reload(void *ctx)
{
	Reload *r = ctx;
	char why[512] = "";
	Config fresh;

	sd_notify(0, "RELOADING=1");
	if (cfg_load(&fresh, r->config_path, why, sizeof(why)) != 0) {
		log_error("reload: %s; keeping the running configuration", why);
	} else {
		for (const CfgKey *k = cfg_keys; k->name; k++) {
			const char *was = (const char *)r->cfg + k->offset;
			const char *now = (const char *)&fresh + k->offset;
			if (memcmp(was, now, k->size) == 0)
				continue;
			if (strcmp(k->name, "log_level") == 0) {
				if (log_set_level(fresh.log_level) == 0) {
					memcpy(r->cfg->log_level, fresh.log_level, sizeof(fresh.log_level));
					log_info("reload: log_level is now %s", fresh.log_level);
				}
			} else {
				log_warn("reload: %s changed; it takes effect at the next restart", k->name);
			}
		}
		log_info("reload: configuration %s read again", r->config_path ? r->config_path : "(defaults)");
	}
	if (r->catalog)
		catalog_reload(r->catalog);
	sd_notify(0, "READY=1");
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
	(void)log_set_level(cfg.log_level); /* validated by cfg_load */
	cfg_warn_secret_mode(&cfg, config_path);
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
			      .inflight_max = INFLIGHT_PER_CONNECTION,
			      .allowed_uids = cfg.ledger_allowed_uids,
			      .allowed_gids = cfg.ledger_allowed_gids };
	IdemIndex *idem = idem_new();
	Shard **shards = xcalloc((size_t)nshards, sizeof(Shard *));
	char **dirs = xcalloc((size_t)nshards, sizeof(char *));
	WriteBehind *wb = NULL;
	Catalog *catalog = NULL;
	Watchdog *watchdog = NULL;
	Reload reloader = { .config_path = config_path, .cfg = &cfg };
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
		sd_notifyf(0, "STATUS=recovering shard %d of %d", i + 1, nshards);
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
					  .delay_ms = cfg.writebehind_delay_ms,
					  .retry_max_ms = cfg.writebehind_retry_max_ms };
		int err = writebehind_start(&wbc, shards, (const char *const *)dirs, (unsigned)nshards, &wb);
		if (err == 0)
			err = catalog_start(cfg.pg_conninfo, cfg.writebehind_retry_max_ms, shards,
					    (unsigned)nshards, &catalog);
		if (err != 0)
			log_fatal("cannot start the write-behind threads: %s", strerror(-err));
	} else {
		log_info("pg_conninfo is empty: write-behind to PostgreSQL and catalog adoption are off");
	}
	reloader.catalog = catalog;
	server_set_reload_hook(srv, reload, &reloader);
	/* Recovered and listening: connections wait in the backlog until the
	 * loop below takes them, so systemd may start the workers now. */
	sd_notifyf(0, "READY=1\nSTATUS=serving %s with %d shards", cfg.ledger_socket, nshards);
	watchdog = watchdog_start(cfg.ledger_socket, (unsigned)nshards);
	int run_rc = server_run(srv);
	sd_notify(0, "STOPPING=1\nSTATUS=finishing the requests in flight, writing snapshots");
	watchdog_stop(watchdog);
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
