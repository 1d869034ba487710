/* Clocks. The data path reads the wall and monotonic clocks once per batch, never per packet;
 * the tick counter is the one clock cheap enough to read around every filter call. */
#ifndef QK_BASE_CLOCK_H
#define QK_BASE_CLOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define NS_PER_SEC 1000000000ull
#define NS_PER_MS 1000000ull

/* CLOCK_MONOTONIC in nanoseconds: expiry and durations. Any thread. */
uint64_t clock_mono_ns(void);

/* CLOCK_REALTIME in nanoseconds since the Unix epoch: only where a protocol carries it. */
uint64_t clock_unix_ns(void);

/* ---- ticks: short spans on the data path ----------------------------------------------
 * On x86-64 CPUs whose time-stamp counter runs at one constant rate on every core and in
 * every sleep state (/proc/cpuinfo flags constant_tsc and nonstop_tsc) a tick is one TSC
 * count: RDTSC costs a few nanoseconds where clock_gettime through kvm-clock costs tens.
 * Elsewhere a tick is one nanosecond of CLOCK_MONOTONIC. The choice and the TSC rate
 * (measured against CLOCK_MONOTONIC over about 20 ms) are made once by clock_ticks_init and
 * never change afterwards. */

/* Chooses the source and calibrates. Idempotent and thread-safe; call it before any thread
 * reads ticks (the metrics registry calls it when a tick histogram is created). */
void clock_ticks_init(void);

/* True when ticks are TSC counts. Set once by clock_ticks_init. */
extern atomic_bool clock_ticks_tsc;

static inline uint64_t clock_ticks(void)
{
#if defined(__x86_64__)
    if (atomic_load_explicit(&clock_ticks_tsc, memory_order_relaxed)) {
        uint32_t lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        return ((uint64_t)hi << 32) | lo;
    }
#endif
    return clock_mono_ns();
}

/* Conversions at the calibrated rate (1:1 without a TSC). clock_ticks_init first. */
double clock_ticks_to_ns(uint64_t ticks);
uint64_t clock_ns_to_ticks(double ns);

/* Human name of the source for start-up logs: "tsc (2.59 GHz)" or "clock_gettime". */
const char *clock_ticks_source(void);

#endif
