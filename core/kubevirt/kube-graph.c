/* core/kubevirt/kube-graph.c: the objects a captured VM depends on, as
 * KubeVirt's objectgraph subresource and the velero plugin (pkg/util/
 * kvgraph) name them: what a backup of the VM must hold besides its disks.
 * Read from the VM object alone (the snapshot content's copy), so it says
 * what the VM needed when the snapshot was taken. */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "kube-objects.h"

struct graph {
    const char *ns;
    char **v;
    size_t n, cap;
    int r;
};

/* Adds "GROUP KIND NAMESPACE NAME"; namespace NULL: cluster-scoped ("-");
 * the core group shows as "core". Names that could break the line are
 * left out (the API server never makes them). */
static void
add(struct graph *g, const char *group, const char *kind, const char *ns, const char *name)
{
    char *line = NULL;

    if (g->r < 0 || !kube_name_ok(name) || (ns && !kube_name_ok(ns)))
        return;
    if (asprintf(&line, "%s %s %s %s", group[0] ? group : "core", kind, ns ? ns : "-",
                 name) < 0) {
        g->r = -ENOMEM;
        return;
    }
    for (size_t i = 0; i < g->n; i++)
        if (strcmp(g->v[i], line) == 0) {
            free(line);
            return;
        }
    if (g->n + 1 >= g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        char **v = realloc(g->v, cap * sizeof *v);
        if (!v) {
            free(line);
            g->r = -ENOMEM;
            return;
        }
        g->v = v;
        g->cap = cap;
    }
    g->v[g->n++] = line;
    g->v[g->n] = NULL;
}

static size_t
len_of(struct json_object *a)
{
    return json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
}

/* spec.instancetype or spec.preference, and the ControllerRevision that
 * holds the version the VM uses */
static void
add_type(struct graph *g, struct json_object *vm, const char *field, const char *ref,
         const char *ns_kind, const char *cluster_kind)
{
    struct json_object *t = kube_get(vm, "spec", field, (char *) NULL);
    const char *kind = kube_get_str(t, "kind", (char *) NULL);
    const char *name = kube_get_str(t, "name", (char *) NULL);
    const char *rev = kube_get_str(t, "revisionName", (char *) NULL);

    if (!t)
        return;
    /* the kind defaults to the cluster-wide one */
    if (kind && strcasecmp(kind, ns_kind) == 0)
        add(g, "instancetype.kubevirt.io", ns_kind, g->ns, name);
    else
        add(g, "instancetype.kubevirt.io", cluster_kind, NULL, name);
    if (!rev)
        rev = kube_get_str(vm, "status", ref, "controllerRevisionRef", "name", (char *) NULL);
    if (rev)
        add(g, "apps", "ControllerRevision", g->ns, rev);
}

static void
add_volume(struct graph *g, struct json_object *v)
{
    static const char *const cloud_init[] = { "cloudInitNoCloud", "cloudInitConfigDrive" };
    const char *s;

    if ((s = kube_get_str(v, "dataVolume", "name", (char *) NULL))) {
        add(g, "cdi.kubevirt.io", "DataVolume", g->ns, s);
        add(g, "", "PersistentVolumeClaim", g->ns, s);      /* the DataVolume's */
    }
    if ((s = kube_get_str(v, "persistentVolumeClaim", "claimName", (char *) NULL)))
        add(g, "", "PersistentVolumeClaim", g->ns, s);
    if ((s = kube_get_str(v, "memoryDump", "claimName", (char *) NULL)))
        add(g, "", "PersistentVolumeClaim", g->ns, s);
    if ((s = kube_get_str(v, "configMap", "name", (char *) NULL)))
        add(g, "", "ConfigMap", g->ns, s);
    if ((s = kube_get_str(v, "secret", "secretName", (char *) NULL)))
        add(g, "", "Secret", g->ns, s);
    if ((s = kube_get_str(v, "serviceAccount", "serviceAccountName", (char *) NULL)))
        add(g, "", "ServiceAccount", g->ns, s);
    for (size_t i = 0; i < sizeof cloud_init / sizeof *cloud_init; i++) {
        if ((s = kube_get_str(v, cloud_init[i], "secretRef", "name", (char *) NULL)))
            add(g, "", "Secret", g->ns, s);
        if ((s = kube_get_str(v, cloud_init[i], "networkDataSecretRef", "name", (char *) NULL)))
            add(g, "", "Secret", g->ns, s);
    }
    if ((s = kube_get_str(v, "sysprep", "secret", "name", (char *) NULL)))
        add(g, "", "Secret", g->ns, s);
    if ((s = kube_get_str(v, "sysprep", "configMap", "name", (char *) NULL)))
        add(g, "", "ConfigMap", g->ns, s);
}

int
kube_object_graph(struct json_object *vm, const char *ns, char ***ret)
{
    const char *own = kube_get_str(vm, "metadata", "namespace", (char *) NULL);
    struct graph g = { .ns = own ? own : ns };
    const char *name = kube_get_str(vm, "metadata", "name", (char *) NULL);
    struct json_object *spec = kube_get(vm, "spec", "template", "spec", (char *) NULL);
    struct json_object *vols = kube_get(spec, "volumes", (char *) NULL);
    struct json_object *creds = kube_get(spec, "accessCredentials", (char *) NULL);
    const char *s;

    if (!kube_name_ok(name) || !kube_name_ok(g.ns))
        return -EINVAL;
    add(&g, "kubevirt.io", "VirtualMachine", g.ns, name);
    add_type(&g, vm, "instancetype", "instancetypeRef", "VirtualMachineInstancetype",
             "VirtualMachineClusterInstancetype");
    add_type(&g, vm, "preference", "preferenceRef", "VirtualMachinePreference",
             "VirtualMachineClusterPreference");
    for (size_t i = 0; i < len_of(vols); i++)
        add_volume(&g, json_object_array_get_idx(vols, i));
    for (size_t i = 0; i < len_of(creds); i++) {
        struct json_object *c = json_object_array_get_idx(creds, i);
        if ((s = kube_get_str(c, "sshPublicKey", "source", "secret", "secretName",
                              (char *) NULL)))
            add(&g, "", "Secret", g.ns, s);
        if ((s = kube_get_str(c, "userPassword", "source", "secret", "secretName",
                              (char *) NULL)))
            add(&g, "", "Secret", g.ns, s);
    }
    /* a memory dump taken and not yet removed */
    if ((s = kube_get_str(vm, "status", "memoryDumpRequest", "claimName", (char *) NULL)))
        add(&g, "", "PersistentVolumeClaim", g.ns, s);
    if (g.r < 0) {
        strv_free(g.v);
        return g.r;
    }
    *ret = g.v;
    return 0;
}
