/* Capture (spec filters.md §2): on read, takes bytes from the packet (a prefix, a suffix, or
 * every match of a regex) into dynamic metadata, optionally cutting a prefix or suffix off
 * the packet; write is a no-op. Captured bytes are copied into the scratch arena, never
 * borrowed from the packet, which later filters may rewrite. */
#include "config/node.h"
#include "filters/filter.h"
#include "filters/regex.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_KEY "quilkin.dev/capture"
#define PRESENT_SUFFIX "/is_present"
/* Most matches one packet may yield (a List value): each further search costs time linear
 * in the packet, and a pattern such as `(?:x*y)?` over "xxx...x" matches empty at every
 * byte after scanning to the end, i.e. quadratic time over all matches (the regex crate's
 * find_iter has that worst case too). Past the cap the packet is dropped, "too many regex
 * matches" (deviation: v0.7.0 would collect them all; no routing use needs 64). */
#define MATCH_CAP 64

enum capture_strategy {
    CAPTURE_NONE = 0,
    CAPTURE_PREFIX,
    CAPTURE_SUFFIX,
    CAPTURE_REGEX,
};

/* Owned by its struct filter; freed by capture_args_free. */
struct capture_args {
    char *key; /* owned; DEFAULT_KEY when not configured */
    enum capture_strategy strategy;
    uint32_t size; /* prefix/suffix */
    bool remove;   /* prefix/suffix */
    char *pattern; /* regex: owned, as configured (may hold NUL bytes) */
    size_t pattern_len;
};

/* Shared read-only by every worker once created. */
struct capture_state {
    uint32_t key, present_key; /* interned metadata keys */
    unsigned n_workers;        /* slots in per_worker (regex only) */
};

/* Regex only: one compiled copy per worker, so no two workers share RE2's automaton cache
 * (and its internal lock). Matching runs in time linear in the packet (issue 9: PCRE2's
 * backtracking took 57 ms on one 41-byte packet with `(a|aa)+$`). */
struct capture_worker {
    struct regex *re; /* owned */
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct capture_worker) % 64 == 0, "one cache line per worker slot");

static const uint8_t empty_bytes[1];

/* ---- config ------------------------------------------------------------------------- */

/* Rust's regex crate has a `u` (Unicode) inline flag that PCRE2 does not know; our engine
 * works on raw bytes, which is what `(?-u:...)` asks for anyway, so the flag is dropped from
 * every inline flag group: `(?-u:.)` -> `(?:.)`, `(?iu)` -> `(?i)`, `(?u)` -> ``.
 * out must hold len + 1 bytes; returns the translated length. */
static size_t strip_unicode_flag(const char *in, size_t len, char *out)
{
    size_t o = 0, i = 0;
    int class_depth = 0;
    size_t class_open = 0; /* index just after the `[` (or `[^`) that opened the class */
    while (i < len) {
        char ch = in[i];
        if (ch == '\\') {
            out[o++] = in[i++];
            if (i < len)
                out[o++] = in[i++];
            continue;
        }
        if (class_depth > 0) {
            if (ch == '[') {
                class_depth++;
            } else if (ch == ']' && i != class_open) { /* `[]a]`: a leading `]` is literal */
                class_depth--;
            }
            out[o++] = in[i++];
            continue;
        }
        if (ch == '[') {
            class_depth = 1;
            class_open = i + 1 < len && in[i + 1] == '^' ? i + 2 : i + 1;
            out[o++] = in[i++];
            continue;
        }
        if (ch == '(' && i + 1 < len && in[i + 1] == '?') {
            size_t j = i + 2;
            while (j < len && (in[j] == '-' || (in[j] >= 'a' && in[j] <= 'z') ||
                               (in[j] >= 'A' && in[j] <= 'Z')))
                j++;
            if (j > i + 2 && j < len && (in[j] == ':' || in[j] == ')')) {
                size_t start = o;
                out[o++] = '(';
                out[o++] = '?';
                size_t flags = o;
                for (size_t k = i + 2; k < j; k++)
                    if (in[k] != 'u')
                        out[o++] = in[k];
                if (o > flags && out[o - 1] == '-')
                    o--; /* `(?i-u)` -> `(?i)` */
                if (in[j] == ')' && o == flags)
                    o = start; /* `(?u)` sets nothing */
                else
                    out[o++] = in[j];
                i = j + 1;
                continue;
            }
        }
        out[o++] = in[i++];
    }
    out[o] = '\0';
    return o;
}

/* Compiles a Rust-dialect pattern for raw bytes (RE2 shares the regex crate's syntax and
 * semantics: `$` only at the very end unless (?m), `.` excludes only `\n`, no
 * back-references, no look-around). NULL with msg filled on error. */
static struct regex *compile_pattern(const char *pattern, size_t len, char *msg, size_t msg_cap)
{
    char *text = malloc(len + 1);
    if (!text) {
        snprintf(msg, msg_cap, "out of memory");
        return NULL;
    }
    size_t n = strip_unicode_flag(pattern, len, text);
    struct regex *re = regex_compile(text, n, msg, msg_cap);
    free(text);
    return re;
}

/* `prefix`/`suffix`: {size: u32 (required), remove: bool = false}; other keys ignored. */
static int decode_affix(struct capture_args *a, const struct node *v, struct err *e)
{
    int rc = node_check_map(v, NULL, 0, e);
    if (rc < 0)
        return rc;
    const struct node *size = node_map_get(v, "size");
    if (!size)
        return node_error(v, e, "missing field `size`");
    rc = node_get_u32(size, &a->size, e);
    if (rc < 0)
        return rc;
    const struct node *remove = node_map_get(v, "remove");
    return remove ? node_get_bool(remove, &a->remove, e) : 0;
}

/* `regex`: {pattern: string (required)}; the pattern must compile. */
static int decode_regex(struct capture_args *a, const struct node *v, struct err *e)
{
    int rc = node_check_map(v, NULL, 0, e);
    if (rc < 0)
        return rc;
    const struct node *p = node_map_get(v, "pattern");
    if (!p)
        return node_error(v, e, "missing field `pattern`");
    const char *s;
    rc = node_get_str(p, &s, e);
    if (rc < 0)
        return rc;
    char msg[256];
    struct regex *re = compile_pattern(s, p->str_len, msg, sizeof(msg));
    if (!re)
        return node_error(p, e, "regex parse error: %s in `%.*s`", msg,
                          (int)(p->str_len > 64 ? 64 : p->str_len), s);
    regex_free(re);
    a->pattern = malloc(p->str_len + 1);
    if (!a->pattern)
        return node_error(p, e, "out of memory");
    memcpy(a->pattern, s, p->str_len + 1);
    a->pattern_len = p->str_len;
    return 0;
}

static int capture_from_yaml(void *args, const struct node *n, struct err *e)
{
    static const char *const allowed[] = {"metadataKey", "prefix", "suffix", "regex"};
    struct capture_args *a = args;
    /* spec filters.md §1.2: Capture rejects unknown top-level keys */
    int rc = node_check_map(n, allowed, sizeof(allowed) / sizeof(allowed[0]), e);
    if (rc < 0)
        return rc;
    const char *key = DEFAULT_KEY;
    for (size_t i = 0; i < n->n_pairs; i++) {
        const struct node *k = n->pairs[i].key, *v = n->pairs[i].value;
        if (strcmp(k->str, "metadataKey") == 0) {
            rc = node_get_str(v, &key, e);
            if (rc < 0)
                return rc;
            continue;
        }
        if (a->strategy != CAPTURE_NONE)
            return node_error(k, e,
                              "Multiple strategies found, only one capture strategy is "
                              "permitted");
        if (strcmp(k->str, "regex") == 0) {
            a->strategy = CAPTURE_REGEX;
            rc = decode_regex(a, v, e);
        } else {
            a->strategy = strcmp(k->str, "prefix") == 0 ? CAPTURE_PREFIX : CAPTURE_SUFFIX;
            rc = decode_affix(a, v, e);
        }
        if (rc < 0)
            return rc;
    }
    if (a->strategy == CAPTURE_NONE)
        return node_error(n, e, "Capture strategy of `regex`, `suffix`, or `prefix` is required");
    a->key = strdup(key);
    if (!a->key)
        return node_error(n, e, "out of memory");
    return 0;
}

static void capture_args_free(void *args)
{
    struct capture_args *a = args;
    free(a->key);
    free(a->pattern);
}

/* ---- runtime ------------------------------------------------------------------------ */

static void capture_destroy(struct filter *f)
{
    struct capture_state *st = f->state;
    struct capture_worker *ws = f->per_worker;
    for (unsigned i = 0; ws && st && i < st->n_workers; i++)
        regex_free(ws[i].re);
    free(ws);
    free(st);
    f->state = f->per_worker = NULL;
}

/* One compiled copy per worker, each searched once so that RE2's lazily built automaton
 * exists before the first packet. */
static int create_workers(struct filter *f, struct capture_state *st, unsigned n_workers)
{
    const struct capture_args *a = f->args;
    struct capture_worker *ws = aligned_alloc(64, n_workers * sizeof(*ws));
    if (!ws)
        return -ENOMEM;
    memset(ws, 0, n_workers * sizeof(*ws));
    f->per_worker = ws;
    st->n_workers = n_workers;
    for (unsigned i = 0; i < n_workers; i++) {
        char msg[256];
        /* from_yaml compiled it already, so a failure here is out of memory */
        if (!(ws[i].re = compile_pattern(a->pattern, a->pattern_len, msg, sizeof(msg))))
            return -ENOMEM;
        size_t s0, e0;
        regex_find(ws[i].re, empty_bytes, 0, 0, &s0, &e0);
    }
    return 0;
}

static int capture_create(struct filter *f, const struct filter_build *b, struct err *e)
{
    const struct capture_args *a = f->args;
    struct capture_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    f->state = st; /* from here on, filter_deinit() -> capture_destroy() cleans up */
    size_t key_len = strlen(a->key);
    char *present = malloc(key_len + sizeof(PRESENT_SUFFIX));
    if (!present)
        return -ENOMEM;
    memcpy(present, a->key, key_len);
    memcpy(present + key_len, PRESENT_SUFFIX, sizeof(PRESENT_SUFFIX));
    int key = keytab_intern(b->keys, a->key);
    int present_key = key < 0 ? key : keytab_intern(b->keys, present);
    free(present);
    if (key < 0 || present_key < 0)
        return -ENOMEM;
    st->key = (uint32_t)key;
    st->present_key = (uint32_t)present_key;
    if (a->strategy != CAPTURE_REGEX)
        return 0;
    return create_workers(f, st, b->n_workers ? b->n_workers : 1);
}

/* Copies src[0..n) into the scratch arena as a Bytes value; false when the arena is full. */
static bool copy_bytes(struct pkt_ctx *c, const uint8_t *src, size_t n, struct md_value *v)
{
    uint8_t *dst = (uint8_t *)empty_bytes;
    if (n) {
        if (!(dst = arena_alloc(c->scratch, n)))
            return false;
        memcpy(dst, src, n);
    }
    v->kind = MD_BYTES;
    v->len = (uint32_t)n;
    v->u.bytes = dst;
    return true;
}

struct span {
    size_t start, end;
};

/* Position of a find_iter-style scan over one subject. */
struct match_iter {
    size_t pos;      /* where the next search starts */
    size_t last_end; /* end of the previous match, valid when has_last */
    bool has_last;
};

/* The next non-overlapping match, left to right, as Rust's regex find_iter yields them: an
 * empty match moves the search on by one byte, and an empty match ending where the previous
 * match ended is skipped (so `a*` over "baaa" gives "", "aaa"). false when there are no more.
 * At most len + 1 searches, each linear in len. */
static bool next_match(const struct capture_worker *w, const uint8_t *d, size_t len,
                       struct match_iter *it, struct span *m)
{
    while (it->pos <= len) {
        size_t start, end;
        if (!regex_find(w->re, d, len, it->pos, &start, &end)) {
            it->pos = len + 1;
            return false;
        }
        if (start == end) {
            it->pos = end + 1;
            if (it->has_last && end == it->last_end)
                continue;
        } else {
            it->pos = end;
        }
        it->has_last = true;
        it->last_end = end;
        m->start = start;
        m->end = end;
        return true;
    }
    return false;
}

/* Regex capture into *v: 1 captured, 0 no match, -1 scratch arena full, -2 more than
 * MATCH_CAP matches. The packet is never modified. One match gives Bytes; several give a
 * List of Bytes whose bytes share one copy of the packet region they span. */
static int capture_regex(const struct filter *f, struct pkt_ctx *c, struct md_value *v)
{
    const struct capture_worker *w = &((const struct capture_worker *)f->per_worker)[c->worker];
    const uint8_t *d = pkt_data(&c->pkt);
    size_t len = c->pkt.len;
    struct span spans[MATCH_CAP], m;
    struct match_iter it = {0};
    size_t n = 0;
    while (next_match(w, d, len, &it, &m)) {
        if (n == MATCH_CAP)
            return -2;
        spans[n++] = m;
    }
    if (n == 0)
        return 0;
    if (n == 1)
        return copy_bytes(c, d + spans[0].start, spans[0].end - spans[0].start, v) ? 1 : -1;
    struct md_value region;
    struct md_value *items = arena_alloc(c->scratch, n * sizeof(*items));
    size_t first = spans[0].start;
    if (!items || !copy_bytes(c, d + first, spans[n - 1].end - first, &region))
        return -1;
    for (size_t i = 0; i < n; i++) {
        const struct span *sp = &spans[i];
        items[i].kind = MD_BYTES;
        items[i].len = (uint32_t)(sp->end - sp->start);
        items[i].u.bytes = sp->end > sp->start ? region.u.bytes + (sp->start - first) : empty_bytes;
    }
    v->kind = MD_LIST;
    v->len = (uint32_t)n;
    v->u.items = items;
    return 1;
}

static enum verdict drop(struct pkt_ctx *c, const char *reason)
{
    c->drop_reason = reason;
    return VERDICT_DROP;
}

static enum verdict capture_read(const struct filter *f, struct pkt_ctx *c)
{
    const struct capture_args *a = f->args;
    const struct capture_state *st = f->state;
    struct md_value v = {.kind = MD_NONE};
    bool captured = false;
    if (a->strategy == CAPTURE_REGEX) {
        int rc = capture_regex(f, c, &v);
        if (rc == -2)
            return drop(c, "too many regex matches");
        if (rc < 0)
            return drop(c, "no scratch memory for the captured value");
        captured = rc > 0;
    } else if (c->pkt.len >= a->size) {
        bool is_suffix = a->strategy == CAPTURE_SUFFIX;
        uint32_t at = is_suffix ? c->pkt.len - a->size : 0;
        if (!copy_bytes(c, pkt_data(&c->pkt) + at, a->size, &v))
            return drop(c, "no scratch memory for the captured value");
        if (a->remove) {
            if (is_suffix)
                pkt_trim_back(&c->pkt, a->size);
            else
                pkt_trim_front(&c->pkt, a->size);
        }
        captured = true;
    }
    /* spec filters.md §2 step 2: is_present is set whether or not a value was captured */
    struct md_value present = {.kind = MD_BOOL, .u.b = captured};
    if (md_set(&c->md, st->present_key, &present) < 0)
        return drop(c, "dynamic metadata is full");
    if (!captured)
        return drop(c, "no value captured");
    if (md_set(&c->md, st->key, &v) < 0)
        return drop(c, "dynamic metadata is full");
    return VERDICT_PASS;
}

/* The JSON Schema (draft-07) of this filter's config, as YAML (`quilkin
 * generate-config-schema`): it accepts everything from_yaml accepts. */
static const char capture_schema[] =
    "description: Captures bytes of each packet into dynamic metadata (exactly one of prefix, suffix, regex).\n"
    "type: object\n"
    "properties:\n"
    "  metadataKey:\n"
    "    description: The metadata key the captured bytes are written to.\n"
    "    type: [string, number, boolean]\n"
    "    default: quilkin.dev/capture\n"
    "  prefix:\n"
    "    description: Capture the first `size` bytes.\n"
    "    $ref: '#/definitions/Affix'\n"
    "  suffix:\n"
    "    description: Capture the last `size` bytes.\n"
    "    $ref: '#/definitions/Affix'\n"
    "  regex:\n"
    "    description: Capture every non-overlapping match (RE2 syntax, no back-references or look-around).\n"
    "    type: object\n"
    "    required: [pattern]\n"
    "    properties:\n"
    "      pattern:\n"
    "        type: [string, number, boolean]\n"
    "additionalProperties: false\n"
    "oneOf:\n"
    "  - required: [prefix]\n"
    "  - required: [suffix]\n"
    "  - required: [regex]\n"
    "definitions:\n"
    "  Affix:\n"
    "    type: object\n"
    "    required: [size]\n"
    "    properties:\n"
    "      size:\n"
    "        type: integer\n"
    "        minimum: 0\n"
    "        maximum: 4294967295\n"
    "      remove:\n"
    "        description: Whether the captured bytes are cut from the packet.\n"
    "        type: boolean\n"
    "        default: false\n";

const struct filter_ops capture_filter = {
    .name = "quilkin.filters.capture.v1alpha1.Capture",
    .args_size = sizeof(struct capture_args),
    .need = CFG_REQUIRED,
    .schema = capture_schema,
    .from_yaml = capture_from_yaml,
    .args_free = capture_args_free,
    .create = capture_create,
    .read = capture_read,
    .destroy = capture_destroy,
};
