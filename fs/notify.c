/* fs/notify.c: invalidates the kernel's caches when the model reports a
 * change. The model's listener runs on the backend's event thread; it only
 * queues work. A thread of ours calls fuse_lowlevel_notify_inval_*(), which
 * must not run on a request path (libfuse documents the deadlock). */
#define LOG_MODULE "notify"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "fs.h"
#include "log.h"

struct notify_item {
    struct notify_item *next;
    fuse_ino_t parent;      /* entry: parent and name; 0: inode only */
    fuse_ino_t ino;
    char name[];
};

static void
push(struct fs *fs, fuse_ino_t parent, const char *name, fuse_ino_t ino)
{
    size_t len = name ? strlen(name) : 0;
    struct notify_item *it = malloc(sizeof *it + len + 1);

    if (!it)
        return;     /* the kernel's timeouts still bound the staleness */
    it->next = NULL;
    it->parent = parent;
    it->ino = ino;
    memcpy(it->name, name ? name : "", len + 1);

    LOCK_FOR_SCOPE(&fs->nlock);
    if (fs->ntail)
        fs->ntail->next = it;
    else
        fs->nhead = it;
    fs->ntail = it;
    fs->npushed++;
    pthread_cond_signal(&fs->ncond);
}

/* Called under the node table lock. Names below a VM never change
 * meaning, so their entries stay (a shell's working directory in them
 * stays valid); only the values and attributes are dropped. Volume names
 * can come and go with the definition. */
static void
queue_node(struct fs *fs, struct fs_node *n, void *opaque)
{
    unsigned change = *(unsigned *) opaque;
    bool entry = tree_is_volume(n->kind) && (change & VM_CHANGE_DEFINITION);

    /* what this mount did: its events and restore files only */
    if (change == VM_CHANGE_LOCAL && n->kind != NODE_VM_EVENTS && n->kind != NODE_VM_RESTORE)
        return;

    /* what a snapshot shows is fixed when it is taken: a change of the
     * VM's state or definition leaves it (but for its volumes' sizes,
     * which follow the VM's disks); the kernel forgets it after its short
     * timeout anyway. Listings under churn then ask only for what moved. */
    if (n->kind >= NODE_SNAPSHOT &&
        !(change & (VM_CHANGE_EXISTENCE | VM_CHANGE_SNAPSHOTS)) &&
        !(n->kind == NODE_SNAP_VOLUME && (change & VM_CHANGE_DEFINITION)))
        return;

    push(fs, entry && n->parent ? inode_ino(fs, n->parent) : 0, n->name,
         inode_ino(fs, n));
}

void
notify_inval_inode(struct fs *fs, fuse_ino_t ino)
{
    push(fs, 0, NULL, ino);
}

struct listing {
    const char *ns, *vm;
    bool existence;
};

/* The namespace directory holding a VM that came, went or started: its
 * listing (the kernel keeps it: fs_opendir), and the VM's entry if the VM
 * came or went. */
static void
queue_namespace(struct fs *fs, struct fs_node *n, void *opaque)
{
    const struct listing *l = opaque;

    if (n->kind != NODE_NAMESPACE || strcmp(n->ns, l->ns) != 0)
        return;
    if (l->existence)
        push(fs, inode_ino(fs, n), l->vm, 0);
    push(fs, 0, NULL, inode_ino(fs, n));
}

static void
on_vm_changed(void *opaque, const char *ns, const char *name, unsigned change)
{
    struct fs *fs = opaque;
    bool existence = change & VM_CHANGE_EXISTENCE;

    if (change & (VM_CHANGE_EXISTENCE | VM_CHANGE_LIST)) {
        if (model_namespaced(fs->model)) {
            struct listing l = { ns, name, existence };
            inode_foreach_vm(fs, NULL, NULL, queue_namespace, &l);
        } else if (existence) {
            push(fs, FUSE_ROOT_ID, name, 0);
        }
        /* the root lists the VMs, or the namespaces holding any */
        push(fs, 0, NULL, FUSE_ROOT_ID);
    }
    inode_foreach_vm(fs, ns, name, queue_node, &change);
}

static void
on_reset(void *opaque)
{
    struct fs *fs = opaque;
    unsigned change = VM_CHANGE_STATE | VM_CHANGE_DEFINITION | VM_CHANGE_EXISTENCE;

    inode_foreach_vm(fs, NULL, NULL, queue_node, &change);
    push(fs, 0, NULL, FUSE_ROOT_ID);
}

const struct model_listener notify_listener = {
    .vm_changed = on_vm_changed,
    .reset = on_reset,
};

static void *
notify_thread(void *opaque)
{
    struct fs *fs = opaque;

    for (;;) {
        struct notify_item *it;
        {
            LOCK_FOR_SCOPE(&fs->nlock);
            while (!fs->nhead && !fs->nquit)
                pthread_cond_wait(&fs->ncond, &fs->nlock);
            if (fs->nquit)
                return NULL;
            it = fs->nhead;
            fs->nhead = it->next;
            if (!fs->nhead)
                fs->ntail = NULL;
        }
        /* -ENOENT: the kernel did not know it; nothing to do */
        if (it->parent)
            (void) fuse_lowlevel_notify_inval_entry(fs->se, it->parent, it->name,
                                                    strlen(it->name));
        if (it->ino)
            (void) fuse_lowlevel_notify_inval_inode(fs->se, it->ino, 0, 0);
        log_debug("invalidated %s", it->name[0] ? it->name : "inode");
        free(it);
        {
            LOCK_FOR_SCOPE(&fs->nlock);
            fs->ndone++;
            pthread_cond_broadcast(&fs->ndone_cond);
        }
    }
}

/* Never called on a request whose directory lock the kernel holds (mkdir,
 * rmdir): an entry invalidation there waits for that lock. Bounded: a
 * kernel that does not answer costs a second at most. */
void
notify_flush(struct fs *fs)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    LOCK_FOR_SCOPE(&fs->nlock);
    uint64_t upto = fs->npushed;
    while (fs->nthread_started && !fs->nquit && fs->ndone < upto)
        if (pthread_cond_timedwait(&fs->ndone_cond, &fs->nlock, &until) != 0) {
            /* the kernel is slow to take them (a lookup holds a directory):
             * what changed shows when it does, or at the timeouts */
            log_info("the kernel took no invalidation for 1 s: a listing may show the "
                     "change a little later");
            break;
        }
}

int
notify_start(struct fs *fs)
{
    pthread_mutex_init(&fs->nlock, NULL);
    pthread_cond_init(&fs->ncond, NULL);
    pthread_cond_init(&fs->ndone_cond, NULL);
    if (pthread_create(&fs->nthread, NULL, notify_thread, fs) != 0)
        return -EAGAIN;
    fs->nthread_started = true;
    return 0;
}

void
notify_stop(struct fs *fs)
{
    if (!fs->nthread_started)
        return;
    {
        LOCK_FOR_SCOPE(&fs->nlock);
        fs->nquit = true;
        pthread_cond_signal(&fs->ncond);
        pthread_cond_broadcast(&fs->ndone_cond);
    }
    pthread_join(fs->nthread, NULL);
    while (fs->nhead) {
        struct notify_item *it = fs->nhead;
        fs->nhead = it->next;
        free(it);
    }
    fs->ntail = NULL;
    fs->nthread_started = false;
}
