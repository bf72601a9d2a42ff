/* worker.h — one rg-fcgi process serving FastCGI requests until told to stop.
 *
 * DESIGN. libfcgi's own SIGTERM handler only sets a flag and its accept()
 * restarts after signals, so a worker idle in accept would never exit. A
 * worker therefore keeps SIGTERM, SIGINT and SIGUSR1 blocked at all times
 * except inside one ppoll(2) that waits for the next connection (or the next
 * request on a kept connection): a stop signal either arrives there, waking it
 * at once, or waits, pending, until the request in flight is answered. No
 * request is ever cut short and an idle worker exits immediately. The listen
 * socket is non-blocking, so when several workers wake for one connection the
 * losers get EAGAIN from FCGX_Accept_r and go back to waiting. */
#ifndef RG_WORKER_H
#define RG_WORKER_H

#include <stddef.h>

#include "common/cfg.h"
#include "fcgi/botcheck.h"
#include "fcgi/metrics.h"

/* Serves on listen_fd (FCGX_Init done) until SIGTERM, SIGINT or SIGUSR1.
 * cfg and metrics are borrowed. Returns the process exit status. */
int worker_run(const Config *cfg, int listen_fd, Metrics *metrics);

/* The bot check the config asks for (botcheck_mode and its keys), or NULL
 * with the reason in why. The caller frees it with botcheck_free. */
Botcheck *worker_botcheck(const Config *cfg, char *why, size_t why_len);

#endif
