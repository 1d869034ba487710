/* base/b64.c: RFC 4648 vectors and the strict rules tokens need (spec config.md §4.2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/b64.h"

#include <errno.h>
#include <string.h>

static int decode(const char *in, uint8_t *out, size_t *out_len)
{
    return b64_decode(in, strlen(in), out, out_len);
}

static void assert_rejects(const char *in)
{
    uint8_t out[64];
    size_t len = 12345;
    if (decode(in, out, &len) != -EINVAL)
        fail_msg("b64_decode accepted \"%s\"", in);
}

static void rfc4648_vectors(void **state)
{
    static const struct {
        const char *plain, *enc;
    } v[] = {
        {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t out[16];
        size_t len = 99;
        assert_int_equal(decode(v[i].enc, out, &len), 0);
        assert_int_equal(len, strlen(v[i].plain));
        assert_memory_equal(out, v[i].plain, len);
        char enc[16];
        assert_int_equal(b64_encoded_len(strlen(v[i].plain)), strlen(v[i].enc));
        b64_encode((const uint8_t *)v[i].plain, strlen(v[i].plain), enc);
        assert_string_equal(enc, v[i].enc);
    }
}

static void token_vectors(void **state)
{
    uint8_t out[16];
    size_t len;
    assert_int_equal(decode("AQID", out, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(out, "\x01\x02\x03", 3);
    assert_int_equal(decode("bXktdG9rZW4=", out, &len), 0);
    assert_int_equal(len, 8);
    assert_memory_equal(out, "my-token", 8);
    assert_int_equal(decode("MXg3aWp5Ng==", out, &len), 0);
    assert_int_equal(len, 7);
    assert_memory_equal(out, "1x7ijy6", 7);
    assert_int_equal(decode("//79/A==", out, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(out, "\xff\xfe\xfd\xfc", 4);
    assert_int_equal(decode("+/+/", out, &len), 0);
    assert_memory_equal(out, "\xfb\xff\xbf", 3);
}

static void all_bytes_roundtrip(void **state)
{
    uint8_t in[256], out[256 + 3];
    char enc[b64_encoded_len(256) + 1];
    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    for (size_t n = 0; n <= 256; n++) {
        b64_encode(in + (256 - n), n, enc);
        assert_int_equal(strlen(enc), b64_encoded_len(n));
        size_t len = 0;
        assert_true(b64_decoded_cap(strlen(enc)) >= n);
        assert_int_equal(b64_decode(enc, strlen(enc), out, &len), 0);
        assert_int_equal(len, n);
        assert_memory_equal(out, in + (256 - n), n);
    }
}

static void rejects_non_canonical_bits(void **state)
{
    assert_rejects("Zh==");     /* Zg== is canonical for "f" */
    assert_rejects("Zm9=");     /* Zm8= is canonical for "fo" */
    assert_rejects("AR==");
    assert_rejects("AQJ=");
    assert_rejects("Zm9vYh==");
}

static void rejects_bad_padding(void **state)
{
    assert_rejects("Zg");       /* padding is required */
    assert_rejects("Zm8");
    assert_rejects("Zg=");
    assert_rejects("Zg===");
    assert_rejects("Z===");
    assert_rejects("====");
    assert_rejects("=Zg=");
    assert_rejects("Zg=a");
    assert_rejects("Zg==Zg=="); /* padding only at the very end */
    assert_rejects("Zm8=Zm9v");
    assert_rejects("A");
}

static void rejects_bad_chars(void **state)
{
    assert_rejects("Zm9v!A==");
    assert_rejects("Zm 9");
    assert_rejects("Zm9v\n");
    assert_rejects("Zm9v\nYg==");
    assert_rejects("-_-_");     /* URL-safe alphabet is not standard base64 */
    assert_rejects("Zm9\x80");
    uint8_t out[8];
    size_t len;
    assert_int_equal(b64_decode("Zm\0v", 4, out, &len), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc4648_vectors),
        cmocka_unit_test(token_vectors),
        cmocka_unit_test(all_bytes_roundtrip),
        cmocka_unit_test(rejects_non_canonical_bits),
        cmocka_unit_test(rejects_bad_padding),
        cmocka_unit_test(rejects_bad_chars),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
