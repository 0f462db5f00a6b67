/* core/kubevirt/kube-watch.h: a watch's body (kubevirt-api.md §6.2): a
 * stream of JSON objects {"type": ..., "object": {...}}, cut at object
 * boundaries (not lines), fed as it arrives in pieces of any size. Pure. */
#pragma once

#include <stddef.h>

struct json_object;

enum kube_event {
    KUBE_ADDED,
    KUBE_MODIFIED,
    KUBE_DELETED,
    KUBE_BOOKMARK,
    KUBE_ERROR,             /* object: a Status (410 Expired: relist) */
};

/* Called once per event; object is borrowed for the call. Returning < 0
 * stops the feed with that value. */
typedef int (*kube_event_fn)(void *opaque, enum kube_event type, struct json_object *object);

struct kube_watch;

struct kube_watch *kube_watch_new(kube_event_fn fn, void *opaque);
void kube_watch_free(struct kube_watch *w);
/* Feeds len bytes: 0, -EPROTO (not a watch stream: logged by the caller,
 * who ends the watch), or what fn returned. */
int kube_watch_feed(struct kube_watch *w, const char *data, size_t len);
