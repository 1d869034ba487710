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

/* As sock_udp_connected, but bound to local port `port` first with SO_REUSEADDR, so that it
 * shares the port of another session socket of the same client (whose SO_REUSEADDR must be
 * on, see sock_share_port) connected to a different peer: the kernel tells their replies
 * apart by the full 4-tuple. Returns the fd or a negative errno (-EADDRINUSE: not shared). */
int sock_udp_connected_at(const struct addr *peer, uint16_t port);

/* Turns SO_REUSEADDR on (or off) on a bound socket so that sock_udp_connected_at may share
 * its port. Keep it off until connect() has chosen the port: with SO_REUSEADDR on, the
 * kernel may hand out an automatic port that another SO_REUSEADDR socket already holds.
 * 0 or -errno. */
int sock_share_port(int fd, bool on);

/* Connects fd (from sock_udp_connected) to peer, which takes a fresh ephemeral port when it
 * has none: reuse of a pooled socket. 0 or -errno (-EAGAIN: no free port). */
int sock_udp_reconnect(int fd, const struct addr *peer);

/* Dissolves fd's association (connect AF_UNSPEC): an automatic local port goes back to the
 * host, then anything still queued (datagrams, a pending ICMP error) is discarded, so fd
 * can be pooled and later reconnected with sock_udp_reconnect. 0 or -errno. */
int sock_udp_disconnect(int fd);

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
