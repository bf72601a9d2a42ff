/* log.c — leveled logging to stderr, one write(2) per line. */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

LogLevel log_level = LOG_INFO;

static _Thread_local char log_context[32];

static const char *const level_names[] = { "ERROR", "WARN", "INFO", "DEBUG" };

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

void log_set_context(const char *context)
{
	snprintf(log_context, sizeof(log_context), "%s", context ? context : "");
}

static void log_vwrite(LogLevel level, const char *fmt, va_list ap)
{
	char line[1024];
	int n;

	if (log_context[0])
		n = snprintf(line, sizeof(line), "%s [%s] ", level_names[level], log_context);
	else
		n = snprintf(line, sizeof(line), "%s ", level_names[level]);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
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
