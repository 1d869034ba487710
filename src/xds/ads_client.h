/* The proxy's ADS client (spec xds.md §5): one thread that keeps a stream to one of the
 * management servers (round robin, backoff with jitter, forever), subscribes to clusters,
 * listeners and (extension) Envoy ClusterLoadAssignments, applies each response to its copy
 * of the configuration and hands the result to the proxy to publish, then ACKs or NACKs.
 * The data path never waits for it: what was learnt keeps serving while the link is down. */
#ifndef QK_XDS_ADS_CLIENT_H
#define QK_XDS_ADS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct err;
struct strbuf;

struct ads_client_hooks {
    /* Publishes cfg (ownership passes to the callee, even on failure). Returns 0, or a
     * negative errno with e set: the response is then NACKed with e's text. Called on the
     * ADS thread. */
    int (*apply)(void *ctx, struct config *cfg, struct err *e);
    void *ctx;
};

struct ads_client_opts {
    const char *const *servers; /* "http[s]://HOST:PORT" strings, borrowed for the lifetime */
    size_t n_servers;
    unsigned idle_request_secs; /* re-request after this long without a response (>= 1) */
    unsigned max_backoff_ms;    /* cap of the retry delay before jitter (spec: 30000) */
    /* HTTP/2 PING after keepalive_ms of silence, link dead when unanswered for
     * keepalive_timeout_ms (0: no keepalive) */
    unsigned keepalive_ms, keepalive_timeout_ms;
    /* node.locality (issue 10: control planes tell proxies apart); NULL: none given */
    const char *region, *zone, *sub_zone;
    /* TLS for https:// servers (issue 10): tls_ca a PEM CA bundle (NULL: the system store),
     * tls_cert/tls_key a client certificate for mTLS (both or neither). Borrowed. */
    const char *tls_ca, *tls_cert, *tls_key;
};

struct ads_client;

/* Checks every server URL ("http://host:port" or "https://host:port"); 0, or -EINVAL with e naming the bad one
 * ("No scheme provided", ...). */
int ads_client_check_urls(const char *const *servers, size_t n, struct err *e);

/* Every subscription carries node {id, user_agent_name "quilkin", user_agent_version (this
 * build's version), locality (when region, zone or sub_zone is given), metadata
 * {"quilkin.dev/build": {implementation, version, commit}}}.
 *
 * https:// servers are reached over TLS 1.2+ with ALPN h2, their certificate checked against
 * tls_ca (or the system CA store) and the URL's host.
 *
 * Starts the thread. initial: the configuration to merge updates into (taken: the id is
 * the xDS node id). NULL with e set on failure. */
struct ads_client *ads_client_start(const struct ads_client_opts *o, struct config *initial,
                                    const struct ads_client_hooks *hooks, struct err *e);

/* Stops and joins the thread, frees. NULL is a no-op. */
void ads_client_stop(struct ads_client *c);

/* True while the current stream has delivered at least one response since it (re)connected
 * (spec admin.md §3). Any thread. */
bool ads_client_is_healthy(const struct ads_client *c);

/* Appends the xDS client metrics (spec admin.md §4.5) in Prometheus text. Any thread. */
void ads_client_render_metrics(struct ads_client *c, struct strbuf *out);

#endif
