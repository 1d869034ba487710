/* inotify-based file watch; see watch.h. */
#include "config/watch.h"

#include "base/err.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

struct config_watch {
    int fd;
    char name[NAME_MAX + 1]; /* file name inside the watched directory */
};

struct config_watch *config_watch_create(const char *path, struct err *e)
{
    struct config_watch *w = calloc(1, sizeof(*w));
    if (!w) {
        err_set(e, "out of memory");
        return NULL;
    }
    char dir_buf[PATH_MAX], name_buf[PATH_MAX];
    snprintf(dir_buf, sizeof(dir_buf), "%s", path);
    snprintf(name_buf, sizeof(name_buf), "%s", path);
    const char *dir = dirname(dir_buf);
    snprintf(w->name, sizeof(w->name), "%s", basename(name_buf));
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd == -1) {
        err_set(e, "inotify_init1: %s", strerror(errno));
        free(w);
        return NULL;
    }
    if (inotify_add_watch(w->fd, dir,
                          IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_CREATE | IN_ATTRIB) ==
        -1) {
        err_set(e, "cannot watch %s: %s", dir, strerror(errno));
        close(w->fd);
        free(w);
        return NULL;
    }
    return w;
}

int config_watch_fd(const struct config_watch *w)
{
    return w->fd;
}

bool config_watch_changed(struct config_watch *w)
{
    bool hit = false;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            if (ev->len && strcmp(ev->name, w->name) == 0)
                hit = true;
            p += sizeof(*ev) + ev->len;
        }
    }
    return hit;
}

void config_watch_destroy(struct config_watch *w)
{
    if (!w)
        return;
    close(w->fd);
    free(w);
}
