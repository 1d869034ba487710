/* A human-readable error: a fixed buffer filled by the callee when a person will read the
 * failure (config rejection, CLI message, xDS NACK). Never allocates. */
#ifndef QK_BASE_ERR_H
#define QK_BASE_ERR_H

#include <stdbool.h>

#define ERR_MSG_CAP 512

/* Embedded by the caller (usually on the stack); zero-initialise or err_clear() it. */
struct err {
    char msg[ERR_MSG_CAP];
};

/* Formats the message, replacing any previous one; returns -EINVAL for `return err_set(...)`.
 * Any thread. */
int err_set(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix" to the current message (used to add a key path or file:line). */
void err_prefix(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void err_clear(struct err *e);
bool err_is_set(const struct err *e);

#endif
