/* The running configuration as JSON for /config (spec config.md §7): keys clusters,
 * filters, id, version. Control thread; allocates through strbuf. */
#ifndef QK_CONFIG_DUMP_H
#define QK_CONFIG_DUMP_H

#include <pthread.h>
#include <stddef.h>

struct config;
struct node;
struct strbuf;

/* Writes c as JSON. Filter configs are echoed as written in the file (YAML -> JSON), not
 * normalised with defaults. Returns 0, or -ENOMEM when the buffer failed. */
int config_dump_json(const struct config *c, struct strbuf *out);

/* Writes one YAML node as JSON (null/bool/number/string/array/object). */
void node_dump_json(const struct node *n, struct strbuf *out);

/* The JSON of the configuration being served, shared between whichever thread publishes
 * configs and the admin thread rendering /config. Embedded by its owner. */
struct config_view {
    pthread_mutex_t lock;
    char *json; /* owned; NULL before the first set or after an OOM */
    size_t len;
};

void config_view_init(struct config_view *v);
void config_view_deinit(struct config_view *v);

/* Replaces the view with c's JSON (on OOM the view becomes empty). Any thread. */
void config_view_set(struct config_view *v, const struct config *c);

/* Appends the JSON, or `null` when empty. Returns 0 or -ENOMEM. Any thread. */
int config_view_render(struct config_view *v, struct strbuf *out);

#endif
