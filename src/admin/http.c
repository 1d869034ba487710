/* libmicrohttpd glue: route on method + exact path, render through the hooks, answer.
 *
 * Field rules (issues 8 and 9):
 * - never select(): a proxy holds one descriptor per session, so admin connections get
 *   numbers far above FD_SETSIZE and a select() server would refuse them: epoll.
 * - a pool of ADMIN_THREADS threads, each with its own epoll set: a slow /metrics render
 *   holds only its own thread, and a slow reader none (writes are non-blocking). Measured
 *   by make attack: a thread per connection let 240 idle connections (240 thread stacks
 *   mapped and unmapped) raise the players' p99 from 0.6 ms to 39-213 ms through TLB
 *   shootdowns; the pool keeps it at about 1 ms.
 * - idle connections cannot starve it: at most ADMIN_PER_IP connections per peer address
 *   (counted here, so refusals show on /metrics), ADMIN_MAX_CONNECTIONS in all, and a
 *   connection idle for ADMIN_IDLE_SECS is closed. */
#include "admin/http.h"

#include "base/err.h"
#include "base/prom.h"
#include "base/strbuf.h"
#include "net/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_MAX_CONNECTIONS 256
#define ADMIN_PER_IP 16 /* a node's kubelet and Prometheus need a handful */
#define ADMIN_IDLE_SECS 5
#define ADMIN_THREAD_STACK (256 * 1024) /* handlers render into heap buffers */
#define ADMIN_THREADS 4

/* Live connections per peer address; admin threads only, under mu (never the data path). */
struct peers {
    pthread_mutex_t mu;
    struct {
        struct addr key; /* port 0; family 0: free */
        unsigned n;
    } e[ADMIN_MAX_CONNECTIONS];
    uint64_t accepted, refused;
};

struct admin {
    struct MHD_Daemon *daemon;
    struct admin_hooks hooks;
    struct peers peers;
};

static bool peer_key(const struct sockaddr *sa, socklen_t len, struct addr *k)
{
    if (!sa || !addr_from_sockaddr(k, sa, len))
        return false;
    k->port = 0;
    return true;
}

/* MHD's accept policy: refuse a peer that already holds ADMIN_PER_IP connections. */
static enum MHD_Result accept_peer(void *cls, const struct sockaddr *sa, socklen_t len)
{
    struct peers *p = &((struct admin *)cls)->peers;
    struct addr k;
    if (!peer_key(sa, len, &k))
        return MHD_YES;
    enum MHD_Result res = MHD_NO;
    pthread_mutex_lock(&p->mu);
    int free_slot = -1;
    for (int i = 0; i < ADMIN_MAX_CONNECTIONS; i++) {
        if (p->e[i].key.family == 0) {
            if (free_slot < 0)
                free_slot = i;
        } else if (addr_eq(&p->e[i].key, &k)) {
            free_slot = -2; /* found */
            if (p->e[i].n < ADMIN_PER_IP) {
                p->e[i].n++;
                res = MHD_YES;
            }
            break;
        }
    }
    if (free_slot >= 0) {
        p->e[free_slot].key = k;
        p->e[free_slot].n = 1;
        res = MHD_YES;
    }
    if (res == MHD_YES)
        p->accepted++;
    else
        p->refused++;
    pthread_mutex_unlock(&p->mu);
    return res;
}

/* MHD's connection notifications: a closed connection gives its peer's place back. */
static void connection_event(void *cls, struct MHD_Connection *conn, void **socket_context,
                             enum MHD_ConnectionNotificationCode code)
{
    (void)socket_context;
    if (code != MHD_CONNECTION_NOTIFY_CLOSED)
        return;
    struct peers *p = &((struct admin *)cls)->peers;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    struct addr k;
    if (!ci || !peer_key(ci->client_addr,
                         ci->client_addr && ci->client_addr->sa_family == AF_INET6
                             ? sizeof(struct sockaddr_in6)
                             : sizeof(struct sockaddr_in),
                         &k))
        return;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < ADMIN_MAX_CONNECTIONS; i++) {
        if (p->e[i].key.family != 0 && addr_eq(&p->e[i].key, &k)) {
            if (--p->e[i].n == 0)
                memset(&p->e[i].key, 0, sizeof(p->e[i].key));
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

/* The admin server's own counters, after the command's metrics. */
static void render_own(struct admin *a, struct strbuf *out)
{
    pthread_mutex_lock(&a->peers.mu);
    uint64_t accepted = a->peers.accepted, refused = a->peers.refused;
    pthread_mutex_unlock(&a->peers.mu);
    prom_header(out, "quilkin_admin_connections_total", "counter",
                "Admin connections by outcome (extension): refused_per_peer when the peer "
                "already held its share");
    prom_sample_u64(out, "quilkin_admin_connections_total", "result=\"accepted\"", accepted);
    prom_sample_u64(out, "quilkin_admin_connections_total", "result=\"refused_per_peer\"",
                    refused);
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *body,
                             size_t len, const char *content_type)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    if (content_type)
        MHD_add_response_header(r, "Content-Type", content_type);
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result render(struct MHD_Connection *conn, int (*fn)(void *, struct strbuf *),
                              void *ctx, const char *content_type, const char *fail_prefix,
                              struct admin *own_metrics)
{
    struct strbuf out = {0};
    int rc = fn(ctx, &out);
    if (rc == 0 && own_metrics)
        render_own(own_metrics, &out);
    enum MHD_Result res;
    if (rc < 0 || out.failed) {
        struct strbuf msg = {0};
        strbuf_printf(&msg, "%s%s", fail_prefix, strerror(rc < 0 ? -rc : ENOMEM));
        res = reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, msg.buf ? msg.buf : "",
                    msg.len, NULL);
        strbuf_deinit(&msg);
    } else {
        res = reply(conn, MHD_HTTP_OK, out.buf ? out.buf : "", out.len, content_type);
    }
    strbuf_deinit(&out);
    return res;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **con_cls)
{
    struct admin *a = cls;
    (void)version;
    (void)upload;
    /* first call for a request: accept headers; answer on the second (after any body) */
    if (*con_cls == NULL) {
        *con_cls = a;
        return MHD_YES;
    }
    if (*upload_len) {
        *upload_len = 0; /* discard request bodies */
        return MHD_YES;
    }
    const struct admin_hooks *h = &a->hooks;
    if (strcmp(method, "GET") != 0)
        return reply(conn, MHD_HTTP_NOT_FOUND, "", 0, NULL);
    if (strcmp(url, "/live") == 0 || strcmp(url, "/livez") == 0) {
        bool ok = !h->is_live || h->is_live(h->ctx);
        return ok ? reply(conn, MHD_HTTP_OK, "ok", 2, "text/plain")
                  : reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "", 0, NULL);
    }
    if (strcmp(url, "/ready") == 0 || strcmp(url, "/readyz") == 0) {
        const char *reason = "";
        unsigned status = h->readiness ? h->readiness(h->ctx, &reason) : 500;
        if (status == MHD_HTTP_OK)
            return reply(conn, MHD_HTTP_OK, "ok", 2, "text/plain");
        return reply(conn, status, reason, strlen(reason), reason[0] ? "text/plain" : NULL);
    }
    if (strcmp(url, "/metrics") == 0 && h->render_metrics)
        return render(conn, h->render_metrics, h->ctx, "text/plain; version=0.0.4",
                      "failed to encode metrics: ", a);
    if (strcmp(url, "/config") == 0 && h->render_config)
        return render(conn, h->render_config, h->ctx, "application/json",
                      "failed to create config dump: ", NULL);
    return reply(conn, MHD_HTTP_NOT_FOUND, "", 0, NULL);
}

struct admin *admin_start(const struct addr *listen, const struct admin_hooks *hooks,
                          struct err *e)
{
    struct admin *a = calloc(1, sizeof(*a));
    if (!a) {
        err_set(e, "out of memory starting the admin server");
        return NULL;
    }
    a->hooks = *hooks;
    pthread_mutex_init(&a->peers.mu, NULL);
    union {
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } sa;
    memset(&sa, 0, sizeof(sa));
    unsigned flags = MHD_USE_ERROR_LOG | MHD_USE_EPOLL_INTERNAL_THREAD;
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) != MHD_YES)
        flags = MHD_USE_ERROR_LOG | MHD_USE_POLL_INTERNAL_THREAD; /* still no select() */
    if (listen->family == AF_INET) {
        sa.v4.sin_family = AF_INET;
        sa.v4.sin_port = htons(listen->port);
        memcpy(&sa.v4.sin_addr, listen->ip, 4);
    } else {
        sa.v6.sin6_family = AF_INET6;
        sa.v6.sin6_port = htons(listen->port);
        memcpy(&sa.v6.sin6_addr, listen->ip, 16);
        flags |= MHD_USE_IPv6;
        if (IN6_IS_ADDR_UNSPECIFIED(&sa.v6.sin6_addr))
            flags |= MHD_USE_DUAL_STACK; /* [::] also serves IPv4 clients */
    }
    a->daemon = MHD_start_daemon(
        flags, listen->port, accept_peer, a, handle, a, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned)ADMIN_MAX_CONNECTIONS,
        MHD_OPTION_NOTIFY_CONNECTION, connection_event, a, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)ADMIN_IDLE_SECS, MHD_OPTION_THREAD_STACK_SIZE, (size_t)ADMIN_THREAD_STACK,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)ADMIN_THREADS, MHD_OPTION_END);
    if (!a->daemon) {
        char text[ADDR_STR_CAP];
        err_set(e, "cannot start the admin server on %s (address in use or not available)",
                addr_format(listen, text));
        pthread_mutex_destroy(&a->peers.mu);
        free(a);
        return NULL;
    }
    return a;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    MHD_stop_daemon(a->daemon);
    pthread_mutex_destroy(&a->peers.mu);
    free(a);
}
