/* Watches one config file for changes, following every way a deployment replaces it:
 * in-place writes, replacement by rename, a symlink swapped anywhere along the path
 * (Kubernetes ConfigMap volumes: FILE -> ..data/FILE, kubelet renames a new `..data` symlink
 * over the old one) and the rename of a directory on the path. It watches, with inotify,
 * every directory in which a component of the path (or of a symlink's target) is looked up,
 * and decides "changed" by comparing the identity of the file the path resolves to (device,
 * inode, size, modification and change times), so events about unrelated names cost one
 * re-resolution and never a reload. Control thread only. */
#ifndef QK_CONFIG_WATCH_H
#define QK_CONFIG_WATCH_H

#include <stdbool.h>

struct err;
struct config_watch;

/* Starts watching path (relative paths are taken from the current directory). The file
 * need not exist. NULL with e set when inotify cannot be set up. */
struct config_watch *config_watch_create(const char *path, struct err *e);

/* The inotify descriptor, for poll(2). */
int config_watch_fd(const struct config_watch *w);

/* Drains pending events and, if there were any, re-resolves the path (moving the watches to
 * the directories it now goes through) and compares the file's identity with the last one
 * seen. True when it changed (or the file appeared or disappeared). */
bool config_watch_changed(struct config_watch *w);

/* The same check without waiting for an event: call it periodically (about once a second)
 * as a fallback for file systems where inotify sees nothing (network file systems). */
bool config_watch_check(struct config_watch *w);

void config_watch_destroy(struct config_watch *w);

#endif
