/* Debug (spec filters.md §5): logs every packet at INFO with its id, addresses and contents;
 * never modifies or drops. The one filter allowed to log per packet. */
#include "base/log.h"
#include "config/node.h"
#include "filters/filter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct debug_args {
    char *id; /* owned, NULL when not configured */
};

static int debug_from_yaml(void *args, const struct node *n, struct err *e)
{
    struct debug_args *a = args;
    if (!n)
        return 0;
    /* spec filters.md §1.2: unknown keys inside a filter config are ignored */
    int rc = node_check_map(n, NULL, 0, e);
    if (rc < 0)
        return rc;
    const struct node *id = node_map_get(n, "id");
    if (id && id->kind != NODE_NULL) {
        const char *s;
        rc = node_get_str(id, &s, e);
        if (rc < 0)
            return rc;
        a->id = strdup(s);
        if (!a->id)
            return node_error(n, e, "out of memory");
    }
    return 0;
}

static void debug_args_free(void *args)
{
    free(((struct debug_args *)args)->id);
}

/* Payload as printable text: bytes outside 0x20..0x7e become \xNN; long payloads are cut. */
static void render(const struct pkt *p, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *d = pkt_data(p);
    size_t o = 0;
    for (uint32_t i = 0; i < p->len; i++) {
        if (o + 8 >= cap) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        uint8_t ch = d[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

static enum verdict debug_read(const struct filter *f, struct pkt_ctx *c)
{
    if (LOG_LEVEL_INFO <= log_current_level) {
        const struct debug_args *a = f->args;
        char src[ADDR_STR_CAP], body[1024];
        render(&c->pkt, body, sizeof(body));
        log_emit_fields(LOG_LEVEL_INFO, "filters::debug",
                        LOG_FIELDS(LF_STR("id", a->id), LF_STR("source", addr_format(&c->src, src)),
                                   LF_STR("contents", body)),
                        "Read filter event");
    }
    return VERDICT_PASS;
}

static enum verdict debug_write(const struct filter *f, struct pkt_ctx *c)
{
    if (LOG_LEVEL_INFO <= log_current_level) {
        const struct debug_args *a = f->args;
        char src[ADDR_STR_CAP], dst[ADDR_STR_CAP], body[1024];
        render(&c->pkt, body, sizeof(body));
        log_emit_fields(LOG_LEVEL_INFO, "filters::debug",
                        LOG_FIELDS(LF_STR("id", a->id), LF_STR("source", addr_format(&c->src, src)),
                                   LF_STR("dest", addr_format(&c->dst, dst)),
                                   LF_STR("contents", body)),
                        "Write filter event");
    }
    return VERDICT_PASS;
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char debug_schema[] =
    "description: Logs every packet.\n"
    "type: [object, 'null']\n"
    "properties:\n"
    "  id:\n"
    "    description: A name shown in the log lines.\n"
    "    type: [string, number, boolean, 'null']\n";

const struct filter_ops debug_filter = {
    .name = "quilkin.filters.debug.v1alpha1.Debug",
    .args_size = sizeof(struct debug_args),
    .need = CFG_OPTIONAL,
    .schema = debug_schema,
    .from_yaml = debug_from_yaml,
    .args_free = debug_args_free,
    .read = debug_read,
    .write = debug_write,
};
