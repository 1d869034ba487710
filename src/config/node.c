/* Typed getters over the YAML node tree, so every decoder reports type and range errors with
 * the same wording and position. Read-only: never modifies or allocates nodes. */
#include "config/node.h"

#include "base/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *node_kind_name(enum node_kind k)
{
    switch (k) {
    case NODE_NULL:
        return "null";
    case NODE_BOOL:
        return "boolean";
    case NODE_INT:
        return "integer";
    case NODE_FLOAT:
        return "float";
    case NODE_STR:
        return "string";
    case NODE_SEQ:
        return "sequence";
    case NODE_MAP:
        return "map";
    }
    return "unknown";
}

int node_error(const struct node *n, struct err *e, const char *fmt, ...)
{
    char msg[ERR_MSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!n)
        return err_set(e, "%s", msg);
    return err_set(e, "line %u column %u: %s", n->line, n->col, msg);
}

static bool is_str(const struct node *n, const char *s)
{
    size_t len = strlen(s);
    return n && n->kind == NODE_STR && n->str_len == len && memcmp(n->str, s, len) == 0;
}

const struct node *node_map_get(const struct node *map, const char *key)
{
    if (!map || map->kind != NODE_MAP)
        return NULL;
    for (size_t i = 0; i < map->n_pairs; i++)
        if (is_str(map->pairs[i].key, key))
            return map->pairs[i].value;
    return NULL;
}

/* Describes a node for "found ..." messages: scalars show their text, bounded. */
static int found(const struct node *n, char *buf, size_t cap)
{
    if (n->kind == NODE_SEQ || n->kind == NODE_MAP || n->kind == NODE_NULL)
        return snprintf(buf, cap, "%s", node_kind_name(n->kind));
    return snprintf(buf, cap, "%s `%.*s`", node_kind_name(n->kind),
                    (int)(n->str_len > 64 ? 64 : n->str_len), n->str);
}

static int get_uint(const struct node *n, uint64_t max, const char *what, uint64_t *out,
                    struct err *e)
{
    if (!n)
        return err_set(e, "expected %s, found nothing", what);
    if (n->kind != NODE_INT) {
        char f[128];
        found(n, f, sizeof(f));
        return node_error(n, e, "expected %s, found %s", what, f);
    }
    if (n->is_neg || n->u > max)
        return node_error(n, e, "integer `%s%llu` is out of range for %s", n->is_neg ? "-" : "",
                          (unsigned long long)n->u, what);
    *out = n->u;
    return 0;
}

int node_get_u16(const struct node *n, uint16_t *out, struct err *e)
{
    uint64_t v;
    int rc = get_uint(n, UINT16_MAX, "an unsigned 16-bit integer", &v, e);
    if (rc == 0)
        *out = (uint16_t)v;
    return rc;
}

int node_get_u32(const struct node *n, uint32_t *out, struct err *e)
{
    uint64_t v;
    int rc = get_uint(n, UINT32_MAX, "an unsigned 32-bit integer", &v, e);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

int node_get_u64(const struct node *n, uint64_t *out, struct err *e)
{
    return get_uint(n, UINT64_MAX, "an unsigned 64-bit integer", out, e);
}

int node_get_bool(const struct node *n, bool *out, struct err *e)
{
    if (!n)
        return err_set(e, "expected a boolean, found nothing");
    if (n->kind != NODE_BOOL) {
        char f[128];
        found(n, f, sizeof(f));
        return node_error(n, e, "expected a boolean, found %s", f);
    }
    *out = n->b;
    return 0;
}

int node_get_str(const struct node *n, const char **out, struct err *e)
{
    if (!n)
        return err_set(e, "expected a string, found nothing");
    switch (n->kind) {
    case NODE_STR:
    case NODE_BOOL:
    case NODE_INT:
    case NODE_FLOAT:
        *out = n->str;
        return 0;
    case NODE_NULL:
    case NODE_SEQ:
    case NODE_MAP:
        break;
    }
    return node_error(n, e, "expected a string, found %s", node_kind_name(n->kind));
}

/* "`a`, `b`, `c`" into buf, truncated safely. */
static void list_names(const char *const *names, size_t n_names, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n_names && used < cap; i++) {
        int w = snprintf(buf + used, cap - used, "%s`%s`", i ? ", " : "", names[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

int node_get_enum(const struct node *n, const char *const *names, size_t n_names, int *out,
                  struct err *e)
{
    const char *s = NULL;
    int rc = node_get_str(n, &s, e);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n_names; i++) {
        if (strlen(names[i]) == n->str_len && memcmp(names[i], s, n->str_len) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    char list[ERR_MSG_CAP];
    list_names(names, n_names, list, sizeof(list));
    return node_error(n, e, "unknown variant `%.*s`, expected one of %s",
                      (int)(n->str_len > 64 ? 64 : n->str_len), s, list);
}

int node_check_map(const struct node *n, const char *const *allowed, size_t n_allowed,
                   struct err *e)
{
    if (!n)
        return err_set(e, "expected a map, found nothing");
    if (n->kind != NODE_MAP)
        return node_error(n, e, "expected a map, found %s", node_kind_name(n->kind));
    if (!allowed)
        return 0;
    for (size_t i = 0; i < n->n_pairs; i++) {
        const struct node *k = n->pairs[i].key;
        size_t j = 0;
        while (j < n_allowed && !is_str(k, allowed[j]))
            j++;
        if (j == n_allowed) {
            char list[ERR_MSG_CAP];
            list_names(allowed, n_allowed, list, sizeof(list));
            return node_error(k, e, "unknown field `%.*s`, expected one of %s",
                              (int)(k->str_len > 64 ? 64 : k->str_len), k->str, list);
        }
        /* serde rejects a struct field given twice; so do we. */
        for (size_t p = 0; p < i; p++)
            if (is_str(n->pairs[p].key, allowed[j]))
                return node_error(k, e, "duplicate field `%s`", allowed[j]);
    }
    return 0;
}
