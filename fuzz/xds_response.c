/* libFuzzer target for the xDS resource decoders (src/xds/resources.c, filter_codec.c): the
 * input is decoded as a DiscoveryResponse whose resources are applied by type URL (Cluster,
 * Listener, ClusterLoadAssignment), and also directly as each resource kind; the result is
 * built into a snapshot, as the ADS client would. Any input must give errors or a snapshot,
 * never a crash, an overflow or a leak. As an oracle, whatever decodes must encode and decode
 * again. Seeds: fuzz/corpus/xds_response/, written by fuzz/mkseeds_xds.py. */
#include "base/err.h"
#include "base/metrics.h"
#include "config/config.h"
#include "config/node.h"
#include "proxy/snapshot.h"
#include "xds/resources.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char base_yaml[] = "id: fuzz\n"
                                "clusters:\n"
                                "  - endpoints:\n"
                                "      - address: 127.0.0.1:7000\n"
                                "        metadata: {quilkin.dev: {tokens: [AQID]}}\n"
                                "  - locality: {region: eu}\n"
                                "    endpoints: [{address: 10.0.0.1:7001}]\n"
                                "filters:\n"
                                "  - name: quilkin.filters.pass.v1alpha1.Pass\n";

/* Whatever decoded must encode, and the encoding must decode (servers re-serve what they
 * learnt: manage/relay). */
static void check_group_round_trip(const struct cluster_group *g)
{
    uint8_t *out = NULL;
    size_t len = 0;
    struct err e = {{0}};
    if (xds_cluster_encode(g, &out, &len) != 0)
        return; /* OOM only */
    struct cluster_group again;
    if (xds_cluster_decode(out, len, &again, &e) != 0 || again.n_endpoints != g->n_endpoints)
        abort();
    xds_group_free(&again);
    free(out);
    char *name = xds_cluster_resource_name(g);
    free(name);
}

static void check_filters_round_trip(const struct filter_cfg *fs, size_t n)
{
    uint8_t *out = NULL;
    size_t len = 0;
    struct err e = {{0}};
    if (xds_listener_encode(fs, n, &out, &len, &e) != 0)
        abort(); /* decoded configs are always packable */
    struct filter_cfg *again = NULL;
    size_t n2 = 0;
    if (xds_listener_decode(out, len, &again, &n2, &e) != 0 || n2 != n)
        abort();
    free(out);
    for (size_t i = 0; i < n2; i++) {
        free(again[i].name);
        node_free(again[i].owned_config);
    }
    free(again);
}

static void apply_groups(struct config *cfg, struct cluster_group *gs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check_group_round_trip(&gs[i]);
    if (xds_apply_clusters(cfg, gs, n) != 0)
        return; /* OOM: the groups were freed */
    for (size_t i = 0; i < n; i++)
        xds_group_free(&gs[i]); /* no-ops: contents were taken */
}

/* Decodes one resource as `type_url` says and applies it; errors just skip it. */
static void apply_resource(struct config *cfg, const char *type_url, const uint8_t *v, size_t len)
{
    struct err e = {{0}};
    if (strcmp(type_url, XDS_TYPE_CLUSTER) == 0) {
        struct cluster_group g;
        if (xds_cluster_decode(v, len, &g, &e) == 0)
            apply_groups(cfg, &g, 1);
    } else if (strcmp(type_url, XDS_TYPE_LISTENER) == 0) {
        struct filter_cfg *fs = NULL;
        size_t n = 0;
        if (xds_listener_decode(v, len, &fs, &n, &e) == 0) {
            check_filters_round_trip(fs, n);
            xds_apply_filters(cfg, fs, n);
            free(fs);
        }
    } else if (strcmp(type_url, XDS_TYPE_CLA) == 0) {
        struct cluster_group *gs = NULL;
        size_t n = 0;
        char *name = NULL;
        if (xds_cla_decode(v, len, &name, &gs, &n, &e) == 0) {
            xds_merge_groups(cfg, gs, n); /* as the client publishes EDS endpoints */
            apply_groups(cfg, gs, n);
            free(gs);
            free(name);
        }
    }
}

/* Snapshot building resolves DNS names (blocking); the fuzzer drops name endpoints. */
static void drop_dns_names(struct config *cfg)
{
    for (size_t g = 0; g < cfg->n_groups; g++) {
        struct cluster_group *grp = &cfg->groups[g];
        size_t kept = 0;
        for (size_t i = 0; i < grp->n_endpoints; i++) {
            struct endpoint_cfg *ep = &grp->endpoints[i];
            if (!ep->host) {
                grp->endpoints[kept++] = *ep;
                continue;
            }
            free(ep->host);
            for (size_t t = 0; t < ep->n_tokens; t++)
                free(ep->tokens[t].bytes);
            free(ep->tokens);
            node_free(ep->owned_metadata);
        }
        grp->n_endpoints = kept;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err e = {{0}};
    struct config *cfg = NULL;
    if (config_parse(base_yaml, sizeof(base_yaml) - 1, "fuzz.yaml", &cfg, &e) != 0)
        abort();

    struct xds_response r;
    if (xds_response_decode(data, size, &r, &e) == 0) {
        for (size_t i = 0; i < r.n_resources; i++)
            apply_resource(cfg, r.resources[i].type_url, r.resources[i].value, r.resources[i].len);
        uint8_t *out = NULL;
        size_t len = 0;
        struct xds_response again;
        if (xds_response_encode(&r, &out, &len) == 0) {
            if (xds_response_decode(out, len, &again, &e) != 0 ||
                again.n_resources != r.n_resources)
                abort();
            xds_response_free(&again);
            free(out);
        }
        xds_response_free(&r);
    }
    struct xds_request q;
    if (xds_request_decode(data, size, &q, &e) == 0)
        xds_request_free(&q);
    /* the raw bytes as each resource kind */
    apply_resource(cfg, XDS_TYPE_CLUSTER, data, size);
    apply_resource(cfg, XDS_TYPE_LISTENER, data, size);
    apply_resource(cfg, XDS_TYPE_CLA, data, size);

    drop_dns_names(cfg);
    struct snapshot *snap = NULL;
    if (snapshot_create(cfg, 1, NULL, &snap, &e) == 0)
        snapshot_destroy(snap); /* owns cfg */
    else
        config_destroy(cfg);
    metrics_reset_for_tests(); /* filter series (e.g. per metadata key) must not pile up */
    return 0;
}
