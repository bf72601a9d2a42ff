/* test_notify.c — rg-ledger and the rg-fcgi pool speak systemd's notify
 * protocol (sd_notify) the way their units (systemd/) rely on.
 *
 * The test owns a Unix datagram socket, points NOTIFY_SOCKET at it and plays
 * systemd: it reads every message with the sender's credentials.
 *   ledger  READY=1 only once the socket already accepts and answers PING;
 *           WATCHDOG=1 every WATCHDOG_USEC/2 while every shard answers, none
 *           while the shard threads are frozen (ptrace), again after they
 *           thaw, none at all without WATCHDOG_USEC; SIGHUP gives RELOADING=1
 *           then READY=1, applies log_level and names keys that need a
 *           restart; SIGTERM gives STOPPING=1 and exit 0.
 *   fcgi    the pool master says READY=1 once its socket accepts, WATCHDOG=1,
 *           RELOADING=1/READY=1 on SIGHUP, STOPPING=1 on SIGTERM; no message
 *           ever comes from a worker.
 * Environment: RG_LEDGER_BIN, RG_FCGI_BIN, RG_TEST_TMP. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "common/ledger_client.h"

#define WATCHDOG_USEC 400000 /* pings every 200 ms */

static char dir[400], notify_path[500];
static int notify_fd = -1;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *env_or_die(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v) {
		fprintf(stderr, "test_notify: %s is not set\n", name);
		exit(1);
	}
	return v;
}

static void notify_open(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int one = 1;

	snprintf(notify_path, sizeof(notify_path), "%s/notify.sock", dir);
	REQUIRE(strlen(notify_path) < sizeof(sa.sun_path));
	strcpy(sa.sun_path, notify_path);
	unlink(notify_path);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	REQUIRE(notify_fd >= 0);
	REQUIRE(bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	/* Credentials with every message, as systemd asks for them. */
	REQUIRE(setsockopt(notify_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) == 0);
}

/* Receives one message (NUL-terminated into buf) within timeout_ms; returns
 * its length, or -1 on timeout. *pid gets the sender's pid. */
static int notify_recv(char *buf, size_t len, int timeout_ms, pid_t *pid)
{
	struct pollfd pfd = { .fd = notify_fd, .events = POLLIN };
	union { char b[CMSG_SPACE(sizeof(struct ucred))]; struct cmsghdr align; } ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = len - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b) };

	if (poll(&pfd, 1, timeout_ms) <= 0)
		return -1;
	ssize_t n = recvmsg(notify_fd, &mh, 0);
	REQUIRE(n >= 0);
	buf[n] = '\0';
	*pid = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
			struct ucred uc;
			memcpy(&uc, CMSG_DATA(c), sizeof(uc));
			*pid = uc.pid;
		}
	}
	return (int)n;
}

/* 1 when the message has the line want ("READY=1"). */
static int has_line(const char *msg, const char *want)
{
	size_t wl = strlen(want);
	for (const char *p = msg; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, want, wl) == 0 && (p[wl] == '\n' || p[wl] == '\0'))
			return 1;
	}
	return 0;
}

/* Reads messages until one has the line want; every message must come from
 * pid. Returns 1, or 0 after timeout_ms. WATCHDOG=1 lines met on the way are
 * counted into *watchdogs (may be NULL). */
static int wait_for(const char *want, int timeout_ms, pid_t pid, int *watchdogs)
{
	int64_t deadline = now_ms() + timeout_ms;
	char msg[4096];

	for (;;) {
		int64_t left = deadline - now_ms();
		pid_t from;
		if (left <= 0 || notify_recv(msg, sizeof(msg), (int)left, &from) < 0) {
			fprintf(stderr, "no %s within %d ms\n", want, timeout_ms);
			return 0;
		}
		if (from != pid) {
			fprintf(stderr, "message \"%s\" from pid %d, want only %d\n", msg, (int)from,
				(int)pid);
			check_failures++;
		}
		if (watchdogs && has_line(msg, "WATCHDOG=1"))
			(*watchdogs)++;
		if (has_line(msg, want))
			return 1;
	}
}

/* Counts WATCHDOG=1 messages arriving within ms. */
static int count_watchdogs(int ms, pid_t pid)
{
	int64_t deadline = now_ms() + ms;
	char msg[4096];
	int n = 0;

	for (int64_t left; (left = deadline - now_ms()) > 0;) {
		pid_t from;
		if (notify_recv(msg, sizeof(msg), (int)left, &from) < 0)
			break;
		CHECK_EQ_INT(from, pid);
		n += has_line(msg, "WATCHDOG=1");
	}
	return n;
}

static void drain(void)
{
	char msg[4096];
	pid_t from;
	while (notify_recv(msg, sizeof(msg), 0, &from) >= 0)
		;
}

static pid_t spawn(char *const argv[], const char *log, const char *const env[])
{
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid)
		return pid;
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	for (int i = 0; env[i]; i++)
		putenv((char *)env[i]);
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	execv(argv[0], argv);
	_exit(127);
}

static int wait_exit(pid_t pid, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	int status;
	while (now_ms() < deadline) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

static int file_contains(const char *path, const char *needle)
{
	char buf[1 << 16];
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	REQUIRE(f);
	REQUIRE(fputs(text, f) >= 0);
	REQUIRE(fclose(f) == 0);
}

static void show_log(const char *path)
{
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "echo '--- %s'; tail -n 40 '%s' >&2", path, path);
	if (system(cmd) != 0)
		fprintf(stderr, "(cannot show %s)\n", path);
}

/* Freezes (freeze=1) or thaws every thread of pid except the main thread (the
 * I/O loop) and the one named rg-watchdog: that is every shard's threads. */
static int freeze_shards(pid_t pid, int freeze)
{
	char path[128];
	int n = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	REQUIRE(d);
	for (struct dirent *e; (e = readdir(d));) {
		pid_t tid = (pid_t)atoi(e->d_name);
		char comm_path[160], comm[32] = "";
		if (tid <= 0 || tid == pid)
			continue;
		snprintf(comm_path, sizeof(comm_path), "%s/%d/comm", path, (int)tid);
		FILE *f = fopen(comm_path, "r");
		if (f) {
			if (!fgets(comm, sizeof(comm), f))
				comm[0] = '\0';
			fclose(f);
		}
		if (strncmp(comm, "rg-watchdog", 11) == 0)
			continue;
		if (freeze) {
			int st;
			if (ptrace(PTRACE_SEIZE, tid, NULL, NULL) != 0 ||
			    ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) != 0) {
				fprintf(stderr, "ptrace %d: %s\n", (int)tid, strerror(errno));
				closedir(d);
				return -1;
			}
			REQUIRE(waitpid(tid, &st, __WALL) == tid);
		} else {
			REQUIRE(ptrace(PTRACE_DETACH, tid, NULL, NULL) == 0);
		}
		n++;
	}
	closedir(d);
	return n;
}

static void test_ledger(void)
{
	const char *bin = env_or_die("RG_LEDGER_BIN");
	char conf[500], sock[500], log[500], env_notify[600], env_wd[64];
	char *argv[] = { (char *)bin, "--config", conf, NULL };
	LedgerClient *c = NULL;
	WireResponse resp;
	int watchdogs = 0;

	snprintf(conf, sizeof(conf), "%s/ledger.conf", dir);
	snprintf(sock, sizeof(sock), "%s/ledger.sock", dir);
	snprintf(log, sizeof(log), "%s/ledger.log", dir);
	snprintf(env_notify, sizeof(env_notify), "NOTIFY_SOCKET=%s", notify_path);
	snprintf(env_wd, sizeof(env_wd), "WATCHDOG_USEC=%d", WATCHDOG_USEC);
	char text[2048];
	snprintf(text, sizeof(text), "ledger_socket = %s\ndata_dir = %s/data\nshards = 2\n"
		 "log_level = info\n", sock, dir);
	write_file(conf, text);

	/* 1. READY=1 once the socket answers; the watchdog pings. */
	const char *env[] = { env_notify, env_wd, NULL };
	pid_t pid = spawn(argv, log, env);
	if (!wait_for("READY=1", 20000, pid, &watchdogs)) {
		show_log(log);
		CHECK(0);
		kill(pid, SIGKILL);
		wait_exit(pid, 5000);
		return;
	}
	/* One attempt, no retry: READY means it accepts and answers now. */
	CHECK_EQ_INT(ledger_client_connect(sock, 2000, &c), 0);
	if (c) {
		WireRequest ping = { .op = WIRE_OP_PING };
		CHECK_EQ_INT(ledger_client_call(c, &ping, &resp, 2000), 0);
		CHECK_EQ_INT(resp.status, WIRE_OK);
		CHECK_EQ_INT(ledger_client_shards(c), 2);
	}
	int n = count_watchdogs(1500, pid);
	printf("ledger: %d WATCHDOG=1 in 1.5 s (WATCHDOG_USEC=%d)\n", n, WATCHDOG_USEC);
	CHECK(n >= 3);

	/* 2. Frozen shards: the I/O loop still answers, the pings stop. */
	int frozen = freeze_shards(pid, 1);
	if (frozen > 0) {
		drain();
		n = count_watchdogs(1500, pid);
		printf("ledger: %d shard threads frozen, %d WATCHDOG=1 in 1.5 s\n", frozen, n);
		CHECK_EQ_INT(n, 0);
		if (c) {
			WireRequest ping = { .op = WIRE_OP_PING };
			CHECK_EQ_INT(ledger_client_call(c, &ping, &resp, 2000), 0);
		}
		CHECK_EQ_INT(freeze_shards(pid, 0), frozen);
		n = count_watchdogs(1500, pid);
		printf("ledger: thawed, %d WATCHDOG=1 in 1.5 s\n", n);
		CHECK(n >= 2);
		CHECK(file_contains(log, "not pinging systemd's watchdog"));
	} else {
		printf("ledger: ptrace not permitted here; frozen-shard case skipped\n");
	}
	ledger_client_close(c);

	/* 3. SIGHUP: RELOADING=1, READY=1; log_level applies, shards needs a restart. */
	snprintf(text, sizeof(text), "ledger_socket = %s\ndata_dir = %s/data\nshards = 3\n"
		 "log_level = debug\n", sock, dir);
	write_file(conf, text);
	drain();
	kill(pid, SIGHUP);
	CHECK(wait_for("RELOADING=1", 5000, pid, NULL));
	CHECK(wait_for("READY=1", 5000, pid, NULL));
	usleep(100000);
	CHECK(file_contains(log, "reload: log_level is now debug"));
	CHECK(file_contains(log, "reload: shards changed; it takes effect at the next restart"));
	/* A file that no longer loads changes nothing and keeps it running. */
	write_file(conf, "no_such_key = 1\n");
	kill(pid, SIGHUP);
	CHECK(wait_for("READY=1", 5000, pid, NULL));
	usleep(100000);
	CHECK(file_contains(log, "keeping the running configuration"));
	CHECK_EQ_INT(kill(pid, 0), 0);

	/* 4. SIGTERM: STOPPING=1, clean exit. */
	kill(pid, SIGTERM);
	CHECK(wait_for("STOPPING=1", 10000, pid, NULL));
	CHECK_EQ_INT(wait_exit(pid, 30000), 0);

	/* 5. Without WATCHDOG_USEC: READY=1 and never WATCHDOG=1. */
	snprintf(text, sizeof(text), "ledger_socket = %s\ndata_dir = %s/data\n", sock, dir);
	write_file(conf, text);
	drain();
	const char *env2[] = { env_notify, NULL };
	pid = spawn(argv, log, env2);
	watchdogs = 0;
	CHECK(wait_for("READY=1", 20000, pid, &watchdogs));
	n = count_watchdogs(1000, pid) + watchdogs;
	CHECK_EQ_INT(n, 0);
	kill(pid, SIGTERM);
	CHECK(wait_for("STOPPING=1", 10000, pid, NULL));
	CHECK_EQ_INT(wait_exit(pid, 30000), 0);
	if (check_failures)
		show_log(log);
}

static int connect_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	REQUIRE(fd >= 0);
	REQUIRE(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	return rc;
}

static void test_fcgi(void)
{
	const char *bin = env_or_die("RG_FCGI_BIN");
	char listen[520], sock[500], log[500], env_notify[600], env_wd[64], env_ledger[560];
	char *argv[] = { (char *)bin, "--listen", listen, "--workers", "2", NULL };

	snprintf(sock, sizeof(sock), "%s/fcgi.sock", dir);
	snprintf(listen, sizeof(listen), "unix:%s", sock);
	snprintf(log, sizeof(log), "%s/fcgi.log", dir);
	snprintf(env_notify, sizeof(env_notify), "NOTIFY_SOCKET=%s", notify_path);
	snprintf(env_wd, sizeof(env_wd), "WATCHDOG_USEC=%d", WATCHDOG_USEC);
	snprintf(env_ledger, sizeof(env_ledger), "RG_LEDGER_SOCKET=%s/ledger.sock", dir);
	const char *env[] = { env_notify, env_wd, env_ledger, NULL };

	drain();
	pid_t pid = spawn(argv, log, env);
	if (!wait_for("READY=1", 20000, pid, NULL)) {
		show_log(log);
		CHECK(0);
		kill(pid, SIGKILL);
		wait_exit(pid, 5000);
		return;
	}
	CHECK_EQ_INT(connect_unix(sock), 0);
	int n = count_watchdogs(1500, pid); /* also: nothing from a worker */
	printf("fcgi: %d WATCHDOG=1 in 1.5 s\n", n);
	CHECK(n >= 3);
	kill(pid, SIGHUP);
	CHECK(wait_for("RELOADING=1", 5000, pid, NULL));
	CHECK(wait_for("READY=1", 5000, pid, NULL));
	kill(pid, SIGTERM);
	CHECK(wait_for("STOPPING=1", 10000, pid, NULL));
	CHECK_EQ_INT(wait_exit(pid, 40000), 0);
	if (check_failures)
		show_log(log);
}

int main(void)
{
	char cmd[1024];

	setvbuf(stdout, NULL, _IONBF, 0);
	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "%s/notify-%d", env_or_die("RG_TEST_TMP"), (int)getpid());
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", dir, dir);
	REQUIRE(system(cmd) == 0);
	notify_open();
	test_ledger();
	test_fcgi();
	if (!check_failures) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	return check_exit();
}
