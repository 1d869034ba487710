/* LD_PRELOAD shim for tests: counts heap calls (malloc, calloc, realloc, free and the aligned
 * forms) and lock calls (pthread mutex, rwlock and spin locks) per thread, in a file the test
 * maps and reads at any moment (ALLOCCOUNT_FILE), so a test can take a before/after snapshot
 * around a window of traffic and see which thread did what. It never changes what the
 * calls do: allocations go to glibc's own __libc_* functions, locks to the next definition.
 * Not for sanitizer builds (ASan replaces malloc itself); build-only, never linked into
 * quilkin. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ALLOCCOUNT_MAGIC 0x41434e54u /* "ACNT" */
#define MAX_THREADS 1024

/* The file layout the test reads (tests/integration/test_hot_path.py): a header, then one
 * slot per thread in the order threads first called in. Every field is a 64-bit integer
 * written with relaxed atomics by its own thread only. */
enum counter {
    C_MALLOC = 0, /* malloc, posix_memalign, aligned_alloc, memalign, valloc, pvalloc */
    C_CALLOC,
    C_REALLOC, /* realloc, reallocarray */
    C_FREE,
    C_LOCK, /* pthread_mutex_lock/trylock/timedlock, rwlock rd/wr(try)lock, spin(try)lock */
    C_COUNT,
};

struct slot {
    _Atomic int64_t tid;
    _Atomic uint64_t n[C_COUNT];
    uint64_t pad[8 - 1 - C_COUNT];
};
_Static_assert(sizeof(struct slot) == 64, "one cache line per thread");

struct page {
    uint32_t magic;
    uint32_t slot_size;
    _Atomic uint32_t n_slots; /* slots handed out (may exceed MAX_THREADS: the rest share) */
    uint32_t max_slots;
    uint64_t reserved[6];
    struct slot slots[MAX_THREADS];
};

static struct page fallback; /* when ALLOCCOUNT_FILE is unset or cannot be mapped */
static struct page *page = &fallback;
static __thread int my_slot __attribute__((tls_model("initial-exec"))) = -1;

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static void count(enum counter c)
{
    if (my_slot < 0) {
        uint32_t i = atomic_fetch_add_explicit(&page->n_slots, 1, memory_order_relaxed);
        my_slot = i < MAX_THREADS ? (int)i : MAX_THREADS - 1;
        atomic_store_explicit(&page->slots[my_slot].tid, (int64_t)syscall(SYS_gettid),
                              memory_order_relaxed);
    }
    _Atomic uint64_t *n = &page->slots[my_slot].n[c];
    atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

__attribute__((constructor)) static void alloccount_init(void)
{
    const char *path = getenv("ALLOCCOUNT_FILE");
    if (!path || !*path)
        return;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1)
        return;
    if (ftruncate(fd, sizeof(struct page)) == 0) {
        void *m = mmap(NULL, sizeof(struct page), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m != MAP_FAILED) {
            struct page *p = m;
            p->slot_size = sizeof(struct slot);
            p->max_slots = MAX_THREADS;
            /* the counts so far (the loader's, this constructor's) move with the slots */
            memcpy(p->slots, fallback.slots, sizeof(p->slots));
            atomic_store(&p->n_slots, atomic_load(&fallback.n_slots));
            p->magic = ALLOCCOUNT_MAGIC;
            page = p;
        }
    }
    close(fd);
}

void *malloc(size_t n)
{
    count(C_MALLOC);
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    count(C_CALLOC);
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    count(C_REALLOC);
    return __libc_realloc(p, n);
}

void *reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM; /* as glibc's */
        return NULL;
    }
    return realloc(p, total);
}

void free(void *p)
{
    if (p)
        count(C_FREE);
    __libc_free(p);
}

void *memalign(size_t align, size_t n)
{
    count(C_MALLOC);
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    return memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)))
        return EINVAL;
    void *p = memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    return memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

void *pvalloc(size_t n)
{
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    return memalign(ps, (n + ps - 1) / ps * ps);
}

/* Locks: the next definition (glibc's), looked up on first use (dlsym may allocate; that is
 * counted like any other allocation of the thread; two threads racing to look it up store the
 * same pointer). One macro for nine wrappers that differ only in their signature (STYLE.md
 * keeps macros for constants: here nine hand-written copies would be the worse departure). */
#define FORWARD(ret, name, params, args)                                                           \
    ret name params                                                                                \
    {                                                                                              \
        static ret(*next) params;                                                                  \
        if (!next)                                                                                 \
            next = (ret(*) params)dlsym(RTLD_NEXT, #name);                                         \
        count(C_LOCK);                                                                             \
        return next args;                                                                          \
    }

FORWARD(int, pthread_mutex_lock, (pthread_mutex_t * m), (m))
FORWARD(int, pthread_mutex_trylock, (pthread_mutex_t * m), (m))
FORWARD(int, pthread_mutex_timedlock, (pthread_mutex_t * m, const struct timespec *t), (m, t))
FORWARD(int, pthread_rwlock_rdlock, (pthread_rwlock_t * l), (l))
FORWARD(int, pthread_rwlock_wrlock, (pthread_rwlock_t * l), (l))
FORWARD(int, pthread_rwlock_tryrdlock, (pthread_rwlock_t * l), (l))
FORWARD(int, pthread_rwlock_trywrlock, (pthread_rwlock_t * l), (l))
FORWARD(int, pthread_spin_lock, (pthread_spinlock_t * l), (l))
FORWARD(int, pthread_spin_trylock, (pthread_spinlock_t * l), (l))
