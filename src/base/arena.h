/* Per-worker bump allocator for per-packet scratch (metadata lists, narrowed endpoint
 * sets). Memory is allocated once at creation; arena_alloc never calls malloc, and fails
 * (returns NULL) when the arena is full. Reset after every packet. Single owner thread. */
#ifndef QK_BASE_ARENA_H
#define QK_BASE_ARENA_H

#include <stddef.h>
#include <stdint.h>

/* Embedded by its owner; arena_init allocates the backing block, arena_deinit frees it. */
struct arena {
    uint8_t *base;
    size_t cap;
    size_t used;
};

/* Returns 0 or -ENOMEM. */
int arena_init(struct arena *a, size_t cap);
void arena_deinit(struct arena *a);

/* 16-byte aligned block of n bytes, or NULL when it does not fit. Hot-path safe. */
void *arena_alloc(struct arena *a, size_t n);

static inline void arena_reset(struct arena *a)
{
    a->used = 0;
}

#endif
