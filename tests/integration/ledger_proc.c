/* ledger_proc.c — start, stop and kill a real rg-ledger from a C test. */
#include "ledger_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/ledger_client.h"

void ledger_proc_init(LedgerProc *p, const char *name)
{
	const char *tmp = getenv("RG_TEST_TMP");
	char cmd[600];

	memset(p, 0, sizeof(*p));
	snprintf(p->dir, sizeof(p->dir), "%s/%s-%d", tmp ? tmp : "/tmp", name, (int)getpid());
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", p->dir, p->dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "cannot create %s\n", p->dir);
		exit(1);
	}
	snprintf(p->socket, sizeof(p->socket), "%s/ledger.sock", p->dir);
	snprintf(p->data_dir, sizeof(p->data_dir), "%s/data", p->dir);
	snprintf(p->log, sizeof(p->log), "%s/ledger.log", p->dir);
}

static pid_t spawn(LedgerProc *p)
{
	const char *bin = getenv("RG_LEDGER_BIN");
	if (!bin) {
		fprintf(stderr, "RG_LEDGER_BIN is not set\n");
		exit(1);
	}
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	char sock[320], data[320];
	snprintf(sock, sizeof(sock), "RG_LEDGER_SOCKET=%s", p->socket);
	snprintf(data, sizeof(data), "RG_DATA_DIR=%s", p->data_dir);
	putenv(sock);
	putenv(data);
	for (int i = 0; i < 8 && p->extra_env[i]; i++)
		putenv((char *)p->extra_env[i]);
	int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	execl(bin, bin, (char *)NULL);
	_exit(127);
}

static void print_log(const LedgerProc *p)
{
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "tail -n 30 '%s' >&2", p->log);
	if (system(cmd) != 0)
		fprintf(stderr, "(no log)\n");
}

int ledger_proc_start(LedgerProc *p)
{
	p->pid = spawn(p);
	for (int i = 0; i < 2000; i++) {
		int status;
		if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
			fprintf(stderr, "rg-ledger exited during start-up:\n");
			print_log(p);
			p->pid = 0;
			return -1;
		}
		LedgerClient *c;
		if (ledger_client_connect(p->socket, 1000, &c) == 0) {
			WireRequest req = { .op = WIRE_OP_PING };
			WireResponse resp;
			int rc = ledger_client_call(c, &req, &resp, 2000);
			ledger_client_close(c);
			if (rc == 0 && resp.status == WIRE_OK)
				return 0;
		}
		struct timespec ts = { 0, 10 * 1000000 };
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "rg-ledger did not come up in 20 s:\n");
	print_log(p);
	ledger_proc_kill(p);
	return -1;
}

int ledger_proc_run_expect_exit(LedgerProc *p)
{
	pid_t pid = spawn(p);
	for (int i = 0; i < 1000; i++) {
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		struct timespec ts = { 0, 10 * 1000000 };
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

int ledger_proc_stop(LedgerProc *p)
{
	int status = 0;
	if (p->pid <= 0)
		return -1;
	kill(p->pid, SIGTERM);
	waitpid(p->pid, &status, 0);
	p->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void ledger_proc_kill(LedgerProc *p)
{
	if (p->pid <= 0)
		return;
	kill(p->pid, SIGKILL);
	waitpid(p->pid, NULL, 0);
	p->pid = 0;
}

int ledger_proc_log_contains(const LedgerProc *p, const char *needle)
{
	FILE *f = fopen(p->log, "r");
	char line[2048];
	int found = 0;
	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

int ledger_proc_sanitizer_reports(const LedgerProc *p)
{
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "grep -l 'Sanitizer' '%s'/*.log >&2", p->dir);
	return system(cmd) == 0; /* grep exits 0 when it found a report */
}

void ledger_proc_cleanup(const LedgerProc *p, const char *tmpfs_dir, int failed)
{
	char cmd[1000];

	if (failed || getenv("RG_FAULT_KEEP"))
		return;
	if (tmpfs_dir && tmpfs_dir[0])
		snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", p->dir, tmpfs_dir);
	else
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", p->dir);
}

void ledger_proc_use_tmpfs(const char *name, char *dir, size_t dir_len)
{
	const char *tmpfs = getenv("RG_FAULT_TMPFS") ? getenv("RG_FAULT_TMPFS") : "/dev/shm";

	dir[0] = '\0';
	if (!tmpfs[0] || access(tmpfs, W_OK) != 0)
		return;
	snprintf(dir, dir_len, "%s/rg-%s.XXXXXX", tmpfs, name);
	if (mkdtemp(dir))
		setenv("RG_TEST_TMP", dir, 1);
	else
		dir[0] = '\0';
}
