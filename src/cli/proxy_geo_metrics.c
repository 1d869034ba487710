/* The labelled rows of /metrics for `quilkin proxy` (spec admin.md §4.1-§4.2, §4.6): sums the
 * workers' ASN label sets (proxy/geo.h) by label text, and the jitter gauge. Runs on the admin
 * thread (and once at shutdown); reads the workers' geo_stats with acquire/relaxed loads. */
#include "base/prom.h"
#include "base/strbuf.h"
#include "cli/proxy_state.h"
#include "proxy/geo.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DROP_TEXT_CAP 256

struct label_row { /* one (asn, ip_prefix) label pair */
    char asn[24];      /* "" for the empty label set */
    const char *prefix; /* borrowed from a worker's geo_info */
    uint64_t packets[2], bytes[2];
    int64_t jitter[2];
    uint64_t jitter_at[2]; /* the newest setting wins; 0: never set */
};

struct session_row { /* one full label set of quilkin_session_active */
    const struct geo_info *info;
    uint64_t live;
};

struct drop_row {
    char text[DROP_TEXT_CAP]; /* as the label shows it */
    bool is_error_only;
    int dir;
    const struct label_row *labels;
    uint64_t n;
};

struct geo_scrape {
    struct label_row *labels;
    size_t n_labels, cap_labels;
    struct session_row *sessions;
    size_t n_sessions, cap_sessions;
    struct drop_row *drops;
    size_t n_drops, cap_drops;
    bool failed; /* out of memory: some rows are missing */
};

static const char *const events[2] = {"read", "write"};

/* Room for one more element in *arr; false (s->failed) when out of memory. */
static bool grow(struct geo_scrape *s, void **arr, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return true;
    size_t next = *cap ? *cap * 2 : 64;
    void *p = realloc(*arr, next * size);
    if (!p) {
        s->failed = true;
        return false;
    }
    *arr = p;
    *cap = next;
    return true;
}

/* The row of g's (asn, prefix); added when may_add, else NULL when missing. */
static struct label_row *label_row(struct geo_scrape *s, const struct geo_info *g, bool is_none,
                                   bool may_add)
{
    char asn[24] = "";
    if (!is_none)
        snprintf(asn, sizeof(asn), "%" PRIu64, g->asn);
    const char *prefix = is_none ? "" : g->prefix;
    for (size_t i = 0; i < s->n_labels; i++)
        if (strcmp(s->labels[i].asn, asn) == 0 && strcmp(s->labels[i].prefix, prefix) == 0)
            return &s->labels[i];
    if (!may_add ||
        !grow(s, (void **)&s->labels, s->n_labels, &s->cap_labels, sizeof(*s->labels)))
        return NULL;
    struct label_row *r = &s->labels[s->n_labels++];
    memset(r, 0, sizeof(*r));
    memcpy(r->asn, asn, sizeof(asn));
    r->prefix = prefix;
    return r;
}

static void add_session(struct geo_scrape *s, const struct geo_info *g, uint64_t live)
{
    for (size_t i = 0; i < s->n_sessions; i++) {
        if (memcmp(s->sessions[i].info, g, sizeof(*g)) == 0) {
            s->sessions[i].live += live;
            return;
        }
    }
    if (!grow(s, (void **)&s->sessions, s->n_sessions, &s->cap_sessions, sizeof(*s->sessions)))
        return;
    s->sessions[s->n_sessions++] = (struct session_row){.info = g, .live = live};
}

static void add_drop(struct geo_scrape *s, const struct geo_drop *d, const char *text,
                     const struct label_row *labels, uint64_t n)
{
    static const char *const prefixes[] = {
        [GEO_DROP_PLAIN] = "",
        [GEO_DROP_FILTER_READ] = "filter  error: ", /* spec proxy.md §10 (two spaces) */
        [GEO_DROP_FILTER_WRITE] = "proxy::Session::process_recv_packet: filter  error: ",
        [GEO_ERROR_ONLY] = "",
    };
    char full[DROP_TEXT_CAP];
    snprintf(full, sizeof(full), "%s%s", d->form <= GEO_ERROR_ONLY ? prefixes[d->form] : "",
             text);
    bool error_only = d->form == GEO_ERROR_ONLY;
    for (size_t i = 0; i < s->n_drops; i++) {
        struct drop_row *r = &s->drops[i];
        if (r->labels == labels && r->dir == d->dir && r->is_error_only == error_only &&
            strcmp(r->text, full) == 0) {
            r->n += n;
            return;
        }
    }
    if (!grow(s, (void **)&s->drops, s->n_drops, &s->cap_drops, sizeof(*s->drops)))
        return;
    struct drop_row *r = &s->drops[s->n_drops++];
    memcpy(r->text, full, sizeof(full));
    r->is_error_only = error_only;
    r->dir = d->dir;
    r->labels = labels;
    r->n = n;
}

/* One worker's geo_stats into the sums. */
static void collect(struct geo_scrape *s, const struct geo_stats *st)
{
    uint32_t n = atomic_load_explicit(&st->n, memory_order_acquire);
    if (n == 0)
        n = 1;
    /* label rows first, so drop rows can point at them (the array no longer moves after) */
    for (uint32_t i = 0; i < n; i++) {
        struct label_row *r = label_row(s, &st->info[i], i == 0, true);
        if (!r)
            return;
        for (int d = 0; d < 2; d++) {
            uint64_t at = __atomic_load_n(&st->jitter_at[d][i], __ATOMIC_RELAXED);
            if (at > r->jitter_at[d]) {
                r->jitter_at[d] = at;
                r->jitter[d] = __atomic_load_n(&st->jitter_ns[d][i], __ATOMIC_RELAXED);
            }
            if (i == 0)
                continue; /* index 0 counts in the worker's plain counters */
            r->packets[d] += __atomic_load_n(&st->packets[d][i], __ATOMIC_RELAXED);
            r->bytes[d] += __atomic_load_n(&st->bytes[d][i], __ATOMIC_RELAXED);
        }
        if (i > 0) {
            uint64_t closed = __atomic_load_n(&st->closed[i], __ATOMIC_RELAXED);
            uint64_t created = __atomic_load_n(&st->created[i], __ATOMIC_RELAXED);
            add_session(s, &st->info[i], created > closed ? created - closed : 0);
        }
    }
}

static void collect_drops(struct geo_scrape *s, const struct geo_stats *st)
{
    uint32_t n = atomic_load_explicit(&st->n, memory_order_acquire);
    for (size_t k = 0; k < GEO_DROP_SLOTS; k++) {
        const struct geo_drop *d = &st->drops[k];
        const char *text = atomic_load_explicit(&d->text, memory_order_acquire);
        if (!text || d->geo == 0 || d->geo >= n || d->dir > 1)
            continue;
        /* find only: a label set the worker added since collect() has no row, and adding
           one could move the rows earlier drop rows point at (its drops wait a scrape) */
        const struct label_row *labels = label_row(s, &st->info[d->geo], false, false);
        if (labels)
            add_drop(s, d, text, labels, __atomic_load_n(&d->n, __ATOMIC_RELAXED));
    }
}

struct geo_scrape *geo_scrape_collect(const struct proxy_state *ps)
{
    struct geo_scrape *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    unsigned n_workers = atomic_load_explicit(&ps->n_workers, memory_order_acquire);
    for (unsigned w = 0; w < n_workers; w++)
        collect(s, worker_geo_stats(ps->workers[w]));
    /* the label rows are complete: drop rows may point into the array */
    for (unsigned w = 0; w < n_workers && !s->failed; w++)
        collect_drops(s, worker_geo_stats(ps->workers[w]));
    return s;
}

void geo_scrape_free(struct geo_scrape *s)
{
    if (!s)
        return;
    free(s->labels);
    free(s->sessions);
    free(s->drops);
    free(s);
}

/* asn="..",<extra>event="..",ip_prefix=".." in label order. */
static void labels_text(char *buf, size_t cap, const char *asn, const char *extra,
                        const char *event, const char *prefix)
{
    char esc[2 * GEO_PREFIX_CAP];
    prom_escape(esc, sizeof(esc), prefix);
    snprintf(buf, cap, "asn=\"%s\",%sevent=\"%s\",ip_prefix=\"%s\"", asn, extra, event, esc);
}

void geo_render_packets(struct strbuf *out, const struct geo_scrape *s, const char *name,
                        bool is_bytes)
{
    char labels[256];
    for (size_t i = 0; s && i < s->n_labels; i++) {
        const struct label_row *r = &s->labels[i];
        for (int d = 0; d < 2; d++) {
            if (!r->packets[d])
                continue;
            labels_text(labels, sizeof(labels), r->asn, "", events[d], r->prefix);
            prom_sample_u64(out, name, labels, is_bytes ? r->bytes[d] : r->packets[d]);
        }
    }
}

void geo_render_drops(struct strbuf *out, const struct geo_scrape *s, const char *name,
                      const char *label, bool is_errors)
{
    char labels[768], esc[2 * DROP_TEXT_CAP], extra[2 * DROP_TEXT_CAP + 16];
    for (size_t i = 0; s && i < s->n_drops; i++) {
        const struct drop_row *r = &s->drops[i];
        if (r->is_error_only && !is_errors)
            continue;
        prom_escape(esc, sizeof(esc), r->text);
        snprintf(extra, sizeof(extra), "%s=\"%s\",", label, esc);
        labels_text(labels, sizeof(labels), r->labels->asn, extra, events[r->dir],
                    r->labels->prefix);
        prom_sample_u64(out, name, labels, r->n);
    }
}

void geo_render_jitter(struct strbuf *out, const struct geo_scrape *s)
{
    prom_header(out, "quilkin_packet_jitter", "gauge",
                "Nanoseconds between the two most recent datagrams of a worker's game socket "
                "(read) or of a session's socket (write)");
    char labels[256], value[32];
    for (size_t i = 0; s && i < s->n_labels; i++) {
        const struct label_row *r = &s->labels[i];
        for (int d = 0; d < 2; d++) {
            if (!r->jitter_at[d])
                continue;
            labels_text(labels, sizeof(labels), r->asn, "", events[d], r->prefix);
            snprintf(value, sizeof(value), "%" PRId64, r->jitter[d]);
            strbuf_printf(out, "quilkin_packet_jitter{%s} %s\n", labels, value);
        }
    }
}

void geo_render_sessions(struct strbuf *out, const struct geo_scrape *s, uint64_t active)
{
    uint64_t labelled = 0;
    char labels[1024], org[2 * GEO_TEXT_CAP], cc[16], prefix[2 * GEO_PREFIX_CAP],
        entity[2 * GEO_TEXT_CAP], pname[2 * GEO_TEXT_CAP];
    for (size_t i = 0; s && i < s->n_sessions; i++) {
        const struct session_row *r = &s->sessions[i];
        labelled += r->live;
        if (!r->live)
            continue;
        const struct geo_info *g = r->info;
        prom_escape(org, sizeof(org), g->organization);
        prom_escape(cc, sizeof(cc), g->country_code);
        prom_escape(prefix, sizeof(prefix), g->prefix);
        prom_escape(entity, sizeof(entity), g->prefix_entity);
        prom_escape(pname, sizeof(pname), g->prefix_name);
        snprintf(labels, sizeof(labels),
                 "asn=\"%" PRIu64 "\",country_code=\"%s\",ip_prefix=\"%s\",organization=\"%s\","
                 "prefix_entity=\"%s\",prefix_name=\"%s\"",
                 g->asn, cc, prefix, org, entity, pname);
        prom_sample_u64(out, "quilkin_session_active", labels, r->live);
    }
    /* spec admin.md §4.2: without data asn is "0", not empty. The workers publish their
       session counts once per loop, so the difference may lag by a loop: never negative */
    prom_sample_u64(out, "quilkin_session_active",
                    "asn=\"0\",country_code=\"\",ip_prefix=\"\",organization=\"\","
                    "prefix_entity=\"\",prefix_name=\"\"",
                    active > labelled ? active - labelled : 0);
}

void geo_scrape_totals(const struct geo_scrape *s, uint64_t packets[2], uint64_t bytes[2])
{
    for (size_t i = 0; s && i < s->n_labels; i++) {
        for (int d = 0; d < 2; d++) {
            packets[d] += s->labels[i].packets[d];
            bytes[d] += s->labels[i].bytes[d];
        }
    }
}

uint64_t geo_scrape_drops_of(const struct geo_scrape *s, const char *text)
{
    uint64_t n = 0;
    for (size_t i = 0; s && i < s->n_drops; i++)
        if (!s->drops[i].is_error_only && strcmp(s->drops[i].text, text) == 0)
            n += s->drops[i].n;
    return n;
}
