/* Helpers shared by the xDS unit tests (tests/unit/xds/): spec hex vectors, node trees as
 * JSON, whole configs from YAML. Header-only and test-only: every function is static inline,
 * so a test that includes this and uses only some of them still builds with -Werror. */
#ifndef QK_TEST_XDS_FIXTURE_H
#define QK_TEST_XDS_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/err.h"
#include "base/strbuf.h"
#include "config/config.h"
#include "config/dump.h"
#include "config/node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses "0a 1b ..." hex (spaces and newlines ignored, "quoted" text taken literally) into
 * buf, which the caller sizes; returns the byte count. */
static inline size_t hex(const char *s, uint8_t *buf)
{
    size_t n = 0;
    while (*s) {
        if (*s == ' ' || *s == '\n') {
            s++;
        } else if (*s == '"') {
            for (s++; *s && *s != '"'; s++)
                buf[n++] = (uint8_t)*s;
            s++;
        } else {
            unsigned v;
            assert_int_equal(sscanf(s, "%2x", &v), 1);
            buf[n++] = (uint8_t)v;
            s += 2;
        }
    }
    return n;
}

/* got[0..got_len) equals the bytes of want_hex (at most 1 KiB). */
static inline void assert_bytes(const uint8_t *got, size_t got_len, const char *want_hex)
{
    uint8_t want[1024];
    size_t n = hex(want_hex, want);
    assert_int_equal(got_len, n);
    assert_memory_equal(got, want, n);
}

/* The tree as compact JSON; the caller frees the string. */
static inline char *node_json(const struct node *n)
{
    struct strbuf b;
    strbuf_init(&b);
    node_dump_json(n, &b);
    assert_false(b.failed);
    char *s = strndup(b.buf ? b.buf : "", b.len);
    strbuf_deinit(&b);
    return s;
}

static inline void assert_node_json(const struct node *n, const char *want)
{
    char *s = node_json(n);
    assert_string_equal(s, want);
    free(s);
}

/* A config from YAML text (source "t.yaml"); fails the test if it is rejected. The caller
 * destroys it. */
static inline struct config *parse_config(const char *yaml)
{
    struct config *c = NULL;
    struct err e = {{0}};
    if (config_parse(yaml, strlen(yaml), "t.yaml", &c, &e) != 0)
        fail_msg("config_parse: %s", e.msg);
    return c;
}

#endif
