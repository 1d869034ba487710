/* Match (spec filters.md §10): per direction, looks up one metadata key and runs the first
 * branch filter whose value equals it, else the fallthrough filter (Drop by default). Branch
 * and fallthrough filters are full filter instances built through the chain code, so any
 * registered filter nests, Match included. */
#include "base/err.h"
#include "base/metrics.h"
#include "config/node.h"
#include "filters/chain.h"
#include "filters/filter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MATCH_NAME "quilkin.filters.match.v1alpha1.Match"
#define DROP_NAME "quilkin.filters.drop.v1alpha1.Drop"

enum { DIR_READ = 0, DIR_WRITE = 1, N_DIRS = 2 };

/* A nested filter as written: name and label owned; config borrowed from the YAML tree,
 * which the caller of from_yaml keeps alive until create() has built the filter. create()
 * clears it: the filter may outlive that tree (a reload keeps unchanged filters). */
struct match_target {
    char *name;
    char *label;
    const struct node *config;
};

struct match_branch {
    struct md_value value; /* owned: bytes/items allocated by from_yaml, freed by args_free */
    struct match_target target;
};

struct match_dir_args {
    bool is_present;
    char *key;                     /* owned */
    struct match_branch *branches; /* owned array */
    size_t n_branches;
    bool has_fallthrough; /* else Drop */
    struct match_target fallthrough;
};

/* Filled by from_yaml, freed by args_free. */
struct match_args {
    struct match_dir_args dir[N_DIRS];
};

/* Runtime, built by create() and read-only afterwards. */
struct match_dir {
    bool is_present;
    uint32_t key;               /* interned metadataKey */
    const char *missing_reason; /* "no metadata found for KEY", owned by the state */
    struct filter *filters;     /* n_branches + 1 (the fallthrough last), owned; branch i
                                   runs when the args' branches[i].value equals */
    size_t n_branches;
};

/* The counters (spec §10, quilkin_filter_int_counter) are registry series shared by every
 * Match of every snapshot, so a reload keeps counting. v0.7.0 labels both event="read"
 * whatever the direction, so they are not split by direction. */
struct match_state {
    struct match_dir dir[N_DIRS];
    struct metric_counter *packets_matched;     /* packets_matched_total */
    struct metric_counter *packets_fallthrough; /* packets_fallthrough_total */
};

/* ---- config -------------------------------------------------------------------------------- */

static void value_free(struct md_value *v)
{
    if (v->kind == MD_STRING || v->kind == MD_BYTES) {
        free((void *)v->u.bytes);
    } else if (v->kind == MD_LIST) {
        struct md_value *items = (struct md_value *)v->u.items;
        for (uint32_t i = 0; i < v->len; i++)
            value_free(&items[i]);
        free(items);
    }
    memset(v, 0, sizeof(*v));
}

/* YAML -> metadata value as serde's untagged `Value` does: bool, u64, string, sequence. */
static int value_from_yaml(struct md_value *v, const struct node *n, struct err *e)
{
    switch (n->kind) {
    case NODE_BOOL:
        v->kind = MD_BOOL;
        v->u.b = n->b;
        return 0;
    case NODE_INT:
        if (n->is_neg && n->u != 0)
            break;
        v->kind = MD_NUMBER;
        v->u.n = n->u;
        return 0;
    case NODE_STR: {
        if (n->str_len > UINT32_MAX)
            break;
        uint8_t *copy = malloc(n->str_len ? n->str_len : 1);
        if (!copy)
            return node_error(n, e, "out of memory"), -ENOMEM;
        memcpy(copy, n->str, n->str_len);
        v->kind = MD_STRING;
        v->len = (uint32_t)n->str_len;
        v->u.bytes = copy;
        return 0;
    }
    case NODE_SEQ: {
        if (n->n_items > UINT32_MAX)
            break;
        struct md_value *items = calloc(n->n_items ? n->n_items : 1, sizeof(*items));
        if (!items)
            return node_error(n, e, "out of memory"), -ENOMEM;
        v->kind = MD_LIST;
        v->u.items = items;
        for (size_t i = 0; i < n->n_items; i++) {
            int rc = value_from_yaml(&items[i], n->items[i], e);
            if (rc < 0) {
                value_free(&items[i]); /* a half-built nested list; items[0..len) go later */
                return rc;
            }
            v->len++;
        }
        return 0;
    }
    case NODE_NULL:
    case NODE_FLOAT:
    case NODE_MAP:
        break;
    }
    return node_error(n, e, "data did not match any variant of untagged enum Value");
}

static int dup_str(const struct node *n, char **out, struct err *e)
{
    const char *s;
    int rc = node_get_str(n, &s, e);
    if (rc < 0)
        return rc;
    if (!(*out = strdup(s)))
        return node_error(n, e, "out of memory"), -ENOMEM;
    return 0;
}

/* The filter keys `name`, `label`, `config` of map n (a branch or the fallthrough). */
static int target_from_yaml(struct match_target *t, const struct node *n, struct err *e)
{
    const struct node *name = node_map_get(n, "name");
    if (!name)
        return node_error(n, e, "missing field `name`");
    int rc = dup_str(name, &t->name, e);
    if (rc < 0)
        return rc;
    const struct node *label = node_map_get(n, "label");
    if (label && label->kind != NODE_NULL && (rc = dup_str(label, &t->label, e)) < 0)
        return rc;
    const struct node *config = node_map_get(n, "config");
    t->config = config && config->kind != NODE_NULL ? config : NULL;
    return 0;
}

static void target_free(struct match_target *t)
{
    free(t->name);
    free(t->label);
    memset(t, 0, sizeof(*t));
}

static int dir_from_yaml(struct match_dir_args *d, const struct node *n, struct err *e)
{
    /* spec filters.md §1.2: unknown keys below the top level are ignored */
    int rc = node_check_map(n, NULL, 0, e);
    if (rc < 0)
        return rc;
    d->is_present = true;
    const struct node *key = node_map_get(n, "metadataKey");
    if (!key)
        return node_error(n, e, "missing field `metadataKey`");
    if ((rc = dup_str(key, &d->key, e)) < 0)
        return rc;
    const struct node *branches = node_map_get(n, "branches");
    if (!branches)
        return node_error(n, e, "missing field `branches`");
    if (branches->kind != NODE_SEQ)
        return node_error(branches, e, "invalid type: %s, expected a sequence",
                          node_kind_name(branches->kind));
    if (branches->n_items) {
        d->branches = calloc(branches->n_items, sizeof(*d->branches));
        if (!d->branches)
            return node_error(n, e, "out of memory"), -ENOMEM;
    }
    for (size_t i = 0; i < branches->n_items; i++) {
        const struct node *b = branches->items[i];
        struct match_branch *br = &d->branches[i];
        d->n_branches++; /* counted first so args_free frees a half-filled branch */
        if ((rc = node_check_map(b, NULL, 0, e)) < 0)
            return rc;
        const struct node *value = node_map_get(b, "value");
        if (!value)
            return node_error(b, e, "missing field `value`");
        if ((rc = value_from_yaml(&br->value, value, e)) < 0)
            return rc;
        if ((rc = target_from_yaml(&br->target, b, e)) < 0)
            return rc;
    }
    const struct node *ft = node_map_get(n, "fallthrough");
    if (ft && ft->kind != NODE_NULL) {
        if ((rc = node_check_map(ft, NULL, 0, e)) < 0)
            return rc;
        d->has_fallthrough = true;
        if ((rc = target_from_yaml(&d->fallthrough, ft, e)) < 0)
            return rc;
    }
    return 0;
}

static int match_from_yaml(void *args, const struct node *n, struct err *e)
{
    struct match_args *a = args;
    static const char *const keys[] = {"on_read", "on_write"};
    /* spec filters.md §1.2: Match rejects unknown top-level keys */
    int rc = node_check_map(n, keys, 2, e);
    if (rc < 0)
        return rc;
    for (int d = 0; d < N_DIRS; d++) {
        const struct node *dn = node_map_get(n, keys[d]);
        if (dn && dn->kind != NODE_NULL && (rc = dir_from_yaml(&a->dir[d], dn, e)) < 0)
            return rc;
    }
    /* Neither direction: rejected in create(), as v0.7.0 does (a creation error). */
    return 0;
}

static void match_args_free(void *args)
{
    struct match_args *a = args;
    for (int d = 0; d < N_DIRS; d++) {
        struct match_dir_args *da = &a->dir[d];
        free(da->key);
        for (size_t i = 0; i < da->n_branches; i++) {
            value_free(&da->branches[i].value);
            target_free(&da->branches[i].target);
        }
        free(da->branches);
        target_free(&da->fallthrough);
        memset(da, 0, sizeof(*da));
    }
}

/* ---- runtime ------------------------------------------------------------------------------- */

static void dir_deinit(struct match_dir *d)
{
    if (d->filters)
        for (size_t i = 0; i <= d->n_branches; i++)
            filter_deinit(&d->filters[i]);
    free(d->filters);
    free((void *)d->missing_reason);
    memset(d, 0, sizeof(*d));
}

static void match_destroy(struct filter *f)
{
    struct match_state *s = f->state;
    if (s)
        for (int d = 0; d < N_DIRS; d++)
            dir_deinit(&s->dir[d]);
    free(s);
    f->state = NULL;
}

static int dir_create(struct match_dir *d, const struct match_dir_args *da, const char *path,
                      const struct filter_build *b, struct err *e)
{
    int id = keytab_intern(b->keys, da->key);
    if (id < 0)
        return err_set(e, "out of memory interning `%s`", da->key), -ENOMEM;
    d->key = (uint32_t)id;
    char *reason = NULL;
    if (asprintf(&reason, "no metadata found for %s", da->key) < 0)
        return err_set(e, "out of memory"), -ENOMEM;
    d->missing_reason = reason;
    d->filters = calloc(da->n_branches + 1, sizeof(*d->filters));
    if (!d->filters)
        return err_set(e, "out of memory"), -ENOMEM;
    d->n_branches = da->n_branches;
    d->is_present = true;
    /* The fallthrough first, so a failed branch leaves only zeroed entries after it. */
    struct filter *ft = &d->filters[da->n_branches];
    int rc = da->has_fallthrough ? filter_build_one(ft, da->fallthrough.name, da->fallthrough.label,
                                                    da->fallthrough.config, b, e)
                                 : filter_build_one(ft, DROP_NAME, NULL, NULL, b, e);
    if (rc < 0) {
        err_prefix(e, "%s.fallthrough: ", path);
        return rc;
    }
    for (size_t i = 0; i < da->n_branches; i++) {
        const struct match_target *t = &da->branches[i].target;
        rc = filter_build_one(&d->filters[i], t->name, t->label, t->config, b, e);
        if (rc < 0) {
            err_prefix(e, "%s.branches[%zu]: ", path, i);
            return rc;
        }
    }
    return 0;
}

static int match_create(struct filter *f, const struct filter_build *b, struct err *e)
{
    const struct match_args *a = f->args;
    if (!a->dir[DIR_READ].is_present && !a->dir[DIR_WRITE].is_present)
        return err_set(e, "filter `%s` requires configuration, but none provided", MATCH_NAME);
    struct match_state *s = calloc(1, sizeof(*s));
    f->state = s;
    if (s) {
        s->packets_matched = filter_int_counter(
            MATCH_NAME, "packets_matched_total",
            "Total number of packets where the dynamic metadata matches a branch value", "read");
        s->packets_fallthrough = filter_int_counter(
            MATCH_NAME, "packets_fallthrough_total",
            "Total number of packets that are processed by the fallthrough configuration", "read");
    }
    if (!s || !s->packets_matched || !s->packets_fallthrough) {
        match_destroy(f);
        return err_set(e, "out of memory"), -ENOMEM;
    }
    static const char *const paths[] = {"on_read", "on_write"};
    for (int d = 0; d < N_DIRS; d++) {
        const struct match_dir_args *da = &a->dir[d];
        if (!da->is_present)
            continue;
        int rc = dir_create(&s->dir[d], da, paths[d], b, e);
        if (rc < 0) {
            match_destroy(f);
            return rc;
        }
    }
    /* the children are built: drop the borrowed config pointers before the tree goes */
    struct match_args *owned = f->args;
    for (int d = 0; d < N_DIRS; d++) {
        for (size_t i = 0; i < owned->dir[d].n_branches; i++)
            owned->dir[d].branches[i].target.config = NULL;
        owned->dir[d].fallthrough.config = NULL;
    }
    return 0;
}

static enum verdict run(const struct filter *f, struct pkt_ctx *c, int dir)
{
    const struct match_state *s = f->state;
    const struct match_dir *d = &s->dir[dir];
    if (!d->is_present)
        return VERDICT_PASS;
    const struct md_value *v = md_get(&c->md, d->key);
    if (!v) {
        c->drop_reason = d->missing_reason;
        return VERDICT_DROP;
    }
    const struct match_args *a = f->args;
    const struct match_branch *br = a->dir[dir].branches;
    const struct filter *target = &d->filters[d->n_branches];
    size_t i = 0;
    while (i < d->n_branches && !md_value_eq(&br[i].value, v))
        i++;
    if (i < d->n_branches) {
        target = &d->filters[i];
        metric_add(s->packets_matched, c->worker, 1);
    } else {
        metric_add(s->packets_fallthrough, c->worker, 1);
    }
    enum verdict (*op)(const struct filter *, struct pkt_ctx *) =
        dir == DIR_READ ? target->ops->read : target->ops->write;
    return op ? op(target, c) : VERDICT_PASS;
}

static enum verdict match_read(const struct filter *f, struct pkt_ctx *c)
{
    return run(f, c, DIR_READ);
}

static enum verdict match_write(const struct filter *f, struct pkt_ctx *c)
{
    return run(f, c, DIR_WRITE);
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char match_schema[] =
    "description: Runs the filter of the first branch whose value equals a metadata value.\n"
    "type: object\n"
    "properties:\n"
    "  on_read:\n"
    "    oneOf:\n"
    "      - type: 'null'\n"
    "      - $ref: '#/definitions/DirectionalConfig'\n"
    "  on_write:\n"
    "    oneOf:\n"
    "      - type: 'null'\n"
    "      - $ref: '#/definitions/DirectionalConfig'\n"
    "additionalProperties: false\n"
    "anyOf:\n"
    "  - required: [on_read]\n"
    "    properties:\n"
    "      on_read:\n"
    "        type: object\n"
    "  - required: [on_write]\n"
    "    properties:\n"
    "      on_write:\n"
    "        type: object\n"
    "definitions:\n"
    "  DirectionalConfig:\n"
    "    type: object\n"
    "    required: [metadataKey, branches]\n"
    "    properties:\n"
    "      metadataKey:\n"
    "        type: [string, number, boolean]\n"
    "      branches:\n"
    "        type: array\n"
    "        items:\n"
    "          $ref: '#/definitions/Branch'\n"
    "      fallthrough:\n"
    "        description: The filter run when no branch matches; Drop when absent.\n"
    "        oneOf:\n"
    "          - type: 'null'\n"
    "          - $ref: '#/definitions/Filter'\n"
    "  Branch:\n"
    "    allOf:\n"
    "      - $ref: '#/definitions/Filter'\n"
    "      - type: object\n"
    "        required: [value]\n"
    "        properties:\n"
    "          value:\n"
    "            $ref: '#/definitions/Value'\n"
    "  Filter:\n"
    "    type: object\n"
    "    required: [name]\n"
    "    properties:\n"
    "      name:\n"
    "        enum:\n"
    "          - quilkin.filters.capture.v1alpha1.Capture\n"
    "          - quilkin.filters.compress.v1alpha1.Compress\n"
    "          - quilkin.filters.concatenate.v1alpha1.Concatenate\n"
    "          - quilkin.filters.debug.v1alpha1.Debug\n"
    "          - quilkin.filters.drop.v1alpha1.Drop\n"
    "          - quilkin.filters.firewall.v1alpha1.Firewall\n"
    "          - quilkin.filters.load_balancer.v1alpha1.LoadBalancer\n"
    "          - quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit\n"
    "          - quilkin.filters.match.v1alpha1.Match\n"
    "          - quilkin.filters.pass.v1alpha1.Pass\n"
    "          - quilkin.filters.timestamp.v1alpha1.Timestamp\n"
    "          - quilkin.filters.token_router.v1alpha1.TokenRouter\n"
    "      label:\n"
    "        type: [string, number, boolean, 'null']\n"
    "      config:\n"
    "        description: The filter's own configuration (see its schema).\n"
    "  Value:\n"
    "    anyOf:\n"
    "      - type: boolean\n"
    "      - type: integer\n"
    "        minimum: 0\n"
    "        maximum: 18446744073709551615\n"
    "      - type: string\n"
    "      - type: array\n"
    "        items:\n"
    "          $ref: '#/definitions/Value'\n";

const struct filter_ops match_filter = {
    .name = MATCH_NAME,
    .args_size = sizeof(struct match_args),
    .need = CFG_REQUIRED,
    .schema = match_schema,
    .from_yaml = match_from_yaml,
    .args_free = match_args_free,
    .create = match_create,
    .read = match_read,
    .write = match_write,
    .destroy = match_destroy,
};
