/* core/image/change-map.h: the map of an incremental backup
 * (snapshots/S/changes/NAME.map): which ranges of a disk changed between
 * a base snapshot and S, and which of them changed to zeros.
 *
 *   {"base": "P", "size": BYTES,
 *    "extents": [{"offset": N, "length": N, "zero": BOOL}, ...]}
 *
 * Extents are in order, do not overlap, are not empty and lie within the
 * disk. Parsed strictly (a map that breaks a rule is refused with the
 * reason) and rendered by the same code. Pure; unit-tested. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct change_extent {
    uint64_t offset;
    uint64_t length;
    bool zero;              /* changed to zeros (written so, or discarded) */
};

struct change_map {
    char *base;             /* the base snapshot's name */
    uint64_t size;          /* the disk's size */
    struct change_extent *v;
    size_t n;
    size_t cap;             /* of v, for change_map_append (0: exactly n) */
};

/* 0, or -EINVAL and a reason in *ret_error (free it) for text that is not
 * such a map. */
int change_map_parse(const char *text, size_t len, struct change_map **ret,
                     char **ret_error);
/* The map as JSON text (free it), or NULL (no memory). */
char *change_map_render(const struct change_map *m);
/* Bytes the extents cover, zero ones included. */
uint64_t change_map_bytes(const struct change_map *m);
void change_map_free(struct change_map *m);

/* Appends [offset, offset + length) to m, which must lie after its last
 * extent; joined to the last one when adjacent and alike. 0 or -ENOMEM
 * (-EINVAL for an extent out of order or past m->size). */
int change_map_append(struct change_map *m, uint64_t offset, uint64_t length, bool zero);
/* The changes from older's base to newer's point: older's changes, with
 * newer's over them where both changed a range (newer says what it holds
 * now), base older's. -EINVAL if the sizes differ. */
int change_map_overlay(const struct change_map *older, const struct change_map *newer,
                       struct change_map **ret);
/* At most max extents (max >= 1), by joining neighbours across the
 * smallest gaps: what is joined counts as changed data, never as zeros
 * (the copy reads what the disk holds there, which is right either way),
 * so the map stays a superset of the changes. */
void change_map_coarsen(struct change_map *m, size_t max);
