/* log.c — leveled logging to stderr, one write(2) per line.
 *
 * DESIGN. A line is formatted whole into a stack buffer and written with one
 * write(2), so threads never interleave. Two things keep it one journal
 * record: control characters in the message (a libpq error ends in "\n" and
 * may span lines; a peer's bytes may hold anything) become spaces, and under
 * systemd (stderr is the journal stream named by $JOURNAL_STREAM) each line
 * starts with the sd-daemon(3) priority prefix "<3>".."<7>", which journald
 * turns into PRIORITY= so `journalctl -p warning` works. Elsewhere (a
 * terminal, a test's log file) lines carry no prefix. */
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

_Atomic LogLevel log_level = LOG_INFO;

static _Thread_local char log_context[32];

static const char *const level_names[] = { "ERROR", "WARN", "INFO", "DEBUG" };
/* syslog priorities: err, warning, info, debug */
static const char *const level_prio[] = { "<3>", "<4>", "<6>", "<7>" };

/* -1 unknown yet, 0 no, 1 stderr is the journal. Any thread may settle it;
 * they all compute the same answer. */
static _Atomic int log_journal = -1;

static int stderr_is_journal(void)
{
	int j = atomic_load_explicit(&log_journal, memory_order_relaxed);
	if (j >= 0)
		return j;
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	j = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
	atomic_store_explicit(&log_journal, j, memory_order_relaxed);
	return j;
}

int log_level_parse(const char *name, LogLevel *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (LogLevel)i;
			return 0;
		}
	}
	return -EINVAL;
}

int log_set_level(const char *name)
{
	LogLevel level;
	int rc = log_level_parse(name, &level);

	if (rc == 0)
		log_level = level;
	return rc;
}

void log_set_context(const char *context)
{
	snprintf(log_context, sizeof(log_context), "%s", context ? context : "");
}

void log_set_thread(const char *name)
{
	char comm[16];

	log_set_context(name);
	snprintf(comm, sizeof(comm), "rg-%s", name);
	pthread_setname_np(pthread_self(), comm);
}

static void log_vwrite(LogLevel level, const char *fmt, va_list ap)
{
	char line[1024];
	const char *prio = stderr_is_journal() ? level_prio[level] : "";
	int n, start, m;

	if (log_context[0])
		n = snprintf(line, sizeof(line), "%s%s [%s] ", prio, level_names[level], log_context);
	else
		n = snprintf(line, sizeof(line), "%s%s ", prio, level_names[level]);
	start = n;
	m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (m > 0)
		n += m;
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	while (n > start && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--; /* a trailing newline (libpq's) is not a second line */
	for (int i = start; i < n; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = ' ';
	line[n++] = '\n';
	/* A short or failed write to stderr has nowhere better to be reported. */
	ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
	(void)ignored;
}

void log_write(LogLevel level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(LOG_ERROR, fmt, ap);
	va_end(ap);
	if (getenv("RG_ABORT_ON_FATAL"))
		abort();
	_exit(1);
}
