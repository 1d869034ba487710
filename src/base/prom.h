/* Prometheus text exposition (format 0.0.4) into a growable buffer. Used by the admin
 * thread when /metrics is scraped; never on the data path. */
#ifndef QK_BASE_PROM_H
#define QK_BASE_PROM_H

#include "base/strbuf.h"

#include <stddef.h>
#include <stdint.h>

/* Output goes to a caller-owned strbuf (check its `failed` flag when done). */

/* "# HELP name help" and "# TYPE name type" (type: counter, gauge, histogram). */
void prom_header(struct strbuf *o, const char *name, const char *type, const char *help);

/* One sample: name{labels} value. labels is the text inside the braces (already
 * escaped, e.g. `event="read"`), or "" for none. */
void prom_sample(struct strbuf *o, const char *name, const char *labels, double value);
void prom_sample_u64(struct strbuf *o, const char *name, const char *labels, uint64_t value);

/* A histogram from per-bucket (non-cumulative) counts; counts has n_bounds + 1 entries,
 * the last being +Inf. Emits _bucket (cumulative), _sum and _count. */
void prom_histogram(struct strbuf *o, const char *name, const char *labels,
                    const double *bounds, size_t n_bounds, const uint64_t *counts, double sum);

/* Appends text with Prometheus label-value escaping (\\, \", \n) into dst (cap bytes,
 * always NUL-terminated). */
void prom_escape(char *dst, size_t cap, const char *src);

#endif
