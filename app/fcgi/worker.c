/* worker.c — the request loop of one rg-fcgi process (see worker.h). */
#include "fcgi/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "common/log.h"
#include "fcgi/api.h"
#include "fcgi/backlog.h"
#include "fcgi/botcheck.h"
#include "fcgi/http.h"
#include "fcgi/ledger_conn.h"

static volatile sig_atomic_t worker_stop;

static void on_stop(int sig)
{
	(void)sig;
	worker_stop = 1;
}

/* Installs our handlers over libfcgi's and blocks the stop signals; *wait_mask
 * gets the mask to wait with (the same, stop signals unblocked). */
static void signals_setup(sigset_t *wait_mask)
{
	/* No SA_RESTART: the one place they are unblocked is the wait for the
	 * next request, which they must interrupt. */
	struct sigaction stop = { .sa_handler = on_stop };
	struct sigaction ign = { .sa_handler = SIG_IGN };
	sigset_t stops;

	sigemptyset(&stop.sa_mask);
	sigaction(SIGTERM, &stop, NULL);
	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGUSR1, &stop, NULL);
	/* A web server that hung up must be a write error, not our death. */
	sigaction(SIGPIPE, &ign, NULL);
	/* The prefork master reloads on SIGHUP; a worker has nothing to do. */
	sigaction(SIGHUP, &ign, NULL);

	sigemptyset(&stops);
	sigaddset(&stops, SIGTERM);
	sigaddset(&stops, SIGINT);
	sigaddset(&stops, SIGUSR1);
	sigprocmask(SIG_BLOCK, &stops, wait_mask);
	sigdelset(wait_mask, SIGTERM);
	sigdelset(wait_mask, SIGINT);
	sigdelset(wait_mask, SIGUSR1);
}

Botcheck *worker_botcheck(const Config *cfg, char *why, size_t why_len)
{
	BotcheckConfig bc = {
		.secret = cfg->botcheck_secret,
		.max_age_s = cfg->botcheck_max_age_s,
		.turnstile_url = cfg->turnstile_url,
		.timeout_ms = cfg->turnstile_timeout_ms,
	};
	char bwhy[256] = "";
	Botcheck *b;

	if (botcheck_mode_parse(cfg->botcheck_mode, &bc.mode) < 0) {
		snprintf(why, why_len, "botcheck_mode '%s' must be off, hmac or turnstile",
			 cfg->botcheck_mode);
		return NULL;
	}
	b = botcheck_new(&bc, bwhy, sizeof(bwhy));
	if (!b)
		snprintf(why, why_len, "botcheck_mode %s: %s", cfg->botcheck_mode, bwhy);
	return b;
}

/* ---- shedding (fcgi_shed_queue_len; worker.h says why) ---------------------- */

typedef struct Shed {
	Backlog *backlog;           /* NULL: shedding off */
	Metrics *metrics;
	uint32_t bound;             /* fcgi_shed_queue_len x workers on the socket */
	uint64_t since_log;         /* shed since the last log line */
	time_t logged_at;           /* CLOCK_MONOTONIC seconds of that line; 0: none yet */
	unsigned in_row;            /* shed since the last request served */
	unsigned query_failed;      /* failed queries (only the first is logged) */
} Shed;

/* A shed warning at most this often: under overload it would be every request. */
#define SHED_LOG_EVERY_S 10
/* Past the bound one request in this many is served anyway (shed_now). */
#define SHED_SERVE_EVERY 8

static void shed_open(Shed *shed, const Config *cfg, int listen_fd, Metrics *metrics)
{
	int rc;

	*shed = (Shed){ .bound = (uint32_t)cfg->fcgi_shed_queue_len, .metrics = metrics };
	if (!shed->bound)
		return;
	/* The bound is per worker, so the wait it allows (about bound requests'
	 * service time) is the same whether each worker has its own socket
	 * (spawned) or the pool's workers share one. */
	if (cfg->fcgi_listen[0])
		shed->bound *= (uint32_t)cfg->fcgi_workers;
	rc = backlog_open(listen_fd, &shed->backlog);
	if (rc < 0)
		log_warn("fcgi_shed_queue_len: cannot measure the FastCGI socket's accept queue "
			 "(%s): not shedding", strerror(-rc));
}

/* The api's shed hook: 1 when the accept queue is past the bound. A failed
 * query never sheds. */
static int shed_now(void *ctx)
{
	Shed *shed = ctx;
	struct timespec now;
	uint32_t queued = 0, max = 0;
	int rc = backlog_query(shed->backlog, &queued, &max);

	if (rc < 0) {
		if (!shed->query_failed++)
			log_warn("fcgi_shed_queue_len: accept queue query failed (%s): this "
				 "request is served (logged once)", strerror(-rc));
		return 0;
	}
	if (queued <= shed->bound) {
		shed->in_row = 0;
		return 0;
	}
	/* Serve one in SHED_SERVE_EVERY even past the bound: a client that
	 * retries at once refills the queue as fast as we shed, which would
	 * otherwise starve every buyer. */
	if (++shed->in_row >= SHED_SERVE_EVERY) {
		shed->in_row = 0;
		return 0;
	}
	if (shed->metrics)
		metrics_shed(shed->metrics);
	shed->since_log++;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!shed->logged_at || now.tv_sec - shed->logged_at >= SHED_LOG_EVERY_S) {
		log_warn("shedding: %u connections wait on the FastCGI socket (bound %u: "
			 "fcgi_shed_queue_len x its workers; backlog %u); %llu answered 503 at "
			 "once since the last such line", queued, shed->bound, max,
			 (unsigned long long)shed->since_log);
		shed->logged_at = now.tv_sec ? now.tv_sec : 1;
		shed->since_log = 0;
	}
	return 1;
}

/* The listening socket is shared by every worker of a pool. A poll on it
 * wakes all idle workers for each new connection, and all but one find
 * nothing to accept: with 32 workers that herd cost more CPU than the request.
 * Each worker waits in its own epoll set instead, where EPOLLEXCLUSIVE wakes
 * one waiter per connection. Returns the epoll descriptor, or -1 (logged). */
static int accept_wait_open(int listen_fd)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE };
	int epfd = epoll_create1(EPOLL_CLOEXEC);

	if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) < 0) {
		log_error("epoll on the FastCGI socket: %s", strerror(errno));
		if (epfd >= 0)
			close(epfd);
		return -1;
	}
	return epfd;
}

/* Sleeps until FCGX_Accept_r has something to do or a stop signal comes
 * (they are unblocked only here, so none is missed between the check of
 * worker_stop and the sleep). FCGX_Accept_r reads the next request from a
 * kept connection when there is one (only this worker waits on it), else
 * accepts. */
static int wait_for_request(int accept_wait, int kept_fd, const sigset_t *wait_mask)
{
	struct epoll_event ev;

	if (kept_fd >= 0) {
		struct pollfd pfd = { .fd = kept_fd, .events = POLLIN };

		return ppoll(&pfd, 1, NULL, wait_mask);
	}
	return epoll_pwait(accept_wait, &ev, 1, -1, wait_mask);
}

/* Errors of accept that pass (out of descriptors or memory for a moment). */
static int accept_error_transient(int rc)
{
	return rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS || rc == -ENOMEM ||
	       rc == -ECONNABORTED || rc == -EPROTO || rc == -EINTR;
}

int worker_run(const Config *cfg, int listen_fd, Metrics *metrics)
{
	FCGX_Request fcgx;
	HttpResponse resp;
	HttpRequest req;
	sigset_t wait_mask;
	LedgerConn *ledger = NULL;
	Botcheck *botcheck = NULL;
	Api *api = NULL;
	const char *why;
	Shed shed = { 0 };
	char context[32], why_text[512];
	int flags, accept_wait = -1, status = 1;

	snprintf(context, sizeof(context), "fcgi %d", (int)getpid());
	log_set_context(context);
	signals_setup(&wait_mask);
	http_response_init(&resp);
	FCGX_InitRequest(&fcgx, listen_fd, 0); /* cannot fail; makes the cleanup below safe */
	flags = fcntl(listen_fd, F_GETFL);
	if (flags < 0 || fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		log_error("listen socket: %s", strerror(errno));
		goto out;
	}
	shed_open(&shed, cfg, listen_fd, metrics);
	botcheck = worker_botcheck(cfg, why_text, sizeof(why_text));
	if (!botcheck) {
		log_error("%s", why_text);
		goto out;
	}
	ledger = ledger_conn_new(cfg->ledger_socket, cfg->ledger_timeout_ms, metrics);
	(void)ledger_conn_ensure(ledger, &why); /* a failure is logged and retried later */
	api = api_new(cfg, botcheck, ledger, metrics);
	if (shed.backlog)
		api_set_shed(api, shed_now, &shed);

	accept_wait = accept_wait_open(listen_fd);
	if (accept_wait < 0)
		goto out;
	while (!worker_stop) {
		int rc;

		if (wait_for_request(accept_wait, fcgx.ipcFd, &wait_mask) < 0) {
			if (errno == EINTR)
				continue;
			log_error("waiting for a request: %s", strerror(errno));
			goto out;
		}
		rc = FCGX_Accept_r(&fcgx);
		if (rc == -EAGAIN || rc == -EWOULDBLOCK)
			continue; /* another worker took the connection */
		if (rc < 0) {
			if (!accept_error_transient(rc)) {
				log_error("FastCGI accept failed: %s",
					  rc > -4096 ? strerror(-rc) : "protocol error");
				goto out;
			}
			log_warn("FastCGI accept: %s", strerror(-rc));
			nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000000 }, NULL);
			continue;
		}
		http_request_from_env(&req, fcgx.envp, fcgx.in);
		api_handle(api, &req, &resp);
		if (http_send(&resp, fcgx.out) < 0)
			log_debug("the web server went away before the answer");
		/* Unread body bytes would be taken for the next request's records. */
		if (!http_drain(&req))
			fcgx.keepConnection = 0;
		FCGX_Finish_r(&fcgx);
	}
	status = 0;
out:
	if (accept_wait >= 0)
		close(accept_wait);
	FCGX_Finish_r(&fcgx);
	http_response_free(&resp);
	api_free(api);
	ledger_conn_free(ledger);
	backlog_close(shed.backlog);
	if (botcheck)
		botcheck_free(botcheck);
	return status;
}
