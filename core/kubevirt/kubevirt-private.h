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

int kv_volume_open(void *h, const struct vm_ref *ref, const char *snap, const char *vol,
                   struct volume_view **ret);
