/* Bump allocator over one malloc'd block; see arena.h. */
#include "base/arena.h"

#include <errno.h>
#include <stdlib.h>

int arena_init(struct arena *a, size_t cap)
{
    a->base = malloc(cap);
    if (!a->base)
        return -ENOMEM;
    a->cap = cap;
    a->used = 0;
    return 0;
}

void arena_deinit(struct arena *a)
{
    free(a->base);
    a->base = NULL;
    a->cap = a->used = 0;
}

void *arena_alloc(struct arena *a, size_t n)
{
    size_t start = (a->used + 15u) & ~(size_t)15u;
    if (start > a->cap || n > a->cap - start)
        return NULL;
    a->used = start + n;
    return a->base + start;
}
