/* core/kubevirt/kubevirt-private.h: the KubeVirt backend's state, shared by
 * its files (kubevirt-backend.c: the tree, snapshots; kubevirt-volumes.c:
 * disks). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "kube-cache.h"
#include "kube-export.h"
#include "kube-http.h"
#include "kube-scope.h"
#include "vm-ops.h"

enum { C_VMS, C_VMIS, C_SNAPS, C_CONTENTS, C_PVCS, _C_MAX };

struct kv {
    struct kube_client *client;
    struct vm_ops *ops;         /* one changing operation per VM ("ns/name") */
    char snap_version[16];      /* snapshot.kubevirt.io: v1beta1 or v1alpha1 */
    struct backend_events events;
    struct kube_scope *scope;   /* the watched copies: C_* collections */
    struct kube_exports *exports; /* disks read through VirtualMachineExports */
    uint64_t deadline_ns;       /* failure_deadline (0: none) */
    char owner[320];            /* HOST/PID/START: which daemon made a snapshot */

    pthread_mutex_t thaw_lock;  /* late-thaw threads: how many, closing */
    pthread_cond_t thaw_cond;
    unsigned thaws;
    bool closing;
};

/* The copy of collection c that holds namespace ns; NULL: ns not watched
 * (the kube_cache functions take NULL as an empty copy). */
static inline struct kube_cache *
cache(struct kv *kv, int c, const char *ns)
{
    return kube_scope_cache(kv->scope, (size_t) c, ns);
}

/* Formats into buf; returns r. */
int kv_sayf(char *buf, size_t size, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define kv_say(rep, r, ...) kv_sayf((rep)->text, sizeof (rep)->text, (r), __VA_ARGS__)
/* One API request; its answer parsed into *ret (may be NULL) if ret. */
int kv_api(struct kv *kv, const char *method, const char *path, const char *body,
           struct json_object **ret, char *why, size_t size);

/* The label of the temporary snapshots a running VM's disk is read from
 * (kubevirt-volumes.c): hidden from snapshots/. */
#define KV_TEMPORARY_LABEL "vmsnapfs.io/temporary"

/* Takes snapshot snap of the VM (running: it has a VMI; temporary: with
 * KV_TEMPORARY_LABEL) and waits until it is Succeeded and readyToUse, at
 * most o's failure deadline (and KubeVirt's, the same, 5 s more); a failed
 * one is deleted and the guest thawed, also later if its freeze lands
 * late. The caller holds the VM's operation (vm_op_begin). */
int kv_snapshot_make(struct kv *kv, const struct vm_ref *ref, const char *snap,
                     const struct vmsnapfs_opts *o, bool running, bool temporary,
                     struct op_report *rep);
/* The API path of ns's objects of snapshot.kubevirt.io plural, or of one
 * (name). */
char *kv_snapshot_api_path(struct kv *kv, const char *plural, const char *ns, const char *name);
/* The API path of ns's VirtualMachineSnapshots, or of one (name). */
char *kv_snapshots_path(struct kv *kv, const char *ns, const char *name);
/* Sets annotation key of VirtualMachineSnapshot ns/snap to value (a merge
 * patch: nothing else of it changes; -ENOENT if it is gone). */
int kv_snapshot_annotate(struct kv *kv, const char *ns, const char *snap, const char *key,
                         const char *value, char *why, size_t size);
/* Deletes a VirtualMachineSnapshot (logged if that fails). */
void kv_delete_snapshot(struct kv *kv, const char *ns, const char *snap);
/* Restore and clone (kubevirt-restore.c, kubevirt-clone.c). */
int kv_restore(void *h, const struct vm_ref *ref, const struct restore_request *rq,
               const struct vmsnapfs_opts *o, struct restore_status *st);
/* A VirtualMachineRestore of ns targeting vm (if vm) or using snapshot
 * snap (if snap) that is neither complete nor failed (a failed one is
 * never tried again): its name in who, 1; 0 if none; < 0 if the list
 * cannot be had (why; -EACCES: these credentials may not list them). One
 * request: restores are rare, not worth a watch. */
int kv_restore_active(struct kv *kv, const char *ns, const char *vm, const char *snap,
                      char *who, size_t who_size, char *why, size_t size);
/* Finds the restores a killed vmsnapfs left and reports their outcome. */
void kv_restore_recover(struct kv *kv);
int kv_clone(void *h, const struct vm_ref *ref, const char *snap, const char *new_name,
             const struct vmsnapfs_opts *o, struct op_report *rep);
/* PUT unfreeze on the VM's instance (logged if it fails). */
int kv_unfreeze(struct kv *kv, const char *ns, const char *vm);
/* Thaws the VM's guest if a freeze whose call failed lands later. */
void kv_late_thaw(struct kv *kv, const struct vm_ref *ref);
/* A thread that outlives an operation (kv_close waits for it): 0 or -errno. */
int kv_thread_start(struct kv *kv, void *(*fn)(void *), void *arg);
void kv_thread_done(struct kv *kv);
bool kv_closing(struct kv *kv);

int kv_volume_open(void *h, const struct vm_ref *ref, const char *snap, const char *vol,
                   struct volume_view **ret);
/* kubevirt-volumes.c: is o a temporary snapshot, made to read a running
 * VM's disks (hidden from the tree; a killed daemon's are deleted)? */
bool kv_snapshot_temporary(struct json_object *o);
