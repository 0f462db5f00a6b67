/* core/kubevirt/kube-backup.h: the map endpoint of a pull-mode
 * VirtualMachineBackup (kubevirt-api.md 12.7): which blocks of a disk
 * changed since the checkpoint an incremental backup started from.
 *
 *   GET .../exports/VOLUME/map?offset=N ->
 *   {"extents": [{"offset", "length", "type", "description"}, ...],
 *    "next_offset": N | null}
 *
 * Types of an incremental backup: 0 clean, 1 dirty, 2 zero, 3 dirty,zero
 * (discarded). The extents of all pages cover the disk, in order.
 *
 * Thread model: no shared state. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct change_map;

/* Adds one page (text) that starts at offset `at` to m: its dirty extents
 * as changes (dirty,zero as zeros); m->size becomes the end of the page.
 * *ret_next: where the next page starts, UINT64_MAX if none. -EINVAL (why)
 * for a page that is not such a map (gaps, overlaps, unknown types). Pure;
 * unit-tested. */
int kube_backup_map_page(const char *text, size_t len, uint64_t at, struct change_map *m,
                         uint64_t *ret_next, char *why, size_t size);
/* The changes of the disk whose map endpoint is url (all pages), TLS
 * verified against ca_pem, the token in the x-kubevirt-export-token
 * header (never logged). m->size is the disk's size. -EACCES (401),
 * -EAGAIN (503: the backup's source is not connected yet), -ETIMEDOUT
 * at deadline_ns (monotonic), -EIO (why). The map is coarsened to
 * max_extents (change_map_coarsen) as it comes: memory stays bounded. */
int kube_backup_map_fetch(const char *url, const char *ca_pem, const char *token,
                          uint64_t deadline_ns, size_t max_extents, struct change_map **ret,
                          char *why, size_t size);
