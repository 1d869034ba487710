/* Snapshots: built from a config (endpoint union, DNS names, chain), published and retired
 * under RCU while reader threads use them (tests src/proxy/snapshot.c). Run under ASan, a
 * snapshot freed too early is a use-after-free report. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "config/config.h"
#include "proxy/snapshot.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static struct snapshot *build(const char *yaml)
{
    struct config *cfg = NULL;
    struct err e = {{0}};
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &cfg, &e), 0);
    struct snapshot *s = NULL;
    assert_int_equal(snapshot_create(cfg, 2, &s, &e), 0);
    return s;
}

static void test_endpoint_union(void **state)
{
    (void)state;
    struct snapshot *s = build("clusters:\n"
                               "  - endpoints:\n"
                               "      - address: 127.0.0.1:2000\n"
                               "      - address: 127.0.0.1:1000\n"
                               "  - locality: {region: eu}\n"
                               "    endpoints:\n"
                               "      - address: \"[::1]:3000\"\n"
                               "      - address: localhost:4000\n"
                               "filters:\n"
                               "  - name: quilkin.filters.pass.v1alpha1.Pass\n");
    assert_int_equal(s->n_eps, 4);
    char buf[ADDR_STR_CAP];
    /* group order, address order inside a group (names first) */
    assert_string_equal(addr_format(&s->eps[0].addr, buf), "127.0.0.1:1000");
    assert_string_equal(addr_format(&s->eps[1].addr, buf), "127.0.0.1:2000");
    /* localhost resolves through /etc/hosts to a loopback address, port kept */
    assert_int_not_equal(s->eps[2].addr.family, 0);
    assert_int_equal(s->eps[2].addr.port, 4000);
    assert_string_equal(addr_format(&s->eps[3].addr, buf), "[::1]:3000");
    assert_int_equal(s->n_unresolved, 0);
    assert_int_equal(s->chain.n, 1);
    snapshot_destroy(s);
}

static void test_bad_chain_keeps_config_with_caller(void **state)
{
    (void)state;
    const char *yaml = "filters:\n  - name: nope\n";
    struct config *cfg = NULL;
    struct err e = {{0}};
    assert_int_equal(config_parse(yaml, strlen(yaml), "t.yaml", &cfg, &e), 0);
    struct snapshot *s = NULL;
    assert_int_not_equal(snapshot_create(cfg, 2, &s, &e), 0);
    assert_null(s);
    assert_non_null(strstr(e.msg, "filter `nope` not found"));
    config_destroy(cfg); /* still ours on failure */
}

#define READERS 2
#define SWAPS 200

static atomic_bool stop_readers;
static atomic_uint reads_done;

struct reader_result {
    uint64_t generations_seen;
    bool ok;
};

static void *reader(void *arg)
{
    struct reader_result *r = arg;
    snapshot_reader_register();
    uint64_t last = 0;
    r->ok = true;
    while (!atomic_load(&stop_readers)) {
        struct snapshot *s = snapshot_current();
        if (s) {
            /* each snapshot i has i+1 endpoints on ports 1..i+1: check it is whole */
            uint64_t g = s->generation;
            if (g < last)
                r->ok = false;
            if (g != last)
                r->generations_seen++;
            last = g;
            for (uint32_t k = 0; k < s->n_eps; k++)
                if (s->eps[k].addr.port != k + 1)
                    r->ok = false;
            atomic_fetch_add(&reads_done, 1);
        }
        snapshot_reader_quiescent();
    }
    snapshot_reader_unregister();
    return NULL;
}

static void test_publish_while_reading(void **state)
{
    (void)state;
    pthread_t th[READERS];
    struct reader_result res[READERS];
    memset(res, 0, sizeof(res));
    atomic_store(&stop_readers, false);
    for (int i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, reader, &res[i]);
    char yaml[8192];
    for (int i = 0; i < SWAPS; i++) {
        size_t n = (size_t)snprintf(yaml, sizeof(yaml), "clusters:\n  - endpoints:\n");
        for (int k = 0; k <= i % 20; k++)
            n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "      - address: 10.0.0.1:%d\n",
                                  k + 1);
        snapshot_publish(build(yaml)); /* frees the previous one after a grace period */
    }
    /* bounded wait for the readers to have done some work (10 s at most) */
    for (int spin = 0; spin < 10000 && atomic_load(&reads_done) < 1000; spin++)
        usleep(1000);
    assert_true(atomic_load(&reads_done) >= 1000);
    atomic_store(&stop_readers, true);
    for (int i = 0; i < READERS; i++) {
        pthread_join(th[i], NULL);
        assert_true(res[i].ok);
        assert_true(res[i].generations_seen >= 1);
    }
    struct snapshot *cur = snapshot_current();
    assert_non_null(cur);
    assert_int_equal(cur->n_eps, (SWAPS - 1) % 20 + 1);
    snapshot_publish(NULL); /* retire the last one */
    assert_null(snapshot_current());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoint_union),
        cmocka_unit_test(test_bad_chain_keeps_config_with_caller),
        cmocka_unit_test(test_publish_while_reading),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
