/* ledger_client.h — a blocking client for the ledger's Unix socket.
 *
 * Used by the FastCGI workers, rg-bench, rg-ctl and the tests. One
 * LedgerClient is one connection; it is not thread-safe (give each thread or
 * worker its own). Requests may be pipelined: send several, flush, then
 * receive; responses are matched to requests by their id, not their order. */
#ifndef RG_LEDGER_CLIENT_H
#define RG_LEDGER_CLIENT_H

#include "common/wire.h"

typedef struct LedgerClient LedgerClient;

/* Connects to the socket at path and does the HELLO handshake, waiting at most
 * timeout_ms for each step. Returns 0 and *out, or a negative errno
 * (-ECONNREFUSED, -ENOENT, -ETIMEDOUT, -EPROTO on a bad handshake). */
int ledger_client_connect(const char *path, int timeout_ms, LedgerClient **out)
	__attribute__((warn_unused_result));
void ledger_client_close(LedgerClient *c);

/* The shard count the ledger announced in its HELLO. */
unsigned ledger_client_shards(const LedgerClient *c);

/* Buffers one request; when req->id is 0 a fresh id is assigned (and written
 * back). Nothing is sent until ledger_client_flush. */
void ledger_client_send(LedgerClient *c, WireRequest *req);
/* Writes everything buffered. Returns 0 or a negative errno. */
int ledger_client_flush(LedgerClient *c) __attribute__((warn_unused_result));
/* Waits at most timeout_ms (-1: forever) for the next response. Returns 0,
 * -ETIMEDOUT, -ECONNRESET (peer closed) or -EPROTO (malformed frame). After
 * any error the connection is unusable: close it. */
int ledger_client_recv(LedgerClient *c, WireResponse *resp, int timeout_ms)
	__attribute__((warn_unused_result));

/* send + flush + recv for a single request in flight. */
int ledger_client_call(LedgerClient *c, WireRequest *req, WireResponse *resp, int timeout_ms)
	__attribute__((warn_unused_result));

#endif
