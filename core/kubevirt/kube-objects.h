/* core/kubevirt/kube-objects.h: KubeVirt objects as the tree shows them
 * (core/backend.h's mapping; kubevirt-api.md §1.2, §1.3, §7). Pure: JSON
 * in, vm_info / snapshot_info out.
 *
 * - A VM's state is status.printableStatus ("Stopped" while absent); it
 *   runs (snapshots are Online) while it has a VMI; the agent is connected
 *   while the VMI has an AgentConnected condition (KubeVirt removes it on
 *   disconnect; only its presence counts, as in KubeVirt's snapshot code).
 * - Volumes are the VM's PVC, DataVolume and memory-dump volumes (the ones
 *   KubeVirt can snapshot and export).
 * - A snapshot is Succeeded only once readyToUse (phase Succeeded comes
 *   first); indications are read from both `indications` and
 *   `sourceIndications`, old and new spellings; unknown ones are left out.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "backend.h"

struct json_object;

/* The value at a path of object keys (NULL-terminated), or NULL. */
struct json_object *kube_get(struct json_object *o, ...) __attribute__((sentinel));
/* The same for a string value. */
const char *kube_get_str(struct json_object *o, ...) __attribute__((sentinel));
/* The length of array a; 0 if a is NULL or no array. */
size_t kube_array_len(struct json_object *a);

/* "10Gi", "1G", "1.5Ti", "1e9", "512": bytes; -EINVAL (or -ERANGE). */
int kube_quantity_bytes(const char *s, uint64_t *ret);
/* A PersistentVolumeClaim's size: its capacity once bound, else what it
 * requests; -EINVAL if it says neither (pvc may be NULL). */
int kube_claim_bytes(struct json_object *pvc, uint64_t *ret);
/* RFC 3339 as the API writes it ("2026-12-06T07:39:04Z", fractions and
 * offsets allowed); -EINVAL. */
int kube_time(const char *s, time_t *ret);

/* A name the tree can show as one entry: non-empty, no '/', no control
 * characters, not "." or ".." (anything Kubernetes allows passes). */
bool kube_name_ok(const char *s);

/* Is the guest agent of vmi (NULL: none) connected? */
/* base64 into NUL-terminated bytes (free() them; wipe what is secret):
 * -EINVAL if not base64 or empty */
int kube_base64_text(const char *b64, char **ret);

/* The condition of type in status.conditions (borrowed), or NULL. */
struct json_object *kube_condition(struct json_object *o, const char *type);
/* status.conditions has one of type whose status is "True" */
bool kube_condition_true(struct json_object *o, const char *type);
bool kube_vmi_agent(struct json_object *vmi);

/* vmi may be NULL (the VM does not run). */
int kube_vm_info(struct json_object *vm, struct json_object *vmi, struct vm_info **ret);
/* A VirtualMachineSnapshot's SHA256SUMS record (core/sums.h), kept by vmsnapfs. */
#define KUBE_SUMS_ANNOTATION "vmsnapfs.io/sha256sums"

/* content may be NULL (not made yet, or not readable). */
int kube_snapshot_info(struct json_object *snap, struct json_object *content,
                       struct snapshot_info **ret);
/* Is snap a snapshot of VM vm (spec.source: apiGroup kubevirt.io, kind
 * VirtualMachine, that name)? */
/* kube-graph.c: what a VM object depends on, "GROUP KIND NAMESPACE NAME"
 * lines (the VM's first; "core" for the core group, "-" for no
 * namespace); ns: the VM's namespace if the object has none. */
int kube_object_graph(struct json_object *vm, const char *ns, char ***ret);

bool kube_snapshot_of(struct json_object *snap, const char *vm);
