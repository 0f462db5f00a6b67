/* core/image/view-chain.c: the chain view (see volume.h). The layer files are
 * opened first, then mapped; every read is checked afterwards against the
 * layers' size and mtime as they were at open, so data that changed during
 * the view is never served: the read fails with -EIO instead. */
#define LOG_MODULE "volume"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "change-map.h"
#include "cleanup.h"
#include "layers.h"
#include "log.h"
#include "nbd-client.h"
#include "qemu-img.h"
#include "qemu-nbd.h"
#include "volume.h"

struct layer {
    int fd;
    struct timespec mtime;
    off_t size;
    dev_t dev;
    ino_t ino;
    bool regular;           /* a file: changes show in size and mtime */
};

struct chain_view {
    struct volume_view base;
    struct chain *chain;
    struct extent_map *map;
    struct layer *layers;

    pthread_mutex_t qlock;          /* protects the QEMU reader below */
    struct qemu_nbd *server;        /* started at the first EXTENT_QEMU read */
    struct nbd_client *nbd;
    bool changed;                   /* atomic: a layer changed; stays so */
    void (*on_close)(void *);
    bool (*unchanged)(void *);      /* for block devices, where fstat can't tell */
    void *opaque;
};

static bool
layer_changed(const struct layer *l)
{
    struct stat st;
    if (!l->regular)
        return false;           /* see unchanged() */
    return fstat(l->fd, &st) < 0 || st.st_size != l->size ||
           st.st_mtim.tv_sec != l->mtime.tv_sec ||
           st.st_mtim.tv_nsec != l->mtime.tv_nsec;
}

static bool
any_layer_changed(const struct chain_view *cv)
{
    bool devices = false;
    for (size_t i = 0; i < cv->chain->n; i++) {
        if (layer_changed(&cv->layers[i]))
            return true;
        devices |= !cv->layers[i].regular;
    }
    return devices && cv->unchanged && !cv->unchanged(cv->opaque);
}

/* Do the paths still name the files we opened? (qemu-img and qemu-nbd open
 * them by path: a file renamed over one would make them describe another.) */
static bool
paths_moved(const struct chain_view *cv)
{
    for (size_t i = 0; i < cv->chain->n; i++) {
        struct stat st;
        if (stat(cv->chain->layers[i], &st) < 0 || st.st_dev != cv->layers[i].dev ||
            st.st_ino != cv->layers[i].ino)
            return true;
    }
    return false;
}

/* qemu-nbd for what only QEMU reads; started at open where the map has
 * such extents, so it opens the same files we did (checked). */
static int
qemu_reader_start(struct chain_view *cv)
{
    int r = qemu_nbd_start(cv->chain->layers[0], cv->chain->formats[0], "disk",
                           &cv->server);
    if (r >= 0)
        r = nbd_client_open(qemu_nbd_socket(cv->server), "disk", 4, &cv->nbd);
    if (r >= 0 && paths_moved(cv))
        r = log_error_errno(-EIO, "'%s' was replaced while being opened",
                            cv->chain->layers[0]);
    return r;
}

static int
full_pread(int fd, void *buf, size_t count, uint64_t off)
{
    char *p = buf;
    while (count > 0) {
        ssize_t n = pread(fd, p, count, (off_t) off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) {
            /* a raw file's last partial sector reads as zeros; anything
             * more missing is not what qemu mapped */
            if (count >= 512)
                return -EIO;
            memset(p, 0, count);
            return 0;
        }
        p += n;
        count -= (size_t) n;
        off += (uint64_t) n;
    }
    return 0;
}

static int
chain_check(struct volume_view *v, const char **ret_reason)
{
    struct chain_view *cv = (struct chain_view *) v;

    if (!__atomic_load_n(&cv->changed, __ATOMIC_ACQUIRE) && !any_layer_changed(cv))
        return 0;
    if (!__atomic_exchange_n(&cv->changed, true, __ATOMIC_ACQ_REL))
        log_error("'%s' changed under an open view", cv->chain->layers[0]);
    *ret_reason = "the disk changed while it was being read (the VM started, "
                  "or another tool wrote it); open it again";
    return -EIO;
}

static int
chain_pread(struct volume_view *v, void *buf, size_t count, uint64_t off,
            const char **ret_reason)
{
    struct chain_view *cv = (struct chain_view *) v;
    char *p = buf;
    int r;

    while (count > 0) {
        const struct extent *e = extent_find(cv->map, off);
        if (!e) {
            memset(p, 0, count);
            break;
        }
        size_t n = e->start + e->length - off < count ? (size_t) (e->start + e->length - off)
                                                      : count;
        switch (e->kind) {
        case EXTENT_ZERO:
            memset(p, 0, n);
            r = 0;
            break;
        case EXTENT_FILE:
            r = full_pread(cv->layers[e->layer].fd, p, n, e->offset + (off - e->start));
            if (r < 0) {
                *ret_reason = "reading a layer file failed";
                return log_error_errno(-EIO, "read of '%s' at %llu: %s",
                                       cv->chain->layers[e->layer],
                                       (unsigned long long) off, strerror(-r));
            }
            break;
        default: {
            r = cv->nbd ? nbd_client_pread(cv->nbd, p, n, off) : -EIO;
            if (r < 0) {
                *ret_reason = "reading through qemu-nbd failed";
                return -EIO;
            }
        }
        }
        p += n;
        off += n;
        count -= n;
    }
    return chain_check(v, ret_reason);
}

static int
chain_segments(struct volume_view *v, size_t count, uint64_t off,
               struct volume_segment *seg, size_t max, const char **ret_reason)
{
    struct chain_view *cv = (struct chain_view *) v;
    size_t n = 0;
    int r = chain_check(v, ret_reason);

    if (r < 0)
        return r;
    while (count > 0) {
        const struct extent *e = extent_find(cv->map, off);
        size_t len = count;
        int fd = -1;
        uint64_t at = 0;

        if (e) {
            if (e->start + e->length - off < count)
                len = (size_t) (e->start + e->length - off);
            if (e->kind == EXTENT_FILE) {
                const struct layer *l = &cv->layers[e->layer];
                at = e->offset + (off - e->start);
                /* a splice short of what was asked ends the reply early:
                 * only what lies wholly in the file (a raw layer's last
                 * partial sector is read with pread) */
                if (!l->regular || at + len > (uint64_t) l->size)
                    return -EAGAIN;
                fd = l->fd;
            } else if (e->kind != EXTENT_ZERO) {
                return -EAGAIN;
            }
        }
        if (n > 0 && seg[n - 1].fd == fd && (fd < 0 || seg[n - 1].offset + seg[n - 1].length == at)) {
            seg[n - 1].length += len;
        } else {
            if (n == max)
                return -EAGAIN;
            seg[n++] = (struct volume_segment) { .fd = fd, .offset = at, .length = len };
        }
        off += len;
        count -= len;
    }
    return (int) n;
}

static int
chain_seek(struct volume_view *v, uint64_t off, int whence, uint64_t *ret)
{
    return extent_seek(((struct chain_view *) v)->map, off, whence, ret);
}

static void
chain_close(struct volume_view *v)
{
    struct chain_view *cv = (struct chain_view *) v;

    if (!cv)
        return;
    nbd_client_close(cv->nbd);
    qemu_nbd_stop(cv->server);
    for (size_t i = 0; cv->layers && cv->chain && i < cv->chain->n; i++)
        if (cv->layers[i].fd >= 0)
            close(cv->layers[i].fd);
    free(cv->layers);
    extent_map_free(cv->map);
    chain_free(cv->chain);
    pthread_mutex_destroy(&cv->qlock);
    if (cv->on_close)
        cv->on_close(cv->opaque);
    free(cv);
}

static const struct volume_view_ops chain_ops = {
    .name = "chain",
    .pread = chain_pread,
    .seek = chain_seek,
    .close = chain_close,
    .check = chain_check,
    .segments = chain_segments,
};

/* The ranges of m that a layer above depth base wrote (data or zeros), as
 * a change map; every other range of m becomes a hole. */
static int
keep_changes(struct extent_map *m, unsigned base, struct change_map **ret)
{
    struct change_map *c = calloc(1, sizeof *c);

    if (!c || !(c->v = calloc(m->n ? m->n : 1, sizeof *c->v))) {
        free(c);
        return -ENOMEM;
    }
    c->size = m->size;
    m->allocated = 0;
    m->needs_qemu = false;
    for (size_t i = 0; i < m->n; i++) {
        struct extent *e = &m->v[i];
        if (e->depth >= base) {
            e->kind = EXTENT_ZERO;      /* as it was at the base: not here */
            continue;
        }
        /* a layer above the base says what it holds: data, or zeros (also
         * where it is unallocated past a shorter backing file) */
        bool zero = e->kind == EXTENT_ZERO;
        if (!zero)
            m->allocated += e->length;
        m->needs_qemu |= e->kind == EXTENT_QEMU;
        struct change_extent *last = c->n ? &c->v[c->n - 1] : NULL;
        if (last && last->zero == zero && last->offset + last->length == e->start)
            last->length += e->length;
        else
            c->v[c->n++] = (struct change_extent) { e->start, e->length, zero };
    }
    *ret = c;
    return 0;
}

/* Where base lies in chain c, below its top: its depth, or -ENOENT. */
static int
base_depth(const struct chain *c, const char *base, unsigned *ret)
{
    _cleanup_free_ char *want = layer_canonical(base);

    if (!want)
        return -ENOMEM;
    for (size_t i = 1; i < c->n; i++) {
        _cleanup_free_ char *have = layer_canonical(c->layers[i]);
        if (have && strcmp(have, want) == 0) {
            *ret = (unsigned) i;
            return 0;
        }
    }
    return -ENOENT;         /* the caller tells why */
}

int
volume_chain_changes(const char *path, const char *format, const char *base,
                     struct change_map **ret)
{
    _cleanup_(chain_freep) struct chain *c = NULL;
    struct extent_map *m = NULL;
    unsigned depth = 0;
    int r = qemu_img_chain(path, format, &c);

    if (r >= 0)
        r = base_depth(c, base, &depth);
    if (r >= 0)
        r = qemu_img_map(c, &m);
    if (r >= 0)
        r = keep_changes(m, depth, ret);
    extent_map_free(m);
    return r;
}

/* The chain view, or with base (a layer of the chain below its top) the
 * view of what changed above base: see volume.h. */
static int
open_chain(const char *path, const char *format, const char *base,
           void (*on_close)(void *), bool (*unchanged)(void *), void *opaque,
           struct volume_view **ret, struct change_map **ret_changes)
{
    struct chain_view *cv = calloc(1, sizeof *cv);
    int r;

    if (!cv) {
        if (on_close)
            on_close(opaque);
        return -ENOMEM;
    }
    cv->on_close = on_close;
    cv->unchanged = unchanged;
    cv->opaque = opaque;
    cv->base.ops = &chain_ops;
    pthread_mutex_init(&cv->qlock, NULL);
    r = qemu_img_chain(path, format, &cv->chain);
    if (r < 0)
        goto fail;
    cv->layers = calloc(cv->chain->n, sizeof *cv->layers);
    if (!cv->layers) {
        r = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < cv->chain->n; i++)
        cv->layers[i].fd = -1;
    /* open first, then map: the map describes what the fds hold */
    for (size_t i = 0; i < cv->chain->n; i++) {
        struct stat st;
        struct layer *l = &cv->layers[i];
        l->fd = open(cv->chain->layers[i], O_RDONLY | O_CLOEXEC);
        if (l->fd < 0 || fstat(l->fd, &st) < 0) {
            r = log_error_errno(-errno, "cannot open layer '%s': %s",
                                cv->chain->layers[i], strerror(errno));
            goto fail;
        }
        l->size = st.st_size;
        l->mtime = st.st_mtim;
        l->dev = st.st_dev;
        l->ino = st.st_ino;
        l->regular = S_ISREG(st.st_mode);
        (void) posix_fadvise(l->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    r = qemu_img_map(cv->chain, &cv->map);
    if (r < 0)
        goto fail;
    if (base) {
        unsigned depth = 0;
        r = base_depth(cv->chain, base, &depth);
        if (r >= 0)
            r = keep_changes(cv->map, depth, ret_changes);
        if (r < 0)
            goto fail;
    }
    if (cv->chain->qemu_only)
        for (size_t i = 0; i < cv->map->n; i++)
            if (cv->map->v[i].kind == EXTENT_FILE)
                cv->map->v[i].kind = EXTENT_QEMU;
    if (cv->map->needs_qemu) {
        r = qemu_reader_start(cv);
        if (r < 0)
            goto fail;
    }
    if (any_layer_changed(cv) || paths_moved(cv)) {
        r = log_error_errno(-EIO, "'%s' changed while it was being mapped", path);
        goto fail;
    }
    cv->base.size = cv->map->size;
    cv->base.allocated = cv->map->allocated;
    *ret = &cv->base;
    return 0;
fail:
    if (ret_changes) {
        change_map_free(*ret_changes);
        *ret_changes = NULL;
    }
    chain_close(&cv->base);
    return r;
}

int
volume_view_open_chain(const char *path, const char *format,
                       void (*on_close)(void *), bool (*unchanged)(void *),
                       void *opaque, struct volume_view **ret)
{
    return open_chain(path, format, NULL, on_close, unchanged, opaque, ret, NULL);
}

int
volume_view_open_changes(const char *path, const char *format, const char *base,
                         void (*on_close)(void *), void *opaque, struct volume_view **ret,
                         struct change_map **ret_changes)
{
    *ret_changes = NULL;
    return open_chain(path, format, base, on_close, NULL, opaque, ret, ret_changes);
}

int
volume_chain_usage(const char *path, const char *format, uint64_t *ret_size,
                   uint64_t *ret_allocated)
{
    _cleanup_(chain_freep) struct chain *c = NULL;
    struct extent_map *m = NULL;
    int r = qemu_img_chain(path, format, &c);

    if (r >= 0)
        r = qemu_img_map(c, &m);
    if (r < 0)
        return r;
    *ret_size = m->size;
    *ret_allocated = m->allocated;
    extent_map_free(m);
    return 0;
}
