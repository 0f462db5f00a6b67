/* core/sums-tap.c: a reader's view of a snapshot's disk that feeds its
 * sums on the way (sums.h: sums_tap). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "clock.h"
#include "sums-private.h"
#include "volume.h"

/* ---- a reader's view, feeding the sums ------------------------------------ */

struct tap {
    struct volume_view v;
    struct volume_view *inner;
    struct sums *s;
    struct entry *e;
    char *path;
};

/* The reader got len bytes at off (data: them, or NULL if it got them
 * without this process seeing them: spliced). */
static void
tap_feed(struct tap *t, const void *data, size_t len, uint64_t off)
{
    struct waiter *done = NULL;
    const char *text = NULL;
    {
        LOCK_FOR_SCOPE(&t->s->lock);
        struct sums_file *f = sums_file_of(t->e, t->path);
        if (!f || t->e->gone)
            return;
        f->reader_ns = now_monotonic_ns();
        if (off + len > f->reader_end)
            f->reader_end = off + len;
        if (!data)
            return;
        if (f->ctx && !f->hex[0] && off > f->pos && off - f->pos < AHEAD_WINDOW &&
            f->ahead_bytes + len <= AHEAD_MAX) {
            /* ahead of the hash: kept until it gets there */
            struct ahead *a = malloc(sizeof *a + len), **at = &f->ahead;
            if (a) {
                a->off = off;
                a->len = len;
                memcpy(a->data, data, len);
                while (*at && (*at)->off < off)
                    at = &(*at)->next;
                a->next = *at;
                *at = a;
                f->ahead_bytes += len;
            }
            return;
        }
        if (!f->size)
            f->size = t->inner->size;
        if (sums_feed(t->e, f, data, len, off, &done))
            text = t->e->text;
    }
    if (done)
        sums_tell_waiters(done, 0, text);
}

static int
tap_pread(struct volume_view *v, void *buf, size_t count, uint64_t off, const char **ret_reason)
{
    struct tap *t = (struct tap *) v;
    int r = volume_view_pread(t->inner, buf, count, off, ret_reason);
    if (r >= 0)
        tap_feed(t, buf, count, off);
    return r;
}

static int
tap_seek(struct volume_view *v, uint64_t off, int whence, uint64_t *ret)
{
    struct tap *t = (struct tap *) v;
    return t->inner->ops->seek(t->inner, off, whence, ret);
}

static int
tap_check(struct volume_view *v, const char **ret_reason)
{
    struct tap *t = (struct tap *) v;
    return t->inner->ops->check ? t->inner->ops->check(t->inner, ret_reason) : 0;
}

static int
tap_peek(struct volume_view *v, size_t count, uint64_t off, const void **ret_data,
         void **ret_pin, const char **ret_reason)
{
    struct tap *t = (struct tap *) v;
    int r = volume_view_peek(t->inner, count, off, ret_data, ret_pin, ret_reason);
    if (r >= 0)
        tap_feed(t, *ret_data, count, off);
    return r;
}

static void
tap_release(struct volume_view *v, void *pin)
{
    struct tap *t = (struct tap *) v;
    volume_view_release(t->inner, pin);
}

static int
tap_segments(struct volume_view *v, size_t count, uint64_t off, struct volume_segment *seg,
             size_t max, const char **ret_reason)
{
    struct tap *t = (struct tap *) v;
    /* spliced: the worker reads it after the reader, from the page cache */
    int r = volume_view_segments(t->inner, count, off, seg, max, ret_reason);
    if (r >= 0)
        tap_feed(t, NULL, count, off);
    return r;
}

static void
tap_close(struct volume_view *v)
{
    struct tap *t = (struct tap *) v;
    {
        LOCK_FOR_SCOPE(&t->s->lock);
        t->e->wanted--;
        sums_entry_unref(t->e);
    }
    volume_view_close(t->inner);
    free(t->path);
    free(t);
}

static const struct volume_view_ops tap_ops = {
    .name = "sums-tap",
    .pread = tap_pread,
    .seek = tap_seek,
    .close = tap_close,
    .check = tap_check,
    .peek = tap_peek,
    .release = tap_release,
    .segments = tap_segments,
};

struct volume_view *
sums_tap(struct sums *s, const char *ns, const char *vm, const char *snap, const char *path,
         struct volume_view *inner)
{
    struct entry *e = NULL;

    if (!s || sums_on_worker() || sums_entry_get(s, ns, vm, snap, &e) < 0)
        return inner;
    struct tap *t = calloc(1, sizeof *t);
    LOCK_FOR_SCOPE(&s->lock);
    if (!t || e->text || e->failed || !sums_file_of(e, path) || !(t->path = strdup(path))) {
        free(t);
        sums_entry_unref(e);
        return inner;
    }
    t->v = *inner;
    t->v.ops = &tap_ops;
    t->inner = inner;
    t->s = s;
    t->e = e;           /* the reference is the tap's */
    e->wanted++;        /* the worker takes this one first, behind the reader */
    struct sums_file *f = sums_file_of(e, path);
    f->reader_ns = now_monotonic_ns();     /* about to read: the worker waits for it */
    pthread_cond_broadcast(&s->cond);
    return &t->v;
}
