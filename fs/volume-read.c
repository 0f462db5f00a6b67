/* fs/volume-read.c: reads of volumes/NAME.img, the export path.
 *
 * Where the view tells where the bytes lie in files (the chain view), the
 * reply is a bufvec of file ranges that libfuse splices to the kernel: the
 * daemon copies nothing. The kernel's cache of the file is also filled
 * ahead of a sequential reader (FUSE_NOTIFY_STORE, spliced the same way),
 * so that the reader's thread, which is what `cp` waits on, finds the pages
 * there instead of allocating them and waiting for a reply. Other views
 * reply from their memory (peek) or from a pread into a buffer.
 *
 * Changes under a reader: the chain view is checked before every reply and
 * store, and after them. Spliced data is read while it is sent, so a change
 * found after a reply cannot take it back: it fails the next read and the
 * close(2) of every reader of the view (fs_flush), is logged, and what the
 * kernel cached of the file is dropped.
 */
#define LOG_MODULE "fs"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

#include "cleanup.h"
#include "fs.h"
#include "log.h"

/* Zeros to send for holes (never written: they stay the zero page). */
static char zeros[VOLUME_IO_SIZE];

/* segments of one reply or store at most (more: read with pread) */
#define MAX_SEGMENTS 64

/* How far ahead of a sequential reader the kernel's cache is filled, in
 * stores of STORE_CHUNK. A splice must fit a pipe, and a pipe grows to
 * 1 MiB (fs/pipe-max-size) without CAP_SYS_RESOURCE: libfuse sends what
 * does not fit with a copy. */
#define STORE_WINDOW (32u << 20)
#define STORE_CHUNK (512u << 10)
/* Stores at once, over all files: each holds a worker, which may wait for
 * a page that a read being answered by another worker holds. */
#define STORES_MAX 4

static unsigned stores_running;     /* atomic */

static void
fill_fd_buf(struct fuse_buf *b, const struct volume_segment *seg)
{
    *b = (struct fuse_buf) {
        .size = seg->length,
        /* FD_RETRY: a short splice (a pipe that filled) goes on; without it
         * libfuse would send the reply short */
        .flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY,
        .fd = seg->fd,
        .pos = (off_t) seg->offset,
    };
}

/* Replies with count bytes at off of v where the view tells where they lie:
 * 0 once replied; else nothing was sent: -EAGAIN (read them otherwise) or
 * -errno (and *ret_reason). */
static int
reply_segments(fuse_req_t req, struct volume_view *v, size_t count, uint64_t off,
               const char **ret_reason)
{
    struct volume_segment seg[MAX_SEGMENTS];
    int n = volume_view_segments(v, count, off, seg, MAX_SEGMENTS, ret_reason);

    if (n < 0)
        return n;
    size_t bufs = 0;
    for (int i = 0; i < n; i++)
        bufs += seg[i].fd >= 0 ? 1 : (seg[i].length + sizeof zeros - 1) / sizeof zeros;
    _cleanup_free_ struct fuse_bufvec *bv = calloc(1, sizeof *bv + bufs * sizeof bv->buf[0]);
    if (!bv)
        return -EAGAIN;
    bv->count = bufs;
    size_t b = 0;
    for (int i = 0; i < n; i++) {
        if (seg[i].fd >= 0) {
            fill_fd_buf(&bv->buf[b++], &seg[i]);
            continue;
        }
        for (size_t left = seg[i].length; left > 0;) {
            size_t len = left < sizeof zeros ? left : sizeof zeros;
            bv->buf[b++] = (struct fuse_buf) { .size = len, .mem = zeros };
            left -= len;
        }
    }
    fuse_reply_data(req, bv, 0);
    return 0;
}

/* Stores what lies in files of [off, off + count) in the kernel's cache of
 * ino; holes are left to reads. false if the kernel took no more. */
static bool
store_range(struct fs *fs, fuse_ino_t ino, struct volume_view *v, uint64_t off, size_t count)
{
    struct volume_segment seg[MAX_SEGMENTS];
    const char *reason = NULL;
    int n = volume_view_segments(v, count, off, seg, MAX_SEGMENTS, &reason);

    if (n < 0)
        return n == -EAGAIN;    /* not in files: left to reads */
    for (int i = 0; i < n; i++) {
        if (seg[i].fd >= 0) {
            struct fuse_bufvec bv = FUSE_BUFVEC_INIT(seg[i].length);
            fill_fd_buf(&bv.buf[0], &seg[i]);
            if (fuse_lowlevel_notify_store(fs->se, ino, (off_t) off, &bv, 0) != 0)
                return false;
        }
        off += seg[i].length;
    }
    return true;
}

/* Asks the disk for the layers' blocks of [from, to) at once, so that a
 * cold copy has many reads in flight, as qemu-img has. */
static void
advise_range(struct volume_view *v, uint64_t from, uint64_t to)
{
    for (uint64_t at = from; at < to; at += STORE_CHUNK) {
        struct volume_segment seg[MAX_SEGMENTS];
        const char *reason = NULL;
        size_t len = to - at < STORE_CHUNK ? (size_t) (to - at) : STORE_CHUNK;
        int n = volume_view_segments(v, len, at, seg, MAX_SEGMENTS, &reason);
        for (int i = 0; i < n; i++)
            if (seg[i].fd >= 0)
                (void) posix_fadvise(seg[i].fd, (off_t) seg[i].offset,
                                     (off_t) seg[i].length, POSIX_FADV_WILLNEED);
    }
}

/* After a read of [off, end) was answered: if it continues the reader's
 * last one (or is the page left out below), the kernel's cache is filled
 * from where it was filled up to, to STORE_WINDOW past end. One page half
 * way is left out: the reader's read of it says how far it got. */
static void
store_ahead(struct fs *fs, fuse_ino_t ino, struct open_file *h, uint64_t off, uint64_t end)
{
    struct volume_view *v = h->view;
    uint64_t last = __atomic_exchange_n(&h->read_end, end, __ATOMIC_ACQ_REL);
    bool sequential = (off <= last + STORE_CHUNK && off + STORE_CHUNK >= last) ||
                      off == __atomic_load_n(&h->beacon, __ATOMIC_ACQUIRE);

    if (!fs->store_ahead || v->uncached || !sequential)
        return;
    if (__atomic_exchange_n(&h->storing, true, __ATOMIC_ACQ_REL))
        return;                 /* this file's store goes on meanwhile */
    if (__atomic_add_fetch(&stores_running, 1, __ATOMIC_ACQ_REL) > STORES_MAX)
        goto out;

    uint64_t from = h->stored_to > end && h->stored_to <= end + STORE_WINDOW ? h->stored_to : end;
    uint64_t to = end + STORE_WINDOW < v->size ? end + STORE_WINDOW : v->size;
    uint64_t beacon = (end + STORE_WINDOW / 2) & ~(uint64_t) 4095;
    bool ok = true;

    advise_range(v, from, to);
    if (beacon >= from && beacon < to)
        __atomic_store_n(&h->beacon, beacon, __ATOMIC_RELEASE);
    while (ok && from < to) {
        uint64_t stop = from + STORE_CHUNK < to ? from + STORE_CHUNK : to;
        if (beacon >= from && beacon < stop) {
            ok = store_range(fs, ino, v, from, (size_t) (beacon - from));
            if (ok && beacon + 4096 < stop)
                ok = store_range(fs, ino, v, beacon + 4096, (size_t) (stop - beacon - 4096));
        } else {
            ok = store_range(fs, ino, v, from, (size_t) (stop - from));
        }
        from = stop;
    }
    h->stored_to = from;
out:
    __atomic_sub_fetch(&stores_running, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&h->storing, false, __ATOMIC_RELEASE);
}

/* A change found after data was sent: see the top of the file. The check
 * logs it and stays failed (the next read, fs_flush). */
static void
check_after_send(struct fs *fs, fuse_ino_t ino, const struct fs_node *n,
                 struct volume_view *v)
{
    const char *reason = NULL;
    int r = volume_view_check(v, &reason);

    if (r < 0) {
        events_add(model_events(fs->model), n->ns, n->vm, "read-volume", n->vol, r, "%s",
                   reason ? reason : "the disk changed");
        notify_inval_inode(fs, ino);
    }
}

void
volume_read(fuse_req_t req, struct fs *fs, fuse_ino_t ino, const struct fs_node *n,
            struct open_file *h, size_t size, off_t off)
{
    struct volume_view *v = h->view;
    const char *reason = NULL;
    int r;

    fs_trace("read", "'%s' %zu at %lld", n->vol, size, (long long) off);
    if (off < 0 || (uint64_t) off >= v->size)
        return (void) fuse_reply_buf(req, NULL, 0);
    if (size > v->size - (uint64_t) off)
        size = (size_t) (v->size - (uint64_t) off);
    /* in files: spliced from there, no copy in the daemon */
    r = reply_segments(req, v, size, (uint64_t) off, &reason);
    if (r == 0) {
        store_ahead(fs, ino, h, (uint64_t) off, (uint64_t) off + size);
        return check_after_send(fs, ino, n, v);
    }
    /* held in the view's memory: sent from there, no copy */
    const void *data = NULL;
    void *pin = NULL;
    if (r == -EAGAIN)
        r = volume_view_peek(v, size, (uint64_t) off, &data, &pin, &reason);
    if (r == 0) {
        fuse_reply_buf(req, data, size);
        volume_view_release(v, pin);
        return;
    }
    _cleanup_free_ char *buf = NULL;
    if (r == -EAGAIN) {
        buf = malloc(size);
        if (!buf)
            return (void) fuse_reply_err(req, ENOMEM);
        /* checked after the read: data that changed meanwhile is not served */
        r = volume_view_pread(v, buf, size, (uint64_t) off, &reason);
    }
    if (r < 0) {
        events_add(model_events(fs->model), n->ns, n->vm, "read-volume", n->vol,
                   r, "%s", reason ? reason : "the backend failed");
        return (void) fuse_reply_err(req, -r);
    }
    fuse_reply_buf(req, buf, size);
}
