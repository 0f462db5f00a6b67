/* core/libvirt/libvirt-merge.c: see libvirt-merge.h. */
#define LOG_MODULE "snapshot"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "fault.h"
#include "layers.h"
#include "libvirt-merge.h"
#include "libvirt-xml.h"
#include "libvirt-private.h"
#include "log.h"
#include "opts.h"
#include "qemu-img.h"
#include "restore-plan.h"
#include "subprocess.h"

#define BLOCK_JOB_POLL_NS (UINT64_C(20) * 1000000)

/* Waits for the block job on disk to be ready (ready = true) or gone. */
#define BLOCK_JOB_MAX_NS (UINT64_C(3600) * 1000000000)

static int
wait_block_job(virDomainPtr dom, const char *disk, bool ready)
{
    uint64_t give_up = now_monotonic_ns() + BLOCK_JOB_MAX_NS;

    for (;;) {
        if (now_monotonic_ns() > give_up)
            return log_error_errno(-ETIMEDOUT, "'%s': the block job on %s did not "
                                   "finish within an hour", virDomainGetName(dom), disk);
        virDomainBlockJobInfo info;
        int r = virDomainGetBlockJobInfo(dom, disk, &info, 0);
        if (r < 0)
            return lv_errno("follow the block job of", virDomainGetName(dom));
        if (r == 0)
            return ready ? log_error_errno(-EIO, "'%s': the block job on %s "
                                           "ended early", virDomainGetName(dom), disk)
                         : 0;
        if (ready && info.end > 0 && info.cur == info.end)
            return 0;
        sleep_ns(BLOCK_JOB_POLL_NS);
    }
}

/* Switches disk to the merged layer once the active commit is ready: the
 * job reports all data copied (cur == end) a little before libvirt has
 * seen QEMU's "ready" event, so a pivot refused as "not ready" is retried. */
static int
pivot(virDomainPtr dom, const char *disk)
{
    uint64_t give_up = now_monotonic_ns() + UINT64_C(60) * 1000000000;

    for (;;) {
        if (virDomainBlockJobAbort(dom, disk, VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT) == 0)
            return 0;
        bool not_ready = lv_last_is(VIR_ERR_BLOCK_COPY_ACTIVE);
        if (!not_ready || now_monotonic_ns() > give_up)
            return lv_errno("switch to the merged layer of", virDomainGetName(dom));
        virResetLastError();
        sleep_ns(BLOCK_JOB_POLL_NS);
    }
}

static int
run_qemu_img(char *const argv[])
{
    return spawn_capture("qemu-img", argv, 10 * 60 * 1000, 1 << 20, NULL);
}

/* Points the persistent definition's disk at a new source (stopped VM). */
static int
redefine_source(virConnectPtr c, virDomainPtr dom, const char *disk,
                const char *old_src, const char *new_src, const char *new_fmt)
{
    _cleanup_free_ char *xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE |
                                                            VIR_DOMAIN_XML_SECURE);
    _cleanup_free_ char *fixed = NULL;
    int r;

    if (!xml)
        return lv_errno("read the definition of", virDomainGetName(dom));
    r = lv_xml_set_disk_source(xml, disk, old_src, new_src, new_fmt, &fixed);
    if (r < 0)
        return log_error_errno(r, "'%s': cannot point disk %s at '%s'",
                               virDomainGetName(dom), disk, new_src);
    virDomainPtr d = virDomainDefineXML(c, fixed);
    if (!d)
        return lv_errno("redefine", virDomainGetName(dom));
    virDomainFree(d);
    return 0;
}

/* Merges the layer above snapshot S's layer (S's overlay) into S's layer,
 * on one disk. */
int
lv_merge_disk(virConnectPtr c, virDomainPtr dom, bool running, const char *disk,
              const char *top, const char *top_fmt, const char *overlay,
              bool *started, struct op_report *rep)
{
    _cleanup_(chain_freep) struct chain *ch = NULL;
    const char *vm = virDomainGetName(dom);
    int r = qemu_img_chain(top, top_fmt, &ch);
    size_t k;

    if (r < 0)
        return lv_report(rep, -EIO, "cannot read the chain of disk %s", disk);
    _cleanup_free_ char *ov_canon = layer_canonical(overlay);
    for (k = 0; ov_canon && k < ch->n; k++) {
        _cleanup_free_ char *l = layer_canonical(ch->layers[k]);
        if (l && strcmp(l, ov_canon) == 0)
            break;
    }
    if (!ov_canon || k == ch->n)    /* lv_mergeable() saw it there: changed meanwhile */
        return lv_report(rep, -EIO, "the chain of disk %s changed while it was read", disk);
    if (k + 1 >= ch->n)
        return lv_report(rep, -EIO, "'%s' has no backing file to merge into", overlay);
    const char *base = ch->layers[k + 1], *base_fmt = ch->formats[k + 1];

    if (running) {
        unsigned flags = k == 0 ? VIR_DOMAIN_BLOCK_COMMIT_ACTIVE : 0;
        int tries = 0;
        while (virDomainBlockCommit(dom, disk, base, k == 0 ? NULL : overlay, 0, flags) < 0) {
            const char *msg = lv_last_message("failed");
            /* a reader of the layers holds QEMU's image lock for a moment
             * (qemu-img info or map, ours or someone's): try again */
            if (strstr(msg, "\" lock") && ++tries < 25) {
                log_info("'%s': disk %s: %s; trying again", vm, disk, msg);
                virResetLastError();
                sleep_ns(200000000);
                continue;
            }
            r = lv_error();
            return lv_report(rep, r == -EBUSY ? -EBUSY : -EIO, "block commit of %s: %s",
                             disk, lv_last_message("failed"));
        }
        *started = true;    /* the snapshot's layer changes from here on */
        fault_point("merge-started");
        if (k == 0) {
            r = wait_block_job(dom, disk, true);
            if (r >= 0)
                r = pivot(dom, disk);
            if (r < 0)      /* leave no job behind; the chain stays as it was */
                (void) virDomainBlockJobAbort(dom, disk, 0);
        }
        if (r >= 0)
            r = wait_block_job(dom, disk, false);
        if (r < 0)
            return lv_report(rep, -EIO, "merging disk %s failed (see the log)", disk);
    } else {
        char *commit[] = { (char *) "qemu-img", (char *) "commit", (char *) "-q",
                           (char *) "-f", (char *) "qcow2", (char *) overlay, NULL };
        *started = true;
        fault_point("merge-started");
        r = run_qemu_img(commit);
        if (r >= 0 && virDomainIsActive(dom) != 0)
            r = log_error_errno(-EIO, "'%s' started while its disk %s was merged", vm, disk);
        if (r >= 0 && k == 0) {
            r = redefine_source(c, dom, disk, overlay, base, base_fmt);
        } else if (r >= 0) {
            char fmt_opt[64];
            snprintf(fmt_opt, sizeof fmt_opt, "%s", base_fmt);
            char *rebase[] = { (char *) "qemu-img", (char *) "rebase", (char *) "-u",
                               (char *) "-f", ch->formats[k - 1], (char *) "-b",
                               (char *) base, (char *) "-F", fmt_opt,
                               ch->layers[k - 1], NULL };
            r = run_qemu_img(rebase);
            /* the saved definition may describe the old chain
             * (<backingStore>): drop that, libvirt reads the images anew */
            if (r >= 0)
                r = redefine_source(c, dom, disk, top, top, top_fmt);
        }
        if (r < 0)
            return lv_report(rep, -EIO, "merging disk %s with qemu-img failed (see the log)",
                          disk);
    }
    /* the overlay goes only once the chain does without it */
    _cleanup_(chain_freep) struct chain *after = NULL;
    /* the disk's top now: the base where the top itself was merged */
    if (qemu_img_chain(k == 0 ? base : top, k == 0 ? base_fmt : top_fmt, &after) < 0)
        return lv_report(rep, -EIO, "cannot read the chain of disk %s after the merge", disk);
    for (size_t i = 0; i < after->n; i++) {
        _cleanup_free_ char *l = layer_canonical(after->layers[i]);
        if (!l || strcmp(l, ov_canon) == 0)
            return lv_report(rep, -EIO, "the merge of disk %s did not complete: '%s' is "
                                     "still in use", disk, overlay);
    }
    if (unlink(overlay) < 0 && errno != ENOENT)
        log_warning("cannot remove '%s': %s", overlay, strerror(errno));
    else
        layer_mine_remove(overlay);
    return 0;
}

/* May snapshot S (overlay ov, layer = what ov builds on) be merged away
 * on a disk whose top is now top? Only where it is a plain link of the
 * VM's own chain: ov is in the chain, ov is the only image building on
 * the layer, and nothing but the chain's next image builds on ov. */
bool
lv_mergeable(const struct layer_refs *g, const char *ov, const char *top)
{
    _cleanup_strv_ char **mine = NULL, **chain = NULL;
    const char *one = NULL;
    size_t k;

    if (layer_chain(ov, &mine) < 0 || !mine[0] || !mine[1] ||
        layer_chain(top, &chain) < 0)
        return false;
    for (k = 0; chain[k] && strcmp(chain[k], mine[0]) != 0; k++)
        ;
    if (!chain[k] || !chain[k + 1] || strcmp(chain[k + 1], mine[1]) != 0)
        return false;
    if (layer_refs_children(g, mine[1], &one) != 1 || strcmp(one, mine[0]) != 0)
        return false;
    size_t above = layer_refs_children(g, mine[0], &one);
    return k == 0 ? above == 0 : above == 1 && strcmp(one, chain[k - 1]) == 0;
}

/* ---- block jobs ------------------------------------------------------------ */

const char *
lv_block_job_any(virDomainPtr dom, const struct volume *disks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        virDomainBlockJobInfo info;
        int r = disks[i].source ? virDomainGetBlockJobInfo(dom, disks[i].name, &info, 0) : 0;
        virResetLastError();
        if (r > 0)
            return disks[i].name;
    }
    return NULL;
}

/* ---- the merge record ------------------------------------------------------
 * STATE/merge/UUID.json (the restore plan's format, phase "merging"): the
 * snapshot being deleted, its overlays to merge away (overlays) and their
 * disks (old, same order). Written before the snapshot's metadata goes,
 * which is before any merge starts: from the first block commit on, the
 * snapshot's layer holds newer data, so the snapshot must not come back.
 * A record whose snapshot still exists was left before anything changed
 * (it is dropped); one whose snapshot is gone is finished. */

int
lv_merge_record_write(struct restore_plan *p, virDomainPtr dom, const char *snap)
{
    char uuid[VIR_UUID_STRING_BUFLEN];
    int r = virDomainGetUUIDString(dom, uuid) < 0 ? -EIO : 0;

    if (r >= 0 && !p->path)
        r = restore_plan_set_path(p, "merge", uuid);
    if (r < 0)
        return r;
    if (!p->vm && !(p->vm = strdup(virDomainGetName(dom))))
        return -ENOMEM;
    if (!p->uuid && !(p->uuid = strdup(uuid)))
        return -ENOMEM;
    if (!p->snap && !(p->snap = strdup(snap)))
        return -ENOMEM;
    p->phase = "merging";
    return restore_plan_write(p);
}

/* Finishes the merges of record p on dom (its operation held): a commit
 * job still running is waited for and pivoted; an overlay still in its
 * disk's chain is merged (again); overlays nothing uses go. 0 when done. */
static int
merge_finish(virConnectPtr c, virDomainPtr dom, struct restore_plan *p)
{
    _cleanup_free_ char *live = virDomainGetXMLDesc(dom, 0);
    struct volume *v = NULL;
    size_t nv = 0;
    int state = 0, reason, r = 0;

    if (!live || virDomainGetState(dom, &state, &reason, 0) < 0 || lv_xml_disks(live, &v, &nv) < 0) {
        virResetLastError();
        free(v);
        return -EIO;
    }
    bool running = state != VIR_DOMAIN_SHUTOFF && state != VIR_DOMAIN_CRASHED;
    for (size_t i = 0; r >= 0 && i < p->n_overlays && i < p->n_old; i++) {
        const char *disk = p->old[i], *ov = p->overlays[i];
        const struct volume *now = NULL;
        for (size_t j = 0; j < nv; j++)
            if (strcmp(v[j].name, disk) == 0)
                now = &v[j];
        if (!now || !now->source)
            continue;
        virDomainBlockJobInfo info;
        int job = running ? virDomainGetBlockJobInfo(dom, disk, &info, 0) : 0;
        virResetLastError();
        if (job > 0 && info.type == VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT) {
            r = wait_block_job(dom, disk, true);
            if (r >= 0)
                r = pivot(dom, disk);
            if (r >= 0)
                r = wait_block_job(dom, disk, false);
            continue;   /* the overlay goes below, once nothing uses it */
        }
        if (job > 0) {
            r = wait_block_job(dom, disk, false);
            if (r < 0)
                continue;
        }
        _cleanup_strv_ char **chain = NULL;
        _cleanup_free_ char *ov_canon = layer_canonical(ov);
        if (layer_chain(now->source, &chain) < 0) {
            r = -EIO;
            continue;
        }
        bool in_chain = false;
        for (size_t k = 0; ov_canon && chain[k]; k++)
            in_chain |= strcmp(chain[k], ov_canon) == 0;
        if (in_chain) {
            struct op_report rep = { .text = "" };
            bool started = false;
            r = lv_merge_disk(c, dom, running, disk, now->source, now->format, ov, &started,
                              &rep);
            if (r < 0)
                log_warning("'%s': finishing the merge of disk %s: %s", p->vm, disk, rep.text);
        }
    }
    for (size_t j = 0; j < nv; j++)
        volume_clear(&v[j]);
    free(v);
    if (r >= 0)
        r = lv_reclaim(c, p->overlays);     /* ours and unused only */
    return r;
}

int
lv_merge_recover_record(const char *path, void *opaque)
{
    struct lv_pass *pass = opaque;
    _cleanup_(restore_plan_clear) struct restore_plan p = { 0 };

    if (restore_plan_read_phase(path, "merging", &p) < 0)
        return 0;
    _cleanup_(virDomainFreep) virDomainPtr dom = NULL;
    int found = lv_record_domain(pass->c, p.uuid, &dom);
    if (found <= 0) {
        if (found == 0)
            restore_plan_remove(&p);    /* the VM is gone */
        return found < 0;
    }
    if (vm_op_begin(pass->lv->vmops, p.vm, NULL, VM_OP_DISKS) < 0)
        return 1;           /* the rmdir itself, or a view: later */
    virDomainSnapshotPtr s = virDomainSnapshotLookupByName(dom, p.snap, 0);
    bool snap_gone = !s && lv_last_is(VIR_ERR_NO_DOMAIN_SNAPSHOT);
    virResetLastError();
    int left = 0;
    if (s) {
        /* nothing merged yet: the snapshot keeps its content */
        virDomainSnapshotFree(s);
        log_warning("'%s': an rmdir of snapshot '%s' was interrupted before it changed "
                    "anything; the snapshot stays", p.vm, p.snap);
        restore_plan_remove(&p);
    } else if (!snap_gone || merge_finish(pass->c, dom, &p) < 0) {
        left = 1;
    } else {
        log_warning("'%s': finished the merge of deleted snapshot '%s' that an interrupted "
                    "rmdir left", p.vm, p.snap);
        restore_plan_remove(&p);
    }
    vm_op_end(pass->lv->vmops, p.vm);
    return left;
}
