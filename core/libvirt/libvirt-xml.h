/* core/libvirt/libvirt-xml.h: the pieces of libvirt's domain and snapshot XML that
 * vmsnapfs reads. Pure (libxml2 only), thread-safe; unit-tested. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "backend.h"

/* Disks of a domain, in document order. Sizes are left 0. */
int lv_xml_disks(const char *domain_xml, struct volume **ret_vols,
                 size_t *ret_n);

/* 1 if the guest-agent channel says state='connected', 0 if not (also when
 * there is no such channel), -EINVAL if the XML does not parse. */
int lv_xml_agent_connected(const char *domain_xml);

/* The domain XML with disk target's <source file> set to new_src (if it was
 * old_src) and its driver type to new_fmt; allocated in *ret. -ENOENT if
 * no such disk with that source. */
int lv_xml_set_disk_source(const char *domain_xml, const char *target,
                           const char *old_src, const char *new_src,
                           const char *new_fmt, char **ret);

struct lv_xml_snapshot {
    char *name;
    char *state;          /* "disk-snapshot", "running", "shutoff", ... */
    char *description;
    time_t created;
    char *domain;         /* the captured <domain> element, serialised */
    char *inactive_domain;  /* <inactiveDomain> (a running VM's saved
                               definition) as a <domain>, or NULL */
    struct volume *disks; /* <disks><disk name= snapshot=...>: name, source,
                             format; flags unused */
    size_t n_disks;
    bool memory_internal;   /* <memory snapshot='internal'> */
};

int lv_xml_snapshot_parse(const char *snapshot_xml, struct lv_xml_snapshot *ret);
void lv_xml_snapshot_clear(struct lv_xml_snapshot *s);

/* The MAC addresses of a domain's interfaces (NULL-terminated). */
int lv_xml_macs(const char *domain_xml, char ***ret);

/* Changes to a captured definition, for a restore or a clone. */
struct lv_xml_edit {
    const char *name;           /* new <name>, or NULL */
    bool drop_uuid;             /* a new VM: libvirt makes one */
    bool new_macs;              /* drop every interface's <mac> */
    char *const *drop_macs;     /* or these only (NULL-terminated) */
    char *const *disk_targets;  /* these disks become qcow2 files ... */
    char *const *disk_sources;  /* ... at these paths (parallel) */
    char *const *drop_disks;    /* targets to remove */
    const char *serial;         /* new <sysinfo> serial (if one is set) */
    const char *old_name;       /* file chardevs naming old_name get name */
    const char *restore_id;     /* mark the definition as made by restore
                                   id (of snapshot restore_snap) */
    const char *restore_snap;
};

/* The namespace of vmsnapfs's <metadata> element in a restored definition:
 * <vmsnapfs:restore id= snapshot=/>, so a restarted daemon can tell that
 * a restore's definition is in place. */
#define LV_XML_RESTORE_NS "https://vmsnapfs.org/xmlns/restore/1"

/* The id of that mark in domain_xml, or NULL (none, or bad XML). */
char *lv_xml_restore_mark(const char *domain_xml);

/* The <domain> XML with e applied; allocated in *ret. -ENOENT if a
 * disk_target is not in it. */
int lv_xml_edit(const char *domain_xml, const struct lv_xml_edit *e, char **ret);
