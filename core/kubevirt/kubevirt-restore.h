/* core/kubevirt/kubevirt-restore.h: what the two halves of a KubeVirt
 * restore share: kubevirt-restore.c (checks, safety snapshot, the
 * VirtualMachineRestore made) and kubevirt-restore-finish.c (its outcome,
 * what comes after, in the background too). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "clock.h"
#include "deadline.h"
#include "kube-objects.h"
#include "kubevirt-private.h"

/* without a failure deadline: how long KubeVirt may take */
#define RESTORE_WAIT_NS (UINT64_C(600) * NSEC_PER_SEC)
/* on our VirtualMachineRestores: what to do after it (JSON: mode,
 * conflicts, startAfter, safety, volumes and interfaces to drop) */
#define RESTORE_ANNOTATION "vmsnapfs.io/restore"

static inline size_t
array_len(struct json_object *a)
{
    return a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
}

static inline const char *
name_of(struct json_object *o)
{
    return kube_get_str(o, "metadata", "name", (char *) NULL);
}

char *kvr_restores_path(struct kv *kv, const char *ns, const char *name);
/* PUT start or stop on the VM (subresources.kubevirt.io). */
int kvr_vm_action(struct kv *kv, const char *ns, const char *vm, const char *action, char *why,
                  size_t size);
void kvr_delete(struct kv *kv, const char *ns, const char *name);
/* The VM runs: it has a VMI (in the watched copy). */
bool kvr_vm_running(struct kv *kv, const char *ns, const char *vm);
struct json_object *kvr_vm_interfaces(struct json_object *vm);

/* Waits for VirtualMachineRestore name of ns to be complete or failed, until
 * `until` (none: until unmount): 0 complete; -errno with why. */
int kvr_wait(struct kv *kv, const char *ns, const char *name, struct deadline until,
             struct restore_status *st, char *why, size_t size);
/* What comes after a restore that ended with r (why its reason): returns
 * the outcome. */
int kvr_finish(struct kv *kv, const char *ns, const char *vm, const char *name,
               struct json_object *plan, int r, char *why, size_t size);
/* Waits for it in the background, and reports its outcome. */
void kvr_finish_later(struct kv *kv, const char *ns, const char *name);
