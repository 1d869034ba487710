/* inotify-based config file watch that follows symlink swaps and renames; see watch.h. */
#include "config/watch.h"

#include "base/err.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define WATCH_DIRS_MAX 64   /* directories on the path and on every symlink's target */
#define SYMLINK_HOPS_MAX 40 /* as the kernel's MAXSYMLINKS */

/* Where a name can be replaced: entries created, deleted or renamed, or the directory
 * itself moved or deleted. */
#define NAME_MASK                                                                              \
    (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |      \
     IN_ONLYDIR)
/* The directory holding the file itself: also writes to it. Kept off the other directories
 * so a busy /tmp does not wake the control thread for every write to an unrelated file. */
#define FINAL_MASK (NAME_MASK | IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB)

/* What the path resolves to: two equal signatures mean "the same content, as far as the
 * file system can tell". */
struct file_sig {
    bool exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
};

struct watched {
    int wd;
    uint32_t mask;
};

struct config_watch {
    int fd;
    char path[PATH_MAX]; /* absolute */
    struct watched dirs[WATCH_DIRS_MAX];
    unsigned n_dirs;
    int final_wd;                   /* the directory holding the file, or -1 */
    char final_name[NAME_MAX + 1]; /* the file's name in it */
    struct file_sig last;
};

static void sig_read(const char *path, struct file_sig *s)
{
    struct stat st;
    memset(s, 0, sizeof(*s));
    if (stat(path, &st) == -1)
        return;
    s->exists = true;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->size = st.st_size;
    s->mtim = st.st_mtim;
    s->ctim = st.st_ctim;
}

static bool sig_eq(const struct file_sig *a, const struct file_sig *b)
{
    if (a->exists != b->exists)
        return false;
    if (!a->exists)
        return true;
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec &&
           a->ctim.tv_sec == b->ctim.tv_sec && a->ctim.tv_nsec == b->ctim.tv_nsec;
}

/* Adds dir to the watch set being built in next[0..*n), merging masks when two lookups
 * land in the same directory (inotify gives one descriptor per inode). */
static int watch_dir(struct config_watch *w, const char *dir, uint32_t mask,
                     struct watched *next, unsigned *n)
{
    if (*n == WATCH_DIRS_MAX)
        return -1;
    int wd = inotify_add_watch(w->fd, dir, mask);
    if (wd == -1)
        return -1; /* e.g. no permission: the periodic check still covers it */
    for (unsigned i = 0; i < *n; i++) {
        if (next[i].wd == wd) {
            /* the call above replaced the mask merged so far: put the union back */
            next[i].mask |= mask;
            inotify_add_watch(w->fd, dir, next[i].mask);
            return wd;
        }
    }
    next[*n].wd = wd;
    next[*n].mask = mask;
    (*n)++;
    return wd;
}

static void dir_parent(char *cur)
{
    char *slash = strrchr(cur, '/');
    if (!slash || slash == cur)
        strcpy(cur, "/");
    else
        *slash = '\0';
}

/* Walks the path as the kernel resolves it, watching each directory in which a component
 * is looked up, then drops the watches the path no longer goes through. A missing component
 * ends the walk: its directory is watched, so its creation is seen. */
static void rewatch(struct config_watch *w)
{
    struct watched next[WATCH_DIRS_MAX];
    unsigned n = 0, hops = 0;
    char rest[2 * PATH_MAX], tmp[2 * PATH_MAX], cur[PATH_MAX], entry[PATH_MAX],
        target[PATH_MAX];
    snprintf(rest, sizeof(rest), "%s", w->path);
    strcpy(cur, "/");
    w->final_wd = -1;
    const char *p = rest;
    for (;;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, "/");
        char comp[NAME_MAX + 1];
        if (len > NAME_MAX)
            break;
        memcpy(comp, p, len);
        comp[len] = '\0';
        p += len;
        while (*p == '/')
            p++;
        bool is_last = *p == '\0';
        if (strcmp(comp, ".") == 0)
            continue;
        if (strcmp(comp, "..") == 0) {
            dir_parent(cur);
            continue;
        }
        int wd = watch_dir(w, cur, is_last ? FINAL_MASK : NAME_MASK, next, &n);
        if (is_last) {
            w->final_wd = wd;
            memcpy(w->final_name, comp, len + 1);
        }
        int m = snprintf(entry, sizeof(entry), "%s%s%s", cur, strcmp(cur, "/") ? "/" : "", comp);
        if (m < 0 || (size_t)m >= sizeof(entry))
            break;
        struct stat st;
        if (lstat(entry, &st) == -1)
            break;
        if (S_ISLNK(st.st_mode)) {
            ssize_t t = readlink(entry, target, sizeof(target) - 1);
            if (t <= 0 || ++hops > SYMLINK_HOPS_MAX)
                break;
            target[t] = '\0';
            /* the target replaces this component; a relative one starts from cur */
            if (target[0] == '/')
                strcpy(cur, "/");
            m = snprintf(tmp, sizeof(tmp), "%s/%s", target, p);
            if (m < 0 || (size_t)m >= sizeof(tmp))
                break;
            memcpy(rest, tmp, (size_t)m + 1);
            p = rest;
            continue;
        }
        if (is_last || !S_ISDIR(st.st_mode))
            break;
        memcpy(cur, entry, strlen(entry) + 1);
    }
    for (unsigned i = 0; i < w->n_dirs; i++) {
        bool kept = false;
        for (unsigned j = 0; j < n && !kept; j++)
            kept = next[j].wd == w->dirs[i].wd;
        if (!kept)
            inotify_rm_watch(w->fd, w->dirs[i].wd);
    }
    memcpy(w->dirs, next, n * sizeof(next[0]));
    w->n_dirs = n;
}

struct config_watch *config_watch_create(const char *path, struct err *e)
{
    struct config_watch *w = calloc(1, sizeof(*w));
    if (!w) {
        err_set(e, "out of memory");
        return NULL;
    }
    int n;
    if (path[0] == '/') {
        n = snprintf(w->path, sizeof(w->path), "%s", path);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd))) {
            err_set(e, "getcwd: %s", strerror(errno));
            free(w);
            return NULL;
        }
        n = snprintf(w->path, sizeof(w->path), "%s/%s", cwd, path);
    }
    if (n < 0 || (size_t)n >= sizeof(w->path)) {
        err_set(e, "path too long: %s", path);
        free(w);
        return NULL;
    }
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd == -1) {
        err_set(e, "inotify_init1: %s", strerror(errno));
        free(w);
        return NULL;
    }
    rewatch(w);
    if (w->n_dirs == 0) {
        err_set(e, "cannot watch any directory of %s", w->path);
        close(w->fd);
        free(w);
        return NULL;
    }
    sig_read(w->path, &w->last);
    return w;
}

int config_watch_fd(const struct config_watch *w)
{
    return w->fd;
}

bool config_watch_check(struct config_watch *w)
{
    rewatch(w);
    struct file_sig now;
    sig_read(w->path, &now);
    if (sig_eq(&now, &w->last))
        return false;
    w->last = now;
    return true;
}

bool config_watch_changed(struct config_watch *w)
{
    bool any = false, written = false;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        /* which name changed does not matter (the identity check decides), except for a
         * write to the file itself: two writes within one tick of the file system's coarse
         * clock may leave size and times unchanged, so a write always counts */
        any = true;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            if (ev->wd == w->final_wd && (ev->mask & (IN_CLOSE_WRITE | IN_MODIFY)) && ev->len &&
                strcmp(ev->name, w->final_name) == 0)
                written = true;
            p += sizeof(*ev) + ev->len;
        }
    }
    if (!any)
        return false;
    bool changed = config_watch_check(w);
    return changed || written;
}

void config_watch_destroy(struct config_watch *w)
{
    if (!w)
        return;
    close(w->fd);
    free(w);
}
