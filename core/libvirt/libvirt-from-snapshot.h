/* core/libvirt/libvirt-from-snapshot.h: what a restore and a clone take from a
 * snapshot (libvirt-restore.c, libvirt-clone.c): its saved definition, the
 * layer each disk's data is in, and new qcow2 overlays on those layers,
 * recorded as vmsnapfs's (layers.h) so that only they are ever removed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "libvirt-xml.h"
#include "libvirt-private.h"

struct lv_source_disk {
    char *name;         /* target dev */
    char *layer;        /* the snapshot's data: what its overlay builds on */
    char *format;       /* the layer's format */
};

struct lv_source {
    struct lv_xml_snapshot x;
    const char *def;            /* inactive definition if captured, else live */
    struct lv_source_disk *disks;
    size_t n;
    char **missing;             /* disks whose snapshot data is gone */
    size_t n_missing;
};

/* Reads snapshot snap of dom: its definition and the layer of each disk;
 * why (why_len) says what is wrong where it fails. */
int lv_source_read(virDomainPtr dom, const char *snap, struct lv_source *sp, char *why,
                   size_t why_len);
void lv_source_clear(struct lv_source *sp);
/* Does the snapshot give disk (a target) its data? */
bool lv_source_has(const struct lv_source *sp, const char *disk);

/* A path for a new overlay on disk of vm beside top: top's directory,
 * "VM.DISK.WHAT.RANDOM.qcow2", a name no earlier overlay had. */
char *lv_overlay_name(const char *top, const char *vm, const char *disk, const char *what);
/* A new qcow2 on layer (of format fmt) at path, made exclusively (0600,
 * no symlink followed): -EEXIST if anything has that name. */
int lv_make_overlay(const char *path, const char *layer, const char *fmt);
/* Removes overlays this run made (and their records). */
void lv_drop_overlays(char *const *v);
/* Does dom's saved definition bear the restore mark id, or name any of
 * the overlays? 1 yes, 0 no, -EIO if that cannot be told now. */
int lv_defines_overlays(virDomainPtr dom, const char *id, char *const *overlays);

/* 32 random hex digits and a NUL: a clone's firmware serial, a restore's id. */
void lv_random_hex(char buf[33]);
