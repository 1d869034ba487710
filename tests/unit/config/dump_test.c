/* config/dump.c: config_dump_json of parsed configs gives exactly the canonical JSON of spec
 * config.md §7 (keys clusters, filters, id, version; quilkin.dev first with sorted base64
 * tokens, then user metadata as written; filter configs echoed as written). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/err.h"
#include "base/strbuf.h"
#include "config/config.h"
#include "config/dump.h"
#include "net/addr.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static struct config *parse(const char *yaml)
{
    struct err e = {{0}};
    struct config *c = NULL;
    if (config_parse(yaml, strlen(yaml), "t.yaml", &c, &e) != 0)
        fail_msg("rejected: %s\n---\n%s", e.msg, yaml);
    assert_non_null(c);
    return c;
}

/* The dump of c, copied to a caller-freed string (so failing assertions leak nothing). */
static char *dump(const struct config *c)
{
    struct strbuf b = {0};
    int rc = config_dump_json(c, &b);
    char *out = (rc == 0 && !b.failed && b.buf) ? strdup(b.buf) : NULL;
    bool len_ok = b.buf && b.len == strlen(b.buf);
    strbuf_deinit(&b);
    assert_int_equal(rc, 0);
    assert_non_null(out);
    assert_true(len_ok);
    return out;
}

static void compare(char *got, const char *want)
{
    if (strcmp(got, want) == 0) {
        free(got);
        return;
    }
    static char msg[8192];
    size_t i = 0;
    while (got[i] && got[i] == want[i])
        i++;
    snprintf(msg, sizeof(msg),
             "dump differs at byte %zu:\n got: ...%.120s\nwant: ...%.120s\n"
             "full: %s",
             i, got + i, want + i, got);
    free(got);
    fail_msg("%s", msg);
}

static void expect_yaml_dump(const char *yaml, const char *want)
{
    struct config *c = parse(yaml);
    char *got = dump(c);
    config_destroy(c);
    compare(got, want);
}

/* ---- the full example --------------------------------------------------------------------- */

static const char full_yaml[] = "version: v1alpha1\n"
                                "id: dump-test\n"
                                "clusters:\n"
                                "  - endpoints:\n"
                                "      - address: 127.0.0.1:7000\n"
                                "        metadata:\n"
                                "          str: text\n"
                                "          quilkin.dev:\n"
                                "            tokens: [bXktdG9rZW4=, AQID, \"\", AQI=]\n"
                                "            ignored: true\n"
                                "          quoted_num: \"42\"\n"
                                "          int: 42\n"
                                "          neg: -7\n"
                                "          hex: 0x1F\n"
                                "          float: 1.5\n"
                                "          yes_bool: true\n"
                                "          no_bool: False\n"
                                "          nothing: null\n"
                                "          tilde: ~\n"
                                "          empty:\n"
                                "          seq: [1, two, 3.25, false, null]\n"
                                "          map: {a: {b: [x]}, \"c d\": \"e\\\"f\"}\n"
                                "          block_seq:\n"
                                "            - k: v\n"
                                "            - - nested\n"
                                "          empty_seq: []\n"
                                "          empty_map: {}\n"
                                "          unicode: \"caf\xc3\xa9 \\u4e2d\"\n"
                                "      - address: game-7.internal:7100\n"
                                "  - locality:\n"
                                "      region: europe-west1\n"
                                "      zone: europe-west1-b\n"
                                "      sub_zone: rack-12\n"
                                "    endpoints:\n"
                                "      - address: \"[2001:db8::40]:7100\"\n"
                                "      - address: udp://10.1.0.15:7100\n"
                                "        metadata:\n"
                                "          quilkin.dev:\n"
                                "            tokens: [\"MXg3aWp5Ng==\"]\n"
                                "filters:\n"
                                "  - name: quilkin.filters.debug.v1alpha1.Debug\n"
                                "    label: dbg\n"
                                "    config:\n"
                                "      id: hello\n"
                                "  - name: quilkin.filters.pass.v1alpha1.Pass\n"
                                "  - name: quilkin.filters.concatenate.v1alpha1.Concatenate\n"
                                "    config:\n"
                                "      on_read: APPEND\n"
                                "      bytes: dG9r\n"
                                "  - name: quilkin.filters.drop.v1alpha1.Drop\n"
                                "    label: only a label\n"
                                "    config: ~\n";

static const char full_json[] =
    "{\"clusters\":["
    "{\"endpoints\":["
    "{\"address\":\"game-7.internal:7100\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}},"
    "{\"address\":\"127.0.0.1:7000\",\"metadata\":{"
    "\"quilkin.dev\":{\"tokens\":[\"\",\"AQI=\",\"AQID\",\"bXktdG9rZW4=\"]},"
    "\"str\":\"text\","
    "\"quoted_num\":\"42\","
    "\"int\":42,"
    "\"neg\":-7,"
    "\"hex\":31,"
    "\"float\":1.5,"
    "\"yes_bool\":true,"
    "\"no_bool\":false,"
    "\"nothing\":null,"
    "\"tilde\":null,"
    "\"empty\":null,"
    "\"seq\":[1,\"two\",3.25,false,null],"
    "\"map\":{\"a\":{\"b\":[\"x\"]},\"c d\":\"e\\\"f\"},"
    "\"block_seq\":[{\"k\":\"v\"},[\"nested\"]],"
    "\"empty_seq\":[],"
    "\"empty_map\":{},"
    "\"unicode\":\"caf\xc3\xa9 \xe4\xb8\xad\""
    "}}],"
    "\"locality\":null},"
    "{\"endpoints\":["
    "{\"address\":\"10.1.0.15:7100\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[\"MXg3aWp5Ng==\"]}}"
    "},"
    "{\"address\":\"[2001:db8::40]:7100\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}}],"
    "\"locality\":{\"region\":\"europe-west1\",\"zone\":\"europe-west1-b\",\"sub_zone\":\"rack-"
    "12\"}}"
    "],"
    "\"filters\":["
    "{\"name\":\"quilkin.filters.debug.v1alpha1.Debug\",\"label\":\"dbg\",\"config\":{\"id\":"
    "\"hello\"}},"
    "{\"name\":\"quilkin.filters.pass.v1alpha1.Pass\",\"label\":null,\"config\":null},"
    "{\"name\":\"quilkin.filters.concatenate.v1alpha1.Concatenate\",\"label\":null,"
    "\"config\":{\"on_read\":\"APPEND\",\"bytes\":\"dG9r\"}},"
    "{\"name\":\"quilkin.filters.drop.v1alpha1.Drop\",\"label\":\"only a label\",\"config\":null}"
    "],"
    "\"id\":\"dump-test\","
    "\"version\":\"v1alpha1\"}";

static void full_example(void **state)
{
    expect_yaml_dump(full_yaml, full_json);
}

/* A control character in a value comes out escaped; \t and \u0009 are both JSON. */
static void control_character_is_escaped(void **state)
{
    struct config *c = parse("id: \"a\\tb\\nc\"\n");
    char *got = dump(c);
    config_destroy(c);
    bool ok = strstr(got, "\"id\":\"a\\u0009b\\u000ac\"") || strstr(got, "\"id\":\"a\\tb\\nc\"");
    free(got);
    assert_true(ok);
}

/* ---- smaller cases ------------------------------------------------------------------------ */

static void empty_config(void **state)
{
    expect_yaml_dump("id: empty\n", "{\"clusters\":[],\"filters\":[],\"id\":\"empty\","
                                    "\"version\":\"v1alpha1\"}");
    expect_yaml_dump("id: \"\"\nclusters:\nfilters: []\n",
                     "{\"clusters\":[],\"filters\":[],\"id\":\"\",\"version\":\"v1alpha1\"}");
}

static void scalar_id_is_a_string(void **state)
{
    expect_yaml_dump("id: 42\n",
                     "{\"clusters\":[],\"filters\":[],\"id\":\"42\",\"version\":\"v1alpha1\"}");
}

static void empty_locality_differs_from_none(void **state)
{
    expect_yaml_dump("id: l\n"
                     "clusters:\n"
                     "  - locality: {}\n"
                     "    endpoints: [{address: \"[::1]:1\"}]\n"
                     "  - endpoints: []\n",
                     "{\"clusters\":["
                     "{\"endpoints\":[{\"address\":\"[::1]:1\","
                     "\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}}],"
                     "\"locality\":{\"region\":\"\",\"zone\":\"\",\"sub_zone\":\"\"}},"
                     "{\"endpoints\":[],\"locality\":null}],"
                     "\"filters\":[],\"id\":\"l\",\"version\":\"v1alpha1\"}");
}

static void legacy_map_form_dumps_as_list(void **state)
{
    expect_yaml_dump("id: legacy\n"
                     "clusters:\n"
                     "  default:\n"
                     "    localities:\n"
                     "      - endpoints:\n"
                     "          - address: 127.0.0.1:26000\n"
                     "      - locality: { region: us-east1 }\n"
                     "        endpoints:\n"
                     "          - address: 127.0.0.1:26001\n",
                     "{\"clusters\":["
                     "{\"endpoints\":[{\"address\":\"127.0.0.1:26000\","
                     "\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}}],\"locality\":null},"
                     "{\"endpoints\":[{\"address\":\"127.0.0.1:26001\","
                     "\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}}],"
                     "\"locality\":{\"region\":\"us-east1\",\"zone\":\"\",\"sub_zone\":\"\"}}],"
                     "\"filters\":[],\"id\":\"legacy\",\"version\":\"v1alpha1\"}");
}

static void endpoint_order_and_duplicates(void **state)
{
    /* names before IPs, IPv4 before IPv6, numeric order, then port; a repeated address keeps
     * its first occurrence's metadata */
    expect_yaml_dump("id: o\n"
                     "clusters:\n"
                     "  - endpoints:\n"
                     "      - address: \"[::2]:5\"\n"
                     "      - address: 10.0.0.10:1\n"
                     "      - address: 10.0.0.9:2\n"
                     "        metadata: {first: 1}\n"
                     "      - address: 10.0.0.9:1\n"
                     "      - address: b.example:1\n"
                     "      - address: \"[::1]:9\"\n"
                     "      - address: 10.0.0.9:2\n"
                     "        metadata: {second: 2}\n",
                     "{\"clusters\":[{\"endpoints\":["
                     "{\"address\":\"b.example:1\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}},"
                     "{\"address\":\"10.0.0.9:1\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}},"
                     "{\"address\":\"10.0.0.9:2\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[]},"
                     "\"first\":1}},"
                     "{\"address\":\"10.0.0.10:1\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}},"
                     "{\"address\":\"[::1]:9\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}},"
                     "{\"address\":\"[::2]:5\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}}],"
                     "\"locality\":null}],"
                     "\"filters\":[],\"id\":\"o\",\"version\":\"v1alpha1\"}");
}

static void escaping_in_every_string_position(void **state)
{
    expect_yaml_dump("id: \"q\\\"b\\\\n\"\n"
                     "clusters:\n"
                     "  - locality: {region: \"r\\\"\", zone: \"z\\\\\", sub_zone: \"\\u0001\"}\n"
                     "    endpoints:\n"
                     "      - address: 127.0.0.1:1\n"
                     "        metadata: {\"k\\\"\": \"v\\\\\"}\n"
                     "filters:\n"
                     "  - name: quilkin.filters.pass.v1alpha1.Pass\n"
                     "    label: \"l\\\"\"\n",
                     "{\"clusters\":[{\"endpoints\":[{\"address\":\"127.0.0.1:1\","
                     "\"metadata\":{\"quilkin.dev\":{\"tokens\":[]},\"k\\\"\":\"v\\\\\"}}],"
                     "\"locality\":{\"region\":\"r\\\"\",\"zone\":\"z\\\\\","
                     "\"sub_zone\":\"\\u0001\"}}],"
                     "\"filters\":[{\"name\":\"quilkin.filters.pass.v1alpha1.Pass\","
                     "\"label\":\"l\\\"\",\"config\":null}],"
                     "\"id\":\"q\\\"b\\\\n\",\"version\":\"v1alpha1\"}");
}

static void set_unlocated_replaces_the_unlocated_group(void **state)
{
    struct config *c = parse("id: to\n"
                             "clusters:\n"
                             "  - endpoints: [{address: 127.0.0.1:1}]\n"
                             "  - locality: {region: r}\n"
                             "    endpoints: [{address: 127.0.0.1:2}]\n");
    struct addr to[2];
    assert_int_equal(addr_parse("[::1]:7", &to[0]), 0);
    assert_int_equal(addr_parse("127.0.0.1:8", &to[1]), 0);
    assert_int_equal(config_set_unlocated(c, to, 2), 0);
    char *got = dump(c);
    config_destroy(c);
    compare(got, "{\"clusters\":["
                 "{\"endpoints\":["
                 "{\"address\":\"127.0.0.1:8\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}},"
                 "{\"address\":\"[::1]:7\",\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}}],"
                 "\"locality\":null},"
                 "{\"endpoints\":[{\"address\":\"127.0.0.1:2\","
                 "\"metadata\":{\"quilkin.dev\":{\"tokens\":[]}}}],"
                 "\"locality\":{\"region\":\"r\",\"zone\":\"\",\"sub_zone\":\"\"}}],"
                 "\"filters\":[],\"id\":\"to\",\"version\":\"v1alpha1\"}");
}

static void non_finite_floats_are_null(void **state)
{
    expect_yaml_dump("id: f\n"
                     "filters:\n"
                     "  - name: x\n"
                     "    config: {a: .inf, b: -.inf, c: .nan}\n",
                     "{\"clusters\":[],\"filters\":[{\"name\":\"x\",\"label\":null,"
                     "\"config\":{\"a\":null,\"b\":null,\"c\":null}}],"
                     "\"id\":\"f\",\"version\":\"v1alpha1\"}");
}

static void large_and_negative_integers(void **state)
{
    expect_yaml_dump("id: i\n"
                     "filters:\n"
                     "  - name: x\n"
                     "    config: {max: 18446744073709551615, min: -9223372036854775808, "
                     "zero: 0, octal: 0o17}\n",
                     "{\"clusters\":[],\"filters\":[{\"name\":\"x\",\"label\":null,"
                     "\"config\":{\"max\":18446744073709551615,"
                     "\"min\":-9223372036854775808,\"zero\":0,\"octal\":15}}],"
                     "\"id\":\"i\",\"version\":\"v1alpha1\"}");
}

/* Floats are written in their shortest round-trip form, as serde_json (v0.7.0) writes them:
 * a YAML `0.1` must not come back as 0.10000000000000001. */
static void floats_use_shortest_round_trip_form(void **state)
{
    expect_yaml_dump("id: s\n"
                     "filters:\n"
                     "  - name: x\n"
                     "    config: {a: 0.1, b: 2.5e-3, c: 0.3, d: 1.5, e: -0.75}\n",
                     "{\"clusters\":[],\"filters\":[{\"name\":\"x\",\"label\":null,"
                     "\"config\":{\"a\":0.1,\"b\":0.0025,\"c\":0.3,\"d\":1.5,\"e\":-0.75}}],"
                     "\"id\":\"s\",\"version\":\"v1alpha1\"}");
}

static void failed_buffer_reports_enomem(void **state)
{
    struct config *c = parse("id: x\nclusters:\n  - endpoints: [{address: 127.0.0.1:1}]\n");
    struct strbuf b = {0};
    b.failed = true;
    assert_int_equal(config_dump_json(c, &b), -ENOMEM);
    strbuf_deinit(&b);
    config_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_example),
        cmocka_unit_test(control_character_is_escaped),
        cmocka_unit_test(empty_config),
        cmocka_unit_test(scalar_id_is_a_string),
        cmocka_unit_test(empty_locality_differs_from_none),
        cmocka_unit_test(legacy_map_form_dumps_as_list),
        cmocka_unit_test(endpoint_order_and_duplicates),
        cmocka_unit_test(escaping_in_every_string_position),
        cmocka_unit_test(set_unlocated_replaces_the_unlocated_group),
        cmocka_unit_test(non_finite_floats_are_null),
        cmocka_unit_test(large_and_negative_integers),
        cmocka_unit_test(floats_use_shortest_round_trip_form),
        cmocka_unit_test(failed_buffer_reports_enomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
