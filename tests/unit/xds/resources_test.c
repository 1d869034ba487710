/* xDS messages and cluster resources (tests src/xds/resources.c): the spec's request and
 * Cluster hex vectors (xds.md §5.2, §6.4), Struct <-> endpoint metadata with every decoding
 * error of §6.2, endpoint rules of §6.1, the EDS ClusterLoadAssignment extension and the
 * merge rules of xds_apply_clusters / xds_apply_filters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/err.h"
#include "base/strbuf.h"
#include "config/config.h"
#include "config/dump.h"
#include "config/node.h"
#include "xds/resources.h"

#include "../support/xds_fixture.h"

#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "quilkin/config/v1alpha1/config.pb-c.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static char *config_json(const struct config *c)
{
    struct strbuf b;
    strbuf_init(&b);
    assert_int_equal(config_dump_json(c, &b), 0);
    char *s = strndup(b.buf, b.len);
    strbuf_deinit(&b);
    return s;
}

/* Value/Struct builders for hand-made Cluster messages; everything lives in a static arena
 * that is reset by each test (messages are packed before the arena is reused). */
static Google__Protobuf__Value vals[64];
static Google__Protobuf__Struct structs[16];
static Google__Protobuf__Struct__FieldsEntry entries[64];
static Google__Protobuf__Struct__FieldsEntry *entry_ptrs[64];
static Google__Protobuf__ListValue lists[8];
static Google__Protobuf__Value *list_ptrs[64];
static size_t n_vals, n_structs, n_entries, n_lists, n_list_ptrs;

static void arena_reset_pb(void)
{
    n_vals = n_structs = n_entries = n_lists = n_list_ptrs = 0;
}

static Google__Protobuf__Value *v_new(void)
{
    Google__Protobuf__Value *v = &vals[n_vals++];
    google__protobuf__value__init(v);
    return v;
}

static Google__Protobuf__Value *v_str(const char *s)
{
    Google__Protobuf__Value *v = v_new();
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v->string_value = (char *)s;
    return v;
}

static Google__Protobuf__Value *v_num(double d)
{
    Google__Protobuf__Value *v = v_new();
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    v->number_value = d;
    return v;
}

static Google__Protobuf__Value *v_bool(bool b)
{
    Google__Protobuf__Value *v = v_new();
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
    v->bool_value = b;
    return v;
}

static Google__Protobuf__Value *v_null(void)
{
    Google__Protobuf__Value *v = v_new();
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
    return v;
}

/* A list of n values (NULL-terminated varargs). */
static Google__Protobuf__Value *v_list(Google__Protobuf__Value *first, ...)
{
    Google__Protobuf__ListValue *l = &lists[n_lists++];
    google__protobuf__list_value__init(l);
    l->values = &list_ptrs[n_list_ptrs];
    va_list ap;
    va_start(ap, first);
    for (Google__Protobuf__Value *v = first; v; v = va_arg(ap, Google__Protobuf__Value *)) {
        list_ptrs[n_list_ptrs++] = v;
        l->n_values++;
    }
    va_end(ap);
    Google__Protobuf__Value *v = v_new();
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
    v->list_value = l;
    return v;
}

/* A struct from key, value pairs (NULL-terminated). */
static Google__Protobuf__Struct *s_new(const char *key, ...)
{
    Google__Protobuf__Struct *s = &structs[n_structs++];
    google__protobuf__struct__init(s);
    s->fields = &entry_ptrs[n_entries];
    va_list ap;
    va_start(ap, key);
    for (const char *k = key; k; k = va_arg(ap, const char *)) {
        Google__Protobuf__Struct__FieldsEntry *f = &entries[n_entries];
        google__protobuf__struct__fields_entry__init(f);
        f->key = (char *)k;
        f->value = va_arg(ap, Google__Protobuf__Value *);
        entry_ptrs[n_entries++] = f;
        s->n_fields++;
    }
    va_end(ap);
    return s;
}

static Google__Protobuf__Value *v_struct(Google__Protobuf__Struct *s)
{
    Google__Protobuf__Value *v = v_new();
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
    v->struct_value = s;
    return v;
}

/* Packs a Cluster with one endpoint (host, port, metadata) and decodes it. */
static int decode_one(const char *host, uint32_t port, Google__Protobuf__Struct *md,
                      struct cluster_group *g, struct err *e)
{
    Quilkin__Config__V1alpha1__Cluster c = QUILKIN__CONFIG__V1ALPHA1__CLUSTER__INIT;
    Quilkin__Config__V1alpha1__Endpoint ep = QUILKIN__CONFIG__V1ALPHA1__ENDPOINT__INIT;
    Quilkin__Config__V1alpha1__Endpoint *eps[1] = {&ep};
    ep.host = (char *)host;
    ep.port = port;
    ep.metadata = md;
    c.endpoints = eps;
    c.n_endpoints = 1;
    uint8_t buf[4096];
    assert_true(quilkin__config__v1alpha1__cluster__get_packed_size(&c) <= sizeof(buf));
    size_t n = quilkin__config__v1alpha1__cluster__pack(&c, buf);
    memset(e, 0, sizeof(*e));
    return xds_cluster_decode(buf, n, g, e);
}

/* Decoding a metadata struct must fail with exactly `msg`. */
static void assert_md_error(Google__Protobuf__Struct *md, const char *msg)
{
    struct cluster_group g;
    struct err e;
    assert_int_equal(decode_one("127.0.0.1", 1, md, &g, &e), -EINVAL);
    assert_string_equal(e.msg, msg);
    assert_int_equal(g.n_endpoints, 0);
    xds_group_free(&g);
}

/* ---- discovery messages ------------------------------------------------------------------ */

static void test_request_vector(void **state)
{
    (void)state;
    struct xds_request r = {0};
    r.node_id = "proxy-1";
    r.user_agent_name = "quilkin";
    r.type_url = XDS_TYPE_CLUSTER;
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(xds_request_encode(&r, &out, &len), 0);
    assert_bytes(out, len,
                 "12 12 0a 07 \"proxy-1\" 32 07 \"quilkin\" 22 33 "
                 "\"type.googleapis.com/quilkin.config.v1alpha1.Cluster\"");

    struct xds_request d;
    struct err e = {{0}};
    assert_int_equal(xds_request_decode(out, len, &d, &e), 0);
    assert_string_equal(d.node_id, "proxy-1");
    assert_string_equal(d.user_agent_name, "quilkin");
    assert_string_equal(d.type_url, XDS_TYPE_CLUSTER);
    assert_string_equal(d.version_info, "");
    assert_string_equal(d.response_nonce, "");
    assert_int_equal(d.n_resource_names, 0);
    assert_false(d.has_error);
    xds_request_free(&d);
    free(out);
}

static void test_request_nack_round_trip(void **state)
{
    (void)state;
    char *names[2] = {"", "eu:z1"};
    struct xds_request r = {.version_info = "7",
                            .resource_names = names,
                            .n_resource_names = 2,
                            .type_url = XDS_TYPE_LISTENER,
                            .response_nonce = "n-1",
                            .has_error = true,
                            .error_code = 3,
                            .error_message = "bad"};
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(xds_request_encode(&r, &out, &len), 0);
    struct xds_request d;
    struct err e = {{0}};
    assert_int_equal(xds_request_decode(out, len, &d, &e), 0);
    assert_null(d.node_id); /* §5.3: ACK/NACK requests carry no node */
    assert_null(d.user_agent_name);
    assert_string_equal(d.version_info, "7");
    assert_int_equal(d.n_resource_names, 2);
    assert_string_equal(d.resource_names[0], "");
    assert_string_equal(d.resource_names[1], "eu:z1");
    assert_string_equal(d.response_nonce, "n-1");
    assert_true(d.has_error);
    assert_int_equal(d.error_code, 3);
    assert_string_equal(d.error_message, "bad");
    xds_request_free(&d);
    xds_request_free(&d); /* a freed (zeroed) struct frees again harmlessly */
    free(out);
}

/* issue 10: the pre-check counts names without unpacking, and tells the two limits apart */
static void test_request_check_names(void **state)
{
    (void)state;
    char *names[3] = {"eu", "eu:z1", "us:west-1:rack-17"};
    struct xds_request r = {.version_info = "1",
                            .node_id = "n",
                            .resource_names = names,
                            .n_resource_names = 3,
                            .type_url = XDS_TYPE_CLUSTER};
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(xds_request_encode(&r, &out, &len), 0);
    struct err e = {{0}};
    assert_int_equal(xds_request_check_names(out, len, 3, 17, &e), 0);
    assert_int_equal(xds_request_check_names(out, len, 2, 17, &e), -E2BIG);
    assert_string_equal(e.msg, "3 resource_names (at most 2)");
    err_clear(&e);
    assert_int_equal(xds_request_check_names(out, len, 3, 16, &e), -E2BIG);
    assert_string_equal(e.msg, "a resource name of 17 bytes (at most 16)");
    /* a length running past the end, and a wire type protobuf has not got */
    assert_int_equal(xds_request_check_names(out, len - 1, 3, 17, &e), -EINVAL);
    static const uint8_t bad_type[] = {0x1f, 0x00};
    assert_int_equal(xds_request_check_names(bad_type, sizeof(bad_type), 3, 17, &e), -EINVAL);
    assert_int_equal(xds_request_check_names(NULL, 0, 0, 0, &e), 0); /* empty: no names */
    free(out);
}

static void test_response_round_trip(void **state)
{
    (void)state;
    uint8_t v1[] = {1, 2, 3};
    struct xds_any res[2] = {{XDS_TYPE_CLUSTER, v1, 3}, {XDS_TYPE_CLUSTER, NULL, 0}};
    struct xds_response r = {.version_info = "3",
                             .type_url = XDS_TYPE_CLUSTER,
                             .nonce = "abc",
                             .control_plane_id = "mgmt",
                             .resources = res,
                             .n_resources = 2};
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(xds_response_encode(&r, &out, &len), 0);
    struct xds_response d;
    struct err e = {{0}};
    assert_int_equal(xds_response_decode(out, len, &d, &e), 0);
    assert_string_equal(d.version_info, "3");
    assert_string_equal(d.type_url, XDS_TYPE_CLUSTER);
    assert_string_equal(d.nonce, "abc");
    assert_string_equal(d.control_plane_id, "mgmt");
    assert_int_equal(d.n_resources, 2);
    assert_string_equal(d.resources[0].type_url, XDS_TYPE_CLUSTER);
    assert_int_equal(d.resources[0].len, 3);
    assert_memory_equal(d.resources[0].value, v1, 3);
    assert_int_equal(d.resources[1].len, 0);
    xds_response_free(&d);
    free(out);

    /* no control plane -> NULL; malformed bytes -> -EINVAL with a message */
    struct xds_response empty = {0};
    assert_int_equal(xds_response_encode(&empty, &out, &len), 0);
    assert_int_equal(xds_response_decode(out, len, &d, &e), 0);
    assert_null(d.control_plane_id);
    xds_response_free(&d);
    free(out);
    const uint8_t bad[] = {0x12, 0x05, 0x0a};
    assert_int_equal(xds_response_decode(bad, sizeof(bad), &d, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "DiscoveryResponse"));
    xds_response_free(&d);
}

/* ---- Cluster resource (spec xds.md §6.1, §6.2) ----------------------------------------- */

static const char cluster_vector[] =
    "12 42 0a 09 \"127.0.0.1\" 10 90 cb 01 1a 31 0a 2f 0a 0b \"quilkin.dev\" "
    "12 20 2a 1e 0a 1c 0a 06 \"tokens\" 12 12 32 10 0a 0e 1a 0c \"MXg3aWp5Ng==\"";

static void test_cluster_vector(void **state)
{
    (void)state;
    struct config *c = parse_config("clusters:\n"
                                    "  - endpoints:\n"
                                    "      - address: 127.0.0.1:26000\n"
                                    "        metadata: {quilkin.dev: {tokens: [MXg3aWp5Ng==]}}\n");
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(xds_cluster_encode(&c->groups[0], &out, &len), 0);
    assert_bytes(out, len, cluster_vector);
    char *name = xds_cluster_resource_name(&c->groups[0]);
    assert_string_equal(name, "");
    free(name);
    free(out);
    config_destroy(c);

    uint8_t buf[256];
    size_t n = hex(cluster_vector, buf);
    struct cluster_group g;
    struct err e = {{0}};
    assert_int_equal(xds_cluster_decode(buf, n, &g, &e), 0);
    assert_false(g.has_locality);
    assert_string_equal(g.locality.region, "");
    assert_int_equal(g.n_endpoints, 1);
    struct endpoint_cfg *ep = &g.endpoints[0];
    assert_null(ep->host);
    assert_int_equal(ep->addr.family, AF_INET);
    assert_int_equal(ep->addr.port, 26000);
    assert_memory_equal(ep->addr.ip, ((uint8_t[]){127, 0, 0, 1}), 4);
    assert_int_equal(ep->n_tokens, 1);
    assert_int_equal(ep->tokens[0].len, 7);
    assert_memory_equal(ep->tokens[0].bytes, "1x7ijy6", 7);
    assert_null(ep->metadata); /* only quilkin.dev: no user metadata */
    xds_group_free(&g);
}

static void test_cluster_round_trip_with_locality_and_metadata(void **state)
{
    (void)state;
    struct config *c = parse_config("clusters:\n"
                                    "  - locality: {region: eu, sub_zone: r12}\n"
                                    "    endpoints:\n"
                                    "      - address: game.example:7000\n"
                                    "        metadata:\n"
                                    "          build: \"2024.06.1\"\n"
                                    "          canary: false\n"
                                    "          n: -3\n"
                                    "          f: 2.75\n"
                                    "          nested: {a: [1, x, null, {b: true}]}\n"
                                    "          quilkin.dev: {tokens: [AQID, \"\"]}\n"
                                    "      - address: \"[2001:db8::1]:7001\"\n");
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(xds_cluster_encode(&c->groups[0], &out, &len), 0);
    /* quilkin.dev is always the first Struct field, even with user keys written before it */
    Quilkin__Config__V1alpha1__Cluster *m =
        quilkin__config__v1alpha1__cluster__unpack(NULL, len, out);
    assert_non_null(m);
    assert_string_equal(m->locality->region, "eu");
    assert_string_equal(m->locality->zone, "");
    assert_int_equal(m->n_endpoints, 2);
    assert_string_equal(m->endpoints[0]->host, "game.example");
    assert_string_equal(m->endpoints[1]->host, "2001:db8::1");
    assert_string_equal(m->endpoints[0]->metadata->fields[0]->key, "quilkin.dev");
    assert_string_equal(m->endpoints[1]->metadata->fields[0]->key, "quilkin.dev");
    assert_int_equal(m->endpoints[1]->metadata->n_fields, 1); /* tokens: [] even when none */
    quilkin__config__v1alpha1__cluster__free_unpacked(m, NULL);

    char *name = xds_cluster_resource_name(&c->groups[0]);
    assert_string_equal(name, "eu:r12"); /* empty zone skipped */
    free(name);

    struct cluster_group g;
    struct err e = {{0}};
    assert_int_equal(xds_cluster_decode(out, len, &g, &e), 0);
    free(out);
    assert_true(g.has_locality);
    assert_string_equal(g.locality.region, "eu");
    assert_string_equal(g.locality.zone, "");
    assert_string_equal(g.locality.sub_zone, "r12");
    assert_int_equal(g.n_endpoints, 2);
    assert_string_equal(g.endpoints[0].host, "game.example"); /* names before IPs */
    assert_int_equal(g.endpoints[0].addr.port, 7000);
    assert_int_equal(g.endpoints[0].n_tokens, 2);
    assert_int_equal(g.endpoints[0].tokens[0].len, 0); /* "" sorts first */
    assert_int_equal(g.endpoints[0].tokens[1].len, 3);
    /* numbers come back as integers (fraction truncated), quilkin.dev is not user metadata */
    assert_node_json(g.endpoints[0].metadata,
                     "{\"build\":\"2024.06.1\",\"canary\":false,\"n\":-3,\"f\":2,"
                     "\"nested\":{\"a\":[1,\"x\",null,{\"b\":true}]}}");
    assert_int_equal(g.endpoints[1].addr.family, AF_INET6);
    assert_int_equal(g.endpoints[1].n_tokens, 0);
    xds_group_free(&g);

    /* encoding the decoded group gives the same bytes again */
    struct cluster_group g2;
    assert_int_equal(xds_cluster_encode(&c->groups[0], &out, &len), 0);
    assert_int_equal(xds_cluster_decode(out, len, &g2, &e), 0);
    uint8_t *out2 = NULL;
    size_t len2 = 0;
    assert_int_equal(xds_cluster_encode(&g2, &out2, &len2), 0);
    uint8_t *out3 = NULL;
    size_t len3 = 0;
    struct cluster_group g3;
    assert_int_equal(xds_cluster_decode(out2, len2, &g3, &e), 0);
    assert_int_equal(xds_cluster_encode(&g3, &out3, &len3), 0);
    assert_int_equal(len2, len3);
    assert_memory_equal(out2, out3, len2);
    free(out);
    free(out2);
    free(out3);
    xds_group_free(&g2);
    xds_group_free(&g3);
    config_destroy(c);
}

static void test_cluster_port_too_large(void **state)
{
    (void)state;
    arena_reset_pb();
    struct cluster_group g;
    struct err e;
    assert_int_equal(decode_one("127.0.0.1", 65536, NULL, &g, &e), -EINVAL);
    assert_string_equal(e.msg, "invalid endpoint port");
    xds_group_free(&g);
    assert_int_equal(decode_one("127.0.0.1", 65535, NULL, &g, &e), 0);
    assert_int_equal(g.endpoints[0].addr.port, 65535);
    xds_group_free(&g);
}

static void test_cluster_hosts_order_and_duplicates(void **state)
{
    (void)state;
    arena_reset_pb();
    Quilkin__Config__V1alpha1__Cluster c = QUILKIN__CONFIG__V1ALPHA1__CLUSTER__INIT;
    Quilkin__Config__V1alpha1__Endpoint ep[6];
    Quilkin__Config__V1alpha1__Endpoint *eps[6];
    const char *hosts[6] = {"::ffff:10.0.0.9", "10.0.0.2",      "b.example",
                            "10.0.0.2",        "[2001:db8::5]", "a.example"};
    for (int i = 0; i < 6; i++) {
        quilkin__config__v1alpha1__endpoint__init(&ep[i]);
        ep[i].host = (char *)hosts[i];
        ep[i].port = 100;
        eps[i] = &ep[i];
    }
    /* the first of the duplicate 10.0.0.2 entries keeps its metadata */
    ep[1].metadata = s_new("first", v_bool(true), NULL);
    ep[3].metadata = s_new("second", v_bool(true), NULL);
    c.endpoints = eps;
    c.n_endpoints = 6;
    uint8_t buf[1024];
    size_t n = quilkin__config__v1alpha1__cluster__pack(&c, buf);
    struct cluster_group g;
    struct err e = {{0}};
    assert_int_equal(xds_cluster_decode(buf, n, &g, &e), 0);
    assert_int_equal(g.n_endpoints, 5);
    assert_string_equal(g.endpoints[0].host, "a.example");
    assert_string_equal(g.endpoints[1].host, "b.example");
    assert_null(g.endpoints[2].host);
    assert_int_equal(g.endpoints[2].addr.family, AF_INET);
    assert_memory_equal(g.endpoints[2].addr.ip, ((uint8_t[]){10, 0, 0, 2}), 4);
    assert_node_json(g.endpoints[2].metadata, "{\"first\":true}");
    assert_memory_equal(g.endpoints[3].addr.ip, ((uint8_t[]){10, 0, 0, 9}), 4); /* v4-mapped */
    assert_int_equal(g.endpoints[4].addr.family, AF_INET6); /* brackets accepted */
    xds_group_free(&g);

    /* an empty resource is a group with no endpoints; an empty host is rejected */
    Quilkin__Config__V1alpha1__Cluster empty = QUILKIN__CONFIG__V1ALPHA1__CLUSTER__INIT;
    n = quilkin__config__v1alpha1__cluster__pack(&empty, buf);
    assert_int_equal(xds_cluster_decode(buf, n, &g, &e), 0);
    assert_false(g.has_locality);
    assert_int_equal(g.n_endpoints, 0);
    xds_group_free(&g);
    assert_int_equal(decode_one("", 1, NULL, &g, &e), -EINVAL);
    xds_group_free(&g);
}

static void test_metadata_tokens_decoding(void **state)
{
    (void)state;
    arena_reset_pb();
    struct cluster_group g;
    struct err e;
    /* list: kindless items skipped, duplicates collapse, sorted bytewise */
    Google__Protobuf__Value *kindless = v_new();
    Google__Protobuf__Struct *md =
        s_new("quilkin.dev",
              v_struct(s_new("tokens",
                             v_list(v_str("Ag=="), kindless, v_str("AQ=="), v_str("Ag=="), NULL),
                             "other", v_num(1), NULL)),
              NULL);
    assert_int_equal(decode_one("127.0.0.1", 1, md, &g, &e), 0);
    assert_int_equal(g.endpoints[0].n_tokens, 2);
    assert_int_equal(g.endpoints[0].tokens[0].bytes[0], 1);
    assert_int_equal(g.endpoints[0].tokens[1].bytes[0], 2);
    assert_null(g.endpoints[0].metadata);
    xds_group_free(&g);

    /* a single string is one token */
    arena_reset_pb();
    md = s_new("quilkin.dev", v_struct(s_new("tokens", v_str("AQID"), NULL)), NULL);
    assert_int_equal(decode_one("127.0.0.1", 1, md, &g, &e), 0);
    assert_int_equal(g.endpoints[0].n_tokens, 1);
    assert_int_equal(g.endpoints[0].tokens[0].len, 3);
    xds_group_free(&g);

    /* absent quilkin.dev, kindless quilkin.dev, absent or kindless tokens: no tokens */
    arena_reset_pb();
    Google__Protobuf__Struct *cases[4] = {
        s_new("x", v_bool(true), NULL),
        s_new("quilkin.dev", v_new(), NULL),
        s_new("quilkin.dev", v_struct(s_new("other", v_str("x"), NULL)), NULL),
        s_new("quilkin.dev", v_struct(s_new("tokens", v_new(), NULL)), NULL),
    };
    for (int i = 0; i < 4; i++) {
        assert_int_equal(decode_one("127.0.0.1", 1, cases[i], &g, &e), 0);
        assert_int_equal(g.endpoints[0].n_tokens, 0);
        xds_group_free(&g);
    }
}

static void test_metadata_errors(void **state)
{
    (void)state;
    arena_reset_pb();
    assert_md_error(s_new("quilkin.dev", v_str("x"), NULL), "wrong type for known metadata");
    assert_md_error(s_new("quilkin.dev", v_list(NULL), NULL), "wrong type for known metadata");
    assert_md_error(s_new("quilkin.dev", v_null(), NULL), "wrong type for known metadata");
    arena_reset_pb();
    assert_md_error(s_new("quilkin.dev", v_struct(s_new("tokens", v_str("!!!!"), NULL)), NULL),
                    "Invalid bas64 encoded token: Invalid byte 33, offset 0.");
    assert_md_error(
        s_new("quilkin.dev", v_struct(s_new("tokens", v_list(v_str("AQ="), NULL), NULL)), NULL),
        "Invalid bas64 encoded token: Invalid padding");
    assert_md_error(
        s_new("quilkin.dev", v_struct(s_new("tokens", v_list(v_str("AQIDB"), NULL), NULL)), NULL),
        "Invalid bas64 encoded token: Encoded text cannot have a 6-bit remainder.");
    arena_reset_pb();
    assert_md_error(s_new("quilkin.dev",
                          v_struct(s_new("tokens", v_list(v_str("AQ=="), v_num(1), NULL), NULL)),
                          NULL),
                    "Invalid type (base64 string) given for `quilkin.dev.tokens`.");
    assert_md_error(
        s_new("quilkin.dev", v_struct(s_new("tokens", v_list(v_list(NULL), NULL), NULL)), NULL),
        "Invalid type (base64 string) given for `quilkin.dev.tokens`.");
    arena_reset_pb();
    assert_md_error(s_new("quilkin.dev", v_struct(s_new("tokens", v_num(3), NULL)), NULL),
                    "Missing required key `tokens`.");
    assert_md_error(s_new("quilkin.dev", v_struct(s_new("tokens", v_bool(true), NULL)), NULL),
                    "Missing required key `tokens`.");
    assert_md_error(s_new("quilkin.dev", v_struct(s_new("tokens", v_null(), NULL)), NULL),
                    "Missing required key `tokens`.");
    assert_md_error(
        s_new("quilkin.dev", v_struct(s_new("tokens", v_struct(s_new(NULL)), NULL)), NULL),
        "Missing required key `tokens`.");
}

static void test_metadata_user_values(void **state)
{
    (void)state;
    arena_reset_pb();
    struct cluster_group g;
    struct err e;
    Google__Protobuf__Struct *md = s_new(
        "pos", v_num(3.99), "neg", v_num(-2.5), "big", v_num(1e300), "s", v_str("x"), "gone",
        v_new(), "list", v_list(v_num(1), v_new(), v_null(), NULL), "nested",
        v_struct(s_new("deep", v_struct(s_new("k", v_bool(false), "drop", v_new(), NULL)), NULL)),
        "dup", v_num(1), "dup", v_num(2), NULL);
    assert_int_equal(decode_one("127.0.0.1", 1, md, &g, &e), 0);
    assert_node_json(g.endpoints[0].metadata,
                     "{\"pos\":3,\"neg\":-2,\"big\":9223372036854775807,\"s\":\"x\","
                     "\"list\":[1,null],\"nested\":{\"deep\":{\"k\":false}},\"dup\":2}");
    xds_group_free(&g);
}

/* A buffer written back to front, so that nesting is "wrap what is there". */
struct rbuf {
    uint8_t *base;
    size_t cap, start;
};

static void r_bytes(struct rbuf *b, const void *p, size_t n)
{
    assert_true(n <= b->start);
    b->start -= n;
    memcpy(b->base + b->start, p, n);
}

static void r_wrap(struct rbuf *b, uint8_t tag) /* everything so far becomes field `tag` */
{
    uint8_t t[11];
    size_t n = 0;
    uint64_t v = b->cap - b->start;
    t[n++] = tag;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    r_bytes(b, t, n);
}

static void test_nesting_limit(void **state)
{
    (void)state;
    /* Value{struct_value: Struct{fields: {k: Value{...}}}} 5000 levels deep: rejected before
     * protobuf-c recurses into it, no stack exhaustion */
    struct rbuf b = {malloc(1 << 20), 1 << 20, 1 << 20};
    r_bytes(&b, "\x20\x01", 2); /* innermost Value{bool_value: true} */
    for (int i = 0; i < 5000; i++) {
        r_wrap(&b, 0x12);            /* FieldsEntry.value */
        r_bytes(&b, "\x0a\x01k", 3); /* FieldsEntry.key */
        r_wrap(&b, 0x0a);            /* Struct.fields */
        r_wrap(&b, 0x2a);            /* Value.struct_value */
    }
    r_wrap(&b, 0x12);
    r_bytes(&b, "\x0a\x01k", 3);
    r_wrap(&b, 0x0a); /* Struct.fields */
    r_wrap(&b, 0x1a); /* Endpoint.metadata */
    r_bytes(&b,
            "\x0a\x07"
            "1.2.3.4\x10\x01",
            11);      /* host, port */
    r_wrap(&b, 0x12); /* Cluster.endpoints */
    struct cluster_group g;
    struct err e = {{0}};
    assert_int_equal(xds_cluster_decode(b.base + b.start, b.cap - b.start, &g, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "nested too deeply"));
    xds_group_free(&g);

    /* the same shape 20 levels deep decodes */
    b.start = b.cap;
    r_bytes(&b, "\x20\x01", 2);
    for (int i = 0; i < 20; i++) {
        r_wrap(&b, 0x12);
        r_bytes(&b, "\x0a\x01k", 3);
        r_wrap(&b, 0x0a);
        r_wrap(&b, 0x2a);
    }
    r_wrap(&b, 0x12);
    r_bytes(&b, "\x0a\x01k", 3);
    r_wrap(&b, 0x0a);
    r_wrap(&b, 0x1a);
    r_bytes(&b,
            "\x0a\x07"
            "1.2.3.4\x10\x01",
            11);
    r_wrap(&b, 0x12);
    assert_int_equal(xds_cluster_decode(b.base + b.start, b.cap - b.start, &g, &e), 0);
    assert_non_null(g.endpoints[0].metadata);
    xds_group_free(&g);
    free(b.base);
}

/* ---- ClusterLoadAssignment (extension) --------------------------------------------------- */

struct cla_ep {
    Envoy__Config__Endpoint__V3__LbEndpoint lb;
    Envoy__Config__Endpoint__V3__Endpoint ep;
    Envoy__Config__Core__V3__Address addr;
    Envoy__Config__Core__V3__SocketAddress sa;
    Envoy__Config__Core__V3__Metadata md;
    Envoy__Config__Core__V3__Metadata__FilterMetadataEntry fm[2];
    Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *fmp[2];
};

static void cla_ep_init(struct cla_ep *c, const char *ip, uint32_t port)
{
    envoy__config__endpoint__v3__lb_endpoint__init(&c->lb);
    envoy__config__endpoint__v3__endpoint__init(&c->ep);
    envoy__config__core__v3__address__init(&c->addr);
    envoy__config__core__v3__socket_address__init(&c->sa);
    c->sa.address = (char *)ip;
    c->sa.port_specifier_case = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    c->sa.port_value = port;
    c->addr.address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
    c->addr.socket_address = &c->sa;
    c->ep.address = &c->addr;
    c->lb.host_identifier_case = ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT;
    c->lb.endpoint = &c->ep;
}

static void cla_ep_md(struct cla_ep *c, size_t i, const char *key, Google__Protobuf__Struct *s)
{
    envoy__config__core__v3__metadata__init(&c->md);
    envoy__config__core__v3__metadata__filter_metadata_entry__init(&c->fm[i]);
    c->fm[i].key = (char *)key;
    c->fm[i].value = s;
    c->fmp[i] = &c->fm[i];
    c->md.filter_metadata = c->fmp;
    c->md.n_filter_metadata = i + 1;
    c->lb.metadata = &c->md;
}

static void test_cla_decode(void **state)
{
    (void)state;
    arena_reset_pb();
    struct cla_ep e1, e2, e3, e4;
    cla_ep_init(&e1, "10.0.0.1", 7000);
    cla_ep_md(&e1, 0, "quilkin.dev", s_new("tokens", v_list(v_str("AQID"), NULL), NULL));
    cla_ep_md(&e1, 1, "team", s_new("name", v_str("red"), NULL));
    cla_ep_init(&e2, "game.example", 7001);
    cla_ep_init(&e3, "2001:db8::1", 7002);
    cla_ep_md(&e3, 0, "quilkin.dev", s_new("tokens", v_str("BAUG"), NULL));
    cla_ep_init(&e4, "10.0.0.1", 7000); /* duplicate of e1 in the same locality: collapses */

    Envoy__Config__Core__V3__Locality loc = ENVOY__CONFIG__CORE__V3__LOCALITY__INIT;
    loc.region = "eu";
    loc.zone = "z1";
    Envoy__Config__Endpoint__V3__LocalityLbEndpoints l1 =
        ENVOY__CONFIG__ENDPOINT__V3__LOCALITY_LB_ENDPOINTS__INIT;
    Envoy__Config__Endpoint__V3__LocalityLbEndpoints l2 =
        ENVOY__CONFIG__ENDPOINT__V3__LOCALITY_LB_ENDPOINTS__INIT;
    Envoy__Config__Endpoint__V3__LocalityLbEndpoints l3 =
        ENVOY__CONFIG__ENDPOINT__V3__LOCALITY_LB_ENDPOINTS__INIT;
    Envoy__Config__Endpoint__V3__LbEndpoint *lb1[2] = {&e1.lb, &e2.lb}, *lb2[1] = {&e3.lb},
                                            *lb3[1] = {&e4.lb};
    l1.locality = &loc;
    l1.lb_endpoints = lb1;
    l1.n_lb_endpoints = 2;
    l2.lb_endpoints = lb2; /* no locality: the unlocated group */
    l2.n_lb_endpoints = 1;
    l3.locality = &loc; /* same locality again: merged into the first group */
    l3.lb_endpoints = lb3;
    l3.n_lb_endpoints = 1;
    Envoy__Config__Endpoint__V3__LocalityLbEndpoints *ls[3] = {&l1, &l2, &l3};
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment cla =
        ENVOY__CONFIG__ENDPOINT__V3__CLUSTER_LOAD_ASSIGNMENT__INIT;
    cla.cluster_name = "default";
    cla.endpoints = ls;
    cla.n_endpoints = 3;
    uint8_t buf[2048];
    assert_true(envoy__config__endpoint__v3__cluster_load_assignment__get_packed_size(&cla) <=
                sizeof(buf));
    size_t n = envoy__config__endpoint__v3__cluster_load_assignment__pack(&cla, buf);

    struct cluster_group *gs = NULL;
    size_t ng = 0;
    struct err e = {{0}};
    char *name = NULL;
    assert_int_equal(xds_cla_decode(buf, n, &name, &gs, &ng, &e), 0);
    assert_string_equal(name, "default");
    free(name);
    assert_int_equal(ng, 2);
    assert_true(gs[0].has_locality);
    assert_string_equal(gs[0].locality.region, "eu");
    assert_string_equal(gs[0].locality.zone, "z1");
    assert_string_equal(gs[0].locality.sub_zone, "");
    assert_int_equal(gs[0].n_endpoints, 2);
    assert_string_equal(gs[0].endpoints[0].host, "game.example");
    assert_int_equal(gs[0].endpoints[1].addr.port, 7000);
    assert_int_equal(gs[0].endpoints[1].n_tokens, 1);
    assert_memory_equal(gs[0].endpoints[1].tokens[0].bytes, "\x01\x02\x03", 3);
    /* user filter_metadata, then Envoy's load-balancing facts (issue 10) */
    assert_node_json(gs[0].endpoints[1].metadata,
                     "{\"team\":{\"name\":\"red\"},\"envoy.eds\":{\"priority\":0}}");
    assert_false(gs[0].endpoints[1].is_draining);
    assert_false(gs[1].has_locality);
    assert_int_equal(gs[1].n_endpoints, 1);
    assert_int_equal(gs[1].endpoints[0].addr.family, AF_INET6);
    assert_int_equal(gs[1].endpoints[0].n_tokens, 1);
    for (size_t i = 0; i < ng; i++)
        xds_group_free(&gs[i]);
    free(gs);

    /* errors: port > 65535, bad token, no socket address */
    e1.sa.port_value = 70000;
    n = envoy__config__endpoint__v3__cluster_load_assignment__pack(&cla, buf);
    assert_int_equal(xds_cla_decode(buf, n, &name, &gs, &ng, &e), -EINVAL);
    assert_string_equal(e.msg, "invalid endpoint port");
    assert_null(gs);
    assert_int_equal(ng, 0);
    e1.sa.port_value = 7000;
    e3.fm[0].value = s_new("tokens", v_num(1), NULL);
    n = envoy__config__endpoint__v3__cluster_load_assignment__pack(&cla, buf);
    assert_int_equal(xds_cla_decode(buf, n, &name, &gs, &ng, &e), -EINVAL);
    assert_string_equal(e.msg, "Missing required key `tokens`.");
    e3.fm[0].value = NULL;
    e2.lb.host_identifier_case = ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER__NOT_SET;
    n = envoy__config__endpoint__v3__cluster_load_assignment__pack(&cla, buf);
    assert_int_equal(xds_cla_decode(buf, n, &name, &gs, &ng, &e), -EINVAL);

    /* empty assignment: no groups */
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment none =
        ENVOY__CONFIG__ENDPOINT__V3__CLUSTER_LOAD_ASSIGNMENT__INIT;
    n = envoy__config__endpoint__v3__cluster_load_assignment__pack(&none, buf);
    assert_int_equal(xds_cla_decode(buf, n, &name, &gs, &ng, &e), 0);
    assert_string_equal(name, "");
    free(name);
    assert_int_equal(ng, 0);
    free(gs);
}

/* ---- applying ---------------------------------------------------------------------------- */

static struct cluster_group group_from(const char *yaml)
{
    struct config *c = parse_config(yaml);
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(xds_cluster_encode(&c->groups[0], &out, &len), 0);
    struct cluster_group g;
    struct err e = {{0}};
    assert_int_equal(xds_cluster_decode(out, len, &g, &e), 0);
    free(out);
    config_destroy(c);
    return g;
}

static void test_apply_clusters_merge(void **state)
{
    (void)state;
    struct config *c = parse_config("id: x\n"
                                    "clusters:\n"
                                    "  - endpoints: [{address: 10.0.0.1:1}]\n"
                                    "  - locality: {region: a}\n"
                                    "    endpoints: [{address: 10.0.0.2:1}]\n"
                                    "  - locality: {region: b}\n"
                                    "    endpoints: [{address: 10.0.0.3:1}]\n");
    struct cluster_group gs[3];
    gs[0] = group_from("clusters:\n"
                       "  - locality: {region: a}\n"
                       "    endpoints: [{address: 10.0.0.9:9, metadata: {k: 1}}]\n");
    gs[1] = group_from("clusters:\n"
                       "  - locality: {region: c, zone: z}\n"
                       "    endpoints: [{address: 10.0.0.4:1}]\n");
    gs[2] = group_from("clusters:\n  - endpoints: []\n"); /* empties the unlocated group */
    assert_int_equal(xds_apply_clusters(c, gs, 3), 0);
    for (int i = 0; i < 3; i++) /* contents were taken */
        assert_int_equal(gs[i].n_endpoints, 0);
    assert_int_equal(c->n_groups, 4);
    assert_false(c->groups[0].has_locality);
    assert_int_equal(c->groups[0].n_endpoints, 0); /* kept as an empty group */
    assert_string_equal(c->groups[1].locality.region, "a");
    assert_int_equal(c->groups[1].n_endpoints, 1);
    assert_int_equal(c->groups[1].endpoints[0].addr.port, 9);
    assert_string_equal(c->groups[2].locality.region, "b"); /* not named: untouched */
    assert_int_equal(c->groups[2].endpoints[0].addr.ip[3], 3);
    assert_string_equal(c->groups[3].locality.region, "c");
    assert_string_equal(c->groups[3].locality.zone, "z");
    char *json = config_json(c);
    assert_non_null(strstr(json, "\"k\":1"));
    free(json);

    /* a located all-empty locality is a key distinct from "no locality" */
    struct cluster_group g2[1];
    g2[0] = group_from("clusters:\n"
                       "  - locality: {}\n"
                       "    endpoints: [{address: 10.0.0.7:1}]\n");
    assert_true(g2[0].has_locality);
    assert_int_equal(xds_apply_clusters(c, g2, 1), 0);
    assert_int_equal(c->n_groups, 5);
    assert_int_equal(c->groups[0].n_endpoints, 0);
    char *name = xds_cluster_resource_name(&c->groups[4]);
    assert_string_equal(name, "");
    free(name);
    config_destroy(c);
}

static void test_apply_filters(void **state)
{
    (void)state;
    struct config *c = parse_config("filters:\n"
                                    "  - name: quilkin.filters.debug.v1alpha1.Debug\n"
                                    "    label: x\n"
                                    "    config: {id: a}\n");
    struct config *src = parse_config("filters:\n"
                                      "  - name: quilkin.filters.pass.v1alpha1.Pass\n"
                                      "  - name: quilkin.filters.debug.v1alpha1.Debug\n"
                                      "    config: {id: b}\n");
    struct filter_cfg fs[2];
    memset(fs, 0, sizeof(fs));
    fs[0].name = strdup(src->filters[0].name);
    fs[1].name = strdup(src->filters[1].name);
    fs[1].config = src->filters[1].config; /* borrowed: applying must take a copy */
    assert_int_equal(xds_apply_filters(c, fs, 2), 0);
    config_destroy(src);
    assert_null(fs[0].name);
    assert_int_equal(c->n_filters, 2);
    assert_string_equal(c->filters[0].name, "quilkin.filters.pass.v1alpha1.Pass");
    assert_null(c->filters[0].config);
    assert_null(c->filters[1].label);
    assert_node_json(c->filters[1].config, "{\"id\":\"b\"}");
    assert_int_equal(xds_apply_filters(c, NULL, 0), 0);
    assert_int_equal(c->n_filters, 0);
    config_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_vector),
        cmocka_unit_test(test_request_nack_round_trip),
        cmocka_unit_test(test_request_check_names),
        cmocka_unit_test(test_response_round_trip),
        cmocka_unit_test(test_cluster_vector),
        cmocka_unit_test(test_cluster_round_trip_with_locality_and_metadata),
        cmocka_unit_test(test_cluster_port_too_large),
        cmocka_unit_test(test_cluster_hosts_order_and_duplicates),
        cmocka_unit_test(test_metadata_tokens_decoding),
        cmocka_unit_test(test_metadata_errors),
        cmocka_unit_test(test_metadata_user_values),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_cla_decode),
        cmocka_unit_test(test_apply_clusters_merge),
        cmocka_unit_test(test_apply_filters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
