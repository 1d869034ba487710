/* libFuzzer target for the whole filter chain: a YAML config built into a snapshot (every
 * filter's decoder and create()), then packets run through chain_read/chain_write on a
 * pkt_ctx laid out as proxy/worker.c lays it out. Any input must give a config error or
 * verdicts, never a crash, an overflow or a leak.
 *
 * Input format (fuzz/mkseeds_filter_chain.py writes it):
 *   u16 LE config length L, L bytes of YAML, then packets, each
 *   u8 flags (bit 0: write direction, bit 1: IPv6 client; the high bits also vary the
 *   clocks), u16 LE length, bytes
 *   (a short last packet takes what is left).
 * When the first two bytes do not give a length that fits (e.g. a plain .yaml seed), the
 * whole input is the config and a fixed set of packets runs in both directions. */
#include "base/arena.h"
#include "base/err.h"
#include "base/metrics.h"
#include "config/config.h"
#include "filters/chain.h"
#include "filters/filter.h"
#include "filters/metadata.h"
#include "proxy/snapshot.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* proxy/worker.c's layout: HEADROOM + MAX_DGRAM + TAILROOM, and a 64 KiB scratch arena. */
#define HEADROOM 512
#define BUF_CAP (512 + 65536 + 16384)
#define ARENA_BYTES (64 * 1024)
#define MAX_PACKETS 16
#define NOW_UNIX_S 1700000000ull

struct fuzz_env {
    struct snapshot *snap;
    uint8_t *buf, *spare;
    struct arena scratch;
};

/* Runs one packet; the verdict does not matter, only that nothing breaks. */
static void run_packet(struct fuzz_env *env, const uint8_t *p, size_t len, uint8_t flags)
{
    if (len > BUF_CAP - HEADROOM)
        len = BUF_CAP - HEADROOM;
    struct pkt_ctx c;
    memset(&c, 0, sizeof(c));
    memcpy(env->buf + HEADROOM, p, len);
    c.pkt.buf = env->buf;
    c.pkt.off = HEADROOM;
    c.pkt.len = (uint32_t)len;
    c.pkt.cap = BUF_CAP;
    const struct snapshot *s = env->snap;
    c.all_eps = s->eps;
    c.n_all_eps = s->n_eps;
    c.tokens = s->tokens;
    c.eps.idx = NULL;
    c.eps.n = s->n_eps;
    md_clear(&c.md);
    arena_reset(&env->scratch);
    c.scratch = &env->scratch;
    c.spare = env->spare;
    c.spare_cap = BUF_CAP;
    c.worker = 0;
    c.now_ns = 1000000000ull * (1 + (flags >> 4));
    c.now_unix_ns = (NOW_UNIX_S + (flags >> 2)) * 1000000000ull + 123456789ull;
    struct addr client = {.family = AF_INET, .port = 40000, .ip = {127, 0, 0, 1}};
    if (flags & 2) {
        client.family = AF_INET6;
        memset(client.ip, 0, sizeof(client.ip));
        client.ip[15] = 1;
    }
    if (flags & 1) {
        if (s->n_eps)
            c.src = s->eps[flags % s->n_eps].addr;
        c.dst = client;
        chain_write(&s->chain, &c);
    } else {
        c.src = client;
        chain_read(&s->chain, &c);
    }
    /* whatever the filters did, the packet must still lie inside its buffer */
    if ((uint64_t)c.pkt.off + c.pkt.len > c.pkt.cap)
        abort();
    if (c.eps.n && c.eps.idx)
        for (uint32_t i = 0; i < c.eps.n; i++)
            if (c.eps.idx[i] >= s->n_eps)
                abort();
}

/* Packets for inputs that are only a config: the spec's Snappy vectors, a timestamp, a
 * routing-token-like suffix, an empty datagram and a large one. */
static void run_default_packets(struct fuzz_env *env)
{
    static const uint8_t framed_hello[] = {0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50,
                                           0x70, 0x59, 0x01, 0x09, 0x00, 0x00, 0xbb, 0x1f,
                                           0x1c, 0x19, 0x68, 0x65, 0x6c, 0x6c, 0x6f};
    static const uint8_t stamp[] = {'t', 0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00};
    static const char *const texts[] = {"hello", "", "helloabc", "\x01payload", "xyz"};
    for (uint8_t dir = 0; dir < 2; dir++) {
        for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
            run_packet(env, (const uint8_t *)texts[i], strlen(texts[i]),
                       (uint8_t)(dir | (i == 0 ? 0x40 : 0))); /* one timed run */
        run_packet(env, framed_hello, sizeof(framed_hello), dir);
        run_packet(env, stamp, sizeof(stamp), (uint8_t)(dir | 2));
    }
    static const uint8_t big[65507]; /* zeros: compressible, the largest IPv4 datagram */
    run_packet(env, big, sizeof(big), 0);
    run_packet(env, big, sizeof(big), 1);
}

/* Snapshot building resolves DNS names (blocking); the fuzzer sticks to IP literals. */
static bool has_dns_names(const struct config *cfg)
{
    for (size_t g = 0; g < cfg->n_groups; g++)
        for (size_t i = 0; i < cfg->groups[g].n_endpoints; i++)
            if (cfg->groups[g].endpoints[i].host)
                return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *cfg_text = data, *rest = NULL;
    size_t cfg_len = size, rest_len = 0;
    if (size >= 2) {
        size_t l = (size_t)data[0] | (size_t)data[1] << 8;
        if (l <= size - 2) {
            cfg_text = data + 2;
            cfg_len = l;
            rest = data + 2 + l;
            rest_len = size - 2 - l;
        }
    }
    struct err e = {0};
    struct config *cfg = NULL;
    if (config_parse((const char *)cfg_text, cfg_len, "fuzz.yaml", &cfg, &e) != 0)
        return 0;
    if (has_dns_names(cfg)) {
        config_destroy(cfg);
        return 0;
    }
    struct fuzz_env env = {0};
    if (snapshot_create(cfg, 1, NULL, &env.snap, &e) != 0) {
        config_destroy(cfg); /* still ours on failure */
        return 0;
    }
    env.buf = malloc(BUF_CAP);
    env.spare = malloc(BUF_CAP);
    if (!env.buf || !env.spare || arena_init(&env.scratch, ARENA_BYTES) != 0)
        goto out;
    if (!rest) {
        run_default_packets(&env);
    } else {
        for (int n = 0; n < MAX_PACKETS && rest_len > 0; n++) {
            uint8_t flags = rest[0];
            size_t len = rest_len >= 3 ? ((size_t)rest[1] | (size_t)rest[2] << 8) : 0;
            size_t hdr = rest_len >= 3 ? 3 : rest_len;
            rest += hdr;
            rest_len -= hdr;
            if (len > rest_len)
                len = rest_len;
            run_packet(&env, rest, len, flags);
            rest += len;
            rest_len -= len;
        }
    }
    arena_deinit(&env.scratch);
out:
    free(env.buf);
    free(env.spare);
    snapshot_destroy(env.snap); /* owns cfg */
    metrics_reset_for_tests();  /* filter series (e.g. per metadata key) must not pile up */
    return 0;
}
