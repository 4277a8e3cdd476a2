/*
 * hrpc.h: the C ABI of hrpc (library libhrpc_capi), persistent connectionless messaging
 * between nodes over UDP.
 *
 * Two APIs over the same library:
 *
 * 1. The compatibility API (hrpc_init, hrpc_touch_connect, hrpc_is_connected, hrpc_send,
 *    hrpc_once, hrpc_once_timeout): the same names, signatures and meaning as the original
 *    C library's hrpc.h, so a program written against it compiles unchanged. It drives one
 *    node per thread: the node hrpc_init opened on the calling thread.
 *
 * 2. The handle API (hrpc_node_*): any number of nodes per process, explicit error codes.
 *
 * Send buffers: hrpc_send and hrpc_node_send return a buffer of exactly `size` bytes inside
 * the node's persistent store. Fill it; the message is committed (given its place in the
 * peer's order and made crash-safe) at the caller's next call of any hrpc function on the
 * same node (for the compatibility API: any of its six functions on this thread), or, for a
 * buffer obtained inside a message callback, when that callback returns; hrpc_node_close
 * commits it too, and so does the exit of the thread (or process) that called hrpc_init.
 * Until then it is not sent, and if the process is killed first it is not in the store. NULL means backpressure
 * (the store or the peer's window is full: poll, then retry) or a bad argument; see
 * hrpc_last_error().
 *
 * Threading: a node is driven by one thread at a time. Callbacks run on the thread that
 * polls. Sends and polls may be made from inside a message callback, except polling,
 * waiting on or closing the node whose callback is running (HRPC_E_BUSY).
 *
 * Errors: functions of the handle API return HRPC_OK (0) or a negative HRPC_E_* code; the
 * code of the last failure on the calling thread is also in hrpc_last_error(), with a
 * message in hrpc_last_error_message().
 */
#ifndef HRPC_H
#define HRPC_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes. */
#define HRPC_OK 0
#define HRPC_E_INVALID_ARGUMENT (-1)
#define HRPC_E_BACKPRESSURE (-2)
#define HRPC_E_TOO_LARGE (-3)
#define HRPC_E_INVALID_PEER (-4)
#define HRPC_E_STORE_LOCKED (-5)
#define HRPC_E_ADDR_IN_USE (-6)
#define HRPC_E_CONFIG (-7)
#define HRPC_E_STORE (-8)
#define HRPC_E_IO (-9)
#define HRPC_E_CLOSED (-10)
#define HRPC_E_NOT_INITIALIZED (-11)
#define HRPC_E_BUSY (-12)
#define HRPC_E_INTERNAL (-13)

/* hrpc_config.durability */
#define HRPC_DURABILITY_PROCESS 0
#define HRPC_DURABILITY_SYNC 1

/* ---- Compatibility API (the original hrpc.h) ---------------------------------------- */

/* Opens this thread's node `nid` with its store at `dbpath` (a directory, created if
 * missing), bound to `bind_port` on all addresses (0: an ephemeral port). `get_addr`
 * resolves a node id to its address (sin_family AF_INET, nonzero port; anything else means
 * unknown) and is called again when a peer's address may have changed. Returns the node's
 * UDP socket fd, readable when datagrams arrive (put it in your own epoll/select, and wake
 * up by hrpc_once_timeout() too), or 0 on failure (bad path, store locked by another process, port in use). Calling it again
 * closes the previous node of this thread first. */
int hrpc_init(const char* dbpath, int nid, int bind_port, struct sockaddr_in (*get_addr)(int nid));
/* Resolves `nid` and starts talking to it (heartbeats), so hrpc_is_connected can turn true
 * before anything is sent. 0 on success, -1 on error. */
int hrpc_touch_connect(int nid);
/* 1 if `nid` was heard from recently, 0 otherwise. */
int hrpc_is_connected(int nid);
/* A buffer of `size` bytes in the store for a message to `nid`; committed at the next call
 * (see above). NULL on a bad argument or if the store or peer window stays full for the
 * compatibility send timeout (2 s, during which the node keeps receiving acknowledgements
 * but delivers nothing). Callable from inside on_message. */
void* hrpc_send(int nid, int size);
/* Receives, persists, delivers every ready message in order (on_message(nid, message,
 * size); `message` is valid until on_message returns and must not be modified), runs timers
 * and transmits. Does not block. Returns the time in ms until the node next needs a call
 * (0: call again at once), at most 1000; -1 if there is no node or on_message is NULL. */
int hrpc_once(void (*on_message)(int nid, void* message, unsigned int size));
/* The same hint as hrpc_once's return value, without doing any work. */
int hrpc_once_timeout(void);

/* ---- Handle API ---------------------------------------------------------------------- */

/* A node. Opaque. */
typedef struct hrpc_node hrpc_node;

/* Resolves `node_id` for the node it was given to: fills *addr and returns 1, or returns 0
 * if unknown. Called on the polling thread. */
typedef int (*hrpc_resolve_fn)(void* ctx, uint32_t node_id, struct sockaddr_in* addr);

/* Called once per delivered message, in order per peer. `data` (len bytes) is valid until
 * the callback returns. */
typedef void (*hrpc_message_fn)(void* ctx, uint32_t peer, uint64_t seq, const void* data,
                                size_t len);

/* How to open a node. Fill with hrpc_config_init, then change fields. */
typedef struct hrpc_config {
    const char* store_path;        /* store directory, created if missing (required) */
    uint32_t node_id;              /* nonzero (required) */
    uint16_t bind_port;            /* 0: ephemeral port */
    uint16_t reserved;             /* must be 0 */
    const char* bind_ip;           /* dotted IPv4 address to bind; NULL: 0.0.0.0 */
    hrpc_resolve_fn resolve;       /* NULL: peers are known once they have spoken */
    void* resolve_ctx;             /* passed to resolve */
    uint32_t mtu;                  /* largest datagram; 0: 1472 */
    uint32_t durability;           /* HRPC_DURABILITY_PROCESS (default) or _SYNC */
    uint64_t store_capacity;       /* bytes; 0: 1 GiB */
    uint64_t max_unacked_per_peer; /* messages; 0: 65536 */
    uint32_t send_block_ms;        /* sends wait this long on backpressure; 0: no wait */
    uint32_t reserved2;            /* must be 0 */
} hrpc_config;

/* Counters of a node. */
typedef struct hrpc_stats {
    uint64_t messages_sent;          /* sent for the first time */
    uint64_t messages_retransmitted; /* sent again */
    uint64_t messages_acked;         /* outbound messages the peers persisted */
    uint64_t messages_received;      /* inbound messages persisted */
    uint64_t messages_delivered;     /* inbound messages handed to callbacks */
    uint64_t messages_lost;          /* inbound seqs reported lost */
    uint64_t datagrams_sent;
    uint64_t datagrams_received;
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t polls;                  /* hrpc_node_poll calls */
    uint64_t unacked;                /* messages committed and not yet acknowledged */
} hrpc_stats;

/* Defaults, with the store at `store_path` and the id `node_id`. */
void hrpc_config_init(hrpc_config* config, const char* store_path, uint32_t node_id);
/* Opens a node; on success *out is the node and HRPC_OK is returned. */
int hrpc_node_open(const hrpc_config* config, hrpc_node** out);
/* A buffer of `len` bytes for a message to `peer`, committed at the next call on this node
 * (see above). NULL on error (HRPC_E_BACKPRESSURE: poll, then retry). */
void* hrpc_node_send(hrpc_node* node, uint32_t peer, size_t len);
/* Commits a copy of `data` (len bytes) for `peer`; *seq_out (may be NULL) gets its seq. */
int hrpc_node_send_copy(hrpc_node* node, uint32_t peer, const void* data, size_t len,
                        uint64_t* seq_out);
/* Does all ready work without blocking, calling on_message for each ready message in order.
 * Returns the number of messages delivered (>= 0) or an error code. */
int hrpc_node_poll(hrpc_node* node, hrpc_message_fn on_message, void* ctx);
/* Blocks until the node has work or `timeout_ms` passes (< 0: until the node's next timer).
 * HRPC_OK or an error code. */
int hrpc_node_wait(hrpc_node* node, int timeout_ms);
/* Milliseconds until the node next needs hrpc_node_poll (0: now), at most 1000; or an
 * error code. */
int hrpc_node_timeout(hrpc_node* node);
/* A file descriptor readable when the node has work; or an error code. */
int hrpc_node_fd(const hrpc_node* node);
/* Starts talking to `peer` (resolve, heartbeats). */
int hrpc_node_touch(hrpc_node* node, uint32_t peer);
/* 1 if `peer` was heard from recently, 0 if not; or an error code. */
int hrpc_node_is_connected(const hrpc_node* node, uint32_t peer);
/* The seq the next message to `peer` will get (1 for a peer never sent to). Every message
 * before it was committed; it survives restarts. */
int hrpc_node_next_seq(hrpc_node* node, uint32_t peer, uint64_t* seq_out);
/* Fills *stats. */
int hrpc_node_stats(const hrpc_node* node, hrpc_stats* stats);
/* Commits an outstanding send buffer, transmits what the socket takes within `linger_ms`,
 * and closes the node (unacknowledged messages stay in the store for the next open). The
 * node is freed even when an error is returned. NULL is a no-op. */
int hrpc_node_close(hrpc_node* node, int linger_ms);
/* The node the compatibility API uses on this thread (opened by hrpc_init), or NULL. Do not
 * close it. */
hrpc_node* hrpc_default_node(void);

/* The code of the last failure on this thread (HRPC_OK if none yet). */
int hrpc_last_error(void);
/* A message describing the last failure on this thread; valid until the next hrpc call on
 * this thread. Never NULL. */
const char* hrpc_last_error_message(void);
/* A static description of an error code. Never NULL. */
const char* hrpc_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif /* HRPC_H */
