/* Log records (tests src/base/log.c): JSON in tracing-subscriber's shape with the fields in a
 * `fields` object next to the message, plain key=value, escaping, and truncation of huge
 * records that still leaves a well-formed line. stdout is redirected into a pipe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/log.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char out[16384];

/* Runs fn with stdout going into a pipe; out receives what it wrote. */
static void capture(void (*fn)(void))
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(p[1], STDOUT_FILENO);
    fn();
    dup2(saved, STDOUT_FILENO);
    close(saved);
    close(p[1]);
    ssize_t n = read(p[0], out, sizeof(out) - 1);
    close(p[0]);
    out[n > 0 ? n : 0] = '\0';
}

static void emit_reload(void)
{
    LOG_INFO_F("config",
               LOG_FIELDS(LF_STR("path", "/etc/q \"a\".yaml"), LF_U64("endpoints", 3),
                          LF_I64("delta", -2), LF_BOOL("kept", true), LF_F64("ratio", 0.5),
                          LF_STR("none", NULL)),
               "config reloaded");
}

static void test_json_fields_object(void **state)
{
    (void)state;
    log_init(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    capture(emit_reload);
    const char *body = strstr(out, "\"level\":\"INFO\",\"fields\":{");
    assert_non_null(body);
    assert_non_null(strstr(out, "{\"timestamp\":\""));
    assert_non_null(strstr(out, "\"fields\":{\"message\":\"config reloaded\","
                                "\"path\":\"/etc/q \\\"a\\\".yaml\",\"endpoints\":3,"
                                "\"delta\":-2,\"kept\":true,\"ratio\":0.5,\"none\":null},"
                                "\"target\":\"quilkin::config\"}\n"));
}

static void test_plain_key_values(void **state)
{
    (void)state;
    log_init(LOG_LEVEL_INFO, LOG_FORMAT_PLAIN);
    capture(emit_reload);
    assert_non_null(strstr(out, "  INFO config: config reloaded path=\"/etc/q \\\"a\\\".yaml\" "
                                "endpoints=3 delta=-2 kept=true ratio=0.5 none=null\n"));
}

static void emit_plain_message(void)
{
    LOG_WARN("proxy", "plain %d", 7);
}

static void test_message_only_records(void **state)
{
    (void)state;
    log_init(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    capture(emit_plain_message);
    assert_non_null(strstr(out, "\"level\":\"WARN\",\"fields\":{\"message\":\"plain 7\"},"
                                "\"target\":\"quilkin::proxy\"}\n"));
}

static void emit_debug(void)
{
    LOG_DEBUG_F("proxy", LOG_FIELDS(LF_U64("n", 1)), "hidden");
}

static void test_level_filters_before_formatting(void **state)
{
    (void)state;
    log_init(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    assert_false(log_enabled(LOG_LEVEL_DEBUG));
    capture(emit_debug);
    assert_string_equal(out, "");
    log_init(LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    assert_true(log_enabled(LOG_LEVEL_DEBUG));
    capture(emit_debug);
    assert_non_null(strstr(out, "\"message\":\"hidden\",\"n\":1}"));
}

static char huge[8192];

static void emit_huge(void)
{
    LOG_INFO_F("proxy", LOG_FIELDS(LF_STR("a", huge), LF_STR("b", huge), LF_U64("n", 5)), "%s",
               huge);
}

static void test_huge_records_stay_one_closed_line(void **state)
{
    (void)state;
    memset(huge, '"', sizeof(huge) - 1); /* each byte doubles when escaped */
    for (int fmt = 0; fmt < 2; fmt++) {
        log_init(LOG_LEVEL_INFO, fmt ? LOG_FORMAT_JSON : LOG_FORMAT_PLAIN);
        capture(emit_huge);
        size_t n = strlen(out);
        assert_true(n > 1000 && n < 4096);
        assert_int_equal(out[n - 1], '\n');
        assert_null(memchr(out, '\n', n - 1)); /* one line */
        if (fmt)
            assert_non_null(strstr(out, "},\"target\":\"quilkin::proxy\"}\n"));
    }
}

static int reader_fd;
static char *reader_buf;
static size_t reader_len;

static void *reader(void *arg)
{
    (void)arg;
    size_t cap = 8 << 20;
    reader_buf = malloc(cap);
    ssize_t n;
    while ((n = read(reader_fd, reader_buf + reader_len, cap - reader_len - 1)) > 0)
        reader_len += (size_t)n;
    reader_buf[reader_len] = '\0';
    return NULL;
}

/* Issue 9 #7: with the writer thread, a caller never blocks on stdout: here nobody reads
 * the pipe until 5,000 records were emitted (the pipe holds ~64 KiB, the queue 256 lines);
 * what did not fit is dropped, counted and reported, everything else arrives in order. */
static void test_queue_never_blocks_and_counts_drops(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(p[1], STDOUT_FILENO);
    close(p[1]);
    log_init(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    assert_int_equal(log_writer_start(), 0);
    for (int i = 0; i < 5000; i++)
        LOG_INFO_F("test", LOG_FIELDS(LF_U64("seq", i)), "a record long enough to fill a pipe "
                   "quickly: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    uint64_t dropped = log_dropped_lines();
    assert_true(dropped > 0 && dropped < 5000);
    pthread_t th;
    reader_fd = p[0];
    pthread_create(&th, NULL, reader, NULL);
    log_writer_stop();
    dup2(saved, STDOUT_FILENO); /* closes the last write end: the reader sees EOF */
    close(saved);
    pthread_join(th, NULL);
    close(p[0]);
    size_t records = 0;
    unsigned long reported = 0;
    long last_seq = -1;
    bool in_order = true;
    for (char *l = reader_buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        char *end = strchr(l, '\n');
        char *q = strstr(l, "\"seq\":");
        char *d = strstr(l, "\"dropped_lines\":");
        if (q && q < end) {
            long v = strtol(q + 6, NULL, 10);
            in_order = in_order && v > last_seq;
            last_seq = v;
            records++;
        } else if (d && d < end) {
            reported += strtoul(d + 16, NULL, 10); /* the writer's own reports */
        }
    }
    assert_true(in_order);
    assert_int_equal(records, 5000 - dropped);
    assert_int_equal(reported, dropped); /* every drop reported, in one or more records */
    free(reader_buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_fields_object),
        cmocka_unit_test(test_plain_key_values),
        cmocka_unit_test(test_message_only_records),
        cmocka_unit_test(test_level_filters_before_formatting),
        cmocka_unit_test(test_huge_records_stay_one_closed_line),
        cmocka_unit_test(test_queue_never_blocks_and_counts_drops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
