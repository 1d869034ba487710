/* libmicrohttpd glue: route on method + exact path, render through the hooks, answer.
 *
 * Field rules (issues 8 and 9):
 * - never select(): a proxy holds one descriptor per session, so admin connections get
 *   numbers far above FD_SETSIZE and a select() server would refuse them. The listener
 *   uses poll().
 * - one thread per connection, so a slow /metrics render or a slow reader never delays a
 *   /live probe on another connection;
 * - idle connections cannot starve it: at most ADMIN_PER_IP connections per peer address,
 *   ADMIN_MAX_CONNECTIONS in all, and a connection idle for ADMIN_IDLE_SECS is closed. */
#include "admin/http.h"

#include "base/err.h"
#include "base/strbuf.h"
#include "net/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_MAX_CONNECTIONS 256
#define ADMIN_PER_IP 16 /* a node's kubelet and Prometheus need a handful */
#define ADMIN_IDLE_SECS 5
#define ADMIN_THREAD_STACK (256 * 1024) /* handlers render into heap buffers */

struct admin {
    struct MHD_Daemon *daemon;
    struct admin_hooks hooks;
};

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
                              void *ctx, const char *content_type, const char *fail_prefix)
{
    struct strbuf out = {0};
    int rc = fn(ctx, &out);
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
        /* draining (extension): 503 so a load balancer stops sending new players here */
        if (h->is_draining && h->is_draining(h->ctx))
            return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "draining", 8, "text/plain");
        bool ok = h->is_ready && h->is_ready(h->ctx);
        return ok ? reply(conn, MHD_HTTP_OK, "ok", 2, "text/plain")
                  : reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "", 0, NULL);
    }
    if (strcmp(url, "/metrics") == 0 && h->render_metrics)
        return render(conn, h->render_metrics, h->ctx, "text/plain; version=0.0.4",
                      "failed to encode metrics: ");
    if (strcmp(url, "/config") == 0 && h->render_config)
        return render(conn, h->render_config, h->ctx, "application/json",
                      "failed to create config dump: ");
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
    union {
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } sa;
    memset(&sa, 0, sizeof(sa));
    unsigned flags = MHD_USE_ERROR_LOG | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
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
        flags, listen->port, NULL, NULL, handle, a, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)ADMIN_MAX_CONNECTIONS,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)ADMIN_PER_IP,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ADMIN_IDLE_SECS, MHD_OPTION_THREAD_STACK_SIZE,
        (size_t)ADMIN_THREAD_STACK, MHD_OPTION_END);
    if (!a->daemon) {
        char text[ADDR_STR_CAP];
        err_set(e, "cannot start the admin server on %s (address in use or not available)",
                addr_format(listen, text));
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
    free(a);
}
