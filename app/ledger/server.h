/* server.h — the ledger's socket front: one I/O thread for all connections.
 *
 * DESIGN. One epoll thread accepts connections on the Unix socket, reads and
 * decodes frames, answers HELLO, PING and STATS itself and routes every other
 * request to the shard that owns it (by the SKU's hash, or the route carried
 * in a reservation id), handing each shard what one pass of the loop decoded
 * for it in one go. Shards answer through server_post_replies from their
 * syncer threads once a batch is durable; the I/O thread writes the answers.
 * A connection that sends a malformed frame is closed; nothing else is
 * affected. Full shard inboxes and too many requests in flight on one
 * connection are answered "busy" at once. SIGTERM/SIGINT (via signalfd) stop
 * the loop; SIGHUP calls the reload hook (catalog adoption).
 *
 * PEERS. Beyond the socket's mode and group, each accepted connection's peer
 * is checked with SO_PEERCRED when allowed_uids or allowed_gids is set: root,
 * the ledger's own uid, a listed uid, or a listed (effective, primary) gid
 * passes — the kernel reports no supplementary groups. Anyone else is closed
 * before a byte of theirs is read, counted (STATS peers_refused) and logged
 * at WARN (at most one line a second, with how many were refused meanwhile,
 * so a client retrying in a loop cannot flood the log). Both lists empty: no
 * check, the socket's permissions alone decide. */
#ifndef RG_SERVER_H
#define RG_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ledger/shard.h"

typedef struct Server Server;

typedef struct ServerConfig {
	const char *socket_path;
	int socket_mode;           /* e.g. 0660 */
	gid_t socket_gid;          /* (gid_t)-1: leave the group as created */
	int max_connections;
	int inflight_max;          /* requests in flight per connection */
	/* Comma-separated user/group names or numeric ids (borrowed for
	 * server_open; NULL or "" = none). See PEERS above. */
	const char *allowed_uids;
	const char *allowed_gids;
} ServerConfig;

/* Sets up the event loop; nothing listens yet, so shards can be given the
 * server as their reply target and recover before anyone connects. Returns 0
 * or a negative errno with a message in why. */
int server_open(const ServerConfig *cfg, Server **out, char *why, size_t why_len)
	__attribute__((warn_unused_result));

/* Binds the socket (replacing a stale socket file, refusing one a live
 * ledger serves), sets its mode and group, and listens. */
int server_listen(Server *srv, char *why, size_t why_len) __attribute__((warn_unused_result));

/* The shards requests are routed to (borrowed; set before server_run). */
void server_set_shards(Server *srv, Shard **shards, unsigned n);

/* The ShardReplyFn to give every shard, with the Server as its context. */
void server_post_replies(void *srv, const ShardReply *replies, size_t n, const uint8_t *data);

/* Called on the I/O thread for each SIGHUP; must not block. NULL: SIGHUP is
 * logged and otherwise ignored. */
typedef void (*ServerReloadFn)(void *ctx);
void server_set_reload_hook(Server *srv, ServerReloadFn fn, void *ctx);

/* Runs the loop until SIGTERM or SIGINT (which the caller must have blocked
 * in every thread, with SIGHUP). Returns 0 or a negative errno. */
int server_run(Server *srv) __attribute__((warn_unused_result));

/* After the shards have drained (shard_drain): stops listening, removes the
 * socket file and writes out the answers they released last (best effort,
 * bounded in time). */
void server_deliver(Server *srv);

/* server_deliver, then closes every connection and frees the server. */
void server_close(Server *srv);

#endif
