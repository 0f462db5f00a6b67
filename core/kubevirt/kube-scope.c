/* core/kubevirt/kube-scope.c: see kube-scope.h. */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "clock.h"
#include "kube-http.h"
#include "kube-objects.h"
#include "kube-scope.h"
#include "log.h"

#define PROBE_TIMEOUT_NS (UINT64_C(20) * 1000000000)

struct scope_ns {
    char *ns;                       /* NULL: all namespaces */
    struct kube_cache **caches;     /* one per collection */
};

struct kube_scope {
    size_t n_cols;
    struct scope_ns *v;
    size_t n;
    char *describe;
};

/* "/apis/GROUP/VERSION[/namespaces/NS]/PLURAL", "/api/v1/..." for the core group */
static char *
collection_path(const struct kube_collection *col, const char *ns, const char *query)
{
    char *p = NULL;
    int r = col->group[0]
                ? asprintf(&p, "/apis/%s/%s%s%s/%s%s", col->group, col->version,
                           ns ? "/namespaces/" : "", ns ? ns : "", col->plural, query ? query : "")
                : asprintf(&p, "/api/%s%s%s/%s%s", col->version, ns ? "/namespaces/" : "",
                           ns ? ns : "", col->plural, query ? query : "");
    return r < 0 ? NULL : p;
}

static void
scope_ns_stop(struct scope_ns *sn, size_t n_cols)
{
    for (size_t i = 0; sn->caches && i < n_cols; i++)
        kube_cache_stop(sn->caches[i]);
    free(sn->caches);
    free(sn->ns);
    *sn = (struct scope_ns) { 0 };
}

/* Starts the caches of one namespace (or all); kube_scope_start waits for
 * them all at once. */
static int
start_one(struct kube_client *c, const struct kube_collection *cols, size_t n_cols,
          const bool *skip, void *opaque, const char *ns, struct scope_ns *ret)
{
    struct scope_ns sn = { .caches = calloc(n_cols, sizeof *sn.caches) };
    int r = sn.caches && (!ns || (sn.ns = strdup(ns))) ? 0 : -ENOMEM;

    for (size_t i = 0; r >= 0 && i < n_cols; i++) {
        if (skip[i])
            continue;               /* optional and forbidden: an empty copy */
        _cleanup_free_ char *path = collection_path(&cols[i], ns, NULL);
        r = path ? kube_cache_start(c, path, cols[i].what, &cols[i].opt, cols[i].fn, opaque,
                                    &sn.caches[i])
                 : -ENOMEM;
    }
    if (r < 0) {
        scope_ns_stop(&sn, n_cols);
        return r;
    }
    *ret = sn;
    return 0;
}

static int
add_scope(struct kube_scope *s, const struct scope_ns *sn)
{
    struct scope_ns *v = realloc(s->v, (s->n + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    s->v = v;
    s->v[s->n++] = *sn;
    return 0;
}

/* The namespaces the credentials may list, or home alone. */
static int
candidate_namespaces(struct kube_client *c, const char *home, char ***ret, char *why,
                     size_t size)
{
    struct kube_response resp;
    int r = kube_request(c, "GET", "/api/v1/namespaces", NULL, NULL, PROBE_TIMEOUT_NS, &resp,
                         why, size);
    struct json_object *list = r >= 0 ? json_tokener_parse(resp.body ? resp.body : "") : NULL;
    struct json_object *items = kube_get(list, "items", (char *) NULL);
    size_t n = items && json_object_is_type(items, json_type_array)
                   ? json_object_array_length(items) : 0, k = 0;
    char **v = calloc(n + 2, sizeof *v);

    kube_response_clear(&resp);
    if (!v)
        r = -ENOMEM;
    else if (r == -EACCES)              /* not even that: the context's own */
        r = (v[k++] = strdup(home ? home : "default")) ? 0 : -ENOMEM;
    for (size_t i = 0; r >= 0 && i < n; i++) {
        const char *name = kube_get_str(json_object_array_get_idx(items, i), "metadata", "name",
                                        (char *) NULL);
        if (kube_name_ok(name) && !(v[k++] = strdup(name)))
            r = -ENOMEM;
    }
    json_object_put(list);
    if (r < 0) {
        strv_free(v);
        return r;
    }
    *ret = v;
    return 0;
}

/* May every collection be listed in ns (NULL: at the cluster scope)?
 * 1 yes, 0 no (403 Forbidden: RBAC), -errno for anything else (401 too:
 * credentials that are not valid are not a narrower scope). */
static int
may_list(struct kube_client *c, const struct kube_collection *cols, size_t n, const char *ns,
         bool *skip, char *why, size_t size)
{
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *path = collection_path(&cols[i], ns, "?limit=1");
        struct kube_response resp;
        if (!path)
            return -ENOMEM;
        int r = kube_request(c, "GET", path, NULL, NULL, PROBE_TIMEOUT_NS, &resp, why, size);
        long code = resp.code;
        kube_response_clear(&resp);
        skip[i] = r < 0 && code == 403 && cols[i].optional;
        if (skip[i])
            log_info("%s%s%s are not watched: %s", cols[i].what, ns ? " in namespace " : "",
                     ns ? ns : "", why);
        else if (r < 0)
            return code == 403 ? 0 : r;
    }
    return 1;
}

static int
describe(struct kube_scope *s)
{
    size_t len = 32;
    for (size_t i = 0; i < s->n; i++)
        len += strlen(s->v[i].ns ? s->v[i].ns : "") + 2;
    if (!(s->describe = malloc(len)))
        return -ENOMEM;
    if (s->n == 1 && !s->v[0].ns) {
        snprintf(s->describe, len, "all namespaces");
        return 0;
    }
    char *p = s->describe;
    p += sprintf(p, "namespace%s ", s->n == 1 ? "" : "s");
    for (size_t i = 0; i < s->n; i++)
        p += sprintf(p, "%s%s", i ? ", " : "", s->v[i].ns);
    return 0;
}

int
kube_scope_start(struct kube_client *c, const struct kube_collection *cols, size_t n,
                 void *opaque, const char *home, uint64_t timeout_ns,
                 struct kube_scope **ret, char *why, size_t size)
{
    struct kube_scope *s = calloc(1, sizeof *s);
    uint64_t end = now_monotonic_ns() + timeout_ns;
    _cleanup_strv_ char **names = NULL;
    _cleanup_free_ bool *skip = calloc(n, sizeof *skip);
    struct scope_ns sn;
    int r;

    if (!s || !skip) {
        free(s);
        return -ENOMEM;
    }
    s->n_cols = n;
    r = may_list(c, cols, n, NULL, skip, why, size);
    if (r > 0) {
        r = start_one(c, cols, n, skip, opaque, NULL, &sn);
        if (r >= 0)
            r = add_scope(s, &sn);
    } else if (r == 0) {
        log_info("the credentials may not list %s at the cluster scope (%s): watching the "
                 "namespaces they may list", cols[0].what, why);
        r = candidate_namespaces(c, home, &names, why, size);
        for (size_t i = 0; r >= 0 && names[i]; i++) {
            r = may_list(c, cols, n, names[i], skip, why, size);
            if (r == 0)
                log_debug("namespace '%s' not shown: %s", names[i], why);
            if (r <= 0)
                continue;
            r = start_one(c, cols, n, skip, opaque, names[i], &sn);
            if (r >= 0)
                r = add_scope(s, &sn);
        }
        if (r >= 0 && s->n == 0)
            r = (snprintf(why, size, "the credentials may list %s in no namespace",
                          cols[0].what), -EACCES);
    }
    /* every namespace's caches list at once: one deadline for all */
    for (size_t i = 0; r >= 0 && i < s->n; i++)
        for (size_t k = 0; r >= 0 && k < n; k++) {
            uint64_t now = now_monotonic_ns();
            if (!s->v[i].caches[k])
                continue;               /* not watched */
            r = kube_cache_wait_synced(s->v[i].caches[k], end > now ? end - now : 1, why, size);
        }
    if (r >= 0)
        r = describe(s);
    if (r < 0) {
        kube_scope_stop(s);
        return r;
    }
    *ret = s;
    return 0;
}

void
kube_scope_stop(struct kube_scope *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        scope_ns_stop(&s->v[i], s->n_cols);
    free(s->v);
    free(s->describe);
    free(s);
}

struct kube_cache *
kube_scope_cache(struct kube_scope *s, size_t col, const char *ns)
{
    if (!s || col >= s->n_cols)
        return NULL;
    for (size_t i = 0; i < s->n; i++)
        if (!s->v[i].ns || (ns && strcmp(s->v[i].ns, ns) == 0))
            return s->v[i].caches[col];
    return NULL;
}

int
kube_scope_list_all(struct kube_scope *s, size_t col, struct json_object ***ret, size_t *ret_n)
{
    struct json_object **all = NULL;
    size_t n_all = 0;

    for (size_t i = 0; i < s->n; i++) {
        struct json_object **v = NULL, **grown;
        size_t n = 0;
        int r = kube_cache_list(s->v[i].caches[col], NULL, NULL, &v, &n);
        if (r >= 0 && !(grown = realloc(all, (n_all + n + 1) * sizeof *all)))
            r = -ENOMEM;
        if (r < 0) {
            kube_cache_list_free(v, n);
            kube_cache_list_free(all, n_all);
            return r;
        }
        all = grown;
        memcpy(all + n_all, v, n * sizeof *v);
        n_all += n;
        free(v);
    }
    *ret = all;
    *ret_n = n_all;
    return 0;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

int
kube_scope_namespaces(struct kube_scope *s, size_t col, char ***ret)
{
    if (s->n == 1 && !s->v[0].ns)
        return kube_cache_names(s->v[0].caches[col], NULL, ret);

    char **v = calloc(s->n + 1, sizeof *v);
    size_t k = 0;
    int r = v ? 0 : -ENOMEM;
    for (size_t i = 0; r >= 0 && i < s->n; i++) {
        _cleanup_strv_ char **names = NULL;
        r = kube_cache_names(s->v[i].caches[col], NULL, &names);
        if (r >= 0 && names[0] && !(v[k++] = strdup(s->v[i].ns)))
            r = -ENOMEM;
    }
    if (r < 0) {
        strv_free(v);
        return r;
    }
    qsort(v, k, sizeof *v, cmp_str);
    *ret = v;
    return 0;
}

const char *
kube_scope_describe(const struct kube_scope *s)
{
    return s->describe;
}

size_t
kube_scope_count(const struct kube_scope *s)
{
    return s->n;
}

const char *
kube_scope_ns(const struct kube_scope *s, size_t i)
{
    return i < s->n ? s->v[i].ns : NULL;
}
