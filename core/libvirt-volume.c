/* core/libvirt-volume.c: the libvirt backend's disk views.
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
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libvirt.h"
#include "log.h"
#include "model.h"
#include "qemu-img.h"
#include "qemu-nbd.h"
#include "subprocess.h"
#include "volume.h"

struct lv_live {
    struct lv *lv;
    char *vm;
    unsigned refs;          /* open views; under live_lock */
    virDomainPtr dom;
    char *dir;              /* socket and scratch files; QEMU's user owns it */
    char *socket;
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

/* The layer holding snapshot snap's data of disk vol: the backing file of
 * the overlay the external snapshot started. */
static int
snapshot_layer(struct lv *lv, const struct vm_ref *ref, const char *snap,
               const char *vol, char **ret_path, char **ret_format)
{
    struct snapshot_info **snaps = NULL;
    size_t n = 0;
    int r = lv_snapshot_list(lv, ref, &snaps, &n);

    if (r < 0)
        return r;
    const struct snapshot_info *s = NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(snaps[i]->name, snap) == 0)
            s = snaps[i];
    const struct volume *v = s ? find_volume(s->volumes, s->n_volumes, vol) : NULL;
    _cleanup_free_ char *overlay = v && v->source ? strdup(v->source) : NULL;
    _cleanup_free_ char *format = v ? strdup(v->format) : NULL;
    snapshot_infos_free(snaps, n);
    if (!v)
        return -ENOENT;
    if (!overlay)
        return log_error_errno(-EIO, "snapshot '%s' of '%s': disk '%s' has no "
                               "file (an internal snapshot?)", snap, ref->name, vol);

    _cleanup_(chain_freep) struct chain *c = NULL;
    r = qemu_img_chain(overlay, format, &c);
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

/* ---- live views: a pull-mode backup job per running VM ----------------- */

/* Thaws on every path out of the scope that froze (STYLE: freeze guard). */
struct freeze_guard {
    virDomainPtr dom;
    const char *vm;
    bool frozen;
    uint64_t since_ns;
};

static void
freeze_guard_release(struct freeze_guard *g)
{
    if (!g->frozen)
        return;
    if (virDomainFSThaw(g->dom, NULL, 0, 0) < 0)
        lv_errno("thaw the filesystems of", g->vm);
    else
        log_info("'%s': filesystems thawed after %llu ms", g->vm,
                 (unsigned long long) ((now_monotonic_ns() - g->since_ns) / 1000000));
    g->frozen = false;
}

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

static const char *
state_dir(void)
{
    const char *base = getenv("VMSNAPFS_STATE_DIR");
    return base && *base ? base : "/var/lib/vmsnapfs";
}

/* A private directory QEMU's user may write (it makes the socket and the
 * scratch files there): mode 0700, owned by that user. */
static int
live_dir(char **ret)
{
    const char *base = state_dir();
    char *dir = NULL;

    if (mkdir(base, 0711) < 0 && errno != EEXIST)
        return log_error_errno(-errno, "cannot make '%s': %s", base, strerror(errno));
    /* the daemon's pid in the name: a later daemon can tell a dead one's */
    if (asprintf(&dir, "%s/live-%d-XXXXXX", base, (int) getpid()) < 0)
        return -ENOMEM;
    if (!mkdtemp(dir)) {
        int r = log_error_errno(-errno, "cannot make '%s': %s", dir, strerror(errno));
        free(dir);
        return r;
    }
    struct passwd *pw = getpwnam("libvirt-qemu");
    if (!pw)
        pw = getpwnam("qemu");
    if (pw && chown(dir, pw->pw_uid, pw->pw_gid) < 0)
        log_warning("cannot give '%s' to QEMU's user: %s", dir, strerror(errno));
    *ret = dir;
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
    if (l->dom)
        virDomainFree(l->dom);
    free(l->socket);
    free(l->dir);
    free(l->vm);
    free(l);
}

/* Ends the VM's backup job. Called with live_lock held. */
static void
live_end(struct lv_live *l)
{
    if (virDomainAbortJob(l->dom) < 0)
        lv_errno("end the backup job of", l->vm);
    else
        log_debug("'%s': backup job ended", l->vm);
    live_free(l);
}

/* Freeze (if an agent answers), start the backup job, thaw. Called with
 * live_lock held. */
static int
live_start(struct lv *lv, virConnectPtr c, const struct vm_info *vm,
           struct lv_live **ret)
{
    struct lv_live *l = calloc(1, sizeof *l);
    _cleanup_free_ char *xml = NULL;
    int r = 0;

    if (!l)
        return -ENOMEM;
    l->lv = lv;
    l->vm = strdup(vm->name);
    l->dom = lv_lookup(c, vm->name, &r);
    if (!l->vm || !l->dom) {
        live_free(l);
        return r < 0 ? r : -ENOMEM;
    }
    r = live_dir(&l->dir);
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
        _cleanup_(freeze_guard_release) struct freeze_guard g = {
            .dom = l->dom, .vm = vm->name,
        };
        if (vm->agent) {
            g.since_ns = now_monotonic_ns();
            if (virDomainFSFreeze(l->dom, NULL, 0, 0) >= 0)
                g.frozen = true;
            else
                log_warning("'%s': cannot freeze the filesystems (%s): the "
                            "view is crash-consistent", vm->name,
                            virGetLastErrorMessage());
        }
        if (virDomainBackupBegin(l->dom, xml, NULL, 0) < 0)
            r = lv_errno("start a backup job (point-in-time view) of", vm->name);
    }   /* thawed here, whatever happened */

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
    hashmap_remove(lv->lives, l->vm);
    live_end(l);
}

static int
live_view(struct lv *lv, virConnectPtr c, const struct vm_info *vm,
          const struct volume *v, struct volume_view **ret)
{
    struct lv_live *l;
    uint64_t size = 0, allocated = 0;
    int r;

    /* st_blocks as the disk is now (a running VM's image: read shared) */
    (void) volume_chain_usage(v->source, v->format, &size, &allocated);
    {
        LOCK_FOR_SCOPE(&lv->live_lock);
        l = hashmap_get(lv->lives, vm->name);
        if (!l) {
            r = live_start(lv, c, vm, &l);
            if (r < 0)
                return r;
            if (hashmap_put(lv->lives, vm->name, l, NULL) < 0) {
                live_end(l);
                return -ENOMEM;
            }
        }
        l->refs++;
    }
    return volume_view_open_nbd(l->socket, v->name, allocated, live_release, l, ret);
}

/* ---- open views per VM (rmdir of a snapshot waits for them: EBUSY) ------ */

struct view_ref {
    struct lv *lv;
    char vm[];
};

static struct view_ref *
views_enter(struct lv *lv, const char *vm)
{
    struct view_ref *v = malloc(sizeof *v + strlen(vm) + 1);

    if (!v)
        return NULL;
    v->lv = lv;
    strcpy(v->vm, vm);
    LOCK_FOR_SCOPE(&lv->lock);
    uintptr_t n = (uintptr_t) hashmap_get(lv->views, vm);
    if (hashmap_put(lv->views, vm, (void *) (n + 1), NULL) < 0) {
        free(v);
        return NULL;
    }
    return v;
}

static void
views_leave(void *opaque)
{
    struct view_ref *v = opaque;
    {
        LOCK_FOR_SCOPE(&v->lv->lock);
        uintptr_t n = (uintptr_t) hashmap_get(v->lv->views, v->vm);
        if (n <= 1)
            hashmap_remove(v->lv->views, v->vm);
        else
            hashmap_put(v->lv->views, v->vm, (void *) (n - 1), NULL);
    }
    free(v);
}

bool
lv_vm_has_views(struct lv *lv, const char *vm)
{
    {
        LOCK_FOR_SCOPE(&lv->live_lock);
        if (hashmap_get(lv->lives, vm))
            return true;
    }
    LOCK_FOR_SCOPE(&lv->lock);
    return hashmap_get(lv->views, vm) != NULL;
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
        r = snapshot_layer(lv, ref, snap, vol, &path, &format);
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
        struct view_ref *vr = views_enter(lv, ref->name);
        if (!vr)
            return -ENOMEM;
        return volume_view_open_chain(path, format, views_leave, vr, ret);
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
        r = live_view(lv, c, vm, v, ret);
    else {
        struct view_ref *vr = views_enter(lv, ref->name);
        r = vr ? volume_view_open_chain(v->source, v->format, views_leave, vr, ret)
               : -ENOMEM;
    }
    vm_info_free(vm);
    return r;
}

/* The pid in ".../live-PID-XXXXXX" if path is a live view directory of
 * ours, else 0. */
static pid_t
live_dir_pid(const char *path)
{
    const char *base = state_dir();
    size_t n = strlen(base);
    char *end;

    if (strncmp(path, base, n) != 0 || strncmp(path + n, "/live-", 6) != 0)
        return 0;
    long pid = strtol(path + n + 6, &end, 10);
    return *end == '-' && pid > 0 ? (pid_t) pid : 0;
}

static bool
process_alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* A daemon killed with SIGKILL leaves its backup jobs running (and their
 * scratch files growing): end those whose daemon is gone, at start. */
void
lv_end_stale_jobs(struct lv *lv)
{
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(lv);
    virDomainPtr *doms = NULL;
    int n;

    if (!c)
        return;
    n = virConnectListAllDomains(c, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
    for (int i = 0; i < n; i++) {
        _cleanup_free_ char *xml = virDomainBackupGetXMLDesc(doms[i], 0);
        _cleanup_free_ char *dir = NULL;
        const char *sock = xml ? strstr(xml, "socket='") : NULL;
        if (!xml) {
            virResetLastError();      /* no backup job: the usual case */
        } else if (sock && (dir = strndup(sock + 8, strcspn(sock + 8, "'")))) {
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = '\0';
            pid_t pid = live_dir_pid(dir);
            if (pid > 0 && pid != getpid() && !process_alive(pid)) {
                log_warning("'%s': ending the backup job of a vmsnapfs that is "
                            "gone (pid %d)", virDomainGetName(doms[i]), (int) pid);
                if (virDomainAbortJob(doms[i]) < 0)
                    lv_errno("end the stale backup job of", virDomainGetName(doms[i]));
                remove_dir(dir);
            }
        }
        virDomainFree(doms[i]);
    }
    free(doms);
    if (n < 0)
        virResetLastError();
}
