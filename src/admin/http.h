/* The admin HTTP server (spec admin.md): /live(z), /ready(z), /metrics, /config on a
 * libmicrohttpd thread of its own, so a slow scrape never touches the data path. It knows
 * nothing of the proxy: the command wires it up with callbacks. */
#ifndef QK_ADMIN_HTTP_H
#define QK_ADMIN_HTTP_H

#include <stdbool.h>

struct addr;
struct err;
struct strbuf;

/* Callbacks run on the admin thread; they must only read shared state safely (atomics,
 * RCU read side via their own registration, or data under their own lock). */
struct admin_hooks {
    bool (*is_live)(void *ctx);
    /* /ready's status: 200 (body "ok"); 500 not ready (spec admin.md §3); or, extension,
     * 503 when the instance is working but should get no new traffic for a while
     * (draining, the management server unreachable). *reason: the body for non-200. */
    unsigned (*readiness)(void *ctx, const char **reason);
    /* Appends Prometheus text; returns 0 or a negative errno (-> 500). */
    int (*render_metrics)(void *ctx, struct strbuf *out);
    /* Appends the running config as JSON; returns 0 or a negative errno (-> 500). */
    int (*render_config)(void *ctx, struct strbuf *out);
    void *ctx;
};

struct admin;

/* Starts serving on listen (IPv4 or IPv6; [::] is dual-stack). NULL with e set when the
 * address cannot be bound. Control thread. hooks are copied. */
struct admin *admin_start(const struct addr *listen, const struct admin_hooks *hooks,
                          struct err *e);

/* Stops the server and frees it. NULL is a no-op. */
void admin_stop(struct admin *a);

#endif
