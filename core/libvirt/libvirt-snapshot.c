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

/* Sets the snapshot's description (the final metadata) by redefining it:
 * 0, or -errno (logged). */
static int
set_description(virDomainPtr dom, virDomainSnapshotPtr snap, const char *desc)
{
    _cleanup_free_ char *xml = virDomainSnapshotGetXMLDesc(snap, VIR_DOMAIN_SNAPSHOT_XML_SECURE);
    char *start, *end;
    int r = 0;

    if (xml && (start = strstr(xml, "<description>")) && (end = strstr(start, "</description>"))) {
        start += strlen("<description>");
    } else if (xml && (start = strstr(xml, "</name>"))) {
        start += strlen("</name>");     /* none yet: one after the name */
        end = start;
    } else {
        virResetLastError();
        log_warning("'%s': cannot update the description of snapshot '%s'",
                    virDomainGetName(dom), virDomainSnapshotGetName(snap));
        return -EIO;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -ENOMEM;
    bool insert = start == end;
    fprintf(f, "%.*s%s", (int) (start - xml), xml, insert ? "\n  <description>" : "");
    xml_attr(f, desc);
    fprintf(f, "%s%s", insert ? "</description>" : "", end);
    if (fclose(f) != 0) {
        free(buf);
        return -ENOMEM;
    }
    virDomainSnapshotPtr s = virDomainSnapshotCreateXML(dom, buf,
                                                        VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE);
    if (!s) {
        r = lv_errno("update the description of a snapshot of", virDomainGetName(dom));
        virResetLastError();
    } else {
        virDomainSnapshotFree(s);
    }
    free(buf);
    return r;
}

int
lv_snapshot_set_sums(void *h, const struct vm_ref *ref, const char *snap, const char *record)
{
    _cleanup_(lv_vm_close) struct lv_vm v = { 0 };
    char why[256];
    int r = lv_vm_open(h, ref->name, &v, why, sizeof why);

    if (r >= 0)
        r = lv_vm_op(&v, NULL, VM_OP_META, why, sizeof why);   /* no rmdir meanwhile */
    if (r < 0)
        return r;
    _cleanup_(virDomainSnapshotFreep) virDomainSnapshotPtr s =
        virDomainSnapshotLookupByName(v.dom, snap, 0);
    if (!s) {
        virResetLastError();
        return -ENOENT;
    }
    _cleanup_free_ char *xml = virDomainSnapshotGetXMLDesc(s, VIR_DOMAIN_SNAPSHOT_XML_SECURE);
    struct lv_xml_snapshot x;
    if (!xml || lv_xml_snapshot_parse(xml, &x) < 0) {
        virResetLastError();
        return -EIO;
    }
    struct snapshot_meta meta = { 0 };
    r = snapshot_meta_decode(x.description, &meta);
    if (r == -ENOENT && x.description && *x.description) {
        /* somebody's own words: not ours to replace */
        lv_xml_snapshot_clear(&x);
        return -ENOTSUP;
    }
    if (r == -ENOENT && x.state && strcmp(x.state, "shutoff") != 0)
        meta.indications |= 1u << INDICATION_ONLINE;    /* as the listing says */
    lv_xml_snapshot_clear(&x);
    if (r < 0 && r != -ENOENT)
        return -EIO;
    free(meta.sums);
    meta.sums = strdup(record);
    _cleanup_free_ char *desc = meta.sums ? snapshot_meta_encode(&meta) : NULL;
    snapshot_meta_clear(&meta);
    if (!desc)
        return -ENOMEM;
    return set_description(v.dom, s, desc);
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

int
lv_snapshot_recover_record(const char *path, void *opaque)
{
    struct lv_pass *pass = opaque;
    _cleanup_(restore_plan_clear) struct restore_plan p = { 0 };

    if (restore_plan_read_phase(path, "snapshotting", &p) < 0)
        return 0;
    _cleanup_(virDomainFreep) virDomainPtr dom = NULL;
    if (lv_record_domain(pass->c, p.uuid, &dom) < 0)
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
    _cleanup_(lv_vm_close) struct lv_vm v = { 0 };
    bool handed_over = false;
    int r = lv_vm_open(h, ref->name, &v, rep->text, sizeof rep->text);

    if (r >= 0)
        r = lv_vm_op(&v, snap, VM_OP_LIVE_DISKS, rep->text, sizeof rep->text);
    if (r < 0)
        return r;
    r = create_locked(h, v.dom, snap, o, rep, &handed_over);
    if (handed_over)
        v.op = false;       /* the late thaw ends it */
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

/* ---- create, step by step ------------------------------------------------- */

/* One mkdir under way (the VM's operation held). */
struct create {
    struct lv *lv;
    virDomainPtr dom;
    const char *vm, *snap;
    const struct vmsnapfs_opts *o;
    struct op_report *rep;
    uint64_t start;
    struct deadline deadline;
    struct restore_plan rec;        /* the overlays made, for recovery */
    char *live_xml, *inactive_xml;
    struct volume *pers, *live;     /* disks: persistent and live definitions */
    size_t n_pers, n_live;
    int state;
    bool running, agent;
    struct plan_disk *d;            /* one per live disk */
    size_t n_incl, n_excl, n_made;
    struct snapshot_meta meta;      /* meta.excluded borrows names of pers/live */
    struct freeze *fz;
    virDomainSnapshotPtr made;
    bool lost;                      /* libvirt's answer was lost: made or not? */
    uint64_t frozen_ms;
};

static void
create_clear(struct create *x)
{
    restore_plan_clear(&x->rec);
    free(x->live_xml);
    free(x->inactive_xml);
    for (size_t i = 0; x->d && i < x->n_live; i++)
        free(x->d[i].overlay);
    free(x->d);
    free(x->meta.excluded);
    for (size_t i = 0; i < x->n_pers; i++)
        volume_clear(&x->pers[i]);
    free(x->pers);
    for (size_t i = 0; i < x->n_live; i++)
        volume_clear(&x->live[i]);
    free(x->live);
    if (x->made)
        virDomainSnapshotFree(x->made);
}

/* The name is free; both definitions, the state, the agent. */
static int
create_read(struct create *x)
{
    int reason;
    virDomainSnapshotPtr existing = virDomainSnapshotLookupByName(x->dom, x->snap, 0);

    if (existing) {
        virDomainSnapshotFree(existing);
        return lv_report(x->rep, -EEXIST, "a snapshot of that name exists");
    }
    virResetLastError();
    /* every disk of the persistent definition, at its current source */
    if (virDomainGetState(x->dom, &x->state, &reason, 0) < 0 ||
        /* secure: a snapshot without disks keeps the console passwords */
        !(x->inactive_xml = virDomainGetXMLDesc(x->dom, VIR_DOMAIN_XML_INACTIVE |
                                                            VIR_DOMAIN_XML_SECURE)) ||
        !(x->live_xml = virDomainGetXMLDesc(x->dom, 0))) {
        int r = lv_errno("read the definition of", x->vm);
        return lv_report(x->rep, r, "cannot read the VM's definition from libvirt");
    }
    x->running = x->state == VIR_DOMAIN_RUNNING || x->state == VIR_DOMAIN_PAUSED ||
                 x->state == VIR_DOMAIN_BLOCKED || x->state == VIR_DOMAIN_PMSUSPENDED ||
                 x->state == VIR_DOMAIN_SHUTDOWN;
    x->agent = x->running && lv_xml_agent_connected(x->live_xml) > 0;
    if (lv_xml_disks(x->inactive_xml, &x->pers, &x->n_pers) < 0 ||
        lv_xml_disks(x->live_xml, &x->live, &x->n_live) < 0)
        return lv_report(x->rep, -EIO, "cannot parse the VM's definition");
    return 0;
}

/* Which disks take an overlay (one entry per disk of the live definition)
 * and which are excluded, those of the saved definition the running VM
 * does not have included. */
static int
create_plan(struct create *x)
{
    x->d = calloc(x->n_live ? x->n_live : 1, sizeof *x->d);
    x->meta.excluded = calloc(x->n_live + x->n_pers + 1, sizeof *x->meta.excluded);
    if (!x->d || !x->meta.excluded)
        return -ENOMEM;
    for (size_t i = 0; i < x->n_live; i++) {
        const struct volume *p = by_name(x->pers, x->n_pers, x->live[i].name);
        x->d[i].name = x->live[i].name;
        x->d[i].source = x->live[i].source;
        x->d[i].format = x->live[i].format;
        if (p && snapshottable(p, &x->live[i])) {
            x->d[i].overlay = lv_overlay_name(x->live[i].source, x->vm, x->live[i].name,
                                              x->snap);
            x->n_incl++;
        } else {
            x->meta.excluded[x->n_excl++] = x->live[i].name;
        }
    }
    for (size_t i = 0; i < x->n_pers; i++)
        if (!by_name(x->live, x->n_live, x->pers[i].name) && !(x->pers[i].flags & VOLUME_CDROM))
            x->meta.excluded[x->n_excl++] = x->pers[i].name;
    return 0;
}

/* What keeps a snapshot from being taken now. */
static int
create_check(struct create *x)
{
    const char *job_disk;

    if (!x->running)
        return 0;
    if (other_job(x->dom))
        return lv_report(x->rep, -EBUSY, "another job runs on the VM (a migration, a "
                                         "backup, ...)");
    if ((job_disk = lv_block_job_any(x->dom, x->live, x->n_live)))
        return lv_report(x->rep, -EBUSY, "a block job runs on disk %s (a merge or a copy)",
                         job_disk);
    if (!x->agent && x->o->consistency == CONSISTENCY_REQUIRED)
        return lv_report(x->rep, -EAGAIN, "no guest agent connected and consistency=required: "
                                          "no consistent snapshot is possible now");
    return 0;
}

/* The overlays are made here, before any freeze, exclusively and private
 * (libvirt then reuses them): never a file or link someone planted; a name
 * taken already gets another. Each is recorded before it is made. */
static int
create_overlays(struct create *x)
{
    int r = 0;

    for (size_t i = 0; r == 0 && i < x->n_live; i++) {
        const struct volume *v = &x->live[i];
        for (int tries = 0; r == 0 && x->d[i].overlay; tries++) {
            r = record_add(&x->rec, x->dom, x->snap, x->d[i].overlay);
            if (r < 0) {
                lv_report(x->rep, -EIO, "cannot record the snapshot in the state directory");
                break;
            }
            r = lv_make_overlay(x->d[i].overlay, v->source,
                                v->format && v->format[0] ? v->format : "raw");
            if (r != -EEXIST || tries == 8)
                break;
            free(x->d[i].overlay);
            x->d[i].overlay = lv_overlay_name(v->source, x->vm, v->name, x->snap);
            r = x->d[i].overlay ? 0 : -ENOMEM;
        }
        if (r < 0) {
            if (!x->rep->text[0])
                lv_report(x->rep, r == -ENOMEM ? r : -EIO, "cannot make the overlay of disk "
                          "%s (see the log)", v->name);
        } else if (x->d[i].overlay) {
            x->n_made = i + 1;      /* (never a file this run did not make) */
        }
    }
    return r;
}

/* The indications, and the freeze where an agent answers. */
static int
create_freeze(struct create *x)
{
    if (!x->running)
        return 0;
    x->meta.indications |= 1u << INDICATION_ONLINE;
    if (x->state != VIR_DOMAIN_RUNNING) {
        /* paused (or suspended): no agent answers; crash-consistent */
        x->meta.indications |= 1u << INDICATION_PAUSED;
        if (x->o->consistency == CONSISTENCY_REQUIRED)
            return lv_report(x->rep, -EAGAIN, "the VM is paused and consistency=required");
        return 0;
    }
    if (!x->agent) {
        x->meta.indications |= 1u << INDICATION_NO_GUEST_AGENT;
        return 0;
    }
    if (x->n_incl == 0)
        return 0;
    x->meta.indications |= 1u << INDICATION_GUEST_AGENT;
    switch (freeze_begin(x->lv, x->dom, x->deadline, &x->fz)) {
    case FREEZE_FROZEN:
        break;
    case FREEZE_FAILED:
        x->meta.indications |= 1u << INDICATION_QUIESCE_FAILED;
        if (x->o->consistency == CONSISTENCY_REQUIRED)
            return lv_report(x->rep, -EAGAIN, "the guest agent could not freeze the "
                                              "filesystems and consistency=required");
        break;
    case FREEZE_TIMEOUT:
        return lv_report(x->rep, -ETIMEDOUT, "the freeze did not answer within the failure "
                                             "deadline; the guest is thawed once it does");
    }
    return 0;
}

/* The point in time: the snapshot in libvirt's metadata, on the overlays
 * (or, without disks, the definition alone). */
static int
create_snapshot(struct create *x)
{
    _cleanup_free_ char *desc = snapshot_meta_encode(&x->meta);
    _cleanup_free_ char *xml = desc ? snapshot_xml(x->snap, desc, x->d, x->n_live,
                                                   x->n_incl ? NULL : x->inactive_xml)
                                    : NULL;
    unsigned flags = x->n_incl ? VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY |
                                     VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC |
                                     VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
                               : VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE;

    if (!xml)
        return -ENOMEM;
    x->made = virDomainSnapshotCreateXML(x->dom, xml, flags);
    if (x->made && fault_active("snapshot-answer-lost")) {
        /* as if libvirtd restarted before its answer came: made, unknown */
        virDomainSnapshotFree(x->made);
        x->made = NULL;
        x->lost = true;
        return lv_report(x->rep, -EIO, "lost libvirt while it took the snapshot (a test's "
                         "fault): vmsnapfs keeps it if libvirt made it, else removes what it "
                         "made, once libvirt answers");
    }
    if (!x->made) {
        /* the answer was lost with the connection (libvirtd restarted):
         * the snapshot may exist and the VM write to its overlays. They
         * stay, with their record: the recovery pass keeps what libvirt
         * uses and removes the rest once it answers */
        if (lv_last_is(VIR_ERR_SYSTEM_ERROR) || lv_last_is(VIR_ERR_RPC) ||
            lv_last_is(VIR_ERR_NO_CONNECT) ||
            virConnectIsAlive(virDomainGetConnect(x->dom)) != 1) {
            x->lost = true;
            return lv_report(x->rep, -EIO, "lost libvirt while it took the snapshot (%s): "
                             "vmsnapfs keeps it if libvirt made it, else removes what it "
                             "made, once libvirt answers", lv_last_message("no answer"));
        }
        /* ATOMIC: libvirt removed what it had made. EBUSY where a job of
         * another tool is in the way (lv_errno's mapping) */
        return lv_report(x->rep, lv_error(), "libvirt: %s", lv_last_message("snapshot failed"));
    }
    return 0;
}

/* Thaws as soon as the point in time is taken, whatever happened; a
 * freeze still pending keeps the VM busy until its late thaw (then true:
 * the operation ends with it). */
static bool
create_thaw(struct create *x, int r)
{
    struct op_end_ctx *late = NULL;

    if (x->fz && r == -ETIMEDOUT && (late = malloc(sizeof *late + strlen(x->vm) + 1))) {
        vm_op_forget_snapshot(x->lv->vmops, x->vm);  /* busy, but no InProgress dir */
        late->lv = x->lv;
        strcpy(late->vm, x->vm);
        x->frozen_ms = freeze_thaw_then(x->fz, op_end_later, late);
    } else {
        x->frozen_ms = freeze_thaw(x->fz);
    }
    x->fz = NULL;
    return late != NULL;
}

/* The freeze window in the snapshot's description; undone if the deadline
 * passed meanwhile; what happened, in rep. */
static int
create_finish(struct create *x)
{
    char ind[128] = "";

    if (x->meta.indications & (1u << INDICATION_GUEST_AGENT)) {
        x->meta.freeze_ms = x->frozen_ms;
        x->meta.have_freeze = true;
        _cleanup_free_ char *desc = snapshot_meta_encode(&x->meta);
        if (desc)
            (void) set_description(x->dom, x->made, desc);
    }
    if (deadline_passed(x->deadline)) {
        /* too late: undo all of it */
        struct op_report undo = { .text = "" };
        virDomainSnapshotFree(x->made);
        x->made = NULL;
        if (delete_locked(x->lv, x->dom, x->snap, &undo) < 0)
            return lv_report(x->rep, -ETIMEDOUT, "the failure deadline passed, and undoing "
                                                 "the snapshot failed: %s", undo.text);
        return lv_report(x->rep, -ETIMEDOUT, "the failure deadline passed; the snapshot "
                                             "was undone");
    }
    for (int i = 0; i < _INDICATION_MAX; i++)
        if (x->meta.indications & (1u << i))
            snprintf(ind + strlen(ind), sizeof ind - strlen(ind), "%s%s", ind[0] ? "," : "",
                     indication_to_string(i));
    return lv_report(x->rep, 0, "%zu disk(s), %zu excluded; indications %s; freeze window "
                                "%llu ms; took %llu ms", x->n_incl, x->n_excl,
                     ind[0] ? ind : "none", (unsigned long long) x->frozen_ms,
                     (unsigned long long) ((now_monotonic_ns() - x->start) / 1000000));
}

/* Called with the VM's operation held. *ret_handed_over: a freeze that
 * has not answered yet ends the operation once it does (late thaw). */
static int
create_locked(struct lv *lv, virDomainPtr dom, const char *snap,
              const struct vmsnapfs_opts *o, struct op_report *rep,
              bool *ret_handed_over)
{
    _cleanup_(create_clear) struct create x = {
        .lv = lv, .dom = dom, .vm = virDomainGetName(dom), .snap = snap, .o = o,
        .rep = rep, .start = now_monotonic_ns(), .deadline = deadline_begin(o),
    };
    int r = create_read(&x);

    if (r == 0)
        r = create_plan(&x);
    if (r == 0)
        r = create_check(&x);
    if (r == 0)
        r = create_overlays(&x);
    if (r == 0)
        r = create_freeze(&x);
    if (r == 0)
        r = create_snapshot(&x);
    *ret_handed_over = create_thaw(&x, r);
    if (x.lost) {
        lv_recovery_kick(lv);           /* the record stays for it */
        return r;
    }
    if (!x.made) {
        for (size_t i = 0; i < x.n_made; i++) {
            char *one[] = { x.d[i].overlay, NULL };
            lv_drop_overlays(one);      /* no snapshot uses them */
        }
    } else {
        r = create_finish(&x);
    }
    restore_plan_remove(&x.rec);    /* made, or undone: nothing to recover */
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
                  vm, snap, lv_last_message("redefine failed"));
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
    _cleanup_(lv_vm_close) struct lv_vm v = { 0 };
    int r = lv_vm_open(h, ref->name, &v, rep->text, sizeof rep->text);

    if (r >= 0)
        r = lv_vm_op(&v, NULL, VM_OP_DISKS, rep->text, sizeof rep->text);
    return r < 0 ? r : delete_locked(h, v.dom, snap, rep);
}
