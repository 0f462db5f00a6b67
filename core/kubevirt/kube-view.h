/* core/kubevirt/kube-view.h: a volume view (core/image/volume.h) of a
 * VirtualMachineExport's raw disk: HTTP Range requests to its disk.img
 * URL, TLS verified against the export's certificate, the export token in
 * the x-kubevirt-export-token header.
 *
 * The export server has no map of holes: the view says every byte holds
 * data (allocated = size) and SEEK_HOLE finds only the end.
 *
 * Thread model: reads may run in parallel (a connection each, reused).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct volume_view;

/* Opens a view of url (its size from a HEAD request). ca_pem: the
 * export's certificate (NULL: the system's CAs); token: copied, wiped at
 * close. unchanged(opaque), if given, says whether the source still holds
 * what was opened (a VM not started since): reads fail with -EIO once it
 * does not. on_close(opaque) runs exactly once: at close, or before a
 * failed open returns. -EACCES (401), -EIO (why) for anything else that
 * fails. */
int kube_view_open(const char *url, const char *ca_pem, const char *token,
                   bool (*unchanged)(void *), void (*on_close)(void *), void *opaque,
                   struct volume_view **ret, char *why, size_t size);
