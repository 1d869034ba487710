/* Clocks. The data path reads them once per batch, never per packet. */
#ifndef QK_BASE_CLOCK_H
#define QK_BASE_CLOCK_H

#include <stdint.h>

#define NS_PER_SEC 1000000000ull
#define NS_PER_MS 1000000ull

/* CLOCK_MONOTONIC in nanoseconds: expiry and durations. Any thread. */
uint64_t clock_mono_ns(void);

/* CLOCK_REALTIME in nanoseconds since the Unix epoch: only where a protocol carries it. */
uint64_t clock_unix_ns(void);

#endif
