/* core/opts.h: the mount options vmsnapfs itself understands (-o k=v). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define DEFAULT_FAILURE_DEADLINE_NS (UINT64_C(300) * 1000000000)

enum consistency {
    CONSISTENCY_BEST_EFFORT,
    CONSISTENCY_REQUIRED,
    _CONSISTENCY_MAX,
};

/* Which link of a VirtualMachineExport reads a KubeVirt disk. */
enum export_link {
    EXPORT_LINK_AUTO,               /* internal in the cluster, else external */
    EXPORT_LINK_INTERNAL,
    EXPORT_LINK_EXTERNAL,
    _EXPORT_LINK_MAX,
};

struct vmsnapfs_opts {
    uint64_t failure_deadline_ns;   /* 0: none */
    enum consistency consistency;
    enum export_link export_link;
    char *admin_group;              /* NULL: root only */
    bool no_safety_snapshot;
    bool no_checksums;              /* no snapshots/S/SHA256SUMS */
    bool allow_other;
};

void opts_init(struct vmsnapfs_opts *o);

void opts_clear(struct vmsnapfs_opts *o);

/* Applies one "key" or "key=value" option. 1 if vmsnapfs took it, 0 if it
 * is not ours (for FUSE or mount), -EINVAL for a bad value of ours. */
int opts_apply(struct vmsnapfs_opts *o, const char *opt);

/* Applies a comma-separated list; options that are not ours are appended to
 * *rest (comma-separated, allocated; may stay NULL). -EINVAL with the
 * offending option in *ret_bad (static storage of the input is not used:
 * it is allocated) on a bad value. */
int opts_parse(struct vmsnapfs_opts *o, const char *list, char **rest,
               char **ret_bad);

const char *consistency_to_string(enum consistency c);
int consistency_from_string(const char *s);
const char *export_link_to_string(enum export_link l);
int export_link_from_string(const char *s);
