/* The running configuration as JSON for /config (spec config.md §7): keys clusters,
 * filters, id, version. Control thread; allocates through strbuf. */
#ifndef QK_CONFIG_DUMP_H
#define QK_CONFIG_DUMP_H

struct config;
struct node;
struct strbuf;

/* Writes c as JSON. Filter configs are echoed as written in the file (YAML -> JSON), not
 * normalised with defaults. Returns 0, or -ENOMEM when the buffer failed. */
int config_dump_json(const struct config *c, struct strbuf *out);

/* Writes one YAML node as JSON (null/bool/number/string/array/object). */
void node_dump_json(const struct node *n, struct strbuf *out);

#endif
