/* QCMP wire format (spec qcmp.md §2-§3): pure bytes <-> struct, no I/O. The parser follows
 * the spec's exact order of checks, so malformed input is classified like v0.7.0 does. */
#ifndef QK_QCMP_CODEC_H
#define QK_QCMP_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define QCMP_PING_LEN 17
#define QCMP_REPLY_LEN 33

enum qcmp_kind {
    QCMP_PING = 0,
    QCMP_PING_REPLY = 1,
};

struct qcmp_packet {
    enum qcmp_kind kind;
    uint8_t nonce;
    int64_t client_ts_ns;      /* client transmit timestamp */
    int64_t server_recv_ts_ns; /* PingReply only */
    int64_t server_send_ts_ns; /* PingReply only */
};

enum qcmp_parse_result {
    QCMP_OK = 0,
    QCMP_NOT_QCMP,   /* does not start with "QLKN" */
    QCMP_MALFORMED,  /* starts with the magic but breaks a rule of qcmp.md §3 */
};

/* Parses buf[0..len). On QCMP_MALFORMED, *why (if non-NULL) gets a static description.
 * Any thread. */
enum qcmp_parse_result qcmp_parse(const uint8_t *buf, size_t len, struct qcmp_packet *out,
                                  const char **why);

/* Encodes p into out (at least QCMP_REPLY_LEN bytes); returns the length written (17 or 33). */
size_t qcmp_encode(const struct qcmp_packet *p, uint8_t *out);

#endif
