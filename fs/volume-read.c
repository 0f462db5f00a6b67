/* fs/volume-read.c: reads of volumes/NAME.img, the export path.
 *
 * Where the view tells where the bytes lie in files (the chain view), they
 * are spliced into the worker's pipe (every byte counted: a layer that
 * cannot be read is EIO, never a short reply) and libfuse moves the pipe's
 * pages to the kernel: the daemon copies nothing. The kernel's cache of the file is also filled
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
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>
#include <stdlib.h>
#include <time.h>

#include "cleanup.h"
#include "fs.h"
#include "log.h"

/* Zeros to send for holes (never written: they stay the zero page). */
static char zeros[VOLUME_IO_SIZE] __attribute__((aligned(4096)));

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

/* Each worker's pipe, which replies and stores are spliced into first, so
 * that every byte is counted: libfuse sends what a failed splice left out
 * as a short reply, which the kernel takes for the end of the file. */
struct pipe_pair {
    int r, w;
    size_t slots;           /* buffers it holds */
};

static pthread_key_t pipe_key;
static pthread_once_t pipe_once = PTHREAD_ONCE_INIT;

static void
pipe_free(void *opaque)
{
    struct pipe_pair *p = opaque;
    if (!p)
        return;
    close(p->r);
    close(p->w);
    free(p);
}

static void
pipe_key_make(void)
{
    (void) pthread_key_create(&pipe_key, pipe_free);
}

static struct pipe_pair *
thread_pipe(void)
{
    pthread_once(&pipe_once, pipe_key_make);
    struct pipe_pair *p = pthread_getspecific(pipe_key);
    int fds[2];

    if (p)
        return p;
    if (pipe2(fds, O_CLOEXEC) < 0)
        return NULL;
    /* 1 MiB: as far as a pipe grows without CAP_SYS_RESOURCE */
    int size = fcntl(fds[1], F_SETPIPE_SZ, (int) VOLUME_IO_SIZE);
    if (size < 0)
        size = fcntl(fds[1], F_GETPIPE_SZ);
    p = malloc(sizeof *p);
    if (size <= 0 || !p || pthread_setspecific(pipe_key, p) != 0) {
        close(fds[0]);
        close(fds[1]);
        free(p);
        return NULL;
    }
    *p = (struct pipe_pair) { .r = fds[0], .w = fds[1], .slots = (size_t) size / 4096 };
    return p;
}

static bool
pipe_empty(struct pipe_pair *p)
{
    int n = 0;
    return ioctl(p->r, FIONREAD, &n) == 0 && n == 0;
}

/* A pipe that may still hold bytes is not used again. */
static void
thread_pipe_drop(struct pipe_pair *p)
{
    (void) pthread_setspecific(pipe_key, NULL);
    pipe_free(p);
}

/* Fills this worker's pipe with the segments, every byte of them, and
 * returns it; else NULL and *ret: -EAGAIN where they may not fit it or a
 * file cannot be spliced (read them otherwise), -EIO (and *ret_reason) if
 * a layer could not be read. The pipe is never asked for more than it
 * holds, so no splice here waits for room. */
static struct pipe_pair *
fill_pipe(const struct volume_segment *seg, int n, int *ret, const char **ret_reason)
{
    struct pipe_pair *p = thread_pipe();
    size_t slots = 0;

    *ret = -EAGAIN;
    if (!p)
        return NULL;
    for (int i = 0; i < n; i++)     /* a range off page bounds takes one more */
        slots += (seg[i].length + 4095) / 4096 + 1;
    if (slots > p->slots)
        return NULL;
    for (int i = 0; i < n; i++) {
        loff_t off = (loff_t) seg[i].offset;
        size_t left = seg[i].length;
        while (left > 0) {
            ssize_t r;
            if (seg[i].fd < 0) {
                struct iovec iov = { zeros, left < sizeof zeros ? left : sizeof zeros };
                r = vmsplice(p->w, &iov, 1, 0);
            } else {
                r = splice(seg[i].fd, &off, p->w, NULL, left, 0);
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                int e = r < 0 ? errno : 0;
                thread_pipe_drop(p);
                if (e == EINVAL)
                    return NULL;        /* -EAGAIN: pread it */
                log_error("splice of a layer at %lld: %s", (long long) off,
                          e ? strerror(e) : "the file ends before its map does");
                *ret = -EIO;
                *ret_reason = "reading a layer file failed";
                return NULL;
            }
            left -= (size_t) r;
        }
    }
    *ret = 0;
    return p;
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
    int r;

    if (n < 0)
        return n;
    struct pipe_pair *p = fill_pipe(seg, n, &r, ret_reason);
    if (!p)
        return r;
    struct fuse_bufvec bv = FUSE_BUFVEC_INIT(count);
    bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_RETRY;
    bv.buf[0].fd = p->r;
    /* not all sent (the request was interrupted): what is left goes */
    if (fuse_reply_data(req, &bv, 0) != 0 || !pipe_empty(p))
        thread_pipe_drop(p);
    return 0;
}

/* Stores [off, off + count) in the kernel's cache of ino where it lies in
 * files; holes are left to reads. false if the kernel takes no more. */
static bool
store_range(struct fs *fs, fuse_ino_t ino, struct volume_view *v, uint64_t off, size_t count)
{
    struct volume_segment seg[MAX_SEGMENTS];
    const char *reason = NULL;
    int n = volume_view_segments(v, count, off, seg, MAX_SEGMENTS, &reason);
    int r;

    if (n < 0)
        return n == -EAGAIN;    /* not in files: left to reads */
    for (int i = 0; i < n; i++) {
        if (seg[i].fd >= 0) {
            struct pipe_pair *p = fill_pipe(&seg[i], 1, &r, &reason);
            if (!p)
                return r == -EAGAIN;
            struct fuse_bufvec bv = FUSE_BUFVEC_INIT(seg[i].length);
            bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_RETRY;
            bv.buf[0].fd = p->r;
            if (fuse_lowlevel_notify_store(fs->se, ino, (off_t) off, &bv, 0) != 0 ||
                !pipe_empty(p)) {
                thread_pipe_drop(p);
                return false;
            }
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

/* One pass of filling: from where the cache is filled (or the reader is,
 * if it is past that) to h->want_to, which reads move on meanwhile. One
 * page half way into the newest window is left out: the reader's read of
 * it says how far it got. false if this file is to get no more stores
 * (closed, the daemon stops, or the kernel took none). */
static bool
store_pass(struct fs *fs, fuse_ino_t ino, struct open_file *h)
{
    struct volume_view *v = h->view;

    for (;;) {
        uint64_t to = __atomic_load_n(&h->want_to, __ATOMIC_ACQUIRE);
        uint64_t end = __atomic_load_n(&h->read_end, __ATOMIC_ACQUIRE);
        uint64_t from = __atomic_load_n(&h->stored_to, __ATOMIC_ACQUIRE);
        if (from < end || from > to)
            from = end;         /* the reader went past, or back */
        if (from >= to) {
            __atomic_store_n(&h->stored_to, from, __ATOMIC_RELEASE);
            return true;
        }
        uint64_t beacon = (to - STORE_WINDOW / 2) & ~(uint64_t) 4095;
        advise_range(v, from, to);
        if (beacon >= from)
            __atomic_store_n(&h->beacon, beacon, __ATOMIC_RELEASE);
        while (from < to) {
            uint64_t stop = from + STORE_CHUNK < to ? from + STORE_CHUNK : to;
            bool ok;
            /* closed, or the daemon stops: no more */
            if (__atomic_load_n(&h->released, __ATOMIC_ACQUIRE) ||
                !__atomic_load_n(&fs->store_ahead, __ATOMIC_ACQUIRE) ||
                fuse_session_exited(fs->se))
                return false;
            if (beacon >= from && beacon < stop) {
                ok = store_range(fs, ino, v, from, (size_t) (beacon - from));
                if (ok && beacon + 4096 < stop)
                    ok = store_range(fs, ino, v, beacon + 4096, (size_t) (stop - beacon - 4096));
            } else {
                ok = store_range(fs, ino, v, from, (size_t) (stop - from));
            }
            if (!ok)
                return false;
            from = stop;
            __atomic_store_n(&h->stored_to, from, __ATOMIC_RELEASE);
        }
    }
}

/* After a read of [off, end) was answered: if it continues the reader's
 * last one (or is the page left out), the kernel's cache is to be filled
 * to STORE_WINDOW past end. One worker fills a file at a time; a read that
 * comes meanwhile moves its goal on. */
static void
store_ahead(struct fs *fs, fuse_ino_t ino, struct open_file *h, uint64_t off, uint64_t end)
{
    struct volume_view *v = h->view;
    uint64_t last = __atomic_exchange_n(&h->read_end, end, __ATOMIC_ACQ_REL);
    bool sequential = (off <= last + STORE_CHUNK && off + STORE_CHUNK >= last) ||
                      off == __atomic_load_n(&h->beacon, __ATOMIC_ACQUIRE);

    if (!__atomic_load_n(&fs->store_ahead, __ATOMIC_ACQUIRE) || v->uncached || !sequential ||
        __atomic_load_n(&h->store_off, __ATOMIC_ACQUIRE))
        return;
    /* end <= v->size, far from overflowing */
    uint64_t to = v->size - end > STORE_WINDOW ? end + STORE_WINDOW : v->size;
    uint64_t want = __atomic_load_n(&h->want_to, __ATOMIC_ACQUIRE);
    while (want < to && !__atomic_compare_exchange_n(&h->want_to, &want, to, false,
                                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        ;
    /* the worker that sets storing fills; it looks again after letting go,
     * so that a goal moved on just then is not left */
    for (int pass = 0; pass < 64 && !__atomic_exchange_n(&h->storing, true, __ATOMIC_ACQ_REL);
         pass++) {
        bool ok = true;
        if (__atomic_add_fetch(&stores_running, 1, __ATOMIC_ACQ_REL) <= STORES_MAX)
            ok = store_pass(fs, ino, h);
        __atomic_sub_fetch(&stores_running, 1, __ATOMIC_ACQ_REL);
        if (!ok)
            __atomic_store_n(&h->store_off, true, __ATOMIC_RELEASE);
        __atomic_store_n(&h->storing, false, __ATOMIC_RELEASE);
        if (!ok || __atomic_load_n(&h->stored_to, __ATOMIC_ACQUIRE) >=
                       __atomic_load_n(&h->want_to, __ATOMIC_ACQUIRE) ||
            __atomic_load_n(&stores_running, __ATOMIC_ACQUIRE) >= STORES_MAX)
            return;
    }
}

/* A change found after data was sent: see the top of the file. The check
 * logs it and stays failed (the next read, fs_flush). */
static int
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
    return r;
}

void
volume_read_stop(struct fs *fs)
{
    struct timespec pause = { 0, 10 * 1000 * 1000 };

    __atomic_store_n(&fs->store_ahead, false, __ATOMIC_RELEASE);
    /* a store may wait for a page that a read holds, which only a worker
     * answers: the workers stop after the stores do (at most 10 s) */
    for (int i = 0; i < 1000 && __atomic_load_n(&stores_running, __ATOMIC_ACQUIRE) > 0; i++)
        nanosleep(&pause, NULL);
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
        /* first: n may go once the reader closes */
        if (check_after_send(fs, ino, n, v) == 0)
            store_ahead(fs, ino, h, (uint64_t) off, (uint64_t) off + size);
        return;
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
