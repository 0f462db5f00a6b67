/* core/image/qemu-img.h: a disk's backing chain and its extent map, from qemu-img
 * (qemu's own code reads the formats; vmsnapfs reads no qcow2 data, only
 * the backing file's name in the header, in layers.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "extent.h"

struct chain {
    char **layers;      /* absolute paths, top first; NULL-terminated */
    char **formats;     /* "qcow2", "raw", ... per layer */
    size_t n;
    uint64_t size;      /* virtual size of the top */
    bool qemu_only;     /* encrypted or an external data file: QEMU reads all */
};

/* Parses `qemu-img info --backing-chain --output=json` of top. Pure. */
int chain_parse(const char *json, const char *top, struct chain **ret);
void chain_free(struct chain *c);
static inline void
chain_freep(struct chain **c)
{
    chain_free(*c);
}

/* Runs qemu-img (with -U: the image may be in use) for path (format may
 * be NULL or "": then "raw", never probed, as libvirt does). */
int qemu_img_chain(const char *path, const char *format, struct chain **ret);
int qemu_img_map(const struct chain *c, struct extent_map **ret);
