/* gRPC framing and HTTP/2 plumbing shared by grpc_client.c and grpc_server.c: message
 * prefixing and reassembly, the nghttp2 -> socket write path, one recv into nghttp2, session
 * defaults, grpc-message percent-coding. Knows nothing of clients, servers or xDS. */
#include "xds/grpc_frame.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/clock.h"
#include "base/err.h"
#include "xds/tls.h"

#include <openssl/err.h>

#define WBUF_FILL 65536         /* gather frames up to this much per send(2) */
#define SHRINK_ABOVE (1u << 20) /* drop drained buffers bigger than this */
#define REASM_FIRST_CAP 65536   /* first allocation for a message, grown by doubling */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- shared bodies ---- */

struct grpc_shared *grpc_shared_new(const uint8_t *bytes, size_t len)
{
    struct grpc_shared *b = malloc(sizeof(*b) + (len ? len : 1));
    if (!b)
        return NULL;
    b->refs = 1;
    b->len = len;
    if (len)
        memcpy(b->bytes, bytes, len);
    return b;
}

struct grpc_shared *grpc_shared_ref(struct grpc_shared *b)
{
    b->refs++;
    return b;
}

void grpc_shared_unref(struct grpc_shared *b)
{
    if (b && --b->refs == 0)
        free(b);
}

/* ---- outgoing queue ---- */

static size_t msg_total(const struct grpc_frame_msg *m)
{
    return GRPC_FRAME_HDR_LEN + m->body->len + m->tail_len;
}

int grpc_frame_outq_push_shared(struct grpc_frame_outq *q, struct grpc_shared *body,
                                const uint8_t *tail, size_t tail_len)
{
    if (tail_len > GRPC_FRAME_TAIL_CAP)
        return -EINVAL;
    size_t len = body->len + tail_len;
    if (len > GRPC_MAX_MSG)
        return -EMSGSIZE;
    if (q->pending + GRPC_FRAME_HDR_LEN + len > GRPC_FRAME_OUT_CAP)
        return -ENOBUFS;
    if (q->n == q->cap) { /* grow the ring, unwrapping it */
        size_t cap = q->cap ? q->cap * 2 : 4;
        struct grpc_frame_msg *ring = malloc(cap * sizeof(*ring));
        if (!ring)
            return -ENOMEM;
        for (size_t i = 0; i < q->n; i++)
            ring[i] = q->ring[(q->first + i) % q->cap];
        free(q->ring);
        q->ring = ring;
        q->cap = cap;
        q->first = 0;
    }
    struct grpc_frame_msg *m = &q->ring[(q->first + q->n) % q->cap];
    m->body = grpc_shared_ref(body);
    m->head[0] = 0; /* not compressed */
    put_be32(m->head + 1, (uint32_t)len);
    if (tail_len)
        memcpy(m->tail, tail, tail_len);
    m->tail_len = tail_len;
    m->off = 0;
    q->n++;
    q->pending += GRPC_FRAME_HDR_LEN + len;
    return 0;
}

int grpc_frame_outq_push(struct grpc_frame_outq *q, const uint8_t *msg, size_t len)
{
    if (len > GRPC_MAX_MSG)
        return -EMSGSIZE;
    if (q->pending + GRPC_FRAME_HDR_LEN + len > GRPC_FRAME_OUT_CAP)
        return -ENOBUFS;
    struct grpc_shared *b = grpc_shared_new(msg, len);
    if (!b)
        return -ENOMEM;
    int rc = grpc_frame_outq_push_shared(q, b, NULL, 0);
    grpc_shared_unref(b);
    return rc;
}

size_t grpc_frame_outq_pending(const struct grpc_frame_outq *q)
{
    return q->pending;
}

size_t grpc_frame_outq_count(const struct grpc_frame_outq *q)
{
    return q->n;
}

/* Copies bytes [from, from+n) of a piece starting at piece_at in the message into dst;
 * returns how many it copied. */
static size_t copy_piece(uint8_t *dst, size_t from, size_t n, const uint8_t *piece,
                         size_t piece_at, size_t piece_len)
{
    if (from >= piece_at + piece_len || from + n <= piece_at)
        return 0;
    size_t lo = from > piece_at ? from - piece_at : 0;
    size_t hi = from + n - piece_at < piece_len ? from + n - piece_at : piece_len;
    memcpy(dst + (piece_at + lo - from), piece + lo, hi - lo);
    return hi - lo;
}

size_t grpc_frame_outq_take(struct grpc_frame_outq *q, uint8_t *dst, size_t cap)
{
    size_t done = 0;
    while (q->n && done < cap) {
        struct grpc_frame_msg *m = &q->ring[q->first];
        size_t total = msg_total(m), blen = m->body->len;
        size_t n = total - m->off < cap - done ? total - m->off : cap - done;
        copy_piece(dst + done, m->off, n, m->head, 0, GRPC_FRAME_HDR_LEN);
        copy_piece(dst + done, m->off, n, m->body->bytes, GRPC_FRAME_HDR_LEN, blen);
        copy_piece(dst + done, m->off, n, m->tail, GRPC_FRAME_HDR_LEN + blen, m->tail_len);
        m->off += n;
        done += n;
        q->pending -= n;
        if (m->off == total) {
            grpc_shared_unref(m->body);
            q->first = (q->first + 1) % q->cap;
            q->n--;
        }
    }
    if (!q->n && q->cap > 64) { /* a burst must not pin a big ring forever */
        free(q->ring);
        q->ring = NULL;
        q->cap = q->first = 0;
    }
    return done;
}

size_t grpc_frame_outq_drop_unsent(struct grpc_frame_outq *q)
{
    size_t keep = q->n && q->ring[q->first].off > 0 ? 1 : 0, dropped = 0;
    while (q->n > keep) {
        struct grpc_frame_msg *m = &q->ring[(q->first + q->n - 1) % q->cap];
        q->pending -= msg_total(m) - m->off;
        grpc_shared_unref(m->body);
        q->n--;
        dropped++;
    }
    return dropped;
}

void grpc_frame_outq_deinit(struct grpc_frame_outq *q)
{
    for (size_t i = 0; i < q->n; i++)
        grpc_shared_unref(q->ring[(q->first + i) % q->cap].body);
    free(q->ring);
    memset(q, 0, sizeof(*q));
}

/* ---- incoming reassembly ---- */

int grpc_frame_reasm_feed(struct grpc_frame_reasm *r, const uint8_t *data, size_t len,
                          grpc_frame_msg_fn fn, void *arg, struct err *e)
{
    for (;;) {
        if (r->hdr_len < GRPC_FRAME_HDR_LEN) {
            if (len == 0)
                return 0;
            size_t n = GRPC_FRAME_HDR_LEN - r->hdr_len;
            if (n > len)
                n = len;
            memcpy(r->hdr + r->hdr_len, data, n);
            r->hdr_len += n;
            data += n;
            len -= n;
            if (r->hdr_len < GRPC_FRAME_HDR_LEN)
                return 0;
            if (r->hdr[0] != 0) {
                err_set(e, "message with compressed flag %u, but no grpc-encoding was agreed",
                        r->hdr[0]);
                return -EPROTO;
            }
            uint32_t mlen = get_be32(r->hdr + 1);
            size_t max = r->max_msg && r->max_msg < GRPC_MAX_MSG ? r->max_msg : GRPC_MAX_MSG;
            if (mlen > max) {
                err_set(e, "message of %u bytes exceeds the %zu-byte limit", mlen, max);
                return -EMSGSIZE;
            }
            r->msg_len = mlen;
            r->have = 0;
            r->cap = mlen < REASM_FIRST_CAP ? (mlen ? mlen : 1) : REASM_FIRST_CAP;
            if (r->room && r->cap > r->room) {
                r->cap = 0;
                err_set(e, "no room to buffer a %u-byte message", mlen);
                return -ENOBUFS;
            }
            r->msg = malloc(r->cap);
            if (!r->msg) {
                r->cap = 0;
                err_set(e, "out of memory for a %u-byte message", mlen);
                return -ENOMEM;
            }
        }
        size_t n = r->msg_len - r->have;
        if (n > len)
            n = len;
        if (r->have + n > r->cap) {
            size_t cap = r->cap;
            while (cap < r->have + n)
                cap *= 2;
            if (cap > r->msg_len)
                cap = r->msg_len;
            if (r->room && cap > r->room) {
                if (r->have + n > r->room) {
                    err_set(e, "no room to buffer the rest of a %zu-byte message", r->msg_len);
                    return -ENOBUFS;
                }
                cap = r->room;
            }
            uint8_t *nb = realloc(r->msg, cap);
            if (!nb) {
                err_set(e, "out of memory for a %zu-byte message", r->msg_len);
                return -ENOMEM;
            }
            r->msg = nb;
            r->cap = cap;
        }
        if (n)
            memcpy(r->msg + r->have, data, n);
        r->have += n;
        data += n;
        len -= n;
        if (r->have < r->msg_len)
            return 0; /* len is 0 here: wait for the next chunk */
        uint8_t *msg = r->msg;
        size_t mlen = r->msg_len;
        r->msg = NULL;
        r->hdr_len = 0;
        r->msg_len = r->have = r->cap = 0;
        int rc = fn(arg, msg, mlen);
        if (rc != 0)
            return rc;
    }
}

bool grpc_frame_reasm_is_partial(const struct grpc_frame_reasm *r)
{
    return r->hdr_len > 0;
}

void grpc_frame_reasm_deinit(struct grpc_frame_reasm *r)
{
    free(r->msg);
    memset(r, 0, sizeof(*r));
}

/* ---- socket I/O ---- */

static int wbuf_append(struct grpc_frame_wbuf *w, const uint8_t *data, size_t len)
{
    if (w->len + len > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + len)
            cap *= 2;
        uint8_t *nb = realloc(w->buf, cap);
        if (!nb)
            return -ENOMEM;
        w->buf = nb;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, data, len);
    w->len += len;
    return 0;
}

bool grpc_io_has_pending(const struct grpc_io *io)
{
    return io->ssl && SSL_pending(io->ssl) > 0;
}

/* One write: bytes taken (> 0), 0 when it would block, or a negative errno with e set. */
static ssize_t io_write(struct grpc_io *io, const uint8_t *buf, size_t len, struct err *e)
{
    if (io->ssl) {
        ERR_clear_error();
        int n = SSL_write(io->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
        if (n > 0)
            return n;
        int code = SSL_get_error(io->ssl, n);
        if (code == SSL_ERROR_WANT_WRITE || code == SSL_ERROR_WANT_READ)
            return 0;
        char text[256];
        err_set(e, "TLS write: %s", code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                                        ? strerror(errno)
                                        : tls_error_text(text, sizeof(text)));
        return -EPIPE;
    }
    for (;;) {
        ssize_t n = send(io->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        int rc = -errno;
        err_set(e, "send: %s", strerror(errno));
        return rc;
    }
}

/* One read: bytes (> 0), 0 when nothing is there, or a negative errno with e set
 * (-ECONNRESET at the peer's end of the stream). */
static ssize_t io_read(struct grpc_io *io, uint8_t *buf, size_t cap, struct err *e)
{
    if (io->ssl) {
        ERR_clear_error();
        int n = SSL_read(io->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
        if (n > 0)
            return n;
        int code = SSL_get_error(io->ssl, n);
        if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE)
            return 0;
        if (code == SSL_ERROR_ZERO_RETURN ||
            (code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && n == 0)) {
            err_set(e, "connection closed by peer");
            return -ECONNRESET;
        }
        if (code == SSL_ERROR_SSL &&
            ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            /* TLS 1.3: a server that refuses the client certificate does so after the
               client's side of the handshake is done; all the client sees is this EOF */
            err_set(e, "TLS: the peer closed the connection without close_notify%s",
                    SSL_is_server(io->ssl) ? ""
                                           : " (a server that refuses our client "
                                             "certificate does this right after the "
                                             "handshake)");
            return -ECONNRESET;
        }
        char text[256];
        err_set(e, "TLS read: %s", code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                                       ? strerror(errno)
                                       : tls_error_text(text, sizeof(text)));
        return -EPROTO;
    }
    ssize_t n;
    do {
        n = recv(io->fd, buf, cap, 0);
    } while (n == -1 && errno == EINTR);
    if (n == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        int rc = -errno;
        err_set(e, "recv: %s", strerror(errno));
        return rc;
    }
    if (n == 0) {
        err_set(e, "connection closed by peer");
        return -ECONNRESET;
    }
    return n;
}

int grpc_frame_flush(struct grpc_io *io, nghttp2_session *h2, struct grpc_frame_wbuf *w,
                     struct err *e)
{
    for (;;) {
        while (w->off < w->len) {
            ssize_t n = io_write(io, w->buf + w->off, w->len - w->off, e);
            if (n < 0)
                return (int)n;
            if (n == 0)
                return 0; /* would block: the same bytes are offered again later */
            w->off += (size_t)n;
        }
        w->off = w->len = 0;
        if (w->cap > SHRINK_ABOVE) {
            free(w->buf);
            w->buf = NULL;
            w->cap = 0;
        }
        while (w->len < WBUF_FILL) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(h2, &data);
            if (n < 0) {
                err_set(e, "HTTP/2 send: %s", nghttp2_strerror((int)n));
                return n == NGHTTP2_ERR_NOMEM ? -ENOMEM : -EPROTO;
            }
            if (n == 0)
                break;
            if (wbuf_append(w, data, (size_t)n) != 0) {
                err_set(e, "out of memory for the send buffer");
                return -ENOMEM;
            }
        }
        if (w->len == 0)
            return 0;
    }
}

bool grpc_frame_wants_write(nghttp2_session *h2, const struct grpc_frame_wbuf *w)
{
    return w->off < w->len || nghttp2_session_want_write(h2);
}

void grpc_frame_wbuf_deinit(struct grpc_frame_wbuf *w)
{
    free(w->buf);
    memset(w, 0, sizeof(*w));
}

int grpc_frame_read(struct grpc_io *io, nghttp2_session *h2, uint8_t *buf, size_t cap,
                    struct err *e)
{
    ssize_t n = io_read(io, buf, cap, e);
    if (n <= 0)
        return (int)n;
    ssize_t r = nghttp2_session_mem_recv(h2, buf, (size_t)n);
    if (r < 0) {
        err_set(e, "HTTP/2 receive: %s", nghttp2_strerror((int)r));
        return r == NGHTTP2_ERR_NOMEM ? -ENOMEM : -EPROTO;
    }
    return (int)n;
}

/* ---- session defaults ---- */

nghttp2_option *grpc_frame_options(void)
{
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        return NULL;
    /* Closed streams only feed RFC 7540 priorities, which gRPC does not use. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* A peer that never reads our PING/SETTINGS acks is flooding us. */
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    /* CVE-2024-28182: bound CONTINUATION frames per header block (Debian's 1.52 backport). */
    nghttp2_option_set_max_continuations(opt, 8);
    return opt;
}

int grpc_frame_session_start(nghttp2_session *h2, bool is_server, uint32_t max_streams)
{
    nghttp2_settings_entry iv[3];
    size_t n = 0;
    iv[n++] =
        (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, GRPC_FRAME_STREAM_WINDOW};
    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                                       GRPC_FRAME_MAX_HEADER_BYTES};
    if (is_server)
        iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams};
    else
        iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    if (nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, iv, n) != 0)
        return -ENOMEM;
    /* Stream 0's window is not a SETTING: widen it with a WINDOW_UPDATE, so a 16 MiB xDS
     * response is not paced by 64 KiB round trips. */
    if (nghttp2_session_set_local_window_size(h2, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)GRPC_FRAME_CONN_WINDOW) != 0)
        return -ENOMEM;
    return 0;
}

/* ---- grpc-message ---- */

char *grpc_frame_pct_encode(const char *text, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; text && text[i] && i < GRPC_FRAME_TEXT_CAP; i++) {
        uint8_t c = (uint8_t)text[i];
        bool plain = c >= 0x20 && c <= 0x7e && c != '%';
        size_t need = plain ? 1 : 3;
        if (o + need + 1 > cap)
            break;
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (cap)
        out[o] = '\0';
    return out;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void grpc_frame_pct_decode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    if (cap == 0)
        return;
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < cap; i++) {
        uint8_t c = in[i];
        if (c == '%' && i + 2 < len && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
            c = (uint8_t)(hexval(in[i + 1]) << 4 | hexval(in[i + 2]));
            i += 2;
        }
        out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    out[o] = '\0';
}

const char *grpc_frame_status_name(int code)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if (code < 0 || (size_t)code >= sizeof(names) / sizeof(names[0]))
        return "UNKNOWN_CODE";
    return names[code];
}

/* ---- time ---- */

int grpc_frame_poll_ms(uint64_t deadline_ns)
{
    uint64_t now = clock_mono_ns();
    if (now >= deadline_ns)
        return 0;
    uint64_t ms = (deadline_ns - now + NS_PER_MS - 1) / NS_PER_MS;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

uint64_t grpc_frame_deadline(int timeout_ms)
{
    return clock_mono_ns() + (timeout_ms > 0 ? (uint64_t)timeout_ms * NS_PER_MS : 0);
}
