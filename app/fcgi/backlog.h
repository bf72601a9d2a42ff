/* backlog.h — how many connections wait, not yet accepted, on a listening socket.
 *
 * DESIGN. Behind lighttpd 1.4 and Apache mod_fcgid the excess of an overload
 * waits in the kernel listen backlog of the worker's FastCGI socket (a small
 * backlog does not help: lighttpd turns the refused connect into a 500), so a
 * worker that wants to refuse fast must look at that queue itself, once per
 * request. The kernel tells:
 *   AF_UNIX  sock_diag (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY) asked for the
 *            one socket by inode (fstat's st_ino) with UDIAG_SHOW_RQLEN; for a
 *            listener UNIX_DIAG_RQLEN carries rqueue = connections waiting and
 *            wqueue = the backlog's bound. The netlink socket is opened once;
 *            the kernel answers inside sendmsg, so the reply is read with
 *            MSG_DONTWAIT: a query never blocks.
 *   TCP      getsockopt TCP_INFO: on a listener tcpi_unacked is the accept
 *            queue's length and tcpi_sacked its bound (Linux >= 2.6.x); no
 *            netlink needed.
 * Anything else (or a kernel that refuses) is an error, and the caller then
 * does not shed: the query is an optimisation, never a gate. */
#ifndef RG_BACKLOG_H
#define RG_BACKLOG_H

#include <stdint.h>

typedef struct Backlog Backlog;

/* Prepares queries about listen_fd (borrowed; it must outlive the Backlog).
 * Returns 0, or a negative errno: -ENOTSOCK / -EAFNOSUPPORT for what we
 * cannot ask about, -EINVAL when it is not listening, or the error of
 * opening the netlink socket. */
int backlog_open(int listen_fd, Backlog **out) __attribute__((warn_unused_result));
void backlog_close(Backlog *b);

/* One query: *queued connections wait to be accepted, the kernel's bound is
 * *max (either pointer may be NULL). Returns 0 or a negative errno. */
int backlog_query(Backlog *b, uint32_t *queued, uint32_t *max)
	__attribute__((warn_unused_result));

#endif
