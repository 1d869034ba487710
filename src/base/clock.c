/* clock_gettime wrappers (vDSO-backed, no syscall on Linux x86-64) and the calibrated tick
 * counter; see clock.h. */
#include "base/clock.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define CALIBRATE_NS (20 * NS_PER_MS)

atomic_bool clock_ticks_tsc;
static double ns_per_tick = 1.0; /* written once under ticks_once, read-only afterwards */
static char source_name[48] = "clock_gettime";
static pthread_once_t ticks_once = PTHREAD_ONCE_INIT;

static uint64_t read_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

uint64_t clock_mono_ns(void)
{
    return read_clock(CLOCK_MONOTONIC);
}

uint64_t clock_unix_ns(void)
{
    return read_clock(CLOCK_REALTIME);
}

#if defined(__x86_64__)
/* True when every CPU's flags line has both words: a TSC usable as a clock. */
static bool tsc_is_invariant(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return false;
    char line[4096];
    bool seen = false, ok = true;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "flags", 5) != 0)
            continue;
        seen = true;
        ok = ok && strstr(line, " constant_tsc") && strstr(line, " nonstop_tsc");
    }
    fclose(f);
    return seen && ok;
}

static uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static void ticks_setup(void)
{
#if defined(__x86_64__)
    if (!tsc_is_invariant())
        return;
    /* measure the TSC rate against CLOCK_MONOTONIC: spin, so no sleep skews the pair */
    uint64_t t0 = clock_mono_ns(), c0 = rdtsc(), t1, c1;
    do {
        t1 = clock_mono_ns();
        c1 = rdtsc();
    } while (t1 - t0 < CALIBRATE_NS);
    if (c1 <= c0)
        return;
    ns_per_tick = (double)(t1 - t0) / (double)(c1 - c0);
    snprintf(source_name, sizeof(source_name), "tsc (%.2f GHz)", 1.0 / ns_per_tick);
    atomic_store(&clock_ticks_tsc, true);
#endif
}

void clock_ticks_init(void)
{
    pthread_once(&ticks_once, ticks_setup);
}

/* The conversions go through pthread_once too: a thread that never called clock_ticks_init
 * itself (the admin thread rendering a histogram) then still sees the calibrated rate. */
double clock_ticks_to_ns(uint64_t ticks)
{
    clock_ticks_init();
    return (double)ticks * ns_per_tick;
}

uint64_t clock_ns_to_ticks(double ns)
{
    clock_ticks_init();
    double t = ns / ns_per_tick;
    return t >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)t;
}

const char *clock_ticks_source(void)
{
    clock_ticks_init();
    return source_name;
}
