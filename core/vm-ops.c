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
    bool disks;             /* no view of the VM may open meanwhile */
};

/* A copy that just ended: close(2) has returned, but the kernel tells the
 * daemon (RELEASE) a moment later. An operation on the disks waits that
 * long for the views to go before it answers EBUSY: `cp ...; rmdir ...`
 * works. */
#define VIEW_CLOSE_WAIT_S 2

struct vm_ops {
    pthread_mutex_t lock;   /* ops, views */
    pthread_cond_t views_left;
    struct hashmap *ops;    /* key -> struct vm_op */
    struct hashmap *views;  /* key -> open views (count) */
};

struct vm_view {
    struct vm_ops *o;
    char key[];
};

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
    hashmap_free(o->views, NULL);   /* views end before the backend */
    pthread_cond_destroy(&o->views_left);
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
    op->disks = flags & VM_OP_DISKS;
    LOCK_FOR_SCOPE(&o->lock);
    if (op->disks && !hashmap_get(o->ops, key) && hashmap_get(o->views, key)) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += VIEW_CLOSE_WAIT_S;
        while (hashmap_get(o->views, key) && !hashmap_get(o->ops, key) &&
               pthread_cond_timedwait(&o->views_left, &o->lock, &until) == 0)
            ;
    }
    if (hashmap_get(o->ops, key) || (op->disks && hashmap_get(o->views, key))) {
        op_free(op);
        return -EBUSY;
    }
    int fd = host_lock(key);
    if (fd < 0) {
        op_free(op);
        return fd;
    }
    op->lock_fd = fd;
    if (hashmap_put(o->ops, key, op, NULL) < 0) {
        op_free(op);
        return -ENOMEM;
    }
    return 0;
}

void
vm_op_end(struct vm_ops *o, const char *key)
{
    LOCK_FOR_SCOPE(&o->lock);
    op_free(hashmap_remove(o->ops, key));
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
vm_view_enter(struct vm_ops *o, const char *key, struct vm_view **ret)
{
    struct vm_view *v = calloc(1, sizeof *v + strlen(key) + 1);

    if (!v)
        return -ENOMEM;
    v->o = o;
    strcpy(v->key, key);
    LOCK_FOR_SCOPE(&o->lock);
    struct vm_op *op = hashmap_get(o->ops, key);
    if (op && op->disks) {
        free(v);
        return log_error_errno(-EBUSY, "'%s': an operation changes its disks right now: "
                               "no volume opens meanwhile", key);
    }
    uintptr_t n = (uintptr_t) hashmap_get(o->views, key);
    if (hashmap_put(o->views, key, (void *) (n + 1), NULL) < 0) {
        free(v);
        return -ENOMEM;
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
        uintptr_t n = (uintptr_t) hashmap_get(v->o->views, v->key);
        if (n <= 1) {
            hashmap_remove(v->o->views, v->key);
            pthread_cond_broadcast(&v->o->views_left);
        } else {
            hashmap_put(v->o->views, v->key, (void *) (n - 1), NULL);
        }
    }
    free(v);
}
