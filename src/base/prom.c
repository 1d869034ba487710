/* Prometheus text writer; see prom.h. */
#include "base/prom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define put strbuf_printf

void prom_header(struct strbuf *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void prom_sample(struct strbuf *o, const char *name, const char *labels, double value)
{
    char v[40];
    fmt_double(v, sizeof(v), value);
    if (*labels)
        put(o, "%s{%s} %s\n", name, labels, v);
    else
        put(o, "%s %s\n", name, v);
}

void prom_sample_u64(struct strbuf *o, const char *name, const char *labels, uint64_t value)
{
    if (*labels)
        put(o, "%s{%s} %llu\n", name, labels, (unsigned long long)value);
    else
        put(o, "%s %llu\n", name, (unsigned long long)value);
}

void prom_histogram(struct strbuf *o, const char *name, const char *labels,
                    const double *bounds, size_t n_bounds, const uint64_t *counts, double sum)
{
    uint64_t cum = 0;
    const char *sep = *labels ? "," : "";
    for (size_t i = 0; i <= n_bounds; i++) {
        cum += counts[i];
        char b[40];
        if (i < n_bounds)
            put(o, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep,
                fmt_double(b, sizeof(b), bounds[i]), (unsigned long long)cum);
        else
            put(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                (unsigned long long)cum);
    }
    char s[40];
    fmt_double(s, sizeof(s), sum);
    if (*labels) {
        put(o, "%s_sum{%s} %s\n", name, labels, s);
        put(o, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
    } else {
        put(o, "%s_sum %s\n", name, s);
        put(o, "%s_count %llu\n", name, (unsigned long long)cum);
    }
}

void prom_escape(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (; *src && o + 3 < cap; src++) {
        if (*src == '\\' || *src == '"') {
            dst[o++] = '\\';
            dst[o++] = *src;
        } else if (*src == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *src;
        }
    }
    dst[o] = '\0';
}
