/* Deep copy of a config, for control planes that apply changes to a copy of the current
 * config and publish the result. The copy owns everything (no YAML root: metadata and
 * filter configs become owned subtrees). */
#include "config/config.h"
#include "config/node.h"

#include <stdlib.h>
#include <string.h>

static char *dup_or_null(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *ok = false;
    return d;
}

int config_clone_endpoint(const struct endpoint_cfg *src, struct endpoint_cfg *dst)
{
    bool ok = true;
    memset(dst, 0, sizeof(*dst));
    dst->addr = src->addr;
    dst->host = dup_or_null(src->host, &ok);
    if (src->n_tokens) {
        dst->tokens = calloc(src->n_tokens, sizeof(*dst->tokens));
        if (!dst->tokens)
            ok = false;
        for (size_t i = 0; ok && i < src->n_tokens; i++) {
            dst->tokens[i].len = src->tokens[i].len;
            dst->tokens[i].bytes = malloc(src->tokens[i].len ? src->tokens[i].len : 1);
            if (!dst->tokens[i].bytes) {
                ok = false;
                break;
            }
            if (src->tokens[i].len)
                memcpy(dst->tokens[i].bytes, src->tokens[i].bytes, src->tokens[i].len);
            dst->n_tokens = i + 1;
        }
    }
    dst->is_draining = src->is_draining;
    if (ok && src->metadata) {
        dst->owned_metadata = node_clone(src->metadata);
        dst->metadata = dst->owned_metadata;
        ok = dst->owned_metadata != NULL;
    }
    return ok ? 0 : -1;
}

struct config *config_clone(const struct config *src)
{
    struct config *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    bool ok = true;
    c->source = dup_or_null(src->source, &ok);
    c->id = dup_or_null(src->id, &ok);
    if (ok && src->n_groups) {
        c->groups = calloc(src->n_groups, sizeof(*c->groups));
        ok = c->groups != NULL;
    }
    for (size_t g = 0; ok && g < src->n_groups; g++) {
        const struct cluster_group *sg = &src->groups[g];
        struct cluster_group *dg = &c->groups[g];
        c->n_groups = g + 1;
        dg->has_locality = sg->has_locality;
        dg->locality.region = dup_or_null(sg->locality.region ? sg->locality.region : "", &ok);
        dg->locality.zone = dup_or_null(sg->locality.zone ? sg->locality.zone : "", &ok);
        dg->locality.sub_zone =
            dup_or_null(sg->locality.sub_zone ? sg->locality.sub_zone : "", &ok);
        if (ok && sg->n_endpoints) {
            dg->endpoints = calloc(sg->n_endpoints, sizeof(*dg->endpoints));
            ok = dg->endpoints != NULL;
        }
        for (size_t i = 0; ok && i < sg->n_endpoints; i++) {
            dg->n_endpoints = i + 1;
            ok = config_clone_endpoint(&sg->endpoints[i], &dg->endpoints[i]) == 0;
        }
    }
    if (ok && src->n_filters) {
        c->filters = calloc(src->n_filters, sizeof(*c->filters));
        ok = c->filters != NULL;
    }
    for (size_t i = 0; ok && i < src->n_filters; i++) {
        const struct filter_cfg *sf = &src->filters[i];
        struct filter_cfg *df = &c->filters[i];
        c->n_filters = i + 1;
        df->source = c->source;
        df->line = sf->line;
        df->col = sf->col;
        df->name = dup_or_null(sf->name, &ok);
        df->label = dup_or_null(sf->label, &ok);
        if (ok && sf->config) {
            df->owned_config = node_clone(sf->config);
            df->config = df->owned_config;
            ok = df->owned_config != NULL;
        }
    }
    if (!ok) {
        config_destroy(c);
        return NULL;
    }
    return c;
}
