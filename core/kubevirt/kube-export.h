/* core/kubevirt/kube-export.h: VirtualMachineExports made for reading
 * disks (kubevirt-api.md 5): one per source (a VirtualMachineSnapshot,
 * the temporary one of a running VM included, a stopped VirtualMachine),
 * made at the first open, shared by every reader, deleted LINGER after
 * the last close, or when its source goes (kube_exports_drop). Each has a ttlDuration, and a
 * daemon started later deletes those a killed one left (kube-owner.h).
 * The token Secret is read, never shown or logged; the export server's
 * certificate (status.links.*.cert) is verified. The internal link is used
 * in a cluster, the external one (through virt-exportproxy) from an admin
 * node.
 *
 * Thread model: all functions are thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kube-http.h"

struct volume_view;
struct kube_exports;

/* owner: this daemon's "HOST/PID/START"; internal: use the links for
 * clients inside the cluster; wait_ns: how long an export may take to
 * become Ready. -ENOENT (why) if the cluster serves no export.kubevirt.io
 * (then every open fails with that reason). */
int kube_exports_new(struct kube_client *c, const char *owner, bool internal, uint64_t wait_ns,
                     struct kube_exports **ret, char *why, size_t size);
/* Ends the companion (below), then deletes the exports it made (views
 * must be closed). */
void kube_exports_free(struct kube_exports *e);

/* 0, or -EIO (why) if no view can open: the cluster serves no export API
 * (e NULL too). */
int kube_exports_usable(struct kube_exports *e, char *why, size_t size);

/* A view of the disk named volume (the PVC or DataVolume name, as the
 * export's links name it) of source kind/name in ns ("VirtualMachineSnapshot"
 * or "VirtualMachine"); unchanged: see kube_view_open(). on_close(opaque)
 * runs when the view is closed (not if the open fails). -EBUSY: the source
 * is in use (a running VM); -EIO, -EACCES, -ETIMEDOUT with why. */
int kube_exports_view(struct kube_exports *e, const char *ns, const char *kind,
                      const char *name, const char *volume, bool (*unchanged)(void *),
                      void (*on_close)(void *), void *opaque, struct volume_view **ret,
                      char *why, size_t size);

/* Deletes the export of source kind/name in ns now, whether made or not,
 * lingering or already going (the source is about to be deleted: its
 * export must not outlive it); the request is made when this returns.
 * -EBUSY (nothing done) while a view of it is open or opening. */
int kube_exports_drop(struct kube_exports *e, const char *ns, const char *kind,
                      const char *name);

/* What lives as long as e and must end before e's exports go (the
 * temporary snapshots some exports read, kubevirt-volumes.c): made by
 * make(arg) at the first call, under e's lock (make must not call into
 * e), ended by end() first thing in kube_exports_free(), while e still
 * works. Later calls return it; NULL if make() failed (tried again at the
 * next call). */
void *kube_exports_companion(struct kube_exports *e, void *(*make)(void *), void *arg,
                             void (*end)(void *));

/* Deletes the exports in ns (NULL: all namespaces) that a vmsnapfs of
 * this host made and that is gone. */
void kube_exports_recover(struct kube_exports *e, const char *ns);
