/* gRPC server (grpc.h): a dual-stack TCP listener, one nghttp2 server session per accepted
 * connection, all driven by grpc_server_poll on one thread. It owns connections and streams;
 * what a stream means is the caller's (via grpc_server_ops). It faces arbitrary network input:
 * every buffer is bounded and every peer failure only costs that peer its connection.
 *
 * User callbacks run only from grpc_server_poll (on_open/on_message inside nghttp2's receive
 * callbacks, on_close never inside nghttp2), so a stream is freed only by the poll loop or
 * destroy, never under the caller's feet. */
#include "xds/grpc.h"

#include <errno.h>
#include <netdb.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "xds/grpc_frame.h"
#include "xds/tls.h"

#define MAX_STREAMS 100                   /* SETTINGS_MAX_CONCURRENT_STREAMS per connection */
#define PATH_CAP 512                      /* longer :path values are answered UNIMPLEMENTED */
#define ACCEPT_BURST 64                   /* accepts per poll round */
#define READ_ROUNDS 4                     /* recv calls per connection per poll round */
#define ACCEPT_PAUSE_NS (100 * NS_PER_MS) /* after EMFILE and friends */
#define TIMER_NS (250 * NS_PER_MS)        /* timeouts are checked this often */
#define ABORT_GRACE_NS (5 * NS_PER_SEC) /* grpc_stream_abort behind a closed window */
#define LISTEN_BACKLOG 1024 /* a fleet reconnecting at once (the kernel caps it at somaxconn) */
#define LOG_EVERY 1000 /* limit events are logged the first time and every LOG_EVERY-th */

struct grpc_conn;

/* One request stream. Created by nghttp2's begin-headers callback, owned by its connection's
 * list until nghttp2 closes it, then by the server's closed queue until on_close returned.
 * Freed when both nghttp2 and the user are done with it (stream_release). */
struct grpc_stream {
    struct grpc_server *srv;
    struct grpc_conn *conn;          /* NULL once nghttp2 closed it or the connection died */
    struct grpc_stream *prev, *next; /* conn->streams */
    struct grpc_stream *next_closed; /* srv->closed queue */
    int32_t id;
    uint64_t opened_ns; /* for the first-request timeout */
    uint64_t reset_at_ns; /* aborted behind a closed window: reset then (0: not armed) */
    bool has_message;   /* a whole request arrived */
    void *state; /* on_open's result */
    char *path;  /* malloc'd :path, NULL if absent or too long */
    size_t hdr_bytes;
    bool is_post, is_grpc_ctype;
    bool is_accepted;      /* on_open returned state: the user may hold this stream */
    bool is_response_sent; /* response HEADERS submitted with our data source */
    bool is_finishing;     /* trailers requested; no more sends */
    bool is_broken;        /* bad message received: ignore further DATA */
    bool is_h2_closed;
    bool is_close_queued; /* on the closed queue: on_close pending or done */
    bool is_user_done;    /* on_close has returned */
    enum grpc_status fin_status;
    char *fin_msg; /* percent-encoded grpc-message, malloc'd, may be NULL */
    struct grpc_frame_outq out;
    struct grpc_frame_reasm in;
};

/* One accepted connection; owned by the server's list, freed by conn_close. */
struct grpc_conn {
    struct grpc_server *srv;
    struct grpc_conn *prev, *next;
    struct grpc_io io; /* the socket, and TLS over it when the server has a certificate */
    bool is_tls_handshaking; /* no HTTP/2 until the TLS handshake is done */
    bool tls_wants_write;    /* the handshake waits for POLLOUT (else POLLIN) */
    nghttp2_session *h2;
    struct grpc_stream *streams;
    struct grpc_frame_wbuf wbuf;
    uint64_t accepted_ns;
    uint64_t last_read_ns;  /* keepalive: the last time the client sent anything */
    uint64_t ping_sent_ns;  /* 0: no keepalive PING outstanding */
    uint64_t idle_since_ns; /* 0: has streams (or not checked yet) */
    size_t in_bytes;        /* request bytes buffered on its streams */
    unsigned waiting;       /* accepted streams without a whole request yet */
    bool has_settings; /* the client's preface and SETTINGS arrived */
    bool has_request;  /* a whole request arrived on some stream */
    bool has_reset_timer; /* some stream has reset_at_ns armed */
    bool is_dead;      /* closed by the next reap */
    uint8_t peer_ip[16]; /* IPv4 as v4-mapped IPv6: the per-peer limit's key */
    char peer[INET6_ADDRSTRLEN + 24];
};

/* Owned by the caller of grpc_server_create; grpc_server_destroy frees it. */
struct grpc_server {
    int lfd;
    uint16_t port;
    const struct grpc_server_ops *ops; /* borrowed */
    void *ctx;                         /* borrowed */
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    struct grpc_conn *conns;
    size_t n_conns;
    struct grpc_stream *closed_head, *closed_tail; /* on_close still to be called */
    int h2_depth; /* > 0 while inside nghttp2 (no mem_send from callbacks) */
    uint64_t accept_paused_until_ns;
    uint64_t next_timer_ns;
    SSL_CTX *tls; /* borrowed; NULL: cleartext (h2c) */
    struct grpc_server_limits lim;
    size_t in_bytes; /* request bytes buffered on all connections */
    /* counters for grpc_server_get_stats (written here, read by any thread) */
    _Atomic uint64_t st_max_conns, st_per_peer, st_first_request, st_idle, st_keepalive,
        st_buffer, st_conns, st_buffered;
    struct pollfd *pfds;        /* lim.max_conns + 2 */
    struct grpc_conn **pconns;  /* lim.max_conns */
    uint8_t rbuf[GRPC_FRAME_READ_LEN];
};

/* Logs a limit event the first time and then every LOG_EVERY-th, with the running count. */
static void log_limit(uint64_t count, const char *what, const char *peer)
{
    if (count % LOG_EVERY == 1)
        LOG_WARN("xds", "grpc server: %s (%s; %llu so far)", what, peer,
                 (unsigned long long)count);
}

/* The request bytes a stream's reassembly holds changed by delta (may be negative). */
static void account_in(struct grpc_conn *conn, ptrdiff_t delta)
{
    struct grpc_server *srv = conn->srv;
    conn->in_bytes = (size_t)((ptrdiff_t)conn->in_bytes + delta);
    srv->in_bytes = (size_t)((ptrdiff_t)srv->in_bytes + delta);
    atomic_store_explicit(&srv->st_buffered, srv->in_bytes, memory_order_relaxed);
}

/* ---- stream lifetime ---- */

static void stream_free(struct grpc_stream *s)
{
    grpc_frame_outq_deinit(&s->out);
    grpc_frame_reasm_deinit(&s->in);
    free(s->path);
    free(s->fin_msg);
    free(s);
}

/* Schedules on_close for an accepted stream (once). */
static void queue_close(struct grpc_stream *s)
{
    if (!s->is_accepted || s->is_close_queued)
        return;
    s->is_close_queued = true;
    s->next_closed = NULL;
    struct grpc_server *srv = s->srv;
    if (srv->closed_tail)
        srv->closed_tail->next_closed = s;
    else
        srv->closed_head = s;
    srv->closed_tail = s;
}

/* nghttp2 or the connection is done with s: unlink it, then free it now unless the user
 * still has to hear about it. */
static void stream_detach(struct grpc_stream *s)
{
    struct grpc_conn *conn = s->conn;
    if (conn) {
        account_in(conn, -(ptrdiff_t)s->in.cap); /* no more DATA will come for it */
        grpc_frame_reasm_deinit(&s->in);
        if (s->is_accepted && !s->has_message && conn->waiting)
            conn->waiting--;
        if (s->prev)
            s->prev->next = s->next;
        else
            conn->streams = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->prev = s->next = NULL;
        s->conn = NULL;
    }
    s->is_h2_closed = true;
    if (s->is_accepted && !s->is_user_done)
        queue_close(s); /* freed by dispatch_closes */
    else
        stream_free(s); /* never accepted, or on_close already ran */
}

static void dispatch_closes(struct grpc_server *srv)
{
    while (srv->closed_head) {
        struct grpc_stream *s = srv->closed_head;
        srv->closed_head = s->next_closed;
        if (!srv->closed_head)
            srv->closed_tail = NULL;
        if (srv->ops->on_close)
            srv->ops->on_close(srv->ctx, s->state);
        s->state = NULL;
        s->is_user_done = true;
        if (s->is_h2_closed)
            stream_free(s);
        /* else nghttp2 still sends our trailers; on_stream_close frees it */
    }
}

/* ---- connection I/O ---- */

static void conn_flush(struct grpc_conn *conn)
{
    if (conn->is_dead)
        return;
    if (conn->is_tls_handshaking)
        return; /* nothing goes out before the handshake is done */
    struct err e = {{0}};
    conn->srv->h2_depth++;
    int rc = grpc_frame_flush(&conn->io, conn->h2, &conn->wbuf, &e);
    conn->srv->h2_depth--;
    if (rc != 0) {
        LOG_DEBUG("xds", "grpc server: %s: %s", conn->peer, e.msg);
        conn->is_dead = true;
    }
}

/* Advances a TLS handshake; when it is done, our SETTINGS go out. */
static void conn_handshake(struct grpc_conn *conn)
{
    struct err e = {{0}};
    int rc = tls_handshake(conn->io.ssl, &conn->tls_wants_write, &e);
    if (rc < 0) {
        LOG_DEBUG("xds", "grpc server: %s: %s", conn->peer, e.msg);
        conn->is_dead = true;
    } else if (rc == 1) {
        conn->is_tls_handshaking = false;
        conn_flush(conn);
    }
}

static void conn_read(struct grpc_conn *conn)
{
    struct grpc_server *srv = conn->srv;
    if (conn->is_tls_handshaking) {
        conn_handshake(conn);
        if (conn->is_tls_handshaking || conn->is_dead)
            return;
    }
    for (int i = 0; i < READ_ROUNDS && !conn->is_dead; i++) {
        struct err e = {{0}};
        srv->h2_depth++;
        int rc = grpc_frame_read(&conn->io, conn->h2, srv->rbuf, sizeof(srv->rbuf), &e);
        srv->h2_depth--;
        if (rc < 0) {
            LOG_DEBUG("xds", "grpc server: %s: %s", conn->peer, e.msg);
            conn->is_dead = true;
        }
        if (rc <= 0)
            break;
        conn->last_read_ns = clock_mono_ns();
    }
}

/* Closes the socket and session; every stream gets on_close (queued). */
static void conn_close(struct grpc_conn *conn)
{
    struct grpc_server *srv = conn->srv;
    while (conn->streams) {
        struct grpc_stream *s = conn->streams;
        /* nghttp2_session_del calls no callbacks, but never leave it a dangling pointer */
        nghttp2_session_set_stream_user_data(conn->h2, s->id, NULL);
        stream_detach(s);
    }
    nghttp2_session_del(conn->h2);
    if (conn->io.ssl) {
        if (!conn->is_tls_handshaking)
            SSL_shutdown(conn->io.ssl); /* best effort close_notify, no waiting */
        SSL_free(conn->io.ssl);
    }
    close(conn->io.fd);
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        srv->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    srv->n_conns--;
    atomic_store_explicit(&srv->st_conns, srv->n_conns, memory_order_relaxed);
    grpc_frame_wbuf_deinit(&conn->wbuf);
    free(conn);
}

/* Ends a connection politely (GOAWAY, flushed as far as the socket takes it); the next
 * reap closes it. */
static void conn_goaway(struct grpc_conn *conn)
{
    if (!conn->is_dead && nghttp2_session_terminate_session(conn->h2, NGHTTP2_NO_ERROR) == 0)
        conn_flush(conn);
    conn->is_dead = true;
}

static void set_finish(struct grpc_stream *s, enum grpc_status status, const char *message);

/* Streams of conn that opened but sent no whole request within the limit end with
 * DEADLINE_EXCEEDED. Returns how many. */
static unsigned expire_streams(struct grpc_conn *conn, uint64_t now)
{
    unsigned n = 0;
    struct grpc_server *srv = conn->srv;
    uint64_t limit = (uint64_t)srv->lim.first_request_ms * NS_PER_MS;
    for (struct grpc_stream *s = conn->streams; s; s = s->next) {
        if (!s->is_accepted || s->has_message || s->is_finishing || s->is_close_queued ||
            now - s->opened_ns <= limit)
            continue;
        log_limit(atomic_fetch_add(&srv->st_first_request, 1) + 1,
                  "a stream sent no request in time", conn->peer);
        set_finish(s, GRPC_DEADLINE_EXCEEDED, "no request within the first-request timeout");
        n++;
    }
    conn_flush(conn); /* after the walk: sending may unlink streams */
    return n;
}

/* Aborted streams whose client still has not read up to the trailers get RST_STREAM
 * ENHANCE_YOUR_CALM (gRPC clients read it as RESOURCE_EXHAUSTED): a reader that stopped
 * reading holds nothing past the grace. */
static void reset_stalled(struct grpc_conn *conn, uint64_t now)
{
    bool is_pending = false;
    for (struct grpc_stream *s = conn->streams; s; s = s->next) {
        if (!s->reset_at_ns || s->is_h2_closed)
            continue;
        if (now < s->reset_at_ns) {
            is_pending = true;
            continue;
        }
        s->reset_at_ns = 0;
        LOG_DEBUG("xds", "grpc server: %s: stream %d still not reading its trailers; reset",
                  conn->peer, (int)s->id);
        nghttp2_submit_rst_stream(conn->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    conn->has_reset_timer = is_pending;
    conn_flush(conn); /* after the walk: sending may unlink streams */
}

/* The limits in time (issue 10): a connection must send a whole request within
 * first_request_ms of its accept (TLS, preface and all), and each stream within
 * first_request_ms of its opening; a connection without streams for idle_ms goes; a client
 * silent for keepalive_ms is PINGed and closed when it stays silent keepalive_timeout_ms. */
static void check_timers(struct grpc_server *srv, uint64_t now)
{
    const struct grpc_server_limits *l = &srv->lim;
    for (struct grpc_conn *conn = srv->conns; conn; conn = conn->next) {
        if (conn->is_dead)
            continue;
        /* streams first: their client then learns why (trailers before a GOAWAY) */
        unsigned expired = l->first_request_ms && conn->waiting ? expire_streams(conn, now) : 0;
        if (l->first_request_ms && !conn->has_request &&
            now - conn->accepted_ns > (uint64_t)l->first_request_ms * NS_PER_MS) {
            if (!expired)
                log_limit(atomic_fetch_add(&srv->st_first_request, 1) + 1,
                          "a connection sent no request in time; closed", conn->peer);
            conn_goaway(conn);
            continue;
        }
        if (conn->has_reset_timer)
            reset_stalled(conn, now);
        if (conn->streams)
            conn->idle_since_ns = 0;
        else if (!conn->idle_since_ns)
            conn->idle_since_ns = now;
        else if (l->idle_ms && now - conn->idle_since_ns > (uint64_t)l->idle_ms * NS_PER_MS) {
            atomic_fetch_add(&srv->st_idle, 1);
            LOG_DEBUG("xds", "grpc server: %s: idle without a stream; closed", conn->peer);
            conn_goaway(conn);
            continue;
        }
        if (!l->keepalive_ms || conn->is_tls_handshaking)
            continue;
        if (conn->ping_sent_ns && conn->last_read_ns >= conn->ping_sent_ns)
            conn->ping_sent_ns = 0; /* it spoke since: alive */
        if (conn->ping_sent_ns) {
            if (now - conn->ping_sent_ns > (uint64_t)l->keepalive_timeout_ms * NS_PER_MS) {
                log_limit(atomic_fetch_add(&srv->st_keepalive, 1) + 1,
                          "a client did not answer the keepalive PING; closed", conn->peer);
                conn->is_dead = true; /* the link is gone: no GOAWAY to wait for */
            }
        } else if (now - conn->last_read_ns > (uint64_t)l->keepalive_ms * NS_PER_MS) {
            if (nghttp2_submit_ping(conn->h2, NGHTTP2_FLAG_NONE, NULL) == 0) {
                conn->ping_sent_ns = now;
                conn_flush(conn);
            }
        }
    }
}

/* Closes dead and finished connections, then runs pending on_close. */
static void reap(struct grpc_server *srv, uint64_t now)
{
    if (now >= srv->next_timer_ns) {
        srv->next_timer_ns = now + TIMER_NS;
        check_timers(srv, now);
    }
    struct grpc_conn *next;
    for (struct grpc_conn *conn = srv->conns; conn; conn = next) {
        next = conn->next;
        bool is_idle_done =
            !nghttp2_session_want_read(conn->h2) && !grpc_frame_wants_write(conn->h2, &conn->wbuf);
        if (conn->is_dead || is_idle_done)
            conn_close(conn);
    }
    dispatch_closes(srv);
}

/* ---- responses ---- */

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

/* Trailers-only answer (one HEADERS with END_STREAM). */
static void respond_status_only(nghttp2_session *h2, struct grpc_stream *s, const char *http,
                                int grpc_status, const char *message)
{
    char code[12], enc[GRPC_FRAME_TEXT_CAP * 3 + 1];
    snprintf(code, sizeof(code), "%d", grpc_status);
    grpc_frame_pct_encode(message, enc, sizeof(enc));
    const nghttp2_nv nva[] = {
        NV(":status", http),
        NV("content-type", "application/grpc"),
        NV("grpc-status", code),
        NV("grpc-message", enc),
    };
    if (nghttp2_submit_response(h2, s->id, nva, sizeof(nva) / sizeof(nva[0]), NULL) != 0)
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
}

/* Data source of an accepted stream: queued messages, then (once finishing) trailers. */
static ssize_t read_response_data(nghttp2_session *h2, int32_t stream_id, uint8_t *buf,
                                  size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                                  void *user)
{
    struct grpc_stream *s = source->ptr;
    size_t n = grpc_frame_outq_take(&s->out, buf, length);
    if (n > 0)
        return (ssize_t)n;
    if (!s->is_finishing)
        return NGHTTP2_ERR_DEFERRED;
    char code[12];
    snprintf(code, sizeof(code), "%d", (int)s->fin_status);
    nghttp2_nv nva[2] = {NV("grpc-status", code)};
    size_t nvlen = 1;
    if (s->fin_msg && s->fin_msg[0])
        nva[nvlen++] = (nghttp2_nv)NV("grpc-message", s->fin_msg);
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    if (nghttp2_submit_trailer(h2, stream_id, nva, nvlen) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM INTERNAL_ERROR */
    return 0;
}

static void open_stream(struct grpc_conn *conn, struct grpc_stream *s)
{
    struct grpc_server *srv = conn->srv;
    nghttp2_session *h2 = conn->h2;
    if (!s->is_post) {
        const nghttp2_nv nva[] = {NV(":status", "405")};
        nghttp2_submit_response(h2, s->id, nva, 1, NULL);
        return;
    }
    if (!s->is_grpc_ctype) {
        const nghttp2_nv nva[] = {NV(":status", "415")};
        nghttp2_submit_response(h2, s->id, nva, 1, NULL);
        return;
    }
    void *state = s->path ? srv->ops->on_open(srv->ctx, s, s->path) : NULL;
    if (!state) {
        respond_status_only(h2, s, "200", GRPC_UNIMPLEMENTED, "unknown method");
        return;
    }
    s->state = state;
    s->is_accepted = true;
    s->opened_ns = clock_mono_ns();
    conn->waiting++;
    const nghttp2_nv nva[] = {
        NV(":status", "200"),
        NV("content-type", "application/grpc"),
    };
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_response_data};
    if (nghttp2_submit_response(h2, s->id, nva, sizeof(nva) / sizeof(nva[0]), &prd) != 0) {
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return; /* on_stream_close queues on_close */
    }
    s->is_response_sent = true;
}

static void set_finish(struct grpc_stream *s, enum grpc_status status, const char *message)
{
    s->is_finishing = true;
    s->fin_status = status;
    free(s->fin_msg);
    s->fin_msg = NULL;
    if (message && message[0]) {
        char enc[GRPC_FRAME_TEXT_CAP * 3 + 1];
        grpc_frame_pct_encode(message, enc, sizeof(enc));
        s->fin_msg = strdup(enc); /* on OOM the trailers go without a message */
    }
    if (s->is_response_sent && s->conn)
        nghttp2_session_resume_data(s->conn->h2, s->id);
}

/* The client half-closed: per grpc.h the stream is over for the user. */
static void remote_end(struct grpc_stream *s)
{
    if (!s->is_accepted || s->is_close_queued)
        return;
    if (!s->is_finishing && !grpc_frame_reasm_is_partial(&s->in) && s->srv->ops->on_half_close)
        s->srv->ops->on_half_close(s->srv->ctx, s->state, s); /* may choose the status */
    if (!s->is_finishing) {
        if (grpc_frame_reasm_is_partial(&s->in))
            set_finish(s, GRPC_INTERNAL, "request stream ended inside a message");
        else
            set_finish(s, GRPC_OK, NULL);
    }
    queue_close(s);
}

/* ---- nghttp2 callbacks (user_data is the connection) ---- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct grpc_conn *conn = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct grpc_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->srv = conn->srv;
    s->conn = conn;
    s->id = frame->hd.stream_id;
    if (nghttp2_session_set_stream_user_data(h2, s->id, s) != 0) {
        free(s);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    s->next = conn->streams;
    if (conn->streams)
        conn->streams->prev = s;
    conn->streams = s;
    return 0;
}

static bool eq(const uint8_t *a, size_t alen, const char *lit)
{
    return alen == strlen(lit) && memcmp(a, lit, alen) == 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct grpc_stream *s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!s)
        return 0;
    s->hdr_bytes += namelen + valuelen + 32; /* RFC 7541 §4.1 entry size */
    if (s->hdr_bytes > GRPC_FRAME_MAX_HEADER_BYTES)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* client trailers carry nothing we use */
    if (eq(name, namelen, ":method")) {
        s->is_post = eq(value, valuelen, "POST");
    } else if (eq(name, namelen, ":path")) {
        free(s->path);
        s->path = NULL;
        if (valuelen < PATH_CAP) {
            s->path = strndup((const char *)value, valuelen);
            if (!s->path)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
    } else if (eq(name, namelen, "content-type")) {
        /* gRPC: "application/grpc" optionally followed by "+proto", ";..." */
        static const char base[] = "application/grpc";
        size_t bl = sizeof(base) - 1;
        s->is_grpc_ctype = valuelen >= bl && memcmp(value, base, bl) == 0 &&
                           (valuelen == bl || value[bl] == '+' || value[bl] == ';');
    }
    return 0;
}

static int deliver(void *arg, uint8_t *msg, size_t len)
{
    struct grpc_stream *s = arg;
    if (!s->has_message) {
        s->has_message = true;
        if (s->conn) {
            s->conn->has_request = true;
            if (s->conn->waiting)
                s->conn->waiting--;
        }
    }
    if (!s->is_finishing && !s->is_close_queued)
        s->srv->ops->on_message(s->srv->ctx, s->state, s, msg, len);
    free(msg);
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *h2, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user)
{
    struct grpc_conn *conn = user;
    struct grpc_stream *s = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!s || !s->is_accepted || s->is_broken || s->is_close_queued)
        return 0;
    struct grpc_server *srv = conn->srv;
    const struct grpc_server_limits *l = &srv->lim;
    /* issue 10: what this message may still hold, within the connection's and the server's
       budgets (its own buffer counts as room it already has) */
    size_t room = SIZE_MAX;
    if (l->conn_buffer)
        room = conn->in_bytes < l->conn_buffer ? l->conn_buffer - conn->in_bytes : 0;
    if (l->total_buffer) {
        size_t total = srv->in_bytes < l->total_buffer ? l->total_buffer - srv->in_bytes : 0;
        room = total < room ? total : room;
    }
    size_t before = s->in.cap;
    s->in.max_msg = l->max_request;
    s->in.room = room == SIZE_MAX ? 0 : (room + before ? room + before : 1);
    struct err e = {{0}};
    int rc = grpc_frame_reasm_feed(&s->in, data, len, deliver, s, &e);
    if (s->conn) /* deliver may not close it, but be safe */
        account_in(conn, (ptrdiff_t)s->in.cap - (ptrdiff_t)before);
    if (rc != 0) {
        LOG_DEBUG("xds", "grpc server: %s: stream %d: %s", conn->peer, stream_id, e.msg);
        s->is_broken = true;
        account_in(conn, -(ptrdiff_t)s->in.cap);
        grpc_frame_reasm_deinit(&s->in);
        if (rc == -EMSGSIZE || rc == -ENOBUFS) {
            /* gRPC's answer to a message over the limit: RESOURCE_EXHAUSTED */
            if (rc == -ENOBUFS)
                log_limit(atomic_fetch_add(&srv->st_buffer, 1) + 1,
                          "request bytes over the buffer limit; stream ended", conn->peer);
            set_finish(s, GRPC_RESOURCE_EXHAUSTED, e.msg);
        } else {
            nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_INTERNAL_ERROR);
        }
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct grpc_conn *conn = user;
    if (frame->hd.type == NGHTTP2_SETTINGS) {
        conn->has_settings = true;
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    struct grpc_stream *s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!s)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        open_stream(conn, s);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        remote_end(s);
    return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    /* After our final HEADERS, reset a stream the client still sends on, as gRPC servers do,
     * so it does not linger half-open. */
    if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(h2, frame->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *user)
{
    struct grpc_stream *s = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (s)
        stream_detach(s);
    return 0;
}

/* ---- listener ---- */

static int listen_socket(uint16_t port, uint16_t *bound, struct err *e)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool is_v6 = fd != -1;
    if (fd == -1 && errno == EAFNOSUPPORT) /* IPv6 disabled: serve IPv4 only */
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        int rc = -errno;
        err_set(e, "grpc server: socket: %s", strerror(errno));
        return rc;
    }
    int zero = 0, one = 1;
    const char *step = "setsockopt";
    if (is_v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) == -1)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
        goto fail;
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (is_v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_any;
        a->sin6_port = htons(port);
        sl = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        a->sin_port = htons(port);
        sl = sizeof(*a);
    }
    step = "bind";
    if (bind(fd, (struct sockaddr *)&ss, sl) == -1)
        goto fail;
    step = "listen";
    if (listen(fd, LISTEN_BACKLOG) == -1)
        goto fail;
    step = "getsockname";
    sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1)
        goto fail;
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
fail:;
    int rc = -errno;
    err_set(e, "grpc server: %s port %u: %s", step, port, strerror(errno));
    close(fd);
    return rc;
}

/* The per-peer key: the IP address, IPv4 as v4-mapped IPv6 (a dual-stack listener sees
 * both forms). */
static void peer_key(const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else if (sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    }
}

static unsigned conns_from(const struct grpc_server *srv, const uint8_t key[16])
{
    unsigned n = 0;
    for (const struct grpc_conn *c = srv->conns; c; c = c->next)
        n += !c->is_dead && memcmp(c->peer_ip, key, 16) == 0;
    return n;
}

static void conn_new(struct grpc_server *srv, int fd, const struct sockaddr *sa, socklen_t sl)
{
    struct grpc_conn *conn = calloc(1, sizeof(*conn));
    if (!conn) {
        close(fd);
        return;
    }
    conn->srv = srv;
    conn->io.fd = fd;
    conn->accepted_ns = conn->last_read_ns = clock_mono_ns();
    peer_key(sa, conn->peer_ip);
    char host[INET6_ADDRSTRLEN + 8], serv[6];
    if (getnameinfo(sa, sl, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(conn->peer, sizeof(conn->peer), "[%s]:%s", host, serv);
    else
        snprintf(conn->peer, sizeof(conn->peer), "?");
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1)
        LOG_DEBUG("xds", "grpc server: %s: TCP_NODELAY: %s", conn->peer, strerror(errno));
    if (nghttp2_session_server_new2(&conn->h2, srv->cbs, conn, srv->opt) != 0) {
        close(fd);
        free(conn);
        return;
    }
    if (grpc_frame_session_start(conn->h2, true, MAX_STREAMS) != 0) {
        nghttp2_session_del(conn->h2);
        close(fd);
        free(conn);
        return;
    }
    if (srv->tls) {
        conn->io.ssl = tls_server_new(srv->tls, fd);
        if (!conn->io.ssl) {
            nghttp2_session_del(conn->h2);
            close(fd);
            free(conn);
            return;
        }
        conn->is_tls_handshaking = true; /* the handshake deadline is the preface's */
    }
    conn->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = conn;
    srv->conns = conn;
    srv->n_conns++;
    atomic_store_explicit(&srv->st_conns, srv->n_conns, memory_order_relaxed);
    conn_flush(conn); /* our SETTINGS, without waiting for the client (after TLS) */
}

/* Accepts what is pending. 0, or a negative errno when the listener itself is broken. */
static int accept_some(struct grpc_server *srv)
{
    for (int i = 0; i < ACCEPT_BURST; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(srv->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            switch (errno) {
            case EINTR:
            case ECONNABORTED:
            case EPROTO: /* accept(2): pending network errors; try the next one */
            case ENETDOWN:
            case ENOPROTOOPT:
            case EHOSTDOWN:
            case ENONET:
            case EHOSTUNREACH:
            case EOPNOTSUPP:
            case ENETUNREACH:
                continue;
            case EAGAIN:
#if EWOULDBLOCK != EAGAIN
            case EWOULDBLOCK:
#endif
                return 0;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                /* the listener stays readable: back off instead of spinning */
                LOG_WARN("xds", "grpc server: accept: %s; pausing accepts", strerror(errno));
                srv->accept_paused_until_ns = clock_mono_ns() + ACCEPT_PAUSE_NS;
                return 0;
            default: {
                int rc = -errno;
                LOG_ERROR("xds", "grpc server: accept: %s", strerror(errno));
                return rc;
            }
            }
        }
        if (srv->n_conns >= srv->lim.max_conns) {
            log_limit(atomic_fetch_add(&srv->st_max_conns, 1) + 1,
                      "connection limit reached; new connections are closed", "any peer");
            close(fd);
            continue;
        }
        if (srv->lim.max_conns_per_peer) {
            uint8_t key[16];
            peer_key((struct sockaddr *)&ss, key);
            if (conns_from(srv, key) >= srv->lim.max_conns_per_peer) {
                char host[INET6_ADDRSTRLEN + 8] = "?";
                getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), NULL, 0,
                            NI_NUMERICHOST);
                log_limit(atomic_fetch_add(&srv->st_per_peer, 1) + 1,
                          "per-peer connection limit reached; connection closed", host);
                close(fd);
                continue;
            }
        }
        conn_new(srv, fd, (struct sockaddr *)&ss, sl);
    }
    return 0;
}

/* ---- public API ---- */

struct grpc_server *grpc_server_create(uint16_t port, const struct grpc_server_ops *ops, void *ctx,
                                       struct err *e)
{
    if (!ops || !ops->on_open || !ops->on_message) {
        err_set(e, "grpc server: on_open and on_message are required");
        return NULL;
    }
    struct grpc_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        err_set(e, "grpc server: out of memory");
        return NULL;
    }
    srv->lfd = -1;
    srv->ops = ops;
    srv->ctx = ctx;
    grpc_server_limits_default(&srv->lim);
    srv->pfds = calloc(srv->lim.max_conns + 2, sizeof(*srv->pfds));
    srv->pconns = calloc(srv->lim.max_conns, sizeof(*srv->pconns));
    if (!srv->pfds || !srv->pconns)
        goto oom;
    if (nghttp2_session_callbacks_new(&srv->cbs) != 0)
        goto oom;
    nghttp2_session_callbacks_set_on_begin_headers_callback(srv->cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(srv->cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(srv->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(srv->cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(srv->cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(srv->cbs, on_stream_close);
    srv->opt = grpc_frame_options();
    if (!srv->opt)
        goto oom;
    int fd = listen_socket(port, &srv->port, e);
    if (fd < 0)
        goto fail;
    srv->lfd = fd;
    return srv;
oom:
    err_set(e, "grpc server: out of memory");
fail:
    grpc_server_destroy(srv);
    return NULL;
}

void grpc_server_set_tls(struct grpc_server *s, SSL_CTX *tls)
{
    s->tls = tls;
}

void grpc_server_limits_default(struct grpc_server_limits *l)
{
    *l = (struct grpc_server_limits){
        .max_request = 4u << 20,
        .conn_buffer = 8u << 20,
        .total_buffer = 64u << 20,
        .max_queued = 8,
        .max_conns = 1024,
        .max_conns_per_peer = 64,
        .first_request_ms = 10000,
        .idle_ms = 60000,
        .keepalive_ms = 30000,
        .keepalive_timeout_ms = 10000,
    };
}

void grpc_server_set_limits(struct grpc_server *s, const struct grpc_server_limits *l)
{
    struct grpc_server_limits want = *l;
    if (!want.max_conns)
        want.max_conns = 1;
    if (!want.max_request || want.max_request > GRPC_MAX_MSG)
        want.max_request = GRPC_MAX_MSG;
    if (want.max_conns != s->lim.max_conns) {
        struct pollfd *pfds = calloc(want.max_conns + 2, sizeof(*pfds));
        struct grpc_conn **pconns = calloc(want.max_conns, sizeof(*pconns));
        if (!pfds || !pconns || s->n_conns > want.max_conns) {
            free(pfds);
            free(pconns);
            LOG_ERROR("xds", "grpc server: cannot apply a limit of %u connections; keeping %u",
                      want.max_conns, s->lim.max_conns);
            want.max_conns = s->lim.max_conns;
        } else {
            free(s->pfds);
            free(s->pconns);
            s->pfds = pfds;
            s->pconns = pconns;
        }
    }
    s->lim = want;
}

void grpc_server_get_stats(const struct grpc_server *s, struct grpc_server_stats *out)
{
    out->refused_max_conns = atomic_load_explicit(&s->st_max_conns, memory_order_relaxed);
    out->refused_per_peer = atomic_load_explicit(&s->st_per_peer, memory_order_relaxed);
    out->first_request_timeouts =
        atomic_load_explicit(&s->st_first_request, memory_order_relaxed);
    out->idle_timeouts = atomic_load_explicit(&s->st_idle, memory_order_relaxed);
    out->keepalive_timeouts = atomic_load_explicit(&s->st_keepalive, memory_order_relaxed);
    out->buffer_exhausted = atomic_load_explicit(&s->st_buffer, memory_order_relaxed);
    out->conns = atomic_load_explicit(&s->st_conns, memory_order_relaxed);
    out->buffered = atomic_load_explicit(&s->st_buffered, memory_order_relaxed);
}

uint16_t grpc_server_port(const struct grpc_server *s)
{
    return s->port;
}

int grpc_server_poll(struct grpc_server *srv, int timeout_ms, int extra_fd)
{
    uint64_t now = clock_mono_ns();
    reap(srv, now);

    nfds_t n = 0;
    bool is_accepting = now >= srv->accept_paused_until_ns;
    srv->pfds[n++] = (struct pollfd){.fd = srv->lfd, .events = is_accepting ? POLLIN : 0};
    nfds_t extra_idx = 0;
    if (extra_fd >= 0) {
        extra_idx = n;
        srv->pfds[n++] = (struct pollfd){.fd = extra_fd, .events = POLLIN};
    }
    nfds_t first_conn = n;
    for (struct grpc_conn *conn = srv->conns; conn; conn = conn->next) {
        short ev = POLLIN;
        if (conn->is_tls_handshaking ? conn->tls_wants_write
                                     : grpc_frame_wants_write(conn->h2, &conn->wbuf))
            ev |= POLLOUT;
        if (grpc_io_has_pending(&conn->io))
            timeout_ms = 0; /* decrypted bytes are waiting */
        srv->pconns[n - first_conn] = conn;
        srv->pfds[n++] = (struct pollfd){.fd = conn->io.fd, .events = ev};
    }
    /* Wake up in time to resume accepting and to enforce the timeouts. */
    if (!is_accepting && (timeout_ms < 0 || timeout_ms > 100))
        timeout_ms = 100;
    if (srv->conns && (timeout_ms < 0 || timeout_ms > (int)(TIMER_NS / NS_PER_MS)))
        timeout_ms = (int)(TIMER_NS / NS_PER_MS);

    int r = poll(srv->pfds, n, timeout_ms);
    if (r == -1) {
        if (errno == EINTR)
            return 0;
        int rc = -errno;
        LOG_ERROR("xds", "grpc server: poll: %s", strerror(errno));
        return rc;
    }
    int result = 0;
    if (extra_fd >= 0 && (srv->pfds[extra_idx].revents & (POLLIN | POLLERR | POLLHUP)))
        result = 1;
    if (srv->pfds[0].revents & (POLLERR | POLLNVAL)) {
        LOG_ERROR("xds", "grpc server: listener failed");
        result = srv->pfds[0].revents & POLLNVAL ? -EBADF : -EIO;
    }
    for (nfds_t i = first_conn; i < n; i++) {
        struct grpc_conn *conn = srv->pconns[i - first_conn];
        short rev = srv->pfds[i].revents;
        if (rev & POLLNVAL)
            conn->is_dead = true;
        else if ((rev & (POLLIN | POLLHUP | POLLERR)) || grpc_io_has_pending(&conn->io) ||
                 (conn->is_tls_handshaking && (rev & POLLOUT)))
            conn_read(conn);
    }
    if (result >= 0 && (srv->pfds[0].revents & POLLIN)) {
        int rc = accept_some(srv);
        if (rc < 0)
            result = rc;
    }
    /* on_close may send on other streams; flush after it so those go out in this round. */
    dispatch_closes(srv);
    for (struct grpc_conn *conn = srv->conns; conn; conn = conn->next)
        if (grpc_frame_wants_write(conn->h2, &conn->wbuf))
            conn_flush(conn);
    reap(srv, clock_mono_ns());
    return result;
}

int grpc_stream_send(struct grpc_stream *s, const uint8_t *msg, size_t len)
{
    if (len > GRPC_MAX_MSG)
        return -EMSGSIZE;
    struct grpc_shared *b = grpc_shared_new(msg, len);
    if (!b)
        return -ENOMEM;
    int rc = grpc_stream_send_shared(s, b, NULL, 0);
    grpc_shared_unref(b);
    return rc;
}

int grpc_stream_send_shared(struct grpc_stream *s, struct grpc_shared *body, const uint8_t *tail,
                            size_t tail_len)
{
    if (!s->conn || s->conn->is_dead || s->is_h2_closed || s->is_finishing || s->is_close_queued)
        return -EPIPE;
    if (s->srv->lim.max_queued && grpc_frame_outq_count(&s->out) >= s->srv->lim.max_queued)
        return -ENOBUFS;
    int rc = grpc_frame_outq_push_shared(&s->out, body, tail, tail_len);
    if (rc != 0)
        return rc;
    if (s->is_response_sent)
        nghttp2_session_resume_data(s->conn->h2, s->id); /* no-op unless deferred */
    if (s->srv->h2_depth == 0)
        conn_flush(s->conn);
    return 0;
}

void grpc_stream_abort(struct grpc_stream *s, enum grpc_status status, const char *message)
{
    grpc_frame_outq_drop_unsent(&s->out);
    struct grpc_conn *conn = s->conn;
    if (!conn || conn->is_dead || s->is_h2_closed || !s->is_response_sent ||
        grpc_frame_outq_count(&s->out) == 0 ||
        (nghttp2_session_get_stream_remote_window_size(conn->h2, s->id) > 0 &&
         nghttp2_session_get_remote_window_size(conn->h2) > 0)) {
        grpc_stream_finish(s, status, message);
        return;
    }
    /* A partly sent message the client's window does not let us finish (a reader that
     * stopped reading): the trailers wait behind it. A client that resumes reading within
     * ABORT_GRACE_NS gets them; otherwise check_timers resets the stream. */
    s->reset_at_ns = clock_mono_ns() + ABORT_GRACE_NS;
    conn->has_reset_timer = true;
    grpc_stream_finish(s, status, message);
}

void grpc_stream_finish(struct grpc_stream *s, enum grpc_status status, const char *message)
{
    if (!s->conn || s->conn->is_dead || s->is_h2_closed || s->is_finishing)
        return;
    set_finish(s, status, message);
    if (s->srv->h2_depth == 0)
        conn_flush(s->conn);
}

void grpc_server_destroy(struct grpc_server *srv)
{
    if (!srv)
        return;
    while (srv->conns) {
        struct grpc_conn *conn = srv->conns;
        /* best effort: tell the client, without waiting for it */
        if (!conn->is_dead && nghttp2_session_terminate_session(conn->h2, NGHTTP2_NO_ERROR) == 0)
            conn_flush(conn);
        conn_close(conn);
    }
    dispatch_closes(srv);
    if (srv->lfd >= 0)
        close(srv->lfd);
    nghttp2_session_callbacks_del(srv->cbs);
    nghttp2_option_del(srv->opt);
    free(srv->pfds);
    free(srv->pconns);
    free(srv);
}
