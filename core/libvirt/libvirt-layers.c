/* core/libvirt/libvirt-layers.c: the image chains a libvirt host uses, as a
 * layer graph (layers.h): every domain's disks (saved and running
 * definitions) and every snapshot's overlays, of every domain. A clone or
 * a restored VM builds on a snapshot's layer; the graph shows it, so a
 * merge never writes into a layer another image needs. */
#define LOG_MODULE "layers"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hashmap.h"
#include "layers.h"
#include "libvirt-xml.h"
#include "libvirt-private.h"
#include "log.h"

/* Is the last error "no such object" (gone meanwhile)? Resets it then. */
static bool
gone(int code)
{
    if (!lv_last_is(code))
        return false;
    virResetLastError();
    return true;
}

static int
add_top(struct layer_refs *g, const char *source)
{
    if (!source || source[0] != '/')
        return 0;               /* network or pool disks: not files of ours */
    _cleanup_strv_ char **chain = NULL;
    (void) layer_chain(source, &chain);     /* a partial chain still counts */
    return chain ? layer_refs_add(g, chain) : -ENOMEM;
}

/* A disk of a domain: a file, or a storage pool's volume ("pool/volume",
 * whose file libvirt tells); network disks are nobody's layers here. */
static int
add_disk(struct layer_refs *g, virDomainPtr d, const char *source)
{
    const char *slash = source ? strchr(source, '/') : NULL;
    if (!source || source[0] == '/' || !slash)
        return add_top(g, source);
    _cleanup_free_ char *pool_name = strndup(source, (size_t) (slash - source));
    if (!pool_name)
        return -ENOMEM;
    virStoragePoolPtr pool = virStoragePoolLookupByName(virDomainGetConnect(d), pool_name);
    if (!pool)
        return gone(VIR_ERR_NO_STORAGE_POOL) ? 0 : lv_errno("find the storage pool of a "
                                                            "disk of", virDomainGetName(d));
    virStorageVolPtr vol = virStorageVolLookupByName(pool, slash + 1);
    char *path = vol ? virStorageVolGetPath(vol) : NULL;
    int r = 0;
    if (!path && !gone(VIR_ERR_NO_STORAGE_VOL))
        r = lv_errno("find the file of a disk of", virDomainGetName(d));
    else if (path)
        r = add_top(g, path);
    free(path);
    if (vol)
        virStorageVolFree(vol);
    virStoragePoolFree(pool);
    return r;
}

static int
add_domain_xml(struct layer_refs *g, const char *xml, bool snapshot, virDomainPtr d)
{
    struct volume *v = NULL;
    size_t n = 0;
    int r = 0;
    const char *vm = virDomainGetName(d);

    if (snapshot) {
        struct lv_xml_snapshot x;
        if (lv_xml_snapshot_parse(xml, &x) < 0)
            return log_error_errno(-EIO, "cannot parse a snapshot of '%s': which images "
                                   "build on which cannot be told", vm);
        for (size_t i = 0; r >= 0 && i < x.n_disks; i++)
            if (!(x.disks[i].flags & (VOLUME_NOT_SNAPSHOTTED | VOLUME_INTERNAL)))
                r = add_top(g, x.disks[i].source);
        lv_xml_snapshot_clear(&x);
        return r;
    }
    if (lv_xml_disks(xml, &v, &n) < 0)
        return log_error_errno(-EIO, "cannot parse the definition of '%s': which images "
                               "build on which cannot be told", vm);
    for (size_t i = 0; i < n; i++) {
        if (r >= 0)
            r = add_disk(g, d, v[i].source);
        volume_clear(&v[i]);
    }
    free(v);
    return r;
}

/* The names of the domains listed with flags, as a set. */
static int
name_set(virConnectPtr c, unsigned flags, struct hashmap **ret)
{
    virDomainPtr *doms = NULL;
    int n = virConnectListAllDomains(c, &doms, flags);
    struct hashmap *set = hashmap_new();
    int r = n < 0 ? lv_errno("list the domains", "") : set ? 0 : -ENOMEM;

    for (int i = 0; i < n; i++) {
        if (r >= 0 && hashmap_put(set, virDomainGetName(doms[i]), (void *) 1, NULL) < 0)
            r = -ENOMEM;
        virDomainFree(doms[i]);
    }
    free(doms);
    if (r < 0) {
        hashmap_free(set, NULL);
        return r;
    }
    *ret = set;
    return 0;
}

/* One domain's definitions, fetched by a worker. */
struct fetched {
    virDomainPtr d;
    bool active;
    bool gone;              /* undefined meanwhile */
    int err;                /* or why it could not be read */
    char *inactive, *live;
};

struct fetch_pool {
    struct fetched *f;
    size_t n;
    size_t next;            /* atomic: the next domain to fetch */
};

#define FETCH_THREADS 4

/* Fetches definitions until none is left. libvirt's client lets several
 * threads call on one connection; the daemon answers them in parallel. */
static void *
fetch_worker(void *opaque)
{
    struct fetch_pool *p = opaque;

    for (;;) {
        size_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (i >= p->n)
            return NULL;
        struct fetched *f = &p->f[i];
        const char *name = virDomainGetName(f->d);
        f->inactive = virDomainGetXMLDesc(f->d, VIR_DOMAIN_XML_INACTIVE);
        if (!f->inactive) {
            if (!(f->gone = gone(VIR_ERR_NO_DOMAIN)))
                f->err = lv_errno("read the definition of", name);
            continue;
        }
        /* (a domain stopped meanwhile still answers, with its saved one) */
        if (f->active && !(f->live = virDomainGetXMLDesc(f->d, 0)) &&
            !(f->gone = gone(VIR_ERR_NO_DOMAIN)))
            f->err = lv_errno("read the running definition of", name);
        virResetLastError();
    }
}

static int
scan_snapshots(const struct lv_scan *scan, virDomainPtr d)
{
    const char *name = virDomainGetName(d);
    virDomainSnapshotPtr *snaps = NULL;
    int ns = virDomainListAllSnapshots(d, &snaps, 0), r = 0;

    if (ns < 0)
        return gone(VIR_ERR_NO_DOMAIN) ? 0 : lv_errno("list the snapshots of", name);
    for (int j = 0; j < ns; j++) {
        _cleanup_(virDomainSnapshotFreep) virDomainSnapshotPtr s = snaps[j];
        _cleanup_free_ char *xml = r >= 0 ? virDomainSnapshotGetXMLDesc(s, 0) : NULL;
        if (xml)
            r = scan->snapshot(scan->opaque, d, xml);
        else if (r >= 0 && !gone(VIR_ERR_NO_DOMAIN_SNAPSHOT))
            r = lv_errno("read a snapshot of", name);
    }
    free(snaps);
    return r;
}

int
lv_scan_host(virConnectPtr c, const struct lv_scan *scan)
{
    virDomainPtr *doms = NULL;
    struct hashmap *active = NULL, *with_snaps = NULL;
    struct fetched *f = NULL;
    int r, n;

    /* three listings tell which domains need more than one call each:
     * a host of stopped VMs without snapshots costs one call per domain */
    if ((r = name_set(c, VIR_CONNECT_LIST_DOMAINS_ACTIVE, &active)) < 0 ||
        (r = name_set(c, VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT, &with_snaps)) < 0) {
        hashmap_free(active, NULL);
        return r;
    }
    n = virConnectListAllDomains(c, &doms, 0);
    if (n < 0)
        r = lv_errno("list the domains", "");
    else if (!(f = calloc((size_t) n + 1, sizeof *f)))
        r = -ENOMEM;
    for (int i = 0; r >= 0 && i < n; i++) {
        f[i].d = doms[i];
        f[i].active = hashmap_get(active, virDomainGetName(doms[i])) != NULL;
    }
    if (r >= 0) {
        struct fetch_pool pool = { .f = f, .n = (size_t) n };
        pthread_t t[FETCH_THREADS];
        size_t started = 0;
        for (; n > 64 && started < FETCH_THREADS; started++)
            if (pthread_create(&t[started], NULL, fetch_worker, &pool) != 0)
                break;
        fetch_worker(&pool);
        for (size_t i = 0; i < started; i++)
            pthread_join(t[i], NULL);
    }

    for (int i = 0; r >= 0 && i < n; i++) {
        virDomainPtr d = f[i].d;
        const char *name = virDomainGetName(d);
        /* fail closed: a domain or snapshot left out could be a user of a
         * layer that would then be merged into or removed */
        if (f[i].gone)
            continue;
        if (f[i].err < 0) {
            r = f[i].err;
            continue;
        }
        r = scan->domain(scan->opaque, d, f[i].inactive, f[i].live);
        if (r >= 0 && scan->snapshot && hashmap_get(with_snaps, name))
            r = scan_snapshots(scan, d);
    }
    /* a domain that got its first snapshot during the pass: listed now */
    struct hashmap *later = NULL;
    if (r >= 0 && scan->snapshot && (r = name_set(c, VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT,
                                                  &later)) >= 0) {
        for (int i = 0; r >= 0 && i < n; i++) {
            const char *name = virDomainGetName(f[i].d);
            if (!f[i].gone && hashmap_get(later, name) && !hashmap_get(with_snaps, name))
                r = scan_snapshots(scan, f[i].d);
        }
    }
    hashmap_free(later, NULL);
    for (int i = 0; i < n; i++) {
        if (f) {
            free(f[i].inactive);
            free(f[i].live);
        }
        virDomainFree(doms[i]);
    }
    free(f);
    free(doms);
    hashmap_free(active, NULL);
    hashmap_free(with_snaps, NULL);
    return r;
}

int
lv_refs_add_domain(struct layer_refs *g, virDomainPtr d, const char *inactive,
                   const char *live)
{
    int r = add_domain_xml(g, inactive, false, d);
    if (r >= 0 && live)
        r = add_domain_xml(g, live, false, d);
    return r;
}

int
lv_refs_add_snapshot(struct layer_refs *g, virDomainPtr d, const char *xml)
{
    return add_domain_xml(g, xml, true, d);
}

static int
refs_domain(void *opaque, virDomainPtr d, const char *inactive, const char *live)
{
    return lv_refs_add_domain(opaque, d, inactive, live);
}

static int
refs_snapshot(void *opaque, virDomainPtr d, const char *xml)
{
    return lv_refs_add_snapshot(opaque, d, xml);
}

int
lv_layer_refs(virConnectPtr c, struct layer_refs **ret)
{
    struct layer_refs *g = layer_refs_new();
    if (!g)
        return -ENOMEM;
    struct lv_scan scan = { .domain = refs_domain, .snapshot = refs_snapshot, .opaque = g };
    int r = lv_scan_host(c, &scan);
    if (r < 0) {
        layer_refs_free(g);
        return r;
    }
    *ret = g;
    return 0;
}

int
lv_reclaim(virConnectPtr c, char *const *candidates)
{
    struct layer_refs *g = NULL;

    if (!candidates || !candidates[0])
        return 0;
    if (lv_layer_refs(c, &g) < 0) {
        log_warning("cannot tell which layers are still used: nothing reclaimed now");
        return -EIO;
    }
    layer_reclaim(g, candidates);
    layer_refs_free(g);
    return 0;
}

int
strv_push(char ***v, size_t *n, const char *s)
{
    char **nv = realloc(*v, (*n + 2) * sizeof *nv);
    if (!nv)
        return -ENOMEM;
    *v = nv;
    if (!(nv[*n] = strdup(s)))
        return -ENOMEM;
    nv[++*n] = NULL;
    return 0;
}

int
strv_push_chain(char ***v, size_t *n, const char *top)
{
    _cleanup_strv_ char **chain = NULL;
    (void) layer_chain(top, &chain);
    for (size_t i = 0; chain && chain[i]; i++)
        if (strv_push(v, n, chain[i]) < 0)
            return -ENOMEM;
    return chain ? 0 : -ENOMEM;
}
