/* TokenRouter (spec filters.md §13): on read, keeps only the endpoints whose quilkin.dev
 * tokens contain the Bytes value found under a metadata key (usually set by Capture); write
 * is a no-op. The token -> endpoints lookup is one probe of the snapshot's token index. */
#include "config/node.h"
#include "filters/filter.h"
#include "filters/token_index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_KEY "quilkin.dev/capture"

/* Owned by its struct filter; freed by token_router_args_free. */
struct token_router_args {
    char *key; /* owned; DEFAULT_KEY when not configured */
};

/* Shared read-only by every worker. */
struct token_router_state {
    uint32_t key; /* interned */
};

static int token_router_from_yaml(void *args, const struct node *n, struct err *e)
{
    struct token_router_args *a = args;
    const char *key = DEFAULT_KEY;
    if (n) {
        /* spec filters.md §1.2: unknown keys inside a filter config are ignored */
        int rc = node_check_map(n, NULL, 0, e);
        if (rc < 0)
            return rc;
        const struct node *k = node_map_get(n, "metadataKey");
        if (k && (rc = node_get_str(k, &key, e)) < 0)
            return rc;
    }
    a->key = strdup(key);
    if (!a->key)
        return n ? node_error(n, e, "out of memory") : -ENOMEM;
    return 0;
}

static void token_router_args_free(void *args)
{
    free(((struct token_router_args *)args)->key);
}

static int token_router_create(struct filter *f, const struct filter_build *b, struct err *e)
{
    const struct token_router_args *a = f->args;
    struct token_router_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    f->state = st;
    int key = keytab_intern(b->keys, a->key);
    if (key < 0)
        return -ENOMEM;
    st->key = (uint32_t)key;
    return 0;
}

static void token_router_destroy(struct filter *f)
{
    free(f->state);
    f->state = NULL;
}

/* Whether x is in sorted[0..n). */
static bool contains(const uint32_t *sorted, uint32_t n, uint32_t x)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < x)
            lo = mid + 1;
        else if (sorted[mid] > x)
            hi = mid;
        else
            return true;
    }
    return false;
}

static enum verdict drop(struct pkt_ctx *c, const char *reason)
{
    c->drop_reason = reason;
    return VERDICT_DROP;
}

/* Drop reasons are static strings (STYLE.md §3): the spec's messages without the key and
 * token they would interpolate (filters.md §1.3). */
static enum verdict token_router_read(const struct filter *f, struct pkt_ctx *c)
{
    const struct token_router_state *st = f->state;
    const struct md_value *v = md_get(&c->md, st->key);
    if (!v)
        return drop(c, "no routing token found");
    if (v->kind != MD_BYTES)
        return drop(c, "routing token was found but wasn't bytes");
    uint32_t n_hit;
    const uint32_t *hit = token_index_lookup(c->tokens, v->u.bytes, v->len, &n_hit);
    if (n_hit == 0)
        return drop(c, "no endpoint matched token");
    if (!c->eps.idx) {
        /* all_eps[0..eps.n): the index's list is ascending, so the answer is its prefix of
         * entries below eps.n, borrowed from the snapshot as is (usually the whole list) */
        uint32_t k = n_hit;
        if (c->eps.n < c->n_all_eps)
            for (k = 0; k < n_hit && hit[k] < c->eps.n; k++)
                ;
        if (k == 0)
            return drop(c, "no endpoint matched token");
        c->eps.idx = hit;
        c->eps.n = k;
        return VERDICT_PASS;
    }
    /* A narrowed set (e.g. by an earlier filter): keep its members holding the token, in its
     * order. O(m log n) for m candidates and n endpoints holding the token. */
    const uint32_t *cur = c->eps.idx;
    uint32_t m = c->eps.n, cap = m < n_hit ? m : n_hit, k = 0;
    uint32_t *out = cap == 1 ? &c->one_ep : arena_alloc(c->scratch, cap * sizeof(*out));
    if (!out)
        return drop(c, "no scratch memory for the endpoint set");
    for (uint32_t i = 0; i < m && k < cap; i++) {
        uint32_t ep = cur[i]; /* read before out[k] is written: out may alias cur */
        if (contains(hit, n_hit, ep))
            out[k++] = ep;
    }
    if (k == 0)
        return drop(c, "no endpoint matched token");
    c->eps.idx = out;
    c->eps.n = k;
    return VERDICT_PASS;
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char token_router_schema[] =
    "description: Sends each packet to the endpoints whose tokens hold the metadata value.\n"
    "type: [object, 'null']\n"
    "properties:\n"
    "  metadataKey:\n"
    "    type: [string, number, boolean]\n"
    "    default: quilkin.dev/capture\n";

const struct filter_ops token_router_filter = {
    .name = "quilkin.filters.token_router.v1alpha1.TokenRouter",
    .args_size = sizeof(struct token_router_args),
    .need = CFG_OPTIONAL,
    .schema = token_router_schema,
    .from_yaml = token_router_from_yaml,
    .args_free = token_router_args_free,
    .create = token_router_create,
    .read = token_router_read,
    .destroy = token_router_destroy,
};
