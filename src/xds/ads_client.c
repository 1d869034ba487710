/* ADS client thread; see ads_client.h. Owns its copy of the configuration (`current`),
 * merges every response into a clone of it, and passes the clone to the proxy to publish. */
#include "xds/ads_client.h"

#include "base/clock.h"
#include "base/build_info.h"
#include "base/err.h"
#include "base/log.h"
#include "base/prom.h"
#include "base/strbuf.h"
#include "config/config.h"
#include "config/node.h"
#include "xds/grpc.h"
#include "xds/resources.h"
#include "xds/tls.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define CONNECT_TIMEOUT_MS 5000 /* spec xds.md §2 */
#define SEND_TIMEOUT_MS 5000
#define BASE_BACKOFF_MS 500
#define JITTER_MS 2000
/* (control plane, type) rows: identifiers come from servers, so their number is bounded;
 * the last KIND_COUNT rows count the ones beyond (control_plane="other") */
#define METRIC_SLOTS 32

enum xds_kind {
    KIND_CLUSTER = 0,
    KIND_LISTENER,
    KIND_CLA,
    KIND_COUNT,
};

static const char *const kind_url[KIND_COUNT] = {XDS_TYPE_CLUSTER, XDS_TYPE_LISTENER,
                                                 XDS_TYPE_CLA};

/* Counters per (control plane identifier, type); written by the ADS thread, read by the
 * admin thread, both under `lock` (a few times per response: not a data path). */
struct metric_row {
    char control_plane[128];
    enum xds_kind kind;
    uint64_t responses, acks, nacks;
};

struct ads_client {
    struct ads_client_opts opts;
    struct ads_client_hooks hooks;
    struct config *current;
    char *node_id;
    pthread_t thread;
    int wake_fd;
    atomic_bool stop;
    atomic_bool healthy;
    atomic_bool connected;
    pthread_mutex_t lock;
    struct metric_row rows[METRIC_SLOTS];
    unsigned n_rows;
    struct node *node_metadata; /* owned: the build facts sent in node.metadata */
    struct eds_entry *eds; /* the last accepted EDS state (ADS thread only) */
    size_t n_eds;
    bool delivered; /* the current stream delivered a response (ADS thread only) */
    SSL_CTX *tls;   /* for https:// servers; built once at start, NULL when none is https */
};

/* ---- URLs ---------------------------------------------------------------------------- */

/* Splits "http[s]://host:port[/]" into host (brackets removed), port and whether the link
 * is TLS. */
static int parse_url(const char *url, char *host, size_t host_cap, uint16_t *port, bool *tls,
                     struct err *e)
{
    const char *p = strstr(url, "://");
    if (!p)
        return err_set(e, "invalid management server `%s`: No scheme provided", url);
    size_t scheme = (size_t)(p - url);
    if (scheme == 4 && strncmp(url, "http", 4) == 0)
        *tls = false;
    else if (scheme == 5 && strncmp(url, "https", 5) == 0)
        *tls = true;
    else
        return err_set(e, "invalid management server `%s`: only http:// and https:// are "
                          "supported", url);
    p += 3;
    const char *host_end, *colon;
    if (*p == '[') {
        host_end = strchr(p, ']');
        if (!host_end)
            return err_set(e, "invalid management server `%s`: unclosed [", url);
        colon = host_end + 1;
        p++;
    } else {
        colon = strchr(p, ':');
        host_end = colon;
    }
    if (!colon || *colon != ':' || host_end == p)
        return err_set(e, "invalid management server `%s`: expected http[s]://HOST:PORT", url);
    size_t hlen = (size_t)(host_end - p);
    if (hlen >= host_cap)
        return err_set(e, "invalid management server `%s`: host too long", url);
    memcpy(host, p, hlen);
    host[hlen] = '\0';
    unsigned long v = 0;
    const char *d = colon + 1;
    if (*d < '0' || *d > '9')
        return err_set(e, "invalid management server `%s`: bad port", url);
    for (; *d >= '0' && *d <= '9'; d++) {
        v = v * 10 + (unsigned long)(*d - '0');
        if (v > 65535)
            return err_set(e, "invalid management server `%s`: bad port", url);
    }
    if (*d && strcmp(d, "/") != 0)
        return err_set(e, "invalid management server `%s`: unexpected `%s`", url, d);
    *port = (uint16_t)v;
    return 0;
}

int ads_client_check_urls(const char *const *servers, size_t n, struct err *e)
{
    char host[256];
    uint16_t port;
    bool tls;
    for (size_t i = 0; i < n; i++)
        if (parse_url(servers[i], host, sizeof(host), &port, &tls, e) < 0)
            return -EINVAL;
    return 0;
}

/* ---- metrics ------------------------------------------------------------------------- */

enum counted {
    COUNT_RESPONSE = 0,
    COUNT_ACK,
    COUNT_NACK,
};

static void count(struct ads_client *c, const char *cp, enum xds_kind kind, enum counted which)
{
    pthread_mutex_lock(&c->lock);
    struct metric_row *row = NULL;
    for (unsigned i = 0; i < c->n_rows && !row; i++)
        if (c->rows[i].kind == kind && strcmp(c->rows[i].control_plane, cp) == 0)
            row = &c->rows[i];
    if (!row && c->n_rows < METRIC_SLOTS - KIND_COUNT) {
        row = &c->rows[c->n_rows++];
        snprintf(row->control_plane, sizeof(row->control_plane), "%s", cp);
        row->kind = kind;
    }
    if (!row) /* issue 10: beyond the cap, counted under control_plane="other" */
        row = &c->rows[METRIC_SLOTS - KIND_COUNT + kind];
    if (which == COUNT_RESPONSE)
        row->responses++;
    else if (which == COUNT_ACK)
        row->acks++;
    else
        row->nacks++;
    pthread_mutex_unlock(&c->lock);
}

void ads_client_render_metrics(struct ads_client *c, struct strbuf *out)
{
    char labels[512], cp[300], id[300];
    prom_escape(id, sizeof(id), c->node_id);
    prom_header(out, "quilkin_active_control_planes", "gauge",
                "Number of control planes whose response stream is being consumed");
    snprintf(labels, sizeof(labels), "control_plane=\"%s\"", id);
    prom_sample_u64(out, "quilkin_active_control_planes", labels,
                    atomic_load(&c->connected) ? 1 : 0);
    static const char *const names[3] = {"quilkin_discovery_responses", "quilkin_xds_acks",
                                         "quilkin_xds_nacks"};
    static const char *const helps[3] = {"Total DiscoveryResponses received",
                                         "Total responses applied and acknowledged",
                                         "Total responses rejected"};
    pthread_mutex_lock(&c->lock);
    for (int m = 0; m < 3; m++) {
        prom_header(out, names[m], "counter", helps[m]);
        for (unsigned i = 0; i < METRIC_SLOTS; i++) {
            const struct metric_row *r = &c->rows[i];
            bool is_other = i >= METRIC_SLOTS - KIND_COUNT;
            if (is_other ? !(r->responses || r->acks || r->nacks) : i >= c->n_rows)
                continue;
            uint64_t v = m == 0 ? r->responses : m == 1 ? r->acks : r->nacks;
            prom_escape(cp, sizeof(cp), r->control_plane);
            snprintf(labels, sizeof(labels), "control_plane=\"%s\",type=\"%s\"", cp,
                     kind_url[r->kind]);
            prom_sample_u64(out, names[m], labels, v);
        }
    }
    pthread_mutex_unlock(&c->lock);
}

/* ---- requests ------------------------------------------------------------------------ */

static int send_request(struct grpc_client *g, const struct xds_request *rq, struct err *e)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (xds_request_encode(rq, &buf, &len) < 0)
        return err_set(e, "out of memory encoding a DiscoveryRequest"), -ENOMEM;
    int rc = grpc_client_send(g, buf, len, SEND_TIMEOUT_MS, e);
    free(buf);
    return rc;
}

/* spec xds.md §5.2: node {id, user_agent_name "quilkin"}, type_url, nothing else. */
static int subscribe_all(struct ads_client *c, struct grpc_client *g, struct err *e)
{
    for (int k = 0; k < KIND_COUNT; k++) {
        bool has_loc = c->opts.region || c->opts.zone || c->opts.sub_zone;
        struct xds_request rq = {.node_id = c->node_id,
                                 .user_agent_name = "quilkin",
                                 .user_agent_version = QK_VERSION,
                                 .has_locality = has_loc,
                                 .region = c->opts.region,
                                 .zone = c->opts.zone,
                                 .sub_zone = c->opts.sub_zone,
                                 .node_metadata = c->node_metadata,
                                 .type_url = (char *)kind_url[k]};
        int rc = send_request(g, &rq, e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int kind_of(const char *url)
{
    for (int k = 0; k < KIND_COUNT; k++)
        if (url && strcmp(url, kind_url[k]) == 0)
            return k;
    return -1;
}

/* One ClusterLoadAssignment of the last accepted EDS response (state of the world: the
 * next response replaces them all, so an assignment it leaves out is removed). */
struct eds_entry {
    char *cluster_name;            /* owned */
    struct cluster_group *groups;  /* owned */
    size_t n_groups;
};

static void eds_free(struct eds_entry *eds, size_t n)
{
    for (size_t i = 0; eds && i < n; i++) {
        free(eds[i].cluster_name);
        for (size_t k = 0; k < eds[i].n_groups; k++)
            xds_group_free(&eds[i].groups[k]);
        free(eds[i].groups);
    }
    free(eds);
}

/* What is published: base (the file's config updated by quilkin Cluster and Listener
 * resources) plus every EDS assignment's endpoints, joined by locality. NULL on OOM. */
static struct config *merged(const struct ads_client *c, const struct config *base)
{
    struct config *m = config_clone(base);
    for (size_t i = 0; m && i < c->n_eds; i++) {
        if (xds_merge_groups(m, c->eds[i].groups, c->eds[i].n_groups) < 0) {
            config_destroy(m);
            m = NULL;
        }
    }
    return m;
}

/* Publishes merged(base): on success base becomes `current` (taken); on failure it is freed
 * and e says why. */
static int publish(struct ads_client *c, struct config *base, struct err *e)
{
    struct config *m = merged(c, base);
    if (!m) {
        config_destroy(base);
        return err_set(e, "out of memory applying a DiscoveryResponse");
    }
    int rc = c->hooks.apply(c->hooks.ctx, m, e);
    if (rc < 0) {
        config_destroy(base);
        return rc;
    }
    config_destroy(c->current);
    c->current = base;
    return 0;
}

/* An EDS response, state of the world: every assignment decodes or none is taken (NACK);
 * names must be unique. Replaces c->eds on success (publish done by the caller). */
static int take_eds(struct ads_client *c, const struct xds_response *rs, struct err *e)
{
    struct eds_entry *eds = calloc(rs->n_resources ? rs->n_resources : 1, sizeof(*eds));
    if (!eds)
        return err_set(e, "out of memory applying a DiscoveryResponse");
    int rc = 0;
    size_t n = 0;
    for (size_t i = 0; i < rs->n_resources && rc == 0; i++) {
        const struct xds_any *a = &rs->resources[i];
        if (kind_of(a->type_url) != KIND_CLA) {
            rc = err_set(e, "resource %zu has type `%s` in a `%s` response", i, a->type_url,
                         rs->type_url);
            break;
        }
        struct eds_entry *en = &eds[n];
        rc = xds_cla_decode(a->value, a->len, &en->cluster_name, &en->groups, &en->n_groups, e);
        if (rc < 0)
            break;
        n++;
        for (size_t k = 0; k + 1 < n && rc == 0; k++)
            if (strcmp(eds[k].cluster_name, en->cluster_name) == 0)
                rc = err_set(e, "ClusterLoadAssignment `%s` appears twice", en->cluster_name);
    }
    if (rc < 0) {
        eds_free(eds, n);
        return rc;
    }
    eds_free(c->eds, c->n_eds);
    c->eds = eds;
    c->n_eds = n;
    return 0;
}

/* Applies one response (spec xds.md §5.3: quilkin resources in order, stop at the first
 * failure, those before it stay applied; EDS: all or nothing), publishes, and answers ACK or
 * NACK. Returns a negative errno when the stream must be dropped. */
static int handle_response(struct ads_client *c, struct grpc_client *g, const uint8_t *msg,
                           size_t len)
{
    struct err e = {{0}};
    struct xds_response rs;
    memset(&rs, 0, sizeof(rs));
    if (xds_response_decode(msg, len, &rs, &e) < 0) {
        LOG_WARN("xds", "undecodable DiscoveryResponse: %s", e.msg);
        return -EPROTO;
    }
    const char *cp = rs.control_plane_id ? rs.control_plane_id : "";
    int kind = kind_of(rs.type_url);
    if (kind < 0) {
        LOG_WARN("xds", "response of unknown type `%s`; reconnecting", rs.type_url);
        xds_response_free(&rs);
        return -EPROTO;
    }
    count(c, cp, (enum xds_kind)kind, COUNT_RESPONSE);
    if (!atomic_load(&c->healthy))
        c->delivered = true; /* the stream works: the reconnect backoff starts over */
    atomic_store(&c->healthy, true);

    /* State of the world: every request, ACKs and NACKs included, states the whole
     * subscription, so an ACK repeats the subscription's names (none: every resource of the
     * type) rather than the names received, which a standard server (Envoy's go-control-plane
     * and others) would read as narrowing it. Deviation from v0.7.0, which listed them. */
    struct xds_request ack = {.version_info = rs.version_info,
                              .type_url = rs.type_url,
                              .response_nonce = rs.nonce};
    int rc = 0;
    if (kind == KIND_CLA) {
        rc = take_eds(c, &rs, &e);
        if (rc == 0) {
            struct config *base = config_clone(c->current);
            rc = base ? publish(c, base, &e)
                      : err_set(&e, "out of memory applying a DiscoveryResponse");
        }
    } else {
        struct config *work = config_clone(c->current);
        size_t applied = 0;
        if (!work)
            rc = err_set(&e, "out of memory applying a DiscoveryResponse");
        for (size_t i = 0; work && i < rs.n_resources && rc == 0; i++) {
            const struct xds_any *a = &rs.resources[i];
            if (kind_of(a->type_url) != kind) {
                rc = err_set(&e, "resource %zu has type `%s` in a `%s` response", i,
                             a->type_url, rs.type_url);
                break;
            }
            if (kind == KIND_CLUSTER) {
                struct cluster_group grp;
                rc = xds_cluster_decode(a->value, a->len, &grp, &e);
                if (rc == 0 && (rc = xds_apply_clusters(work, &grp, 1)) < 0) {
                    xds_group_free(&grp);
                    err_set(&e, "out of memory applying clusters");
                }
            } else {
                struct filter_cfg *fs = NULL;
                size_t n = 0;
                rc = xds_listener_decode(a->value, a->len, &fs, &n, &e);
                if (rc == 0 && xds_apply_filters(work, fs, n) < 0)
                    rc = err_set(&e, "out of memory applying filters");
                free(fs);
            }
            if (rc == 0)
                applied++;
        }
        if (work && (applied > 0 || rs.n_resources == 0)) {
            /* publish what was applied (also on a later failure: no rollback) */
            struct err pe = {{0}};
            int prc = publish(c, work, &pe);
            if (prc < 0 && rc == 0) {
                rc = prc;
                memcpy(&e, &pe, sizeof(e));
            }
        } else {
            config_destroy(work);
        }
    }
    if (rc < 0) {
        ack.has_error = true;
        ack.error_code = 3; /* INVALID_ARGUMENT */
        ack.error_message = e.msg;
        count(c, cp, (enum xds_kind)kind, COUNT_NACK);
        LOG_WARN("xds", "NACK %s version %s: %s", rs.type_url,
                 rs.version_info ? rs.version_info : "", e.msg);
    } else {
        count(c, cp, (enum xds_kind)kind, COUNT_ACK);
        LOG_DEBUG("xds", "ACK %s version %s (%zu resources)", rs.type_url,
                  rs.version_info ? rs.version_info : "", rs.n_resources);
    }
    struct err se = {{0}};
    int src = send_request(g, &ack, &se);
    xds_response_free(&rs);
    if (src < 0)
        LOG_WARN("xds", "cannot send ACK/NACK: %s", se.msg);
    return src < 0 ? src : 0;
}

/* ---- thread -------------------------------------------------------------------------- */

/* Sleeps ms or until stop is requested (wake_fd). */
static void nap(struct ads_client *c, unsigned ms)
{
    struct pollfd p = {.fd = c->wake_fd, .events = POLLIN};
    uint64_t end = clock_mono_ns() + (uint64_t)ms * 1000000ull;
    while (!atomic_load(&c->stop)) {
        uint64_t now = clock_mono_ns();
        if (now >= end)
            return;
        int r = poll(&p, 1, (int)((end - now) / 1000000ull) + 1);
        if (r > 0)
            return;
    }
}

static unsigned jitter_ms(void)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint32_t)clock_mono_ns();
    return r % JITTER_MS;
}

/* Runs one stream until it breaks or stop is requested. */
static void run_stream(struct ads_client *c, struct grpc_client *g)
{
    struct err e = {{0}};
    if (subscribe_all(c, g, &e) < 0) {
        LOG_WARN("xds", "subscribing failed: %s", e.msg);
        return;
    }
    /* 1 s .. 1 day, computed without overflow whatever the caller passed */
    uint64_t idle_s = c->opts.idle_request_secs ? c->opts.idle_request_secs : 1;
    int idle_ms = (int)((idle_s > 86400 ? 86400 : idle_s) * 1000);
    while (!atomic_load(&c->stop)) {
        uint8_t *msg = NULL;
        size_t len = 0;
        int r = grpc_client_recv(g, idle_ms, &msg, &len, &e);
        if (r == -EINTR)
            continue; /* the loop condition sees stop */
        if (r < 0) {
            LOG_WARN("xds", "stream ended: %s", e.msg);
            return;
        }
        if (r == 0) {
            /* spec xds.md §5.4: no response for a while: subscribe again on this stream */
            LOG_DEBUG("xds", "no response for %ds: re-sending subscriptions", idle_ms / 1000);
            if (subscribe_all(c, g, &e) < 0) {
                LOG_WARN("xds", "re-subscribing failed: %s", e.msg);
                return;
            }
            continue;
        }
        r = handle_response(c, g, msg, len);
        free(msg);
        if (r < 0)
            return;
    }
}

static void *client_main(void *arg)
{
    struct ads_client *c = arg;
    unsigned failures = 0;
    size_t next = 0;
    while (!atomic_load(&c->stop)) {
        if (failures > 0) {
            /* spec xds.md §5.1: min(500 ms * 2^(n-1), cap) + jitter in [0, 2000) ms */
            unsigned shift = failures - 1 < 16 ? failures - 1 : 16;
            uint64_t delay = (uint64_t)BASE_BACKOFF_MS << shift;
            if (delay > c->opts.max_backoff_ms)
                delay = c->opts.max_backoff_ms;
            nap(c, (unsigned)delay + jitter_ms());
            if (atomic_load(&c->stop))
                break;
        }
        const char *url = c->opts.servers[next];
        next = (next + 1) % c->opts.n_servers;
        char host[256];
        uint16_t port = 0;
        bool tls = false;
        struct err e = {{0}};
        if (parse_url(url, host, sizeof(host), &port, &tls, &e) < 0) {
            failures++;
            continue; /* checked at start-up: cannot happen */
        }
        struct grpc_client *g = grpc_client_open_tls(host, port, ADS_PATH, CONNECT_TIMEOUT_MS,
                                                     c->wake_fd, tls ? c->tls : NULL, &e);
        if (!g) {
            failures++;
            LOG_WARN("xds", "cannot connect to %s (attempt %u): %s", url, failures, e.msg);
            continue;
        }
        grpc_client_set_keepalive(g, c->opts.keepalive_ms, c->opts.keepalive_timeout_ms);
        LOG_INFO("xds", "connected to management server %s", url);
        c->delivered = false;
        atomic_store(&c->connected, true);
        run_stream(c, g);
        atomic_store(&c->connected, false);
        atomic_store(&c->healthy, false);
        grpc_client_close(g);
        /* the backoff starts over only after a stream that delivered a response: a server
         * that accepts connections and then fails keeps backing off (issue 10) */
        failures = c->delivered ? 1 : failures + 1;
    }
    return NULL;
}

/* {"quilkin.dev/build": {"implementation": "quilkin-c", "version": ..., "commit": ...}} */
static struct node *build_metadata(void)
{
    struct node *build = node_new_map(), *root = node_new_map();
    if (!build || !root ||
        node_map_append(build, "implementation", 14, node_new_str("quilkin-c", 9)) < 0 ||
        node_map_append(build, "version", 7, node_new_str(QK_VERSION, strlen(QK_VERSION))) < 0 ||
        node_map_append(build, "commit", 6, node_new_str(build_commit(), strlen(build_commit()))) <
            0) {
        node_free(build);
        node_free(root);
        return NULL;
    }
    if (node_map_append(root, "quilkin.dev/build", 17, build) < 0) {
        node_free(root);
        return NULL;
    }
    return root;
}

struct ads_client *ads_client_start(const struct ads_client_opts *o, struct config *initial,
                                    const struct ads_client_hooks *hooks, struct err *e)
{
    struct ads_client *c = calloc(1, sizeof(*c));
    if (!c || !o->n_servers) {
        free(c);
        config_destroy(initial);
        err_set(e, o->n_servers ? "out of memory" : "no management server given");
        return NULL;
    }
    c->opts = *o;
    /* TLS: one context for every https:// server, built (files read, checked) here so that a
     * bad CA or key is a start-up error rather than a retry loop */
    bool any_tls = false;
    for (size_t i = 0; i < o->n_servers; i++) {
        char host[256];
        uint16_t port;
        bool tls = false;
        if (parse_url(o->servers[i], host, sizeof(host), &port, &tls, e) < 0) {
            free(c);
            config_destroy(initial);
            return NULL;
        }
        any_tls |= tls;
    }
    if (!o->tls_cert != !o->tls_key) {
        free(c);
        config_destroy(initial);
        err_set(e, "a client certificate needs both --xds-tls-cert and --xds-tls-key");
        return NULL;
    }
    if (any_tls) {
        c->tls = tls_client_ctx(o->tls_ca, o->tls_cert, o->tls_key, e);
        if (!c->tls) {
            free(c);
            config_destroy(initial);
            return NULL;
        }
    } else if (o->tls_ca || o->tls_cert) {
        LOG_WARN("xds", "TLS options given but no management server is https://: they are "
                        "not used");
    }
    if (!c->opts.max_backoff_ms)
        c->opts.max_backoff_ms = 30000;
    c->hooks = *hooks;
    c->current = initial;
    c->node_id = strdup(initial->id ? initial->id : "");
    c->node_metadata = build_metadata();
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&c->lock, NULL);
    for (int k = 0; k < KIND_COUNT; k++) {
        struct metric_row *other = &c->rows[METRIC_SLOTS - KIND_COUNT + k];
        snprintf(other->control_plane, sizeof(other->control_plane), "other");
        other->kind = (enum xds_kind)k;
    }
    if (!c->node_id || !c->node_metadata || c->wake_fd == -1 ||
        pthread_create(&c->thread, NULL, client_main, c)) {
        err_set(e, "cannot start the xDS client");
        if (c->wake_fd >= 0)
            close(c->wake_fd);
        free(c->node_id);
        node_free(c->node_metadata);
        config_destroy(initial);
        pthread_mutex_destroy(&c->lock);
        SSL_CTX_free(c->tls);
        free(c);
        return NULL;
    }
    return c;
}

void ads_client_stop(struct ads_client *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, true);
    uint64_t one = 1;
    ssize_t w = write(c->wake_fd, &one, sizeof(one));
    (void)w;
    pthread_join(c->thread, NULL);
    close(c->wake_fd);
    config_destroy(c->current);
    eds_free(c->eds, c->n_eds);
    node_free(c->node_metadata);
    free(c->node_id);
    pthread_mutex_destroy(&c->lock);
    SSL_CTX_free(c->tls);
    free(c);
}

bool ads_client_is_healthy(const struct ads_client *c)
{
    return atomic_load(&c->healthy);
}
