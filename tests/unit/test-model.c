/* tests/unit/test-model.c: the model's cache in front of a fake backend:
 * one fetch for many callers, a slow backend answered from the value it
 * replaces (only after changes seen in events), never a value from before
 * a change made through the model, errors never cached, close waits. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "backend.h"
#include "model.h"

/* ---- the fake backend ------------------------------------------------------ */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool blocked;               /* queries wait while set */
    unsigned waiting;           /* queries waiting now */
    unsigned list_calls, vm_calls, snap_calls;
    char snaps[8][16];          /* of VM "a" */
    size_t n_snaps;
    int vm_error;               /* vm_get fails with it (0: no) */
    int op_error;               /* snapshot_create and restore fail with it */
    char op_reason[64];         /* ... and this reason ("" for none) */
    bool restore_blocked;       /* restores wait while set */
    bool restore_running;
    char extra[16];             /* a third VM, once cloned */
    struct backend_events ev;
} fake = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static void
query_gate(unsigned *counter)
{
    pthread_mutex_lock(&fake.lock);
    (*counter)++;
    fake.waiting++;
    while (fake.blocked)
        pthread_cond_wait(&fake.cond, &fake.lock);
    fake.waiting--;
    pthread_mutex_unlock(&fake.lock);
}

static void
set_blocked(bool b)
{
    pthread_mutex_lock(&fake.lock);
    fake.blocked = b;
    pthread_cond_broadcast(&fake.cond);
    pthread_mutex_unlock(&fake.lock);
}

static unsigned
waiting_now(void)
{
    pthread_mutex_lock(&fake.lock);
    unsigned n = fake.waiting;
    pthread_mutex_unlock(&fake.lock);
    return n;
}

static int
f_open(const char *source, const struct vmsnapfs_opts *o,
       const struct backend_events *events, void **ret_h)
{
    (void) source;
    (void) o;
    fake.ev = *events;
    *ret_h = &fake;
    return 0;
}

static void
f_close(void *h)
{
    (void) h;
}

static int
f_list_vms(void *h, const char *ns, char ***ret)
{
    (void) h;
    (void) ns;
    /* the list as it is when the call begins; the answer may come later */
    char **v = calloc(4, sizeof *v);
    v[0] = strdup("a");
    v[1] = strdup("b");
    pthread_mutex_lock(&fake.lock);
    if (fake.extra[0])
        v[2] = strdup(fake.extra);
    pthread_mutex_unlock(&fake.lock);
    query_gate(&fake.list_calls);
    *ret = v;
    return 0;
}

static int
f_vm_get(void *h, const struct vm_ref *ref, struct vm_info **ret)
{
    (void) h;
    query_gate(&fake.vm_calls);
    if (fake.vm_error)
        return fake.vm_error;
    struct vm_info *vm = calloc(1, sizeof *vm);
    vm->ns = strdup("");
    vm->name = strdup(ref->name);
    vm->state = strdup("running");
    *ret = vm;
    return 0;
}

static int
f_snapshot_list(void *h, const struct vm_ref *ref, struct snapshot_info ***ret,
                size_t *ret_n)
{
    (void) h;
    (void) ref;
    query_gate(&fake.snap_calls);
    pthread_mutex_lock(&fake.lock);
    struct snapshot_info **v = calloc(fake.n_snaps + 1, sizeof *v);
    for (size_t i = 0; i < fake.n_snaps; i++) {
        v[i] = calloc(1, sizeof **v);
        v[i]->name = strdup(fake.snaps[i]);
    }
    *ret = v;
    *ret_n = fake.n_snaps;
    pthread_mutex_unlock(&fake.lock);
    return 0;
}

static void
add_snapshot(const char *name)
{
    pthread_mutex_lock(&fake.lock);
    snprintf(fake.snaps[fake.n_snaps++], sizeof fake.snaps[0], "%s", name);
    pthread_mutex_unlock(&fake.lock);
}

static int
f_snapshot_create(void *h, const struct vm_ref *ref, const char *snap,
                  const struct vmsnapfs_opts *o, struct op_report *rep)
{
    (void) h;
    (void) ref;
    (void) o;
    if (fake.op_error) {
        if (fake.op_reason[0])
            snprintf(rep->text, sizeof rep->text, "%s", fake.op_reason);
        return fake.op_error;
    }
    add_snapshot(snap);         /* not gated: only queries are */
    return 0;
}

/* Fails with fake.op_error after listing one conflict, or succeeds; waits
 * while restore_blocked. A second restore meanwhile is refused (EBUSY)
 * before it begins, as the shared rules refuse it. */
static int
f_restore(void *h, const struct vm_ref *ref, const struct restore_request *rq,
          const struct vmsnapfs_opts *o, struct restore_status *st)
{
    (void) h;
    (void) ref;
    (void) o;
    pthread_mutex_lock(&fake.lock);
    if (fake.restore_running) {
        pthread_mutex_unlock(&fake.lock);
        snprintf(st->error, sizeof st->error, "another operation runs on this VM");
        return -EBUSY;
    }
    fake.restore_running = true;
    st->began = true;
    pthread_mutex_unlock(&fake.lock);
    restore_status_progress(st, 3, 8);     /* half-way (shown while it runs) */
    pthread_mutex_lock(&fake.lock);
    while (fake.restore_blocked)
        pthread_cond_wait(&fake.cond, &fake.lock);
    fake.restore_running = false;
    int r = fake.op_error;
    pthread_mutex_unlock(&fake.lock);
    if (!r)
        restore_status_progress(st, 8, 8);
    if (r) {
        restore_status_conflict(st, "interface 52:54:00:00:00:01: VM 'b' has it");
        snprintf(st->error, sizeof st->error, "%s", fake.op_reason);
    }
    (void) rq;
    return r;
}

static int
f_clone(void *h, const struct vm_ref *ref, const char *snap, const char *new_name,
        const struct vmsnapfs_opts *o, struct op_report *rep)
{
    (void) h;
    (void) ref;
    (void) snap;
    (void) o;
    (void) rep;
    pthread_mutex_lock(&fake.lock);
    snprintf(fake.extra, sizeof fake.extra, "%s", new_name);
    pthread_mutex_unlock(&fake.lock);
    return 0;
}

static const struct backend_ops fake_ops = {
    .clone = f_clone,
    .restore = f_restore,
    .name = "fake",
    .open = f_open,
    .close = f_close,
    .list_vms = f_list_vms,
    .vm_get = f_vm_get,
    .snapshot_list = f_snapshot_list,
    .snapshot_create = f_snapshot_create,
};

static int
setup(void **state)
{
    struct model *m = NULL;
    pthread_mutex_lock(&fake.lock);
    fake.blocked = false;
    fake.list_calls = fake.vm_calls = fake.snap_calls = 0;
    fake.n_snaps = 0;
    fake.vm_error = 0;
    fake.op_error = 0;
    fake.op_reason[0] = '\0';
    fake.restore_blocked = fake.restore_running = false;
    fake.extra[0] = '\0';
    pthread_mutex_unlock(&fake.lock);
    add_snapshot("s1");
    assert_int_equal(model_open_ops(&fake_ops, "fake://", NULL, &m), 0);
    *state = m;
    return 0;
}

static int
teardown(void **state)
{
    set_blocked(false);
    if (*state)
        model_close(*state);
    return 0;
}

static uint64_t
ms_since(uint64_t t0)
{
    return (now_monotonic_ns() - t0) / 1000000;
}

/* the snapshot names of VM "a", joined by spaces (in a buffer per thread) */
static char *
snap_names(struct model *m)
{
    struct model_snapshots *s = NULL;
    static __thread char buf[256];
    buf[0] = '\0';
    if (model_snapshots_get(m, "", "a", &s) < 0)
        return NULL;
    for (size_t i = 0; i < s->n; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? " " : "",
                 s->v[i]->name);
    model_snapshots_unref(s);
    return buf;
}

struct caller {
    struct model *m;
    pthread_t t;
    char result[256];
    bool done;
};

static void *
caller_run(void *p)
{
    struct caller *c = p;
    const char *r = snap_names(c->m);
    snprintf(c->result, sizeof c->result, "%s", r ? r : "(error)");
    __atomic_store_n(&c->done, true, __ATOMIC_RELEASE);
    return NULL;
}

static void
wait_waiting(unsigned n)
{
    for (int i = 0; i < 500 && waiting_now() < n; i++)
        sleep_ns(2000000);
    assert_true(waiting_now() >= n);
}

/* ---- tests ------------------------------------------------------------------ */

/* eight callers while the backend is slow: one fetch */
static void
test_single_flight(void **state)
{
    struct model *m = *state;
    struct caller c[8];

    set_blocked(true);
    for (int i = 0; i < 8; i++) {
        c[i] = (struct caller) { .m = m };
        pthread_create(&c[i].t, NULL, caller_run, &c[i]);
    }
    wait_waiting(1);
    sleep_ns(100000000);
    assert_int_equal(fake.snap_calls, 1);
    set_blocked(false);
    for (int i = 0; i < 8; i++) {
        pthread_join(c[i].t, NULL);
        assert_string_equal(c[i].result, "s1");
    }
    assert_int_equal(fake.snap_calls, 1);
}

/* a change seen in an event, a backend that hangs: the listing answers at
 * once from the value it had; the new value shows once fetched */
static void
test_soft_change_serves_stale(void **state)
{
    struct model *m = *state;

    assert_string_equal(snap_names(m), "s1");
    add_snapshot("s2");         /* made elsewhere: the event comes */
    set_blocked(true);
    fake.ev.vm_changed(fake.ev.opaque, "", "a", VM_CHANGE_DEFINITION);
    uint64_t t0 = now_monotonic_ns();
    assert_string_equal(snap_names(m), "s1");
    assert_true(ms_since(t0) < 500);
    assert_string_equal(snap_names(m), "s1");   /* joins the same fetch */
    assert_int_equal(fake.snap_calls, 2);
    set_blocked(false);
    for (int i = 0; i < 500 && strcmp(snap_names(m), "s1 s2") != 0; i++)
        sleep_ns(2000000);
    assert_string_equal(snap_names(m), "s1 s2");
}

/* a value past its TTL stands in while the new one comes */
static void
test_ttl_serves_stale(void **state)
{
    struct model *m = *state;

    assert_string_equal(snap_names(m), "s1");
    sleep_ns(SNAPSHOTS_TTL_NS / 2);
    sleep_ns(SNAPSHOTS_TTL_NS / 2 + 50000000);
    set_blocked(true);
    uint64_t t0 = now_monotonic_ns();
    assert_string_equal(snap_names(m), "s1");
    assert_true(ms_since(t0) < 500);
    assert_int_equal(fake.snap_calls, 2);
}

/* after mkdir through the model, the listing waits for the backend rather
 * than show the list without the new snapshot */
static void
test_own_change_never_stale(void **state)
{
    struct model *m = *state;
    struct caller c = { .m = m };

    assert_string_equal(snap_names(m), "s1");
    assert_int_equal(model_snapshot_create(m, "", "a", "s2", NULL), 0);
    set_blocked(true);
    pthread_create(&c.t, NULL, caller_run, &c);
    wait_waiting(1);
    sleep_ns(200000000);
    assert_false(__atomic_load_n(&c.done, __ATOMIC_ACQUIRE));
    set_blocked(false);
    pthread_join(c.t, NULL);
    assert_string_equal(c.result, "s1 s2");
}

/* an event that arrives while a fetch runs: that fetch's value is not
 * kept (it may predate the change), the next caller fetches again */
static void
test_change_during_fetch(void **state)
{
    struct model *m = *state;
    struct caller c = { .m = m };

    set_blocked(true);
    pthread_create(&c.t, NULL, caller_run, &c);
    wait_waiting(1);
    fake.ev.vm_changed(fake.ev.opaque, "", "a", VM_CHANGE_DEFINITION);
    set_blocked(false);
    pthread_join(c.t, NULL);
    assert_string_equal(c.result, "s1");
    assert_string_equal(snap_names(m), "s1");
    assert_int_equal(fake.snap_calls, 2);
    assert_string_equal(snap_names(m), "s1");
    assert_int_equal(fake.snap_calls, 2);   /* now cached */
}

/* the VM list goes only when a VM comes or goes */
static void
test_names_only_on_existence(void **state)
{
    struct model *m = *state;

    assert_int_equal(model_vm_exists(m, "", "a"), 0);
    assert_int_equal(model_vm_exists(m, "", "zz"), -ENOENT);
    assert_int_equal(fake.list_calls, 1);
    fake.ev.vm_changed(fake.ev.opaque, "", "a", VM_CHANGE_STATE | VM_CHANGE_DEFINITION);
    assert_int_equal(model_vm_exists(m, "", "b"), 0);
    assert_int_equal(fake.list_calls, 1);
    fake.ev.vm_changed(fake.ev.opaque, "", "c", VM_CHANGE_EXISTENCE);
    assert_int_equal(model_vm_exists(m, "", "b"), 0);
    assert_int_equal(fake.list_calls, 2);
    /* started or stopped: a transient VM may have come or gone */
    fake.ev.vm_changed(fake.ev.opaque, "", "a", VM_CHANGE_STATE | VM_CHANGE_LIST);
    assert_int_equal(model_vm_exists(m, "", "b"), 0);
    assert_int_equal(fake.list_calls, 3);
}

/* a clone through the model is listed at once, without listing all VMs
 * again (that waits for every VM's lock in libvirtd), even while a list
 * fetched before the clone is still on its way */
static void
test_clone_listed_at_once(void **state)
{
    struct model *m = *state;
    char **names = NULL;

    assert_int_equal(model_vm_exists(m, "", "b"), 0);
    assert_int_equal(fake.list_calls, 1);
    /* a list from before the clone, slow */
    fake.ev.vm_changed(fake.ev.opaque, "", "zz", VM_CHANGE_EXISTENCE);
    set_blocked(true);
    assert_int_equal(model_vm_exists(m, "", "b"), 0);     /* stale stands in */
    assert_int_equal(fake.list_calls, 2);
    assert_int_equal(model_clone(m, "", "a", "s1", "c", NULL), 0);
    assert_int_equal(model_vm_exists(m, "", "c"), 0);
    set_blocked(false);
    for (int i = 0; i < 200 && waiting_now() > 0; i++)
        sleep_ns(2000000);
    sleep_ns(20000000);
    /* the older list came back without "c": it does not replace the one
     * that has it */
    assert_int_equal(model_list_vms(m, "", &names), 0);
    assert_string_equal(names[0], "a");
    assert_string_equal(names[1], "b");
    assert_non_null(names[2]);
    assert_string_equal(names[2], "c");
    for (char **p = names; *p; p++)
        free(*p);
    free(names);
}

/* errors are answered, not kept */
static void
test_errors_not_cached(void **state)
{
    struct model *m = *state;
    struct model_vm *v = NULL;

    fake.vm_error = -ENOENT;
    assert_int_equal(model_vm_get(m, "", "a", &v), -ENOENT);
    assert_int_equal(model_vm_get(m, "", "a", &v), -ENOENT);
    assert_int_equal(fake.vm_calls, 2);
    fake.vm_error = 0;
    assert_int_equal(model_vm_get(m, "", "a", &v), 0);
    assert_string_equal(v->info->name, "a");
    model_vm_unref(v);
}

/* a reset (the backend reconnected) while a caller waits: nothing stands
 * in, it gets the fetch's answer, nothing leaks (ASan) */
static void
test_reset_with_fetch_running(void **state)
{
    struct model *m = *state;
    struct caller c = { .m = m };

    assert_string_equal(snap_names(m), "s1");
    fake.ev.vm_changed(fake.ev.opaque, "", "a", VM_CHANGE_DEFINITION);
    set_blocked(true);
    pthread_create(&c.t, NULL, caller_run, &c);
    wait_waiting(1);
    fake.ev.reset(fake.ev.opaque);
    sleep_ns(100000000);
    assert_false(__atomic_load_n(&c.done, __ATOMIC_ACQUIRE));
    set_blocked(false);
    pthread_join(c.t, NULL);
    assert_string_equal(c.result, "s1");
}

static void *
unblock_later(void *p)
{
    (void) p;
    sleep_ns(150000000);
    set_blocked(false);
    return NULL;
}

/* close waits for a fetch that nobody waits for any more */
static void
test_close_waits_for_fetch(void **state)
{
    struct model *m = *state;
    pthread_t t;

    assert_string_equal(snap_names(m), "s1");
    fake.ev.vm_changed(fake.ev.opaque, "", "a", VM_CHANGE_DEFINITION);
    set_blocked(true);
    assert_string_equal(snap_names(m), "s1");  /* stale; the fetch goes on */
    assert_int_equal(waiting_now(), 1);
    pthread_create(&t, NULL, unblock_later, NULL);
    uint64_t t0 = now_monotonic_ns();
    model_close(m);
    *state = NULL;
    assert_true(ms_since(t0) >= 100);
    assert_int_equal(waiting_now(), 0);
    pthread_join(t, NULL);
}

/* ---- the changing ops: outcomes in events, a restore's status ------------- */

/* the last line of VM a's events, without its time stamp */
static char *
last_event(struct model *m)
{
    static __thread char buf[512];
    char *all = events_render(model_events(m), "", "a");
    assert_non_null(all);
    size_t n = strlen(all);
    if (n && all[n - 1] == '\n')
        all[--n] = '\0';
    char *line = strrchr(all, '\n');
    line = line ? line + 1 : all;
    char *rest = strchr(line, ' ');
    snprintf(buf, sizeof buf, "%s", rest ? rest + 1 : "");
    free(all);
    return buf;
}

static void
test_failure_reason_in_events(void **state)
{
    struct model *m = *state;

    assert_int_equal(model_snapshot_create(m, "", "a", "s2", NULL), 0);
    assert_string_equal(last_event(m), "snapshot s2 succeeded done");
    fake.op_error = -ENOSPC;
    snprintf(fake.op_reason, sizeof fake.op_reason, "no room for the overlay of vda");
    assert_int_equal(model_snapshot_create(m, "", "a", "s3", NULL), -ENOSPC);
    assert_string_equal(last_event(m), "snapshot s3 failed no room for the overlay of vda");
    /* no reason from the backend: the errno's text, never an empty reason */
    fake.op_reason[0] = '\0';
    fake.op_error = -EIO;
    assert_int_equal(model_snapshot_create(m, "", "a", "s4", NULL), -EIO);
    assert_string_equal(last_event(m), "snapshot s4 failed Input/output error");
    assert_string_equal(snap_names(m), "s1 s2");
    /* a name the SPEC refuses never reaches the backend */
    fake.op_error = 0;
    assert_int_equal(model_snapshot_create(m, "", "a", "Bad_Name", NULL), -EINVAL);
    assert_non_null(strstr(last_event(m), "snapshot Bad_Name failed invalid snapshot name: 1-63"));
    assert_string_equal(snap_names(m), "s1 s2");
    /* an op the backend lacks */
    assert_int_equal(model_snapshot_delete(m, "", "a", "s1"), -ENOTSUP);
    assert_non_null(strstr(last_event(m), "delete-snapshot s1 failed"));
}

static void
restore_line(struct model *m, const char *snap, int want)
{
    struct restore_request rq = { .policy = RESTORE_STOP_TARGET, .mode = RESTORE_STRICT };
    snprintf(rq.snap, sizeof rq.snap, "%s", snap);
    assert_int_equal(model_restore(m, "", "a", &rq, NULL), want);
}

static void
test_restore_status(void **state)
{
    struct model *m = *state;
    struct restore_status st;

    assert_int_equal(model_restore_status(m, "", "a", &st), 0);   /* none here yet */
    fake.op_error = -EEXIST;
    snprintf(fake.op_reason, sizeof fake.op_reason, "a MAC address is in use");
    restore_line(m, "s1", -EEXIST);
    assert_int_equal(model_restore_status(m, "", "a", &st), 1);
    assert_string_equal(st.snap, "s1");
    assert_int_equal(st.mode, RESTORE_STRICT);
    assert_int_equal(st.phase, SNAPSHOT_FAILED);
    assert_true(st.started > 0 && st.finished >= st.started);
    assert_string_equal(st.error, "a MAC address is in use");
    assert_int_equal(st.n_conflicts, 1);
    assert_string_equal(st.conflicts[0], "interface 52:54:00:00:00:01: VM 'b' has it");
    restore_status_clear(&st);
    assert_string_equal(last_event(m), "restore s1 failed a MAC address is in use");
    fake.op_error = 0;
    restore_line(m, "s1", 0);
    assert_int_equal(model_restore_status(m, "", "a", &st), 1);
    assert_int_equal(st.phase, SNAPSHOT_SUCCEEDED);
    assert_string_equal(st.error, "");
    assert_int_equal(st.n_conflicts, 0);
    restore_status_clear(&st);
}

struct restorer {
    struct model *m;
    pthread_t t;
};

static void *
restorer_run(void *p)
{
    struct restorer *r = p;
    restore_line(r->m, "s1", 0);
    return NULL;
}

static void
test_refused_restore_keeps_status(void **state)
{
    struct model *m = *state;
    struct restorer r = { .m = m };

    pthread_mutex_lock(&fake.lock);
    fake.restore_blocked = true;
    pthread_mutex_unlock(&fake.lock);
    assert_int_equal(pthread_create(&r.t, NULL, restorer_run, &r), 0);
    for (int i = 0; i < 500; i++) {         /* until it runs */
        pthread_mutex_lock(&fake.lock);
        bool running = fake.restore_running;
        pthread_mutex_unlock(&fake.lock);
        if (running)
            break;
        usleep(2000);
    }
    /* a second one is refused: the running one's status stays */
    struct restore_status st;
    restore_line(m, "other", -EBUSY);
    assert_int_equal(model_restore_status(m, "", "a", &st), 1);
    assert_string_equal(st.snap, "s1");
    assert_int_equal(st.phase, SNAPSHOT_IN_PROGRESS);
    assert_int_equal(st.finished, 0);
    /* its progress shows while it runs */
    assert_int_equal(st.progress_done, 3);
    assert_int_equal(st.progress_total, 8);
    restore_status_clear(&st);
    assert_string_equal(last_event(m), "restore other failed another operation runs on this VM");
    pthread_mutex_lock(&fake.lock);
    fake.restore_blocked = false;
    pthread_cond_broadcast(&fake.cond);
    pthread_mutex_unlock(&fake.lock);
    pthread_join(r.t, NULL);
    assert_int_equal(model_restore_status(m, "", "a", &st), 1);
    assert_string_equal(st.snap, "s1");
    assert_int_equal(st.phase, SNAPSHOT_SUCCEEDED);
    assert_int_equal(st.progress_done, 8);
    assert_int_equal(st.progress_total, 8);
    restore_status_clear(&st);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_single_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soft_change_serves_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_serves_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_own_change_never_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_during_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_only_on_existence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_not_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clone_listed_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_with_fetch_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_waits_for_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_reason_in_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_restore_keeps_status, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
