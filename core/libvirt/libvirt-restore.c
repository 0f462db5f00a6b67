/* core/libvirt/libvirt-restore.c: restoring a VM to a snapshot on libvirt (SPEC "Restore"). libvirt 9 cannot revert
 * external snapshots, so vmsnapfs does it itself:
 *
 *  - every disk the snapshot covers gets a fresh qcow2 overlay on the
 *    snapshot's layer (the image the snapshot's overlay builds on), so a
 *    restore costs the same for any disk size and the snapshot stays as
 *    it was;
 *  - the definition captured with the snapshot is defined again, its
 *    disks pointing at the new overlays (one virDomainDefineXML: libvirt
 *    replaces the saved definition atomically).
 *
 * Crash safety: a plan is written (fsync, rename) before the VM is
 * stopped or anything is made, and its phase is moved on as steps finish.
 * A daemon that starts and finds a plan finishes it when the definition
 * already names the new overlays, otherwise drops those overlays: the VM
 * is either as it was or fully restored, and started again if the restore
 * had stopped it.
 *
 * Before changing anything, the VM's current state is kept as the snapshot
 * pre-restore-SNAP-STAMP (an ordinary snapshot), so a restore can itself be
 * restored away. (A clone takes the same from a snapshot: libvirt-clone.c.)
 *
 * Layers that a restored VM or a clone builds on are shared with the
 * snapshot: rmdir of the snapshot keeps them (libvirt-snapshot.c,
 * mergeable()) until nothing uses them.
 */
#define LOG_MODULE "restore"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "deadline.h"
#include "fault.h"
#include "layers.h"
#include "libvirt-from-snapshot.h"
#include "libvirt-xml.h"
#include "libvirt-private.h"
#include "log.h"
#include "restore-plan.h"
#include "restore-policy.h"

#define POLL_NS (UINT64_C(100) * 1000000)
#define STOP_GRACE_NS (UINT64_C(60) * 1000000000)

#define fail(st, r, ...) lv_say((st)->error, sizeof (st)->error, (r), __VA_ARGS__)

static void
stamp(char buf[32])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 32, "%Y%m%dT%H%M%SZ", &tm);
}

/* ---- stopping and starting --------------------------------------------- */

/* 1 if dom runs (or is paused, ...), 0 if it is shut off, -EIO if libvirt
 * cannot tell now (it restarts): never taken for "stopped". */
static int
vm_active(virDomainPtr dom)
{
    int a = virDomainIsActive(dom);
    virResetLastError();
    return a < 0 ? -EIO : a;
}

/* Waits until dom is shut off, until the deadline (if any). A state that
 * cannot be told is asked again, for UNKNOWN_MAX_NS, then -EIO. */
#define UNKNOWN_MAX_NS (UINT64_C(10) * 1000000000)

static int
wait_shutoff(virDomainPtr dom, struct deadline deadline)
{
    uint64_t unknown_since = 0;
    int a;

    while ((a = vm_active(dom)) != 0) {
        uint64_t now = now_monotonic_ns();
        if (a < 0 && !unknown_since)
            unknown_since = now;
        else if (a > 0)
            unknown_since = 0;
        if (unknown_since && now - unknown_since > UNKNOWN_MAX_NS)
            return log_error_errno(-EIO, "'%s': libvirt cannot tell whether the VM "
                                   "has stopped", virDomainGetName(dom));
        if (deadline_passed(deadline))
            return -ETIMEDOUT;
        sleep_ns(POLL_NS);
    }
    return 0;
}

/* Stops dom the way KubeVirt's StopTarget does: a clean shutdown (through
 * the agent where one answers, else ACPI), then a hard stop past the grace
 * period. */
static int
stop_vm(virDomainPtr dom, bool agent, struct deadline deadline)
{
    struct deadline grace = deadline_within(deadline, STOP_GRACE_NS);
    if (virDomainShutdownFlags(dom, agent ? VIR_DOMAIN_SHUTDOWN_GUEST_AGENT : 0) < 0 &&
        (!agent || virDomainShutdownFlags(dom, VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) < 0))
        log_warning("'%s': a clean shutdown was refused; stopping it hard",
                    virDomainGetName(dom));
    virResetLastError();
    int r = wait_shutoff(dom, grace);
    if (r != -ETIMEDOUT)
        return r;       /* stopped, or libvirt cannot tell (it went away) */
    log_warning("'%s' did not shut down within its grace period: stopping it hard",
                virDomainGetName(dom));
    if (virDomainDestroy(dom) < 0 && vm_active(dom) != 0)
        return lv_errno("stop", virDomainGetName(dom));
    return wait_shutoff(dom, deadline_after(STOP_GRACE_NS));
}

static int
start_vm(virDomainPtr dom)
{
    int a = vm_active(dom);
    if (a < 0)
        return log_error_errno(a, "'%s': libvirt cannot tell whether the VM runs",
                               virDomainGetName(dom));
    if (a > 0)
        return 0;
    if (virDomainCreate(dom) < 0)
        return lv_errno("start", virDomainGetName(dom));
    return 0;
}

/* ---- conflicts ------------------------------------------------------------- */

/* What other domains use: disk files (canonical) and MAC addresses. */
struct others {
    char **disks, **disk_vm;
    size_t n_disks, n_disk_vm;
    char **macs, **mac_vm;
    size_t n_macs, n_mac_vm;
};

static void
others_clear(struct others *o)
{
    strv_free(o->disks);
    strv_free(o->disk_vm);
    strv_free(o->macs);
    strv_free(o->mac_vm);
}

static int
others_add_xml(struct others *o, const char *xml, const char *vm)
{
    struct volume *v = NULL;
    size_t n = 0;
    _cleanup_strv_ char **macs = NULL;
    int r = 0;

    if (xml && lv_xml_disks(xml, &v, &n) >= 0) {
        for (size_t i = 0; i < n; i++) {
            if (r >= 0 && v[i].source && v[i].source[0] == '/' &&
                !(v[i].flags & (VOLUME_READONLY | VOLUME_SHAREABLE | VOLUME_CDROM))) {
                _cleanup_free_ char *c = layer_canonical(v[i].source);
                r = c ? strv_push(&o->disks, &o->n_disks, c) : -ENOMEM;
                if (r >= 0)
                    r = strv_push(&o->disk_vm, &o->n_disk_vm, vm);
            }
            volume_clear(&v[i]);
        }
        free(v);
    }
    if (r >= 0 && xml && lv_xml_macs(xml, &macs) >= 0)
        for (size_t i = 0; r >= 0 && macs[i]; i++) {
            r = strv_push(&o->macs, &o->n_macs, macs[i]);
            if (r >= 0)
                r = strv_push(&o->mac_vm, &o->n_mac_vm, vm);
        }
    return r;
}

struct host_view {
    struct others o;            /* every domain but self */
    struct layer_refs *g;       /* every chain */
    const char *self;
};

static int
view_domain(void *opaque, virDomainPtr d, const char *inactive, const char *live)
{
    struct host_view *h = opaque;
    char uuid[VIR_UUID_STRING_BUFLEN];
    int r = lv_refs_add_domain(h->g, d, inactive, live);

    if (r < 0 || virDomainGetUUIDString(d, uuid) < 0 || strcmp(uuid, h->self) == 0)
        return r;
    r = others_add_xml(&h->o, inactive, virDomainGetName(d));
    if (r >= 0 && live)
        r = others_add_xml(&h->o, live, virDomainGetName(d));
    return r;
}

static int
view_snapshot(void *opaque, virDomainPtr d, const char *xml)
{
    struct host_view *h = opaque;
    return lv_refs_add_snapshot(h->g, d, xml);
}

/* What the other domains use, and every chain: one pass over the host. */
static int
others_read(virConnectPtr c, const char *self, struct others *o, struct layer_refs **ret_g)
{
    struct host_view h = { .g = layer_refs_new(), .self = self };
    struct lv_scan scan = { .domain = view_domain, .snapshot = view_snapshot, .opaque = &h };
    int r = h.g ? lv_scan_host(c, &scan) : -ENOMEM;

    if (r < 0) {
        others_clear(&h.o);
        layer_refs_free(h.g);
        return r;
    }
    *o = h.o;
    *ret_g = h.g;
    return 0;
}

static const char *
used_by(char *const *v, char *const *vm, const char *s, bool nocase)
{
    for (size_t i = 0; v && v[i]; i++)
        if (nocase ? strcasecmp(v[i], s) == 0 : strcmp(v[i], s) == 0)
            return vm[i];
    return NULL;
}

/* Lists the conflicts of putting sp's definition back (conflict lines in
 * st); *ret_drop_* what BestEffort leaves out. Returns how many of them
 * are "in use by another VM" (EBUSY in Strict mode). */
static int
find_conflicts(virConnectPtr c, const char *self, const struct lv_source *sp,
               struct restore_status *st, char ***ret_drop_disks, size_t *n_drop_disks,
               char ***ret_drop_macs, size_t *n_drop_macs)
{
    struct others o;
    struct volume *v = NULL;
    size_t n = 0;
    _cleanup_strv_ char **macs = NULL;
    struct layer_refs *g = NULL;
    bool oom = false;
    int in_use = 0, r = others_read(c, self, &o, &g);

    if (r < 0)
        return r;
    for (size_t i = 0; sp->missing && sp->missing[i]; i++) {
        restore_status_conflict(st, "disk %s: the snapshot's data is missing",
                                sp->missing[i]);
        if (strv_push(ret_drop_disks, n_drop_disks, sp->missing[i]) < 0)
            oom = true;
    }
    for (size_t i = 0; i < sp->n; i++) {
        _cleanup_free_ char *layer = layer_canonical(sp->disks[i].layer);
        const char *vm = layer ? used_by(o.disks, o.disk_vm, layer, false) : NULL;
        if (vm) {
            restore_status_conflict(st, "disk %s: the snapshot's layer '%s' is a disk of "
                                        "VM '%s'", sp->disks[i].name, layer, vm);
            if (strv_push(ret_drop_disks, n_drop_disks, sp->disks[i].name) < 0)
                oom = true;
            in_use++;
        }
    }
    if (lv_xml_disks(sp->def, &v, &n) >= 0) {
        for (size_t i = 0; i < n; i++) {
            const struct volume *d = &v[i];
            bool missing_data = false;
            for (size_t j = 0; sp->missing && sp->missing[j]; j++)
                missing_data |= strcmp(sp->missing[j], d->name) == 0;
            if (lv_source_has(sp, d->name) || missing_data || !d->source || d->source[0] != '/')
                continue;
            struct stat sb;
            _cleanup_free_ char *canon = layer_canonical(d->source);
            const char *vm = canon ? used_by(o.disks, o.disk_vm, canon, false) : NULL;
            if (stat(d->source, &sb) < 0) {
                restore_status_conflict(st, "disk %s: '%s' is missing", d->name, d->source);
                if (strv_push(ret_drop_disks, n_drop_disks, d->name) < 0)
                    oom = true;
            } else if (vm && !(d->flags & (VOLUME_READONLY | VOLUME_SHAREABLE | VOLUME_CDROM))) {
                restore_status_conflict(st, "disk %s: '%s' is used by VM '%s'", d->name,
                                        d->source, vm);
                if (strv_push(ret_drop_disks, n_drop_disks, d->name) < 0)
                    oom = true;
                in_use++;
            } else if (canon && layer_refs_children(g, canon, NULL) > 0 &&
                       !(d->flags & (VOLUME_READONLY | VOLUME_CDROM))) {
                /* written to, it would change what a snapshot or a clone
                 * built on it reads */
                restore_status_conflict(st, "disk %s: '%s' is a layer other images build on",
                                        d->name, d->source);
                if (strv_push(ret_drop_disks, n_drop_disks, d->name) < 0)
                    oom = true;
                in_use++;
            }
        }
        for (size_t i = 0; i < n; i++)
            volume_clear(&v[i]);
        free(v);
    }
    if (lv_xml_macs(sp->def, &macs) >= 0)
        for (size_t i = 0; macs[i]; i++) {
            const char *vm = used_by(o.macs, o.mac_vm, macs[i], true);
            if (vm) {
                restore_status_conflict(st, "interface %s: the MAC address is used by VM '%s'",
                                        macs[i], vm);
                if (strv_push(ret_drop_macs, n_drop_macs, macs[i]) < 0)
                    oom = true;
                in_use++;
            }
        }
    others_clear(&o);
    layer_refs_free(g);
    return oom ? -ENOMEM : in_use;
}

/* ---- restore, step by step -------------------------------------------------- */

struct restore_ctx {
    struct lv *lv;
    virConnectPtr c;
    virDomainPtr dom;
    const struct restore_request *rq;
    const struct vmsnapfs_opts *o;
    struct restore_status *st;
    struct deadline deadline;
    struct restore_plan plan;
    bool stopped;               /* we stopped the VM: start it again */
    /* the steps' state (restore_ctx_clear) */
    const char *vm;
    char uuid[VIR_UUID_STRING_BUFLEN];
    char when[32];              /* names this restore's overlays */
    struct lv_source sp;
    char **drop_disks, **drop_macs;     /* what BestEffort leaves out */
    size_t n_drop_disks, n_drop_macs;
    char safety[NAME_MAX_LEN + 1];
    char **targets;             /* disks that get a new overlay (plan.overlays) */
    size_t n_targets;
    char *new_xml;
    char **made;                /* overlays this restore made */
    size_t n_made;
};

static void
restore_ctx_clear(struct restore_ctx *x)
{
    lv_source_clear(&x->sp);
    strv_free(x->drop_disks);
    strv_free(x->drop_macs);
    strv_free(x->targets);
    strv_free(x->made);
    free(x->new_xml);
    x->drop_disks = x->drop_macs = x->targets = x->made = NULL;
    x->new_xml = NULL;
}

/* Gives the VM back as it was: running again if we stopped it. Until it
 * is, the plan stays: the daemon's recovery starts it once libvirt
 * answers (lv_recovery_kick), or the next start of vmsnapfs does. */
static int
undo(struct restore_ctx *x, int r)
{
    if (x->stopped && start_vm(x->dom) < 0) {
        snprintf(x->st->error + strlen(x->st->error),
                 sizeof x->st->error - strlen(x->st->error),
                 "; the VM is not running again yet: vmsnapfs starts it as soon as "
                 "libvirt answers");
        lv_recovery_kick(x->lv);
        return r;
    }
    restore_plan_remove(&x->plan);
    return r;
}

/* The snapshot, its conflicts, and what the mode does with them: 1 for a
 * dry run (done, nothing changed). */
static int
restore_read(struct restore_ctx *x)
{
    char why[256] = "";
    int r;

    x->drop_disks = calloc(1, sizeof(char *));
    x->drop_macs = calloc(1, sizeof(char *));
    if (!x->drop_disks || !x->drop_macs || virDomainGetUUIDString(x->dom, x->uuid) < 0)
        return fail(x->st, -EIO, "cannot read the VM from libvirt");
    stamp(x->when);
    r = lv_source_read(x->dom, x->rq->snap, &x->sp, why, sizeof why);
    if (r < 0)
        return fail(x->st, r, "%s", why[0] ? why : "cannot read the snapshot");

    /* conflicts: listed in every mode */
    int in_use = find_conflicts(x->c, x->uuid, &x->sp, x->st, &x->drop_disks,
                                &x->n_drop_disks, &x->drop_macs, &x->n_drop_macs);
    if (in_use < 0)
        return fail(x->st, in_use, "cannot compare the snapshot with the other VMs");
    r = restore_mode_decide(x->rq->mode, x->st->n_conflicts, in_use > 0, why, sizeof why);
    if (r > 0) {
        x->st->error[0] = '\0';
        return 1;
    }
    if (r < 0)
        return fail(x->st, r, "%s", why);
    if (x->sp.n == 0 && x->sp.x.n_disks > 0 && x->n_drop_disks == x->sp.x.n_disks)
        return fail(x->st, -EIO, "nothing of the snapshot's disks is left to restore");
    x->plan.vm = strdup(x->vm);
    x->plan.uuid = strdup(x->uuid);
    x->plan.snap = strdup(x->rq->snap);
    x->plan.overlays = calloc(1, sizeof(char *));
    x->plan.old = calloc(1, sizeof(char *));
    if (!x->plan.vm || !x->plan.uuid || !x->plan.snap || !x->plan.overlays || !x->plan.old)
        return -ENOMEM;
    return 0;
}

/* The VM stopped, as the policy says (a stop is in the plan first). */
static int
restore_stop(struct restore_ctx *x)
{
    char why[256] = "";
    struct deadline until = x->deadline;
    int r, a = vm_active(x->dom);

    if (a < 0)
        return fail(x->st, -EIO, "libvirt cannot tell whether the VM runs");
    if (a > 0) {
        switch (restore_policy_decide(x->rq, x->deadline, &until, why, sizeof why)) {
        case RESTORE_ACT_REFUSE:
            return fail(x->st, -EBUSY, "%s", why);
        case RESTORE_ACT_STOP: {
            _cleanup_free_ char *live = virDomainGetXMLDesc(x->dom, 0);
            bool agent = live && lv_xml_agent_connected(live) > 0;
            x->plan.phase = "stopping";
            x->plan.start_after = true;
            r = restore_plan_write(&x->plan);
            if (r >= 0) {
                log_info("'%s': stopping the VM to restore '%s'", x->vm, x->rq->snap);
                r = stop_vm(x->dom, agent, x->deadline);
            }
            x->stopped = true;
            if (r < 0) {
                /* half-stopped, or libvirt went away: running again, as
                 * the policy promises, before the plan goes */
                r = r == -ETIMEDOUT ? -ETIMEDOUT : -EIO;
                fail(x->st, r, "the VM could not be stopped");
                return undo(x, r);
            }
            break;
        }
        case RESTORE_ACT_WAIT:
            log_info("'%s': waiting for the VM to stop to restore '%s'", x->vm, x->rq->snap);
            if ((r = wait_shutoff(x->dom, until)) < 0) {
                if (r != -ETIMEDOUT)
                    return fail(x->st, r, "libvirt cannot tell whether the VM has stopped");
                return fail(x->st, -ETIMEDOUT, "%s", restore_wait_timeout_reason(x->rq));
            }
            break;
        }
    }
    fault_point("restore-stopped");
    if ((a = vm_active(x->dom)) != 0) {
        fail(x->st, a < 0 ? -EIO : -EBUSY, a < 0 ? "libvirt cannot tell whether the VM runs"
                                                 : "the VM was started again while the "
                                                   "restore waited for it");
        return undo(x, a < 0 ? -EIO : -EBUSY);
    }
    return 0;
}

/* The state now, kept as a snapshot: a restore can be undone. */
static int
restore_safety(struct restore_ctx *x)
{
    struct op_report rep = { .text = "" };
    int r;

    if (x->o->no_safety_snapshot) {
        fault_point("restore-safety");
        return 0;
    }
    /* the name has a one-second stamp: a restore in the same second as the
     * last one waits for the next second */
    for (int tries = 0; tries < 3; tries++) {
        name_safety_snapshot(x->rq->snap, time(NULL), x->safety);
        virDomainSnapshotPtr e = virDomainSnapshotLookupByName(x->dom, x->safety, 0);
        virResetLastError();
        if (!e)
            break;
        virDomainSnapshotFree(e);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sleep_ns(NSEC_PER_SEC - (uint64_t) ts.tv_nsec);
    }
    r = lv_snapshot_create_locked(x->lv, x->dom, x->safety, x->o, &rep);
    if (r < 0) {
        r = r == -EEXIST ? -EBUSY : r;
        fail(x->st, r, "the safety snapshot '%s' failed: %s", x->safety, rep.text);
        return undo(x, r);
    }
    log_info("'%s': the state before the restore is snapshot '%s'", x->vm, x->safety);
    fault_point("restore-safety");
    return 0;
}

/* What the restore makes, in the plan: the old chains (they go once it is
 * through, if nothing else needs them: the safety snapshot does), a new
 * overlay per disk the snapshot gives data to, the definition for them. */
static int
restore_prepare(struct restore_ctx *x)
{
    _cleanup_free_ char *cur = virDomainGetXMLDesc(x->dom, VIR_DOMAIN_XML_INACTIVE);
    struct volume *cv = NULL;
    size_t ncv = 0;

    if (!cur || lv_xml_disks(cur, &cv, &ncv) < 0) {
        fail(x->st, -EIO, "cannot read the VM's definition");
        return undo(x, -EIO);
    }
    for (size_t i = 0; i < ncv; i++) {
        if (cv[i].source && cv[i].source[0] == '/')
            (void) strv_push_chain(&x->plan.old, &x->plan.n_old, cv[i].source);
        volume_clear(&cv[i]);
    }
    free(cv);

    x->targets = calloc(x->sp.n + 1, sizeof(char *));
    for (size_t i = 0; x->targets && i < x->sp.n; i++) {
        const struct lv_source_disk *sd = &x->sp.disks[i];
        bool dropped = false;
        for (size_t j = 0; j < x->n_drop_disks; j++)
            dropped |= strcmp(x->drop_disks[j], sd->name) == 0;
        if (dropped)
            continue;
        char what[340];
        snprintf(what, sizeof what, "restore-%s-%s", x->rq->snap, x->when);
        _cleanup_free_ char *ov = lv_overlay_name(sd->layer, x->vm, sd->name, what);
        if (!ov || strv_push(&x->plan.overlays, &x->plan.n_overlays, ov) < 0 ||
            !(x->targets[x->n_targets++] = strdup(sd->name)))
            return undo(x, -ENOMEM);
    }
    lv_random_hex(x->plan.id);
    struct lv_xml_edit e = {
        .disk_targets = x->targets,
        .disk_sources = x->plan.overlays,
        .drop_disks = x->drop_disks,
        .drop_macs = x->drop_macs,
        .restore_id = x->plan.id,
        .restore_snap = x->rq->snap,
    };
    if (!x->targets || lv_xml_edit(x->sp.def, &e, &x->new_xml) < 0) {
        fail(x->st, -EIO, "cannot rewrite the snapshot's definition for the new disks");
        return undo(x, -EIO);
    }
    return 0;
}

/* The plan, then the new overlays (exclusively: never a planted file). */
static int
restore_overlays(struct restore_ctx *x)
{
    x->plan.phase = "prepared";
    int r = restore_plan_write(&x->plan);

    x->made = calloc(x->n_targets + 1, sizeof(char *));
    if (!x->made)
        r = -ENOMEM;
    /* progress: the disks' sizes, each done once its overlay is there */
    uint64_t *sizes = calloc(x->n_targets + 1, sizeof *sizes), total = 0, done = 0;
    for (size_t i = 0, k = 0; sizes && i < x->sp.n && k < x->n_targets; i++) {
        const struct lv_source_disk *sd = &x->sp.disks[i];
        uint64_t allocated;
        if (strcmp(sd->name, x->targets[k]) != 0)
            continue;
        if (layer_chain_usage(sd->layer, sd->format, &sizes[k], &allocated) < 0)
            sizes[k] = 0;
        total += sizes[k++];
    }
    if (total)
        restore_status_progress(x->st, 0, total);
    for (size_t i = 0, k = 0; r >= 0 && i < x->sp.n && k < x->n_targets; i++) {
        const struct lv_source_disk *sd = &x->sp.disks[i];
        if (strcmp(sd->name, x->targets[k]) != 0)
            continue;
        r = lv_make_overlay(x->plan.overlays[k], sd->layer, sd->format);
        if (r >= 0)
            r = strv_push(&x->made, &x->n_made, x->plan.overlays[k]);
        if (r >= 0 && sizes && total)
            restore_status_progress(x->st, done += sizes[k], total);
        k++;
    }
    free(sizes);
    if (r < 0) {
        lv_drop_overlays(x->made);      /* only what this restore made */
        r = r == -EEXIST ? -EEXIST : -EIO;
        fail(x->st, r, "cannot make the new disk overlays");
        return undo(x, r);
    }
    fault_point("restore-overlays");
    return 0;
}

/* The snapshot's definition on the new overlays, defined: the step that
 * makes the restore happen. */
static int
restore_define(struct restore_ctx *x)
{
    int r, a = vm_active(x->dom);

    if (a != 0) {
        /* a running VM would go on with its old disks and boot the new
         * ones next time: no mix; it stays as it was */
        lv_drop_overlays(x->made);
        fail(x->st, a < 0 ? -EIO : -EBUSY, a < 0 ? "libvirt cannot tell whether the VM runs; "
                                                   "nothing changed"
                                                 : "the VM was started again during the "
                                                   "restore; nothing changed");
        return undo(x, a < 0 ? -EIO : -EBUSY);
    }
    virDomainPtr d = virDomainDefineXML(x->c, x->new_xml);
    if (d) {
        virDomainFree(d);
    } else {
        r = lv_error() == -EBUSY ? -EBUSY : -EIO;
        fail(x->st, r, "libvirt refused the snapshot's definition: %s",
             lv_last_message("define failed"));
        /* refused, or applied and the answer lost? */
        int k = lv_defines_overlays(x->dom, x->plan.id, x->made);
        if (k < 0) {
            /* cannot tell now: the plan stays for the next start, which
             * finishes or rolls back */
            snprintf(x->st->error, sizeof x->st->error, "lost libvirt in the middle of the "
                     "restore; the next start of vmsnapfs finishes or rolls it back");
            return -EIO;
        }
        if (k == 0) {
            lv_drop_overlays(x->made);
            return undo(x, r);
        }
        x->st->error[0] = '\0';
    }
    fault_point("restore-defined");
    x->plan.phase = "defined";
    (void) restore_plan_write(&x->plan);
    fault_point("restore-define-written");
    return 0;
}

/* Running again if the restore stopped it; then the plan and the old
 * chains nothing needs go. */
static int
restore_finish(struct restore_ctx *x)
{
    if (x->stopped && start_vm(x->dom) < 0) {
        /* the plan stays until the VM runs again, as the policy promises */
        lv_recovery_kick(x->lv);
        return fail(x->st, -EIO, "restored, but the VM did not start again yet: vmsnapfs "
                                 "starts it as soon as libvirt answers (see the log)");
    }
    fault_point("restore-started");
    restore_plan_remove(&x->plan);
    lv_reclaim(x->c, x->plan.old);
    x->st->error[0] = '\0';
    log_info("'%s': restored to '%s'%s%s%s", x->vm, x->rq->snap,
             x->safety[0] ? "; the state before is snapshot '" : "", x->safety,
             x->safety[0] ? "'" : "");
    return 0;
}

static int
restore_locked(struct restore_ctx *x)
{
    int r;

    x->vm = virDomainGetName(x->dom);
    r = restore_read(x);
    if (r == 0)
        r = restore_stop(x);
    if (r == 0)
        r = restore_safety(x);
    if (r == 0)
        r = restore_prepare(x);
    if (r == 0)
        r = restore_overlays(x);
    if (r == 0)
        r = restore_define(x);
    if (r == 0)
        r = restore_finish(x);
    restore_ctx_clear(x);
    return r > 0 ? 0 : r;
}

static int recover_plan(virConnectPtr c, virDomainPtr dom, struct restore_plan *p);

int
lv_restore(void *h, const struct vm_ref *ref, const struct restore_request *rq,
           const struct vmsnapfs_opts *o, struct restore_status *st)
{
    struct lv *lv = h;
    _cleanup_(lv_vm_close) struct lv_vm v = { 0 };
    int r = lv_vm_open(lv, ref->name, &v, st->error, sizeof st->error);

    if (r < 0)
        return st->error[0] ? r : fail(st, r, "no such VM");
    r = lv_vm_op(&v, NULL, VM_OP_DISKS, st->error, sizeof st->error);
    if (r < 0)
        return r;
    st->began = true;
    virConnectPtr c = v.c;
    virDomainPtr dom = v.dom;
    struct restore_ctx x = {
        .lv = lv, .c = c, .dom = dom, .rq = rq, .o = o, .st = st,
        .deadline = deadline_begin(o),
    };
    /* another daemon of this host may restore the same VM */
    char uuid[VIR_UUID_STRING_BUFLEN];
    _cleanup_close_ int lock = virDomainGetUUIDString(dom, uuid) < 0 ? -EIO
                                                                     : restore_plan_lock(uuid, false);
    _cleanup_free_ char *dir = restore_plan_dir(), *old_path = NULL;
    struct restore_plan old = { 0 };
    if (lock < 0) {
        r = fail(st, lock == -EBUSY ? -EBUSY : -EIO, lock == -EBUSY ?
                 "another vmsnapfs restores this VM" : "cannot lock the restore plan");
    } else if (dir && asprintf(&old_path, "%s/%s.json", dir, uuid) >= 0 &&
               access(old_path, F_OK) == 0 &&
               (restore_plan_read(old_path, &old) < 0 || recover_plan(c, dom, &old) < 0)) {
        /* an earlier restore of this VM was left half-way (libvirt went
         * away): it is finished or rolled back before a new one */
        r = fail(st, -EIO, "an earlier restore of this VM is unfinished and cannot be "
                           "finished now (see the log)");
    } else {
        if (old_path && old.path)
            log_info("'%s': an earlier restore was dealt with first", ref->name);
        r = restore_locked(&x);
    }
    restore_plan_clear(&old);
    restore_plan_clear(&x.plan);
    return r;
}

/* ---- recovery -------------------------------------------------------------- */

/* Finishes or rolls back plan p of dom, with the plan's lock and the VM's
 * operation held. 0 once the plan is gone; -EIO if it stays (libvirt could
 * not tell; the next start looks again). */
static int
recover_plan(virConnectPtr c, virDomainPtr dom, struct restore_plan *p)
{
    if (strcmp(p->phase, "prepared") == 0) {
        int k = lv_defines_overlays(dom, p->id, p->overlays);
        if (k < 0) {
            log_warning("'%s': cannot read its definition: the restore plan stays", p->vm);
            return -EIO;
        }
        p->phase = k ? "defined" : "rolled back";
    }
    if (strcmp(p->phase, "defined") == 0) {
        log_warning("'%s': finished the restore to '%s' that a killed vmsnapfs left",
                    p->vm, p->snap);
    } else {
        /* the definition is the old one (libvirt replaces it atomically):
         * only the new overlays are to go */
        if (strcmp(p->phase, "rolled back") == 0)
            lv_reclaim(c, p->overlays);     /* ours and unused only */
        log_warning("'%s': rolled back the restore to '%s' that a killed vmsnapfs left; "
                    "the VM is as it was", p->vm, p->snap);
    }
    if (p->start_after) {
        /* it may still be shutting down (once defined, it was stopped:
         * if it runs now, it was started again already) */
        if (strcmp(p->phase, "defined") != 0 &&
            wait_shutoff(dom, deadline_after(STOP_GRACE_NS)) == -EIO)
            return -EIO;
        if (start_vm(dom) < 0) {
            log_warning("'%s': could not start the VM again after the restore; the "
                        "restore plan stays and vmsnapfs tries again", p->vm);
            return -EIO;
        }
        log_info("'%s': running again", p->vm);
    }
    restore_plan_remove(p);
    if (strcmp(p->phase, "defined") == 0)
        lv_reclaim(c, p->old);
    return 0;
}

/* 0 if the plan at path is dealt with (or not ours to deal with), 1 if it
 * stays to be looked at again. */
static int
recover_one(struct lv *lv, virConnectPtr c, const char *path)
{
    struct restore_plan p;
    _cleanup_free_ char *uuid = strdup(strrchr(path, '/') + 1);
    if (!uuid)
        return 1;
    uuid[strlen(uuid) - strlen(".json")] = '\0';
    _cleanup_close_ int lock = restore_plan_lock(uuid, false);
    if (lock < 0)
        return lock == -EBUSY;  /* a live restore (it may leave it to us), or no state dir */
    if (restore_plan_read(path, &p) < 0 || strcmp(p.phase, "cloning") == 0 ||
        strcmp(p.phase, "merging") == 0 || strcmp(p.phase, "snapshotting") == 0) {
        log_warning("'%s' is not a restore plan vmsnapfs can read: left alone", path);
        restore_plan_clear(&p);
        return 0;
    }
    _cleanup_(virDomainFreep) virDomainPtr dom = NULL;
    int found = lv_record_domain(c, p.uuid, &dom);
    if (found <= 0) {
        bool gone = found == 0;
        if (gone) {
            log_warning("restore plan of '%s': the VM is gone", p.vm);
            lv_reclaim(c, p.overlays);      /* ours and unused only */
            restore_plan_remove(&p);
        }
        restore_plan_clear(&p);     /* else: looked at again */
        return !gone;
    }
    /* another operation on the VM (of this or another daemon): later */
    int left = 1;
    if (vm_op_begin(lv->vmops, p.vm, NULL, 0) == 0) {
        left = recover_plan(c, dom, &p) < 0;
        vm_op_end(lv->vmops, p.vm);
    }
    restore_plan_clear(&p);
    return left;
}

int
lv_restore_recover_record(const char *path, void *opaque)
{
    struct lv_pass *pass = opaque;
    return recover_one(pass->lv, pass->c, path);
}
