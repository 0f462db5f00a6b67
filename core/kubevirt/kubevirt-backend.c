/* core/kubevirt/kubevirt-backend.c: the KubeVirt backend (kubevirt://).
 *
 * The tree is read from live copies of five collections (kube-cache.c:
 * list + watch, kube-scope.c: in every namespace the credentials may list):
 * VirtualMachines, their instances, VirtualMachineSnapshots, their contents
 * and PVCs. A listing makes no API request; each watch event tells the
 * model exactly which VM changed. Disks: kubevirt-volumes.c.
 *
 * Sources: kubevirt:// (the current context of $KUBECONFIG, else
 * ~/.kube/config), kubevirt://CONTEXT, kubevirt://in-cluster.
 *
 * Thread model: the caches' threads call the events; ops run on FUSE
 * workers and only read the caches.
 */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "backend.h"
#include "cleanup.h"
#include "clock.h"
#include "deadline.h"
#include "kube-cache.h"
#include "kube-http.h"
#include "kube-export.h"
#include "kube-objects.h"
#include "kube-owner.h"
#include "kube-scope.h"
#include "kubeconfig.h"
#include "kubevirt-changes.h"
#include "kubevirt-private.h"
#include "log.h"
#include "vm-ops.h"

/* on the snapshots vmsnapfs makes: that it made them, and which daemon */
#define SYNC_TIMEOUT_NS (UINT64_C(30) * NSEC_PER_SEC)
/* how long an export may take to become Ready (without failure_deadline) */
#define EXPORT_WAIT_NS (UINT64_C(120) * NSEC_PER_SEC)
#define DISCOVERY_TIMEOUT_NS (UINT64_C(20) * NSEC_PER_SEC)

/* ---- events ------------------------------------------------------------------------ */

static void
tell(struct kv *kv, struct json_object *o, const char *vm, unsigned change)
{
    const char *ns = kube_get_str(o, "metadata", "namespace", (char *) NULL);
    if (kv->events.vm_changed && ns && vm)
        kv->events.vm_changed(kv->events.opaque, ns, vm, change);
}

static void
on_vm(void *opaque, enum kube_event type, struct json_object *o)
{
    tell(opaque, o, kube_get_str(o, "metadata", "name", (char *) NULL),
         type == KUBE_MODIFIED ? VM_CHANGE_STATE | VM_CHANGE_DEFINITION
                               : VM_CHANGE_EXISTENCE | VM_CHANGE_STATE);
}

static void
on_vmi(void *opaque, enum kube_event type, struct json_object *o)
{
    (void) type;
    /* the VMI has the VM's name: running, the agent, the volumes' sizes */
    tell(opaque, o, kube_get_str(o, "metadata", "name", (char *) NULL),
         VM_CHANGE_STATE | VM_CHANGE_DEFINITION);
}

static void
on_snapshot(void *opaque, enum kube_event type, struct json_object *o)
{
    (void) type;
    tell(opaque, o, kube_get_str(o, "spec", "source", "name", (char *) NULL),
         VM_CHANGE_SNAPSHOTS);
}

static void
on_content(void *opaque, enum kube_event type, struct json_object *o)
{
    (void) type;
    /* the content's captured VM names the source */
    tell(opaque, o, kube_get_str(o, "spec", "source", "virtualMachine", "metadata", "name",
                                 (char *) NULL),
         VM_CHANGE_SNAPSHOTS);
}

static void late_thaw_start(struct kv *kv, const char *key, const struct vm_ref *ref);
static int unfreeze(struct kv *kv, const char *ns, const char *vm);

/* A daemon killed mid-mkdir left its snapshot, maybe a frozen guest: the
 * snapshot goes (mkdir failed), the guest is thawed, now and if its freeze
 * lands later. One killed while a running VM's disk was read left the
 * temporary snapshot it was read from (kubevirt-volumes.c): it goes, made
 * or not (its export: kube_exports_recover). */
static void
recover_orphans(struct kv *kv)
{
    struct json_object **snaps = NULL;
    size_t n = 0;

    if (kube_scope_list_all(kv->scope, C_SNAPS, &snaps, &n) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        struct snapshot_info *s = NULL;
        if (!kube_owner_gone(kv->owner, snaps[i]) || kube_snapshot_info(snaps[i], NULL, &s) < 0)
            continue;
        bool done = s->phase == SNAPSHOT_SUCCEEDED;
        bool temporary = kv_snapshot_temporary(snaps[i]);
        snapshot_info_free(s);
        if (done && !temporary)
            continue;                   /* made, and usable: it stays */
        const char *ns = kube_get_str(snaps[i], "metadata", "namespace", (char *) NULL);
        const char *name = kube_get_str(snaps[i], "metadata", "name", (char *) NULL);
        const char *vm = kube_get_str(snaps[i], "spec", "source", "name", (char *) NULL);
        if (!ns || !name || !vm)
            continue;
        if (done) {
            log_warning("'%s/%s': temporary snapshot '%s' of a vmsnapfs that was killed: "
                        "deleted", ns, vm, name);
            kv_delete_snapshot(kv, ns, name);
            continue;                   /* made: its freeze is over */
        }
        log_warning("'%s/%s': snapshot '%s' of a vmsnapfs that was killed: deleted, and the "
                    "guest thawed", ns, vm, name);
        kv_delete_snapshot(kv, ns, name);
        _cleanup_free_ char *key = NULL;
        const struct vm_ref ref = { ns, vm };
        if (asprintf(&key, "%s/%s", ns, vm) >= 0) {
            unfreeze(kv, ns, vm);
            late_thaw_start(kv, key, &ref);
        }
    }
    kube_cache_list_free(snaps, n);
    kv_changes_recover(kv);
}

/* ---- open / close ---------------------------------------------------------------- */

static void
kv_close(void *h)
{
    struct kv *kv = h;
    if (!kv)
        return;
    pthread_mutex_lock(&kv->thaw_lock);
    kv->closing = true;
    while (kv->thaws > 0)
        pthread_cond_wait(&kv->thaw_cond, &kv->thaw_lock);
    pthread_mutex_unlock(&kv->thaw_lock);
    kube_exports_free(kv->exports);
    kube_scope_stop(kv->scope);
    kube_client_free(kv->client);
    vm_ops_free(kv->ops);
    pthread_cond_destroy(&kv->thaw_cond);
    pthread_mutex_destroy(&kv->thaw_lock);
    free(kv);
}

/* The served snapshot.kubevirt.io version the cluster prefers. */
static int
discover(struct kv *kv, char *why, size_t size)
{
    struct kube_response resp;
    int r = kube_request(kv->client, "GET", "/apis/snapshot.kubevirt.io", NULL, NULL,
                         DISCOVERY_TIMEOUT_NS, &resp, why, size);
    struct json_object *g = r >= 0 ? json_tokener_parse(resp.body ? resp.body : "") : NULL;
    const char *v = kube_get_str(g, "preferredVersion", "version", (char *) NULL);

    kube_response_clear(&resp);
    if (r == -ENOENT)
        r = (snprintf(why, size, "the cluster serves no snapshot.kubevirt.io API: is KubeVirt "
                      "installed, with its Snapshot feature?"), -ENOENT);
    else if (r >= 0 && (!v || (strcmp(v, "v1beta1") != 0 && strcmp(v, "v1alpha1") != 0)))
        r = (snprintf(why, size, "snapshot.kubevirt.io version '%s' is not one this "
                      "vmsnapfs knows (v1beta1, v1alpha1)", v ? v : ""), -EINVAL);
    else if (r >= 0)
        snprintf(kv->snap_version, sizeof kv->snap_version, "%s", v);
    json_object_put(g);
    return r;
}

static int
load_config(const char *source, struct kube_config *cfg, char *why, size_t size)
{
    const char *ctx = source + strlen("kubevirt://");

    if (strcmp(ctx, "in-cluster") == 0)
        return kubeconfig_in_cluster(NULL, cfg, why, size);
    return kubeconfig_load(*ctx ? ctx : NULL, cfg, why, size);
}

static int
kv_open(const char *source, const struct vmsnapfs_opts *o, const struct backend_events *events,
        void **ret_h)
{
    struct kv *kv = calloc(1, sizeof *kv);
    struct kube_config cfg = { 0 };
    char why[512] = "";
    int r;

    (void) o;
    if (!kv)
        return -ENOMEM;
    pthread_mutex_init(&kv->thaw_lock, NULL);
    pthread_cond_init(&kv->thaw_cond, NULL);
    if (events)
        kv->events = *events;
    kv->deadline_ns = o ? o->failure_deadline_ns : 0;
    r = (kv->ops = vm_ops_new()) ? 0 : -ENOMEM;
    if (r >= 0)
        r = load_config(source, &cfg, why, sizeof why);
    if (r >= 0)
        r = kube_client_new(&cfg, &kv->client, why, sizeof why);
    if (r >= 0)
        r = discover(kv, why, sizeof why);

    const struct kube_collection cols[_C_MAX] = {
        [C_VMS] = { .group = "kubevirt.io", .version = "v1", .plural = "virtualmachines",
                    .what = "VirtualMachines", .fn = on_vm },
        /* the tree reads a VMI's status only: running, agent, disk sizes */
        [C_VMIS] = { .group = "kubevirt.io", .version = "v1",
                     .plural = "virtualmachineinstances", .what = "VirtualMachineInstances",
                     .fn = on_vmi, .opt = { .drop_spec = true } },
        /* listed by VM */
        [C_SNAPS] = { .group = "snapshot.kubevirt.io", .version = kv->snap_version,
                      .plural = "virtualmachinesnapshots", .what = "VirtualMachineSnapshots",
                      .fn = on_snapshot, .opt = { .index = { "spec", "source", "name" } } },
        [C_CONTENTS] = { .group = "snapshot.kubevirt.io", .version = kv->snap_version,
                         .plural = "virtualmachinesnapshotcontents",
                         .what = "VirtualMachineSnapshotContents", .fn = on_content },
        /* the sizes of a stopped VM's disks; credentials that may not read
         * claims show them as 0 bytes */
        [C_PVCS] = { .group = "", .version = "v1", .plural = "persistentvolumeclaims",
                     .what = "PersistentVolumeClaims", .optional = true },
    };
    if (r >= 0)
        r = kube_scope_start(kv->client, cols, _C_MAX, kv, cfg.namespace, SYNC_TIMEOUT_NS,
                             &kv->scope, why, sizeof why);
    kube_config_clear(&cfg);
    if (r < 0) {
        log_error("cannot use '%s' (%s): %s", source, kv->client ? kube_client_server(kv->client)
                                                                 : "no server",
                  why[0] ? why : strerror(-r));
        kv_close(kv);
        return r;
    }
    kube_owner_init(kv->owner, sizeof kv->owner);
    recover_orphans(kv);
    kv_restore_recover(kv);
    /* disks: read in the cluster through the internal links */
    uint64_t wait = kv->deadline_ns ? kv->deadline_ns : EXPORT_WAIT_NS;
    bool internal = o && o->export_link != EXPORT_LINK_AUTO
                        ? o->export_link == EXPORT_LINK_INTERNAL
                        : strcmp(source, "kubevirt://in-cluster") == 0;
    if (kube_exports_new(kv->client, kv->owner, internal, wait, &kv->exports, why,
                         sizeof why) < 0)
        log_info("'%s': %s", source, why);
    for (size_t i = 0; kv->exports && i < kube_scope_count(kv->scope); i++)
        kube_exports_recover(kv->exports, kube_scope_ns(kv->scope, i));
    log_info("'%s': %s, snapshot.kubevirt.io/%s, %s", source, kube_client_server(kv->client),
             kv->snap_version, kube_scope_describe(kv->scope));
    *ret_h = kv;
    return 0;
}

/* ---- queries ------------------------------------------------------------------------ */

static int
strv_append(char ***v, size_t *n, const char *s)
{
    char **g = realloc(*v, (*n + 2) * sizeof *g);
    if (!g)
        return -ENOMEM;
    *v = g;
    if (!(g[*n] = strdup(s)))
        return -ENOMEM;
    g[++*n] = NULL;
    return 0;
}

/* The VMs' names in ns, or the namespaces holding any, that the tree can
 * show: sorted, each once. */
static int
vm_names(struct kv *kv, const char *ns, char ***ret)
{
    _cleanup_strv_ char **all = NULL;
    size_t k = 0;
    char **names = calloc(1, sizeof *names);
    int r = !names ? -ENOMEM
            : ns   ? kube_cache_names(cache(kv, C_VMS, ns), ns, &all)
                   : kube_scope_namespaces(kv->scope, C_VMS, &all);

    for (size_t i = 0; r >= 0 && all[i]; i++)
        if (kube_name_ok(all[i]))
            r = strv_append(&names, &k, all[i]);
    if (r < 0) {
        strv_free(names);
        return r;
    }
    *ret = names;
    return 0;
}

static int
kv_list_namespaces(void *h, char ***ret)
{
    return vm_names(h, NULL, ret);
}

static int
kv_list_vms(void *h, const char *ns, char ***ret)
{
    return vm_names(h, ns, ret);
}

static int
kv_vm_get(void *h, const struct vm_ref *ref, struct vm_info **ret)
{
    struct kv *kv = h;
    struct json_object *vm = kube_cache_get(cache(kv, C_VMS, ref->ns), ref->ns, ref->name);
    struct json_object *vmi = vm ? kube_cache_get(cache(kv, C_VMIS, ref->ns), ref->ns,
                                                  ref->name)
                                 : NULL;
    int r = vm ? kube_vm_info(vm, vmi, ret) : -ENOENT;

    json_object_put(vm);
    json_object_put(vmi);
    /* a stopped VM's disk: its claim's size */
    for (size_t i = 0; r >= 0 && i < (*ret)->n_volumes; i++) {
        struct volume *v = &(*ret)->volumes[i];
        if (v->size || !v->source)
            continue;
        struct json_object *pvc = kube_cache_get(cache(kv, C_PVCS, ref->ns), ref->ns, v->source);
        (void) kube_claim_bytes(pvc, &v->size);
        json_object_put(pvc);
    }
    return r;
}

static int
kv_snapshot_list(void *h, const struct vm_ref *ref, struct snapshot_info ***ret, size_t *ret_n)
{
    struct kv *kv = h;
    struct json_object **snaps = NULL;
    size_t n = 0, k = 0;
    struct snapshot_info **v = NULL;
    struct json_object *vm = kube_cache_get(cache(kv, C_VMS, ref->ns), ref->ns, ref->name);
    int r = vm ? kube_cache_list(cache(kv, C_SNAPS, ref->ns), ref->ns, ref->name, &snaps, &n)
               : -ENOENT;

    json_object_put(vm);
    if (r >= 0 && !(v = calloc(n + 1, sizeof *v)))
        r = -ENOMEM;
    for (size_t i = 0; r >= 0 && i < n; i++) {
        /* a temporary snapshot (a running VM's disk being read) is no
         * snapshot of the tree's */
        if (!kube_snapshot_of(snaps[i], ref->name) || kv_snapshot_temporary(snaps[i]))
            continue;
        const char *cname = kube_get_str(snaps[i], "status", "virtualMachineSnapshotContentName",
                                         (char *) NULL);
        struct json_object *content = cname ? kube_cache_get(cache(kv, C_CONTENTS, ref->ns),
                                                             ref->ns,
                                                             cname)
                                            : NULL;
        struct snapshot_info *s = NULL;
        int one = kube_snapshot_info(snaps[i], content, &s);
        json_object_put(content);
        if (one == -ENOMEM)
            r = one;
        else if (one >= 0)
            v[k++] = s;
    }
    kube_cache_list_free(snaps, n);
    if (r < 0) {
        snapshot_infos_free(v, k);
        return r;
    }
    *ret = v;           /* sorted by name: the cache lists so */
    *ret_n = k;
    return 0;
}

/* ---- snapshots: mkdir and rmdir ---------------------------------------------------- */

#define REQUEST_NS (UINT64_C(20) * NSEC_PER_SEC)
/* how long after a failed snapshot a freeze that lands late is thawed */
#define LATE_THAW_NS (UINT64_C(120) * NSEC_PER_SEC)

int
kv_sayf(char *buf, size_t size, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return r;
}

#define say kv_say

int
kv_api(struct kv *kv, const char *method, const char *path, const char *body,
       struct json_object **ret, char *why, size_t size)
{
    struct kube_response resp;
    int r = kube_request(kv->client, method, path, body, NULL, REQUEST_NS, &resp, why, size);

    if (ret)
        *ret = r >= 0 && resp.body ? json_tokener_parse(resp.body) : NULL;
    kube_response_clear(&resp);
    return r;
}

char *
kv_snapshot_api_path(struct kv *kv, const char *plural, const char *ns, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "/apis/snapshot.kubevirt.io/%s/namespaces/%s/%s%s%s", kv->snap_version, ns,
                 plural, name ? "/" : "", name ? name : "") < 0)
        return NULL;
    return p;
}

char *
kv_snapshots_path(struct kv *kv, const char *ns, const char *name)
{
    return kv_snapshot_api_path(kv, "virtualmachinesnapshots", ns, name);
}

/* PUT unfreeze on the VMI: the guest thawed whatever KubeVirt's controller
 * did (upstream can leave it frozen: a freeze that lands after the
 * snapshot failed). 0, or -errno when it could not be asked. */
static int
unfreeze(struct kv *kv, const char *ns, const char *vm)
{
    _cleanup_free_ char *path = NULL;
    struct kube_response resp;
    char why[256];

    if (asprintf(&path, "/apis/subresources.kubevirt.io/v1/namespaces/%s/"
                        "virtualmachineinstances/%s/unfreeze", ns, vm) < 0)
        return -ENOMEM;
    int r = kube_request(kv->client, "PUT", path, NULL, NULL, REQUEST_NS, &resp, why, sizeof why);
    kube_response_clear(&resp);
    if (r == -ENOENT || r == -EAGAIN)
        return 0;                       /* no VMI, or not running: nothing frozen */
    if (r < 0)
        log_warning("'%s/%s': cannot unfreeze: %s", ns, vm, why);
    return r;
}

struct late_thaw {
    struct kv *kv;
    char key[512];          /* the VM's operation key */
    char ns[256], vm[256];
};

int
kv_unfreeze(struct kv *kv, const char *ns, const char *vm)
{
    return unfreeze(kv, ns, vm);
}

void
kv_late_thaw(struct kv *kv, const struct vm_ref *ref)
{
    _cleanup_free_ char *key = NULL;
    if (asprintf(&key, "%s/%s", ref->ns, ref->name) >= 0)
        late_thaw_start(kv, key, ref);
}

bool
kv_closing(struct kv *kv)
{
    LOCK_FOR_SCOPE(&kv->thaw_lock);
    return kv->closing;
}

int
kv_thread_start(struct kv *kv, void *(*fn)(void *), void *arg)
{
    pthread_t th;

    pthread_mutex_lock(&kv->thaw_lock);
    kv->thaws++;
    pthread_mutex_unlock(&kv->thaw_lock);
    int r = -pthread_create(&th, NULL, fn, arg);
    if (r == 0) {
        pthread_detach(th);
        return 0;
    }
    kv_thread_done(kv);
    return r;
}

void
kv_thread_done(struct kv *kv)
{
    pthread_mutex_lock(&kv->thaw_lock);
    kv->thaws--;
    pthread_cond_broadcast(&kv->thaw_cond);
    pthread_mutex_unlock(&kv->thaw_lock);
}

/* After a failed snapshot: the freeze KubeVirt asked for may land later
 * (its call timed out, the guest's went on); thaw it whenever it shows,
 * while no other operation (a new snapshot's own freeze) runs on the VM. */
static void *
late_thaw_thread(void *opaque)
{
    struct late_thaw *t = opaque;
    struct kv *kv = t->kv;
    struct kube_cache *vmis = cache(kv, C_VMIS, t->ns);
    uint64_t end = now_monotonic_ns() + LATE_THAW_NS;

    while (now_monotonic_ns() < end && !kv_closing(kv)) {
        uint64_t seen = kube_cache_changes(vmis);
        struct json_object *vmi = kube_cache_get(vmis, t->ns, t->vm);
        const char *fs = kube_get_str(vmi, "status", "fsFreezeStatus", (char *) NULL);
        bool frozen = fs && strcmp(fs, "frozen") == 0;
        json_object_put(vmi);
        if (frozen && vm_op_begin(kv->ops, t->key, NULL, 0) == 0) {
            log_warning("'%s/%s': frozen after its snapshot failed: thawing", t->ns, t->vm);
            unfreeze(kv, t->ns, t->vm);
            vm_op_end(kv->ops, t->key);
        }
        (void) kube_cache_wait_change(vmis, seen, now_monotonic_ns() + NSEC_PER_SEC);
    }
    free(t);
    kv_thread_done(kv);
    return NULL;
}

static void
late_thaw_start(struct kv *kv, const char *key, const struct vm_ref *ref)
{
    struct late_thaw *t = calloc(1, sizeof *t);

    if (!t)
        return;
    t->kv = kv;
    snprintf(t->key, sizeof t->key, "%s", key);
    snprintf(t->ns, sizeof t->ns, "%s", ref->ns);
    snprintf(t->vm, sizeof t->vm, "%s", ref->name);
    if (kv_thread_start(kv, late_thaw_thread, t) < 0)
        free(t);
}

void
kv_delete_snapshot(struct kv *kv, const char *ns, const char *snap)
{
    _cleanup_free_ char *path = kv_snapshots_path(kv, ns, snap);
    struct kube_response resp;
    char why[256];
    int r = path ? kube_request(kv->client, "DELETE", path,
                                "{\"propagationPolicy\":\"Background\"}",
                                NULL, REQUEST_NS, &resp, why, sizeof why)
                 : -ENOMEM;
    if (path)
        kube_response_clear(&resp);
    if (r < 0 && r != -ENOENT)
        log_warning("'%s': cannot delete snapshot '%s': %s", ns, snap, why);
}

/* The snapshot's phase as the cache has it: 1 Succeeded (and readyToUse),
 * 0 in progress, -1 Failed, -2 gone; *ret_info filled where it is there. */
static int
snapshot_state(struct kv *kv, const char *ns, const char *snap, struct snapshot_info **ret_info)
{
    struct json_object *o = kube_cache_get(cache(kv, C_SNAPS, ns), ns, snap);
    *ret_info = NULL;
    if (!o)
        return -2;
    int r = kube_snapshot_info(o, NULL, ret_info);
    json_object_put(o);
    if (r < 0)
        return 0;
    return (*ret_info)->phase == SNAPSHOT_SUCCEEDED ? 1
           : (*ret_info)->phase == SNAPSHOT_FAILED  ? -1
                                                    : 0;
}

/* Did KubeVirt fail the snapshot at its deadline (condition Failure,
 * reason "snapshot deadline exceeded")? */
static bool
past_deadline(struct kv *kv, const char *ns, const char *snap)
{
    struct json_object *o = kube_cache_get(cache(kv, C_SNAPS, ns), ns, snap);
    struct json_object *conds = kube_get(o, "status", "conditions", (char *) NULL);
    bool late = false;

    for (size_t i = 0; conds && json_object_is_type(conds, json_type_array) &&
                       i < json_object_array_length(conds); i++) {
        struct json_object *c = json_object_array_get_idx(conds, i);
        const char *type = kube_get_str(c, "type", (char *) NULL);
        const char *reason = kube_get_str(c, "reason", (char *) NULL);
        late |= type && strcmp(type, "Failure") == 0 && reason && strstr(reason, "deadline");
    }
    json_object_put(o);
    return late;
}

static int
kv_snapshot_create(void *h, const struct vm_ref *ref, const char *snap,
                   const struct vmsnapfs_opts *o, struct op_report *rep)
{
    struct kv *kv = h;
    _cleanup_free_ char *key = NULL;
    int r;

    /* the VM runs while it has a VMI (as vm_info says, without making one) */
    struct json_object *vm = kube_cache_get(cache(kv, C_VMS, ref->ns), ref->ns, ref->name);
    struct json_object *vmi = vm ? kube_cache_get(cache(kv, C_VMIS, ref->ns), ref->ns,
                                                  ref->name)
                                 : NULL;
    bool running = vmi != NULL, agent = kube_vmi_agent(vmi);
    json_object_put(vm);
    json_object_put(vmi);
    if (!vm)
        return -ENOENT;
    struct json_object *existing = kube_cache_get(cache(kv, C_SNAPS, ref->ns), ref->ns, snap);
    if (existing) {
        json_object_put(existing);
        return say(rep, -EEXIST, "a snapshot of that name exists");
    }
    if (running && !agent && o && o->consistency == CONSISTENCY_REQUIRED)
        return say(rep, -EAGAIN, "no guest agent connected and consistency=required: no "
                   "consistent snapshot is possible now");
    if (asprintf(&key, "%s/%s", ref->ns, ref->name) < 0)
        return -ENOMEM;
    r = vm_op_begin(kv->ops, key, snap, 0);
    if (r < 0)
        return say(rep, r, "%s", vm_op_refusal(r));
    /* the checkpoint of its changes (changes/) is made with it */
    struct kv_changes *changes = NULL;
    r = kv_changes_begin(kv, ref, o, &changes);
    if (r >= 0) {
        r = kv_snapshot_make(kv, ref, snap, o, running, false, rep);
        kv_changes_end(kv, ref, snap, changes, r >= 0);
    }
    vm_op_end(kv->ops, key);
    return r;
}

int
kv_snapshot_make(struct kv *kv, const struct vm_ref *ref, const char *snap,
                 const struct vmsnapfs_opts *o, bool running, bool temporary,
                 struct op_report *rep)
{
    _cleanup_free_ char *key = NULL, *path = NULL, *body = NULL;
    struct deadline deadline = deadline_begin(o);
    uint64_t start = now_monotonic_ns();
    struct kube_response resp;
    char why[512];
    int r;

    if (asprintf(&key, "%s/%s", ref->ns, ref->name) < 0 ||
        !(path = kv_snapshots_path(kv, ref->ns, NULL)))
        return -ENOMEM;

    /* the deadline goes to KubeVirt too: its controller fails the
     * snapshot and unfreezes at it */
    char fd[64] = "";
    if (o && o->failure_deadline_ns)
        snprintf(fd, sizeof fd, ",\"failureDeadline\":\"%llus\"",
                 (unsigned long long) ((o->failure_deadline_ns + NSEC_PER_SEC - 1) / NSEC_PER_SEC));
    if (asprintf(&body, "{\"apiVersion\":\"snapshot.kubevirt.io/%s\",\"kind\":"
                        "\"VirtualMachineSnapshot\",\"metadata\":{\"name\":\"%s\",\"labels\":"
                        "{\"" KUBE_MADE_BY_LABEL "\":\"vmsnapfs\"%s},\"annotations\":{\""
                        KUBE_OWNER_ANNOTATION "\":\"%s\"}},\"spec\":{\"source\":"
                        "{\"apiGroup\":\"kubevirt.io\",\"kind\":\"VirtualMachine\","
                        "\"name\":\"%s\"}%s}}",
                 kv->snap_version, snap,
                 temporary ? ",\"" KV_TEMPORARY_LABEL "\":\"true\"" : "", kv->owner,
                 ref->name, fd) < 0)
        return -ENOMEM;
    uint64_t seen = kube_cache_changes(cache(kv, C_SNAPS, ref->ns));
    r = kube_request(kv->client, "POST", path, body, NULL, REQUEST_NS, &resp, why, sizeof why);
    kube_response_clear(&resp);
    if (r < 0)
        return say(rep, r, "the cluster refused the snapshot: %s", why);

    /* until it left InProgress (Succeeded counts once readyToUse) */
    struct snapshot_info *s = NULL;
    int state = 0;
    uint64_t until = deadline.at_ns ? deadline.at_ns + 5 * NSEC_PER_SEC : UINT64_MAX;
    for (;;) {
        snapshot_info_free(s);
        state = snapshot_state(kv, ref->ns, snap, &s);
        if (state != 0 && state != -2)
            break;
        if (now_monotonic_ns() >= until)
            break;
        (void) kube_cache_wait_change(cache(kv, C_SNAPS, ref->ns), seen,
                                      now_monotonic_ns() + NSEC_PER_SEC);
        seen = kube_cache_changes(cache(kv, C_SNAPS, ref->ns));
    }
    unsigned ind = s ? s->indications : 0;
    bool quiesced = ind & (1u << INDICATION_GUEST_AGENT) &&
                    !(ind & ((1u << INDICATION_QUIESCE_FAILED) |
                             (1u << INDICATION_QUIESCE_TIMEOUT)));
    if (state == 1 && running && !quiesced && o && o->consistency == CONSISTENCY_REQUIRED) {
        state = -3;
        r = say(rep, -EAGAIN, "the snapshot is not quiesced and consistency=required: deleted");
    } else if (state == 1) {
        char names[128] = "";
        for (int i = 0; i < _INDICATION_MAX; i++)
            if (ind & (1u << i))
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
                         names[0] ? "," : "", indication_to_string(i));
        size_t n_excl = 0;
        while (s->excluded && s->excluded[n_excl])
            n_excl++;
        r = say(rep, 0, "%zu volume(s), %zu excluded; indications %s; took %llu ms",
                s->n_volumes, n_excl, names[0] ? names : "none",
                (unsigned long long) ((now_monotonic_ns() - start) / NSEC_PER_MSEC));
    } else if (state == -1) {
        bool late = deadline_passed(deadline) || past_deadline(kv, ref->ns, snap);
        r = say(rep, late ? -ETIMEDOUT : -EIO, "%s%s", late ? "the failure deadline passed: " : "",
                s && s->error ? s->error : "KubeVirt failed the snapshot");
    } else if (state == -2) {
        r = say(rep, -EIO, "the snapshot was deleted by someone else meanwhile");
    } else {
        r = say(rep, -ETIMEDOUT, "the snapshot did not finish within the failure deadline");
    }
    snapshot_info_free(s);
    if (r == 0)
        return 0;
    /* failed: nothing left behind, and never a frozen guest */
    kv_delete_snapshot(kv, ref->ns, snap);
    if (running) {
        unfreeze(kv, ref->ns, ref->name);
        late_thaw_start(kv, key, ref);
    }
    return r;
}

/* rmdir, with the VM's and the snapshot's operation locks held */
static int
snapshot_delete_locked(struct kv *kv, const struct vm_ref *ref, const char *snap,
                       const char *path, struct op_report *rep)
{
    struct kube_response resp;
    struct json_object *o;
    char why[512], who[256];
    /* KubeVirt lets the snapshot go under a restore, which then fails
     * half done */
    int r = kv_restore_active(kv, ref->ns, NULL, snap, who, sizeof who, why, sizeof why);
    if (r == -EACCES) {
        /* RBAC lets these credentials delete snapshots but not see
         * restores: KubeVirt does not check either */
        log_info("'%s': may not list VirtualMachineRestores: snapshot '%s' deleted without "
                 "checking that no restore uses it", ref->ns, snap);
        r = 0;
    }

    if (r > 0)
        return say(rep, -EBUSY, "VirtualMachineRestore %s uses the snapshot and is not "
                   "complete", who);
    if (r < 0)
        return say(rep, r, "cannot tell whether a restore uses the snapshot: %s", why);
    uint64_t seen = kube_cache_changes(cache(kv, C_SNAPS, ref->ns));
    r = kube_request(kv->client, "DELETE", path, "{\"propagationPolicy\":\"Background\"}", NULL,
                     REQUEST_NS, &resp, why, sizeof why);
    kube_response_clear(&resp);
    if (r < 0)
        return say(rep, r, "the cluster refused to delete the snapshot: %s", why);
    /* until it is gone (its finalizer goes with its content) */
    uint64_t end = now_monotonic_ns() + (kv->deadline_ns ? kv->deadline_ns : 300 * NSEC_PER_SEC);
    for (;;) {
        o = kube_cache_get(cache(kv, C_SNAPS, ref->ns), ref->ns, snap);
        json_object_put(o);
        if (!o || now_monotonic_ns() >= end)
            break;
        (void) kube_cache_wait_change(cache(kv, C_SNAPS, ref->ns), seen,
                                      now_monotonic_ns() + NSEC_PER_SEC);
        seen = kube_cache_changes(cache(kv, C_SNAPS, ref->ns));
    }
    if (o)
        return say(rep, -ETIMEDOUT, "the snapshot is still being deleted");
    return say(rep, 0, "deleted");
}

static int
kv_snapshot_delete(void *h, const struct vm_ref *ref, const char *snap, struct op_report *rep)
{
    struct kv *kv = h;
    _cleanup_free_ char *key = NULL, *path = NULL;
    int r;

    struct json_object *o = kube_cache_get(cache(kv, C_SNAPS, ref->ns), ref->ns, snap);
    bool ours = o && kube_snapshot_of(o, ref->name);
    json_object_put(o);
    if (!ours)
        return -ENOENT;
    if (asprintf(&key, "%s/%s", ref->ns, ref->name) < 0 ||
        !(path = kv_snapshots_path(kv, ref->ns, snap)))
        return -ENOMEM;
    r = vm_op_begin(kv->ops, key, NULL, 0);
    if (r < 0)
        return say(rep, r, "%s", vm_op_refusal(r));
    /* not while a copy of its disks is being read */
    _cleanup_free_ char *skey = NULL;
    if (asprintf(&skey, "%s/snapshots/%s", key, snap) < 0) {
        vm_op_end(kv->ops, key);
        return -ENOMEM;
    }
    r = vm_op_begin(kv->ops, skey, NULL, VM_OP_DISKS);
    if (r < 0) {
        vm_op_end(kv->ops, key);
        return say(rep, r, "%s", r == -EBUSY ? "a volume of the snapshot is open (a copy "
                   "is being read)" : vm_op_refusal(r));
    }
    /* its changes go to the snapshot that builds on it first */
    char why[512];
    if (kv_changes_fold(kv, ref, snap, why, sizeof why) < 0)
        log_warning("'%s/%s': the snapshot after '%s' keeps no changes: %s", ref->ns,
                    ref->name, snap, why);
    r = snapshot_delete_locked(kv, ref, snap, path, rep);
    vm_op_end(kv->ops, skey);
    vm_op_end(kv->ops, key);
    return r;
}


int
kv_snapshot_annotate(struct kv *kv, const char *ns, const char *snap, const char *key,
                     const char *value, char *why, size_t size)
{
    _cleanup_free_ char *path = kv_snapshots_path(kv, ns, snap), *body = NULL;
    struct json_object *p = json_object_new_object(), *meta = json_object_new_object(),
                       *ann = json_object_new_object();
    struct kube_response resp;

    if (!path || !p || !meta || !ann) {
        json_object_put(p);
        json_object_put(meta);
        json_object_put(ann);
        return -ENOMEM;
    }
    json_object_object_add(ann, key, json_object_new_string(value));
    json_object_object_add(meta, "annotations", ann);
    json_object_object_add(p, "metadata", meta);
    body = strdup(json_object_to_json_string_ext(p, JSON_C_TO_STRING_PLAIN));
    json_object_put(p);
    if (!body)
        return -ENOMEM;
    int r = kube_request(kv->client, "PATCH", path, body, "application/merge-patch+json",
                         UINT64_C(20) * NSEC_PER_SEC, &resp, why, size);
    kube_response_clear(&resp);
    return r;
}

/* backend_ops.snapshot_set_sums: an annotation of the VirtualMachineSnapshot */
static int
kv_snapshot_set_sums(void *h, const struct vm_ref *ref, const char *snap, const char *record)
{
    char why[512] = "";
    int r = kv_snapshot_annotate(h, ref->ns, snap, KUBE_SUMS_ANNOTATION, record, why, sizeof why);

    if (r < 0 && r != -ENOENT)
        log_info("'%s/%s': snapshot '%s': cannot keep its sums: %s", ref->ns, ref->name, snap,
                 why);
    return r;
}

const struct backend_ops backend_kubevirt = {
    .name = "kubevirt",
    .namespaced = true,
    .notifies_snapshots = true,     /* watches */
    .open = kv_open,
    .close = kv_close,
    .list_namespaces = kv_list_namespaces,
    .list_vms = kv_list_vms,
    .vm_get = kv_vm_get,
    .snapshot_list = kv_snapshot_list,
    .snapshot_create = kv_snapshot_create,
    .snapshot_delete = kv_snapshot_delete,
    .restore = kv_restore,
    .clone = kv_clone,
    .volume_open = kv_volume_open,
    .changes_base = kv_changes_base,
    .changes_open = kv_changes_open,
    .snapshot_set_sums = kv_snapshot_set_sums,
};
