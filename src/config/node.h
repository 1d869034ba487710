/* A parsed YAML document as a tree of nodes that remember their line and column, plus the
 * typed getters every decoder (config loader, filter configs) uses, so that all messages
 * read alike: "line 12 column 7: expected an unsigned integer, found string". */
#ifndef QK_CONFIG_NODE_H
#define QK_CONFIG_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct err;

enum node_kind {
    NODE_NULL = 0, /* ~, null, Null, NULL, or an empty value */
    NODE_BOOL,     /* true/false (also True/TRUE/False/FALSE) */
    NODE_INT,      /* plain scalar that is a YAML 1.2 integer (decimal, 0x.., 0o..) */
    NODE_FLOAT,    /* plain scalar that is a YAML 1.2 float (1.5, 1e3, .inf, .nan) */
    NODE_STR,      /* any other scalar, and every quoted scalar */
    NODE_SEQ,
    NODE_MAP,
};

struct node_pair;

/* Owned by its parent; the root is owned by whoever called node_parse_yaml() and freed with
 * node_free(). Never modified after parsing. */
struct node {
    enum node_kind kind;
    unsigned line, col;     /* 1-based position of the node in the source */
    char *str;              /* scalar source text (NUL-terminated); "" for SEQ/MAP */
    size_t str_len;         /* may differ from strlen(str) when the text holds a NUL */
    bool b;                 /* NODE_BOOL */
    bool is_neg;            /* NODE_INT: value is negative, magnitude in u */
    uint64_t u;             /* NODE_INT magnitude (integers beyond 64 bits are NODE_STR) */
    double f;               /* NODE_FLOAT (and NODE_INT as a double) */
    struct node **items;    /* NODE_SEQ: n_items children */
    size_t n_items;
    struct node_pair *pairs; /* NODE_MAP: n_pairs entries in source order */
    size_t n_pairs;
};

struct node_pair {
    struct node *key; /* any kind: decoders reject non-string keys where the spec says */
    struct node *value;
};

/* Parses the first YAML document of buf. An empty or comment-only input gives a NODE_NULL
 * root. Aliases and anchors are rejected (no expansion bombs). Returns the root, or NULL
 * with e set to "line L column C: reason". Caller owns the result. */
struct node *node_parse_yaml(const char *buf, size_t len, struct err *e);

void node_free(struct node *n);

/* Human name of a kind for messages: "null", "boolean", "integer", "float", "string",
 * "sequence", "map". */
const char *node_kind_name(enum node_kind k);

/* Value of the first pair whose key is the string `key`, or NULL. n may be NULL or any kind. */
const struct node *node_map_get(const struct node *map, const char *key);

/* Typed getters. Each returns 0, or -EINVAL with e set to "line L column C: ..." naming what
 * was expected and what was found. Integers accept only NODE_INT (a quoted "3" is rejected,
 * spec filters.md §1.2). node_get_str accepts NODE_STR and, like serde, the source text of
 * other scalars (so `id: 42` reads "42"); it rejects SEQ/MAP/NULL. The returned string is
 * borrowed from the tree. */
int node_get_u16(const struct node *n, uint16_t *out, struct err *e);
int node_get_u32(const struct node *n, uint32_t *out, struct err *e);
int node_get_u64(const struct node *n, uint64_t *out, struct err *e);
int node_get_bool(const struct node *n, bool *out, struct err *e);
int node_get_str(const struct node *n, const char **out, struct err *e);

/* Exact match of a string node against names[0..n_names); *out = index. Error lists the
 * accepted values ("unknown variant `x`, expected one of `A`, `B`"). */
int node_get_enum(const struct node *n, const char *const *names, size_t n_names, int *out,
                  struct err *e);

/* Checks that n is a map (else error "expected a map") and, when allowed != NULL, that every
 * key is a string in allowed[0..n_allowed) (else "unknown field `K`, expected one of ..."). */
int node_check_map(const struct node *n, const char *const *allowed, size_t n_allowed,
                   struct err *e);

/* Sets e to "line L column C: " + formatted text and returns -EINVAL. */
int node_error(const struct node *n, struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- building trees in code (config/node_build.c) ----
 * Constructors return NULL on OOM. The append functions take ownership of the child even
 * when they fail (it is freed), so calls can be chained without leaks; they return 0 or
 * -ENOMEM (also when the child is NULL, i.e. its constructor failed). */
/* A childless node of any kind holding a copy of text[0..len) as its source text (the typed
 * fields are the caller's to fill). Both the YAML parser and the builders below use it. */
struct node *node_new_text(enum node_kind kind, const char *text, size_t len);
struct node *node_new_null(void);
struct node *node_new_bool(bool b);
struct node *node_new_int(bool is_neg, uint64_t magnitude);
struct node *node_new_str(const char *s, size_t len);
struct node *node_new_seq(void);
struct node *node_new_map(void);
int node_seq_append(struct node *seq, struct node *item);
int node_map_append(struct node *map, const char *key, size_t key_len, struct node *value);

/* Deep copy (positions kept). NULL on OOM or when n is NULL. */
struct node *node_clone(const struct node *n);

/* Same tree, ignoring positions: kinds, source texts, items and pairs in order. Two NULLs
 * are equal. Recursion depth is the tree's (bounded by the YAML parser and xDS decoders). */
bool node_equal(const struct node *a, const struct node *b);

#endif
