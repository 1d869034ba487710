/* Canonical socket addresses: IPv4 or IPv6 plus port, v4-mapped IPv6 folded to IPv4, so
 * that equality, hashing and printing agree everywhere (spec proxy.md §3, §7). Pure. */
#ifndef QK_NET_ADDR_H
#define QK_NET_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* Plain value, copied freely. Unused bytes of ip[] are always zero (so memcmp works). */
struct addr {
    uint8_t family; /* AF_INET or AF_INET6 (0 = unset) */
    uint8_t pad;
    uint16_t port;  /* host byte order */
    uint8_t ip[16]; /* IPv4 in ip[0..3], network order */
};

/* "255.255.255.255:65535" and "[ffff:...:ffff]:65535" fit. */
#define ADDR_STR_CAP 56

/* Fills a from a kernel sockaddr (AF_INET or AF_INET6); v4-mapped becomes IPv4.
 * Returns false for other families. */
bool addr_from_sockaddr(struct addr *a, const struct sockaddr *sa, socklen_t len);

/* Writes a sockaddr_in6 for sending from a dual-stack socket (IPv4 as ::ffff:a.b.c.d). */
void addr_to_sin6(const struct addr *a, struct sockaddr_in6 *out);

/* Parses a literal "IP:PORT" or "[IPv6]:PORT" (the --to grammar: no names, no scheme).
 * Returns 0 or -EINVAL. The result is canonical. */
int addr_parse(const char *text, struct addr *a);

/* Parses just an IP literal (no port, no brackets) into a (port 0). 0 or -EINVAL. */
int addr_parse_ip(const char *text, struct addr *a);

/* "IP:port" or "[IPv6]:port" into buf (ADDR_STR_CAP bytes); returns buf. */
char *addr_format(const struct addr *a, char *buf);

static inline bool addr_eq(const struct addr *a, const struct addr *b)
{
    return memcmp(a, b, sizeof(*a)) == 0; /* canonical form: unused bytes are zero */
}

/* Total order: IPv4 before IPv6, then numerically by address, then by port. */
int addr_cmp(const struct addr *a, const struct addr *b);

/* 64-bit mixing hash of the whole address (seeded by the caller). */
uint64_t addr_hash(const struct addr *a, uint64_t seed);

_Static_assert(sizeof(struct addr) == 20, "struct addr layout");

#endif
