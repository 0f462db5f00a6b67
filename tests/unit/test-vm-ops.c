/* tests/unit/test-vm-ops.c: the SPEC's rules on changing a VM, as every
 * backend gets them: one operation per VM (EBUSY), also across the daemons
 * of a host (two vm_ops here, as two daemons would have), operations on the
 * disks and open views excluding each other, the snapshot in progress. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "vm-ops.h"

static char state[64];

static int
setup(void **s)
{
    strcpy(state, "/tmp/vmsnapfs-test-vm-ops-XXXXXX");
    assert_non_null(mkdtemp(state));
    setenv("VMSNAPFS_STATE_DIR", state, 1);
    *s = vm_ops_new();
    return *s ? 0 : -1;
}

static int
teardown(void **s)
{
    char cmd[128];
    vm_ops_free(*s);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", state);
    return system(cmd) == 0 ? 0 : -1;
}

static void
test_one_op_per_vm(void **s)
{
    struct vm_ops *o = *s;

    assert_int_equal(vm_op_begin(o, "a", NULL, 0), 0);
    assert_int_equal(vm_op_begin(o, "a", NULL, 0), -EBUSY);
    assert_int_equal(vm_op_begin(o, "a", "s1", VM_OP_DISKS), -EBUSY);
    assert_int_equal(vm_op_begin(o, "b", NULL, 0), 0);      /* another VM */
    vm_op_end(o, "a");
    assert_int_equal(vm_op_begin(o, "a", NULL, 0), 0);
    vm_op_end(o, "a");
    vm_op_end(o, "b");
    assert_string_equal(vm_op_refusal(-EBUSY),
                        "another operation runs on this VM, or a volume of it is open");
}

static void
test_host_wide(void **s)
{
    struct vm_ops *o = *s, *other = vm_ops_new();   /* a second daemon */

    assert_non_null(other);
    assert_int_equal(vm_op_begin(o, "a", NULL, 0), 0);
    assert_int_equal(vm_op_begin(other, "a", NULL, 0), -EBUSY);
    assert_int_equal(vm_op_begin(other, "b", NULL, 0), 0);
    assert_int_equal(vm_op_begin(o, "b", NULL, 0), -EBUSY);
    vm_op_end(o, "a");
    assert_int_equal(vm_op_begin(other, "a", NULL, 0), 0);
    vm_op_end(other, "a");
    vm_op_end(other, "b");
    vm_ops_free(other);
}

static void
test_unusable_state_dir(void **s)
{
    struct vm_ops *o = *s;
    char file[96];

    /* the state directory is a file: no lock, so no operation (EIO) */
    snprintf(file, sizeof file, "%s/not-a-dir", state);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    setenv("VMSNAPFS_STATE_DIR", file, 1);
    assert_int_equal(vm_op_begin(o, "a", NULL, 0), -EIO);
    setenv("VMSNAPFS_STATE_DIR", state, 1);
    assert_int_equal(vm_op_begin(o, "a", NULL, 0), 0);   /* nothing left held */
    vm_op_end(o, "a");
}

static void
test_disks_and_views(void **s)
{
    struct vm_ops *o = *s;
    struct vm_view *v1 = NULL, *v2 = NULL, *v3 = NULL;

    assert_int_equal(vm_view_enter(o, "a", 0, &v1), 0);
    assert_int_equal(vm_view_enter(o, "a", 0, &v2), 0);
    /* a view is open: rmdir (disks) is refused, a clone (not disks) runs */
    assert_int_equal(vm_op_begin(o, "a", NULL, VM_OP_DISKS), -EBUSY);
    assert_int_equal(vm_op_begin(o, "a", NULL, 0), 0);
    assert_int_equal(vm_view_enter(o, "a", 0, &v3), 0);
    vm_view_leave(v3);
    vm_op_end(o, "a");
    vm_view_leave(v1);
    assert_int_equal(vm_op_begin(o, "a", NULL, VM_OP_DISKS), -EBUSY);   /* v2 */
    vm_view_leave(v2);
    /* all closed: the op runs, and no view opens meanwhile */
    assert_int_equal(vm_op_begin(o, "a", NULL, VM_OP_DISKS), 0);
    v3 = NULL;
    assert_int_equal(vm_view_enter(o, "a", 0, &v3), -EBUSY);
    assert_null(v3);
    assert_int_equal(vm_view_enter(o, "b", 0, &v3), 0);     /* another VM */
    vm_view_leave(v3);
    vm_op_end(o, "a");
    assert_int_equal(vm_view_enter(o, "a", 0, &v3), 0);
    vm_view_leave(v3);
}

/* a snapshot being copied does not keep a new snapshot out (its layers
 * stay as they are), but it keeps a merge out; the VM's own disk keeps both */
static void
test_snapshot_views(void **s)
{
    struct vm_ops *o = *s;
    struct vm_view *sv = NULL, *lv = NULL, *v = NULL;

    assert_int_equal(vm_view_enter(o, "a", VM_VIEW_SNAPSHOT, &sv), 0);
    assert_int_equal(vm_op_begin(o, "a", "s2", VM_OP_LIVE_DISKS), 0);
    assert_int_equal(vm_view_enter(o, "a", VM_VIEW_SNAPSHOT, &v), 0);  /* another copy */
    vm_view_leave(v);
    v = NULL;
    assert_int_equal(vm_view_enter(o, "a", 0, &v), -EBUSY);   /* the VM's disk */
    vm_op_end(o, "a");
    assert_int_equal(vm_op_begin(o, "a", NULL, VM_OP_DISKS), -EBUSY);
    assert_int_equal(vm_view_enter(o, "a", 0, &lv), 0);
    vm_view_leave(sv);
    assert_int_equal(vm_op_begin(o, "a", "s3", VM_OP_LIVE_DISKS), -EBUSY);
    vm_view_leave(lv);
    assert_int_equal(vm_op_begin(o, "a", "s3", VM_OP_LIVE_DISKS), 0);
    vm_op_end(o, "a");
}

struct ender {
    struct vm_ops *o;
};

static void *
end_meta_later(void *p)
{
    struct ender *e = p;
    usleep(200 * 1000);
    vm_op_end(e->o, "a");
    return NULL;
}

/* a metadata write (the sums) never makes an operation EBUSY: it waits for
 * the write; the write itself gives way to any operation (EBUSY for it) */
static void
test_meta_op(void **s)
{
    struct vm_ops *o = *s;
    struct ender e = { o };
    pthread_t t;

    assert_int_equal(vm_op_begin(o, "a", NULL, 0), 0);
    assert_int_equal(vm_op_begin(o, "a", NULL, VM_OP_META), -EBUSY);
    vm_op_end(o, "a");
    assert_int_equal(vm_op_begin(o, "a", NULL, VM_OP_META), 0);
    assert_int_equal(pthread_create(&t, NULL, end_meta_later, &e), 0);
    assert_int_equal(vm_op_begin(o, "a", "s1", VM_OP_DISKS), 0);   /* waited */
    pthread_join(t, NULL);
    vm_op_end(o, "a");
}

static void *
close_when_told(void *p)
{
    struct vm_view *v = p;
    while (!vm_view_cancelled(v))
        usleep(10 * 1000);
    usleep(100 * 1000);      /* the step it was in */
    vm_view_leave(v);
    return NULL;
}

/* background views (checksums) never make an operation EBUSY: it tells
 * them, waits for them to close, and runs */
static void
test_background_views(void **s)
{
    struct vm_ops *o = *s;
    struct vm_view *bg = NULL, *fg = NULL;
    pthread_t t;

    vm_view_background(true);
    assert_int_equal(vm_view_enter(o, "a", VM_VIEW_SNAPSHOT, &bg), 0);
    assert_ptr_equal(vm_view_last_background(), bg);
    vm_view_background(false);
    assert_null(vm_view_last_background());
    assert_int_equal(vm_view_enter(o, "a", VM_VIEW_SNAPSHOT, &fg), 0);
    assert_null(vm_view_last_background());
    vm_view_leave(fg);
    /* a new snapshot leaves it be */
    assert_int_equal(vm_op_begin(o, "a", "s1", VM_OP_LIVE_DISKS), 0);
    assert_false(vm_view_cancelled(bg));
    vm_op_end(o, "a");
    /* a merge ends it */
    assert_int_equal(pthread_create(&t, NULL, close_when_told, bg), 0);
    assert_int_equal(vm_op_begin(o, "a", NULL, VM_OP_DISKS), 0);
    pthread_join(t, NULL);
    /* and none opens meanwhile */
    vm_view_background(true);
    bg = NULL;
    assert_int_equal(vm_view_enter(o, "a", VM_VIEW_SNAPSHOT, &bg), -EBUSY);
    vm_view_background(false);
    vm_op_end(o, "a");
}

static void *
leave_later(void *v)
{
    usleep(200 * 1000);
    vm_view_leave(v);
    return NULL;
}

/* `cp ...; rmdir ...`: the kernel releases cp's file a moment after
 * close(2) returned; the operation on the disks waits for that (at most
 * 2 s), then runs */
static void
test_view_closing(void **s)
{
    struct vm_ops *o = *s;
    struct vm_view *v = NULL;
    pthread_t t;
    struct timespec a, b;

    assert_int_equal(vm_view_enter(o, "a", 0, &v), 0);
    assert_int_equal(pthread_create(&t, NULL, leave_later, v), 0);
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(vm_op_begin(o, "a", NULL, VM_OP_DISKS), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(t, NULL);
    double waited = (double) (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    assert_true(waited >= 0.15 && waited < 1.5);
    vm_op_end(o, "a");
}

static void
test_snapshot_in_progress(void **s)
{
    struct vm_ops *o = *s;
    time_t started = 0;
    char *snap;

    assert_null(vm_op_snapshot(o, "a", &started));
    assert_int_equal(vm_op_begin(o, "a", "s1", VM_OP_DISKS), 0);
    snap = vm_op_snapshot(o, "a", &started);
    assert_non_null(snap);
    assert_string_equal(snap, "s1");
    assert_true(started > 0);
    free(snap);
    vm_op_forget_snapshot(o, "a");
    assert_null(vm_op_snapshot(o, "a", &started));
    assert_int_equal(vm_op_begin(o, "a", NULL, 0), -EBUSY);  /* still busy */
    vm_op_end(o, "a");
    assert_null(vm_op_snapshot(o, "a", &started));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_op_per_vm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_wide, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unusable_state_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_meta_op, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disks_and_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_closing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_in_progress, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
