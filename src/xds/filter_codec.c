/* Per-filter config packing (spec xds.md §6.3, §6.4): a filter's protobuf config message, or
 * an envoy Filter naming it, <-> the YAML-shaped node tree the filter's from_yaml accepts, so
 * YAML and xDS share one set of filter decoders and validators. Pure: it knows names and config
 * shapes, never builds a filter. Whole Listener resources are in xds/listener.c. */
#include "xds/filter_codec.h"

#include "base/b64.h"
#include "base/err.h"
#include "config/node.h"
#include "xds/pb_util.h"
#include "xds/resources.h"

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

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Match inside Match inside ...: YAML's 64-level limit allows about 15; xDS gets some slack. */
#define MAX_FILTER_DEPTH 32
#define DEFAULT_KEY "quilkin.dev/capture"
#define DROP_NAME "quilkin.filters.drop.v1alpha1.Drop"

static int oom(struct err *e)
{
    err_set(e, "out of memory");
    return -ENOMEM;
}

static Google__Protobuf__StringValue *string_value(struct pb_pool *p, const char *s)
{
    Google__Protobuf__StringValue *v =
        (void *)pb_pool_msg(p, &google__protobuf__string_value__descriptor);
    if (v)
        v->value = (char *)s;
    return v;
}

static Google__Protobuf__BoolValue *bool_value(struct pb_pool *p, bool b)
{
    Google__Protobuf__BoolValue *v =
        (void *)pb_pool_msg(p, &google__protobuf__bool_value__descriptor);
    if (v)
        v->value = b;
    return v;
}

/* ---- node helpers --------------------------------------------------------------------- */

static struct node *str_node(const char *s)
{
    s = pb_str(s);
    return node_new_str(s, strlen(s));
}

/* Appends; on failure the value is freed and false returned (so calls chain with &&). */
static bool put(struct node *map, const char *key, struct node *v)
{
    return node_map_append(map, key, strlen(key), v) == 0;
}

static int put_str(struct node *map, const char *key, const char *s, struct err *e)
{
    return put(map, key, str_node(s)) ? 0 : oom(e);
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

/* map[key], a string (dflt when absent; required when dflt is NULL), as a StringValue in p. */
static int encode_key(const struct node *map, const char *key, const char *dflt, struct pb_pool *p,
                      Google__Protobuf__StringValue **out, struct err *e)
{
    const char *s;
    int rc = get_str(map, key, dflt, &s, e);
    if (rc < 0)
        return rc;
    if (!s)
        return err_set(e, "missing field `%s`", key);
    return (*out = string_value(p, s)) ? 0 : oom(e);
}

/* ---- the per-filter table ------------------------------------------------------------- */

/* A field of a filter's message that holds a one-field wrapper `{ SomeEnum value = 1; }`
 * (Compress.ActionValue, LoadBalancer.PolicyValue, ...). The YAML key is the field's name and
 * its value one of names, indexed by enum number. */
struct enum_holder {
    const char *field;
    const char *const *names;
    size_t n_names;
};

/* How one filter's config message maps to its YAML config. Enum holders come first (in table
 * order), then the filter's own fields through decode/encode, when set. A filter with neither
 * takes no config (Drop, Pass): a typed_config is accepted (and must parse) but gives none. */
struct codec {
    const char *name; /* the filter's name, also its typed_config type_url */
    const ProtobufCMessageDescriptor *desc;
    const struct enum_holder *enums;
    size_t n_enums;
    /* m -> more entries of map (the caller's, freed by it on error). */
    int (*decode)(const ProtobufCMessage *m, unsigned depth, struct node *map, struct err *e);
    /* cfg (a map, or NULL when absent) -> fields of m (allocated in p, defaults set). */
    int (*encode)(const struct node *cfg, unsigned depth, struct pb_pool *p, ProtobufCMessage *m,
                  struct err *e);
};

static const struct codec *find_codec(const char *name);

static bool takes_config(const struct codec *c)
{
    return c->n_enums || c->decode;
}

/* The holder field's descriptor: the codec table names real message-typed fields. */
static const ProtobufCFieldDescriptor *holder_field(const struct codec *c,
                                                    const struct enum_holder *h)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(c->desc, h->field);
    assert(f && f->type == PROTOBUF_C_TYPE_MESSAGE);
    return f;
}

/* The holder's only field, an enum, which protobuf-c stores as an int. */
static int *holder_value(const ProtobufCMessage *holder)
{
    const ProtobufCFieldDescriptor *v = &holder->descriptor->fields[0];
    assert(holder->descriptor->n_fields == 1 && v->type == PROTOBUF_C_TYPE_ENUM);
    return (int *)((char *)holder + v->offset);
}

/* An absent holder reads as 0, and so do enum numbers we have no name for. */
static int enums_decode(const struct codec *c, const ProtobufCMessage *m, struct node *map,
                        struct err *e)
{
    for (size_t i = 0; i < c->n_enums; i++) {
        const struct enum_holder *h = &c->enums[i];
        const ProtobufCMessage *holder =
            *(ProtobufCMessage *const *)((const char *)m + holder_field(c, h)->offset);
        unsigned v = holder ? (unsigned)*holder_value(holder) : 0;
        int rc = put_str(map, h->field, h->names[v < h->n_names ? v : 0], e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Every holder is sent, even at its default value (spec xds.md §6.4 vectors: `0a 00`). */
static int enums_encode(const struct codec *c, const struct node *cfg, struct pb_pool *p,
                        ProtobufCMessage *m, struct err *e)
{
    for (size_t i = 0; i < c->n_enums; i++) {
        const struct enum_holder *h = &c->enums[i];
        const ProtobufCFieldDescriptor *f = holder_field(c, h);
        ProtobufCMessage *holder = pb_pool_msg(p, f->descriptor);
        int v, rc;
        if (!holder)
            return oom(e);
        if ((rc = get_enum(cfg, h->field, h->names, h->n_names, &v, e)) < 0)
            return rc;
        *holder_value(holder) = v;
        *(ProtobufCMessage **)((char *)m + f->offset) = holder;
    }
    return 0;
}

static int decode_config(const struct codec *c, const uint8_t *buf, size_t len, unsigned depth,
                         struct node **out, struct err *e)
{
    *out = NULL;
    if (depth > MAX_FILTER_DEPTH)
        return err_set(e, "filter configuration nested too deeply");
    ProtobufCMessage *m = pb_unpack(c->desc, buf, len, e);
    if (!m)
        return -EINVAL;
    int rc = 0;
    if (takes_config(c)) {
        rc = (*out = node_new_map()) ? enums_decode(c, m, *out, e) : oom(e);
        if (rc == 0 && c->decode)
            rc = c->decode(m, depth, *out, e);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc < 0) {
        node_free(*out);
        *out = NULL;
    }
    return rc;
}

/* Packs cfg into a buffer owned by p. */
static int encode_config(const struct codec *c, const struct node *cfg, unsigned depth,
                         struct pb_pool *p, ProtobufCBinaryData *out, struct err *e)
{
    if (depth > MAX_FILTER_DEPTH)
        return err_set(e, "filter configuration nested too deeply");
    if (cfg && cfg->kind == NODE_NULL)
        cfg = NULL;
    ProtobufCMessage *m = pb_pool_msg(p, c->desc);
    if (!m)
        return oom(e);
    int rc = takes_config(c) ? expect_map(cfg, e) : 0;
    if (rc == 0)
        rc = enums_encode(c, cfg, p, m, e);
    if (rc == 0 && c->encode)
        rc = c->encode(cfg, depth, p, m, e);
    if (rc < 0)
        return rc;
    size_t n = protobuf_c_message_get_packed_size(m);
    if (!(out->data = pb_pool_alloc(p, n)))
        return oom(e);
    out->len = protobuf_c_message_pack(m, out->data);
    return 0;
}

/* ---- envoy.config.listener.v3.Filter <-> (name, config) (spec xds.md §6.3) -------------- */

/* The same checks, in the same order, as v0.7.0's FilterChain conversion. */
int filter_codec_decode_filter(const Envoy__Config__Listener__V3__Filter *f, unsigned depth,
                               const char **name, struct node **config, struct err *e)
{
    *config = NULL;
    if (f->config_type_case == ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_CONFIG_DISCOVERY)
        return err_set(e, "field `config_type` is invalid, reason: ConfigDiscovery is currently "
                          "unsupported");
    *name = pb_str(f->name);
    const struct codec *c = find_codec(*name);
    if (!c)
        return err_set(e, "filter `%s` not found", *name);
    const Google__Protobuf__Any *a =
        f->config_type_case == ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG
            ? f->typed_config
            : NULL;
    if (!a)
        return 0;
    if (strcmp(pb_str(a->type_url), *name) != 0)
        return err_set(e, "Expected %s message, received %s ", *name, pb_str(a->type_url));
    return decode_config(c, a->value.data, a->value.len, depth, config, e);
}

/* typed_config is omitted when there is no config (spec xds.md §6.3). */
Envoy__Config__Listener__V3__Filter *filter_codec_encode_filter(struct pb_pool *p, const char *name,
                                                                const struct node *config,
                                                                unsigned depth, struct err *e,
                                                                int *rc)
{
    Envoy__Config__Listener__V3__Filter *f =
        (void *)pb_pool_msg(p, &envoy__config__listener__v3__filter__descriptor);
    if (!f) {
        *rc = oom(e);
        return NULL;
    }
    const struct codec *c = find_codec(pb_str(name));
    if (!c) {
        *rc = err_set(e, "filter `%s` not found", pb_str(name));
        return NULL;
    }
    f->name = (char *)c->name;
    if (!config || config->kind == NODE_NULL)
        return f;
    Google__Protobuf__Any *a = (void *)pb_pool_msg(p, &google__protobuf__any__descriptor);
    if (!a) {
        *rc = oom(e);
        return NULL;
    }
    a->type_url = (char *)c->name;
    if ((*rc = encode_config(c, config, depth, p, &a->value, e)) < 0)
        return NULL;
    f->config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG;
    f->typed_config = a;
    return f;
}

/* ---- Capture -------------------------------------------------------------------------- */

static int capture_decode(const ProtobufCMessage *pm, unsigned depth, struct node *map,
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
    if (!put(map, "metadataKey", str_node(m->metadata_key->value)) || !(s = node_new_map()) ||
        !put(map, kind, s))
        return oom(e);
    bool ok = kind[0] == 'r' ? put(s, "pattern", str_node(m->regex->regex->value))
                             : put(s, "size", node_new_int(false, size)) &&
                                   put(s, "remove", node_new_bool(remove && remove->value));
    return ok ? 0 : oom(e);
}

static int capture_encode(const struct node *cfg, unsigned depth, struct pb_pool *p,
                          ProtobufCMessage *pm, struct err *e)
{
    Quilkin__Filters__Capture__V1alpha1__Capture *m = (void *)pm;
    int rc = encode_key(cfg, "metadataKey", DEFAULT_KEY, p, &m->metadata_key, e);
    if (rc < 0)
        return rc;
    const struct node *v;
    if ((v = get(cfg, "regex"))) {
        Quilkin__Filters__Capture__V1alpha1__Capture__Regex *r = (void *)pb_pool_msg(
            p, &quilkin__filters__capture__v1alpha1__capture__regex__descriptor);
        if (!r)
            return oom(e);
        if ((rc = expect_map(v, e)) < 0 ||
            (rc = encode_key(v, "pattern", NULL, p, &r->regex, e)) < 0)
            return rc;
        m->strategy_case = QUILKIN__FILTERS__CAPTURE__V1ALPHA1__CAPTURE__STRATEGY_REGEX;
        m->regex = r;
        return 0;
    }
    if (!(v = get(cfg, "prefix")) && !(v = get(cfg, "suffix")))
        return err_set(e, "Capture strategy of `regex`, `suffix`, or `prefix` is required");
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
    /* Prefix and Suffix are two message types of the same shape. */
    if (is_prefix) {
        Quilkin__Filters__Capture__V1alpha1__Capture__Prefix *a = (void *)pb_pool_msg(
            p, &quilkin__filters__capture__v1alpha1__capture__prefix__descriptor);
        if (!a)
            return oom(e);
        a->size = n;
        a->remove = b;
        m->strategy_case = QUILKIN__FILTERS__CAPTURE__V1ALPHA1__CAPTURE__STRATEGY_PREFIX;
        m->prefix = a;
    } else {
        Quilkin__Filters__Capture__V1alpha1__Capture__Suffix *a = (void *)pb_pool_msg(
            p, &quilkin__filters__capture__v1alpha1__capture__suffix__descriptor);
        if (!a)
            return oom(e);
        a->size = n;
        a->remove = b;
        m->strategy_case = QUILKIN__FILTERS__CAPTURE__V1ALPHA1__CAPTURE__STRATEGY_SUFFIX;
        m->suffix = a;
    }
    return 0;
}

/* ---- Compress, Concatenate, LoadBalancer: enum holders (plus Concatenate's bytes) ------- */

static const char *const compress_modes[] = {"SNAPPY"};
static const char *const compress_actions[] = {"DO_NOTHING", "COMPRESS", "DECOMPRESS"};
static const struct enum_holder compress_enums[] = {
    {"mode", compress_modes, 1},
    {"on_read", compress_actions, 3},
    {"on_write", compress_actions, 3},
};

static const char *const concat_strategies[] = {"DO_NOTHING", "APPEND", "PREPEND"};
static const struct enum_holder concat_enums[] = {
    {"on_read", concat_strategies, 3},
    {"on_write", concat_strategies, 3},
};

static const char *const lb_policies[] = {"ROUND_ROBIN", "RANDOM", "HASH"};
static const struct enum_holder lb_enums[] = {{"policy", lb_policies, 3}};

static int concatenate_decode(const ProtobufCMessage *pm, unsigned depth, struct node *map,
                              struct err *e)
{
    const Quilkin__Filters__Concatenate__V1alpha1__Concatenate *m = (const void *)pm;
    char *text = malloc(b64_encoded_len(m->bytes.len) + 1);
    if (!text)
        return oom(e);
    b64_encode(m->bytes.data, m->bytes.len, text);
    int rc = put_str(map, "bytes", text, e);
    free(text);
    return rc;
}

static int concatenate_encode(const struct node *cfg, unsigned depth, struct pb_pool *p,
                              ProtobufCMessage *pm, struct err *e)
{
    Quilkin__Filters__Concatenate__V1alpha1__Concatenate *m = (void *)pm;
    const char *text;
    int rc = get_str(cfg, "bytes", "", &text, e);
    if (rc < 0)
        return rc;
    size_t len = strlen(text);
    uint8_t *bytes = pb_pool_alloc(p, b64_decoded_cap(len));
    if (!bytes)
        return oom(e);
    if (b64_decode(text, len, bytes, &m->bytes.len) < 0)
        return err_set(e, "invalid base64 `%.64s`", text);
    m->bytes.data = bytes;
    return 0;
}

/* ---- Debug (Drop and Pass take no config: they need no functions) ---------------------- */

static int debug_decode(const ProtobufCMessage *pm, unsigned depth, struct node *map, struct err *e)
{
    const Quilkin__Filters__Debug__V1alpha1__Debug *m = (const void *)pm;
    return put(map, "id", m->id ? str_node(m->id->value) : node_new_null()) ? 0 : oom(e);
}

static int debug_encode(const struct node *cfg, unsigned depth, struct pb_pool *p,
                        ProtobufCMessage *pm, struct err *e)
{
    Quilkin__Filters__Debug__V1alpha1__Debug *m = (void *)pm;
    const char *id;
    int rc = get_str(cfg, "id", NULL, &id, e);
    if (rc < 0)
        return rc;
    if (id && !(m->id = string_value(p, id)))
        return oom(e);
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

static int firewall_decode(const ProtobufCMessage *pm, unsigned depth, struct node *map,
                           struct err *e)
{
    const Quilkin__Filters__Firewall__V1alpha1__Firewall *m = (const void *)pm;
    int rc = rules_node(m->on_read, m->n_on_read, map, "on_read", e);
    return rc < 0 ? rc : rules_node(m->on_write, m->n_on_write, map, "on_write", e);
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
static int port_range(struct pb_pool *p, const struct node *n,
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
    Quilkin__Filters__Firewall__V1alpha1__Firewall__PortRange *r = (void *)pb_pool_msg(
        p, &quilkin__filters__firewall__v1alpha1__firewall__port_range__descriptor);
    if (!r)
        return oom(e);
    r->min = lo;
    r->max = hi;
    *out = r;
    return 0;
}

static int rules_encode(struct pb_pool *p, const struct node *list,
                        Quilkin__Filters__Firewall__V1alpha1__Firewall__Rule ***out, size_t *n,
                        struct err *e)
{
    *out = NULL;
    *n = 0;
    if (!list)
        return 0;
    if (list->kind != NODE_SEQ)
        return err_set(e, "invalid type: %s, expected a sequence", node_kind_name(list->kind));
    if (!(*out = pb_pool_alloc(p, list->n_items * sizeof(**out))))
        return oom(e);
    for (size_t i = 0; i < list->n_items; i++) {
        const struct node *rn = list->items[i];
        Quilkin__Filters__Firewall__V1alpha1__Firewall__Rule *r = (void *)pb_pool_msg(
            p, &quilkin__filters__firewall__v1alpha1__firewall__rule__descriptor);
        if (!r)
            return oom(e);
        int action, rc = expect_map(rn, e);
        if (rc < 0 || (rc = get_enum(rn, "action", fw_actions, 2, &action, e)) < 0)
            return rc;
        r->action = (Quilkin__Filters__Firewall__V1alpha1__Firewall__Action)action;
        const struct node *src = get(rn, "sources"), *ports = get(rn, "ports");
        if ((src && src->kind != NODE_SEQ) || (ports && ports->kind != NODE_SEQ))
            return err_set(e, "firewall rule: `sources` and `ports` must be sequences");
        size_t ns = src ? src->n_items : 0, np = ports ? ports->n_items : 0;
        if (!(r->sources = pb_pool_alloc(p, ns * sizeof(*r->sources))) ||
            !(r->ports = pb_pool_alloc(p, np * sizeof(*r->ports))))
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

static int firewall_encode(const struct node *cfg, unsigned depth, struct pb_pool *p,
                           ProtobufCMessage *pm, struct err *e)
{
    Quilkin__Filters__Firewall__V1alpha1__Firewall *m = (void *)pm;
    int rc = rules_encode(p, get(cfg, "on_read"), &m->on_read, &m->n_on_read, e);
    return rc < 0 ? rc : rules_encode(p, get(cfg, "on_write"), &m->on_write, &m->n_on_write, e);
}

/* ---- LocalRateLimit, Timestamp, TokenRouter ------------------------------------------- */

static int rate_limit_decode(const ProtobufCMessage *pm, unsigned depth, struct node *map,
                             struct err *e)
{
    const Quilkin__Filters__LocalRateLimit__V1alpha1__LocalRateLimit *m = (const void *)pm;
    uint32_t period = m->period ? m->period->value : 1; /* spec xds.md §6.4: absent = 1 */
    if (!put(map, "max_packets", node_new_int(false, m->max_packets)) ||
        !put(map, "period", node_new_int(false, period)))
        return oom(e);
    return 0;
}

static int rate_limit_encode(const struct node *cfg, unsigned depth, struct pb_pool *p,
                             ProtobufCMessage *pm, struct err *e)
{
    Quilkin__Filters__LocalRateLimit__V1alpha1__LocalRateLimit *m = (void *)pm;
    Google__Protobuf__UInt32Value *period =
        (void *)pb_pool_msg(p, &google__protobuf__uint32_value__descriptor);
    if (!period)
        return oom(e);
    period->value = 1;
    const struct node *max = get(cfg, "max_packets"), *per = get(cfg, "period");
    int rc = 0;
    if ((max && (rc = node_get_u64(max, &m->max_packets, e)) < 0) ||
        (per && (rc = node_get_u32(per, &period->value, e)) < 0))
        return rc;
    m->period = period;
    return 0;
}

static int timestamp_decode(const ProtobufCMessage *pm, unsigned depth, struct node *map,
                            struct err *e)
{
    const Quilkin__Filters__Timestamp__V1alpha1__Timestamp *m = (const void *)pm;
    if (!m->metadata_key)
        return err_set(e, "`metadata_key` is required but not found");
    return put_str(map, "metadataKey", m->metadata_key->value, e);
}

static int timestamp_encode(const struct node *cfg, unsigned depth, struct pb_pool *p,
                            ProtobufCMessage *pm, struct err *e)
{
    Quilkin__Filters__Timestamp__V1alpha1__Timestamp *m = (void *)pm;
    return encode_key(cfg, "metadataKey", NULL, p, &m->metadata_key, e);
}

static int token_router_decode(const ProtobufCMessage *pm, unsigned depth, struct node *map,
                               struct err *e)
{
    const Quilkin__Filters__TokenRouter__V1alpha1__TokenRouter *m = (const void *)pm;
    return put_str(map, "metadataKey", m->metadata_key ? m->metadata_key->value : DEFAULT_KEY, e);
}

static int token_router_encode(const struct node *cfg, unsigned depth, struct pb_pool *p,
                               ProtobufCMessage *pm, struct err *e)
{
    Quilkin__Filters__TokenRouter__V1alpha1__TokenRouter *m = (void *)pm;
    return encode_key(cfg, "metadataKey", DEFAULT_KEY, p, &m->metadata_key, e);
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
    int rc = filter_codec_decode_filter(f, depth, &name, &config, e);
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

static int match_decode(const ProtobufCMessage *pm, unsigned depth, struct node *map, struct err *e)
{
    const Quilkin__Filters__Matches__V1alpha1__Match *m = (const void *)pm;
    const Quilkin__Filters__Matches__V1alpha1__Match__Config *dirs[2] = {m->on_read, m->on_write};
    static const char *const keys[2] = {"on_read", "on_write"};
    for (int d = 0; d < 2; d++) {
        if (!dirs[d])
            continue;
        struct node *dn = node_new_map();
        if (!put(map, keys[d], dn))
            return oom(e);
        int rc = match_dir_decode(dirs[d], depth, dn, e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int match_value_encode(struct pb_pool *p, const struct node *n,
                              Google__Protobuf__Value **out, struct err *e)
{
    Google__Protobuf__Value *v = (void *)pb_pool_msg(p, &google__protobuf__value__descriptor);
    if (!v)
        return oom(e);
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
        Google__Protobuf__ListValue *l =
            (void *)pb_pool_msg(p, &google__protobuf__list_value__descriptor);
        Google__Protobuf__Value **items = pb_pool_alloc(p, n->n_items * sizeof(*items));
        if (!l || !items)
            return oom(e);
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

static Envoy__Config__Listener__V3__Filter *target_encode(struct pb_pool *p, const struct node *t,
                                                          unsigned depth, struct err *e, int *rc)
{
    const char *name;
    if ((*rc = expect_map(t, e)) < 0 || (*rc = get_str(t, "name", NULL, &name, e)) < 0)
        return NULL;
    if (!name) {
        *rc = err_set(e, "missing field `name`");
        return NULL;
    }
    return filter_codec_encode_filter(p, name, get(t, "config"), depth, e, rc);
}

static Quilkin__Filters__Matches__V1alpha1__Match__Config *
match_dir_encode(struct pb_pool *p, const struct node *dn, unsigned depth, struct err *e, int *rc)
{
    Quilkin__Filters__Matches__V1alpha1__Match__Config *c =
        (void *)pb_pool_msg(p, &quilkin__filters__matches__v1alpha1__match__config__descriptor);
    if (!c) {
        *rc = oom(e);
        return NULL;
    }
    if ((*rc = expect_map(dn, e)) < 0 ||
        (*rc = encode_key(dn, "metadataKey", NULL, p, &c->metadata_key, e)) < 0)
        return NULL;
    const struct node *branches = get(dn, "branches");
    if (branches && branches->kind != NODE_SEQ) {
        *rc = err_set(e, "invalid type: %s, expected a sequence", node_kind_name(branches->kind));
        return NULL;
    }
    size_t nb = branches ? branches->n_items : 0;
    if (!(c->branches = pb_pool_alloc(p, nb * sizeof(*c->branches)))) {
        *rc = oom(e);
        return NULL;
    }
    for (size_t i = 0; i < nb; i++) {
        const struct node *bn = branches->items[i], *value = get(bn, "value");
        Quilkin__Filters__Matches__V1alpha1__Match__Branch *b =
            (void *)pb_pool_msg(p, &quilkin__filters__matches__v1alpha1__match__branch__descriptor);
        if (!b) {
            *rc = oom(e);
            return NULL;
        }
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
                        : filter_codec_encode_filter(p, DROP_NAME, NULL, depth + 1, e, rc);
    return c->fallthrough ? c : NULL;
}

static int match_encode(const struct node *cfg, unsigned depth, struct pb_pool *p,
                        ProtobufCMessage *pm, struct err *e)
{
    Quilkin__Filters__Matches__V1alpha1__Match *m = (void *)pm;
    const struct node *rd = get(cfg, "on_read"), *wr = get(cfg, "on_write");
    int rc = 0;
    if (rd && !(m->on_read = match_dir_encode(p, rd, depth, e, &rc)))
        return rc;
    if (wr && !(m->on_write = match_dir_encode(p, wr, depth, e, &rc)))
        return rc;
    return 0;
}

/* ---- the table and the public entry points ---------------------------------------------- */

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const struct codec codecs[] = {
    {.name = "quilkin.filters.capture.v1alpha1.Capture",
     .desc = &quilkin__filters__capture__v1alpha1__capture__descriptor,
     .decode = capture_decode,
     .encode = capture_encode},
    {.name = "quilkin.filters.compress.v1alpha1.Compress",
     .desc = &quilkin__filters__compress__v1alpha1__compress__descriptor,
     .enums = compress_enums,
     .n_enums = N_OF(compress_enums)},
    {.name = "quilkin.filters.concatenate.v1alpha1.Concatenate",
     .desc = &quilkin__filters__concatenate__v1alpha1__concatenate__descriptor,
     .enums = concat_enums,
     .n_enums = N_OF(concat_enums),
     .decode = concatenate_decode,
     .encode = concatenate_encode},
    {.name = "quilkin.filters.debug.v1alpha1.Debug",
     .desc = &quilkin__filters__debug__v1alpha1__debug__descriptor,
     .decode = debug_decode,
     .encode = debug_encode},
    {.name = DROP_NAME, .desc = &quilkin__filters__drop__v1alpha1__drop__descriptor},
    {.name = "quilkin.filters.firewall.v1alpha1.Firewall",
     .desc = &quilkin__filters__firewall__v1alpha1__firewall__descriptor,
     .decode = firewall_decode,
     .encode = firewall_encode},
    {.name = "quilkin.filters.load_balancer.v1alpha1.LoadBalancer",
     .desc = &quilkin__filters__load_balancer__v1alpha1__load_balancer__descriptor,
     .enums = lb_enums,
     .n_enums = N_OF(lb_enums)},
    {.name = "quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit",
     .desc = &quilkin__filters__local_rate_limit__v1alpha1__local_rate_limit__descriptor,
     .decode = rate_limit_decode,
     .encode = rate_limit_encode},
    /* spec xds.md §6.4: the filter is `match`, its message lives in package `matches` */
    {.name = "quilkin.filters.match.v1alpha1.Match",
     .desc = &quilkin__filters__matches__v1alpha1__match__descriptor,
     .decode = match_decode,
     .encode = match_encode},
    {.name = "quilkin.filters.pass.v1alpha1.Pass",
     .desc = &quilkin__filters__pass__v1alpha1__pass__descriptor},
    {.name = "quilkin.filters.timestamp.v1alpha1.Timestamp",
     .desc = &quilkin__filters__timestamp__v1alpha1__timestamp__descriptor,
     .decode = timestamp_decode,
     .encode = timestamp_encode},
    {.name = "quilkin.filters.token_router.v1alpha1.TokenRouter",
     .desc = &quilkin__filters__token_router__v1alpha1__token_router__descriptor,
     .decode = token_router_decode,
     .encode = token_router_encode},
};

static const struct codec *find_codec(const char *name)
{
    for (size_t i = 0; i < N_OF(codecs); i++)
        if (strcmp(codecs[i].name, name) == 0)
            return &codecs[i];
    return NULL;
}

int xds_filter_config_decode(const char *name, const uint8_t *buf, size_t len, struct node **out,
                             struct err *e)
{
    *out = NULL;
    const struct codec *c = find_codec(pb_str(name));
    if (!c)
        return err_set(e, "filter `%s` not found", pb_str(name));
    return decode_config(c, buf, len, 0, out, e);
}

int xds_filter_config_encode(const char *name, const struct node *config, uint8_t **out,
                             size_t *out_len, struct err *e)
{
    const struct codec *c = find_codec(pb_str(name));
    if (!c)
        return err_set(e, "filter `%s` not found", pb_str(name));
    struct pb_pool p = {0};
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
    pb_pool_free(&p);
    return rc;
}
