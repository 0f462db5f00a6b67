/* core/kubevirt/kubevirt-changes.c: snapshots/S/changes/ on KubeVirt, from
 * changed block tracking (kubevirt-api.md 12).
 *
 * KubeVirt tells which blocks changed only through a VirtualMachineBackup:
 * an incremental backup from a VirtualMachineBackupTracker's checkpoint
 * makes a new checkpoint, and in pull mode its map endpoint says which
 * blocks were written since the old one. A snapshot's changes are the
 * blocks written between its predecessor's point in time and its own, so
 * the checkpoint must be made at the snapshot's point in time:
 *
 *   freeze the guest (vmsnapfs's own freeze, kept until the snapshot is
 *   cut) -> VirtualMachineBackup (Pull, skipQuiesce: the guest is frozen)
 *   from the VM's tracker vmsnapfs-VM -> its checkpoint is made -> the
 *   VirtualMachineSnapshot (KubeVirt's freeze is idempotent; it thaws when
 *   the volumes are cut) -> the backup's map, per disk -> kept on the
 *   VirtualMachineSnapshot (annotation vmsnapfs.io/changes) -> the backup
 *   deleted (which moves the tracker to the new checkpoint).
 *
 * No filesystem writes between the checkpoint and the cut: the guest is
 * frozen throughout. The changed data is read from the snapshot's own
 * export (volumes/NAME.img), through the map: no backup data is copied.
 *
 * The record (kube-changes-record.h) names the base P: the snapshot whose checkpoint the backup started from, taken while
 * the same instance ran (what reaches a stopped VM's disks, a restore or
 * another tool, no bitmap sees) on the same claims (a restore replaces
 * them); P's uid too, so that another snapshot of P's name is never taken
 * for it. rmdir of P folds P's changes into its successor's, which then
 * builds on P's predecessor.
 *
 * What needs a running VM with changed block tracking Enabled, the gate,
 * a guest agent and a scratch PVC (annotation vmsnapfs.io/backup-scratch-pvc
 * on the VM, kubevirt-api.md 12.4 pvcName); a snapshot taken without says
 * why in its status.json. */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/rand.h>

#include "change-map.h"
#include "cleanup.h"
#include "clock.h"
#include "kube-backup.h"
#include "kube-changes-record.h"
#include "kube-objects.h"
#include "kube-owner.h"
#include "kubevirt-changes.h"
#include "kubevirt-private.h"
#include "log.h"
#include "volume.h"

#define SCRATCH_ANNOTATION "vmsnapfs.io/backup-scratch-pvc"
#define VM_ANNOTATION "vmsnapfs.io/vm"
#define BACKUP_API "/apis/backup.kubevirt.io/v1alpha1/namespaces/"
#define START_NS (UINT64_C(30) * NSEC_PER_SEC)  /* for the backup to make its checkpoint */
#define GONE_NS (UINT64_C(30) * NSEC_PER_SEC)   /* for a deleted backup to go */
#define POLL_NS (UINT64_C(200) * NSEC_PER_MSEC)

struct kv_changes {
    char *why;                  /* why there are none; NULL while they may come */
    char *backup, *secret;      /* the VirtualMachineBackup and its token's Secret */
    char *token;
    char *from;                 /* the tracker's checkpoint the backup started from */
    char *checkpoint;           /* the new one */
    bool incremental;
    bool frozen;                /* by this code */
    bool freeze_failed;         /* its call failed: it may land later */
    struct json_object *claims; /* VOLUME: CLAIM of the VM now */
    char *vmi;                  /* the uid of the VM's instance: a restart ends a chain */
    uint64_t span_ns;           /* how long reading the maps may take */
};

static void
changes_free(struct kv_changes *c)
{
    if (!c)
        return;
    free(c->why);
    free(c->backup);
    free(c->secret);
    wipe_free(c->token);
    free(c->from);
    free(c->checkpoint);
    json_object_put(c->claims);
    free(c->vmi);
    free(c);
}

__attribute__((format(printf, 2, 3))) static void
none(struct kv_changes *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(c->why);
    if (vasprintf(&c->why, fmt, ap) < 0)
        c->why = NULL;
    va_end(ap);
}

/* VOLUME: CLAIM of the VM's disks (the spec's volumes with a claim). */
static struct json_object *
vm_claims(struct json_object *vm)
{
    struct json_object *out = json_object_new_object();
    struct json_object *vols = kube_get(vm, "spec", "template", "spec", "volumes", (char *) NULL);

    for (size_t i = 0; out && i < kube_array_len(vols); i++) {
        struct json_object *v = json_object_array_get_idx(vols, i);
        const char *name = kube_get_str(v, "name", (char *) NULL);
        const char *claim = kube_get_str(v, "persistentVolumeClaim", "claimName", (char *) NULL)
                            ?: kube_get_str(v, "dataVolume", "name", (char *) NULL);
        if (name && claim)
            json_object_object_add(out, name, json_object_new_string(claim));
    }
    return out;
}

static char *
backup_path(const char *ns, const char *plural, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, BACKUP_API "%s/%s%s%s", ns, plural, name ? "/" : "", name ? name : "") < 0)
        return NULL;
    return p;
}

/* The API path of the VM's tracker, vmsnapfs-VM (one), or of the
 * namespace's trackers. */
static char *
tracker_path(const struct vm_ref *ref, bool one)
{
    _cleanup_free_ char *name = NULL;
    if (one && asprintf(&name, "vmsnapfs-%s", ref->name) < 0)
        return NULL;
    return backup_path(ref->ns, "virtualmachinebackuptrackers", name);
}

/* The VM's tracker exists (made if not). */
static int
tracker_ensure(struct kv *kv, const struct vm_ref *ref, char *why, size_t size)
{
    _cleanup_free_ char *one = tracker_path(ref, true), *all = tracker_path(ref, false);
    _cleanup_free_ char *body = NULL;

    if (!one || !all)
        return -ENOMEM;
    int r = kv_api(kv, "GET", one, NULL, NULL, why, size);
    if (r != -ENOENT)
        return r;
    if (asprintf(&body, "{\"apiVersion\":\"backup.kubevirt.io/v1alpha1\",\"kind\":"
                        "\"VirtualMachineBackupTracker\",\"metadata\":{\"name\":\"vmsnapfs-%s\","
                        "\"labels\":{\"" KUBE_MADE_BY_LABEL "\":\"vmsnapfs\"}},\"spec\":"
                        "{\"source\":{\"apiGroup\":\"kubevirt.io\",\"kind\":"
                        "\"VirtualMachine\",\"name\":\"%s\"}}}", ref->name, ref->name) < 0)
        return -ENOMEM;
    r = kv_api(kv, "POST", all, body, NULL, why, size);
    return r == -EEXIST ? 0 : r;
}

/* The tracker's latest checkpoint in *ret (NULL: none). Read once the
 * backup has started, that is the checkpoint it started from: the tracker
 * moves only when a backup ends, and KubeVirt runs one backup of a source
 * at a time. */
static int
tracker_checkpoint(struct kv *kv, const struct vm_ref *ref, char **ret, char *why, size_t size)
{
    _cleanup_free_ char *one = tracker_path(ref, true);
    struct json_object *t = NULL;

    *ret = NULL;
    if (!one)
        return -ENOMEM;
    int r = kv_api(kv, "GET", one, NULL, &t, why, size);
    const char *cp = kube_get_str(t, "status", "latestCheckpoint", "name", (char *) NULL);
    if (r >= 0 && cp && !(*ret = strdup(cp)))
        r = -ENOMEM;
    json_object_put(t);
    return r;
}

/* A Secret with a new random token for the backup's export. The VM's name
 * is on it: a daemon killed between its freeze and the backup leaves only
 * this Secret, from which the next one thaws the guest. */
static int
secret_make(struct kv *kv, const struct vm_ref *ref, struct kv_changes *c, char *why,
            size_t size)
{
    unsigned char rnd[24];
    char hex[2 * sizeof rnd + 1];
    _cleanup_free_ char *path = NULL;
    struct json_object *made = NULL;
    char *body = NULL;

    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return kv_sayf(why, size, -EIO, "no random token");
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    explicit_bzero(rnd, sizeof rnd);
    if (!(c->token = strdup(hex)) ||
        asprintf(&path, "/api/v1/namespaces/%s/secrets", ref->ns) < 0 ||
        asprintf(&body, "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{"
                        "\"generateName\":\"vmsnapfs-backup-token-\",\"labels\":{\""
                        KUBE_MADE_BY_LABEL "\":\"vmsnapfs\"},\"annotations\":{\""
                        KUBE_OWNER_ANNOTATION "\":\"%s\",\"" VM_ANNOTATION "\":\"%s\"}},"
                        "\"type\":\"Opaque\",\"stringData\":{\"token\":\"%s\"}}",
                 kv->owner, ref->name, hex) < 0) {
        explicit_bzero(hex, sizeof hex);
        return -ENOMEM;
    }
    explicit_bzero(hex, sizeof hex);
    int r = kv_api(kv, "POST", path, body, &made, why, size);
    wipe_free(body);
    const char *name = kube_get_str(made, "metadata", "name", (char *) NULL);
    if (r >= 0 && (!name || !(c->secret = strdup(name))))
        r = name ? -ENOMEM : kv_sayf(why, size, -EIO, "the Secret made has no name");
    json_object_put(made);
    return r;
}

static void
delete_quietly(struct kv *kv, const char *path, const char *what)
{
    char why[256];
    if (!path)
        return;
    int r = kv_api(kv, "DELETE", path, NULL, NULL, why, sizeof why);
    if (r < 0 && r != -ENOENT)
        log_warning("cannot delete %s: %s", what, why);
}

/* The guest thawed, if this code froze it (also later, if its freeze
 * call failed and may land). */
static void
thaw(struct kv *kv, const struct vm_ref *ref, struct kv_changes *c)
{
    if (c->frozen)
        kv_unfreeze(kv, ref->ns, ref->name);
    if (c->freeze_failed)
        kv_late_thaw(kv, ref);
    c->frozen = c->freeze_failed = false;
}

/* The backup and its Secret go. Deleting a pull-mode backup ends it as a
 * success: the tracker moves to its checkpoint. */
static void
backup_drop(struct kv *kv, const char *ns, struct kv_changes *c)
{
    _cleanup_free_ char *bpath = c->backup ? backup_path(ns, "virtualmachinebackups",
                                                         c->backup) : NULL;
    _cleanup_free_ char *spath = NULL;

    delete_quietly(kv, bpath, "a VirtualMachineBackup");
    if (bpath) {
        /* until it is gone: the tracker has moved by then */
        uint64_t end = now_monotonic_ns() + GONE_NS;
        while (now_monotonic_ns() < end) {
            char why[128];
            if (kv_api(kv, "GET", bpath, NULL, NULL, why, sizeof why) == -ENOENT)
                break;
            sleep_ns(POLL_NS);
        }
    }
    if (c->secret && asprintf(&spath, "/api/v1/namespaces/%s/secrets/%s", ns, c->secret) >= 0)
        delete_quietly(kv, spath, "the backup's token Secret");
    free(c->backup);
    free(c->secret);
    c->backup = c->secret = NULL;
}

/* The backup, until it has made its checkpoint (status.type and
 * checkpointName set), fails, or START_NS passed (its last message). */
static int
backup_start_wait(struct kv *kv, const char *ns, struct kv_changes *c, char *why, size_t size)
{
    _cleanup_free_ char *path = backup_path(ns, "virtualmachinebackups", c->backup);
    uint64_t end = now_monotonic_ns() + START_NS;
    char last[256] = "";

    if (!path)
        return -ENOMEM;
    for (;;) {
        struct json_object *b = NULL;
        int r = kv_api(kv, "GET", path, NULL, &b, why, size);
        if (r < 0)
            return r;
        const char *type = kube_get_str(b, "status", "type", (char *) NULL);
        const char *cp = kube_get_str(b, "status", "checkpointName", (char *) NULL);
        const char *msg = kube_get_str(kube_condition(b, "Progressing"), "message", (char *) NULL);
        if (msg)
            snprintf(last, sizeof last, "%s", msg);
        if (kube_condition_true(b, "Failed")) {
            r = kv_sayf(why, size, -EIO, "KubeVirt failed the backup: %s",
                        kube_get_str(kube_condition(b, "Failed"), "message", (char *) NULL)
                        ?: "no reason given");
        } else if (type && cp) {
            c->incremental = strcmp(type, "Incremental") == 0;
            r = (c->checkpoint = strdup(cp)) ? 1 : -ENOMEM;
        }
        json_object_put(b);
        if (r != 0)
            return r < 0 ? r : 0;
        if (now_monotonic_ns() >= end)
            return kv_sayf(why, size, -ETIMEDOUT, "KubeVirt did not start the backup%s%s",
                           last[0] ? ": " : "", last);
        sleep_ns(POLL_NS);
    }
}

int
kv_changes_begin(struct kv *kv, const struct vm_ref *ref, const struct vmsnapfs_opts *o,
                 struct kv_changes **ret)
{
    struct kv_changes *c = calloc(1, sizeof *c);
    struct json_object *vm = kube_cache_get(cache(kv, C_VMS, ref->ns), ref->ns, ref->name);
    struct json_object *vmi = vm ? kube_cache_get(cache(kv, C_VMIS, ref->ns), ref->ns,
                                                  ref->name) : NULL;
    _cleanup_free_ char *path = NULL, *body = NULL, *fpath = NULL, *scratch = NULL;
    char why[512] = "";
    int r = 0;

    *ret = NULL;
    if (!c) {
        json_object_put(vm);
        json_object_put(vmi);
        return -ENOMEM;
    }
    c->span_ns = o && o->failure_deadline_ns ? o->failure_deadline_ns : 300 * NSEC_PER_SEC;
    const char *state = kube_get_str(vm, "status", "changedBlockTracking", "state", (char *) NULL);
    const char *sc = kube_get_str(vm, "metadata", "annotations", SCRATCH_ANNOTATION,
                                  (char *) NULL);
    if (!vmi)
        none(c, "the VM was stopped: KubeVirt tracks the changed blocks of running VMs only");
    else if (!state || !*state)
        none(c, "the VM has no changed block tracking (KubeVirt's "
             "changedBlockTrackingLabelSelectors do not select it)");
    else if (strcmp(state, "PendingRestart") == 0)
        none(c, "changed block tracking begins when the VM restarts");
    else if (strcmp(state, "IncrementalBackupFeatureGateDisabled") == 0)
        none(c, "KubeVirt's IncrementalBackup feature gate is off");
    else if (strcmp(state, "Enabled") != 0)
        none(c, "changed block tracking is %s, not Enabled", state);
    else if (!kube_vmi_agent(vmi))
        none(c, "no guest agent: the guest cannot be held frozen from the checkpoint to "
             "the snapshot");
    else if (!sc || !kube_name_ok(sc))
        none(c, "no scratch PVC for KubeVirt's backups: name one in the VM's annotation "
             SCRATCH_ANNOTATION);
    if (!c->why) {
        c->claims = vm_claims(vm);
        c->vmi = strdup(kube_get_str(vmi, "metadata", "uid", (char *) NULL) ?: "");
        scratch = strdup(sc);
    }
    json_object_put(vmi);
    json_object_put(vm);
    if (!c->why && (!c->claims || !c->vmi || !scratch)) {
        changes_free(c);
        return -ENOMEM;
    }
    *ret = c;
    if (c->why)
        return 0;

    r = tracker_ensure(kv, ref, why, sizeof why);
    if (r >= 0)
        r = secret_make(kv, ref, c, why, sizeof why);
    /* the guest is frozen from before the checkpoint until KubeVirt has
     * cut the snapshot's volumes (its own freeze is idempotent); it thaws
     * by itself after the timeout whatever happens to this process */
    if (r >= 0 && (asprintf(&fpath, "/apis/subresources.kubevirt.io/v1/namespaces/%s/"
                                    "virtualmachineinstances/%s/freeze", ref->ns, ref->name) < 0 ||
                   asprintf(&body, "{\"unfreezeTimeout\":\"%llus\"}",
                            (unsigned long long) (c->span_ns / NSEC_PER_SEC + 60)) < 0))
        r = -ENOMEM;
    if (r >= 0) {
        c->frozen = true;       /* also if the call failed: it may land late */
        r = kv_api(kv, "PUT", fpath, body, NULL, why, sizeof why);
        c->freeze_failed = r < 0;
        if (r < 0) {
            size_t n = strlen(why);
            snprintf(why + n, sizeof why - n, " (the freeze before the checkpoint)");
        }
    }
    free(body);
    body = NULL;
    if (r >= 0 && (!(path = backup_path(ref->ns, "virtualmachinebackups", NULL)) ||
                   asprintf(&body, "{\"apiVersion\":\"backup.kubevirt.io/v1alpha1\",\"kind\":"
                                   "\"VirtualMachineBackup\",\"metadata\":{\"generateName\":"
                                   "\"vmsnapfs-%s-\",\"labels\":{\"" KUBE_MADE_BY_LABEL
                                   "\":\"vmsnapfs\"},\"annotations\":{\"" KUBE_OWNER_ANNOTATION
                                   "\":\"%s\"}},\"spec\":{\"source\":{\"apiGroup\":"
                                   "\"backup.kubevirt.io\",\"kind\":"
                                   "\"VirtualMachineBackupTracker\",\"name\":\"vmsnapfs-%s\"},"
                                   "\"mode\":\"Pull\",\"pvcName\":\"%s\",\"skipQuiesce\":true,"
                                   "\"tokenSecretRef\":\"%s\",\"ttlDuration\":\"30m\"}}",
                            ref->name, kv->owner, ref->name, scratch, c->secret) < 0))
        r = -ENOMEM;
    if (r >= 0) {
        struct json_object *made = NULL;
        r = kv_api(kv, "POST", path, body, &made, why, sizeof why);
        const char *name = kube_get_str(made, "metadata", "name", (char *) NULL);
        if (r >= 0 && (!name || !(c->backup = strdup(name))))
            r = -ENOMEM;
        json_object_put(made);
    }
    if (r >= 0)
        r = backup_start_wait(kv, ref->ns, c, why, sizeof why);
    if (r >= 0 && c->incremental)
        r = tracker_checkpoint(kv, ref, &c->from, why, sizeof why);
    if (r < 0) {
        log_warning("'%s/%s': no changes for the snapshot: %s", ref->ns, ref->name,
                    why[0] ? why : strerror(-r));
        none(c, "the changed blocks could not be tracked for it: %s",
             why[0] ? why : strerror(-r));
        /* thawed first: the snapshot freezes anew, and the backup may
         * take a while to go */
        thaw(kv, ref, c);
        backup_drop(kv, ref->ns, c);
    }
    return 0;
}

/* The backup's export is ready: each volume's map into out (VOLUME:
 * kube_changes_extents), all by deadline_ns. */
static int
collect_maps(struct kv *kv, const char *ns, struct kv_changes *c, uint64_t deadline_ns,
             struct json_object *out, char *why, size_t size)
{
    _cleanup_free_ char *path = backup_path(ns, "virtualmachinebackups", c->backup);
    struct json_object *b = NULL;
    int r;

    if (!path)
        return -ENOMEM;
    for (;;) {
        json_object_put(b);
        b = NULL;
        r = kv_api(kv, "GET", path, NULL, &b, why, size);
        if (r < 0)
            return r;
        const char *reason = kube_get_str(kube_condition(b, "Progressing"), "reason",
                                          (char *) NULL);
        if (reason && strcmp(reason, "ExportReady") == 0)
            break;
        if (kube_condition_true(b, "Failed") || now_monotonic_ns() >= deadline_ns) {
            json_object_put(b);
            return kv_sayf(why, size, -ETIMEDOUT, "the backup's export did not become ready");
        }
        sleep_ns(POLL_NS);
    }
    const char *cert = kube_get_str(b, "status", "endpointCert", (char *) NULL);
    struct json_object *vols = kube_get(b, "status", "includedVolumes", (char *) NULL);
    size_t nv = kube_array_len(vols);
    r = nv ? 0 : kv_sayf(why, size, -EIO, "the backup includes no volumes");
    for (size_t i = 0; r >= 0 && i < nv; i++) {
        struct json_object *v = json_object_array_get_idx(vols, i);
        const char *name = kube_get_str(v, "volumeName", (char *) NULL);
        const char *url = kube_get_str(v, "mapEndpoint", (char *) NULL);
        struct change_map *m = NULL;
        size_t max = kube_changes_max_extents(nv);
        if (!name || !url) {
            r = kv_sayf(why, size, -EIO, "volume %zu of the backup has no map endpoint", i);
            break;
        }
        for (;;) {
            r = kube_backup_map_fetch(url, cert, c->token, deadline_ns, max, &m, why, size);
            if (r != -EAGAIN || now_monotonic_ns() >= deadline_ns)
                break;
            sleep_ns(POLL_NS);  /* 503: the tunnel is not up yet */
        }
        if (r < 0)
            break;
        change_map_coarsen(m, max);
        struct json_object *entry = kube_changes_extents(m);
        change_map_free(m);
        if (!entry) {
            r = -ENOMEM;
            break;
        }
        json_object_object_add(out, name, entry);
    }
    json_object_put(b);
    return r;
}

/* The snapshot of the VM (not being deleted) whose recorded checkpoint is
 * cp, taken while the same instance ran on the same claims: its name and
 * uid; NULL if none. */
static char *
snapshot_with_checkpoint(struct kv *kv, const struct vm_ref *ref, const struct kv_changes *c,
                         char **ret_uid)
{
    struct json_object **v = NULL;
    size_t n = 0;
    char *found = NULL;

    *ret_uid = NULL;
    if (!c->from || kube_cache_list(cache(kv, C_SNAPS, ref->ns), ref->ns, ref->name, &v, &n) < 0)
        return NULL;
    for (size_t i = 0; i < n && !found; i++) {
        if (!kube_snapshot_of(v[i], ref->name) || kv_snapshot_temporary(v[i]) ||
            kube_get(v[i], "metadata", "deletionTimestamp", (char *) NULL))
            continue;
        struct json_object *j = kube_changes_recorded(v[i]), *x = NULL;
        const char *cp = kube_get_str(j, "checkpoint", (char *) NULL);
        const char *vmi = kube_get_str(j, "vmi", (char *) NULL);
        const char *name = kube_get_str(v[i], "metadata", "name", (char *) NULL);
        const char *uid = kube_get_str(v[i], "metadata", "uid", (char *) NULL);
        if (cp && strcmp(cp, c->from) == 0 && vmi && strcmp(vmi, c->vmi) == 0 && name && uid &&
            json_object_object_get_ex(j, "claims", &x) && json_object_equal(x, c->claims)) {
            found = strdup(name);
            *ret_uid = strdup(uid);
            if (!found || !*ret_uid) {
                free(found);
                free(*ret_uid);
                found = *ret_uid = NULL;
            }
        }
        json_object_put(j);
    }
    kube_cache_list_free(v, n);
    return found;
}

/* Patches snapshot snap's annotation to rec (JSON). */
static int
record(struct kv *kv, const char *ns, const char *snap, struct json_object *rec, char *why,
       size_t size)
{
    return kv_snapshot_annotate(kv, ns, snap, KUBE_CHANGES_ANNOTATION,
                                json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN),
                                why, size);
}

void
kv_changes_end(struct kv *kv, const struct vm_ref *ref, const char *snap, struct kv_changes *c,
               bool made)
{
    struct json_object *rec = NULL;
    char why[512] = "";
    int r = 0;

    if (!c)
        return;
    thaw(kv, ref, c);                           /* made: KubeVirt thawed it already */
    if (!made || !(rec = json_object_new_object())) {
        backup_drop(kv, ref->ns, c);
        changes_free(c);
        return;
    }
    if (!c->why) {
        struct json_object *vols = json_object_new_object();
        _cleanup_free_ char *base_uid = NULL;
        _cleanup_free_ char *base = c->incremental
            ? snapshot_with_checkpoint(kv, ref, c, &base_uid) : NULL;
        r = vols ? collect_maps(kv, ref->ns, c, now_monotonic_ns() + c->span_ns, vols, why,
                                sizeof why)
                 : -ENOMEM;
        json_object_object_add(rec, "checkpoint", json_object_new_string(c->checkpoint));
        json_object_object_add(rec, "claims", json_object_get(c->claims));
        json_object_object_add(rec, "vmi", json_object_new_string(c->vmi));
        if (r < 0) {
            log_warning("'%s/%s': no changes for snapshot '%s': %s", ref->ns, ref->name, snap,
                        why);
            none(c, "the changed blocks could not be read: %s", why);
            json_object_put(vols);
        } else if (!base) {
            none(c, "no older snapshot holds the checkpoint the tracking went on from (the "
                 "first snapshot with changed block tracking, or the one before was deleted, "
                 "failed or restored, or the VM restarted since)");
            json_object_put(vols);
        } else {
            json_object_object_add(rec, "base", json_object_new_string(base));
            json_object_object_add(rec, "base_uid", json_object_new_string(base_uid));
            json_object_object_add(rec, "volumes", vols);
        }
    }
    if (c->why)
        json_object_object_add(rec, "why", json_object_new_string(c->why));
    /* recorded before the backup goes: the tracker moves then */
    r = record(kv, ref->ns, snap, rec, why, sizeof why);
    if (r < 0)
        log_warning("'%s/%s': cannot record the changes of snapshot '%s': %s", ref->ns,
                    ref->name, snap, why);
    json_object_put(rec);
    backup_drop(kv, ref->ns, c);
    changes_free(c);
}

/* ---- reading them: changes_base, changes_open -------------------------------------- */

/* Snapshot snap's record, if it builds on a snapshot that is still there
 * (the very one: its uid): 0 and *ret; -ENOENT and why. */
static int
lookup(struct kv *kv, const struct vm_ref *ref, const char *snap, struct json_object **ret,
       char **ret_why)
{
    struct json_object *o = kube_cache_get(cache(kv, C_SNAPS, ref->ns), ref->ns, snap);
    const char *why = NULL;

    *ret = NULL;
    if (!o || !kube_snapshot_of(o, ref->name) || kv_snapshot_temporary(o)) {
        json_object_put(o);
        return -ENOENT;
    }
    struct json_object *j = kube_changes_recorded(o);
    json_object_put(o);
    const char *base = kube_get_str(j, "base", (char *) NULL);
    const char *base_uid = kube_get_str(j, "base_uid", (char *) NULL);
    if (!j)
        why = "no changes were recorded when it was taken (by another tool, an older "
              "vmsnapfs, or a vmsnapfs still reading them)";
    else if (!base || !base_uid)
        why = kube_get_str(j, "why", (char *) NULL) ?: "no base recorded";
    if (!why) {
        struct json_object *b = kube_cache_get(cache(kv, C_SNAPS, ref->ns), ref->ns, base);
        const char *uid = kube_get_str(b, "metadata", "uid", (char *) NULL);
        bool ok = b && kube_snapshot_of(b, ref->name) && uid && strcmp(uid, base_uid) == 0;
        json_object_put(b);
        if (!ok)
            why = "the snapshot it builds on was deleted by another tool";
    }
    if (why) {
        if (ret_why)
            *ret_why = strdup(why);
        json_object_put(j);
        return -ENOENT;
    }
    *ret = j;
    return 0;
}

int
kv_changes_base(void *h, const struct vm_ref *ref, const char *snap, char **ret_base,
                char **ret_why)
{
    struct json_object *j = NULL;
    int r = lookup(h, ref, snap, &j, ret_why);

    if (r < 0)
        return r;
    *ret_base = strdup(kube_get_str(j, "base", (char *) NULL));
    json_object_put(j);
    return *ret_base ? 0 : -ENOMEM;
}

int
kv_changes_open(void *h, const struct vm_ref *ref, const char *snap, const char *vol,
                struct volume_view **ret, struct change_map **ret_map)
{
    struct kv *kv = h;
    struct json_object *j = NULL;
    struct change_map *m = NULL;
    struct volume_view *inner = NULL;
    int r = lookup(kv, ref, snap, &j, NULL);

    if (r < 0)
        return r;
    r = kube_changes_map(j, vol, &m);
    json_object_put(j);
    if (r == -EIO)
        log_error("'%s/%s': snapshot '%s': the recorded changes of volume '%s' are not a map",
                  ref->ns, ref->name, snap, vol);
    if (r >= 0 && ret) {
        r = kv_volume_open(kv, ref, snap, vol, &inner);
        if (r >= 0)
            r = volume_view_open_masked(inner, m, ret);
        if (r == -EIO && inner)
            log_error("'%s/%s': snapshot '%s': volume '%s' is not the size its changes "
                      "were recorded for", ref->ns, ref->name, snap, vol);
    }
    if (r < 0) {
        change_map_free(m);
        return r;
    }
    *ret_map = m;
    return 0;
}

/* ---- rmdir: a snapshot's changes go to its successor -------------------------------- */

int
kv_changes_fold(struct kv *kv, const struct vm_ref *ref, const char *snap, char *why,
                size_t size)
{
    struct json_object **v = NULL, *gone = NULL, *next = NULL;
    _cleanup_free_ char *next_name = NULL;
    const char *gone_uid = NULL;
    size_t n = 0;
    int r = 0;

    if (kube_cache_list(cache(kv, C_SNAPS, ref->ns), ref->ns, ref->name, &v, &n) < 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = kube_get_str(v[i], "metadata", "name", (char *) NULL);
        if (name && strcmp(name, snap) == 0 && kube_snapshot_of(v[i], ref->name)) {
            gone = kube_changes_recorded(v[i]);
            gone_uid = kube_get_str(v[i], "metadata", "uid", (char *) NULL);
            break;
        }
    }
    for (size_t i = 0; gone_uid && i < n && !next; i++) {
        const char *name = kube_get_str(v[i], "metadata", "name", (char *) NULL);
        struct json_object *j = kube_snapshot_of(v[i], ref->name)
                                ? kube_changes_recorded(v[i]) : NULL;
        const char *buid = kube_get_str(j, "base_uid", (char *) NULL);
        if (name && buid && strcmp(buid, gone_uid) == 0) {
            next = j;
            next_name = strdup(name);
        } else {
            json_object_put(j);
        }
    }
    if (next && next_name) {
        struct json_object *rec = gone ? kube_changes_folded(gone, next) : NULL;
        /* before the delete: if the delete fails, next's changes are
         * still right (from an older base: a superset) */
        r = rec ? record(kv, ref->ns, next_name, rec, why, size) : -ENOMEM;
        json_object_put(rec);
    }
    kube_cache_list_free(v, n);
    json_object_put(gone);
    json_object_put(next);
    return r;
}

/* ---- after a killed vmsnapfs ------------------------------------------------------ */

/* Its freeze call was answered long ago (the process that made it is
 * gone): a thaw now is enough. */
static void
thaw_orphan(struct kv *kv, const char *ns, const char *vm)
{
    kv_unfreeze(kv, ns, vm);
}

/* Backups (backups) or token Secrets in ns (NULL: all) that a killed
 * vmsnapfs of this host made: deleted, their guests thawed. */
static void
recover_kind(struct kv *kv, const char *ns, bool backups)
{
    _cleanup_free_ char *list_path = NULL;
    struct json_object *list = NULL;
    char why[256];

    if (asprintf(&list_path, "%s%s%s%s?labelSelector=" KUBE_MADE_BY_LABEL "%%3Dvmsnapfs",
                 backups ? "/apis/backup.kubevirt.io/v1alpha1" : "/api/v1",
                 ns ? "/namespaces/" : "", ns ? ns : "",
                 backups ? "/virtualmachinebackups" : "/secrets") < 0)
        return;
    int r = kv_api(kv, "GET", list_path, NULL, &list, why, sizeof why);
    if (r < 0) {
        if (r == -EACCES)               /* credentials limited: not ours to see */
            log_info("cannot look for what a killed vmsnapfs left%s%s: %s",
                     ns ? " in " : "", ns ? ns : "", why);
        else if (r != -ENOENT)          /* no backup.kubevirt.io: nothing to do */
            log_warning("cannot look for what a killed vmsnapfs left%s%s: %s",
                        ns ? " in " : "", ns ? ns : "", why);
        return;
    }
    struct json_object *items = kube_get(list, "items", (char *) NULL);
    for (size_t i = 0; i < kube_array_len(items); i++) {
        struct json_object *o = json_object_array_get_idx(items, i);
        const char *ons = kube_get_str(o, "metadata", "namespace", (char *) NULL);
        const char *name = kube_get_str(o, "metadata", "name", (char *) NULL);
        _cleanup_free_ char *path = NULL;
        if (!ons || !name || !kube_owner_gone(kv->owner, o))
            continue;
        if (backups) {
            const char *src = kube_get_str(o, "spec", "source", "name", (char *) NULL);
            path = backup_path(ons, "virtualmachinebackups", name);
            if (src && strncmp(src, "vmsnapfs-", 9) == 0 && src[9])
                thaw_orphan(kv, ons, src + 9);
        } else {
            const char *vm = kube_get_str(o, "metadata", "annotations", VM_ANNOTATION,
                                          (char *) NULL);
            if (vm && kube_name_ok(vm))
                thaw_orphan(kv, ons, vm);
            if (asprintf(&path, "/api/v1/namespaces/%s/secrets/%s", ons, name) < 0)
                path = NULL;
        }
        log_warning("'%s': %s '%s' of a vmsnapfs that was killed: deleted", ons,
                    backups ? "backup" : "token Secret", name);
        delete_quietly(kv, path, backups ? "a VirtualMachineBackup" : "a token Secret");
    }
    json_object_put(list);
}

void
kv_changes_recover(struct kv *kv)
{
    for (size_t i = 0; i < kube_scope_count(kv->scope); i++) {
        recover_kind(kv, kube_scope_ns(kv->scope, i), true);
        recover_kind(kv, kube_scope_ns(kv->scope, i), false);
    }
}
