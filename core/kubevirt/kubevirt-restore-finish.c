/* core/kubevirt/kubevirt-restore-finish.c: a VirtualMachineRestore once it
 * exists (kubevirt-restore.c made it): waiting for KubeVirt's outcome, then
 * what vmsnapfs does after it (BestEffort's drops, the VM started again,
 * the object deleted); the same in the background for a restore past the
 * write's deadline and for those a killed daemon left (kv_restore_recover).
 */
#define LOG_MODULE "restore"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "clock.h"
#include "deadline.h"
#include "kube-objects.h"
#include "kube-owner.h"
#include "kubevirt-private.h"
#include "kubevirt-restore.h"
#include "log.h"

/* ---- until KubeVirt is done, and after ----------------------------------------------- */

/* The progress of restore o: the bytes of its new claims (status.restores)
 * that are Bound, of all of them; nothing before KubeVirt lists them. */
static void
restore_progress(struct kv *kv, const char *ns, struct json_object *o, struct restore_status *st)
{
    struct json_object *list = kube_get(o, "status", "restores", (char *) NULL);
    uint64_t done = 0, total = 0;
    size_t n = kube_array_len(list);

    for (size_t i = 0; i < n; i++) {
        const char *claim = kube_get_str(json_object_array_get_idx(list, i),
                                         "persistentVolumeClaim", (char *) NULL);
        _cleanup_free_ char *path = NULL;
        struct json_object *pvc = NULL;
        char err[256];
        uint64_t bytes = 0;
        if (!claim || !kube_name_ok(claim) ||
            asprintf(&path, "/api/v1/namespaces/%s/persistentvolumeclaims/%s", ns, claim) < 0)
            continue;
        if (kv_api(kv, "GET", path, NULL, &pvc, err, sizeof err) < 0)
            continue;       /* not made yet */
        if (kube_claim_bytes(pvc, &bytes) == 0) {
            total += bytes;
            const char *phase = kube_get_str(pvc, "status", "phase", (char *) NULL);
            if (phase && strcmp(phase, "Bound") == 0)
                done += bytes;
        }
        json_object_put(pvc);
    }
    if (total)
        restore_status_progress(st, done, total);
}

/* Waits for VirtualMachineRestore name of ns to be complete or failed,
 * until the deadline: 0 complete; -errno with why (the Failure's text, or
 * the last reason it gave while it retried). st (may be NULL): its progress. */
int
kvr_wait(struct kv *kv, const char *ns, const char *name, struct deadline until,
         struct restore_status *st, char *why, size_t size)
{
    _cleanup_free_ char *path = kvr_restores_path(kv, ns, name);
    struct kube_cache *vms = cache(kv, C_VMS, ns);
    char last[512] = "", err[256];

    if (!path)
        return -ENOMEM;
    for (;;) {
        uint64_t seen = kube_cache_changes(vms);
        struct json_object *o = NULL;
        int r = kv_api(kv, "GET", path, NULL, &o, err, sizeof err);
        if (r == -ENOENT)
            return kv_sayf(why, size, -EIO, "the VirtualMachineRestore was deleted by someone "
                            "else before it was complete");
        bool done = r >= 0 && json_object_get_boolean(kube_get(o, "status", "complete",
                                                               (char *) NULL));
        if (r >= 0 && st)
            restore_progress(kv, ns, o, st);
        const char *failure = kube_condition_true(o, "Failure")
                                  ? kube_get_str(kube_condition(o, "Failure"), "reason",
                                                 (char *) NULL)
                                  : NULL;
        const char *progress = kube_get_str(kube_condition(o, "Progressing"), "reason",
                                            (char *) NULL);
        if (progress)
            snprintf(last, sizeof last, "%s", progress);
        if (failure) {
            r = strstr(failure, "must be powered off")   ? -EBUSY
                : strstr(failure, "failed to be ready")  ? -ETIMEDOUT
                                                         : -EIO;
            kv_sayf(why, size, r, "KubeVirt failed the restore: %s", failure);
        }
        json_object_put(o);
        if (done)
            return 0;
        if (failure)
            return r;
        if (deadline_passed(until) || kv_closing(kv))
            return kv_sayf(why, size, -ETIMEDOUT, "KubeVirt did not finish the restore "
                            "within the failure deadline%s%s", last[0] ? "; it said: " : "", last);
        (void) kube_cache_wait_change(vms, seen, now_monotonic_ns() + NSEC_PER_SEC / 2);
    }
}

static bool
in_list(struct json_object *a, const char *s)
{
    for (size_t i = 0; s && i < array_len(a); i++)
        if (strcmp(json_object_get_string(json_object_array_get_idx(a, i)), s) == 0)
            return true;
    return false;
}

/* Removes from array a the elements whose "name" is in names. */
static void
drop_named(struct json_object *a, struct json_object *names)
{
    for (size_t i = array_len(a); i-- > 0;)
        if (in_list(names, kube_get_str(json_object_array_get_idx(a, i), "name", (char *) NULL)))
            json_object_array_del_idx(a, i, 1);
}

/* BestEffort: the volumes and MAC addresses that were in the way go out
 * of the restored (stopped) VM. */
static int
apply_drops(struct kv *kv, const char *ns, const char *vm, struct json_object *plan,
            char *why, size_t size)
{
    struct json_object *vols = kube_get(plan, "volumes", (char *) NULL);
    struct json_object *ifs = kube_get(plan, "interfaces", (char *) NULL);
    _cleanup_free_ char *path = NULL;
    int r = -EAGAIN;

    if (!array_len(vols) && !array_len(ifs))
        return 0;
    if (asprintf(&path, "/apis/kubevirt.io/v1/namespaces/%s/virtualmachines/%s", ns, vm) < 0)
        return -ENOMEM;
    /* read, change, replace with its resourceVersion: a conflict reads again */
    for (int tries = 0; tries < 5 && r == -EAGAIN; tries++) {
        struct json_object *o = NULL;
        r = kv_api(kv, "GET", path, NULL, &o, why, size);
        if (r >= 0 && !o)
            r = kv_sayf(why, size, -EIO, "the VM is not JSON");
        if (r >= 0) {
            struct json_object *tspec = kube_get(o, "spec", "template", "spec", (char *) NULL);
            drop_named(kube_get(tspec, "volumes", (char *) NULL), vols);
            drop_named(kube_get(tspec, "domain", "devices", "disks", (char *) NULL), vols);
            struct json_object *fs = kvr_vm_interfaces(o);
            for (size_t i = 0; i < array_len(fs); i++) {
                struct json_object *f = json_object_array_get_idx(fs, i);
                if (in_list(ifs, kube_get_str(f, "name", (char *) NULL)))
                    json_object_object_del(f, "macAddress");
            }
            r = kv_api(kv, "PUT", path,
                       json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), NULL, why,
                       size);
        }
        json_object_put(o);
    }
    return r;
}

/* Step 5, for a restore that ended (r: its outcome, why its reason): what
 * BestEffort leaves out goes, the VM is started again if the policy
 * stopped it, the VirtualMachineRestore goes. Returns the outcome. */
int
kvr_finish(struct kv *kv, const char *ns, const char *vm, const char *name,
               struct json_object *plan, int r, char *why, size_t size)
{
    char err[256];

    if (r >= 0 && apply_drops(kv, ns, vm, plan, err, sizeof err) < 0)
        r = kv_sayf(why, size, -EIO, "restored, but what mode=BestEffort leaves out could not "
                     "be taken out of the VM: %s", err);
    if (json_object_get_boolean(kube_get(plan, "startAfter", (char *) NULL)) &&
        !kvr_vm_running(kv, ns, vm)) {
        int s = kvr_vm_action(kv, ns, vm, "start", err, sizeof err);
        /* 409: it runs already (someone started it meanwhile) */
        if (s < 0 && s != -EAGAIN) {
            log_error("'%s/%s': cannot start the VM again after the restore: %s", ns, vm, err);
            if (r >= 0)
                r = kv_sayf(why, size, -EIO, "restored, but the VM could not be started "
                             "again: %s", err);
        } else {
            log_info("'%s/%s': started again after the restore", ns, vm);
        }
    }
    kvr_delete(kv, ns, name);
    return r;
}

/* ---- restores finished in the background -------------------------------------------- */

/* A VirtualMachineRestore of ours whose outcome is waited for in the
 * background: one a killed daemon left, or one past the write's deadline. */
struct orphan {
    struct kv *kv;
    struct json_object *o;
    bool held;                  /* the VM's operation is taken already */
    char key[600];
};

/* The status for `cat VM/restore` of VirtualMachineRestore o. */
static void
status_of(struct json_object *o, struct json_object *plan, struct restore_status *st)
{
    const char *snap = kube_get_str(o, "spec", "virtualMachineSnapshotName", (char *) NULL);
    const char *mode = kube_get_str(plan, "mode", (char *) NULL);
    const char *created = kube_get_str(o, "metadata", "creationTimestamp", (char *) NULL);
    struct json_object *conflicts = kube_get(plan, "conflicts", (char *) NULL);
    int m = mode ? restore_mode_from_string(mode) : -EINVAL;

    snprintf(st->snap, sizeof st->snap, "%s", snap ? snap : "");
    st->mode = m >= 0 ? (enum restore_mode) m : RESTORE_STRICT;
    st->phase = SNAPSHOT_IN_PROGRESS;
    if (!created || kube_time(created, &st->started) < 0)
        st->started = time(NULL);
    st->began = true;
    for (size_t i = 0; i < array_len(conflicts); i++)
        restore_status_conflict(st, "%s",
                                json_object_get_string(json_object_array_get_idx(conflicts, i)));
}

static const char *
target_of(struct json_object *o)
{
    return kube_get_str(o, "spec", "target", "name", (char *) NULL);
}

/* Waits (as long as it takes, or until unmount) for the outcome of p,
 * does what is left and reports it. */
static void
adopt(struct orphan *p)
{
    struct kv *kv = p->kv;
    const char *ns = kube_get_str(p->o, "metadata", "namespace", (char *) NULL);
    const char *name = name_of(p->o), *vm = target_of(p->o);
    const char *text = kube_get_str(p->o, "metadata", "annotations", RESTORE_ANNOTATION,
                                    (char *) NULL);
    struct json_object *plan = text ? json_tokener_parse(text) : NULL;
    struct restore_status st = { 0 };

    /* the VM's operation, as a restore holds it: a user's restore waits */
    while (!p->held && vm_op_begin(kv->ops, p->key, NULL, VM_OP_DISKS) < 0) {
        if (kv_closing(kv)) {
            json_object_put(plan);
            return;
        }
        sleep_ns(NSEC_PER_SEC);
    }
    status_of(p->o, plan, &st);
    int r = kvr_wait(kv, ns, name, (struct deadline) { 0 }, NULL, st.error, sizeof st.error);
    if (r == -ETIMEDOUT && kv_closing(kv)) {
        /* this daemon stops: the next one takes it up */
        log_info("'%s/%s': VirtualMachineRestore '%s' is not complete at unmount: the next "
                 "vmsnapfs started here reports it", ns, vm, name);
    } else {
        r = kvr_finish(kv, ns, vm, name, plan, r, st.error, sizeof st.error);
        st.finished = time(NULL);
        st.phase = r >= 0 ? SNAPSHOT_SUCCEEDED : SNAPSHOT_FAILED;
        if (r >= 0)
            st.error[0] = '\0';
        log_info("'%s/%s': the restore to '%s' (VirtualMachineRestore '%s') %s%s", ns, vm,
                    st.snap, name, r >= 0 ? "is complete" : "failed: ", r >= 0 ? "" : st.error);
        if (kv->events.restore_found)
            kv->events.restore_found(kv->events.opaque, ns, vm, &st);
    }
    restore_status_clear(&st);
    json_object_put(plan);
    vm_op_end(kv->ops, p->key);
}

static void *
adopt_thread(void *opaque)
{
    struct orphan *p = opaque;
    struct kv *kv = p->kv;

    adopt(p);
    json_object_put(p->o);
    free(p);
    kv_thread_done(kv);
    return NULL;
}

/* Starts the background wait for o (a reference taken). */
static void
adopt_start(struct kv *kv, struct json_object *o, bool held)
{
    struct orphan *p = calloc(1, sizeof *p);
    const char *ns = kube_get_str(o, "metadata", "namespace", (char *) NULL);

    if (!p || !ns || !target_of(o) || !name_of(o)) {
        free(p);
        return;
    }
    *p = (struct orphan) { .kv = kv, .o = json_object_get(o), .held = held };
    snprintf(p->key, sizeof p->key, "%s/%s", ns, target_of(o));
    if (kv_thread_start(kv, adopt_thread, p) < 0) {
        if (held)
            vm_op_end(kv->ops, p->key);
        json_object_put(p->o);
        free(p);
    }
}

void
kvr_finish_later(struct kv *kv, const char *ns, const char *name)
{
    _cleanup_free_ char *path = kvr_restores_path(kv, ns, name);
    struct json_object *o = NULL;
    char why[256];

    if (!path || kv_api(kv, "GET", path, NULL, &o, why, sizeof why) < 0 || !o) {
        log_error("'%s': VirtualMachineRestore '%s' is left to KubeVirt; its outcome cannot be "
                  "followed: %s", ns, name, path ? why : strerror(ENOMEM));
        json_object_put(o);
        return;
    }
    adopt_start(kv, o, false);
    json_object_put(o);
}

void
kv_restore_recover(struct kv *kv)
{
    for (size_t i = 0; i < kube_scope_count(kv->scope); i++) {
        const char *ns = kube_scope_ns(kv->scope, i);
        _cleanup_free_ char *base = NULL, *path = NULL;
        struct json_object *list = NULL;
        char why[256];
        /* ns NULL: cluster-wide */
        if (ns ? !(base = kvr_restores_path(kv, ns, NULL))
               : asprintf(&base, "/apis/snapshot.kubevirt.io/%s/virtualmachinerestores",
                          kv->snap_version) < 0)
            continue;
        if (asprintf(&path, "%s?labelSelector=%s", base, KUBE_MADE_BY_LABEL) < 0)
            continue;
        if (kv_api(kv, "GET", path, NULL, &list, why, sizeof why) < 0) {
            log_debug("cannot list VirtualMachineRestores: %s", why);
            continue;
        }
        struct json_object *items = kube_get(list, "items", (char *) NULL);
        for (size_t j = 0; j < array_len(items); j++) {
            struct json_object *o = json_object_array_get_idx(items, j);
            const char *ons = kube_get_str(o, "metadata", "namespace", (char *) NULL);
            const char *vm = target_of(o);
            const char *text = kube_get_str(o, "metadata", "annotations", RESTORE_ANNOTATION,
                                            (char *) NULL);
            char key[600];
            if (!ons || !vm || !name_of(o) || !kube_owner_gone(kv->owner, o))
                continue;
            /* taken, and shown InProgress, before the mount serves: no
             * restore of the VM starts meanwhile */
            snprintf(key, sizeof key, "%s/%s", ons, vm);
            if (vm_op_begin(kv->ops, key, NULL, VM_OP_DISKS) < 0)
                continue;           /* another daemon of this host has it */
            log_warning("'%s/%s': VirtualMachineRestore '%s' of a vmsnapfs that was killed: "
                        "waiting for its outcome", ons, vm, name_of(o));
            struct json_object *plan = text ? json_tokener_parse(text) : NULL;
            struct restore_status st = { 0 };
            status_of(o, plan, &st);
            if (kv->events.restore_found)
                kv->events.restore_found(kv->events.opaque, ons, vm, &st);
            restore_status_clear(&st);
            json_object_put(plan);
            adopt_start(kv, o, true);
        }
        json_object_put(list);
    }
}

