/* Compress filter (tests src/filters/compress.c): config decoding, the spec's Snappy framing
 * vectors (filters.md §3), round trips of many sizes, every valid framed-stream shape the
 * decoder must accept, and garbage that must be dropped without crashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/arena.h"
#include "base/err.h"
#include "base/metrics.h"
#include "config/node.h"
#include "filters/chain.h"
#include "filters/filter.h"

#include "../support/filter_fixture.h"

#include <stdlib.h>
#include <string.h>

#define NAME "quilkin.filters.compress.v1alpha1.Compress"
#define HEADROOM 512
#define BUF_CAP (512 + 65536 + 16384) /* the worker's packet and spare buffer size */
#define MAX_UDP 65507

/* The spec §3 series as compress.c registers them (labels in name order). */
#define SERIES(label, help, event)                                                                 \
    "event=\"" event "\",help=\"" help "\",id=\"" NAME "\",label=\"" label "\""
#define HELP_C "Total number of compressed bytes either received or sent."
#define HELP_D "Total number of decompressed bytes either received or sent."

struct env {
    struct filter f;
    struct keytab keys;
    struct arena scratch;
    uint8_t *buf, *spare;
    struct pkt_ctx c;
};

static int build(struct env *t, const char *yaml, struct err *e)
{
    return build_filter_yaml(&t->f, NAME, yaml, &t->keys, e);
}

static int setup(void **state)
{
    struct env *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->buf = malloc(BUF_CAP);
    t->spare = malloc(BUF_CAP);
    assert_non_null(t->buf);
    assert_non_null(t->spare);
    assert_int_equal(arena_init(&t->scratch, 64 * 1024), 0);
    metrics_init(2);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct env *t = *state;
    filter_deinit(&t->f);
    keytab_deinit(&t->keys);
    arena_deinit(&t->scratch);
    free(t->buf);
    free(t->spare);
    free(t);
    metrics_reset_for_tests(); /* after the filter: nothing holds a series any more */
    return 0;
}

/* Loads data into the packet (at HEADROOM) and resets the context as the worker does. */
static struct pkt_ctx *load(struct env *t, const void *data, size_t len)
{
    assert_true(len <= BUF_CAP - HEADROOM);
    load_packet(&t->c, t->buf, BUF_CAP, HEADROOM, data, len, &t->scratch);
    t->c.spare = t->spare;
    t->c.spare_cap = BUF_CAP;
    t->c.worker = 1;
    return &t->c;
}

static enum verdict rd(struct env *t, const void *data, size_t len)
{
    struct pkt_ctx *c = load(t, data, len);
    return t->f.ops->read(&t->f, c);
}

static enum verdict wr(struct env *t, const void *data, size_t len)
{
    struct pkt_ctx *c = load(t, data, len);
    return t->f.ops->write(&t->f, c);
}

static void assert_pkt(struct env *t, const void *want, size_t len)
{
    assert_int_equal(t->c.pkt.len, len);
    if (len)
        assert_memory_equal(pkt_data(&t->c.pkt), want, len);
}

/* compressed_bytes_total (packed) or decompressed_bytes_total for event dir (0 read, 1
 * write), on worker w's shard; the series must exist once a Compress was built. */
static uint64_t counted(bool packed, int dir, unsigned w)
{
    static const char *const series[2][2] = {
        {SERIES("decompressed_bytes_total", HELP_D, "read"),
         SERIES("decompressed_bytes_total", HELP_D, "write")},
        {SERIES("compressed_bytes_total", HELP_C, "read"),
         SERIES("compressed_bytes_total", HELP_C, "write")},
    };
    struct metric_counter *c =
        metrics_find_counter("quilkin_filter_int_counter", series[packed][dir]);
    assert_non_null(c);
    return metric_counter_shard(c, w);
}

/* Independent bitwise CRC-32C for building test streams. */
static uint32_t test_masked_crc(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    c = ~c;
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static const uint8_t IDENT[10] = {0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59};

/* Appends a chunk: type, 3-byte LE length, body. Returns the new length. */
static size_t put_chunk(uint8_t *out, size_t at, uint8_t type, const uint8_t *body, size_t len)
{
    out[at] = type;
    out[at + 1] = (uint8_t)len;
    out[at + 2] = (uint8_t)(len >> 8);
    out[at + 3] = (uint8_t)(len >> 16);
    if (len)
        memcpy(out + at + 4, body, len);
    return at + 4 + len;
}

/* Appends an uncompressed (0x01) data chunk with its masked CRC. */
static size_t put_raw(uint8_t *out, size_t at, const uint8_t *data, size_t len)
{
    uint8_t *body = malloc(len + 4);
    assert_non_null(body);
    uint32_t crc = test_masked_crc(data, len);
    for (int i = 0; i < 4; i++)
        body[i] = (uint8_t)(crc >> (8 * i));
    memcpy(body + 4, data, len);
    at = put_chunk(out, at, 0x01, body, len + 4);
    free(body);
    return at;
}

/* ---- config ------------------------------------------------------------------------------ */

static void test_config(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build(t, "{on_read: COMPRESS, on_write: DECOMPRESS}", &e), 0);
    filter_deinit(&t->f);
    assert_int_equal(build(t, "{mode: SNAPPY, on_read: DO_NOTHING, on_write: COMPRESS, x: 1}", &e),
                     0);
    filter_deinit(&t->f);

    assert_int_not_equal(build(t, NULL, &e), 0);
    assert_string_equal(e.msg, "filter `" NAME "` requires configuration, but none provided");
    assert_int_not_equal(build(t, "{on_write: COMPRESS}", &e), 0);
    assert_non_null(strstr(e.msg, "missing field `on_read`"));
    assert_non_null(strstr(e.msg, "Deserialization failed: filter `" NAME "`"));
    assert_int_not_equal(build(t, "{on_read: COMPRESS}", &e), 0);
    assert_non_null(strstr(e.msg, "missing field `on_write`"));
    assert_int_not_equal(build(t, "{on_read: compress, on_write: COMPRESS}", &e), 0);
    assert_non_null(strstr(e.msg, "unknown variant `compress`"));
    assert_int_not_equal(build(t, "{mode: LZ4, on_read: COMPRESS, on_write: COMPRESS}", &e), 0);
    assert_non_null(strstr(e.msg, "unknown variant `LZ4`, expected one of `SNAPPY`"));
    assert_int_not_equal(build(t, "[COMPRESS]", &e), 0);
    assert_non_null(strstr(e.msg, "expected a map"));
}

/* ---- spec vectors ------------------------------------------------------------------------- */

static const uint8_t HELLO_FRAMED[] = {0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50,
                                       0x70, 0x59, 0x01, 0x09, 0x00, 0x00, 0xbb, 0x1f,
                                       0x1c, 0x19, 0x68, 0x65, 0x6c, 0x6c, 0x6f};
static const uint8_t A16_COMPRESSED[] = {0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50,
                                         0x70, 0x59, 0x00, 0x0a, 0x00, 0x00, 0xa2, 0x78,
                                         0xe9, 0x6e, 0x10, 0x00, 0x61, 0x3a, 0x01, 0x00};

static void test_vectors_encode(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build(t, "{on_read: COMPRESS, on_write: DO_NOTHING}", &e), 0);

    assert_int_equal(rd(t, "", 0), VERDICT_PASS);
    assert_pkt(t, "", 0); /* no stream identifier for an empty datagram */

    assert_int_equal(rd(t, "hello", 5), VERDICT_PASS);
    assert_pkt(t, HELLO_FRAMED, sizeof(HELLO_FRAMED));

    uint8_t want[10 + 8 + 16] = {0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70,
                                 0x59, 0x01, 0x14, 0x00, 0x00, 0xa2, 0x78, 0xe9, 0x6e};
    memset(want + 18, 'a', 16);
    assert_int_equal(rd(t, "aaaaaaaaaaaaaaaa", 16), VERDICT_PASS);
    assert_pkt(t, want, sizeof(want));

    /* counters: COMPRESS adds output to compressed, input to decompressed (read = 0) */
    assert_int_equal(counted(true, 0, 1), sizeof(HELLO_FRAMED) + sizeof(want));
    assert_int_equal(counted(false, 0, 1), 5 + 16);
    assert_int_equal(counted(true, 1, 1), 0);
    assert_int_equal(counted(true, 0, 0), 0);

    /* write is DO_NOTHING */
    assert_int_equal(wr(t, "hello", 5), VERDICT_PASS);
    assert_pkt(t, "hello", 5);
}

/* A reload rebuilds the filter: its counters are registry series and keep counting. */
static void test_counters_survive_rebuild(void **state)
{
    struct env *t = *state;
    struct err e;
    for (uint64_t round = 1; round <= 3; round++) {
        filter_deinit(&t->f);
        assert_int_equal(build(t, "{on_read: COMPRESS, on_write: DECOMPRESS}", &e), 0);
        assert_int_equal(rd(t, "hello", 5), VERDICT_PASS);
        assert_int_equal(counted(true, 0, 1), round * sizeof(HELLO_FRAMED));
        assert_int_equal(counted(false, 0, 1), round * 5);
        assert_int_equal(counted(true, 1, 1), 0);
    }
}

static void test_vectors_decode(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build(t, "{on_read: DO_NOTHING, on_write: DECOMPRESS}", &e), 0);

    assert_int_equal(wr(t, HELLO_FRAMED, sizeof(HELLO_FRAMED)), VERDICT_PASS);
    assert_pkt(t, "hello", 5);
    assert_int_equal(wr(t, A16_COMPRESSED, sizeof(A16_COMPRESSED)), VERDICT_PASS);
    assert_pkt(t, "aaaaaaaaaaaaaaaa", 16);
    assert_int_equal(counted(true, 1, 1), sizeof(HELLO_FRAMED) + sizeof(A16_COMPRESSED));
    assert_int_equal(counted(false, 1, 1), 5 + 16);

    assert_int_equal(wr(t, "", 0), VERDICT_PASS);
    assert_pkt(t, "", 0);
    assert_int_equal(wr(t, IDENT, sizeof(IDENT)), VERDICT_PASS);
    assert_pkt(t, "", 0);

    assert_int_equal(wr(t, "hello", 5), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "snappy: corrupt input (expected stream header but "
                                          "got unexpected chunk type byte 104)");
    uint8_t zeros[4] = {0};
    assert_int_equal(wr(t, zeros, 4), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "snappy: corrupt input (expected stream header but "
                                          "got unexpected chunk type byte 0)");
    uint8_t x[4] = {0xfe, 0, 0, 0};
    assert_int_equal(wr(t, x, 4), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "snappy: corrupt input (expected stream header but "
                                          "got unexpected chunk type byte 254)");

    /* read is DO_NOTHING: garbage passes untouched */
    assert_int_equal(rd(t, "hello", 5), VERDICT_PASS);
    assert_pkt(t, "hello", 5);
}

/* ---- round trips -------------------------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint8_t next_byte(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint8_t)rng;
}

static void round_trip(struct env *t, const uint8_t *data, size_t n)
{
    assert_int_equal(rd(t, data, n), VERDICT_PASS);
    size_t framed_len = t->c.pkt.len;
    uint8_t *framed = malloc(framed_len + 1);
    assert_non_null(framed);
    memcpy(framed, pkt_data(&t->c.pkt), framed_len);
    if (n) {
        assert_true(framed_len >= 18);
        assert_memory_equal(framed, IDENT, sizeof(IDENT));
    }
    assert_int_equal(wr(t, framed, framed_len), VERDICT_PASS);
    assert_pkt(t, data, n);
    free(framed);
}

static void test_round_trips(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build(t, "{on_read: COMPRESS, on_write: DECOMPRESS}", &e), 0);
    uint8_t *rnd = malloc(MAX_UDP);
    uint8_t *txt = malloc(MAX_UDP);
    assert_non_null(rnd);
    assert_non_null(txt);
    static const char words[] = "the quick brown fox jumps over the lazy dog ";
    for (size_t i = 0; i < MAX_UDP; i++) {
        rnd[i] = next_byte();
        txt[i] = (uint8_t)words[(i * 7 + i / 61) % (sizeof(words) - 1)];
    }
    static const size_t sizes[] = {0,    1,    2,    7,     8,     15,    16,    17,
                                   18,   31,   64,   100,   255,   256,   1000,  1400,
                                   1500, 4096, 9000, 16384, 32768, 50000, 65000, 65489};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        round_trip(t, rnd, sizes[i]);
        round_trip(t, txt, sizes[i]);
    }
    for (size_t n = 1; n < 600; n += 13) {
        round_trip(t, rnd + n, n);
        round_trip(t, txt + n, n);
    }
    /* compressible data of the largest datagram size */
    round_trip(t, txt, MAX_UDP);
    memset(txt, 0, MAX_UDP);
    round_trip(t, txt, MAX_UDP);
    assert_true(t->c.pkt.len == MAX_UDP);

    /* incompressible data: framing adds 18 bytes, so beyond 65,489 it cannot be sent */
    assert_int_equal(rd(t, rnd, 65490), VERDICT_DROP);
    assert_non_null(t->c.drop_reason);
    assert_non_null(strstr(t->c.drop_reason, "snappy"));
    assert_int_equal(rd(t, rnd, MAX_UDP), VERDICT_DROP);
    free(rnd);
    free(txt);
}

/* Compressible input gets a type 0x00 chunk whose length and CRC fields are consistent. */
static void test_compressed_choice(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build(t, "{on_read: COMPRESS, on_write: DECOMPRESS}", &e), 0);
    uint8_t zeros[1000] = {0};
    assert_int_equal(rd(t, zeros, sizeof(zeros)), VERDICT_PASS);
    assert_int_equal(pkt_data(&t->c.pkt)[10], 0x00); /* compressible -> type 0x00 */
    assert_true(t->c.pkt.len < 100);
    const uint8_t *p = pkt_data(&t->c.pkt);
    uint32_t len = p[11] | p[12] << 8 | p[13] << 16;
    assert_int_equal(len + 14, t->c.pkt.len);
    uint32_t crc = p[14] | p[15] << 8 | p[16] << 16 | (uint32_t)p[17] << 24;
    assert_int_equal(crc, test_masked_crc(zeros, sizeof(zeros)));
}

/* ---- decoder acceptance ------------------------------------------------------------------- */

static void test_decoder_accepts_all_shapes(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build(t, "{on_read: DECOMPRESS, on_write: DO_NOTHING}", &e), 0);
    uint8_t s[512];
    size_t n = 0;
    static const uint8_t pad[7] = {0};
    static const uint8_t skip[5] = {1, 2, 3, 4, 5};
    memcpy(s, IDENT, sizeof(IDENT));
    n = sizeof(IDENT);
    n = put_chunk(s, n, 0xfe, pad, sizeof(pad));   /* padding */
    n = put_raw(s, n, (const uint8_t *)"hel", 3);  /* uncompressed */
    n = put_chunk(s, n, 0x80, skip, sizeof(skip)); /* reserved skippable */
    n = put_chunk(s, n, 0xfd, NULL, 0);            /* empty skippable */
    memcpy(s + n, IDENT, sizeof(IDENT));           /* repeated identifier */
    n += sizeof(IDENT);
    n = put_raw(s, n, (const uint8_t *)"lo ", 3);
    memcpy(s + n, A16_COMPRESSED + 10, sizeof(A16_COMPRESSED) - 10); /* compressed chunk */
    n += sizeof(A16_COMPRESSED) - 10;
    n = put_raw(s, n, (const uint8_t *)"", 0); /* empty data chunk */
    n = put_chunk(s, n, 0xfe, NULL, 0);
    assert_int_equal(rd(t, s, n), VERDICT_PASS);
    assert_pkt(t, "hello aaaaaaaaaaaaaaaa", 22);

    /* only an identifier and padding -> empty */
    n = put_chunk(s, sizeof(IDENT), 0xfe, pad, 3);
    assert_int_equal(rd(t, s, n), VERDICT_PASS);
    assert_pkt(t, "", 0);
}

static void test_decoder_errors(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build(t, "{on_read: DECOMPRESS, on_write: DECOMPRESS}", &e), 0);
    uint8_t s[256];
    size_t n;

    /* unskippable reserved types 0x02-0x7f */
    for (unsigned ty = 0x02; ty <= 0x7f; ty++) {
        memcpy(s, HELLO_FRAMED, sizeof(HELLO_FRAMED));
        s[10] = (uint8_t)ty;
        assert_int_equal(rd(t, s, sizeof(HELLO_FRAMED)), VERDICT_DROP);
        assert_non_null(
            strstr(t->c.drop_reason, "snappy: corrupt input (unsupported chunk type: "));
    }
    memcpy(s, HELLO_FRAMED, sizeof(HELLO_FRAMED));
    s[10] = 0x02;
    assert_int_equal(rd(t, s, sizeof(HELLO_FRAMED)), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "snappy: corrupt input (unsupported chunk type: 2)");
    s[10] = 0x7f;
    assert_int_equal(rd(t, s, sizeof(HELLO_FRAMED)), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "snappy: corrupt input (unsupported chunk type: 127)");

    /* every CRC byte flipped, in both data chunk kinds */
    for (int i = 14; i < 18; i++) {
        memcpy(s, HELLO_FRAMED, sizeof(HELLO_FRAMED));
        s[i] ^= 0x01;
        assert_int_equal(rd(t, s, sizeof(HELLO_FRAMED)), VERDICT_DROP);
        assert_string_equal(t->c.drop_reason, "snappy: corrupt input (bad checksum)");
        memcpy(s, A16_COMPRESSED, sizeof(A16_COMPRESSED));
        s[i] ^= 0x80;
        assert_int_equal(wr(t, s, sizeof(A16_COMPRESSED)), VERDICT_DROP);
        assert_string_equal(t->c.drop_reason, "snappy: corrupt input (bad checksum)");
    }
    /* a payload byte changed: CRC mismatch */
    memcpy(s, HELLO_FRAMED, sizeof(HELLO_FRAMED));
    s[20] = 'L';
    assert_int_equal(rd(t, s, sizeof(HELLO_FRAMED)), VERDICT_DROP);

    /* truncation at every length of valid streams (0 and the identifier alone are valid) */
    for (size_t len = 1; len < sizeof(HELLO_FRAMED); len++) {
        enum verdict v = rd(t, HELLO_FRAMED, len);
        if (len == sizeof(IDENT))
            assert_int_equal(v, VERDICT_PASS);
        else
            assert_int_equal(v, VERDICT_DROP);
    }
    for (size_t len = 1; len < sizeof(A16_COMPRESSED); len++) {
        enum verdict v = rd(t, A16_COMPRESSED, len);
        assert_int_equal(v, len == sizeof(IDENT) ? VERDICT_PASS : VERDICT_DROP);
    }
    assert_int_equal(rd(t, HELLO_FRAMED, 3), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "failed to fill whole buffer");
    assert_int_equal(rd(t, HELLO_FRAMED, 20), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "failed to fill whole buffer");

    /* bad identifier: wrong length, wrong body */
    memcpy(s, IDENT, sizeof(IDENT));
    s[1] = 5;
    assert_int_equal(rd(t, s, 9), VERDICT_DROP); /* snap checks the length before reading */
    assert_string_equal(t->c.drop_reason, "snappy: corrupt input (invalid stream header length)");
    memcpy(s, IDENT, sizeof(IDENT));
    s[9] = 'y';
    assert_int_equal(rd(t, s, sizeof(IDENT)), VERDICT_DROP);
    assert_non_null(strstr(t->c.drop_reason, "sNaPpY"));

    /* data chunk shorter than its CRC */
    n = put_chunk(s, 0, 0xff, IDENT + 4, 6);
    n = put_chunk(s, n, 0x01, (const uint8_t *)"ab", 2);
    assert_int_equal(rd(t, s, n), VERDICT_DROP);
    assert_string_equal(t->c.drop_reason, "snappy: corrupt input (unsupported chunk length)");
    assert_int_equal(rd(t, s, n - 2), VERDICT_DROP); /* even with the body missing */
    assert_string_equal(t->c.drop_reason, "snappy: corrupt input (unsupported chunk length)");
    /* chunk length beyond snap's limit */
    memcpy(s, IDENT, sizeof(IDENT));
    s[10] = 0xfe;
    s[11] = 0xff;
    s[12] = 0xff;
    s[13] = 0xff;
    assert_int_equal(rd(t, s, 14), VERDICT_DROP);
    assert_non_null(strstr(t->c.drop_reason, "chunk length"));

    /* bad raw block: an invalid block with a correct CRC of nothing, and a lying length */
    memcpy(s, A16_COMPRESSED, sizeof(A16_COMPRESSED));
    s[18] = 0x11; /* claims 17 bytes, produces 16 */
    assert_int_equal(rd(t, s, sizeof(A16_COMPRESSED)), VERDICT_DROP);
    memcpy(s, A16_COMPRESSED, sizeof(A16_COMPRESSED));
    s[21] = 0xff; /* copy offset/len garbage */
    assert_int_equal(rd(t, s, sizeof(A16_COMPRESSED)), VERDICT_DROP);
    memcpy(s, IDENT, sizeof(IDENT));
    static const uint8_t bad_varint[] = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    n = put_chunk(s, sizeof(IDENT), 0x00, bad_varint, sizeof(bad_varint));
    assert_int_equal(rd(t, s, n), VERDICT_DROP);
    assert_non_null(strstr(t->c.drop_reason, "snappy: corrupt input"));

    /* only the two identifier-only streams (10 bytes each) counted; failures never do */
    assert_int_equal(counted(false, 0, 1), 0);
    assert_int_equal(counted(true, 0, 1), 20);
}

/* Decompressed data larger than a datagram is dropped, not overflowed. */
static void test_decoder_output_limit(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build(t, "{on_read: DECOMPRESS, on_write: DECOMPRESS}", &e), 0);
    uint8_t *data = calloc(1, 70000);
    uint8_t *s = malloc(BUF_CAP);
    assert_non_null(data);
    assert_non_null(s);
    memcpy(s, IDENT, sizeof(IDENT));
    size_t n = put_raw(s, sizeof(IDENT), data, 40000);
    n = put_raw(s, n, data, 25507);
    assert_int_equal(rd(t, s, n), VERDICT_PASS); /* exactly 65,507 */
    assert_int_equal(t->c.pkt.len, MAX_UDP);
    n = put_raw(s, sizeof(IDENT), data, 40000);
    n = put_raw(s, n, data, 25508);
    assert_int_equal(rd(t, s, n), VERDICT_DROP);
    assert_non_null(strstr(t->c.drop_reason, "larger than"));
    /* an uncompressed chunk above 64 KiB is refused */
    n = put_raw(s, sizeof(IDENT), data, 65537);
    assert_int_equal(rd(t, s, n), VERDICT_DROP);
    free(data);
    free(s);
}

static void test_garbage(void **state)
{
    struct env *t = *state;
    struct err e;
    assert_int_equal(build(t, "{on_read: DECOMPRESS, on_write: DECOMPRESS}", &e), 0);
    uint8_t s[600];
    for (int round = 0; round < 3000; round++) {
        size_t n = next_byte() | (size_t)(next_byte() & 1) << 8;
        for (size_t i = 0; i < n; i++)
            s[i] = next_byte();
        if (round & 1) /* keep a valid identifier so the chunk parser is exercised */
            memcpy(s, IDENT, n < sizeof(IDENT) ? n : sizeof(IDENT));
        enum verdict v = rd(t, s, n);
        if (v == VERDICT_DROP)
            assert_non_null(t->c.drop_reason);
        else
            assert_true(t->c.pkt.len <= MAX_UDP);
    }
    /* a valid multi-chunk stream mutated one byte at a time never crashes */
    uint8_t base[128];
    memcpy(base, IDENT, sizeof(IDENT));
    size_t n = put_raw(base, sizeof(IDENT), (const uint8_t *)"abc", 3);
    memcpy(base + n, A16_COMPRESSED + 10, sizeof(A16_COMPRESSED) - 10);
    n += sizeof(A16_COMPRESSED) - 10;
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(s, base, n);
            s[i] ^= (uint8_t)(1u << bit);
            if (rd(t, s, n) == VERDICT_DROP)
                assert_non_null(t->c.drop_reason);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vectors_encode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vectors_decode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counters_survive_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compressed_choice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decoder_accepts_all_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decoder_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decoder_output_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
