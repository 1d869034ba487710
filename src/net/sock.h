/* UDP socket setup: dual-stack [::] sockets, SO_REUSEPORT, non-blocking. Control or worker
 * thread; never on the per-packet path. */
#ifndef QK_NET_SOCK_H
#define QK_NET_SOCK_H

#include <stdint.h>

struct addr;

/* A non-blocking dual-stack UDP socket bound to [::]:port (0 = ephemeral) with
 * IPV6_V6ONLY off, SO_REUSEPORT on when reuseport, and SO_RCVBUF/SO_SNDBUF raised to
 * buf_bytes when non-zero (the kernel caps it). Returns the fd or a negative errno. */
int sock_udp_bind(uint16_t port, int reuseport, int buf_bytes);

/* A non-blocking dual-stack UDP socket on an ephemeral port, connected to peer: the kernel
 * then only delivers datagrams from exactly that IP:port and reports ICMP errors on it.
 * Returns the fd or a negative errno. */
int sock_udp_connected(const struct addr *peer);

/* The local port of a bound socket, or 0. */
uint16_t sock_local_port(int fd);

#endif
