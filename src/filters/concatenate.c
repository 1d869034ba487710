/* Concatenate (spec filters.md §4): appends or prepends configured bytes to the packet, with
 * a strategy per direction. Uses the packet's headroom/tailroom, so it copies only the
 * configured bytes. */
#include "base/b64.h"
#include "config/node.h"
#include "filters/filter.h"

#include <stdlib.h>
#include <string.h>

enum concat_strategy {
    CONCAT_APPEND = 0, /* order of the names below */
    CONCAT_PREPEND,
    CONCAT_DO_NOTHING,
};

static const char *const strategy_names[] = {"APPEND", "PREPEND", "DO_NOTHING"};

/* Owned by its struct filter; freed by concatenate_args_free. */
struct concatenate_args {
    enum concat_strategy on_read, on_write;
    uint8_t *bytes; /* owned, decoded; NULL when empty */
    uint32_t len;
};

static int decode_strategy(const struct node *n, const char *key, enum concat_strategy *out,
                           struct err *e)
{
    const struct node *v = node_map_get(n, key);
    *out = CONCAT_DO_NOTHING;
    if (!v)
        return 0;
    int idx;
    int rc =
        node_get_enum(v, strategy_names, sizeof(strategy_names) / sizeof(*strategy_names), &idx, e);
    if (rc < 0)
        return rc;
    *out = (enum concat_strategy)idx;
    return 0;
}

static int concatenate_from_yaml(void *args, const struct node *n, struct err *e)
{
    struct concatenate_args *a = args;
    /* spec filters.md §1.2: unknown keys inside a filter config are ignored */
    int rc = node_check_map(n, NULL, 0, e);
    if (rc < 0)
        return rc;
    if ((rc = decode_strategy(n, "on_read", &a->on_read, e)) < 0 ||
        (rc = decode_strategy(n, "on_write", &a->on_write, e)) < 0)
        return rc;
    const struct node *b = node_map_get(n, "bytes");
    if (!b)
        return node_error(n, e, "missing field `bytes`");
    const char *text;
    if ((rc = node_get_str(b, &text, e)) < 0)
        return rc;
    if (b->str_len == 0)
        return 0;
    size_t len = 0;
    a->bytes = malloc(b64_decoded_cap(b->str_len));
    if (!a->bytes)
        return node_error(b, e, "out of memory");
    if (b64_decode(text, b->str_len, a->bytes, &len) < 0)
        return node_error(b, e, "invalid base64 `%.*s`", (int)(b->str_len > 64 ? 64 : b->str_len),
                          text);
    if (len > UINT32_MAX)
        return node_error(b, e, "`bytes` is too long");
    a->len = (uint32_t)len;
    return 0;
}

static void concatenate_args_free(void *args)
{
    free(((struct concatenate_args *)args)->bytes);
}

static enum verdict apply(const struct concatenate_args *a, enum concat_strategy s,
                          struct pkt_ctx *c)
{
    if (s == CONCAT_DO_NOTHING || a->len == 0)
        return VERDICT_PASS;
    uint8_t *at = s == CONCAT_APPEND ? pkt_append(&c->pkt, a->len) : pkt_prepend(&c->pkt, a->len);
    if (!at) {
        /* v0.7.0 never fails here (its buffers grow); ours are bounded by the worker's
         * buffer, far beyond the largest datagram a socket can send */
        c->drop_reason = "packet too large to concatenate";
        return VERDICT_DROP;
    }
    memcpy(at, a->bytes, a->len);
    return VERDICT_PASS;
}

static enum verdict concatenate_read(const struct filter *f, struct pkt_ctx *c)
{
    const struct concatenate_args *a = f->args;
    return apply(a, a->on_read, c);
}

static enum verdict concatenate_write(const struct filter *f, struct pkt_ctx *c)
{
    const struct concatenate_args *a = f->args;
    return apply(a, a->on_write, c);
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char concatenate_schema[] =
    "description: Appends or prepends bytes to packets.\n"
    "type: object\n"
    "required: [bytes]\n"
    "properties:\n"
    "  on_read:\n"
    "    $ref: '#/definitions/Strategy'\n"
    "  on_write:\n"
    "    $ref: '#/definitions/Strategy'\n"
    "  bytes:\n"
    "    description: The bytes to add, base64 with padding.\n"
    "    type: [string, number, boolean]\n"
    "    pattern: '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$'\n"
    "definitions:\n"
    "  Strategy:\n"
    "    enum: [APPEND, PREPEND, DO_NOTHING]\n"
    "    default: DO_NOTHING\n";

const struct filter_ops concatenate_filter = {
    .name = "quilkin.filters.concatenate.v1alpha1.Concatenate",
    .args_size = sizeof(struct concatenate_args),
    .need = CFG_REQUIRED,
    .schema = concatenate_schema,
    .from_yaml = concatenate_from_yaml,
    .args_free = concatenate_args_free,
    .read = concatenate_read,
    .write = concatenate_write,
};
