/* A worker's session table: sessions keyed by canonical (client, endpoint), an
 * open-addressing hash for lookup and a 1 s timer wheel for idle expiry (spec proxy.md §5,
 * the seed's rule: a packet in either direction refreshes; removal within about a second of
 * the timeout, never before it). Fixed capacity, memory reserved once. Owned and used by
 * one worker thread; nothing here does I/O (the caller owns each session's socket).
 *
 * Unconfirmed sessions (extension, issue 9): until the client sends again after the server's
 * first reply, a session lives only the short unconfirmed timeout after its last client
 * packet, and server packets do not refresh it. A spoofed source never sends again, so the
 * sessions (and local ports) it makes go within seconds however the server answers; the
 * same two-way rule as Linux conntrack's "assured" UDP flows. */
#ifndef QK_PROXY_SESSION_H
#define QK_PROXY_SESSION_H

#include "net/addr.h"

#include <stdbool.h>
#include <stdint.h>

#define SESSION_NIL UINT32_MAX

/* Lives in the table's array; pointers stay valid until the session expires. */
struct session {
    struct addr client;
    struct addr endpoint;
    int fd;                /* upstream socket, owned by the worker (closed on expiry) */
    uint32_t wheel_next;   /* next session in the same wheel slot, or SESSION_NIL */
    uint32_t wheel_prev;   /* previous one, or SESSION_NIL for the slot's head */
    uint8_t wheel_slot;    /* the slot it is armed in */
    bool has_reply;        /* the server has answered */
    bool is_confirmed;     /* the client sent again after a reply: full idle timeout */
    bool shares_port;      /* SO_REUSEADDR on: its local port is shared by the client's
                              sessions to other endpoints (worker.c) */
    bool is_port_bound;    /* bound to a shared port explicitly (never pooled) */
    uint16_t lport;        /* local port when known (0: not looked up yet) */
    uint64_t created_ns;   /* CLOCK_MONOTONIC */
    uint64_t last_seen_ns; /* refreshed by traffic (see session_seen_*) */
    uint64_t tx_batch;     /* worker's send staging: batch id of tx_tail */
    uint32_t tx_tail;      /* last staged send of this session in that batch */
    uint32_t rxq_drops;    /* last SO_RXQ_OVFL count seen on its socket */
    uint16_t geo;          /* its client's metric label set (proxy/geo.h); 0: none */
    uint64_t last_reply_ns; /* when its socket last received (jitter); 0: never */
};

struct session_table;

/* cap: most live sessions; timeout_ns: idle timeout (> 0); unconfirmed_ns: the timeout of
 * unconfirmed sessions (0 or >= timeout_ns: no separate timeout, every session is treated
 * as confirmed); now_ns: the clock at creation. Returns NULL on OOM. Memory is reserved,
 * not touched: unused capacity costs no RSS. */
struct session_table *session_table_create(uint32_t cap, uint64_t timeout_ns,
                                           uint64_t unconfirmed_ns, uint64_t now_ns,
                                           uint64_t seed);

/* Callback for each removed session (to close its socket and count it). */
typedef void (*session_fn)(void *ctx, struct session *s);

/* Destroys the table, calling fn (if non-NULL) for every live session first. */
void session_table_destroy(struct session_table *t, session_fn fn, void *ctx);

/* The session for (client, endpoint), or NULL. O(1) expected. */
struct session *session_lookup(struct session_table *t, const struct addr *client,
                               const struct addr *endpoint);

/* True when session_insert would refuse (check before setting up a socket). */
bool session_table_is_full(const struct session_table *t);

/* Adds a session (the caller checked it does not exist) with fd = -1, created and seen at
 * now_ns, armed on the wheel, unconfirmed unless the table has no unconfirmed timeout.
 * NULL when the table is full. */
struct session *session_insert(struct session_table *t, const struct addr *client,
                               const struct addr *endpoint, uint64_t now_ns);

/* Removes a session at once (e.g. its socket could not be registered). O(1). Calls
 * nothing. */
void session_remove(struct session_table *t, struct session *s);

/* A client packet for s passed the chain: refreshes it, and confirms it when the server has
 * already answered. */
static inline void session_seen_client(struct session *s, uint64_t now_ns)
{
    s->last_seen_ns = now_ns;
    if (s->has_reply)
        s->is_confirmed = true;
}

/* A server packet for s passed the chain: refreshes it only once confirmed (the seed's
 * either-direction rule, for sessions whose client is known to be real). */
static inline void session_seen_reply(struct session *s, uint64_t now_ns)
{
    s->has_reply = true;
    if (s->is_confirmed)
        s->last_seen_ns = now_ns;
}

/* Index of s in the table and back, for epoll data. */
uint32_t session_index(const struct session_table *t, const struct session *s);
struct session *session_at(struct session_table *t, uint32_t idx);

/* Advances the wheel to now_ns: every session idle for at least the timeout is passed to fn
 * and removed; others seen since they were armed are re-armed. Cost is proportional to the
 * entries in the slots passed, never to the table size. Returns the number removed. */
uint32_t session_expire(struct session_table *t, uint64_t now_ns, session_fn fn, void *ctx);

uint32_t session_count(const struct session_table *t);
uint32_t session_capacity(const struct session_table *t);

#endif
