/* Listener resources and per-filter config packing (spec xds.md §6.3, §6.4): protobuf bytes
 * <-> the YAML-shaped node tree each filter's from_yaml accepts, so YAML and xDS share one
 * set of filter decoders and validators. Pure: it knows names and config shapes, never
 * builds a filter. */
#include "xds/resources.h"

#include "base/b64.h"
#include "base/err.h"
#include "config/config.h"
#include "config/node.h"

#include "envoy/config/listener/v3/listener.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "quilkin/filters/capture/v1alpha1/capture.pb-c.h"
#include "quilkin/filters/compress/v1alpha1/compress.pb-c.h"
#include "quilkin/filters/concatenate/v1alpha1/concatenate.pb-c.h"
#include "quilkin/filters/debug/v1alpha1/debug.pb-c.h"
#include "quilkin/filters/drop/v1alpha1/drop.pb-c.h"
#include "quilkin/filters/firewall/v1alpha1/firewall.pb-c.h"
#include "quilkin/filters/load_balancer/v1alpha1/load_balancer.pb-c.h"
#include "quilkin/filters/local_rate_limit/v1alpha1/local_rate_limit.pb-c.h"
#include "quilkin/filters/matches/v1alpha1/matches.pb-c.h"
#include "quilkin/filters/pass/v1alpha1/pass.pb-c.h"
#include "quilkin/filters/timestamp/v1alpha1/timestamp.pb-c.h"
#include "quilkin/filters/token_router/v1alpha1/token_router.pb-c.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* See resources.c: protobuf-c recursion is unbounded, so nesting is checked before unpack. */
#define MAX_NESTING 200
/* Match inside Match inside ...: YAML's 64-level limit allows about 15; xDS gets some slack. */
#define MAX_FILTER_DEPTH 32
#define DEFAULT_KEY "quilkin.dev/capture"
#define DROP_NAME "quilkin.filters.drop.v1alpha1.Drop"

/* ---- wire guard (same walk as in resources.c) ------------------------------------------- */

static bool read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64 && *i < len; shift += 7) {
        uint8_t b = p[(*i)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* False when some message field nests deeper than MAX_NESTING; malformed input is left to
 * the unpacker. Linear in len. */
static bool nesting_ok(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                       unsigned depth)
{
    if (depth > MAX_NESTING)
        return false;
    size_t i = 0;
    while (i < len) {
        uint64_t key, v;
        if (!read_varint(p, len, &i, &key))
            return true;
        switch (key & 7) {
        case 0:
            if (!read_varint(p, len, &i, &v))
                return true;
            break;
        case 1:
            if (len - i < 8)
                return true;
            i += 8;
            break;
        case 5:
            if (len - i < 4)
                return true;
            i += 4;
            break;
        case 2: {
            if (!read_varint(p, len, &i, &v) || v > len - i)
                return true;
            const ProtobufCFieldDescriptor *f =
                key >> 3 <= UINT32_MAX
                    ? protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3))
                    : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                !nesting_ok(f->descriptor, p + i, (size_t)v, depth + 1))
                return false;
            i += (size_t)v;
            break;
        }
        default:
            return true;
        }
    }
    return true;
}

static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                                struct err *e)
{
    static const uint8_t empty[1];
    if (!buf)
        buf = empty, len = 0;
    if (!nesting_ok(d, buf, len, 0)) {
        err_set(e, "failed to decode %s message: nested too deeply", d->short_name);
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, buf);
    if (!m)
        err_set(e, "failed to decode %s message", d->short_name);
    return m;
}

/* ---- encode-side allocations: every piece of a message tree, freed in one go ------------ */

struct pool {
    void **ptrs;
    size_t n, cap;
};

static void *pool_alloc(struct pool *p, size_t size)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        void **np = realloc(p->ptrs, cap * sizeof(*np));
        if (!np)
            return NULL;
        p->ptrs = np;
        p->cap = cap;
    }
    void *m = calloc(1, size ? size : 1);
    if (m)
        p->ptrs[p->n++] = m;
    return m;
}

static void pool_free(struct pool *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->ptrs[i]);
    free(p->ptrs);
    memset(p, 0, sizeof(*p));
}

static int oom(struct err *e)
{
    err_set(e, "out of memory");
    return -ENOMEM;
}

static Google__Protobuf__StringValue *string_value(struct pool *p, const char *s)
{
    Google__Protobuf__StringValue *v = pool_alloc(p, sizeof(*v));
    if (v) {
        google__protobuf__string_value__init(v);
        v->value = (char *)s;
    }
    return v;
}

static Google__Protobuf__BoolValue *bool_value(struct pool *p, bool b)
{
    Google__Protobuf__BoolValue *v = pool_alloc(p, sizeof(*v));
    if (v) {
        google__protobuf__bool_value__init(v);
        v->value = b;
    }
    return v;
}

/* ---- node helpers --------------------------------------------------------------------- */

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

static struct node *str_node(const char *s)
{
    s = str_or_empty(s);
    return node_new_str(s, strlen(s));
}

/* Appends; on failure the value is freed and false returned (so calls chain with &&). */
static bool put(struct node *map, const char *key, struct node *v)
{
    return node_map_append(map, key, strlen(key), v) == 0;
}

static int missing(const char *field, struct err *e)
{
    return err_set(e, "field `%s` is invalid, reason: Missing", field);
}

/* A map's value for key, with an explicit null counted as absent. */
static const struct node *get(const struct node *map, const char *key)
{
    const struct node *v = map && map->kind == NODE_MAP ? node_map_get(map, key) : NULL;
    return v && v->kind != NODE_NULL ? v : NULL;
}

static int expect_map(const struct node *n, struct err *e)
{
    if (n && n->kind != NODE_MAP)
        return err_set(e, "invalid type: %s, expected a map", node_kind_name(n->kind));
    return 0;
}

/* Enum by name: absent -> 0 (every proto enum's default), else exactly one of names. */
static int get_enum(const struct node *map, const char *key, const char *const *names, size_t n,
                    int *out, struct err *e)
{
    const struct node *v = get(map, key);
    *out = 0;
    return v ? node_get_enum(v, names, n, out, e) : 0;
}

static int get_str(const struct node *map, const char *key, const char *dflt, const char **out,
                   struct err *e)
{
    const struct node *v = get(map, key);
    *out = dflt;
    return v ? node_get_str(v, out, e) : 0;
}

/* ---- the per-filter table ------------------------------------------------------------- */

struct codec {
    const char *name;
    const ProtobufCMessageDescriptor *desc;
    /* m -> YAML-shaped config (*out NULL: the filter takes no config). */
    int (*decode)(const ProtobufCMessage *m, unsigned depth, struct node **out, struct err *e);
    /* config (NULL when absent) -> message allocated in p. */
    int (*encode)(const struct node *cfg, unsigned depth, struct pool *p, ProtobufCMessage **out,
                  struct err *e);
};

static const struct codec *find_codec(const char *name);

static int decode_config(const struct codec *c, const uint8_t *buf, size_t len, unsigned depth,
                         struct node **out, struct err *e)
{
    *out = NULL;
    if (depth > MAX_FILTER_DEPTH)
        return err_set(e, "filter configuration nested too deeply");
    ProtobufCMessage *m = unpack(c->desc, buf, len, e);
    if (!m)
        return -EINVAL;
    int rc = c->decode(m, depth, out, e);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc < 0) {
        node_free(*out);
        *out = NULL;
    }
    return rc;
}

/* Packs cfg into a buffer owned by p. */
static int encode_config(const struct codec *c, const struct node *cfg, unsigned depth,
                         struct pool *p, ProtobufCBinaryData *out, struct err *e)
{
    if (depth > MAX_FILTER_DEPTH)
        return err_set(e, "filter configuration nested too deeply");
    ProtobufCMessage *m = NULL;
    int rc = c->encode(cfg && cfg->kind != NODE_NULL ? cfg : NULL, depth, p, &m, e);
    if (rc < 0)
        return rc;
    size_t n = protobuf_c_message_get_packed_size(m);
    if (!(out->data = pool_alloc(p, n)))
        return oom(e);
    out->len = protobuf_c_message_pack(m, out->data);
    return 0;
}

/* ---- envoy.config.listener.v3.Filter <-> (name, config) (spec xds.md §6.3) -------------- */

/* The same checks, in the same order, as v0.7.0's FilterChain conversion. *name borrows
 * from f. */
static int filter_decode(const Envoy__Config__Listener__V3__Filter *f, unsigned depth,
                         const char **name, struct node **config, struct err *e)
{
    *config = NULL;
    if (f->config_type_case == ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_CONFIG_DISCOVERY)
        return err_set(e, "field `config_type` is invalid, reason: ConfigDiscovery is currently "
                          "unsupported");
    *name = str_or_empty(f->name);
    const struct codec *c = find_codec(*name);
    if (!c)
        return err_set(e, "filter `%s` not found", *name);
    const Google__Protobuf__Any *a =
        f->config_type_case == ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG
            ? f->typed_config
            : NULL;
    if (!a)
        return 0;
    if (strcmp(str_or_empty(a->type_url), *name) != 0)
        return err_set(e, "Expected %s message, received %s ", *name, str_or_empty(a->type_url));
    return decode_config(c, a->value.data, a->value.len, depth, config, e);
}

/* typed_config is omitted when there is no config (spec xds.md §6.3). */
static Envoy__Config__Listener__V3__Filter *filter_encode(struct pool *p, const char *name,
                                                          const struct node *config, unsigned depth,
                                                          struct err *e, int *rc)
{
    Envoy__Config__Listener__V3__Filter *f = pool_alloc(p, sizeof(*f));
    if (!f) {
        *rc = oom(e);
        return NULL;
    }
    envoy__config__listener__v3__filter__init(f);
    const struct codec *c = find_codec(str_or_empty(name));
    if (!c) {
        *rc = err_set(e, "filter `%s` not found", str_or_empty(name));
        return NULL;
    }
    f->name = (char *)c->name;
    if (!config || config->kind == NODE_NULL)
        return f;
    Google__Protobuf__Any *a = pool_alloc(p, sizeof(*a));
    if (!a) {
        *rc = oom(e);
        return NULL;
    }
    google__protobuf__any__init(a);
    a->type_url = (char *)c->name;
    if ((*rc = encode_config(c, config, depth, p, &a->value, e)) < 0)
        return NULL;
    f->config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG;
    f->typed_config = a;
    return f;
}

/* ---- Capture -------------------------------------------------------------------------- */

static int capture_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out,
                          struct err *e)
{
    const Quilkin__Filters__Capture__V1alpha1__Capture *m = (const void *)pm;
    if (!m->metadata_key)
        return missing("metadata_key", e);
    const char *kind;
    uint32_t size = 0;
    const Google__Protobuf__BoolValue *remove = NULL;
    switch (m->strategy_case) {
    case QUILKIN__FILTERS__CAPTURE__V1ALPHA1__CAPTURE__STRATEGY_PREFIX:
        kind = "prefix";
        size = m->prefix ? m->prefix->size : 0;
        remove = m->prefix ? m->prefix->remove : NULL;
        break;
    case QUILKIN__FILTERS__CAPTURE__V1ALPHA1__CAPTURE__STRATEGY_SUFFIX:
        kind = "suffix";
        size = m->suffix ? m->suffix->size : 0;
        remove = m->suffix ? m->suffix->remove : NULL;
        break;
    case QUILKIN__FILTERS__CAPTURE__V1ALPHA1__CAPTURE__STRATEGY_REGEX:
        if (!m->regex || !m->regex->regex)
            return missing("Regex.regex", e);
        kind = "regex";
        break;
    default:
        return missing("strategy", e);
    }
    struct node *s;
    if (!(*out = node_new_map()) || !put(*out, "metadataKey", str_node(m->metadata_key->value)) ||
        !(s = node_new_map()) || !put(*out, kind, s))
        return oom(e);
    bool ok = kind[0] == 'r' ? put(s, "pattern", str_node(m->regex->regex->value))
                             : put(s, "size", node_new_int(false, size)) &&
                                   put(s, "remove", node_new_bool(remove && remove->value));
    return ok ? 0 : oom(e);
}

static int capture_encode(const struct node *cfg, unsigned depth, struct pool *p,
                          ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__Capture__V1alpha1__Capture *m = pool_alloc(p, sizeof(*m));
    if (!m)
        return oom(e);
    quilkin__filters__capture__v1alpha1__capture__init(m);
    const char *key;
    int rc = expect_map(cfg, e);
    if (rc < 0 || (rc = get_str(cfg, "metadataKey", DEFAULT_KEY, &key, e)) < 0)
        return rc;
    if (!(m->metadata_key = string_value(p, key)))
        return oom(e);
    const struct node *v;
    if ((v = get(cfg, "regex"))) {
        Quilkin__Filters__Capture__V1alpha1__Capture__Regex *r = pool_alloc(p, sizeof(*r));
        const char *pattern;
        if (!r)
            return oom(e);
        quilkin__filters__capture__v1alpha1__capture__regex__init(r);
        if ((rc = expect_map(v, e)) < 0 || (rc = get_str(v, "pattern", NULL, &pattern, e)) < 0)
            return rc;
        if (!pattern)
            return err_set(e, "missing field `pattern`");
        if (!(r->regex = string_value(p, pattern)))
            return oom(e);
        m->strategy_case = QUILKIN__FILTERS__CAPTURE__V1ALPHA1__CAPTURE__STRATEGY_REGEX;
        m->regex = r;
    } else if ((v = get(cfg, "prefix")) || (v = get(cfg, "suffix"))) {
        bool is_prefix = v == get(cfg, "prefix"), rm = false;
        uint32_t n = 0;
        if ((rc = expect_map(v, e)) < 0)
            return rc;
        const struct node *size = get(v, "size"), *remove = get(v, "remove");
        if (!size)
            return err_set(e, "missing field `size`");
        if ((rc = node_get_u32(size, &n, e)) < 0 ||
            (remove && (rc = node_get_bool(remove, &rm, e)) < 0))
            return rc;
        Google__Protobuf__BoolValue *b = bool_value(p, rm);
        if (!b)
            return oom(e);
        if (is_prefix) {
            Quilkin__Filters__Capture__V1alpha1__Capture__Prefix *a = pool_alloc(p, sizeof(*a));
            if (!a)
                return oom(e);
            quilkin__filters__capture__v1alpha1__capture__prefix__init(a);
            a->size = n;
            a->remove = b;
            m->strategy_case = QUILKIN__FILTERS__CAPTURE__V1ALPHA1__CAPTURE__STRATEGY_PREFIX;
            m->prefix = a;
        } else {
            Quilkin__Filters__Capture__V1alpha1__Capture__Suffix *a = pool_alloc(p, sizeof(*a));
            if (!a)
                return oom(e);
            quilkin__filters__capture__v1alpha1__capture__suffix__init(a);
            a->size = n;
            a->remove = b;
            m->strategy_case = QUILKIN__FILTERS__CAPTURE__V1ALPHA1__CAPTURE__STRATEGY_SUFFIX;
            m->suffix = a;
        }
    } else {
        return err_set(e, "Capture strategy of `regex`, `suffix`, or `prefix` is required");
    }
    *out = &m->base;
    return 0;
}

/* ---- Compress ------------------------------------------------------------------------- */

static const char *const compress_actions[] = {"DO_NOTHING", "COMPRESS", "DECOMPRESS"};

static const char *action_name(const Quilkin__Filters__Compress__V1alpha1__Compress__ActionValue *a)
{
    unsigned v = a ? (unsigned)a->value : 0;
    return compress_actions[v < 3 ? v : 0]; /* unknown enum numbers decode as 0 */
}

static int compress_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out,
                           struct err *e)
{
    const Quilkin__Filters__Compress__V1alpha1__Compress *m = (const void *)pm;
    if (!(*out = node_new_map()) || !put(*out, "mode", str_node("SNAPPY")) ||
        !put(*out, "on_read", str_node(action_name(m->on_read))) ||
        !put(*out, "on_write", str_node(action_name(m->on_write))))
        return oom(e);
    return 0;
}

static int compress_encode(const struct node *cfg, unsigned depth, struct pool *p,
                           ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__Compress__V1alpha1__Compress *m = pool_alloc(p, sizeof(*m));
    Quilkin__Filters__Compress__V1alpha1__Compress__ModeValue *mode = pool_alloc(p, sizeof(*mode));
    Quilkin__Filters__Compress__V1alpha1__Compress__ActionValue *rd = pool_alloc(p, sizeof(*rd)),
                                                                *wr = pool_alloc(p, sizeof(*wr));
    if (!m || !mode || !rd || !wr)
        return oom(e);
    quilkin__filters__compress__v1alpha1__compress__init(m);
    quilkin__filters__compress__v1alpha1__compress__mode_value__init(mode);
    quilkin__filters__compress__v1alpha1__compress__action_value__init(rd);
    quilkin__filters__compress__v1alpha1__compress__action_value__init(wr);
    static const char *const modes[] = {"SNAPPY"};
    int mv, r, w, rc = expect_map(cfg, e);
    if (rc < 0 || (rc = get_enum(cfg, "mode", modes, 1, &mv, e)) < 0 ||
        (rc = get_enum(cfg, "on_read", compress_actions, 3, &r, e)) < 0 ||
        (rc = get_enum(cfg, "on_write", compress_actions, 3, &w, e)) < 0)
        return rc;
    rd->value = (Quilkin__Filters__Compress__V1alpha1__Compress__Action)r;
    wr->value = (Quilkin__Filters__Compress__V1alpha1__Compress__Action)w;
    m->mode = mode;
    m->on_read = rd;
    m->on_write = wr;
    *out = &m->base;
    return 0;
}

/* ---- Concatenate ---------------------------------------------------------------------- */

static const char *const concat_strategies[] = {"DO_NOTHING", "APPEND", "PREPEND"};

static const char *
strategy_name(const Quilkin__Filters__Concatenate__V1alpha1__Concatenate__StrategyValue *s)
{
    unsigned v = s ? (unsigned)s->value : 0;
    return concat_strategies[v < 3 ? v : 0];
}

static int concatenate_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out,
                              struct err *e)
{
    const Quilkin__Filters__Concatenate__V1alpha1__Concatenate *m = (const void *)pm;
    char *text = malloc(b64_encoded_len(m->bytes.len) + 1);
    if (!text)
        return oom(e);
    b64_encode(m->bytes.data, m->bytes.len, text);
    bool ok = (*out = node_new_map()) &&
              put(*out, "on_read", str_node(strategy_name(m->on_read))) &&
              put(*out, "on_write", str_node(strategy_name(m->on_write))) &&
              put(*out, "bytes", str_node(text));
    free(text);
    return ok ? 0 : oom(e);
}

static int concatenate_encode(const struct node *cfg, unsigned depth, struct pool *p,
                              ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__Concatenate__V1alpha1__Concatenate *m = pool_alloc(p, sizeof(*m));
    Quilkin__Filters__Concatenate__V1alpha1__Concatenate__StrategyValue *rd =
        pool_alloc(p, sizeof(*rd));
    Quilkin__Filters__Concatenate__V1alpha1__Concatenate__StrategyValue *wr =
        pool_alloc(p, sizeof(*wr));
    if (!m || !rd || !wr)
        return oom(e);
    quilkin__filters__concatenate__v1alpha1__concatenate__init(m);
    quilkin__filters__concatenate__v1alpha1__concatenate__strategy_value__init(rd);
    quilkin__filters__concatenate__v1alpha1__concatenate__strategy_value__init(wr);
    int r, w, rc = expect_map(cfg, e);
    const char *text;
    if (rc < 0 || (rc = get_enum(cfg, "on_read", concat_strategies, 3, &r, e)) < 0 ||
        (rc = get_enum(cfg, "on_write", concat_strategies, 3, &w, e)) < 0 ||
        (rc = get_str(cfg, "bytes", "", &text, e)) < 0)
        return rc;
    size_t len = strlen(text);
    uint8_t *bytes = pool_alloc(p, b64_decoded_cap(len));
    if (!bytes)
        return oom(e);
    if (b64_decode(text, len, bytes, &m->bytes.len) < 0)
        return err_set(e, "invalid base64 `%.64s`", text);
    m->bytes.data = bytes;
    rd->value = (Quilkin__Filters__Concatenate__V1alpha1__Concatenate__Strategy)r;
    wr->value = (Quilkin__Filters__Concatenate__V1alpha1__Concatenate__Strategy)w;
    m->on_read = rd;
    m->on_write = wr;
    *out = &m->base;
    return 0;
}

/* ---- Debug, Drop, Pass ---------------------------------------------------------------- */

static int debug_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out,
                        struct err *e)
{
    const Quilkin__Filters__Debug__V1alpha1__Debug *m = (const void *)pm;
    if (!(*out = node_new_map()) ||
        !put(*out, "id", m->id ? str_node(m->id->value) : node_new_null()))
        return oom(e);
    return 0;
}

static int debug_encode(const struct node *cfg, unsigned depth, struct pool *p,
                        ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__Debug__V1alpha1__Debug *m = pool_alloc(p, sizeof(*m));
    if (!m)
        return oom(e);
    quilkin__filters__debug__v1alpha1__debug__init(m);
    const char *id;
    int rc = expect_map(cfg, e);
    if (rc < 0 || (rc = get_str(cfg, "id", NULL, &id, e)) < 0)
        return rc;
    if (id && !(m->id = string_value(p, id)))
        return oom(e);
    *out = &m->base;
    return 0;
}

/* Drop and Pass take no config: a typed_config is accepted (and must parse) but gives none. */
static int unit_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out, struct err *e)
{
    *out = NULL;
    return 0;
}

static int drop_encode(const struct node *cfg, unsigned depth, struct pool *p,
                       ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__Drop__V1alpha1__Drop *m = pool_alloc(p, sizeof(*m));
    if (!m)
        return oom(e);
    quilkin__filters__drop__v1alpha1__drop__init(m);
    *out = &m->base;
    return 0;
}

static int pass_encode(const struct node *cfg, unsigned depth, struct pool *p,
                       ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__Pass__V1alpha1__Pass *m = pool_alloc(p, sizeof(*m));
    if (!m)
        return oom(e);
    quilkin__filters__pass__v1alpha1__pass__init(m);
    *out = &m->base;
    return 0;
}

/* ---- Firewall ------------------------------------------------------------------------- */

static const char *const fw_actions[] = {"ALLOW", "DENY"};

/* PortRange [min, max) -> "N" (single port) or "A-B", as the YAML side writes them. */
static int port_node(const Quilkin__Filters__Firewall__V1alpha1__Firewall__PortRange *r,
                     struct node **out, struct err *e)
{
    uint32_t lo = r ? r->min : 0, hi = r ? r->max : 0;
    if (lo > 65535 || hi > 65535)
        return err_set(e, "invalid port range: %u-%u is outside 0-65535", lo, hi);
    if (lo >= hi)
        return err_set(e, "invalid port range: min %u is greater than or equal to max %u", lo, hi);
    char text[24];
    if (hi == lo + 1)
        snprintf(text, sizeof(text), "%u", lo);
    else
        snprintf(text, sizeof(text), "%u-%u", lo, hi);
    return (*out = str_node(text)) ? 0 : oom(e);
}

/* Appends the rules as a sequence under key; on error the caller frees the parent. */
static int rules_node(Quilkin__Filters__Firewall__V1alpha1__Firewall__Rule *const *rules, size_t n,
                      struct node *parent, const char *key, struct err *e)
{
    struct node *seq = node_new_seq();
    if (!put(parent, key, seq))
        return oom(e);
    for (size_t i = 0; i < n; i++) {
        const Quilkin__Filters__Firewall__V1alpha1__Firewall__Rule *r = rules[i];
        if (!r)
            continue;
        unsigned a = (unsigned)r->action;
        struct node *rule = node_new_map(), *sources, *ports;
        if (node_seq_append(seq, rule) < 0 ||
            !put(rule, "action", str_node(fw_actions[a < 2 ? a : 0])) ||
            !put(rule, "sources", sources = node_new_seq()) ||
            !put(rule, "ports", ports = node_new_seq()))
            return oom(e);
        for (size_t j = 0; j < r->n_sources; j++)
            if (node_seq_append(sources, str_node(r->sources[j])) < 0)
                return oom(e);
        for (size_t j = 0; j < r->n_ports; j++) {
            struct node *pn = NULL;
            int rc = port_node(r->ports[j], &pn, e);
            if (rc < 0)
                return rc;
            if (node_seq_append(ports, pn) < 0)
                return oom(e);
        }
    }
    return 0;
}

static int firewall_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out,
                           struct err *e)
{
    const Quilkin__Filters__Firewall__V1alpha1__Firewall *m = (const void *)pm;
    if (!(*out = node_new_map()))
        return oom(e);
    int rc = rules_node(m->on_read, m->n_on_read, *out, "on_read", e);
    return rc < 0 ? rc : rules_node(m->on_write, m->n_on_write, *out, "on_write", e);
}

static bool parse_u16_text(const char *s, size_t len, uint32_t *out)
{
    uint32_t v = 0;
    if (len == 0 || len > 5)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    *out = v;
    return v <= 65535;
}

/* "N" (or integer N) = [N, N+1); "A-B" = [A, B) (spec filters.md §7). */
static int port_range(struct pool *p, const struct node *n,
                      Quilkin__Filters__Firewall__V1alpha1__Firewall__PortRange **out,
                      struct err *e)
{
    const char *s;
    int rc = node_get_str(n, &s, e);
    if (rc < 0)
        return rc;
    const char *dash = strchr(s, '-');
    uint32_t lo = 0, hi = 0;
    bool ok = dash ? parse_u16_text(s, (size_t)(dash - s), &lo) &&
                         parse_u16_text(dash + 1, strlen(dash + 1), &hi)
                   : parse_u16_text(s, strlen(s), &lo);
    if (!dash)
        hi = lo + 1;
    if (!ok)
        return err_set(e, "invalid port range `%.32s`", s);
    Quilkin__Filters__Firewall__V1alpha1__Firewall__PortRange *r = pool_alloc(p, sizeof(*r));
    if (!r)
        return oom(e);
    quilkin__filters__firewall__v1alpha1__firewall__port_range__init(r);
    r->min = lo;
    r->max = hi;
    *out = r;
    return 0;
}

static int rules_encode(struct pool *p, const struct node *list,
                        Quilkin__Filters__Firewall__V1alpha1__Firewall__Rule ***out, size_t *n,
                        struct err *e)
{
    *out = NULL;
    *n = 0;
    if (!list)
        return 0;
    if (list->kind != NODE_SEQ)
        return err_set(e, "invalid type: %s, expected a sequence", node_kind_name(list->kind));
    if (!(*out = pool_alloc(p, list->n_items * sizeof(**out))))
        return oom(e);
    for (size_t i = 0; i < list->n_items; i++) {
        const struct node *rn = list->items[i];
        Quilkin__Filters__Firewall__V1alpha1__Firewall__Rule *r = pool_alloc(p, sizeof(*r));
        if (!r)
            return oom(e);
        quilkin__filters__firewall__v1alpha1__firewall__rule__init(r);
        int action, rc = expect_map(rn, e);
        if (rc < 0 || (rc = get_enum(rn, "action", fw_actions, 2, &action, e)) < 0)
            return rc;
        r->action = (Quilkin__Filters__Firewall__V1alpha1__Firewall__Action)action;
        const struct node *src = get(rn, "sources"), *ports = get(rn, "ports");
        if ((src && src->kind != NODE_SEQ) || (ports && ports->kind != NODE_SEQ))
            return err_set(e, "firewall rule: `sources` and `ports` must be sequences");
        size_t ns = src ? src->n_items : 0, np = ports ? ports->n_items : 0;
        if (!(r->sources = pool_alloc(p, ns * sizeof(*r->sources))) ||
            !(r->ports = pool_alloc(p, np * sizeof(*r->ports))))
            return oom(e);
        for (size_t j = 0; j < ns; j++) {
            const char *s;
            if ((rc = node_get_str(src->items[j], &s, e)) < 0)
                return rc;
            r->sources[r->n_sources++] = (char *)s;
        }
        for (size_t j = 0; j < np; j++) {
            if ((rc = port_range(p, ports->items[j], &r->ports[j], e)) < 0)
                return rc;
            r->n_ports++;
        }
        (*out)[(*n)++] = r;
    }
    return 0;
}

static int firewall_encode(const struct node *cfg, unsigned depth, struct pool *p,
                           ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__Firewall__V1alpha1__Firewall *m = pool_alloc(p, sizeof(*m));
    if (!m)
        return oom(e);
    quilkin__filters__firewall__v1alpha1__firewall__init(m);
    int rc = expect_map(cfg, e);
    if (rc < 0 || (rc = rules_encode(p, get(cfg, "on_read"), &m->on_read, &m->n_on_read, e)) < 0 ||
        (rc = rules_encode(p, get(cfg, "on_write"), &m->on_write, &m->n_on_write, e)) < 0)
        return rc;
    *out = &m->base;
    return 0;
}

/* ---- LoadBalancer, LocalRateLimit ----------------------------------------------------- */

static const char *const lb_policies[] = {"ROUND_ROBIN", "RANDOM", "HASH"};

static int lb_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out, struct err *e)
{
    const Quilkin__Filters__LoadBalancer__V1alpha1__LoadBalancer *m = (const void *)pm;
    unsigned v = m->policy ? (unsigned)m->policy->value : 0;
    if (!(*out = node_new_map()) || !put(*out, "policy", str_node(lb_policies[v < 3 ? v : 0])))
        return oom(e);
    return 0;
}

static int lb_encode(const struct node *cfg, unsigned depth, struct pool *p, ProtobufCMessage **out,
                     struct err *e)
{
    Quilkin__Filters__LoadBalancer__V1alpha1__LoadBalancer *m = pool_alloc(p, sizeof(*m));
    Quilkin__Filters__LoadBalancer__V1alpha1__LoadBalancer__PolicyValue *v =
        pool_alloc(p, sizeof(*v));
    if (!m || !v)
        return oom(e);
    quilkin__filters__load_balancer__v1alpha1__load_balancer__init(m);
    quilkin__filters__load_balancer__v1alpha1__load_balancer__policy_value__init(v);
    int policy, rc = expect_map(cfg, e);
    if (rc < 0 || (rc = get_enum(cfg, "policy", lb_policies, 3, &policy, e)) < 0)
        return rc;
    v->value = (Quilkin__Filters__LoadBalancer__V1alpha1__LoadBalancer__Policy)policy;
    m->policy = v;
    *out = &m->base;
    return 0;
}

static int rate_limit_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out,
                             struct err *e)
{
    const Quilkin__Filters__LocalRateLimit__V1alpha1__LocalRateLimit *m = (const void *)pm;
    uint32_t period = m->period ? m->period->value : 1; /* spec xds.md §6.4: absent = 1 */
    if (!(*out = node_new_map()) ||
        !put(*out, "max_packets", node_new_int(false, m->max_packets)) ||
        !put(*out, "period", node_new_int(false, period)))
        return oom(e);
    return 0;
}

static int rate_limit_encode(const struct node *cfg, unsigned depth, struct pool *p,
                             ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__LocalRateLimit__V1alpha1__LocalRateLimit *m = pool_alloc(p, sizeof(*m));
    Google__Protobuf__UInt32Value *period = pool_alloc(p, sizeof(*period));
    if (!m || !period)
        return oom(e);
    quilkin__filters__local_rate_limit__v1alpha1__local_rate_limit__init(m);
    google__protobuf__uint32_value__init(period);
    period->value = 1;
    const struct node *max = get(cfg, "max_packets"), *per = get(cfg, "period");
    int rc = expect_map(cfg, e);
    if (rc < 0 || (max && (rc = node_get_u64(max, &m->max_packets, e)) < 0) ||
        (per && (rc = node_get_u32(per, &period->value, e)) < 0))
        return rc;
    m->period = period;
    *out = &m->base;
    return 0;
}

/* ---- Timestamp, TokenRouter ----------------------------------------------------------- */

static int key_node(const Google__Protobuf__StringValue *key, const char *dflt, struct node **out,
                    struct err *e)
{
    if (!(*out = node_new_map()) || !put(*out, "metadataKey", str_node(key ? key->value : dflt)))
        return oom(e);
    return 0;
}

static int timestamp_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out,
                            struct err *e)
{
    const Quilkin__Filters__Timestamp__V1alpha1__Timestamp *m = (const void *)pm;
    if (!m->metadata_key)
        return err_set(e, "`metadata_key` is required but not found");
    return key_node(m->metadata_key, NULL, out, e);
}

static int timestamp_encode(const struct node *cfg, unsigned depth, struct pool *p,
                            ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__Timestamp__V1alpha1__Timestamp *m = pool_alloc(p, sizeof(*m));
    if (!m)
        return oom(e);
    quilkin__filters__timestamp__v1alpha1__timestamp__init(m);
    const char *key;
    int rc = expect_map(cfg, e);
    if (rc < 0 || (rc = get_str(cfg, "metadataKey", NULL, &key, e)) < 0)
        return rc;
    if (!key)
        return err_set(e, "missing field `metadataKey`");
    if (!(m->metadata_key = string_value(p, key)))
        return oom(e);
    *out = &m->base;
    return 0;
}

static int token_router_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out,
                               struct err *e)
{
    const Quilkin__Filters__TokenRouter__V1alpha1__TokenRouter *m = (const void *)pm;
    return key_node(m->metadata_key, DEFAULT_KEY, out, e);
}

static int token_router_encode(const struct node *cfg, unsigned depth, struct pool *p,
                               ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__TokenRouter__V1alpha1__TokenRouter *m = pool_alloc(p, sizeof(*m));
    if (!m)
        return oom(e);
    quilkin__filters__token_router__v1alpha1__token_router__init(m);
    const char *key;
    int rc = expect_map(cfg, e);
    if (rc < 0 || (rc = get_str(cfg, "metadataKey", DEFAULT_KEY, &key, e)) < 0)
        return rc;
    if (!(m->metadata_key = string_value(p, key)))
        return oom(e);
    *out = &m->base;
    return 0;
}

/* ---- Match ---------------------------------------------------------------------------- */

/* Branch value -> YAML value (spec xds.md §6.4): numbers truncated toward zero, negatives
 * and NaN become 0; struct, null and kindless values are errors. */
static int match_value_node(const Google__Protobuf__Value *v, struct node **out, struct err *e)
{
    *out = NULL;
    switch (v ? v->kind_case : GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: {
        double d = v->number_value;
        uint64_t u = !(d > 0) ? 0 : d >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)d;
        *out = node_new_int(false, u);
        break;
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        *out = str_node(v->string_value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        *out = node_new_bool(v->bool_value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        if (!(*out = node_new_seq()))
            break;
        for (size_t i = 0; v->list_value && i < v->list_value->n_values; i++) {
            struct node *item;
            int rc = match_value_node(v->list_value->values[i], &item, e);
            if (rc < 0) {
                node_free(*out);
                *out = NULL;
                return rc;
            }
            if (node_seq_append(*out, item) < 0) {
                node_free(*out);
                *out = NULL;
                break;
            }
        }
        break;
    }
    default:
        return err_set(e, "field `value` is invalid, reason: unsupported Match value kind");
    }
    return *out ? 0 : oom(e);
}

/* {name, config?} from an envoy Filter, into map. */
static int put_filter(struct node *map, const Envoy__Config__Listener__V3__Filter *f,
                      unsigned depth, struct err *e)
{
    const char *name;
    struct node *config;
    int rc = filter_decode(f, depth, &name, &config, e);
    if (rc < 0)
        return rc;
    if (!put(map, "name", str_node(name))) {
        node_free(config);
        return oom(e);
    }
    if (config && !put(map, "config", config))
        return oom(e);
    return 0;
}

/* Fills dn (already attached to the caller's tree, which frees it on error). */
static int match_dir_decode(const Quilkin__Filters__Matches__V1alpha1__Match__Config *c,
                            unsigned depth, struct node *dn, struct err *e)
{
    if (!c->metadata_key)
        return missing("metadata_key", e);
    if (!c->fallthrough)
        return missing("fallthrough", e);
    struct node *branches, *ft;
    if (!put(dn, "metadataKey", str_node(c->metadata_key->value)) ||
        !put(dn, "branches", branches = node_new_seq()) ||
        !put(dn, "fallthrough", ft = node_new_map()))
        return oom(e);
    for (size_t i = 0; i < c->n_branches; i++) {
        const Quilkin__Filters__Matches__V1alpha1__Match__Branch *b = c->branches[i];
        if (!b || !b->value)
            return missing("value", e);
        if (!b->filter)
            return missing("filter", e);
        struct node *bn = node_new_map(), *value;
        if (node_seq_append(branches, bn) < 0)
            return oom(e);
        int rc = match_value_node(b->value, &value, e);
        if (rc < 0)
            return rc;
        if (!put(bn, "value", value))
            return oom(e);
        if ((rc = put_filter(bn, b->filter, depth + 1, e)) < 0)
            return rc;
    }
    return put_filter(ft, c->fallthrough, depth + 1, e);
}

static int match_decode(const ProtobufCMessage *pm, unsigned depth, struct node **out,
                        struct err *e)
{
    const Quilkin__Filters__Matches__V1alpha1__Match *m = (const void *)pm;
    if (!(*out = node_new_map()))
        return oom(e);
    const Quilkin__Filters__Matches__V1alpha1__Match__Config *dirs[2] = {m->on_read, m->on_write};
    static const char *const keys[2] = {"on_read", "on_write"};
    for (int d = 0; d < 2; d++) {
        if (!dirs[d])
            continue;
        struct node *dn = node_new_map();
        if (!put(*out, keys[d], dn))
            return oom(e);
        int rc = match_dir_decode(dirs[d], depth, dn, e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int match_value_encode(struct pool *p, const struct node *n, Google__Protobuf__Value **out,
                              struct err *e)
{
    Google__Protobuf__Value *v = pool_alloc(p, sizeof(*v));
    if (!v)
        return oom(e);
    google__protobuf__value__init(v);
    *out = v;
    switch (n->kind) {
    case NODE_BOOL:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        v->bool_value = n->b;
        return 0;
    case NODE_INT:
        if (n->is_neg && n->u)
            break;
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        v->number_value = (double)n->u;
        return 0;
    case NODE_STR:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        v->string_value = n->str;
        return 0;
    case NODE_SEQ: {
        Google__Protobuf__ListValue *l = pool_alloc(p, sizeof(*l));
        Google__Protobuf__Value **items = pool_alloc(p, n->n_items * sizeof(*items));
        if (!l || !items)
            return oom(e);
        google__protobuf__list_value__init(l);
        for (size_t i = 0; i < n->n_items; i++) {
            int rc = match_value_encode(p, n->items[i], &items[i], e);
            if (rc < 0)
                return rc;
        }
        l->values = items;
        l->n_values = n->n_items;
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        v->list_value = l;
        return 0;
    }
    default:
        break;
    }
    return err_set(e, "data did not match any variant of untagged enum Value");
}

static Envoy__Config__Listener__V3__Filter *target_encode(struct pool *p, const struct node *t,
                                                          unsigned depth, struct err *e, int *rc)
{
    const char *name;
    if ((*rc = expect_map(t, e)) < 0 || (*rc = get_str(t, "name", NULL, &name, e)) < 0)
        return NULL;
    if (!name) {
        *rc = err_set(e, "missing field `name`");
        return NULL;
    }
    return filter_encode(p, name, get(t, "config"), depth, e, rc);
}

static Quilkin__Filters__Matches__V1alpha1__Match__Config *
match_dir_encode(struct pool *p, const struct node *dn, unsigned depth, struct err *e, int *rc)
{
    Quilkin__Filters__Matches__V1alpha1__Match__Config *c = pool_alloc(p, sizeof(*c));
    if (!c) {
        *rc = oom(e);
        return NULL;
    }
    quilkin__filters__matches__v1alpha1__match__config__init(c);
    const char *key;
    if ((*rc = expect_map(dn, e)) < 0 || (*rc = get_str(dn, "metadataKey", NULL, &key, e)) < 0)
        return NULL;
    if (!key) {
        *rc = err_set(e, "missing field `metadataKey`");
        return NULL;
    }
    if (!(c->metadata_key = string_value(p, key))) {
        *rc = oom(e);
        return NULL;
    }
    const struct node *branches = get(dn, "branches");
    if (branches && branches->kind != NODE_SEQ) {
        *rc = err_set(e, "invalid type: %s, expected a sequence", node_kind_name(branches->kind));
        return NULL;
    }
    size_t nb = branches ? branches->n_items : 0;
    if (!(c->branches = pool_alloc(p, nb * sizeof(*c->branches)))) {
        *rc = oom(e);
        return NULL;
    }
    for (size_t i = 0; i < nb; i++) {
        const struct node *bn = branches->items[i], *value = get(bn, "value");
        Quilkin__Filters__Matches__V1alpha1__Match__Branch *b = pool_alloc(p, sizeof(*b));
        if (!b) {
            *rc = oom(e);
            return NULL;
        }
        quilkin__filters__matches__v1alpha1__match__branch__init(b);
        if (!value) {
            *rc = err_set(e, "missing field `value`");
            return NULL;
        }
        if ((*rc = match_value_encode(p, value, &b->value, e)) < 0 ||
            !(b->filter = target_encode(p, bn, depth + 1, e, rc)))
            return NULL;
        c->branches[c->n_branches++] = b;
    }
    const struct node *ft = get(dn, "fallthrough");
    /* spec filters.md §10: the fallthrough defaults to Drop; the proto requires one. */
    c->fallthrough = ft ? target_encode(p, ft, depth + 1, e, rc)
                        : filter_encode(p, DROP_NAME, NULL, depth + 1, e, rc);
    return c->fallthrough ? c : NULL;
}

static int match_encode(const struct node *cfg, unsigned depth, struct pool *p,
                        ProtobufCMessage **out, struct err *e)
{
    Quilkin__Filters__Matches__V1alpha1__Match *m = pool_alloc(p, sizeof(*m));
    if (!m)
        return oom(e);
    quilkin__filters__matches__v1alpha1__match__init(m);
    int rc = expect_map(cfg, e);
    if (rc < 0)
        return rc;
    const struct node *rd = get(cfg, "on_read"), *wr = get(cfg, "on_write");
    if (rd && !(m->on_read = match_dir_encode(p, rd, depth, e, &rc)))
        return rc;
    if (wr && !(m->on_write = match_dir_encode(p, wr, depth, e, &rc)))
        return rc;
    *out = &m->base;
    return 0;
}

/* ---- the table and the public entry points ---------------------------------------------- */

static const struct codec codecs[] = {
    {"quilkin.filters.capture.v1alpha1.Capture",
     &quilkin__filters__capture__v1alpha1__capture__descriptor, capture_decode, capture_encode},
    {"quilkin.filters.compress.v1alpha1.Compress",
     &quilkin__filters__compress__v1alpha1__compress__descriptor, compress_decode, compress_encode},
    {"quilkin.filters.concatenate.v1alpha1.Concatenate",
     &quilkin__filters__concatenate__v1alpha1__concatenate__descriptor, concatenate_decode,
     concatenate_encode},
    {"quilkin.filters.debug.v1alpha1.Debug", &quilkin__filters__debug__v1alpha1__debug__descriptor,
     debug_decode, debug_encode},
    {DROP_NAME, &quilkin__filters__drop__v1alpha1__drop__descriptor, unit_decode, drop_encode},
    {"quilkin.filters.firewall.v1alpha1.Firewall",
     &quilkin__filters__firewall__v1alpha1__firewall__descriptor, firewall_decode, firewall_encode},
    {"quilkin.filters.load_balancer.v1alpha1.LoadBalancer",
     &quilkin__filters__load_balancer__v1alpha1__load_balancer__descriptor, lb_decode, lb_encode},
    {"quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit",
     &quilkin__filters__local_rate_limit__v1alpha1__local_rate_limit__descriptor, rate_limit_decode,
     rate_limit_encode},
    /* spec xds.md §6.4: the filter is `match`, its message lives in package `matches` */
    {"quilkin.filters.match.v1alpha1.Match",
     &quilkin__filters__matches__v1alpha1__match__descriptor, match_decode, match_encode},
    {"quilkin.filters.pass.v1alpha1.Pass", &quilkin__filters__pass__v1alpha1__pass__descriptor,
     unit_decode, pass_encode},
    {"quilkin.filters.timestamp.v1alpha1.Timestamp",
     &quilkin__filters__timestamp__v1alpha1__timestamp__descriptor, timestamp_decode,
     timestamp_encode},
    {"quilkin.filters.token_router.v1alpha1.TokenRouter",
     &quilkin__filters__token_router__v1alpha1__token_router__descriptor, token_router_decode,
     token_router_encode},
};

static const struct codec *find_codec(const char *name)
{
    for (size_t i = 0; i < sizeof(codecs) / sizeof(codecs[0]); i++)
        if (strcmp(codecs[i].name, name) == 0)
            return &codecs[i];
    return NULL;
}

int xds_filter_config_decode(const char *name, const uint8_t *buf, size_t len, struct node **out,
                             struct err *e)
{
    *out = NULL;
    const struct codec *c = find_codec(str_or_empty(name));
    if (!c)
        return err_set(e, "filter `%s` not found", str_or_empty(name));
    return decode_config(c, buf, len, 0, out, e);
}

int xds_filter_config_encode(const char *name, const struct node *config, uint8_t **out,
                             size_t *out_len, struct err *e)
{
    const struct codec *c = find_codec(str_or_empty(name));
    if (!c)
        return err_set(e, "filter `%s` not found", str_or_empty(name));
    struct pool p = {0};
    ProtobufCBinaryData bin = {0};
    int rc = encode_config(c, config, 0, &p, &bin, e);
    if (rc == 0) {
        *out = malloc(bin.len ? bin.len : 1);
        if (*out) {
            if (bin.len)
                memcpy(*out, bin.data, bin.len);
            *out_len = bin.len;
        } else {
            rc = oom(e);
        }
    }
    pool_free(&p);
    return rc;
}

static void filter_cfgs_free(struct filter_cfg *fs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(fs[i].name);
        free(fs[i].label);
        node_free(fs[i].owned_config);
    }
    free(fs);
}

int xds_listener_decode(const uint8_t *buf, size_t len, struct filter_cfg **filters, size_t *n,
                        struct err *e)
{
    *filters = NULL;
    *n = 0;
    Envoy__Config__Listener__V3__Listener *m =
        (void *)unpack(&envoy__config__listener__v3__listener__descriptor, buf, len, e);
    if (!m)
        return -EINVAL;
    /* spec xds.md §6.3: only the first chain counts; none at all is an empty chain. */
    const Envoy__Config__Listener__V3__FilterChain *ch =
        m->n_filter_chains ? m->filter_chains[0] : NULL;
    size_t count = ch ? ch->n_filters : 0, done = 0;
    struct filter_cfg *fs = calloc(count ? count : 1, sizeof(*fs));
    int rc = fs ? 0 : oom(e);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        const Envoy__Config__Listener__V3__Filter *f = ch->filters[i];
        if (!f)
            continue;
        const char *name;
        struct node *config;
        if ((rc = filter_decode(f, 0, &name, &config, e)) < 0)
            break;
        struct filter_cfg *fc = &fs[done++];
        fc->owned_config = config;
        fc->config = config;
        if (!(fc->name = strdup(name)))
            rc = oom(e);
    }
    envoy__config__listener__v3__listener__free_unpacked(m, NULL);
    if (rc < 0) {
        filter_cfgs_free(fs, done);
        return rc;
    }
    if (done == 0) {
        free(fs);
        fs = NULL;
    }
    *filters = fs;
    *n = done;
    return 0;
}

int xds_listener_encode(const struct filter_cfg *filters, size_t n, uint8_t **out, size_t *out_len,
                        struct err *e)
{
    struct pool p = {0};
    Envoy__Config__Listener__V3__Listener m = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT;
    Envoy__Config__Listener__V3__FilterChain ch = ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN__INIT;
    Envoy__Config__Listener__V3__FilterChain *chains[1] = {&ch};
    m.filter_chains = chains;
    m.n_filter_chains = 1;
    int rc = 0;
    if (!(ch.filters = pool_alloc(&p, n * sizeof(*ch.filters))))
        rc = oom(e);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!(ch.filters[i] = filter_encode(&p, filters[i].name, filters[i].config, 0, e, &rc)))
            break;
        ch.n_filters++;
    }
    if (rc == 0) {
        size_t size = protobuf_c_message_get_packed_size(&m.base);
        if ((*out = malloc(size ? size : 1)))
            *out_len = protobuf_c_message_pack(&m.base, *out);
        else
            rc = oom(e);
    }
    pool_free(&p);
    return rc;
}
