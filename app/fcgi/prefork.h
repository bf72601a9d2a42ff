/* prefork.h — a master process that keeps N worker processes alive.
 *
 * DESIGN. The caller opens the listening socket first; every worker inherits
 * it and accepts on it (the kernel hands each connection to one of them). The
 * master does nothing but supervise, from a sigtimedwait loop with SIGCHLD,
 * SIGTERM, SIGINT and SIGHUP blocked, so no handler races the bookkeeping:
 *   a worker dies      it is restarted; one that dies within
 *                      PREFORK_FAST_EXIT_MS of its start is crash-looping, and
 *                      its restarts back off from PREFORK_BACKOFF_MIN_MS,
 *                      doubling to PREFORK_BACKOFF_MAX_MS
 *   SIGTERM / SIGINT   every worker gets SIGTERM (each finishes the request in
 *                      flight, then exits); the master waits for all, at most
 *                      PREFORK_STOP_TIMEOUT_S before SIGKILL, and returns 0;
 *                      a second signal kills them at once
 *   SIGHUP             reload (the caller's hook, e.g. re-reading the config),
 *                      start a new set of workers, then SIGTERM the old ones,
 *                      which exit after their current request
 * Workers get PR_SET_PDEATHSIG, so a master killed with SIGKILL does not
 * leave them serving forever. */
#ifndef RG_PREFORK_H
#define RG_PREFORK_H

#define PREFORK_WORKERS_MAX 256
#define PREFORK_FAST_EXIT_MS 1000
#define PREFORK_BACKOFF_MIN_MS 100
#define PREFORK_BACKOFF_MAX_MS 5000
#define PREFORK_STOP_TIMEOUT_S 30

typedef struct PreforkConfig {
	int workers;                          /* 1..PREFORK_WORKERS_MAX */
	/* Runs in each worker, with default signal dispositions and nothing
	 * blocked; its return value is the worker's exit status. */
	int (*worker)(void *ctx);
	/* On SIGHUP, in the master, before the new workers start: returns 0 and
	 * the new worker count, or -1 to keep the running workers. May be NULL. */
	int (*reload)(void *ctx, int *workers);
	void *ctx;
} PreforkConfig;

/* Supervises until SIGTERM or SIGINT; returns the master's exit status (0
 * after a clean stop, 1 when it could not fork at all). */
int prefork_run(const PreforkConfig *pc);

#endif
