/* core/model-cache.c: the model's cache (see model.h).
 *
 * Every value the tree shows (the VM names of a namespace, a
 * VM's details, its snapshots, a volume's usage) sits in a slot, fetched
 * against its owner's two change counters (struct gens): a change seen in
 * an event (or the value's age past its TTL) makes it soft-stale, a change
 * made through this mount hard-stale. A fetch runs on a thread of its own,
 * one per slot at a time (callers that come meanwhile wait for that one);
 * a caller waits for it at most STALE_WAIT_NS while the slot holds a value
 * that is only soft-stale, and then gets that value: listings never wait
 * behind a libvirt call that is blocked (e.g. by a VM being killed), and
 * what an operation through this mount changed shows as soon as it
 * returns (read your writes).
 */
#define LOG_MODULE "model"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "hashmap.h"
#include "log.h"
#include "model-private.h"

enum slot_kind { SLOT_NAMES, SLOT_VM, SLOT_SNAPS, SLOT_USAGE };

/* The change counters a value is fetched against. */
struct gens {
    uint64_t soft;      /* changes seen in events */
    uint64_t hard;      /* changes made through this mount */
};

struct flight;

struct slot {
    void *value;                /* a reference, NULL: none yet */
    uint64_t fetched_ns;        /* when its fetch began */
    struct gens at;             /* the owner's counters then */
    struct flight *flight;      /* the fetch running for this slot */
};

/* One VM's values. */
struct cached {
    struct gens gens;
    struct slot vm, snaps;
    struct hashmap *usage;      /* "snap/vol" -> struct slot */
};

/* One namespace's VM names. */
struct names_entry {
    struct gens gens;
    struct slot s;
};

/* Values: each starts with its reference count. */
struct names_val {
    int refs;
    char **v;                   /* sorted */
};

struct usage_val {
    int refs;
    uint64_t size, allocated;
};

/* A fetch: shared by the thread that runs it and the callers that wait. */
struct flight {
    struct model *m;
    enum slot_kind kind;
    char *ns, *name, *snap, *vol;
    struct gens at;
    uint64_t resets, started_ns;
    int refs;                   /* under m->lock */
    bool done;
    int r;
    void *value;                /* a reference, when done and r >= 0 */
};

/* How long a caller waits for a fetch before it takes the value it
 * replaces (soft-stale only). */
#define STALE_WAIT_NS (UINT64_C(20) * 1000000)

static const uint64_t ttl_of[] = {
    [SLOT_NAMES] = VM_CACHE_TTL_NS,
    [SLOT_VM] = VM_CACHE_TTL_NS,
    [SLOT_SNAPS] = SNAPSHOTS_TTL_NS,
    [SLOT_USAGE] = VOLUME_USAGE_TTL_NS,
};

static const char *const what_of[] = {
    [SLOT_NAMES] = "list",
    [SLOT_VM] = "vm",
    [SLOT_SNAPS] = "snapshots",
    [SLOT_USAGE] = "usage",
};

/* ---- values --------------------------------------------------------------- */

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
val_ref(void *v)
{
    __atomic_add_fetch((int *) v, 1, __ATOMIC_ACQ_REL);
}

static void
val_unref(enum slot_kind kind, void *v)
{
    if (!v)
        return;
    switch (kind) {
    case SLOT_VM:
        model_vm_unref(v);
        break;
    case SLOT_SNAPS:
        model_snapshots_unref(v);
        break;
    case SLOT_NAMES:
        if (__atomic_sub_fetch((int *) v, 1, __ATOMIC_ACQ_REL) == 0) {
            strv_free(((struct names_val *) v)->v);
            free(v);
        }
        break;
    case SLOT_USAGE:
        if (__atomic_sub_fetch((int *) v, 1, __ATOMIC_ACQ_REL) == 0)
            free(v);
        break;
    }
}

static void flight_unref(struct flight *f);

/* Called with m->lock held (or with no fetch running). */
static void
slot_clear(enum slot_kind kind, struct slot *s)
{
    val_unref(kind, s->value);
    s->value = NULL;
    if (s->flight)
        flight_unref(s->flight);
    s->flight = NULL;
}

static void
usage_slot_free(void *p)
{
    if (p) {
        slot_clear(SLOT_USAGE, p);
        free(p);
    }
}

static void
cached_free(void *p)
{
    struct cached *c = p;
    if (!c)
        return;
    slot_clear(SLOT_VM, &c->vm);
    slot_clear(SLOT_SNAPS, &c->snaps);
    hashmap_free(c->usage, usage_slot_free);
    free(c);
}

static void
names_entry_free(void *p)
{
    struct names_entry *e = p;
    if (e) {
        slot_clear(SLOT_NAMES, &e->s);
        free(e);
    }
}

/* ---- where a value lives -------------------------------------------------- */

/* The cache entry of VM key, created if missing. Called with m->lock held. */
static struct cached *
entry(struct model *m, const char *key)
{
    struct cached *c = hashmap_get(m->vms, key);
    if (c)
        return c;
    c = calloc(1, sizeof *c);
    if (c && !(c->usage = hashmap_new())) {
        free(c);
        return NULL;
    }
    if (c && hashmap_put(m->vms, key, c, NULL) < 0) {
        cached_free(c);
        c = NULL;
    }
    return c;
}

static struct names_entry *
names_entry(struct model *m, const char *ns)
{
    struct names_entry *e = hashmap_get(m->names, ns ? ns : "");
    if (e)
        return e;
    e = calloc(1, sizeof *e);
    if (e && hashmap_put(m->names, ns ? ns : "", e, NULL) < 0) {
        free(e);
        e = NULL;
    }
    return e;
}

/* The slot of a value and its owner's counters; created with create.
 * Called with m->lock held; NULL if missing (or -ENOMEM). */
static struct slot *
find_slot(struct model *m, enum slot_kind kind, const char *ns,
          const char *name, const char *snap, const char *vol, bool create,
          struct gens **ret_gens)
{
    if (kind == SLOT_NAMES) {
        struct names_entry *e = create ? names_entry(m, ns)
                                       : hashmap_get(m->names, ns ? ns : "");
        if (!e)
            return NULL;
        *ret_gens = &e->gens;
        return &e->s;
    }
    _cleanup_free_ char *key = model_key(ns, name);
    struct cached *c = !key ? NULL : create ? entry(m, key) : hashmap_get(m->vms, key);
    if (!c)
        return NULL;
    *ret_gens = &c->gens;
    if (kind == SLOT_VM)
        return &c->vm;
    if (kind == SLOT_SNAPS)
        return &c->snaps;
    _cleanup_free_ char *sub = NULL;
    if (asprintf(&sub, "%s/%s", snap ? snap : "", vol) < 0)
        return NULL;
    struct slot *s = hashmap_get(c->usage, sub);
    if (!s && create) {
        s = calloc(1, sizeof *s);
        if (s && hashmap_put(c->usage, sub, s, NULL) < 0) {
            free(s);
            s = NULL;
        }
    }
    return s;
}

/* ---- fetches -------------------------------------------------------------- */

/* A query of the backend: how long it took shows in the debug log when it
 * is long enough to be felt by a listing (VMSNAPFS_DEBUG=model). */
#define SLOW_QUERY_NS (UINT64_C(50) * 1000000)

static const size_t value_size[] = {
    [SLOT_NAMES] = sizeof(struct names_val),
    [SLOT_VM] = sizeof(struct model_vm),
    [SLOT_SNAPS] = sizeof(struct model_snapshots),
    [SLOT_USAGE] = sizeof(struct usage_val),
};

/* The backend's answer for f's slot, as a value with one reference. */
static int
fetch(struct flight *f, void **ret)
{
    struct model *m = f->m;
    struct vm_ref ref = { .ns = f->ns ? f->ns : "", .name = f->name };
    void *v = calloc(1, value_size[f->kind]);
    int r;

    if (!v)
        return -ENOMEM;
    switch (f->kind) {
    case SLOT_NAMES:
        r = m->ops->list_vms(m->h, ref.ns, &((struct names_val *) v)->v);
        break;
    case SLOT_VM:
        r = m->ops->vm_get(m->h, &ref, &((struct model_vm *) v)->info);
        break;
    case SLOT_SNAPS: {
        struct model_snapshots *l = v;
        r = m->ops->snapshot_list(m->h, &ref, &l->v, &l->n);
        break;
    }
    default: {
        struct usage_val *u = v;
        r = m->ops->volume_usage(m->h, &ref, f->snap, f->vol, &u->size, &u->allocated);
        break;
    }
    }
    if (r < 0) {
        free(v);
        return r;
    }
    *(int *) v = 1;                 /* every value starts with its count */
    *ret = v;
    return r;
}

/* Called with m->lock held. */
static void
flight_unref(struct flight *f)
{
    if (--f->refs > 0)
        return;
    val_unref(f->kind, f->value);
    free(f->ns);
    free(f->name);
    free(f->snap);
    free(f->vol);
    free(f);
}

static void *
flight_run(void *p)
{
    struct flight *f = p;
    struct model *m = f->m;
    void *value = NULL;
    int r = fetch(f, &value);
    uint64_t took = now_monotonic_ns() - f->started_ns;

    if (took >= SLOW_QUERY_NS)
        log_debug("%s of '%s%s%s' took %" PRIu64 " ms%s", what_of[f->kind],
                  f->name ? f->name : f->ns ? f->ns : "", f->vol ? "/" : "",
                  f->vol ? f->vol : "", took / 1000000, r < 0 ? " (failed)" : "");
    LOCK_FOR_SCOPE(&m->lock);
    f->done = true;
    f->r = r;
    f->value = value;
    struct gens *g = NULL;
    struct slot *s = f->resets == m->resets
                         ? find_slot(m, f->kind, f->ns, f->name, f->snap, f->vol, false, &g)
                         : NULL;
    if (s && s->flight == f) {
        s->flight = NULL;
        flight_unref(f);            /* the slot's */
    }
    /* kept if it is newer than the one there and nothing was changed
     * through this mount since it began; if an event came meanwhile it
     * is kept as stale (fetched again on the next call, standing in) */
    if (s && r >= 0 && g->hard == f->at.hard &&
        (!s->value || f->started_ns >= s->fetched_ns)) {
        val_unref(f->kind, s->value);
        val_ref(value);
        s->value = value;
        s->fetched_ns = f->started_ns;
        s->at = f->at;
    }
    flight_unref(f);                /* the thread's */
    m->flights--;
    pthread_cond_broadcast(&m->cond);
    return NULL;
}

/* Starts a fetch for slot s (counters g); returns it with a reference for
 * the caller. Called with m->lock held; the lock is dropped and taken again
 * if no thread can run it (the caller fetches). */
static struct flight *
flight_start(struct model *m, struct slot *s, const struct gens *g,
             enum slot_kind kind, const char *ns, const char *name,
             const char *snap, const char *vol)
{
    struct flight *f = calloc(1, sizeof *f);

    if (!f)
        return NULL;
    f->m = m;
    f->kind = kind;
    f->ns = ns ? strdup(ns) : NULL;
    f->name = name ? strdup(name) : NULL;
    f->snap = snap ? strdup(snap) : NULL;
    f->vol = vol ? strdup(vol) : NULL;
    if ((ns && !f->ns) || (name && !f->name) || (snap && !f->snap) || (vol && !f->vol)) {
        f->refs = 1;
        flight_unref(f);
        return NULL;
    }
    f->at = *g;
    f->resets = m->resets;
    f->started_ns = now_monotonic_ns();
    f->refs = 3;                    /* the thread's, the slot's, the caller's */
    if (s->flight)
        flight_unref(s->flight);    /* a fetch from before a change: not awaited */
    s->flight = f;
    m->flights++;

    pthread_attr_t a;
    pthread_t t;
    bool started = pthread_attr_init(&a) == 0 &&
                   pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED) == 0 &&
                   pthread_create(&t, &a, flight_run, f) == 0;
    pthread_attr_destroy(&a);
    if (!started) {
        pthread_mutex_unlock(&m->lock);
        flight_run(f);
        pthread_mutex_lock(&m->lock);
    }
    return f;
}

static void
deadline_of(uint64_t ns, struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t) (ns / 1000000000);
    ts->tv_nsec += (long) (ns % 1000000000);
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* A reference to the value of a slot in *ret: the cached one if it is
 * current, else the one a fetch brings (or, after STALE_WAIT_NS, a
 * soft-stale one). */
static int
slot_get(struct model *m, enum slot_kind kind, const char *ns, const char *name,
         const char *snap, const char *vol, void **ret)
{
    LOCK_FOR_SCOPE(&m->lock);
    struct gens *g;
    struct slot *s = find_slot(m, kind, ns, name, snap, vol, true, &g);
    uint64_t now = now_monotonic_ns();

    if (!s)
        return -ENOMEM;
    /* snapshot lists a backend reports every change of last as VMs do */
    uint64_t ttl = kind == SLOT_SNAPS && m->ops->notifies_snapshots ? VM_CACHE_TTL_NS
                                                                    : ttl_of[kind];
    if (s->value && s->at.soft == g->soft && s->at.hard == g->hard &&
        now - s->fetched_ns < ttl) {
        val_ref(s->value);
        *ret = s->value;
        return 0;
    }
    struct flight *f = s->flight;
    if (f && f->at.soft == g->soft && f->at.hard == g->hard)
        f->refs++;                  /* this caller's */
    else if (!(f = flight_start(m, s, g, kind, ns, name, snap, vol)))
        return -ENOMEM;

    /* counted from the fetch's start: a slow fetch is slow for every
     * caller, and a listing that stats many entries waits once, not once
     * per entry */
    uint64_t t = now_monotonic_ns();
    uint64_t since = t <= f->started_ns ? 0
                     : t - f->started_ns < STALE_WAIT_NS ? t - f->started_ns : STALE_WAIT_NS;
    struct timespec deadline;
    deadline_of(STALE_WAIT_NS - since, &deadline);
    bool waited_out = since >= STALE_WAIT_NS;
    for (;;) {
        if (f->done)
            break;
        /* the slot may be gone (a reset) or refilled while we waited */
        s = find_slot(m, kind, ns, name, snap, vol, false, &g);
        bool stale_ok = s && s->value && s->at.hard == g->hard && f->resets == m->resets;
        if (stale_ok && waited_out) {
            val_ref(s->value);
            *ret = s->value;
            flight_unref(f);
            return 0;
        }
        if (stale_ok)
            waited_out = pthread_cond_timedwait(&m->cond, &m->lock, &deadline) == ETIMEDOUT;
        else
            pthread_cond_wait(&m->cond, &m->lock);
    }
    int r = f->r;
    if (r >= 0) {
        val_ref(f->value);
        *ret = f->value;
    }
    uint64_t waited = now_monotonic_ns() - now;
    s = find_slot(m, kind, ns, name, snap, vol, false, &g);   /* may be gone */
    if (waited >= SLOW_QUERY_NS)
        log_debug("waited %" PRIu64 " ms for the %s of '%s%s%s'%s", waited / 1000000,
                  what_of[kind], name ? name : ns ? ns : "", vol ? "/" : "", vol ? vol : "",
                  s && s->value ? " (no older value may stand in)" : "");
    flight_unref(f);
    return r;
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

/* ---- changes -------------------------------------------------------------- */

/* Did an op that returned r change anything? An op refused before it
 * began (another op runs, the name is taken or not there, a bad request)
 * did not. */
bool
may_have_changed(int r)
{
    return r >= 0 || (r != -EBUSY && r != -EEXIST && r != -ENOENT && r != -EINVAL &&
                      r != -ENAMETOOLONG);
}

/* A change made through this mount to VM ns/name (and, with existence, to
 * the list it is in): what was cached before never shows again. */
void
changed_here(struct model *m, const char *ns, const char *name, bool existence)
{
    _cleanup_free_ char *key = model_key(ns, name);
    LOCK_FOR_SCOPE(&m->lock);
    /* nothing cached, no fetch running: nothing to mark */
    struct cached *c = key ? hashmap_get(m->vms, key) : NULL;
    if (c)
        c->gens.hard++;
    struct names_entry *e = existence ? hashmap_get(m->names, ns ? ns : "") : NULL;
    if (e)
        e->gens.hard++;
}

static int
cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* VM ns/name made through this mount: in the cached list at once, so the
 * list is not fetched again (listing all VMs waits for each VM's lock in
 * libvirtd, which snapshots being taken hold). Where no current list is
 * cached, the next one is fetched. */
void
vm_added_here(struct model *m, const char *ns, const char *name)
{
    changed_here(m, ns, name, false);       /* a VM of that name before */
    LOCK_FOR_SCOPE(&m->lock);
    struct names_entry *e = hashmap_get(m->names, ns ? ns : "");
    if (!e)
        return;                             /* no list cached */
    struct names_val *old = e->s.value, *v = NULL;
    if (old && e->s.at.hard == e->gens.hard) {
        if (strv_contains_sorted(old->v, name))
            return;
        size_t n = 0;
        while (old->v[n])
            n++;
        v = calloc(1, sizeof *v);
        char **copy = strv_copy(old->v);
        char **grown = copy ? realloc(copy, (n + 2) * sizeof *copy) : NULL;
        char *dup = strdup(name);
        if (v && grown && dup) {
            grown[n] = dup;
            grown[n + 1] = NULL;
            qsort(grown, n + 1, sizeof *grown, cmp_name);
            v->refs = 1;
            v->v = grown;
            val_unref(SLOT_NAMES, old);
            e->s.value = v;
            /* a fetch that began before is older than this */
            e->s.fetched_ns = now_monotonic_ns();
            return;
        }
        free(dup);
        strv_free(grown ? grown : copy);
        free(v);
    }
    e->gens.hard++;
}

void
cache_vm_changed(struct model *m, const char *ns, const char *name, unsigned change)
{
    _cleanup_free_ char *key = model_key(ns, name);

    /* this VM's values go; other VMs' stay (a busy VM's events do not
     * make every listing go to the backend) */
    struct cached *c = key ? hashmap_get(m->vms, key) : NULL;
    if (c)
        c->gens.soft++;
    if (change & (VM_CHANGE_EXISTENCE | VM_CHANGE_LIST)) {
        struct names_entry *e = hashmap_get(m->names, ns ? ns : "");
        if (e)
            e->gens.soft++;
        strv_free(m->namespaces);   /* one cheap call */
        m->namespaces = NULL;
    }
}

void
cache_reset(struct model *m)
{
    m->resets++;
    hashmap_free(m->vms, cached_free);
    m->vms = hashmap_new();
    hashmap_free(m->names, names_entry_free);
    m->names = hashmap_new();
    strv_free(m->namespaces);
    m->namespaces = NULL;
    pthread_cond_broadcast(&m->cond);   /* waiters look again */
}

int
cache_init(struct model *m)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cond, &ca);
    pthread_condattr_destroy(&ca);
    m->vms = hashmap_new();
    m->names = hashmap_new();
    return m->vms && m->names ? 0 : -ENOMEM;
}

void
cache_wait_fetches(struct model *m)
{
    pthread_mutex_lock(&m->lock);
    while (m->flights > 0)
        pthread_cond_wait(&m->cond, &m->lock);
    pthread_mutex_unlock(&m->lock);
}

void
cache_fini(struct model *m)
{
    hashmap_free(m->vms, cached_free);
    hashmap_free(m->names, names_entry_free);
    strv_free(m->namespaces);
    pthread_cond_destroy(&m->cond);
}

/* ---- the values the tree asks for ------------------------------------------ */

/* The VM names of ns: a copy in *ret_copy, or, with contains, 0 if that
 * name is among them and -ENOENT if not. */
static int
with_names(struct model *m, const char *ns, char ***ret_copy,
           const char *contains)
{
    struct names_val *v = NULL;
    int r = slot_get(m, SLOT_NAMES, ns ? ns : "", NULL, NULL, NULL, (void **) &v);

    if (r < 0)
        return r;
    if (contains) {
        r = strv_contains_sorted(v->v, contains) ? 0 : -ENOENT;
    } else {
        *ret_copy = strv_copy(v->v);
        r = *ret_copy ? 0 : -ENOMEM;
    }
    val_unref(SLOT_NAMES, v);
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

int
model_vm_get(struct model *m, const char *ns, const char *name,
             struct model_vm **ret)
{
    return slot_get(m, SLOT_VM, ns ? ns : "", name, NULL, NULL, (void **) ret);
}

int
model_snapshots_get(struct model *m, const char *ns, const char *name,
                    struct model_snapshots **ret)
{
    if (!m->ops->snapshot_list)
        return -ENOTSUP;
    return slot_get(m, SLOT_SNAPS, ns ? ns : "", name, NULL, NULL, (void **) ret);
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

int
model_volume_usage(struct model *m, const char *ns, const char *vm,
                   const char *snap, const char *vol, uint64_t *ret_size,
                   uint64_t *ret_allocated)
{
    struct usage_val *u = NULL;
    int r;

    if (!m->ops->volume_usage)
        return -ENOTSUP;
    r = slot_get(m, SLOT_USAGE, ns ? ns : "", vm, snap, vol, (void **) &u);
    if (r < 0)
        return r;
    *ret_size = u->size;
    *ret_allocated = u->allocated;
    val_unref(SLOT_USAGE, u);
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


