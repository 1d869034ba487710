/* Filter config packing and Listener resources (tests src/xds/filter_codec.c and
 * src/xds/listener.c): the spec's §6.4 hex vectors, YAML -> proto -> YAML round trips for all
 * twelve filters (the decoded tree must still build through filter_build_one), proto defaults
 * and errors, Match values and nesting, and the Listener rules of xds.md §6.3. */
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
#include "filters/chain.h"
#include "filters/filter.h"
#include "xds/resources.h"

#include "../support/xds_fixture.h"

#include "envoy/config/listener/v3/listener.pb-c.h"
#include "quilkin/filters/capture/v1alpha1/capture.pb-c.h"
#include "quilkin/filters/firewall/v1alpha1/firewall.pb-c.h"
#include "quilkin/filters/matches/v1alpha1/matches.pb-c.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAPTURE "quilkin.filters.capture.v1alpha1.Capture"
#define COMPRESS "quilkin.filters.compress.v1alpha1.Compress"
#define CONCAT "quilkin.filters.concatenate.v1alpha1.Concatenate"
#define DEBUG_F "quilkin.filters.debug.v1alpha1.Debug"
#define DROP "quilkin.filters.drop.v1alpha1.Drop"
#define FIREWALL "quilkin.filters.firewall.v1alpha1.Firewall"
#define LB "quilkin.filters.load_balancer.v1alpha1.LoadBalancer"
#define RATE "quilkin.filters.local_rate_limit.v1alpha1.LocalRateLimit"
#define MATCH "quilkin.filters.match.v1alpha1.Match"
#define PASS "quilkin.filters.pass.v1alpha1.Pass"
#define TIMESTAMP "quilkin.filters.timestamp.v1alpha1.Timestamp"
#define TOKEN_ROUTER "quilkin.filters.token_router.v1alpha1.TokenRouter"

/* ---- helpers ------------------------------------------------------------------------------ */

/* The config of the only filter of a one-filter YAML chain (config: <body>). */
static struct config *one_filter(const char *name, const char *body)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml), "filters:\n  - name: %s\n%s%s\n", name, body ? "    config: " : "",
             body ? body : "");
    return parse_config(yaml);
}

/* Encodes the filter's config and compares with the spec vector. */
static void assert_vector(const char *name, const char *body, const char *want_hex)
{
    struct config *c = one_filter(name, body);
    uint8_t *out = NULL;
    size_t len = 0;
    struct err e = {{0}};
    assert_int_equal(xds_filter_config_encode(name, c->filters[0].config, &out, &len, &e), 0);
    assert_bytes(out, len, want_hex);
    free(out);
    config_destroy(c);
}

/* Builds one filter from a node like a chain would; 0 or the error. */
static int build_one(const char *name, const struct node *config, struct err *e)
{
    struct keytab keys = {0};
    struct filter_build b = {.keys = &keys, .n_workers = 1};
    struct filter f;
    memset(&f, 0, sizeof(f));
    int rc = filter_build_one(&f, name, NULL, config, &b, e);
    if (rc == 0)
        filter_deinit(&f);
    keytab_deinit(&keys);
    return rc;
}

static int decode_hex(const char *name, const char *h, struct node **out, struct err *e)
{
    uint8_t buf[512];
    size_t n = hex(h, buf);
    memset(e, 0, sizeof(*e));
    return xds_filter_config_decode(name, buf, n, out, e);
}

/* Decodes the hex config of `name`, which must give the tree `json`. */
static void assert_decodes(const char *name, const char *h, const char *json)
{
    struct node *n = NULL;
    struct err e;
    assert_int_equal(decode_hex(name, h, &n, &e), 0);
    assert_node_json(n, json);
    node_free(n);
}

/* Decoding the hex config of `name` fails with exactly `msg`. */
static void assert_decode_fails(const char *name, const char *h, const char *msg)
{
    struct node *n = NULL;
    struct err e;
    assert_int_equal(decode_hex(name, h, &n, &e), -EINVAL);
    assert_string_equal(e.msg, msg);
}

/* ---- spec vectors (xds.md §6.4) ------------------------------------------------------------ */

static void test_spec_vectors(void **state)
{
    (void)state;
    assert_vector(RATE, "{max_packets: 1000, period: 1}", "08 e8 07 12 02 08 01");
    assert_vector(CONCAT, "{on_read: APPEND, bytes: YWJj}", "0a 00 12 02 08 01 1a 03 61 62 63");
    assert_vector(COMPRESS, "{on_read: COMPRESS, on_write: DECOMPRESS}",
                  "0a 00 12 02 08 01 1a 02 08 02");
    assert_vector(TOKEN_ROUTER, NULL, "0a 15 0a 13 \"quilkin.dev/capture\"");
    assert_vector(TOKEN_ROUTER, "{}", "0a 15 0a 13 \"quilkin.dev/capture\"");
    assert_vector(CAPTURE, "{suffix: {size: 3, remove: true}}",
                  "0a 15 0a 13 \"quilkin.dev/capture\" 1a 06 08 03 12 02 08 01");
    assert_vector(FIREWALL,
                  "{on_read: [{action: ALLOW, sources: [10.0.0.0/8], ports: [7000]}], "
                  "on_write: []}",
                  "0a 14 12 0a \"10.0.0.0/8\" 1a 06 08 d8 36 10 d9 36");
    /* wrappers are always filled: remove=false still sends an (empty) BoolValue */
    assert_vector(CAPTURE, "{prefix: {size: 2}}",
                  "0a 15 0a 13 \"quilkin.dev/capture\" 12 04 08 02 12 00");
    assert_vector(DROP, NULL, "");
    assert_vector(LB, "{}", "0a 00");
}

/* ---- round trips through every filter --------------------------------------------------- */

static const struct {
    const char *name;
    const char *body; /* NULL: no config */
} round_trips[] = {
    {CAPTURE, "{metadataKey: example.org/session, prefix: {size: 6, remove: true}}"},
    {CAPTURE, "{suffix: {size: 3}}"},
    {CAPTURE, "{metadataKey: k, regex: {pattern: \"ab+c\"}}"},
    {COMPRESS, "{on_read: DECOMPRESS, on_write: COMPRESS}"},
    {COMPRESS, "{mode: SNAPPY, on_read: DO_NOTHING, on_write: DO_NOTHING}"},
    {CONCAT, "{on_read: PREPEND, on_write: APPEND, bytes: dG9r}"},
    {CONCAT, "{bytes: \"\"}"},
    {DEBUG_F, "{id: edge-in}"},
    {DEBUG_F, "{}"},
    {DEBUG_F, NULL},
    {DROP, NULL},
    {FIREWALL,
     "{on_read: [{action: DENY, sources: [10.9.0.0/16], ports: [\"1-65535\"]}, "
     "{action: ALLOW, sources: [10.0.0.0/8, \"2001:db8::/32\"], "
     "ports: [7000, \"40000-50000\"]}], "
     "on_write: [{action: ALLOW, sources: [0.0.0.0/0, \"::/0\"], ports: [\"1-65535\"]}]}"},
    {FIREWALL, "{on_read: [], on_write: []}"},
    {LB, "{policy: HASH}"},
    {LB, "{policy: RANDOM}"},
    {LB, "{}"},
    {RATE, "{max_packets: 500, period: 1}"},
    {RATE, "{max_packets: 18446744073709551615, period: 4294967295}"},
    {MATCH, "\n      on_read:\n"
            "        metadataKey: example.org/version\n"
            "        branches:\n"
            "          - value: 1\n"
            "            name: " PASS "\n"
            "          - value: 2\n"
            "            name: " CONCAT "\n"
            "            config: { on_read: PREPEND, bytes: djI6 }\n"
            "          - value: [abc, true, [3]]\n"
            "            name: " DROP "\n"
            "        fallthrough:\n"
            "          name: " DROP "\n"
            "      on_write:\n"
            "        metadataKey: k2\n"
            "        branches:\n"
            "          - value: x\n"
            "            name: " MATCH "\n"
            "            config:\n"
            "              on_read:\n"
            "                metadataKey: inner\n"
            "                branches: []\n"
            "                fallthrough: {name: " CONCAT ", config: {bytes: ZGVm}}\n"},
    {MATCH, "{on_read: {metadataKey: k, branches: []}}"}, /* fallthrough defaults to Drop */
    {PASS, NULL},
    {TIMESTAMP, "{metadataKey: example.org/sent_at}"},
    {TOKEN_ROUTER, "{metadataKey: my.key}"},
    {TOKEN_ROUTER, NULL},
};

static void test_round_trips(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(round_trips) / sizeof(round_trips[0]); i++) {
        const char *name = round_trips[i].name;
        struct config *c = one_filter(name, round_trips[i].body);
        const struct node *yaml_cfg = c->filters[0].config;
        struct err e = {{0}};
        /* the original builds */
        assert_int_equal(build_one(name, yaml_cfg, &e), 0);

        uint8_t *out = NULL, *again = NULL;
        size_t len = 0, again_len = 0;
        if (xds_filter_config_encode(name, yaml_cfg, &out, &len, &e) != 0)
            fail_msg("%s: encode: %s", name, e.msg);
        struct node *decoded = NULL;
        if (xds_filter_config_decode(name, out, len, &decoded, &e) != 0)
            fail_msg("%s: decode: %s", name, e.msg);
        if (build_one(name, decoded, &e) != 0)
            fail_msg("%s: build of the decoded config: %s", name, e.msg);
        /* equal in meaning: the decoded tree packs to exactly the same bytes */
        assert_int_equal(xds_filter_config_encode(name, decoded, &again, &again_len, &e), 0);
        assert_int_equal(len, again_len);
        if (len)
            assert_memory_equal(out, again, len);
        free(out);
        free(again);
        node_free(decoded);
        config_destroy(c);
    }
}

static void test_decoded_shapes(void **state)
{
    (void)state;
    struct node *n = NULL;
    struct err e;
    /* normalised forms (filters.md) and proto defaults (xds.md §6.4) */
    assert_decodes(RATE, "08 05", "{\"max_packets\":5,\"period\":1}");
    assert_int_equal(decode_hex(RATE, "08 05 12 00", &n, &e), 0);
    assert_node_json(n, "{\"max_packets\":5,\"period\":0}");
    assert_int_equal(build_one(RATE, n, &e), -EINVAL); /* explicit 0 is rejected as in YAML */
    assert_non_null(strstr(e.msg, "value must be at least 1 second"));
    node_free(n);
    assert_decodes(COMPRESS, "",
                   "{\"mode\":\"SNAPPY\",\"on_read\":\"DO_NOTHING\",\"on_write\":\"DO_NOTHING\"}");
    /* unknown enum numbers decode as the 0 value */
    assert_decodes(COMPRESS, "0a 02 08 07 12 02 08 09",
                   "{\"mode\":\"SNAPPY\",\"on_read\":\"DO_NOTHING\",\"on_write\":\"DO_NOTHING\"}");
    assert_decodes(CONCAT, "0a 00 12 02 08 01 1a 03 61 62 63",
                   "{\"on_read\":\"APPEND\",\"on_write\":\"DO_NOTHING\",\"bytes\":\"YWJj\"}");
    assert_decodes(CONCAT, "",
                   "{\"on_read\":\"DO_NOTHING\",\"on_write\":\"DO_NOTHING\",\"bytes\":\"\"}");
    assert_decodes(TOKEN_ROUTER, "", "{\"metadataKey\":\"quilkin.dev/capture\"}");
    assert_decodes(LB, "", "{\"policy\":\"ROUND_ROBIN\"}");
    assert_decodes(DEBUG_F, "", "{\"id\":null}");
    assert_decodes(DEBUG_F, "0a 03 0a 01 78", "{\"id\":\"x\"}");
    n = (struct node *)1;
    assert_int_equal(decode_hex(DROP, "", &n, &e), 0);
    assert_null(n);                                         /* no config */
    assert_int_equal(decode_hex(PASS, "08 01", &n, &e), 0); /* unknown fields skipped */
    assert_null(n);
    assert_decodes(
        CAPTURE, "0a 15 0a 13 \"quilkin.dev/capture\" 1a 06 08 03 12 02 08 01",
        "{\"metadataKey\":\"quilkin.dev/capture\",\"suffix\":{\"size\":3,\"remove\":true}}");
    assert_decodes(CAPTURE, "0a 03 0a 01 6b 12 02 08 04",
                   "{\"metadataKey\":\"k\",\"prefix\":{\"size\":4,\"remove\":false}}");
    assert_decodes(CAPTURE, "0a 03 0a 01 6b 22 05 0a 03 0a 01 2e",
                   "{\"metadataKey\":\"k\",\"regex\":{\"pattern\":\".\"}}");
    assert_decodes(FIREWALL, "0a 14 12 0a \"10.0.0.0/8\" 1a 06 08 d8 36 10 d9 36",
                   "{\"on_read\":[{\"action\":\"ALLOW\",\"sources\":[\"10.0.0.0/8\"],"
                   "\"ports\":[\"7000\"]}],\"on_write\":[]}");
}

static void test_decode_errors(void **state)
{
    (void)state;
    struct node *n = NULL;
    struct err e;
    assert_int_equal(decode_hex(TIMESTAMP, "", &n, &e), -EINVAL);
    assert_string_equal(e.msg, "`metadata_key` is required but not found");
    assert_null(n);
    /* no metadata_key */
    assert_decode_fails(CAPTURE, "1a 02 08 03", "field `metadata_key` is invalid, reason: Missing");
    assert_decode_fails(CAPTURE, "0a 03 0a 01 6b", "field `strategy` is invalid, reason: Missing");
    assert_decode_fails(CAPTURE, "0a 03 0a 01 6b 22 00",
                        "field `Regex.regex` is invalid, reason: Missing");
    /* firewall port ranges: min >= max, and > 65535 */
    assert_decode_fails(FIREWALL, "0a 06 1a 04 08 05 10 05",
                        "invalid port range: min 5 is greater than or equal to max 5");
    assert_int_equal(decode_hex(FIREWALL, "0a 08 1a 06 08 01 10 80 80 04", &n, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "invalid port range"));
    /* malformed bytes and unknown names */
    assert_int_equal(decode_hex(RATE, "08", &n, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "LocalRateLimit"));
    assert_decode_fails("quilkin.filters.nope.v1alpha1.Nope", "",
                        "filter `quilkin.filters.nope.v1alpha1.Nope` not found");
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(xds_filter_config_encode("Nope", NULL, &out, &len, &e), -EINVAL);
    assert_string_equal(e.msg, "filter `Nope` not found");
}

static void test_encode_errors(void **state)
{
    (void)state;
    static const struct {
        const char *name, *body;
    } bad[] = {
        {CAPTURE, "{metadataKey: k}"},
        {CONCAT, "{bytes: \"not b64!\"}"},
        {COMPRESS, "{on_read: compress, on_write: COMPRESS}"},
        {FIREWALL, "{on_read: [{action: ALLOW, sources: [], ports: [\"5-x\"]}], on_write: []}"},
        {TIMESTAMP, "{}"},
        {MATCH, "{on_read: {metadataKey: k, branches: [{value: -1, name: " PASS "}]}}"},
        {MATCH, "{on_read: {metadataKey: k, branches: [{value: 1.5, name: " PASS "}]}}"},
        {MATCH, "{on_read: {metadataKey: k, branches: [{value: 1, name: Nope}]}}"},
        {MATCH, "{on_read: {branches: []}}"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config *c = one_filter(bad[i].name, bad[i].body);
        uint8_t *out = NULL;
        size_t len = 0;
        struct err e = {{0}};
        if (xds_filter_config_encode(bad[i].name, c->filters[0].config, &out, &len, &e) != -EINVAL)
            fail_msg("%s %s: encoded", bad[i].name, bad[i].body);
        assert_true(e.msg[0] != '\0');
        config_destroy(c);
    }
}

/* ---- Match values and structure ------------------------------------------------------------ */

/* Packs a Match whose on_read has one branch with value v (fallthrough Drop). */
static int decode_match_value(Google__Protobuf__Value *v, struct node **out, struct err *e)
{
    Envoy__Config__Listener__V3__Filter pass = ENVOY__CONFIG__LISTENER__V3__FILTER__INIT,
                                        drop = ENVOY__CONFIG__LISTENER__V3__FILTER__INIT;
    pass.name = PASS;
    drop.name = DROP;
    Quilkin__Filters__Matches__V1alpha1__Match__Branch b =
        QUILKIN__FILTERS__MATCHES__V1ALPHA1__MATCH__BRANCH__INIT;
    Quilkin__Filters__Matches__V1alpha1__Match__Branch *bs[1] = {&b};
    b.value = v;
    b.filter = &pass;
    Google__Protobuf__StringValue key = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    key.value = "k";
    Quilkin__Filters__Matches__V1alpha1__Match__Config c =
        QUILKIN__FILTERS__MATCHES__V1ALPHA1__MATCH__CONFIG__INIT;
    c.metadata_key = &key;
    c.branches = bs;
    c.n_branches = 1;
    c.fallthrough = &drop;
    Quilkin__Filters__Matches__V1alpha1__Match m = QUILKIN__FILTERS__MATCHES__V1ALPHA1__MATCH__INIT;
    m.on_read = &c;
    uint8_t buf[512];
    size_t n = quilkin__filters__matches__v1alpha1__match__pack(&m, buf);
    memset(e, 0, sizeof(*e));
    return xds_filter_config_decode(MATCH, buf, n, out, e);
}

static void test_match_values(void **state)
{
    (void)state;
    struct node *n = NULL;
    struct err e;
    Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    char *json;
    v.number_value = 2.9; /* truncated toward zero */
    assert_int_equal(decode_match_value(&v, &n, &e), 0);
    assert_node_json(n, "{\"on_read\":{\"metadataKey\":\"k\",\"branches\":[{\"value\":2,\"name\":"
                        "\"" PASS "\"}],\"fallthrough\":{\"name\":\"" DROP "\"}}}");
    assert_int_equal(build_one(MATCH, n, &e), 0);
    node_free(n);
    v.number_value = -7.5; /* negatives become 0 */
    assert_int_equal(decode_match_value(&v, &n, &e), 0);
    json = node_json(n);
    assert_non_null(strstr(json, "\"value\":0,"));
    free(json);
    node_free(n);
    Google__Protobuf__Value items[2] = {GOOGLE__PROTOBUF__VALUE__INIT,
                                        GOOGLE__PROTOBUF__VALUE__INIT};
    Google__Protobuf__Value *ptrs[2] = {&items[0], &items[1]};
    Google__Protobuf__ListValue l = GOOGLE__PROTOBUF__LIST_VALUE__INIT;
    items[0].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    items[0].string_value = "abc";
    items[1].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
    items[1].bool_value = true;
    l.values = ptrs;
    l.n_values = 2;
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
    v.list_value = &l;
    assert_int_equal(decode_match_value(&v, &n, &e), 0);
    json = node_json(n);
    assert_non_null(strstr(json, "\"value\":[\"abc\",true]"));
    free(json);
    assert_int_equal(build_one(MATCH, n, &e), 0);
    node_free(n);
    /* struct, null and kindless values are errors, also inside a list */
    Google__Protobuf__Struct s = GOOGLE__PROTOBUF__STRUCT__INIT;
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
    v.struct_value = &s;
    assert_int_equal(decode_match_value(&v, &n, &e), -EINVAL);
    assert_null(n);
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
    assert_int_equal(decode_match_value(&v, &n, &e), -EINVAL);
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET;
    assert_int_equal(decode_match_value(&v, &n, &e), -EINVAL);
    items[1].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
    v.list_value = &l; /* the union member was overwritten above */
    assert_int_equal(decode_match_value(&v, &n, &e), -EINVAL);
    /* a branch without value is an error */
    assert_int_equal(decode_match_value(NULL, &n, &e), -EINVAL);
    assert_string_equal(e.msg, "field `value` is invalid, reason: Missing");
}

static void test_match_required_fields(void **state)
{
    (void)state;
    struct node *n = NULL;
    struct err e;
    /* on_read {metadata_key: "k"}: no fallthrough */
    assert_int_equal(decode_hex(MATCH, "0a 05 0a 03 0a 01 6b", &n, &e), -EINVAL);
    assert_string_equal(e.msg, "field `fallthrough` is invalid, reason: Missing");
    /* on_read {fallthrough: Drop}: no metadata_key */
    assert_int_equal(decode_hex(MATCH, "0a 26 22 24 0a 22 \"" DROP "\"", &n, &e), -EINVAL);
    assert_string_equal(e.msg, "field `metadata_key` is invalid, reason: Missing");
    /* both present */
    assert_int_equal(decode_hex(MATCH, "0a 2b 0a 03 0a 01 6b 22 24 0a 22 \"" DROP "\"", &n, &e), 0);
    assert_node_json(n, "{\"on_read\":{\"metadataKey\":\"k\",\"branches\":[],"
                        "\"fallthrough\":{\"name\":\"" DROP "\"}}}");
    node_free(n);
    /* no direction at all decodes to {} and is then rejected at build, as in v0.7.0 */
    assert_int_equal(decode_hex(MATCH, "", &n, &e), 0);
    assert_node_json(n, "{}");
    assert_int_equal(build_one(MATCH, n, &e), -EINVAL);
    node_free(n);
}

static void test_match_nesting_limit(void **state)
{
    (void)state;
    /* Match -> fallthrough Match -> ... 100 deep: rejected without a crash */
    size_t cap = 1 << 16;
    uint8_t *buf = malloc(cap), *tmp = malloc(cap);
    size_t len = 0;
    for (int i = 0; i < 100; i++) {
        /* Any{type_url: MATCH, value: <buf>} inside Filter{name: MATCH, typed_config} inside
         * Config{metadata_key: k, fallthrough} inside Match{on_read} */
        size_t n = 0;
        uint8_t any[4096];
        size_t an = 0;
        size_t nl = strlen(MATCH);
        any[an++] = 0x0a;
        any[an++] = (uint8_t)nl;
        memcpy(any + an, MATCH, nl);
        an += nl;
        any[an++] = 0x12;
        size_t l = len;
        do {
            any[an++] = (uint8_t)((l & 0x7f) | (l > 0x7f ? 0x80 : 0));
            l >>= 7;
        } while (l);
        /* Filter: 0a name, 22 any */
        tmp[n++] = 0x0a;
        tmp[n++] = (uint8_t)nl;
        memcpy(tmp + n, MATCH, nl);
        n += nl;
        tmp[n++] = 0x22;
        l = an + len;
        do {
            tmp[n++] = (uint8_t)((l & 0x7f) | (l > 0x7f ? 0x80 : 0));
            l >>= 7;
        } while (l);
        memcpy(tmp + n, any, an);
        n += an;
        memcpy(tmp + n, buf, len);
        n += len; /* tmp = Filter bytes */
        /* Config: 0a 03 0a 01 6b, 22 <filter>; Match: 0a <config> */
        uint8_t cfg_hdr[16];
        size_t ch = 0;
        cfg_hdr[ch++] = 0x0a;
        cfg_hdr[ch++] = 0x03;
        cfg_hdr[ch++] = 0x0a;
        cfg_hdr[ch++] = 0x01;
        cfg_hdr[ch++] = 'k';
        cfg_hdr[ch++] = 0x22;
        l = n;
        do {
            cfg_hdr[ch++] = (uint8_t)((l & 0x7f) | (l > 0x7f ? 0x80 : 0));
            l >>= 7;
        } while (l);
        size_t cfg_len = ch + n;
        size_t o = 0;
        buf[o++] = 0x0a;
        l = cfg_len;
        do {
            buf[o++] = (uint8_t)((l & 0x7f) | (l > 0x7f ? 0x80 : 0));
            l >>= 7;
        } while (l);
        memcpy(buf + o, cfg_hdr, ch);
        o += ch;
        memcpy(buf + o, tmp, n);
        len = o + n;
        assert_true(len + 256 < cap);
    }
    struct node *out = NULL;
    struct err e = {{0}};
    assert_int_equal(xds_filter_config_decode(MATCH, buf, len, &out, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "nested too deeply"));
    assert_null(out);
    free(buf);
    free(tmp);
}

/* ---- Listener (xds.md §6.3) --------------------------------------------------------------- */

static void test_listener_round_trip(void **state)
{
    (void)state;
    struct config *c = parse_config("filters:\n"
                                    "  - name: " CAPTURE "\n"
                                    "    label: not sent\n"
                                    "    config: {suffix: {size: 3, remove: true}}\n"
                                    "  - name: " TOKEN_ROUTER "\n"
                                    "  - name: " DEBUG_F "\n"
                                    "  - name: " DROP "\n"
                                    "  - name: " MATCH "\n"
                                    "    config:\n"
                                    "      on_read:\n"
                                    "        metadataKey: quilkin.dev/capture\n"
                                    "        branches:\n"
                                    "          - {value: abc, name: " PASS "}\n");
    uint8_t *out = NULL;
    size_t len = 0;
    struct err e = {{0}};
    assert_int_equal(xds_listener_encode(c->filters, c->n_filters, &out, &len, &e), 0);
    Envoy__Config__Listener__V3__Listener *l =
        envoy__config__listener__v3__listener__unpack(NULL, len, out);
    assert_non_null(l);
    assert_string_equal(l->name, "");
    assert_int_equal(l->n_filter_chains, 1);
    assert_int_equal(l->filter_chains[0]->n_filters, 5);
    Envoy__Config__Listener__V3__Filter **f = l->filter_chains[0]->filters;
    assert_string_equal(f[0]->name, CAPTURE);
    assert_int_equal(f[0]->config_type_case,
                     ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(f[0]->typed_config->type_url, CAPTURE); /* bare name, no prefix */
    for (int i = 1; i < 4; i++) /* no config: typed_config omitted */
        assert_int_equal(f[i]->config_type_case,
                         ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE__NOT_SET);
    envoy__config__listener__v3__listener__free_unpacked(l, NULL);

    struct filter_cfg *fs = NULL;
    size_t n = 0;
    assert_int_equal(xds_listener_decode(out, len, &fs, &n, &e), 0);
    free(out);
    assert_int_equal(n, 5);
    assert_string_equal(fs[0].name, CAPTURE);
    assert_null(fs[0].label); /* labels are not transported */
    assert_ptr_equal(fs[0].config, fs[0].owned_config);
    assert_node_json(
        fs[0].config,
        "{\"metadataKey\":\"quilkin.dev/capture\",\"suffix\":{\"size\":3,\"remove\":true}}");
    assert_null(fs[1].config);
    assert_null(fs[3].config);
    struct keytab keys = {0};
    struct filter_build b = {.keys = &keys, .n_workers = 1};
    struct chain ch = {0};
    if (chain_build(&ch, fs, n, &b, &e) != 0)
        fail_msg("chain_build: %s", e.msg);
    chain_deinit(&ch);
    keytab_deinit(&keys);

    /* applied to a config, the chain is replaced */
    assert_int_equal(xds_apply_filters(c, fs, n), 0);
    free(fs);
    assert_int_equal(c->n_filters, 5);
    assert_null(c->filters[0].label);
    config_destroy(c);
}

/* Packs a Listener with the given chains (each a list of filters). */
static size_t pack_listener(Envoy__Config__Listener__V3__FilterChain **chains, size_t n,
                            uint8_t *buf)
{
    Envoy__Config__Listener__V3__Listener l = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT;
    l.name = "ignored";
    l.filter_chains = chains;
    l.n_filter_chains = n;
    assert_true(envoy__config__listener__v3__listener__get_packed_size(&l) < 1024);
    return envoy__config__listener__v3__listener__pack(&l, buf);
}

static void test_listener_rules(void **state)
{
    (void)state;
    uint8_t buf[1024];
    struct filter_cfg *fs = NULL;
    size_t n = 0, len;
    struct err e = {{0}};

    /* no chain at all: an empty filter list */
    len = pack_listener(NULL, 0, buf);
    assert_int_equal(xds_listener_decode(buf, len, &fs, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_null(fs);

    /* two chains: only the first is used */
    Envoy__Config__Listener__V3__Filter pass = ENVOY__CONFIG__LISTENER__V3__FILTER__INIT,
                                        drop = ENVOY__CONFIG__LISTENER__V3__FILTER__INIT,
                                        dbg = ENVOY__CONFIG__LISTENER__V3__FILTER__INIT;
    pass.name = PASS;
    drop.name = DROP;
    dbg.name = DEBUG_F;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    uint8_t dbg_cfg[] = {0x0a, 0x03, 0x0a, 0x01, 'x'};
    any.type_url = DEBUG_F;
    any.value.data = dbg_cfg;
    any.value.len = sizeof(dbg_cfg);
    dbg.config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG;
    dbg.typed_config = &any;
    Envoy__Config__Listener__V3__Filter *f1[2] = {&dbg, &pass}, *f2[1] = {&drop};
    Envoy__Config__Listener__V3__FilterChain c1 = ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN__INIT,
                                             c2 = ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN__INIT;
    c1.filters = f1;
    c1.n_filters = 2;
    c2.filters = f2;
    c2.n_filters = 1;
    Envoy__Config__Listener__V3__FilterChain *chains[2] = {&c1, &c2};
    len = pack_listener(chains, 2, buf);
    assert_int_equal(xds_listener_decode(buf, len, &fs, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(fs[0].name, DEBUG_F);
    assert_node_json(fs[0].config, "{\"id\":\"x\"}");
    assert_string_equal(fs[1].name, PASS);
    for (size_t i = 0; i < n; i++) {
        free(fs[i].name);
        node_free(fs[i].owned_config);
    }
    free(fs);

    /* an empty first chain: empty list even though the second has filters */
    Envoy__Config__Listener__V3__FilterChain empty =
        ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN__INIT;
    chains[0] = &empty;
    len = pack_listener(chains, 2, buf);
    assert_int_equal(xds_listener_decode(buf, len, &fs, &n, &e), 0);
    assert_int_equal(n, 0);
    chains[0] = &c1;

    /* type_url must equal the filter name exactly (note the trailing space) */
    any.type_url = "type.googleapis.com/" DEBUG_F;
    len = pack_listener(chains, 1, buf);
    assert_int_equal(xds_listener_decode(buf, len, &fs, &n, &e), -EINVAL);
    assert_string_equal(e.msg,
                        "Expected " DEBUG_F " message, received type.googleapis.com/" DEBUG_F " ");
    assert_null(fs);
    assert_int_equal(n, 0);
    any.type_url = DEBUG_F;

    /* config_discovery is rejected */
    Envoy__Config__Core__V3__ExtensionConfigSource ecs =
        ENVOY__CONFIG__CORE__V3__EXTENSION_CONFIG_SOURCE__INIT;
    pass.config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_CONFIG_DISCOVERY;
    pass.config_discovery = &ecs;
    len = pack_listener(chains, 1, buf);
    assert_int_equal(xds_listener_decode(buf, len, &fs, &n, &e), -EINVAL);
    assert_string_equal(e.msg,
                        "field `config_type` is invalid, reason: ConfigDiscovery is currently "
                        "unsupported");
    pass.config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE__NOT_SET;

    /* unknown filter names */
    pass.name = "quilkin.filters.hashed_token_router.v1alpha1.HashedTokenRouter";
    len = pack_listener(chains, 1, buf);
    assert_int_equal(xds_listener_decode(buf, len, &fs, &n, &e), -EINVAL);
    assert_string_equal(e.msg,
                        "filter `quilkin.filters.hashed_token_router.v1alpha1.HashedTokenRouter` "
                        "not found");
    pass.name = PASS;

    /* a bad config inside: the filter's error */
    dbg_cfg[1] = 0x09; /* truncated StringValue */
    len = pack_listener(chains, 1, buf);
    assert_int_equal(xds_listener_decode(buf, len, &fs, &n, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "Debug"));

    /* not a Listener at all */
    const uint8_t junk[] = {0xff, 0xff};
    assert_int_equal(xds_listener_decode(junk, sizeof(junk), &fs, &n, &e), -EINVAL);
}

static void test_listener_encode_empty_and_errors(void **state)
{
    (void)state;
    uint8_t *out = NULL;
    size_t len = 0;
    struct err e = {{0}};
    /* no filters: one FilterChain with zero filters */
    assert_int_equal(xds_listener_encode(NULL, 0, &out, &len, &e), 0);
    assert_bytes(out, len, "1a 00");
    free(out);
    struct filter_cfg f = {.name = "nope"};
    assert_int_equal(xds_listener_encode(&f, 1, &out, &len, &e), -EINVAL);
    assert_string_equal(e.msg, "filter `nope` not found");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_vectors),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_decoded_shapes),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_match_values),
        cmocka_unit_test(test_match_required_fields),
        cmocka_unit_test(test_match_nesting_limit),
        cmocka_unit_test(test_listener_round_trip),
        cmocka_unit_test(test_listener_rules),
        cmocka_unit_test(test_listener_encode_empty_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
