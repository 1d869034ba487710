/* gRPC client (grpc.h): one TCP connection, one nghttp2 client session, one bidirectional
 * stream, driven by whichever thread calls it, with every wait bounded by the caller's timeout.
 * It does not reconnect or retry; the ADS client above decides that.
 *
 * Errors returned once the stream is over: -EPIPE when the server ended it with trailers
 * (e names grpc-status and grpc-message), -ECONNRESET when the connection or stream was lost
 * (EOF, RST_STREAM, GOAWAY), -EPROTO for a peer that breaks HTTP/2 or gRPC, -EMSGSIZE for a
 * message over GRPC_MAX_MSG. */
#include "xds/grpc.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "base/clock.h"
#include "base/err.h"
#include "xds/grpc_frame.h"
#include "xds/tls.h"

/* Messages received but not yet returned by grpc_client_recv. Above this, the socket is not
 * read while sending, so TCP pushes back on a server that outruns its reader. */
#define QUEUE_HIGH_WATER (8u << 20)
#define READ_ROUNDS 4   /* recv calls per poll round (fairness with writing) */
#define DRAIN_ROUNDS 16 /* reads before close, so close sends FIN rather than RST */
#define TARGET_CAP 300  /* "[host]:port" */
#define PATH_CAP 512

/* One received message; owned by the queue until grpc_client_recv hands data out. */
struct client_msg {
    struct client_msg *next;
    uint8_t *data;
    size_t len;
};

/* Owned by the caller of grpc_client_open; grpc_client_close frees everything. */
struct grpc_client {
    struct grpc_io io; /* the socket, and TLS over it for https:// servers */
    int wake_fd;
    nghttp2_session *h2;
    int32_t stream_id;
    char target[TARGET_CAP]; /* for error texts and :authority */

    struct grpc_frame_outq out;
    bool is_local_eof; /* END_STREAM requested by grpc_client_close */
    struct grpc_frame_wbuf wbuf;

    struct grpc_frame_reasm in;
    struct client_msg *q_head, *q_tail;
    size_t q_bytes;

    size_t hdr_bytes; /* current header block */
    int http_status;  /* -1 until :status arrives */
    int grpc_status;  /* -1 until grpc-status arrives */
    char grpc_message[GRPC_FRAME_TEXT_CAP];
    bool has_goaway;
    uint32_t goaway_code;

    /* keepalive (issue 10): a PING after keepalive_ms without a byte from the server; no ACK
     * within keepalive_timeout_ms ends the stream (a half-open link is noticed in seconds) */
    unsigned keepalive_ms, keepalive_timeout_ms; /* 0: off */
    uint64_t last_rx_ns;                         /* last time the server sent anything */
    uint64_t ping_sent_ns;                       /* outstanding PING, or 0 */

    int end_rc; /* 0 while the stream is usable; the first cause of its end wins */
    char end_msg[ERR_MSG_CAP];

    uint8_t rbuf[GRPC_FRAME_READ_LEN];
};

__attribute__((format(printf, 3, 4))) static void client_end(struct grpc_client *c, int rc,
                                                             const char *fmt, ...)
{
    if (c->end_rc != 0)
        return;
    c->end_rc = rc;
    int n = snprintf(c->end_msg, sizeof(c->end_msg), "grpc %s: ", c->target);
    if (n < 0 || (size_t)n >= sizeof(c->end_msg))
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->end_msg + n, sizeof(c->end_msg) - (size_t)n, fmt, ap);
    va_end(ap);
}

static int client_fail(const struct grpc_client *c, struct err *e)
{
    err_set(e, "%s", c->end_msg);
    return c->end_rc;
}

/* The server's last HEADERS (trailers, or a trailers-only response) ended the stream. */
static void end_from_trailers(struct grpc_client *c)
{
    if (c->http_status != 200) {
        client_end(c, -EPROTO, "HTTP status %d instead of a gRPC response", c->http_status);
        return;
    }
    if (c->grpc_status < 0) {
        client_end(c, -EPROTO, "stream ended without grpc-status");
        return;
    }
    client_end(c, -EPIPE, "stream ended with grpc-status %d (%s)%s%s", c->grpc_status,
               grpc_frame_status_name(c->grpc_status), c->grpc_message[0] ? ": " : "",
               c->grpc_message);
}

/* ---- nghttp2 callbacks (run inside mem_recv / mem_send) ---- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct grpc_client *c = user;
    c->hdr_bytes = 0;
    return 0;
}

static bool parse_small_int(const uint8_t *v, size_t len, int *out)
{
    if (len == 0 || len > 3)
        return false;
    int x = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return true;
}

static bool name_is(const uint8_t *name, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(name, lit, len) == 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct grpc_client *c = user;
    if (frame->hd.stream_id != c->stream_id)
        return 0;
    c->hdr_bytes += namelen + valuelen + 32; /* RFC 7541 §4.1 entry size */
    if (c->hdr_bytes > GRPC_FRAME_MAX_HEADER_BYTES) {
        client_end(c, -EPROTO, "server sent more than %u bytes of headers",
                   GRPC_FRAME_MAX_HEADER_BYTES);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    }
    int x;
    if (name_is(name, namelen, ":status")) {
        c->http_status = parse_small_int(value, valuelen, &x) ? x : 0;
    } else if (name_is(name, namelen, "grpc-status")) {
        /* an unparsable status is UNKNOWN, as gRPC clients treat it */
        c->grpc_status = parse_small_int(value, valuelen, &x) ? x : 2;
    } else if (name_is(name, namelen, "grpc-message")) {
        grpc_frame_pct_decode(value, valuelen, c->grpc_message, sizeof(c->grpc_message));
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct grpc_client *c = user;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (frame->hd.stream_id != c->stream_id)
            break;
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            end_from_trailers(c);
        } else if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE && c->http_status != 200) {
            client_end(c, -EPROTO, "HTTP status %d instead of a gRPC response", c->http_status);
            nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_CANCEL);
        }
        break;
    case NGHTTP2_DATA:
        if (frame->hd.stream_id == c->stream_id && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            client_end(c, -EPROTO, "stream ended without trailers");
        break;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_sent_ns = 0;
        break;
    case NGHTTP2_GOAWAY:
        c->has_goaway = true;
        c->goaway_code = frame->goaway.error_code;
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR ||
            frame->goaway.last_stream_id < c->stream_id)
            client_end(c, -ECONNRESET, "server sent GOAWAY (%s)",
                       nghttp2_http2_strerror(frame->goaway.error_code));
        break;
    default:
        break;
    }
    return 0;
}

static int push_msg(void *arg, uint8_t *msg, size_t len)
{
    struct grpc_client *c = arg;
    struct client_msg *m = malloc(sizeof(*m));
    if (!m) {
        free(msg);
        return -ENOMEM;
    }
    m->next = NULL;
    m->data = msg;
    m->len = len;
    if (c->q_tail)
        c->q_tail->next = m;
    else
        c->q_head = m;
    c->q_tail = m;
    c->q_bytes += len + sizeof(*m);
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *h2, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user)
{
    struct grpc_client *c = user;
    if (stream_id != c->stream_id || c->end_rc != 0)
        return 0;
    struct err e = {{0}};
    int rc = grpc_frame_reasm_feed(&c->in, data, len, push_msg, c, &e);
    if (rc != 0) {
        if (!err_is_set(&e))
            err_set(&e, "out of memory for a received message");
        client_end(c, rc, "server sent a bad message: %s", e.msg);
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *user)
{
    struct grpc_client *c = user;
    if (stream_id != c->stream_id)
        return 0;
    if (c->has_goaway)
        client_end(c, -ECONNRESET, "stream closed after GOAWAY (%s)",
                   nghttp2_http2_strerror(c->goaway_code));
    else
        client_end(c, -ECONNRESET, "stream reset (%s)", nghttp2_http2_strerror(error_code));
    return 0;
}

/* Data source for our request stream: framed messages, then END_STREAM on close. */
static ssize_t read_request_data(nghttp2_session *h2, int32_t stream_id, uint8_t *buf,
                                 size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                                 void *user)
{
    struct grpc_client *c = user;
    size_t n = grpc_frame_outq_take(&c->out, buf, length);
    if (n > 0)
        return (ssize_t)n;
    if (c->is_local_eof) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    return NGHTTP2_ERR_DEFERRED;
}

/* ---- I/O ---- */

/* One poll round of at most timeout_ms: reads (when allowed) and writes what is pending.
 * Returns 1 if wake_fd is readable (when use_wake), else 0; a connection failure ends the
 * stream (c->end_rc) and also returns 0. */
static int client_io(struct grpc_client *c, int timeout_ms, bool use_wake)
{
    bool may_read = c->q_bytes < QUEUE_HIGH_WATER;
    struct pollfd pfd[2];
    nfds_t n = 1;
    pfd[0] = (struct pollfd){.fd = c->io.fd, .events = 0};
    if (may_read)
        pfd[0].events |= POLLIN;
    if (grpc_frame_wants_write(c->h2, &c->wbuf))
        pfd[0].events |= POLLOUT;
    if (use_wake && c->wake_fd >= 0)
        pfd[n++] = (struct pollfd){.fd = c->wake_fd, .events = POLLIN};
    if (grpc_io_has_pending(&c->io))
        timeout_ms = 0; /* decrypted bytes are waiting: read them now */
    int r = poll(pfd, n, timeout_ms);
    if (r == -1) {
        if (errno == EINTR)
            return 0; /* the caller recomputes what is left of its deadline */
        client_end(c, -errno, "poll: %s", strerror(errno));
        return 0;
    }
    if (n == 2 && (pfd[1].revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)))
        return 1;
    struct err e = {{0}};
    /* POLLHUP/POLLERR are reported even when not asked for; read then, or we would spin. */
    if ((pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) ||
        (may_read && grpc_io_has_pending(&c->io))) {
        for (int i = 0; i < READ_ROUNDS; i++) {
            int rc = grpc_frame_read(&c->io, c->h2, c->rbuf, sizeof(c->rbuf), &e);
            if (rc < 0) {
                client_end(c, rc, "%s", e.msg);
                return 0;
            }
            if (rc > 0)
                c->last_rx_ns = clock_mono_ns();
            if (rc == 0 || c->q_bytes >= QUEUE_HIGH_WATER)
                break;
        }
    }
    if (pfd[0].revents & POLLNVAL) {
        client_end(c, -EBADF, "socket closed under us");
        return 0;
    }
    int rc = grpc_frame_flush(&c->io, c->h2, &c->wbuf, &e);
    if (rc < 0) {
        client_end(c, rc, "%s", e.msg);
        return 0;
    }
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
        client_end(c, -ECONNRESET, "HTTP/2 session over");
    return 0;
}

static void sockaddr_text(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN + 8], serv[6];
    if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, cap, "?");
        return;
    }
    snprintf(out, cap, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

/* Waits for a non-blocking connect to finish. 0, or a negative errno with e set. */
static int connect_wait(int fd, const char *what, uint64_t deadline_ns, int timeout_ms, int wake_fd,
                        struct err *e)
{
    for (;;) {
        struct pollfd pfd[2] = {{.fd = fd, .events = POLLOUT}, {.fd = wake_fd, .events = POLLIN}};
        int r = poll(pfd, wake_fd >= 0 ? 2 : 1, grpc_frame_poll_ms(deadline_ns));
        if (r == -1) {
            if (errno == EINTR)
                continue;
            int rc = -errno;
            err_set(e, "connect to %s: poll: %s", what, strerror(errno));
            return rc;
        }
        if (r == 0) {
            err_set(e, "connect to %s timed out after %d ms", what, timeout_ms);
            return -ETIMEDOUT;
        }
        if (wake_fd >= 0 && pfd[1].revents) {
            err_set(e, "connect to %s interrupted", what);
            return -EINTR;
        }
        if (!pfd[0].revents)
            continue;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1) {
            int rc = -errno;
            err_set(e, "connect to %s: %s", what, strerror(errno));
            return rc;
        }
        if (soerr != 0) {
            err_set(e, "connect to %s: %s", what, strerror(soerr));
            return -soerr;
        }
        return 0;
    }
}

/* A connected non-blocking TCP socket to the first address of host:port that answers within
 * the deadline, or a negative errno with e set (the last address's failure). */
static int connect_any(const char *host, uint16_t port, uint64_t deadline_ns, int timeout_ms,
                       int wake_fd, struct err *e)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char serv[8];
    snprintf(serv, sizeof(serv), "%u", port);
    /* getaddrinfo may block on DNS beyond the deadline; IP literals never do. */
    int g = getaddrinfo(host, serv, &hints, &res);
    if (g != 0) {
        err_set(e, "resolve %s: %s", host, gai_strerror(g));
        return -EHOSTUNREACH;
    }
    int rc = -EHOSTUNREACH;
    err_set(e, "resolve %s: no usable address", host);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char what[INET6_ADDRSTRLEN + 16];
        sockaddr_text(ai->ai_addr, ai->ai_addrlen, what, sizeof(what));
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd == -1) {
            rc = -errno;
            err_set(e, "socket for %s: %s", what, strerror(errno));
            continue;
        }
        /* EINTR on a non-blocking connect: the attempt carries on asynchronously. */
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1 && errno != EINPROGRESS &&
            errno != EINTR) {
            rc = -errno;
            err_set(e, "connect to %s: %s", what, strerror(errno));
            close(fd);
            continue;
        }
        rc = connect_wait(fd, what, deadline_ns, timeout_ms, wake_fd, e);
        if (rc == 0) {
            freeaddrinfo(res);
            return fd;
        }
        close(fd);
        if (rc == -ETIMEDOUT || rc == -EINTR)
            break;
    }
    freeaddrinfo(res);
    return rc;
}

static nghttp2_session *client_session(struct grpc_client *c)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt = grpc_frame_options();
    nghttp2_session *h2 = NULL;
    if (opt && nghttp2_session_client_new2(&h2, cbs, c, opt) != 0)
        h2 = NULL;
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    return h2;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

/* Runs the TLS handshake within the deadline (waking for wake_fd too). 0 or -errno, e set. */
static int tls_connect(struct grpc_client *c, SSL_CTX *tls, const char *host, uint64_t deadline,
                       int wake_fd, struct err *e)
{
    c->io.ssl = tls_client_new(tls, c->io.fd, host);
    if (!c->io.ssl)
        return err_set(e, "grpc %s: out of memory for TLS", c->target), -ENOMEM;
    for (;;) {
        bool want_write;
        int rc = tls_handshake(c->io.ssl, &want_write, e);
        if (rc == 1)
            return 0;
        if (rc < 0) {
            err_prefix(e, "grpc %s: ", c->target);
            return rc;
        }
        int left = grpc_frame_poll_ms(deadline);
        if (left == 0)
            return err_set(e, "grpc %s: TLS handshake timed out", c->target), -ETIMEDOUT;
        struct pollfd pfd[2] = {{.fd = c->io.fd, .events = want_write ? POLLOUT : POLLIN},
                                {.fd = wake_fd, .events = POLLIN}};
        int r = poll(pfd, wake_fd >= 0 ? 2 : 1, left);
        if (r == -1 && errno != EINTR)
            return err_set(e, "grpc %s: poll: %s", c->target, strerror(errno)), -errno;
        if (r > 0 && wake_fd >= 0 && (pfd[1].revents & POLLIN))
            return err_set(e, "grpc %s: interrupted", c->target), -EINTR;
    }
}

struct grpc_client *grpc_client_open(const char *host, uint16_t port, const char *path,
                                     int timeout_ms, int wake_fd, struct err *e)
{
    return grpc_client_open_tls(host, port, path, timeout_ms, wake_fd, NULL, e);
}

struct grpc_client *grpc_client_open_tls(const char *host, uint16_t port, const char *path,
                                         int timeout_ms, int wake_fd, SSL_CTX *tls,
                                         struct err *e)
{
    if (!host || !host[0] || !path || path[0] != '/' || strlen(path) >= PATH_CAP) {
        err_set(e, "grpc: bad host or path");
        return NULL;
    }
    uint64_t deadline = grpc_frame_deadline(timeout_ms);
    struct grpc_client *c = calloc(1, sizeof(*c));
    if (!c) {
        err_set(e, "grpc: out of memory");
        return NULL;
    }
    c->io.fd = -1;
    c->wake_fd = wake_fd;
    c->http_status = -1;
    c->grpc_status = -1;
    /* An IPv6 literal needs brackets in :authority. */
    bool bracket = strchr(host, ':') && host[0] != '[';
    snprintf(c->target, sizeof(c->target), bracket ? "[%s]:%u" : "%s:%u", host, port);

    int fd = connect_any(host, port, deadline, timeout_ms, wake_fd, e);
    if (fd < 0) {
        err_prefix(e, "grpc %s: ", c->target);
        goto fail;
    }
    c->io.fd = fd;
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1) {
        err_set(e, "grpc %s: TCP_NODELAY: %s", c->target, strerror(errno));
        goto fail;
    }
    if (tls && tls_connect(c, tls, host, deadline, wake_fd, e) < 0)
        goto fail;
    c->h2 = client_session(c);
    if (!c->h2 || grpc_frame_session_start(c->h2, false, 0) != 0) {
        err_set(e, "grpc %s: out of memory for the HTTP/2 session", c->target);
        goto fail;
    }
    const nghttp2_nv nva[] = {
        NV(":method", "POST"),
        NV(":scheme", tls ? "https" : "http"),
        NV(":path", path),
        NV(":authority", c->target),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "quilkin-c/" QK_VERSION),
    };
    nghttp2_data_provider prd = {.source.ptr = c, .read_callback = read_request_data};
    int32_t id = nghttp2_submit_request(c->h2, NULL, nva, sizeof(nva) / sizeof(nva[0]), &prd, NULL);
    if (id < 0) {
        err_set(e, "grpc %s: submit request: %s", c->target, nghttp2_strerror(id));
        goto fail;
    }
    c->stream_id = id;
    /* Preface, SETTINGS and HEADERS fit an empty socket buffer; no waiting needed. */
    if (grpc_frame_flush(&c->io, c->h2, &c->wbuf, e) != 0) {
        err_prefix(e, "grpc %s: ", c->target);
        goto fail;
    }
    return c;
fail:
    grpc_client_close(c);
    return NULL;
}

int grpc_client_send(struct grpc_client *c, const uint8_t *msg, size_t len, int timeout_ms,
                     struct err *e)
{
    if (c->end_rc != 0)
        return client_fail(c, e);
    int rc = grpc_frame_outq_push(&c->out, msg, len);
    if (rc != 0) {
        if (rc == -EMSGSIZE)
            err_set(e, "grpc %s: message of %zu bytes exceeds the %u-byte limit", c->target, len,
                    GRPC_MAX_MSG);
        else if (rc == -ENOBUFS)
            err_set(e, "grpc %s: send queue full (%zu bytes unsent)", c->target,
                    grpc_frame_outq_pending(&c->out));
        else
            err_set(e, "grpc %s: out of memory queueing a message", c->target);
        return rc;
    }
    /* Fails harmlessly when the data source is not deferred (already scheduled). */
    nghttp2_session_resume_data(c->h2, c->stream_id);
    uint64_t deadline = grpc_frame_deadline(timeout_ms);
    bool is_last = false;
    while (c->end_rc == 0 &&
           (grpc_frame_outq_pending(&c->out) > 0 || grpc_frame_wants_write(c->h2, &c->wbuf))) {
        if (is_last)
            break; /* the rest stays queued and goes out with later calls */
        int left = grpc_frame_poll_ms(deadline);
        is_last = left == 0;
        client_io(c, left, false);
    }
    if (c->end_rc != 0 && grpc_frame_outq_pending(&c->out) > 0)
        return client_fail(c, e);
    return 0;
}

void grpc_client_set_keepalive(struct grpc_client *c, unsigned interval_ms, unsigned timeout_ms)
{
    c->keepalive_ms = interval_ms;
    c->keepalive_timeout_ms = timeout_ms;
    c->last_rx_ns = clock_mono_ns();
    if (interval_ms) {
        /* the kernel gives up on data unacknowledged this long, instead of retransmitting
         * for ~15 minutes (tcp_retries2) */
        unsigned user_timeout = interval_ms + timeout_ms;
        setsockopt(c->io.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
    }
}

/* Sends a PING when the server has been silent for keepalive_ms and ends the stream when
 * one goes unanswered for keepalive_timeout_ms. Returns the ms until the next keepalive
 * event, or -1 when keepalive is off. */
static int keepalive_step(struct grpc_client *c)
{
    if (!c->keepalive_ms || c->end_rc != 0)
        return -1;
    uint64_t now = clock_mono_ns();
    if (c->ping_sent_ns) {
        uint64_t waited_ms = (now - c->ping_sent_ns) / 1000000ull;
        if (waited_ms >= c->keepalive_timeout_ms) {
            client_end(c, -ETIMEDOUT, "no answer to an HTTP/2 PING within %u ms: the link is "
                                      "dead", c->keepalive_timeout_ms);
            return 0;
        }
        return (int)(c->keepalive_timeout_ms - waited_ms);
    }
    uint64_t idle_ms = (now - c->last_rx_ns) / 1000000ull;
    if (idle_ms < c->keepalive_ms)
        return (int)(c->keepalive_ms - idle_ms);
    if (nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL) != 0) {
        client_end(c, -ENOMEM, "cannot queue an HTTP/2 PING");
        return 0;
    }
    c->ping_sent_ns = now;
    return (int)c->keepalive_timeout_ms;
}

int grpc_client_recv(struct grpc_client *c, int timeout_ms, uint8_t **msg, size_t *len,
                     struct err *e)
{
    uint64_t deadline = grpc_frame_deadline(timeout_ms);
    bool is_last = false;
    for (;;) {
        struct client_msg *m = c->q_head;
        if (m) {
            c->q_head = m->next;
            if (!c->q_head)
                c->q_tail = NULL;
            c->q_bytes -= m->len + sizeof(*m);
            *msg = m->data;
            *len = m->len;
            free(m);
            return 1;
        }
        if (c->end_rc != 0)
            return client_fail(c, e);
        if (is_last)
            return 0;
        int left = grpc_frame_poll_ms(deadline);
        bool is_final = left == 0;
        int ka = keepalive_step(c);
        if (c->end_rc != 0)
            continue; /* the keepalive found the link dead */
        if (ka >= 0 && ka < left) {
            left = ka; /* wake for the keepalive, then go on waiting */
            is_final = false;
        }
        is_last = is_final;
        if (client_io(c, left, true) == 1)
            return -EINTR;
    }
}

void grpc_client_close(struct grpc_client *c)
{
    if (!c)
        return;
    if (c->h2 && c->io.fd >= 0 && c->end_rc == 0) {
        /* Best effort, no waiting: END_STREAM, then GOAWAY, whatever the socket takes. */
        struct err e = {{0}};
        c->is_local_eof = true;
        nghttp2_session_resume_data(c->h2, c->stream_id);
        if (grpc_frame_flush(&c->io, c->h2, &c->wbuf, &e) == 0) {
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
            grpc_frame_flush(&c->io, c->h2, &c->wbuf, &e);
        }
        for (int i = 0; i < DRAIN_ROUNDS; i++) {
            ssize_t n = recv(c->io.fd, c->rbuf, sizeof(c->rbuf), MSG_DONTWAIT);
            if (n <= 0 && !(n == -1 && errno == EINTR))
                break;
        }
    }
    if (c->io.ssl) {
        SSL_shutdown(c->io.ssl); /* best effort close_notify, no waiting */
        SSL_free(c->io.ssl);
    }
    if (c->io.fd >= 0)
        close(c->io.fd);
    nghttp2_session_del(c->h2);
    while (c->q_head) {
        struct client_msg *m = c->q_head;
        c->q_head = m->next;
        free(m->data);
        free(m);
    }
    grpc_frame_outq_deinit(&c->out);
    grpc_frame_reasm_deinit(&c->in);
    grpc_frame_wbuf_deinit(&c->wbuf);
    free(c);
}
