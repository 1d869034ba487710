/* config_watch (tests src/config/watch.c): the inotify route, without the periodic check, sees
 * every way a deployment replaces the file (in-place write, rename, Kubernetes ConfigMap
 * `..data` swap, symlink re-point, directory rename) and ignores unrelated names. Works in a
 * fresh directory under /tmp; every wait for an event is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "config/watch.h"

#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EVENT_WAIT_MS 2000

static char root[256];

static void path_of(char *out, const char *rel)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", root, rel);
    assert_true(n > 0 && n < PATH_MAX);
}

static void write_file(const char *rel, const char *text)
{
    char p[PATH_MAX];
    path_of(p, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void mkdir_rel(const char *rel)
{
    char p[PATH_MAX];
    path_of(p, rel);
    assert_int_equal(mkdir(p, 0755), 0);
}

static void symlink_rel(const char *target, const char *rel)
{
    char p[PATH_MAX];
    path_of(p, rel);
    assert_int_equal(symlink(target, p), 0);
}

static void rename_rel(const char *from, const char *to)
{
    char a[PATH_MAX], b[PATH_MAX];
    path_of(a, from);
    path_of(b, to);
    assert_int_equal(rename(a, b), 0);
}

static void unlink_rel(const char *rel)
{
    char p[PATH_MAX];
    path_of(p, rel);
    assert_int_equal(unlink(p), 0);
}

static void rmdir_rel(const char *rel)
{
    char p[PATH_MAX];
    path_of(p, rel);
    assert_int_equal(rmdir(p), 0);
}

/* Waits (bounded) for the watch descriptor to become readable, then asks the watch. */
static bool wait_changed(struct config_watch *w)
{
    struct pollfd pfd = {.fd = config_watch_fd(w), .events = POLLIN};
    if (poll(&pfd, 1, EVENT_WAIT_MS) != 1)
        return false;
    return config_watch_changed(w);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof(root), "/tmp/qk-watch-test.XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static struct config_watch *watch_rel(const char *rel)
{
    char p[PATH_MAX];
    struct err e = {{0}};
    path_of(p, rel);
    struct config_watch *w = config_watch_create(p, &e);
    assert_non_null(w);
    return w;
}

static void test_configmap_data_swap(void **state)
{
    (void)state;
    mkdir_rel("cm");
    mkdir_rel("cm/..2026_01");
    write_file("cm/..2026_01/quilkin.yaml", "id: one\n");
    symlink_rel("..2026_01", "cm/..data");
    symlink_rel("..data/quilkin.yaml", "cm/quilkin.yaml");
    struct config_watch *w = watch_rel("cm/quilkin.yaml");
    assert_false(config_watch_changed(w)); /* nothing pending */
    for (int gen = 2; gen <= 4; gen++) {
        char dir[64], file[96], prev[64];
        snprintf(dir, sizeof(dir), "cm/..2026_%02d", gen);
        snprintf(file, sizeof(file), "%s/quilkin.yaml", dir);
        snprintf(prev, sizeof(prev), "cm/..2026_%02d", gen - 1);
        mkdir_rel(dir);
        write_file(file, gen % 2 ? "id: odd\n" : "id: even\n");
        /* kubelet: new ..data_tmp symlink, renamed over ..data, old directory removed */
        symlink_rel(dir + 3, "cm/..data_tmp");
        rename_rel("cm/..data_tmp", "cm/..data");
        assert_true(wait_changed(w));
        char old_file[96];
        snprintf(old_file, sizeof(old_file), "%s/quilkin.yaml", prev);
        unlink_rel(old_file);
        rmdir_rel(prev);
        /* removing the old, no longer resolved directory is not a change */
        assert_false(wait_changed(w));
    }
    config_watch_destroy(w);
}

static void test_unrelated_names_are_not_changes(void **state)
{
    (void)state;
    mkdir_rel("etc");
    write_file("etc/quilkin.yaml", "id: a\n");
    struct config_watch *w = watch_rel("etc/quilkin.yaml");
    write_file("etc/other.yaml", "x: 1\n");
    assert_false(wait_changed(w));
    rename_rel("etc/other.yaml", "etc/other2.yaml");
    assert_false(wait_changed(w));
    assert_false(config_watch_check(w));
    config_watch_destroy(w);
}

static void test_in_place_write_and_rename(void **state)
{
    (void)state;
    mkdir_rel("d");
    write_file("d/q.yaml", "id: aaaa\n");
    struct config_watch *w = watch_rel("d/q.yaml");
    /* same size, written twice within one coarse clock tick: still a change */
    write_file("d/q.yaml", "id: bbbb\n");
    assert_true(wait_changed(w));
    write_file("d/q.yaml.tmp", "id: cccc\n");
    (void)wait_changed(w); /* a new unrelated name: may or may not wake, never a change */
    rename_rel("d/q.yaml.tmp", "d/q.yaml");
    assert_true(wait_changed(w));
    config_watch_destroy(w);
}

static void test_symlink_repoint_and_directory_rename(void **state)
{
    (void)state;
    mkdir_rel("store");
    write_file("store/a.yaml", "id: a\n");
    write_file("store/b.yaml", "id: bb\n");
    mkdir_rel("rel");
    mkdir_rel("rel/conf");
    char target[PATH_MAX];
    path_of(target, "store/a.yaml");
    symlink_rel(target, "rel/conf/q.yaml");
    struct config_watch *w = watch_rel("rel/conf/q.yaml");
    path_of(target, "store/b.yaml");
    symlink_rel(target, "rel/conf/q.new");
    rename_rel("rel/conf/q.new", "rel/conf/q.yaml");
    assert_true(wait_changed(w));
    /* the file the link points at now is written */
    write_file("store/b.yaml", "id: b2\n");
    assert_true(wait_changed(w));
    /* the directory holding the link is replaced by rename */
    mkdir_rel("rel/conf.new");
    write_file("rel/conf.new/q.yaml", "id: third\n");
    rename_rel("rel/conf", "rel/conf.old");
    rename_rel("rel/conf.new", "rel/conf");
    bool seen = wait_changed(w);
    if (!seen) /* the first rename (path gone) and the second may come as two wake-ups */
        seen = wait_changed(w);
    assert_true(seen);
    assert_false(config_watch_check(w));
    config_watch_destroy(w);
}

static void test_missing_file_appears(void **state)
{
    (void)state;
    mkdir_rel("late");
    struct config_watch *w = watch_rel("late/q.yaml");
    write_file("late/q.yaml", "id: now\n");
    assert_true(wait_changed(w));
    unlink_rel("late/q.yaml");
    assert_true(wait_changed(w));
    config_watch_destroy(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_configmap_data_swap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unrelated_names_are_not_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_place_write_and_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlink_repoint_and_directory_rename, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_missing_file_appears, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
