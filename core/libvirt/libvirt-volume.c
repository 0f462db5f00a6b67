/* core/libvirt/libvirt-volume.c: the libvirt backend's disk views.
 *
 * - A stopped VM's disk, a snapshot's layer, and disks the guest cannot
 *   write (read-only, shareable): the chain view (pread on the layers).
 * - A running VM's writable disk: one pull-mode backup job per VM gives an
 *   NBD export of each disk at one point in time; the guest's filesystems
 *   are frozen through the agent just around the job's start. Readers of
 *   all the VM's disks share that job; the last close ends it.
 *
 * Thread model: live_lock serialises starting and ending backup jobs (and
 * guards lv->lives); reads never take it.
 */
#define LOG_MODULE "libvirt"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "change-map.h"
#include "clock.h"
#include "layers.h"
#include "libvirt-freeze.h"
#include "libvirt-xml.h"
#include "libvirt-private.h"
#include "log.h"
#include "qemu-img.h"
#include "qemu-nbd.h"
#include "state.h"
#include "subprocess.h"
#include "volume.h"

struct lv_live {
    struct lv *lv;
    char *vm;
    unsigned refs;          /* open views; under live_lock */
    bool detached;          /* no longer in lv->lives (the VM restarted) */
    char uuid[VIR_UUID_STRING_BUFLEN];
    unsigned id;            /* the domain's id while the job runs */
    char *dir;              /* socket and scratch files; QEMU's user owns it */
    char *socket;
    int lock_fd;            /* flock'd while the job is ours (see stale jobs) */
};

/* ---- where a volume's data is ------------------------------------------ */

static const struct volume *
find_volume(const struct volume *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0 && !(v[i].flags & VOLUME_CDROM))
            return &v[i];
    return NULL;
}

/* The overlay that snapshot snap started for disk vol (from that one
 * snapshot's metadata, not the whole list). */
static int
snapshot_overlay(struct lv *lv, const struct vm_ref *ref, const char *snap,
                 const char *vol, bool quiet, char **ret_path, char **ret_format)
{
    _cleanup_(virConnectClosep) virConnectPtr c = lv_query_conn(lv);
    _cleanup_(virDomainFreep) virDomainPtr d = NULL;
    int r = 0;

    if (!c)
        return -EIO;
    d = lv_lookup(c, ref->name, &r);
    if (!d)
        return r;
    _cleanup_(virDomainSnapshotFreep) virDomainSnapshotPtr s =
        virDomainSnapshotLookupByName(d, snap, 0);
    if (!s)
        return lv_errno("find a snapshot of", ref->name);
    _cleanup_free_ char *xml = virDomainSnapshotGetXMLDesc(s, 0);
    struct lv_xml_snapshot x;
    if (!xml)
        return lv_errno("read a snapshot of", ref->name);
    r = lv_xml_snapshot_parse(xml, &x);
    if (r < 0)
        return r;
    r = -ENOENT;
    for (size_t i = 0; i < x.n_disks; i++) {
        const struct volume *v = &x.disks[i];
        if (strcmp(v->name, vol) != 0 || (v->flags & VOLUME_NOT_SNAPSHOTTED))
            continue;
        if (!v->source)
            r = quiet ? -ENOENT
                      : log_error_errno(-EIO, "snapshot '%s' of '%s': disk '%s' has no "
                                        "file (an internal snapshot?)", snap, ref->name, vol);
        else if (!(*ret_path = strdup(v->source)) ||
                 !(*ret_format = strdup(v->format ? v->format : "qcow2")))
            r = -ENOMEM;
        else
            r = 0;
        break;
    }
    lv_xml_snapshot_clear(&x);
    return r;
}

/* The layer holding a snapshot's data: the backing file of the overlay
 * the external snapshot started (as qemu-img reads the chain). */
static int
overlay_backing(const struct vm_ref *ref, const char *snap, const char *overlay,
                const char *format, char **ret_path, char **ret_format)
{
    _cleanup_(chain_freep) struct chain *c = NULL;
    int r = qemu_img_chain(overlay, format, &c);

    if (r < 0)
        return r;
    if (c->n < 2)
        return log_error_errno(-EIO, "snapshot '%s' of '%s': '%s' has no "
                               "backing file to hold the snapshot's data",
                               snap, ref->name, overlay);
    *ret_path = strdup(c->layers[1]);
    *ret_format = strdup(c->formats[1]);
    return *ret_path && *ret_format ? 0 : -ENOMEM;
}

/* The layer holding snapshot snap's data of disk vol. */
static int
snapshot_layer(struct lv *lv, const struct vm_ref *ref, const char *snap,
               const char *vol, char **ret_path, char **ret_format)
{
    _cleanup_free_ char *overlay = NULL, *format = NULL;
    int r = snapshot_overlay(lv, ref, snap, vol, false, &overlay, &format);

    if (r < 0)
        return r;
    return overlay_backing(ref, snap, overlay, format, ret_path, ret_format);
}

/* ---- live views: a pull-mode backup job per running VM ----------------- */

static char *
xml_escape(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += *p == '&' ? 5 : (*p == '<' || *p == '>') ? 4 : (*p == '\'' || *p == '"') ? 6 : 1;
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '&': o = stpcpy(o, "&amp;"); break;
        case '<': o = stpcpy(o, "&lt;"); break;
        case '>': o = stpcpy(o, "&gt;"); break;
        case '\'': o = stpcpy(o, "&apos;"); break;
        case '"': o = stpcpy(o, "&quot;"); break;
        default: *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

/* Can a backup job export this disk? (writable files and block devices) */
static bool
live_exportable(const struct volume *v)
{
    return !(v->flags & (VOLUME_CDROM | VOLUME_READONLY | VOLUME_SHAREABLE)) &&
           v->source && v->source[0] == '/';
}

static char *
backup_xml(const struct lv_live *l, const struct vm_info *vm)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    _cleanup_free_ char *sock = xml_escape(l->socket);

    if (!f)
        return NULL;
    fprintf(f, "<domainbackup mode='pull'>\n"
               "  <server transport='unix' socket='%s'/>\n  <disks>\n",
            sock ? sock : "");
    for (size_t i = 0; i < vm->n_volumes; i++) {
        const struct volume *v = &vm->volumes[i];
        _cleanup_free_ char *name = xml_escape(v->name);
        if (v->flags & VOLUME_CDROM)
            continue;
        if (!live_exportable(v)) {
            fprintf(f, "    <disk name='%s' backup='no'/>\n", name ? name : "");
            continue;
        }
        fprintf(f, "    <disk name='%s' backup='yes' exportname='%s' type='file'>\n"
                   "      <scratch file='%s/%s.scratch'/>\n    </disk>\n",
                name ? name : "", name ? name : "", l->dir, name ? name : "");
    }
    fprintf(f, "  </disks>\n</domainbackup>\n");
    if (fclose(f) != 0 || !sock) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* A private directory QEMU's user may write (it makes the socket and the
 * scratch files there): mode 0700, owned by that user. In it, a lock file
 * this daemon holds while the job is its own: a later daemon that finds a
 * job whose lock it can take knows its owner is gone. */
static int
live_dir(struct lv_live *l)
{
    const char *base = state_dir();
    _cleanup_free_ char *lock = NULL;

    if (mkdir(base, 0711) < 0 && errno != EEXIST)
        return log_error_errno(-errno, "cannot make '%s': %s", base, strerror(errno));
    if (asprintf(&l->dir, "%s/live-XXXXXX", base) < 0) {
        l->dir = NULL;
        return -ENOMEM;
    }
    if (!mkdtemp(l->dir)) {
        int r = log_error_errno(-errno, "cannot make '%s': %s", l->dir, strerror(errno));
        free(l->dir);
        l->dir = NULL;
        return r;
    }
    if (asprintf(&lock, "%s/owner.lock", l->dir) < 0)
        return -ENOMEM;
    l->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (l->lock_fd < 0 || flock(l->lock_fd, LOCK_EX | LOCK_NB) < 0)
        return log_error_errno(-errno, "cannot lock '%s': %s", lock, strerror(errno));
    struct passwd *pw = getpwnam("libvirt-qemu");
    if (!pw)
        pw = getpwnam("qemu");
    if (pw && chown(l->dir, pw->pw_uid, pw->pw_gid) < 0)
        log_warning("cannot give '%s' to QEMU's user: %s", l->dir, strerror(errno));
    return 0;
}

static void
remove_dir(const char *dir)
{
    /* the socket and scratch files libvirt left, then the directory */
    char *argv[] = { (char *) "rm", (char *) "-rf", (char *) "--", (char *) dir, NULL };
    pid_t pid;
    if (spawn_background(argv, -1, &pid) == 0)
        spawn_stop_wait(pid);
}

static void
live_free(struct lv_live *l)
{
    if (!l)
        return;
    if (l->dir)
        remove_dir(l->dir);
    if (l->lock_fd >= 0)
        close(l->lock_fd);
    free(l->socket);
    free(l->dir);
    free(l->vm);
    free(l);
}

/* Is the domain's backup job the one at socket? */
static bool
job_is(virDomainPtr dom, const char *socket)
{
    _cleanup_free_ char *xml = virDomainBackupGetXMLDesc(dom, 0);
    if (!xml) {
        virResetLastError();
        return false;
    }
    return strstr(xml, socket) != NULL;
}

/* virDomainAbortJob only asks QEMU to cancel a backup job's block jobs:
 * the job ends when they have gone. Waits for that (at most 10 s: both
 * the backup and the domain's job gone), so that a closed view or a
 * stopped daemon leaves no job behind it. */
static void
job_wait_gone(virDomainPtr dom, const char *vm)
{
    uint64_t end = now_monotonic_ns() + 10 * NSEC_PER_SEC;

    for (;;) {
        char *xml = virDomainBackupGetXMLDesc(dom, 0);
        virDomainJobInfo job;
        if (!xml) {
            virResetLastError();
            if (virDomainGetJobInfo(dom, &job) < 0 || job.type == VIR_DOMAIN_JOB_NONE) {
                virResetLastError();
                return;
            }
        }
        free(xml);
        if (now_monotonic_ns() >= end) {
            log_warning("'%s': the backup job still runs 10 s after it was ended", vm);
            return;
        }
        sleep_ns(20 * (NSEC_PER_SEC / 1000));
    }
}

/* Ends the VM's backup job if it is still ours (same domain run, same
 * socket): never someone else's job. Called with live_lock held. */
static void
live_end(struct lv_live *l)
{
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(l->lv);
    virDomainPtr dom = c ? virDomainLookupByUUIDString(c, l->uuid) : NULL;

    if (!dom) {
        virResetLastError();
    } else if (virDomainGetID(dom) == l->id && job_is(dom, l->socket)) {
        if (virDomainAbortJob(dom) < 0) {
            lv_errno("end the backup job of", l->vm);
        } else {
            job_wait_gone(dom, l->vm);
            log_debug("'%s': backup job ended", l->vm);
        }
    }
    if (dom)
        virDomainFree(dom);
    live_free(l);
}

/* No job, freeze (if an agent answers; a durable freeze with its guard),
 * start the backup job, thaw. Called with live_lock held. */
static int
live_start(struct lv *lv, virConnectPtr c, const struct vm_info *vm,
           struct lv_live **ret)
{
    struct lv_live *l = calloc(1, sizeof *l);
    _cleanup_(virDomainFreep) virDomainPtr dom = NULL;
    _cleanup_free_ char *xml = NULL;
    virDomainJobInfo job;
    int r = 0;

    if (!l)
        return -ENOMEM;
    l->lv = lv;
    l->lock_fd = -1;
    l->vm = strdup(vm->name);
    dom = lv_lookup(c, vm->name, &r);
    if (!l->vm || !dom) {
        live_free(l);
        return r < 0 ? r : -ENOMEM;
    }
    /* another job (a migration, someone's backup) would make libvirt wait
     * with the guest frozen: not now */
    if (virDomainGetJobInfo(dom, &job) == 0 && job.type != VIR_DOMAIN_JOB_NONE) {
        live_free(l);
        return log_error_errno(-EBUSY, "'%s': another job runs on the VM", vm->name);
    }
    virResetLastError();
    l->id = virDomainGetID(dom);
    if (virDomainGetUUIDString(dom, l->uuid) < 0) {
        live_free(l);
        return lv_errno("get the UUID of", vm->name);
    }
    r = live_dir(l);
    if (r < 0 || asprintf(&l->socket, "%s/nbd.sock", l->dir) < 0) {
        live_free(l);
        return r < 0 ? r : -ENOMEM;
    }
    xml = backup_xml(l, vm);
    if (!xml) {
        live_free(l);
        return -ENOMEM;
    }

    {
        _cleanup_(freeze_thawp) struct freeze *fz = NULL;
        if (vm->agent &&
            freeze_begin(lv, dom, deadline_after(lv->deadline_ns), &fz) != FREEZE_FROZEN)
            log_warning("'%s': the filesystems are not frozen: the view is "
                        "crash-consistent", vm->name);
        if (virDomainBackupBegin(dom, xml, NULL, 0) < 0)
            r = lv_errno("start a backup job (point-in-time view) of", vm->name);
    }   /* thawed here, whatever happened (or when a late freeze lands) */

    if (r < 0) {
        live_free(l);
        return r;
    }
    log_debug("'%s': backup job started, exports at '%s'", vm->name, l->socket);
    *ret = l;
    return 0;
}

static void
live_release(void *opaque)
{
    struct lv_live *l = opaque;
    struct lv *lv = l->lv;

    LOCK_FOR_SCOPE(&lv->live_lock);
    if (--l->refs > 0)
        return;
    if (!l->detached)
        hashmap_remove(lv->lives, l->vm);
    live_end(l);
}

/* A live view counted among the VM's open views like the others, so that
 * operations and views exclude each other by one rule. */
struct live_counted {
    struct lv_live *l;
    struct view_ref *vr;
};

/* release(lc) runs exactly once: at the view's close, or on failure. */
static int
live_view(struct lv *lv, virConnectPtr c, const struct vm_info *vm,
          const struct volume *v, void (*release)(void *), struct live_counted *lc,
          struct volume_view **ret)
{
    struct lv_live *l;
    uint64_t size = 0, allocated = 0;
    int r;

    /* st_blocks as the disk is now (a running VM's image: read shared) */
    (void) volume_chain_usage(v->source, v->format, &size, &allocated);
    {
        LOCK_FOR_SCOPE(&lv->live_lock);
        l = hashmap_get(lv->lives, vm->name);
        if (l) {
            /* a job of an earlier run of the VM is gone with it */
            virDomainPtr dom = virDomainLookupByUUIDString(c, l->uuid);
            bool same = dom && virDomainGetID(dom) == l->id;
            if (dom)
                virDomainFree(dom);
            virResetLastError();
            if (!same) {
                hashmap_remove(lv->lives, vm->name);
                l->detached = true;
                l = NULL;
            }
        }
        if (!l) {
            r = live_start(lv, c, vm, &l);
            if (r < 0) {
                release(lc);
                return r;
            }
            if (hashmap_put(lv->lives, vm->name, l, NULL) < 0) {
                live_end(l);
                release(lc);
                return -ENOMEM;
            }
        }
        l->refs++;
    }
    lc->l = l;
    r = volume_view_open_nbd(l->socket, v->name, allocated, release, lc, ret);
    return r;
}

/* ---- open views per VM (rmdir of a snapshot waits for them: EBUSY) ------ */

/* One open view counted among the VM's (vm-ops.h), and what tells
 * whether a stopped VM's disk is still stopped. */
struct view_ref {
    struct lv *lv;
    struct vm_view *counted;
    char uuid[VIR_UUID_STRING_BUFLEN];  /* "" for snapshot layers */
};

static int
views_enter(struct lv *lv, const char *vm, unsigned flags, struct view_ref **ret)
{
    struct view_ref *v = calloc(1, sizeof *v);
    int r = v ? vm_view_enter(lv->vmops, vm, flags, &v->counted) : -ENOMEM;

    if (r < 0) {
        free(v);
        return r;
    }
    v->lv = lv;
    *ret = v;
    return 0;
}

static void
views_leave(void *opaque)
{
    struct view_ref *v = opaque;
    vm_view_leave(v->counted);
    free(v);
}

/* For a stopped VM's disk on block devices: still stopped? */
static bool
still_stopped(void *opaque)
{
    struct view_ref *v = opaque;
    if (!v->uuid[0])
        return true;
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(v->lv);
    virDomainPtr dom = c ? virDomainLookupByUUIDString(c, v->uuid) : NULL;
    int active = dom ? virDomainIsActive(dom) : -1;
    if (dom)
        virDomainFree(dom);
    virResetLastError();
    return active == 0;
}

static void
live_counted_release(void *opaque)
{
    struct live_counted *lc = opaque;
    if (lc->l)
        live_release(lc->l);
    views_leave(lc->vr);
    free(lc);
}

static int
live_view_counted(struct lv *lv, virConnectPtr c, const struct vm_info *vm,
                  const struct volume *v, struct volume_view **ret)
{
    struct live_counted *lc = calloc(1, sizeof *lc);
    int r = lc ? views_enter(lv, vm->name, 0, &lc->vr) : -ENOMEM;

    if (r < 0) {
        free(lc);
        return r;
    }
    return live_view(lv, c, vm, v, live_counted_release, lc, ret);
}

/* ---- changes since the snapshot before (snapshots/S/changes/) ---------- */

/* The canonical path of the layer holding snapshot snap's data of disk
 * vol, read from the overlay's qcow2 header where it can be (no qemu-img
 * run: the predecessor rule asks it of every older snapshot). */
static char *
snapshot_layer_path(struct lv *lv, const struct vm_ref *ref, const char *snap,
                    const char *vol)
{
    _cleanup_free_ char *overlay = NULL, *format = NULL, *backing = NULL;
    _cleanup_free_ char *path = NULL, *pformat = NULL;

    /* quiet: a snapshot without files (internal) has no changes */
    if (snapshot_overlay(lv, ref, snap, vol, true, &overlay, &format) < 0)
        return NULL;
    if (strcmp(format, "qcow2") == 0) {
        if (layer_backing(overlay, &backing) == 0 && backing)
            return layer_canonical(backing);
        return NULL;
    }
    if (overlay_backing(ref, snap, overlay, format, &path, &pformat) < 0)
        return NULL;
    return layer_canonical(path);
}

static int
newest_first(const void *a, const void *b)
{
    const struct snapshot_info *x = *(const struct snapshot_info *const *) a;
    const struct snapshot_info *y = *(const struct snapshot_info *const *) b;
    if (x->created != y->created)
        return x->created > y->created ? -1 : 1;
    return -strcmp(x->name, y->name);
}

/* S's predecessor: the newest snapshot taken before S whose layer is, for
 * every disk of S, below S's layer in S's chain (S builds on it: nothing
 * merged it away, no restore went another way). -ENOENT if none. */
int
lv_changes_base(void *h, const struct vm_ref *ref, const char *snap, char **ret_base,
                char **ret_why)
{
    struct lv *lv = h;
    struct snapshot_info **v = NULL;
    size_t n = 0;
    const struct snapshot_info *s = NULL;
    int r = lv_snapshot_list(h, ref, &v, &n);

    if (r < 0)
        return r;
    for (size_t i = 0; i < n && !s; i++)
        if (strcmp(v[i]->name, snap) == 0)
            s = v[i];
    if (!s || s->phase != SNAPSHOT_SUCCEEDED) {
        snapshot_infos_free(v, n);
        return -ENOENT;
    }
    /* S's chains, one per disk it holds */
    size_t nd = s->n_volumes;
    char ***chains = calloc(nd ? nd : 1, sizeof *chains);
    r = chains ? 0 : -ENOMEM;
    for (size_t d = 0; r >= 0 && d < nd; d++) {
        _cleanup_free_ char *top = snapshot_layer_path(lv, ref, snap, s->volumes[d].name);
        r = top && layer_chain(top, &chains[d]) >= 0 ? 0 : -ENOENT;
    }
    /* older snapshots, newest first: the first that S builds on */
    const struct snapshot_info **older = calloc(n ? n : 1, sizeof *older);
    size_t no = 0;
    if (!older)
        r = -ENOMEM;
    for (size_t i = 0; r >= 0 && i < n; i++) {
        const struct snapshot_info *q = v[i];
        if (q != s && q->phase == SNAPSHOT_SUCCEEDED &&
            (q->created < s->created || (q->created == s->created && strcmp(q->name, s->name) < 0)))
            older[no++] = q;
    }
    if (no > 1)
        qsort(older, no, sizeof *older, newest_first);
    const struct snapshot_info *best = NULL;
    for (size_t i = 0; r >= 0 && i < no && !best; i++) {
        bool below = nd > 0;
        for (size_t d = 0; below && d < nd; d++) {
            _cleanup_free_ char *layer = snapshot_layer_path(lv, ref, older[i]->name,
                                                             s->volumes[d].name);
            bool found = false;
            for (size_t k = 1; layer && chains[d][k] && !found; k++)
                found = strcmp(chains[d][k], layer) == 0;
            below = found;
        }
        if (below)
            best = older[i];
    }
    if (r >= 0 && !best) {
        r = -ENOENT;
        if (ret_why)
            *ret_why = strdup("no older snapshot that this one builds on (the first one, or "
                              "the first after a restore to another snapshot)");
    }
    if (r >= 0 && !(*ret_base = strdup(best->name)))
        r = -ENOMEM;
    for (size_t d = 0; chains && d < nd; d++)
        strv_free(chains[d]);
    free(chains);
    free(older);
    snapshot_infos_free(v, n);
    return r;
}

/* What S's changes of disk vol are made of: the predecessor's name, S's
 * layer (and its format) and the predecessor's layer. */
static int
changes_paths(struct lv *lv, const struct vm_ref *ref, const char *snap, const char *vol,
              char **ret_base, char **ret_path, char **ret_format, char **ret_base_layer)
{
    int r = lv_changes_base(lv, ref, snap, ret_base, NULL);

    if (r >= 0)
        r = snapshot_layer(lv, ref, snap, vol, ret_path, ret_format);
    if (r >= 0 && !(*ret_base_layer = snapshot_layer_path(lv, ref, *ret_base, vol)))
        r = -ENOENT;
    return r;
}

static bool
same_file_state(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* The map alone (stat, the .map file): not an open view, so that a listing
 * never holds up a snapshot. A merge that ran meanwhile (the base or its
 * layer changed) makes it read again, once; then -EAGAIN. */
static int
changes_map(struct lv *lv, const struct vm_ref *ref, const char *snap, const char *vol,
            struct change_map **ret_map)
{
    int r = -EAGAIN;

    for (int attempt = 0; attempt < 2 && r == -EAGAIN; attempt++) {
        _cleanup_free_ char *base = NULL, *path = NULL, *format = NULL, *base_layer = NULL;
        _cleanup_free_ char *again = NULL;
        struct stat before, after;
        r = changes_paths(lv, ref, snap, vol, &base, &path, &format, &base_layer);
        if (r >= 0)
            r = stat(base_layer, &before) < 0 ? -ENOENT : 0;
        if (r >= 0)
            r = volume_chain_changes(path, format, base_layer, ret_map);
        if (r < 0)
            return r;
        if (lv_changes_base(lv, ref, snap, &again, NULL) < 0 || strcmp(again, base) != 0 ||
            stat(base_layer, &after) < 0 || !same_file_state(&before, &after)) {
            change_map_free(*ret_map);
            *ret_map = NULL;
            r = -EAGAIN;
            continue;
        }
        (*ret_map)->base = TAKE_PTR(base);
    }
    return r;
}

int
lv_changes_open(void *h, const struct vm_ref *ref, const char *snap, const char *vol,
                struct volume_view **ret, struct change_map **ret_map)
{
    struct lv *lv = h;
    _cleanup_free_ char *base = NULL, *path = NULL, *format = NULL, *base_layer = NULL;
    struct view_ref *vr = NULL;

    if (!ret)
        return changes_map(lv, ref, snap, vol, ret_map);
    /* a view first: no rmdir merges a layer from here on (EBUSY), so the
     * base found below is the one the view shows */
    int r = views_enter(lv, ref->name, VM_VIEW_SNAPSHOT, &vr);
    if (r < 0)
        return r;
    r = changes_paths(lv, ref, snap, vol, &base, &path, &format, &base_layer);
    if (r < 0) {
        views_leave(vr);
        return r;
    }
    r = volume_view_open_changes(path, format, base_layer, views_leave, vr, ret, ret_map);
    if (r >= 0)
        (*ret_map)->base = TAKE_PTR(base);
    return r;
}

/* ---- the backend ops ----------------------------------------------------- */

int
lv_volume_usage(void *h, const struct vm_ref *ref, const char *snap,
                const char *vol, uint64_t *ret_size, uint64_t *ret_allocated)
{
    struct lv *lv = h;
    _cleanup_free_ char *path = NULL, *format = NULL;
    int r;

    if (snap) {
        /* the overlay's chain less the overlay: read in-process first */
        _cleanup_free_ char *overlay = NULL, *ofmt = NULL;
        r = snapshot_overlay(lv, ref, snap, vol, false, &overlay, &ofmt);
        if (r < 0)
            return r;
        if (layer_backing_usage(overlay, ofmt, ret_size, ret_allocated) == 0)
            return 0;
        r = overlay_backing(ref, snap, overlay, ofmt, &path, &format);
    } else {
        struct vm_info *vm = NULL;
        r = lv_vm_get(h, ref, &vm);
        const struct volume *v = r < 0 ? NULL : find_volume(vm->volumes, vm->n_volumes, vol);
        if (r >= 0 && (!v || !v->source))
            r = -ENOENT;
        if (r >= 0) {
            path = strdup(v->source);
            format = strdup(v->format);
        }
        vm_info_free(vm);
    }
    if (r < 0)
        return r;
    if (!path || !format)
        return -ENOMEM;
    /* a missing file is the reader's error to report, not stat's */
    if (access(path, R_OK) < 0)
        return -errno;
    /* from the files (no qemu-img run) where their formats say how */
    if (layer_chain_usage(path, format, ret_size, ret_allocated) == 0)
        return 0;
    return volume_chain_usage(path, format, ret_size, ret_allocated);
}

int
lv_volume_open(void *h, const struct vm_ref *ref, const char *snap,
               const char *vol, struct volume_view **ret)
{
    struct lv *lv = h;
    _cleanup_free_ char *path = NULL, *format = NULL;
    int r;

    if (snap) {
        r = snapshot_layer(lv, ref, snap, vol, &path, &format);
        if (r < 0)
            return r;
        struct view_ref *vr = NULL;
        r = views_enter(lv, ref->name, VM_VIEW_SNAPSHOT, &vr);
        if (r < 0)
            return r;
        /* snapshot layers are immutable while a view is open (rmdir: EBUSY) */
        return volume_view_open_chain(path, format, views_leave, NULL, vr, ret);
    }

    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(lv);
    struct vm_info *vm = NULL;
    if (!c)
        return -EIO;
    r = lv_vm_get(h, ref, &vm);
    if (r < 0)
        return r;
    const struct volume *v = find_volume(vm->volumes, vm->n_volumes, vol);
    if (!v || !v->source)
        r = v ? log_error_errno(-EIO, "disk '%s' of '%s' has no source", vol, ref->name)
              : -ENOENT;
    else if (vm->running && live_exportable(v))
        r = live_view_counted(lv, c, vm, v, ret);
    else if (vm->running && (v->flags & VOLUME_SHAREABLE) && !(v->flags & VOLUME_READONLY))
        r = log_error_errno(-EBUSY, "disk '%s' of '%s' is shared and written by the "
                            "running VM: no point-in-time view of it", vol, ref->name);
    else {
        struct view_ref *vr = NULL;
        r = views_enter(lv, ref->name, 0, &vr);
        if (r >= 0 && !vm->running)
            snprintf(vr->uuid, sizeof vr->uuid, "%s", vm->uid);
        if (r >= 0)
            r = volume_view_open_chain(v->source, v->format, views_leave,
                                       still_stopped, vr, ret);
    }
    vm_info_free(vm);
    return r;
}

/* Is dir one of our live view directories whose owner is gone (its lock
 * is free)? */
static bool
live_dir_orphaned(const char *dir)
{
    const char *base = state_dir();
    size_t n = strlen(base);
    _cleanup_free_ char *lock = NULL;

    if (strncmp(dir, base, n) != 0 || strncmp(dir + n, "/live-", 6) != 0 ||
        asprintf(&lock, "%s/owner.lock", dir) < 0)
        return false;
    _cleanup_close_ int fd = open(lock, O_RDWR | O_CLOEXEC);
    return fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0;
}

/* A daemon killed with SIGKILL leaves its backup jobs running (and their
 * scratch files growing): end dom's if its daemon is gone (at start). */
void
lv_end_stale_job(virDomainPtr dom)
{
    _cleanup_free_ char *xml = virDomainBackupGetXMLDesc(dom, 0);
    _cleanup_free_ char *dir = NULL;
    const char *sock = xml ? strstr(xml, "socket='") : NULL;

    if (!xml) {
        virResetLastError();          /* no backup job: the usual case */
        return;
    }
    if (!sock || !(dir = strndup(sock + 8, strcspn(sock + 8, "'"))))
        return;
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    if (!live_dir_orphaned(dir))
        return;
    log_warning("'%s': ending the backup job of a vmsnapfs that is gone",
                virDomainGetName(dom));
    if (virDomainAbortJob(dom) < 0)
        lv_errno("end the stale backup job of", virDomainGetName(dom));
    else
        job_wait_gone(dom, virDomainGetName(dom));
    remove_dir(dir);
}
