/* core/restore-plan.h: records of operations on disk, written durably
 * before each step, so that a daemon killed half-way (or one that lost
 * libvirtd) is followed by one that finishes or rolls back:
 *  - a restore's plan (libvirt-restore.c): STATE/restore/UUID.json, and
 *    STATE/restore/UUID.lock, held by the daemon restoring that VM;
 *  - a clone's record (libvirt-clone.c): STATE/clone/NEWVM.json;
 *  - an rmdir's merge record (libvirt-merge.c): STATE/merge/UUID.json.
 * One format (JSON, json-c), one directory walk. No libvirt here. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct restore_plan {
    char *vm, *uuid, *snap;
    char id[33];                /* marks the new definition (libvirt-xml.h) */
    const char *phase;          /* "stopping", "prepared", "defined"; records
                                   in the same format: "cloning" (libvirt-clone.c),
                                   "merging" (libvirt-merge.c), "snapshotting"
                                   (libvirt-snapshot.c) */
    bool start_after;           /* the restore stopped the VM */
    char **overlays;            /* new tops (NULL-terminated) */
    size_t n_overlays;
    char **old;                 /* the old chains, reclaimed at the end */
    size_t n_old;
    char *path;                 /* the plan file */
};

void restore_plan_clear(struct restore_plan *p);
/* STATE/restore (allocated), or NULL. */
char *restore_plan_dir(void);
/* Where records of kind ("restore", "clone", "merge") live: STATE/kind. */
char *restore_plan_dir_of(const char *kind);
/* Sets p->path to STATE/kind/key.json and makes its directory (0700). */
int restore_plan_set_path(struct restore_plan *p, const char *kind, const char *key);
/* Starts record p of kind at STATE/kind/key.json (directory made) for vm
 * (uuid, snap) in phase; overlays and old empty, not NULL. */
int restore_plan_init(struct restore_plan *p, const char *kind, const char *key,
                      const char *vm, const char *uuid, const char *snap, const char *phase);
/* Calls fn on the path of every record of kind; returns the sum of what
 * fn returned (the records left for a later pass). */
int restore_plan_each(const char *kind, int (*fn)(const char *path, void *opaque),
                      void *opaque);
/* Reads the record at path, which must be in phase (logged if it is not a
 * record vmsnapfs can read): 0 or -EINVAL. */
int restore_plan_read_phase(const char *path, const char *phase, struct restore_plan *p);
/* Writes p durably (a new file fsync'd, renamed, the directory fsync'd);
 * sets p->path on the first write. */
int restore_plan_write(struct restore_plan *p);
int restore_plan_read(const char *path, struct restore_plan *p);
void restore_plan_remove(struct restore_plan *p);
/* The lock of uuid's plan: an fd holding its flock; -EBUSY if held. */
int restore_plan_lock(const char *uuid, bool wait);
