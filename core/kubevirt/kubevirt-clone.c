/* core/kubevirt/kubevirt-clone.c: `echo NEW > VM/snapshots/S/clone` on
 * KubeVirt, as a VirtualMachineClone from the VirtualMachineSnapshot
 * (kubevirt-api.md §11): KubeVirt restores the snapshot's volumes into new
 * claims and creates NEW, Halted, with the generated patches applied.
 *
 * The clone gets new MAC addresses (one per interface, written with '-':
 * the VirtualMachineRestore webhook refuses patch values holding ':', and
 * the clone would then retry forever, §11.6) and a new SMBIOS serial. The
 * write returns once NEW exists and the clone is Succeeded; KubeVirt's
 * clone controller may wait forever (a target name that appeared meanwhile,
 * §11.7), so the wait is bounded by the failure deadline, after which the
 * VirtualMachineClone is deleted and the write fails with ETIMEDOUT.
 *
 * The VirtualMachineClone object stays after success: KubeVirt deletes its
 * temporary restore once the new claims are bound (with WaitForFirstConsumer
 * storage, at NEW's first start), and the clone itself when NEW is deleted.
 */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/rand.h>

#include "cleanup.h"
#include "clock.h"
#include "deadline.h"
#include "kube-objects.h"
#include "kube-owner.h"
#include "kubevirt-private.h"
#include "log.h"

#define CLONE_WAIT_NS (UINT64_C(600) * NSEC_PER_SEC)

#define say kv_say

/* The served clone.kubevirt.io version the cluster prefers, into v. */
static int
clone_version(struct kv *kv, char *v, size_t vsize, char *why, size_t size)
{
    struct json_object *g = NULL;
    int r = kv_api(kv, "GET", "/apis/clone.kubevirt.io", NULL, &g, why, size);
    const char *pv = kube_get_str(g, "preferredVersion", "version", (char *) NULL);

    if (r == -ENOENT)
        r = kv_sayf(why, size, -EIO, "the cluster serves no clone.kubevirt.io API (KubeVirt "
                    "v0.55 or later has it): it cannot clone");
    else if (r >= 0 && !pv)
        r = kv_sayf(why, size, -EIO, "the cluster's clone.kubevirt.io API names no version");
    else if (r >= 0)
        snprintf(v, vsize, "%s", pv);
    json_object_put(g);
    return r < 0 ? -EIO : 0;
}

/* A locally administered unicast MAC address, '-' separated. */
static int
random_mac(char out[18])
{
    unsigned char b[6];
    if (RAND_bytes(b, sizeof b) != 1)
        return -EIO;
    b[0] = (unsigned char) ((b[0] & 0xfc) | 0x02);
    snprintf(out, 18, "%02x-%02x-%02x-%02x-%02x-%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
    return 0;
}

static int
random_uuid(char out[37])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        return -EIO;
    b[6] = (unsigned char) ((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char) ((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
    return 0;
}

/* The VirtualMachineClone of snapshot snap into new_name, with new MACs
 * (macs: "iface=MAC ..." for the report) and serial. */
static struct json_object *
clone_object(struct kv *kv, const char *version, const char *snap, const char *new_name,
             struct json_object *captured, char *macs, size_t macs_size, const char *serial)
{
    struct json_object *o = json_object_new_object();
    struct json_object *meta = json_object_new_object(), *labels = json_object_new_object();
    struct json_object *ann = json_object_new_object(), *spec = json_object_new_object();
    struct json_object *src = json_object_new_object(), *dst = json_object_new_object();
    struct json_object *newmacs = json_object_new_object();
    struct json_object *ifs = kube_get(captured, "spec", "template", "spec", "domain", "devices",
                                       "interfaces", (char *) NULL);
    char av[64];

    snprintf(av, sizeof av, "clone.kubevirt.io/%s", version);
    json_object_object_add(o, "apiVersion", json_object_new_string(av));
    json_object_object_add(o, "kind", json_object_new_string("VirtualMachineClone"));
    json_object_object_add(o, "metadata", meta);
    json_object_object_add(meta, "generateName", json_object_new_string("vmsnapfs-clone-"));
    json_object_object_add(meta, "labels", labels);
    json_object_object_add(labels, KUBE_MADE_BY_LABEL, json_object_new_string("vmsnapfs"));
    json_object_object_add(meta, "annotations", ann);
    json_object_object_add(ann, KUBE_OWNER_ANNOTATION, json_object_new_string(kv->owner));
    json_object_object_add(o, "spec", spec);
    json_object_object_add(spec, "source", src);
    json_object_object_add(src, "apiGroup", json_object_new_string("snapshot.kubevirt.io"));
    json_object_object_add(src, "kind", json_object_new_string("VirtualMachineSnapshot"));
    json_object_object_add(src, "name", json_object_new_string(snap));
    json_object_object_add(spec, "target", dst);
    json_object_object_add(dst, "apiGroup", json_object_new_string("kubevirt.io"));
    json_object_object_add(dst, "kind", json_object_new_string("VirtualMachine"));
    json_object_object_add(dst, "name", json_object_new_string(new_name));
    json_object_object_add(spec, "newMacAddresses", newmacs);
    json_object_object_add(spec, "newSMBiosSerial", json_object_new_string(serial));
    macs[0] = '\0';
    size_t n = ifs && json_object_is_type(ifs, json_type_array) ? json_object_array_length(ifs)
                                                                 : 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = kube_get_str(json_object_array_get_idx(ifs, i), "name",
                                        (char *) NULL);
        char mac[18];
        if (!name)
            continue;                   /* KubeVirt's webhook refuses these */
        if (random_mac(mac) < 0) {
            json_object_put(o);
            return NULL;
        }
        json_object_object_add(newmacs, name, json_object_new_string(mac));
        size_t used = strlen(macs);
        snprintf(macs + used, macs_size - used, "%s%s=%s", used ? " " : "", name, mac);
    }
    return o;
}

/* Waits until clone `name` is Succeeded and new_name exists: 0, or -errno
 * with the reason in rep. */
static int
wait_clone(struct kv *kv, const struct vm_ref *ref, const char *path, const char *new_name,
           struct deadline until, struct op_report *rep)
{
    struct kube_cache *vms = cache(kv, C_VMS, ref->ns);
    char last[256] = "", why[256];

    for (;;) {
        uint64_t seen = kube_cache_changes(vms);
        struct json_object *o = NULL;
        int r = kv_api(kv, "GET", path, NULL, &o, why, sizeof why);
        if (r == -ENOENT)
            return say(rep, -EIO, "the VirtualMachineClone was deleted by someone else");
        const char *phase = kube_get_str(o, "status", "phase", (char *) NULL);
        const char *ready = kube_get_str(kube_condition(o, "Ready"), "reason", (char *) NULL);
        if (ready)
            snprintf(last, sizeof last, "%s", ready);
        bool ok = phase && strcmp(phase, "Succeeded") == 0;
        bool failed = phase && strcmp(phase, "Failed") == 0;
        json_object_put(o);
        if (failed)
            return say(rep, -EIO, "KubeVirt failed the clone: %s", last[0] ? last : "no reason");
        struct json_object *vm = ok ? kube_cache_get(vms, ref->ns, new_name) : NULL;
        json_object_put(vm);
        if (vm)
            return 0;
        if (deadline_passed(until))
            return say(rep, -ETIMEDOUT, "KubeVirt did not finish the clone within the failure "
                       "deadline%s%s; the VirtualMachineClone is deleted",
                       last[0] ? "; it said: " : "", last);
        (void) kube_cache_wait_change(vms, seen, now_monotonic_ns() + NSEC_PER_SEC / 2);
    }
}

int
kv_clone(void *h, const struct vm_ref *ref, const char *snap, const char *new_name,
         const struct vmsnapfs_opts *o, struct op_report *rep)
{
    struct kv *kv = h;
    _cleanup_free_ char *key = NULL, *skey = NULL, *path = NULL, *one = NULL;
    struct json_object *so = NULL, *content = NULL, *obj = NULL, *made = NULL;
    char version[16], why[512], macs[256], serial[37];
    int r;

    struct json_object *vm = kube_cache_get(cache(kv, C_VMS, ref->ns), ref->ns, ref->name);
    json_object_put(vm);
    if (!vm)
        return say(rep, -ENOENT, "no such VM");
    so = kube_cache_get(cache(kv, C_SNAPS, ref->ns), ref->ns, snap);
    if (!so || !kube_snapshot_of(so, ref->name)) {
        json_object_put(so);
        return say(rep, -ENOENT, "the VM has no snapshot '%s'", snap);
    }
    const char *phase = kube_get_str(so, "status", "phase", (char *) NULL);
    bool ready = json_object_get_boolean(kube_get(so, "status", "readyToUse", (char *) NULL));
    const char *cname = kube_get_str(so, "status", "virtualMachineSnapshotContentName",
                                     (char *) NULL);
    content = cname ? kube_cache_get(cache(kv, C_CONTENTS, ref->ns), ref->ns, cname) : NULL;
    if (phase && strcmp(phase, "Failed") == 0)
        r = say(rep, -EIO, "the snapshot failed: it cannot be cloned");
    else if (!ready || !content)
        r = say(rep, -EBUSY, "the snapshot is not ready to use yet");
    else if (asprintf(&key, "%s/%s", ref->ns, new_name) < 0)
        r = -ENOMEM;
    else if (asprintf(&skey, "%s/%s/snapshots/%s", ref->ns, ref->name, snap) < 0)
        r = -ENOMEM;
    else if ((r = vm_op_begin(kv->ops, key, NULL, 0)) == 0 &&   /* one clone into new_name */
             (r = vm_op_begin(kv->ops, skey, NULL, 0)) < 0)    /* rmdir of snap: EBUSY */
        vm_op_end(kv->ops, key);
    json_object_put(so);
    if (r < 0) {
        json_object_put(content);
        return r == -EBUSY && !rep->text[0] ? say(rep, r, "another clone into '%s', or an "
                                                  "rmdir of '%s', runs", new_name, snap)
                                            : r;
    }
    bool firmware = kube_get(content, "spec", "source", "virtualMachine", "spec", "template",
                             "spec", "domain", "firmware", (char *) NULL) != NULL;
    struct json_object *exists = kube_cache_get(cache(kv, C_VMS, ref->ns), ref->ns, new_name);
    json_object_put(exists);
    if (exists)
        r = say(rep, -EEXIST, "VM '%s' exists", new_name);
    else if (clone_version(kv, version, sizeof version, why, sizeof why) < 0)
        r = say(rep, -EIO, "%s", why);
    else if (random_uuid(serial) < 0 ||
             !(obj = clone_object(kv, version, snap, new_name,
                                  kube_get(content, "spec", "source", "virtualMachine",
                                           (char *) NULL),
                                  macs, sizeof macs, serial)) ||
             asprintf(&path, "/apis/clone.kubevirt.io/%s/namespaces/%s/virtualmachineclones",
                      version, ref->ns) < 0)
        r = -ENOMEM;
    else
        r = kv_api(kv, "POST", path, json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN),
                &made, why, sizeof why);
    json_object_put(content);
    json_object_put(obj);
    if (r < 0 && !rep->text[0])
        r = say(rep, r == -EINVAL ? -EIO : r, "the cluster refused the VirtualMachineClone: %s",
                why);
    const char *name = kube_get_str(made, "metadata", "name", (char *) NULL);
    if (r >= 0 && (!name || asprintf(&one, "%s/%s", path, name) < 0))
        r = say(rep, -EIO, "the cluster answered the VirtualMachineClone without a name");
    if (r >= 0) {
        log_info("'%s/%s': VirtualMachineClone '%s' of snapshot '%s' into '%s'", ref->ns,
                 ref->name, name, snap, new_name);
        uint64_t wait = o && o->failure_deadline_ns ? o->failure_deadline_ns : CLONE_WAIT_NS;
        r = wait_clone(kv, ref, one, new_name, deadline_after(wait), rep);
        if (r == -ETIMEDOUT) {
            char err[256];
            if (kv_api(kv, "DELETE", one, NULL, NULL, err, sizeof err) < 0)
                log_warning("'%s': cannot delete VirtualMachineClone '%s': %s", ref->ns, name,
                            err);
        }
    }
    json_object_put(made);
    vm_op_end(kv->ops, skey);
    vm_op_end(kv->ops, key);
    if (r >= 0)
        r = say(rep, 0, "VM '%s' made, stopped; new MAC addresses %s; %s%s", new_name,
                macs[0] ? macs : "(no interfaces)",
                firmware ? "new SMBIOS serial " : "no firmware section: no SMBIOS serial",
                firmware ? serial : "");
    return r;
}
