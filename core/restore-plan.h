/* core/restore-plan.h: a restore's plan on disk (libvirt-restore.c):
 * STATE/restore/UUID.json, written durably before each step, so a daemon
 * killed half-way is followed by one that finishes or rolls back; and
 * STATE/restore/UUID.lock, held by the daemon restoring that VM. No
 * libvirt here: JSON (json-c) and files. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct restore_plan {
    char *vm, *uuid, *snap;
    char id[33];                /* marks the new definition (libvirt-xml.h) */
    const char *phase;          /* "stopping", "prepared", "defined"; records
                                   in the same format: "cloning" (libvirt-clone.c),
                                   "merging" (libvirt-merge.c) */
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
/* Writes p durably (a new file fsync'd, renamed, the directory fsync'd);
 * sets p->path on the first write. */
int restore_plan_write(struct restore_plan *p);
int restore_plan_read(const char *path, struct restore_plan *p);
void restore_plan_remove(struct restore_plan *p);
/* The lock of uuid's plan: an fd holding its flock; -EBUSY if held. */
int restore_plan_lock(const char *uuid, bool wait);
