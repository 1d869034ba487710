/* One worker's io_uring (liburing): multishot receives on UDP sockets into a ring of
 * provided buffers, polls, and batches of sends to many sockets in one system
 * call. Knows nothing of sessions or filters. Single-threaded: created disabled by the
 * control thread, then enabled and used only by the worker thread. */
#ifndef QK_NET_URING_H
#define QK_NET_URING_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct err;
struct uring;

/* A completion of a receive or a poll, read by uring_next. */
struct uring_event {
    uint64_t tag; /* what the request was armed with */
    int res;      /* >= 0: a datagram (has_data) or a poll that fired; < 0: -errno */
    bool more;    /* the multishot request stays armed; false: re-arm it if still wanted */
    bool has_data;
    bool truncated; /* the datagram did not fit the buffer (never for UDP over IP) */
    uint16_t bid;   /* the provided buffer holding it: return it with uring_release */
    const uint8_t *payload;
    uint32_t len; /* payload bytes received */
    const void *name;
    uint32_t namelen;
    const void *control;
    uint32_t controllen;
};

/* A ring with n_bufs receive buffers (a power of two) of payload_cap bytes each, plus the
 * room for a source address and cmsg_cap bytes of ancillary data. The ring starts disabled:
 * call uring_enable from the thread that will use it. NULL with e set when the kernel (or a
 * seccomp filter, or kernel.io_uring_disabled) refuses; the caller may fall back to epoll. */
struct uring *uring_create(unsigned n_bufs, uint32_t payload_cap, uint32_t cmsg_cap,
                           unsigned send_cap, struct err *e);

/* Makes the calling thread the ring's only submitter. 0 or a negative errno. */
int uring_enable(struct uring *u);

/* NULL ok. Any thread, once the user thread has left. */
void uring_destroy(struct uring *u);

/* Queues a multishot recvmsg on fd (with the source address and ancillary data). Its
 * completions carry tag. Submitted by the next uring_wait. 0 or a negative errno. */
int uring_recv(struct uring *u, int fd, uint64_t tag);

/* Queues a one-shot POLLIN on fd: level-triggered, since arming it again checks the socket
 * at once (a multishot poll would stay silent about data left queued). */
int uring_poll(struct uring *u, int fd, uint64_t tag);

/* Queues the cancellation of the requests armed with tag; a final completion with -ECANCELED
 * (or the last datagrams before it) may still arrive and must be ignored by the caller. The
 * fd may be closed right away: the kernel keeps the socket until the request has ended. */
int uring_cancel(struct uring *u, uint64_t tag);

/* Submits what is queued and waits up to timeout_ns for min completions (min or timeout_ns
 * 0: do not wait). The kernel does not wake the thread before min are ready or the time is
 * up. 0 (completions may be ready), or a negative errno (-ETIME and -EINTR are normal). */
int uring_wait(struct uring *u, unsigned min, uint64_t timeout_ns);

/* The next completion already posted, or false. A datagram's buffer is the caller's until
 * uring_release. Internal completions (cancellations) are skipped. */
bool uring_next(struct uring *u, struct uring_event *ev);

/* Gives a datagram's buffer back to the kernel. */
void uring_release(struct uring *u, const struct uring_event *ev);

/* Sends msgs[k] on fds[k] for k < n in one system call (n at most send_cap of create);
 * res[k]: bytes sent or a negative errno. Never blocks: a full socket queue is -EAGAIN.
 * The msghdrs only need to live for the call. 0, or a negative errno when the ring can no
 * longer send (then every res[k] holds it too, and nothing was sent): the caller falls back
 * to plain system calls for good. */
int uring_send(struct uring *u, const int *fds, struct msghdr *const *msgs, int *res,
               unsigned n);

#endif
