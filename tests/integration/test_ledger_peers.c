/* test_ledger_peers.c — the ledger checks its socket's peers with SO_PEERCRED.
 *
 * The socket is made world-connectable (mode 0666, in a 0711 directory), so
 * only the SO_PEERCRED check stands between another user and the ledger.
 * Forked children drop to other uids/gids and try the handshake:
 *   uid 65534 gid 65534 (nobody)     refused: closed before any frame is read
 *   uid 1, gid 65534                 allowed by ledger_allowed_uids
 *   uid 65534, gid 4242              allowed by ledger_allowed_gids
 *   root (the test itself)           always allowed
 * Two refusals within a second make one WARN line and count 2 in STATS
 * peers_refused. With both keys empty the same nobody gets in (the check is
 * off; the socket's mode decides). Needs root to change uid: skipped (77)
 * otherwise. */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/ledger_client.h"
#include "ledger_proc.h"

#define TIMEOUT_MS 10000

/* In a child running as uid/gid: 0 when the handshake and a PING worked,
 * 1 when the ledger refused, 2 on anything else. */
static int try_as(const char *socket, uid_t uid, gid_t gid)
{
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
			_exit(2);
		LedgerClient *c;
		int rc = ledger_client_connect(socket, TIMEOUT_MS, &c);
		if (rc == -ECONNRESET || rc == -EPIPE || rc == -EPROTO)
			_exit(1);
		if (rc != 0) {
			fprintf(stderr, "child uid %d: connect: %s\n", (int)uid, strerror(-rc));
			_exit(2);
		}
		WireRequest req = { .op = WIRE_OP_PING };
		WireResponse resp;
		rc = ledger_client_call(c, &req, &resp, TIMEOUT_MS);
		ledger_client_close(c);
		_exit(rc == 0 && resp.status == WIRE_OK ? 0 : 2);
	}
	int status;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 3;
}

static uint64_t stat_of(const char *socket, const char *name)
{
	LedgerClient *c;
	WireRequest req = { .op = WIRE_OP_STATS };
	WireResponse resp;
	REQUIRE(ledger_client_connect(socket, TIMEOUT_MS, &c) == 0);
	REQUIRE(ledger_client_call(c, &req, &resp, TIMEOUT_MS) == 0);
	ledger_client_close(c);
	return wire_stat_value(&resp, name);
}

static int count_lines(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[2048];
	int n = 0;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

/* A socket path any uid can reach: the test tree's tmp is 0700. */
static void public_socket(LedgerProc *p, char *dir, size_t dir_len)
{
	snprintf(dir, dir_len, "/tmp/rg-peers-XXXXXX");
	REQUIRE(mkdtemp(dir) != NULL);
	REQUIRE(chmod(dir, 0711) == 0);
	snprintf(p->socket, sizeof(p->socket), "%s/ledger.sock", dir);
}

int main(void)
{
	LedgerProc p;
	char dir[64];

	if (geteuid() != 0) {
		fprintf(stderr, "needs root to connect as other users: skipped\n");
		return 77;
	}

	/* With the check on. */
	ledger_proc_init(&p, "ledger-peers");
	public_socket(&p, dir, sizeof(dir));
	p.extra_env[0] = "RG_LEDGER_SOCKET_MODE=0666";
	p.extra_env[1] = "RG_LEDGER_ALLOWED_UIDS=1";
	p.extra_env[2] = "RG_LEDGER_ALLOWED_GIDS=4242";
	p.extra_env[3] = "RG_SHARDS=1";
	REQUIRE(ledger_proc_start(&p) == 0);

	CHECK_EQ_INT(try_as(p.socket, 65534, 65534), 1);
	CHECK_EQ_INT(try_as(p.socket, 65534, 65534), 1);
	CHECK_EQ_INT(try_as(p.socket, 1, 65534), 0);
	CHECK_EQ_INT(try_as(p.socket, 65534, 4242), 0);
	CHECK_EQ_INT(try_as(p.socket, 0, 0), 0);
	CHECK_EQ_INT(stat_of(p.socket, "peers_refused"), 2);
	CHECK_EQ_INT(count_lines(p.log, "refused a connection from"), 1);
	CHECK_EQ_INT(count_lines(p.log, "uid 65534 gid 65534"), 1);
	CHECK_EQ_INT(ledger_proc_stop(&p), 0);
	CHECK(!ledger_proc_sanitizer_reports(&p));

	/* An unknown user name is a start-up error naming the key. */
	p.extra_env[1] = "RG_LEDGER_ALLOWED_UIDS=no-such-user-rg";
	CHECK(ledger_proc_run_expect_exit(&p) != 0);
	CHECK(ledger_proc_log_contains(&p, "ledger_allowed_uids: no such user 'no-such-user-rg'"));

	/* Both keys empty: no check, the mode lets nobody in. */
	p.extra_env[1] = "RG_LEDGER_ALLOWED_UIDS=";
	p.extra_env[2] = "RG_LEDGER_ALLOWED_GIDS=";
	REQUIRE(ledger_proc_start(&p) == 0);
	CHECK_EQ_INT(try_as(p.socket, 65534, 65534), 0);
	CHECK_EQ_INT(stat_of(p.socket, "peers_refused"), 0);
	CHECK_EQ_INT(ledger_proc_stop(&p), 0);
	CHECK(!ledger_proc_sanitizer_reports(&p));

	rmdir(dir);
	return check_exit();
}
