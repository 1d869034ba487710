/* struct err helpers: bounded formatting into the caller's buffer, nothing else. */
#include "base/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(struct err *e, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

void err_prefix(struct err *e, const char *fmt, ...)
{
    if (!e)
        return;
    char pre[ERR_MSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t plen = (size_t)n < sizeof(pre) ? (size_t)n : sizeof(pre) - 1;
    size_t olen = strnlen(e->msg, sizeof(e->msg) - 1);
    if (plen + olen > sizeof(e->msg) - 1)
        olen = sizeof(e->msg) - 1 - plen; /* keep the prefix; cut the tail of the old text */
    memmove(e->msg + plen, e->msg, olen);
    memcpy(e->msg, pre, plen);
    e->msg[plen + olen] = '\0';
}

void err_clear(struct err *e)
{
    e->msg[0] = '\0';
}

bool err_is_set(const struct err *e)
{
    return e->msg[0] != '\0';
}
