/* The worker (see worker.h): sessions, the filter chain steps both backends share, and the
 * epoll backend's loop (the io_uring one is worker_uring.c). Per packet: no malloc, no lock,
 * and only batched system calls. Each session has its own connected upstream socket, so
 * replies are demultiplexed by the kernel and for one endpoint no two sessions share a
 * source port (spec proxy.md §5.3). */
#include "proxy/worker_impl.h"

#include "base/arena.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "config/config.h"
#include "filters/chain.h"
#include "net/addr.h"
#include "net/sock.h"
#include "net/uring.h"
#include "proxy/coalesce.h"
#include "proxy/geo.h"
#include "proxy/ip_limit.h"
#include "proxy/session.h"
#include "proxy/snapshot.h"
#include "qcmp/codec.h"
#include "qcmp/ratelimit.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define EPOLL_EVENTS 64
#define GAME_TOKEN UINT64_MAX       /* epoll data of the game socket */
#define QCMP_TOKEN (UINT64_MAX - 1) /* and of the QCMP socket; upstream sockets: their fd */

static const char *const reason_text[DROP_REASON_COUNT] = {
    [DROP_NO_ENDPOINTS] = "No upstream endpoints available",
    [DROP_FILTER_READ] = "filter  error",
    [DROP_FILTER_WRITE] = "proxy::Session::process_recv_packet: filter  error",
    [DROP_SESSION_LIMIT] = "session limit reached",
    [DROP_UPSTREAM_SOCKET] = "OS level error: cannot create upstream socket",
    [DROP_NO_LOCAL_PORT] = "OS level error: no free ephemeral port for an upstream socket",
    [DROP_IP_SESSION_LIMIT] = "per-IP session limit reached",
    [DROP_ENDPOINTS_DRAINING] = "endpoints take no new sessions (health status)",
    [DROP_UNRESOLVED] = "OS level error: endpoint address did not resolve",
    [DROP_SEND_UPSTREAM] = "OS level error: send to endpoint failed",
    [DROP_SEND_DOWNSTREAM] =
        "proxy::Session::process_recv_packet: failed to send packet downstream",
    [DROP_DRAINING] = "shutting down",
};

const double worker_proc_bounds_s[PROC_BUCKETS] = {
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024};
const double worker_session_dur_bounds_s[SESSION_DUR_BUCKETS] = {1,   5,   10,   25,  60,
                                                                 300, 900, 1800, 3600};

const char *drop_reason_text(enum drop_reason r)
{
    return r < DROP_REASON_COUNT ? reason_text[r] : "unknown";
}

/* The numbers in the texts are Linux's on x86-64 and arm64 (the platforms we build for). */
_Static_assert(ECONNREFUSED == 111 && EHOSTUNREACH == 113 && ENETUNREACH == 101,
               "errno numbers in upstream_texts");
static const char *const upstream_texts[UPSTREAM_ERR_COUNT] = {
    [UPSTREAM_ERR_REFUSED] = "Connection refused (os error 111)",
    [UPSTREAM_ERR_HOST] = "No route to host (os error 113)",
    [UPSTREAM_ERR_NET] = "Network is unreachable (os error 101)",
    [UPSTREAM_ERR_OTHER] = "other receive error",
};

const char *sock_kind_text(enum sock_kind k)
{
    static const char *const names[SOCK_KIND_COUNT] = {"game", "qcmp", "upstream"};
    return k < SOCK_KIND_COUNT ? names[k] : "other";
}

const char *upstream_error_text(enum upstream_error e)
{
    return e < UPSTREAM_ERR_COUNT ? upstream_texts[e] : upstream_texts[UPSTREAM_ERR_OTHER];
}

enum direction drop_reason_direction(enum drop_reason r)
{
    return r == DROP_FILTER_WRITE || r == DROP_SEND_DOWNSTREAM || r == DROP_DRAINING ? DIR_WRITE
                                                                                      : DIR_READ;
}


/* Adds what the kernel dropped on a socket since *last (SO_RXQ_OVFL is cumulative, 32 bits,
 * wrapping) to the counter of its kind. m: the newest message of a receive batch. */
void worker_count_kernel_drops(struct worker *w, const struct mmsghdr *m, uint32_t *last,
                               enum sock_kind kind)
{
    uint32_t now;
    if (!sock_rxq_ovfl(&m->msg_hdr, &now) || now == *last)
        return;
    stat_add(&w->stats.kernel_drops[kind], (uint32_t)(now - *last));
    *last = now;
}


/* RUST_LOG=debug: one line per second per reason and worker, with the client and how many
 * similar drops it stands for. Never called when debug is off (one branch per drop). */
static void log_drop(struct worker *w, enum drop_reason r, const struct addr *client,
                     const char *detail)
{
    uint64_t suppressed;
    if (!log_ratelimit_ok(&w->rl_drop[r], w->now_ns, &suppressed))
        return;
    char peer[ADDR_STR_CAP];
    LOG_DEBUG_F("proxy",
                LOG_FIELDS(LF_U64("worker", w->index),
                           LF_STR("event", drop_reason_direction(r) == DIR_WRITE ? "write"
                                                                                  : "read"),
                           LF_STR("reason", reason_text[r]), LF_STR("detail", detail),
                           LF_STR("client", client ? addr_format(client, peer) : NULL),
                           LF_U64("suppressed", suppressed)),
                "packet dropped");
}

/* Counts a dropped packet; client (may be NULL) and detail (a filter's reason or an errno
 * text, may be NULL) only feed the debug log. */
static void drop_ex(struct worker *w, enum drop_reason r, const struct addr *client,
                    const char *detail)
{
    /* a client with an ASN label set is counted under its labels (filter drops by their
       own reason, in drop_filter; their total here only feeds the shutdown log) */
    uint16_t geo = client && w->geo_src && r != DROP_FILTER_READ && r != DROP_FILTER_WRITE
                       ? geo_client(w->geo, client)
                       : 0;
    if (!geo || !geo_count_drop(w->geo, reason_text[r], GEO_DROP_PLAIN,
                                (int)drop_reason_direction(r), geo))
        stat_add(&w->stats.drops[r], 1);
    if (log_enabled(LOG_LEVEL_DEBUG))
        log_drop(w, r, client, detail);
}


/* Counts a filter's drop under its reason text: a short linear search (a chain has a
 * handful of distinct reasons, and only dropped packets pay for it). */
static void drop_filter(struct worker *w, enum direction dir, const char *reason,
                        const struct addr *client)
{
    struct reason_count *rc = w->stats.filter_reasons[dir];
    if (!reason)
        reason = "filter dropped the packet";
    uint16_t geo = w->geo_src ? geo_client(w->geo, client) : 0;
    for (unsigned i = 0; i < REASON_SLOTS; i++) {
        bool is_new = !atomic_load_explicit(&rc[i].used, memory_order_relaxed);
        if (is_new) {
            snprintf(rc[i].text, sizeof(rc[i].text), "%s", reason);
            atomic_store_explicit(&rc[i].used, true, memory_order_release);
        } else if (strncmp(rc[i].text, reason, sizeof(rc[i].text) - 1) != 0) {
            continue;
        }
        if (!geo || !geo_count_drop(w->geo, rc[i].text,
                                    dir == DIR_READ ? GEO_DROP_FILTER_READ
                                                    : GEO_DROP_FILTER_WRITE,
                                    (int)dir, geo))
            stat_add(&rc[i].n, 1);
        return;
    }
    stat_add(&w->stats.filter_drops_unlisted[dir], 1);
}

/* Observes `count` packets that took `each_ns` each. */
static void observe_proc(struct worker *w, enum direction dir, uint64_t each_ns, unsigned count)
{
    double secs = (double)each_ns / 1e9;
    unsigned b = 0;
    while (b < PROC_BUCKETS && secs > worker_proc_bounds_s[b])
        b++;
    stat_add(&w->stats.proc_counts[dir][b], count);
    stat_add(&w->stats.proc_sum_ns[dir], each_ns * count);
}

/* The mmsghdr arrays are built once: per call only the fields the kernel writes back
 * (name and control lengths) are reset, and only for the messages the last call used. */
static void init_msg_headers(struct worker *w)
{
    for (unsigned i = 0; i < RX_BATCH; i++) {
        w->rx_iov[i] = (struct iovec){w->rx_mem + (size_t)i * BUF_CAP + HEADROOM, MAX_DGRAM};
        w->rx_msgs[i].msg_hdr = (struct msghdr){
            .msg_name = &w->rx_from[i], .msg_namelen = sizeof(w->rx_from[i]),
            .msg_iov = &w->rx_iov[i], .msg_iovlen = 1,
            .msg_control = w->rx_cmsg[i], .msg_controllen = SOCK_RXQ_CMSG_SPACE};
        w->rep_rx_iov[i] = (struct iovec){w->reply_mem + (size_t)i * BUF_CAP + HEADROOM,
                                          MAX_DGRAM};
        w->rep_rx[i].msg_hdr = (struct msghdr){
            .msg_iov = &w->rep_rx_iov[i], .msg_iovlen = 1,
            .msg_control = w->rep_cmsg[i], .msg_controllen = SOCK_RXQ_CMSG_SPACE};
        w->rep_tx[i].msg_hdr = (struct msghdr){
            .msg_name = &w->rep_to[i], .msg_namelen = sizeof(w->rep_to[i]),
            .msg_iov = &w->rep_tx_iov[i], .msg_iovlen = 1};
        w->qcmp_iov[i] = (struct iovec){w->qcmp_buf[i], QCMP_BUF};
        w->qcmp_rx[i].msg_hdr = (struct msghdr){
            .msg_name = &w->qcmp_from[i], .msg_namelen = sizeof(w->qcmp_from[i]),
            .msg_iov = &w->qcmp_iov[i], .msg_iovlen = 1,
            .msg_control = w->qcmp_cmsg[i], .msg_controllen = SOCK_RXQ_CMSG_SPACE};
    }
    for (unsigned i = 0; i < TX_CAP; i++)
        w->tx_msgs[i].msg_hdr = (struct msghdr){.msg_iovlen = 1};
}

struct worker *worker_create(const struct worker_opts *o, struct err *e)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w) {
        close(o->game_fd);
        if (o->qcmp_fd >= 0)
            close(o->qcmp_fd);
        err_set(e, "out of memory creating worker %u", o->index);
        return NULL;
    }
    w->index = o->index;
    w->game_fd = o->game_fd;
    w->qcmp_fd = o->qcmp_fd;
    w->epfd = -1;
    w->control = o->control;
    w->timeout_ns = o->session_timeout_ns;
    w->ip_limit = o->ip_limit;
    w->geo_src = o->geo;
    coalesce_init(&w->co, o->coalesce_ns, clock_mono_ns());
    w->geo = calloc(1, sizeof(*w->geo));
    uint64_t now = clock_mono_ns();
    w->qcmp_rl = qcmp_ratelimit_create(o->qcmp_source_rate, o->qcmp_global_rate,
                                       now ^ ((uint64_t)o->index << 48));
    w->sessions = session_table_create(o->max_sessions, o->session_timeout_ns,
                                       o->unconfirmed_timeout_ns, now,
                                       now ^ ((uint64_t)o->index << 32) ^ (uintptr_t)w);
    w->rx_mem = malloc((size_t)RX_BATCH * BUF_CAP);
    w->reply_mem = malloc((size_t)RX_BATCH * BUF_CAP);
    w->spare = malloc(BUF_CAP);
    /* every upstream fd is below the open-files limit (the proxy raised it before) */
    struct rlimit rl;
    w->fd_map_len = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
                            rl.rlim_cur < (1u << 24)
                        ? (uint32_t)rl.rlim_cur
                        : 1u << 24;
    w->fd_map = calloc(w->fd_map_len, sizeof(*w->fd_map)); /* zero pages until touched */
    w->pool_cap = o->max_sessions / 4 < POOL_MAX ? o->max_sessions / 4 : POOL_MAX;
    w->pool = malloc(((size_t)w->pool_cap + 1) * sizeof(*w->pool));
    if (!w->fd_map || !w->pool) {
        err_set(e, "out of memory creating worker %u", o->index);
        goto fail;
    }
    if (!w->sessions || !w->qcmp_rl || !w->geo || !w->rx_mem || !w->reply_mem || !w->spare ||
        arena_init(&w->scratch, ARENA_BYTES)) {
        err_set(e, "out of memory creating worker %u", o->index);
        goto fail;
    }
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd == -1) {
        err_set(e, "epoll_create1: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = GAME_TOKEN};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->game_fd, &ev) == -1) {
        err_set(e, "epoll_ctl: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event qev = {.events = EPOLLIN, .data.u64 = QCMP_TOKEN};
    if (w->qcmp_fd >= 0 && epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->qcmp_fd, &qev) == -1) {
        err_set(e, "epoll_ctl: %s", strerror(errno));
        goto fail;
    }
    init_msg_headers(w);
    if (o->io != IO_BACKEND_EPOLL && !worker_uring_setup(w, o->io == IO_BACKEND_URING, e))
        goto fail;
    return w;
fail:
    worker_destroy(w);
    return NULL;
}

/* ---- client -> server ---------------------------------------------------------------- */

/* The peer of a failed send, for the debug log: the connected session's client when given,
 * else the message's own destination. */
static const struct addr *send_peer(const struct mmsghdr *m, const struct addr *client,
                                    struct addr *tmp)
{
    if (client)
        return client;
    if (m->msg_hdr.msg_name &&
        addr_from_sockaddr(tmp, (const struct sockaddr *)m->msg_hdr.msg_name,
                           m->msg_hdr.msg_namelen))
        return tmp;
    return NULL;
}

/* Sends msgs[0..n) with as few sendmmsg calls as the kernel allows. What cannot be sent is
 * dropped as on_fail, or, when errs is given, reported there instead (errs[k] = errno of
 * message k, 0 when sent) for the caller to count. client: the session's client for a
 * connected socket, else NULL (debug log only). */
static void send_all(struct worker *w, int fd, struct mmsghdr *msgs, unsigned n,
                     enum drop_reason on_fail, const struct addr *client, int *errs)
{
    unsigned off = 0;
    struct addr tmp;
    if (errs)
        memset(errs, 0, n * sizeof(*errs));
    while (off < n) {
        int r = sendmmsg(fd, msgs + off, n - off, 0);
        if (r > 0) {
            off += (unsigned)r;
            continue;
        }
        if (r == -1 && errno == EINTR)
            continue;
        int err = r == -1 ? errno : EIO;
        /* EAGAIN: never block a worker, the kernel queue is full: drop the rest. Otherwise
         * (e.g. ECONNREFUSED reported for an earlier datagram's ICMP) only this one. */
        unsigned end = err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS ? n : off + 1;
        for (; off < end; off++) {
            if (errs)
                errs[off] = err;
            else
                drop_ex(w, on_fail, send_peer(&msgs[off], client, &tmp), strerror(err));
        }
    }
}

/* Sends tx_msgs[0..n) (grouped by session, tx_of[k] naming each one's tx entry) with one
 * io_uring submission for all their sockets, results into tx_err. false: the ring cannot
 * send (logged once); nothing went, and the caller sends with sendmmsg. */
static bool send_uring(struct worker *w, unsigned n)
{
    for (unsigned k = 0; k < n; k++) {
        w->tx_fd[k] = session_at(w->sessions, w->tx[w->tx_of[k]].session)->fd;
        w->tx_hdr[k] = &w->tx_msgs[k].msg_hdr;
    }
    int rc = uring_send(w->ring, w->tx_fd, w->tx_hdr, w->tx_res, n);
    if (rc < 0) {
        w->send_plain = true;
        LOG_WARN("proxy", "worker %u: io_uring refused a batch of sends (%s): sending with "
                 "sendmmsg from now on", w->index, strerror(-rc));
        return false;
    }
    for (unsigned k = 0; k < n; k++)
        w->tx_err[k] = w->tx_res[k] < 0 ? -w->tx_res[k] : 0;
    return true;
}

static void flush_upstream(struct worker *w)
{
    /* tx_msgs[0..n): the staged sends, each session's in a run */
    unsigned n = 0;
    for (uint32_t i = 0; i < w->n_tx; i++) {
        if (!w->tx[i].is_head)
            continue;
        for (uint32_t j = i; j != SESSION_NIL; j = w->tx[j].next) {
            w->tx_of[n] = j;
            w->tx_msgs[n++].msg_hdr.msg_iov = &w->tx[j].iov; /* the rest is fixed */
        }
    }
    if (!w->ring || w->send_plain || !send_uring(w, n)) {
        for (unsigned a = 0, b; a < n; a = b) { /* one sendmmsg per session */
            uint32_t sess = w->tx[w->tx_of[a]].session;
            for (b = a + 1; b < n && w->tx[w->tx_of[b]].session == sess; b++)
                ;
            struct session *s = session_at(w->sessions, sess);
            send_all(w, s->fd, w->tx_msgs + a, b - a, DROP_SEND_UPSTREAM, &s->client,
                     w->tx_err + a);
        }
    }
    for (unsigned k = 0; k < n; k++) {
        const struct tx_entry *t = &w->tx[w->tx_of[k]];
        struct rx_result *res = &w->rx_res[t->pkt];
        if (!w->tx_err[k]) {
            res->bytes_ok += t->iov.iov_len;
        } else if (!res->failed) {
            res->failed = true; /* spec proxy.md §3 step 5: the datagram is dropped */
            drop_ex(w, DROP_SEND_UPSTREAM, &session_at(w->sessions, t->session)->client,
                    strerror(w->tx_err[k]));
        }
    }
    w->n_tx = 0;
    w->tx_batch++;
}

static void stage_upstream(struct worker *w, struct session *s, unsigned pkt, uint8_t *data,
                           uint32_t len)
{
    if (w->n_tx == TX_CAP)
        flush_upstream(w);
    uint32_t i = w->n_tx++;
    struct tx_entry *t = &w->tx[i];
    t->session = session_index(w->sessions, s);
    coalesce_note(&w->co, t->session);
    t->pkt = (uint16_t)pkt;
    t->next = SESSION_NIL;
    t->iov.iov_base = data;
    t->iov.iov_len = len;
    if (s->tx_batch == w->tx_batch && s->tx_tail != SESSION_NIL) {
        w->tx[s->tx_tail].next = i;
        t->is_head = false;
    } else {
        t->is_head = true;
    }
    s->tx_batch = w->tx_batch;
    s->tx_tail = i;
}

/* RUST_LOG=debug: session creation and expiry, one line each (not rate-limited: a session
 * is an event, not a packet). Only called when debug is on. */
static void log_session(const struct worker *w, const struct session *s, const char *what)
{
    char client[ADDR_STR_CAP], endpoint[ADDR_STR_CAP];
    LOG_DEBUG_F("proxy",
                LOG_FIELDS(LF_U64("worker", w->index),
                           LF_STR("client", addr_format(&s->client, client)),
                           LF_STR("endpoint", addr_format(&s->endpoint, endpoint)),
                           LF_U64("age_secs", (w->now_ns - s->created_ns) / NS_PER_SEC),
                           LF_U64("idle_secs", (w->now_ns - s->last_seen_ns) / NS_PER_SEC),
                           LF_U64("sessions", session_count(w->sessions))),
                "%s", what);
}

/* Logged once per episode (until a session socket opens again): which limit was hit and how
 * to raise it. Reads /proc once, off the packet path's normal flow. */
static void log_ports_exhausted(const struct worker *w)
{
    unsigned lo = 0, hi = 0;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%u %u", &lo, &hi) != 2)
            lo = hi = 0;
        fclose(f);
    }
    LOG_WARN("proxy",
             "worker %u: no free ephemeral port for a new upstream socket (%u sessions here): "
             "every session holds one local port, and net.ipv4.ip_local_port_range = %u %u "
             "(%u ports for the whole host) is used up; new sessions are refused and counted "
             "until some expire. Raise the range (sysctl -w "
             "net.ipv4.ip_local_port_range=\"1024 65535\"), shorten --session-timeout-secs, "
             "or spread players over more proxy hosts",
             w->index, session_count(w->sessions), lo, hi, hi >= lo && hi ? hi - lo + 1 : 0);
}

/* An upstream socket connected to ep: next to sibling's port when given (a session of the
 * same client to another endpoint: fan-out then takes one local port per client, not one
 * per endpoint), else a pooled socket, else a new one. *is_new: it is not in the epoll set
 * yet. *shared: the sibling's port when the socket was bound to it, else 0. Returns the
 * fd or a negative errno as sock_udp_connected. */
static int upstream_socket(struct worker *w, const struct addr *ep, struct session *sibling,
                           bool *is_new, uint16_t *shared)
{
    *is_new = true;
    *shared = 0;
    if (sibling && sibling->fd >= 0) {
        if (!sibling->lport) {
            sibling->lport = sock_local_port(sibling->fd);
            if (sibling->lport && sock_share_port(sibling->fd, true) == 0)
                sibling->shares_port = true;
        }
        if (sibling->shares_port) {
            int fd = sock_udp_connected_at(ep, sibling->lport);
            if (fd >= 0) {
                *shared = sibling->lport;
                return fd;
            }
        } /* else (or the port is taken towards ep): a port of its own */
    }
    while (w->n_pool > 0) {
        int fd = w->pool[--w->n_pool];
        int rc = sock_udp_reconnect(fd, ep);
        if (rc == 0) {
            *is_new = false;
            return fd;
        }
        close(fd); /* leaves the epoll set */
        if (rc == -EAGAIN)
            return rc; /* no free port: another socket would not find one either */
    }
    return sock_udp_connected(ep);
}

/* Opens the session (client, ep): checks the table and the per-IP cap, then sets up the
 * socket, and only then inserts, so a refusal costs no table work (and a failure while
 * ports or descriptors are exhausted stays O(1) per packet). NULL when refused (counted). */
static struct session *open_session(struct worker *w, const struct addr *client,
                                    const struct addr *ep, struct session *sibling)
{
    if (session_table_is_full(w->sessions)) {
        drop_ex(w, DROP_SESSION_LIMIT, client, NULL);
        if (!w->table_full_logged) {
            w->table_full_logged = true;
            LOG_WARN("proxy", "worker %u: session table full (%u sessions); new sessions are "
                     "refused until some expire",
                     w->index, session_capacity(w->sessions));
        }
        return NULL;
    }
    if (!ip_limit_acquire(w->ip_limit, client)) {
        drop_ex(w, DROP_IP_SESSION_LIMIT, client, NULL);
        uint64_t suppressed;
        if (log_ratelimit_ok(&w->rl_ip_limit, w->now_ns, &suppressed)) {
            char peer[ADDR_STR_CAP];
            LOG_WARN_F("proxy",
                       LOG_FIELDS(LF_U64("worker", w->index),
                                  LF_STR("client", addr_format(client, peer)),
                                  LF_U64("suppressed", suppressed)),
                       "per-IP session limit reached (--max-sessions-per-ip); new sessions "
                       "from this address are refused until some expire");
        }
        return NULL;
    }
    bool is_new;
    uint16_t shared;
    int fd = upstream_socket(w, ep, sibling, &is_new, &shared);
    if (fd >= 0 && (uint32_t)fd >= w->fd_map_len) {
        close(fd); /* above the limit the worker started with: cannot happen unless raised */
        fd = -EMFILE;
    }
    if (fd == -EAGAIN) {
        /* connect() could not pick a local port: the host's ephemeral range is used up (one
         * port per session, shared with every other socket on the host) */
        ip_limit_release(w->ip_limit, client);
        drop_ex(w, DROP_NO_LOCAL_PORT, client, NULL);
        if (!w->ports_exhausted_logged) {
            w->ports_exhausted_logged = true;
            log_ports_exhausted(w);
        }
        return NULL;
    }
    if (fd < 0) {
        uint64_t suppressed;
        if (log_ratelimit_ok(&w->rl_socket, w->now_ns, &suppressed))
            LOG_WARN("proxy", "worker %u: cannot open upstream socket: %s%s (%lu more)",
                     w->index, strerror(-fd),
                     fd == -EMFILE || fd == -ENFILE
                         ? "; raise the open-files limit (LimitNOFILE, ulimit -n) or lower "
                           "--max-sessions"
                         : "",
                     (unsigned long)suppressed);
        ip_limit_release(w->ip_limit, client);
        drop_ex(w, DROP_UPSTREAM_SOCKET, client, strerror(-fd));
        return NULL;
    }
    if (w->ports_exhausted_logged) {
        w->ports_exhausted_logged = false;
        LOG_INFO("proxy", "worker %u: ephemeral ports available again (%u sessions)", w->index,
                 session_count(w->sessions));
    }
    struct session *s = session_insert(w->sessions, client, ep, w->now_ns); /* not full */
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)fd};
    int armed = w->ring ? uring_recv(w->ring, fd, tag_make(TAG_UPSTREAM, ++w->fd_gen[fd], fd))
                : is_new && epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) == -1 ? -errno
                                                                            : 0;
    if (armed < 0) {
        int err = -armed;
        close(fd);
        session_remove(w->sessions, s); /* O(1) */
        ip_limit_release(w->ip_limit, client);
        drop_ex(w, DROP_UPSTREAM_SOCKET, client, strerror(err));
        return NULL;
    }
    s->fd = fd;
    s->lport = shared; /* 0: looked up when a sibling first needs it */
    s->shares_port = s->is_port_bound = shared != 0;
    w->fd_map[fd] = session_index(w->sessions, s) + 1;
    stat_add(&w->stats.sessions_created, 1);
    /* spec admin.md §4.6: the client's ASN data, looked up once per session */
    if (w->geo_src && (s->geo = geo_classify(w->geo, w->geo_src, client)))
        geo_add(&w->geo->created[s->geo], 1);
    if (log_enabled(LOG_LEVEL_DEBUG))
        log_session(w, s, "session created");
    return s;
}

/* Prepares a chain run over buf (a BUF_CAP slot holding len bytes at HEADROOM). */
static void ctx_init(struct worker *w, struct pkt_ctx *c, const struct snapshot *snap,
                     uint8_t *buf, uint32_t len)
{
    c->pkt.buf = buf;
    c->pkt.off = HEADROOM;
    c->pkt.len = len;
    c->pkt.cap = BUF_CAP;
    c->all_eps = snap ? snap->eps : NULL;
    c->n_all_eps = snap ? snap->n_eps : 0;
    c->tokens = snap ? snap->tokens : NULL;
    c->eps.idx = NULL;
    c->eps.n = c->n_all_eps;
    md_clear(&c->md);
    arena_reset(&w->scratch);
    c->scratch = &w->scratch;
    c->spare = w->spare;
    c->spare_cap = BUF_CAP;
    c->worker = w->index;
    c->now_ns = w->now_ns;
    c->now_unix_ns = w->now_unix_ns;
    c->drop_reason = NULL;
}

static void process_read(struct worker *w, const struct snapshot *snap, unsigned i)
{
    struct mmsghdr *m = &w->rx_msgs[i];
    struct pkt_ctx c;
    struct rx_result *res = &w->rx_res[i];
    memset(res, 0, sizeof(*res));
    if (!addr_from_sockaddr(&c.src, (struct sockaddr *)&w->rx_from[i], m->msg_hdr.msg_namelen))
        return;
    if (w->geo_src) /* labels its jitter even when it is dropped before finding a session */
        res->geo = geo_client(w->geo, &c.src);
    if (m->msg_len >= MAX_DGRAM || (m->msg_hdr.msg_flags & MSG_TRUNC))
        return; /* cannot happen for UDP over IP: payloads are at most 65,527 bytes */
    if (!snap || snap->n_eps == 0) {
        drop_ex(w, DROP_NO_ENDPOINTS, &c.src, NULL); /* spec proxy.md §3 step 2: no chain */
        return;
    }
    ctx_init(w, &c, snap, w->rx_mem + (size_t)i * BUF_CAP, m->msg_len);
    memset(&c.dst, 0, sizeof(c.dst));
    if (chain_read(&snap->chain, &c) != VERDICT_PASS) {
        drop_ex(w, DROP_FILTER_READ, &c.src, c.drop_reason);
        drop_filter(w, DIR_READ, c.drop_reason, &c.src);
        return;
    }
    uint8_t *data = pkt_data(&c.pkt);
    uint32_t staged = 0;
    struct session *first = NULL; /* this client's session to an earlier endpoint */
    for (uint32_t k = 0; k < c.eps.n; k++) {
        const struct endpoint *ep = &snap->eps[c.eps.idx ? c.eps.idx[k] : k];
        if (ep->addr.family == 0) {
            /* spec proxy.md §3 step 5: a failure stops the loop */
            drop_ex(w, DROP_UNRESOLVED, &c.src, ep->cfg ? ep->cfg->host : NULL);
            res->failed = true;
            return;
        }
        struct session *s = session_lookup(w->sessions, &c.src, &ep->addr);
        if (s) {
            session_seen_client(s, w->now_ns);
        } else if (ep->cfg && ep->cfg->is_draining) {
            continue; /* EDS health: no new sessions to it; existing ones go on (issue 10) */
        } else if (!(s = open_session(w, &c.src, &ep->addr, first))) {
            res->failed = true; /* counted by open_session */
            return;
        }
        if (!first)
            first = s;
        stage_upstream(w, s, i, data, c.pkt.len);
        if (!staged)
            res->geo = s->geo;
        staged++;
    }
    if (staged == 0 && c.eps.n > 0) {
        /* every endpoint it was meant for takes no new sessions */
        drop_ex(w, DROP_ENDPOINTS_DRAINING, &c.src, NULL);
        res->failed = true;
        return;
    }
    res->passed = true; /* counted as read once its sends are flushed */
}

/* After the batch's sends: spec admin.md §4.1, a datagram is read once all its sends went.
 * The jitter gauge is the time since the worker's previous datagram, each datagram
 * received at the batch's one clock read t_ns (so a batch's later datagrams are 0 apart). */
static void count_reads(struct worker *w, unsigned n, uint64_t t_ns)
{
    uint64_t packets = 0, bytes = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct rx_result *r = &w->rx_res[i];
        if (i > 0 || w->last_rx_ns)
            geo_jitter(w->geo, DIR_READ, r->geo, i ? 0 : (int64_t)(t_ns - w->last_rx_ns), t_ns);
        if (!r->passed || r->failed)
            continue;
        if (r->geo) {
            geo_add(&w->geo->packets[DIR_READ][r->geo], 1);
            geo_add(&w->geo->bytes[DIR_READ][r->geo], r->bytes_ok);
        } else {
            packets++;
            bytes += r->bytes_ok;
        }
    }
    w->last_rx_ns = t_ns;
    stat_add(&w->stats.packets_read, packets);
    stat_add(&w->stats.bytes_read, bytes);
}

/* Runs rx_msgs[0..n) (n > 0) through the chain, sends them, and counts them. */
void worker_process_game_batch(struct worker *w, const struct snapshot *snap, unsigned n)
{
    worker_count_kernel_drops(w, &w->rx_msgs[n - 1], &w->game_rxq_drops, SOCK_GAME);
    uint64_t t0 = clock_mono_ns();
    for (unsigned i = 0; i < n; i++)
        process_read(w, snap, i);
    flush_upstream(w);
    count_reads(w, n, t0);
    observe_proc(w, DIR_READ, (clock_mono_ns() - t0) / n, n);
}

void worker_game_recv_error(struct worker *w, int err)
{
    /* counted and logged (rate-limited); the worker carries on with the next event */
    stat_add(&w->stats.game_recv_errors, 1);
    uint64_t suppressed;
    if (log_ratelimit_ok(&w->rl_game_recv, w->now_ns, &suppressed))
        LOG_WARN("proxy", "worker %u: receive error on the game socket: %s (%lu more)",
                 w->index, strerror(err), (unsigned long)suppressed);
}

static void handle_game(struct worker *w, const struct snapshot *snap)
{
    for (int round = 0; round < RX_ROUNDS; round++) {
        for (unsigned i = 0; i < w->rx_used; i++) { /* what the last call wrote back */
            w->rx_msgs[i].msg_hdr.msg_namelen = sizeof(w->rx_from[i]);
            w->rx_msgs[i].msg_hdr.msg_controllen = SOCK_RXQ_CMSG_SPACE;
        }
        int n = recvmmsg(w->game_fd, w->rx_msgs, RX_BATCH, MSG_DONTWAIT, NULL);
        w->rx_used = n > 0 ? (unsigned)n : 0;
        if (n == -1 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            worker_game_recv_error(w, errno);
        if (n <= 0)
            return;
        worker_process_game_batch(w, snap, (unsigned)n);
        if (n < RX_BATCH)
            return;
    }
}

/* ---- server -> client ---------------------------------------------------------------- */

void worker_flush_replies(struct worker *w)
{
    if (w->n_rep_tx)
        send_all(w, w->game_fd, w->rep_tx, w->n_rep_tx, DROP_SEND_DOWNSTREAM, NULL, NULL);
    if (w->n_rep)
        observe_proc(w, DIR_WRITE, (clock_mono_ns() - w->rep_start_ns) / w->n_rep, w->n_rep);
    w->n_rep_tx = 0;
    w->n_rep = 0;
}

void worker_process_write(struct worker *w, const struct snapshot *snap, struct session *s,
                          unsigned i)
{
    uint32_t len = w->rep_rx[i].msg_len;
    if (len >= MAX_DGRAM)
        return;
    if (s->geo) { /* spec admin.md §4.1: counted before the chain, with the client's labels */
        geo_add(&w->geo->packets[DIR_WRITE][s->geo], 1);
        geo_add(&w->geo->bytes[DIR_WRITE][s->geo], len);
    } else {
        stat_add(&w->stats.packets_write, 1);
        stat_add(&w->stats.bytes_write, len);
    }
    if (atomic_load_explicit(&w->control->draining, memory_order_relaxed)) {
        drop_ex(w, DROP_DRAINING, &s->client, NULL);
        return;
    }
    struct pkt_ctx c;
    ctx_init(w, &c, snap, w->reply_mem + (size_t)i * BUF_CAP, len);
    c.src = s->endpoint;
    c.dst = s->client;
    c.eps.n = 0; /* the write direction has no endpoint candidates */
    if (snap && chain_write(&snap->chain, &c) != VERDICT_PASS) {
        drop_ex(w, DROP_FILTER_WRITE, &s->client, c.drop_reason);
        drop_filter(w, DIR_WRITE, c.drop_reason, &s->client);
        return;
    }
    session_seen_reply(s, w->now_ns); /* the seed's rule, once the session is confirmed */
    coalesce_note(&w->co, session_index(w->sessions, s));
    uint32_t t = w->n_rep_tx++; /* rep_tx[t] points at rep_to[t] and rep_tx_iov[t] */
    addr_to_sin6(&s->client, &w->rep_to[t]);
    w->rep_tx_iov[t].iov_base = pkt_data(&c.pkt);
    w->rep_tx_iov[t].iov_len = c.pkt.len;
}

/* A receive error on a session socket (err: an errno, e.g. an ICMP port unreachable). */
void worker_count_upstream_error(struct worker *w, const struct session *s, int err)
{
    enum upstream_error kind = err == ECONNREFUSED   ? UPSTREAM_ERR_REFUSED
                               : err == EHOSTUNREACH ? UPSTREAM_ERR_HOST
                               : err == ENETUNREACH  ? UPSTREAM_ERR_NET
                                                     : UPSTREAM_ERR_OTHER;
    if (!s->geo ||
        !geo_count_drop(w->geo, upstream_error_text(kind), GEO_ERROR_ONLY, DIR_WRITE, s->geo))
        stat_add(&w->stats.upstream_errors[kind], 1);
    uint64_t suppressed;
    if (log_ratelimit_ok(&w->rl_upstream, w->now_ns, &suppressed)) {
        char ep[ADDR_STR_CAP];
        LOG_DEBUG("proxy", "upstream %s: %s (%lu similar suppressed)",
                  addr_format(&s->endpoint, ep), strerror(err), (unsigned long)suppressed);
    }
}

void worker_take_replies(struct worker *w, const struct snapshot *snap, struct session *s,
                         unsigned n, uint64_t t)
{
    unsigned first = w->n_rep;
    worker_count_kernel_drops(w, &w->rep_rx[first + n - 1], &s->rxq_drops, SOCK_UPSTREAM);
    if (first == 0)
        w->rep_start_ns = t;
    /* spec admin.md §4.1: jitter per upstream socket, the time since its previous datagram
       (a batch's later datagrams are 0 apart) */
    for (unsigned k = 0; k < n; k++)
        if (k > 0 || s->last_reply_ns)
            geo_jitter(w->geo, DIR_WRITE, s->geo, k ? 0 : (int64_t)(t - s->last_reply_ns), t);
    s->last_reply_ns = t;
    w->n_rep += n;
    for (unsigned i = first; i < w->n_rep; i++)
        worker_process_write(w, snap, s, i);
}

static void handle_upstream(struct worker *w, const struct snapshot *snap, int fd)
{
    uint32_t idx = fd >= 0 && (uint32_t)fd < w->fd_map_len ? w->fd_map[fd] : 0;
    struct session *s = idx ? session_at(w->sessions, idx - 1) : NULL;
    if (!s || s->fd != fd) {
        /* a pooled socket was emptied when pooled and receives nothing; should anything be
         * queued, discard it so that the level-triggered event does not fire again */
        if (fd >= 0 && !s)
            sock_udp_disconnect(fd);
        return;
    }
    for (int round = 0; round < RX_ROUNDS; round++) {
        if (w->n_rep == RX_BATCH)
            worker_flush_replies(w);
        unsigned room = RX_BATCH - w->n_rep;
        for (unsigned i = w->n_rep; i < w->rep_used; i++) /* written back by an earlier call */
            w->rep_rx[i].msg_hdr.msg_controllen = SOCK_RXQ_CMSG_SPACE;
        int n = recvmmsg(s->fd, &w->rep_rx[w->n_rep], room, MSG_DONTWAIT, NULL);
        if (n > 0 && w->n_rep + (unsigned)n > w->rep_used)
            w->rep_used = w->n_rep + (unsigned)n;
        if (n == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            /* ICMP unreachable and the like: only this session is affected; the pending
             * error is cleared by reporting it, so the socket stays usable. */
            worker_count_upstream_error(w, s, errno);
            continue;
        }
        if (n == 0)
            return;
        /* one clock read per receive batch */
        worker_take_replies(w, snap, s, (unsigned)n, clock_mono_ns());
        if ((unsigned)n < room)
            return;
    }
}

/* ---- QCMP responder (spec qcmp.md §4) ------------------------------------------------ */

void worker_handle_qcmp(struct worker *w)
{
    for (int round = 0; round < RX_ROUNDS; round++) {
        for (unsigned i = 0; i < w->qcmp_used; i++) { /* written back by the last call */
            struct msghdr *h = &w->qcmp_rx[i].msg_hdr;
            w->qcmp_iov[i].iov_len = QCMP_BUF; /* a reply set it to the reply's length */
            h->msg_namelen = sizeof(w->qcmp_from[i]);
            h->msg_controllen = SOCK_RXQ_CMSG_SPACE;
        }
        int n = recvmmsg(w->qcmp_fd, w->qcmp_rx, RX_BATCH, MSG_DONTWAIT, NULL);
        w->qcmp_used = n > 0 ? (unsigned)n : 0;
        if (n <= 0)
            return;
        worker_count_kernel_drops(w, &w->qcmp_rx[n - 1], &w->qcmp_rxq_drops, SOCK_QCMP);
        int64_t t_recv = (int64_t)clock_unix_ns();
        unsigned n_tx = 0;
        for (int i = 0; i < n; i++) {
            struct mmsghdr *m = &w->qcmp_rx[i];
            struct qcmp_packet p;
            if ((m->msg_hdr.msg_flags & MSG_TRUNC) ||
                qcmp_parse(w->qcmp_buf[i], m->msg_len, &p, NULL) != QCMP_OK ||
                p.kind != QCMP_PING) {
                stat_add(&w->stats.qcmp_invalid, 1); /* no reply: no amplification */
                continue;
            }
            stat_add(&w->stats.qcmp_pings, 1);
            struct addr src;
            if (!addr_from_sockaddr(&src, (struct sockaddr *)&w->qcmp_from[i],
                                    m->msg_hdr.msg_namelen))
                continue;
            enum qcmp_verdict v = qcmp_ratelimit_check(w->qcmp_rl, &src, w->now_ns);
            if (v != QCMP_ALLOW) {
                /* no reply: the proxy is nobody's reflector */
                stat_add(v == QCMP_LIMIT_SOURCE ? &w->stats.qcmp_limited_source
                                                : &w->stats.qcmp_limited_global,
                         1);
                continue;
            }
            p.kind = QCMP_PING_REPLY;
            p.server_recv_ts_ns = t_recv;
            p.server_send_ts_ns = (int64_t)clock_unix_ns();
            w->qcmp_iov[i].iov_len = qcmp_encode(&p, w->qcmp_buf[i]);
            struct msghdr *h = &w->qcmp_tx[n_tx++].msg_hdr;
            memset(h, 0, sizeof(*h));
            h->msg_name = &w->qcmp_from[i];
            h->msg_namelen = m->msg_hdr.msg_namelen;
            h->msg_iov = &w->qcmp_iov[i];
            h->msg_iovlen = 1;
        }
        if (n_tx) {
            uint64_t before = w->stats.drops[DROP_SEND_DOWNSTREAM];
            send_all(w, w->qcmp_fd, w->qcmp_tx, n_tx, DROP_SEND_DOWNSTREAM, NULL, NULL);
            uint64_t failed = w->stats.drops[DROP_SEND_DOWNSTREAM] - before;
            stat_add(&w->stats.qcmp_replies, n_tx - failed);
        }
        if (n < RX_BATCH)
            return;
    }
}

/* ---- loop ---------------------------------------------------------------------------- */

void worker_close_session(void *ctx, struct session *s)
{
    struct worker *w = ctx;
    if (s->fd >= 0) {
        w->fd_map[s->fd] = 0;
        /* io_uring: end its receive; the kernel keeps the socket until that has run, so it
           may be closed (or pooled and armed again: the cancel goes first) right away */
        bool ended = !w->ring || w->is_closing ||
                     uring_cancel(w->ring, tag_make(TAG_UPSTREAM, w->fd_gen[s->fd], s->fd)) == 0;
        /* a socket bound to a shared port keeps that port when disconnected: not pooled */
        /* live + pooled sockets stay within the table's capacity: the open-files budget */
        if (!ended || w->is_closing || s->is_port_bound || w->n_pool >= w->pool_cap ||
            session_count(w->sessions) + w->n_pool >= session_capacity(w->sessions) ||
            (s->shares_port && sock_share_port(s->fd, false) != 0) ||
            sock_udp_disconnect(s->fd) != 0)
            close(s->fd); /* also leaves the epoll set */
        else
            w->pool[w->n_pool++] = s->fd;
    }
    s->fd = -1;
    ip_limit_release(w->ip_limit, &s->client);
    stat_add(&w->stats.sessions_expired, 1);
    if (s->geo)
        geo_add(&w->geo->closed[s->geo], 1);
    uint64_t secs = (w->now_ns - s->created_ns) / 1000000000ull;
    unsigned b = 0;
    while (b < SESSION_DUR_BUCKETS && (double)secs > worker_session_dur_bounds_s[b])
        b++;
    stat_add(&w->stats.session_dur_counts[b], 1);
    stat_add(&w->stats.session_dur_sum_s, secs);
}

/* session_expire's callback: the session was idle for the timeout. */
static void expire_session(void *ctx, struct session *s)
{
    struct worker *w = ctx;
    if (log_enabled(LOG_LEVEL_DEBUG))
        log_session(w, s, s->is_confirmed ? "session expired" : "unconfirmed session expired");
    if (!s->is_confirmed)
        stat_add(&w->stats.sessions_expired_unconfirmed, 1);
    worker_close_session(w, s);
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
        ;
}

/* The window before the next turn (coalesce.h); RUST_LOG=debug: its switches, at most one
 * line per second per worker. */
uint64_t worker_coalesce_turn(struct worker *w)
{
    uint64_t on = w->co.activations, off = w->co.deactivations;
    uint64_t window = coalesce_after_turn(&w->co, w->now_ns);
    uint64_t suppressed;
    if ((w->co.activations != on || w->co.deactivations != off) &&
        log_enabled(LOG_LEVEL_DEBUG) && log_ratelimit_ok(&w->rl_coalesce, w->now_ns, &suppressed))
        LOG_DEBUG("proxy", "worker %u: coalescing %s (%lu times on, %lu off so far)", w->index,
                  w->co.active ? "on" : "off", (unsigned long)w->co.activations,
                  (unsigned long)w->co.deactivations);
    return window;
}

/* After each wake-up, whatever the backend: replies out, expiry, published counts. */
void worker_end_turn(struct worker *w)
{
    worker_flush_replies(w);
    session_expire(w->sessions, w->now_ns, expire_session, w);
    uint32_t live = session_count(w->sessions);
    if (w->table_full_logged && live < session_capacity(w->sessions) / 10 * 9) {
        w->table_full_logged = false;
        LOG_INFO("proxy", "worker %u: session table has room again (%u sessions)", w->index,
                 live);
    }
    atomic_store_explicit(&w->published_sessions, live, memory_order_relaxed);
    snapshot_reader_quiescent();
}

static void loop_epoll(struct worker *w)
{
    struct epoll_event evs[EPOLL_EVENTS];
    uint64_t window = 0;
    while (!atomic_load_explicit(&w->control->stopping, memory_order_relaxed)) {
        snapshot_reader_offline();
        if (window) /* coalescing: let datagrams gather, then take what is queued */
            sleep_ns(window);
        int n = epoll_wait(w->epfd, evs, EPOLL_EVENTS, window ? 0 : TICK_MS);
        snapshot_reader_online();
        const struct snapshot *snap = snapshot_current();
        w->now_ns = clock_mono_ns();
        w->now_unix_ns = clock_unix_ns();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == GAME_TOKEN)
                handle_game(w, snap);
            else if (evs[i].data.u64 == QCMP_TOKEN)
                worker_handle_qcmp(w);
            else
                handle_upstream(w, snap, (int)evs[i].data.u64);
        }
        worker_end_turn(w);
        window = worker_coalesce_turn(w);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    snapshot_reader_register();
    /* windows of tens of µs: the default 50 µs timer slack would stretch them */
    if (w->co.window_ns)
        prctl(PR_SET_TIMERSLACK, 1000ul, 0, 0, 0);
    if (w->ring) {
        int rc = uring_enable(w->ring);
        if (rc < 0) {
            LOG_WARN("proxy", "worker %u: cannot enable io_uring (%s): using epoll", w->index,
                     strerror(-rc));
            uring_destroy(w->ring);
            w->ring = NULL;
        }
    }
    if (w->ring)
        worker_uring_loop(w);
    else
        loop_epoll(w);
    snapshot_reader_unregister();
    return NULL;
}

int worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0)
        return -rc;
    char name[16];
    snprintf(name, sizeof(name), "qk-worker-%u", w->index % 1000);
    pthread_setname_np(w->thread, name); /* per-thread CPU in /proc, top -H, perf */
    w->started = true;
    return 0;
}

void worker_join(struct worker *w)
{
    if (w->started)
        pthread_join(w->thread, NULL);
    w->started = false;
}

void worker_destroy(struct worker *w)
{
    if (!w)
        return;
    w->is_closing = true;
    session_table_destroy(w->sessions, worker_close_session, w);
    for (uint32_t i = 0; i < w->n_pool; i++)
        close(w->pool[i]);
    uring_destroy(w->ring); /* ends the receives: the sockets are released */
    free(w->fd_gen);
    free(w->pool);
    free(w->fd_map);
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->game_fd >= 0)
        close(w->game_fd);
    if (w->qcmp_fd >= 0)
        close(w->qcmp_fd);
    arena_deinit(&w->scratch);
    qcmp_ratelimit_destroy(w->qcmp_rl);
    free(w->geo); /* after the sessions: close_session counts into it */
    free(w->rx_mem);
    free(w->reply_mem);
    free(w->spare);
    free(w);
}

bool worker_uses_uring(const struct worker *w)
{
    return w->ring != NULL;
}

const struct geo_stats *worker_geo_stats(const struct worker *w)
{
    return w->geo;
}

uint32_t worker_session_count(const struct worker *w)
{
    return atomic_load_explicit(&w->published_sessions, memory_order_relaxed);
}

void worker_stats_add(const struct worker *w, struct worker_stats *sum)
{
    const uint64_t *src = (const uint64_t *)&w->stats;
    uint64_t *dst = (uint64_t *)sum;
    for (size_t i = 0; i < offsetof(struct worker_stats, filter_reasons) / 8; i++)
        dst[i] += __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

void worker_filter_reasons(const struct worker *w, enum direction dir,
                           void (*fn)(void *ctx, const char *reason, uint64_t n), void *ctx)
{
    const struct reason_count *rc = w->stats.filter_reasons[dir];
    for (unsigned i = 0; i < REASON_SLOTS; i++) {
        if (!atomic_load_explicit(&rc[i].used, memory_order_acquire))
            break;
        fn(ctx, rc[i].text, __atomic_load_n(&rc[i].n, __ATOMIC_RELAXED));
    }
}
