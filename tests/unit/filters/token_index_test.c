/* Token index: every endpoint holding a token is found, in ascending order, with 10,000
 * endpoints; absent tokens give nothing (tests src/filters/token_index.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config/config.h"
#include "filters/filter.h"
#include "filters/token_index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N = 10000 };

static void test_ten_thousand_endpoints(void **state)
{
    (void)state;
    /* endpoint i holds tokens "t<i>" and "g<i % 100>" (100 endpoints share each g token) */
    struct endpoint_cfg *cfgs = calloc(N, sizeof(*cfgs));
    struct endpoint *eps = calloc(N, sizeof(*eps));
    struct token *toks = calloc(2 * N, sizeof(*toks));
    char(*text)[16] = calloc(2 * N, 16);
    for (uint32_t i = 0; i < N; i++) {
        snprintf(text[2 * i], 16, "t%u", i);
        snprintf(text[2 * i + 1], 16, "g%u", i % 100);
        for (int k = 0; k < 2; k++) {
            toks[2 * i + k].bytes = (uint8_t *)text[2 * i + k];
            toks[2 * i + k].len = strlen(text[2 * i + k]);
        }
        cfgs[i].tokens = &toks[2 * i];
        cfgs[i].n_tokens = 2;
        eps[i].cfg = &cfgs[i];
    }
    struct token_index *ti = NULL;
    assert_int_equal(token_index_build(eps, N, &ti), 0);
    assert_int_equal(token_index_size(ti), N + 100);
    uint32_t n;
    const uint32_t *idx = token_index_lookup(ti, (const uint8_t *)"t4242", 5, &n);
    assert_int_equal(n, 1);
    assert_int_equal(idx[0], 4242);
    idx = token_index_lookup(ti, (const uint8_t *)"g7", 2, &n);
    assert_int_equal(n, 100);
    for (uint32_t k = 0; k < n; k++)
        assert_int_equal(idx[k], 7 + 100 * k); /* ascending endpoint order */
    assert_null(token_index_lookup(ti, (const uint8_t *)"t10000", 6, &n));
    assert_int_equal(n, 0);
    assert_null(token_index_lookup(ti, (const uint8_t *)"", 0, &n));
    token_index_destroy(ti);
    free(text);
    free(toks);
    free(eps);
    free(cfgs);
}

static void test_empty_and_binary_tokens(void **state)
{
    (void)state;
    uint8_t bin[3] = {0, 1, 2};
    struct token t[2] = {{.bytes = bin, .len = 3}, {.bytes = bin, .len = 0}};
    struct endpoint_cfg cfg = {.tokens = t, .n_tokens = 2};
    struct endpoint eps[2] = {{.cfg = NULL}, {.cfg = &cfg}};
    struct token_index *ti = NULL;
    assert_int_equal(token_index_build(eps, 2, &ti), 0);
    uint32_t n;
    const uint32_t *idx = token_index_lookup(ti, bin, 3, &n);
    assert_int_equal(n, 1);
    assert_int_equal(idx[0], 1);
    idx = token_index_lookup(ti, bin, 0, &n); /* "" is a valid token */
    assert_int_equal(n, 1);
    assert_null(token_index_lookup(ti, bin, 2, &n));
    token_index_destroy(ti);
    assert_int_equal(token_index_build(eps, 0, &ti), 0); /* no endpoints at all */
    assert_null(token_index_lookup(ti, bin, 3, &n));
    token_index_destroy(ti);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ten_thousand_endpoints),
        cmocka_unit_test(test_empty_and_binary_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
