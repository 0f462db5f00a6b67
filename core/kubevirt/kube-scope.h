/* core/kubevirt/kube-scope.h: the watched copies of a cluster's collections
 * (kube-cache.h), where the credentials let them be watched: in all
 * namespaces if they may list there, else in each namespace they may list
 * (those of GET /api/v1/namespaces, or the context's own namespace when
 * even that is forbidden). A namespace made later is not watched until
 * the next mount.
 *
 * Thread model: as kube-cache.h; the set of namespaces is fixed once
 * started.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kube-cache.h"

struct kube_collection {
    const char *group, *version, *plural, *what;
    kube_cache_fn fn;
    struct kube_cache_options opt;
    bool optional;              /* forbidden: not watched (an empty copy) */
};

struct kube_scope;

/* Starts a cache per collection (cols[0] decides what may be listed) and
 * waits until every one has its first list, at most timeout_ns. home: the
 * namespace to try when no namespace may be listed (NULL: "default"). */
int kube_scope_start(struct kube_client *c, const struct kube_collection *cols, size_t n,
                     void *opaque, const char *home, uint64_t timeout_ns,
                     struct kube_scope **ret, char *why, size_t size);
void kube_scope_stop(struct kube_scope *s);

/* The cache of collection col that holds namespace ns (NULL: the one for
 * all namespaces, if watched so), or NULL: ns is not watched. */
struct kube_cache *kube_scope_cache(struct kube_scope *s, size_t col, const char *ns);
/* Copies of every object of collection col, in every watched namespace. */
int kube_scope_list_all(struct kube_scope *s, size_t col, struct json_object ***ret,
                        size_t *ret_n);
/* The namespaces holding any object of col: sorted, each once. */
int kube_scope_namespaces(struct kube_scope *s, size_t col, char ***ret);
/* "all namespaces", or the namespaces watched (for messages). */
const char *kube_scope_describe(const struct kube_scope *s);
/* The scopes watched, and the namespace of each (NULL: all namespaces). */
size_t kube_scope_count(const struct kube_scope *s);
const char *kube_scope_ns(const struct kube_scope *s, size_t i);
