/* core/image/view-nbd.c: the NBD view (see volume.h): reads an NBD export, such
 * as the point-in-time export of a running VM's pull-mode backup job. */
#define LOG_MODULE "volume"

#include <errno.h>
#include <stdlib.h>

#include "log.h"
#include "nbd-client.h"
#include "volume.h"

struct nbd_view {
    struct volume_view base;
    struct nbd_client *nbd;
    void (*on_close)(void *);
    void *opaque;
};

static int
nbd_view_pread(struct volume_view *v, void *buf, size_t count, uint64_t off,
               const char **ret_reason)
{
    int r = nbd_client_pread(((struct nbd_view *) v)->nbd, buf, count, off);
    if (r < 0)
        *ret_reason = "reading the point-in-time export failed";
    return r;
}

static int
nbd_view_seek(struct volume_view *v, uint64_t off, int whence, uint64_t *ret)
{
    return nbd_client_seek(((struct nbd_view *) v)->nbd, off, whence, ret);
}

static void
nbd_view_close(struct volume_view *v)
{
    struct nbd_view *nv = (struct nbd_view *) v;

    if (!nv)
        return;
    nbd_client_close(nv->nbd);
    if (nv->on_close)
        nv->on_close(nv->opaque);
    free(nv);
}

static const struct volume_view_ops nbd_ops = {
    .name = "nbd",
    .pread = nbd_view_pread,
    .seek = nbd_view_seek,
    .close = nbd_view_close,
};

int
volume_view_open_nbd(const char *socket, const char *export, uint64_t allocated,
                     void (*on_close)(void *), void *opaque,
                     struct volume_view **ret)
{
    struct nbd_view *nv = calloc(1, sizeof *nv);
    int r;

    /* on_close runs exactly once: at close, or here on failure */
    if (!nv) {
        if (on_close)
            on_close(opaque);
        return -ENOMEM;
    }
    nv->base.ops = &nbd_ops;
    r = nbd_client_open(socket, export, 4, &nv->nbd);
    if (r < 0) {
        free(nv);
        if (on_close)
            on_close(opaque);
        return r;
    }
    nv->base.size = nbd_client_size(nv->nbd);
    nv->base.allocated = allocated ? allocated : nv->base.size;
    /* a live disk: what the page cache holds of an earlier view (or of
     * the stopped disk) is another point in time */
    nv->base.uncached = true;
    nv->on_close = on_close;
    nv->opaque = opaque;
    *ret = &nv->base;
    return 0;
}
