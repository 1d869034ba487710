/* ADS server; see ads_server.h. Each stream remembers its node id, the resource names of its
 * first request and the set of types it subscribed; a change pushes a response of each of
 * those types to each stream. */
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
#define METRIC_SLOTS 64

enum kind {
    K_CLUSTER = 0,
    K_LISTENER,
    K_COUNT,
};

static const char *const kind_url[K_COUNT] = {XDS_TYPE_CLUSTER, XDS_TYPE_LISTENER};

struct ads_stream {
    struct ads_stream *next, *prev;
    struct grpc_stream *gs;
    bool delta; /* a Delta stream: answered UNIMPLEMENTED on its first message */
    bool started;
    char *node_id;
    char **names; /* resource_names of the first request */
    size_t n_names;
    bool subscribed[K_COUNT];
};

struct metric_row {
    char node[128];
    enum kind kind;
    uint64_t requests, nacks;
};

struct ads_server {
    struct grpc_server *grpc;
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
    if (!row && s->n_rows < METRIC_SLOTS) {
        row = &s->rows[s->n_rows++];
        snprintf(row->node, sizeof(row->node), "%s", node);
        row->kind = k;
    }
    if (row) {
        row->requests += !nack;
        row->nacks += nack;
    }
    pthread_mutex_unlock(&s->lock);
}

void ads_server_render_metrics(struct ads_server *s, struct strbuf *out)
{
    char labels[512], node[300];
    pthread_mutex_lock(&s->lock);
    prom_header(out, "quilkin_discovery_requests", "counter", "Total DiscoveryRequests");
    for (unsigned i = 0; i < s->n_rows; i++) {
        prom_escape(node, sizeof(node), s->rows[i].node);
        snprintf(labels, sizeof(labels), "node=\"%s\",type=\"%s\"", node,
                 kind_url[s->rows[i].kind]);
        prom_sample_u64(out, "quilkin_discovery_requests", labels,
                        s->rows[i].requests + s->rows[i].nacks);
    }
    prom_header(out, "quilkin_xds_nacks", "counter", "Total requests that carried an error");
    for (unsigned i = 0; i < s->n_rows; i++) {
        prom_escape(node, sizeof(node), s->rows[i].node);
        snprintf(labels, sizeof(labels), "control_plane=\"%s\",type=\"%s\"", node,
                 kind_url[s->rows[i].kind]);
        prom_sample_u64(out, "quilkin_xds_nacks", labels, s->rows[i].nacks);
    }
    pthread_mutex_unlock(&s->lock);
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

/* Does a group match a requested name "region[:zone[:sub_zone]]"? */
static bool group_matches(const struct cluster_group *g, const char *name)
{
    if (!g->has_locality)
        return false;
    char *want = xds_cluster_resource_name(g);
    bool ok = want && strcmp(want, name) == 0;
    free(want);
    return ok;
}

/* Builds and sends one response of kind k to st (spec xds.md §7.1). */
static void send_response(struct ads_server *s, struct ads_stream *st, enum kind k)
{
    if (!s->cfg)
        return;
    struct xds_response rs;
    memset(&rs, 0, sizeof(rs));
    char version[24], nonce[37];
    snprintf(version, sizeof(version), "%llu", (unsigned long long)s->version[k]);
    uuid4(nonce);
    rs.version_info = version;
    rs.nonce = nonce;
    rs.type_url = (char *)kind_url[k];
    rs.control_plane_id = s->id;
    size_t cap = k == K_CLUSTER ? s->cfg->n_groups : 1;
    rs.resources = calloc(cap ? cap : 1, sizeof(*rs.resources));
    struct err e = {{0}};
    bool ok = rs.resources != NULL;
    if (ok && k == K_CLUSTER) {
        for (size_t g = 0; ok && g < s->cfg->n_groups; g++) {
            const struct cluster_group *grp = &s->cfg->groups[g];
            bool wanted = st->n_names == 0;
            for (size_t i = 0; !wanted && i < st->n_names; i++)
                wanted = group_matches(grp, st->names[i]);
            if (!wanted)
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
    if (ok && xds_response_encode(&rs, &buf, &len) == 0)
        grpc_stream_send(st->gs, buf, len);
    else
        LOG_ERROR("xds", "cannot encode a %s response: %s", kind_url[k],
                  e.msg[0] ? e.msg : "out of memory");
    free(buf);
    for (size_t i = 0; i < rs.n_resources; i++)
        free(rs.resources[i].value);
    free(rs.resources);
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
    for (size_t i = 0; i < st->n_names; i++)
        free(st->names[i]);
    free(st->names);
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
    st->names = rq->resource_names;
    st->n_names = rq->n_resource_names;
    rq->resource_names = NULL;
    rq->n_resource_names = 0;
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
    if (xds_request_decode(msg, len, &rq, &e) < 0) {
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
    config_destroy(s->cfg);
    SSL_CTX_free(s->tls);
    pthread_mutex_destroy(&s->lock);
    free(s->id);
    free(s);
}
