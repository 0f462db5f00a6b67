/* core/image/extent.h: a disk's chain resolved into an extent table: every range
 * of the virtual disk is zeros, a range of one layer file (read with
 * pread), or something only QEMU can read (compressed or encrypted
 * clusters: read through NBD). Built from `qemu-img map --output=json`, so
 * qemu's own code does the mapping. Pure; unit-tested. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum extent_kind {
    EXTENT_ZERO,        /* reads as zeros; a hole */
    EXTENT_FILE,        /* layer file `layer` at host `offset` */
    EXTENT_QEMU,        /* data only QEMU can decode */
};

struct extent {
    uint64_t start;
    uint64_t length;
    enum extent_kind kind;
    unsigned layer;     /* index into the chain, 0 = top */
    uint64_t offset;    /* EXTENT_FILE: host offset in the layer */
    unsigned depth;     /* the layer that says what the range holds (data
                           or zeros), as qemu-img reports it */
    bool present;       /* false: no layer has it (zeros below the base) */
};

struct extent_map {
    struct extent *v;   /* sorted, contiguous, covering [0, size) */
    size_t n;
    uint64_t size;      /* virtual size */
    uint64_t allocated; /* bytes in non-zero extents */
    bool needs_qemu;    /* some extent is EXTENT_QEMU */
};

/* Parses qemu-img map's JSON for a chain of n_layers layers and a disk of
 * size bytes. direct[i]: layer i's data can be read at the host offsets
 * qemu reports (raw and qcow2: the offset is into that very file); data of
 * other layers (vmdk extent files, ...) is left to QEMU. direct may be NULL
 * (all direct). -EINVAL for output that does not describe [0, size). */
int extent_map_parse(const char *json, unsigned n_layers, const bool *direct,
                     uint64_t size, struct extent_map **ret);
void extent_map_free(struct extent_map *m);

/* The extent holding off, or NULL past the end. */
const struct extent *extent_find(const struct extent_map *m, uint64_t off);

/* lseek(2) SEEK_DATA / SEEK_HOLE over the map: the offset in *ret, or
 * -ENXIO (off at or past the end; for SEEK_DATA also no data after off).
 * Zero extents are holes; the end of the disk is a hole. */
int extent_seek(const struct extent_map *m, uint64_t off, int whence,
                uint64_t *ret);
