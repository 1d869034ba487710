/* io_uring for one worker (see uring.h). Two rings: `rx` holds the long-lived multishot
 * receives and polls, whose completions the worker harvests once per loop turn; `tx` only
 * ever holds one batch of sends, submitted and reaped in the same call, so send results
 * never interleave with receive completions. Both rings use DEFER_TASKRUN: completion work
 * runs only when the worker enters the kernel, never as an interrupt of its user code. */
#include "net/uring.h"

#include "base/err.h"

#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RX_ENTRIES 256   /* submission slots: arms, re-arms and cancels of one turn */
#define RX_CQ 8192       /* completions one turn can hold before the kernel queues more */
#define BGID 1           /* the provided-buffer group */
#define INTERNAL_TAG UINT64_MAX /* cancellations' own completions */

struct uring {
    struct io_uring rx, tx;
    bool has_rx, has_tx;
    bool tx_broken; /* a batch failed to submit: no more sends through tx */
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    uint8_t *bufs;
    size_t bufs_bytes;
    uint32_t buf_size;
    unsigned n_bufs;
    int mask;
    unsigned send_cap;
    /* the layout of every receive buffer: header, source address (sockaddr_in6 room),
       ancillary data, payload; the kernel reads only the two lengths */
    struct msghdr layout;
};

static int ring_init(struct io_uring *r, unsigned entries, unsigned cq_entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
              IORING_SETUP_R_DISABLED | IORING_SETUP_SUBMIT_ALL;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    return io_uring_queue_init_params(entries, r, &p);
}

struct uring *uring_create(unsigned n_bufs, uint32_t payload_cap, uint32_t cmsg_cap,
                           unsigned send_cap, struct err *e)
{
    if (n_bufs == 0 || (n_bufs & (n_bufs - 1)) || n_bufs > 32768) {
        err_set(e, "io_uring: %u receive buffers is not a power of two up to 32768", n_bufs);
        return NULL;
    }
    struct uring *u = calloc(1, sizeof(*u));
    if (!u) {
        err_set(e, "io_uring: out of memory");
        return NULL;
    }
    u->n_bufs = n_bufs;
    u->mask = io_uring_buf_ring_mask(n_bufs);
    u->send_cap = send_cap;
    u->layout.msg_namelen = sizeof(struct sockaddr_in6);
    u->layout.msg_controllen = cmsg_cap;
    /* 64-byte aligned slots; their pages are touched only as far as datagrams reach */
    u->buf_size = (uint32_t)((sizeof(struct io_uring_recvmsg_out) + sizeof(struct sockaddr_in6) +
                              cmsg_cap + payload_cap + 63) & ~(size_t)63);
    int rc = ring_init(&u->rx, RX_ENTRIES, RX_CQ);
    if (rc < 0) {
        err_set(e, "io_uring_setup: %s", strerror(-rc));
        goto fail;
    }
    u->has_rx = true;
    rc = ring_init(&u->tx, send_cap, 0);
    if (rc < 0) {
        err_set(e, "io_uring_setup: %s", strerror(-rc));
        goto fail;
    }
    u->has_tx = true;
    u->br_bytes = (size_t)n_bufs * sizeof(struct io_uring_buf);
    u->bufs_bytes = (size_t)n_bufs * u->buf_size;
    void *br = mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                    -1, 0);
    void *bufs = mmap(NULL, u->bufs_bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    u->br = br == MAP_FAILED ? NULL : br;
    u->bufs = bufs == MAP_FAILED ? NULL : bufs;
    if (!u->br || !u->bufs) {
        err_set(e, "io_uring: cannot map %zu bytes of receive buffers", u->bufs_bytes);
        goto fail;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)u->br;
    reg.ring_entries = n_bufs;
    reg.bgid = BGID;
    rc = io_uring_register_buf_ring(&u->rx, &reg, 0);
    if (rc < 0) {
        err_set(e, "io_uring: cannot register provided buffers: %s", strerror(-rc));
        goto fail;
    }
    io_uring_buf_ring_init(u->br);
    for (unsigned i = 0; i < n_bufs; i++)
        io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * u->buf_size, u->buf_size,
                              (unsigned short)i, u->mask, (int)i);
    io_uring_buf_ring_advance(u->br, (int)n_bufs);
    return u;
fail:
    uring_destroy(u);
    return NULL;
}

/* io_uring_enable_rings is declared by liburing 2.3 but missing from its library */
static int enable_ring(struct io_uring *r)
{
    return syscall(__NR_io_uring_register, r->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0
               ? -errno
               : 0;
}

int uring_enable(struct uring *u)
{
    int rc = enable_ring(&u->rx);
    return rc < 0 ? rc : enable_ring(&u->tx);
}

void uring_destroy(struct uring *u)
{
    if (!u)
        return;
    if (u->has_rx)
        io_uring_queue_exit(&u->rx); /* ends every request; the sockets are then released */
    if (u->has_tx)
        io_uring_queue_exit(&u->tx);
    if (u->br)
        munmap(u->br, u->br_bytes);
    if (u->bufs)
        munmap(u->bufs, u->bufs_bytes);
    free(u);
}

/* A free submission slot of r, submitting what is queued when there is none. */
static struct io_uring_sqe *sqe_get(struct io_uring *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(r);
    if (!sqe && io_uring_submit(r) >= 0)
        sqe = io_uring_get_sqe(r);
    return sqe;
}

int uring_recv(struct uring *u, int fd, uint64_t tag)
{
    struct io_uring_sqe *sqe = sqe_get(&u->rx);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_recvmsg_multishot(sqe, fd, &u->layout, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, tag);
    return 0;
}

int uring_poll(struct uring *u, int fd, uint64_t tag)
{
    struct io_uring_sqe *sqe = sqe_get(&u->rx);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag);
    return 0;
}

int uring_cancel(struct uring *u, uint64_t tag)
{
    struct io_uring_sqe *sqe = sqe_get(&u->rx);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_cancel64(sqe, tag, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, INTERNAL_TAG);
    return 0;
}

int uring_wait(struct uring *u, unsigned min, uint64_t timeout_ns)
{
    int rc;
    if (timeout_ns == 0 || min == 0) {
        rc = io_uring_submit_and_get_events(&u->rx);
    } else {
        struct __kernel_timespec ts = {.tv_sec = (long long)(timeout_ns / 1000000000u),
                                       .tv_nsec = (long long)(timeout_ns % 1000000000u)};
        struct io_uring_cqe *cqe;
        rc = io_uring_submit_and_wait_timeout(&u->rx, &cqe, min, &ts, NULL);
    }
    return rc < 0 ? rc : 0;
}

bool uring_next(struct uring *u, struct uring_event *ev)
{
    /* only what is already posted: io_uring_peek_cqe would enter the kernel when empty */
    while (io_uring_cq_ready(&u->rx)) {
        struct io_uring_cqe *cqe;
        if (io_uring_peek_cqe(&u->rx, &cqe) != 0)
            return false;
        uint64_t tag = cqe->user_data;
        int res = cqe->res;
        unsigned flags = cqe->flags;
        io_uring_cqe_seen(&u->rx, cqe);
        if (tag == INTERNAL_TAG)
            continue;
        memset(ev, 0, sizeof(*ev));
        ev->tag = tag;
        ev->res = res;
        ev->more = (flags & IORING_CQE_F_MORE) != 0;
        if (!(flags & IORING_CQE_F_BUFFER))
            return true;
        ev->bid = (uint16_t)(flags >> IORING_CQE_BUFFER_SHIFT);
        ev->has_data = true;
        if (res < 0 || ev->bid >= u->n_bufs) { /* a buffer without data: give it back */
            uring_release(u, ev);
            ev->has_data = false;
            return true;
        }
        void *buf = u->bufs + (size_t)ev->bid * u->buf_size;
        struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buf, res, &u->layout);
        if (!o) {
            uring_release(u, ev);
            ev->has_data = false;
            ev->res = -EBADMSG;
            return true;
        }
        uint8_t *payload = io_uring_recvmsg_payload(o, &u->layout);
        uint32_t room = (uint32_t)((uint8_t *)buf + res - payload);
        ev->payload = payload;
        ev->len = o->payloadlen < room ? o->payloadlen : room;
        ev->truncated = (o->flags & MSG_TRUNC) != 0 || o->payloadlen > room;
        ev->name = io_uring_recvmsg_name(o);
        ev->namelen = o->namelen < u->layout.msg_namelen ? o->namelen : u->layout.msg_namelen;
        ev->control = io_uring_recvmsg_cmsg_firsthdr(o, &u->layout) ? (const void *)
                          ((uint8_t *)ev->name + u->layout.msg_namelen) : NULL;
        ev->controllen = ev->control ? o->controllen : 0;
        return true;
    }
    return false;
}

void uring_release(struct uring *u, const struct uring_event *ev)
{
    if (!ev->has_data || ev->bid >= u->n_bufs)
        return;
    io_uring_buf_ring_add(u->br, u->bufs + (size_t)ev->bid * u->buf_size, u->buf_size,
                          ev->bid, u->mask, 0);
    io_uring_buf_ring_advance(u->br, 1);
}

int uring_send(struct uring *u, const int *fds, struct msghdr *const *msgs, int *res,
               unsigned n)
{
    if (u->tx_broken || n > u->send_cap) {
        for (unsigned k = 0; k < n; k++)
            res[k] = -EMSGSIZE;
        return u->tx_broken ? -EIO : -EMSGSIZE;
    }
    for (unsigned k = 0; k < n; k++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&u->tx); /* the ring is empty here */
        /* MSG_DONTWAIT: a full socket queue completes with -EAGAIN, never waits */
        io_uring_prep_sendmsg(sqe, fds[k], msgs[k], MSG_DONTWAIT);
        io_uring_sqe_set_data64(sqe, k);
        res[k] = -ECANCELED; /* until its completion says otherwise */
    }
    int rc;
    do
        rc = io_uring_submit_and_wait(&u->tx, n);
    while (rc == -EINTR);
    if (rc < 0 || (unsigned)rc < n) {
        /* the kernel refused the batch (or part of it): the ring cannot be trusted with
           the next one, so the caller sends with plain system calls from now on */
        u->tx_broken = true;
        if (rc < 0) {
            for (unsigned k = 0; k < n; k++)
                res[k] = rc;
            return rc;
        }
        n = (unsigned)rc; /* wait only for what was submitted */
    }
    for (unsigned got = 0; got < n;) {
        struct io_uring_cqe *cqe;
        int w = io_uring_wait_cqe(&u->tx, &cqe);
        if (w == -EINTR)
            continue;
        if (w < 0) {
            u->tx_broken = true; /* completions may still come: do not reuse the ring */
            return w;
        }
        uint64_t k = cqe->user_data;
        if (k < n)
            res[k] = cqe->res;
        io_uring_cqe_seen(&u->tx, cqe);
        got++;
    }
    return 0;
}
