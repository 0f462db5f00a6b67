/* core/libvirt/libvirt-snapshot.c: taking and deleting snapshots on libvirt.
 *
 * A snapshot is an external disk-only snapshot in libvirt's metadata (so
 * virsh sees it): the disk's top image becomes the snapshot's immutable
 * layer and the VM goes on in a new qcow2 overlay. For a running VM with an
 * agent: freeze, snapshot, thaw, as three steps, so each outcome is known.
 * What libvirt has no field for (indications, excluded disks, the freeze
 * window) is kept in the snapshot's description (snapshot-json.h).
 *
 * Deleting snapshot S merges the layer above S's into S's layer (block
 * commit on a running VM, qemu-img commit on a stopped one) and drops the
 * metadata: chains stay as deep as the number of snapshots, and every other
 * snapshot keeps its content (its data is the chain below its overlay).
 *
 * Thread model: one changing operation per VM (vm_op_begin); libvirt calls
 * are made without our locks held.
 */
#define LOG_MODULE "snapshot"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "deadline.h"
#include "fault.h"
#include "layers.h"
#include "libvirt-freeze.h"
#include "libvirt-from-snapshot.h"
#include "libvirt-merge.h"
#include "libvirt-xml.h"
#include "libvirt-private.h"
#include "log.h"
#include "qemu-img.h"
#include "restore-plan.h"
#include "snapshot-json.h"
#include "state.h"
#include "subprocess.h"

#define BLOCK_JOB_POLL_NS (UINT64_C(20) * 1000000)

/* ---- which disks, where their overlays go ---------------------------------- */

struct plan_disk {
    const char *name;       /* target */
    const char *source;     /* current top (live definition) */
    const char *format;
    char *overlay;          /* new top, or NULL: excluded */
};

/* A disk whose top is a regular file takes a qcow2 overlay beside it;
 * block devices (an overlay would land in /dev), network disks, cdroms,
 * read-only and shareable disks are left out. */
static bool
snapshottable(const struct volume *persistent, const struct volume *live)
{
    struct stat st;
    return !(persistent->flags & (VOLUME_CDROM | VOLUME_READONLY | VOLUME_SHAREABLE)) &&
           live->source && live->source[0] == '/' && stat(live->source, &st) == 0 &&
           S_ISREG(st.st_mode);
}

static const struct volume *
by_name(const struct volume *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return &v[i];
    return NULL;
}

/* "/dir/vm.vda.snap.qcow2" beside the disk's current top */
char *
lv_overlay_path(const char *top, const char *vm, const char *disk, const char *what,
                const char *unique)
{
    char *p = NULL;
    const char *slash = strrchr(top, '/');
    int dirlen = slash ? (int) (slash - top) : 1;
    if (asprintf(&p, "%.*s/%s.%s.%s%s%s.qcow2", dirlen, slash ? top : "/", vm, disk, what,
                 unique[0] ? "." : "", unique) < 0)
        return NULL;
    return p;
}

static void
xml_attr(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '\'': fputs("&apos;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static char *
snapshot_xml(const char *snap, const char *description, const struct plan_disk *d,
             size_t n, const char *domain_xml)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    if (!f)
        return NULL;
    fprintf(f, "<domainsnapshot>\n  <name>%s</name>\n  <description>", snap);
    xml_attr(f, description);
    fprintf(f, "</description>\n");
    if (domain_xml) {
        /* metadata only: the definition, no disk touched */
        fprintf(f, "  <creationTime>%lld</creationTime>\n  <state>shutoff</state>\n"
                   "  <memory snapshot='no'/>\n", (long long) time(NULL));
    }
    fprintf(f, "  <disks>\n");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "    <disk name='");
        xml_attr(f, d[i].name);
        if (!d[i].overlay || domain_xml) {
            fprintf(f, "' snapshot='no'/>\n");
            continue;
        }
        fprintf(f, "' snapshot='external' type='file'>\n"
                   "      <driver type='qcow2'/>\n      <source file='");
        xml_attr(f, d[i].overlay);
        fprintf(f, "'/>\n    </disk>\n");
    }
    fprintf(f, "  </disks>\n");
    if (domain_xml)
        fprintf(f, "%s\n", domain_xml);
    fprintf(f, "</domainsnapshot>\n");
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Sets the snapshot's description (the final metadata) by redefining it. */
static void
set_description(virDomainPtr dom, virDomainSnapshotPtr snap, const char *desc)
{
    _cleanup_free_ char *xml = virDomainSnapshotGetXMLDesc(snap, VIR_DOMAIN_SNAPSHOT_XML_SECURE);
    char *start, *end;

    if (!xml || !(start = strstr(xml, "<description>")) ||
        !(end = strstr(start, "</description>"))) {
        virResetLastError();
        log_warning("'%s': cannot update the description of snapshot '%s'",
                    virDomainGetName(dom), virDomainSnapshotGetName(snap));
        return;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return;
    fprintf(f, "%.*s<description>", (int) (start - xml), xml);
    xml_attr(f, desc);
    fprintf(f, "%s", end);
    if (fclose(f) != 0) {
        free(buf);
        return;
    }
    virDomainSnapshotPtr s = virDomainSnapshotCreateXML(dom, buf,
                                                        VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE);
    if (!s) {
        lv_errno("update the description of a snapshot of", virDomainGetName(dom));
        virResetLastError();
    } else {
        virDomainSnapshotFree(s);
    }
    free(buf);
}

/* ---- create -------------------------------------------------------------- */

static int delete_locked(struct lv *lv, virDomainPtr dom, const char *snap,
                         struct op_report *rep);

/* ---- the snapshot's record ------------------------------------------------
 * STATE/snapshot/UUID.json (the restore plan's format, phase "snapshotting")
 * lists the overlays a mkdir makes, each written before it is made; removed
 * once the snapshot is made or undone. A daemon killed in between leaves
 * it, and the recovery pass removes the overlays no snapshot took (the VM's
 * operation lock, held host-wide while a mkdir runs, tells a live one). */

static int
record_add(struct restore_plan *p, virDomainPtr dom, const char *snap, const char *overlay)
{
    char uuid[VIR_UUID_STRING_BUFLEN];

    if (!p->path) {
        int r = virDomainGetUUIDString(dom, uuid) < 0
                    ? -EIO
                    : restore_plan_init(p, "snapshot", uuid, virDomainGetName(dom), uuid, snap,
                                        "snapshotting");
        if (r < 0)
            return r;
    }
    if (strv_push(&p->overlays, &p->n_overlays, overlay) < 0)
        return -ENOMEM;
    return restore_plan_write(p);
}

static int
recover_record(const char *path, void *opaque)
{
    struct lv_pass *pass = opaque;
    _cleanup_(restore_plan_clear) struct restore_plan p = { 0 };

    if (restore_plan_read_phase(path, "snapshotting", &p) < 0)
        return 0;
    _cleanup_(virDomainFreep) virDomainPtr dom = virDomainLookupByUUIDString(pass->c, p.uuid);
    virErrorPtr e = dom ? NULL : virGetLastError();
    bool gone = !dom && e && e->code == VIR_ERR_NO_DOMAIN;
    virResetLastError();
    if (!dom && !gone)
        return 1;
    if (dom && vm_op_begin(pass->lv->vmops, p.vm, NULL, 0) < 0)
        return 1;           /* the mkdir itself runs */
    /* a snapshot that was made uses its overlays: those stay */
    int left = lv_reclaim(pass->c, p.overlays) < 0;
    if (!left) {
        log_warning("'%s': reclaimed what a mkdir of '%s' killed half-way left", p.vm, p.snap);
        restore_plan_remove(&p);
    }
    if (dom)
        vm_op_end(pass->lv->vmops, p.vm);
    return left;
}

int
lv_snapshot_recover(struct lv *lv, virConnectPtr c)
{
    struct lv_pass pass = { lv, c };
    return restore_plan_each("snapshot", recover_record, &pass);
}

/* A libvirt job (migration, backup, block job waiting) would hold the
 * snapshot up while the guest is frozen. */
static bool
other_job(virDomainPtr dom)
{
    virDomainJobInfo job;
    bool busy = virDomainGetJobInfo(dom, &job) == 0 && job.type != VIR_DOMAIN_JOB_NONE;
    virResetLastError();
    return busy;
}

struct op_end_ctx {
    struct lv *lv;
    char vm[];
};

static void
op_end_later(void *opaque)
{
    struct op_end_ctx *c = opaque;
    vm_op_end(c->lv->vmops, c->vm);
    free(c);
}

static int create_locked(struct lv *lv, virDomainPtr dom, const char *snap,
                         const struct vmsnapfs_opts *o, struct op_report *rep,
                         bool *ret_handed_over);

int
lv_snapshot_create(void *h, const struct vm_ref *ref, const char *snap,
                   const struct vmsnapfs_opts *o, struct op_report *rep)
{
    struct lv *lv = h;
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(lv);
    _cleanup_(virDomainFreep) virDomainPtr dom = NULL;
    bool handed_over = false;
    int r = 0;

    if (!c)
        return lv_report(rep, -EIO, "no connection to libvirt");
    dom = lv_lookup(c, ref->name, &r);
    if (!dom)
        return r;
    r = vm_op_begin(lv->vmops, ref->name, snap, VM_OP_DISKS);
    if (r < 0)
        return lv_report(rep, r, "%s", vm_op_refusal(r));
    r = create_locked(lv, dom, snap, o, rep, &handed_over);
    if (!handed_over)
        vm_op_end(lv->vmops, ref->name);
    return r;
}

int
lv_snapshot_create_locked(struct lv *lv, virDomainPtr dom, const char *snap,
                          const struct vmsnapfs_opts *o, struct op_report *rep)
{
    bool handed_over = false;
    /* a stopped VM (the only caller's case) has no freeze to wait for */
    int r = create_locked(lv, dom, snap, o, rep, &handed_over);
    if (handed_over)
        log_warning("'%s': a late thaw holds the VM's operation", virDomainGetName(dom));
    return r;
}

/* Called with the VM's operation held. *ret_handed_over: a freeze that
 * has not answered yet ends the operation once it does (late thaw). */
static int
create_locked(struct lv *lv, virDomainPtr dom, const char *snap,
              const struct vmsnapfs_opts *o, struct op_report *rep,
              bool *ret_handed_over)
{
    uint64_t start = now_monotonic_ns();
    struct deadline deadline = deadline_begin(o);
    _cleanup_(restore_plan_clear) struct restore_plan rec = { 0 };
    const struct vm_ref real = { .ns = "", .name = virDomainGetName(dom) };
    const struct vm_ref *ref = &real;
    _cleanup_free_ char *live_xml = NULL, *inactive_xml = NULL;
    struct volume *pers = NULL, *live = NULL;
    size_t n_pers = 0, n_live = 0;
    int r = 0, state, reason;

    *ret_handed_over = false;
    virDomainSnapshotPtr existing = virDomainSnapshotLookupByName(dom, snap, 0);
    if (existing) {
        virDomainSnapshotFree(existing);
        return lv_report(rep, -EEXIST, "a snapshot of that name exists");
    }
    virResetLastError();

    /* every disk of the persistent definition, at its current source */
    if (virDomainGetState(dom, &state, &reason, 0) < 0 ||
        /* secure: a snapshot without disks keeps the console passwords */
        !(inactive_xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE |
                                                      VIR_DOMAIN_XML_SECURE)) ||
        !(live_xml = virDomainGetXMLDesc(dom, 0))) {
        r = lv_errno("read the definition of", ref->name);
        return lv_report(rep, r, "cannot read the VM's definition from libvirt");
    }
    bool running = state == VIR_DOMAIN_RUNNING || state == VIR_DOMAIN_PAUSED ||
                   state == VIR_DOMAIN_BLOCKED || state == VIR_DOMAIN_PMSUSPENDED ||
                   state == VIR_DOMAIN_SHUTDOWN;
    bool agent = running && lv_xml_agent_connected(live_xml) > 0;
    if (lv_xml_disks(inactive_xml, &pers, &n_pers) < 0 ||
        lv_xml_disks(live_xml, &live, &n_live) < 0) {
        for (size_t i = 0; i < n_pers; i++)
            volume_clear(&pers[i]);
        free(pers);
        return lv_report(rep, -EIO, "cannot parse the VM's definition");
    }

    /* the plan: one entry per disk of the live definition */
    struct plan_disk *d = calloc(n_live ? n_live : 1, sizeof *d);
    struct snapshot_meta meta = { 0 };
    size_t n_excl = 0, n_incl = 0;
    meta.excluded = calloc(n_live + 1, sizeof *meta.excluded);
    for (size_t i = 0; d && meta.excluded && i < n_live; i++) {
        const struct volume *p = by_name(pers, n_pers, live[i].name);
        d[i].name = live[i].name;
        d[i].source = live[i].source;
        d[i].format = live[i].format;
        if (p && snapshottable(p, &live[i])) {
            d[i].overlay = lv_overlay_name(live[i].source, ref->name, live[i].name, snap);
            n_incl++;
        } else {
            meta.excluded[n_excl++] = live[i].name;    /* borrowed */
        }
    }

    /* disks of the saved definition that the running VM does not have */
    char **excl = meta.excluded ? realloc(meta.excluded, (n_live + n_pers + 1) * sizeof *excl)
                                : NULL;
    if (excl) {
        meta.excluded = excl;
        for (size_t i = 0; i < n_pers; i++)
            if (!by_name(live, n_live, pers[i].name) && !(pers[i].flags & VOLUME_CDROM))
                meta.excluded[n_excl++] = pers[i].name;
        meta.excluded[n_excl] = NULL;
    }

    r = 0;
    const char *job_disk = NULL;
    if (!d || !meta.excluded || !excl) {
        r = -ENOMEM;
    } else if (running && other_job(dom)) {
        r = lv_report(rep, -EBUSY, "another job runs on the VM (a migration, a backup, ...)");
    } else if (running && (job_disk = lv_block_job_any(dom, live, n_live))) {
        r = lv_report(rep, -EBUSY, "a block job runs on disk %s (a merge or a copy)", job_disk);
    } else if (running && !agent && o->consistency == CONSISTENCY_REQUIRED) {
        r = lv_report(rep, -EAGAIN, "no guest agent connected and consistency=required: "
                                 "no consistent snapshot is possible now");
    }
    /* the overlays are made here, before any freeze, exclusively and
     * private (libvirt then reuses them): never a file or link someone
     * planted; a name taken already gets another */
    size_t n_made = 0;
    for (size_t i = 0; r == 0 && i < n_live; i++) {
        for (int tries = 0; r == 0 && d[i].overlay; tries++) {
            r = record_add(&rec, dom, snap, d[i].overlay);
            if (r < 0) {
                lv_report(rep, -EIO, "cannot record the snapshot in the state directory");
                break;
            }
            r = lv_make_overlay(d[i].overlay, live[i].source,
                                live[i].format && live[i].format[0] ? live[i].format : "raw");
            if (r != -EEXIST || tries == 8)
                break;
            free(d[i].overlay);
            d[i].overlay = lv_overlay_name(live[i].source, ref->name, live[i].name, snap);
            r = d[i].overlay ? 0 : -ENOMEM;
        }
        if (r < 0) {
            if (!rep->text[0])
                lv_report(rep, r == -ENOMEM ? r : -EIO, "cannot make the overlay of disk "
                          "%s (see the log)", live[i].name);
        } else if (d[i].overlay) {
            n_made = i + 1;     /* (never a file this run did not make) */
        }
    }

    virDomainSnapshotPtr made = NULL;
    struct freeze *fz = NULL;
    uint64_t frozen_ms = 0;
    if (r == 0 && running) {
        meta.indications |= 1u << INDICATION_ONLINE;
        if (state != VIR_DOMAIN_RUNNING) {
            /* paused (or suspended): no agent answers; crash-consistent */
            meta.indications |= 1u << INDICATION_PAUSED;
            if (o->consistency == CONSISTENCY_REQUIRED)
                r = lv_report(rep, -EAGAIN, "the VM is paused and consistency=required");
        } else if (!agent) {
            meta.indications |= 1u << INDICATION_NO_GUEST_AGENT;
        } else if (n_incl > 0) {
            meta.indications |= 1u << INDICATION_GUEST_AGENT;
            switch (freeze_begin(lv, dom, deadline, &fz)) {
            case FREEZE_FROZEN:
                break;
            case FREEZE_FAILED:
                meta.indications |= 1u << INDICATION_QUIESCE_FAILED;
                if (o->consistency == CONSISTENCY_REQUIRED)
                    r = lv_report(rep, -EAGAIN, "the guest agent could not freeze the "
                                             "filesystems and consistency=required");
                break;
            case FREEZE_TIMEOUT:
                r = lv_report(rep, -ETIMEDOUT, "the freeze did not answer within the "
                                            "failure deadline; the guest is thawed "
                                            "once it does");
                break;
            }
        }
    }
    if (r == 0) {
        _cleanup_free_ char *desc = snapshot_meta_encode(&meta);
        _cleanup_free_ char *xml = desc ? snapshot_xml(snap, desc, d, n_live,
                                                       n_incl ? NULL : inactive_xml)
                                        : NULL;
        unsigned flags = n_incl ? VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY |
                                      VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC |
                                      VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
                                : VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE;
        if (!xml) {
            r = -ENOMEM;
        } else if (!(made = virDomainSnapshotCreateXML(dom, xml, flags))) {
            /* ATOMIC: libvirt removed what it had made. EBUSY where a job
             * of another tool is in the way (lv_errno's mapping) */
            r = lv_errno("take a snapshot of", ref->name);
            virErrorPtr e = virGetLastError();
            lv_report(rep, r, "libvirt: %s", e && e->message ? e->message : "snapshot failed");
        }
    }
    /* thaw as soon as the point in time is taken, whatever happened; a
     * freeze still pending keeps the VM busy until its late thaw */
    struct op_end_ctx *late = NULL;
    if (fz && r == -ETIMEDOUT && (late = malloc(sizeof *late + strlen(ref->name) + 1))) {
        vm_op_forget_snapshot(lv->vmops, ref->name);  /* busy, but no InProgress dir */
        late->lv = lv;
        strcpy(late->vm, ref->name);
        frozen_ms = freeze_thaw_then(fz, op_end_later, late);
    } else {
        frozen_ms = freeze_thaw(fz);
    }
    fz = NULL;

    for (size_t i = 0; !made && d && i < n_made; i++) {
        char *one[] = { d[i].overlay, NULL };
        lv_drop_overlays(one);      /* no snapshot uses them */
    }
    if (made) {
        if (meta.indications & (1u << INDICATION_GUEST_AGENT)) {
            meta.freeze_ms = frozen_ms;
            meta.have_freeze = true;
            _cleanup_free_ char *desc = snapshot_meta_encode(&meta);
            if (desc)
                set_description(dom, made, desc);
        }
        if (deadline_passed(deadline)) {
            /* too late: undo all of it */
            virDomainSnapshotFree(made);
            made = NULL;
            struct op_report undo = { .text = "" };
            if (delete_locked(lv, dom, snap, &undo) < 0)
                r = lv_report(rep, -ETIMEDOUT, "the failure deadline passed, and undoing "
                                            "the snapshot failed: %s", undo.text);
            else
                r = lv_report(rep, -ETIMEDOUT, "the failure deadline passed; the snapshot "
                                            "was undone");
        } else {
            char ind[128] = "";
            for (int i = 0; i < _INDICATION_MAX; i++)
                if (meta.indications & (1u << i))
                    snprintf(ind + strlen(ind), sizeof ind - strlen(ind), "%s%s",
                             ind[0] ? "," : "", indication_to_string(i));
            lv_report(rep, 0, "%zu disk(s), %zu excluded; indications %s%s; freeze "
                           "window %llu ms; took %llu ms", n_incl, n_excl,
                   ind[0] ? ind : "none", "", (unsigned long long) frozen_ms,
                   (unsigned long long) ((now_monotonic_ns() - start) / 1000000));
            virDomainSnapshotFree(made);
        }
    }

    restore_plan_remove(&rec);     /* made, or undone: nothing to recover */
    for (size_t i = 0; d && i < n_live; i++)
        free(d[i].overlay);
    free(d);
    free(meta.excluded);
    for (size_t i = 0; i < n_pers; i++)
        volume_clear(&pers[i]);
    free(pers);
    for (size_t i = 0; i < n_live; i++)
        volume_clear(&live[i]);
    free(live);
    *ret_handed_over = late != NULL;
    return r;
}

/* ---- delete -------------------------------------------------------------- */

/* The merges of an rmdir, in order: recorded, the metadata gone, then the
 * merges (libvirt-merge.h). A merge that fails before its commit began
 * gives the snapshot back; one that fails later is finished by the
 * recovery pass. Called with the VM's operation held. */
static int
merge_all(struct lv *lv, virConnectPtr c, virDomainPtr dom, virDomainSnapshotPtr s,
          const char *snap, bool running, struct restore_plan *m, char *const *tops,
          char *const *top_fmts, unsigned del_flags, struct op_report *rep)
{
    const char *vm = virDomainGetName(dom);
    /* secure: a snapshot given back keeps its console passwords */
    _cleanup_free_ char *saved = m->n_overlays
                                     ? virDomainSnapshotGetXMLDesc(s, VIR_DOMAIN_SNAPSHOT_XML_SECURE)
                                     : NULL;
    bool started = false;
    int r = 0;

    if (m->n_overlays && (!saved || lv_merge_record_write(m, dom, snap) < 0))
        return lv_report(rep, -EIO, "cannot record the merge in the state directory");
    fault_point("merge-recorded");
    if (virDomainSnapshotDelete(s, del_flags) < 0) {
        r = lv_report(rep, lv_errno("delete the metadata of a snapshot of", vm),
                      "libvirt could not delete the snapshot's metadata");
        restore_plan_remove(m);
        return r;
    }
    for (size_t i = 0; r >= 0 && i < m->n_overlays; i++)
        r = lv_merge_disk(c, dom, running, m->old[i], tops[i], top_fmts[i], m->overlays[i],
                          &started, rep);
    if (r >= 0) {
        restore_plan_remove(m);
        return 0;
    }
    if (!started) {
        /* no layer changed: the snapshot comes back as it was */
        virDomainSnapshotPtr back = virDomainSnapshotCreateXML(
            dom, saved, VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE);
        if (back) {
            virDomainSnapshotFree(back);
            restore_plan_remove(m);
            return r;
        }
        log_error("'%s': snapshot '%s' could not be given back after its merge failed: %s",
                  vm, snap, virGetLastError() && virGetLastError()->message
                                ? virGetLastError()->message : "redefine failed");
        virResetLastError();
    }
    /* the snapshot's layer may hold newer data: the snapshot stays gone,
     * and the recovery pass finishes the merge */
    lv_recovery_kick(lv);
    char why[sizeof rep->text];
    snprintf(why, sizeof why, "%s", rep->text);     /* (not rep->text into itself) */
    return lv_report(rep, -EIO, "the merge of disk(s) was interrupted (%s); the snapshot is "
                     "deleted and vmsnapfs finishes the merge in the background", why);
}

/* Called with the VM's operation held. */
static int
delete_locked(struct lv *lv, virDomainPtr dom, const char *snap,
              struct op_report *rep)
{
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(lv);
    _cleanup_(virDomainSnapshotFreep) virDomainSnapshotPtr s =
        virDomainSnapshotLookupByName(dom, snap, 0);
    _cleanup_free_ char *xml = NULL, *live_xml = NULL;
    _cleanup_(restore_plan_clear) struct restore_plan m = { 0 };
    _cleanup_strv_ char **tops = calloc(1, sizeof(char *));
    _cleanup_strv_ char **top_fmts = calloc(1, sizeof(char *));
    _cleanup_strv_ char **candidates = NULL;
    struct lv_xml_snapshot x = { 0 };
    struct volume *live = NULL;
    size_t n_live = 0, n_tops = 0, n_fmts = 0, n_cand = 0, kept = 0;
    int r, state, reason;

    if (!s) {
        r = lv_errno("find a snapshot of", virDomainGetName(dom));
        return lv_report(rep, r, "no such snapshot");
    }
    if (!c || !(xml = virDomainSnapshotGetXMLDesc(s, 0)) ||
        virDomainGetState(dom, &state, &reason, 0) < 0 ||
        !(live_xml = virDomainGetXMLDesc(dom, 0)))
        return lv_report(rep, lv_errno("read a snapshot of", virDomainGetName(dom)),
                      "cannot read the snapshot from libvirt");
    bool running = state != VIR_DOMAIN_SHUTOFF && state != VIR_DOMAIN_CRASHED;
    struct layer_refs *g = NULL;
    r = tops && top_fmts ? lv_xml_snapshot_parse(xml, &x) : -ENOMEM;
    if (r >= 0)
        r = lv_xml_disks(live_xml, &live, &n_live);
    const char *busy = r >= 0 && running ? lv_block_job_any(dom, live, n_live) : NULL;
    if (busy)
        r = lv_report(rep, -EBUSY, "a block job runs on disk %s (a merge or a copy)", busy);
    if (r >= 0 && (r = lv_layer_refs(c, &g)) < 0)
        lv_report(rep, r, "cannot tell which images build on the snapshot's layers");
    for (size_t i = 0; r >= 0 && i < x.n_disks; i++) {
        const struct volume *disk = &x.disks[i];
        const struct volume *now = by_name(live, n_live, disk->name);
        if ((disk->flags & (VOLUME_NOT_SNAPSHOTTED | VOLUME_INTERNAL)) || !disk->source)
            continue;
        if (now && now->source && lv_mergeable(g, disk->source, now->source)) {
            size_t n_old = m.n_overlays;
            if (strv_push(&m.overlays, &m.n_overlays, disk->source) < 0 ||
                strv_push(&m.old, &n_old, disk->name) < 0 ||
                strv_push(&tops, &n_tops, now->source) < 0 ||
                strv_push(&top_fmts, &n_fmts, now->format ? now->format : "") < 0)
                r = -ENOMEM;
            m.n_old = n_old;
        } else {
            /* a clone, a restored VM or another branch builds on it: the
             * metadata goes, the data stays until nothing needs it */
            kept++;
            r = strv_push_chain(&candidates, &n_cand, disk->source);
        }
    }
    layer_refs_free(g);
    /* internal snapshots (made elsewhere) live inside the qcow2: libvirt
     * deletes those itself; ours are external, their data merged */
    bool internal = x.memory_internal;
    for (size_t i = 0; i < x.n_disks; i++)
        internal |= (x.disks[i].flags & VOLUME_INTERNAL) != 0;
    if (r >= 0 && !m.overlays && !(m.overlays = calloc(1, sizeof(char *))))
        r = -ENOMEM;
    if (r >= 0 && !m.old && !(m.old = calloc(1, sizeof(char *))))
        r = -ENOMEM;
    if (r >= 0)
        r = merge_all(lv, c, dom, s, snap, running, &m, tops, top_fmts,
                      internal ? 0 : VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY, rep);
    if (r >= 0)
        lv_reclaim(c, candidates);
    lv_xml_snapshot_clear(&x);
    for (size_t i = 0; i < n_live; i++)
        volume_clear(&live[i]);
    free(live);
    if (r >= 0 && !rep->text[0] && kept)
        lv_report(rep, 0, "removed; the layers of %zu disk(s) stay while a clone, a restored "
                       "VM or another snapshot builds on them", kept);
    else if (r >= 0 && !rep->text[0])
        lv_report(rep, 0, "merged and removed");
    return r;
}

int
lv_snapshot_delete(void *h, const struct vm_ref *ref, const char *snap,
                   struct op_report *rep)
{
    struct lv *lv = h;
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(lv);
    _cleanup_(virDomainFreep) virDomainPtr dom = NULL;
    int r = 0;

    if (!c)
        return lv_report(rep, -EIO, "no connection to libvirt");
    dom = lv_lookup(c, ref->name, &r);
    if (!dom)
        return r;
    r = vm_op_begin(lv->vmops, ref->name, NULL, VM_OP_DISKS);
    if (r < 0)
        return lv_report(rep, r, "%s", vm_op_refusal(r));
    r = delete_locked(lv, dom, snap, rep);
    vm_op_end(lv->vmops, ref->name);
    return r;
}

