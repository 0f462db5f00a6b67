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
