/* Helpers shared by the filter unit tests (tests/unit/filters/): build one filter or a whole
 * chain from YAML text, and prepare a pkt_ctx over a test buffer as a worker would. They own
 * nothing: the caller's fixture owns the filter, chain, keytab, arena and buffer. Header-only
 * and test-only: every function is static inline, so a test that uses only some still builds
 * with -Werror. */
#ifndef QK_TEST_FILTER_FIXTURE_H
#define QK_TEST_FILTER_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/arena.h"
#include "base/err.h"
#include "config/config.h"
#include "config/node.h"
#include "filters/chain.h"
#include "filters/filter.h"

#include <stdio.h>
#include <string.h>

/* Builds filter `name` into f (which must hold nothing: it is zeroed first) from the YAML text
 * of its config (NULL: no config) for 2 workers, interning keys into `keys`. Returns the
 * build status; e holds the message. */
static inline int build_filter_yaml(struct filter *f, const char *name, const char *yaml,
                                    struct keytab *keys, struct err *e)
{
    memset(f, 0, sizeof(*f));
    memset(e, 0, sizeof(*e));
    struct node *n = NULL;
    if (yaml) {
        n = node_parse_yaml(yaml, strlen(yaml), e);
        assert_non_null(n);
    }
    struct filter_build b = {.keys = keys, .n_workers = 2};
    int rc = filter_build_one(f, name, NULL, n, &b, e);
    node_free(n);
    return rc;
}

/* Building filter `name` from `yaml` fails with `msg` somewhere in the message; f and e keep
 * what the failed build left, for the caller's further checks. */
static inline void expect_filter_reject(struct filter *f, const char *name, const char *yaml,
                                        struct keytab *keys, const char *msg, struct err *e)
{
    assert_int_not_equal(build_filter_yaml(f, name, yaml, keys, e), 0);
    if (!strstr(e->msg, msg))
        fail_msg("expected \"%s\" in \"%s\"", msg, e->msg);
}

/* Parses a whole config from YAML text (it must parse) and builds its filters into ch (deinit'd
 * first) for n_workers workers. Returns the build status; e holds the message. */
static inline int build_chain_yaml(struct chain *ch, struct keytab *keys, const char *yaml,
                                   unsigned n_workers, struct err *e)
{
    struct config *cfg = NULL;
    memset(e, 0, sizeof(*e));
    assert_int_equal(config_parse(yaml, strlen(yaml), "test.yaml", &cfg, e), 0);
    chain_deinit(ch);
    struct filter_build b = {.keys = keys, .n_workers = n_workers};
    int rc = chain_build(ch, cfg->filters, cfg->n_filters, &b, e);
    config_destroy(cfg); /* the chain must not keep pointers into the YAML tree */
    return rc;
}

/* build_chain_yaml for a chain of the one filter `name` whose config is `config_flow` (a YAML
 * flow map of up to ~900 characters). */
static inline int build_chain_of(struct chain *ch, struct keytab *keys, const char *name,
                                 const char *config_flow, unsigned n_workers, struct err *e)
{
    char yaml[1024];
    snprintf(yaml, sizeof(yaml), "filters:\n  - name: %s\n    config: %s\n", name, config_flow);
    return build_chain_yaml(ch, keys, yaml, n_workers, e);
}

/* Resets c as a worker does for a new datagram: the len bytes of data copied to buf + off of a
 * buffer of cap bytes (the caller checks they fit), and scratch, unless NULL, reset and
 * attached. Everything else in c is zero. */
static inline void load_packet(struct pkt_ctx *c, uint8_t *buf, uint32_t cap, uint32_t off,
                               const void *data, size_t len, struct arena *scratch)
{
    memset(c, 0, sizeof(*c));
    memcpy(buf + off, data, len);
    c->pkt.buf = buf;
    c->pkt.off = off;
    c->pkt.len = (uint32_t)len;
    c->pkt.cap = cap;
    if (scratch) {
        arena_reset(scratch);
        c->scratch = scratch;
    }
}

#endif
