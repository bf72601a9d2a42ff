/* test_fcgi_backlog.c — backlog_query counts the connections waiting on a
 * listening socket: an AF_UNIX listener (sock_diag by inode) and a TCP one
 * (TCP_INFO) get K clients that are never accepted and must report K, and
 * K - 2 after two accepts, with listen(2)'s bound as the maximum; what is not
 * a listener is refused. Prints the cost of one query (not compared). */
#include "fcgi/backlog.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define CLIENTS 5
#define BOUND 16

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Queries until the count is want (TCP handshakes finish in softirq, a moment
 * after connect returns), for at most 5 s; returns the last count. */
static uint32_t settle(Backlog *b, uint32_t want, uint32_t *max)
{
	double until = now_s() + 5.0;
	uint32_t q = ~0u;

	for (;;) {
		int rc = backlog_query(b, &q, max);

		CHECK_EQ_INT(rc, 0);
		if (rc < 0 || q == want || now_s() > until)
			return q;
		usleep(1000);
	}
}

/* K clients, never accepted, then two accepts. */
static void check_listener(const char *what, int lfd, const struct sockaddr *addr,
			   socklen_t addr_len)
{
	int clients[CLIENTS];
	Backlog *b = NULL;
	uint32_t q = 0, max = 0;

	REQUIRE(backlog_open(lfd, &b) == 0);
	CHECK_EQ_INT(settle(b, 0, &max), 0);
	CHECK_EQ_INT(max, BOUND);
	for (int i = 0; i < CLIENTS; i++) {
		clients[i] = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		REQUIRE(clients[i] >= 0);
		REQUIRE(connect(clients[i], addr, addr_len) == 0);
	}
	q = settle(b, CLIENTS, &max);
	printf("%s: %d clients connected, not accepted: queued %u, max %u\n", what, CLIENTS, q,
	       max);
	CHECK_EQ_INT(q, CLIENTS);
	CHECK_EQ_INT(max, BOUND);
	for (int i = 0; i < 2; i++) {
		int c = accept(lfd, NULL, NULL);

		REQUIRE(c >= 0);
		close(c);
	}
	CHECK_EQ_INT(settle(b, CLIENTS - 2, NULL), CLIENTS - 2);

	/* What one query costs (the worker makes one per request). */
	enum { N = 20000 };
	double t0 = now_s();
	int bad = 0;

	for (int i = 0; i < N; i++)
		bad += backlog_query(b, &q, NULL) != 0 || q != CLIENTS - 2;
	printf("%s: %.2f us per query (%d queries)\n", what, (now_s() - t0) * 1e6 / N, N);
	CHECK_EQ_INT(bad, 0);
	backlog_close(b);
	for (int i = 0; i < CLIENTS; i++)
		close(clients[i]);
}

static void test_unix(void)
{
	char dir[] = "/tmp/rg-backlog-XXXXXX";
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int lfd;

	REQUIRE(mkdtemp(dir));
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/s", dir);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	REQUIRE(lfd >= 0);
	REQUIRE(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) == 0);
	REQUIRE(listen(lfd, BOUND) == 0);
	/* Another number than the one it was opened with: spawned workers
	 * listen on fd 0; the inode is what counts. */
	int moved = dup(lfd);

	REQUIRE(moved >= 0);
	close(lfd);
	check_listener("unix", moved, (struct sockaddr *)&sun, sizeof(sun));
	close(moved);
	unlink(sun.sun_path);
	rmdir(dir);
}

static void test_tcp(void)
{
	/* Port 0: the kernel picks a free one, no clash with anyone's range. */
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = 0,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	REQUIRE(lfd >= 0);
	REQUIRE(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	REQUIRE(listen(lfd, BOUND) == 0);
	REQUIRE(getsockname(lfd, (struct sockaddr *)&sin, &len) == 0);
	check_listener("tcp", lfd, (struct sockaddr *)&sin, sizeof(sin));
	close(lfd);
}

static void test_refused(void)
{
	Backlog *b = (Backlog *)&b;
	int pipefd[2], s;

	REQUIRE(pipe(pipefd) == 0);
	CHECK_EQ_INT(backlog_open(pipefd[0], &b), -ENOTSOCK);
	CHECK(b == NULL);
	close(pipefd[0]);
	close(pipefd[1]);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	REQUIRE(s >= 0);
	CHECK_EQ_INT(backlog_open(s, &b), -EINVAL); /* not listening */
	close(s);
	s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	REQUIRE(s >= 0);
	CHECK(backlog_open(s, &b) < 0);
	close(s);
}

int main(void)
{
	test_unix();
	test_tcp();
	test_refused();
	return check_exit();
}
