/* Dynamic metadata slots, value equality and the key intern table; see metadata.h. */
#include "filters/metadata.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int md_set(struct metadata *m, uint32_t key, const struct md_value *v)
{
    for (uint32_t i = 0; i < m->n; i++) {
        if (m->keys[i] == key) {
            m->vals[i] = *v;
            return 0;
        }
    }
    if (m->n == MD_SLOTS)
        return -ENOSPC;
    m->keys[m->n] = key;
    m->vals[m->n] = *v;
    m->n++;
    return 0;
}

const struct md_value *md_get(const struct metadata *m, uint32_t key)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (m->keys[i] == key)
            return &m->vals[i];
    return NULL;
}

static bool is_bytes_like(enum md_kind k)
{
    return k == MD_STRING || k == MD_BYTES;
}

bool md_value_eq(const struct md_value *left, const struct md_value *right)
{
    if (left->kind == right->kind) {
        switch (left->kind) {
        case MD_NONE:
            return true;
        case MD_BOOL:
            return left->u.b == right->u.b;
        case MD_NUMBER:
            return left->u.n == right->u.n;
        case MD_STRING:
        case MD_BYTES:
            return left->len == right->len &&
                   (left->len == 0 || memcmp(left->u.bytes, right->u.bytes, left->len) == 0);
        case MD_LIST:
            if (left->len != right->len)
                return false;
            for (uint32_t i = 0; i < left->len; i++)
                if (!md_value_eq(&left->u.items[i], &right->u.items[i]))
                    return false;
            return true;
        }
        return false;
    }
    if (is_bytes_like(left->kind) && is_bytes_like(right->kind))
        return left->len == right->len &&
               (left->len == 0 || memcmp(left->u.bytes, right->u.bytes, left->len) == 0);
    /* spec proxy.md §9: Number (branch) equals a one-byte Bytes value; not the reverse */
    if (left->kind == MD_NUMBER && right->kind == MD_BYTES)
        return right->len == 1 && left->u.n == right->u.bytes[0];
    return false;
}

int keytab_intern(struct keytab *t, const char *name)
{
    for (uint32_t i = 0; i < t->n; i++)
        if (strcmp(t->names[i], name) == 0)
            return (int)i;
    if (t->n == t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 8;
        char **names = realloc(t->names, cap * sizeof(*names));
        if (!names)
            return -ENOMEM;
        t->names = names;
        t->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return -ENOMEM;
    t->names[t->n] = copy;
    return (int)t->n++;
}

int keytab_copy(struct keytab *dst, const struct keytab *src)
{
    for (uint32_t i = 0; i < src->n; i++) {
        int id = keytab_intern(dst, src->names[i]);
        if (id < 0)
            return id;
        if ((uint32_t)id != i)
            return -EINVAL; /* dst was not empty: ids would move */
    }
    return 0;
}

const char *keytab_name(const struct keytab *t, uint32_t id)
{
    return id < t->n ? t->names[id] : NULL;
}

void keytab_deinit(struct keytab *t)
{
    for (uint32_t i = 0; i < t->n; i++)
        free(t->names[i]);
    free(t->names);
    t->names = NULL;
    t->n = t->cap = 0;
}
