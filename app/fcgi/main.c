/* main.c — rg-fcgi: the FastCGI JSON API in front of the ledger.
 *
 * Two ways to run, one worker loop (worker.c) either way:
 *   spawned  without --listen or fcgi_listen: the web server started us with
 *            the FastCGI listening socket as fd 0 (lighttpd bin-path, Apache
 *            mod_fcgid); this process is one worker and the server manages
 *            how many there are.
 *   prefork  with --listen unix:PATH|tcp:HOST:PORT (or fcgi_listen): we open
 *            the socket and a master keeps fcgi_workers workers on it
 *            (prefork.c); the web server connects to it (lighttpd/nginx
 *            without bin-path, Apache mod_proxy_fcgi, systemd).
 * The whole configuration is validated before anything starts, so
 * --check-config and a real start accept and refuse the same files. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "common/cfg.h"
#include "common/log.h"
#include "fcgi/botcheck.h"
#include "fcgi/metrics.h"
#include "fcgi/prefork.h"
#include "fcgi/worker.h"

typedef struct Main {
	Config cfg;
	const char *config_path;
	const char *listen_arg;    /* --listen: wins over fcgi_listen */
	const char *workers_arg;   /* --workers: wins over fcgi_workers */
	char listen_addr[CFG_PATH_MAX]; /* what FCGX_OpenSocket takes */
	int listen_unix;
	int listen_fd;
	Metrics *metrics;
} Main;

static void usage(FILE *out)
{
	fprintf(out,
		"usage: rg-fcgi [--config FILE] [--listen unix:PATH|tcp:HOST:PORT] [--workers N]\n"
		"               [--check-config] [--help] [--version]\n"
		"\n"
		"The Revenue Guard HTTP JSON API as a FastCGI application. Without --listen\n"
		"(and fcgi_listen) it serves the FastCGI socket a web server hands it on fd 0;\n"
		"with it, it opens that socket and runs a pool of worker processes (SIGTERM:\n"
		"stop after the requests in flight; SIGHUP: reload the config, replace the\n"
		"workers). Config keys (file \"key = value\", or RG_<KEY>):\n\n");
	cfg_print_help(out);
}

/* fcgi_listen to an FCGX_OpenSocket address. "" is valid (spawned mode). */
static int listen_parse(const char *spec, char *addr, size_t addr_len, int *is_unix,
			char *why, size_t why_len)
{
	static const char forms[] = "expected unix:PATH or tcp:HOST:PORT, e.g. tcp:127.0.0.1:9000";
	struct sockaddr_un sun;
	const char *colon;
	char *end;
	long port;

	*is_unix = 0;
	addr[0] = '\0';
	if (!*spec)
		return 0;
	if (strncmp(spec, "unix:", 5) == 0) {
		if (!spec[5] || strlen(spec + 5) >= sizeof(sun.sun_path)) {
			snprintf(why, why_len, "fcgi_listen '%s': the socket path must be 1-%zu bytes",
				 spec, sizeof(sun.sun_path) - 1);
			return -EINVAL;
		}
		*is_unix = 1;
		snprintf(addr, addr_len, "%s", spec + 5);
		return 0;
	}
	if (strncmp(spec, "tcp:", 4) != 0) {
		snprintf(why, why_len, "fcgi_listen '%s': %s", spec, forms);
		return -EINVAL;
	}
	colon = strrchr(spec + 4, ':');
	/* A host is required: libfcgi binds every interface for ":PORT". */
	if (!colon || colon == spec + 4 || strpbrk(spec + 4, "[] \t")) {
		snprintf(why, why_len, "fcgi_listen '%s': give an IPv4 host and a port (%s)", spec,
			 forms);
		return -EINVAL;
	}
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (!colon[1] || *end || errno || port < 1 || port > 65535) {
		snprintf(why, why_len, "fcgi_listen '%s': the port must be 1-65535", spec);
		return -EINVAL;
	}
	snprintf(addr, addr_len, "%s", spec + 4);
	return 0;
}

/* cors_allowed_origins: "*" alone, or origins without blanks inside or
 * control characters (they are echoed in a header). */
static int cors_check(const char *list, char *why, size_t why_len)
{
	for (const char *p = list; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			snprintf(why, why_len, "cors_allowed_origins holds a control character");
			return -EINVAL;
		}
	}
	if (strchr(list, '*') && strspn(list, " \t*") != strlen(list)) {
		snprintf(why, why_len, "cors_allowed_origins: \"*\" must stand alone");
		return -EINVAL;
	}
	return 0;
}

/* Checks what cfg_set cannot: the keys whose rules belong to rg-fcgi. The
 * listen address goes to addr (CFG_PATH_MAX bytes). */
static int validate(const Config *cfg, char *addr, int *is_unix, char *why, size_t why_len)
{
	Botcheck *b;
	int rc;

	rc = listen_parse(cfg->fcgi_listen, addr, CFG_PATH_MAX, is_unix, why, why_len);
	if (rc < 0)
		return rc;
	if (cfg->api_prefix[0] && (cfg->api_prefix[0] != '/' || strpbrk(cfg->api_prefix, "?# \t"))) {
		snprintf(why, why_len, "api_prefix '%s' must be empty or a path starting with '/'",
			 cfg->api_prefix);
		return -EINVAL;
	}
	rc = cors_check(cfg->cors_allowed_origins, why, why_len);
	if (rc < 0)
		return rc;
	if (!cfg->ledger_socket[0]) {
		snprintf(why, why_len, "ledger_socket must not be empty");
		return -EINVAL;
	}
	/* The workers build their own; this one only proves they can. */
	b = worker_botcheck(cfg, why, why_len);
	if (!b)
		return -EINVAL;
	botcheck_free(b);
	return 0;
}

/* The file, the environment, then the command line; all validated. */
static int load_config(const Main *m, Config *cfg, char *addr, int *is_unix, char *why,
		       size_t why_len)
{
	char what[256];
	int rc;

	rc = cfg_load(cfg, m->config_path, why, why_len);
	if (rc < 0)
		return rc;
	if (m->listen_arg && cfg_set(cfg, "fcgi_listen", m->listen_arg, what, sizeof(what)) < 0) {
		snprintf(why, why_len, "--listen: %s", what);
		return -EINVAL;
	}
	if (m->workers_arg && cfg_set(cfg, "fcgi_workers", m->workers_arg, what, sizeof(what)) < 0) {
		snprintf(why, why_len, "--workers: %s", what);
		return -EINVAL;
	}
	return validate(cfg, addr, is_unix, why, why_len);
}

/* A socket file left by a dead rg-fcgi is removed; a live one is an error. */
static int unix_path_free(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	close(fd);
	if (rc == 0)
		return -EADDRINUSE;
	return unlink(path) == 0 ? 0 : -errno;
}

static int open_listen(Main *m)
{
	int rc;

	if (m->listen_unix) {
		rc = unix_path_free(m->listen_addr);
		if (rc < 0) {
			log_error("cannot listen on %s: %s", m->listen_addr,
				  rc == -EADDRINUSE ? "another process serves it" : strerror(-rc));
			return rc;
		}
	} else if (strncmp(m->listen_addr, "0.0.0.0:", 8) == 0) {
		log_warn("listening on every interface (%s): FastCGI has no authentication",
			 m->listen_addr);
	}
	m->listen_fd = FCGX_OpenSocket(m->listen_addr, m->cfg.fcgi_listen_backlog);
	if (m->listen_fd < 0) {
		log_error("cannot listen on %s: %s", m->cfg.fcgi_listen, strerror(errno));
		return -EADDRNOTAVAIL;
	}
	return 0;
}

static int run_worker(void *ctx)
{
	Main *m = ctx;

	return worker_run(&m->cfg, m->listen_fd, m->metrics);
}

/* SIGHUP in the master: new workers get the new file; the socket and the
 * counters file stay as they are (they need a restart). */
static int reload(void *ctx, int *workers)
{
	Main *m = ctx;
	char why[512] = "", addr[CFG_PATH_MAX];
	int is_unix;
	Config fresh;

	if (load_config(m, &fresh, addr, &is_unix, why, sizeof(why)) < 0) {
		log_error("reload: %s", why);
		return -1;
	}
	if (strcmp(fresh.fcgi_listen, m->cfg.fcgi_listen) != 0) {
		log_warn("reload: fcgi_listen changed; it takes effect at the next start");
		memcpy(fresh.fcgi_listen, m->cfg.fcgi_listen, sizeof(fresh.fcgi_listen));
	}
	if (strcmp(fresh.metrics_file, m->cfg.metrics_file) != 0) {
		log_warn("reload: metrics_file changed; it takes effect at the next start");
		memcpy(fresh.metrics_file, m->cfg.metrics_file, sizeof(fresh.metrics_file));
	}
	m->cfg = fresh;
	(void)log_set_level(m->cfg.log_level); /* validated by cfg_load */
	*workers = m->cfg.fcgi_workers;
	log_info("reload: configuration read again");
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "workers", required_argument, NULL, 'w' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static Main m = { .listen_fd = -1 };
	char why[512] = "";
	int check_only = 0, opt, status;

	while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c': m.config_path = optarg; break;
		case 'l': m.listen_arg = optarg; break;
		case 'w': m.workers_arg = optarg; break;
		case 'C': check_only = 1; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("rg-fcgi %s\n", RG_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "rg-fcgi: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (load_config(&m, &m.cfg, m.listen_addr, &m.listen_unix, why, sizeof(why)) < 0) {
		fprintf(stderr, "rg-fcgi: %s\n", why);
		return 2;
	}
	if (m.workers_arg && !m.cfg.fcgi_listen[0]) {
		fprintf(stderr, "rg-fcgi: --workers needs --listen (or fcgi_listen): spawned by a "
				"web server, rg-fcgi is one worker\n");
		return 2;
	}
	(void)log_set_level(m.cfg.log_level); /* validated by cfg_load */
	cfg_warn_secret_mode(&m.cfg, m.config_path);
	if (check_only) {
		if (m.cfg.fcgi_listen[0])
			printf("rg-fcgi: configuration OK (listen on %s, %d workers)\n",
			       m.cfg.fcgi_listen, m.cfg.fcgi_workers);
		else
			printf("rg-fcgi: configuration OK (spawned by the web server)\n");
		return 0;
	}

	if (FCGX_Init() != 0) {
		fprintf(stderr, "rg-fcgi: FCGX_Init failed\n");
		return 1;
	}
	if (!m.cfg.fcgi_listen[0] && FCGX_IsCGI()) {
		fprintf(stderr, "rg-fcgi: fd 0 is not a FastCGI socket: run it under a FastCGI web "
				"server, or give --listen unix:PATH|tcp:HOST:PORT\n");
		return 2;
	}
	if (metrics_open(m.cfg.metrics_file, &m.metrics, why, sizeof(why)) < 0) {
		fprintf(stderr, "rg-fcgi: %s\n", why);
		return 1;
	}
	if (!m.cfg.fcgi_listen[0]) {
		status = worker_run(&m.cfg, 0, m.metrics);
	} else if (open_listen(&m) < 0) {
		status = 1;
	} else {
		PreforkConfig pc = {
			.workers = m.cfg.fcgi_workers,
			.worker = run_worker,
			.reload = reload,
			.ctx = &m,
		};
		log_set_context("fcgi master");
		log_info("listening on %s", m.cfg.fcgi_listen);
		status = prefork_run(&pc);
		close(m.listen_fd);
		if (m.listen_unix)
			unlink(m.listen_addr);
	}
	metrics_close(m.metrics);
	return status;
}
