/* core/image/nbd-client.c: see nbd-client.h. */
#define LOG_MODULE "nbd"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "cleanup.h"
#include "log.h"
#include "nbd-client.h"

#define NBD_MAX_CONNS 4

struct nbd_client {
    char *socket;
    char *export;
    uint64_t size;
    unsigned max;
    pthread_mutex_t lock;       /* protects the pool */
    pthread_cond_t cond;
    struct nbd_handle *idle[NBD_MAX_CONNS];
    unsigned n_idle, n_open;
};

static struct nbd_handle *
connect_one(const char *socket, const char *export)
{
    struct nbd_handle *h = nbd_create();

    if (!h)
        return NULL;
    if (nbd_set_export_name(h, export) < 0 ||
        nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
        nbd_connect_unix(h, socket) < 0) {
        log_error("cannot connect to NBD export '%s' at '%s': %s", export,
                  socket, nbd_get_error());
        nbd_close(h);
        return NULL;
    }
    return h;
}

int
nbd_client_open(const char *socket, const char *export, unsigned conns,
                struct nbd_client **ret)
{
    struct nbd_client *c = calloc(1, sizeof *c);
    struct nbd_handle *h;
    int64_t size;

    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->socket = strdup(socket);
    c->export = strdup(export);
    c->max = conns < 1 ? 1 : conns > NBD_MAX_CONNS ? NBD_MAX_CONNS : conns;
    if (!c->socket || !c->export) {
        nbd_client_close(c);
        return -ENOMEM;
    }
    h = connect_one(socket, export);
    if (!h) {
        nbd_client_close(c);
        return -EIO;
    }
    size = nbd_get_size(h);
    if (size < 0) {
        log_error("NBD export '%s': no size: %s", export, nbd_get_error());
        nbd_close(h);
        nbd_client_close(c);
        return -EIO;
    }
    /* several connections only where the server says that is safe */
    if (nbd_can_multi_conn(h) != 1)
        c->max = 1;
    c->size = (uint64_t) size;
    c->idle[c->n_idle++] = h;
    c->n_open = 1;
    *ret = c;
    return 0;
}

void
nbd_client_close(struct nbd_client *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->n_idle; i++) {
        (void) nbd_shutdown(c->idle[i], 0);
        nbd_close(c->idle[i]);
    }
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c->socket);
    free(c->export);
    free(c);
}

uint64_t
nbd_client_size(const struct nbd_client *c)
{
    return c->size;
}

/* A connection of the pool (opening another while below the maximum). */
static struct nbd_handle *
borrow(struct nbd_client *c)
{
    bool open_new = false;
    {
        LOCK_FOR_SCOPE(&c->lock);
        while (c->n_idle == 0 && c->n_open >= c->max)
            pthread_cond_wait(&c->cond, &c->lock);
        if (c->n_idle > 0)
            return c->idle[--c->n_idle];
        c->n_open++;
        open_new = true;
    }
    struct nbd_handle *h = open_new ? connect_one(c->socket, c->export) : NULL;
    if (!h) {
        LOCK_FOR_SCOPE(&c->lock);
        c->n_open--;
        pthread_cond_signal(&c->cond);
    }
    return h;
}

static void
give_back(struct nbd_client *c, struct nbd_handle *h)
{
    LOCK_FOR_SCOPE(&c->lock);
    c->idle[c->n_idle++] = h;
    pthread_cond_signal(&c->cond);
}

int
nbd_client_pread(struct nbd_client *c, void *buf, size_t count, uint64_t off)
{
    struct nbd_handle *h = borrow(c);
    int r = 0;

    if (!h)
        return -EIO;
    /* the NBD limit for one request is 32 MiB; FUSE asks for far less */
    if (nbd_pread(h, buf, count, off, 0) < 0)
        r = log_error_errno(-EIO, "NBD read of %zu bytes at %llu from '%s': %s",
                            count, (unsigned long long) off, c->export,
                            nbd_get_error());
    give_back(c, h);
    return r;
}

struct seek_ctx {
    uint64_t off;
    int whence;
    uint64_t found;
    bool have;
    uint64_t end;     /* where the extents answered so far end */
};

static int
on_extents(void *opaque, const char *context, uint64_t offset, uint32_t *entries,
           size_t n, int *error)
{
    struct seek_ctx *s = opaque;

    (void) error;
    if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
        return 0;
    for (size_t i = 0; i + 1 < n && !s->have; i += 2) {
        uint64_t len = entries[i];
        bool hole = entries[i + 1] & LIBNBD_STATE_ZERO;
        if ((s->whence == SEEK_DATA && !hole) || (s->whence == SEEK_HOLE && hole)) {
            s->found = offset > s->off ? offset : s->off;
            s->have = true;
        }
        offset += len;
    }
    s->end = offset;
    return 0;
}

int
nbd_client_seek(struct nbd_client *c, uint64_t off, int whence, uint64_t *ret)
{
    struct seek_ctx s = { .off = off, .whence = whence };
    struct nbd_handle *h;
    int r = 0;

    if (off >= c->size)
        return -ENXIO;
    h = borrow(c);
    if (!h)
        return -EIO;
    if (nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
        give_back(c, h);
        *ret = whence == SEEK_DATA ? off : c->size;    /* all data */
        return 0;
    }
    for (uint64_t pos = off; !s.have && pos < c->size;) {
        uint64_t len = c->size - pos;
        if (len > (UINT64_C(1) << 30))
            len = UINT64_C(1) << 30;
        s.end = pos;
        if (nbd_block_status(h, len, pos,
                             (nbd_extent_callback) { .callback = on_extents,
                                                     .user_data = &s },
                             0) < 0) {
            r = log_error_errno(-EIO, "NBD block status of '%s': %s", c->export,
                                nbd_get_error());
            break;
        }
        if (s.end <= pos)
            break;                          /* no progress: give up */
        pos = s.end;
    }
    give_back(c, h);
    if (r < 0)
        return r;
    if (s.have) {
        *ret = s.found;
        return 0;
    }
    if (whence == SEEK_HOLE) {
        *ret = c->size;
        return 0;
    }
    return -ENXIO;
}
