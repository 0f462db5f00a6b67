/* fs/ops.c: the FUSE low-level callbacks. Each finds its node, checks what
 * only the FUSE layer knows, asks core/ (through tree.c and render.c), and
 * replies exactly once.
 *
 * Thread model: callbacks run on libfuse's worker threads; shared state is
 * the node table (inode.c, locked) and the model (thread-safe). Open files
 * and directories carry their own immutable content in fi->fh.
 */
#define LOG_MODULE "fs"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "change-map.h"
#include "cleanup.h"
#include "fs.h"
#include "sums.h"
#include "log.h"
#include "name.h"
#include "restore.h"

/* What is written to a control file (restore, clone) on one open file:
 * collected until a newline, then run as one line. */
#define CONTROL_LINE_MAX 4096

struct control_line {
    pthread_mutex_t lock;   /* writes and flushes of one open file */
    char buf[CONTROL_LINE_MAX];
    size_t len;             /* collected, not yet run */
    uint64_t pos;           /* the offset the next write must have */
    bool bad;               /* a bad write: nothing more runs */
};

static void
open_file_free(struct open_file *h)
{
    if (!h)
        return;
    volume_view_close(h->view);
    if (h->line) {
        pthread_mutex_destroy(&h->line->lock);
        free(h->line);
    }
    free(h->buf);
    free(h);
}

/* A read of a volume holds the file: the reader may close it, and a
 * RELEASE run on another thread, as soon as the reply is written, while
 * the read still sends from the view's memory or lets go of it. */
struct open_file *
open_file_get(struct open_file *h)
{
    __atomic_add_fetch(&h->refs, 1, __ATOMIC_ACQ_REL);
    return h;
}

void
open_file_put(struct open_file *h)
{
    if (h && __atomic_sub_fetch(&h->refs, 1, __ATOMIC_ACQ_REL) == 0)
        open_file_free(h);
}

/* Open views are listed, so that an unmount with files still open (the
 * kernel sends no release then) still ends their backup jobs. */
static void
track(struct fs *fs, struct open_file *h)
{
    LOCK_FOR_SCOPE(&fs->vlock);
    h->next = fs->open_views;
    if (h->next)
        h->next->prev = h;
    fs->open_views = h;
}

static void
untrack(struct fs *fs, struct open_file *h)
{
    LOCK_FOR_SCOPE(&fs->vlock);
    if (h->prev)
        h->prev->next = h->next;
    else if (fs->open_views == h)
        fs->open_views = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
}

void
fs_close_views(struct fs *fs)
{
    for (;;) {
        struct open_file *h;
        {
            LOCK_FOR_SCOPE(&fs->vlock);
            h = fs->open_views;
            if (!h)
                return;
            fs->open_views = h->next;
            if (h->next)
                h->next->prev = NULL;
        }
        volume_view_close(h->view);
        free(h);
    }
}

static struct fs *
fs_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static void
fs_init(void *userdata, struct fuse_conn_info *conn)
{
    (void) userdata;
    /* volumes: several reads in flight (readahead) */
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    /* volumes: replies spliced from the layer files */
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    /* ls -l of a large host: names and attributes in one go */
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~(unsigned) FUSE_CAP_READDIRPLUS_AUTO;
}

/* Fills e for node n (one lookup reference already taken). */
static int
entry_of(struct fs *fs, struct fs_node *n, struct fuse_entry_param *e)
{
    int r;

    memset(e, 0, sizeof *e);
    r = tree_stat(fs, n, &e->attr);
    if (r < 0)
        return r;
    e->ino = inode_ino(fs, n);
    e->generation = 1;
    e->attr_timeout = e->entry_timeout = tree_timeout(fs, n->kind);
    return 0;
}

/* Replies with node n, which holds one lookup reference for the reply:
 * dropped again if the reply fails or the kernel does not get it. */
static void
reply_entry(fuse_req_t req, struct fs *fs, struct fs_node *n)
{
    struct fuse_entry_param e;
    int r = entry_of(fs, n, &e);

    if (r < 0) {
        inode_unref(fs, n, 1);
        return (void) fuse_reply_err(req, -r);
    }
    if (fuse_reply_entry(req, &e) != 0)
        inode_unref(fs, n, 1);
}

static void
fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    struct fs_node *dir = inode_get(fs, parent), *n;
    enum node_kind kind;
    int r;

    fs_trace("lookup", "parent=%" PRIu64 " name='%s'", (uint64_t) parent, name);
    if (!tree_is_dir(dir->kind))
        return (void) fuse_reply_err(req, ENOTDIR);
    r = tree_lookup(fs, dir, name, &kind);
    if (r < 0)
        return (void) fuse_reply_err(req, -r);
    n = inode_ref_child(fs, dir, name, kind);
    if (!n)
        return (void) fuse_reply_err(req, ENOMEM);
    reply_entry(req, fs, n);
}

static void
fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    struct fs *fs = fs_of(req);

    inode_unref(fs, inode_get(fs, ino), nlookup);
    fuse_reply_none(req);
}

static void
fs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    struct fs *fs = fs_of(req);

    for (size_t i = 0; i < count; i++)
        inode_unref(fs, inode_get(fs, forgets[i].ino), forgets[i].nlookup);
    fuse_reply_none(req);
}

static void
fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_node *n = inode_get(fs, ino);
    struct stat st;
    int r;

    r = tree_stat(fs, n, &st);
    if (r < 0)
        return (void) fuse_reply_err(req, -r);
    /* an open volume is the size of its view, whatever the disk is now */
    struct open_file *h = fi ? (struct open_file *) (uintptr_t) fi->fh : NULL;
    if (h && h->view)
        st.st_size = (off_t) h->view->size;
    fuse_reply_attr(req, &st, tree_timeout(fs, n->kind));
}

static void
fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
           struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_node *n = inode_get(fs, ino);
    struct stat st;
    int r;

    (void) attr;
    if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
        return (void) fuse_reply_err(req, EPERM);
    /* truncating a control file before writing it is part of `echo x >` */
    if (!tree_is_control(n->kind))
        return (void) fuse_reply_err(req, EROFS);
    r = tree_stat(fs, n, &st);
    if (r < 0)
        return (void) fuse_reply_err(req, -r);
    (void) fi;
    fuse_reply_attr(req, &st, tree_timeout(fs, n->kind));
}

/* No opendir: the kernel then keeps every directory's listing in its page
 * cache (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE is its default without one), so
 * a warm `ls -lR` asks nothing. A listing is dropped when fs/notify.c hears
 * of a change in it, or when a directory's mtime (tree_stat: it follows
 * the listing) differs once its attributes expire: that covers changes no
 * backend event reports. */
static void
fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void) ino;
    (void) fi;
    fuse_reply_err(req, ENOSYS);
}

/* Offsets: 0 ".", 1 "..", 2+i entry i. */
static void
readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
               struct fuse_file_info *fi, bool plus)
{
    struct fs *fs = fs_of(req);
    struct fs_node *dir = inode_get(fs, ino);
    struct tree_entry *entries = NULL;
    size_t n_entries = 0;
    int r;

    (void) fi;
    /* listed anew at each call: an offset is a position in the sorted
     * listing (a change between two calls of one pass may skip or repeat
     * a name, as on any filesystem; the kernel then drops its cache) */
    r = tree_list(fs, dir, &entries, &n_entries);
    if (r < 0)
        return (void) fuse_reply_err(req, -r);

    _cleanup_free_ char *buf = malloc(size);
    /* nodes handed out in this reply: unref'd if the kernel does not get it */
    _cleanup_free_ struct fs_node **given = calloc(n_entries + 2, sizeof *given);
    size_t used = 0, n_given = 0;

    if (!buf || !given) {
        tree_entries_free(entries, n_entries);
        return (void) fuse_reply_err(req, ENOMEM);
    }
    for (off_t i = off; (size_t) i < n_entries + 2; i++) {
        struct fuse_entry_param e = { 0 };
        struct fs_node *n = NULL;
        const char *name;
        size_t need;

        if (i < 2) {
            name = i == 0 ? "." : "..";
            e.attr.st_ino = inode_number(i == 0 || !dir->parent ? dir : dir->parent);
            e.attr.st_mode = S_IFDIR;
        } else {
            struct tree_entry *t = &entries[i - 2];
            name = t->name;
            if (plus) {
                n = inode_ref_child(fs, dir, name, t->kind);
                r = n ? entry_of(fs, n, &e) : -ENOMEM;
                if (r < 0) {
                    if (n)
                        inode_unref(fs, n, 1);
                    if (r == -ENOENT)
                        continue;   /* gone since listed */
                    break;          /* nothing partial: the kernel would keep it */
                }
            } else {
                e.attr.st_ino = inode_child_number(dir, name);
                e.attr.st_mode = tree_is_dir(t->kind) ? S_IFDIR : S_IFREG;
            }
        }
        if (plus)
            need = fuse_add_direntry_plus(req, buf + used, size - used, name,
                                          &e, i + 1);
        else
            need = fuse_add_direntry(req, buf + used, size - used, name,
                                     &e.attr, i + 1);
        if (need > size - used) {
            if (n)
                inode_unref(fs, n, 1);  /* did not fit: not handed out */
            break;
        }
        used += need;
        if (n)
            given[n_given++] = n;
    }
    tree_entries_free(entries, n_entries);
    if (r < 0 && r != -ENOENT) {
        for (size_t i = 0; i < n_given; i++)
            inode_unref(fs, given[i], 1);
        return (void) fuse_reply_err(req, -r);
    }
    if (fuse_reply_buf(req, buf, used) != 0)
        for (size_t i = 0; i < n_given; i++)
            inode_unref(fs, given[i], 1);
}

static void
fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
           struct fuse_file_info *fi)
{
    readdir_common(req, ino, size, off, fi, false);
}

static void
fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
               struct fuse_file_info *fi)
{
    readdir_common(req, ino, size, off, fi, true);
}

static void
fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_node *n = inode_get(fs, ino);
    bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
    struct open_file *h;
    int r;

    if (tree_is_dir(n->kind))
        return (void) fuse_reply_err(req, EISDIR);
    if (writing && !tree_is_control(n->kind))
        return (void) fuse_reply_err(req, EROFS);
    if (writing) {
        bool busy;
        {
            LOCK_FOR_SCOPE(&fs->lock);
            busy = n->running > 0;
        }
        if (busy) {
            events_add(model_events(fs->model), n->ns, n->vm,
                       n->kind == NODE_VM_RESTORE ? "restore" : "clone", n->snap, -EBUSY,
                       "another line written to this file runs now");
            return (void) fuse_reply_err(req, EBUSY);
        }
    }

    h = calloc(1, sizeof *h);
    if (!h)
        return (void) fuse_reply_err(req, ENOMEM);
    h->refs = 1;
    if (tree_is_volume(n->kind)) {
        r = model_volume_open(fs->model, n->ns, n->vm,
                              n->kind == NODE_SNAP_VOLUME ? n->snap : NULL,
                              n->vol, &h->view);
        if (r < 0 && r != -ENOENT)
            events_add(model_events(fs->model), n->ns, n->vm, "open-volume",
                       n->vol, r, "cannot open a point-in-time view of the "
                       "disk (details in the log)");
        if (r == -ENOTSUP)
            r = -EIO;
        /* page cache on (cp and qemu-img read it at full speed; the kernel
         * drops what it had cached of the file at each open), except for
         * views that ask otherwise (a live disk; an export, whose chunks
         * are sent as they are) */
        if (r >= 0 && h->view->uncached)
            fi->direct_io = 1;
    } else if (n->kind == NODE_CHANGES_VOLUME) {
        struct change_map *m = NULL;
        r = model_changes_open(fs->model, n->ns, n->vm, n->snap, n->vol, &h->view, &m);
        change_map_free(m);
        if (r < 0 && r != -ENOENT)
            events_add(model_events(fs->model), n->ns, n->vm, "open-changes", n->vol, r,
                       "cannot open the changes since the snapshot before (details in the log)");
        if (r == -ENOTSUP)
            r = -ENOENT;
    } else if (n->kind == NODE_SNAP_SUMS) {
        /* read: the sums, once they are there (sums_read) */
        h->sums = true;
        fi->direct_io = 1;
        r = model_sums(fs->model) ? 0 : -ENOENT;
    } else {
        r = render_node(fs, n, &h->buf, &h->len);
        fi->direct_io = 1;   /* content may change size between opens */
        if (r >= 0 && writing) {
            h->line = calloc(1, sizeof *h->line);
            if (!h->line)
                r = -ENOMEM;
            else
                pthread_mutex_init(&h->line->lock, NULL);
        }
    }
    if (r < 0) {
        open_file_free(h);
        return (void) fuse_reply_err(req, -r);
    }
    fi->fh = (uintptr_t) h;
    if (h->view)
        track(fs, h);
    if (fuse_reply_open(req, fi) != 0) {
        if (h->view)
            untrack(fs, h);
        open_file_free(h);
    }
}

/* ---- SHA256SUMS: a read waits for the sums --------------------------------
 *
 * The reply comes from the thread that finished them (or at once). A
 * waiting read the reader gives up (a signal: INTERRUPT) is answered EINTR
 * at once; the sums' answer then finds it gone from the list. The list
 * only ever compares the interrupt's pointer, never follows it. */

struct sums_read {
    fuse_req_t req;
    size_t size;
    off_t off;
    struct sums_read *next;
};

static pthread_mutex_t sums_reads_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sums_read *sums_reads;

/* Takes sr out of the list: whether it was there (the caller answers). */
static bool
sums_read_take(struct sums_read *sr)
{
    LOCK_FOR_SCOPE(&sums_reads_lock);
    for (struct sums_read **p = &sums_reads; *p; p = &(*p)->next)
        if (*p == sr) {
            *p = sr->next;
            return true;
        }
    return false;
}

static void
sums_read_interrupted(fuse_req_t req, void *data)
{
    if (sums_read_take(data))
        fuse_reply_err(req, EINTR);
}

static void
sums_read_done(void *opaque, int r, const char *text, size_t len)
{
    struct sums_read *sr = opaque;

    if (!sums_read_take(sr)) {
        free(sr);       /* interrupted: answered */
        return;
    }
    if (r == -ESHUTDOWN) {
        free(sr);       /* the session ends: nobody to answer */
        return;
    }
    if (r < 0)
        fuse_reply_err(sr->req, r == -ENOENT ? ENOENT : EIO);
    else if (sr->off < 0 || (size_t) sr->off >= len)
        fuse_reply_buf(sr->req, NULL, 0);
    else
        fuse_reply_buf(sr->req, text + sr->off,
                       sr->size < len - (size_t) sr->off ? sr->size : len - (size_t) sr->off);
    free(sr);
}

static void
sums_read(fuse_req_t req, struct fs *fs, const struct fs_node *n, size_t size, off_t off)
{
    struct sums_read *sr = calloc(1, sizeof *sr);

    if (!sr)
        return (void) fuse_reply_err(req, ENOMEM);
    *sr = (struct sums_read) { req, size, off, NULL };
    {
        LOCK_FOR_SCOPE(&sums_reads_lock);
        sr->next = sums_reads;
        sums_reads = sr;
    }
    fuse_req_interrupt_func(req, sums_read_interrupted, sr);
    if (sums_wait(model_sums(fs->model), n->ns, n->vm, n->snap, sums_read_done, sr) < 0) {
        if (sums_read_take(sr))
            fuse_reply_err(req, ENOMEM);
        free(sr);
    }
}

static void
fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
        struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_node *n = inode_get(fs, ino);
    struct open_file *h = (struct open_file *) (uintptr_t) fi->fh;

    if (h->view) {
        volume_read(req, fs, ino, n, open_file_get(h), size, off);
        return open_file_put(h);
    }
    if (h->sums)
        return sums_read(req, fs, n, size, off);
    if (off < 0 || (size_t) off >= h->len)
        return (void) fuse_reply_buf(req, NULL, 0);
    if (size > h->len - (size_t) off)
        size = h->len - (size_t) off;
    /* Reply from a copy: once the kernel has the reply, the reader may
     * close the file and a RELEASE on another thread free h while this
     * thread is still returning from writev() (ASan checks after it). */
    _cleanup_free_ char *copy = malloc(size);
    if (!copy)
        return (void) fuse_reply_err(req, ENOMEM);
    memcpy(copy, h->buf + off, size);
    fuse_reply_buf(req, copy, size);
}

static int run_line_now(struct fs *fs, const struct fs_node *n, const char *buf,
                        size_t size);

/* Runs one line written to restore or clone; the node counts as running
 * meanwhile (fs_open: EBUSY for a second writer, whose writes the kernel
 * would otherwise hold back until this one ends, and then run). */
static int
run_line(struct fs *fs, struct fs_node *n, const char *buf, size_t size)
{
    {
        LOCK_FOR_SCOPE(&fs->lock);
        n->running++;
    }
    int r = run_line_now(fs, n, buf, size);
    /* what it changed is out of the kernel's caches when the write
     * returns: `ls` after `echo NEW > clone` shows NEW */
    notify_flush(fs);
    LOCK_FOR_SCOPE(&fs->lock);
    n->running--;
    return r;
}

/* Runs one line written to restore or clone (newline included or not). */
static int
run_line_now(struct fs *fs, const struct fs_node *n, const char *buf, size_t size)
{
    struct events *ev = model_events(fs->model);
    const char *why = NULL;
    int r;

    if (n->kind == NODE_VM_RESTORE) {
        struct restore_request rq;
        r = restore_request_parse(buf, size, &rq, &why);
        if (r < 0)
            return events_add(ev, n->ns, n->vm, "restore", NULL, r, "malformed line: %s", why);
        if (!model_snapshot_exists(fs->model, n->ns, n->vm, rq.snap))
            return events_add(ev, n->ns, n->vm, "restore", rq.snap, -ENOENT,
                              "no such snapshot");
        return model_restore(fs->model, n->ns, n->vm, &rq, fs->opts);
    }
    char name[NAME_MAX_LEN + 1];
    r = clone_request_parse(buf, size, name, &why);
    if (r < 0)
        return events_add(ev, n->ns, n->vm, "clone", n->snap, r, "malformed line: %s", why);
    if (model_vm_exists(fs->model, n->ns, name) == 0)
        return events_add(ev, n->ns, n->vm, "clone", n->snap, -EEXIST,
                          "a VM named '%s' exists", name);
    return model_clone(fs->model, n->ns, n->vm, n->snap, name, fs->opts);
}

/* A write that cannot be part of a line: nothing collected runs. */
static int
line_reject(struct fs *fs, const struct fs_node *n, struct control_line *l,
            const char *why)
{
    l->bad = true;
    l->len = 0;
    return events_add(model_events(fs->model), n->ns, n->vm,
                      n->kind == NODE_VM_RESTORE ? "restore" : "clone",
                      n->kind == NODE_VM_RESTORE ? NULL : n->snap, -EINVAL,
                      "malformed write: %s; nothing was run", why);
}

/* Writes to restore and clone: what one open file writes is collected until
 * a newline, and the line runs then, answered from that write(); so a line
 * split over several writes runs whole, once. A last line without a newline
 * runs at close (fs_flush). A write at another offset, a NUL or a line over
 * CONTROL_LINE_MAX fails with EINVAL, and nothing of that open file runs. */
static void
fs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
         off_t off, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_node *n = inode_get(fs, ino);
    struct open_file *h = (struct open_file *) (uintptr_t) fi->fh;
    struct control_line *l = h ? h->line : NULL;
    int r = 0;

    if (!l)
        return (void) fuse_reply_err(req, EBADF);
    pthread_mutex_lock(&l->lock);
    if (l->bad)
        r = line_reject(fs, n, l, "an earlier write on this open file failed");
    else if (off < 0 || (uint64_t) off != l->pos)
        r = line_reject(fs, n, l, "a write at another offset than the line's end");
    else if (memchr(buf, '\0', size))
        r = line_reject(fs, n, l, "a NUL byte");
    for (size_t done = 0; r == 0 && done < size;) {
        const char *nl = memchr(buf + done, '\n', size - done);
        size_t take = nl ? (size_t) (nl - (buf + done)) + 1 : size - done;
        if (l->len + take > sizeof l->buf) {
            r = line_reject(fs, n, l, "a line longer than 4096 bytes");
            break;
        }
        memcpy(l->buf + l->len, buf + done, take);
        l->len += take;
        done += take;
        if (nl) {
            size_t len = l->len;
            l->len = 0;
            r = run_line(fs, n, l->buf, len);
        }
    }
    if (r < 0)
        l->len = 0;     /* the writer is told; the rest does not run */
    else
        l->pos += size;
    /* unlocked before the reply: a close may follow it at once */
    pthread_mutex_unlock(&l->lock);
    if (r < 0)
        return (void) fuse_reply_err(req, -r);
    fuse_reply_write(req, size);
}

static void
fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct open_file *h = (struct open_file *) (uintptr_t) fi->fh;

    if (h && h->view) {
        __atomic_store_n(&h->released, true, __ATOMIC_RELEASE);
        untrack(fs_of(req), h);
        /* what the kernel cached of it goes now, off the next open's path
         * (which would drop it) */
        notify_inval_inode(fs_of(req), ino);
    }
    open_file_put(h);
    fuse_reply_err(req, 0);
}

/* close(2) of a volume fails if the disk changed while it was open, so a
 * copy that read the last blocks as they changed is not taken for good. */
static void
fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_node *n = inode_get(fs, ino);
    struct open_file *h = (struct open_file *) (uintptr_t) fi->fh;
    const char *reason = NULL;
    int r = h && h->view ? volume_view_check(h->view, &reason) : 0;

    if (h && h->line) {
        /* a last line without its newline runs at close */
        struct control_line *l = h->line;
        pthread_mutex_lock(&l->lock);
        if (l->len > 0 && !l->bad) {
            size_t len = l->len;
            l->len = 0;
            r = run_line(fs, n, l->buf, len);
        }
        /* unlocked before the reply: the release that may follow it at
         * once frees l */
        pthread_mutex_unlock(&l->lock);
        return (void) fuse_reply_err(req, r < 0 ? -r : 0);
    }
    if (r < 0)
        events_add(model_events(fs->model), n->ns, n->vm, "read-volume", n->vol,
                   r, "%s", reason ? reason : "the disk changed");
    fuse_reply_err(req, r < 0 ? -r : 0);
}

/* SEEK_DATA / SEEK_HOLE (the kernel does the others): holes of the disk,
 * so cp keeps a sparse image sparse and skips its holes quickly. */
static void
fs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
         struct fuse_file_info *fi)
{
    struct open_file *h = (struct open_file *) (uintptr_t) fi->fh;
    uint64_t pos;
    int r;

    (void) ino;
    if (off < 0)
        return (void) fuse_reply_err(req, ENXIO);
    if (!h->view) {
        /* generated files have no holes */
        if ((size_t) off >= h->len)
            return (void) fuse_reply_err(req, ENXIO);
        return (void) fuse_reply_lseek(req, whence == SEEK_DATA ? off : (off_t) h->len);
    }
    if (whence != SEEK_DATA && whence != SEEK_HOLE)
        return (void) fuse_reply_err(req, EINVAL);
    r = volume_view_seek(h->view, (uint64_t) off, whence, &pos);
    if (r < 0)
        return (void) fuse_reply_err(req, -r);
    fuse_reply_lseek(req, (off_t) pos);
}

static void
fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct fs *fs = fs_of(req);
    struct fs_node *dir = inode_get(fs, parent), *n;
    enum node_kind kind;
    int r;

    (void) mode;
    fs_trace("mkdir", "parent=%" PRIu64 " name='%s'", (uint64_t) parent, name);
    if (dir->kind != NODE_SNAPSHOTS)
        return (void) fuse_reply_err(req, EPERM);
    r = model_snapshot_name_check(fs->model, dir->ns, dir->vm, name);
    if (r < 0)
        return (void) fuse_reply_err(req, -r);
    if (tree_lookup(fs, dir, name, &kind) == 0)
        return (void) fuse_reply_err(req, EEXIST);
    r = model_snapshot_create(fs->model, dir->ns, dir->vm, name, fs->opts);
    if (r < 0)
        return (void) fuse_reply_err(req, -r);
    r = tree_lookup(fs, dir, name, &kind);
    n = r < 0 ? NULL : inode_ref_child(fs, dir, name, kind);
    if (!n)
        return (void) fuse_reply_err(req, r < 0 ? -r : ENOMEM);
    reply_entry(req, fs, n);
}

static void
fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    struct fs_node *dir = inode_get(fs, parent);
    enum node_kind kind;
    int r;

    fs_trace("rmdir", "parent=%" PRIu64 " name='%s'", (uint64_t) parent, name);
    r = tree_lookup(fs, dir, name, &kind);
    if (r < 0)
        return (void) fuse_reply_err(req, -r);
    if (kind != NODE_SNAPSHOT)
        return (void) fuse_reply_err(req, tree_is_dir(kind) ? EPERM : ENOTDIR);
    r = model_snapshot_delete(fs->model, dir->ns, dir->vm, name);
    fuse_reply_err(req, r < 0 ? -r : 0);
}

/* The fixed tree: no new files, links or renames. */
static void
fs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
          struct fuse_file_info *fi)
{
    (void) parent;
    (void) name;
    (void) mode;
    (void) fi;
    fuse_reply_err(req, EROFS);
}

static void
fs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
         dev_t rdev)
{
    (void) parent;
    (void) name;
    (void) mode;
    (void) rdev;
    fuse_reply_err(req, EROFS);
}

static void
fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    (void) parent;
    (void) name;
    fuse_reply_err(req, EROFS);
}

static void
fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
          fuse_ino_t newparent, const char *newname, unsigned int flags)
{
    (void) parent;
    (void) name;
    (void) newparent;
    (void) newname;
    (void) flags;
    fuse_reply_err(req, EROFS);
}

static void
fs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    (void) link;
    (void) parent;
    (void) name;
    fuse_reply_err(req, EROFS);
}

static void
fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs sv = { .f_bsize = 4096, .f_frsize = 4096, .f_namemax = 255 };

    (void) ino;
    fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops fs_ops = {
    .init = fs_init,
    .lookup = fs_lookup,
    .forget = fs_forget,
    .forget_multi = fs_forget_multi,
    .getattr = fs_getattr,
    .setattr = fs_setattr,
    .opendir = fs_opendir,
    .readdir = fs_readdir,
    .readdirplus = fs_readdirplus,
    .open = fs_open,
    .read = fs_read,
    .write = fs_write,
    .release = fs_release,
    .flush = fs_flush,
    .lseek = fs_lseek,
    .mkdir = fs_mkdir,
    .rmdir = fs_rmdir,
    .create = fs_create,
    .mknod = fs_mknod,
    .unlink = fs_unlink,
    .rename = fs_rename,
    .symlink = fs_symlink,
    .statfs = fs_statfs,
};
