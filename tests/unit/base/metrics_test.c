/* base/metrics.c: find-or-create by (name, labels), per-worker shards summed, the exact
 * Prometheus text of counters and histograms, label escaping, out-of-range workers, and two
 * threads writing their own slots concurrently. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/metrics.h"
#include "base/strbuf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static int setup(void **state)
{
    metrics_init(2);
    return 0;
}

static int teardown(void **state)
{
    metrics_reset_for_tests();
    return 0;
}

/* Renders the whole registry; the caller frees the result. */
static char *render(void)
{
    struct strbuf b = {0};
    metrics_render(&b);
    assert_false(b.failed);
    return b.buf ? b.buf : strdup("");
}

static void find_or_create(void **state)
{
    struct metric_counter *a = metrics_counter("m_total", "k=\"a\"", "help");
    struct metric_counter *b = metrics_counter("m_total", "k=\"b\"", "other help");
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(metrics_counter("m_total", "k=\"a\"", "help"), a);
    assert_ptr_equal(metrics_find_counter("m_total", "k=\"b\""), b);
    assert_null(metrics_find_counter("m_total", "k=\"c\""));
    assert_null(metrics_find_counter("nope", ""));

    static const double bounds[] = {1, 2};
    struct metric_histogram *h = metrics_histogram("h_seconds", "", "h", bounds, 2);
    assert_non_null(h);
    assert_ptr_equal(metrics_histogram("h_seconds", "", "h", bounds, 2), h);
    assert_ptr_equal(metrics_find_histogram("h_seconds", ""), h);
    /* one name, one type */
    assert_null(metrics_histogram("m_total", "k=\"a\"", "help", bounds, 2));
    assert_null(metrics_counter("h_seconds", "", "h"));
    assert_null(metrics_find_histogram("m_total", "k=\"a\""));
    assert_null(metrics_find_counter("h_seconds", ""));
}

static void shards_summed(void **state)
{
    struct metric_counter *c = metrics_counter("m_total", "", "help");
    metric_add(c, 0, 3);
    metric_add(c, 1, 4);
    metric_add(c, 1, 1);
    metric_add(c, 2, 100); /* beyond the 2 shards of metrics_init(2): ignored */
    metric_add(c, 1000, 100);
    assert_int_equal(metric_counter_shard(c, 0), 3);
    assert_int_equal(metric_counter_shard(c, 1), 5);
    assert_int_equal(metric_counter_shard(c, 2), 0);
    assert_int_equal(metric_counter_value(c), 8);

    static const double bounds[] = {0.5, 1};
    struct metric_histogram *h = metrics_histogram("h_seconds", "", "h", bounds, 2);
    metric_observe(h, 0, 0.25);
    metric_observe(h, 1, 0.5); /* le is inclusive */
    metric_observe(h, 1, 3);
    metric_observe(h, 7, 1); /* ignored */
    uint64_t counts[3];
    double sum = 0;
    assert_int_equal(metric_histogram_read(h, counts, &sum), 3);
    assert_int_equal(counts[0], 2);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 1);
    assert_true(sum == 3.75);

    /* the shard count is fixed per series at creation */
    metrics_init(4);
    struct metric_counter *d = metrics_counter("m_total", "x=\"1\"", "help");
    metric_add(d, 3, 2);
    metric_add(c, 3, 2);
    assert_int_equal(metric_counter_value(d), 2);
    assert_int_equal(metric_counter_value(c), 8);
}

static void render_exact(void **state)
{
    struct metric_counter *a = metrics_counter("m_total", "k=\"a\"", "Things counted");
    static const double bounds[] = {0.005, 0.01};
    struct metric_histogram *h = metrics_histogram("h_seconds", "f=\"x\"", "Time taken", bounds, 2);
    struct metric_counter *b = metrics_counter("m_total", "k=\"b\"", "ignored: first wins");
    struct metric_counter *z = metrics_counter("z", "", "no labels");
    metric_add(a, 0, 2);
    metric_add(a, 1, 3);
    metric_add(b, 1, 7);
    metric_observe(h, 0, 0.00390625); /* binary fractions: an exact sum */
    metric_observe(h, 1, 0.0078125);
    metric_observe(h, 1, 0.5);
    (void)z;
    char *text = render();
    assert_string_equal(text, "# HELP m_total Things counted\n"
                              "# TYPE m_total counter\n"
                              "m_total{k=\"a\"} 5\n"
                              "m_total{k=\"b\"} 7\n"
                              "# HELP h_seconds Time taken\n"
                              "# TYPE h_seconds histogram\n"
                              "h_seconds_bucket{f=\"x\",le=\"0.005\"} 1\n"
                              "h_seconds_bucket{f=\"x\",le=\"0.01\"} 2\n"
                              "h_seconds_bucket{f=\"x\",le=\"+Inf\"} 3\n"
                              "h_seconds_sum{f=\"x\"} 0.51171875\n"
                              "h_seconds_count{f=\"x\"} 3\n"
                              "# HELP z no labels\n"
                              "# TYPE z counter\n"
                              "z 0\n");
    free(text);

    metrics_reset_for_tests();
    text = render();
    assert_string_equal(text, "");
    free(text);
}

static void labels_escaped(void **state)
{
    char buf[128] = "";
    assert_true(metrics_label(buf, sizeof(buf), "event", "read"));
    assert_true(metrics_label(buf, sizeof(buf), "help", "say \"hi\"\\\nbye"));
    assert_string_equal(buf, "event=\"read\",help=\"say \\\"hi\\\"\\\\\\nbye\"");

    struct metric_counter *c = metrics_counter("m_total", buf, "h");
    metric_add(c, 0, 1);
    char *text = render();
    assert_string_equal(text, "# HELP m_total h\n# TYPE m_total counter\n"
                              "m_total{event=\"read\",help=\"say \\\"hi\\\"\\\\\\nbye\"} 1\n");
    free(text);

    /* too long for the buffer: refused, buffer unchanged */
    char small[16] = "a=\"b\"";
    assert_false(metrics_label(small, sizeof(small), "key", "0123456789"));
    assert_string_equal(small, "a=\"b\"");
    /* a value that fits only unescaped is refused too (worst case reserved) */
    char tight[12] = "";
    assert_true(metrics_label(tight, sizeof(tight), "k", "abc"));
    assert_string_equal(tight, "k=\"abc\"");
}

#define PER_THREAD 200000

struct writer {
    struct metric_counter *c;
    struct metric_histogram *h;
    unsigned worker;
};

static void *write_many(void *arg)
{
    struct writer *w = arg;
    for (unsigned i = 0; i < PER_THREAD; i++) {
        metric_add(w->c, w->worker, 1);
        metric_observe(w->h, w->worker, w->worker ? 2.0 : 0.5);
    }
    return NULL;
}

static void concurrent_writers(void **state)
{
    static const double bounds[] = {1};
    struct metric_counter *c = metrics_counter("m_total", "", "h");
    struct metric_histogram *h = metrics_histogram("h_seconds", "", "h", bounds, 1);
    struct writer w[2] = {{c, h, 0}, {c, h, 1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, write_many, &w[i]), 0);
    /* a scrape while they run sees a value in range */
    uint64_t mid = metric_counter_value(c);
    assert_true(mid <= 2 * PER_THREAD);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(metric_counter_value(c), 2 * PER_THREAD);
    assert_int_equal(metric_counter_shard(c, 0), PER_THREAD);
    uint64_t counts[2];
    double sum;
    assert_int_equal(metric_histogram_read(h, counts, &sum), 2 * PER_THREAD);
    assert_int_equal(counts[0], PER_THREAD);
    assert_int_equal(counts[1], PER_THREAD);
    assert_true(sum == 2.5 * PER_THREAD);
}

/* Series created before metrics_init (e.g. by a unit test that never calls it) get one
 * shard; worker 0 counts, others are ignored. */
static void default_one_shard(void **state)
{
    metrics_reset_for_tests(); /* back to the default */
    struct metric_counter *c = metrics_counter("m_total", "", "h");
    metric_add(c, 0, 1);
    metric_add(c, 1, 1);
    assert_int_equal(metric_counter_value(c), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(find_or_create, setup, teardown),
        cmocka_unit_test_setup_teardown(shards_summed, setup, teardown),
        cmocka_unit_test_setup_teardown(render_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(labels_escaped, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(default_one_shard, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
