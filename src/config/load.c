/* YAML config file -> struct config (spec config.md §1-§6): lookup order, top-level keys, both
 * cluster forms, endpoint addresses, metadata and tokens, the shape of filter entries. Pure
 * apart from config_load_file's file reading; builds nothing runtime (no sockets, no filters). */
#include "config/config.h"

#include "base/b64.h"
#include "base/err.h"
#include "config/node.h"
#include "net/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define FALLBACK_PATH "/etc/quilkin/quilkin.yaml"
#define DEFAULT_PATH "quilkin.yaml"
/* A config far beyond this is a mistake (or /dev/zero), not a proxy setup. */
#define MAX_FILE_LEN (64u << 20)
#define PATH_CAP 256

/* Decoding state: where we are (for messages) and where messages go. */
struct ctx {
    const char *source;
    struct err *e;
    char path[PATH_CAP]; /* key path of the node being decoded, e.g. clusters[0].endpoints */
    size_t plen;
};

/* ---- messages ---------------------------------------------------------------------------- */

static size_t path_push(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends to the key path; returns the mark to restore with path_pop. Truncates safely. */
static size_t path_push(struct ctx *c, const char *fmt, ...)
{
    size_t mark = c->plen;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(c->path + c->plen, sizeof(c->path) - c->plen, fmt, ap);
    va_end(ap);
    if (w > 0)
        c->plen += (size_t)w;
    if (c->plen >= sizeof(c->path))
        c->plen = sizeof(c->path) - 1;
    return mark;
}

static void path_pop(struct ctx *c, size_t mark)
{
    c->plen = mark;
    c->path[mark] = '\0';
}

static int set_located(struct ctx *c, unsigned line, unsigned col, const char *msg)
{
    if (c->plen)
        return err_set(c->e, "%s:%u:%u: %s: %s", c->source, line, col, c->path, msg);
    return err_set(c->e, "%s:%u:%u: %s", c->source, line, col, msg);
}

static int fail(struct ctx *c, const struct node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "SOURCE:LINE:COL: PATH: reason" at node n; returns -EINVAL. */
static int fail(struct ctx *c, const struct node *n, const char *fmt, ...)
{
    char msg[ERR_MSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return set_located(c, n ? n->line : 1, n ? n->col : 1, msg);
}

/* Rewrites a node-layer message ("line L column C: reason") into our format. */
static int relay(struct ctx *c, const struct node *n, int rc)
{
    unsigned line = n ? n->line : 1, col = n ? n->col : 1;
    int off = -1;
    char rest[ERR_MSG_CAP];
    if (sscanf(c->e->msg, "line %u column %u: %n", &line, &col, &off) < 2 || off < 0)
        off = 0;
    snprintf(rest, sizeof(rest), "%s", c->e->msg + off);
    set_located(c, line, col, rest);
    return rc;
}

static int oom(struct ctx *c)
{
    err_set(c->e, "%s: out of memory while loading the config", c->source);
    return -ENOMEM;
}

/* Bounded scalar text for messages. */
static int shown_len(const struct node *n)
{
    return (int)(n->str_len > 64 ? 64 : n->str_len);
}

/* ---- small helpers ------------------------------------------------------------------------ */

/* serde_yaml reads an empty plain scalar (`key:` with nothing after it) as an empty sequence or
 * map, but rejects an explicit `~`/`null` there (spec config.md §2). */
static bool is_empty_value(const struct node *n)
{
    return n->kind == NODE_NULL && n->str_len == 0;
}

static bool key_is(const struct node *k, const char *s)
{
    size_t len = strlen(s);
    return k->kind == NODE_STR && k->str_len == len && memcmp(k->str, s, len) == 0;
}

/* For maps whose unknown keys are ignored: a known key given twice is still an error, as serde
 * reports for a struct field. */
static int check_dups(struct ctx *c, const struct node *map, const char *const *keys, size_t n)
{
    if (map->kind != NODE_MAP)
        return 0;
    for (size_t k = 0; k < n; k++) {
        bool seen = false;
        for (size_t i = 0; i < map->n_pairs; i++) {
            if (!key_is(map->pairs[i].key, keys[k]))
                continue;
            if (seen)
                return fail(c, map->pairs[i].key, "duplicate field `%s`", keys[k]);
            seen = true;
        }
    }
    return 0;
}

static int expect_seq(struct ctx *c, const struct node *n)
{
    if (n->kind == NODE_SEQ)
        return 0;
    return fail(c, n, "invalid type: %s, expected a sequence", node_kind_name(n->kind));
}

static int expect_map(struct ctx *c, const struct node *n)
{
    if (n->kind == NODE_MAP)
        return 0;
    return fail(c, n, "invalid type: %s, expected a map", node_kind_name(n->kind));
}

static char *dup_text(const char *s)
{
    return strdup(s ? s : "");
}

/* node_get_str for values we keep as C strings: a NUL inside (YAML "\0") would silently cut
 * the text short, so it is rejected. Errors are already in our format. */
static int get_text(struct ctx *c, const struct node *n, const char **out)
{
    int rc = node_get_str(n, out, c->e);
    if (rc < 0)
        return relay(c, n, rc);
    if (strlen(*out) != n->str_len)
        return fail(c, n, "strings must not contain NUL characters");
    return 0;
}

/* ---- ownership ---------------------------------------------------------------------------- */

void config_endpoint_deinit(struct endpoint_cfg *ep)
{
    free(ep->host);
    for (size_t i = 0; i < ep->n_tokens; i++)
        free(ep->tokens[i].bytes);
    free(ep->tokens);
    node_free(ep->owned_metadata);
    memset(ep, 0, sizeof(*ep));
}

void config_group_deinit(struct cluster_group *g)
{
    free(g->locality.region);
    free(g->locality.zone);
    free(g->locality.sub_zone);
    for (size_t i = 0; i < g->n_endpoints; i++)
        config_endpoint_deinit(&g->endpoints[i]);
    free(g->endpoints);
    memset(g, 0, sizeof(*g));
}

void config_destroy(struct config *c)
{
    if (!c)
        return;
    free(c->id);
    free(c->source);
    for (size_t i = 0; i < c->n_groups; i++)
        config_group_deinit(&c->groups[i]);
    free(c->groups);
    for (size_t i = 0; i < c->n_filters; i++) {
        free(c->filters[i].name);
        free(c->filters[i].label);
        node_free(c->filters[i].owned_config);
    }
    free(c->filters);
    node_free(c->root);
    free(c);
}

/* ---- endpoint address (spec config.md §4.1) ------------------------------------------------ */

/* WHATWG "forbidden host code points" that can still be in a host after splitting off the
 * port, path and user info; other control bytes are rejected too. */
static bool bad_host_char(unsigned char ch)
{
    return ch <= 0x20 || ch == 0x7f || strchr("<>[\\]^|", ch) != NULL;
}

/* Port digits as the URL parser reads them: only digits, value <= 65535 (leading zeros ok). */
static bool parse_port(const char *s, size_t len, uint16_t *out)
{
    uint32_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
        if (v > 65535)
            return false;
    }
    *out = (uint16_t)v;
    return true;
}

/* v0.7.0 parses the text as a udp:// URL; this follows its observable results (spec §4.1). */
static int parse_address(struct ctx *c, const struct node *n, struct endpoint_cfg *ep)
{
    const char *s = n->str;
    size_t len = n->str_len;
    /* The URL parser strips leading and trailing C0 controls and spaces. */
    while (len && (unsigned char)s[0] <= 0x20) {
        s++;
        len--;
    }
    while (len && (unsigned char)s[len - 1] <= 0x20)
        len--;

    if (len >= 6 && memcmp(s, "udp://", 6) == 0) {
        s += 6;
        len -= 6;
    } else if (memmem(s, len, "://", 3)) {
        return fail(c, n, "non UDP based URLs are not permitted");
    }

    /* authority [path] [?query] [#fragment] */
    size_t alen = 0;
    while (alen < len && s[alen] != '/' && s[alen] != '?' && s[alen] != '#')
        alen++;
    size_t path_len = 0;
    if (alen < len && s[alen] == '/')
        while (alen + path_len < len && s[alen + path_len] != '?' && s[alen + path_len] != '#')
            path_len++;

    const char *auth = s;
    const char *at = memrchr(auth, '@', alen); /* user info is parsed and ignored */
    if (at) {
        alen -= (size_t)(at + 1 - auth);
        auth = at + 1;
    }

    const char *host = auth, *port = NULL;
    size_t host_len = 0, port_len = 0;
    bool is_v6 = false;
    if (alen && auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (!close)
            return fail(c, n, "parser error: invalid IPv6 address");
        host = auth + 1;
        host_len = (size_t)(close - host);
        size_t after = alen - (size_t)(close + 1 - auth);
        if (after) {
            if (close[1] != ':')
                return fail(c, n, "parser error: invalid port number");
            port = close + 2;
            port_len = after - 1;
        }
        is_v6 = true;
    } else {
        const char *colon = memchr(auth, ':', alen);
        host_len = colon ? (size_t)(colon - auth) : alen;
        if (colon) {
            port = colon + 1;
            port_len = alen - host_len - 1;
        }
        for (size_t i = 0; i < host_len; i++)
            if (bad_host_char((unsigned char)host[i]))
                return fail(c, n, "parser error: invalid domain character");
    }

    char ip[INET6_ADDRSTRLEN + 1];
    struct addr a = {0};
    bool is_ip = false;
    if (is_v6) {
        uint8_t tmp[16];
        if (host_len == 0 || host_len >= sizeof(ip))
            return fail(c, n, "parser error: invalid IPv6 address");
        memcpy(ip, host, host_len);
        ip[host_len] = '\0';
        /* inet_pton(AF_INET6) first: "[1.2.3.4]" is not an IPv6 literal. */
        if (inet_pton(AF_INET6, ip, tmp) != 1 || addr_parse_ip(ip, &a) < 0)
            return fail(c, n, "parser error: invalid IPv6 address");
        is_ip = true;
    } else if (host_len > 0 && host_len < sizeof(ip)) {
        uint8_t tmp[4];
        memcpy(ip, host, host_len);
        ip[host_len] = '\0';
        if (inet_pton(AF_INET, ip, tmp) == 1 && addr_parse_ip(ip, &a) == 0)
            is_ip = true;
    }

    uint16_t port_v = 0;
    if (port && port_len && !parse_port(port, port_len, &port_v))
        return fail(c, n, "parser error: invalid port number");
    if (path_len > 1)
        return fail(c, n, "No paths allowed in URLs, it must include only the hostname and port");
    if (host_len == 0)
        return fail(c, n, "hostname is required");
    if (!port || port_len == 0)
        return fail(c, n, "port is required");

    if (is_ip) {
        ep->addr = a;
        ep->addr.port = port_v;
        return 0;
    }
    ep->host = strndup(host, host_len);
    if (!ep->host)
        return oom(c);
    memset(&ep->addr, 0, sizeof(ep->addr));
    ep->addr.port = port_v;
    return 0;
}

/* ---- metadata (spec config.md §4.2) -------------------------------------------------------- */

/* Every map key at any depth must be a string. Depth is bounded by the YAML parser. */
static int check_string_keys(struct ctx *c, const struct node *n)
{
    if (n->kind == NODE_SEQ) {
        for (size_t i = 0; i < n->n_items; i++) {
            size_t m = path_push(c, "[%zu]", i);
            int rc = check_string_keys(c, n->items[i]);
            if (rc < 0)
                return rc;
            path_pop(c, m);
        }
    } else if (n->kind == NODE_MAP) {
        for (size_t i = 0; i < n->n_pairs; i++) {
            const struct node *k = n->pairs[i].key;
            if (k->kind != NODE_STR) {
                if (k->kind == NODE_SEQ || k->kind == NODE_MAP || k->kind == NODE_NULL)
                    return fail(c, k, "metadata keys must be strings, found %s",
                                node_kind_name(k->kind));
                return fail(c, k, "metadata keys must be strings, found %s `%.*s`",
                            node_kind_name(k->kind), shown_len(k), k->str);
            }
            size_t m = path_push(c, ".%.*s", shown_len(k), k->str);
            int rc = check_string_keys(c, n->pairs[i].value);
            if (rc < 0)
                return rc;
            path_pop(c, m);
        }
    }
    return 0;
}

struct token_slot {
    struct token t;
    size_t idx; /* position in the file, to name the later duplicate */
};

static int token_cmp(const void *pa, const void *pb)
{
    const struct token_slot *a = pa, *b = pb;
    size_t n = a->t.len < b->t.len ? a->t.len : b->t.len;
    int r = n ? memcmp(a->t.bytes, b->t.bytes, n) : 0;
    if (r)
        return r;
    if (a->t.len != b->t.len)
        return a->t.len < b->t.len ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int decode_tokens(struct ctx *c, const struct node *list, struct endpoint_cfg *ep)
{
    size_t n = list->n_items;
    if (n == 0)
        return 0;
    struct token_slot *slots = calloc(n, sizeof(*slots));
    if (!slots)
        return oom(c);
    int rc = 0;
    size_t done = 0;
    for (; done < n; done++) {
        const struct node *item = list->items[done];
        const char *text;
        size_t m = path_push(c, "[%zu]", done);
        rc = node_get_str(item, &text, c->e);
        if (rc < 0) {
            rc = relay(c, item, rc);
            goto fail;
        }
        uint8_t *bytes = malloc(b64_decoded_cap(item->str_len));
        if (!bytes) {
            rc = oom(c);
            goto fail;
        }
        size_t blen = 0;
        if (b64_decode(text, item->str_len, bytes, &blen) < 0) {
            free(bytes);
            rc = fail(c, item, "invalid base64 token `%.*s`", shown_len(item), text);
            goto fail;
        }
        slots[done].t.bytes = bytes;
        slots[done].t.len = blen;
        slots[done].idx = done;
        path_pop(c, m);
    }
    qsort(slots, n, sizeof(*slots), token_cmp);
    for (size_t i = 1; i < n; i++) {
        const struct token *a = &slots[i - 1].t, *b = &slots[i].t;
        if (a->len == b->len && (a->len == 0 || memcmp(a->bytes, b->bytes, a->len) == 0)) {
            size_t later = slots[i].idx > slots[i - 1].idx ? slots[i].idx : slots[i - 1].idx;
            path_push(c, "[%zu]", later);
            rc = fail(c, list->items[later], "Found duplicate tokens in endpoint metadata.");
            goto fail;
        }
    }
    ep->tokens = calloc(n, sizeof(*ep->tokens));
    if (!ep->tokens) {
        rc = oom(c);
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        ep->tokens[i] = slots[i].t;
    ep->n_tokens = n;
    free(slots);
    return 0;
fail:
    for (size_t i = 0; i < done; i++)
        free(slots[i].t.bytes);
    free(slots);
    return rc;
}

static int decode_metadata(struct ctx *c, const struct node *md, struct endpoint_cfg *ep)
{
    if (is_empty_value(md))
        return 0; /* `metadata:` with no value = empty map */
    int rc = expect_map(c, md);
    if (rc < 0)
        return rc;
    if ((rc = check_string_keys(c, md)) < 0)
        return rc;
    ep->metadata = md;
    static const char *const md_keys[] = {"quilkin.dev"};
    if ((rc = check_dups(c, md, md_keys, 1)) < 0)
        return rc;
    const struct node *qd = node_map_get(md, "quilkin.dev");
    if (!qd)
        return 0;
    size_t m = path_push(c, ".quilkin.dev");
    if (!is_empty_value(qd) && (rc = expect_map(c, qd)) < 0)
        return rc;
    static const char *const qd_keys[] = {"tokens"};
    if ((rc = check_dups(c, qd, qd_keys, 1)) < 0)
        return rc;
    const struct node *tokens = node_map_get(qd, "tokens");
    if (!tokens)
        return fail(c, qd, "missing field `tokens`");
    path_push(c, ".tokens");
    if (!is_empty_value(tokens)) {
        if ((rc = expect_seq(c, tokens)) < 0)
            return rc;
        if ((rc = decode_tokens(c, tokens, ep)) < 0)
            return rc;
    }
    path_pop(c, m);
    return 0;
}

/* ---- endpoints and groups (spec config.md §3, §4) ----------------------------------------- */

static int decode_endpoint(struct ctx *c, const struct node *n, struct endpoint_cfg *ep)
{
    int rc;
    if (!is_empty_value(n)) {
        if ((rc = expect_map(c, n)) < 0)
            return rc;
        for (size_t i = 0; i < n->n_pairs; i++) {
            const struct node *k = n->pairs[i].key;
            if (!key_is(k, "address") && !key_is(k, "metadata"))
                return fail(c, k, "unknown field `%.*s`, expected `address` or `metadata`",
                            shown_len(k), k->str);
        }
        static const char *const keys[] = {"address", "metadata"};
        if ((rc = check_dups(c, n, keys, 2)) < 0)
            return rc;
    }
    const struct node *address = node_map_get(n, "address");
    if (!address)
        return fail(c, n, "missing field `address`");
    size_t m = path_push(c, ".address");
    const char *text;
    if ((rc = node_get_str(address, &text, c->e)) < 0)
        return relay(c, address, rc);
    if ((rc = parse_address(c, address, ep)) < 0)
        return rc;
    path_pop(c, m);
    const struct node *md = node_map_get(n, "metadata");
    if (md) {
        m = path_push(c, ".metadata");
        if ((rc = decode_metadata(c, md, ep)) < 0)
            return rc;
        path_pop(c, m);
    }
    return 0;
}

/* Quilkin's EndpointAddress order: names (bytewise, then port) before IPs (addr_cmp). */
static int endpoint_cmp(const struct endpoint_cfg *a, const struct endpoint_cfg *b)
{
    if (a->host && b->host) {
        int r = strcmp(a->host, b->host);
        if (r)
            return r < 0 ? -1 : 1;
        return a->addr.port < b->addr.port ? -1 : a->addr.port > b->addr.port;
    }
    if (a->host || b->host)
        return a->host ? -1 : 1;
    return addr_cmp(&a->addr, &b->addr);
}

struct ep_slot {
    struct endpoint_cfg ep;
    size_t idx;
};

static int ep_slot_cmp(const void *pa, const void *pb)
{
    const struct ep_slot *a = pa, *b = pb;
    int r = endpoint_cmp(&a->ep, &b->ep);
    if (r)
        return r;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

int config_group_normalize(struct cluster_group *g)
{
    size_t n = g->n_endpoints;
    if (n < 2)
        return 0;
    /* qsort is not stable: the original index breaks ties, so the first of equals is kept. */
    struct ep_slot *slots = calloc(n, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        slots[i] = (struct ep_slot){g->endpoints[i], i};
    qsort(slots, n, sizeof(*slots), ep_slot_cmp);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (kept && endpoint_cmp(&g->endpoints[kept - 1], &slots[i].ep) == 0) {
            config_endpoint_deinit(&slots[i].ep);
            continue;
        }
        g->endpoints[kept++] = slots[i].ep;
    }
    free(slots);
    g->n_endpoints = kept;
    return 0;
}

/* On error g keeps the endpoints decoded so far (decode_group frees them with g). */
static int decode_endpoints(struct ctx *c, const struct node *list, struct cluster_group *g)
{
    size_t n = list->n_items;
    if (n == 0)
        return 0;
    if (!(g->endpoints = calloc(n, sizeof(*g->endpoints))))
        return oom(c);
    for (size_t i = 0; i < n; i++) {
        size_t m = path_push(c, "[%zu]", i);
        g->n_endpoints = i + 1;
        int rc = decode_endpoint(c, list->items[i], &g->endpoints[i]);
        if (rc < 0)
            return rc;
        path_pop(c, m);
    }
    return config_group_normalize(g) < 0 ? oom(c) : 0;
}

static int decode_locality(struct ctx *c, const struct node *n, struct cluster_group *g)
{
    static const char *const keys[] = {"region", "zone", "sub_zone"};
    char **fields[] = {&g->locality.region, &g->locality.zone, &g->locality.sub_zone};
    int rc;
    if (n && n->kind != NODE_NULL) {
        size_t m = path_push(c, ".locality");
        if ((rc = expect_map(c, n)) < 0 || (rc = check_dups(c, n, keys, 3)) < 0)
            return rc;
        g->has_locality = true;
        for (size_t i = 0; i < 3; i++) {
            const struct node *v = node_map_get(n, keys[i]);
            const char *text = "";
            if (v) {
                size_t m2 = path_push(c, ".%s", keys[i]);
                if ((rc = get_text(c, v, &text)) < 0)
                    return rc;
                path_pop(c, m2);
            }
            if (!(*fields[i] = dup_text(text)))
                return oom(c);
        }
        path_pop(c, m);
        return 0;
    }
    /* No locality: the strings are still owned and never NULL (config.h). */
    for (size_t i = 0; i < 3; i++)
        if (!(*fields[i] = dup_text("")))
            return oom(c);
    return 0;
}

static bool same_locality(const struct cluster_group *a, const struct cluster_group *b)
{
    if (a->has_locality != b->has_locality)
        return false;
    if (!a->has_locality)
        return true;
    return strcmp(a->locality.region, b->locality.region) == 0 &&
           strcmp(a->locality.zone, b->locality.zone) == 0 &&
           strcmp(a->locality.sub_zone, b->locality.sub_zone) == 0;
}

struct group_list {
    struct cluster_group *v;
    size_t n, cap;
};

/* One §3 list item (the path already names it). */
static int decode_group(struct ctx *c, const struct node *item, struct group_list *gl)
{
    int rc;
    if (!is_empty_value(item)) {
        static const char *const keys[] = {"endpoints", "locality"};
        if ((rc = expect_map(c, item)) < 0 || (rc = check_dups(c, item, keys, 2)) < 0)
            return rc;
    }
    if (gl->n == gl->cap) {
        size_t cap = gl->cap ? gl->cap * 2 : 4;
        struct cluster_group *v = realloc(gl->v, cap * sizeof(*v));
        if (!v)
            return oom(c);
        gl->v = v;
        gl->cap = cap;
    }
    struct cluster_group *g = &gl->v[gl->n];
    memset(g, 0, sizeof(*g));
    const struct node *endpoints = node_map_get(item, "endpoints");
    if (!endpoints) {
        rc = fail(c, item, "missing field `endpoints`");
        goto fail;
    }
    if ((rc = decode_locality(c, node_map_get(item, "locality"), g)) < 0)
        goto fail;
    if (!is_empty_value(endpoints)) {
        size_t m = path_push(c, ".endpoints");
        if ((rc = expect_seq(c, endpoints)) < 0 || (rc = decode_endpoints(c, endpoints, g)) < 0)
            goto fail;
        path_pop(c, m);
    }
    for (size_t i = 0; i < gl->n; i++) {
        if (same_locality(&gl->v[i], g)) {
            rc = fail(c, item, "duplicate localities found in cluster map");
            goto fail;
        }
    }
    gl->n++;
    return 0;
fail:
    config_group_deinit(g);
    return rc;
}

/* Spec §6 extension: clusters: {NAME: {localities: [...]}, ...}, concatenated in file order. */
static int decode_cluster_map(struct ctx *c, const struct node *map, struct group_list *gl)
{
    int rc;
    for (size_t i = 0; i < map->n_pairs; i++) {
        const struct node *k = map->pairs[i].key, *v = map->pairs[i].value;
        if (k->kind == NODE_SEQ || k->kind == NODE_MAP)
            return fail(c, k, "cluster names must be strings, found %s", node_kind_name(k->kind));
        size_t m = path_push(c, ".%.*s", shown_len(k), k->str);
        if (v->kind == NODE_NULL) {
            path_pop(c, m);
            continue;
        }
        static const char *const keys[] = {"localities"};
        if ((rc = expect_map(c, v)) < 0 || (rc = check_dups(c, v, keys, 1)) < 0)
            return rc;
        const struct node *loc = node_map_get(v, "localities");
        if (loc && loc->kind != NODE_NULL) {
            path_push(c, ".localities");
            if ((rc = expect_seq(c, loc)) < 0)
                return rc;
            for (size_t j = 0; j < loc->n_items; j++) {
                size_t m2 = path_push(c, "[%zu]", j);
                if ((rc = decode_group(c, loc->items[j], gl)) < 0)
                    return rc;
                path_pop(c, m2);
            }
        }
        path_pop(c, m);
    }
    return 0;
}

static int decode_clusters(struct ctx *c, const struct node *n, struct config *cfg)
{
    struct group_list gl = {0};
    int rc = 0;
    size_t m = path_push(c, "clusters");
    if (n->kind == NODE_NULL) {
        if (!is_empty_value(n))
            return fail(c, n, "invalid type: null, expected a sequence");
    } else if (n->kind == NODE_SEQ) {
        for (size_t i = 0; i < n->n_items; i++) {
            size_t m2 = path_push(c, "[%zu]", i);
            if ((rc = decode_group(c, n->items[i], &gl)) < 0)
                goto fail;
            path_pop(c, m2);
        }
    } else if (n->kind == NODE_MAP) {
        if ((rc = decode_cluster_map(c, n, &gl)) < 0)
            goto fail;
    } else {
        return expect_seq(c, n);
    }
    path_pop(c, m);
    cfg->groups = gl.v;
    cfg->n_groups = gl.n;
    return 0;
fail:
    for (size_t i = 0; i < gl.n; i++)
        config_group_deinit(&gl.v[i]);
    free(gl.v);
    return rc;
}

/* ---- filters (spec config.md §5) ---------------------------------------------------------- */

static int decode_filter(struct ctx *c, const struct node *item, struct filter_cfg *f)
{
    static const char *const keys[] = {"name", "label", "config"};
    int rc;
    f->line = item->line;
    f->col = item->col;
    if (!is_empty_value(item) && (rc = node_check_map(item, keys, 3, c->e)) < 0)
        return relay(c, item, rc);
    const struct node *name = node_map_get(item, "name");
    if (!name)
        return fail(c, item, "missing field `name`");
    const char *text;
    size_t m = path_push(c, ".name");
    if ((rc = get_text(c, name, &text)) < 0)
        return rc;
    if (!(f->name = strdup(text)))
        return oom(c);
    path_pop(c, m);
    const struct node *label = node_map_get(item, "label");
    if (label && label->kind != NODE_NULL) {
        m = path_push(c, ".label");
        if ((rc = get_text(c, label, &text)) < 0)
            return rc;
        if (!(f->label = strdup(text)))
            return oom(c);
        path_pop(c, m);
    }
    const struct node *config = node_map_get(item, "config");
    f->config = config && config->kind != NODE_NULL ? config : NULL;
    return 0;
}

static int decode_filters(struct ctx *c, const struct node *n, struct config *cfg)
{
    if (n->kind == NODE_NULL)
        return 0; /* `filters:`, `filters: ~`: empty chain (spec §2) */
    size_t m = path_push(c, "filters");
    int rc = expect_seq(c, n);
    if (rc < 0 || n->n_items == 0)
        return rc;
    cfg->filters = calloc(n->n_items, sizeof(*cfg->filters));
    if (!cfg->filters)
        return oom(c);
    for (size_t i = 0; i < n->n_items; i++) {
        size_t m2 = path_push(c, "[%zu]", i);
        /* Counted before decoding so config_destroy frees a half-filled entry. */
        cfg->n_filters++;
        if ((rc = decode_filter(c, n->items[i], &cfg->filters[i])) < 0)
            return rc;
        path_pop(c, m2);
    }
    path_pop(c, m);
    return 0;
}

/* ---- top level (spec config.md §2) -------------------------------------------------------- */

/* Linux: the host name; if that fails, a random UUIDv4 as v0.7.0 does on other systems. */
static char *default_id(void)
{
    char host[HOST_NAME_MAX + 1];
    if (gethostname(host, sizeof(host)) == 0) {
        host[sizeof(host) - 1] = '\0';
        return strdup(host);
    }
    uint8_t r[16] = {0};
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        for (size_t i = 0; i < sizeof(r); i++)
            r[i] = (uint8_t)rand();
    }
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    char out[37];
    snprintf(out, sizeof(out),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1],
             r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
             r[15]);
    return strdup(out);
}

static int decode_top(struct ctx *c, const struct node *root, struct config *cfg)
{
    static const char *const keys[] = {"clusters", "filters", "id", "version"};
    int rc;
    if (root->kind == NODE_NULL) {
        /* Empty or comment-only file: every key takes its default (spec §1). */
        cfg->id = default_id();
        return cfg->id ? 0 : oom(c);
    }
    if (root->kind != NODE_MAP)
        return fail(c, root, "invalid type: %s, expected a map of `clusters`, `filters`, `id`, "
                             "`version`",
                    node_kind_name(root->kind));
    if ((rc = node_check_map(root, keys, 4, c->e)) < 0)
        return relay(c, root, rc);

    const struct node *version = node_map_get(root, "version");
    if (version) {
        const char *text;
        size_t m = path_push(c, "version");
        if ((rc = node_get_str(version, &text, c->e)) < 0)
            return relay(c, version, rc);
        if (version->str_len != 8 || strcmp(text, "v1alpha1") != 0)
            return fail(c, version, "unknown variant `%.*s`, expected `v1alpha1`",
                        shown_len(version), text);
        path_pop(c, m);
    }

    const struct node *id = node_map_get(root, "id");
    if (!id) {
        cfg->id = default_id();
    } else if (id->kind == NODE_NULL) {
        cfg->id = strdup(""); /* `id:` and `id: ~` mean "", not the host name (spec §2) */
    } else {
        const char *text;
        size_t m = path_push(c, "id");
        if ((rc = get_text(c, id, &text)) < 0)
            return rc;
        path_pop(c, m);
        cfg->id = strdup(text);
    }
    if (!cfg->id)
        return oom(c);

    const struct node *clusters = node_map_get(root, "clusters");
    if (clusters && (rc = decode_clusters(c, clusters, cfg)) < 0)
        return rc;
    const struct node *filters = node_map_get(root, "filters");
    if (filters && (rc = decode_filters(c, filters, cfg)) < 0)
        return rc;
    return 0;
}

int config_parse(const char *buf, size_t len, const char *source_name, struct config **out,
                 struct err *e)
{
    struct ctx c = {.source = source_name ? source_name : "<config>", .e = e};
    *out = NULL;
    struct node *root = node_parse_yaml(buf, len, e);
    if (!root)
        return relay(&c, NULL, -EINVAL);
    struct config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg) {
        node_free(root);
        return oom(&c);
    }
    cfg->root = root;
    cfg->source = strdup(c.source);
    if (!cfg->source) {
        config_destroy(cfg);
        return oom(&c);
    }
    int rc = decode_top(&c, root, cfg);
    for (size_t i = 0; rc == 0 && i < cfg->n_filters; i++)
        cfg->filters[i].source = cfg->source;
    if (rc < 0) {
        config_destroy(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

/* ---- files and defaults (spec config.md §1) ----------------------------------------------- */

static int read_all(int fd, char **out, size_t *out_len)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (len == cap) {
            if (cap >= MAX_FILE_LEN) {
                free(buf);
                return -EFBIG;
            }
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return -ENOMEM;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r == -1) {
            if (errno == EINTR)
                continue;
            int err = errno;
            free(buf);
            return -err;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

/* Reads fd to the end (closing it) and parses it as `name`. */
static int parse_fd(int fd, const char *name, struct config **out, struct err *e)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = read_all(fd, &buf, &len);
    close(fd);
    if (rc < 0) {
        err_set(e, "%s: cannot read: %s", name,
                rc == -EFBIG ? "file too large" : strerror(-rc));
        return rc;
    }
    rc = config_parse(buf, len, name, out, e);
    free(buf);
    return rc;
}

int config_load_file(const char *path, struct config **out, char *used_path, struct err *e)
{
    const char *p = path ? path : DEFAULT_PATH;
    *out = NULL;
    if (used_path)
        used_path[0] = '\0';
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd == -1 && errno == ENOENT) {
        p = FALLBACK_PATH;
        fd = open(p, O_RDONLY | O_CLOEXEC);
    }
    if (fd == -1) {
        int err = errno;
        if (err == ENOENT) {
            /* Neither file exists: the built-in default, silently (spec §1). */
            *out = config_default();
            if (!*out) {
                err_set(e, "out of memory while building the default config");
                return -ENOMEM;
            }
            return 0;
        }
        err_set(e, "%s: cannot open: %s", p, strerror(err));
        return -err;
    }
    int rc = parse_fd(fd, p, out, e);
    if (rc == 0 && used_path)
        snprintf(used_path, PATH_MAX, "%s", p);
    return rc;
}

int config_read_file(const char *path, struct config **out, struct err *e)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        int err = errno;
        err_set(e, "%s: cannot open: %s", path, strerror(err));
        return -err;
    }
    return parse_fd(fd, path, out, e);
}

struct config *config_default(void)
{
    struct config *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->id = default_id();
    if (!c->id) {
        free(c);
        return NULL;
    }
    return c;
}

int config_set_unlocated(struct config *c, const struct addr *to, size_t n_to)
{
    struct endpoint_cfg *eps = calloc(n_to ? n_to : 1, sizeof(*eps));
    if (!eps)
        return -ENOMEM;
    for (size_t i = 0; i < n_to; i++)
        eps[i].addr = to[i];
    struct cluster_group sorted = {.endpoints = eps, .n_endpoints = n_to};
    if (config_group_normalize(&sorted) < 0) {
        free(eps);
        return -ENOMEM;
    }

    struct cluster_group *g = NULL;
    for (size_t i = 0; i < c->n_groups && !g; i++)
        if (!c->groups[i].has_locality)
            g = &c->groups[i];
    if (!g) {
        struct cluster_group *v = realloc(c->groups, (c->n_groups + 1) * sizeof(*v));
        if (!v) {
            free(eps);
            return -ENOMEM;
        }
        c->groups = v;
        g = &v[c->n_groups];
        memset(g, 0, sizeof(*g));
        g->locality.region = strdup("");
        g->locality.zone = strdup("");
        g->locality.sub_zone = strdup("");
        if (!g->locality.region || !g->locality.zone || !g->locality.sub_zone) {
            config_group_deinit(g);
            free(eps);
            return -ENOMEM;
        }
        c->n_groups++;
    } else {
        for (size_t i = 0; i < g->n_endpoints; i++)
            config_endpoint_deinit(&g->endpoints[i]);
        free(g->endpoints);
    }
    g->endpoints = eps;
    g->n_endpoints = sorted.n_endpoints;
    return 0;
}

size_t config_endpoint_count(const struct config *c)
{
    size_t n = 0;
    for (size_t i = 0; c && i < c->n_groups; i++)
        n += c->groups[i].n_endpoints;
    return n;
}
