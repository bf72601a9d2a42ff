/* worker.c — the request loop of one rg-fcgi process (see worker.h). */
#include "fcgi/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "common/log.h"
#include "fcgi/api.h"
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
	/* No SA_RESTART: the one place they are unblocked is ppoll, which they
	 * must interrupt. */
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
	char context[32], why_text[512];
	int flags, status = 1;

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
	botcheck = worker_botcheck(cfg, why_text, sizeof(why_text));
	if (!botcheck) {
		log_error("%s", why_text);
		goto out;
	}
	ledger = ledger_conn_new(cfg->ledger_socket, cfg->ledger_timeout_ms, metrics);
	(void)ledger_conn_ensure(ledger, &why); /* a failure is logged and retried later */
	api = api_new(cfg, botcheck, ledger, metrics);

	while (!worker_stop) {
		/* FCGX_Accept_r reads the next request from a kept connection
		 * when there is one, else accepts: wait on whichever it will use. */
		struct pollfd pfd = { .fd = fcgx.ipcFd >= 0 ? fcgx.ipcFd : listen_fd,
				      .events = POLLIN };
		int rc;

		if (ppoll(&pfd, 1, NULL, &wait_mask) < 0) {
			if (errno == EINTR)
				continue;
			log_error("ppoll: %s", strerror(errno));
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
	FCGX_Finish_r(&fcgx);
	http_response_free(&resp);
	api_free(api);
	ledger_conn_free(ledger);
	if (botcheck)
		botcheck_free(botcheck);
	return status;
}
