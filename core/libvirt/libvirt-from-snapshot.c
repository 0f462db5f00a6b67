/* core/libvirt/libvirt-from-snapshot.c: see libvirt-from-snapshot.h. */
#define LOG_MODULE "restore"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "layers.h"
#include "libvirt-from-snapshot.h"
#include "log.h"
#include "qemu-img.h"
#include "subprocess.h"

/* 32 random hex digits: a clone's firmware serial, a restore's id. */
void
lv_random_hex(char buf[33])
{
    unsigned char b[16] = { 0 };
    _cleanup_close_ int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, b, sizeof b) != (ssize_t) sizeof b) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(b, &ts, sizeof ts < sizeof b ? sizeof ts : sizeof b);
    }
    for (size_t i = 0; i < 16; i++)
        snprintf(buf + 2 * i, 3, "%02x", b[i]);
}

/* "/dir/vm.vda.snap.qcow2" beside the disk's current top */
static char *
overlay_path(const char *top, const char *vm, const char *disk, const char *what,
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

char *
lv_overlay_name(const char *top, const char *vm, const char *disk, const char *what)
{
    char rnd[33];

    lv_random_hex(rnd);
    rnd[8] = '\0';
    return overlay_path(top, vm, disk, what, rnd);
}

/* A new qcow2 on layer (of format fmt) at path, recorded as ours first.
 * The file is made by this process, exclusively, relative to its opened
 * directory, never through a symlink, private to root from birth (it holds
 * the guest's data); qemu-img then writes its header through that very
 * file (/proc/self/fd), not through its name. */
int
lv_make_overlay(const char *path, const char *layer, const char *fmt)
{
    _cleanup_free_ char *dir = strdup(path);
    char *slash = dir ? strrchr(dir, '/') : NULL;

    if (!slash || !slash[1])
        return log_error_errno(-EINVAL, "'%s': not a file path", path);
    *slash = '\0';
    const char *base = slash + 1;
    _cleanup_close_ int dfd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return log_error_errno(-errno, "cannot open the directory of '%s': %s", path,
                               strerror(errno));
    int r = layer_mine_add(path);
    if (r < 0)
        return r;
    _cleanup_close_ int fd = openat(dfd, base, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
                                                   O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
        layer_mine_remove(path);
        return log_error_errno(r == -EEXIST ? -EEXIST : r, "cannot make '%s'%s: %s", path,
                               r == -EEXIST ? " (a file or link of that name exists)" : "",
                               strerror(-r));
    }
    char via[64];
    snprintf(via, sizeof via, "/proc/%d/fd/%d", (int) getpid(), fd);
    char *argv[] = { (char *) "qemu-img", (char *) "create", (char *) "-q", (char *) "-f",
                     (char *) "qcow2", (char *) "-F", (char *) fmt, (char *) "-b",
                     (char *) layer, via, NULL };
    r = spawn_capture("qemu-img", argv, 60 * 1000, 1 << 16, NULL);
    if (r < 0) {
        (void) unlinkat(dfd, base, 0);
        layer_mine_remove(path);
        return log_error_errno(-EIO, "cannot make the overlay '%s' on '%s'", path, layer);
    }
    return 0;
}

void
lv_drop_overlays(char *const *v)
{
    for (size_t i = 0; v && v[i]; i++) {
        if (unlink(v[i]) < 0 && errno != ENOENT)
            log_warning("cannot remove '%s': %s", v[i], strerror(errno));
        else
            layer_mine_remove(v[i]);
    }
}

void
lv_source_clear(struct lv_source *sp)
{
    for (size_t i = 0; i < sp->n; i++) {
        free(sp->disks[i].name);
        free(sp->disks[i].layer);
        free(sp->disks[i].format);
    }
    free(sp->disks);
    strv_free(sp->missing);
    lv_xml_snapshot_clear(&sp->x);
    *sp = (struct lv_source) { 0 };
}

/* Reads snapshot snap of dom: its definition and the layer of each disk. */
int
lv_source_read(virDomainPtr dom, const char *snap, struct lv_source *sp, char *why,
                 size_t why_len)
{
    _cleanup_(virDomainSnapshotFreep) virDomainSnapshotPtr s =
        virDomainSnapshotLookupByName(dom, snap, 0);
    /* secure: what gets defined keeps its console passwords */
    _cleanup_free_ char *xml =
        s ? virDomainSnapshotGetXMLDesc(s, VIR_DOMAIN_SNAPSHOT_XML_SECURE) : NULL;

    *sp = (struct lv_source) { 0 };
    if (!s) {
        int r = lv_errno("find a snapshot of", virDomainGetName(dom));
        snprintf(why, why_len, "no such snapshot");
        return r;
    }
    if (!xml || lv_xml_snapshot_parse(xml, &sp->x) < 0) {
        virResetLastError();
        snprintf(why, why_len, "cannot read the snapshot from libvirt");
        return -EIO;
    }
    sp->def = sp->x.inactive_domain ? sp->x.inactive_domain : sp->x.domain;
    if (!sp->def) {
        snprintf(why, why_len, "the snapshot holds no definition of the VM");
        return -EIO;
    }
    if (sp->x.memory_internal) {
        snprintf(why, why_len, "an internal snapshot (made by another tool) cannot be "
                               "restored here");
        return -EIO;
    }
    sp->disks = calloc(sp->x.n_disks ? sp->x.n_disks : 1, sizeof *sp->disks);
    sp->missing = calloc(1, sizeof *sp->missing);
    if (!sp->disks || !sp->missing)
        return -ENOMEM;
    for (size_t i = 0; i < sp->x.n_disks; i++) {
        const struct volume *d = &sp->x.disks[i];
        if (d->flags & VOLUME_INTERNAL) {
            snprintf(why, why_len, "disk %s has an internal snapshot (made by another "
                                   "tool): it cannot be restored here", d->name);
            return -EIO;
        }
        if (d->flags & VOLUME_NOT_SNAPSHOTTED || !d->source)
            continue;
        _cleanup_(chain_freep) struct chain *ch = NULL;
        if (qemu_img_chain(d->source, "qcow2", &ch) < 0 || ch->n < 2) {
            if (strv_push(&sp->missing, &sp->n_missing, d->name) < 0)
                return -ENOMEM;
            continue;
        }
        struct lv_source_disk *t = &sp->disks[sp->n++];
        t->name = strdup(d->name);
        t->layer = strdup(ch->layers[1]);
        t->format = strdup(ch->formats[1]);
        if (!t->name || !t->layer || !t->format)
            return -ENOMEM;
    }
    return 0;
}

bool
lv_source_has(const struct lv_source *sp, const char *disk)
{
    for (size_t i = 0; i < sp->n; i++)
        if (strcmp(sp->disks[i].name, disk) == 0)
            return true;
    return false;
}

/* Is the restore's definition in place: does dom's saved definition bear
 * the restore's mark, or name any of its overlays? 1 yes, 0 no, -EIO if
 * that cannot be told now (then nothing may be dropped). */
int
lv_defines_overlays(virDomainPtr dom, const char *id, char *const *overlays)
{
    _cleanup_free_ char *xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
    struct volume *v = NULL;
    size_t n = 0;
    int found = 0;

    if (!xml || lv_xml_disks(xml, &v, &n) < 0) {
        virResetLastError();
        return -EIO;
    }
    _cleanup_free_ char *mark = lv_xml_restore_mark(xml);
    found = id && id[0] && mark && strcmp(mark, id) == 0;
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *src = v[i].source ? layer_canonical(v[i].source) : NULL;
        for (size_t j = 0; !found && src && overlays[j]; j++) {
            _cleanup_free_ char *ov = layer_canonical(overlays[j]);
            found = ov && strcmp(src, ov) == 0;
        }
        volume_clear(&v[i]);
    }
    free(v);
    return found;
}
