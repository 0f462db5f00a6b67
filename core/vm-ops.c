/* core/vm-ops.c: see vm-ops.h. */
#define LOG_MODULE "ops"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "hashmap.h"
#include "log.h"
#include "state.h"
#include "vm-ops.h"

struct vm_op {
    char *snap;             /* the snapshot it makes (InProgress) or NULL */
    time_t started;
    int lock_fd;            /* the host-wide lock, flock'd (-1: none) */
    unsigned flags;         /* VM_OP_DISKS, VM_OP_LIVE_DISKS */
};

/* The open views of one key. */
struct view_counts {
    unsigned live;          /* of the VM's own disks */
    unsigned snap;          /* of snapshots */
    struct vm_view *background;     /* list: views a disk operation ends */
};

/* A copy that just ended: close(2) has returned, but the kernel tells the
 * daemon (RELEASE) a moment later. An operation on the disks waits that
 * long for the views to go before it answers EBUSY: `cp ...; rmdir ...`
 * works. */
#define VIEW_CLOSE_WAIT_S 2
/* A metadata write (VM_OP_META) lasts a moment: an operation waits up to
 * this long for it, and for another daemon's host-wide lock held for it. */
#define META_WAIT_MS 3000

struct vm_ops {
    pthread_mutex_t lock;   /* ops, views */
    pthread_cond_t views_left;
    pthread_cond_t op_ended;
    struct hashmap *ops;    /* key -> struct vm_op */
    struct hashmap *views;  /* key -> struct view_counts */
};

struct vm_view {
    struct vm_ops *o;
    unsigned flags;         /* VM_VIEW_* */
    bool background;
    int cancelled;          /* background: a disk operation waits (atomic) */
    struct vm_view *prev, *next;    /* background: the key's list */
    char key[];
};

/* Views entered on this thread are background ones (vm_view_background). */
static __thread bool tls_background;
static __thread struct vm_view *tls_last_background;

static void
op_free(void *p)
{
    struct vm_op *op = p;
    if (op) {
        if (op->lock_fd >= 0)
            close(op->lock_fd);     /* releases the flock */
        free(op->snap);
        free(op);
    }
}

struct vm_ops *
vm_ops_new(void)
{
    struct vm_ops *o = calloc(1, sizeof *o);

    if (!o)
        return NULL;
    pthread_mutex_init(&o->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&o->views_left, &ca);
    pthread_cond_init(&o->op_ended, &ca);
    pthread_condattr_destroy(&ca);
    o->ops = hashmap_new();
    o->views = hashmap_new();
    if (!o->ops || !o->views) {
        vm_ops_free(o);
        return NULL;
    }
    return o;
}

void
vm_ops_free(struct vm_ops *o)
{
    if (!o)
        return;
    hashmap_free(o->ops, op_free);
    hashmap_free(o->views, free);   /* views end before the backend */
    pthread_cond_destroy(&o->views_left);
    pthread_cond_destroy(&o->op_ended);
    pthread_mutex_destroy(&o->lock);
    free(o);
}

/* The host-wide lock of key's operations: an fd holding the flock of
 * STATE/ops/HASH.lock (HASH: 64-bit FNV-1a of the key, so any key makes a
 * file name; a collision only makes two VMs wait for each other). */
static int
host_lock(const char *key)
{
    _cleanup_free_ char *dir = NULL, *path = NULL;
    uint64_t h = UINT64_C(14695981039346656037);
    int r;

    for (const unsigned char *c = (const unsigned char *) key; *c; c++)
        h = (h ^ *c) * UINT64_C(1099511628211);
    r = state_subdir("ops", &dir);
    if (r < 0)
        return log_error_errno(-EIO, "cannot lock the operations on '%s' against "
                               "other vmsnapfs daemons (see above)", key);
    if (asprintf(&path, "%s/%016llx.lock", dir, (unsigned long long) h) < 0)
        return -ENOMEM;
    r = state_lock(path, false);
    if (r < 0 && r != -EBUSY && r != -ENOMEM)
        return log_error_errno(-EIO, "cannot lock the operations on '%s' against "
                               "other vmsnapfs daemons (see above)", key);
    return r;
}

/* Do the views of c keep an operation with flags out? */
static bool
views_block(const struct view_counts *c, unsigned flags)
{
    if (!c)
        return false;
    if (flags & VM_OP_DISKS)
        return c->live || c->snap;
    return (flags & VM_OP_LIVE_DISKS) && c->live;
}

/* Do c's background views stand in an operation's way (they end)? */
static bool
background_blocks(const struct view_counts *c, unsigned flags)
{
    for (const struct vm_view *v = c ? c->background : NULL; v; v = v->next)
        if ((flags & VM_OP_DISKS) ||
            ((flags & VM_OP_LIVE_DISKS) && !(v->flags & VM_VIEW_SNAPSHOT)))
            return true;
    return false;
}

int
vm_op_begin(struct vm_ops *o, const char *key, const char *snap, unsigned flags)
{
    struct vm_op *op = calloc(1, sizeof *op);

    if (op)
        op->lock_fd = -1;
    if (!op || (snap && !(op->snap = strdup(snap)))) {
        op_free(op);
        return -ENOMEM;
    }
    op->started = time(NULL);
    op->flags = flags;
    LOCK_FOR_SCOPE(&o->lock);
    struct timespec meta_until;
    clock_gettime(CLOCK_MONOTONIC, &meta_until);
    meta_until.tv_sec += META_WAIT_MS / 1000;
    if (!(flags & VM_OP_META)) {
        struct vm_op *cur;
        while ((cur = hashmap_get(o->ops, key)) && (cur->flags & VM_OP_META) &&
               pthread_cond_timedwait(&o->op_ended, &o->lock, &meta_until) == 0)
            ;
    }
    if (!hashmap_get(o->ops, key) && views_block(hashmap_get(o->views, key), flags)) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += VIEW_CLOSE_WAIT_S;
        while (views_block(hashmap_get(o->views, key), flags) && !hashmap_get(o->ops, key) &&
               pthread_cond_timedwait(&o->views_left, &o->lock, &until) == 0)
            ;
    }
    if (hashmap_get(o->ops, key) || views_block(hashmap_get(o->views, key), flags)) {
        op_free(op);
        return -EBUSY;
    }
    int fd = host_lock(key);
    /* another daemon's lock may be held for a metadata write: a moment */
    for (int i = 0; fd == -EBUSY && !(flags & VM_OP_META) && i < META_WAIT_MS / 100; i++) {
        pthread_mutex_unlock(&o->lock);
        usleep(100 * 1000);
        pthread_mutex_lock(&o->lock);
        if (hashmap_get(o->ops, key)) {
            op_free(op);
            return -EBUSY;
        }
        fd = host_lock(key);
    }
    if (fd < 0) {
        op_free(op);
        return fd;
    }
    op->lock_fd = fd;
    if (hashmap_put(o->ops, key, op, NULL) < 0) {
        op_free(op);
        return -ENOMEM;
    }
    /* background views (checksums) give way: they are told, and stop at
     * their next step; the operation waits for them, never EBUSY */
    struct view_counts *c = hashmap_get(o->views, key);
    if (background_blocks(c, flags)) {
        for (struct vm_view *v = c->background; v; v = v->next)
            if ((flags & VM_OP_DISKS) || !(v->flags & VM_VIEW_SNAPSHOT))
                __atomic_store_n(&v->cancelled, 1, __ATOMIC_RELEASE);
        while ((c = hashmap_get(o->views, key)) && background_blocks(c, flags))
            pthread_cond_wait(&o->views_left, &o->lock);
    }
    return 0;
}

void
vm_op_end(struct vm_ops *o, const char *key)
{
    LOCK_FOR_SCOPE(&o->lock);
    op_free(hashmap_remove(o->ops, key));
    pthread_cond_broadcast(&o->op_ended);
}

void
vm_op_forget_snapshot(struct vm_ops *o, const char *key)
{
    LOCK_FOR_SCOPE(&o->lock);
    struct vm_op *op = hashmap_get(o->ops, key);
    if (op) {
        free(op->snap);
        op->snap = NULL;
    }
}

char *
vm_op_snapshot(struct vm_ops *o, const char *key, time_t *ret_started)
{
    LOCK_FOR_SCOPE(&o->lock);
    struct vm_op *op = hashmap_get(o->ops, key);
    if (!op || !op->snap)
        return NULL;
    *ret_started = op->started;
    return strdup(op->snap);
}

const char *
vm_op_refusal(int r)
{
    return r == -EBUSY ? "another operation runs on this VM, or a volume of it is open"
                       : "cannot lock the VM's operations (see the log)";
}

int
vm_view_enter(struct vm_ops *o, const char *key, unsigned flags, struct vm_view **ret)
{
    struct vm_view *v = calloc(1, sizeof *v + strlen(key) + 1);

    if (!v)
        return -ENOMEM;
    v->o = o;
    v->flags = flags;
    v->background = tls_background;
    strcpy(v->key, key);
    LOCK_FOR_SCOPE(&o->lock);
    struct vm_op *op = hashmap_get(o->ops, key);
    if (op && ((op->flags & VM_OP_DISKS) ||
               ((op->flags & VM_OP_LIVE_DISKS) && !(flags & VM_VIEW_SNAPSHOT)))) {
        bool quiet = v->background;     /* it tries again later */
        free(v);
        if (quiet)
            return -EBUSY;
        return log_error_errno(-EBUSY, "'%s': an operation changes its disks right now: "
                               "no volume opens meanwhile", key);
    }
    struct view_counts *c = hashmap_get(o->views, key);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c || hashmap_put(o->views, key, c, NULL) < 0) {
            free(c);
            free(v);
            return -ENOMEM;
        }
    }
    if (v->background) {
        v->next = c->background;
        if (v->next)
            v->next->prev = v;
        c->background = v;
        tls_last_background = v;
    } else if (flags & VM_VIEW_SNAPSHOT) {
        c->snap++;
    } else {
        c->live++;
    }
    *ret = v;
    return 0;
}

void
vm_view_leave(struct vm_view *v)
{
    if (!v)
        return;
    {
        LOCK_FOR_SCOPE(&v->o->lock);
        struct view_counts *c = hashmap_get(v->o->views, v->key);
        if (c) {
            if (v->background) {
                if (v->prev)
                    v->prev->next = v->next;
                else
                    c->background = v->next;
                if (v->next)
                    v->next->prev = v->prev;
            } else if (v->flags & VM_VIEW_SNAPSHOT) {
                c->snap--;
            } else {
                c->live--;
            }
            if (!c->live && !c->snap && !c->background)
                free(hashmap_remove(v->o->views, v->key));
        }
        pthread_cond_broadcast(&v->o->views_left);
    }
    free(v);
}

void
vm_view_background(bool on)
{
    tls_background = on;
    tls_last_background = NULL;
}

struct vm_view *
vm_view_last_background(void)
{
    return tls_last_background;
}

bool
vm_view_cancelled(const struct vm_view *v)
{
    return __atomic_load_n(&v->cancelled, __ATOMIC_ACQUIRE);
}
