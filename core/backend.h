/* core/backend.h: the backend interface, a table of operations.
 *
 * One interface serves libvirt and KubeVirt. The mapping:
 *
 *  concept       libvirt backend                   KubeVirt backend
 *  ------------  --------------------------------  -------------------------------
 *  namespace     none: one implicit namespace "";  a Namespace; the tree has one
 *                the tree has VMs at the top       directory level per namespace
 *                (namespaced = false)              (namespaced = true)
 *  VM            a domain (virDomainPtr), by name  kubevirt.io/v1 VirtualMachine
 *  vm uid        domain UUID                       metadata.uid
 *  state         virDomainGetState -> "running",   status.printableStatus
 *                "shut off", "paused", ...         ("Running", "Stopped", ...)
 *  agent         live XML: guest-agent channel     VMI condition AgentConnected
 *                state='connected'
 *  definition    domain XML (domain.xml)           the VM object as JSON (vm.json)
 *  volume        a <disk> of the domain, named by  spec.template.spec.volumes[],
 *                its target dev (vda)              named by the volume name
 *  snapshot      a domain snapshot in libvirt's    snapshot.kubevirt.io/v1beta1
 *                metadata (virDomainSnapshotPtr),  VirtualMachineSnapshot +
 *                external disk-only; phase etc.    VirtualMachineSnapshotContent;
 *                kept by vmsnapfs beside it        status.phase, .indications,
 *                                                  .error.message, .creationTime,
 *                                                  .snapshotVolumes.excludedVolumes
 *  phase         InProgress while vmsnapfs works,  status.phase as the cluster says
 *                Succeeded once in the metadata
 *  restore       vmsnapfs applies a plan itself    VirtualMachineRestore with
 *                (libvirt 9 cannot revert          targetReadinessPolicy; status
 *                external snapshots): new          .complete, .conditions
 *                overlays, the captured definition
 *  clone         a new domain on new overlays      VirtualMachineClone (source:
 *                of the snapshot's layers          the VirtualMachineSnapshot)
 *  volume data   pread on the qcow2/raw layers     a VirtualMachineExport of the VM
 *                (extent map), NBD for live disks  or snapshot, read over HTTPS
 *                (pull-mode backup)                with Range and the export token
 *  events        virConnectDomainEventRegisterAny  watch on virtualmachines,
 *                (lifecycle, agent, reconnect)     virtualmachinesnapshots (?watch=1)
 *
 * Thread model: every op may block and must be thread-safe; ops return >= 0
 * on success or -errno (the SPEC's table: ENOENT, EEXIST, EBUSY, EIO, ...),
 * and log a backend failure once, where the detail is. Ops a backend does not
 * have yet are NULL; callers report -ENOTSUP. Returned objects are owned by
 * the caller and freed with the *_free() functions below.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "opts.h"
#include "restore.h"
#include "volume.h"

struct vm_ref {
    const char *ns;     /* "" for libvirt */
    const char *name;
};

enum volume_flags {
    VOLUME_READONLY = 1 << 0,
    VOLUME_SHAREABLE = 1 << 1,
    VOLUME_CDROM = 1 << 2,
    VOLUME_HOTPLUG = 1 << 3,      /* in the running VM only */
    VOLUME_NOT_SNAPSHOTTED = 1 << 4, /* a snapshot's disk with snapshot='no' */
    VOLUME_INTERNAL = 1 << 5,     /* a snapshot's disk with snapshot='internal' */
};

struct volume {
    char *name;         /* libvirt target ("vda") / KubeVirt volume name */
    char *source;       /* file or block device path / PVC or DataVolume name */
    char *format;       /* "raw", "qcow2", ... ("" if unknown) */
    uint64_t size;      /* virtual size in bytes (0 if unknown) */
    unsigned flags;     /* enum volume_flags */
};

struct vm_info {
    char *ns;
    char *name;
    char *uid;
    char *state;        /* one word or phrase as the backend says it */
    bool running;       /* a guest is executing or paused: snapshots are Online */
    bool agent;         /* guest agent connected */
    char *definition;   /* domain XML / VM JSON, no secrets */
    struct volume *volumes;
    size_t n_volumes;
};

enum snapshot_phase {
    SNAPSHOT_IN_PROGRESS,
    SNAPSHOT_SUCCEEDED,
    SNAPSHOT_FAILED,
    _SNAPSHOT_PHASE_MAX,
};

enum indication {
    INDICATION_ONLINE,
    INDICATION_GUEST_AGENT,
    INDICATION_NO_GUEST_AGENT,
    INDICATION_QUIESCE_FAILED,
    INDICATION_QUIESCE_TIMEOUT,
    INDICATION_PAUSED,
    INDICATION_PARTIAL_SNAPSHOT,
    _INDICATION_MAX,
};

struct snapshot_info {
    char *name;
    enum snapshot_phase phase;
    unsigned indications;       /* bit (1 << enum indication) */
    char *error;                /* NULL or why it failed */
    time_t created;             /* the point in time */
    char *definition;           /* captured domain XML / VM JSON */
    struct volume *volumes;     /* included volumes */
    size_t n_volumes;
    char **excluded;            /* NULL-terminated volume names, may be NULL */
    char **resources;           /* KubeVirt: "apiGroup kind namespace name" */
    uint64_t freeze_window_ms;  /* freeze to thaw, where measured */
    bool has_freeze_window;
    char *sums;                 /* the record of its SHA256SUMS kept with it
                                   (sums.h), or NULL */
};

/* What a changing op did, or why it failed: for the events file. */
struct op_report {
    char text[512];
};

/* A restore: what it was asked, how it went (SPEC "Restore"). */
#define RESTORE_MAX_CONFLICTS 64
struct restore_status {
    char snap[256];
    enum restore_mode mode;
    enum snapshot_phase phase;
    time_t started, finished;   /* finished 0 while InProgress */
    char error[512];            /* "" or why it failed */
    char *conflicts[RESTORE_MAX_CONFLICTS + 1];  /* NULL-terminated, owned */
    size_t n_conflicts;
    bool began;                 /* the backend took the VM (not EBUSY at once) */
    /* progress: bytes of the disks restored so far, of all (total 0: not
     * known yet); restore_status_progress() sets them and tells the model,
     * which shows them while the restore runs */
    uint64_t progress_done, progress_total;
    void (*on_progress)(void *opaque, uint64_t done, uint64_t total);
    void *progress_opaque;
};

void restore_status_clear(struct restore_status *st);
/* A restore's progress (see restore_status); backends call it as they go. */
void restore_status_progress(struct restore_status *st, uint64_t done, uint64_t total);
/* Appends one conflict line (printf); silently caps the count. */
void restore_status_conflict(struct restore_status *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* What changed about a VM, for how much of the kernel's caches to drop. */
enum vm_change {
    VM_CHANGE_STATE = 1 << 0,       /* state, agent: values only */
    VM_CHANGE_DEFINITION = 1 << 1,  /* definition: volumes may come and go */
    VM_CHANGE_EXISTENCE = 1 << 2,   /* defined, undefined, renamed */
    VM_CHANGE_SNAPSHOTS = 1 << 3,   /* a snapshot's own values (phase) */
    VM_CHANGE_LIST = 1 << 4,        /* the list of VMs may differ (started or
                                       stopped: a transient VM comes or goes);
                                       the VM's own entry stays */
    VM_CHANGE_LOCAL = 1 << 5,       /* its events or restore status: what
                                       this mount did (the model's own) */
};

/* How long VM details may be cached without an event: a bound for changes
 * a backend has no event for. */
#define VM_CACHE_TTL_NS (UINT64_C(30) * 1000000000)

/* Changes the backend notices by itself (events); called from its thread. */
struct backend_events {
    /* a VM appeared, disappeared or changed; change: enum vm_change bits */
    void (*vm_changed)(void *opaque, const char *ns, const char *name,
                       unsigned change);
    /* anything may have changed (reconnected after the daemon came back) */
    void (*reset)(void *opaque);
    /* a restore this mount did not start (one a killed daemon left) is
     * found, or has ended: st is its status for `cat VM/restore` */
    void (*restore_found)(void *opaque, const char *ns, const char *name,
                          const struct restore_status *st);
    void *opaque;
};

struct backend_ops {
    const char *name;
    bool namespaced;
    /* every change of a snapshot list or a snapshot's values comes as a
     * vm_changed event (a watch); if false (libvirt reports none), the
     * tree may show a snapshot list at most SNAPSHOTS_TTL_NS old */
    bool notifies_snapshots;

    /* source: the SOURCE argument; events may be NULL */
    int (*open)(const char *source, const struct vmsnapfs_opts *o,
                const struct backend_events *events, void **ret_h);
    void (*close)(void *h);

    /* NULL-terminated, sorted; namespaced backends only */
    int (*list_namespaces)(void *h, char ***ret_names);
    /* NULL-terminated, sorted names of the VMs in ns */
    int (*list_vms)(void *h, const char *ns, char ***ret_names);
    int (*vm_get)(void *h, const struct vm_ref *vm, struct vm_info **ret);

    /* all snapshots of a VM, sorted by name */
    int (*snapshot_list)(void *h, const struct vm_ref *vm,
                         struct snapshot_info ***ret_snaps, size_t *ret_n);
    /* returns once the snapshot left InProgress; rep says what happened */
    int (*snapshot_create)(void *h, const struct vm_ref *vm, const char *snap,
                           const struct vmsnapfs_opts *o, struct op_report *rep);
    int (*snapshot_delete)(void *h, const struct vm_ref *vm, const char *snap,
                           struct op_report *rep);

    /* Restores vm to a snapshot as rq says; st->conflicts and st->error
     * are filled in (st->phase, times: the caller's). Returns once done. */
    int (*restore)(void *h, const struct vm_ref *vm, const struct restore_request *rq,
                   const struct vmsnapfs_opts *o, struct restore_status *st);
    /* Defines new_name from snapshot snap of vm, left stopped. */
    int (*clone)(void *h, const struct vm_ref *vm, const char *snap,
                 const char *new_name, const struct vmsnapfs_opts *o,
                 struct op_report *rep);

    /* A point-in-time view of volume vol of the VM as it is now (snap NULL)
     * or of snapshot snap, until volume_view_close(). */
    int (*volume_open)(void *h, const struct vm_ref *vm, const char *snap,
                       const char *vol, struct volume_view **ret);
    /* st_size and the bytes holding data (st_blocks), without a view */
    int (*volume_usage)(void *h, const struct vm_ref *vm, const char *snap,
                        const char *vol, uint64_t *ret_size,
                        uint64_t *ret_allocated);

    /* snapshots/S/changes/ (incremental backups). The predecessor of
     * snapshot snap: the newest older snapshot it builds on; -ENOENT if
     * none, and then why (for status.json) in *ret_why if ret_why (may
     * stay NULL). */
    int (*changes_base)(void *h, const struct vm_ref *vm, const char *snap,
                        char **ret_base, char **ret_why);
    /* A view of what changed on volume vol between the predecessor and
     * snap (holes elsewhere), and the map of it (its base named); ret NULL:
     * the map alone (no open view; -EAGAIN if merges kept changing it). */
    int (*changes_open)(void *h, const struct vm_ref *vm, const char *snap,
                        const char *vol, struct volume_view **ret,
                        struct change_map **ret_map);
    /* Keeps record (sums.h: a snapshot's SHA256SUMS) with snapshot snap,
     * where snapshot_list finds it (snapshot_info.sums) from then on, for
     * every mount; -EBUSY: not now (an operation on the VM runs). */
    int (*snapshot_set_sums)(void *h, const struct vm_ref *vm, const char *snap,
                             const char *record);
};

/* The backend for a SOURCE ("qemu:///system", "kubevirt://ctx", ...), or
 * NULL if it names none this build has. */
const struct backend_ops *backend_for_source(const char *source);

void volume_clear(struct volume *v);
void vm_info_free(struct vm_info *vm);
void snapshot_info_free(struct snapshot_info *s);
void snapshot_infos_free(struct snapshot_info **v, size_t n);

const char *snapshot_phase_to_string(enum snapshot_phase p);
int snapshot_phase_from_string(const char *s);    /* -EINVAL if unknown */
const char *indication_to_string(enum indication i);
int indication_from_string(const char *s);

#if HAVE_LIBVIRT
extern const struct backend_ops backend_libvirt;
#endif
#if HAVE_KUBEVIRT
extern const struct backend_ops backend_kubevirt;
#endif
