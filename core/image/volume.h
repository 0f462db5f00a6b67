/* core/image/volume.h: an open, read-only, point-in-time view of one disk, as a
 * raw image: what volumes/NAME.img serves from open to last close.
 *
 * Views are a table of ops. The chain view (stopped VMs, snapshot layers)
 * reads the layer files with pread through an extent map, with qemu-nbd
 * for what only QEMU can read; it fails reads with -EIO, never serves a
 * torn mix, if a layer changes under it (the VM was started). The NBD view
 * reads an export (a running VM's backup job).
 *
 * Thread model: views are thread-safe; pread and seek may run in parallel.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct volume_view;

/* Where a range of a view lies: length bytes of fd at offset, or zeros
 * (fd -1). */
struct volume_segment {
    int fd;
    uint64_t offset;
    size_t length;
};

struct volume_view_ops {
    const char *name;
    /* exactly count bytes (the caller clamps to the size): 0 or -errno;
     * *ret_reason may be set to a static reason for the events file */
    int (*pread)(struct volume_view *v, void *buf, size_t count, uint64_t off,
                 const char **ret_reason);
    int (*seek)(struct volume_view *v, uint64_t off, int whence, uint64_t *ret);
    void (*close)(struct volume_view *v);
    /* optional: -EIO (and a reason) if what the view serves has changed
     * since it was opened */
    int (*check)(struct volume_view *v, const char **ret_reason);
    /* optional: count bytes at off where the view holds them in memory,
     * valid until release(v, pin), so that they are sent without a copy:
     * 0; -EAGAIN if they are not held so (pread them); else as pread,
     * with the same check that they are not torn */
    int (*peek)(struct volume_view *v, size_t count, uint64_t off, const void **ret_data,
                void **ret_pin, const char **ret_reason);
    void (*release)(struct volume_view *v, void *pin);
    /* optional: where count bytes at off lie, in at most max segments, so
     * that they are spliced to the reader without a copy: the number of
     * segments, after the check that the view has not changed so far;
     * -EAGAIN if they are not all in files (pread them); else as pread.
     * The data is read after this returns: check() after the reply tells
     * whether it changed meanwhile. */
    int (*segments)(struct volume_view *v, size_t count, uint64_t off,
                    struct volume_segment *seg, size_t max, const char **ret_reason);
};

struct volume_view {
    const struct volume_view_ops *ops;
    uint64_t size;
    uint64_t allocated;     /* bytes that hold data (st_blocks) */
    bool uncached;          /* serve without the page cache: another view
                               of the same file may show other content */
};

/* A view of the chain whose top is path (format: "qcow2", "raw", ...).
 * unchanged(opaque) (may be NULL) tells, for layers that are block devices
 * (whose changes fstat cannot see), whether their content may still be
 * trusted (e.g. the VM is still stopped). */
int volume_view_open_chain(const char *path, const char *format,
                           void (*on_close)(void *), bool (*unchanged)(void *),
                           void *opaque, struct volume_view **ret);
/* A view of what changed in the chain whose top is path since base, a
 * layer of that chain below its top (a snapshot's changes since an older
 * one): the ranges a layer above base wrote hold the chain's data (or
 * zeros, where it wrote zeros), every other range is a hole (SEEK_DATA and
 * SEEK_HOLE tell exactly the changed data; allocated counts it); and in
 * *ret_changes those ranges (its base name NULL: the caller's to set).
 * -ENOENT if base is not below the top of the chain. */
struct change_map;
/* Only the map of those changes, without a view (no file held open). */
int volume_chain_changes(const char *path, const char *format, const char *base,
                         struct change_map **ret);
int volume_view_open_changes(const char *path, const char *format, const char *base,
                             void (*on_close)(void *), void *opaque,
                             struct volume_view **ret, struct change_map **ret_changes);
/* A view of inner through change map m (volume_view_open_changes()'s
 * view, for a backend whose changes come as a map): m's data extents read
 * from inner, everything else (zero extents too) is a hole of zeros. inner
 * is closed with the view, or before a failed open returns (-EIO: its
 * size is not m's). */
int volume_view_open_masked(struct volume_view *inner, const struct change_map *m,
                            struct volume_view **ret);
/* A view of an NBD export. on_close(opaque), for both kinds of view, runs
 * exactly once: when the view is closed, or before a failed open returns. */
int volume_view_open_nbd(const char *socket, const char *export,
                         uint64_t allocated, void (*on_close)(void *),
                         void *opaque, struct volume_view **ret);

/* size and allocated bytes of a chain, without opening a view */
int volume_chain_usage(const char *path, const char *format,
                       uint64_t *ret_size, uint64_t *ret_allocated);

static inline int
volume_view_pread(struct volume_view *v, void *buf, size_t count, uint64_t off,
                  const char **ret_reason)
{
    return v->ops->pread(v, buf, count, off, ret_reason);
}

static inline int
volume_view_peek(struct volume_view *v, size_t count, uint64_t off, const void **ret_data,
                 void **ret_pin, const char **ret_reason)
{
    return v->ops->peek ? v->ops->peek(v, count, off, ret_data, ret_pin, ret_reason) : -EAGAIN;
}

static inline int
volume_view_segments(struct volume_view *v, size_t count, uint64_t off,
                     struct volume_segment *seg, size_t max, const char **ret_reason)
{
    return v->ops->segments ? v->ops->segments(v, count, off, seg, max, ret_reason) : -EAGAIN;
}

static inline void
volume_view_release(struct volume_view *v, void *pin)
{
    if (v->ops->release)
        v->ops->release(v, pin);
}

static inline int
volume_view_seek(struct volume_view *v, uint64_t off, int whence, uint64_t *ret)
{
    return v->ops->seek(v, off, whence, ret);
}

static inline int
volume_view_check(struct volume_view *v, const char **ret_reason)
{
    return v->ops->check ? v->ops->check(v, ret_reason) : 0;
}

static inline void
volume_view_close(struct volume_view *v)
{
    if (v)
        v->ops->close(v);
}
