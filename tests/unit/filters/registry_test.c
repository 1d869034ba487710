/* The registry (tests src/filters/registry.c): every filter is found by its exact name,
 * carries a config schema for `quilkin generate-config-schema`, and Match's schema names
 * every registered filter as a possible branch (a new filter must be added there too). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "filters/filter.h"
#include "filters/registry.h"

#include <stdio.h>
#include <string.h>

#define MATCH "quilkin.filters.match.v1alpha1.Match"

static void every_filter_is_found_and_has_a_schema(void **state)
{
    (void)state;
    size_t n;
    const struct filter_ops *const *all = registry_all(&n);
    assert_int_equal(n, 12);
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(registry_find(all[i]->name), all[i]);
        assert_non_null(all[i]->schema);
        /* the generator adds $schema and title itself */
        assert_null(strstr(all[i]->schema, "$schema"));
        assert_non_null(strstr(all[i]->schema, "type:"));
    }
    assert_null(registry_find("quilkin.filters.capture.v1alpha1.capture"));
}

static void match_schema_lists_every_filter(void **state)
{
    (void)state;
    size_t n;
    const struct filter_ops *const *all = registry_all(&n);
    const char *schema = registry_find(MATCH)->schema;
    for (size_t i = 0; i < n; i++) {
        char line[128];
        snprintf(line, sizeof(line), "- %s\n", all[i]->name);
        assert_non_null(strstr(schema, line));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_filter_is_found_and_has_a_schema),
        cmocka_unit_test(match_schema_lists_every_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
