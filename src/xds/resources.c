/* xDS discovery messages, Cluster and ClusterLoadAssignment resources <-> our config model
 * (spec xds.md §4-§6.2), and applying decoded resources to a config. Pure: no I/O, no
 * threads, no global state. Listener resources live in xds/listener.c, filter configs in
 * xds/filter_codec.c, Struct <-> metadata maps in xds/metadata_struct.c. */
#include "xds/resources.h"

#include "base/b64.h"
#include "base/err.h"
#include "config/config.h"
#include "config/node.h"
#include "net/addr.h"
#include "xds/metadata_struct.h"
#include "xds/pb_util.h"

#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "quilkin/config/v1alpha1/config.pb-c.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUILKIN_KEY "quilkin.dev"

/* ---- small helpers ------------------------------------------------------------------------ */

static char *dup_str(const char *s)
{
    return strdup(s ? s : "");
}

static int oom(struct err *e)
{
    err_set(e, "out of memory");
    return -ENOMEM;
}

void xds_group_free(struct cluster_group *g)
{
    if (g)
        config_group_deinit(g);
}

/* ---- discovery messages (spec xds.md §4.1) ------------------------------------------------ */

void xds_response_free(struct xds_response *r)
{
    if (!r)
        return;
    free(r->version_info);
    free(r->type_url);
    free(r->nonce);
    free(r->control_plane_id);
    for (size_t i = 0; i < r->n_resources; i++) {
        free(r->resources[i].type_url);
        free(r->resources[i].value);
    }
    free(r->resources);
    memset(r, 0, sizeof(*r));
}

int xds_response_decode(const uint8_t *buf, size_t len, struct xds_response *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    Envoy__Service__Discovery__V3__DiscoveryResponse *m = (void *)pb_unpack(
        &envoy__service__discovery__v3__discovery_response__descriptor, buf, len, e);
    if (!m)
        return -EINVAL;
    bool ok = (out->version_info = dup_str(m->version_info)) &&
              (out->type_url = dup_str(m->type_url)) && (out->nonce = dup_str(m->nonce));
    if (ok && m->control_plane)
        ok = (out->control_plane_id = dup_str(m->control_plane->identifier)) != NULL;
    if (ok && m->n_resources) {
        out->resources = calloc(m->n_resources, sizeof(*out->resources));
        ok = out->resources != NULL;
    }
    for (size_t i = 0; ok && i < m->n_resources; i++) {
        const Google__Protobuf__Any *a = m->resources[i];
        struct xds_any *r = &out->resources[i];
        out->n_resources = i + 1;
        size_t n = a ? a->value.len : 0;
        r->type_url = dup_str(a ? a->type_url : NULL);
        r->value = malloc(n ? n : 1);
        r->len = n;
        ok = r->type_url && r->value;
        if (ok && n)
            memcpy(r->value, a->value.data, n);
    }
    envoy__service__discovery__v3__discovery_response__free_unpacked(m, NULL);
    if (!ok) {
        xds_response_free(out);
        err_set(e, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

int xds_response_encode(const struct xds_response *r, uint8_t **out, size_t *out_len)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse m =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    Envoy__Config__Core__V3__ControlPlane cp = ENVOY__CONFIG__CORE__V3__CONTROL_PLANE__INIT;
    m.version_info = (char *)pb_str(r->version_info);
    m.type_url = (char *)pb_str(r->type_url);
    m.nonce = (char *)pb_str(r->nonce);
    if (r->control_plane_id) {
        cp.identifier = r->control_plane_id;
        m.control_plane = &cp;
    }
    Google__Protobuf__Any *anys = NULL, **ptrs = NULL;
    if (r->n_resources) {
        anys = calloc(r->n_resources, sizeof(*anys));
        ptrs = calloc(r->n_resources, sizeof(*ptrs));
        if (!anys || !ptrs) {
            free(anys);
            free(ptrs);
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < r->n_resources; i++) {
        google__protobuf__any__init(&anys[i]);
        anys[i].type_url = (char *)pb_str(r->resources[i].type_url);
        anys[i].value.data = r->resources[i].value;
        anys[i].value.len = r->resources[i].len;
        ptrs[i] = &anys[i];
    }
    m.resources = ptrs;
    m.n_resources = r->n_resources;
    int rc = pb_pack(&m.base, out, out_len);
    free(anys);
    free(ptrs);
    return rc;
}

void xds_request_free(struct xds_request *r)
{
    if (!r)
        return;
    free(r->version_info);
    free(r->node_id);
    free(r->user_agent_name);
    for (size_t i = 0; i < r->n_resource_names; i++)
        free(r->resource_names[i]);
    free(r->resource_names);
    free(r->type_url);
    free(r->response_nonce);
    free(r->error_message);
    memset(r, 0, sizeof(*r));
}

int xds_request_check_names(const uint8_t *buf, size_t len, size_t max_names,
                            size_t max_name_len, struct err *e)
{
    size_t n = 0, longest = 0;
    if (pb_scan_bytes_field(buf, len, 3, &n, &longest) < 0) /* resource_names = 3 */
        return err_set(e, "failed to decode DiscoveryRequest message"), -EINVAL;
    if (n > max_names)
        return err_set(e, "%zu resource_names (at most %zu)", n, max_names), -E2BIG;
    if (longest > max_name_len)
        return err_set(e, "a resource name of %zu bytes (at most %zu)", longest, max_name_len),
               -E2BIG;
    return 0;
}

int xds_request_decode(const uint8_t *buf, size_t len, struct xds_request *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    Envoy__Service__Discovery__V3__DiscoveryRequest *m = (void *)pb_unpack(
        &envoy__service__discovery__v3__discovery_request__descriptor, buf, len, e);
    if (!m)
        return -EINVAL;
    bool ok = (out->version_info = dup_str(m->version_info)) &&
              (out->type_url = dup_str(m->type_url)) &&
              (out->response_nonce = dup_str(m->response_nonce));
    if (ok && m->node)
        ok = (out->node_id = dup_str(m->node->id)) &&
             (out->user_agent_name = dup_str(m->node->user_agent_name));
    if (ok && m->error_detail) {
        out->has_error = true;
        out->error_code = m->error_detail->code;
        ok = (out->error_message = dup_str(m->error_detail->message)) != NULL;
    }
    if (ok && m->n_resource_names) {
        out->resource_names = calloc(m->n_resource_names, sizeof(*out->resource_names));
        ok = out->resource_names != NULL;
    }
    for (size_t i = 0; ok && i < m->n_resource_names; i++) {
        ok = (out->resource_names[i] = dup_str(m->resource_names[i])) != NULL;
        out->n_resource_names = i + 1;
    }
    envoy__service__discovery__v3__discovery_request__free_unpacked(m, NULL);
    if (!ok) {
        xds_request_free(out);
        err_set(e, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

int xds_request_encode(const struct xds_request *r, uint8_t **out, size_t *out_len)
{
    Envoy__Service__Discovery__V3__DiscoveryRequest m =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    Google__Rpc__Status status = GOOGLE__RPC__STATUS__INIT;
    m.version_info = (char *)pb_str(r->version_info);
    m.type_url = (char *)pb_str(r->type_url);
    m.response_nonce = (char *)pb_str(r->response_nonce);
    m.resource_names = r->resource_names;
    m.n_resource_names = r->n_resource_names;
    for (size_t i = 0; i < r->n_resource_names; i++)
        if (!r->resource_names[i])
            return -EINVAL; /* a caller bug: protobuf-c would crash on it */
    Envoy__Config__Core__V3__Locality loc = ENVOY__CONFIG__CORE__V3__LOCALITY__INIT;
    struct pb_pool pool = {0};
    if (r->node_id) {
        node.id = r->node_id;
        node.user_agent_name = (char *)pb_str(r->user_agent_name);
        node.user_agent_version = (char *)pb_str(r->user_agent_version);
        if (r->has_locality) {
            loc.region = (char *)pb_str(r->region);
            loc.zone = (char *)pb_str(r->zone);
            loc.sub_zone = (char *)pb_str(r->sub_zone);
            node.locality = &loc;
        }
        if (r->node_metadata &&
            !(node.metadata = metadata_struct_from_node(&pool, r->node_metadata, NULL, 0))) {
            pb_pool_free(&pool);
            return -ENOMEM;
        }
        m.node = &node;
    }
    if (r->has_error) {
        status.code = r->error_code;
        status.message = (char *)pb_str(r->error_message);
        m.error_detail = &status;
    }
    int rc = pb_pack(&m.base, out, out_len);
    pb_pool_free(&pool);
    return rc;
}

/* ---- quilkin.dev tokens (spec xds.md §6.2) ------------------------------------------------ */

static bool b64_symbol(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* The reason the Rust base64 crate (0.21, standard engine) would give for invalid text. */
static void b64_reason(const char *s, size_t len, char *buf, size_t cap)
{
    size_t pad = len;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '=') {
            if (pad == len)
                pad = i;
            continue;
        }
        if (!b64_symbol(c) || pad != len) {
            size_t at = pad != len ? pad : i;
            snprintf(buf, cap, "Invalid byte %u, offset %zu.", (unsigned)(unsigned char)s[at], at);
            return;
        }
    }
    if (pad % 4 == 1) {
        snprintf(buf, cap, "Encoded text cannot have a 6-bit remainder.");
        return;
    }
    if (len % 4 != 0 || (pad % 4 == 0 && pad != len) || len - pad > 2) {
        snprintf(buf, cap, "Invalid padding");
        return;
    }
    snprintf(buf, cap, "Invalid last symbol %u, offset %zu.",
             (unsigned)(unsigned char)s[pad ? pad - 1 : 0], pad ? pad - 1 : 0);
}

static int token_cmp(const void *pa, const void *pb)
{
    const struct token *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int r = n ? memcmp(a->bytes, b->bytes, n) : 0;
    if (r)
        return r;
    return a->len < b->len ? -1 : a->len > b->len;
}

static int add_token(struct endpoint_cfg *ep, size_t cap, const char *text, struct err *e)
{
    size_t len = strlen(text), n = 0;
    uint8_t *bytes = malloc(b64_decoded_cap(len));
    if (!bytes)
        return oom(e);
    if (b64_decode(text, len, bytes, &n) < 0) {
        char why[96];
        b64_reason(text, len, why, sizeof(why));
        free(bytes);
        return err_set(e, "Invalid bas64 encoded token: %s", why);
    }
    if (!ep->tokens && !(ep->tokens = calloc(cap, sizeof(*ep->tokens)))) {
        free(bytes);
        return oom(e);
    }
    ep->tokens[ep->n_tokens].bytes = bytes;
    ep->tokens[ep->n_tokens].len = n;
    ep->n_tokens++;
    return 0;
}

/* Sorts bytewise and collapses duplicates (xDS tokens form a set: no error, unlike YAML). */
static void normalise_tokens(struct endpoint_cfg *ep)
{
    if (ep->n_tokens < 2)
        return;
    qsort(ep->tokens, ep->n_tokens, sizeof(*ep->tokens), token_cmp);
    size_t kept = 1;
    for (size_t i = 1; i < ep->n_tokens; i++) {
        if (token_cmp(&ep->tokens[kept - 1], &ep->tokens[i]) == 0) {
            free(ep->tokens[i].bytes);
            continue;
        }
        ep->tokens[kept++] = ep->tokens[i];
    }
    ep->n_tokens = kept;
}

/* The `quilkin.dev` struct: its `tokens` key (last one wins); other keys are ignored. */
static int decode_known(const Google__Protobuf__Struct *qd, struct endpoint_cfg *ep, struct err *e)
{
    const Google__Protobuf__Value *tokens = NULL;
    for (size_t i = 0; i < qd->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *f = qd->fields[i];
        if (f && strcmp(pb_str(f->key), "tokens") == 0)
            tokens = f->value;
    }
    if (!tokens || tokens->kind_case == GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET)
        return 0;
    int rc = 0;
    if (tokens->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE) {
        rc = add_token(ep, 1, pb_str(tokens->string_value), e);
    } else if (tokens->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE) {
        const Google__Protobuf__ListValue *l = tokens->list_value;
        for (size_t i = 0; rc == 0 && l && i < l->n_values; i++) {
            const Google__Protobuf__Value *v = l->values[i];
            if (!v || v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET)
                continue;
            if (v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
                return err_set(e, "Invalid type (base64 string) given for `quilkin.dev.tokens`.");
            rc = add_token(ep, l->n_values, pb_str(v->string_value), e);
        }
    } else {
        return err_set(e, "Missing required key `tokens`.");
    }
    if (rc == 0)
        normalise_tokens(ep);
    return rc;
}

/* Endpoint.metadata -> tokens + user metadata (the map minus quilkin.dev; NULL when empty). */
static int decode_metadata(const Google__Protobuf__Struct *s, struct endpoint_cfg *ep,
                           struct err *e)
{
    const Google__Protobuf__Value *qd = NULL;
    for (size_t i = 0; i < s->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *f = s->fields[i];
        if (f && strcmp(pb_str(f->key), QUILKIN_KEY) == 0)
            qd = f->value;
    }
    if (qd && qd->kind_case != GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET) {
        if (qd->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE)
            return err_set(e, "wrong type for known metadata");
        int rc = qd->struct_value ? decode_known(qd->struct_value, ep, e) : 0;
        if (rc < 0)
            return rc;
    }
    struct node *user = metadata_struct_to_node(s, QUILKIN_KEY);
    if (!user)
        return oom(e);
    if (user->n_pairs == 0) {
        node_free(user);
        return 0;
    }
    ep->owned_metadata = user;
    ep->metadata = user;
    return 0;
}

/* ---- endpoints: address classification, order, duplicates (spec xds.md §6.1) ------------ */

/* config.md §4.1 step 4: an IP literal (an IPv6 one possibly in brackets) or a DNS name. */
static int set_host(struct endpoint_cfg *ep, const char *host, uint32_t port, struct err *e)
{
    if (port > 65535)
        return err_set(e, "invalid endpoint port");
    size_t len = strlen(host);
    if (len == 0)
        return err_set(e, "hostname is required");
    char ip[INET6_ADDRSTRLEN + 1];
    struct addr a;
    const char *lit = host;
    if (host[0] == '[' && host[len - 1] == ']' && len - 2 < sizeof(ip)) {
        memcpy(ip, host + 1, len - 2);
        ip[len - 2] = '\0';
        lit = strchr(ip, ':') ? ip : host;
    }
    if (addr_parse_ip(lit, &a) == 0) {
        ep->addr = a;
        ep->addr.port = (uint16_t)port;
        return 0;
    }
    memset(&ep->addr, 0, sizeof(ep->addr));
    ep->addr.port = (uint16_t)port;
    if (!(ep->host = strdup(host)))
        return oom(e);
    return 0;
}

/* Endpoints of one group while they are collected, in arrival order. */
struct ep_list {
    struct endpoint_cfg *eps;
    size_t n, cap;
};

static struct endpoint_cfg *ep_list_add(struct ep_list *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        struct endpoint_cfg *p = realloc(l->eps, cap * sizeof(*p));
        if (!p)
            return NULL;
        l->eps = p;
        l->cap = cap;
    }
    struct endpoint_cfg *ep = &l->eps[l->n++];
    memset(ep, 0, sizeof(*ep));
    return ep;
}

static void ep_list_free(struct ep_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        config_endpoint_deinit(&l->eps[i]);
    free(l->eps);
    memset(l, 0, sizeof(*l));
}

/* Moves l's endpoints into g, which owns them from then on (also on error), in address order
 * and without duplicates, as the YAML loader leaves them (config.md §3). l is emptied. */
static int finish_group(struct ep_list *l, struct cluster_group *g, struct err *e)
{
    g->endpoints = l->eps;
    g->n_endpoints = l->n;
    memset(l, 0, sizeof(*l));
    return config_group_normalize(g) < 0 ? oom(e) : 0;
}

static int set_locality(struct cluster_group *g, bool has, const char *region, const char *zone,
                        const char *sub_zone, struct err *e)
{
    g->has_locality = has;
    g->locality.region = dup_str(has ? region : NULL);
    g->locality.zone = dup_str(has ? zone : NULL);
    g->locality.sub_zone = dup_str(has ? sub_zone : NULL);
    if (!g->locality.region || !g->locality.zone || !g->locality.sub_zone)
        return oom(e);
    return 0;
}

/* ---- quilkin.config.v1alpha1.Cluster (spec xds.md §6.1) ----------------------------------- */

int xds_cluster_decode(const uint8_t *buf, size_t len, struct cluster_group *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    Quilkin__Config__V1alpha1__Cluster *m =
        (void *)pb_unpack(&quilkin__config__v1alpha1__cluster__descriptor, buf, len, e);
    if (!m)
        return -EINVAL;
    struct ep_list l = {0};
    const Quilkin__Config__V1alpha1__Locality *loc = m->locality;
    int rc = set_locality(out, loc != NULL, loc ? loc->region : NULL, loc ? loc->zone : NULL,
                          loc ? loc->sub_zone : NULL, e);
    for (size_t i = 0; rc == 0 && i < m->n_endpoints; i++) {
        const Quilkin__Config__V1alpha1__Endpoint *pe = m->endpoints[i];
        struct endpoint_cfg *ep = ep_list_add(&l);
        if (!ep) {
            rc = oom(e);
            break;
        }
        if (!pe)
            continue; /* never produced by protobuf-c; keeps the walk total */
        if ((rc = set_host(ep, pb_str(pe->host), pe->port, e)) == 0 && pe->metadata)
            rc = decode_metadata(pe->metadata, ep, e);
    }
    quilkin__config__v1alpha1__cluster__free_unpacked(m, NULL);
    if (rc == 0)
        rc = finish_group(&l, out, e);
    ep_list_free(&l);
    if (rc < 0)
        xds_group_free(out);
    return rc;
}

char *xds_cluster_resource_name(const struct cluster_group *g)
{
    if (!g->has_locality)
        return strdup("");
    const char *parts[3] = {g->locality.region, g->locality.zone, g->locality.sub_zone};
    size_t len = 1;
    for (int i = 0; i < 3; i++)
        len += (parts[i] ? strlen(parts[i]) : 0) + 1;
    char *name = malloc(len), *p = name;
    if (!name)
        return NULL;
    *p = '\0';
    for (int i = 0; i < 3; i++) {
        if (!parts[i] || !parts[i][0])
            continue;
        if (p != name)
            *p++ = ':';
        size_t n = strlen(parts[i]);
        memcpy(p, parts[i], n + 1);
        p += n;
    }
    return name;
}

/* { "quilkin.dev": { "tokens": [b64...] }, <user keys>... }: tokens always first. */
static Google__Protobuf__Struct *endpoint_struct(struct pb_pool *p, const struct endpoint_cfg *ep)
{
    static const struct node empty_map = {.kind = NODE_MAP, .str = ""};
    const struct node *md =
        ep->metadata && ep->metadata->kind == NODE_MAP ? ep->metadata : &empty_map;
    Google__Protobuf__Struct *s = metadata_struct_from_node(p, md, QUILKIN_KEY, 1);
    Google__Protobuf__Struct__FieldsEntry *qe = pb_pool_alloc(p, sizeof(*qe)),
                                          *te = pb_pool_alloc(p, sizeof(*te));
    Google__Protobuf__Value *qv = pb_pool_alloc(p, sizeof(*qv)),
                            *tv = pb_pool_alloc(p, sizeof(*tv));
    Google__Protobuf__Struct *qs = pb_pool_alloc(p, sizeof(*qs));
    Google__Protobuf__ListValue *list = pb_pool_alloc(p, sizeof(*list));
    Google__Protobuf__Value **items = pb_pool_alloc(p, ep->n_tokens * sizeof(*items));
    Google__Protobuf__Struct__FieldsEntry **qfields = pb_pool_alloc(p, sizeof(*qfields));
    if (!s || !qe || !te || !qv || !tv || !qs || !list || !items || !qfields)
        return NULL;
    google__protobuf__list_value__init(list);
    for (size_t i = 0; i < ep->n_tokens; i++) {
        Google__Protobuf__Value *item = pb_pool_alloc(p, sizeof(*item));
        char *text = pb_pool_alloc(p, b64_encoded_len(ep->tokens[i].len) + 1);
        if (!item || !text)
            return NULL;
        b64_encode(ep->tokens[i].bytes, ep->tokens[i].len, text);
        google__protobuf__value__init(item);
        item->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        item->string_value = text;
        items[i] = item;
    }
    list->values = items;
    list->n_values = ep->n_tokens;
    google__protobuf__value__init(tv);
    tv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
    tv->list_value = list;
    google__protobuf__struct__fields_entry__init(te);
    te->key = "tokens";
    te->value = tv;
    google__protobuf__struct__init(qs);
    qfields[0] = te;
    qs->fields = qfields;
    qs->n_fields = 1;
    google__protobuf__value__init(qv);
    qv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
    qv->struct_value = qs;
    google__protobuf__struct__fields_entry__init(qe);
    qe->key = QUILKIN_KEY;
    qe->value = qv;
    memmove(s->fields + 1, s->fields, s->n_fields * sizeof(*s->fields));
    s->fields[0] = qe;
    s->n_fields++;
    return s;
}

int xds_cluster_encode(const struct cluster_group *g, uint8_t **out, size_t *out_len)
{
    struct pb_pool p = {0};
    Quilkin__Config__V1alpha1__Cluster m = QUILKIN__CONFIG__V1ALPHA1__CLUSTER__INIT;
    Quilkin__Config__V1alpha1__Locality loc = QUILKIN__CONFIG__V1ALPHA1__LOCALITY__INIT;
    if (g->has_locality) {
        loc.region = (char *)pb_str(g->locality.region);
        loc.zone = (char *)pb_str(g->locality.zone);
        loc.sub_zone = (char *)pb_str(g->locality.sub_zone);
        m.locality = &loc;
    }
    int rc = -ENOMEM;
    m.endpoints = pb_pool_alloc(&p, g->n_endpoints * sizeof(*m.endpoints));
    if (!m.endpoints)
        goto out;
    for (size_t i = 0; i < g->n_endpoints; i++) {
        const struct endpoint_cfg *ep = &g->endpoints[i];
        Quilkin__Config__V1alpha1__Endpoint *pe = pb_pool_alloc(&p, sizeof(*pe));
        if (!pe)
            goto out;
        quilkin__config__v1alpha1__endpoint__init(pe);
        if (ep->host) {
            pe->host = ep->host;
        } else {
            char *ip = pb_pool_alloc(&p, INET6_ADDRSTRLEN);
            if (!ip)
                goto out;
            int af = ep->addr.family == AF_INET6 ? AF_INET6 : AF_INET;
            if (!inet_ntop(af, ep->addr.ip, ip, INET6_ADDRSTRLEN))
                ip[0] = '\0';
            pe->host = ip;
        }
        pe->port = ep->addr.port;
        if (!(pe->metadata = endpoint_struct(&p, ep)))
            goto out;
        m.endpoints[m.n_endpoints++] = pe;
    }
    rc = pb_pack(&m.base, out, out_len);
out:
    pb_pool_free(&p);
    return rc;
}

/* ---- envoy.config.endpoint.v3.ClusterLoadAssignment (extension) --------------------------- */

/* LbEndpoint.metadata.filter_metadata: "quilkin.dev" gives the tokens (§6.2 rules from the
 * struct down), every other entry becomes a user metadata key holding its struct. */
static int decode_filter_metadata(const Envoy__Config__Core__V3__Metadata *md,
                                  struct endpoint_cfg *ep, struct err *e)
{
    size_t n = md->n_filter_metadata;
    const char **keys = calloc(n ? n : 1, sizeof(*keys));
    bool *keep = calloc(n ? n : 1, sizeof(*keep));
    struct node *user = node_new_map();
    int rc = 0;
    if (!keys || !keep || !user) {
        rc = oom(e);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *f = md->filter_metadata[i];
        keys[i] = f ? pb_str(f->key) : NULL;
    }
    if (metadata_struct_last_wins(keys, n, keep) < 0) {
        rc = oom(e);
        goto out;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!keep[i])
            continue;
        const Google__Protobuf__Struct *s = md->filter_metadata[i]->value;
        if (strcmp(keys[i], QUILKIN_KEY) == 0) {
            rc = s ? decode_known(s, ep, e) : 0;
            continue;
        }
        struct node *v = s ? metadata_struct_to_node(s, NULL) : node_new_map();
        if (node_map_append(user, keys[i], strlen(keys[i]), v) < 0)
            rc = oom(e);
    }
    if (rc == 0 && user->n_pairs) {
        ep->owned_metadata = user;
        ep->metadata = user;
        user = NULL;
    }
out:
    node_free(user);
    free(keys);
    free(keep);
    return rc;
}

/* Envoy's load-balancing facts about an EDS endpoint, kept in its metadata under
 * EDS_METADATA_KEY so /config shows them and filters can use them: health_status (when set),
 * load_balancing_weight (the endpoint's), locality_load_balancing_weight, priority. */
#define EDS_METADATA_KEY "envoy.eds"

static const char *const health_names[] = {"UNKNOWN",  "HEALTHY", "UNHEALTHY",
                                           "DRAINING", "TIMEOUT", "DEGRADED"};

static int add_eds_facts(struct endpoint_cfg *ep, const Envoy__Config__Endpoint__V3__LbEndpoint *lb,
                         const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lle,
                         struct err *e)
{
    struct node *facts = node_new_map();
    int rc = facts ? 0 : -ENOMEM;
    int h = (int)lb->health_status;
    if (rc == 0 && h > 0) {
        const char *name = h < (int)(sizeof(health_names) / sizeof(health_names[0]))
                               ? health_names[h]
                               : "UNKNOWN";
        rc = node_map_append(facts, "health_status", 13, node_new_str(name, strlen(name)));
    }
    if (rc == 0 && lb->load_balancing_weight)
        rc = node_map_append(facts, "load_balancing_weight", 21,
                             node_new_int(false, lb->load_balancing_weight->value));
    if (rc == 0 && lle->load_balancing_weight)
        rc = node_map_append(facts, "locality_load_balancing_weight", 30,
                             node_new_int(false, lle->load_balancing_weight->value));
    if (rc == 0)
        rc = node_map_append(facts, "priority", 8, node_new_int(false, lle->priority));
    if (rc == 0 && !ep->owned_metadata) {
        ep->owned_metadata = node_new_map();
        ep->metadata = ep->owned_metadata;
        if (!ep->owned_metadata)
            rc = -ENOMEM;
    }
    if (rc == 0)
        rc = node_map_append(ep->owned_metadata, EDS_METADATA_KEY, strlen(EDS_METADATA_KEY),
                             facts);
    else
        node_free(facts);
    /* issue 10: these get no new sessions (Envoy excludes them from load balancing); sessions
     * already open to them keep working, so a draining game server finishes its matches */
    ep->is_draining = h == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY ||
                      h == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING ||
                      h == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__TIMEOUT;
    return rc < 0 ? oom(e) : 0;
}

static int decode_lb_endpoint(const Envoy__Config__Endpoint__V3__LbEndpoint *lb,
                              const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lle,
                              struct endpoint_cfg *ep, struct err *e)
{
    const Envoy__Config__Endpoint__V3__Endpoint *pe =
        lb->host_identifier_case ==
                ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT
            ? lb->endpoint
            : NULL;
    const Envoy__Config__Core__V3__Address *a = pe ? pe->address : NULL;
    const Envoy__Config__Core__V3__SocketAddress *sa =
        a && a->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS
            ? a->socket_address
            : NULL;
    if (!sa)
        return err_set(e, "ClusterLoadAssignment endpoint without a socket address");
    if (sa->port_specifier_case ==
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_NAMED_PORT)
        return err_set(e, "named ports are not supported");
    uint32_t port = sa->port_specifier_case ==
                            ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE
                        ? sa->port_value
                        : 0;
    int rc = set_host(ep, pb_str(sa->address), port, e);
    if (rc == 0 && lb->metadata)
        rc = decode_filter_metadata(lb->metadata, ep, e);
    if (rc == 0)
        rc = add_eds_facts(ep, lb, lle, e);
    return rc;
}

static bool same_locality(const struct cluster_group *a, const struct cluster_group *b)
{
    if (a->has_locality != b->has_locality)
        return false;
    if (!a->has_locality)
        return true;
    return strcmp(pb_str(a->locality.region), pb_str(b->locality.region)) == 0 &&
           strcmp(pb_str(a->locality.zone), pb_str(b->locality.zone)) == 0 &&
           strcmp(pb_str(a->locality.sub_zone), pb_str(b->locality.sub_zone)) == 0;
}

int xds_cla_decode(const uint8_t *buf, size_t len, char **cluster_name,
                   struct cluster_group **groups, size_t *n, struct err *e)
{
    *groups = NULL;
    *n = 0;
    *cluster_name = NULL;
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment *m = (void *)pb_unpack(
        &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, buf, len, e);
    if (!m)
        return -EINVAL;
    if (!(*cluster_name = strdup(pb_str(m->cluster_name)))) {
        envoy__config__endpoint__v3__cluster_load_assignment__free_unpacked(m, NULL);
        return oom(e);
    }
    size_t cap = m->n_endpoints;
    struct cluster_group *gs = calloc(cap ? cap : 1, sizeof(*gs));
    struct ep_list *lists = calloc(cap ? cap : 1, sizeof(*lists));
    size_t ng = 0;
    int rc = gs && lists ? 0 : oom(e);
    /* LocalityLbEndpoints with the same locality merge into one group. */
    for (size_t i = 0; rc == 0 && i < m->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lle = m->endpoints[i];
        if (!lle)
            continue;
        const Envoy__Config__Core__V3__Locality *loc = lle->locality;
        struct cluster_group key = {0};
        if ((rc = set_locality(&key, loc != NULL, loc ? loc->region : NULL, loc ? loc->zone : NULL,
                               loc ? loc->sub_zone : NULL, e)) < 0) {
            xds_group_free(&key);
            break;
        }
        size_t g = 0;
        while (g < ng && !same_locality(&gs[g], &key))
            g++;
        if (g == ng)
            gs[ng++] = key;
        else
            xds_group_free(&key);
        for (size_t j = 0; rc == 0 && j < lle->n_lb_endpoints; j++) {
            struct endpoint_cfg *ep = ep_list_add(&lists[g]);
            if (!ep)
                rc = oom(e);
            else if (lle->lb_endpoints[j])
                rc = decode_lb_endpoint(lle->lb_endpoints[j], lle, ep, e);
        }
    }
    envoy__config__endpoint__v3__cluster_load_assignment__free_unpacked(m, NULL);
    for (size_t g = 0; g < ng; g++) {
        if (rc == 0)
            rc = finish_group(&lists[g], &gs[g], e);
        ep_list_free(&lists[g]);
    }
    free(lists);
    if (rc < 0) {
        for (size_t g = 0; g < ng; g++)
            xds_group_free(&gs[g]);
        free(gs);
        free(*cluster_name);
        *cluster_name = NULL;
        return rc;
    }
    *groups = gs;
    *n = ng;
    return 0;
}

/* ---- applying resources to a config (spec xds.md §6.1, §6.3) ----------------------------- */

int xds_apply_clusters(struct config *c, struct cluster_group *groups, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct cluster_group *src = &groups[i];
        size_t j = 0;
        while (j < c->n_groups && !same_locality(&c->groups[j], src))
            j++;
        if (j < c->n_groups) {
            /* Replace the endpoint set, keep the group (and its place in the list). */
            struct cluster_group *dst = &c->groups[j];
            for (size_t k = 0; k < dst->n_endpoints; k++)
                config_endpoint_deinit(&dst->endpoints[k]);
            free(dst->endpoints);
            dst->endpoints = src->endpoints;
            dst->n_endpoints = src->n_endpoints;
            src->endpoints = NULL;
            src->n_endpoints = 0;
            xds_group_free(src);
            continue;
        }
        struct cluster_group *ng = realloc(c->groups, (c->n_groups + 1) * sizeof(*ng));
        if (!ng) {
            for (size_t k = i; k < n; k++)
                xds_group_free(&groups[k]);
            return -ENOMEM;
        }
        c->groups = ng;
        c->groups[c->n_groups++] = *src;
        memset(src, 0, sizeof(*src));
    }
    return 0;
}

static void filter_cfgs_release(struct filter_cfg *filters, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(filters[i].name);
        free(filters[i].label);
        node_free(filters[i].owned_config);
        memset(&filters[i], 0, sizeof(filters[i]));
    }
}

int xds_merge_groups(struct config *c, const struct cluster_group *groups, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct cluster_group *src = &groups[i];
        size_t j = 0;
        while (j < c->n_groups && !same_locality(&c->groups[j], src))
            j++;
        if (j == c->n_groups) {
            struct cluster_group *ng = realloc(c->groups, (c->n_groups + 1) * sizeof(*ng));
            if (!ng)
                return -ENOMEM;
            c->groups = ng;
            struct cluster_group *g = &c->groups[c->n_groups];
            memset(g, 0, sizeof(*g));
            struct err ignored;
            if (set_locality(g, src->has_locality, src->locality.region, src->locality.zone,
                             src->locality.sub_zone, &ignored) < 0) {
                xds_group_free(g);
                return -ENOMEM;
            }
            c->n_groups++;
        }
        struct cluster_group *dst = &c->groups[j];
        struct endpoint_cfg *eps =
            realloc(dst->endpoints, (dst->n_endpoints + src->n_endpoints + 1) * sizeof(*eps));
        if (!eps)
            return -ENOMEM;
        dst->endpoints = eps;
        for (size_t k = 0; k < src->n_endpoints; k++) {
            if (config_clone_endpoint(&src->endpoints[k], &eps[dst->n_endpoints]) < 0) {
                config_endpoint_deinit(&eps[dst->n_endpoints]);
                return -ENOMEM;
            }
            dst->n_endpoints++;
        }
        if (config_group_normalize(dst) < 0)
            return -ENOMEM;
    }
    return 0;
}

int xds_apply_filters(struct config *c, struct filter_cfg *filters, size_t n)
{
    struct filter_cfg *arr = n ? calloc(n, sizeof(*arr)) : NULL;
    bool ok = !n || arr;
    for (size_t i = 0; ok && i < n; i++) {
        /* A borrowed config points into a tree the caller may free: own a copy instead. */
        if (filters[i].config && !filters[i].owned_config)
            ok = (filters[i].owned_config = node_clone(filters[i].config)) != NULL;
    }
    if (!ok) {
        /* OOM: keep the old chain (STYLE.md §3) and drop what we were given. */
        filter_cfgs_release(filters, n);
        free(arr);
        return -ENOMEM;
    }
    filter_cfgs_release(c->filters, c->n_filters);
    free(c->filters);
    for (size_t i = 0; i < n; i++) {
        arr[i] = filters[i];
        arr[i].source = c->source;
        arr[i].config = arr[i].owned_config;
        memset(&filters[i], 0, sizeof(filters[i]));
    }
    c->filters = arr;
    c->n_filters = n;
    return 0;
}
