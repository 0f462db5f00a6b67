/* core/libvirt/libvirt-merge.h: rmdir's merges on libvirt (libvirt-snapshot.c).
 *
 * Deleting snapshot S merges the layer above S's layer (S's overlay) into
 * S's layer: a block commit while the VM runs, qemu-img commit when it is
 * stopped. From the first commit on, S's layer holds newer data, so S's
 * metadata goes before any merge starts, and a merge record on disk makes
 * sure every path (start, reconnect, a later pass) finishes what began.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <libvirt/libvirt.h>

#include "backend.h"
#include "layers.h"
#include "restore-plan.h"

struct lv;

/* Merges overlay (S's overlay, in the chain of disk, whose top is top) into
 * the image below it. *started turns true once S's layer may have changed
 * (a commit began). Called with the VM's operation held. */
int lv_merge_disk(virConnectPtr c, virDomainPtr dom, bool running, const char *disk,
                  const char *top, const char *top_fmt, const char *overlay,
                  bool *started, struct op_report *rep);
/* May snapshot S (overlay ov) be merged away on a disk whose top is now
 * top: is it a plain link of the VM's own chain? */
bool lv_mergeable(const struct layer_refs *g, const char *ov, const char *top);
/* The first of the n disks with a block job (a merge, a copy), or NULL. */
const char *lv_block_job_any(virDomainPtr dom, const struct volume *disks, size_t n);

/* Writes the merge record of snapshot snap of dom durably (p: overlays and,
 * in old, their disks; path, vm, uuid, snap filled in). */
int lv_merge_record_write(struct restore_plan *p, virDomainPtr dom, const char *snap);
/* Finishes (or drops, where nothing changed yet) the merge an interrupted
 * rmdir left (record at path; see lv_restore_recover_record()). */
int lv_merge_recover_record(const char *path, void *pass);
