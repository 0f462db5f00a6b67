/* core/kubevirt/kubevirt-changes.h: snapshots/S/changes/ on KubeVirt, from
 * changed block tracking (see kubevirt-changes.c for how). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "backend.h"

struct kv;
struct kv_changes;

/* Before snapshot of the VM is taken: where the VM tracks changed blocks,
 * freezes the guest and starts the backup that makes the checkpoint; else
 * notes why not. Never fails the snapshot: 0 (or -ENOMEM), *ret set. */
int kv_changes_begin(struct kv *kv, const struct vm_ref *ref, const struct vmsnapfs_opts *o,
                     struct kv_changes **ret);
/* After it: made, its changes (or why none) recorded on snapshot snap; in
 * every case the guest thawed, the backup and its Secret deleted. Frees c. */
void kv_changes_end(struct kv *kv, const struct vm_ref *ref, const char *snap,
                    struct kv_changes *c, bool made);
/* Before snapshot snap is deleted: the snapshot that builds on it takes
 * over its changes and its base. 0, or -errno (why) if that could not be
 * recorded. */
int kv_changes_fold(struct kv *kv, const struct vm_ref *ref, const char *snap, char *why,
                    size_t size);
/* Deletes the backups and token Secrets a killed vmsnapfs of this host
 * left, and thaws their guests. */
void kv_changes_recover(struct kv *kv);
/* backend_ops changes_base and changes_open */
int kv_changes_base(void *h, const struct vm_ref *ref, const char *snap, char **ret_base,
                    char **ret_why);
struct change_map;
struct volume_view;
int kv_changes_open(void *h, const struct vm_ref *ref, const char *snap, const char *vol,
                    struct volume_view **ret, struct change_map **ret_map);
