/* core/libvirt/libvirt-private.h: what the libvirt backend's files share;
 * private to them. They call each other one way, from the bottom:
 * libvirt-error.c, libvirt-conn.c; libvirt-xml.c, libvirt-layers.c,
 * libvirt-query.c, libvirt-from-snapshot.c, libvirt-freeze.c,
 * libvirt-merge.c; libvirt-snapshot.c, libvirt-volume.c; libvirt-restore.c,
 * libvirt-clone.c; libvirt-backend.c (the ops table, events, reconnect,
 * recovery) on top. */
#pragma once

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "backend.h"
#include "cleanup.h"
#include "hashmap.h"
#include "vm-ops.h"

#define LV_QUERY_CONNS 3

struct lv {
    char *uri;
    char *uri_shown;        /* uri without a password: for messages */
    struct backend_events events;

    pthread_mutex_t lock;       /* protects conn, qconns, ids, lost_logged */
    virConnectPtr conn;         /* NULL while disconnected */
    /* read-only queries of a local daemon go over these: libvirtd serves
     * at most 5 calls of a connection at once, and calls that wait (for a
     * VM being killed, behind a job) must not hold up every listing */
    virConnectPtr qconns[LV_QUERY_CONNS];
    unsigned qnext;             /* round robin */
    int ids[8];                 /* event subscriptions of conn */
    bool lost_logged;
    bool dead;                  /* atomic: closed under us; drop and reconnect */

    pthread_t thread;
    bool thread_started;
    volatile bool quit;
    int timer;                  /* reconnect timer id */

    uint64_t deadline_ns;       /* failure_deadline (0: none) */
    struct vm_ops *vmops;       /* operations and open views, by VM name */

    pthread_mutex_t live_lock;  /* protects lives; held while a backup job
                                   starts or ends (libvirt calls under it) */
    struct hashmap *lives;      /* VM name -> struct lv_live */

    /* recovery in the background (restores and clones a killed daemon or
     * a lost libvirtd left): at start, after a reconnect, when kicked */
    pthread_mutex_t rec_lock;
    pthread_cond_t rec_cond;
    bool rec_kick, rec_quit;
    pthread_t rec_thread;
    bool rec_started;
};

/* What a recovery pass hands to restore_plan_each()'s callbacks. */
struct lv_pass {
    struct lv *lv;
    virConnectPtr c;
};

/* The domain a record of an operation names (by UUID): 1 and *ret; 0 if
 * it is gone (*ret NULL); -EIO if libvirt cannot tell now (libvirt-conn.c). */
int lv_record_domain(virConnectPtr c, const char *uuid, virDomainPtr *ret);

/* Asks the recovery thread for a pass soon (and again every few seconds
 * while something is left). */
void lv_recovery_kick(struct lv *lv);

DEFINE_CLEANUP(virDomainPtr, virDomainFree)
DEFINE_CLEANUP(virConnectPtr, virConnectClose)
DEFINE_CLEANUP(virDomainSnapshotPtr, virDomainSnapshotFree)


/* Writes a reason (printf) into buf, returns r: "return lv_say(...)". */
int lv_say(char *buf, size_t size, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define lv_report(rep, r, ...) lv_say((rep)->text, sizeof (rep)->text, (r), __VA_ARGS__)

/* The last libvirt error of this thread (libvirt-error.c): as the SPEC's
 * -errno (ENOENT for an object gone, EBUSY for an operation invalid now,
 * EACCES, else EIO); lv_errno() also logs it (not ENOENT), once: callers
 * that report the message themselves use lv_error(). */
int lv_error(void);
int lv_errno(const char *what, const char *name);
/* Its message (fallback if none), and whether it has that code. */
const char *lv_last_message(const char *fallback);
bool lv_last_is(int code);
/* A reference to the current connection, or NULL (-EIO logged) if there
 * is none right now. Release with virConnectClose(). */
virConnectPtr lv_conn(struct lv *lv);
/* A connection for read-only calls (one of several for a local daemon,
 * else the main one); NULL while disconnected. Domains looked up on it
 * stay on it. */
virConnectPtr lv_query_conn(struct lv *lv);
virDomainPtr lv_lookup(virConnectPtr c, const char *name, int *ret_err);

/* How every changing operation on a VM begins (snapshot, delete, restore,
 * clone): lv_vm_open() (a connection, the domain), checks of its own, then
 * lv_vm_op() (the VM's operation: vm-ops.h); the reason of a failure in
 * why (empty for a VM that is not there: -ENOENT). lv_vm_close() ends the
 * operation (unless op was cleared: handed over) and frees the rest. */
struct lv_vm {
    struct lv *lv;
    const char *name;
    virConnectPtr c;
    virDomainPtr dom;
    bool op;                /* the VM's operation is held */
};
int lv_vm_open(struct lv *lv, const char *name, struct lv_vm *ret, char *why, size_t size);
int lv_vm_op(struct lv_vm *v, const char *snap, unsigned flags, char *why, size_t size);

/* backend_ops.snapshot_set_sums: in the snapshot's description */
int lv_snapshot_set_sums(void *h, const struct vm_ref *ref, const char *snap, const char *record);
void lv_vm_close(struct lv_vm *v);

/* libvirt-query.c: the ops that read */
int lv_list_vms(void *h, const char *ns, char ***ret_names);
int lv_vm_get(void *h, const struct vm_ref *ref, struct vm_info **ret);
int lv_snapshot_list(void *h, const struct vm_ref *ref,
                     struct snapshot_info ***ret_snaps, size_t *ret_n);
int lv_snapshot_create(void *h, const struct vm_ref *ref, const char *snap,
                       const struct vmsnapfs_opts *o, struct op_report *rep);
int lv_snapshot_delete(void *h, const struct vm_ref *ref, const char *snap,
                       struct op_report *rep);
int lv_volume_open(void *h, const struct vm_ref *ref, const char *snap,
                   const char *vol, struct volume_view **ret);
/* At start, per running domain: end a backup job of a live view whose
 * daemon died. */
void lv_end_stale_job(virDomainPtr dom);
int lv_volume_usage(void *h, const struct vm_ref *ref, const char *snap,
                    const char *vol, uint64_t *ret_size, uint64_t *ret_allocated);
int lv_changes_base(void *h, const struct vm_ref *ref, const char *snap, char **ret_base,
                    char **ret_why);
int lv_changes_open(void *h, const struct vm_ref *ref, const char *snap, const char *vol,
                    struct volume_view **ret, struct change_map **ret_map);

struct layer_refs;
/* Every domain of the host (both definitions; live NULL if it does not
 * run) and every snapshot, through callbacks; the first error stops it.
 * Fails closed: only objects gone meanwhile are left out. */
struct lv_scan {
    int (*domain)(void *opaque, virDomainPtr d, const char *inactive, const char *live);
    int (*snapshot)(void *opaque, virDomainPtr d, const char *xml);  /* may be NULL */
    void *opaque;
};
int lv_scan_host(virConnectPtr c, const struct lv_scan *scan);
/* The chains every domain and snapshot of c uses (libvirt-layers.c). */
int lv_layer_refs(virConnectPtr c, struct layer_refs **ret);
int lv_refs_add_domain(struct layer_refs *g, virDomainPtr d, const char *inactive,
                       const char *live);
int lv_refs_add_snapshot(struct layer_refs *g, virDomainPtr d, const char *xml);
/* Removes the candidates vmsnapfs made that nothing uses any more. */
/* -EIO (nothing removed) if the users of the layers cannot be told now. */
int lv_reclaim(virConnectPtr c, char *const *candidates);
/* Appends s (or the chain below top) to the NULL-terminated *v of *n. */
int strv_push(char ***v, size_t *n, const char *s);
int strv_push_chain(char ***v, size_t *n, const char *top);

/* Takes snapshot snap with the VM's operation held (libvirt-snapshot.c). */
int lv_snapshot_create_locked(struct lv *lv, virDomainPtr dom, const char *snap,
                              const struct vmsnapfs_opts *o, struct op_report *rep);

/* libvirt-restore.c */
int lv_restore(void *h, const struct vm_ref *ref, const struct restore_request *rq,
               const struct vmsnapfs_opts *o, struct restore_status *st);
int lv_clone(void *h, const struct vm_ref *ref, const char *snap, const char *new_name,
             const struct vmsnapfs_opts *o, struct op_report *rep);
/* Recovery (libvirt-backend.c runs one pass over the records of each
 * kind: restore_plan_each() with a struct lv_pass): each takes the record
 * at path, under its VM's operation, and returns 1 if it is left for a
 * later pass (libvirt could not tell, the VM is busy, it did not start).
 *  - a restore a killed daemon (or a lost libvirtd) left: finished or
 *    rolled back;
 *  - a clone left half-made: the overlays no VM uses reclaimed;
 *  - a mkdir killed half-way (libvirt-snapshot.c): the same. */
int lv_restore_recover_record(const char *path, void *pass);
int lv_clone_recover_record(const char *path, void *pass);
int lv_snapshot_recover_record(const char *path, void *pass);
