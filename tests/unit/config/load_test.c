/* config/load.c: every accepted form of spec config.md §1-§6 decoded to exact values, and every
 * rejection reported as "SOURCE:LINE:COL: key.path: reason". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/err.h"
#include "config/config.h"
#include "config/node.h"
#include "net/addr.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static struct config *ok(const char *yaml)
{
    struct err e = {0};
    struct config *c = NULL;
    if (config_parse(yaml, strlen(yaml), "t.yaml", &c, &e) != 0)
        fail_msg("rejected: %s\n---\n%s", e.msg, yaml);
    assert_non_null(c);
    return c;
}

/* Expects rejection with "t.yaml:LINE:" first, then (when path is non-NULL) "PATH: REASON"
 * adjacent, else just REASON somewhere. */
static void bad(const char *yaml, unsigned line, const char *path, const char *reason)
{
    struct err e = {0};
    struct config *c = (struct config *)(uintptr_t)1;
    int rc = config_parse(yaml, strlen(yaml), "t.yaml", &c, &e);
    if (rc == 0) {
        config_destroy(c);
        fail_msg("accepted, expected \"%s\":\n%s", reason, yaml);
    }
    assert_int_equal(rc, -EINVAL);
    assert_null(c);
    char want[ERR_MSG_CAP];
    snprintf(want, sizeof(want), "t.yaml:%u:", line);
    if (strncmp(e.msg, want, strlen(want)) != 0)
        fail_msg("message \"%s\" does not start with \"%s\"", e.msg, want);
    if (path)
        snprintf(want, sizeof(want), "%s: %s", path, reason);
    else
        snprintf(want, sizeof(want), "%s", reason);
    if (!strstr(e.msg, want))
        fail_msg("message \"%s\" lacks \"%s\"", e.msg, want);
}

static void bad_exact(const char *yaml, const char *msg)
{
    struct err e = {0};
    struct config *c = NULL;
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &c, &e), -EINVAL);
    assert_string_equal(e.msg, msg);
}

static char *endpoint_yaml(const char *address_value)
{
    static char buf[512];
    snprintf(buf, sizeof(buf), "clusters:\n  - endpoints:\n      - address: %s\n", address_value);
    return buf;
}

/* An IP endpoint (no host name) of the given family, address and port. */
static void check_ip(const struct endpoint_cfg *ep, int family, const char *ip, uint16_t port)
{
    struct addr want;
    assert_int_equal(addr_parse_ip(ip, &want), 0);
    want.port = port;
    assert_null(ep->host);
    assert_int_equal(ep->addr.family, family);
    assert_true(addr_eq(&ep->addr, &want));
}

static void check_v4(const struct endpoint_cfg *ep, const char *ip, uint16_t port)
{
    check_ip(ep, AF_INET, ip, port);
}

static void check_v6(const struct endpoint_cfg *ep, const char *ip, uint16_t port)
{
    check_ip(ep, AF_INET6, ip, port);
}

static void check_name(const struct endpoint_cfg *ep, const char *host, uint16_t port)
{
    assert_non_null(ep->host);
    assert_string_equal(ep->host, host);
    assert_int_equal(ep->addr.family, 0);
    assert_int_equal(ep->addr.port, port);
}

static void check_token(const struct token *t, const void *bytes, size_t len)
{
    assert_int_equal(t->len, len);
    if (len)
        assert_memory_equal(t->bytes, bytes, len);
}

static const char *hostname(void)
{
    static char host[HOST_NAME_MAX + 1];
    assert_int_equal(gethostname(host, sizeof(host)), 0);
    return host;
}

/* ---- accepted forms ----------------------------------------------------------------------- */

static void empty_and_comment_only_files(void **state)
{
    const char *inputs[] = {"", "# nothing here\n", "\n   \n", "---\n"};
    for (size_t i = 0; i < 4; i++) {
        struct config *c = ok(inputs[i]);
        assert_int_equal(c->n_groups, 0);
        assert_int_equal(c->n_filters, 0);
        assert_string_equal(c->id, hostname());
        assert_int_equal(config_endpoint_count(c), 0);
        config_destroy(c);
    }
    struct err e = {0};
    struct config *c = NULL;
    assert_int_equal(config_parse(NULL, 0, NULL, &c, &e), 0);
    config_destroy(c);
}

static void top_level_defaults_and_id(void **state)
{
    struct config *c = ok("version: v1alpha1\n");
    assert_string_equal(c->id, hostname());
    config_destroy(c);
    static const struct {
        const char *yaml, *id;
    } cases[] = {
        {"version: \"v1alpha1\"\nid: edge-proxy-3\n", "edge-proxy-3"},
        {"id: 42\n", "42"},
        {"id:\n", ""},
        {"id: ~\n", ""},
        {"id: null\n", ""},
        {"id: true\n", "true"},
        {"id: ''\n", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c = ok(cases[i].yaml);
        assert_string_equal(c->id, cases[i].id);
        config_destroy(c);
    }
}

static void clusters_list_form(void **state)
{
    /* spec config.md §3 */
    struct config *c = ok("version: v1alpha1\n"
                          "id: edge-proxy-3\n"
                          "clusters:\n"
                          "  - endpoints:                      # no locality\n"
                          "      - address: 10.1.0.15:7100\n"
                          "      - address: game-7.internal:7100\n"
                          "  - locality:\n"
                          "      region: europe-west1\n"
                          "      zone: europe-west1-b\n"
                          "      sub_zone: rack-12\n"
                          "    endpoints:\n"
                          "      - address: \"[2001:db8::40]:7100\"\n");
    assert_string_equal(c->id, "edge-proxy-3");
    assert_int_equal(c->n_groups, 2);
    const struct cluster_group *g = &c->groups[0];
    assert_false(g->has_locality);
    assert_string_equal(g->locality.region, "");
    assert_int_equal(g->n_endpoints, 2);
    check_name(&g->endpoints[0], "game-7.internal", 7100); /* names sort first */
    check_v4(&g->endpoints[1], "10.1.0.15", 7100);
    assert_null(g->endpoints[0].metadata);
    assert_int_equal(g->endpoints[0].n_tokens, 0);
    g = &c->groups[1];
    assert_true(g->has_locality);
    assert_string_equal(g->locality.region, "europe-west1");
    assert_string_equal(g->locality.zone, "europe-west1-b");
    assert_string_equal(g->locality.sub_zone, "rack-12");
    assert_int_equal(g->n_endpoints, 1);
    check_v6(&g->endpoints[0], "2001:db8::40", 7100);
    assert_int_equal(config_endpoint_count(c), 3);
    config_destroy(c);
}

static void clusters_legacy_map_form_seed(void **state)
{
    /* The seed document's example (seed proxy.md), verbatim. */
    struct config *c = ok("clusters:\n"
                          "  default:\n"
                          "    localities:\n"
                          "      - endpoints:\n"
                          "        - address: 127.0.0.1:26000\n"
                          "          metadata:\n"
                          "            canary: false\n"
                          "            quilkin.dev: # This object is extracted by Quilkin\n"
                          "                tokens:\n"
                          "                - MXg3aWp5Ng== # base64 for 1x7ijy6\n"
                          "                - OGdqM3YyaQ== # base64 for 8gj3v2i\n");
    assert_int_equal(c->n_groups, 1);
    const struct cluster_group *g = &c->groups[0];
    assert_false(g->has_locality);
    assert_int_equal(g->n_endpoints, 1);
    const struct endpoint_cfg *ep = &g->endpoints[0];
    check_v4(ep, "127.0.0.1", 26000);
    assert_int_equal(ep->n_tokens, 2);
    check_token(&ep->tokens[0], "1x7ijy6", 7);
    check_token(&ep->tokens[1], "8gj3v2i", 7);
    assert_non_null(ep->metadata);
    assert_int_equal(ep->metadata->kind, NODE_MAP);
    const struct node *canary = node_map_get(ep->metadata, "canary");
    assert_non_null(canary);
    assert_int_equal(canary->kind, NODE_BOOL);
    assert_false(canary->b);
    assert_non_null(node_map_get(ep->metadata, "quilkin.dev"));
    config_destroy(c);
}

static void clusters_legacy_map_concatenates(void **state)
{
    struct config *c = ok("clusters:\n"
                          "  default:\n"
                          "    localities:\n"
                          "      - endpoints:\n"
                          "          - address: 127.0.0.1:26000\n"
                          "      - locality: { region: us-east1 }\n"
                          "        endpoints:\n"
                          "          - address: 127.0.0.1:26001\n"
                          "  other:\n"
                          "    note: ignored\n"
                          "    localities:\n"
                          "      - locality: { region: us-west1, zone: b }\n"
                          "        endpoints: []\n"
                          "  empty:\n"
                          "    localities:\n"
                          "  nothing:\n"
                          "  none: {}\n");
    assert_int_equal(c->n_groups, 3);
    assert_false(c->groups[0].has_locality);
    check_v4(&c->groups[0].endpoints[0], "127.0.0.1", 26000);
    assert_true(c->groups[1].has_locality);
    assert_string_equal(c->groups[1].locality.region, "us-east1");
    assert_string_equal(c->groups[1].locality.zone, "");
    assert_string_equal(c->groups[1].locality.sub_zone, "");
    check_v4(&c->groups[1].endpoints[0], "127.0.0.1", 26001);
    assert_string_equal(c->groups[2].locality.region, "us-west1");
    assert_string_equal(c->groups[2].locality.zone, "b");
    assert_int_equal(c->groups[2].n_endpoints, 0);
    config_destroy(c);
}

static void worked_example(void **state)
{
    /* spec config.md §8 */
    struct config *c = ok("version: v1alpha1\n"
                          "id: eu-proxy-1\n"
                          "filters:\n"
                          "  - name: quilkin.filters.capture.v1alpha1.Capture\n"
                          "    label: strip-token\n"
                          "    config:\n"
                          "      suffix:\n"
                          "        size: 4\n"
                          "        remove: true\n"
                          "  - name: quilkin.filters.token_router.v1alpha1.TokenRouter\n"
                          "clusters:\n"
                          "  - endpoints:\n"
                          "      - address: 10.20.0.5:7777\n"
                          "        metadata:\n"
                          "          quilkin.dev:\n"
                          "            tokens: [ \"YWJjZA==\" ]          # \"abcd\"\n"
                          "      - address: 10.20.0.6:7777\n"
                          "        metadata:\n"
                          "          quilkin.dev:\n"
                          "            tokens: [ \"d3h5eg==\" ]          # \"wxyz\"\n");
    assert_string_equal(c->id, "eu-proxy-1");
    assert_int_equal(c->n_filters, 2);
    assert_string_equal(c->filters[0].name, "quilkin.filters.capture.v1alpha1.Capture");
    assert_string_equal(c->filters[0].label, "strip-token");
    const struct node *cfg = c->filters[0].config;
    assert_non_null(cfg);
    const struct node *suffix = node_map_get(cfg, "suffix");
    assert_non_null(suffix);
    assert_int_equal(node_map_get(suffix, "size")->u, 4);
    assert_true(node_map_get(suffix, "remove")->b);
    assert_string_equal(c->filters[1].name, "quilkin.filters.token_router.v1alpha1.TokenRouter");
    assert_null(c->filters[1].label);
    assert_null(c->filters[1].config);
    assert_int_equal(c->n_groups, 1);
    const struct cluster_group *g = &c->groups[0];
    assert_int_equal(g->n_endpoints, 2);
    check_v4(&g->endpoints[0], "10.20.0.5", 7777);
    assert_int_equal(g->endpoints[0].n_tokens, 1);
    check_token(&g->endpoints[0].tokens[0], "abcd", 4);
    check_v4(&g->endpoints[1], "10.20.0.6", 7777);
    check_token(&g->endpoints[1].tokens[0], "wxyz", 4);
    config_destroy(c);
}

/* One endpoint whose address is `value` (YAML text), checked by check_v4/check_v6/check_name. */
static void accept_address(const char *value,
                           void (*check)(const struct endpoint_cfg *, const char *, uint16_t),
                           const char *want, uint16_t port)
{
    struct config *c = ok(endpoint_yaml(value));
    check(&c->groups[0].endpoints[0], want, port);
    config_destroy(c);
}

static void address_table_accepted(void **state)
{
    /* spec config.md §4.1, the accepted rows */
    accept_address("127.0.0.1:26000", check_v4, "127.0.0.1", 26000);
    accept_address("udp://127.0.0.1:26000", check_v4, "127.0.0.1", 26000);
    accept_address("\"[2001:db8::40]:7100\"", check_v6, "2001:db8::40", 7100);
    /* v4-mapped folds to IPv4: the canonical form config.h promises (net/addr.h). */
    accept_address("\"[::ffff:10.0.0.1]:7000\"", check_v4, "10.0.0.1", 7000);
    accept_address("game-7.internal:7100", check_name, "game-7.internal", 7100);
}

static void address_other_accepted(void **state)
{
    accept_address("10.0.0.1:0", check_v4, "10.0.0.1", 0); /* port 0 is accepted */
    accept_address("10.0.0.1:65535", check_v4, "10.0.0.1", 65535);
    accept_address("10.0.0.1:80/", check_v4, "10.0.0.1", 80); /* "/" is not a path */
    accept_address("\"udp://10.0.0.1:80?ignored=1\"", check_v4, "10.0.0.1", 80); /* query ignored */
    accept_address("\"udp://[::1]:5/#frag\"", check_v6, "::1", 5);
    accept_address("localhost:00080", check_name, "localhost", 80);
    accept_address("Game.Example.COM:1", check_name, "Game.Example.COM", 1); /* names verbatim */
    accept_address("1.2.3:4", check_name, "1.2.3", 4); /* not a dotted quad: a name */
    accept_address("udp://user@10.0.0.9:9", check_v4, "10.0.0.9", 9); /* URL user info ignored */
}

static void bad_address(const char *value, const char *reason)
{
    bad(endpoint_yaml(value), 3, "clusters[0].endpoints[0].address", reason);
}

static void address_table_rejected(void **state)
{
    /* spec config.md §4.1, the rejected rows */
    bad_address("10.0.0.1", "port is required");
    bad_address("2001:db8::40:7100", "parser error: invalid port number");
    bad_address("tcp://10.0.0.1:80", "non UDP based URLs are not permitted");
    bad_address("10.0.0.1:80/x",
                "No paths allowed in URLs, it must include only the hostname and port");
    bad_address("10.0.0.1:70000", "parser error: invalid port number");
}

static void address_other_rejected(void **state)
{
    bad_address("http://example.com:80", "non UDP based URLs are not permitted");
    bad_address("x.example:80://", "non UDP based URLs are not permitted");
    bad_address("UDP://10.0.0.1:80", "non UDP based URLs are not permitted");
    bad_address("10.0.0.1:65536", "parser error: invalid port number");
    bad_address("10.0.0.1:8x", "parser error: invalid port number");
    bad_address("10.0.0.1:-1", "parser error: invalid port number");
    bad_address("\"10.0.0.1:\"", "port is required");
    bad_address("game.internal", "port is required");
    bad_address("\":80\"", "hostname is required");
    bad_address("udp://", "hostname is required");
    bad_address("\"[::1\"", "parser error: invalid IPv6 address");
    bad_address("\"[1.2.3.4]:80\"", "parser error: invalid IPv6 address");
    bad_address("\"[zz]:80\"", "parser error: invalid IPv6 address");
    bad_address("\"[::1]\"", "port is required");
    bad_address("\"[::1]x80\"", "parser error: invalid port number");
    bad_address("\"a b:80\"", "parser error: invalid domain character");
    bad_address("\"a|b:80\"", "parser error: invalid domain character");
    bad_address("10.0.0.1:80/x/y", "No paths allowed");
    bad_address("udp://10.0.0.1:80//", "No paths allowed");
    bad_address("1234", "port is required"); /* a number reads as its text */
    bad_address("~", "expected a string, found null");
    bad_address("[1, 2]", "expected a string, found sequence");
}

static void metadata_tree_kept(void **state)
{
    struct config *c = ok("clusters:\n"
                          "  - endpoints:\n"
                          "      - address: 192.0.2.10:26000\n"
                          "        metadata:\n"
                          "          canary: false\n"
                          "          build: \"2024.06.1\"\n"
                          "          weight: 7\n"
                          "          nested: {list: [1, x, {deep: ~}], map: {k: v}}\n"
                          "          quilkin.dev:\n"
                          "            tokens:\n"
                          "              - bXktdG9rZW4=      # \"my-token\"\n"
                          "              - AQID              # bytes 01 02 03\n"
                          "              - \"\"\n"
                          "            other: ignored\n");
    const struct endpoint_cfg *ep = &c->groups[0].endpoints[0];
    const struct node *md = ep->metadata;
    assert_non_null(md);
    assert_int_equal(md->n_pairs, 5);
    assert_string_equal(node_map_get(md, "build")->str, "2024.06.1");
    assert_int_equal(node_map_get(md, "build")->kind, NODE_STR);
    assert_int_equal(node_map_get(md, "weight")->u, 7);
    const struct node *nested = node_map_get(md, "nested");
    const struct node *list = node_map_get(nested, "list");
    assert_int_equal(list->n_items, 3);
    assert_int_equal(node_map_get(list->items[2], "deep")->kind, NODE_NULL);
    assert_string_equal(node_map_get(node_map_get(nested, "map"), "k")->str, "v");
    /* tokens decoded and sorted bytewise: "", 01 02 03, "my-token" */
    assert_int_equal(ep->n_tokens, 3);
    check_token(&ep->tokens[0], "", 0);
    check_token(&ep->tokens[1], "\x01\x02\x03", 3);
    check_token(&ep->tokens[2], "my-token", 8);
    config_destroy(c);
}

static void metadata_empty_forms(void **state)
{
    struct config *c = ok("clusters:\n"
                          "  - endpoints:\n"
                          "      - address: 10.0.0.1:1\n"
                          "        metadata:\n"
                          "      - address: 10.0.0.2:1\n"
                          "        metadata: {}\n"
                          "      - address: 10.0.0.3:1\n"
                          "        metadata: {quilkin.dev: {tokens: []}}\n"
                          "      - address: 10.0.0.4:1\n"
                          "        metadata: {quilkin.dev: {tokens: }}\n");
    const struct cluster_group *g = &c->groups[0];
    assert_int_equal(g->n_endpoints, 4);
    assert_null(g->endpoints[0].metadata);
    assert_non_null(g->endpoints[1].metadata);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(g->endpoints[i].n_tokens, 0);
    config_destroy(c);
}

static void endpoint_order_and_dedupe(void **state)
{
    struct config *c = ok("clusters:\n"
                          "  - endpoints:\n"
                          "      - address: \"[::ffff:10.0.0.1]:7000\"\n"
                          "        metadata: {first: true}\n"
                          "      - address: 10.0.0.1:7000\n"
                          "        metadata: {first: false}\n"
                          "      - address: b.example:1\n"
                          "      - address: \"[::1]:5\"\n"
                          "      - address: a.example:2\n"
                          "      - address: a.example:1\n"
                          "      - address: 10.0.0.1:6999\n"
                          "      - address: \"[::1]:4\"\n"
                          "      - address: 9.255.255.255:9\n"
                          "      - address: B.example:1\n"
                          "      - address: b.example:1\n"
                          "        metadata: {quilkin.dev: {tokens: [AQID]}}\n"
                          "      - address: udp://10.0.0.1:7000/\n");
    const struct cluster_group *g = &c->groups[0];
    assert_int_equal(g->n_endpoints, 9);
    check_name(&g->endpoints[0], "B.example", 1); /* bytewise: 'B' < 'a' < 'b' */
    check_name(&g->endpoints[1], "a.example", 1);
    check_name(&g->endpoints[2], "a.example", 2);
    check_name(&g->endpoints[3], "b.example", 1);
    assert_int_equal(g->endpoints[3].n_tokens, 0); /* first occurrence kept */
    check_v4(&g->endpoints[4], "9.255.255.255", 9);
    check_v4(&g->endpoints[5], "10.0.0.1", 6999);
    check_v4(&g->endpoints[6], "10.0.0.1", 7000);
    assert_true(node_map_get(g->endpoints[6].metadata, "first")->b);
    check_v6(&g->endpoints[7], "::1", 4);
    check_v6(&g->endpoints[8], "::1", 5);
    config_destroy(c);
}

static void same_address_in_two_localities(void **state)
{
    struct config *c = ok("clusters:\n"
                          "  - endpoints: [{address: 10.0.0.1:1}]\n"
                          "  - locality: {}\n"
                          "    endpoints: [{address: 10.0.0.1:1}]\n"
                          "  - locality: {region: r, extra: ignored}\n"
                          "    name: ignored too\n"
                          "    endpoints:\n");
    assert_int_equal(c->n_groups, 3);
    assert_false(c->groups[0].has_locality);
    assert_true(c->groups[1].has_locality); /* {} differs from no locality */
    assert_string_equal(c->groups[1].locality.region, "");
    assert_int_equal(c->groups[2].n_endpoints, 0);
    assert_int_equal(config_endpoint_count(c), 2);
    config_destroy(c);
    c = ok("clusters:\n  - locality: ~\n    endpoints: []\n  - locality: {zone: z}\n"
           "    endpoints: []\n");
    assert_false(c->groups[0].has_locality);
    assert_string_equal(c->groups[1].locality.zone, "z");
    config_destroy(c);
}

static void empty_clusters_and_filters(void **state)
{
    const char *inputs[] = {"clusters:\n", "clusters: []\n", "filters:\n", "filters: ~\n",
                            "filters: null\n", "filters: []\n", "clusters: {}\n"};
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        struct config *c = ok(inputs[i]);
        assert_int_equal(c->n_groups, 0);
        assert_int_equal(c->n_filters, 0);
        config_destroy(c);
    }
}

static void filter_entries(void **state)
{
    struct config *c = ok("filters:\n"
                          "  - name: quilkin.filters.debug.v1alpha1.Debug\n"
                          "    label: ~\n"
                          "    config: {id: hello}\n"
                          "  - name: quilkin.filters.drop.v1alpha1.Drop\n"
                          "    config: ~\n"
                          "  - name: quilkin.filters.debug.v1alpha1.Debug\n"
                          "    label: \"second\"\n"
                          "    config:\n"
                          "  - {name: x, config: [1, 2]}\n");
    assert_int_equal(c->n_filters, 4);
    assert_string_equal(c->filters[0].name, "quilkin.filters.debug.v1alpha1.Debug");
    assert_null(c->filters[0].label);
    assert_string_equal(node_map_get(c->filters[0].config, "id")->str, "hello");
    assert_null(c->filters[1].config);
    assert_string_equal(c->filters[2].label, "second");
    assert_null(c->filters[2].config);
    assert_string_equal(c->filters[3].name, "x");
    assert_int_equal(c->filters[3].config->kind, NODE_SEQ);
    config_destroy(c);
}

/* ---- rejections --------------------------------------------------------------------------- */

static void unknown_top_level_keys(void **state)
{
    bad_exact("version: v1alpha1\nport: 7000\n",
              "t.yaml:2:1: unknown field `port`, expected one of `clusters`, `filters`, `id`, "
              "`version`");
    const char *keys[] = {"admin", "maxmind_db", "dynamic", "static", "proxy", "Clusters"};
    for (size_t i = 0; i < 6; i++) {
        char yaml[64], reason[64];
        snprintf(yaml, sizeof(yaml), "id: x\n%s: {}\n", keys[i]);
        snprintf(reason, sizeof(reason), "unknown field `%s`", keys[i]);
        bad(yaml, 2, NULL, reason);
    }
    bad("id: a\nid: b\n", 2, NULL, "duplicate field `id`");
}

static void bad_top_level_values(void **state)
{
    bad("version: v1\n", 1, "version", "unknown variant `v1`, expected `v1alpha1`");
    bad("version: V1ALPHA1\n", 1, "version", "unknown variant");
    bad("version: ~\n", 1, "version", "expected a string, found null");
    bad("id: [a]\n", 1, "id", "expected a string, found sequence");
    bad("id: {a: 1}\n", 1, "id", "expected a string, found map");
    bad("clusters: ~\n", 1, "clusters", "invalid type: null, expected a sequence");
    bad("clusters: null\n", 1, "clusters", "invalid type: null, expected a sequence");
    bad("clusters: 5\n", 1, "clusters", "invalid type: integer, expected a sequence");
    bad("clusters: \"x\"\n", 1, "clusters", "invalid type: string, expected a sequence");
    bad("filters: 5\n", 1, "filters", "invalid type: integer, expected a sequence");
    bad("filters: {name: x}\n", 1, "filters", "invalid type: map, expected a sequence");
    bad("- a\n- b\n", 1, NULL, "invalid type: sequence, expected a map");
    bad("just text\n", 1, NULL, "invalid type: string");
}

static void yaml_level_errors(void **state)
{
    bad("clusters:\n  - endpoints: [\n", 3, NULL, "did not find expected");
    bad("a: &x 1\n", 1, NULL, "anchors are not supported");
    bad("clusters:\n  - endpoints: *e\n", 2, NULL, "aliases are not supported");
    bad("id: \"\\q\"\n", 1, NULL, "found unknown escape character");
}

static void cluster_item_errors(void **state)
{
    bad("clusters:\n  - locality: {region: r}\n", 2, "clusters[0]", "missing field `endpoints`");
    bad("clusters:\n  - endpoints: []\n  -\n", 3, "clusters[1]", "missing field `endpoints`");
    bad("clusters:\n  - endpoints: []\n  - 7\n", 3, "clusters[1]",
        "invalid type: integer, expected a map");
    bad("clusters:\n  - endpoints: ~\n", 2, "clusters[0].endpoints",
        "invalid type: null, expected a sequence");
    bad("clusters:\n  - endpoints: {address: x}\n", 2, "clusters[0].endpoints",
        "invalid type: map, expected a sequence");
    bad("clusters:\n  - endpoints: []\n    locality: [a]\n", 3, "clusters[0].locality",
        "invalid type: sequence, expected a map");
    bad("clusters:\n  - endpoints: []\n    locality: {region: [a]}\n", 3,
        "clusters[0].locality.region", "expected a string, found sequence");
    bad("clusters:\n  - endpoints: []\n    endpoints: []\n", 3, "clusters[0]",
        "duplicate field `endpoints`");
}

static void duplicate_localities(void **state)
{
    bad("clusters:\n  - endpoints: []\n  - endpoints: []\n", 3, "clusters[1]",
        "duplicate localities found in cluster map");
    bad("clusters:\n"
        "  - locality: {region: r, zone: z}\n"
        "    endpoints: []\n"
        "  - locality: {region: a}\n"
        "    endpoints: []\n"
        "  - locality:\n"
        "      zone: z\n"
        "      region: r\n"
        "    endpoints: [{address: 10.0.0.1:1}]\n",
        6, "clusters[2]", "duplicate localities found in cluster map");
    bad("clusters:\n  - locality: {}\n    endpoints: []\n  - locality: {sub_zone: ''}\n"
        "    endpoints: []\n",
        4, "clusters[1]", "duplicate localities found in cluster map");
    /* Same locality under two cluster names of the legacy form (spec §6). */
    bad("clusters:\n"
        "  a:\n"
        "    localities:\n"
        "      - locality: {region: r}\n"
        "        endpoints: []\n"
        "  b:\n"
        "    localities:\n"
        "      - locality: {region: r}\n"
        "        endpoints: []\n",
        8, "clusters.b.localities[0]", "duplicate localities found in cluster map");
}

static void legacy_form_errors(void **state)
{
    bad("clusters:\n  default:\n    localities:\n      - locality: {region: r}\n", 4,
        "clusters.default.localities[0]", "missing field `endpoints`");
    bad("clusters:\n  default: [1]\n", 2, "clusters.default",
        "invalid type: sequence, expected a map");
    bad("clusters:\n  default:\n    localities: {a: 1}\n", 3, "clusters.default.localities",
        "invalid type: map, expected a sequence");
    bad("clusters:\n  default:\n    localities:\n      - endpoints:\n"
        "          - address: nope\n",
        5, "clusters.default.localities[0].endpoints[0].address", "port is required");
}

static void endpoint_errors(void **state)
{
    bad("clusters:\n  - endpoints:\n      - address: 10.0.0.1:1\n        port: 7\n", 4,
        "clusters[0].endpoints[0]", "unknown field `port`, expected `address` or `metadata`");
    bad("clusters:\n  - endpoints:\n      - metadata: {}\n", 3, "clusters[0].endpoints[0]",
        "missing field `address`");
    bad("clusters:\n  - endpoints:\n      -\n", 3, "clusters[0].endpoints[0]",
        "missing field `address`");
    bad("clusters:\n  - endpoints:\n      - 10.0.0.1:1\n", 3, "clusters[0].endpoints[0]",
        "invalid type: string, expected a map");
    bad("clusters:\n  - endpoints:\n      - address: 10.0.0.1:1\n      - address: bad\n", 4,
        "clusters[0].endpoints[1].address", "port is required");
    bad("clusters:\n  - endpoints:\n      - {address: 10.0.0.1:1, address: 10.0.0.2:1}\n", 3,
        "clusters[0].endpoints[0]", "duplicate field `address`");
}

static const char *md_yaml(const char *metadata)
{
    static char buf[512];
    snprintf(buf, sizeof(buf),
             "clusters:\n  - endpoints:\n      - address: 10.0.0.1:1\n        metadata: %s\n",
             metadata);
    return buf;
}

static void metadata_errors(void **state)
{
    const char *p = "clusters[0].endpoints[0].metadata";
    bad(md_yaml("{1: x}"), 4, p, "metadata keys must be strings, found integer `1`");
    bad(md_yaml("{a: {true: 1}}"), 4, "clusters[0].endpoints[0].metadata.a",
        "metadata keys must be strings, found boolean `true`");
    bad(md_yaml("{a: [x, {b: {~: 1}}]}"), 4, "clusters[0].endpoints[0].metadata.a[1].b",
        "metadata keys must be strings, found null");
    bad(md_yaml("{quilkin.dev: {tokens: [], 5: x}}"), 4,
        "clusters[0].endpoints[0].metadata.quilkin.dev",
        "metadata keys must be strings, found integer `5`");
    bad(md_yaml("[a, b]"), 4, p, "invalid type: sequence, expected a map");
    bad(md_yaml("~"), 4, p, "invalid type: null, expected a map");
    bad(md_yaml("text"), 4, p, "invalid type: string, expected a map");
}

static void token_errors(void **state)
{
    const char *qd = "clusters[0].endpoints[0].metadata.quilkin.dev";
    bad(md_yaml("{quilkin.dev: {}}"), 4, qd, "missing field `tokens`");
    bad(md_yaml("{quilkin.dev: }"), 4, qd, "missing field `tokens`");
    bad(md_yaml("{quilkin.dev: {token: [AQID]}}"), 4, qd, "missing field `tokens`");
    bad(md_yaml("{quilkin.dev: [AQID]}"), 4, qd, "invalid type: sequence, expected a map");
    bad(md_yaml("{quilkin.dev: AQID}"), 4, qd, "invalid type: string, expected a map");
    bad(md_yaml("{quilkin.dev: {tokens: AQID}}"), 4,
        "clusters[0].endpoints[0].metadata.quilkin.dev.tokens",
        "invalid type: string, expected a sequence");
    bad(md_yaml("{quilkin.dev: {tokens: ~}}"), 4,
        "clusters[0].endpoints[0].metadata.quilkin.dev.tokens",
        "invalid type: null, expected a sequence");
    const char *t1 = "clusters[0].endpoints[0].metadata.quilkin.dev.tokens[1]";
    bad(md_yaml("{quilkin.dev: {tokens: [AQID, [x]]}}"), 4, t1,
        "expected a string, found sequence");
    bad(md_yaml("{quilkin.dev: {tokens: [AQID, ~]}}"), 4, t1, "expected a string, found null");
    bad(md_yaml("{quilkin.dev: {tokens: [AQID, {a: b}]}}"), 4, t1,
        "expected a string, found map");
    bad(md_yaml("{quilkin.dev: {tokens: [AQID, AQI]}}"), 4, t1, "invalid base64 token `AQI`");
    bad(md_yaml("{quilkin.dev: {tokens: [AQID, AR==]}}"), 4, t1, "invalid base64 token `AR==`");
    bad(md_yaml("{quilkin.dev: {tokens: [AQID, \"A!==\"]}}"), 4, t1, "invalid base64 token");
    bad(md_yaml("{quilkin.dev: {tokens: [AQID, \"AQ ID\"]}}"), 4, t1, "invalid base64 token");
    bad(md_yaml("{quilkin.dev: {tokens: [AQID, \"-_-_\"]}}"), 4, t1, "invalid base64 token");
    bad(md_yaml("{quilkin.dev: {tokens: [AQID, YWJjZA==, AQID]}}"), 4,
        "clusters[0].endpoints[0].metadata.quilkin.dev.tokens[2]",
        "Found duplicate tokens in endpoint metadata.");
    bad(md_yaml("{quilkin.dev: {tokens: [\"\", \"\"]}}"), 4,
        "clusters[0].endpoints[0].metadata.quilkin.dev.tokens[1]",
        "Found duplicate tokens in endpoint metadata.");
    /* Line of the offending token in block style. */
    bad("clusters:\n"
        "  - endpoints:\n"
        "      - address: 10.0.0.1:1\n"
        "        metadata:\n"
        "          quilkin.dev:\n"
        "            tokens:\n"
        "              - AQID\n"
        "              - no-p\n",
        8, "clusters[0].endpoints[0].metadata.quilkin.dev.tokens[1]", "invalid base64 token");
}

static void filter_errors(void **state)
{
    bad_exact("filters:\n  - name: a\n    bogus: 1\n",
              "t.yaml:3:5: filters[0]: unknown field `bogus`, expected one of `name`, `label`, "
              "`config`");
    bad("filters:\n  - name: a\n  - label: x\n", 3, "filters[1]", "missing field `name`");
    bad("filters:\n  - name: a\n  -\n", 3, "filters[1]", "missing field `name`");
    bad("filters:\n  - name: a\n  - name: b\n  - name: {x: 1}\n", 4, "filters[2].name",
        "expected a string, found map");
    bad("filters:\n  - name: ~\n", 2, "filters[0].name", "expected a string, found null");
    bad("filters:\n  - name: a\n    label: [x]\n", 3, "filters[0].label",
        "expected a string, found sequence");
    bad("filters:\n  - quilkin.filters.debug.v1alpha1.Debug\n", 2, "filters[0]",
        "expected a map, found string");
    bad("filters:\n  - {name: a, name: b}\n", 2, "filters[0]", "duplicate field `name`");
    bad("filters:\n  - name: \"quilkin.filters.drop.v1alpha1.Drop\\0x\"\n", 2, "filters[0].name",
        "strings must not contain NUL characters");
    bad("id: \"a\\0\"\n", 1, "id", "strings must not contain NUL characters");
}

static void source_name_in_messages(void **state)
{
    struct err e = {0};
    struct config *c = NULL;
    const char *yaml = "clusters:\n  - endpoints:\n      - address: 10.0.0.1\n";
    assert_int_equal(config_parse(yaml, strlen(yaml), "/etc/q.yaml", &c, &e), -EINVAL);
    assert_string_equal(e.msg, "/etc/q.yaml:3:18: clusters[0].endpoints[0].address: "
                               "port is required");
}

/* ---- files, defaults, --to ---------------------------------------------------------------- */

static char *write_temp(const char *content)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/qk_load_test_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(content);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    return path;
}

static void load_file(void **state)
{
    char used[PATH_MAX];
    struct err e = {0};
    struct config *c = NULL;
    char *path = write_temp("id: from-file\nclusters:\n  - endpoints: [{address: 10.0.0.1:9}]\n");
    assert_int_equal(config_load_file(path, &c, used, &e), 0);
    assert_string_equal(used, path);
    assert_string_equal(c->id, "from-file");
    assert_int_equal(config_endpoint_count(c), 1);
    config_destroy(c);
    unlink(path);

    path = write_temp("id: x\nport: 1\n");
    assert_int_equal(config_load_file(path, &c, used, &e), -EINVAL);
    assert_null(c);
    char want[128];
    snprintf(want, sizeof(want), "%s:2:1: unknown field `port`", path);
    assert_non_null(strstr(e.msg, want));
    unlink(path);

    path = write_temp(""); /* zero-length: valid empty config */
    assert_int_equal(config_load_file(path, &c, used, &e), 0);
    assert_int_equal(c->n_groups, 0);
    assert_string_equal(c->id, hostname());
    config_destroy(c);
    unlink(path);
}

/* 0 when loading the unreadable file at path fails with -EACCES and names the file, else a
 * code saying which part did not hold (for a child process's exit status). */
static int unreadable_check(const char *path)
{
    char used[PATH_MAX];
    struct err e = {0};
    struct config *c = NULL;
    if (config_load_file(path, &c, used, &e) != -EACCES)
        return 1;
    if (c)
        return 2;
    return strstr(e.msg, path) ? 0 : 3;
}

static void load_file_fallbacks(void **state)
{
    char used[PATH_MAX] = "junk";
    struct err e = {0};
    struct config *c = NULL;
    struct stat st;
    if (stat("/etc/quilkin/quilkin.yaml", &st) == 0)
        skip();
    /* A missing file is not an error: fallback path, then the built-in default (spec §1). */
    assert_int_equal(config_load_file("/nonexistent/dir/quilkin.yaml", &c, used, &e), 0);
    assert_string_equal(used, "");
    assert_int_equal(c->n_groups, 0);
    assert_int_equal(c->n_filters, 0);
    assert_null(c->root);
    assert_string_equal(c->id, hostname());
    config_destroy(c);
    /* Any other open/read error is fatal and names the file. */
    assert_true(config_load_file("/tmp", &c, used, &e) < 0);
    assert_null(c);
    assert_non_null(strstr(e.msg, "/tmp"));
    /* An unreadable file (EACCES) too. Root reads any file, so as root the check runs in a
     * child that has become nobody; it reports through its exit status. */
    char *path = write_temp("id: x\n");
    assert_int_equal(chmod(path, 0), 0);
    if (geteuid() != 0) {
        assert_int_equal(unreadable_check(path), 0);
    } else {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (setgroups(0, NULL) == -1 || setgid(65534) == -1 || setuid(65534) == -1)
                _exit(10);
            _exit(unreadable_check(path));
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0); /* 10: could not drop privileges */
    }
    unlink(path);
}

static void default_config(void **state)
{
    struct config *c = config_default();
    assert_non_null(c);
    assert_string_equal(c->id, hostname());
    assert_int_equal(c->n_groups, 0);
    assert_int_equal(c->n_filters, 0);
    assert_int_equal(config_endpoint_count(c), 0);
    config_destroy(c);
    config_destroy(NULL);
}

static void set_unlocated(void **state)
{
    struct addr to[4];
    assert_int_equal(addr_parse("[::1]:9", &to[0]), 0);
    assert_int_equal(addr_parse("10.0.0.2:1", &to[1]), 0);
    assert_int_equal(addr_parse("10.0.0.1:1", &to[2]), 0);
    assert_int_equal(addr_parse("10.0.0.2:1", &to[3]), 0);

    /* Only a located group: a new unlocated group is added. */
    struct config *c = ok("clusters:\n  - locality: {region: r}\n"
                          "    endpoints: [{address: 192.0.2.1:1}]\n");
    assert_int_equal(config_set_unlocated(c, to, 4), 0);
    assert_int_equal(c->n_groups, 2);
    const struct cluster_group *g = &c->groups[1];
    assert_false(g->has_locality);
    assert_string_equal(g->locality.region, "");
    assert_int_equal(g->n_endpoints, 3);
    check_v4(&g->endpoints[0], "10.0.0.1", 1);
    check_v4(&g->endpoints[1], "10.0.0.2", 1);
    check_v6(&g->endpoints[2], "::1", 9);
    assert_null(g->endpoints[0].metadata);
    assert_int_equal(g->endpoints[0].n_tokens, 0);
    assert_int_equal(config_endpoint_count(c), 4);
    config_destroy(c);

    /* An existing unlocated group is replaced, tokens and names included. */
    c = ok("clusters:\n  - endpoints:\n      - address: name.example:1\n"
           "      - address: 10.9.9.9:9\n        metadata: {quilkin.dev: {tokens: [AQID]}}\n"
           "  - locality: {region: r}\n    endpoints: [{address: 192.0.2.1:1}]\n");
    assert_int_equal(config_set_unlocated(c, to + 2, 1), 0);
    assert_int_equal(c->n_groups, 2);
    assert_int_equal(c->groups[0].n_endpoints, 1);
    check_v4(&c->groups[0].endpoints[0], "10.0.0.1", 1);
    assert_int_equal(c->groups[1].n_endpoints, 1);
    config_destroy(c);

    /* On the default config, and with no addresses at all. */
    c = config_default();
    assert_int_equal(config_set_unlocated(c, to, 1), 0);
    assert_int_equal(c->n_groups, 1);
    check_v6(&c->groups[0].endpoints[0], "::1", 9);
    assert_int_equal(config_set_unlocated(c, NULL, 0), 0);
    assert_int_equal(c->n_groups, 1);
    assert_int_equal(config_endpoint_count(c), 0);
    config_destroy(c);
}

/* A hand-built group: the loader's order and first-wins dedupe, the dropped endpoints freed
 * (with everything they own: ASan's leak check covers that). */
static struct endpoint_cfg owned_ep(const char *host, const char *ip, uint16_t port, int tag)
{
    struct endpoint_cfg ep = {0};
    if (host)
        ep.host = strdup(host);
    else
        assert_int_equal(addr_parse_ip(ip, &ep.addr), 0);
    ep.addr.port = port;
    ep.tokens = calloc(1, sizeof(*ep.tokens));
    ep.tokens[0].bytes = malloc(1);
    ep.tokens[0].bytes[0] = (uint8_t)tag;
    ep.tokens[0].len = 1;
    ep.n_tokens = 1;
    ep.owned_metadata = node_new_map();
    ep.metadata = ep.owned_metadata;
    return ep;
}

static void group_normalize(void **state)
{
    struct cluster_group g = {0};
    assert_int_equal(config_group_normalize(&g), 0); /* empty */
    assert_int_equal(g.n_endpoints, 0);

    g.endpoints = calloc(8, sizeof(*g.endpoints));
    g.endpoints[0] = owned_ep(NULL, "::1", 5, 0);
    g.n_endpoints = 1;
    assert_int_equal(config_group_normalize(&g), 0); /* one: nothing to do */
    assert_int_equal(g.n_endpoints, 1);

    g.endpoints[1] = owned_ep(NULL, "10.0.0.1", 7, 1);
    g.endpoints[2] = owned_ep("b.example", NULL, 1, 2);
    g.endpoints[3] = owned_ep(NULL, "::1", 5, 3); /* duplicate of [0] */
    g.endpoints[4] = owned_ep("a.example", NULL, 2, 4);
    g.endpoints[5] = owned_ep("b.example", NULL, 1, 5); /* duplicate of [2] */
    g.endpoints[6] = owned_ep("a.example", NULL, 1, 6);
    g.endpoints[7] = owned_ep(NULL, "10.0.0.1", 7, 7); /* duplicate of [1] */
    g.n_endpoints = 8;
    assert_int_equal(config_group_normalize(&g), 0);
    assert_int_equal(g.n_endpoints, 5);
    check_name(&g.endpoints[0], "a.example", 1);
    check_name(&g.endpoints[1], "a.example", 2);
    check_name(&g.endpoints[2], "b.example", 1);
    check_v4(&g.endpoints[3], "10.0.0.1", 7);
    check_v6(&g.endpoints[4], "::1", 5);
    static const uint8_t kept[5] = {6, 4, 2, 1, 0}; /* the first of each address survives */
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(g.endpoints[i].tokens[0].bytes[0], kept[i]);
        assert_ptr_equal(g.endpoints[i].metadata, g.endpoints[i].owned_metadata);
    }
    for (size_t i = 0; i < g.n_endpoints; i++) {
        free(g.endpoints[i].host);
        free(g.endpoints[i].tokens[0].bytes);
        free(g.endpoints[i].tokens);
        node_free(g.endpoints[i].owned_metadata);
    }
    free(g.endpoints);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_and_comment_only_files),
        cmocka_unit_test(top_level_defaults_and_id),
        cmocka_unit_test(clusters_list_form),
        cmocka_unit_test(clusters_legacy_map_form_seed),
        cmocka_unit_test(clusters_legacy_map_concatenates),
        cmocka_unit_test(worked_example),
        cmocka_unit_test(address_table_accepted),
        cmocka_unit_test(address_other_accepted),
        cmocka_unit_test(address_table_rejected),
        cmocka_unit_test(address_other_rejected),
        cmocka_unit_test(metadata_tree_kept),
        cmocka_unit_test(metadata_empty_forms),
        cmocka_unit_test(endpoint_order_and_dedupe),
        cmocka_unit_test(same_address_in_two_localities),
        cmocka_unit_test(empty_clusters_and_filters),
        cmocka_unit_test(filter_entries),
        cmocka_unit_test(unknown_top_level_keys),
        cmocka_unit_test(bad_top_level_values),
        cmocka_unit_test(yaml_level_errors),
        cmocka_unit_test(cluster_item_errors),
        cmocka_unit_test(duplicate_localities),
        cmocka_unit_test(legacy_form_errors),
        cmocka_unit_test(endpoint_errors),
        cmocka_unit_test(metadata_errors),
        cmocka_unit_test(token_errors),
        cmocka_unit_test(filter_errors),
        cmocka_unit_test(source_name_in_messages),
        cmocka_unit_test(load_file),
        cmocka_unit_test(load_file_fallbacks),
        cmocka_unit_test(default_config),
        cmocka_unit_test(set_unlocated),
        cmocka_unit_test(group_normalize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
