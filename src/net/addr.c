/* Address canonicalisation, parsing and printing; no I/O. */
#include "net/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void set_v4(struct addr *a, const void *ip4, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    a->family = AF_INET;
    a->port = port;
    memcpy(a->ip, ip4, 4);
}

static void set_v6(struct addr *a, const uint8_t *ip6, uint16_t port)
{
    if (memcmp(ip6, v4mapped_prefix, 12) == 0) {
        set_v4(a, ip6 + 12, port);
        return;
    }
    memset(a, 0, sizeof(*a));
    a->family = AF_INET6;
    a->port = port;
    memcpy(a->ip, ip6, 16);
}

bool addr_from_sockaddr(struct addr *a, const struct sockaddr *sa, socklen_t len)
{
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)(const void *)sa;
        set_v4(a, &s->sin_addr, ntohs(s->sin_port));
        return true;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)(const void *)sa;
        set_v6(a, s->sin6_addr.s6_addr, ntohs(s->sin6_port));
        return true;
    }
    return false;
}

void addr_to_sin6(const struct addr *a, struct sockaddr_in6 *out)
{
    memset(out, 0, sizeof(*out));
    out->sin6_family = AF_INET6;
    out->sin6_port = htons(a->port);
    if (a->family == AF_INET) {
        memcpy(out->sin6_addr.s6_addr, v4mapped_prefix, 12);
        memcpy(out->sin6_addr.s6_addr + 12, a->ip, 4);
    } else {
        memcpy(out->sin6_addr.s6_addr, a->ip, 16);
    }
}

int addr_parse_ip(const char *text, struct addr *a)
{
    uint8_t buf[16];
    if (inet_pton(AF_INET, text, buf) == 1) {
        set_v4(a, buf, 0);
        return 0;
    }
    if (inet_pton(AF_INET6, text, buf) == 1) {
        set_v6(a, buf, 0);
        return 0;
    }
    return -EINVAL;
}

static int parse_port(const char *s, uint16_t *port)
{
    if (*s == '\0' || strlen(s) > 5)
        return -EINVAL;
    unsigned v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v > 65535)
        return -EINVAL;
    *port = (uint16_t)v;
    return 0;
}

int addr_parse(const char *text, struct addr *a)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_s;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        hlen = (size_t)(close - text - 1);
        if (hlen == 0 || hlen >= sizeof(host))
            return -EINVAL;
        memcpy(host, text + 1, hlen);
        host[hlen] = '\0';
        port_s = close + 2;
        uint8_t buf[16];
        if (inet_pton(AF_INET6, host, buf) != 1)
            return -EINVAL;
        uint16_t port;
        if (parse_port(port_s, &port) < 0)
            return -EINVAL;
        set_v6(a, buf, port);
        return 0;
    }
    const char *colon = strrchr(text, ':');
    if (!colon)
        return -EINVAL;
    hlen = (size_t)(colon - text);
    if (hlen == 0 || hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    uint8_t buf[4];
    if (inet_pton(AF_INET, host, buf) != 1)
        return -EINVAL;
    uint16_t port;
    if (parse_port(colon + 1, &port) < 0)
        return -EINVAL;
    set_v4(a, buf, port);
    return 0;
}

char *addr_format(const struct addr *a, char *buf)
{
    char ip[INET6_ADDRSTRLEN];
    if (a->family == AF_INET) {
        inet_ntop(AF_INET, a->ip, ip, sizeof(ip));
        snprintf(buf, ADDR_STR_CAP, "%s:%u", ip, a->port);
    } else if (a->family == AF_INET6) {
        inet_ntop(AF_INET6, a->ip, ip, sizeof(ip));
        snprintf(buf, ADDR_STR_CAP, "[%s]:%u", ip, a->port);
    } else {
        snprintf(buf, ADDR_STR_CAP, "(unset)");
    }
    return buf;
}

int addr_cmp(const struct addr *a, const struct addr *b)
{
    if (a->family != b->family)
        return a->family == AF_INET ? -1 : 1;
    int c = memcmp(a->ip, b->ip, a->family == AF_INET ? 4 : 16);
    if (c)
        return c < 0 ? -1 : 1;
    return a->port < b->port ? -1 : a->port > b->port;
}

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

uint64_t addr_hash(const struct addr *a, uint64_t seed)
{
    uint64_t w[3] = {0, 0, 0};
    memcpy(w, a, sizeof(*a));
    return mix(seed ^ mix(w[0] ^ mix(w[1] ^ mix(w[2]))));
}
