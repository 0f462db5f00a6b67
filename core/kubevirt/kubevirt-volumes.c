/* core/kubevirt/kubevirt-volumes.c: a VM's or a snapshot's disk as a
 * volume view, read through a VirtualMachineExport (kube-export.c). */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "kube-objects.h"
#include "kubevirt-private.h"
#include "log.h"

/* ---- volumes: read through VirtualMachineExports ----------------------------------- */

/* The claim (PVC or DataVolume name) behind volume vol of the VM, or of
 * its snapshot snap; *ret_running: the VM runs (a VMI exists). */
static int
volume_claim(struct kv *kv, const struct vm_ref *ref, const char *snap, const char *vol,
             char **ret_claim, bool *ret_running)
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

    *ret_running = vmi != NULL;
    if (r >= 0 && snap) {
        so = kube_cache_get(cache(kv, C_SNAPS, ref->ns), ref->ns, snap);
        const char *cname = kube_get_str(so, "status", "virtualMachineSnapshotContentName",
                                         (char *) NULL);
        content = cname ? kube_cache_get(cache(kv, C_CONTENTS, ref->ns), ref->ns, cname) : NULL;
        r = so && kube_snapshot_of(so, ref->name) ? kube_snapshot_info(so, content, &si)
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
    bool of_vm;                 /* the VM's own disk (stopped when opened) */
    struct vm_view *view;
};

static void
use_end(void *opaque)
{
    struct use *u = opaque;
    vm_view_leave(u->view);
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
    _cleanup_free_ char *claim = NULL;
    char why[512] = "";
    bool running = false;
    int r = volume_claim(kv, ref, snap, vol, &claim, &running);

    if (r < 0)
        return r;
    if (!snap && running) {
        log_error("'%s/%s': volume '%s': reading the disk of a running VM needs a "
                  "point-in-time snapshot of it: not done on KubeVirt yet (read a snapshot's "
                  "volume)", ref->ns, ref->name, vol);
        return -EBUSY;
    }
    /* an open view is a use: rmdir of the snapshot (or restore, for the
     * VM's own disks) is refused meanwhile */
    _cleanup_free_ char *key = NULL;
    struct use *use = calloc(1, sizeof *use);
    if (!use || (snap ? asprintf(&key, "%s/%s/snapshots/%s", ref->ns, ref->name, snap)
                      : asprintf(&key, "%s/%s", ref->ns, ref->name)) < 0) {
        free(use);
        return -ENOMEM;
    }
    *use = (struct use) { kv, strdup(ref->ns), strdup(ref->name), !snap, NULL };
    r = use->ns && use->vm ? vm_view_enter(kv->ops, key, &use->view) : -ENOMEM;
    if (r < 0) {
        free(use->ns);
        free(use->vm);
        free(use);
        return r;
    }
    r = kube_exports_view(kv->exports, ref->ns, snap ? "VirtualMachineSnapshot" : "VirtualMachine",
                          snap ? snap : ref->name, claim, use_unchanged, use_end, use, ret, why,
                          sizeof why);
    if (r < 0) {
        use_end(use);
        log_error("'%s/%s': volume '%s'%s%s: %s", ref->ns, ref->name, vol,
                  snap ? " of snapshot " : "", snap ? snap : "", why[0] ? why : strerror(-r));
    }
    return r;
}
