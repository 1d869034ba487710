/* Timestamp (spec filters.md §12): reads a Unix time in seconds from metadata (a Number, or
 * 8 big-endian bytes) and observes the packet's age into a quilkin_filter_histogram series
 * (the worker's shard). Never modifies or drops a packet; never logs per packet. */
#include "base/err.h"
#include "base/metrics.h"
#include "config/node.h"
#include "filters/chain.h"
#include "filters/filter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { DIR_READ = 0, DIR_WRITE = 1, N_DIRS = 2 };

/* Filled by from_yaml, freed by args_free. */
struct timestamp_args {
    char *key; /* owned metadataKey */
};

#define TIMESTAMP_NAME "quilkin.filters.timestamp.v1alpha1.Timestamp"

/* Runtime, read-only after create(). The histograms are registry series
 * quilkin_filter_histogram{label="duration", event=<dir>, shared_metadata_1=<key>}, one per
 * direction, shared with every Timestamp on the same key and kept across reloads. */
struct timestamp_state {
    uint32_t key; /* interned metadataKey */
    struct metric_histogram *age[N_DIRS];
};

/* Prometheus' default buckets (upper bounds, seconds); observations above the last go to
 * the +Inf bucket. */
static const double bucket_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_BOUNDS (sizeof(bucket_bounds) / sizeof(bucket_bounds[0]))

/* The Unix seconds chrono 0.4 (v0.7.0) can turn into a NaiveDateTime: years -262144 to
 * 262143 (spec §12 step 2: "about ±262 000 years"). */
#define MIN_UNIX_SECS (-8334632937600LL)
#define MAX_UNIX_SECS 8210298412799LL

static int timestamp_from_yaml(void *args, const struct node *n, struct err *e)
{
    struct timestamp_args *a = args;
    /* spec filters.md §1.2: unknown keys are ignored */
    int rc = node_check_map(n, NULL, 0, e);
    if (rc < 0)
        return rc;
    const struct node *key = node_map_get(n, "metadataKey");
    if (!key)
        return node_error(n, e, "missing field `metadataKey`");
    const char *s;
    if ((rc = node_get_str(key, &s, e)) < 0)
        return rc;
    if (!(a->key = strdup(s)))
        return node_error(key, e, "out of memory"), -ENOMEM;
    return 0;
}

static void timestamp_args_free(void *args)
{
    free(((struct timestamp_args *)args)->key);
}

static void timestamp_destroy(struct filter *f)
{
    free(f->state); /* the series stay in the registry */
    f->state = NULL;
}

static int timestamp_create(struct filter *f, const struct filter_build *b, struct err *e)
{
    const struct timestamp_args *a = f->args;
    int id = keytab_intern(b->keys, a->key);
    if (id < 0)
        return err_set(e, "out of memory interning `%s`", a->key), -ENOMEM;
    struct timestamp_state *s = calloc(1, sizeof(*s));
    f->state = s;
    static const char *const events[N_DIRS] = {"read", "write"};
    for (int d = 0; s && d < N_DIRS; d++) {
        s->age[d] = filter_histogram(
            TIMESTAMP_NAME, "duration",
            "duration in seconds of time since the timestamp in metadata compared to now",
            events[d], a->key, bucket_bounds, N_BOUNDS);
        if (!s->age[d])
            break;
    }
    if (!s || !s->age[DIR_READ] || !s->age[DIR_WRITE]) {
        timestamp_destroy(f);
        return err_set(e, "out of memory"), -ENOMEM;
    }
    s->key = (uint32_t)id;
    return 0;
}

static void run(const struct filter *f, struct pkt_ctx *c, int dir)
{
    const struct timestamp_state *s = f->state;
    const struct md_value *v = md_get(&c->md, s->key);
    if (!v)
        return;
    int64_t t;
    if (v->kind == MD_NUMBER) {
        t = (int64_t)v->u.n; /* spec §12: the u64 reinterpreted as signed */
    } else if (v->kind == MD_BYTES && v->len == 8) {
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u = u << 8 | v->u.bytes[i];
        t = (int64_t)u;
    } else {
        return;
    }
    /* v0.7.0 logs a warning here; we never log per packet (STYLE.md §3), just skip. */
    if (t < MIN_UNIX_SECS || t > MAX_UNIX_SECS)
        return;
    /* Age = now - t with now in nanoseconds, truncated toward zero to whole seconds. */
    int64_t now_s = (int64_t)(c->now_unix_ns / 1000000000u);
    uint64_t now_frac = c->now_unix_ns % 1000000000u;
    int64_t age = now_s - t;
    if (age < 0 && now_frac > 0)
        age++;
    metric_observe(s->age[dir], c->worker, (double)age);
}

static enum verdict timestamp_read(const struct filter *f, struct pkt_ctx *c)
{
    run(f, c, DIR_READ);
    return VERDICT_PASS;
}

static enum verdict timestamp_write(const struct filter *f, struct pkt_ctx *c)
{
    run(f, c, DIR_WRITE);
    return VERDICT_PASS;
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char timestamp_schema[] =
    "description: Observes the age of a Unix timestamp (seconds) held in dynamic metadata.\n"
    "type: object\n"
    "required: [metadataKey]\n"
    "properties:\n"
    "  metadataKey:\n"
    "    type: [string, number, boolean]\n";

const struct filter_ops timestamp_filter = {
    .name = TIMESTAMP_NAME,
    .args_size = sizeof(struct timestamp_args),
    .need = CFG_REQUIRED,
    .schema = timestamp_schema,
    .from_yaml = timestamp_from_yaml,
    .args_free = timestamp_args_free,
    .create = timestamp_create,
    .read = timestamp_read,
    .write = timestamp_write,
    .destroy = timestamp_destroy,
};
