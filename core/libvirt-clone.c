/* core/libvirt-clone.c: a new VM from a snapshot (SPEC "Snapshots",
 * clone): the snapshot's saved definition with a new name, UUID, MAC
 * addresses, firmware serial, NVRAM and console files, and its own disks
 * as qcow2 overlays on the snapshot's layers (as cheap as a snapshot);
 * left stopped, the source VM untouched. rmdir of the snapshot keeps the
 * layers the clone builds on (libvirt-snapshot.c, mergeable()). */
#define LOG_MODULE "clone"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layers.h"
#include "libvirt-from-snapshot.h"
#include "libvirt-xml.h"
#include "libvirt.h"
#include "log.h"

static int
clone_locked(struct lv *lv, virConnectPtr c, virDomainPtr dom, const char *snap,
             const char *new_name, struct op_report *rep)
{
    struct lv_source sp;
    char why[256] = "", serial[33];
    const char *vm = virDomainGetName(dom);
    struct volume *v = NULL;
    size_t n = 0, n_ov = 0, n_drop = 0;
    _cleanup_strv_ char **overlays = calloc(1, sizeof(char *));
    _cleanup_strv_ char **targets = calloc(1, sizeof(char *));
    _cleanup_strv_ char **drop = calloc(1, sizeof(char *));
    int r;

    (void) lv;
    if (!overlays || !targets || !drop)
        return -ENOMEM;
    r = lv_source_read(dom, snap, &sp, why, sizeof why);
    if (r >= 0 && sp.n_missing)
        r = lv_report(rep, -EIO, "the snapshot's data of disk %s is missing", sp.missing[0]);
    else if (r < 0)
        lv_report(rep, r, "%s", why);
    for (size_t i = 0; r >= 0 && i < sp.n; i++) {
        _cleanup_free_ char *ov = lv_overlay_path(sp.disks[i].layer, new_name,
                                                  sp.disks[i].name, "clone");
        size_t n_t = n_ov;
        if (!ov || strv_push(&overlays, &n_ov, ov) < 0 ||
            strv_push(&targets, &n_t, sp.disks[i].name) < 0)
            r = -ENOMEM;
        else if (access(ov, F_OK) == 0) {
            /* a clone of that name that a killed daemon left half-made:
             * its overlay is ours and nothing uses it */
            char *one[] = { ov, NULL };
            if (layer_mine(ov))
                lv_reclaim(c, one);
            if (access(ov, F_OK) == 0)
                r = lv_report(rep, -EEXIST, "the file '%s' exists already", ov);
        }
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
    if (r < 0)
        return r;
    virDomainPtr d = virDomainDefineXML(c, xml);
    if (!d) {
        r = lv_errno("define the clone", new_name);
        virErrorPtr err = virGetLastError();
        lv_report(rep, r == -EEXIST ? -EEXIST : -EIO, "libvirt refused the clone's definition: %s",
               err && err->message ? err->message : "define failed");
        /* refused, or defined and the answer lost? */
        d = virDomainLookupByName(c, new_name);
        err = d ? NULL : virGetLastError();
        bool refused = !d && err && err->code == VIR_ERR_NO_DOMAIN;
        virResetLastError();
        if (refused) {
            lv_drop_overlays(overlays);
            return r == -EEXIST ? -EEXIST : -EIO;
        }
        if (!d)     /* cannot tell: the files stay (reclaimed by a retry) */
            return -EIO;
        int ours = lv_defines_overlays(d, NULL, overlays);
        if (ours <= 0) {        /* someone else's VM of that name, or unsure */
            virDomainFree(d);
            if (ours == 0)
                lv_drop_overlays(overlays);
            return r == -EEXIST ? -EEXIST : -EIO;
        }
        rep->text[0] = '\0';
    }
    virDomainFree(d);
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
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(lv);
    _cleanup_(virDomainFreep) virDomainPtr dom = NULL;
    int r = 0;

    (void) o;
    if (!c)
        return lv_report(rep, -EIO, "no connection to libvirt");
    dom = lv_lookup(c, ref->name, &r);
    if (!dom)
        return r;
    virDomainPtr exists = virDomainLookupByName(c, new_name);
    virResetLastError();
    if (exists) {
        virDomainFree(exists);
        return lv_report(rep, -EEXIST, "a VM named '%s' exists", new_name);
    }
    /* the source VM's operation keeps rmdir of the snapshot out; the new
     * name's keeps a second clone of that name out */
    r = lv_op_begin(lv, ref->name, NULL);
    if (r < 0)
        return lv_report(rep, r, "%s", lv_op_refusal(r));
    r = lv_op_begin(lv, new_name, NULL);
    if (r < 0) {
        lv_op_end(lv, ref->name);
        return lv_report(rep, r, "a clone of that name is being made");
    }
    r = clone_locked(lv, c, dom, snap, new_name, rep);
    lv_op_end(lv, new_name);
    lv_op_end(lv, ref->name);
    return r;
}
