/* Builds node trees in code (xDS resources become the same trees YAML gives, so one set of
 * decoders serves both). Nodes built here have line = col = 0. */
#include "config/node.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct node *node_new_text(enum node_kind kind, const char *text, size_t len)
{
    struct node *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->kind = kind;
    n->str = malloc(len + 1);
    if (!n->str) {
        free(n);
        return NULL;
    }
    if (len)
        memcpy(n->str, text, len);
    n->str[len] = '\0';
    n->str_len = len;
    return n;
}

struct node *node_new_null(void)
{
    return node_new_text(NODE_NULL, "", 0);
}

struct node *node_new_bool(bool b)
{
    struct node *n = node_new_text(NODE_BOOL, b ? "true" : "false", b ? 4 : 5);
    if (n)
        n->b = b;
    return n;
}

struct node *node_new_int(bool is_neg, uint64_t magnitude)
{
    char text[24];
    char *p = text + sizeof(text);
    uint64_t v = magnitude;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (is_neg && magnitude)
        *--p = '-';
    struct node *n = node_new_text(NODE_INT, p, (size_t)(text + sizeof(text) - p));
    if (n) {
        n->is_neg = is_neg && magnitude;
        n->u = magnitude;
        n->f = is_neg ? -(double)magnitude : (double)magnitude;
    }
    return n;
}

struct node *node_new_str(const char *s, size_t len)
{
    return node_new_text(NODE_STR, s, len);
}

struct node *node_new_seq(void)
{
    return node_new_text(NODE_SEQ, "", 0);
}

struct node *node_new_map(void)
{
    return node_new_text(NODE_MAP, "", 0);
}

/* Capacity is implied by the count: 4, 8, 16, ... so arrays grow when the count reaches a
 * power of two (or is 0). */
static int grow(void **arr, size_t n, size_t elem)
{
    bool full = n == 0 || (n >= 4 && (n & (n - 1)) == 0);
    if (!full)
        return 0;
    size_t cap = n == 0 ? 4 : n * 2;
    void *p = realloc(*arr, cap * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    return 0;
}

struct node *node_clone(const struct node *n)
{
    if (!n)
        return NULL;
    struct node *c = node_new_text(n->kind, n->str, n->str_len);
    if (!c)
        return NULL;
    c->line = n->line;
    c->col = n->col;
    c->b = n->b;
    c->is_neg = n->is_neg;
    c->u = n->u;
    c->f = n->f;
    for (size_t i = 0; i < n->n_items; i++) {
        if (node_seq_append(c, node_clone(n->items[i])) < 0)
            goto fail;
    }
    for (size_t i = 0; i < n->n_pairs; i++) {
        const struct node *k = n->pairs[i].key;
        if (node_map_append(c, k->str, k->str_len, node_clone(n->pairs[i].value)) < 0)
            goto fail;
        c->pairs[c->n_pairs - 1].key->kind = k->kind; /* keep non-string keys as they were */
    }
    return c;
fail:
    node_free(c);
    return NULL;
}

int node_seq_append(struct node *seq, struct node *item)
{
    if (!item)
        return -ENOMEM;
    if (grow((void **)&seq->items, seq->n_items, sizeof(*seq->items)) < 0) {
        node_free(item);
        return -ENOMEM;
    }
    seq->items[seq->n_items++] = item;
    return 0;
}

int node_map_append(struct node *map, const char *key, size_t key_len, struct node *value)
{
    if (!value)
        return -ENOMEM;
    struct node *k = node_new_str(key, key_len);
    if (!k || grow((void **)&map->pairs, map->n_pairs, sizeof(*map->pairs)) < 0) {
        node_free(k);
        node_free(value);
        return -ENOMEM;
    }
    map->pairs[map->n_pairs].key = k;
    map->pairs[map->n_pairs].value = value;
    map->n_pairs++;
    return 0;
}

bool node_equal(const struct node *a, const struct node *b)
{
    if (!a || !b)
        return a == b;
    /* kind and source text, not the decoded value: `0x10` and `16` count as different, which
     * can only cost an unneeded rebuild, never keep a filter whose config changed */
    if (a->kind != b->kind || a->str_len != b->str_len ||
        memcmp(a->str, b->str, a->str_len) != 0 || a->n_items != b->n_items ||
        a->n_pairs != b->n_pairs)
        return false;
    for (size_t i = 0; i < a->n_items; i++)
        if (!node_equal(a->items[i], b->items[i]))
            return false;
    for (size_t i = 0; i < a->n_pairs; i++)
        if (!node_equal(a->pairs[i].key, b->pairs[i].key) ||
            !node_equal(a->pairs[i].value, b->pairs[i].value))
            return false;
    return true;
}
