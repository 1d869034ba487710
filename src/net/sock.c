/* Socket creation helpers; see sock.h. */
#include "net/sock.h"

#include "net/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int new_dual_stack(void)
{
    int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    int off = 0, on = 1;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) == -1 ||
        setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof(on)) == -1) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int sock_udp_bind(uint16_t port, int reuseport, int buf_bytes)
{
    int fd = new_dual_stack();
    if (fd < 0)
        return fd;
    int on = 1;
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) == -1)
        goto fail;
    if (buf_bytes > 0) {
        /* best effort: the kernel caps these at net.core.{r,w}mem_max */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf_bytes, sizeof(buf_bytes));
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf_bytes, sizeof(buf_bytes));
    }
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(port),
                              .sin6_addr = IN6ADDR_ANY_INIT};
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
        goto fail;
    return fd;
fail:;
    int rc = -errno;
    close(fd);
    return rc;
}

int sock_share_port(int fd, bool on)
{
    int v = on;
    return setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, sizeof(v)) == -1 ? -errno : 0;
}

int sock_udp_reconnect(int fd, const struct addr *peer)
{
    struct sockaddr_in6 sa;
    addr_to_sin6(peer, &sa);
    return connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ? -errno : 0;
}

int sock_udp_connected(const struct addr *peer)
{
    int fd = new_dual_stack();
    if (fd < 0)
        return fd;
    int rc = sock_udp_reconnect(fd, peer);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

int sock_udp_connected_at(const struct addr *peer, uint16_t port)
{
    int fd = new_dual_stack();
    if (fd < 0)
        return fd;
    struct sockaddr_in6 local = {.sin6_family = AF_INET6, .sin6_port = htons(port),
                                 .sin6_addr = IN6ADDR_ANY_INIT};
    int rc = sock_share_port(fd, true);
    if (rc == 0 && bind(fd, (struct sockaddr *)&local, sizeof(local)) == -1)
        rc = -errno;
    if (rc == 0)
        rc = sock_udp_reconnect(fd, peer);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

#define DRAIN_MAX 64 /* datagrams read per pass while discarding a pooled socket's queue */

int sock_udp_disconnect(int fd)
{
    struct sockaddr none = {.sa_family = AF_UNSPEC};
    if (connect(fd, &none, sizeof(none)) == -1)
        return -errno;
    /* an automatic port is released now, so nothing new arrives and a bounded number of
       passes empties the queue (sockets bound to a shared port are never pooled) */
    static __thread uint8_t sink; /* every datagram is truncated into the same byte */
    struct mmsghdr m[DRAIN_MAX];
    struct iovec iov = {&sink, 1};
    for (unsigned i = 0; i < DRAIN_MAX; i++)
        m[i].msg_hdr = (struct msghdr){.msg_iov = &iov, .msg_iovlen = 1};
    for (unsigned pass = 0; pass < 1024; pass++) {
        int n = recvmmsg(fd, m, DRAIN_MAX, MSG_DONTWAIT, NULL);
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n == -1 && errno != EINTR && errno != ECONNREFUSED && errno != EHOSTUNREACH &&
            errno != ENETUNREACH)
            return -errno;
    }
    return -EBUSY;
}

int sock_buffer_sizes(int fd, int *rcv_bytes, int *snd_bytes)
{
    int r = 0, s = 0;
    socklen_t len = sizeof(r);
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &r, &len) == -1)
        return -errno;
    len = sizeof(s);
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &s, &len) == -1)
        return -errno;
    *rcv_bytes = r / 2; /* socket(7): the kernel doubles the value for its overhead */
    *snd_bytes = s / 2;
    return 0;
}

bool sock_rxq_ovfl(const struct msghdr *m, uint32_t *count)
{
    if (!m->msg_control || m->msg_controllen < sizeof(struct cmsghdr))
        return false;
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)m); c;
         c = CMSG_NXTHDR((struct msghdr *)m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL &&
            c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
            memcpy(count, CMSG_DATA(c), sizeof(*count));
            return true;
        }
    }
    return false;
}

uint16_t sock_local_port(int fd)
{
    struct sockaddr_in6 sa;
    socklen_t len = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) == -1)
        return 0;
    return ntohs(sa.sin6_port);
}
