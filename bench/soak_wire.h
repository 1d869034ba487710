/* soak_wire.h: the datagram header of the field harness (make soak), shared by
 * bench_soak_client (writes it, reads it back from replies) and bench_echo --count (counts
 * per client group). Host byte order: only programs on this host read it. */
#ifndef SOAK_WIRE_H
#define SOAK_WIRE_H

#include <stdint.h>
#include <string.h>

#define SOAK_MAGIC 0x6b616f73u /* "soak" */
#define SOAK_GROUPS_MAX 32

/* Payload layout: header, filler (byte i of the payload is (seq + i) & 0xff), then the
 * routing token that the proxy's Capture filter removes (so replies are token-less). */
struct soak_hdr {
    uint32_t magic;
    uint16_t group;    /* index into the client's --group list */
    uint16_t token_len;
    uint32_t uid;      /* client id, unique over the run (a churned-in client gets a new one) */
    uint32_t slot;     /* the client's slot in the sender's table */
    uint32_t seq;      /* per client, from 0 */
    uint32_t len;      /* payload length before the token */
    uint64_t send_ns;  /* sender's CLOCK_MONOTONIC */
};
#define SOAK_HDR_LEN sizeof(struct soak_hdr)
_Static_assert(sizeof(struct soak_hdr) == 32, "the soak header is 32 bytes on the wire");

/* Returns the group of a soak datagram, or -1 when buf does not start with a soak header. */
static inline int soak_group_of(const uint8_t *buf, size_t len)
{
    struct soak_hdr h;
    if (len < SOAK_HDR_LEN)
        return -1;
    memcpy(&h, buf, sizeof(h));
    if (h.magic != SOAK_MAGIC || h.group >= SOAK_GROUPS_MAX)
        return -1;
    return h.group;
}

#endif
