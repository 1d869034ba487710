/* Compress (spec filters.md §3): Snappy *framing* format (stream identifier, data chunks with
 * masked CRC-32C) around libsnappy raw blocks, in either direction. Works in the worker's
 * spare buffer and copies the result back; never allocates per packet, never logs. */
#include "base/err.h"
#include "base/metrics.h"
#include "config/node.h"
#include "filters/chain.h"
#include "filters/filter.h"

#include <errno.h>
#include <pthread.h>
#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>

enum compress_action {
    ACTION_DO_NOTHING = 0,
    ACTION_COMPRESS,
    ACTION_DECOMPRESS,
};

/* Filled by from_yaml; nothing inside is heap-owned. */
struct compress_args {
    int on_read;  /* enum compress_action */
    int on_write; /* enum compress_action */
};

enum { DIR_READ = 0, DIR_WRITE = 1, N_DIRS = 2 };

#define COMPRESS_NAME "quilkin.filters.compress.v1alpha1.Compress"

/* Runtime, built by create(): the spec §3 counters (quilkin_filter_int_counter), indexed by
 * direction and counted only on success. The series belong to the metrics registry, so they
 * survive a reload that rebuilds this filter; each worker bumps its own shard. */
struct compress_state {
    struct metric_counter *compressed[N_DIRS];   /* compressed_bytes_total{event} */
    struct metric_counter *decompressed[N_DIRS]; /* decompressed_bytes_total{event} */
};

#define MAX_UDP_PAYLOAD 65507u /* largest IPv4 UDP payload: a bigger result cannot be sent */
#define MAX_BLOCK 65536u       /* snap's MAX_BLOCK_SIZE: uncompressed bytes per data chunk */
#define MAX_CHUNK_LEN 76490u   /* snap: max_compress_len(MAX_BLOCK), its input buffer size */
#define CHUNK_HDR 8u           /* type, 3-byte length, 4-byte masked CRC */

static const uint8_t stream_ident[10] = {0xff, 0x06, 0x00, 0x00, 's', 'N', 'a', 'P', 'p', 'Y'};

/* ---- CRC-32C (Castagnoli, reflected 0x82F63B78), slicing-by-8 -------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc32c(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

/* Framing format: CRCs are masked so that CRCs of CRCs are not trivially zero. */
static uint32_t masked_crc(const uint8_t *p, size_t n)
{
    uint32_t c = crc32c(p, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static void put_le24(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    put_le24(p, v);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le24(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}

static uint32_t get_le32(const uint8_t *p)
{
    return get_le24(p) | (uint32_t)p[3] << 24;
}

/* ---- error texts: the snap crate's messages (spec §1.3), as static strings --------------- */

/* snap's Error::StreamHeader{byte}, one string per byte value (drop reasons are static). */
#define HDR_MSG(n)                                                                                 \
    "snappy: corrupt input (expected stream header but got unexpected chunk type byte " #n ")"
#define HDR10(p)                                                                                   \
    HDR_MSG(p##0), HDR_MSG(p##1), HDR_MSG(p##2), HDR_MSG(p##3), HDR_MSG(p##4), HDR_MSG(p##5),      \
        HDR_MSG(p##6), HDR_MSG(p##7), HDR_MSG(p##8), HDR_MSG(p##9)
static const char *const msg_stream_header[] = {
    HDR_MSG(0),   HDR_MSG(1),   HDR_MSG(2),   HDR_MSG(3),   HDR_MSG(4),   HDR_MSG(5), HDR_MSG(6),
    HDR_MSG(7),   HDR_MSG(8),   HDR_MSG(9),   HDR10(1),     HDR10(2),     HDR10(3),   HDR10(4),
    HDR10(5),     HDR10(6),     HDR10(7),     HDR10(8),     HDR10(9),     HDR10(10),  HDR10(11),
    HDR10(12),    HDR10(13),    HDR10(14),    HDR10(15),    HDR10(16),    HDR10(17),  HDR10(18),
    HDR10(19),    HDR10(20),    HDR10(21),    HDR10(22),    HDR10(23),    HDR10(24),  HDR_MSG(250),
    HDR_MSG(251), HDR_MSG(252), HDR_MSG(253), HDR_MSG(254), HDR_MSG(255),
};
_Static_assert(sizeof(msg_stream_header) / sizeof(msg_stream_header[0]) == 256, "0..255");

/* snap's Error::UnsupportedChunkType{byte}, for the reserved unskippable types 0x02-0x7f. */
#define TYPE_MSG(n) "snappy: corrupt input (unsupported chunk type: " #n ")"
#define TYPE10(p)                                                                                  \
    TYPE_MSG(p##0), TYPE_MSG(p##1), TYPE_MSG(p##2), TYPE_MSG(p##3), TYPE_MSG(p##4),                \
        TYPE_MSG(p##5), TYPE_MSG(p##6), TYPE_MSG(p##7), TYPE_MSG(p##8), TYPE_MSG(p##9)
static const char *const msg_chunk_type[] = {
    TYPE_MSG(0),   TYPE_MSG(1),   TYPE_MSG(2),   TYPE_MSG(3),   TYPE_MSG(4),   TYPE_MSG(5),
    TYPE_MSG(6),   TYPE_MSG(7),   TYPE_MSG(8),   TYPE_MSG(9),   TYPE10(1),     TYPE10(2),
    TYPE10(3),     TYPE10(4),     TYPE10(5),     TYPE10(6),     TYPE10(7),     TYPE10(8),
    TYPE10(9),     TYPE10(10),    TYPE10(11),    TYPE_MSG(120), TYPE_MSG(121), TYPE_MSG(122),
    TYPE_MSG(123), TYPE_MSG(124), TYPE_MSG(125), TYPE_MSG(126), TYPE_MSG(127),
};
_Static_assert(sizeof(msg_chunk_type) / sizeof(msg_chunk_type[0]) == 128, "0..127");

/* Where snap's message carries numbers we keep its wording without them. */
#define MSG_TRUNCATED "failed to fill whole buffer" /* Rust io::ErrorKind::UnexpectedEof */
#define MSG_CHUNK_LEN "snappy: corrupt input (unsupported chunk length)"
#define MSG_IDENT_LEN "snappy: corrupt input (invalid stream header length)"
#define MSG_IDENT_BODY "snappy: corrupt input (expected sNaPpY stream header)"
#define MSG_CHECKSUM "snappy: corrupt input (bad checksum)"
#define MSG_BLOCK_HEADER "snappy: corrupt input (invalid header)"
#define MSG_BLOCK "snappy: corrupt input (invalid compressed block)"
#define MSG_TOO_BIG_OUT "snappy: decompressed data larger than the maximum datagram"
#define MSG_TOO_BIG_IN "snappy: compressed data larger than the maximum datagram"
#define MSG_NO_ROOM "snappy: packet does not fit the compression buffer"

/* ---- config -------------------------------------------------------------------------------- */

static const char *const action_names[] = {"DO_NOTHING", "COMPRESS", "DECOMPRESS"};

static int get_action(const struct node *n, const char *key, int *out, struct err *e)
{
    const struct node *v = node_map_get(n, key);
    if (!v)
        return node_error(n, e, "missing field `%s`", key);
    return node_get_enum(v, action_names, 3, out, e);
}

static int compress_from_yaml(void *args, const struct node *n, struct err *e)
{
    struct compress_args *a = args;
    /* spec filters.md §1.2: unknown keys are ignored */
    int rc = node_check_map(n, NULL, 0, e);
    if (rc < 0)
        return rc;
    const struct node *mode = node_map_get(n, "mode");
    if (mode && mode->kind != NODE_NULL) {
        static const char *const modes[] = {"SNAPPY"};
        int m;
        if ((rc = node_get_enum(mode, modes, 1, &m, e)) < 0)
            return rc;
    }
    if ((rc = get_action(n, "on_read", &a->on_read, e)) < 0)
        return rc;
    return get_action(n, "on_write", &a->on_write, e);
}

static void compress_destroy(struct filter *f)
{
    free(f->state); /* the series stay in the registry */
    f->state = NULL;
}

static int compress_create(struct filter *f, const struct filter_build *b, struct err *e)
{
    pthread_once(&crc_once, crc_init);
    struct compress_state *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    f->state = s;
    static const char *const events[N_DIRS] = {"read", "write"};
    for (int d = 0; d < N_DIRS; d++) {
        s->compressed[d] = filter_int_counter(
            COMPRESS_NAME, "compressed_bytes_total",
            "Total number of compressed bytes either received or sent.", events[d]);
        s->decompressed[d] = filter_int_counter(
            COMPRESS_NAME, "decompressed_bytes_total",
            "Total number of decompressed bytes either received or sent.", events[d]);
        if (!s->compressed[d] || !s->decompressed[d]) {
            compress_destroy(f);
            return -ENOMEM;
        }
    }
    return 0;
}

/* ---- the codec ----------------------------------------------------------------------------- */

/* Counts one successful run: `packed` framed bytes and `plain` raw bytes (spec §3 table). */
static void count(const struct compress_state *s, const struct pkt_ctx *c, int dir, uint64_t packed,
                  uint64_t plain)
{
    metric_add(s->compressed[dir], c->worker, packed);
    metric_add(s->decompressed[dir], c->worker, plain);
}

static enum verdict drop(struct pkt_ctx *c, const char *reason)
{
    c->drop_reason = reason;
    return VERDICT_DROP;
}

/* Frames in[0..n) into c->spare: the stream identifier, then one data chunk per 64 KiB,
 * each compressed only when that saves more than an eighth (as snap does). Empty -> empty. */
static enum verdict compress_pkt(struct pkt_ctx *c, const struct compress_state *s, int dir)
{
    const uint8_t *in = pkt_data(&c->pkt);
    uint32_t n = c->pkt.len;
    if (n == 0)
        return VERDICT_PASS;
    uint8_t *out = c->spare;
    size_t cap = c->spare_cap, used = sizeof(stream_ident);
    if (cap < used)
        return drop(c, MSG_NO_ROOM);
    memcpy(out, stream_ident, sizeof(stream_ident));
    for (uint32_t pos = 0; pos < n;) {
        uint32_t m = n - pos < MAX_BLOCK ? n - pos : MAX_BLOCK;
        if (cap - used < CHUNK_HDR + snappy_max_compressed_length(m))
            return drop(c, MSG_NO_ROOM);
        uint8_t *hdr = out + used, *block = hdr + CHUNK_HDR;
        size_t blen = cap - used - CHUNK_HDR;
        uint8_t type = 0x00;
        if (snappy_compress((const char *)in + pos, m, (char *)block, &blen) != SNAPPY_OK ||
            blen >= m - m / 8) {
            type = 0x01;
            memcpy(block, in + pos, m);
            blen = m;
        }
        hdr[0] = type;
        put_le24(hdr + 1, (uint32_t)(4 + blen));
        put_le32(hdr + 4, masked_crc(in + pos, m));
        used += CHUNK_HDR + blen;
        pos += m;
    }
    if (used > MAX_UDP_PAYLOAD)
        return drop(c, MSG_TOO_BIG_IN);
    if (!pkt_set(&c->pkt, out, (uint32_t)used))
        return drop(c, MSG_NO_ROOM);
    count(s, c, dir, used, n);
    return VERDICT_PASS;
}

/* Decodes a framed stream into c->spare, following snap's FrameDecoder step by step (so the
 * first failing check, hence the message, is the same): the first chunk must be a stream
 * identifier; identifiers may repeat; 0xfe and 0x80-0xfd are skipped; 0x02-0x7f fail; every
 * data chunk's CRC is checked. Empty input -> empty output. */
static enum verdict decompress_pkt(struct pkt_ctx *c, const struct compress_state *s, int dir)
{
    const uint8_t *in = pkt_data(&c->pkt);
    const uint32_t n = c->pkt.len;
    uint8_t *out = c->spare;
    size_t limit = c->spare_cap < MAX_UDP_PAYLOAD ? c->spare_cap : MAX_UDP_PAYLOAD;
    size_t used = 0;
    bool seen_ident = false;
    for (uint32_t pos = 0; pos < n;) {
        if (n - pos < 4)
            return drop(c, MSG_TRUNCATED); /* a partial chunk header */
        uint8_t type = in[pos];
        if (!seen_ident && type != 0xff)
            return drop(c, msg_stream_header[type]);
        uint32_t len = get_le24(in + pos + 1);
        if (len > MAX_CHUNK_LEN)
            return drop(c, MSG_CHUNK_LEN);
        pos += 4;
        if (type >= 0x02 && type <= 0x7f)
            return drop(c, msg_chunk_type[type]);
        if (type == 0xff) {
            if (len != sizeof(stream_ident) - 4)
                return drop(c, MSG_IDENT_LEN);
            if (n - pos < len)
                return drop(c, MSG_TRUNCATED);
            if (memcmp(in + pos, stream_ident + 4, len) != 0)
                return drop(c, MSG_IDENT_BODY);
            seen_ident = true;
            pos += len;
            continue;
        }
        if (type >= 0x80) { /* 0xfe padding and 0x80-0xfd reserved skippable chunks */
            if (n - pos < len)
                return drop(c, MSG_TRUNCATED);
            pos += len;
            continue;
        }
        /* data chunk: masked CRC-32C of the uncompressed bytes, then the data */
        if (len < 4)
            return drop(c, MSG_CHUNK_LEN);
        if (n - pos < 4)
            return drop(c, MSG_TRUNCATED);
        uint32_t want_crc = get_le32(in + pos);
        pos += 4;
        uint32_t dlen = len - 4;
        if (type == 0x01 && dlen > MAX_BLOCK)
            return drop(c, MSG_CHUNK_LEN);
        if (n - pos < dlen)
            return drop(c, MSG_TRUNCATED);
        const uint8_t *data = in + pos;
        pos += dlen;
        size_t got;
        if (type == 0x01) {
            if (dlen > limit - used)
                return drop(c, MSG_TOO_BIG_OUT);
            memcpy(out + used, data, dlen);
            got = dlen;
        } else {
            if (snappy_uncompressed_length((const char *)data, dlen, &got) != SNAPPY_OK)
                return drop(c, MSG_BLOCK_HEADER);
            if (got > MAX_BLOCK)
                return drop(c, MSG_CHUNK_LEN);
            if (got > limit - used)
                return drop(c, MSG_TOO_BIG_OUT);
            size_t out_len = got;
            if (snappy_uncompress((const char *)data, dlen, (char *)out + used, &out_len) !=
                    SNAPPY_OK ||
                out_len != got)
                return drop(c, MSG_BLOCK);
        }
        if (masked_crc(out + used, got) != want_crc)
            return drop(c, MSG_CHECKSUM);
        used += got;
    }
    if (!pkt_set(&c->pkt, out, (uint32_t)used))
        return drop(c, MSG_TOO_BIG_OUT);
    count(s, c, dir, n, used);
    return VERDICT_PASS;
}

static enum verdict run(const struct filter *f, struct pkt_ctx *c, int action, int dir)
{
    const struct compress_state *s = f->state;
    switch (action) {
    case ACTION_COMPRESS:
        return compress_pkt(c, s, dir);
    case ACTION_DECOMPRESS:
        return decompress_pkt(c, s, dir);
    default:
        return VERDICT_PASS;
    }
}

static enum verdict compress_read(const struct filter *f, struct pkt_ctx *c)
{
    return run(f, c, ((const struct compress_args *)f->args)->on_read, DIR_READ);
}

static enum verdict compress_write(const struct filter *f, struct pkt_ctx *c)
{
    return run(f, c, ((const struct compress_args *)f->args)->on_write, DIR_WRITE);
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char compress_schema[] =
    "description: Compresses or decompresses packets with the Snappy framing format.\n"
    "type: object\n"
    "required: [on_read, on_write]\n"
    "properties:\n"
    "  mode:\n"
    "    enum: [SNAPPY, null]\n"
    "    default: SNAPPY\n"
    "  on_read:\n"
    "    description: What to do with packets from clients.\n"
    "    $ref: '#/definitions/Action'\n"
    "  on_write:\n"
    "    description: What to do with packets from servers.\n"
    "    $ref: '#/definitions/Action'\n"
    "definitions:\n"
    "  Action:\n"
    "    enum: [DO_NOTHING, COMPRESS, DECOMPRESS]\n";

const struct filter_ops compress_filter = {
    .name = COMPRESS_NAME,
    .args_size = sizeof(struct compress_args),
    .need = CFG_REQUIRED,
    .schema = compress_schema,
    .from_yaml = compress_from_yaml,
    .create = compress_create,
    .read = compress_read,
    .write = compress_write,
    .destroy = compress_destroy,
};
