/* core/image/layers.h: disk image layers as files. Which file backs which (read
 * from the qcow2 header: no qemu-img run, so a whole host is scanned
 * quickly), which files vmsnapfs made (a registry in the state directory),
 * and who builds on whom (a graph of the chains in use), so that nothing
 * merges into or removes a layer that a VM, a clone or a snapshot needs.
 *
 * Paths are canonical (realpath of the file, or of its directory while the
 * file does not exist yet). Thread-safe; the registry is shared by all
 * daemons of the host (flock).
 */
#pragma once

#include <stdint.h>

#include <stdbool.h>
#include <stddef.h>

/* The file backing path: *ret NULL for a raw file or a qcow2 without
 * backing. -errno if path cannot be read, -EINVAL for a qcow2 header that
 * does not make sense. A backing that is not a plain file (nbd://, json:)
 * is returned as written. */
/* The virtual size of an image of format ("qcow2": its header; "raw" or
 * "": the file's or block device's size), read directly, so listings never
 * wait for libvirt's jobs; -ENOTSUP for other formats. */
int layer_virtual_size(const char *path, const char *format, uint64_t *ret);
int layer_backing(const char *path, char **ret);

/* The virtual size of the image top (format: "qcow2" or "raw") and an
 * upper bound of the bytes holding its data: what its chain's files take
 * on disk (a block device: all of it), at most the size. Follows only the
 * backing formats the qcow2 headers name; -ENOTSUP where it cannot tell
 * (another format, no backing format, a protocol backing): ask qemu-img. */
int layer_chain_usage(const char *top, const char *format, uint64_t *ret_size,
                      uint64_t *ret_allocated);
/* The same for the chain below the qcow2 image top (a snapshot's data
 * under the overlay it started); -ENOENT if top has no backing file. */
int layer_backing_usage(const char *top, const char *format, uint64_t *ret_size,
                        uint64_t *ret_allocated);

/* The chain from top down to its base, canonical paths, NULL-terminated.
 * Stops at the first file that cannot be read: that one is still listed
 * (something refers to it) and -ENOENT or -EIO returned with the chain. */
int layer_chain(const char *top, char ***ret);

/* path made canonical: realpath, or realpath(dirname) + basename. */
char *layer_canonical(const char *path);

/* ---- who builds on whom -------------------------------------------------- */

struct layer_refs;

struct layer_refs *layer_refs_new(void);
void layer_refs_free(struct layer_refs *g);
/* Adds a chain in use (top first). */
int layer_refs_add(struct layer_refs *g, char *const *chain);
/* Is path part of any chain in use? */
bool layer_refs_used(const struct layer_refs *g, const char *path);
/* How many distinct files build directly on path; the first in *ret_one. */
size_t layer_refs_children(const struct layer_refs *g, const char *path,
                           const char **ret_one);

/* ---- what vmsnapfs made -------------------------------------------------- */

/* Records path as made by vmsnapfs, before it is made (durable). */
int layer_mine_add(const char *path);
/* At start: the registry private (0600), whatever an older version left. */
void layer_mine_private(void);
bool layer_mine(const char *path);
void layer_mine_remove(const char *path);

/* Removes every candidate that vmsnapfs made and no chain in g uses any
 * more. Returns how many files went. */
size_t layer_reclaim(const struct layer_refs *g, char *const *candidates);
