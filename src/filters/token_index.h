/* Token -> endpoints index for TokenRouter: built once per snapshot from the endpoints'
 * quilkin.dev tokens, so a packet-time lookup is one hash probe whatever the number of
 * endpoints. Read-only after build; any thread may look up. */
#ifndef QK_FILTERS_TOKEN_INDEX_H
#define QK_FILTERS_TOKEN_INDEX_H

#include <stddef.h>
#include <stdint.h>

struct endpoint;
struct token_index;

/* Indexes eps[0..n). Token bytes are borrowed from the endpoints' configs, which must
 * outlive the index (both belong to one snapshot). 0 or -ENOMEM. */
int token_index_build(const struct endpoint *eps, uint32_t n, struct token_index **out);

/* Indices (ascending) of the endpoints holding token tok[0..len), or NULL with *n = 0. */
const uint32_t *token_index_lookup(const struct token_index *ti, const uint8_t *tok,
                                   size_t len, uint32_t *n);

/* Number of distinct tokens. */
uint32_t token_index_size(const struct token_index *ti);

void token_index_destroy(struct token_index *ti);

#endif
