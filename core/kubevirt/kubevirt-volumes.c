/* core/kubevirt/kubevirt-volumes.c: a VM's or a snapshot's disk as a
 * volume view, read through a VirtualMachineExport (kube-export.c).
 *
 * A running VM's disks cannot be exported (kubevirt-api.md 13: the export
 * stays Pending InUse), and reading them as they change would give a torn
 * mix of old and new blocks. They are read from a temporary snapshot
 * instead: a VirtualMachineSnapshot (the guest frozen if its agent runs,
 * else crash-consistent), labelled KV_TEMPORARY_LABEL, hidden from snapshots/,
 * exported like any snapshot. One per VM, shared by every open of any of
 * its disks (all from one point in time), made at the first open, and
 * deleted, its export first, LIVE_LINGER_NS after the last close: `cp
 * a.img; cp b.img` reads one snapshot. It is a use of the VM, not an
 * operation: it takes the VM's operation only while it is being made. A
 * daemon killed meanwhile leaves it; the next one deletes it
 * (recover_orphans).
 */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "clock.h"
#include "hashmap.h"
#include "kube-objects.h"
#include "kube-owner.h"
#include "kubevirt-private.h"
#include "log.h"

/* after the last close, as the exports linger: one snapshot for `cp a; cp b` */
#define LIVE_LINGER_NS (UINT64_C(10) * NSEC_PER_SEC)
/* how long an open waits for its temporary snapshot without failure_deadline */
#define LIVE_WAIT_NS (UINT64_C(300) * NSEC_PER_SEC)
/* an open finds another operation on the VM (a mkdir): it asks again so often */
#define OP_RETRY_NS (UINT64_C(200) * NSEC_PER_MSEC)
#define SNAPSHOT_KIND "VirtualMachineSnapshot"

bool
kv_snapshot_temporary(struct json_object *o)
{
    const char *v = kube_get_str(o, "metadata", "labels", KV_TEMPORARY_LABEL, (char *) NULL);
    return v && strcmp(v, "true") == 0;
}

/* ---- temporary snapshots of running VMs ------------------------------------------ */

enum live_state { LIVE_MAKING, LIVE_READY, LIVE_FAILED };

/* One VM's temporary snapshot. */
struct live {
    char *key;                  /* the VM's operation key, "ns/vm" */
    char *ns, *vm;
    char *snap;                 /* the VirtualMachineSnapshot (set once READY) */
    char *vmi_uid;              /* the instance it was cut from ("" none) */
    /* under lives.lock: */
    enum live_state state;
    int error;                  /* LIVE_FAILED: why the opens fail */
    char why[512];
    int refs;                   /* views open, opens under way */
    uint64_t idle_since;        /* refs fell to 0 then */
};

/* Every VM's; kube_exports_companion() of the mount's exports. */
struct lives {
    struct kv *kv;
    struct kube_exports *e;
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* a snapshot made or failed; the reaper's tick */
    struct hashmap *map;        /* key -> struct live, MAKING or READY */
    bool stop;
    pthread_t reaper;
};

static void
live_free(struct live *x)
{
    if (!x)
        return;
    free(x->key);
    free(x->ns);
    free(x->vm);
    free(x->snap);
    free(x->vmi_uid);
    free(x);
}

/* Its export first (it must not outlive its source), then the snapshot. */
static void
retire(struct lives *ls, struct live *x)
{
    int r = kube_exports_drop(ls->e, x->ns, SNAPSHOT_KIND, x->snap);
    if (r < 0)
        log_warning("'%s/%s': the export of temporary snapshot '%s' is not deleted: %s",
                    x->ns, x->vm, x->snap, strerror(-r));
    kv_delete_snapshot(ls->kv, x->ns, x->snap);
    log_debug("'%s/%s': temporary snapshot '%s' deleted", x->ns, x->vm, x->snap);
}

struct idle {
    uint64_t now;
    struct live *found;
};

static void
find_idle(const char *key, void *value, void *opaque)
{
    struct idle *idle = opaque;
    struct live *x = value;

    (void) key;
    if (!idle->found && x->state == LIVE_READY && x->refs == 0 &&
        idle->now - x->idle_since >= LIVE_LINGER_NS)
        idle->found = x;
}

/* Retires the snapshots idle for LIVE_LINGER_NS. */
static void *
reaper_thread(void *opaque)
{
    struct lives *ls = opaque;

    pthread_mutex_lock(&ls->lock);
    while (!ls->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&ls->cond, &ls->lock, &ts);
        struct idle idle = { now_monotonic_ns(), NULL };
        hashmap_foreach(ls->map, find_idle, &idle);
        if (!idle.found)
            continue;
        /* out of the map first: an open from now on makes a new one */
        hashmap_remove(ls->map, idle.found->key);
        pthread_mutex_unlock(&ls->lock);
        retire(ls, idle.found);
        live_free(idle.found);
        pthread_mutex_lock(&ls->lock);
    }
    pthread_mutex_unlock(&ls->lock);
    return NULL;
}

static void lives_end(void *opaque);

static void *
lives_new(void *opaque)
{
    struct kv *kv = opaque;
    struct lives *ls = calloc(1, sizeof *ls);

    if (!ls)
        return NULL;
    ls->kv = kv;
    ls->e = kv->exports;
    pthread_mutex_init(&ls->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ls->cond, &ca);
    pthread_condattr_destroy(&ca);
    ls->map = hashmap_new();
    if (!ls->map || pthread_create(&ls->reaper, NULL, reaper_thread, ls) != 0) {
        hashmap_free(ls->map, NULL);
        pthread_cond_destroy(&ls->cond);
        pthread_mutex_destroy(&ls->lock);
        free(ls);
        return NULL;
    }
    return ls;
}

struct collect {
    struct live **v;
    size_t n;
};

static void
collect_one(const char *key, void *value, void *opaque)
{
    struct collect *c = opaque;
    (void) key;
    c->v[c->n++] = value;
}

/* At unmount (views are closed): the lingering snapshots go now. */
static void
lives_end(void *opaque)
{
    struct lives *ls = opaque;
    struct collect c = { NULL, 0 };

    pthread_mutex_lock(&ls->lock);
    ls->stop = true;
    pthread_cond_broadcast(&ls->cond);
    pthread_mutex_unlock(&ls->lock);
    pthread_join(ls->reaper, NULL);
    c.v = calloc(hashmap_size(ls->map) + 1, sizeof *c.v);
    if (c.v)
        hashmap_foreach(ls->map, collect_one, &c);
    for (size_t i = 0; i < c.n; i++) {
        if (c.v[i]->state != LIVE_READY || c.v[i]->refs > 0)
            continue;   /* an open under way at unmount: FUSE ends them first */
        retire(ls, c.v[i]);
        live_free(c.v[i]);
    }
    free(c.v);
    hashmap_free(ls->map, NULL);
    pthread_cond_destroy(&ls->cond);
    pthread_mutex_destroy(&ls->lock);
    free(ls);
}

/* "vmsnapfs-live-VM-RANDOM", a valid name of at most 63 characters */
static char *
live_name(const char *vm)
{
    uint32_t rnd;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t) sizeof rnd)
        rnd = (uint32_t) (now_monotonic_ns() ^ ((uint64_t) getpid() << 16));
    int n = (int) strnlen(vm, 40);
    while (n > 0 && (vm[n - 1] == '-' || vm[n - 1] == '.'))
        n--;                            /* a part ends with a letter or digit */
    char *s = NULL;
    if (asprintf(&s, "vmsnapfs-live-%.*s-%08x", n, vm, rnd) < 0)
        return NULL;
    return s;
}

/* Makes x's snapshot (the caller holds the VM's operation) and waits
 * until it is readyToUse, at the latest at end: 0, or -errno (why) with
 * nothing left behind and the guest thawed (kv_snapshot_make). */
static int
live_snapshot(struct kv *kv, struct live *x, uint64_t end, char *why, size_t size)
{
    struct json_object *vmi = kube_cache_get(cache(kv, C_VMIS, x->ns), x->ns, x->vm);
    bool running = vmi != NULL, agent = kube_vmi_agent(vmi);
    const char *uid = kube_get_str(vmi, "metadata", "uid", (char *) NULL);
    const struct vm_ref ref = { x->ns, x->vm };
    struct op_report rep = { .text = "" };
    uint64_t now = now_monotonic_ns();
    /* KubeVirt fails it (and thaws) when the open would give up; the
     * consistency asked of mkdir is not asked of a copy */
    const struct vmsnapfs_opts o = {
        .failure_deadline_ns = end > now ? end - now : NSEC_PER_SEC,
        .consistency = CONSISTENCY_BEST_EFFORT,
    };
    int r = -EEXIST;

    x->vmi_uid = strdup(uid ? uid : "");
    json_object_put(vmi);
    if (!x->vmi_uid)
        return -ENOMEM;
    for (int attempt = 0; attempt < 3 && r == -EEXIST; attempt++) {
        free(x->snap);          /* a name taken (by chance): another */
        if (!(x->snap = live_name(x->vm)))
            return -ENOMEM;
        r = kv_snapshot_make(kv, &ref, x->snap, &o, running, true, &rep);
    }
    if (r < 0) {
        snprintf(why, size, "its temporary snapshot '%s' failed: %s", x->snap, rep.text);
        return r == -EEXIST ? -EIO : r;
    }
    struct json_object *so = kube_cache_get(cache(kv, C_SNAPS, x->ns), x->ns, x->snap);
    struct snapshot_info *s = NULL;
    unsigned ind = so && kube_snapshot_info(so, NULL, &s) >= 0 ? s->indications : 0;
    snapshot_info_free(s);
    json_object_put(so);
    bool quiesced = ind & (1u << INDICATION_GUEST_AGENT) &&
                    !(ind & ((1u << INDICATION_QUIESCE_FAILED) |
                             (1u << INDICATION_QUIESCE_TIMEOUT)));
    /* allowed (consistency=required is for mkdir), but said */
    if (running && !quiesced)
        log_info("'%s/%s': its disks are read from temporary snapshot '%s', "
                 "crash-consistent: %s", x->ns, x->vm, x->snap,
                 ind & (1u << INDICATION_PAUSED) ? "the VM is paused, not frozen"
                 : agent                         ? "the guest's freeze failed"
                                                 : "no guest agent connected");
    else
        log_info("'%s/%s': its disks are read from temporary snapshot '%s'%s", x->ns, x->vm,
                 x->snap, running ? " (the guest was frozen for it)" : "");
    return 0;
}

/* Makes x's snapshot under the VM's operation: a user's mkdir (KubeVirt
 * takes one snapshot of a VM at a time) or another daemon's is waited
 * for, within the failure deadline. */
static int
live_make(struct lives *ls, struct live *x, char *why, size_t size)
{
    struct kv *kv = ls->kv;
    uint64_t end = now_monotonic_ns() + (kv->deadline_ns ? kv->deadline_ns : LIVE_WAIT_NS);
    int r;

    while ((r = vm_op_begin(kv->ops, x->key, NULL, 0)) == -EBUSY && now_monotonic_ns() < end)
        sleep_ns(OP_RETRY_NS);
    if (r == -EBUSY)
        return snprintf(why, size, "another operation ran on the VM for the whole failure "
                        "deadline: no temporary snapshot of it could be made"), -ETIMEDOUT;
    if (r < 0)
        return snprintf(why, size, "%s", vm_op_refusal(r)), r;
    r = live_snapshot(kv, x, end, why, size);
    vm_op_end(kv->ops, x->key);
    return r;
}

/* Under ls->lock: may a new open read x, which no view reads now? Only if
 * the VM still runs the instance x was cut from (a restore needs it
 * stopped: it may have changed the disks since) and x is still there. */
static bool
reusable(struct lives *ls, struct live *x, const char *vmi_uid)
{
    struct json_object *o = kube_cache_get(cache(ls->kv, C_SNAPS, x->ns), x->ns, x->snap);
    struct snapshot_info *s = NULL;
    bool ok = vmi_uid && strcmp(vmi_uid, x->vmi_uid) == 0 && o &&
              kube_snapshot_info(o, NULL, &s) >= 0 && s->phase == SNAPSHOT_SUCCEEDED;

    snapshot_info_free(s);
    json_object_put(o);
    return ok;
}

/* Under ls->lock: one reference less; a failed one (out of the map) goes
 * with its last. */
static void
live_unref_locked(struct lives *ls, struct live *x)
{
    if (--x->refs > 0)
        return;
    if (x->state == LIVE_READY)
        x->idle_since = now_monotonic_ns();     /* lingers: the reaper */
    else
        live_free(x);
    pthread_cond_broadcast(&ls->cond);
}

static void
live_release(struct lives *ls, struct live *x)
{
    LOCK_FOR_SCOPE(&ls->lock);
    live_unref_locked(ls, x);
}

/* The temporary snapshot a view of the VM's own disks reads, referenced
 * (live_release()): the one in use, whatever the VM did since (views of
 * one file share the kernel's page cache: all read the same bytes); else
 * a lingering one still good (reusable()); else a new one if the VM runs
 * (vmi_uid not NULL); *ret NULL if it does not (its disks are read as
 * they are). -errno (why) if it cannot be made. */
static int
live_acquire(struct lives *ls, const struct vm_ref *ref, const char *vmi_uid, struct live **ret,
             char *why, size_t size)
{
    _cleanup_free_ char *key = NULL;
    struct live *stale = NULL, *x;
    int r;

    *ret = NULL;
    if (asprintf(&key, "%s/%s", ref->ns, ref->name) < 0)
        return -ENOMEM;
    pthread_mutex_lock(&ls->lock);
    x = hashmap_get(ls->map, key);
    if (x && x->refs == 0 && !reusable(ls, x, vmi_uid)) {
        hashmap_remove(ls->map, key);
        stale = TAKE_PTR(x);
    }
    if (x) {
        x->refs++;
        while (x->state == LIVE_MAKING)         /* another open makes it */
            pthread_cond_wait(&ls->cond, &ls->lock);
        r = x->state == LIVE_READY ? 0 : x->error;
        if (r < 0) {
            snprintf(why, size, "%s", x->why);
            live_unref_locked(ls, x);
        }
        pthread_mutex_unlock(&ls->lock);
        if (r >= 0)
            *ret = x;
        return r;
    }
    r = 0;
    if (vmi_uid) {
        x = calloc(1, sizeof *x);
        if (x) {
            *x = (struct live) { .key = strdup(key), .ns = strdup(ref->ns),
                                 .vm = strdup(ref->name), .state = LIVE_MAKING, .refs = 1 };
        }
        if (!x || !x->key || !x->ns || !x->vm || hashmap_put(ls->map, key, x, NULL) < 0) {
            live_free(x);
            x = NULL;
            r = -ENOMEM;
        }
    }
    pthread_mutex_unlock(&ls->lock);
    if (stale) {
        retire(ls, stale);
        live_free(stale);
    }
    if (!x)
        return r;

    r = live_make(ls, x, why, size);
    pthread_mutex_lock(&ls->lock);
    x->state = r < 0 ? LIVE_FAILED : LIVE_READY;
    x->error = r;
    if (r < 0) {
        /* the opens waiting for it fail alike; the next one tries anew */
        snprintf(x->why, sizeof x->why, "%s", why);
        hashmap_remove(ls->map, key);
        live_unref_locked(ls, x);
    }
    pthread_cond_broadcast(&ls->cond);
    pthread_mutex_unlock(&ls->lock);
    if (r >= 0)
        *ret = x;
    return r;
}

/* ---- volumes: read through VirtualMachineExports ----------------------------------- */

/* The claim (PVC or DataVolume name) behind volume vol of the VM, or of
 * its snapshot snap; *ret_vmi_uid: the VM's instance's uid, NULL if it
 * does not run. */
static int
volume_claim(struct kv *kv, const struct vm_ref *ref, const char *snap, const char *vol,
             char **ret_claim, char **ret_vmi_uid)
{
    struct json_object *vm = kube_cache_get(cache(kv, C_VMS, ref->ns), ref->ns, ref->name);
    struct json_object *vmi = vm ? kube_cache_get(cache(kv, C_VMIS, ref->ns), ref->ns,
                                                  ref->name) : NULL;
    struct json_object *so = NULL, *content = NULL;
    struct vm_info *info = NULL;
    struct snapshot_info *si = NULL;
    const struct volume *vols = NULL;
    size_t n = 0;
    int r = vm ? 0 : -ENOENT;

    *ret_vmi_uid = NULL;
    if (vmi && !(*ret_vmi_uid = strdup(kube_get_str(vmi, "metadata", "uid", (char *) NULL)
                                           ?: "")))
        r = -ENOMEM;
    if (r >= 0 && snap) {
        so = kube_cache_get(cache(kv, C_SNAPS, ref->ns), ref->ns, snap);
        const char *cname = kube_get_str(so, "status", "virtualMachineSnapshotContentName",
                                         (char *) NULL);
        content = cname ? kube_cache_get(cache(kv, C_CONTENTS, ref->ns), ref->ns, cname) : NULL;
        /* a temporary snapshot is no snapshot of the tree's */
        r = so && kube_snapshot_of(so, ref->name) && !kv_snapshot_temporary(so)
                ? kube_snapshot_info(so, content, &si)
                : -ENOENT;
        if (r >= 0) {
            vols = si->volumes;
            n = si->n_volumes;
        }
    } else if (r >= 0) {
        r = kube_vm_info(vm, vmi, &info);
        if (r >= 0) {
            vols = info->volumes;
            n = info->n_volumes;
        }
    }
    *ret_claim = NULL;
    for (size_t i = 0; r >= 0 && i < n; i++)
        if (strcmp(vols[i].name, vol) == 0 && vols[i].source && vols[i].source[0] &&
            !(*ret_claim = strdup(vols[i].source)))
            r = -ENOMEM;
    if (r >= 0 && !*ret_claim)
        r = -ENOENT;
    if (r < 0) {
        free(*ret_vmi_uid);
        *ret_vmi_uid = NULL;
    }
    snapshot_info_free(si);
    vm_info_free(info);
    json_object_put(vm);
    json_object_put(vmi);
    json_object_put(so);
    json_object_put(content);
    return r;
}

/* An open view of a VM's or a snapshot's disk. */
struct use {
    struct kv *kv;
    char *ns, *vm;
    bool of_vm;                 /* the VM's own disk, read as it is (stopped when opened) */
    struct vm_view *view;
    struct lives *ls;
    struct live *live;          /* the VM's own disk, read from its temporary snapshot */
};

static void
use_end(void *opaque)
{
    struct use *u = opaque;
    vm_view_leave(u->view);
    if (u->live)
        live_release(u->ls, u->live);
    free(u->ns);
    free(u->vm);
    free(u);
}

/* The VM of a view of its own disk has not started since (no VMI). */
static bool
use_unchanged(void *opaque)
{
    struct use *u = opaque;
    if (!u->of_vm)
        return true;
    struct json_object *vmi = kube_cache_get(cache(u->kv, C_VMIS, u->ns), u->ns, u->vm);
    json_object_put(vmi);
    return vmi == NULL;
}

int
kv_volume_open(void *h, const struct vm_ref *ref, const char *snap, const char *vol,
               struct volume_view **ret)
{
    struct kv *kv = h;
    _cleanup_free_ char *claim = NULL, *vmi_uid = NULL, *key = NULL;
    char why[512] = "";
    int r = volume_claim(kv, ref, snap, vol, &claim, &vmi_uid);

    if (r < 0)
        return r;
    r = kube_exports_usable(kv->exports, why, sizeof why);
    if (r < 0) {
        log_error("'%s/%s': volume '%s': %s", ref->ns, ref->name, vol, why);
        return r;
    }
    /* an open view is a use: rmdir of the snapshot (or restore, for the
     * VM's own disks) is refused meanwhile */
    struct use *use = calloc(1, sizeof *use);
    if (!use || (snap ? asprintf(&key, "%s/%s/snapshots/%s", ref->ns, ref->name, snap)
                      : asprintf(&key, "%s/%s", ref->ns, ref->name)) < 0) {
        free(use);
        return -ENOMEM;
    }
    *use = (struct use) { kv, strdup(ref->ns), strdup(ref->name), false, NULL, NULL, NULL };
    r = use->ns && use->vm ? vm_view_enter(kv->ops, key, snap ? VM_VIEW_SNAPSHOT : 0, &use->view) : -ENOMEM;
    /* the VM's own disk: from its temporary snapshot if it runs (or if
     * another view reads one) */
    if (r >= 0 && !snap) {
        use->ls = kube_exports_companion(kv->exports, lives_new, kv, lives_end);
        r = use->ls ? live_acquire(use->ls, ref, vmi_uid, &use->live, why, sizeof why)
                    : -ENOMEM;
        use->of_vm = !use->live;
    }
    if (r >= 0) {
        const char *kind = snap || use->live ? SNAPSHOT_KIND : "VirtualMachine";
        const char *name = use->live ? use->live->snap : snap ? snap : ref->name;
        r = kube_exports_view(kv->exports, ref->ns, kind, name, claim, use_unchanged, use_end,
                              use, ret, why, sizeof why);
        /* the disk is the VM's (its file is listed): KubeVirt left it out
         * of the snapshot (no VolumeSnapshotClass, a hotplug of the
         * instance only) */
        if (r == -ENOENT && use->live) {
            size_t n = strlen(why);
            snprintf(why + n, sizeof why - n, " (KubeVirt left it out of temporary snapshot "
                     "'%s': can it be snapshotted?)", name);
            r = -EIO;
        }
    }
    if (r < 0) {
        use_end(use);
        log_error("'%s/%s': volume '%s'%s%s: %s", ref->ns, ref->name, vol,
                  snap ? " of snapshot " : "", snap ? snap : "", why[0] ? why : strerror(-r));
    }
    return r;
}
