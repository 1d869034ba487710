/* ADS server; see ads_server.h. Each stream remembers its node id, the resource names of its
 * first request (as a hash set) and the set of types it subscribed; a change pushes a
 * response of each of those types to each stream.
 *
 * Encode once (issue 10): a response is encoded once per (type, version) without its nonce,
 * and that body is queued by reference on every wildcard stream with a per-stream tail: the
 * nonce field (protobuf fields may come in any order, and parsers must accept that). Only
 * streams that named resources get an encoding of their own. */
#include "xds/ads_server.h"

#include "base/err.h"
#include "base/log.h"
#include "base/prom.h"
#include "base/strbuf.h"
#include "config/config.h"
#include "xds/grpc.h"
#include "xds/resources.h"
#include "xds/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define SOTW_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define DELTA_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
/* (node, type) rows of the per-node metrics: a bound on their cardinality, since node ids
 * come from clients; the last K_COUNT rows collect the nodes beyond (node="other") */
#define METRIC_SLOTS 512
#define MAX_NAMES 10000    /* resource_names per request */
#define MAX_NAME_LEN 1024  /* bytes per resource name */
#define NONCE_TAIL_LEN 38  /* field 5, length 36, a UUID */

enum kind {
    K_CLUSTER = 0,
    K_LISTENER,
    K_COUNT,
};

static const char *const kind_url[K_COUNT] = {XDS_TYPE_CLUSTER, XDS_TYPE_LISTENER};

/* The resource names of a first request, as an open-addressing hash set. */
struct name_set {
    char **slots; /* cap slots, NULL = empty; owned strings */
    size_t cap, n;
};

struct ads_stream {
    struct ads_stream *next, *prev;
    struct grpc_stream *gs;
    bool delta; /* a Delta stream: answered UNIMPLEMENTED on its first message */
    bool started;
    bool ended; /* aborted by us: send nothing more */
    char *node_id;
    struct name_set names; /* resource_names of the first request; empty: wildcard */
    bool subscribed[K_COUNT];
};

enum send_failure {
    FAIL_SLOW_READER = 0, /* max_queued responses unread */
    FAIL_TOO_LARGE,       /* the response is over the gRPC message limit */
    FAIL_OTHER,           /* out of memory */
    FAIL_COUNT,
};

static const char *const fail_name[FAIL_COUNT] = {"slow_reader", "too_large", "error"};

struct metric_row {
    char node[128];
    enum kind kind;
    uint64_t requests, nacks;
};

struct ads_server {
    struct grpc_server *grpc;
    struct grpc_shared *body[K_COUNT]; /* this version's wildcard encoding, or NULL */
    bool too_large[K_COUNT];           /* this version's encoding is over the limit */
    _Atomic uint64_t send_failures[FAIL_COUNT];
    _Atomic uint64_t names_refused;
    SSL_CTX *tls; /* owned; NULL: cleartext */
    char *id;
    struct config *cfg;
    uint64_t version[K_COUNT]; /* per type, +1 at every change (spec xds.md §7.1) */
    struct ads_stream streams;  /* list head */
    _Atomic unsigned n_streams;
    pthread_mutex_t lock; /* metrics rows: written here, read by the admin thread */
    struct metric_row rows[METRIC_SLOTS];
    unsigned n_rows;
};

static int kind_of(const char *url)
{
    for (int k = 0; k < K_COUNT; k++)
        if (url && strcmp(url, kind_url[k]) == 0)
            return k;
    return -1;
}

static void count(struct ads_server *s, const char *node, enum kind k, bool nack)
{
    pthread_mutex_lock(&s->lock);
    struct metric_row *row = NULL;
    for (unsigned i = 0; i < s->n_rows && !row; i++)
        if (s->rows[i].kind == k && strcmp(s->rows[i].node, node) == 0)
            row = &s->rows[i];
    if (!row && s->n_rows < METRIC_SLOTS - K_COUNT) {
        row = &s->rows[s->n_rows++];
        snprintf(row->node, sizeof(row->node), "%s", node);
        row->kind = k;
    }
    if (!row) /* issue 10: the overflow is counted, under node="other" */
        row = &s->rows[METRIC_SLOTS - K_COUNT + k];
    row->requests += !nack;
    row->nacks += nack;
    pthread_mutex_unlock(&s->lock);
}

/* Rows in use: the named ones, then the overflow rows that counted something. */
static bool row_used(const struct ads_server *s, unsigned i)
{
    if (i < s->n_rows)
        return true;
    return i >= METRIC_SLOTS - K_COUNT && (s->rows[i].requests || s->rows[i].nacks);
}

/* The server's limits at work (issue 10): what they refused or ended, and two gauges. */
static void render_limits(struct ads_server *s, struct strbuf *out)
{
    struct grpc_server_stats st;
    grpc_server_get_stats(s->grpc, &st);
    prom_header(out, "quilkin_xds_server_connections", "gauge", "Open xDS client connections");
    prom_sample_u64(out, "quilkin_xds_server_connections", "", st.conns);
    prom_header(out, "quilkin_xds_server_buffered_request_bytes", "gauge",
                "Request bytes held for partly received messages");
    prom_sample_u64(out, "quilkin_xds_server_buffered_request_bytes", "", st.buffered);
    prom_header(out, "quilkin_xds_server_limit_events_total", "counter",
                "Connections and streams the server's limits refused or ended, by event");
    const struct {
        const char *event;
        uint64_t value;
    } ev[] = {
        {"max_connections", st.refused_max_conns},
        {"max_connections_per_peer", st.refused_per_peer},
        {"first_request_timeout", st.first_request_timeouts},
        {"idle_timeout", st.idle_timeouts},
        {"keepalive_timeout", st.keepalive_timeouts},
        {"request_buffer_full", st.buffer_exhausted},
        {"request_too_many_names", atomic_load(&s->names_refused)},
    };
    char labels[64];
    for (size_t i = 0; i < sizeof(ev) / sizeof(ev[0]); i++) {
        snprintf(labels, sizeof(labels), "event=\"%s\"", ev[i].event);
        prom_sample_u64(out, "quilkin_xds_server_limit_events_total", labels, ev[i].value);
    }
    prom_header(out, "quilkin_xds_send_failures_total", "counter",
                "Responses that could not be queued; the stream was ended so that the client "
                "re-subscribes");
    for (int i = 0; i < FAIL_COUNT; i++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", fail_name[i]);
        prom_sample_u64(out, "quilkin_xds_send_failures_total", labels,
                        atomic_load(&s->send_failures[i]));
    }
}

void ads_server_render_metrics(struct ads_server *s, struct strbuf *out)
{
    char labels[512], node[300];
    pthread_mutex_lock(&s->lock);
    prom_header(out, "quilkin_discovery_requests", "counter", "Total DiscoveryRequests");
    for (unsigned i = 0; i < METRIC_SLOTS; i++) {
        if (!row_used(s, i))
            continue;
        prom_escape(node, sizeof(node), s->rows[i].node);
        snprintf(labels, sizeof(labels), "node=\"%s\",type=\"%s\"", node,
                 kind_url[s->rows[i].kind]);
        prom_sample_u64(out, "quilkin_discovery_requests", labels,
                        s->rows[i].requests + s->rows[i].nacks);
    }
    prom_header(out, "quilkin_xds_nacks", "counter", "Total requests that carried an error");
    for (unsigned i = 0; i < METRIC_SLOTS; i++) {
        if (!row_used(s, i))
            continue;
        prom_escape(node, sizeof(node), s->rows[i].node);
        snprintf(labels, sizeof(labels), "control_plane=\"%s\",type=\"%s\"", node,
                 kind_url[s->rows[i].kind]);
        prom_sample_u64(out, "quilkin_xds_nacks", labels, s->rows[i].nacks);
    }
    pthread_mutex_unlock(&s->lock);
    render_limits(s, out);
}

/* A fresh random UUIDv4, lower-case hyphenated. */
static void uuid4(char out[37])
{
    uint8_t b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        memset(b, 0x5a, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

static bool is_uuid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char ch = s[i];
        if (dash ? ch != '-'
                 : !((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                     (ch >= 'A' && ch <= 'F')))
            return false;
    }
    return true;
}

/* ---- the names of a subscription ---- */

static uint64_t hash_name(const char *name)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

static bool names_has(const struct name_set *set, const char *name)
{
    if (!set->cap)
        return false;
    for (size_t i = hash_name(name) & (set->cap - 1);; i = (i + 1) & (set->cap - 1)) {
        if (!set->slots[i])
            return false;
        if (strcmp(set->slots[i], name) == 0)
            return true;
    }
}

/* Takes ownership of names[0..n) (the array too); duplicates are dropped. 0 or -ENOMEM (then
 * the names are freed). */
static int names_build(struct name_set *set, char **names, size_t n)
{
    size_t cap = 8;
    while (cap < 2 * n)
        cap *= 2;
    set->slots = n ? calloc(cap, sizeof(*set->slots)) : NULL;
    if (n && !set->slots) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return -ENOMEM;
    }
    set->cap = n ? cap : 0;
    for (size_t k = 0; k < n; k++) {
        if (names_has(set, names[k])) {
            free(names[k]);
            continue;
        }
        size_t i = hash_name(names[k]) & (cap - 1);
        while (set->slots[i])
            i = (i + 1) & (cap - 1);
        set->slots[i] = names[k];
        set->n++;
    }
    free(names);
    return 0;
}

static void names_free(struct name_set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slots[i]);
    free(set->slots);
    memset(set, 0, sizeof(*set));
}

/* Does a group match one of the requested names "region[:zone[:sub_zone]]"? */
static bool group_wanted(const struct cluster_group *g, const struct name_set *names)
{
    if (!names->n)
        return true; /* wildcard */
    if (!g->has_locality)
        return false;
    char *name = xds_cluster_resource_name(g);
    bool ok = name && names_has(names, name);
    free(name);
    return ok;
}

/* ---- responses ---- */

/* Encodes this version's response of kind k for names (all groups when empty), without a
 * nonce. NULL on failure (logged). */
static struct grpc_shared *encode_body(struct ads_server *s, enum kind k,
                                       const struct name_set *names)
{
    struct xds_response rs;
    memset(&rs, 0, sizeof(rs));
    char version[24];
    snprintf(version, sizeof(version), "%llu", (unsigned long long)s->version[k]);
    rs.version_info = version;
    rs.nonce = NULL; /* the per-stream tail carries it */
    rs.type_url = (char *)kind_url[k];
    rs.control_plane_id = s->id;
    size_t cap = k == K_CLUSTER ? s->cfg->n_groups : 1;
    rs.resources = calloc(cap ? cap : 1, sizeof(*rs.resources));
    struct err e = {{0}};
    bool ok = rs.resources != NULL;
    if (ok && k == K_CLUSTER) {
        for (size_t g = 0; ok && g < s->cfg->n_groups; g++) {
            const struct cluster_group *grp = &s->cfg->groups[g];
            if (!group_wanted(grp, names))
                continue;
            struct xds_any *a = &rs.resources[rs.n_resources];
            ok = xds_cluster_encode(grp, &a->value, &a->len) == 0;
            a->type_url = (char *)kind_url[k];
            if (ok)
                rs.n_resources++;
        }
    } else if (ok) {
        struct xds_any *a = &rs.resources[0];
        ok = xds_listener_encode(s->cfg->filters, s->cfg->n_filters, &a->value, &a->len, &e) ==
             0;
        a->type_url = (char *)kind_url[k];
        if (ok)
            rs.n_resources = 1;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    struct grpc_shared *body = NULL;
    if (ok && xds_response_encode(&rs, &buf, &len) == 0)
        body = grpc_shared_new(buf, len);
    if (!body)
        LOG_ERROR("xds", "cannot encode a %s response: %s", kind_url[k],
                  e.msg[0] ? e.msg : "out of memory");
    free(buf);
    for (size_t i = 0; i < rs.n_resources; i++)
        free(rs.resources[i].value);
    free(rs.resources);
    return body;
}

/* The shared wildcard body of this version (encoded at first use). NULL: failed. */
static struct grpc_shared *wildcard_body(struct ads_server *s, enum kind k)
{
    if (!s->body[k] && !s->too_large[k]) {
        s->body[k] = encode_body(s, k, &(struct name_set){0});
        if (s->body[k] && s->body[k]->len + NONCE_TAIL_LEN > GRPC_MAX_MSG) {
            LOG_ERROR("xds", "the %s response of version %llu is %zu bytes, over the %u-byte "
                             "gRPC message limit: it cannot be served",
                      kind_url[k], (unsigned long long)s->version[k], s->body[k]->len,
                      GRPC_MAX_MSG);
            s->too_large[k] = true;
        }
    }
    return s->too_large[k] ? NULL : s->body[k];
}

/* Ends st because a response could not be queued, so that its client re-subscribes rather
 * than staying on a stale version (issue 10). */
static void send_failed(struct ads_server *s, struct ads_stream *st, enum kind k, int rc,
                        size_t len)
{
    enum send_failure f = rc == -ENOBUFS    ? FAIL_SLOW_READER
                          : rc == -EMSGSIZE ? FAIL_TOO_LARGE
                                            : FAIL_OTHER;
    atomic_fetch_add(&s->send_failures[f], 1);
    char msg[160];
    if (f == FAIL_SLOW_READER)
        snprintf(msg, sizeof(msg), "responses are queued faster than the client reads them");
    else if (f == FAIL_TOO_LARGE)
        snprintf(msg, sizeof(msg), "the %s response (%zu bytes) exceeds the %u-byte message limit",
                 kind_url[k], len, GRPC_MAX_MSG);
    else
        snprintf(msg, sizeof(msg), "cannot queue the %s response", kind_url[k]);
    LOG_WARN("xds", "node `%s`: %s; stream ended so that it re-subscribes",
             st->node_id ? st->node_id : "", msg);
    grpc_stream_abort(st->gs, GRPC_RESOURCE_EXHAUSTED, msg);
    st->ended = true;
}

/* Sends this version's response of kind k to st, with a fresh nonce (spec xds.md §7.1). */
static void send_response(struct ads_server *s, struct ads_stream *st, enum kind k)
{
    if (!s->cfg || st->ended)
        return;
    bool own = k == K_CLUSTER && st->names.n; /* a named subscription: its own encoding */
    struct grpc_shared *body = own ? encode_body(s, k, &st->names) : wildcard_body(s, k);
    if (!body) {
        send_failed(s, st, k, s->too_large[k] && !own ? -EMSGSIZE : -ENOMEM,
                    s->body[k] ? s->body[k]->len : 0);
        return;
    }
    char nonce[37];
    uuid4(nonce);
    uint8_t tail[NONCE_TAIL_LEN] = {5 << 3 | 2, 36}; /* field 5 (nonce), length-delimited */
    memcpy(tail + 2, nonce, 36);
    int rc = grpc_stream_send_shared(st->gs, body, tail, sizeof(tail));
    if (rc != 0 && rc != -EPIPE) /* -EPIPE: the stream is already ending */
        send_failed(s, st, k, rc, body->len + sizeof(tail));
    if (own)
        grpc_shared_unref(body);
}

static void *on_open(void *ctx, struct grpc_stream *gs, const char *path)
{
    struct ads_server *s = ctx;
    bool delta = strcmp(path, DELTA_PATH) == 0;
    if (!delta && strcmp(path, SOTW_PATH) != 0)
        return NULL; /* UNIMPLEMENTED */
    struct ads_stream *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->gs = gs;
    st->delta = delta;
    st->next = s->streams.next;
    st->prev = &s->streams;
    s->streams.next->prev = st;
    s->streams.next = st;
    atomic_fetch_add(&s->n_streams, 1);
    return st;
}

static void free_stream(struct ads_stream *st)
{
    names_free(&st->names);
    free(st->node_id);
    free(st);
}

static void on_close(void *ctx, void *state)
{
    struct ads_server *s = ctx;
    struct ads_stream *st = state;
    st->prev->next = st->next;
    st->next->prev = st->prev;
    atomic_fetch_sub(&s->n_streams, 1);
    free_stream(st);
}

/* The first request of a stream (spec xds.md §7 step 1-2). */
static void first_request(struct ads_server *s, struct ads_stream *st, struct xds_request *rq)
{
    if (!rq->node_id) {
        grpc_stream_finish(st->gs, GRPC_INVALID_ARGUMENT, "Node identifier required");
        return;
    }
    int k = kind_of(rq->type_url);
    if (k < 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "Unknown resource type: %s", rq->type_url ? rq->type_url : "");
        grpc_stream_finish(st->gs, GRPC_INVALID_ARGUMENT, msg);
        return;
    }
    st->started = true;
    st->node_id = rq->node_id;
    rq->node_id = NULL;
    int rc = names_build(&st->names, rq->resource_names, rq->n_resource_names);
    rq->resource_names = NULL;
    rq->n_resource_names = 0;
    if (rc < 0) {
        grpc_stream_finish(st->gs, GRPC_INTERNAL, "out of memory");
        return;
    }
    st->subscribed[k] = true;
    LOG_INFO("xds", "node `%s` subscribed to %s", st->node_id, kind_url[k]);
    send_response(s, st, (enum kind)k);
}

static void on_message(void *ctx, void *state, struct grpc_stream *gs, const uint8_t *msg,
                       size_t len)
{
    struct ads_server *s = ctx;
    struct ads_stream *st = state;
    if (st->delta) {
        grpc_stream_finish(gs, GRPC_UNIMPLEMENTED, "Quilkin doesn't currently support Delta xDS");
        return;
    }
    struct xds_request rq;
    memset(&rq, 0, sizeof(rq));
    struct err e = {{0}};
    int rc = xds_request_check_names(msg, len, MAX_NAMES, MAX_NAME_LEN, &e);
    if (rc == -E2BIG) {
        uint64_t n = atomic_fetch_add(&s->names_refused, 1) + 1;
        if (n % 1000 == 1)
            LOG_WARN("xds", "a request carries %s; stream ended (%llu so far)", e.msg,
                     (unsigned long long)n);
        grpc_stream_finish(gs, GRPC_RESOURCE_EXHAUSTED, e.msg);
        return;
    }
    if (rc < 0 || xds_request_decode(msg, len, &rq, &e) < 0) {
        grpc_stream_finish(gs, GRPC_INVALID_ARGUMENT, "malformed DiscoveryRequest");
        return;
    }
    const char *node = st->node_id ? st->node_id : (rq.node_id ? rq.node_id : "");
    int k = kind_of(rq.type_url);
    if (k >= 0)
        count(s, node, (enum kind)k, rq.has_error);
    if (!st->started) {
        first_request(s, st, &rq);
    } else if (k < 0) {
        LOG_DEBUG("xds", "node `%s` asked for unknown type %s; ignored", node,
                  rq.type_url ? rq.type_url : "");
    } else if (rq.has_error) {
        LOG_WARN("xds", "node `%s` rejected %s: %s", node, kind_url[k],
                 rq.error_message ? rq.error_message : "");
        st->subscribed[k] = true;
        send_response(s, st, (enum kind)k);
    } else if (is_uuid(rq.response_nonce)) {
        st->subscribed[k] = true; /* an ACK: nothing to send */
    } else {
        st->subscribed[k] = true;
        send_response(s, st, (enum kind)k);
    }
    xds_request_free(&rq);
}

/* spec xds.md §7 step 1: a stream that ends before its first request */
static void on_half_close(void *ctx, void *state, struct grpc_stream *gs)
{
    (void)ctx;
    struct ads_stream *st = state;
    if (!st->started && !st->delta)
        grpc_stream_finish(gs, GRPC_INVALID_ARGUMENT, "No message found");
}

static const struct grpc_server_ops ops = {
    .on_open = on_open,
    .on_message = on_message,
    .on_half_close = on_half_close,
    .on_close = on_close,
};

struct ads_server *ads_server_create(uint16_t port, const char *id, struct err *e)
{
    struct ads_server *s = calloc(1, sizeof(*s));
    if (!s || !(s->id = strdup(id ? id : ""))) {
        free(s);
        err_set(e, "out of memory");
        return NULL;
    }
    s->streams.next = s->streams.prev = &s->streams;
    pthread_mutex_init(&s->lock, NULL);
    for (int k = 0; k < K_COUNT; k++) {
        struct metric_row *other = &s->rows[METRIC_SLOTS - K_COUNT + k];
        snprintf(other->node, sizeof(other->node), "other");
        other->kind = (enum kind)k;
    }
    s->grpc = grpc_server_create(port, &ops, s, e);
    if (!s->grpc) {
        pthread_mutex_destroy(&s->lock);
        free(s->id);
        free(s);
        return NULL;
    }
    return s;
}

int ads_server_set_tls(struct ads_server *s, const char *cert, const char *key,
                       const char *client_ca, struct err *e)
{
    SSL_CTX *ctx = tls_server_ctx(cert, key, client_ca, e);
    if (!ctx)
        return -EINVAL;
    SSL_CTX_free(s->tls);
    s->tls = ctx;
    grpc_server_set_tls(s->grpc, ctx);
    return 0;
}

void ads_server_set_limits(struct ads_server *s, const struct grpc_server_limits *l)
{
    grpc_server_set_limits(s->grpc, l);
}

uint16_t ads_server_port(const struct ads_server *s)
{
    return grpc_server_port(s->grpc);
}

void ads_server_set_config(struct ads_server *s, struct config *cfg)
{
    if (s->cfg) /* versions start at 0 and count changes */
        for (int k = 0; k < K_COUNT; k++)
            s->version[k]++;
    config_destroy(s->cfg);
    s->cfg = cfg;
    for (int k = 0; k < K_COUNT; k++) { /* a new version: encode again at first use */
        grpc_shared_unref(s->body[k]);
        s->body[k] = NULL;
        s->too_large[k] = false;
    }
    for (struct ads_stream *st = s->streams.next; st != &s->streams; st = st->next)
        for (int k = 0; k < K_COUNT; k++)
            if (st->started && st->subscribed[k])
                send_response(s, st, (enum kind)k);
}

int ads_server_poll(struct ads_server *s, int timeout_ms, int extra_fd)
{
    return grpc_server_poll(s->grpc, timeout_ms, extra_fd);
}

unsigned ads_server_stream_count(const struct ads_server *s)
{
    return atomic_load(&s->n_streams);
}

void ads_server_destroy(struct ads_server *s)
{
    if (!s)
        return;
    grpc_server_destroy(s->grpc); /* calls on_close for every stream */
    for (int k = 0; k < K_COUNT; k++)
        grpc_shared_unref(s->body[k]);
    config_destroy(s->cfg);
    SSL_CTX_free(s->tls);
    pthread_mutex_destroy(&s->lock);
    free(s->id);
    free(s);
}
