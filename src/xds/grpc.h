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

/* Listens on [::]:port (dual-stack; 0 = ephemeral). NULL with e set. ops/ctx borrowed. */
struct grpc_server *grpc_server_create(uint16_t port, const struct grpc_server_ops *ops,
                                       void *ctx, struct err *e);

/* Serves TLS (h2 via ALPN) on every connection accepted from now on; tls is borrowed and
 * must outlive the server. Call before the first grpc_server_poll. */
void grpc_server_set_tls(struct grpc_server *s, struct ssl_ctx_st *tls);

/* The bound port (useful with port 0). */
uint16_t grpc_server_port(const struct grpc_server *s);

/* Polls the listener and all connections for up to timeout_ms plus extra_fd (or -1): accepts,
 * reads, dispatches callbacks, writes. Returns 1 if extra_fd became readable, else 0; a
 * negative errno only for fatal listener errors. */
int grpc_server_poll(struct grpc_server *s, int timeout_ms, int extra_fd);

/* Sends one message on s (buffered; written by the next grpc_server_poll or at once when
 * the socket takes it). 0 or a negative errno (stream closed). */
int grpc_stream_send(struct grpc_stream *s, const uint8_t *msg, size_t len);

/* Ends the stream with trailers grpc-status/grpc-message. on_close follows. */
void grpc_stream_finish(struct grpc_stream *s, enum grpc_status status, const char *message);

/* Closes every connection (on_close for each open stream) and frees. NULL is a no-op. */
void grpc_server_destroy(struct grpc_server *s);

#endif
