/* Token index: the (token, endpoint) pairs sorted by token then endpoint, grouped into
 * runs, and an open-addressing hash from token bytes to run. Build is O(T log T) in the
 * number of tokens; lookup is O(1) expected plus one memcmp. */
#include "filters/token_index.h"

#include "config/config.h"
#include "filters/filter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct pair {
    const struct token *tok;
    uint32_t ep;
};

struct run {
    const uint8_t *bytes;
    size_t len;
    uint32_t first; /* offset in idx[] */
    uint32_t count;
};

struct token_index {
    uint32_t *idx;   /* endpoint indices, grouped by token */
    struct run *runs;
    uint32_t n_runs;
    uint32_t *slots; /* hmask + 1 entries: 0 = empty, else run index + 1 */
    uint32_t hmask;
};

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ n; /* FNV-1a: tokens are short */
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static int tok_cmp(const struct token *a, const struct token *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->bytes, b->bytes, n) : 0;
    if (c)
        return c;
    return (a->len > b->len) - (a->len < b->len);
}

static int pair_cmp(const void *x, const void *y)
{
    const struct pair *a = x, *b = y;
    int c = tok_cmp(a->tok, b->tok);
    if (c)
        return c;
    return (a->ep > b->ep) - (a->ep < b->ep);
}

int token_index_build(const struct endpoint *eps, uint32_t n, struct token_index **out)
{
    struct token_index *ti = calloc(1, sizeof(*ti));
    if (!ti)
        return -ENOMEM;
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += eps[i].cfg ? eps[i].cfg->n_tokens : 0;
    struct pair *pairs = total ? malloc(total * sizeof(*pairs)) : NULL;
    ti->idx = total ? malloc(total * sizeof(*ti->idx)) : NULL;
    ti->runs = total ? malloc(total * sizeof(*ti->runs)) : NULL;
    uint32_t hsize = 16;
    while (hsize < total * 2)
        hsize <<= 1;
    ti->slots = calloc(hsize, sizeof(*ti->slots));
    ti->hmask = hsize - 1;
    if ((total && (!pairs || !ti->idx || !ti->runs)) || !ti->slots) {
        free(pairs);
        token_index_destroy(ti);
        return -ENOMEM;
    }
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!eps[i].cfg)
            continue;
        for (size_t t = 0; t < eps[i].cfg->n_tokens; t++)
            pairs[k++] = (struct pair){.tok = &eps[i].cfg->tokens[t], .ep = i};
    }
    if (total)
        qsort(pairs, total, sizeof(*pairs), pair_cmp);
    for (size_t i = 0; i < total; i++) {
        ti->idx[i] = pairs[i].ep;
        if (i == 0 || tok_cmp(pairs[i - 1].tok, pairs[i].tok) != 0) {
            struct run *r = &ti->runs[ti->n_runs++];
            r->bytes = pairs[i].tok->bytes;
            r->len = pairs[i].tok->len;
            r->first = (uint32_t)i;
            r->count = 0;
        }
        ti->runs[ti->n_runs - 1].count++;
    }
    free(pairs);
    for (uint32_t r = 0; r < ti->n_runs; r++) {
        uint32_t h = (uint32_t)hash_bytes(ti->runs[r].bytes, ti->runs[r].len) & ti->hmask;
        while (ti->slots[h])
            h = (h + 1) & ti->hmask;
        ti->slots[h] = r + 1;
    }
    *out = ti;
    return 0;
}

const uint32_t *token_index_lookup(const struct token_index *ti, const uint8_t *tok,
                                   size_t len, uint32_t *n)
{
    *n = 0;
    if (!ti || ti->n_runs == 0)
        return NULL;
    uint32_t h = (uint32_t)hash_bytes(tok, len) & ti->hmask;
    for (uint32_t v; (v = ti->slots[h]) != 0; h = (h + 1) & ti->hmask) {
        const struct run *r = &ti->runs[v - 1];
        if (r->len == len && (len == 0 || memcmp(r->bytes, tok, len) == 0)) {
            *n = r->count;
            return &ti->idx[r->first];
        }
    }
    return NULL;
}

uint32_t token_index_size(const struct token_index *ti)
{
    return ti ? ti->n_runs : 0;
}

void token_index_destroy(struct token_index *ti)
{
    if (!ti)
        return;
    free(ti->idx);
    free(ti->runs);
    free(ti->slots);
    free(ti);
}
