/* core/kubevirt/kube-changes-record.h: the changes of a KubeVirt snapshot
 * as kubevirt-changes.c keeps them, in the annotation
 * KUBE_CHANGES_ANNOTATION of its VirtualMachineSnapshot (JSON):
 *
 *   {"checkpoint": C, "claims": {VOLUME: CLAIM}, "vmi": UID,
 *    "base": P, "base_uid": UID,
 *    "volumes": {VOLUME: {"size": N, "extents": [[OFFSET, LENGTH, ZERO], ...]}}}
 *
 * or, when there are none, {"why": "...", ...}. Records are written by
 * vmsnapfs but may be edited by anyone who can patch the snapshot: every
 * reader checks types. Pure; no I/O. */
#pragma once

#include <stddef.h>

#define KUBE_CHANGES_ANNOTATION "vmsnapfs.io/changes"

struct change_map;
struct json_object;

/* How many extents a volume's map may keep when a snapshot has volumes
 * of them (maps are coarsened to it: change_map_coarsen). */
size_t kube_changes_max_extents(size_t volumes);
/* The record of snapshot o (its annotation parsed), or NULL. */
struct json_object *kube_changes_recorded(struct json_object *o);
/* m as a record's volume entry ({"size", "extents"}), or NULL (no memory). */
struct json_object *kube_changes_extents(const struct change_map *m);
/* The change map of volume vol in record j (its base named): -ENOENT if
 * j has none, -EIO if what it has is not a map. */
int kube_changes_map(struct json_object *j, const char *vol, struct change_map **ret);
/* The record of next once the snapshot it builds on (whose record is
 * gone) is deleted: it builds on gone's base, with gone's changes under
 * its own; or a "why" if that cannot be. NULL: no memory. */
struct json_object *kube_changes_folded(struct json_object *gone, struct json_object *next);
