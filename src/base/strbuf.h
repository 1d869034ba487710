/* A growable text buffer for control-thread output (/metrics, /config, messages). Not for
 * the data path: it allocates. */
#ifndef QK_BASE_STRBUF_H
#define QK_BASE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

/* Embedded by the caller, zero-initialised or strbuf_init(); strbuf_deinit frees. Once an
 * allocation fails, `failed` latches and further appends are ignored. buf is always
 * NUL-terminated when len > 0. */
struct strbuf {
    char *buf;
    size_t len, cap;
    bool failed;
};

void strbuf_init(struct strbuf *b);
void strbuf_deinit(struct strbuf *b);
void strbuf_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_append(struct strbuf *b, const char *s, size_t n);

/* Appends s[0..n) as a JSON string literal, quotes included; bytes that are not valid UTF-8
 * become U+FFFD, control characters are escaped. */
void strbuf_json_string(struct strbuf *b, const char *s, size_t n);

/* Writes the shortest %g form of v that reads back as the same double (0.1, not
 * 0.10000000000000001) into buf (cap >= 32); returns buf. */
const char *fmt_double(char *buf, size_t cap, double v);

#endif
