/* core/kubevirt/kube-cache.h: a live copy of one collection of objects in
 * every namespace (an informer): list, then watch from the list's
 * resourceVersion (bookmarks move it on); 410 Expired or a watch that
 * fails lists again (with a backoff); every change is told to a callback.
 * Reads never make a request.
 *
 * Thread model: one thread per cache runs list and watch; the callback
 * runs on it, with no lock of the cache held; all functions are
 * thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kube-http.h"
#include "kube-watch.h"

struct json_object;
struct kube_cache;

/* A change: type ADDED, MODIFIED or DELETED; obj the new state (the last
 * one for DELETED), borrowed for the call. A relist reports what it finds
 * changed as the same events. */
typedef void (*kube_cache_fn)(void *opaque, enum kube_event type, struct json_object *obj);

/* What a cache keeps of each object (managedFields never), and the field
 * it lists by. */
struct kube_cache_options {
    const char *index[4];       /* a string field's path, e.g. "spec",
                                   "source", "name"; none if index[0] NULL */
    bool drop_spec;             /* metadata and status only */
};

/* path: the collection in all namespaces ("/apis/kubevirt.io/v1/
 * virtualmachines"); what: its name for messages; opt may be NULL (all
 * but managedFields, no index); fn may be NULL. fn gets an object as
 * kept. */
int kube_cache_start(struct kube_client *c, const char *path, const char *what,
                     const struct kube_cache_options *opt, kube_cache_fn fn, void *opaque,
                     struct kube_cache **ret);
void kube_cache_stop(struct kube_cache *k);

/* Until the first list is in (0), or timeout_ns (-ETIMEDOUT, or the list's
 * error, why says which). */
int kube_cache_wait_synced(struct kube_cache *k, uint64_t timeout_ns, char *why, size_t size);

/* Reads take NULL for k as an empty copy (a namespace not watched). */

/* A copy (json_object_put() it) of ns/name, or NULL. */
struct json_object *kube_cache_get(struct kube_cache *k, const char *ns, const char *name);
/* Copies of every object (of ns; NULL: all) whose index field is index
 * (NULL: any), sorted by namespace and name; release with
 * kube_cache_list_free(). */
int kube_cache_list(struct kube_cache *k, const char *ns, const char *index,
                    struct json_object ***ret, size_t *ret_n);
void kube_cache_list_free(struct json_object **v, size_t n);
/* The names in ns, or (ns NULL) the namespaces holding any: sorted, each
 * once, NULL-terminated (strv_free()); no object is read. */
int kube_cache_names(struct kube_cache *k, const char *ns, char ***ret);

/* Changes seen so far (a counter), and a wait for the next one until the
 * monotonic deadline_ns: 0, or -ETIMEDOUT. */
uint64_t kube_cache_changes(struct kube_cache *k);
int kube_cache_wait_change(struct kube_cache *k, uint64_t seen, uint64_t deadline_ns);
