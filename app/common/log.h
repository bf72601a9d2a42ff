/* log.h — leveled logging to stderr, one write(2) per line.
 *
 * One write per line keeps lines from different threads whole; the macros test
 * the level before evaluating their arguments. Lines look like
 *   "ERROR [shard 3] wal: fdatasync failed: Input/output error"
 * (the level word doubles as a grep key). Control characters in a message
 * become spaces, so one call is always one line. When stderr is the systemd
 * journal ($JOURNAL_STREAM matches it) each line also starts with "<3>".."<7>",
 * which journald stores as the record's PRIORITY. */
#ifndef RG_LOG_H
#define RG_LOG_H

typedef enum LogLevel {
	LOG_ERROR = 0,
	LOG_WARN = 1,
	LOG_INFO = 2,
	LOG_DEBUG = 3,
} LogLevel;

/* Atomic: SIGHUP may change it while other threads log. */
extern _Atomic LogLevel log_level;

/* Parses "error|warn|info|debug"; returns 0 or -EINVAL. */
int log_level_parse(const char *name, LogLevel *out);

/* Sets log_level by name; an unknown name leaves it unchanged and returns
 * -EINVAL. */
int log_set_level(const char *name);

/* Sets the calling thread's context prefix, e.g. "shard 3" (copied). */
void log_set_context(const char *context);

/* For a thread the process started: log_set_context, and the same name for
 * the kernel ("rg-shard 3", cut to 15 bytes) so top -H and perf tell the
 * threads apart. Not for the main thread, whose name is the process's. */
void log_set_thread(const char *name);

void log_write(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) do { if (log_level >= LOG_ERROR) log_write(LOG_ERROR, __VA_ARGS__); } while (0)
#define log_warn(...)  do { if (log_level >= LOG_WARN)  log_write(LOG_WARN, __VA_ARGS__); } while (0)
#define log_info(...)  do { if (log_level >= LOG_INFO)  log_write(LOG_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (log_level >= LOG_DEBUG) log_write(LOG_DEBUG, __VA_ARGS__); } while (0)

/* Logs at ERROR and exits the process with status 1 (or aborts for a core
 * when RG_ABORT_ON_FATAL is set). Used for the failures the design calls
 * fatal: a failed WAL write or fsync. */
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* An assertion that stays on in release builds (redis serverAssert). */
#define rg_assert(cond) \
	do { if (!(cond)) log_fatal("assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__); } while (0)

#endif
