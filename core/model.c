/* core/model.c: see model.h. The cache is in model-cache.c; here: the
 * model's life, the events it hears, and the changing ops. */
#define LOG_MODULE "model"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "clock.h"
#include "hashmap.h"
#include "log.h"
#include "model-private.h"
#include "sums.h"

static void restore_status_free(void *p);

char *
model_key(const char *ns, const char *name)
{
    char *k = NULL;
    return asprintf(&k, "%s/%s", ns ? ns : "", name) < 0 ? NULL : k;
}


static void
on_vm_changed(void *opaque, const char *ns, const char *name, unsigned change)
{
    struct model *m = opaque;
    struct model_listener l;

    {
        LOCK_FOR_SCOPE(&m->lock);
        cache_vm_changed(m, ns, name, change);
        l = m->listener;
    }
    if (l.vm_changed)
        l.vm_changed(l.opaque, ns, name, change);
}

/* A change made through this mount: the listener hears of it before the
 * operation returns (the kernel keeps listings until told). */
static void
tell(struct model *m, const char *ns, const char *vm, unsigned change)
{
    struct model_listener l;

    {
        LOCK_FOR_SCOPE(&m->lock);
        l = m->listener;
    }
    if (l.vm_changed)
        l.vm_changed(l.opaque, ns, vm, change);
}

/* The events of a VM changed (events_add). */
static void
tell_events(void *opaque, const char *ns, const char *vm)
{
    tell(opaque, ns, vm, VM_CHANGE_LOCAL);
}

static void
on_reset(void *opaque)
{
    struct model *m = opaque;
    struct model_listener l;

    {
        LOCK_FOR_SCOPE(&m->lock);
        cache_reset(m);
        l = m->listener;
    }
    if (l.reset)
        l.reset(l.opaque);
}

static bool publish_restore(struct model *m, const char *key, const struct restore_status *st,
                            bool only_if_idle);

static void
on_restore_found(void *opaque, const char *ns, const char *name,
                 const struct restore_status *st)
{
    struct model *m = opaque;
    _cleanup_free_ char *key = model_key(ns, name);

    if (!key)
        return;
    publish_restore(m, key, st, false);
    tell(m, ns, name, VM_CHANGE_LOCAL);
    if (st->phase != SNAPSHOT_IN_PROGRESS) {
        events_add(m->events, ns, name, "restore", st->snap,
                   st->phase == SNAPSHOT_SUCCEEDED ? 0 : -EIO, "%s",
                   st->phase == SNAPSHOT_SUCCEEDED ? "restored (a restore a killed vmsnapfs "
                                                     "had started)"
                                                   : st->error);
        tell(m, ns, name, VM_CHANGE_STATE | VM_CHANGE_DEFINITION | VM_CHANGE_SNAPSHOTS);
    }
}

int
model_open(const char *source, const struct vmsnapfs_opts *o,
           struct model **ret)
{
    const struct backend_ops *ops = backend_for_source(source);

    if (!ops && source && strncmp(source, "kubevirt://", 11) == 0)
        return log_error_errno(-ENOTSUP, "'%s': this vmsnapfs was built without the "
                               "KubeVirt backend", source);
    if (!ops)
        return log_error_errno(-EINVAL, "no backend for source '%s' (expected a "
                               "libvirt URI such as qemu:///system, or kubevirt://[CONTEXT])",
                               source ? source : "");
    return model_open_ops(ops, source, o, ret);
}

int
model_open_ops(const struct backend_ops *ops, const char *source,
               const struct vmsnapfs_opts *o, struct model **ret)
{
    struct model *m;
    int r;

    m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->ops = ops;
    pthread_mutex_init(&m->lock, NULL);
    m->events = events_new();
    m->restores = hashmap_new();
    if (cache_init(m) < 0 || !m->events || !m->restores) {
        model_close(m);
        return -ENOMEM;
    }
    events_set_hook(m->events, tell_events, m);

    struct backend_events ev = {
        .vm_changed = on_vm_changed,
        .reset = on_reset,
        .restore_found = on_restore_found,
        .opaque = m,
    };
    r = ops->open(source, o, &ev, &m->h);
    if (r < 0) {
        model_close(m);
        return r;
    }
    if (o && !o->no_checksums && !(m->sums = sums_new(m))) {
        model_close(m);
        return -ENOMEM;
    }
    log_debug("opened '%s' with the %s backend", source, ops->name);
    *ret = m;
    return 0;
}

void
model_close(struct model *m)
{
    if (!m)
        return;
    sums_free(m->sums);             /* its worker uses the backend */
    cache_wait_fetches(m);          /* they use the backend */
    if (m->h)
        m->ops->close(m->h);       /* stops the event thread first */
    cache_fini(m);
    hashmap_free(m->restores, restore_status_free);
    events_free(m->events);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void
model_set_listener(struct model *m, const struct model_listener *l)
{
    LOCK_FOR_SCOPE(&m->lock);
    m->listener = *l;
}

bool
model_namespaced(const struct model *m)
{
    return m->ops->namespaced;
}

bool
model_notifies_snapshots(const struct model *m)
{
    return m->ops->notifies_snapshots;
}

struct events *
model_events(struct model *m)
{
    return m->events;
}

/* Changing ops run to their end: a thread cancelled half-way (libfuse
 * cancels its workers at exit) could leave a guest frozen or a disk chain
 * half-merged. */
struct no_cancel {
    int old;
};

static void
restore_cancel(struct no_cancel *nc)
{
    int ignored;
    pthread_setcancelstate(nc->old, &ignored);
}

int
model_snapshot_name_check(struct model *m, const char *ns, const char *vm,
                          const char *snap)
{
    int r = name_check(snap);
    if (r < 0)
        events_add(m->events, ns, vm, "snapshot", snap, r, "invalid snapshot name: %s",
                   NAME_RULE);
    return r;
}

int
model_snapshot_create(struct model *m, const char *ns, const char *vm,
                      const char *snap, const struct vmsnapfs_opts *o)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };
    struct op_report rep = { .text = "" };
    _cleanup_(restore_cancel) struct no_cancel nc = { 0 };
    int r;

    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &nc.old);
    r = model_snapshot_name_check(m, ns, vm, snap);
    if (r < 0)
        return r;
    if (!m->ops->snapshot_create)
        return events_add(m->events, ns, vm, "snapshot", snap, -ENOTSUP,
                          "taking snapshots is not supported by this backend yet");
    r = m->ops->snapshot_create(m->h, &ref, snap, o, &rep);
    if (may_have_changed(r)) {
        changed_here(m, ns, vm, false);
        tell(m, ns, vm, VM_CHANGE_STATE | VM_CHANGE_DEFINITION | VM_CHANGE_SNAPSHOTS);
    }
    if (r >= 0)
        sums_snapshot_made(m->sums, ref.ns, vm, snap);
    return events_add(m->events, ns, vm, "snapshot", snap, r, "%s",
                      rep.text[0] ? rep.text : r < 0 ? strerror(-r) : "done");
}

int
model_snapshot_delete(struct model *m, const char *ns, const char *vm,
                      const char *snap)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };
    struct op_report rep = { .text = "" };
    _cleanup_(restore_cancel) struct no_cancel nc = { 0 };
    int r;

    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &nc.old);
    if (!m->ops->snapshot_delete)
        return events_add(m->events, ns, vm, "delete-snapshot", snap, -ENOTSUP,
                          "deleting snapshots is not supported by this backend yet");
    r = m->ops->snapshot_delete(m->h, &ref, snap, &rep);
    if (may_have_changed(r)) {
        changed_here(m, ns, vm, false);
        tell(m, ns, vm, VM_CHANGE_STATE | VM_CHANGE_DEFINITION | VM_CHANGE_SNAPSHOTS);
    }
    if (r >= 0)
        sums_snapshot_gone(m->sums, ref.ns, vm, snap);
    return events_add(m->events, ns, vm, "delete-snapshot", snap, r, "%s",
                      rep.text[0] ? rep.text : r < 0 ? strerror(-r) : "done");
}

int
model_volume_open(struct model *m, const char *ns, const char *vm,
                  const char *snap, const char *vol, struct volume_view **ret)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };

    _cleanup_free_ char *path = NULL;
    int r;

    if (!m->ops->volume_open)
        return -ENOTSUP;
    r = m->ops->volume_open(m->h, &ref, snap, vol, ret);
    if (r >= 0 && snap && m->sums && asprintf(&path, "volumes/%s.img", vol) >= 0)
        *ret = sums_tap(m->sums, ref.ns, vm, snap, path, *ret);
    return r;
}

int
model_changes_base(struct model *m, const char *ns, const char *vm, const char *snap,
                   char **ret_base, char **ret_why)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };

    if (ret_why)
        *ret_why = NULL;
    if (!m->ops->changes_base)
        return -ENOTSUP;
    return m->ops->changes_base(m->h, &ref, snap, ret_base, ret_why);
}

int
model_changes_open(struct model *m, const char *ns, const char *vm, const char *snap,
                   const char *vol, struct volume_view **ret, struct change_map **ret_map)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };

    _cleanup_free_ char *path = NULL;
    int r;

    if (!m->ops->changes_open)
        return -ENOTSUP;
    r = m->ops->changes_open(m->h, &ref, snap, vol, ret, ret_map);
    if (r >= 0 && ret && m->sums && asprintf(&path, "changes/%s.img", vol) >= 0)
        *ret = sums_tap(m->sums, ref.ns, vm, snap, path, *ret);
    return r;
}

int
model_snapshot_set_sums(struct model *m, const char *ns, const char *vm, const char *snap,
                        const char *record)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };

    if (!m->ops->snapshot_set_sums)
        return -ENOTSUP;
    return m->ops->snapshot_set_sums(m->h, &ref, snap, record);
}

struct sums *
model_sums(struct model *m)
{
    return m->sums;
}

static void
restore_status_free(void *p)
{
    struct restore_status *st = p;
    if (st) {
        restore_status_clear(st);
        free(st);
    }
}

/* Publishes a copy of st as the VM's last restore; with only_if_idle,
 * not while a restore of the VM is in progress (then returns true and
 * leaves that one's status). Checked and set under one hold of the lock. */
static bool
publish_restore(struct model *m, const char *key, const struct restore_status *st,
                bool only_if_idle)
{
    struct restore_status *copy = key ? calloc(1, sizeof *copy) : NULL;
    void *old = NULL;

    if (copy) {
        *copy = *st;
        copy->on_progress = NULL;
        copy->progress_opaque = NULL;
        memset(copy->conflicts, 0, sizeof copy->conflicts);
        copy->n_conflicts = 0;
        for (size_t i = 0; i < st->n_conflicts; i++)
            if ((copy->conflicts[copy->n_conflicts] = strdup(st->conflicts[i])))
                copy->n_conflicts++;
    }
    LOCK_FOR_SCOPE(&m->lock);
    const struct restore_status *now = key ? hashmap_get(m->restores, key) : NULL;
    if (only_if_idle && now && now->phase == SNAPSHOT_IN_PROGRESS) {
        restore_status_free(copy);
        return true;
    }
    if (copy && hashmap_put(m->restores, key, copy, &old) == 0)
        restore_status_free(old);
    else
        restore_status_free(copy);
    return false;
}

/* A running restore's progress, into its published status (`cat VM/restore`). */
struct restore_watch {
    struct model *m;
    const char *ns, *vm, *key;
};

static void
restore_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct restore_watch *w = opaque;
    {
        LOCK_FOR_SCOPE(&w->m->lock);
        struct restore_status *now = w->key ? hashmap_get(w->m->restores, w->key) : NULL;
        if (!now || now->phase != SNAPSHOT_IN_PROGRESS)
            return;
        now->progress_done = done;
        now->progress_total = total;
    }
    tell(w->m, w->ns, w->vm, VM_CHANGE_LOCAL);
}

int
model_restore(struct model *m, const char *ns, const char *vm,
              const struct restore_request *rq, const struct vmsnapfs_opts *o)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };
    struct restore_status st = { .mode = rq->mode, .phase = SNAPSHOT_IN_PROGRESS };
    _cleanup_free_ char *key = model_key(ns, vm);
    _cleanup_(restore_cancel) struct no_cancel nc = { 0 };
    int r;

    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &nc.old);
    snprintf(st.snap, sizeof st.snap, "%s", rq->snap);
    st.started = time(NULL);
    if (!m->ops->restore)
        return events_add(m->events, ns, vm, "restore", rq->snap, -ENOTSUP,
                          "restoring is not supported by this backend yet");
    /* a restore that runs keeps its status; one refused because of it
     * (EBUSY) does not replace it */
    bool running = publish_restore(m, key, &st, true);
    if (!running)
        tell(m, ns, vm, VM_CHANGE_LOCAL);
    struct restore_watch watch = { m, ns, vm, key };
    if (!running) {
        st.on_progress = restore_progress;
        st.progress_opaque = &watch;
    }
    r = m->ops->restore(m->h, &ref, rq, o, &st);
    st.on_progress = NULL;
    st.progress_opaque = NULL;
    st.finished = time(NULL);
    st.phase = r < 0 ? SNAPSHOT_FAILED : SNAPSHOT_SUCCEEDED;
    if (r < 0 && !st.error[0])
        snprintf(st.error, sizeof st.error, "%s", strerror(-r));
    if (st.began || !running)
        publish_restore(m, key, &st, false);
    if (st.began || may_have_changed(r)) {
        changed_here(m, ns, vm, false); /* its definition, the safety snapshot */
        tell(m, ns, vm, VM_CHANGE_STATE | VM_CHANGE_DEFINITION | VM_CHANGE_SNAPSHOTS);
    }
    if (r >= 0)
        r = events_add(m->events, ns, vm, "restore", rq->snap, 0, "%s (policy=%s mode=%s)%s%zu "
                       "conflict(s)", rq->mode == RESTORE_DRY_RUN ? "dry run, nothing changed"
                                                                  : "restored",
                       restore_policy_to_string(rq->policy), restore_mode_to_string(rq->mode),
                       "; ", st.n_conflicts);
    else
        r = events_add(m->events, ns, vm, "restore", rq->snap, r, "%s", st.error);
    restore_status_clear(&st);
    return r;
}

int
model_restore_status(struct model *m, const char *ns, const char *vm,
                     struct restore_status *ret)
{
    _cleanup_free_ char *key = model_key(ns, vm);

    *ret = (struct restore_status) { 0 };
    if (!key)
        return -ENOMEM;
    LOCK_FOR_SCOPE(&m->lock);
    const struct restore_status *st = hashmap_get(m->restores, key);
    if (!st)
        return 0;
    *ret = *st;
    memset(ret->conflicts, 0, sizeof ret->conflicts);
    ret->n_conflicts = 0;
    for (size_t i = 0; i < st->n_conflicts; i++)
        if ((ret->conflicts[ret->n_conflicts] = strdup(st->conflicts[i])))
            ret->n_conflicts++;
    return 1;
}

int
model_clone(struct model *m, const char *ns, const char *vm, const char *snap,
            const char *new_name, const struct vmsnapfs_opts *o)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };
    struct op_report rep = { .text = "" };
    _cleanup_(restore_cancel) struct no_cancel nc = { 0 };
    int r;

    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &nc.old);
    if (!m->ops->clone)
        return events_add(m->events, ns, vm, "clone", snap, -ENOTSUP,
                          "cloning is not supported by this backend yet");
    r = m->ops->clone(m->h, &ref, snap, new_name, o, &rep);
    if (r >= 0) {
        vm_added_here(m, ns, new_name);
        tell(m, ns, new_name, VM_CHANGE_EXISTENCE | VM_CHANGE_STATE);
    }
    return events_add(m->events, ns, vm, "clone", snap, r, "%s",
                      rep.text[0] ? rep.text : r < 0 ? strerror(-r) : "done");
}
