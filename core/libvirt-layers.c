/* core/libvirt-layers.c: the image chains a libvirt host uses, as a
 * layer graph (layers.h): every domain's disks (saved and running
 * definitions) and every snapshot's overlays, of every domain. A clone or
 * a restored VM builds on a snapshot's layer; the graph shows it, so a
 * merge never writes into a layer another image needs. */
#define LOG_MODULE "layers"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "libvirt-xml.h"
#include "libvirt.h"
#include "log.h"

/* Is the last error "no such object" (gone meanwhile)? Resets it then. */
static bool
gone(int code)
{
    virErrorPtr e = virGetLastError();
    if (!e || e->code != code)
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

static int
add_domain_xml(struct layer_refs *g, const char *xml, bool snapshot, const char *vm)
{
    struct volume *v = NULL;
    size_t n = 0;
    int r = 0;

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
            r = add_top(g, v[i].source);
        volume_clear(&v[i]);
    }
    free(v);
    return r;
}

int
lv_layer_refs(virConnectPtr c, struct layer_refs **ret)
{
    virDomainPtr *doms = NULL;
    struct layer_refs *g = layer_refs_new();
    int n = virConnectListAllDomains(c, &doms, 0), r = 0;

    if (n < 0) {
        layer_refs_free(g);
        return lv_errno("list the domains for their disk chains", "");
    }
    for (int i = 0; i < n; i++) {
        _cleanup_(virDomainFreep) virDomainPtr d = doms[i];
        if (!g || r < 0)
            continue;
        const char *name = virDomainGetName(d);
        /* fail closed: a domain or snapshot left out could be a user of a
         * layer that would then be merged into or removed */
        _cleanup_free_ char *inactive = virDomainGetXMLDesc(d, VIR_DOMAIN_XML_INACTIVE);
        if (!inactive) {
            if (gone(VIR_ERR_NO_DOMAIN))
                continue;       /* undefined meanwhile */
            r = lv_errno("read the definition for its disk chains of", name);
            continue;
        }
        int active = virDomainIsActive(d);
        _cleanup_free_ char *live = active == 1 ? virDomainGetXMLDesc(d, 0) : NULL;
        if (active == 1 && !live && !gone(VIR_ERR_NO_DOMAIN)) {
            r = lv_errno("read the running definition for its disk chains of", name);
            continue;
        }
        virResetLastError();
        r = add_domain_xml(g, inactive, false, name);
        if (r >= 0 && live)
            r = add_domain_xml(g, live, false, name);

        virDomainSnapshotPtr *snaps = NULL;
        int ns = virDomainListAllSnapshots(d, &snaps, 0);
        if (ns < 0 && gone(VIR_ERR_NO_DOMAIN))
            continue;
        if (ns < 0) {
            r = lv_errno("list the snapshots for their disk chains of", virDomainGetName(d));
            continue;
        }
        for (int j = 0; j < ns; j++) {
            _cleanup_(virDomainSnapshotFreep) virDomainSnapshotPtr s = snaps[j];
            _cleanup_free_ char *xml = r >= 0 ? virDomainSnapshotGetXMLDesc(s, 0) : NULL;
            if (xml)
                r = add_domain_xml(g, xml, true, name);
            else if (r >= 0 && !gone(VIR_ERR_NO_DOMAIN_SNAPSHOT))
                r = lv_errno("read a snapshot for its disk chains of", name);
        }
        free(snaps);
    }
    free(doms);
    if (!g || r < 0) {
        layer_refs_free(g);
        return g ? r : -ENOMEM;
    }
    *ret = g;
    return 0;
}

void
lv_reclaim(virConnectPtr c, char *const *candidates)
{
    struct layer_refs *g = NULL;

    if (!candidates || !candidates[0])
        return;
    if (lv_layer_refs(c, &g) < 0) {
        log_warning("cannot tell which layers are still used: nothing reclaimed now");
        return;
    }
    layer_reclaim(g, candidates);
    layer_refs_free(g);
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
