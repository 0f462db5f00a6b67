/* core/kubevirt/kube-cache.c: see kube-cache.h. */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <malloc.h>
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
    struct kube_cache_options opt;
    struct hashmap *objects;    /* "ns/name" -> struct entry */
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

/* An object as kept: its compact JSON text (a json-c tree takes ten times
 * the memory: 1000 VMs are 15 MiB so), parsed again when read. */
struct entry {
    char *rv;
    char *index;                /* opt.index's value, NULL if none */
    char *text;
};

static void
entry_free(void *p)
{
    struct entry *e = p;
    if (e) {
        free(e->rv);
        free(e->index);
        free(e->text);
        free(e);
    }
}

static const char *
rv_of(struct json_object *o)
{
    return kube_get_str(o, "metadata", "resourceVersion", (char *) NULL);
}

static const char *
index_of(const struct kube_cache *k, struct json_object *o)
{
    const char *const *p = k->opt.index;
    size_t max = sizeof k->opt.index / sizeof *k->opt.index;
    struct json_object *v = o;

    if (!p[0])
        return NULL;
    for (size_t i = 0; i < max && p[i] && v; i++)
        if (!json_object_object_get_ex(v, p[i], &v))
            v = NULL;
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* What the tree never reads goes before the object is kept. */
static void
trim(const struct kube_cache *k, struct json_object *o)
{
    struct json_object *meta = kube_get(o, "metadata", (char *) NULL);

    if (meta && json_object_is_type(meta, json_type_object))
        json_object_object_del(meta, "managedFields");
    if (k->opt.drop_spec && json_object_is_type(o, json_type_object))
        json_object_object_del(o, "spec");
}

static struct entry *
entry_of(const struct kube_cache *k, struct json_object *o)
{
    struct entry *e = calloc(1, sizeof *e);
    const char *rv = rv_of(o), *index;

    if (!e)
        return NULL;
    trim(k, o);
    index = index_of(k, o);
    e->rv = strdup(rv ? rv : "");
    e->index = index ? strdup(index) : NULL;
    e->text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                       JSON_C_TO_STRING_NOSLASHESCAPE));
    if (!e->rv || !e->text || (index && !e->index)) {
        entry_free(e);
        return NULL;
    }
    return e;
}

static struct json_object *
entry_parse(const struct entry *e)
{
    return e ? json_tokener_parse(e->text) : NULL;
}

/* Applies one change under the lock; tells fn without it. */
static void
apply(struct kube_cache *k, enum kube_event type, struct json_object *o)
{
    _cleanup_free_ char *key = key_of(o);
    struct entry *e = NULL;
    void *old = NULL;

    if (!key)
        return;
    if (type != KUBE_DELETED && !(e = entry_of(k, o))) {
        log_warning("no memory to keep a change of %s", k->what);
        return;
    }
    pthread_mutex_lock(&k->lock);
    if (type == KUBE_DELETED) {
        old = hashmap_remove(k->objects, key);
    } else if (hashmap_put(k->objects, key, e, &old) < 0) {
        entry_free(e);
        old = NULL;
    }
    k->changes++;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
    if (type == KUBE_ADDED && old)
        type = KUBE_MODIFIED;
    else if (type == KUBE_MODIFIED && !old)
        type = KUBE_ADDED;              /* new to the copy: it came, for the tree */
    entry_free(old);
    if (k->fn)
        k->fn(k->opaque, type, o);
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
    struct json_object *o;

    if (!hashmap_get(rl->seen, key) && (o = entry_parse(value)))
        json_object_array_add(rl->gone, o);
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
            struct entry *cur = hashmap_get(k->objects, key);
            bool same = cur && cur->rv[0] && rv_of(o) && strcmp(cur->rv, rv_of(o)) == 0;
            pthread_mutex_unlock(&k->lock);
            if (hashmap_put(seen, key, (void *) 1, NULL) < 0) {
                r = -ENOMEM;        /* else a live object would count as deleted */
                break;
            }
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
    /* the pages' parsed trees are gone, the kept texts are spread among
     * them: give the freed pages back (1000 VMs: 8 MiB of RSS). Not under
     * ASan, whose allocator is not glibc's (malloc_trim crashes there) */
#if !defined(__SANITIZE_ADDRESS__)
    malloc_trim(0);
#endif
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
kube_cache_start(struct kube_client *c, const char *path, const char *what,
                 const struct kube_cache_options *opt, kube_cache_fn fn, void *opaque,
                 struct kube_cache **ret)
{
    struct kube_cache *k = calloc(1, sizeof *k);

    if (!k)
        return -ENOMEM;
    if (opt)
        k->opt = *opt;
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
    hashmap_free(k->objects, entry_free);
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
    _cleanup_free_ char *text = NULL;

    if (!k || asprintf(&key, "%s/%s", ns ? ns : "", name) < 0)
        return NULL;
    {
        LOCK_FOR_SCOPE(&k->lock);
        struct entry *e = hashmap_get(k->objects, key);
        if (!e || !(text = strdup(e->text)))
            return NULL;
    }
    return json_tokener_parse(text);       /* without the lock */
}

struct collect {
    const char *ns, *index;
    size_t ns_len;
    bool with_text;             /* else keys only */
    char **keys, **texts;
    size_t n, cap;
    bool oom;
};

static void
collect_one(const char *key, void *value, void *opaque)
{
    struct collect *c = opaque;
    const struct entry *e = value;

    if (c->oom || (c->ns && (strncmp(key, c->ns, c->ns_len) != 0 || key[c->ns_len] != '/')))
        return;
    if (c->index && (!e->index || strcmp(e->index, c->index) != 0))
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        char **keys = realloc(c->keys, cap * sizeof *keys);
        char **texts = keys && c->with_text ? realloc(c->texts, cap * sizeof *texts) : NULL;
        if (keys)
            c->keys = keys;
        if (texts)
            c->texts = texts;
        if (!keys || (c->with_text && !texts)) {
            c->oom = true;
            return;
        }
        c->cap = cap;
    }
    c->keys[c->n] = strdup(key);
    if (c->with_text)
        c->texts[c->n] = strdup(e->text);
    if (!c->keys[c->n] || (c->with_text && !c->texts[c->n])) {
        free(c->keys[c->n]);
        if (c->with_text)
            free(c->texts[c->n]);
        c->oom = true;
        return;
    }
    c->n++;
}

static void
collect_free(struct collect *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->keys[i]);
        if (c->with_text)
            free(c->texts[i]);
    }
    free(c->keys);
    free(c->texts);
}

static int
collect(struct kube_cache *k, struct collect *c)
{
    c->ns_len = c->ns ? strlen(c->ns) : 0;
    if (!k)
        return 0;               /* not watched: empty */
    pthread_mutex_lock(&k->lock);
    hashmap_foreach(k->objects, collect_one, c);
    pthread_mutex_unlock(&k->lock);
    if (c->oom) {
        collect_free(c);
        return -ENOMEM;
    }
    return 0;
}

/* "ns/name" keys by namespace, then name (strcmp of the whole keys would
 * put "a-b/x" before "a/x") */
static int
key_cmp(const char *a, const char *b)
{
    size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
    int r = strncmp(a, b, la < lb ? la : lb);

    if (r == 0 && la != lb)
        return la < lb ? -1 : 1;
    return r ? r : strcmp(a + la, b + lb);
}

static int
by_key(const void *a, const void *b)
{
    return key_cmp(*(char *const *) a, *(char *const *) b);
}

struct keyed {
    char *key, *text;
};

static int
by_keyed(const void *a, const void *b)
{
    return key_cmp(((const struct keyed *) a)->key, ((const struct keyed *) b)->key);
}

int
kube_cache_list(struct kube_cache *k, const char *ns, const char *index,
                struct json_object ***ret, size_t *ret_n)
{
    struct collect c = { .ns = ns, .index = index, .with_text = true };
    _cleanup_free_ struct keyed *v = NULL;
    struct json_object **out = NULL;
    size_t n = 0;
    int r = collect(k, &c);

    if (r < 0)
        return r;
    v = calloc(c.n + 1, sizeof *v);
    out = calloc(c.n + 1, sizeof *out);
    if (!v || !out) {
        free(out);
        collect_free(&c);
        return -ENOMEM;
    }
    for (size_t i = 0; i < c.n; i++)
        v[i] = (struct keyed) { c.keys[i], c.texts[i] };
    qsort(v, c.n, sizeof *v, by_keyed);
    for (size_t i = 0; i < c.n; i++)
        if ((out[n] = json_tokener_parse(v[i].text)))
            n++;
    collect_free(&c);
    *ret = out;
    *ret_n = n;
    return 0;
}

void
kube_cache_list_free(struct json_object **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        json_object_put(v[i]);
    free(v);
}

int
kube_cache_names(struct kube_cache *k, const char *ns, char ***ret)
{
    struct collect c = { .ns = ns };
    char **names;
    size_t n = 0;
    int r = collect(k, &c);

    if (r < 0)
        return r;
    if (c.n)
        qsort(c.keys, c.n, sizeof *c.keys, by_key);
    names = calloc(c.n + 1, sizeof *names);
    for (size_t i = 0; names && i < c.n; i++) {
        char *slash = strchr(c.keys[i], '/');
        if (!slash)
            continue;
        if (!ns)
            *slash = '\0';         /* the namespace */
        const char *v = ns ? slash + 1 : c.keys[i];
        if (n > 0 && strcmp(names[n - 1], v) == 0)
            continue;
        if (!(names[n] = strdup(v))) {
            strv_free(names);
            names = NULL;
            break;
        }
        n++;
    }
    collect_free(&c);
    if (!names)
        return -ENOMEM;
    *ret = names;
    return 0;
}

uint64_t
kube_cache_changes(struct kube_cache *k)
{
    if (!k)
        return 0;
    LOCK_FOR_SCOPE(&k->lock);
    return k->changes;
}

int
kube_cache_wait_change(struct kube_cache *k, uint64_t seen, uint64_t deadline_ns)
{
    struct timespec ts;
    int r = 0;

    if (!k)
        return -ENOENT;
    deadline_ts(deadline_ns, &ts);
    pthread_mutex_lock(&k->lock);
    while (k->changes == seen && r == 0)
        r = pthread_cond_timedwait(&k->cond, &k->lock, &ts);
    r = k->changes != seen ? 0 : -ETIMEDOUT;
    pthread_mutex_unlock(&k->lock);
    return r;
}
