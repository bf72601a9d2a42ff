/* ledger_proc.h — start, stop and kill a real rg-ledger from a C test.
 *
 * The binary path comes from RG_LEDGER_BIN (set by CMake); every file lives
 * under a fresh directory in RG_TEST_TMP. Settings go through the RG_*
 * environment overrides, the same way an operator would set them. */
#ifndef RG_TEST_LEDGER_PROC_H
#define RG_TEST_LEDGER_PROC_H

#include <sys/types.h>

typedef struct LedgerProc {
	char dir[256];       /* test directory: data/, ledger.sock, ledger.log */
	char socket[300];
	char data_dir[300];
	char log[300];
	pid_t pid;
	const char *extra_env[8]; /* "RG_KEY=value" strings added at start */
} LedgerProc;

/* Makes a fresh directory named after name under RG_TEST_TMP. */
void ledger_proc_init(LedgerProc *p, const char *name);
/* For tests that simulate their crashes, where the disk's own flushes add
 * only time: points RG_TEST_TMP at a new directory on tmpfs ($RG_FAULT_TMPFS,
 * default /dev/shm; "" turns it off) and writes its path to dir, or "" when
 * there is none writable. ledger_proc_cleanup removes it. */
void ledger_proc_use_tmpfs(const char *name, char *dir, size_t dir_len);
/* Removes the test directory and tmpfs_dir (from ledger_proc_use_tmpfs; ""
 * or NULL: none), unless failed (the caller's check_failures) or
 * RG_FAULT_KEEP is set: then they stay for a look. */
void ledger_proc_cleanup(const LedgerProc *p, const char *tmpfs_dir, int failed);
/* Starts the daemon and waits (up to 20 s) until it answers PING. Returns 0,
 * or -1 when it exited or did not come up (its log is printed). */
int ledger_proc_start(LedgerProc *p);
/* Starts it and waits for it to exit (for start-up refusals); returns its
 * exit status, or -1 when it did not exit within 10 s. */
int ledger_proc_run_expect_exit(LedgerProc *p);
/* SIGTERM and wait; returns the exit status (0 for a clean stop). */
int ledger_proc_stop(LedgerProc *p);
/* SIGKILL and reap. */
void ledger_proc_kill(LedgerProc *p);
/* 1 when any log under the test directory has a sanitizer report (the
 * daemon's reports land in its log, not in the test's output). */
int ledger_proc_sanitizer_reports(const LedgerProc *p);
/* 1 when the daemon's log contains needle. */
int ledger_proc_log_contains(const LedgerProc *p, const char *needle);

#endif
