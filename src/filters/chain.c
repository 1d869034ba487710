/* Chain construction and execution. Construction may allocate (control thread); running
 * never does. */
#include "filters/chain.h"

#include "base/err.h"
#include "config/config.h"
#include "config/node.h"
#include "filters/registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int filter_build_one(struct filter *f, const char *name, const char *label,
                     const struct node *config, const struct filter_build *b, struct err *e)
{
    const struct filter_ops *ops = registry_find(name);
    if (!ops)
        return err_set(e, "filter `%s` not found", name);
    f->ops = ops;
    if (config && config->kind == NODE_NULL)
        config = NULL;
    if (!config && ops->need == CFG_REQUIRED)
        return err_set(e, "filter `%s` requires configuration, but none provided", name);
    if (config && ops->need == CFG_NONE)
        return node_error(config, e,
                          "Deserialization failed: filter `%s`: this filter takes no "
                          "configuration, found %s",
                          name, node_kind_name(config->kind));
    int rc = -ENOMEM;
    if (label && !(f->label = strdup(label)))
        goto fail;
    if (ops->args_size) {
        f->args = calloc(1, ops->args_size);
        if (!f->args)
            goto fail;
    }
    if (ops->from_yaml) {
        rc = ops->from_yaml(f->args, config, e);
        if (rc < 0) {
            err_prefix(e, "Deserialization failed: filter `%s`: ", name);
            goto fail;
        }
    }
    if (ops->create) {
        rc = ops->create(f, b, e);
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:
    if (rc == -ENOMEM && !err_is_set(e))
        err_set(e, "out of memory building filter `%s`", name);
    filter_deinit(f);
    return rc;
}

void filter_deinit(struct filter *f)
{
    if (f->ops && f->ops->destroy && (f->state || f->per_worker))
        f->ops->destroy(f);
    if (f->ops && f->ops->args_free && f->args)
        f->ops->args_free(f->args);
    free(f->args);
    free(f->label);
    memset(f, 0, sizeof(*f));
}

/* Turns a filter's message into "FILE:LINE:COL: filters[i]: ...". When the message holds
 * a node position ("line L column C: ", from node_error) that position is the most precise
 * one and is moved to the front; otherwise the entry's own position is used. */
static void locate(struct err *e, const struct filter_cfg *cfg, size_t i)
{
    if (!cfg->line) {
        err_prefix(e, "filters[%zu]: ", i);
        return;
    }
    unsigned line = cfg->line, col = cfg->col;
    char *at = strstr(e->msg, "line ");
    unsigned l, c;
    int used = 0;
    if (at && sscanf(at, "line %u column %u: %n", &l, &c, &used) == 2 && used > 0) {
        line = l;
        col = c;
        memmove(at, at + used, strlen(at + used) + 1);
    }
    err_prefix(e, "%s:%u:%u: filters[%zu]: ", cfg->source ? cfg->source : "", line, col, i);
}

int chain_build(struct chain *ch, const struct filter_cfg *cfgs, size_t n,
                const struct filter_build *b, struct err *e)
{
    ch->filters = NULL;
    ch->n = 0;
    if (n == 0)
        return 0;
    struct filter *fs = calloc(n, sizeof(*fs));
    if (!fs)
        return err_set(e, "out of memory building the filter chain"), -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = filter_build_one(&fs[i], cfgs[i].name, cfgs[i].label, cfgs[i].config, b, e);
        if (rc < 0) {
            locate(e, &cfgs[i], i);
            for (size_t j = 0; j < i; j++)
                filter_deinit(&fs[j]);
            free(fs);
            return rc;
        }
    }
    ch->filters = fs;
    ch->n = n;
    return 0;
}

void chain_deinit(struct chain *ch)
{
    for (size_t i = 0; i < ch->n; i++)
        filter_deinit(&ch->filters[i]);
    free(ch->filters);
    ch->filters = NULL;
    ch->n = 0;
}

enum verdict chain_read(const struct chain *ch, struct pkt_ctx *c)
{
    for (size_t i = 0; i < ch->n; i++) {
        const struct filter *f = &ch->filters[i];
        if (f->ops->read && f->ops->read(f, c) != VERDICT_PASS)
            return VERDICT_DROP;
    }
    return VERDICT_PASS;
}

enum verdict chain_write(const struct chain *ch, struct pkt_ctx *c)
{
    for (size_t i = ch->n; i-- > 0;) {
        const struct filter *f = &ch->filters[i];
        if (f->ops->write && f->ops->write(f, c) != VERDICT_PASS)
            return VERDICT_DROP;
    }
    return VERDICT_PASS;
}
