/* core/libvirt/libvirt-clone.c: a new VM from a snapshot (SPEC "Snapshots",
 * clone): the snapshot's saved definition with a new name, UUID, MAC
 * addresses, firmware serial, NVRAM and console files, and its own disks
 * as qcow2 overlays on the snapshot's layers (as cheap as a snapshot);
 * left stopped, the source VM untouched. rmdir of the snapshot keeps the
 * layers the clone builds on (libvirt-snapshot.c, mergeable()). */
#define LOG_MODULE "clone"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault.h"
#include "layers.h"
#include "opts.h"
#include "restore-plan.h"
#include "libvirt-from-snapshot.h"
#include "libvirt-xml.h"
#include "libvirt-private.h"
#include "log.h"

/* ---- the clone's record ---------------------------------------------------
 * STATE/clone/NAME.json (the restore plan's format, phase "cloning") lists
 * the overlays a clone makes, written durably before the first is made and
 * removed when the clone is defined or undone. A daemon killed in between
 * leaves it; the recovery pass reclaims the overlays no VM uses (a clone
 * defined before the kill keeps its disks). The new name's operation lock
 * (held host-wide while a clone runs) tells a live clone from a dead one. */

static int
record_write(struct restore_plan *p, const char *new_name, const char *snap,
             char *const *overlays)
{
    /* names are valid object names: no '/' */
    int r = restore_plan_init(p, "clone", new_name, new_name, "-", snap, "cloning");

    for (size_t i = 0; r >= 0 && overlays[i]; i++)
        r = strv_push(&p->overlays, &p->n_overlays, overlays[i]);
    return r < 0 ? r : restore_plan_write(p);
}

int
lv_clone_recover_record(const char *path, void *opaque)
{
    struct lv_pass *pass = opaque;
    _cleanup_(restore_plan_clear) struct restore_plan p = { 0 };
    int left = 0;

    if (restore_plan_read_phase(path, "cloning", &p) < 0)
        return 0;
    if (vm_op_begin(pass->lv->vmops, p.vm, NULL, 0) < 0)
        return 0;       /* a clone of that name runs */
    if (lv_reclaim(pass->c, p.overlays) < 0) {
        left = 1;
    } else {
        log_warning("'%s': reclaimed what a clone killed half-way left", p.vm);
        restore_plan_remove(&p);
    }
    vm_op_end(pass->lv->vmops, p.vm);
    return left;
}

static int
clone_locked(struct lv *lv, virConnectPtr c, virDomainPtr dom, const char *snap,
             const char *new_name, struct op_report *rep)
{
    _cleanup_(restore_plan_clear) struct restore_plan record = { 0 };
    struct lv_source sp;
    char why[256] = "", serial[33];
    const char *vm = virDomainGetName(dom);
    struct volume *v = NULL;
    size_t n = 0, n_ov = 0, n_drop = 0;
    _cleanup_strv_ char **overlays = calloc(1, sizeof(char *));
    _cleanup_strv_ char **targets = calloc(1, sizeof(char *));
    _cleanup_strv_ char **drop = calloc(1, sizeof(char *));
    int r;

    if (!overlays || !targets || !drop)
        return -ENOMEM;
    r = lv_source_read(dom, snap, &sp, why, sizeof why);
    if (r >= 0 && sp.n_missing)
        r = lv_report(rep, -EIO, "the snapshot's data of disk %s is missing", sp.missing[0]);
    else if (r < 0)
        lv_report(rep, r, "%s", why);
    for (size_t i = 0; r >= 0 && i < sp.n; i++) {
        _cleanup_free_ char *ov = lv_overlay_name(sp.disks[i].layer, new_name,
                                                  sp.disks[i].name, "clone");
        size_t n_t = n_ov;
        if (!ov || strv_push(&overlays, &n_ov, ov) < 0 ||
            strv_push(&targets, &n_t, sp.disks[i].name) < 0)
            r = -ENOMEM;
    }
    /* disks the snapshot did not cover: read-only, shareable and cdrom
     * ones are shared; a writable one would be written by two VMs */
    if (r >= 0 && lv_xml_disks(sp.def, &v, &n) >= 0) {
        for (size_t i = 0; i < n; i++) {
            if (r >= 0 && !lv_source_has(&sp, v[i].name) &&
                !(v[i].flags & (VOLUME_READONLY | VOLUME_SHAREABLE | VOLUME_CDROM)))
                r = strv_push(&drop, &n_drop, v[i].name);
            volume_clear(&v[i]);
        }
        free(v);
    }
    lv_random_hex(serial);
    _cleanup_free_ char *xml = NULL;
    struct lv_xml_edit e = {
        .name = new_name,
        .drop_uuid = true,
        .new_macs = true,
        .disk_targets = targets,
        .disk_sources = overlays,
        .drop_disks = drop,
        .serial = serial,
        .old_name = vm,
    };
    if (r >= 0 && lv_xml_edit(sp.def, &e, &xml) < 0)
        r = lv_report(rep, -EIO, "cannot rewrite the snapshot's definition for the clone");
    /* (a clone without overlays makes no file: nothing to record) */
    if (r >= 0 && n_ov > 0 && record_write(&record, new_name, snap, overlays) < 0)
        r = lv_report(rep, -EIO, "cannot record the clone in the state directory");
    fault_point("clone-recorded");
    for (size_t i = 0; r >= 0 && i < sp.n; i++)
        if ((r = lv_make_overlay(overlays[i], sp.disks[i].layer, sp.disks[i].format)) < 0) {
            for (size_t j = 0; j < i; j++) {
                unlink(overlays[j]);
                layer_mine_remove(overlays[j]);
            }
            lv_report(rep, r == -EEXIST ? -EEXIST : -EIO, "cannot make the clone's disk overlays");
        }
    size_t n_disks = sp.n;
    lv_source_clear(&sp);
    if (r < 0) {
        restore_plan_remove(&record);
        return r;
    }
    fault_point("clone-overlays");
    virDomainPtr d = virDomainDefineXML(c, xml);
    if (!d) {
        r = lv_error();
        lv_report(rep, r == -EEXIST ? -EEXIST : -EIO, "libvirt refused the clone's definition: %s",
                  lv_last_message("define failed"));
        /* refused, or defined and the answer lost? */
        d = virDomainLookupByName(c, new_name);
        bool refused = !d && lv_last_is(VIR_ERR_NO_DOMAIN);
        virResetLastError();
        if (refused) {
            lv_drop_overlays(overlays);
            restore_plan_remove(&record);
            return r == -EEXIST ? -EEXIST : -EIO;
        }
        if (!d) {   /* cannot tell: the record stays for the recovery pass */
            lv_recovery_kick(lv);
            return -EIO;
        }
        int ours = lv_defines_overlays(d, NULL, overlays);
        if (ours <= 0) {        /* someone else's VM of that name, or unsure */
            virDomainFree(d);
            if (ours == 0) {
                lv_drop_overlays(overlays);
                restore_plan_remove(&record);
            } else {
                lv_recovery_kick(lv);
            }
            return r == -EEXIST ? -EEXIST : -EIO;
        }
        rep->text[0] = '\0';
    }
    virDomainFree(d);
    restore_plan_remove(&record);
    if (n_drop)
        return lv_report(rep, 0, "defined VM '%s' (stopped): %zu disk(s) as overlays on the "
                              "snapshot's layers; %zu writable disk(s) the snapshot did not "
                              "cover left out", new_name, n_disks, n_drop);
    return lv_report(rep, 0, "defined VM '%s' (stopped): %zu disk(s) as overlays on the "
                          "snapshot's layers", new_name, n_disks);
}

int
lv_clone(void *h, const struct vm_ref *ref, const char *snap, const char *new_name,
         const struct vmsnapfs_opts *o, struct op_report *rep)
{
    struct lv *lv = h;
    _cleanup_(lv_vm_close) struct lv_vm v = { 0 };
    int r = lv_vm_open(lv, ref->name, &v, rep->text, sizeof rep->text);

    (void) o;
    if (r < 0)
        return r;
    virDomainPtr exists = virDomainLookupByName(v.c, new_name);
    virResetLastError();
    if (exists) {
        virDomainFree(exists);
        return lv_report(rep, -EEXIST, "a VM named '%s' exists", new_name);
    }
    /* the source VM's operation keeps rmdir of the snapshot out; the new
     * name's keeps a second clone of that name out */
    r = lv_vm_op(&v, NULL, 0, rep->text, sizeof rep->text);
    if (r < 0)
        return r;
    r = vm_op_begin(lv->vmops, new_name, NULL, 0);
    if (r < 0)
        return lv_report(rep, r, "a clone of that name is being made");
    r = clone_locked(lv, v.c, v.dom, snap, new_name, rep);
    vm_op_end(lv->vmops, new_name);
    return r;
}
