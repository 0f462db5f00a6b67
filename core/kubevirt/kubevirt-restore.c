/* core/kubevirt/kubevirt-restore.c: `echo SNAP > VM/restore` on KubeVirt
 * (SPEC "Restore"), as a VirtualMachineRestore (kubevirt-api.md §3).
 *
 * The order, so that a daemon killed at any point leaves the VM either as
 * it was or restored, and the next daemon reports which:
 *
 *  1. the snapshot and the conflicts are read (DryRun ends here: nothing
 *     is made); FailImmediate on a running VM is EBUSY at once;
 *  2. WaitGracePeriod:DURATION and WaitEventually: vmsnapfs waits for the
 *     VM to be stopped by someone else (KubeVirt's own grace period is a
 *     fixed 5 minutes; the SPEC's is the user's);
 *  3. the safety snapshot pre-restore-SNAP-STAMP (a VirtualMachineSnapshot,
 *     quiesced if the VM runs: with StopTarget the VM is stopped by
 *     KubeVirt after it, as the policy says);
 *  4. the VirtualMachineRestore, targetReadinessPolicy = the policy, labelled
 *     as ours, with what vmsnapfs must do after it in an annotation (start
 *     the VM again, drop what BestEffort leaves out, the conflicts listed):
 *     from here on KubeVirt does the work;
 *  5. complete (or failed): what BestEffort leaves out is taken out of the
 *     stopped VM, the VM started again if the policy stopped it, and the
 *     VirtualMachineRestore deleted (the status lives in `cat VM/restore`).
 *
 * Steps 1-4 are here; step 5, the waiting, and what runs in the background
 * are in kubevirt-restore-finish.c.
 *
 * A daemon that finds a VirtualMachineRestore of ours whose maker is gone
 * (kube-owner.h) waits for its outcome, does step 5 and reports it in
 * `cat VM/restore` (kv_restore_recover).
 *
 * Old claims: KubeVirt's default volumeRestorePolicy (RandomizeNames)
 * restores into new PVCs and leaves the old ones as they were, owned by
 * the VM: the restore never destroys data the safety snapshot may need.
 */
#define LOG_MODULE "restore"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <openssl/rand.h>

#include "cleanup.h"
#include "clock.h"
#include "deadline.h"
#include "kube-objects.h"
#include "kube-owner.h"
#include "kubevirt-private.h"
#include "log.h"
#include "name.h"
#include "kubevirt-restore.h"
#include "restore-policy.h"

/* without a failure deadline: how long KubeVirt may take */

#define fail(st, r, ...) kv_sayf((st)->error, sizeof (st)->error, (r), __VA_ARGS__)

/* ---- requests -------------------------------------------------------------------- */

char *
kvr_restores_path(struct kv *kv, const char *ns, const char *name)
{
    return kv_snapshot_api_path(kv, "virtualmachinerestores", ns, name);
}

/* PUT start or stop on the VM (subresources.kubevirt.io). */
int
kvr_vm_action(struct kv *kv, const char *ns, const char *vm, const char *action, char *why,
          size_t size)
{
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "/apis/subresources.kubevirt.io/v1/namespaces/%s/virtualmachines/%s/%s",
                 ns, vm, action) < 0)
        return -ENOMEM;
    return kv_api(kv, "PUT", path, "{}", NULL, why, size);
}

void
kvr_delete(struct kv *kv, const char *ns, const char *name)
{
    _cleanup_free_ char *path = kvr_restores_path(kv, ns, name);
    char why[256];
    int r = path ? kv_api(kv, "DELETE", path, NULL, NULL, why, sizeof why) : -ENOMEM;
    if (r < 0 && r != -ENOENT)
        log_warning("'%s': cannot delete VirtualMachineRestore '%s': %s", ns, name,
                    r == -ENOMEM ? strerror(ENOMEM) : why);
}

bool
kvr_vm_running(struct kv *kv, const char *ns, const char *vm)
{
    struct json_object *vmi = kube_cache_get(cache(kv, C_VMIS, ns), ns, vm);
    json_object_put(vmi);
    return vmi != NULL;
}

/* Waits until the VM has no VMI, until `until`: 0 or -ETIMEDOUT. */
static int
wait_stopped(struct kv *kv, const char *ns, const char *vm, struct deadline until)
{
    struct kube_cache *vmis = cache(kv, C_VMIS, ns);
    for (;;) {
        uint64_t seen = kube_cache_changes(vmis);
        if (!kvr_vm_running(kv, ns, vm))
            return 0;
        if (deadline_passed(until) || kv_closing(kv))
            return -ETIMEDOUT;
        (void) kube_cache_wait_change(vmis, seen, now_monotonic_ns() + NSEC_PER_SEC);
    }
}

/* ---- conflicts ----------------------------------------------------------------------- */

/* The claim a volume names (PVC or DataVolume), or NULL. */
static const char *
volume_claim(struct json_object *v)
{
    const char *c = kube_get_str(v, "persistentVolumeClaim", "claimName", (char *) NULL);
    return c ? c : kube_get_str(v, "dataVolume", "name", (char *) NULL);
}

static struct json_object *
vm_volumes(struct json_object *vm)
{
    return kube_get(vm, "spec", "template", "spec", "volumes", (char *) NULL);
}

struct json_object *
kvr_vm_interfaces(struct json_object *vm)
{
    return kube_get(vm, "spec", "template", "spec", "domain", "devices", "interfaces",
                    (char *) NULL);
}

/* MAC addresses compared as KubeVirt parses them: case and ':'/'-' aside. */
static bool
same_mac(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        int x = *a == '-' ? ':' : tolower((unsigned char) *a);
        int y = *b == '-' ? ':' : tolower((unsigned char) *b);
        if (x != y)
            return false;
    }
    return *a == *b;
}

/* Another VM of ns than self that uses claim (as a volume) or mac (on an
 * interface): its name, else NULL. */
static char *
other_vm_using(struct kv *kv, const char *ns, const char *self, const char *claim,
               const char *mac)
{
    struct json_object **vms = NULL;
    size_t n = 0;
    char *who = NULL;

    if (kube_cache_list(cache(kv, C_VMS, ns), ns, NULL, &vms, &n) < 0)
        return NULL;
    for (size_t i = 0; i < n && !who; i++) {
        const char *name = name_of(vms[i]);
        if (!name || strcmp(name, self) == 0)
            continue;
        struct json_object *vols = vm_volumes(vms[i]), *ifs = kvr_vm_interfaces(vms[i]);
        for (size_t j = 0; claim && !who && j < array_len(vols); j++) {
            const char *c = volume_claim(json_object_array_get_idx(vols, j));
            if (c && strcmp(c, claim) == 0)
                who = strdup(name);
        }
        for (size_t j = 0; mac && !who && j < array_len(ifs); j++) {
            const char *m = kube_get_str(json_object_array_get_idx(ifs, j), "macAddress",
                                         (char *) NULL);
            if (m && same_mac(m, mac))
                who = strdup(name);
        }
    }
    kube_cache_list_free(vms, n);
    return who;
}

/* 1 if the object at path exists, 0 if not, < 0 if that cannot be told
 * (these credentials may not read it: not counted as a conflict). */
static int
exists(struct kv *kv, const char *path)
{
    char why[256];
    int r = kv_api(kv, "GET", path, NULL, NULL, why, sizeof why);
    if (r == -ENOENT)
        return 0;
    if (r < 0) {
        log_debug("cannot tell whether %s exists: %s", path, why);
        return r;
    }
    return 1;
}

static int
exists_in(struct kv *kv, const char *ns, const char *plural, const char *name)
{
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "/api/v1/namespaces/%s/%s/%s", ns, plural, name) < 0)
        return -ENOMEM;
    return exists(kv, path);
}

struct kx {
    struct kv *kv;
    const struct vm_ref *ref;
    const struct restore_request *rq;
    const struct vmsnapfs_opts *o;
    struct restore_status *st;
    struct deadline deadline;
    struct json_object *vm, *snap, *content;    /* owned */
    struct json_object *captured;               /* in content */
    bool running;
    bool in_use;                    /* a conflict is a device another VM uses */
    size_t unfixable;               /* conflicts BestEffort cannot leave out */
    struct json_object *plan;       /* RESTORE_ANNOTATION: what to do after */
    char safety[NAME_MAX_LEN + 1];
    char name[256];                 /* the VirtualMachineRestore */
};

static void
kx_clear(struct kx *x)
{
    json_object_put(x->vm);
    json_object_put(x->snap);
    json_object_put(x->content);
    json_object_put(x->plan);
}

static void
plan_drop(struct kx *x, const char *what, const char *name)
{
    struct json_object *a = NULL;
    if (!json_object_object_get_ex(x->plan, what, &a)) {
        a = json_object_new_array();
        json_object_object_add(x->plan, what, a);
    }
    json_object_array_add(a, json_object_new_string(name));
}

/* A dependency of a volume (ConfigMap, Secret, ServiceAccount, claim) that
 * is gone: BestEffort leaves the volume out. */
static void
check_volume(struct kx *x, struct json_object *v, bool backed_up)
{
    const char *ns = x->ref->ns, *vol = kube_get_str(v, "name", (char *) NULL);
    const char *claim = volume_claim(v);
    struct { const char *key, *sub, *plural, *kind; } deps[] = {
        { "configMap", "name", "configmaps", "ConfigMap" },
        { "secret", "secretName", "secrets", "Secret" },
        { "serviceAccount", "serviceAccountName", "serviceaccounts", "ServiceAccount" },
    };

    if (!vol)
        return;
    if (claim && !backed_up) {
        /* not in the snapshot (excluded): the restored VM uses the claim
         * as it is now */
        _cleanup_free_ char *who = other_vm_using(x->kv, ns, x->ref->name, claim, NULL);
        int e = exists_in(x->kv, ns, "persistentvolumeclaims", claim);
        if (who) {
            restore_status_conflict(x->st, "volume %s: claim '%s' (not in the snapshot) is used "
                                    "by VM '%s'", vol, claim, who);
            x->in_use = true;
            plan_drop(x, "volumes", vol);
        } else if (e == 0) {
            restore_status_conflict(x->st, "volume %s: claim '%s' (not in the snapshot) is "
                                    "missing", vol, claim);
            plan_drop(x, "volumes", vol);
        }
        return;
    }
    for (size_t i = 0; i < sizeof deps / sizeof deps[0]; i++) {
        const char *n = kube_get_str(v, deps[i].key, deps[i].sub, (char *) NULL);
        if (n && exists_in(x->kv, ns, deps[i].plural, n) == 0) {
            restore_status_conflict(x->st, "volume %s: %s '%s' is missing", vol, deps[i].kind, n);
            plan_drop(x, "volumes", vol);
        }
    }
    const char *ci[] = { "cloudInitNoCloud", "cloudInitConfigDrive" };
    const char *refs[] = { "secretRef", "networkDataSecretRef" };
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < 2; j++) {
            const char *n = kube_get_str(v, ci[i], refs[j], "name", (char *) NULL);
            if (n && exists_in(x->kv, ns, "secrets", n) == 0) {
                restore_status_conflict(x->st, "volume %s: Secret '%s' is missing", vol, n);
                plan_drop(x, "volumes", vol);
            }
        }
}

/* An instancetype or preference the captured VM names that is gone:
 * KubeVirt cannot run the VM without it, and BestEffort cannot leave it
 * out. */
static void
check_type(struct kx *x, const char *field, const char *plural, const char *cluster_plural)
{
    const char *name = kube_get_str(x->captured, "spec", field, "name", (char *) NULL);
    const char *kind = kube_get_str(x->captured, "spec", field, "kind", (char *) NULL);
    _cleanup_free_ char *path = NULL;

    if (!name)
        return;
    /* kind: VirtualMachine{,Cluster}{Instancetype,Preference}; cluster-wide
     * by default */
    bool ns_scoped = kind && !strcasestr(kind, "cluster");
    if ((ns_scoped ? asprintf(&path, "/apis/instancetype.kubevirt.io/v1beta1/namespaces/%s/%s/%s",
                              x->ref->ns, plural, name)
                   : asprintf(&path, "/apis/instancetype.kubevirt.io/v1beta1/%s/%s",
                              cluster_plural, name)) < 0)
        return;
    if (exists(x->kv, path) == 0) {
        restore_status_conflict(x->st, "%s: %s '%s' is missing", field,
                                kind ? kind : ns_scoped ? plural : cluster_plural, name);
        x->unfixable++;
    }
}

int
kv_restore_active(struct kv *kv, const char *ns, const char *vm, const char *snap, char *who,
                  size_t who_size, char *why, size_t size)
{
    _cleanup_free_ char *path = kvr_restores_path(kv, ns, NULL);
    struct json_object *list = NULL;
    int r = path ? kv_api(kv, "GET", path, NULL, &list, why, size) : -ENOMEM;

    if (r >= 0 && !list)
        r = kv_sayf(why, size, -EIO, "the list of VirtualMachineRestores is not JSON");
    struct json_object *items = kube_get(list, "items", (char *) NULL);
    for (size_t i = 0; r == 0 && i < array_len(items); i++) {
        struct json_object *o = json_object_array_get_idx(items, i);
        const char *t = kube_get_str(o, "spec", "target", "name", (char *) NULL);
        const char *uses = kube_get_str(o, "spec", "virtualMachineSnapshotName", (char *) NULL);
        if ((vm && (!t || strcmp(t, vm) != 0)) || (snap && (!uses || strcmp(uses, snap) != 0)) ||
            kube_condition_true(o, "Failure") ||
            json_object_get_boolean(kube_get(o, "status", "complete", (char *) NULL)))
            continue;
        snprintf(who, who_size, "%s", name_of(o) ? name_of(o) : "?");
        r = 1;
    }
    json_object_put(list);
    return r;
}

static void
find_conflicts(struct kx *x)
{
    struct json_object *backups = kube_get(x->content, "spec", "volumeBackups", (char *) NULL);
    struct json_object *vols = vm_volumes(x->captured), *ifs = kvr_vm_interfaces(x->captured);
    const char *src_uid = kube_get_str(x->snap, "status", "sourceUID", (char *) NULL);
    const char *uid = kube_get_str(x->vm, "metadata", "uid", (char *) NULL);
    const char *busy = kube_get_str(x->vm, "status", "restoreInProgress", (char *) NULL);

    char pending[256] = "", why[256];
    if (!busy && kv_restore_active(x->kv, x->ref->ns, x->ref->name, NULL, pending,
                                   sizeof pending, why, sizeof why) < 0)
        log_debug("'%s': cannot list VirtualMachineRestores: %s", x->ref->ns, why);
    if (busy || pending[0]) {
        /* KubeVirt refuses a second one (and sets restoreInProgress only
         * once the VM is stopped): refused before a safety snapshot */
        restore_status_conflict(x->st, "vm: VirtualMachineRestore '%s' is in progress on it",
                                busy ? busy : pending);
        x->in_use = true;
        x->unfixable++;
    }
    if (src_uid && uid && strcmp(src_uid, uid) != 0) {
        /* KubeVirt: "restore source and restore target are different but
         * restore target already exists" */
        restore_status_conflict(x->st, "vm: it is not the VM the snapshot was taken of (uid "
                                "%s, the snapshot's %s): KubeVirt restores only onto that "
                                "one", uid, src_uid);
        x->unfixable++;
    }
    /* a dry run lists it; a restore refuses it at once (restore_ready) */
    if (x->running && x->rq->policy == RESTORE_FAIL_IMMEDIATE && x->rq->mode == RESTORE_DRY_RUN)
        restore_status_conflict(x->st, "vm: it is running and policy=FailImmediate");
    for (size_t i = 0; i < array_len(vols); i++) {
        struct json_object *v = json_object_array_get_idx(vols, i);
        const char *name = kube_get_str(v, "name", (char *) NULL);
        bool backed_up = false;
        for (size_t j = 0; name && j < array_len(backups); j++) {
            const char *b = kube_get_str(json_object_array_get_idx(backups, j), "volumeName",
                                         (char *) NULL);
            backed_up |= b && strcmp(b, name) == 0;
        }
        if (!kube_get(v, "memoryDump", (char *) NULL))
            check_volume(x, v, backed_up);
    }
    for (size_t i = 0; i < array_len(ifs); i++) {
        struct json_object *f = json_object_array_get_idx(ifs, i);
        const char *mac = kube_get_str(f, "macAddress", (char *) NULL);
        const char *ifname = kube_get_str(f, "name", (char *) NULL);
        _cleanup_free_ char *who = mac && ifname ? other_vm_using(x->kv, x->ref->ns,
                                                                  x->ref->name, NULL, mac)
                                                 : NULL;
        if (who) {
            restore_status_conflict(x->st, "interface %s: the MAC address %s is used by VM '%s'",
                                    ifname, mac, who);
            x->in_use = true;
            plan_drop(x, "interfaces", ifname);
        }
    }
    check_type(x, "instancetype", "virtualmachineinstancetypes",
               "virtualmachineclusterinstancetypes");
    check_type(x, "preference", "virtualmachinepreferences", "virtualmachineclusterpreferences");
}

/* ---- the steps ------------------------------------------------------------------------- */

/* The VM, the snapshot, its content; the conflicts; what the mode does
 * with them: 1 for a dry run (done, nothing changed). */
static int
restore_read(struct kx *x)
{
    struct kv *kv = x->kv;
    const char *ns = x->ref->ns;
    char why[256];

    x->vm = kube_cache_get(cache(kv, C_VMS, ns), ns, x->ref->name);
    if (!x->vm)
        return fail(x->st, -ENOENT, "no such VM");
    x->snap = kube_cache_get(cache(kv, C_SNAPS, ns), ns, x->rq->snap);
    if (!x->snap || !kube_snapshot_of(x->snap, x->ref->name))
        return fail(x->st, -ENOENT, "the VM has no snapshot '%s'", x->rq->snap);
    x->running = kvr_vm_running(kv, ns, x->ref->name);
    x->plan = json_object_new_object();
    if (!x->plan)
        return -ENOMEM;

    const char *cname = kube_get_str(x->snap, "status", "virtualMachineSnapshotContentName",
                                     (char *) NULL);
    struct json_object *ready = kube_get(x->snap, "status", "readyToUse", (char *) NULL);
    const char *phase = kube_get_str(x->snap, "status", "phase", (char *) NULL);
    x->content = cname ? kube_cache_get(cache(kv, C_CONTENTS, ns), ns, cname) : NULL;
    x->captured = kube_get(x->content, "spec", "source", "virtualMachine", (char *) NULL);
    if (phase && strcmp(phase, "Failed") == 0) {
        restore_status_conflict(x->st, "snapshot: it failed and cannot be restored");
        x->unfixable++;
    } else if (!json_object_get_boolean(ready) || !x->captured) {
        restore_status_conflict(x->st, "snapshot: it is not ready to use yet");
        x->unfixable++;
        x->in_use = true;               /* EBUSY: later it may be */
    } else {
        find_conflicts(x);
    }

    int r = restore_mode_decide(x->rq->mode, x->st->n_conflicts, x->in_use, why, sizeof why);
    if (r > 0)
        return 1;
    if (r < 0)
        return fail(x->st, r, "%s", why);
    if (x->unfixable)
        return fail(x->st, x->in_use ? -EBUSY : -EIO, "%zu conflict(s) that mode=BestEffort "
                    "cannot leave out (see below); nothing was changed", x->unfixable);
    return 0;
}

/* The policy, for a VM that runs: refused, or waited for. StopTarget:
 * KubeVirt stops it, after the safety snapshot. */
static int
restore_ready(struct kx *x)
{
    struct deadline until = x->deadline;
    char why[256] = "";

    if (!x->running)
        return 0;
    switch (restore_policy_decide(x->rq, x->deadline, &until, why, sizeof why)) {
    case RESTORE_ACT_REFUSE:
        return fail(x->st, -EBUSY, "%s", why);
    case RESTORE_ACT_STOP:
        json_object_object_add(x->plan, "startAfter", json_object_new_boolean(1));
        return 0;
    case RESTORE_ACT_WAIT:
        log_info("'%s/%s': waiting for the VM to stop to restore '%s'", x->ref->ns,
                 x->ref->name, x->rq->snap);
        if (wait_stopped(x->kv, x->ref->ns, x->ref->name, until) < 0)
            return fail(x->st, -ETIMEDOUT, "%s", restore_wait_timeout_reason(x->rq));
        x->running = false;
        return 0;
    }
    return 0;
}

/* The state now, kept as a snapshot: a restore can be undone. */
static int
restore_safety(struct kx *x)
{
    struct op_report rep = { .text = "" };
    int r = -EEXIST;

    if (x->o && x->o->no_safety_snapshot)
        return 0;
    /* the name has a one-second stamp: the next second if it is taken */
    for (int tries = 0; tries < 3 && r == -EEXIST; tries++) {
        name_safety_snapshot(x->rq->snap, time(NULL), x->safety);
        struct json_object *e = kube_cache_get(cache(x->kv, C_SNAPS, x->ref->ns), x->ref->ns,
                                               x->safety);
        json_object_put(e);
        if (e) {
            sleep_ns(NSEC_PER_SEC);
            continue;
        }
        r = kv_snapshot_make(x->kv, x->ref, x->safety, x->o,
                             kvr_vm_running(x->kv, x->ref->ns, x->ref->name), false, &rep);
        if (r == -EEXIST)
            sleep_ns(NSEC_PER_SEC);
    }
    if (r < 0) {
        fail(x->st, r == -EEXIST ? -EBUSY : r, "the safety snapshot '%s' failed: %s",
             x->safety, rep.text);
        x->safety[0] = '\0';
        return r == -EEXIST ? -EBUSY : r;
    }
    json_object_object_add(x->plan, "safety", json_object_new_string(x->safety));
    log_info("'%s/%s': the state before the restore is snapshot '%s'", x->ref->ns, x->ref->name,
             x->safety);
    return 0;
}


/* The VirtualMachineRestore: from here on KubeVirt restores. */
static int
restore_create(struct kx *x)
{
    struct kv *kv = x->kv;
    _cleanup_free_ char *path = kvr_restores_path(kv, x->ref->ns, NULL);
    struct json_object *o = json_object_new_object(), *conflicts = json_object_new_array();
    char why[512];

    if (!path || !o || !conflicts) {
        json_object_put(o);
        json_object_put(conflicts);
        return -ENOMEM;
    }
    for (size_t i = 0; i < x->st->n_conflicts; i++)
        json_object_array_add(conflicts, json_object_new_string(x->st->conflicts[i]));
    json_object_object_add(x->plan, "conflicts", conflicts);
    json_object_object_add(x->plan, "mode",
                           json_object_new_string(restore_mode_to_string(x->rq->mode)));
    char api_version[64];
    snprintf(api_version, sizeof api_version, "snapshot.kubevirt.io/%s", kv->snap_version);
    json_object_object_add(o, "apiVersion", json_object_new_string(api_version));
    json_object_object_add(o, "kind", json_object_new_string("VirtualMachineRestore"));
    struct json_object *meta = json_object_new_object(), *labels = json_object_new_object();
    struct json_object *ann = json_object_new_object(), *spec = json_object_new_object();
    struct json_object *target = json_object_new_object();
    json_object_object_add(o, "metadata", meta);
    /* named here, not by generateName: after an answer that was lost, a
     * GET tells whether it was made */
    unsigned char rnd[5];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        json_object_put(o);
        json_object_put(meta);
        return fail(x->st, -EIO, "no random name for the VirtualMachineRestore");
    }
    snprintf(x->name, sizeof x->name, "vmsnapfs-restore-%02x%02x%02x%02x%02x", rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4]);
    json_object_object_add(meta, "name", json_object_new_string(x->name));
    json_object_object_add(meta, "labels", labels);
    json_object_object_add(labels, KUBE_MADE_BY_LABEL, json_object_new_string("vmsnapfs"));
    json_object_object_add(meta, "annotations", ann);
    json_object_object_add(ann, KUBE_OWNER_ANNOTATION, json_object_new_string(kv->owner));
    json_object_object_add(ann, RESTORE_ANNOTATION,
                           json_object_new_string(json_object_to_json_string_ext(
                               x->plan, JSON_C_TO_STRING_PLAIN)));
    json_object_object_add(o, "spec", spec);
    json_object_object_add(spec, "target", target);
    json_object_object_add(target, "apiGroup", json_object_new_string("kubevirt.io"));
    json_object_object_add(target, "kind", json_object_new_string("VirtualMachine"));
    json_object_object_add(target, "name", json_object_new_string(x->ref->name));
    json_object_object_add(spec, "virtualMachineSnapshotName",
                           json_object_new_string(x->rq->snap));
    json_object_object_add(spec, "targetReadinessPolicy",
                           json_object_new_string(restore_policy_to_string(x->rq->policy)));

    int r = kv_api(kv, "POST", path, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                   NULL, why, sizeof why);
    json_object_put(o);
    if (r == -EIO || r == -ETIMEDOUT) {
        /* no answer, or a 5xx: it may have been made all the same */
        _cleanup_free_ char *one = kvr_restores_path(kv, x->ref->ns, x->name);
        char err[256];
        if (one && kv_api(kv, "GET", one, NULL, NULL, err, sizeof err) >= 0)
            r = 0;
    }
    if (r < 0) {
        /* nothing was changed: the safety snapshot is not needed (a retry
         * would add one more) */
        if (x->safety[0])
            kv_delete_snapshot(kv, x->ref->ns, x->safety);
        return fail(x->st, r == -EINVAL && strstr(why, "in progress") ? -EBUSY
                           : r == -EINVAL || r == -EEXIST              ? -EIO
                                                                       : r,
                    "the cluster refused the VirtualMachineRestore: %s", why);
    }
    log_info("'%s/%s': VirtualMachineRestore '%s' to '%s' (targetReadinessPolicy %s)",
             x->ref->ns, x->ref->name, x->name, x->rq->snap, restore_policy_to_string(x->rq->policy));
    return 0;
}

static int
restore_locked(struct kx *x)
{
    int r = restore_read(x);
    if (r == 0)
        r = restore_ready(x);
    if (r == 0)
        r = restore_safety(x);
    if (r == 0)
        r = restore_create(x);
    if (r != 0)
        return r > 0 ? 0 : r;
    uint64_t wait = x->o && x->o->failure_deadline_ns ? 0 : RESTORE_WAIT_NS;
    struct deadline until = wait ? deadline_after(wait) : x->deadline;
    r = kvr_wait(x->kv, x->ref->ns, x->name, until, x->st, x->st->error,
                     sizeof x->st->error);
    if (r == -ETIMEDOUT) {
        /* KubeVirt is in the middle of it: aborting could leave the VM
         * half restored, or stopped. It goes on; this daemon waits for
         * it in the background and reports the outcome (finish_later). */
        size_t n = strlen(x->st->error);
        snprintf(x->st->error + n, sizeof x->st->error - n, "; it goes on in KubeVirt: its "
                 "outcome will show here");
        kvr_finish_later(x->kv, x->ref->ns, x->name);
        return r;
    }
    r = kvr_finish(x->kv, x->ref->ns, x->ref->name, x->name, x->plan, r, x->st->error,
                       sizeof x->st->error);
    if (r >= 0) {
        x->st->error[0] = '\0';
        log_info("'%s/%s': restored to '%s'%s%s%s", x->ref->ns, x->ref->name, x->rq->snap,
                 x->safety[0] ? "; the state before is snapshot '" : "", x->safety,
                 x->safety[0] ? "'" : "");
    }
    return r;
}

int
kv_restore(void *h, const struct vm_ref *ref, const struct restore_request *rq,
           const struct vmsnapfs_opts *o, struct restore_status *st)
{
    struct kv *kv = h;
    _cleanup_free_ char *key = NULL;
    struct kx x = {
        .kv = kv, .ref = ref, .rq = rq, .o = o, .st = st, .deadline = deadline_begin(o),
    };
    int r;

    struct json_object *vm = kube_cache_get(cache(kv, C_VMS, ref->ns), ref->ns, ref->name);
    json_object_put(vm);
    if (!vm)
        return fail(st, -ENOENT, "no such VM");
    if (asprintf(&key, "%s/%s", ref->ns, ref->name) < 0)
        return -ENOMEM;
    r = vm_op_begin(kv->ops, key, NULL, VM_OP_DISKS);
    if (r < 0)
        return fail(st, r, "%s", r == -EBUSY ? "another operation runs on the VM, or a copy "
                    "of its disks is being read" : vm_op_refusal(r));
    st->began = true;
    r = restore_locked(&x);
    kx_clear(&x);
    vm_op_end(kv->ops, key);
    return r;
}

