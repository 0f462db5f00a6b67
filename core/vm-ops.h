/* core/vm-ops.h: the SPEC's rules on changing a VM, for every backend.
 *
 * - One changing operation per VM at a time, in this daemon and across the
 *   daemons of a host (a flock on STATE/ops/HASH.lock): a second one gets
 *   EBUSY.
 * - An operation that changes the VM's disks (rmdir's merge, restore, a
 *   snapshot's new overlays) and open volume views exclude each other:
 *   whichever comes second gets EBUSY (rmdir of a snapshot in use); the
 *   operation first waits up to 2 s for the views to close (a copy that
 *   just ended: the kernel releases its file after close(2) returns).
 * - The snapshot an operation makes shows as InProgress while it runs.
 *
 * VMs are named by a key: the name on libvirt, "NAMESPACE/NAME" on
 * KubeVirt. Thread model: all functions are thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <time.h>

struct vm_ops;
struct vm_view;

struct vm_ops *vm_ops_new(void);
void vm_ops_free(struct vm_ops *o);

enum vm_op_flags {
    VM_OP_DISKS = 1 << 0,     /* changes the disks: no view may be open */
    VM_OP_LIVE_DISKS = 1 << 1, /* changes the VM's own disks only (a new
                                 snapshot's overlays): views of snapshots
                                 stay open meanwhile */
    VM_OP_META = 1 << 2,      /* a moment's write of metadata for the daemon
                                 itself (a snapshot's sums): EBUSY for it if
                                 anything runs; an operation that comes
                                 meanwhile waits for it, never EBUSY */
};

enum vm_view_flags {
    VM_VIEW_SNAPSHOT = 1 << 0,  /* a view of a snapshot (else: the VM's disks) */
};

/* -EBUSY if an operation runs on key here or in another daemon of the host
 * (or, with VM_OP_DISKS, a view of it is open); -EIO (logged) if the
 * host-wide lock cannot be had: operations fail rather than run unlocked.
 * snap: the snapshot it makes (shown InProgress), or NULL. */
int vm_op_begin(struct vm_ops *o, const char *key, const char *snap, unsigned flags);
void vm_op_end(struct vm_ops *o, const char *key);
/* The operation goes on (busy) but makes no snapshot any more. */
void vm_op_forget_snapshot(struct vm_ops *o, const char *key);
/* The snapshot an operation on key makes right now (copied), or NULL. */
char *vm_op_snapshot(struct vm_ops *o, const char *key, time_t *ret_started);
/* Why vm_op_begin refused (r its result), for events. */
const char *vm_op_refusal(int r);

/* One more open view of key: -EBUSY while an operation that changes its
 * disks runs. vm_view_leave() when the view closes. */
int vm_view_enter(struct vm_ops *o, const char *key, unsigned flags, struct vm_view **ret);
void vm_view_leave(struct vm_view *v);

/* Background views (checksums): views entered on this thread between
 * vm_view_background(true) and (false) never make an operation EBUSY.
 * An operation on the disks tells them instead (vm_view_cancelled()) and
 * waits until they are closed, which their reader does at its next step.
 * vm_view_last_background(): the last one this thread entered (or NULL),
 * valid until that view is closed. */
void vm_view_background(bool on);
struct vm_view *vm_view_last_background(void);
bool vm_view_cancelled(const struct vm_view *v);
