/* core/snapshot-json.h: a snapshot's status.json (SPEC: "all of the above
 * as one JSON object, for tools"). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"

/* Allocated, newline-terminated JSON text; NULL on OOM. changes_base:
 * the snapshot changes/ is relative to, or NULL and changes_why: why
 * there is no changes/ (both NULL: say nothing of it). sums: where its
 * SHA256SUMS stands ("checksums"; and "progress" while they are being
 * computed), or NULL (no_checksums). */
struct sums_status;
char *snapshot_status_json(const char *ns, const char *vm,
                           const struct snapshot_info *s, const char *changes_base,
                           const char *changes_why, const struct sums_status *sums);


/* What vmsnapfs keeps of a snapshot where libvirt has no field for it, in
 * the snapshot's description: "vmsnapfs {JSON}". */
struct snapshot_meta {
    unsigned indications;       /* bits of enum indication */
    char **excluded;            /* NULL-terminated, may be NULL */
    uint64_t freeze_ms;         /* freeze to thaw, as measured */
    bool have_freeze;
    char *sums;                 /* its SHA256SUMS record (sums.h: JSON), or NULL */
};

char *snapshot_meta_encode(const struct snapshot_meta *m);
/* Frees what decode allocated (excluded, sums). */
void snapshot_meta_clear(struct snapshot_meta *m);
/* 0 and *ret (excluded allocated) if text holds vmsnapfs metadata,
 * -ENOENT if it does not, -EINVAL if it is damaged. */
int snapshot_meta_decode(const char *text, struct snapshot_meta *ret);
