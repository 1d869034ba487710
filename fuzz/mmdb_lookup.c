/* Fuzz target: the ASN database reader (proxy/geo.c). --mmdb is a file someone may replace
 * with anything: opening and looking addresses up in any bytes must fail cleanly or give
 * NUL-terminated, bounded label text, never read out of bounds. */
#include "base/err.h"
#include "net/addr.h"
#include "proxy/geo.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/* libmaxminddb 1.7 (Debian 12) leaks from MMDB_open on some invalid databases (fixed
 * upstream in 1.8): not ours to find. Leaks with no libmaxminddb frame are still reported. */
const char *__lsan_default_suppressions(void)
{
    return "leak:libmaxminddb.so\n";
}

static void check_text(const char *s, size_t cap)
{
    if (memchr(s, '\0', cap) == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-mmdb", MFD_CLOEXEC);
    if (fd == -1)
        return 0;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    struct err e = {{0}};
    struct geo_db *db = geo_db_open(path, &e);
    close(fd);
    if (!db)
        return 0;
    static const char *const ips[] = {"127.0.0.1", "127.1.0.1", "1.2.3.4", "::1",
                                      "2001:db8::1", "255.255.255.255", "::"};
    for (size_t i = 0; i < sizeof(ips) / sizeof(ips[0]); i++) {
        struct addr a;
        struct geo_info g;
        if (addr_parse_ip(ips[i], &a) < 0)
            abort();
        if (geo_db_lookup(db, &a, &g)) {
            check_text(g.prefix, sizeof(g.prefix));
            check_text(g.organization, sizeof(g.organization));
            check_text(g.country_code, sizeof(g.country_code));
            check_text(g.prefix_entity, sizeof(g.prefix_entity));
            check_text(g.prefix_name, sizeof(g.prefix_name));
        }
    }
    geo_db_close(db);
    return 0;
}
