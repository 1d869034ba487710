/* Config -> JSON (spec config.md §7). */
#include "config/dump.h"

#include "base/b64.h"
#include "base/strbuf.h"
#include "config/config.h"
#include "config/node.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void node_dump_json(const struct node *n, struct strbuf *out)
{
    if (!n) {
        strbuf_printf(out, "null");
        return;
    }
    switch (n->kind) {
    case NODE_NULL:
        strbuf_printf(out, "null");
        break;
    case NODE_BOOL:
        strbuf_printf(out, n->b ? "true" : "false");
        break;
    case NODE_INT:
        strbuf_printf(out, "%s%llu", n->is_neg ? "-" : "", (unsigned long long)n->u);
        break;
    case NODE_FLOAT:
        if (isfinite(n->f)) {
            char num[40];
            strbuf_printf(out, "%s", fmt_double(num, sizeof(num), n->f));
        }
        else
            strbuf_printf(out, "null"); /* JSON has no inf/nan */
        break;
    case NODE_STR:
        strbuf_json_string(out, n->str, n->str_len);
        break;
    case NODE_SEQ:
        strbuf_printf(out, "[");
        for (size_t i = 0; i < n->n_items; i++) {
            if (i)
                strbuf_printf(out, ",");
            node_dump_json(n->items[i], out);
        }
        strbuf_printf(out, "]");
        break;
    case NODE_MAP:
        strbuf_printf(out, "{");
        for (size_t i = 0; i < n->n_pairs; i++) {
            if (i)
                strbuf_printf(out, ",");
            const struct node *k = n->pairs[i].key;
            strbuf_json_string(out, k->str, k->str_len);
            strbuf_printf(out, ":");
            node_dump_json(n->pairs[i].value, out);
        }
        strbuf_printf(out, "}");
        break;
    }
}

static void dump_endpoint(const struct endpoint_cfg *ep, struct strbuf *out)
{
    /* display form (spec config.md §4.1): IP:port, [IPv6]:port, or NAME:port */
    char addr[ADDR_STR_CAP];
    struct strbuf text = {0};
    if (ep->host)
        strbuf_printf(&text, "%s:%u", ep->host, ep->addr.port);
    else
        strbuf_printf(&text, "%s", addr_format(&ep->addr, addr));
    strbuf_printf(out, "{\"address\":");
    strbuf_json_string(out, text.buf ? text.buf : "", text.len);
    if (text.failed)
        out->failed = true;
    strbuf_deinit(&text);
    /* quilkin.dev first, with tokens in bytewise order, then the user keys */
    strbuf_printf(out, ",\"metadata\":{\"quilkin.dev\":{\"tokens\":[");
    for (size_t t = 0; t < ep->n_tokens; t++) {
        char *b64 = malloc(b64_encoded_len(ep->tokens[t].len) + 1);
        if (!b64) {
            out->failed = true;
            return;
        }
        b64_encode(ep->tokens[t].bytes, ep->tokens[t].len, b64);
        if (t)
            strbuf_printf(out, ",");
        strbuf_json_string(out, b64, strlen(b64));
        free(b64);
    }
    strbuf_printf(out, "]}");
    const struct node *md = ep->metadata;
    for (size_t i = 0; md && md->kind == NODE_MAP && i < md->n_pairs; i++) {
        const struct node *k = md->pairs[i].key;
        if (strcmp(k->str, "quilkin.dev") == 0)
            continue;
        strbuf_printf(out, ",");
        strbuf_json_string(out, k->str, k->str_len);
        strbuf_printf(out, ":");
        node_dump_json(md->pairs[i].value, out);
    }
    strbuf_printf(out, "}}");
}

int config_dump_json(const struct config *c, struct strbuf *out)
{
    strbuf_printf(out, "{\"clusters\":[");
    for (size_t g = 0; g < c->n_groups; g++) {
        const struct cluster_group *grp = &c->groups[g];
        if (g)
            strbuf_printf(out, ",");
        strbuf_printf(out, "{\"endpoints\":[");
        for (size_t i = 0; i < grp->n_endpoints; i++) {
            if (i)
                strbuf_printf(out, ",");
            dump_endpoint(&grp->endpoints[i], out);
        }
        strbuf_printf(out, "],\"locality\":");
        if (grp->has_locality) {
            const struct locality *l = &grp->locality;
            strbuf_printf(out, "{\"region\":");
            strbuf_json_string(out, l->region, strlen(l->region));
            strbuf_printf(out, ",\"zone\":");
            strbuf_json_string(out, l->zone, strlen(l->zone));
            strbuf_printf(out, ",\"sub_zone\":");
            strbuf_json_string(out, l->sub_zone, strlen(l->sub_zone));
            strbuf_printf(out, "}");
        } else {
            strbuf_printf(out, "null");
        }
        strbuf_printf(out, "}");
    }
    strbuf_printf(out, "],\"filters\":[");
    for (size_t i = 0; i < c->n_filters; i++) {
        const struct filter_cfg *f = &c->filters[i];
        if (i)
            strbuf_printf(out, ",");
        strbuf_printf(out, "{\"name\":");
        strbuf_json_string(out, f->name, strlen(f->name));
        strbuf_printf(out, ",\"label\":");
        if (f->label)
            strbuf_json_string(out, f->label, strlen(f->label));
        else
            strbuf_printf(out, "null");
        strbuf_printf(out, ",\"config\":");
        node_dump_json(f->config, out);
        strbuf_printf(out, "}");
    }
    strbuf_printf(out, "],\"id\":");
    strbuf_json_string(out, c->id, strlen(c->id));
    strbuf_printf(out, ",\"version\":\"v1alpha1\"}");
    return out->failed ? -ENOMEM : 0;
}

void config_view_init(struct config_view *v)
{
    pthread_mutex_init(&v->lock, NULL);
    v->json = NULL;
    v->len = 0;
}

void config_view_deinit(struct config_view *v)
{
    free(v->json);
    v->json = NULL;
    pthread_mutex_destroy(&v->lock);
}

void config_view_set(struct config_view *v, const struct config *c)
{
    struct strbuf json = {0};
    config_dump_json(c, &json);
    if (json.failed)
        strbuf_deinit(&json);
    pthread_mutex_lock(&v->lock);
    free(v->json);
    v->json = json.buf; /* NULL after a failure: rendered as null */
    v->len = json.len;
    pthread_mutex_unlock(&v->lock);
}

int config_view_render(struct config_view *v, struct strbuf *out)
{
    pthread_mutex_lock(&v->lock);
    if (v->json)
        strbuf_append(out, v->json, v->len);
    else
        strbuf_printf(out, "null");
    pthread_mutex_unlock(&v->lock);
    return out->failed ? -ENOMEM : 0;
}
