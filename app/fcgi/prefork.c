/* prefork.c — master/worker supervision (see prefork.h).
 *
 * Under systemd (Type=notify) the master says READY=1 once its first workers
 * run, RELOADING=1 ... READY=1 around a SIGHUP, STOPPING=1 at SIGTERM, and
 * WATCHDOG=1 from its loop when WatchdogSec= is set. Only the master talks to
 * systemd: workers lose NOTIFY_SOCKET and WATCHDOG_* before they run. */
#include "fcgi/prefork.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/xmalloc.h"

typedef struct Slot {
	pid_t pid;               /* 0: not running */
	int64_t started_ns;
	int64_t restart_at_ns;   /* when pid is 0: not before this */
	int backoff_ms;          /* the last crash-loop delay; 0 when healthy */
} Slot;

typedef struct Prefork {
	const PreforkConfig *pc;
	pid_t master;
	sigset_t waited;         /* the signals the loop takes, blocked */
	sigset_t orig_mask;      /* the mask before, for the workers */
	Slot slots[PREFORK_WORKERS_MAX];
	int nslots;
	pid_t *retiring;         /* workers of an older generation, told to stop */
	size_t retiring_len, retiring_cap;
	int stopping;
	int64_t stop_deadline_ns;
	int64_t watchdog_ns;     /* 0: no systemd watchdog; else the ping interval */
	int64_t watchdog_due_ns;
} Prefork;

static void on_sigchld(int sig)
{
	(void)sig; /* only here so SIGCHLD is never discarded; sigtimedwait takes it */
}

static void describe_exit(int status, char *out, size_t len)
{
	if (WIFEXITED(status))
		snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(out, len, "was killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(out, len, "ended (wait status %d)", status);
}

/* In the child: back to plain signals, then the worker's life. Never returns. */
static void worker_main(Prefork *p)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	/* If the master dies (even by SIGKILL), stop rather than serve unsupervised. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != p->master)
		_exit(0);
	sigaction(SIGCHLD, &dfl, NULL);
	sigaction(SIGHUP, &dfl, NULL);
	sigaction(SIGTERM, &dfl, NULL);
	sigaction(SIGINT, &dfl, NULL);
	sigprocmask(SIG_SETMASK, &p->orig_mask, NULL);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	free(p->retiring);
	exit(p->pc->worker(p->pc->ctx));
}

/* Starts the worker of slot i. Returns 0 or -errno (fork failed; the slot
 * is then retried after a backoff). */
static int start(Prefork *p, int i)
{
	Slot *s = &p->slots[i];
	pid_t pid = fork();

	if (pid < 0) {
		int rc = -errno;
		s->backoff_ms = PREFORK_BACKOFF_MAX_MS;
		s->restart_at_ns = clock_mono_ns() + (int64_t)s->backoff_ms * 1000000;
		log_error("cannot fork a worker: %s", strerror(-rc));
		return rc;
	}
	if (pid == 0)
		worker_main(p);
	s->pid = pid;
	s->started_ns = clock_mono_ns();
	log_debug("worker %d started (slot %d)", (int)pid, i);
	return 0;
}

static void retire(Prefork *p, pid_t pid)
{
	if (p->retiring_len == p->retiring_cap) {
		p->retiring_cap = p->retiring_cap ? p->retiring_cap * 2 : 16;
		p->retiring = xrealloc(p->retiring, p->retiring_cap * sizeof(*p->retiring));
	}
	p->retiring[p->retiring_len++] = pid;
	kill(pid, SIGTERM);
}

static int forget_retired(Prefork *p, pid_t pid)
{
	for (size_t i = 0; i < p->retiring_len; i++) {
		if (p->retiring[i] == pid) {
			p->retiring[i] = p->retiring[--p->retiring_len];
			return 1;
		}
	}
	return 0;
}

/* A worker of the current set ended: schedule its successor. */
static void slot_ended(Prefork *p, Slot *s, int status)
{
	int64_t now = clock_mono_ns();
	int64_t lived_ms = (now - s->started_ns) / 1000000;
	pid_t pid = s->pid;
	char what[96];

	s->pid = 0;
	if (p->stopping)
		return;
	if (lived_ms < PREFORK_FAST_EXIT_MS) {
		s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : PREFORK_BACKOFF_MIN_MS;
		if (s->backoff_ms > PREFORK_BACKOFF_MAX_MS)
			s->backoff_ms = PREFORK_BACKOFF_MAX_MS;
	} else {
		s->backoff_ms = 0;
	}
	s->restart_at_ns = now + (int64_t)s->backoff_ms * 1000000;
	describe_exit(status, what, sizeof(what));
	log_warn("worker %d %s after %lld ms; restarting it in %d ms", (int)pid, what,
		 (long long)lived_ms, s->backoff_ms);
}

static void reap(Prefork *p)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid <= 0)
			return;
		if (forget_retired(p, pid))
			continue;
		for (int i = 0; i < p->nslots; i++) {
			if (p->slots[i].pid == pid) {
				slot_ended(p, &p->slots[i], status);
				break;
			}
		}
	}
}

static int running(const Prefork *p)
{
	int n = (int)p->retiring_len;

	for (int i = 0; i < p->nslots; i++)
		n += p->slots[i].pid != 0;
	return n;
}

static void signal_all(Prefork *p, int sig)
{
	for (int i = 0; i < p->nslots; i++) {
		if (p->slots[i].pid)
			kill(p->slots[i].pid, sig);
	}
	for (size_t i = 0; i < p->retiring_len; i++)
		kill(p->retiring[i], sig);
}

static void begin_stop(Prefork *p, int sig)
{
	log_info("%s: stopping %d workers after their current requests", strsignal(sig), running(p));
	sd_notify(0, "STOPPING=1\nSTATUS=waiting for the requests in flight");
	p->stopping = 1;
	p->stop_deadline_ns = clock_mono_ns() + (int64_t)PREFORK_STOP_TIMEOUT_S * 1000000000;
	signal_all(p, SIGTERM);
}

/* SIGHUP: a new set of workers replaces the old one, which drains. */
static void replace_workers(Prefork *p)
{
	int workers = p->nslots;
	Slot old[PREFORK_WORKERS_MAX];
	int nold = p->nslots;

	sd_notify(0, "RELOADING=1");
	if (p->pc->reload && p->pc->reload(p->pc->ctx, &workers) < 0) {
		log_warn("reload failed; keeping the running workers");
		sd_notify(0, "READY=1");
		return;
	}
	if (workers < 1 || workers > PREFORK_WORKERS_MAX)
		workers = p->nslots;
	memcpy(old, p->slots, sizeof(old));
	memset(p->slots, 0, sizeof(p->slots));
	p->nslots = workers;
	for (int i = 0; i < p->nslots; i++)
		(void)start(p, i);
	for (int i = 0; i < nold; i++) {
		if (old[i].pid)
			retire(p, old[i].pid);
	}
	log_info("reloaded: %d new workers started, %zu old ones finishing", p->nslots,
		 p->retiring_len);
	sd_notifyf(0, "READY=1\nSTATUS=%d workers", p->nslots);
}

/* How long the loop may sleep: until the next restart or the stop deadline. */
static int next_timeout(const Prefork *p, struct timespec *ts)
{
	int64_t now = clock_mono_ns(), due = INT64_MAX;

	if (p->stopping) {
		due = p->stop_deadline_ns;
	} else {
		for (int i = 0; i < p->nslots; i++) {
			if (!p->slots[i].pid && p->slots[i].restart_at_ns < due)
				due = p->slots[i].restart_at_ns;
		}
	}
	if (p->watchdog_ns && p->watchdog_due_ns < due)
		due = p->watchdog_due_ns;
	if (due == INT64_MAX)
		return 0;
	due = due > now ? due - now : 0;
	ts->tv_sec = (time_t)(due / 1000000000);
	ts->tv_nsec = (long)(due % 1000000000);
	return 1;
}

int prefork_run(const PreforkConfig *pc)
{
	struct sigaction chld = { .sa_handler = on_sigchld, .sa_flags = SA_NOCLDSTOP };
	Prefork *p = xcalloc(1, sizeof(*p));
	int started = 0, status = 0;

	p->pc = pc;
	p->master = getpid();
	p->nslots = pc->workers;
	sigemptyset(&p->waited);
	sigaddset(&p->waited, SIGCHLD);
	sigaddset(&p->waited, SIGTERM);
	sigaddset(&p->waited, SIGINT);
	sigaddset(&p->waited, SIGHUP);
	sigprocmask(SIG_BLOCK, &p->waited, &p->orig_mask);
	sigaction(SIGCHLD, &chld, NULL);

	for (int i = 0; i < p->nslots; i++)
		started += start(p, i) == 0;
	if (!started) {
		status = 1;
		goto out;
	}
	log_info("master %d: %d workers", (int)p->master, p->nslots);
	{
		uint64_t usec = 0;
		if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
			p->watchdog_ns = (int64_t)usec * 1000 / 2; /* half, as sd_watchdog_enabled(3) advises */
	}
	sd_notifyf(0, "READY=1\nSTATUS=%d workers", p->nslots);

	for (;;) {
		struct timespec ts;
		siginfo_t info;
		int sig;

		reap(p);
		if (p->stopping && running(p) == 0)
			break;
		/* The master's loop turns: it reaps, restarts and forwards signals. */
		if (p->watchdog_ns && clock_mono_ns() >= p->watchdog_due_ns) {
			sd_notify(0, "WATCHDOG=1");
			p->watchdog_due_ns = clock_mono_ns() + p->watchdog_ns;
		}
		if (!p->stopping) {
			int64_t now = clock_mono_ns();
			for (int i = 0; i < p->nslots; i++) {
				if (!p->slots[i].pid && p->slots[i].restart_at_ns <= now)
					(void)start(p, i);
			}
		}
		sig = next_timeout(p, &ts) ? sigtimedwait(&p->waited, &info, &ts)
					   : sigwaitinfo(&p->waited, &info);
		if (sig < 0) {
			if (errno == EAGAIN && p->stopping &&
			    clock_mono_ns() >= p->stop_deadline_ns) {
				log_warn("%d workers still busy after %d s; killing them", running(p),
					 PREFORK_STOP_TIMEOUT_S);
				signal_all(p, SIGKILL);
				p->stop_deadline_ns = INT64_MAX - 1; /* reap, no further timeouts */
			}
			continue;
		}
		switch (sig) {
		case SIGTERM:
		case SIGINT:
			if (p->stopping) {
				log_warn("%s again: killing the workers now", strsignal(sig));
				signal_all(p, SIGKILL);
			} else {
				begin_stop(p, sig);
			}
			break;
		case SIGHUP:
			if (!p->stopping)
				replace_workers(p);
			break;
		default: /* SIGCHLD: reaped at the top */
			break;
		}
	}
	log_info("master %d: all workers stopped", (int)p->master);
out:
	sigprocmask(SIG_SETMASK, &p->orig_mask, NULL);
	free(p->retiring);
	free(p);
	return status;
}
