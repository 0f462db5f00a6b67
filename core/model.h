/* core/model.h: what the tree shows, cached in front of a backend.
 *
 * VM lists and VM details are cached until the backend reports a change
 * (an event), at most VM_CACHE_TTL_NS; snapshot lists, which libvirt
 * reports no events for, SNAPSHOTS_TTL_NS; volume usage
 * VOLUME_USAGE_TTL_NS. A value past that is fetched again, on a thread of
 * its own and once for all who ask meanwhile; while that fetch is slow (a
 * libvirt call waits behind a VM being killed), callers get the value it
 * replaces after a short wait — but never a value from before a change
 * made through this mount (an op returns only once its change shows).
 * Cached objects are immutable and reference-counted, so readers render
 * them without holding a lock. The listener hears of every change after the
 * cache has dropped it (fs/ uses it to invalidate the kernel's caches).
 *
 * Thread model: all functions are thread-safe; listener callbacks run on
 * the backend's event thread.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "clock.h"
#include "events.h"
#include "opts.h"
#include "restore.h"

#define SNAPSHOTS_TTL_NS (UINT64_C(1000) * 1000000)

struct model;

struct model_listener {
    /* change: enum vm_change bits */
    void (*vm_changed)(void *opaque, const char *ns, const char *name,
                       unsigned change);
    void (*reset)(void *opaque);
    void *opaque;
};

/* Immutable, shared: release with model_vm_unref(). */
struct model_vm {
    int refs;                     /* first: the cache counts every value so */
    struct vm_info *info;
};

struct model_snapshots {
    int refs;
    struct snapshot_info **v;     /* sorted by name */
    size_t n;
};

/* -EINVAL (logged) if no backend serves source. */
int model_open(const char *source, const struct vmsnapfs_opts *o,
               struct model **ret);
/* The same with a given backend (tests: a fake one). */
int model_open_ops(const struct backend_ops *ops, const char *source,
                   const struct vmsnapfs_opts *o, struct model **ret);
void model_close(struct model *m);
void model_set_listener(struct model *m, const struct model_listener *l);

bool model_namespaced(const struct model *m);
/* every snapshot change comes as an event (backend_ops.notifies_snapshots) */
bool model_notifies_snapshots(const struct model *m);
struct events *model_events(struct model *m);

int model_list_namespaces(struct model *m, char ***ret_names);
int model_list_vms(struct model *m, const char *ns, char ***ret_names);
/* 0 if ns/name is a VM, -ENOENT if not (from the cached list) */
int model_vm_exists(struct model *m, const char *ns, const char *name);
int model_namespace_exists(struct model *m, const char *ns);

int model_vm_get(struct model *m, const char *ns, const char *name,
                 struct model_vm **ret);
void model_vm_unref(struct model_vm *v);

int model_snapshots_get(struct model *m, const char *ns, const char *name,
                        struct model_snapshots **ret);
void model_snapshots_unref(struct model_snapshots *s);
/* the snapshot called snap in s, or NULL */
const struct snapshot_info *model_snapshot_find(const struct model_snapshots *s,
                                                const char *snap);

/* 0 if snap may be a new snapshot's name (SPEC "Names"); -EINVAL, and the
 * rule in events, if not. model_snapshot_create() checks it too. */
int model_snapshot_name_check(struct model *m, const char *ns, const char *vm,
                              const char *snap);
/* The backend's op for creating a snapshot; -ENOTSUP where it has none. */
int model_snapshot_create(struct model *m, const char *ns, const char *vm,
                          const char *snap, const struct vmsnapfs_opts *o);
int model_snapshot_delete(struct model *m, const char *ns, const char *vm,
                          const char *snap);

/* Does the VM have a snapshot of that name (now)? */
bool model_snapshot_exists(struct model *m, const char *ns, const char *vm,
                           const char *snap);
/* Restore and clone (SPEC "Restore"): -ENOTSUP where the backend has them
 * not; the outcome goes to events, a restore's also to its status. */
int model_restore(struct model *m, const char *ns, const char *vm,
                  const struct restore_request *rq, const struct vmsnapfs_opts *o);
int model_clone(struct model *m, const char *ns, const char *vm, const char *snap,
                const char *new_name, const struct vmsnapfs_opts *o);
/* The VM's last restore through this mount, copied into *ret (release
 * with restore_status_clear()): 1, or 0 if there was none. */
int model_restore_status(struct model *m, const char *ns, const char *vm,
                         struct restore_status *ret);

/* A point-in-time view of a VM's volume (snap NULL) or a snapshot's. */
int model_volume_open(struct model *m, const char *ns, const char *vm,
                      const char *snap, const char *vol, struct volume_view **ret);
/* snapshots/S/changes/: S's predecessor (-ENOENT: none; -ENOTSUP: the
 * backend has no changes), and a view of what changed on vol since it with
 * its map (backend.h). */
int model_changes_base(struct model *m, const char *ns, const char *vm, const char *snap,
                       char **ret_base, char **ret_why);
struct change_map;
int model_changes_open(struct model *m, const char *ns, const char *vm, const char *snap,
                       const char *vol, struct volume_view **ret, struct change_map **ret_map);
/* Keeps a snapshot's sums with it (backend_ops.snapshot_set_sums). */
int model_snapshot_set_sums(struct model *m, const char *ns, const char *vm, const char *snap,
                            const char *record);
/* SHA256SUMS of snapshots (sums.h); NULL with -o no_checksums. */
struct sums;
struct sums *model_sums(struct model *m);
/* st_size and the bytes holding data; cached VOLUME_USAGE_TTL_NS */
int model_volume_usage(struct model *m, const char *ns, const char *vm,
                       const char *snap, const char *vol, uint64_t *ret_size,
                       uint64_t *ret_allocated);
#define VOLUME_USAGE_TTL_NS (UINT64_C(5) * 1000000000)
