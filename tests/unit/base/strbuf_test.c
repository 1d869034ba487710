/* base/strbuf.c: growth, the failure latch, and JSON string literals (quotes, backslash,
 * control characters, invalid UTF-8 -> U+FFFD, valid multi-byte UTF-8 kept). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/strbuf.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FFFD "\xef\xbf\xbd"

/* ---- helpers ------------------------------------------------------------------------------ */

static void expect_json_n(const char *in, size_t n, const char *want)
{
    /* copy the result out and free before asserting, so a failure leaks nothing */
    static char got[4096];
    struct strbuf b = {0};
    strbuf_json_string(&b, in, n);
    bool failed = b.failed, terminated = b.buf && b.buf[b.len] == '\0';
    size_t len = b.len;
    assert_true(len < sizeof(got));
    if (b.buf)
        memcpy(got, b.buf, len);
    got[len] = '\0';
    strbuf_deinit(&b);
    assert_false(failed);
    assert_true(terminated);
    if (len != strlen(want) || memcmp(got, want, len) != 0)
        fail_msg("JSON of %zu input bytes: got [%s] (%zu bytes), want [%s] (%zu bytes)", n, got,
                 len, want, strlen(want));
}

static void expect_json(const char *in, const char *want)
{
    expect_json_n(in, strlen(in), want);
}

/* Control character c must come out as "\u00XX" or, for the five with a short form, that
 * form. */
static void expect_control(unsigned char c)
{
    char in[3] = {'a', (char)c, 'b'};
    char got[32];
    struct strbuf b = {0};
    strbuf_json_string(&b, in, 3);
    snprintf(got, sizeof(got), "%s", b.buf ? b.buf : "");
    strbuf_deinit(&b);
    char want_long[16], want_short[16] = "";
    snprintf(want_long, sizeof(want_long), "\"a\\u%04xb\"", c);
    const char *shorts = "\b\f\n\r\t", *letters = "bfnrt";
    const char *s = c ? memchr(shorts, c, 5) : NULL;
    if (s)
        snprintf(want_short, sizeof(want_short), "\"a\\%cb\"", letters[s - shorts]);
    if (strcmp(got, want_long) != 0 && strcmp(got, want_short) != 0)
        fail_msg("control 0x%02x escaped as [%s]", c, got);
}

/* ---- growth ------------------------------------------------------------------------------- */

static void zero_initialised_buffer(void **state)
{
    struct strbuf b = {0};
    assert_null(b.buf);
    assert_int_equal(b.len, 0);
    strbuf_append(&b, "", 0);
    assert_false(b.failed);
    assert_int_equal(b.len, 0);
    strbuf_printf(&b, "%s=%d", "x", 42);
    assert_string_equal(b.buf, "x=42");
    assert_int_equal(b.len, 4);
    strbuf_deinit(&b);
    assert_null(b.buf);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_false(b.failed);

    struct strbuf c;
    memset(&c, 0x5a, sizeof(c));
    strbuf_init(&c);
    assert_null(c.buf);
    assert_int_equal(c.len, 0);
    assert_false(c.failed);
    strbuf_deinit(&c);
}

static void grows_byte_by_byte(void **state)
{
    struct strbuf b = {0};
    for (size_t i = 0; i < 100000; i++) {
        char ch = (char)('a' + i % 26);
        strbuf_append(&b, &ch, 1);
        assert_int_equal(b.len, i + 1);
        assert_true(b.cap > b.len);
        assert_int_equal(b.buf[b.len], '\0');
    }
    assert_false(b.failed);
    for (size_t i = 0; i < 100000; i++)
        if (b.buf[i] != (char)('a' + i % 26))
            fail_msg("byte %zu is %c", i, b.buf[i]);
    strbuf_deinit(&b);
}

static void grows_by_large_printf_and_append(void **state)
{
    size_t big = 300000;
    char *s = malloc(big + 1);
    assert_non_null(s);
    memset(s, 'q', big);
    s[big] = '\0';
    struct strbuf b = {0};
    strbuf_printf(&b, "<%s>", "start");
    strbuf_printf(&b, "%s", s); /* one printf far past the first capacity */
    strbuf_append(&b, s, big);  /* and one append */
    strbuf_printf(&b, "<%d>", -7);
    assert_false(b.failed);
    assert_int_equal(b.len, 7 + 2 * big + 4);
    assert_memory_equal(b.buf, "<start>", 7);
    assert_memory_equal(b.buf + 7, s, big);
    assert_memory_equal(b.buf + 7 + big, s, big);
    assert_string_equal(b.buf + 7 + 2 * big, "<-7>");
    assert_int_equal(strlen(b.buf), b.len);
    strbuf_deinit(&b);
    free(s);
}

static void append_keeps_embedded_nul(void **state)
{
    struct strbuf b = {0};
    strbuf_append(&b, "a\0b", 3);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.buf, "a\0b", 4);
    strbuf_deinit(&b);
}

static void failed_latch_ignores_appends(void **state)
{
    struct strbuf b = {0};
    strbuf_printf(&b, "kept");
    b.failed = true; /* as after an allocation failure */
    strbuf_append(&b, "lost", 4);
    strbuf_printf(&b, "%s", "lost too");
    strbuf_json_string(&b, "x", 1);
    assert_true(b.failed);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.buf, "kept");
    strbuf_deinit(&b);
    assert_false(b.failed);
}

/* ---- JSON strings ------------------------------------------------------------------------- */

static void json_plain_and_empty(void **state)
{
    expect_json("", "\"\"");
    expect_json("hello world", "\"hello world\"");
    expect_json("/slash/ is fine", "\"/slash/ is fine\"");
    expect_json("\x7f", "\"\x7f\""); /* DEL is not a JSON control character */
}

static void json_quotes_and_backslash(void **state)
{
    expect_json("say \"hi\"", "\"say \\\"hi\\\"\"");
    expect_json("C:\\dir\\", "\"C:\\\\dir\\\\\"");
    expect_json("\\\"", "\"\\\\\\\"\"");
}

static void json_control_characters(void **state)
{
    for (unsigned c = 0; c < 0x20; c++)
        expect_control((unsigned char)c);
    expect_json_n("\0", 1, "\"\\u0000\"");
    expect_json("\x01\x1f", "\"\\u0001\\u001f\"");
}

static void json_valid_utf8_kept(void **state)
{
    expect_json("caf\xc3\xa9", "\"caf\xc3\xa9\"");                           /* U+00E9 */
    expect_json("\xc2\x80", "\"\xc2\x80\"");                                 /* U+0080 */
    expect_json("\xdf\xbf", "\"\xdf\xbf\"");                                 /* U+07FF */
    expect_json("\xe0\xa0\x80", "\"\xe0\xa0\x80\"");                         /* U+0800 */
    expect_json("\xe4\xb8\xad\xe6\x96\x87", "\"\xe4\xb8\xad\xe6\x96\x87\""); /* 中文 */
    expect_json("\xed\x9f\xbf", "\"\xed\x9f\xbf\"");                         /* U+D7FF */
    expect_json("\xee\x80\x80", "\"\xee\x80\x80\"");                         /* U+E000 */
    expect_json("\xef\xbf\xbf", "\"\xef\xbf\xbf\"");                         /* U+FFFF */
    expect_json("\xf0\x90\x80\x80", "\"\xf0\x90\x80\x80\"");                 /* U+10000 */
    expect_json("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\"");                 /* U+1F600 */
    expect_json("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");                 /* U+10FFFF */
    expect_json(FFFD, "\"" FFFD "\"");                                       /* U+FFFD itself */
}

static void json_invalid_bytes_become_fffd(void **state)
{
    expect_json("\x80", "\"" FFFD "\""); /* lone continuation byte */
    expect_json("a\xbf"
                "b",
                "\"a" FFFD "b\"");
    expect_json("\xff", "\"" FFFD "\"");
    expect_json("\xfe\xff", "\"" FFFD FFFD "\"");
    expect_json("\xf5\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD "\""); /* lead > F4 */
    expect_json("\xc0\xaf", "\"" FFFD FFFD "\"");                   /* overlong '/' */
    expect_json("\xc1\xbf", "\"" FFFD FFFD "\"");
    expect_json("\xc3", "\"" FFFD "\"");                   /* truncated at the end */
    expect_json("\xc3(", "\"" FFFD "(\"");                 /* bad continuation */
    expect_json("x\xe4\xb8", "\"x" FFFD FFFD "\"");        /* truncated 3-byte */
    expect_json("\xf0\x9f\x98", "\"" FFFD FFFD FFFD "\""); /* truncated 4-byte */
    expect_json("\xe4\xb8\"", "\"" FFFD FFFD "\\\"\"");    /* quote after a cut sequence */
    /* invalid then valid: the valid character survives */
    expect_json("\x80\xc3\xa9", "\"" FFFD "\xc3\xa9\"");
}

static void json_invalid_code_points_become_fffd(void **state)
{
    /* Sequences with valid lead/continuation shapes that are still not UTF-8 (RFC 3629
     * section 4): overlong 3- and 4-byte forms, UTF-16 surrogates, beyond U+10FFFF. None may
     * reach a JSON document raw; each byte becomes U+FFFD. All cases are checked before
     * failing, so the message lists every one that passed through. */
    static const struct {
        const char *in, *what;
    } cases[] = {
        {"\xe0\x80\x80", "overlong NUL (E0 80 80)"},
        {"\xe0\x9f\xbf", "overlong U+07FF (E0 9F BF)"},
        {"\xed\xa0\x80", "surrogate U+D800 (ED A0 80)"},
        {"\xed\xbf\xbf", "surrogate U+DFFF (ED BF BF)"},
        {"\xf0\x80\x80\x80", "overlong 4-byte (F0 80 80 80)"},
        {"\xf0\x8f\xbf\xbf", "overlong U+FFFF (F0 8F BF BF)"},
        {"\xf4\x90\x80\x80", "U+110000 (F4 90 80 80)"},
    };
    char bad[1024] = "";
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].in);
        char want[64] = "\"";
        for (size_t k = 0; k < n; k++)
            strcat(want, FFFD);
        strcat(want, "\"");
        struct strbuf b = {0};
        strbuf_json_string(&b, cases[i].in, n);
        bool ok = b.buf && strcmp(b.buf, want) == 0;
        strbuf_deinit(&b);
        if (!ok) {
            strcat(bad, "\n  ");
            strcat(bad, cases[i].what);
        }
    }
    if (bad[0])
        fail_msg("invalid UTF-8 copied into the JSON string instead of U+FFFD:%s", bad);
}

static void json_appends_to_existing_text(void **state)
{
    struct strbuf b = {0};
    strbuf_printf(&b, "{");
    strbuf_json_string(&b, "k", 1);
    strbuf_printf(&b, ":");
    strbuf_json_string(&b, "v\"\n", 3);
    strbuf_printf(&b, "}");
    assert_true(strcmp(b.buf, "{\"k\":\"v\\\"\\u000a\"}") == 0 ||
                strcmp(b.buf, "{\"k\":\"v\\\"\\n\"}") == 0);
    strbuf_deinit(&b);
}

static void json_long_string_grows(void **state)
{
    size_t n = 50000;
    char *s = malloc(n);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        s[i] = (i % 3 == 0) ? '"' : 'x';
    struct strbuf b = {0};
    strbuf_json_string(&b, s, n);
    assert_false(b.failed);
    size_t quotes = (n + 2) / 3;
    assert_int_equal(b.len, 2 + n + quotes);
    assert_int_equal(b.buf[0], '"');
    assert_int_equal(b.buf[b.len - 1], '"');
    assert_memory_equal(b.buf + 1, "\\\"xx\\\"xx", 8);
    strbuf_deinit(&b);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(zero_initialised_buffer),
        cmocka_unit_test(grows_byte_by_byte),
        cmocka_unit_test(grows_by_large_printf_and_append),
        cmocka_unit_test(append_keeps_embedded_nul),
        cmocka_unit_test(failed_latch_ignores_appends),
        cmocka_unit_test(json_plain_and_empty),
        cmocka_unit_test(json_quotes_and_backslash),
        cmocka_unit_test(json_control_characters),
        cmocka_unit_test(json_valid_utf8_kept),
        cmocka_unit_test(json_invalid_bytes_become_fffd),
        cmocka_unit_test(json_invalid_code_points_become_fffd),
        cmocka_unit_test(json_appends_to_existing_text),
        cmocka_unit_test(json_long_string_grows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
