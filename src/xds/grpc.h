/* Minimal gRPC over HTTP/2 cleartext (h2c, prior knowledge) on nghttp2: length-prefixed
 * messages on bidirectional streams, grpc-status trailers, optionally over TLS (h2 via ALPN).
 * Enough for ADS, no more: no compression, no deadlines beyond the timeouts given here. Single-threaded: each client
 * connection and the server are driven by the thread that calls them (poll inside). */
#ifndef QK_XDS_GRPC_H
#define QK_XDS_GRPC_H

#include <stddef.h>
#include <stdint.h>

struct err;

#define GRPC_MAX_MSG (16u * 1024 * 1024) /* larger messages reset the stream */

/* gRPC status codes we use. */
enum grpc_status {
    GRPC_OK = 0,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
};

/* ---- client: one connection carrying one bidirectional stream ---- */

struct grpc_client;

/* Connects to host:port (name or IP literal; tries every address getaddrinfo gives) within
 * timeout_ms, does the HTTP/2 preface and opens a POST stream on `path` (e.g.
 * "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources").
 * wake_fd (or -1) is polled too: when it is readable, grpc_client_recv returns -EINTR (the
 * caller drains it), so another thread can interrupt a wait. NULL with e set on failure. */
struct grpc_client *grpc_client_open(const char *host, uint16_t port, const char *path,
                                     int timeout_ms, int wake_fd, struct err *e);

/* As grpc_client_open, over TLS when tls is not NULL (ALPN h2, the server's certificate
 * checked for host). The handshake counts against timeout_ms. */
struct ssl_ctx_st; /* OpenSSL's SSL_CTX */
struct grpc_client *grpc_client_open_tls(const char *host, uint16_t port, const char *path,
                                         int timeout_ms, int wake_fd, struct ssl_ctx_st *tls,
                                         struct err *e);

/* Keepalive (issue 10): after interval_ms without a byte from the server, send an HTTP/2
 * PING; if it is not answered within timeout_ms the stream ends (-ETIMEDOUT) in the next
 * grpc_client_recv. Also sets TCP_USER_TIMEOUT to interval + timeout. 0: off. */
void grpc_client_set_keepalive(struct grpc_client *c, unsigned interval_ms, unsigned timeout_ms);

/* Queues one message on the stream and flushes what the socket takes without blocking more
 * than timeout_ms. 0, or a negative errno with e set (connection or stream is gone). */
int grpc_client_send(struct grpc_client *c, const uint8_t *msg, size_t len, int timeout_ms,
                     struct err *e);

/* Waits up to timeout_ms for the next whole message. Returns 1 with *msg (malloc'd, caller
 * frees) and *len; 0 on timeout; -EINTR when wake_fd became readable; another negative errno
 * when the stream or connection ended (e says why, with the grpc-status and grpc-message
 * when the server sent trailers). */
int grpc_client_recv(struct grpc_client *c, int timeout_ms, uint8_t **msg, size_t *len,
                     struct err *e);

/* Half-closes (END_STREAM), closes the connection and frees. NULL is a no-op. */
void grpc_client_close(struct grpc_client *c);

/* ---- message bodies shared between streams ---- */

/* An immutable message body with a reference count, so that one encoding can be queued on
 * many streams without a copy each (issue 10). Not thread-safe: one thread owns it and every
 * stream it is queued on. */
struct grpc_shared {
    unsigned refs;
    size_t len;
    uint8_t bytes[];
};

/* A body holding a copy of bytes[0..len), with one reference. NULL on OOM. */
struct grpc_shared *grpc_shared_new(const uint8_t *bytes, size_t len);

struct grpc_shared *grpc_shared_ref(struct grpc_shared *b);

/* Drops one reference; frees at zero. NULL is a no-op. */
void grpc_shared_unref(struct grpc_shared *b);

/* ---- server: many connections, many streams, one thread ---- */

struct grpc_server;
struct grpc_stream; /* owned by the server; valid from on_open until on_close returns */

struct grpc_server_ops {
    /* A new stream for `path`. Return non-NULL per-stream state to accept it; NULL answers
     * grpc-status UNIMPLEMENTED right away (on_close is then not called). */
    void *(*on_open)(void *ctx, struct grpc_stream *s, const char *path);
    /* One whole request message (buf is only valid during the call). */
    void (*on_message)(void *ctx, void *stream_state, struct grpc_stream *s, const uint8_t *msg,
                       size_t len);
    /* Optional: the client half-closed (sent everything it will send). The callee may end
     * the stream with grpc_stream_finish and a status of its choice; otherwise it ends
     * with OK after what is queued. on_close follows either way. */
    void (*on_half_close)(void *ctx, void *stream_state, struct grpc_stream *s);
    /* The client half-closed, reset, or the connection died. The stream is gone afterwards;
     * free stream_state here. */
    void (*on_close)(void *ctx, void *stream_state);
};

/* What one client may make the server hold, and for how long (issue 10). Every field 0
 * means "no limit / off" except where noted. */
struct grpc_server_limits {
    size_t max_request;          /* largest request message, <= GRPC_MAX_MSG (4 MiB) */
    size_t conn_buffer;          /* request bytes buffered per connection (8 MiB) */
    size_t total_buffer;         /* request bytes buffered in all (64 MiB) */
    unsigned max_queued;         /* responses queued on a stream, not yet taken by the
                                    client: beyond this it is a slow reader (8) */
    unsigned max_conns;          /* open connections in all (1024, at least 1) */
    unsigned max_conns_per_peer; /* open connections from one IP address (64) */
    unsigned first_request_ms;   /* accept -> first whole request on the connection, and
                                    stream open -> its first request (10 s) */
    unsigned idle_ms;            /* a connection without an open stream this long (60 s) */
    unsigned keepalive_ms;       /* PING a client silent this long (30 s) ... */
    unsigned keepalive_timeout_ms; /* ... and close it if the PING stays unanswered (10 s) */
};

/* The defaults above. */
void grpc_server_limits_default(struct grpc_server_limits *l);

/* Counters of what the limits refused or ended (monotonic) and two gauges. Any thread. */
struct grpc_server_stats {
    uint64_t refused_max_conns, refused_per_peer;          /* connections closed at accept */
    uint64_t first_request_timeouts, idle_timeouts, keepalive_timeouts; /* closed later */
    uint64_t buffer_exhausted; /* streams ended RESOURCE_EXHAUSTED for request bytes */
    uint64_t conns;            /* open now */
    uint64_t buffered;         /* request bytes buffered now */
};

/* Listens on [::]:port (dual-stack; 0 = ephemeral) with the default limits. NULL with e set.
 * ops/ctx borrowed. */
struct grpc_server *grpc_server_create(uint16_t port, const struct grpc_server_ops *ops,
                                       void *ctx, struct err *e);

/* Serves TLS (h2 via ALPN) on every connection accepted from now on; tls is borrowed and
 * must outlive the server. Call before the first grpc_server_poll. */
void grpc_server_set_tls(struct grpc_server *s, struct ssl_ctx_st *tls);

/* Replaces the limits (call before the first grpc_server_poll). */
void grpc_server_set_limits(struct grpc_server *s, const struct grpc_server_limits *l);

void grpc_server_get_stats(const struct grpc_server *s, struct grpc_server_stats *out);

/* The bound port (useful with port 0). */
uint16_t grpc_server_port(const struct grpc_server *s);

/* Polls the listener and all connections for up to timeout_ms plus extra_fd (or -1): accepts,
 * reads, dispatches callbacks, writes. Returns 1 if extra_fd became readable, else 0; a
 * negative errno only for fatal listener errors. */
int grpc_server_poll(struct grpc_server *s, int timeout_ms, int extra_fd);

/* Sends one message on s (buffered; written by the next grpc_server_poll or at once when
 * the socket takes it). 0, -EPIPE (stream closed), -EMSGSIZE (over GRPC_MAX_MSG),
 * -ENOBUFS (max_queued messages are still waiting for the client: a slow reader) or
 * -ENOMEM. On failure nothing is queued and the stream is left as it was. */
int grpc_stream_send(struct grpc_stream *s, const uint8_t *msg, size_t len);

/* As grpc_stream_send with body (a reference is taken) followed by tail[0..tail_len)
 * (copied, at most 64 bytes) as one message. */
int grpc_stream_send_shared(struct grpc_stream *s, struct grpc_shared *body,
                            const uint8_t *tail, size_t tail_len);

/* Ends the stream at once: queued messages not started are dropped (a partly sent one is
 * completed, so the client never sees half a message), then trailers status/message. When
 * the partly sent one cannot be completed because the client's flow-control window is
 * closed and stays closed for 5 s, the stream is reset with ENHANCE_YOUR_CALM instead (gRPC
 * clients report RESOURCE_EXHAUSTED). on_close follows. */
void grpc_stream_abort(struct grpc_stream *s, enum grpc_status status, const char *message);

/* Ends the stream with trailers grpc-status/grpc-message. on_close follows. */
void grpc_stream_finish(struct grpc_stream *s, enum grpc_status status, const char *message);

/* Closes every connection (on_close for each open stream) and frees. NULL is a no-op. */
void grpc_server_destroy(struct grpc_server *s);

#endif
