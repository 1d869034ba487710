/* google.protobuf.Struct <-> YAML-shaped node maps, for endpoint metadata (spec xds.md §6.2)
 * in Cluster and ClusterLoadAssignment resources. Pure: no I/O, no state. */
#include "xds/metadata_struct.h"

#include "config/node.h"
#include "xds/pb_util.h"

#include "google/protobuf/struct.pb-c.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- google.protobuf.Struct/Value -> node ------------------------------------------------- */

/* Rust's `f64 as i64`: truncation toward zero, saturating, NaN -> 0. */
static struct node *number_node(double d)
{
    if (isnan(d))
        return node_new_int(false, 0);
    if (d >= 9223372036854775807.0)
        return node_new_int(false, (uint64_t)INT64_MAX);
    if (d <= -9223372036854775808.0)
        return node_new_int(true, (uint64_t)1 << 63);
    int64_t v = (int64_t)d;
    return v < 0 ? node_new_int(true, (uint64_t)0 - (uint64_t)v) : node_new_int(false, (uint64_t)v);
}

/* NULL on OOM; kindless values are the caller's to skip. */
static struct node *value_to_node(const Google__Protobuf__Value *v)
{
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        return number_node(v->number_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: {
        const char *s = pb_str(v->string_value);
        return node_new_str(s, strlen(s));
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return node_new_bool(v->bool_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        if (v->struct_value)
            return metadata_struct_to_node(v->struct_value, NULL);
        return node_new_map();
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        struct node *seq = node_new_seq();
        const Google__Protobuf__ListValue *l = v->list_value;
        for (size_t i = 0; seq && l && i < l->n_values; i++) {
            const Google__Protobuf__Value *item = l->values[i];
            if (!item || item->kind_case == GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET)
                continue;
            if (node_seq_append(seq, value_to_node(item)) < 0) {
                node_free(seq);
                return NULL;
            }
        }
        return seq;
    }
    default:
        return node_new_null();
    }
}

struct key_slot {
    const char *key;
    size_t idx;
};

static int key_slot_cmp(const void *pa, const void *pb)
{
    const struct key_slot *a = pa, *b = pb;
    int r = strcmp(a->key, b->key);
    if (r)
        return r;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Sorting (key, index) pairs puts each key's last occurrence at the end of its run. */
int metadata_struct_last_wins(const char *const *keys, size_t n, bool *keep)
{
    struct key_slot *s = calloc(n ? n : 1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        keep[i] = false;
        if (keys[i])
            s[m++] = (struct key_slot){keys[i], i};
    }
    qsort(s, m, sizeof(*s), key_slot_cmp);
    for (size_t i = 0; i < m; i++)
        if (i + 1 == m || strcmp(s[i].key, s[i + 1].key) != 0)
            keep[s[i].idx] = true;
    free(s);
    return 0;
}

struct node *metadata_struct_to_node(const Google__Protobuf__Struct *s, const char *skip)
{
    struct node *map = node_new_map();
    if (!map || !s->n_fields)
        return map;
    const char **keys = calloc(s->n_fields, sizeof(*keys));
    bool *keep = calloc(s->n_fields, sizeof(*keep));
    bool ok = keys && keep;
    for (size_t i = 0; ok && i < s->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *f = s->fields[i];
        if (f && f->value && f->value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET &&
            !(skip && strcmp(pb_str(f->key), skip) == 0))
            keys[i] = pb_str(f->key);
    }
    ok = ok && metadata_struct_last_wins(keys, s->n_fields, keep) == 0;
    for (size_t i = 0; ok && i < s->n_fields; i++)
        if (keep[i])
            ok = node_map_append(map, keys[i], strlen(keys[i]),
                                 value_to_node(s->fields[i]->value)) == 0;
    free(keys);
    free(keep);
    if (!ok) {
        node_free(map);
        return NULL;
    }
    return map;
}

/* ---- node -> google.protobuf.Struct/Value ------------------------------------------------- */

static Google__Protobuf__Value *node_to_value(struct pb_pool *p, const struct node *n);

Google__Protobuf__Struct *metadata_struct_from_node(struct pb_pool *p, const struct node *map,
                                                    const char *skip, size_t extra)
{
    Google__Protobuf__Struct *s = pb_pool_alloc(p, sizeof(*s));
    size_t cap = map->n_pairs + extra;
    Google__Protobuf__Struct__FieldsEntry **fields = pb_pool_alloc(p, cap * sizeof(*fields));
    if (!s || !fields)
        return NULL;
    google__protobuf__struct__init(s);
    s->fields = fields;
    for (size_t i = 0; i < map->n_pairs; i++) {
        const struct node *k = map->pairs[i].key;
        if (skip && strcmp(k->str, skip) == 0)
            continue;
        Google__Protobuf__Struct__FieldsEntry *f = pb_pool_alloc(p, sizeof(*f));
        if (!f)
            return NULL;
        google__protobuf__struct__fields_entry__init(f);
        f->key = k->str;
        if (!(f->value = node_to_value(p, map->pairs[i].value)))
            return NULL;
        fields[s->n_fields++] = f;
    }
    return s;
}

static Google__Protobuf__Value *node_to_value(struct pb_pool *p, const struct node *n)
{
    Google__Protobuf__Value *v = pb_pool_alloc(p, sizeof(*v));
    if (!v)
        return NULL;
    google__protobuf__value__init(v);
    switch (n->kind) {
    case NODE_NULL:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        v->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        break;
    case NODE_BOOL:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        v->bool_value = n->b;
        break;
    case NODE_INT:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        v->number_value = n->is_neg ? -(double)n->u : (double)n->u;
        break;
    case NODE_FLOAT:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        v->number_value = n->f;
        break;
    case NODE_STR:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        v->string_value = n->str;
        break;
    case NODE_SEQ: {
        Google__Protobuf__ListValue *l = pb_pool_alloc(p, sizeof(*l));
        Google__Protobuf__Value **items = pb_pool_alloc(p, n->n_items * sizeof(*items));
        if (!l || !items)
            return NULL;
        google__protobuf__list_value__init(l);
        for (size_t i = 0; i < n->n_items; i++)
            if (!(items[i] = node_to_value(p, n->items[i])))
                return NULL;
        l->values = items;
        l->n_values = n->n_items;
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        v->list_value = l;
        break;
    }
    case NODE_MAP:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        if (!(v->struct_value = metadata_struct_from_node(p, n, NULL, 0)))
            return NULL;
        break;
    }
    return v;
}
