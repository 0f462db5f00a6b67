/* core/model.c: see model.h. */
#define LOG_MODULE "model"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "hashmap.h"
#include "log.h"
#include "model.h"
#include "snapshot-json.h"

struct cached {
    struct model_vm *vm;          /* NULL: not fetched */
    struct model_snapshots *snaps;
    uint64_t gen;                 /* bumped by every change of this VM: a
                                     fetch that began before is not kept */
};

struct model {
    const struct backend_ops *ops;
    void *h;
    struct events *events;

    pthread_mutex_t lock;         /* protects everything below */
    struct model_listener listener;
    uint64_t generation;          /* bumped by every change */
    uint64_t resets;              /* bumped when every cached VM goes */
    struct hashmap *vms;          /* "ns/name" -> struct cached */
    struct hashmap *names;        /* ns -> char ** (sorted VM names) */
    char **namespaces;            /* sorted, namespaced backends */
    struct hashmap *usage;        /* "ns/vm/snap/vol" -> struct usage */
    struct hashmap *restores;     /* "ns/vm" -> struct restore_status */
};

static void restore_status_free(void *p);
static struct cached *entry(struct model *m, const char *key);

struct usage {
    uint64_t size, allocated;
    uint64_t fetched_ns, generation;
};

uint64_t
now_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}

void
sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t) (ns / 1000000000), (long) (ns % 1000000000) };
    nanosleep(&ts, NULL);
}

static char *
key_of(const char *ns, const char *name)
{
    char *k = NULL;
    return asprintf(&k, "%s/%s", ns ? ns : "", name) < 0 ? NULL : k;
}

void
model_vm_unref(struct model_vm *v)
{
    if (v && __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        vm_info_free(v->info);
        free(v);
    }
}

void
model_snapshots_unref(struct model_snapshots *s)
{
    if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        snapshot_infos_free(s->v, s->n);
        free(s);
    }
}

static void
cached_free(void *p)
{
    struct cached *c = p;
    if (!c)
        return;
    model_vm_unref(c->vm);
    model_snapshots_unref(c->snaps);
    free(c);
}

static void
strv_free_void(void *p)
{
    strv_free(p);
}

/* Called with m->lock held. */
static void
drop_lists(struct model *m)
{
    hashmap_free(m->names, strv_free_void);
    m->names = hashmap_new();
    strv_free(m->namespaces);
    m->namespaces = NULL;
}

static void
on_vm_changed(void *opaque, const char *ns, const char *name, unsigned change)
{
    struct model *m = opaque;
    struct model_listener l;
    _cleanup_free_ char *key = key_of(ns, name);

    {
        LOCK_FOR_SCOPE(&m->lock);
        m->generation++;
        /* this VM's values go; other VMs' stay (a busy VM's events do not
         * make every listing go to the backend) */
        struct cached *c = key ? entry(m, key) : NULL;
        if (c) {
            model_vm_unref(c->vm);
            model_snapshots_unref(c->snaps);
            c->vm = NULL;
            c->snaps = NULL;
            c->gen++;
        }
        drop_lists(m);      /* one cheap call; transient VMs come with STATE */
        l = m->listener;
    }
    if (l.vm_changed)
        l.vm_changed(l.opaque, ns, name, change);
}

static void
on_reset(void *opaque)
{
    struct model *m = opaque;
    struct model_listener l;

    {
        LOCK_FOR_SCOPE(&m->lock);
        m->generation++;
        m->resets++;
        hashmap_free(m->vms, cached_free);
        m->vms = hashmap_new();
        drop_lists(m);
        l = m->listener;
    }
    if (l.reset)
        l.reset(l.opaque);
}

int
model_open(const char *source, const struct vmsnapfs_opts *o,
           struct model **ret)
{
    const struct backend_ops *ops = backend_for_source(source);
    struct model *m;
    int r;

    if (!ops && source && strncmp(source, "kubevirt://", 11) == 0)
        return log_error_errno(-ENOTSUP, "'%s': the KubeVirt backend is not in "
                               "this version yet", source);
    if (!ops)
        return log_error_errno(-EINVAL, "no backend for source '%s' (expected a "
                               "libvirt URI such as qemu:///system)",
                               source ? source : "");
    m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->ops = ops;
    pthread_mutex_init(&m->lock, NULL);
    m->vms = hashmap_new();
    m->names = hashmap_new();
    m->events = events_new();
    m->usage = hashmap_new();
    m->restores = hashmap_new();
    if (!m->vms || !m->names || !m->events || !m->usage || !m->restores) {
        model_close(m);
        return -ENOMEM;
    }

    struct backend_events ev = {
        .vm_changed = on_vm_changed,
        .reset = on_reset,
        .opaque = m,
    };
    r = ops->open(source, o, &ev, &m->h);
    if (r < 0) {
        model_close(m);
        return r;
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
    if (m->h)
        m->ops->close(m->h);       /* stops the event thread first */
    hashmap_free(m->vms, cached_free);
    hashmap_free(m->names, strv_free_void);
    strv_free(m->namespaces);
    hashmap_free(m->usage, free);
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

struct events *
model_events(struct model *m)
{
    return m->events;
}

static char **
strv_copy(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    char **c = calloc(n + 1, sizeof *c);
    for (size_t i = 0; c && i < n; i++) {
        c[i] = strdup(v[i]);
        if (!c[i]) {
            strv_free(c);
            return NULL;
        }
    }
    return c;
}

static bool
strv_contains_sorted(char *const *v, const char *s)
{
    size_t lo = 0, hi = 0;
    while (v && v[hi])
        hi++;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(v[mid], s);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* The cached VM names of ns (fetched if needed): a copy in *ret_copy, or,
 * with contains, 0 if that name is among them and -ENOENT if not. */
static int
with_names(struct model *m, const char *ns, char ***ret_copy,
           const char *contains)
{
    const char *k = ns ? ns : "";
    uint64_t gen;

    {
        LOCK_FOR_SCOPE(&m->lock);
        char **v = hashmap_get(m->names, k);
        if (v) {
            if (contains)
                return strv_contains_sorted(v, contains) ? 0 : -ENOENT;
            *ret_copy = strv_copy(v);
            return *ret_copy ? 0 : -ENOMEM;
        }
        gen = m->generation;
    }

    char **fresh = NULL;
    int r = m->ops->list_vms(m->h, k, &fresh);
    if (r < 0)
        return r;

    LOCK_FOR_SCOPE(&m->lock);
    r = contains ? (strv_contains_sorted(fresh, contains) ? 0 : -ENOENT) : 0;
    if (!contains) {
        *ret_copy = strv_copy(fresh);
        if (!*ret_copy)
            r = -ENOMEM;
    }
    void *old = NULL;
    if (gen == m->generation && hashmap_put(m->names, k, fresh, &old) == 0)
        strv_free(old);
    else
        strv_free(fresh);
    return r;
}

int
model_list_vms(struct model *m, const char *ns, char ***ret_names)
{
    return with_names(m, ns, ret_names, NULL);
}

int
model_vm_exists(struct model *m, const char *ns, const char *name)
{
    return with_names(m, ns, NULL, name);
}

int
model_list_namespaces(struct model *m, char ***ret_names)
{
    if (!m->ops->namespaced || !m->ops->list_namespaces)
        return -ENOTSUP;
    {
        LOCK_FOR_SCOPE(&m->lock);
        if (m->namespaces) {
            *ret_names = strv_copy(m->namespaces);
            return *ret_names ? 0 : -ENOMEM;
        }
    }
    char **fresh = NULL;
    int r = m->ops->list_namespaces(m->h, &fresh);
    if (r < 0)
        return r;
    *ret_names = strv_copy(fresh);
    LOCK_FOR_SCOPE(&m->lock);
    strv_free(m->namespaces);
    m->namespaces = fresh;
    return *ret_names ? 0 : -ENOMEM;
}

int
model_namespace_exists(struct model *m, const char *ns)
{
    _cleanup_strv_ char **v = NULL;
    int r = model_list_namespaces(m, &v);
    if (r < 0)
        return r;
    return strv_contains_sorted(v, ns) ? 0 : -ENOENT;
}

/* The cache entry for key, created if missing. Called with m->lock held. */
/* Called with m->lock held. */
static struct cached *
entry(struct model *m, const char *key)
{
    struct cached *c = hashmap_get(m->vms, key);
    if (c)
        return c;
    c = calloc(1, sizeof *c);
    if (c && hashmap_put(m->vms, key, c, NULL) < 0) {
        free(c);
        c = NULL;
    }
    return c;
}

int
model_vm_get(struct model *m, const char *ns, const char *name,
             struct model_vm **ret)
{
    _cleanup_free_ char *key = key_of(ns, name);
    uint64_t gen, resets;
    int r;

    if (!key)
        return -ENOMEM;
    {
        LOCK_FOR_SCOPE(&m->lock);
        struct cached *c = hashmap_get(m->vms, key);
        if (c && c->vm && now_monotonic_ns() - c->vm->fetched_ns < VM_CACHE_TTL_NS) {
            __atomic_add_fetch(&c->vm->refs, 1, __ATOMIC_ACQ_REL);
            *ret = c->vm;
            return 0;
        }
        gen = c ? c->gen : 0;
        resets = m->resets;
    }

    struct vm_ref ref = { .ns = ns ? ns : "", .name = name };
    struct model_vm *v = calloc(1, sizeof *v);
    if (!v)
        return -ENOMEM;
    r = m->ops->vm_get(m->h, &ref, &v->info);
    if (r < 0) {
        free(v);
        return r;
    }
    v->refs = 1;                    /* the caller's */
    v->fetched_ns = now_monotonic_ns();

    LOCK_FOR_SCOPE(&m->lock);
    struct cached *c;
    if (resets == m->resets && (c = entry(m, key)) && c->gen == gen) {
        model_vm_unref(c->vm);      /* expired, or fetched by another too */
        c->vm = v;
        v->refs++;                  /* the cache's */
    }
    *ret = v;
    return 0;
}

int
model_snapshots_get(struct model *m, const char *ns, const char *name,
                    struct model_snapshots **ret)
{
    _cleanup_free_ char *key = key_of(ns, name);
    uint64_t gen, resets, now = now_monotonic_ns();
    int r;

    if (!key)
        return -ENOMEM;
    if (!m->ops->snapshot_list)
        return -ENOTSUP;
    {
        LOCK_FOR_SCOPE(&m->lock);
        struct cached *c = hashmap_get(m->vms, key);
        if (c && c->snaps && now - c->snaps->fetched_ns < SNAPSHOTS_TTL_NS) {
            __atomic_add_fetch(&c->snaps->refs, 1, __ATOMIC_ACQ_REL);
            *ret = c->snaps;
            return 0;
        }
        gen = c ? c->gen : 0;
        resets = m->resets;
    }

    struct vm_ref ref = { .ns = ns ? ns : "", .name = name };
    struct model_snapshots *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    r = m->ops->snapshot_list(m->h, &ref, &s->v, &s->n);
    if (r < 0) {
        free(s);
        return r;
    }
    s->refs = 1;
    s->fetched_ns = now;

    LOCK_FOR_SCOPE(&m->lock);
    struct cached *c;
    if (resets == m->resets && (c = entry(m, key)) && c->gen == gen) {
        model_snapshots_unref(c->snaps);
        c->snaps = s;
        s->refs++;
    }
    *ret = s;
    return 0;
}

const struct snapshot_info *
model_snapshot_find(const struct model_snapshots *s, const char *snap)
{
    size_t lo = 0, hi = s ? s->n : 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->v[mid]->name, snap);
        if (c == 0)
            return s->v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Forget a VM's cached snapshots (after a change made through us). */
static void
drop_snapshots(struct model *m, const char *ns, const char *vm)
{
    _cleanup_free_ char *key = key_of(ns, vm);
    LOCK_FOR_SCOPE(&m->lock);
    struct cached *c = key ? hashmap_get(m->vms, key) : NULL;
    if (c) {
        model_snapshots_unref(c->snaps);
        c->snaps = NULL;
        c->gen++;
    }
    m->generation++;
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
model_snapshot_create(struct model *m, const char *ns, const char *vm,
                      const char *snap, const struct vmsnapfs_opts *o)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };
    struct op_report rep = { .text = "" };
    _cleanup_(restore_cancel) struct no_cancel nc = { 0 };
    int r;

    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &nc.old);
    if (!m->ops->snapshot_create)
        return events_add(m->events, ns, vm, "snapshot", snap, -ENOTSUP,
                          "taking snapshots is not supported by this backend yet");
    r = m->ops->snapshot_create(m->h, &ref, snap, o, &rep);
    drop_snapshots(m, ns, vm);
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
    drop_snapshots(m, ns, vm);
    return events_add(m->events, ns, vm, "delete-snapshot", snap, r, "%s",
                      rep.text[0] ? rep.text : r < 0 ? strerror(-r) : "done");
}

int
model_volume_open(struct model *m, const char *ns, const char *vm,
                  const char *snap, const char *vol, struct volume_view **ret)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };

    if (!m->ops->volume_open)
        return -ENOTSUP;
    return m->ops->volume_open(m->h, &ref, snap, vol, ret);
}

int
model_volume_usage(struct model *m, const char *ns, const char *vm,
                   const char *snap, const char *vol, uint64_t *ret_size,
                   uint64_t *ret_allocated)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };
    _cleanup_free_ char *key = NULL;
    uint64_t gen, now = now_monotonic_ns();
    int r;

    if (!m->ops->volume_usage)
        return -ENOTSUP;
    if (asprintf(&key, "%s/%s/%s/%s", ref.ns, vm, snap ? snap : "", vol) < 0)
        return -ENOMEM;
    {
        LOCK_FOR_SCOPE(&m->lock);
        struct usage *u = hashmap_get(m->usage, key);
        if (u && u->generation == m->generation &&
            now - u->fetched_ns < VOLUME_USAGE_TTL_NS) {
            *ret_size = u->size;
            *ret_allocated = u->allocated;
            return 0;
        }
        gen = m->generation;
    }
    struct usage fresh = { .fetched_ns = now, .generation = gen };
    r = m->ops->volume_usage(m->h, &ref, snap, vol, &fresh.size, &fresh.allocated);
    if (r < 0)
        return r;
    *ret_size = fresh.size;
    *ret_allocated = fresh.allocated;

    struct usage *u = malloc(sizeof *u);
    void *old = NULL;
    if (!u)
        return 0;
    *u = fresh;
    LOCK_FOR_SCOPE(&m->lock);
    if (hashmap_put(m->usage, key, u, &old) < 0)
        free(u);
    free(old);
    return 0;
}

bool
model_snapshot_exists(struct model *m, const char *ns, const char *vm,
                      const char *snap)
{
    struct model_snapshots *l = NULL;
    bool found = model_snapshots_get(m, ns, vm, &l) == 0 &&
                 model_snapshot_find(l, snap) != NULL;
    model_snapshots_unref(l);
    return found;
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

int
model_restore(struct model *m, const char *ns, const char *vm,
              const struct restore_request *rq, const struct vmsnapfs_opts *o)
{
    struct vm_ref ref = { .ns = ns ? ns : "", .name = vm };
    struct restore_status st = { .mode = rq->mode, .phase = SNAPSHOT_IN_PROGRESS };
    _cleanup_free_ char *key = key_of(ns, vm);
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
    r = m->ops->restore(m->h, &ref, rq, o, &st);
    st.finished = time(NULL);
    st.phase = r < 0 ? SNAPSHOT_FAILED : SNAPSHOT_SUCCEEDED;
    if (r < 0 && !st.error[0])
        snprintf(st.error, sizeof st.error, "%s", strerror(-r));
    if (st.began || !running)
        publish_restore(m, key, &st, false);
    drop_snapshots(m, ns, vm);      /* the safety snapshot */
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

char *
model_restore_status(struct model *m, const char *ns, const char *vm)
{
    _cleanup_free_ char *key = key_of(ns, vm);
    char *buf = NULL, when[32];
    size_t len = 0;

    if (!key)
        return NULL;
    LOCK_FOR_SCOPE(&m->lock);
    const struct restore_status *st = hashmap_get(m->restores, key);
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    if (st) {
        fprintf(f, "snapshot: %s\nmode: %s\nphase: %s\n", st->snap,
                restore_mode_to_string(st->mode), snapshot_phase_to_string(st->phase));
        fprintf(f, "started: %s\n", time_rfc3339(st->started, when, sizeof when));
        fprintf(f, "finished: %s\n", st->finished ? time_rfc3339(st->finished, when, sizeof when)
                                                  : "");
        fprintf(f, "error: %s\n", st->error);
        for (size_t i = 0; i < st->n_conflicts; i++)
            fprintf(f, "conflict: %s\n", st->conflicts[i]);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
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
    return events_add(m->events, ns, vm, "clone", snap, r, "%s",
                      rep.text[0] ? rep.text : r < 0 ? strerror(-r) : "done");
}
