/* core/libvirt/libvirt-query.c: what the tree shows, asked of libvirt:
 * the VMs, one VM (state, agent, definition, disks), its snapshots (with
 * what vmsnapfs keeps in their descriptions, and the one a mkdir makes
 * right now as InProgress). Read-only calls, over the query connections. */
#define LOG_MODULE "libvirt"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "layers.h"
#include "libvirt-private.h"
#include "libvirt-xml.h"
#include "log.h"
#include "snapshot-json.h"

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

int
lv_list_vms(void *h, const char *ns, char ***ret_names)
{
    struct lv *lv = h;
    _cleanup_(virConnectClosep) virConnectPtr c = lv_query_conn(lv);
    virDomainPtr *doms = NULL;
    int n;

    if (ns && *ns)
        return -ENOENT;
    if (!c)
        return -EIO;
    n = virConnectListAllDomains(c, &doms, 0);
    if (n < 0)
        return lv_errno("list domains of", lv->uri_shown);

    char **names = calloc((size_t) n + 1, sizeof *names);
    for (int i = 0; i < n; i++) {
        if (names) {
            names[i] = strdup(virDomainGetName(doms[i]));
            if (!names[i]) {
                strv_free(names);
                names = NULL;
            }
        }
        virDomainFree(doms[i]);
    }
    free(doms);
    if (!names)
        return -ENOMEM;
    qsort(names, (size_t) n, sizeof *names, cmp_str);
    *ret_names = names;
    return 0;
}

static const char *
state_name(int state)
{
    /* the words virsh uses */
    switch (state) {
    case VIR_DOMAIN_RUNNING: return "running";
    case VIR_DOMAIN_BLOCKED: return "idle";
    case VIR_DOMAIN_PAUSED: return "paused";
    case VIR_DOMAIN_SHUTDOWN: return "in shutdown";
    case VIR_DOMAIN_SHUTOFF: return "shut off";
    case VIR_DOMAIN_CRASHED: return "crashed";
    case VIR_DOMAIN_PMSUSPENDED: return "pmsuspended";
    default: return "no state";
    }
}

int
lv_vm_get(void *h, const struct vm_ref *ref, struct vm_info **ret)
{
    struct lv *lv = h;
    _cleanup_(virConnectClosep) virConnectPtr c = lv_query_conn(lv);
    _cleanup_(virDomainFreep) virDomainPtr d = NULL;
    char uuid[VIR_UUID_STRING_BUFLEN];
    int state, reason, r = 0;

    if (ref->ns && *ref->ns)
        return -ENOENT;
    if (!c)
        return -EIO;
    d = lv_lookup(c, ref->name, &r);
    if (!d)
        return r;
    if (virDomainGetState(d, &state, &reason, 0) < 0 ||
        virDomainGetUUIDString(d, uuid) < 0)
        return lv_errno("get state of", ref->name);

    struct vm_info *vm = calloc(1, sizeof *vm);
    if (!vm)
        return -ENOMEM;
    vm->ns = strdup("");
    vm->name = strdup(ref->name);
    vm->uid = strdup(uuid);
    vm->state = strdup(state_name(state));
    vm->running = state != VIR_DOMAIN_SHUTOFF && state != VIR_DOMAIN_CRASHED &&
                  state != VIR_DOMAIN_NOSTATE;
    vm->definition = virDomainGetXMLDesc(d, 0);
    if (!vm->definition) {
        vm_info_free(vm);
        return lv_errno("get the XML of", ref->name);
    }
    if (!vm->ns || !vm->name || !vm->uid || !vm->state) {
        vm_info_free(vm);
        return -ENOMEM;
    }
    vm->agent = vm->running && lv_xml_agent_connected(vm->definition) > 0;
    r = lv_xml_disks(vm->definition, &vm->volumes, &vm->n_volumes);
    if (r < 0) {
        vm_info_free(vm);
        return log_error_errno(r, "cannot read the disks of '%s'", ref->name);
    }
    for (size_t i = 0; i < vm->n_volumes; i++) {
        virDomainBlockInfo info;
        struct volume *v = &vm->volumes[i];

        if (v->flags & VOLUME_CDROM)
            continue;
        /* from the image itself where it can be: a running VM's block
         * info waits behind its libvirt jobs (a snapshot, a merge) */
        if (v->source && v->source[0] == '/' &&
            layer_virtual_size(v->source, v->format, &v->size) == 0)
            continue;
        if (virDomainGetBlockInfo(d, v->name, &info, 0) == 0) {
            v->size = info.capacity;
        } else {
            log_warning("size of disk '%s' of '%s': %s", v->name, ref->name,
                        lv_last_message("unknown"));
            virResetLastError();
        }
    }
    *ret = vm;
    return 0;
}

static int
cmp_snap(const void *a, const void *b)
{
    return strcmp((*(struct snapshot_info *const *) a)->name,
                  (*(struct snapshot_info *const *) b)->name);
}

/* One libvirt snapshot as a snapshot_info (metadata only). */
static int
snapshot_from_xml(const char *xml, const struct vm_info *now,
                  struct snapshot_info **ret)
{
    struct lv_xml_snapshot x;
    int r = lv_xml_snapshot_parse(xml, &x);

    if (r < 0)
        return r;
    struct snapshot_info *s = calloc(1, sizeof *s);
    if (!s) {
        lv_xml_snapshot_clear(&x);
        return -ENOMEM;
    }
    s->name = TAKE_PTR(x.name);
    s->definition = TAKE_PTR(x.domain);
    s->created = x.created;
    s->phase = SNAPSHOT_SUCCEEDED;   /* in libvirt's metadata: it exists */
    struct snapshot_meta meta;
    if (snapshot_meta_decode(x.description, &meta) == 0) {
        /* made here: what vmsnapfs knew at the time */
        s->indications = meta.indications;
        s->freeze_window_ms = meta.freeze_ms;
        s->has_freeze_window = meta.have_freeze;
        s->sums = TAKE_PTR(meta.sums);
        snapshot_meta_clear(&meta); /* the XML's snapshot='no' disks say which */
    } else if (x.state && strcmp(x.state, "shutoff") != 0) {
        s->indications |= 1u << INDICATION_ONLINE;     /* made elsewhere */
    }

    /* disks the snapshot covers (sizes as the VM has them now), and the
     * ones it left out (snapshot='no') */
    s->volumes = calloc(x.n_disks ? x.n_disks : 1, sizeof *s->volumes);
    s->excluded = calloc(x.n_disks + 1, sizeof *s->excluded);
    size_t n_excluded = 0;
    for (size_t i = 0; s->volumes && s->excluded && i < x.n_disks; i++) {
        struct volume *v = &s->volumes[s->n_volumes];
        if (x.disks[i].flags & VOLUME_NOT_SNAPSHOTTED) {
            s->excluded[n_excluded++] = TAKE_PTR(x.disks[i].name);
            continue;
        }
        for (size_t j = 0; now && j < now->n_volumes; j++)
            if (strcmp(now->volumes[j].name, x.disks[i].name) == 0)
                v->size = now->volumes[j].size;
        v->name = TAKE_PTR(x.disks[i].name);
        v->source = TAKE_PTR(x.disks[i].source);
        v->format = TAKE_PTR(x.disks[i].format);
        s->n_volumes++;
    }
    lv_xml_snapshot_clear(&x);
    if (!s->name || !s->volumes || !s->excluded) {
        snapshot_info_free(s);
        return -ENOMEM;
    }
    *ret = s;
    return 0;
}

int
lv_snapshot_list(void *h, const struct vm_ref *ref,
                 struct snapshot_info ***ret_snaps, size_t *ret_n)
{
    struct lv *lv = h;
    _cleanup_(virConnectClosep) virConnectPtr c = lv_query_conn(lv);
    _cleanup_(virDomainFreep) virDomainPtr d = NULL;
    virDomainSnapshotPtr *snaps = NULL;
    struct vm_info *now = NULL;
    int n, r = 0;

    if (!c)
        return -EIO;
    d = lv_lookup(c, ref->name, &r);
    if (!d)
        return r;
    n = virDomainListAllSnapshots(d, &snaps, 0);
    if (n < 0)
        return lv_errno("list snapshots of", ref->name);
    if (n > 0)
        (void) lv_vm_get(h, ref, &now);     /* for the disk sizes */

    struct snapshot_info **v = calloc((size_t) n + 1, sizeof *v);
    size_t count = 0;
    for (int i = 0; i < n; i++) {
        _cleanup_(virDomainSnapshotFreep) virDomainSnapshotPtr s = snaps[i];
        _cleanup_free_ char *xml = NULL;

        if (!v || r < 0)
            continue;
        xml = virDomainSnapshotGetXMLDesc(s, 0);
        if (!xml) {
            /* deleted since the list was taken: the listing shows the
             * set without it, it does not fail */
            if (lv_last_is(VIR_ERR_NO_DOMAIN_SNAPSHOT)) {
                virResetLastError();
                continue;
            }
            r = lv_errno("get snapshot XML of", ref->name);
            continue;
        }
        /* one snapshot libvirt describes oddly does not hide the others */
        if (snapshot_from_xml(xml, now, &v[count]) < 0)
            log_warning("cannot parse snapshot '%s' of '%s': left out",
                        virDomainSnapshotGetName(s), ref->name);
        else
            count++;
    }
    free(snaps);
    vm_info_free(now);
    if (!v)
        return -ENOMEM;
    if (r < 0) {
        snapshot_infos_free(v, count);
        return r;
    }
    /* one being taken right now shows as InProgress */
    time_t started;
    char *busy = vm_op_snapshot(lv->vmops, ref->name, &started);
    bool listed = false;
    for (size_t i = 0; busy && i < count; i++)
        listed |= strcmp(v[i]->name, busy) == 0;
    if (busy && !listed) {
        struct snapshot_info *ip = calloc(1, sizeof *ip);
        struct snapshot_info **nv = realloc(v, (count + 2) * sizeof *v);
        if (ip && nv) {
            v = nv;
            ip->name = TAKE_PTR(busy);
            ip->phase = SNAPSHOT_IN_PROGRESS;
            ip->created = started;
            ip->volumes = calloc(1, sizeof *ip->volumes);
            v[count++] = ip;
        } else {
            free(ip);
            if (nv)
                v = nv;
        }
    }
    free(busy);
    qsort(v, count, sizeof *v, cmp_snap);
    *ret_snaps = v;
    *ret_n = count;
    return 0;
}
