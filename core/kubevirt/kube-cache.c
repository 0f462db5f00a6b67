/* core/kubevirt/kube-cache.c: see kube-cache.h. */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "clock.h"
#include "hashmap.h"
#include "kube-cache.h"
#include "kube-objects.h"
#include "log.h"

#define REQUEST_TIMEOUT_NS (UINT64_C(30) * NSEC_PER_SEC)
#define WATCH_SECONDS 300
#define BACKOFF_MAX_NS (UINT64_C(30) * NSEC_PER_SEC)
#define PAGE 500

struct kube_cache {
    struct kube_client *c;
    char *path, *what;
    kube_cache_fn fn;
    void *opaque;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct hashmap *objects;    /* "ns/name" -> json_object (a reference) */
    uint64_t changes;
    bool synced;
    int sync_error;             /* the last list's error while not synced */
    char sync_why[256];
    char rv[64];                /* where the watch goes on from */

    bool stop;
    pthread_t thread;
    bool started;
};

static char *
key_of(struct json_object *o)
{
    const char *ns = kube_get_str(o, "metadata", "namespace", (char *) NULL);
    const char *name = kube_get_str(o, "metadata", "name", (char *) NULL);
    char *k = NULL;
    if (!name || asprintf(&k, "%s/%s", ns ? ns : "", name) < 0)
        return NULL;
    return k;
}

static void
put_value(void *v)
{
    json_object_put(v);
}

/* Applies one change under the lock; tells fn without it. */
static void
apply(struct kube_cache *k, enum kube_event type, struct json_object *o)
{
    _cleanup_free_ char *key = key_of(o);
    void *old = NULL;

    if (!key)
        return;
    pthread_mutex_lock(&k->lock);
    if (type == KUBE_DELETED) {
        old = hashmap_remove(k->objects, key);
    } else if (hashmap_put(k->objects, key, json_object_get(o), &old) < 0) {
        json_object_put(o);
        old = NULL;
    }
    k->changes++;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
    if (type == KUBE_ADDED && old)
        type = KUBE_MODIFIED;
    json_object_put(old);
    if (k->fn)
        k->fn(k->opaque, type, o);
}

static const char *
rv_of(struct json_object *o)
{
    return kube_get_str(o, "metadata", "resourceVersion", (char *) NULL);
}

/* ---- list ------------------------------------------------------------------------ */

struct relist {
    struct hashmap *seen;       /* keys in the new list */
    struct json_object *gone;   /* what the copy has and the list not */
};

/* collected during the walk, applied after it (the map must not change) */
static void
gone_if_unseen(const char *key, void *value, void *opaque)
{
    struct relist *rl = opaque;
    if (!hashmap_get(rl->seen, key))
        json_object_array_add(rl->gone, json_object_get(value));
}

/* Lists the collection (in pages), replaces the copy, tells the changes. */
static int
list_all(struct kube_cache *k, char *why, size_t size)
{
    _cleanup_free_ char *cont = NULL;
    struct hashmap *seen = hashmap_new();
    struct json_object *gone = json_object_new_array();
    char rv[64] = "";
    int r = seen && gone ? 0 : -ENOMEM;

    while (r >= 0) {
        _cleanup_free_ char *path = NULL;
        struct kube_response resp;
        if (asprintf(&path, "%s?limit=%d%s%s", k->path, PAGE, cont ? "&continue=" : "",
                     cont ? cont : "") < 0) {
            r = -ENOMEM;
            break;
        }
        r = kube_request(k->c, "GET", path, NULL, NULL, REQUEST_TIMEOUT_NS, &resp, why, size);
        struct json_object *list = r >= 0 ? json_tokener_parse(resp.body ? resp.body : "") : NULL;
        kube_response_clear(&resp);
        if (r >= 0 && !list)
            r = (snprintf(why, size, "the list of %s is not JSON", k->what), -EIO);
        if (r < 0) {
            json_object_put(list);
            break;
        }
        struct json_object *items = kube_get(list, "items", (char *) NULL);
        const char *lrv = kube_get_str(list, "metadata", "resourceVersion", (char *) NULL);
        const char *next = kube_get_str(list, "metadata", "continue", (char *) NULL);
        snprintf(rv, sizeof rv, "%s", lrv ? lrv : "");
        for (size_t i = 0; items && json_object_is_type(items, json_type_array) &&
                           i < json_object_array_length(items); i++) {
            struct json_object *o = json_object_array_get_idx(items, i);
            _cleanup_free_ char *key = key_of(o);
            if (!key)
                continue;
            pthread_mutex_lock(&k->lock);
            struct json_object *cur = hashmap_get(k->objects, key);
            bool same = cur && rv_of(cur) && rv_of(o) && strcmp(rv_of(cur), rv_of(o)) == 0;
            pthread_mutex_unlock(&k->lock);
            (void) hashmap_put(seen, key, (void *) 1, NULL);
            if (!same)
                apply(k, KUBE_ADDED, o);
        }
        free(cont);
        cont = next && *next ? strdup(next) : NULL;
        json_object_put(list);
        if (!cont)
            break;
    }
    if (r >= 0) {
        /* what the list no longer has was deleted meanwhile */
        struct relist rl = { seen, gone };
        pthread_mutex_lock(&k->lock);
        hashmap_foreach(k->objects, gone_if_unseen, &rl);
        pthread_mutex_unlock(&k->lock);
        for (size_t i = 0; i < json_object_array_length(gone); i++)
            apply(k, KUBE_DELETED, json_object_array_get_idx(gone, i));
        pthread_mutex_lock(&k->lock);
        snprintf(k->rv, sizeof k->rv, "%s", rv);
        k->synced = true;
        pthread_cond_broadcast(&k->cond);
        pthread_mutex_unlock(&k->lock);
    }
    hashmap_free(seen, NULL);
    json_object_put(gone);
    return r;
}

/* ---- watch ------------------------------------------------------------------------ */

struct watching {
    struct kube_cache *k;
    bool relist;            /* 410: the resourceVersion is too old */
    char why[256];
};

static int
on_event(void *opaque, enum kube_event type, struct json_object *o)
{
    struct watching *w = opaque;
    struct kube_cache *k = w->k;

    if (type == KUBE_ERROR) {
        enum kube_retry retry;
        (void) kube_status_object_errno(o, &retry, w->why, sizeof w->why);
        w->relist = retry == KUBE_RELIST;
        return -EAGAIN;                 /* the watch ends here */
    }
    const char *rv = rv_of(o);
    if (type != KUBE_BOOKMARK)
        apply(k, type, o);
    if (rv) {
        pthread_mutex_lock(&k->lock);
        snprintf(k->rv, sizeof k->rv, "%s", rv);
        pthread_mutex_unlock(&k->lock);
    }
    return 0;
}

static int
on_data(void *opaque, const char *data, size_t len)
{
    return kube_watch_feed(opaque, data, len);
}

/* Watches from k->rv until the stream ends: 0 (watch again), 1 (list
 * again), < 0 (an error, why). */
static int
watch_once(struct kube_cache *k, char *why, size_t size)
{
    struct watching w = { .k = k };
    _cleanup_free_ char *path = NULL;
    char rv[64];

    pthread_mutex_lock(&k->lock);
    snprintf(rv, sizeof rv, "%s", k->rv);
    pthread_mutex_unlock(&k->lock);
    if (asprintf(&path, "%s?watch=true&allowWatchBookmarks=true&timeoutSeconds=%d"
                        "&resourceVersion=%s", k->path, WATCH_SECONDS, rv) < 0)
        return -ENOMEM;
    struct kube_watch *kw = kube_watch_new(on_event, &w);
    if (!kw)
        return -ENOMEM;
    int r = kube_stream(k->c, path, on_data, kw, &k->stop, why, size);
    kube_watch_free(kw);
    if (w.relist)
        return 1;
    if (r == -EAGAIN && w.why[0])
        return snprintf(why, size, "%s", w.why), -EIO;
    if (r == -EPROTO)
        return snprintf(why, size, "the watch of %s sent something that is not an event",
                        k->what), -EIO;
    return r;
}

static void
pause_for(struct kube_cache *k, uint64_t ns)
{
    uint64_t end = now_monotonic_ns() + ns;
    while (!__atomic_load_n(&k->stop, __ATOMIC_ACQUIRE) && now_monotonic_ns() < end)
        sleep_ns(50 * NSEC_PER_MSEC);
}

static void *
cache_thread(void *opaque)
{
    struct kube_cache *k = opaque;
    uint64_t backoff = 500 * NSEC_PER_MSEC;
    bool listed = false;
    char why[512];

    while (!__atomic_load_n(&k->stop, __ATOMIC_ACQUIRE)) {
        int r;
        why[0] = '\0';
        if (!listed) {
            r = list_all(k, why, sizeof why);
            if (r < 0) {
                pthread_mutex_lock(&k->lock);
                if (!k->synced) {
                    k->sync_error = r;
                    snprintf(k->sync_why, sizeof k->sync_why, "%s", why);
                    pthread_cond_broadcast(&k->cond);
                }
                pthread_mutex_unlock(&k->lock);
                log_warning("cannot list %s: %s; trying again", k->what, why);
                pause_for(k, backoff);
                backoff = backoff * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : backoff * 2;
                continue;
            }
            listed = true;
            backoff = 500 * NSEC_PER_MSEC;
        }
        r = watch_once(k, why, sizeof why);
        if (r == -ECANCELED)
            break;
        if (r == 1) {
            log_debug("the watch of %s expired: listing again", k->what);
            listed = false;
        } else if (r < 0) {
            log_warning("the watch of %s failed: %s; listing again", k->what, why);
            listed = false;
            pause_for(k, backoff);
            backoff = backoff * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : backoff * 2;
        }
    }
    return NULL;
}

/* ---- the cache -------------------------------------------------------------------------- */

int
kube_cache_start(struct kube_client *c, const char *path, const char *what, kube_cache_fn fn,
                 void *opaque, struct kube_cache **ret)
{
    struct kube_cache *k = calloc(1, sizeof *k);

    if (!k)
        return -ENOMEM;
    k->c = c;
    k->fn = fn;
    k->opaque = opaque;
    k->path = strdup(path);
    k->what = strdup(what);
    k->objects = hashmap_new();
    pthread_mutex_init(&k->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (!k->path || !k->what || !k->objects ||
        pthread_create(&k->thread, NULL, cache_thread, k) != 0) {
        kube_cache_stop(k);
        return -ENOMEM;
    }
    k->started = true;
    *ret = k;
    return 0;
}

void
kube_cache_stop(struct kube_cache *k)
{
    if (!k)
        return;
    __atomic_store_n(&k->stop, true, __ATOMIC_RELEASE);
    if (k->started)
        pthread_join(k->thread, NULL);
    hashmap_free(k->objects, put_value);
    pthread_cond_destroy(&k->cond);
    pthread_mutex_destroy(&k->lock);
    free(k->path);
    free(k->what);
    free(k);
}

static void
deadline_ts(uint64_t deadline_ns, struct timespec *ts)
{
    ts->tv_sec = (time_t) (deadline_ns / NSEC_PER_SEC);
    ts->tv_nsec = (long) (deadline_ns % NSEC_PER_SEC);
}

int
kube_cache_wait_synced(struct kube_cache *k, uint64_t timeout_ns, char *why, size_t size)
{
    uint64_t end = now_monotonic_ns() + timeout_ns;
    struct timespec ts;
    int r = 0;

    deadline_ts(end, &ts);
    pthread_mutex_lock(&k->lock);
    while (!k->synced && !k->sync_error && r == 0)
        r = pthread_cond_timedwait(&k->cond, &k->lock, &ts);
    if (k->synced)
        r = 0;
    else if (k->sync_error)
        r = (snprintf(why, size, "%s", k->sync_why), k->sync_error);
    else
        r = (snprintf(why, size, "no list of %s within %llu s", k->what,
                      (unsigned long long) (timeout_ns / NSEC_PER_SEC)), -ETIMEDOUT);
    pthread_mutex_unlock(&k->lock);
    return r;
}

struct json_object *
kube_cache_get(struct kube_cache *k, const char *ns, const char *name)
{
    _cleanup_free_ char *key = NULL;
    if (asprintf(&key, "%s/%s", ns ? ns : "", name) < 0)
        return NULL;
    LOCK_FOR_SCOPE(&k->lock);
    return json_object_get(hashmap_get(k->objects, key));
}

struct collect {
    const char *ns;
    size_t ns_len;
    struct json_object **v;
    size_t n, cap;
    bool oom;
};

static void
collect_one(const char *key, void *value, void *opaque)
{
    struct collect *c = opaque;
    if (c->ns && (strncmp(key, c->ns, c->ns_len) != 0 || key[c->ns_len] != '/'))
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct json_object **v = realloc(c->v, cap * sizeof *v);
        if (!v) {
            c->oom = true;
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = json_object_get(value);
}

static const char *
meta_str(struct json_object *o, const char *key)
{
    const char *s = kube_get_str(o, "metadata", key, (char *) NULL);
    return s ? s : "";
}

static int
by_namespace_and_name(const void *a, const void *b)
{
    struct json_object *x = *(struct json_object *const *) a;
    struct json_object *y = *(struct json_object *const *) b;
    int r = strcmp(meta_str(x, "namespace"), meta_str(y, "namespace"));
    return r ? r : strcmp(meta_str(x, "name"), meta_str(y, "name"));
}

int
kube_cache_list(struct kube_cache *k, const char *ns, struct json_object ***ret, size_t *ret_n)
{
    struct collect c = { .ns = ns, .ns_len = ns ? strlen(ns) : 0 };

    pthread_mutex_lock(&k->lock);
    hashmap_foreach(k->objects, collect_one, &c);
    pthread_mutex_unlock(&k->lock);
    if (c.oom) {
        kube_cache_list_free(c.v, c.n);
        return -ENOMEM;
    }
    if (c.n)
        qsort(c.v, c.n, sizeof *c.v, by_namespace_and_name);
    *ret = c.v;
    *ret_n = c.n;
    return 0;
}

void
kube_cache_list_free(struct json_object **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        json_object_put(v[i]);
    free(v);
}

uint64_t
kube_cache_changes(struct kube_cache *k)
{
    LOCK_FOR_SCOPE(&k->lock);
    return k->changes;
}

int
kube_cache_wait_change(struct kube_cache *k, uint64_t seen, uint64_t deadline_ns)
{
    struct timespec ts;
    int r = 0;

    deadline_ts(deadline_ns, &ts);
    pthread_mutex_lock(&k->lock);
    while (k->changes == seen && r == 0)
        r = pthread_cond_timedwait(&k->cond, &k->lock, &ts);
    r = k->changes != seen ? 0 : -ETIMEDOUT;
    pthread_mutex_unlock(&k->lock);
    return r;
}
