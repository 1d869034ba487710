/* Internal to src/xds/grpc_*.c: gRPC length-prefixed message framing (outgoing queue and
 * incoming reassembly), the socket write buffer fed by nghttp2_session_mem_send, HTTP/2
 * session defaults and grpc-message percent-coding. Used by grpc_client.c and grpc_server.c
 * only; nothing else includes it. No threads; each object belongs to one stream/connection. */
#ifndef QK_XDS_GRPC_FRAME_H
#define QK_XDS_GRPC_FRAME_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xds/grpc.h"

struct err;
struct ssl_st; /* OpenSSL's SSL */

/* A connection's byte transport: plain TCP, or TLS over it (issue 10). */
struct grpc_io {
    int fd;
    struct ssl_st *ssl; /* NULL: plain */
};

/* True when TLS holds decrypted bytes that poll(2) cannot see (read them before sleeping). */
bool grpc_io_has_pending(const struct grpc_io *io);

#define GRPC_FRAME_HDR_LEN 5                   /* flag byte + 4-byte big-endian length */
#define GRPC_FRAME_OUT_CAP (4u * GRPC_MAX_MSG) /* unsent bytes queued per stream */
#define GRPC_FRAME_READ_LEN 65536              /* one recv(2) */
#define GRPC_FRAME_STREAM_WINDOW (1u << 20)    /* SETTINGS_INITIAL_WINDOW_SIZE */
#define GRPC_FRAME_CONN_WINDOW (16u << 20)     /* connection-level receive window */
#define GRPC_FRAME_MAX_HEADER_BYTES 16384      /* per header block, RFC 7541 sizing */
#define GRPC_FRAME_TEXT_CAP 256                /* grpc-message kept or sent, decoded */

/* Framed messages waiting to become DATA frames on one stream: a ring of messages, each a
 * 5-byte prefix, a body shared by reference (struct grpc_shared, grpc.h) and an optional
 * short per-stream tail (the server appends a fresh nonce field to a response encoded once
 * for every stream, issue 10). Embedded in its stream; zero-initialised;
 * grpc_frame_outq_deinit releases everything. */
#define GRPC_FRAME_TAIL_CAP 64

struct grpc_frame_msg {
    struct grpc_shared *body; /* one reference held */
    uint8_t head[GRPC_FRAME_HDR_LEN];
    uint8_t tail[GRPC_FRAME_TAIL_CAP];
    size_t tail_len;
    size_t off; /* bytes of head + body + tail already taken */
};

struct grpc_frame_outq {
    struct grpc_frame_msg *ring;
    size_t first, n, cap; /* messages ring[first .. first+n) modulo cap */
    size_t pending;       /* bytes not yet taken */
};

/* Queues a copy of msg. 0, -EMSGSIZE (len > GRPC_MAX_MSG), -ENOBUFS (more than
 * GRPC_FRAME_OUT_CAP would be pending) or -ENOMEM. */
int grpc_frame_outq_push(struct grpc_frame_outq *q, const uint8_t *msg, size_t len);

/* Queues body (a reference is taken) followed by tail[0..tail_len) (copied; at most
 * GRPC_FRAME_TAIL_CAP) as one message. Same results as grpc_frame_outq_push. */
int grpc_frame_outq_push_shared(struct grpc_frame_outq *q, struct grpc_shared *body,
                                const uint8_t *tail, size_t tail_len);

/* Bytes not yet taken. */
size_t grpc_frame_outq_pending(const struct grpc_frame_outq *q);

/* Messages not yet wholly taken (a partly sent one counts). */
size_t grpc_frame_outq_count(const struct grpc_frame_outq *q);

/* Moves up to cap pending bytes into dst (a DATA frame payload); returns how many. */
size_t grpc_frame_outq_take(struct grpc_frame_outq *q, uint8_t *dst, size_t cap);

/* Drops every message of which nothing was taken yet (a partly sent one stays, so the peer
 * never sees a truncated message). Returns how many were dropped. */
size_t grpc_frame_outq_drop_unsent(struct grpc_frame_outq *q);

void grpc_frame_outq_deinit(struct grpc_frame_outq *q);

/* Reassembles messages from DATA payload chunks. Embedded, zero-initialised; memory held
 * grows with bytes actually received (never with the length a peer merely declares). */
struct grpc_frame_reasm {
    uint8_t hdr[GRPC_FRAME_HDR_LEN];
    size_t hdr_len; /* prefix bytes seen for the current message */
    uint8_t *msg;   /* malloc'd, NULL between messages */
    size_t msg_len, have, cap;
    /* Set by the owner before a feed (0: no limit): the largest message accepted (else
     * GRPC_MAX_MSG), and the most bytes the buffer may hold (a server's memory budget). */
    size_t max_msg, room;
};

/* Receives one whole message; takes ownership of msg (malloc'd, never NULL, even for len 0).
 * A non-zero return stops the feed and is returned by grpc_frame_reasm_feed. */
typedef int (*grpc_frame_msg_fn)(void *arg, uint8_t *msg, size_t len);

/* Feeds one chunk; calls fn for every message it completes, in order. 0, or -EMSGSIZE
 * (declared length > max_msg or GRPC_MAX_MSG), -ENOBUFS (the message would need more than
 * room bytes), -EPROTO (compressed flag: we negotiate no encoding),
 * -ENOMEM, or fn's non-zero result; e says which. After an error, stop feeding. */
int grpc_frame_reasm_feed(struct grpc_frame_reasm *r, const uint8_t *data, size_t len,
                          grpc_frame_msg_fn fn, void *arg, struct err *e);

/* True when part of a message has arrived (so an END_STREAM now truncates it). */
bool grpc_frame_reasm_is_partial(const struct grpc_frame_reasm *r);

void grpc_frame_reasm_deinit(struct grpc_frame_reasm *r);

/* Bytes produced by nghttp2 but not yet taken by the socket. Embedded, zero-initialised. */
struct grpc_frame_wbuf {
    uint8_t *buf;
    size_t off, len, cap;
};

/* Writes pending bytes, then pulls frames from nghttp2_session_mem_send (which may run the
 * session's callbacks) and writes those, until the socket would block or nothing is left.
 * Never blocks (fd is non-blocking). 0, or a negative errno with e set: the connection is
 * unusable. */
int grpc_frame_flush(struct grpc_io *io, nghttp2_session *h2, struct grpc_frame_wbuf *w,
                     struct err *e);

/* True when there is something to write (POLLOUT is worth asking for). */
bool grpc_frame_wants_write(nghttp2_session *h2, const struct grpc_frame_wbuf *w);

void grpc_frame_wbuf_deinit(struct grpc_frame_wbuf *w);

/* One recv(2) of up to cap bytes into buf, fed to nghttp2_session_mem_recv (which runs the
 * callbacks). Returns bytes processed (> 0), 0 when the socket has nothing (EAGAIN), or a
 * negative errno with e set: -ECONNRESET on EOF, -EPROTO when nghttp2 gives up on the peer
 * (bad preface, flooding, callback failure), another errno from recv. */
int grpc_frame_read(struct grpc_io *io, nghttp2_session *h2, uint8_t *buf, size_t cap,
                    struct err *e);

/* Options shared by both sides (flood and CONTINUATION limits, no closed-stream retention).
 * Caller deletes with nghttp2_option_del. NULL on OOM. */
nghttp2_option *grpc_frame_options(void);

/* Queues our SETTINGS (windows, header list size; for a server also max concurrent streams
 * max_streams; for a client push disabled) and widens the connection window. 0 or -ENOMEM. */
int grpc_frame_session_start(nghttp2_session *h2, bool is_server, uint32_t max_streams);

/* Percent-encodes text for a grpc-message value (gRPC over HTTP/2: bytes outside 0x20..0x7e
 * and '%' become %XX), at most GRPC_FRAME_TEXT_CAP input bytes. out holds cap bytes; an
 * escape is never split. Returns out. */
char *grpc_frame_pct_encode(const char *text, char *out, size_t cap);

/* Decodes a grpc-message value into out (cap bytes, always terminated). Bad escapes stay
 * literal (the spec's advice); control bytes become '?', since the text lands in logs. */
void grpc_frame_pct_decode(const uint8_t *in, size_t len, char *out, size_t cap);

/* "OK", "INVALID_ARGUMENT", ... for the 17 gRPC codes, "UNKNOWN_CODE" otherwise. */
const char *grpc_frame_status_name(int code);

/* Milliseconds from now to deadline_ns for poll(2), rounded up, 0 once past, capped to
 * INT_MAX. */
int grpc_frame_poll_ms(uint64_t deadline_ns);

/* deadline in CLOCK_MONOTONIC ns for a timeout in ms (negative counts as 0). */
uint64_t grpc_frame_deadline(int timeout_ms);

#endif
