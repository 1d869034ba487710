/* libFuzzer target for the YAML config loader (yaml.c, node.c, load.c): any bytes must give a
 * config or an error, never a crash or a leak. Also drives every typed getter over the tree. */
#include "base/err.h"
#include "config/config.h"
#include "config/node.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void poke(const struct node *n, unsigned depth)
{
    static const char *const names[] = {"a", "v1alpha1", "true"};
    struct err e = {0};
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    bool b;
    const char *s;
    int idx;
    node_get_u16(n, &u16, &e);
    node_get_u32(n, &u32, &e);
    node_get_u64(n, &u64, &e);
    node_get_bool(n, &b, &e);
    node_get_str(n, &s, &e);
    node_get_enum(n, names, 3, &idx, &e);
    node_check_map(n, names, 3, &e);
    node_map_get(n, "a");
    (void)node_kind_name(n->kind);
    for (size_t i = 0; i < n->n_items; i++)
        poke(n->items[i], depth + 1);
    for (size_t i = 0; i < n->n_pairs; i++) {
        poke(n->pairs[i].key, depth + 1);
        poke(n->pairs[i].value, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err e = {0};
    struct config *c = NULL;
    if (config_parse((const char *)data, size, "fuzz.yaml", &c, &e) == 0) {
        poke(c->root, 0);
        struct addr a = {0};
        config_set_unlocated(c, &a, 1);
        (void)config_endpoint_count(c);
        config_destroy(c);
    }
    return 0;
}
