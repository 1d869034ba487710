/* ASN enrichment (tests src/proxy/geo.c) on a small database written by
 * tests/support/write_mmdb.pl (the fuzz seed fuzz/corpus/mmdb_lookup/geolite_ipinfo_mixed.mmdb:
 * 127.0.0.0/16 GeoLite2 style, 127.1.0.0/16 IPinfo style, 2001:db8::/32 with "asn": "AS64512"):
 * both record styles, the prefix of the lookup, per-worker interning, the client cache and
 * its invalidation by a database swap, the drop table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/err.h"
#include "net/addr.h"
#include "proxy/geo.h"

#include <stdlib.h>
#include <string.h>

#define DB QK_SOURCE_DIR "/fuzz/corpus/mmdb_lookup/geolite_ipinfo_mixed.mmdb"

static struct addr ip(const char *text)
{
    struct addr a;
    assert_int_equal(addr_parse_ip(text, &a), 0);
    return a;
}

static void lookups_read_both_styles(void **state)
{
    (void)state;
    struct err e = {{0}};
    struct geo_db *db = geo_db_open(DB, &e);
    assert_non_null(db);
    struct geo_info g;
    struct addr a = ip("127.0.0.1");
    assert_true(geo_db_lookup(db, &a, &g));
    assert_int_equal(g.asn, 64500);
    assert_string_equal(g.organization, "Org");
    assert_string_equal(g.prefix, "127.0.0.0/16"); /* the network looked up */
    assert_string_equal(g.country_code, "");
    a = ip("127.1.2.3");
    assert_true(geo_db_lookup(db, &a, &g));
    assert_int_equal(g.asn, 64511);
    assert_string_equal(g.organization, "IPinfo");
    assert_string_equal(g.country_code, "NZ");
    assert_string_equal(g.prefix, "127.1.0.0/16"); /* the record's own */
    assert_string_equal(g.prefix_entity, "E");
    assert_string_equal(g.prefix_name, "N");
    a = ip("2001:db8::7");
    assert_true(geo_db_lookup(db, &a, &g));
    assert_int_equal(g.asn, 64512); /* "AS64512" */
    assert_string_equal(g.prefix, "2001:db8::/32");
    a = ip("10.0.0.1");
    assert_false(geo_db_lookup(db, &a, &g));
    geo_db_close(db);
}

static void open_errors_name_the_file(void **state)
{
    (void)state;
    struct err e = {{0}};
    assert_null(geo_db_open("/nonexistent/x.mmdb", &e));
    assert_non_null(strstr(e.msg, "/nonexistent/x.mmdb"));
    assert_non_null(strstr(e.msg, "No such file"));
    assert_null(geo_db_open(QK_SOURCE_DIR "/fuzz/corpus/mmdb_lookup/garbage", &e));
    assert_non_null(strstr(e.msg, "garbage"));
}

static void classify_interns_and_caches(void **state)
{
    (void)state;
    struct geo_stats *st = calloc(1, sizeof(*st));
    struct geo_source src;
    geo_source_init(&src);
    struct addr a = ip("127.0.0.1"), b = ip("127.0.9.9"), c = ip("127.1.0.1"),
                none = ip("10.0.0.1");
    assert_int_equal(geo_classify(st, &src, &a), 0); /* no database */
    struct err e = {{0}};
    geo_source_swap(&src, geo_db_open(DB, &e));
    uint16_t ga = geo_classify(st, &src, &a);
    assert_int_equal(ga, 1);
    assert_int_equal(geo_classify(st, &src, &b), ga); /* same network: same label set */
    uint16_t gc = geo_classify(st, &src, &c);
    assert_int_equal(gc, 2);
    assert_int_equal(geo_classify(st, &src, &none), 0);
    assert_int_equal(atomic_load(&st->n), 3);
    assert_int_equal(st->info[gc].asn, 64511);
    assert_int_equal(geo_client(st, &a), ga); /* for drops before a session */
    assert_int_equal(geo_client(st, &none), 0);
    /* a swap makes cached answers stale: the next session looks up again */
    geo_source_swap(&src, NULL);
    assert_int_equal(geo_classify(st, &src, &a), 0);
    geo_source_swap(&src, geo_db_open(DB, &e));
    assert_int_equal(geo_classify(st, &src, &a), ga); /* same labels: same index */
    geo_source_swap(&src, NULL);
    free(st);
}

static void drop_table_counts_by_text_direction_and_labels(void **state)
{
    (void)state;
    struct geo_stats *st = calloc(1, sizeof(*st));
    static const char reason[] = "no endpoints";
    assert_true(geo_count_drop(st, reason, GEO_DROP_PLAIN, 0, 1));
    assert_true(geo_count_drop(st, reason, GEO_DROP_PLAIN, 0, 1));
    assert_true(geo_count_drop(st, reason, GEO_DROP_PLAIN, 1, 1));
    assert_true(geo_count_drop(st, reason, GEO_DROP_PLAIN, 0, 2));
    uint64_t same = 0, slots = 0;
    for (size_t i = 0; i < GEO_DROP_SLOTS; i++) {
        if (!atomic_load(&st->drops[i].text))
            continue;
        slots++;
        if (st->drops[i].dir == 0 && st->drops[i].geo == 1)
            same = st->drops[i].n;
    }
    assert_int_equal(slots, 3);
    assert_int_equal(same, 2);
    /* full: the caller counts the rest unlabelled */
    bool refused = false;
    for (uint16_t g = 3; g < 3 + 2 * GEO_DROP_SLOTS && !refused; g++)
        refused = !geo_count_drop(st, reason, GEO_DROP_PLAIN, 0, g);
    assert_true(refused);
    free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lookups_read_both_styles),
        cmocka_unit_test(open_errors_name_the_file),
        cmocka_unit_test(classify_interns_and_caches),
        cmocka_unit_test(drop_table_counts_by_text_direction_and_labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
