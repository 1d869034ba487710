/* TokenRouter (spec filters.md §13): routing through the token index, the three failures,
 * narrowed endpoint sets (order kept), a custom key, config, and Capture + TokenRouter from
 * YAML (tests src/filters/token_router.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "config/config.h"
#include "filters/chain.h"
#include "filters/token_index.h"

#include "../support/filter_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADROOM 64
#define N_EPS 4

/* ep0 {abc}, ep1 {abc, xyz}, ep2 {def}, ep3 no tokens */
static struct token toks0[] = {{(uint8_t *)"abc", 3}};
static struct token toks1[] = {{(uint8_t *)"abc", 3}, {(uint8_t *)"xyz", 3}};
static struct token toks2[] = {{(uint8_t *)"def", 3}};
static struct endpoint_cfg cfgs[N_EPS] = {
    {.tokens = toks0, .n_tokens = 1},
    {.tokens = toks1, .n_tokens = 2},
    {.tokens = toks2, .n_tokens = 1},
    {.tokens = NULL, .n_tokens = 0},
};

struct fixture {
    struct chain ch;
    struct keytab keys;
    struct arena arena;
    struct err e;
    struct endpoint eps[N_EPS];
    struct token_index *ti;
    uint8_t buf[HEADROOM + 256];
    struct pkt_ctx c;
};

static struct fixture fx;

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    assert_int_equal(arena_init(&fx.arena, 4096), 0);
    for (int i = 0; i < N_EPS; i++) {
        char text[32];
        snprintf(text, sizeof(text), "127.0.0.1:%d", 7000 + i);
        assert_int_equal(addr_parse(text, &fx.eps[i].addr), 0);
        fx.eps[i].cfg = &cfgs[i];
    }
    assert_int_equal(token_index_build(fx.eps, N_EPS, &fx.ti), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    chain_deinit(&fx.ch);
    keytab_deinit(&fx.keys);
    arena_deinit(&fx.arena);
    token_index_destroy(fx.ti);
    return 0;
}

static int build(const char *yaml)
{
    return build_chain_yaml(&fx.ch, &fx.keys, yaml, 1, &fx.e);
}

static int build_router(void)
{
    return build("filters:\n  - name: quilkin.filters.token_router.v1alpha1.TokenRouter\n");
}

/* A read context over every endpoint, as the worker prepares it. */
static void packet(const char *data)
{
    struct pkt_ctx *c = &fx.c;
    load_packet(c, fx.buf, sizeof(fx.buf), HEADROOM, data, strlen(data), &fx.arena);
    c->all_eps = fx.eps;
    c->n_all_eps = N_EPS;
    c->tokens = fx.ti;
    c->eps.idx = NULL;
    c->eps.n = N_EPS;
    md_clear(&c->md);
}

static void set_md(const char *key, struct md_value v)
{
    int id = keytab_intern(&fx.keys, key);
    assert_true(id >= 0);
    assert_int_equal(md_set(&fx.c.md, (uint32_t)id, &v), 0);
}

static struct md_value bytes(const char *s)
{
    return (struct md_value){.kind = MD_BYTES, .len = (uint32_t)strlen(s),
                             .u.bytes = (const uint8_t *)s};
}

static void assert_eps(const uint32_t *want, uint32_t n)
{
    assert_int_equal(fx.c.eps.n, n);
    assert_non_null(fx.c.eps.idx);
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(fx.c.eps.idx[i], want[i]);
}

static void assert_drop(const char *reason)
{
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_DROP);
    assert_string_equal(fx.c.drop_reason, reason);
}

static void test_routes_by_token(void **state)
{
    (void)state;
    assert_int_equal(build_router(), 0);
    packet("hello");
    set_md("quilkin.dev/capture", bytes("abc"));
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_eps((const uint32_t[]){0, 1}, 2); /* fan-out to both holders, in order */
    assert_memory_equal(pkt_data(&fx.c.pkt), "hello", 5);

    packet("hello");
    set_md("quilkin.dev/capture", bytes("xyz"));
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_eps((const uint32_t[]){1}, 1);

    packet("hello");
    set_md("quilkin.dev/capture", bytes("def"));
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_eps((const uint32_t[]){2}, 1);
    assert_int_equal(fx.arena.used, 0); /* the full set routes without scratch */
}

static void test_failures(void **state)
{
    (void)state;
    assert_int_equal(build_router(), 0);
    packet("hello");
    assert_drop("no routing token found");

    packet("hello");
    set_md("other", bytes("abc")); /* another key does not count */
    assert_drop("no routing token found");

    packet("hello");
    set_md("quilkin.dev/capture", bytes("nope"));
    assert_drop("no endpoint matched token");
    assert_int_equal(fx.c.eps.n, N_EPS); /* unchanged on failure */

    packet("hello");
    set_md("quilkin.dev/capture", bytes("ab")); /* exact bytes, not a prefix */
    assert_drop("no endpoint matched token");

    packet("hello");
    set_md("quilkin.dev/capture", bytes(""));
    assert_drop("no endpoint matched token");

    /* anything but Bytes, even a String with the same text */
    struct md_value items[2] = {bytes("abc"), bytes("def")};
    struct md_value not_bytes[] = {
        {.kind = MD_STRING, .len = 3, .u.bytes = (const uint8_t *)"abc"},
        {.kind = MD_LIST, .len = 2, .u.items = items},
        {.kind = MD_NUMBER, .u.n = 97},
        {.kind = MD_BOOL, .u.b = true},
    };
    for (size_t i = 0; i < sizeof(not_bytes) / sizeof(not_bytes[0]); i++) {
        packet("hello");
        set_md("quilkin.dev/capture", not_bytes[i]);
        assert_drop("routing token was found but wasn't bytes");
    }

    /* a snapshot without tokens */
    packet("hello");
    fx.c.tokens = NULL;
    set_md("quilkin.dev/capture", bytes("abc"));
    assert_drop("no endpoint matched token");
}

static void test_narrowed_sets(void **state)
{
    (void)state;
    assert_int_equal(build_router(), 0);
    /* an earlier filter left {3, 1, 2, 0}: keep the holders of abc in that order */
    static const uint32_t picked[] = {3, 1, 2, 0};
    packet("x");
    fx.c.eps.idx = picked;
    fx.c.eps.n = 4;
    set_md("quilkin.dev/capture", bytes("abc"));
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_eps((const uint32_t[]){1, 0}, 2);

    /* one candidate kept: no scratch needed */
    packet("x");
    fx.c.eps.idx = picked;
    fx.c.eps.n = 4;
    set_md("quilkin.dev/capture", bytes("def"));
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_eps((const uint32_t[]){2}, 1);
    assert_int_equal(fx.arena.used, 0);

    /* the single-endpoint storage in the context itself */
    packet("x");
    fx.c.one_ep = 1;
    fx.c.eps.idx = &fx.c.one_ep;
    fx.c.eps.n = 1;
    set_md("quilkin.dev/capture", bytes("abc"));
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_eps((const uint32_t[]){1}, 1);

    packet("x");
    fx.c.one_ep = 2;
    fx.c.eps.idx = &fx.c.one_ep;
    fx.c.eps.n = 1;
    set_md("quilkin.dev/capture", bytes("abc"));
    assert_drop("no endpoint matched token");

    /* candidates that hold other tokens only */
    static const uint32_t others[] = {2, 3};
    packet("x");
    fx.c.eps.idx = others;
    fx.c.eps.n = 2;
    set_md("quilkin.dev/capture", bytes("xyz"));
    assert_drop("no endpoint matched token");

    /* idx == NULL with fewer than all: the first eps.n endpoints */
    packet("x");
    fx.c.eps.n = 1;
    set_md("quilkin.dev/capture", bytes("abc"));
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_eps((const uint32_t[]){0}, 1);
    packet("x");
    fx.c.eps.n = 1;
    set_md("quilkin.dev/capture", bytes("xyz"));
    assert_drop("no endpoint matched token");

    /* scratch full while narrowing to two */
    packet("x");
    fx.c.eps.idx = picked;
    fx.c.eps.n = 4;
    set_md("quilkin.dev/capture", bytes("abc"));
    assert_non_null(arena_alloc(&fx.arena, fx.arena.cap));
    assert_drop("no scratch memory for the endpoint set");
}

static void test_custom_key_and_config(void **state)
{
    (void)state;
    assert_int_equal(build("filters:\n"
                           "  - name: quilkin.filters.token_router.v1alpha1.TokenRouter\n"
                           "    config: {metadataKey: example.org/token, ignored: 1}\n"),
                     0);
    packet("x");
    set_md("quilkin.dev/capture", bytes("abc"));
    assert_drop("no routing token found");
    packet("x");
    set_md("example.org/token", bytes("xyz"));
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_eps((const uint32_t[]){1}, 1);

    /* write is a no-op: no token needed */
    packet("x");
    fx.c.eps.n = 0;
    assert_int_equal(chain_write(&fx.ch, &fx.c), VERDICT_PASS);

    /* config is optional; null and {} mean the default key */
    assert_int_equal(build("filters:\n"
                           "  - name: quilkin.filters.token_router.v1alpha1.TokenRouter\n"
                           "    config: ~\n"
                           "  - name: quilkin.filters.token_router.v1alpha1.TokenRouter\n"
                           "    config: {}\n"),
                     0);
    packet("x");
    set_md("quilkin.dev/capture", bytes("abc"));
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS); /* routed twice, same set */
    assert_eps((const uint32_t[]){0, 1}, 2);

    assert_int_not_equal(build("filters:\n"
                               "  - name: quilkin.filters.token_router.v1alpha1.TokenRouter\n"
                               "    config: {metadataKey: [a, b]}\n"),
                         0);
    assert_non_null(strstr(fx.e.msg, "expected a string"));
    assert_non_null(strstr(fx.e.msg, "Deserialization failed"));
    assert_int_not_equal(build("filters:\n"
                               "  - name: quilkin.filters.token_router.v1alpha1.TokenRouter\n"
                               "    config: 12\n"),
                         0);
    assert_non_null(strstr(fx.e.msg, "expected a map"));
}

static void test_capture_then_route(void **state)
{
    (void)state;
    /* spec §13 example: a 3-byte suffix token, removed before forwarding */
    assert_int_equal(build("filters:\n"
                           "  - name: quilkin.filters.capture.v1alpha1.Capture\n"
                           "    config: { suffix: { size: 3, remove: true } }\n"
                           "  - name: quilkin.filters.token_router.v1alpha1.TokenRouter\n"),
                     0);
    packet("helloxyz");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_eps((const uint32_t[]){1}, 1);
    assert_int_equal(fx.c.pkt.len, 5);
    assert_memory_equal(pkt_data(&fx.c.pkt), "hello", 5);

    packet("hellozzz");
    assert_drop("no endpoint matched token");

    packet("hi"); /* too short: Capture fails first */
    assert_drop("no value captured");

    /* a multi-match regex capture is a List, which does not route */
    assert_int_equal(build("filters:\n"
                           "  - name: quilkin.filters.capture.v1alpha1.Capture\n"
                           "    config: { regex: { pattern: '[a-z]{3}' } }\n"
                           "  - name: quilkin.filters.token_router.v1alpha1.TokenRouter\n"),
                     0);
    packet("1def2");
    assert_int_equal(chain_read(&fx.ch, &fx.c), VERDICT_PASS);
    assert_eps((const uint32_t[]){2}, 1);
    packet("abc-def");
    assert_drop("routing token was found but wasn't bytes");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routes_by_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_narrowed_sets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_custom_key_and_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capture_then_route, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
