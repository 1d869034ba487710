/* libyaml event stream -> struct node tree with line/column and resolved scalar kinds. Knows
 * nothing about what a config means; it must stay memory-safe on any input (fuzzed). */
#include "config/node.h"

#include "base/err.h"

#include <yaml.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Deeper nesting than any real config; bounds the builder stack and the recursion in
 * node_free() and in decoders that walk the tree. */
#define MAX_DEPTH 64

struct frame {
    struct node *n;
    size_t cap; /* allocated items/pairs */
};

struct builder {
    struct node *root;
    struct frame stack[MAX_DEPTH];
    size_t depth;
};

void node_free(struct node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n_items; i++)
        node_free(n->items[i]);
    free(n->items);
    for (size_t i = 0; i < n->n_pairs; i++) {
        node_free(n->pairs[i].key);
        node_free(n->pairs[i].value);
    }
    free(n->pairs);
    free(n->str);
    free(n);
}

static struct node *node_new(enum node_kind kind, const yaml_mark_t *m, const char *text,
                             size_t len)
{
    struct node *n = node_new_text(kind, text, len);
    if (!n)
        return NULL;
    n->line = (unsigned)m->line + 1;
    n->col = (unsigned)m->column + 1;
    return n;
}

static bool text_is(const char *s, size_t len, const char *const *words)
{
    for (; *words; words++)
        if (strlen(*words) == len && memcmp(s, *words, len) == 0)
            return true;
    return false;
}

static int digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return 99;
}

enum int_syntax { NOT_INT = 0, IS_INT, INT_TOO_BIG };

/* [-+]?(0x[0-9a-fA-F]+|0o[0-7]+|[0-9]+). Like serde_yaml (what Quilkin v0.7.0 uses), a
 * decimal with a leading zero ("007") is a string, not a number. An integer whose magnitude
 * needs more than 64 bits stays a string (node.h), rather than becoming a float. */
static enum int_syntax resolve_int(const char *s, size_t len, struct node *n)
{
    size_t i = 0;
    bool neg = false;
    if (i < len && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    unsigned base = 10;
    if (len - i > 2 && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'o')) {
        base = s[i + 1] == 'x' ? 16 : 8;
        i += 2;
    } else if (len - i > 1 && s[i] == '0') {
        return NOT_INT;
    }
    if (i == len)
        return NOT_INT;
    uint64_t v = 0;
    bool too_big = false;
    for (; i < len; i++) {
        unsigned d = (unsigned)digit_value(s[i]);
        if (d >= base)
            return NOT_INT;
        if (v > (UINT64_MAX - d) / base)
            too_big = true; /* keep scanning: a bad digit later still makes it NOT_INT */
        else
            v = v * base + d;
    }
    if (too_big)
        return INT_TOO_BIG;
    n->kind = NODE_INT;
    n->u = v;
    n->is_neg = neg && v != 0;
    n->f = n->is_neg ? -(double)v : (double)v;
    return IS_INT;
}

/* YAML 1.2 core float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? plus the
 * .inf/.nan spellings. Finite text that overflows a double stays a string (serde_yaml). */
static bool resolve_float(const char *s, size_t len, struct node *n)
{
    static const char *const inf[] = {".inf", ".Inf", ".INF", NULL};
    static const char *const nan_words[] = {".nan", ".NaN", ".NAN", NULL};
    size_t i = 0;
    bool neg = false;
    if (i < len && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    if (text_is(s + i, len - i, inf)) {
        n->kind = NODE_FLOAT;
        n->f = neg ? -INFINITY : INFINITY;
        return true;
    }
    if (i == 0 && text_is(s, len, nan_words)) {
        n->kind = NODE_FLOAT;
        n->f = NAN;
        return true;
    }
    size_t int_digits = 0, frac_digits = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        i++;
        int_digits++;
    }
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
            frac_digits++;
        }
    }
    if (int_digits == 0 && frac_digits == 0)
        return false;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t exp_digits = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
            exp_digits++;
        }
        if (exp_digits == 0)
            return false;
    }
    if (i != len)
        return false;
    /* The text is NUL-terminated (n->str) and fully validated above. strtod reads '.' as the
     * decimal point because nothing in this program calls setlocale(). */
    double d = strtod(n->str, NULL);
    if (!isfinite(d))
        return false;
    n->kind = NODE_FLOAT;
    n->f = d;
    return true;
}

/* Plain scalars only; quoted, literal and folded scalars are always strings. */
static void resolve_plain(struct node *n)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    const char *s = n->str;
    size_t len = n->str_len;
    if (text_is(s, len, nulls)) {
        n->kind = NODE_NULL;
    } else if (text_is(s, len, trues)) {
        n->kind = NODE_BOOL;
        n->b = true;
    } else if (text_is(s, len, falses)) {
        n->kind = NODE_BOOL;
        n->b = false;
    } else {
        enum int_syntax is = resolve_int(s, len, n);
        if (is == IS_INT)
            return;
        if (is == INT_TOO_BIG) {
            n->kind = NODE_STR;
            return;
        }
        /* "007" is neither an integer nor a float (serde_yaml digits_but_not_number). */
        size_t i = len && (s[0] == '+' || s[0] == '-') ? 1 : 0;
        bool leading_zero_digits = len - i > 1 && s[i] == '0';
        for (size_t k = i + 1; leading_zero_digits && k < len; k++)
            if (s[k] < '0' || s[k] > '9')
                leading_zero_digits = false;
        if (leading_zero_digits || !resolve_float(s, len, n))
            n->kind = NODE_STR;
    }
}

static bool tag_is_str(const yaml_char_t *tag)
{
    if (!tag)
        return false;
    const char *t = (const char *)tag;
    return strcmp(t, YAML_STR_TAG) == 0 || strcmp(t, "!") == 0;
}

static int grow(struct frame *f, size_t elem_size, void **arr)
{
    size_t used = f->n->kind == NODE_SEQ ? f->n->n_items : f->n->n_pairs;
    if (used < f->cap)
        return 0;
    size_t cap = f->cap ? f->cap * 2 : 4;
    void *p = realloc(*arr, cap * elem_size);
    if (!p)
        return -ENOMEM;
    *arr = p;
    f->cap = cap;
    return 0;
}

/* Links a new node into the tree at once, so freeing the root always frees everything, even
 * halfway through a document. A map key gets a pair with a NULL value until its value comes. */
static int attach(struct builder *b, struct node *n)
{
    if (b->depth == 0) {
        b->root = n;
        return 0;
    }
    struct frame *f = &b->stack[b->depth - 1];
    struct node *p = f->n;
    if (p->kind == NODE_SEQ) {
        if (grow(f, sizeof(*p->items), (void **)&p->items) < 0)
            return -ENOMEM;
        p->items[p->n_items++] = n;
        return 0;
    }
    if (p->n_pairs > 0 && p->pairs[p->n_pairs - 1].value == NULL) {
        p->pairs[p->n_pairs - 1].value = n;
        return 0;
    }
    if (grow(f, sizeof(*p->pairs), (void **)&p->pairs) < 0)
        return -ENOMEM;
    p->pairs[p->n_pairs].key = n;
    p->pairs[p->n_pairs].value = NULL;
    p->n_pairs++;
    return 0;
}

static int mark_error(const yaml_mark_t *m, struct err *e, const char *what)
{
    return err_set(e, "line %u column %u: %s", (unsigned)m->line + 1, (unsigned)m->column + 1,
                   what);
}

static int parser_error(const yaml_parser_t *p, struct err *e)
{
    if (p->error == YAML_MEMORY_ERROR) {
        err_set(e, "line 1 column 1: out of memory while parsing YAML");
        return -ENOMEM;
    }
    const char *problem = p->problem ? p->problem : "invalid YAML";
    /* Reader errors (bad encoding) carry no mark; the scanner's position is the best hint. */
    const yaml_mark_t *m = p->error == YAML_READER_ERROR ? &p->mark : &p->problem_mark;
    if (p->context)
        return err_set(e, "line %u column %u: %s (%s at line %u column %u)",
                       (unsigned)m->line + 1, (unsigned)m->column + 1, problem, p->context,
                       (unsigned)p->context_mark.line + 1, (unsigned)p->context_mark.column + 1);
    return err_set(e, "line %u column %u: %s", (unsigned)m->line + 1, (unsigned)m->column + 1,
                   problem);
}

/* Handles one content event. Returns 1 when the first document is complete, 0 to go on, or
 * a negative errno with e set. */
static int on_event(struct builder *b, const yaml_event_t *ev, struct err *e)
{
    const yaml_mark_t *m = &ev->start_mark;
    struct node *n;
    switch (ev->type) {
    case YAML_STREAM_START_EVENT:
    case YAML_DOCUMENT_START_EVENT:
        return 0;
    case YAML_DOCUMENT_END_EVENT:
    case YAML_STREAM_END_EVENT:
        return 1;
    case YAML_ALIAS_EVENT:
        return mark_error(m, e, "aliases are not supported");
    case YAML_SCALAR_EVENT:
        if (ev->data.scalar.anchor)
            return mark_error(m, e, "anchors are not supported");
        n = node_new(NODE_STR, m, (const char *)ev->data.scalar.value, ev->data.scalar.length);
        if (!n)
            goto oom;
        if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !tag_is_str(ev->data.scalar.tag))
            resolve_plain(n);
        if (attach(b, n) < 0) {
            node_free(n);
            goto oom;
        }
        return 0;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool is_seq = ev->type == YAML_SEQUENCE_START_EVENT;
        const yaml_char_t *anchor =
            is_seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor;
        if (anchor)
            return mark_error(m, e, "anchors are not supported");
        if (b->depth >= MAX_DEPTH)
            return mark_error(m, e, "nesting too deep (more than 64 levels)");
        n = node_new(is_seq ? NODE_SEQ : NODE_MAP, m, "", 0);
        if (!n)
            goto oom;
        if (attach(b, n) < 0) {
            node_free(n);
            goto oom;
        }
        b->stack[b->depth].n = n;
        b->stack[b->depth].cap = 0;
        b->depth++;
        return 0;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->depth > 0)
            b->depth--;
        return 0;
    case YAML_NO_EVENT:
    default:
        return 0;
    }
oom:
    err_set(e, "line %u column %u: out of memory while parsing YAML", (unsigned)m->line + 1,
            (unsigned)m->column + 1);
    return -ENOMEM;
}

struct node *node_parse_yaml(const char *buf, size_t len, struct err *e)
{
    yaml_parser_t p;
    struct builder b = {0};
    if (!yaml_parser_initialize(&p)) {
        err_set(e, "line 1 column 1: out of memory while parsing YAML");
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)(buf ? buf : ""), buf ? len : 0);
    int rc = 0;
    while (rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = parser_error(&p, e);
            break;
        }
        rc = on_event(&b, &ev, e);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    if (rc < 0) {
        node_free(b.root);
        return NULL;
    }
    if (!b.root) {
        /* Empty or comment-only input. */
        static const yaml_mark_t start = {0, 0, 0};
        b.root = node_new(NODE_NULL, &start, "", 0);
        if (!b.root) {
            err_set(e, "line 1 column 1: out of memory while parsing YAML");
            return NULL;
        }
    }
    return b.root;
}
