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
 * losers get EAGAIN from FCGX_Accept_r and go back to waiting.
 *
 * SHEDDING. A worker serves one request at a time; the excess of an overload
 * waits, unaccepted, in the kernel listen backlog of its FastCGI socket (one
 * per spawned worker behind lighttpd, one for the whole pool otherwise), and
 * lighttpd 1.4 cannot be told to refuse it fast (a full backlog becomes its
 * 500). So before serving a request that would start ledger work (reserve,
 * get a reservation, get a SKU) the worker asks the kernel how many
 * connections wait on listen_fd (backlog.h, ~5 us for a Unix socket) and past
 * fcgi_shed_queue_len per worker on that socket answers the API's 503
 * "unavailable" + Retry-After (ledger_retry_after_s) at once, without the
 * ledger, counted in rg_http_shed_total. It still serves one request in 8
 * past the bound: clients that retry at once refill the queue as fast as it
 * is shed and would otherwise starve every buyer (measured: 10x rate, 201s
 * in 5 s 1,928 -> 5,057, still none over 500 ms). Confirm, release, admin,
 * health and /metrics are never shed (worker.c says why). A failed query
 * serves the request. */
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
