/* QCMP codec; see codec.h. Big-endian integers, i64 nanosecond timestamps. */
#include "qcmp/codec.h"

#include <string.h>

static const uint8_t magic[4] = {'Q', 'L', 'K', 'N'};

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

enum qcmp_parse_result qcmp_parse(const uint8_t *buf, size_t len, struct qcmp_packet *out,
                                  const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    if (len < 4 || memcmp(buf, magic, 4) != 0)
        return QCMP_NOT_QCMP;
    if (len < 5)
        return *why = "missing version", QCMP_MALFORMED;
    if (buf[4] != 0)
        return *why = "unknown version", QCMP_MALFORMED;
    if (len < 6)
        return *why = "missing packet type", QCMP_MALFORMED;
    if (len < 8)
        return *why = "missing length", QCMP_MALFORMED;
    uint8_t type = buf[5];
    size_t plen = (size_t)buf[6] << 8 | buf[7];
    if (type > 1)
        return *why = "unknown command code", QCMP_MALFORMED;
    if (plen != len - 8)
        return *why = "available input does not match specified packet length", QCMP_MALFORMED;
    size_t expect = type == 0 ? QCMP_PING_LEN - 8 : QCMP_REPLY_LEN - 8;
    if (plen != expect)
        return *why = "packet length does not match its type", QCMP_MALFORMED;
    out->kind = type == 0 ? QCMP_PING : QCMP_PING_REPLY;
    out->nonce = buf[8];
    out->client_ts_ns = (int64_t)get_be64(buf + 9);
    out->server_recv_ts_ns = type == 1 ? (int64_t)get_be64(buf + 17) : 0;
    out->server_send_ts_ns = type == 1 ? (int64_t)get_be64(buf + 25) : 0;
    return QCMP_OK;
}

size_t qcmp_encode(const struct qcmp_packet *p, uint8_t *out)
{
    memcpy(out, magic, 4);
    out[4] = 0;
    out[5] = p->kind == QCMP_PING ? 0 : 1;
    size_t plen = p->kind == QCMP_PING ? QCMP_PING_LEN - 8 : QCMP_REPLY_LEN - 8;
    out[6] = (uint8_t)(plen >> 8);
    out[7] = (uint8_t)plen;
    out[8] = p->nonce;
    put_be64(out + 9, (uint64_t)p->client_ts_ns);
    if (p->kind == QCMP_PING_REPLY) {
        put_be64(out + 17, (uint64_t)p->server_recv_ts_ns);
        put_be64(out + 25, (uint64_t)p->server_send_ts_ns);
    }
    return 8 + plen;
}
