/* QCMP reply rate limits (extension, issue 9): a QCMP reply is 33 bytes for a 17-byte ping,
 * so an unlimited responder reflects 1.9x the bytes to whatever source a ping claims. Each
 * worker answers at most `source_rate` pings per second per source address (IPv6: /64),
 * with a burst of twice that, and at most `global_rate` in all. A real client pinging a few
 * times a second is never limited.
 *
 * Per source: a fixed 2-way set-associative table of GCRA "theoretical arrival times";
 * when both slots of a set belong to other addresses, the older one is replaced, so a flood
 * of spoofed addresses evicts entries (those sources start with a full burst again) but can
 * never grow the table, and the global limit still bounds the total. Owned by one worker;
 * no lock, no allocation after create. */
#ifndef QK_QCMP_RATELIMIT_H
#define QK_QCMP_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct addr;
struct qcmp_ratelimit;

enum qcmp_verdict {
    QCMP_ALLOW = 0,
    QCMP_LIMIT_SOURCE, /* this source is over its rate */
    QCMP_LIMIT_GLOBAL, /* the worker is over its total rate */
};

/* Rates in pings per second (0: no limit of that kind). NULL on OOM. */
struct qcmp_ratelimit *qcmp_ratelimit_create(uint32_t source_rate, uint32_t global_rate,
                                             uint64_t seed);
void qcmp_ratelimit_destroy(struct qcmp_ratelimit *rl);

/* May a ping from src, arriving at now_ns (monotonic), be answered? Charges it if so. */
enum qcmp_verdict qcmp_ratelimit_check(struct qcmp_ratelimit *rl, const struct addr *src,
                                       uint64_t now_ns);

#endif
