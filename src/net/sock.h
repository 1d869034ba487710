/* UDP socket setup: dual-stack [::] sockets, SO_REUSEPORT, non-blocking. Control or worker
 * thread; never on the per-packet path. */
#ifndef QK_NET_SOCK_H
#define QK_NET_SOCK_H

#include <stdbool.h>
#include <stdint.h>

struct addr;

/* Every socket made here has SO_RXQ_OVFL on: each received datagram carries the count of
 * datagrams the kernel dropped on that socket's full receive queue (sock_rxq_ovfl reads it).
 *
 * A non-blocking dual-stack UDP socket bound to [::]:port (0 = ephemeral) with
 * IPV6_V6ONLY off, SO_REUSEPORT on when reuseport, and SO_RCVBUF/SO_SNDBUF raised to
 * buf_bytes when non-zero (the kernel caps it at net.core.{r,w}mem_max: sock_buffer_sizes
 * tells what was granted). Returns the fd or a negative errno. */
int sock_udp_bind(uint16_t port, int reuseport, int buf_bytes);

/* A non-blocking dual-stack UDP socket on an ephemeral port, connected to peer: the kernel
 * then only delivers datagrams from exactly that IP:port and reports ICMP errors on it.
 * Returns the fd or a negative errno. */
int sock_udp_connected(const struct addr *peer);

/* The buffer sizes the kernel actually gives fd, in bytes of payload it can queue (half of
 * what SO_RCVBUF/SO_SNDBUF read back, the other half being its bookkeeping). 0 or -errno. */
int sock_buffer_sizes(int fd, int *rcv_bytes, int *snd_bytes);

/* Bytes that control buffers for sock_rxq_ovfl must have. */
#define SOCK_RXQ_CMSG_SPACE 32

/* The SO_RXQ_OVFL count carried by a received message's control data, if any: true with
 * *count set (cumulative since the socket was made; compare with the last one seen). */
struct msghdr;
bool sock_rxq_ovfl(const struct msghdr *m, uint32_t *count);

/* The local port of a bound socket, or 0. */
uint16_t sock_local_port(int fd);

#endif
