/* core/image/view-masked.c: a view of another view through a change map
 * (volume.h: volume_view_open_masked): the changed ranges read from it,
 * every other byte is a hole of zeros. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "change-map.h"
#include "volume.h"

struct masked_view {
    struct volume_view base;    /* first */
    struct volume_view *inner;
    struct change_extent *v;    /* the data extents only: zero ones are holes */
    size_t n;
};

/* The first data extent that ends after off (n if none). */
static size_t
first_after(const struct masked_view *mv, uint64_t off)
{
    size_t lo = 0, hi = mv->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (mv->v[mid].offset + mv->v[mid].length <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int
masked_pread(struct volume_view *v, void *buf, size_t count, uint64_t off,
             const char **ret_reason)
{
    struct masked_view *mv = (struct masked_view *) v;
    char *p = buf;
    uint64_t end = off + count;

    for (size_t i = first_after(mv, off); off < end; i++) {
        const struct change_extent *e = i < mv->n ? &mv->v[i] : NULL;
        uint64_t start = e && e->offset < end ? e->offset : end;
        if (start > off) {                      /* unchanged: zeros */
            memset(p, 0, start - off);
            p += start - off;
            off = start;
        }
        if (!e || off >= end)
            break;
        uint64_t stop = e->offset + e->length < end ? e->offset + e->length : end;
        int r = volume_view_pread(mv->inner, p, stop - off, off, ret_reason);
        if (r < 0)
            return r;
        p += stop - off;
        off = stop;
    }
    return 0;
}

static int
masked_seek(struct volume_view *v, uint64_t off, int whence, uint64_t *ret)
{
    struct masked_view *mv = (struct masked_view *) v;

    if (off >= v->size)
        return -ENXIO;
    size_t i = first_after(mv, off);
    if (whence == SEEK_DATA) {
        if (i >= mv->n)
            return -ENXIO;
        *ret = mv->v[i].offset > off ? mv->v[i].offset : off;
        return 0;
    }
    if (whence != SEEK_HOLE)
        return -EINVAL;
    if (i >= mv->n || mv->v[i].offset > off) {
        *ret = off;
        return 0;
    }
    /* the end of the run of adjacent data extents off is in */
    while (i + 1 < mv->n && mv->v[i + 1].offset == mv->v[i].offset + mv->v[i].length)
        i++;
    *ret = mv->v[i].offset + mv->v[i].length;
    return 0;
}

static int
masked_check(struct volume_view *v, const char **ret_reason)
{
    return volume_view_check(((struct masked_view *) v)->inner, ret_reason);
}

static void
masked_close(struct volume_view *v)
{
    struct masked_view *mv = (struct masked_view *) v;

    volume_view_close(mv->inner);
    free(mv->v);
    free(mv);
}

static const struct volume_view_ops masked_ops = {
    .name = "masked",
    .pread = masked_pread,
    .seek = masked_seek,
    .close = masked_close,
    .check = masked_check,
};

int
volume_view_open_masked(struct volume_view *inner, const struct change_map *m,
                        struct volume_view **ret)
{
    struct masked_view *mv = calloc(1, sizeof *mv);

    if (!mv || (m->n && !(mv->v = calloc(m->n, sizeof *mv->v)))) {
        free(mv);
        volume_view_close(inner);
        return -ENOMEM;
    }
    if (inner->size != m->size) {
        free(mv->v);
        free(mv);
        volume_view_close(inner);
        return -EIO;
    }
    mv->base.ops = &masked_ops;
    mv->base.size = m->size;
    mv->base.uncached = inner->uncached;
    mv->inner = inner;
    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i].zero)
            continue;
        mv->v[mv->n++] = m->v[i];
        mv->base.allocated += m->v[i].length;
    }
    *ret = &mv->base;
    return 0;
}
