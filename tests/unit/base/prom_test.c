/* base/prom.c: Prometheus text format 0.0.4 lines (spec admin.md §4): headers, samples,
 * cumulative histograms, shortest round-trip float text and label-value escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/prom.h"
#include "base/strbuf.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

/* The text prom_sample writes for value v, without the "m " prefix and the newline. */
static char *sample_text(double v)
{
    static char out[128];
    struct strbuf b = {0};
    prom_sample(&b, "m", "", v);
    assert_false(b.failed);
    assert_non_null(b.buf);
    assert_true(b.len >= 4);
    assert_memory_equal(b.buf, "m ", 2);
    assert_int_equal(b.buf[b.len - 1], '\n');
    size_t n = b.len - 3;
    assert_true(n < sizeof(out));
    memcpy(out, b.buf + 2, n);
    out[n] = '\0';
    strbuf_deinit(&b);
    return out;
}

static void expect_sample(double v, const char *want)
{
    const char *got = sample_text(v);
    if (strcmp(got, want) != 0)
        fail_msg("value %.17g printed as \"%s\", expected \"%s\"", v, got, want);
    /* whatever the text, it must read back as exactly the same double */
    assert_true(strtod(got, NULL) == v);
}

/* ---- headers and samples ------------------------------------------------------------------ */

static void header_lines(void **state)
{
    struct strbuf b = {0};
    prom_header(&b, "quilkin_packets_total", "counter", "Total number of packets");
    prom_header(&b, "quilkin_session_active", "gauge", "Number of active sessions");
    assert_string_equal(b.buf, "# HELP quilkin_packets_total Total number of packets\n"
                               "# TYPE quilkin_packets_total counter\n"
                               "# HELP quilkin_session_active Number of active sessions\n"
                               "# TYPE quilkin_session_active gauge\n");
    strbuf_deinit(&b);
}

static void samples_with_and_without_labels(void **state)
{
    struct strbuf b = {0};
    prom_sample_u64(&b, "quilkin_packets_total", "asn=\"\",event=\"read\",ip_prefix=\"\"", 12);
    prom_sample_u64(&b, "quilkin_session_total", "", 0);
    prom_sample_u64(&b, "big", "", UINT64_MAX);
    prom_sample(&b, "g", "kind=\"x\"", 2.5);
    prom_sample(&b, "g", "", -3);
    assert_string_equal(b.buf, "quilkin_packets_total{asn=\"\",event=\"read\",ip_prefix=\"\"} 12\n"
                               "quilkin_session_total 0\n"
                               "big 18446744073709551615\n"
                               "g{kind=\"x\"} 2.5\n"
                               "g -3\n");
    assert_int_equal(b.len, strlen(b.buf));
    strbuf_deinit(&b);
}

/* ---- float text --------------------------------------------------------------------------- */

static void shortest_float_text(void **state)
{
    expect_sample(0.00025, "0.00025"); /* not 0.00025000000000000001 */
    expect_sample(0.0005, "0.0005");
    expect_sample(1.024, "1.024");
    expect_sample(1.1920928955078125, "1.1920928955078125"); /* needs all 17 digits */
    expect_sample(0.476837158203125, "0.476837158203125");
    expect_sample(0.0048828125, "0.0048828125");
    expect_sample(0.000125, "0.000125");
    expect_sample(0.1, "0.1");
    expect_sample(0.1 + 0.2, "0.30000000000000004");
    expect_sample(1.0 / 3.0, "0.3333333333333333");
    expect_sample(0, "0");
    expect_sample(1, "1");
    expect_sample(-2.5, "-2.5");
    expect_sample(3600, "3600");
    expect_sample(123456789, "123456789");
    expect_sample(9007199254740993.0, "9007199254740992"); /* 2^53 + 1 rounds to 2^53 */
    expect_sample(1e-9, "1e-09");
    expect_sample(DBL_MAX, "1.7976931348623157e+308");
}

static void float_text_round_trips(void **state)
{
    /* a spread of awkward values: every one must read back exactly */
    static const double v[] = {0.1,           0.2,       0.7,      1.1,      2.675,
                               1e-300,        5e-324,    1e300,    0.015625, 12345.678,
                               6.02214076e23, 299792458, 0.000001, 1e21};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        const char *t = sample_text(v[i]);
        if (strtod(t, NULL) != v[i])
            fail_msg("%.17g printed as \"%s\" does not read back", v[i], t);
        assert_true(strlen(t) <= 24);
    }
}

/* ---- histograms --------------------------------------------------------------------------- */

static void histogram_cumulative_with_labels(void **state)
{
    static const double bounds[] = {0.00025, 0.0005, 1.1920928955078125};
    static const uint64_t counts[] = {1, 0, 2, 3}; /* per bucket; the last is +Inf */
    struct strbuf b = {0};
    prom_histogram(&b, "h", "event=\"read\"", bounds, 3, counts, 0.5);
    assert_string_equal(b.buf, "h_bucket{event=\"read\",le=\"0.00025\"} 1\n"
                               "h_bucket{event=\"read\",le=\"0.0005\"} 1\n"
                               "h_bucket{event=\"read\",le=\"1.1920928955078125\"} 3\n"
                               "h_bucket{event=\"read\",le=\"+Inf\"} 6\n"
                               "h_sum{event=\"read\"} 0.5\n"
                               "h_count{event=\"read\"} 6\n");
    strbuf_deinit(&b);
}

static void histogram_without_labels(void **state)
{
    static const double bounds[] = {1, 5, 10, 25, 60, 300, 900, 1800, 3600};
    static const uint64_t counts[] = {0, 2, 0, 0, 1, 0, 0, 0, 0, 4};
    struct strbuf b = {0};
    prom_histogram(&b, "quilkin_session_duration_secs", "", bounds, 9, counts, 12345);
    assert_string_equal(b.buf, "quilkin_session_duration_secs_bucket{le=\"1\"} 0\n"
                               "quilkin_session_duration_secs_bucket{le=\"5\"} 2\n"
                               "quilkin_session_duration_secs_bucket{le=\"10\"} 2\n"
                               "quilkin_session_duration_secs_bucket{le=\"25\"} 2\n"
                               "quilkin_session_duration_secs_bucket{le=\"60\"} 3\n"
                               "quilkin_session_duration_secs_bucket{le=\"300\"} 3\n"
                               "quilkin_session_duration_secs_bucket{le=\"900\"} 3\n"
                               "quilkin_session_duration_secs_bucket{le=\"1800\"} 3\n"
                               "quilkin_session_duration_secs_bucket{le=\"3600\"} 3\n"
                               "quilkin_session_duration_secs_bucket{le=\"+Inf\"} 7\n"
                               "quilkin_session_duration_secs_sum 12345\n"
                               "quilkin_session_duration_secs_count 7\n");
    strbuf_deinit(&b);
}

static void histogram_empty_and_no_bounds(void **state)
{
    static const double bounds[] = {0.5};
    static const uint64_t zero[] = {0, 0};
    static const uint64_t only_inf[] = {9};
    struct strbuf b = {0};
    prom_histogram(&b, "e", "a=\"b\"", bounds, 1, zero, 0);
    prom_histogram(&b, "i", "", NULL, 0, only_inf, 0.25);
    assert_string_equal(b.buf, "e_bucket{a=\"b\",le=\"0.5\"} 0\n"
                               "e_bucket{a=\"b\",le=\"+Inf\"} 0\n"
                               "e_sum{a=\"b\"} 0\n"
                               "e_count{a=\"b\"} 0\n"
                               "i_bucket{le=\"+Inf\"} 9\n"
                               "i_sum 0.25\n"
                               "i_count 9\n");
    strbuf_deinit(&b);
}

static void histogram_spec_bounds_print_as_written(void **state)
{
    /* spec admin.md §4.4 filter timing buckets: every one exactly as the spec writes it */
    static const double bounds[] = {0.000125,          0.0003125,         0.00078125,
                                    0.001953125,       0.0048828125,      0.01220703125,
                                    0.030517578125,    0.0762939453125,   0.19073486328125,
                                    0.476837158203125, 1.1920928955078125};
    static const char *const text[] = {"0.000125",          "0.0003125",         "0.00078125",
                                       "0.001953125",       "0.0048828125",      "0.01220703125",
                                       "0.030517578125",    "0.0762939453125",   "0.19073486328125",
                                       "0.476837158203125", "1.1920928955078125"};
    uint64_t counts[12] = {0};
    struct strbuf b = {0};
    prom_histogram(&b, "f", "", bounds, 11, counts, 0);
    const char *p = b.buf;
    for (size_t i = 0; i < 11; i++) {
        char want[64];
        snprintf(want, sizeof(want), "f_bucket{le=\"%s\"} 0\n", text[i]);
        if (strncmp(p, want, strlen(want)) != 0)
            fail_msg("bucket %zu: got \"%.60s\", want \"%s\"", i, p, want);
        p += strlen(want);
    }
    assert_string_equal(p, "f_bucket{le=\"+Inf\"} 0\nf_sum 0\nf_count 0\n");
    strbuf_deinit(&b);
}

/* ---- label escaping ----------------------------------------------------------------------- */

static void escape_label_values(void **state)
{
    char out[128];
    prom_escape(out, sizeof(out), "plain text: ok");
    assert_string_equal(out, "plain text: ok");
    prom_escape(out, sizeof(out), "a\\b\"c\nd");
    assert_string_equal(out, "a\\\\b\\\"c\\nd");
    prom_escape(out, sizeof(out), "filter  error: \"quoted\"");
    assert_string_equal(out, "filter  error: \\\"quoted\\\"");
    prom_escape(out, sizeof(out), "");
    assert_string_equal(out, "");
    /* UTF-8 and tabs are not escaped */
    prom_escape(out, sizeof(out), "caf\xc3\xa9\t\xe4\xb8\xad");
    assert_string_equal(out, "caf\xc3\xa9\t\xe4\xb8\xad");
}

static void escape_truncates_inside_the_buffer(void **state)
{
    /* exact-size heap buffers so ASan sees any overrun; never half an escape sequence */
    for (size_t cap = 1; cap <= 12; cap++) {
        char *out = malloc(cap);
        assert_non_null(out);
        prom_escape(out, cap, "\"\\\n\"\\\n\"\\\n");
        size_t n = strlen(out);
        assert_true(n < cap);
        assert_int_equal(n % 2, 0);
        for (size_t i = 0; i < n; i += 2)
            assert_int_equal(out[i], '\\');
        free(out);
    }
}

static void escaped_labels_in_a_sample(void **state)
{
    char esc[256], labels[300];
    prom_escape(esc, sizeof(esc), "say \"hi\"\\\n");
    snprintf(labels, sizeof(labels), "source=\"%s\"", esc);
    struct strbuf b = {0};
    prom_sample_u64(&b, "d", labels, 3);
    assert_string_equal(b.buf, "d{source=\"say \\\"hi\\\"\\\\\\n\"} 3\n");
    strbuf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_lines),
        cmocka_unit_test(samples_with_and_without_labels),
        cmocka_unit_test(shortest_float_text),
        cmocka_unit_test(float_text_round_trips),
        cmocka_unit_test(histogram_cumulative_with_labels),
        cmocka_unit_test(histogram_without_labels),
        cmocka_unit_test(histogram_empty_and_no_bounds),
        cmocka_unit_test(histogram_spec_bounds_print_as_written),
        cmocka_unit_test(escape_label_values),
        cmocka_unit_test(escape_truncates_inside_the_buffer),
        cmocka_unit_test(escaped_labels_in_a_sample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
