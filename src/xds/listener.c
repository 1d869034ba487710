/* envoy.config.listener.v3.Listener resources <-> our filter list (spec xds.md §6.3): the
 * first filter chain's Filters, each through xds/filter_codec.c. Pure: no I/O, no threads, no
 * global state. */
#include "xds/resources.h"

#include "base/err.h"
#include "config/config.h"
#include "config/node.h"
#include "xds/filter_codec.h"
#include "xds/pb_util.h"

#include "envoy/config/listener/v3/listener.pb-c.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int oom(struct err *e)
{
    err_set(e, "out of memory");
    return -ENOMEM;
}

static void filter_cfgs_free(struct filter_cfg *fs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(fs[i].name);
        free(fs[i].label);
        node_free(fs[i].owned_config);
    }
    free(fs);
}

int xds_listener_decode(const uint8_t *buf, size_t len, struct filter_cfg **filters, size_t *n,
                        struct err *e)
{
    *filters = NULL;
    *n = 0;
    Envoy__Config__Listener__V3__Listener *m =
        (void *)pb_unpack(&envoy__config__listener__v3__listener__descriptor, buf, len, e);
    if (!m)
        return -EINVAL;
    /* spec xds.md §6.3: only the first chain counts; none at all is an empty chain. */
    const Envoy__Config__Listener__V3__FilterChain *ch =
        m->n_filter_chains ? m->filter_chains[0] : NULL;
    size_t count = ch ? ch->n_filters : 0, done = 0;
    struct filter_cfg *fs = calloc(count ? count : 1, sizeof(*fs));
    int rc = fs ? 0 : oom(e);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        const Envoy__Config__Listener__V3__Filter *f = ch->filters[i];
        if (!f)
            continue;
        const char *name;
        struct node *config;
        if ((rc = filter_codec_decode_filter(f, 0, &name, &config, e)) < 0)
            break;
        struct filter_cfg *fc = &fs[done++];
        fc->owned_config = config;
        fc->config = config;
        if (!(fc->name = strdup(name)))
            rc = oom(e);
    }
    envoy__config__listener__v3__listener__free_unpacked(m, NULL);
    if (rc < 0) {
        filter_cfgs_free(fs, done);
        return rc;
    }
    if (done == 0) {
        free(fs);
        fs = NULL;
    }
    *filters = fs;
    *n = done;
    return 0;
}

int xds_listener_encode(const struct filter_cfg *filters, size_t n, uint8_t **out, size_t *out_len,
                        struct err *e)
{
    struct pb_pool p = {0};
    Envoy__Config__Listener__V3__Listener m = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT;
    Envoy__Config__Listener__V3__FilterChain ch = ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN__INIT;
    Envoy__Config__Listener__V3__FilterChain *chains[1] = {&ch};
    m.filter_chains = chains;
    m.n_filter_chains = 1;
    int rc = 0;
    if (!(ch.filters = pb_pool_alloc(&p, n * sizeof(*ch.filters))))
        rc = oom(e);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!(ch.filters[i] =
                  filter_codec_encode_filter(&p, filters[i].name, filters[i].config, 0, e, &rc)))
            break;
        ch.n_filters++;
    }
    if (rc == 0 && pb_pack(&m.base, out, out_len) < 0)
        rc = oom(e);
    pb_pool_free(&p);
    return rc;
}

char *xds_listener_name(const uint8_t *buf, size_t len)
{
    struct err e = {{0}};
    Envoy__Config__Listener__V3__Listener *m =
        (void *)pb_unpack(&envoy__config__listener__v3__listener__descriptor, buf, len, &e);
    if (!m)
        return NULL;
    char *name = strdup(m->name ? m->name : "");
    envoy__config__listener__v3__listener__free_unpacked(m, NULL);
    return name;
}
