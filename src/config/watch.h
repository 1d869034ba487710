/* Watches one config file for changes with inotify on its directory, so in-place writes
 * and editors that replace the file by rename are both seen. Control thread only. */
#ifndef QK_CONFIG_WATCH_H
#define QK_CONFIG_WATCH_H

#include <stdbool.h>

struct err;
struct config_watch;

/* Starts watching path. NULL with e set on failure. */
struct config_watch *config_watch_create(const char *path, struct err *e);

/* The inotify descriptor, for poll(2). */
int config_watch_fd(const struct config_watch *w);

/* Drains pending events; true when one of them concerns the watched file. */
bool config_watch_changed(struct config_watch *w);

void config_watch_destroy(struct config_watch *w);

#endif
