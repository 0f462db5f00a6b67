/* core/kubevirt/kube-export.c: see kube-export.h. */
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
#include "kube-export.h"
#include "kube-objects.h"
#include "kube-owner.h"
#include "kube-view.h"
#include "log.h"

#define REQUEST_NS (UINT64_C(20) * NSEC_PER_SEC)
#define POLL_NS (UINT64_C(250) * NSEC_PER_MSEC)
/* after the last close: cp of one disk after another reuses the export */
#define LINGER_NS (UINT64_C(10) * NSEC_PER_SEC)
/* a killed daemon's export deletes itself after that at the latest */
#define TTL "1h"

/* One export: the source, its state, what a view needs. */
struct ex {
    struct kube_exports *e;
    char *key;                  /* "ns/kind/name" */
    char *ns, *name;            /* the VirtualMachineExport */
    int refs;                   /* views open, opens under way (under e->lock) */
    uint64_t idle_since;        /* refs fell to 0 then (under e->lock) */

    pthread_mutex_t lock;       /* the fields below: one open makes it ready */
    bool ready;
    char *token;                /* wiped when freed */
    char *cert;
    struct json_object *volumes; /* the chosen link's volumes */
};

struct kube_exports {
    struct kube_client *c;
    char owner[320];
    char version[16];           /* export.kubevirt.io: v1, v1beta1, v1alpha1; "" none */
    bool internal;
    uint64_t wait_ns;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct hashmap *live;       /* key -> struct ex */
    bool stop;
    pthread_t reaper;
    bool reaper_started;
    void *companion;            /* kube_exports_companion() (under lock) */
    void (*companion_end)(void *);
};

static void
ex_clear(struct ex *x)
{
    if (x->token) {
        explicit_bzero(x->token, strlen(x->token));
        free(x->token);
    }
    free(x->cert);
    json_object_put(x->volumes);
    x->token = x->cert = NULL;
    x->volumes = NULL;
    x->ready = false;
}

static void
ex_free(struct ex *x)
{
    if (!x)
        return;
    ex_clear(x);
    pthread_mutex_destroy(&x->lock);
    free(x->key);
    free(x->ns);
    free(x->name);
    free(x);
}

static char *
export_path(struct kube_exports *e, const char *ns, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "/apis/export.kubevirt.io/%s/namespaces/%s/virtualmachineexports%s%s",
                 e->version, ns, name ? "/" : "", name ? name : "") < 0)
        return NULL;
    return p;
}

static void
delete_export(struct kube_exports *e, const char *ns, const char *name)
{
    _cleanup_free_ char *path = export_path(e, ns, name);
    struct kube_response resp;
    char why[512];
    int r = path ? kube_request(e->c, "DELETE", path, NULL, NULL, REQUEST_NS, &resp, why,
                                sizeof why)
                 : -ENOMEM;
    if (path)
        kube_response_clear(&resp);
    if (r < 0 && r != -ENOENT)
        log_warning("'%s': cannot delete the export '%s' (its TTL will): %s", ns, name, why);
    else
        log_debug("'%s': export '%s' deleted", ns, name);
}

struct idle {
    uint64_t now;
    struct ex *found;
};

static void
find_idle(const char *key, void *value, void *opaque)
{
    struct idle *idle = opaque;
    struct ex *x = value;

    (void) key;
    if (!idle->found && x->refs == 0 && idle->now - x->idle_since >= LINGER_NS)
        idle->found = x;
}

static void
delete_one(const char *key, void *value, void *opaque)
{
    struct ex *x = value;

    (void) key;
    delete_export(opaque, x->ns, x->name);
}

/* Deletes the exports idle for LINGER_NS. */
static void *
reaper_thread(void *opaque)
{
    struct kube_exports *e = opaque;

    pthread_mutex_lock(&e->lock);
    while (!e->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&e->cond, &e->lock, &ts);
        struct idle idle = { now_monotonic_ns(), NULL };
        hashmap_foreach(e->live, find_idle, &idle);
        struct ex *gone = idle.found;
        if (!gone)
            continue;
        hashmap_remove(e->live, gone->key);
        pthread_mutex_unlock(&e->lock);
        delete_export(e, gone->ns, gone->name);
        ex_free(gone);
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

static int
discover(struct kube_exports *e, char *why, size_t size)
{
    struct kube_response resp;
    int r = kube_request(e->c, "GET", "/apis/export.kubevirt.io", NULL, NULL, REQUEST_NS, &resp,
                         why, size);
    struct json_object *g = r >= 0 ? json_tokener_parse(resp.body ? resp.body : "") : NULL;
    const char *v = kube_get_str(g, "preferredVersion", "version", (char *) NULL);

    kube_response_clear(&resp);
    if (r >= 0 && v && strlen(v) < sizeof e->version)
        snprintf(e->version, sizeof e->version, "%s", v);
    else if (r >= 0 || r == -ENOENT)
        r = (snprintf(why, size, "the cluster serves no export.kubevirt.io API (KubeVirt's "
                      "VMExport): disks cannot be read"), -ENOENT);
    json_object_put(g);
    return r;
}

int
kube_exports_new(struct kube_client *c, const char *owner, bool internal, uint64_t wait_ns,
                 struct kube_exports **ret, char *why, size_t size)
{
    struct kube_exports *e = calloc(1, sizeof *e);
    int r;

    if (!e)
        return -ENOMEM;
    e->c = c;
    snprintf(e->owner, sizeof e->owner, "%s", owner);
    e->internal = internal;
    e->wait_ns = wait_ns;
    pthread_mutex_init(&e->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cond, &ca);
    pthread_condattr_destroy(&ca);
    e->live = hashmap_new();
    r = e->live ? 0 : -ENOMEM;
    if (r >= 0 && pthread_create(&e->reaper, NULL, reaper_thread, e) == 0)
        e->reaper_started = true;
    else if (r >= 0)
        r = -EAGAIN;
    if (r < 0) {
        kube_exports_free(e);
        return r;
    }
    r = discover(e, why, size);       /* without it: opens fail, the tree works */
    *ret = e;
    return r == -ENOENT ? r : 0;
}

static void
free_value(void *p)
{
    ex_free(p);
}

void
kube_exports_free(struct kube_exports *e)
{
    if (!e)
        return;
    /* first: what it ends (temporary snapshots) drops exports of e */
    if (e->companion)
        e->companion_end(e->companion);
    pthread_mutex_lock(&e->lock);
    e->stop = true;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
    if (e->reaper_started)
        pthread_join(e->reaper, NULL);
    if (e->live)
        hashmap_foreach(e->live, delete_one, e);
    hashmap_free(e->live, free_value);
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

/* "vmsnapfs-snap-HASH-NAME" or "vmsnapfs-vm-HASH-NAME", at most 63 */
static char *
export_name(const char *key, const char *kind, const char *name)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *) key; *p; p++)
        h = (h ^ *p) * 16777619u;
    char *s = NULL;
    if (asprintf(&s, "vmsnapfs-%s-%08x-%.40s", strcmp(kind, "VirtualMachine") == 0 ? "vm" : "snap",
                 h, name) < 0)
        return NULL;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '-' || s[n - 1] == '.'))
        s[--n] = '\0';                  /* a name ends with a letter or digit */
    return s;
}

static struct ex *
acquire(struct kube_exports *e, const char *ns, const char *kind, const char *name)
{
    _cleanup_free_ char *key = NULL;
    if (asprintf(&key, "%s/%s/%s", ns, kind, name) < 0)
        return NULL;
    LOCK_FOR_SCOPE(&e->lock);
    struct ex *x = hashmap_get(e->live, key);
    if (!x) {
        x = calloc(1, sizeof *x);
        if (!x)
            return NULL;
        pthread_mutex_init(&x->lock, NULL);
        x->e = e;
        x->key = TAKE_PTR(key);
        x->ns = strdup(ns);
        x->name = export_name(x->key, kind, name);
        if (!x->ns || !x->name || hashmap_put(e->live, x->key, x, NULL) < 0) {
            ex_free(x);
            return NULL;
        }
    }
    x->refs++;
    return x;
}

static void
release(void *opaque)
{
    struct ex *x = opaque;
    struct kube_exports *e = x->e;

    LOCK_FOR_SCOPE(&e->lock);
    if (--x->refs == 0)
        x->idle_since = now_monotonic_ns();
}

/* Why the export is not Ready (its Ready condition), for a refusal. */
static void
not_ready_reason(struct json_object *o, char *why, size_t size)
{
    struct json_object *c = kube_condition(o, "Ready");
    const char *reason = kube_get_str(c, "reason", (char *) NULL);
    const char *msg = kube_get_str(c, "message", (char *) NULL);

    if (!c) {
        snprintf(why, size, "the export did not become ready");
        return;
    }
    snprintf(why, size, "the export is %s: %s%s%s",
             kube_get_str(o, "status", "phase", (char *) NULL) ?: "not ready",
             reason ? reason : "", msg && *msg ? ": " : "", msg ? msg : "");
}

static int
create(struct kube_exports *e, struct ex *x, const char *kind, const char *name, char *why,
       size_t size)
{
    _cleanup_free_ char *path = export_path(e, x->ns, NULL), *body = NULL;
    struct kube_response resp;
    const char *group = strcmp(kind, "VirtualMachine") == 0 ? "kubevirt.io"
                                                            : "snapshot.kubevirt.io";
    int r;

    if (!path || asprintf(&body, "{\"apiVersion\":\"export.kubevirt.io/%s\",\"kind\":"
                                 "\"VirtualMachineExport\",\"metadata\":{\"name\":\"%s\","
                                 "\"labels\":{\"" KUBE_MADE_BY_LABEL "\":\"vmsnapfs\"},"
                                 "\"annotations\":{\"" KUBE_OWNER_ANNOTATION "\":\"%s\"}},"
                                 "\"spec\":{\"source\":{\"apiGroup\":\"%s\",\"kind\":\"%s\","
                                 "\"name\":\"%s\"},\"ttlDuration\":\"" TTL "\"}}",
                          e->version, x->name, e->owner, group, kind, name) < 0)
        return -ENOMEM;
    r = kube_request(e->c, "POST", path, body, NULL, REQUEST_NS, &resp, why, size);
    kube_response_clear(&resp);
    return r == -EEXIST ? 0 : r;      /* ours from before (a reopen, a restart) */
}

/* Waits until the export is Ready; takes its token, certificate, links. */
static int
wait_ready(struct kube_exports *e, struct ex *x, char *why, size_t size)
{
    _cleanup_free_ char *path = export_path(e, x->ns, x->name);
    uint64_t end = now_monotonic_ns() + e->wait_ns;
    struct json_object *o = NULL;
    int r;

    if (!path)
        return -ENOMEM;
    for (;;) {
        struct kube_response resp;
        json_object_put(o);
        r = kube_request(e->c, "GET", path, NULL, NULL, REQUEST_NS, &resp, why, size);
        o = r >= 0 ? json_tokener_parse(resp.body ? resp.body : "") : NULL;
        kube_response_clear(&resp);
        if (r < 0)
            return r;
        const char *phase = kube_get_str(o, "status", "phase", (char *) NULL);
        if (phase && strcmp(phase, "Ready") == 0)
            break;
        const char *reason = kube_get_str(kube_condition(o, "Ready"), "reason", (char *) NULL);
        bool skipped = phase && strcmp(phase, "Skipped") == 0;
        bool in_use = reason && strcmp(reason, "InUse") == 0;
        if (skipped || in_use || now_monotonic_ns() >= end) {
            not_ready_reason(o, why, size);
            json_object_put(o);
            return skipped ? -EIO : in_use ? -EBUSY : -ETIMEDOUT;
        }
        sleep_ns(POLL_NS);
    }

    /* the link for where this daemon runs */
    const char *which = e->internal ? "internal" : "external";
    struct json_object *link = kube_get(o, "status", "links", which, (char *) NULL);
    const char *cert = kube_get_str(link, "cert", (char *) NULL);
    struct json_object *vols = kube_get(link, "volumes", (char *) NULL);
    const char *secret = kube_get_str(o, "status", "tokenSecretRef", (char *) NULL);
    _cleanup_free_ char *ref = secret ? strdup(secret) : NULL;   /* o goes below */
    if (!vols) {
        json_object_put(o);
        return snprintf(why, size, "the export has no %s link%s", which,
                        e->internal ? "" : ": is an Ingress or Route set for virt-exportproxy? "
                                           "(in the cluster, mount kubevirt://in-cluster)"),
               -EIO;
    }
    x->cert = cert ? strdup(cert) : NULL;
    x->volumes = json_object_get(vols);
    json_object_put(o);
    if (!ref)
        return snprintf(why, size, "the export names no token Secret"), -EIO;

    /* the token: read, never shown */
    _cleanup_free_ char *spath = NULL;
    struct kube_response resp;
    if (asprintf(&spath, "/api/v1/namespaces/%s/secrets/%s", x->ns, ref) < 0)
        return -ENOMEM;
    r = kube_request(e->c, "GET", spath, NULL, NULL, REQUEST_NS, &resp, why, size);
    struct json_object *sec = r >= 0 ? json_tokener_parse(resp.body ? resp.body : "") : NULL;
    if (resp.body)
        explicit_bzero(resp.body, resp.len);
    kube_response_clear(&resp);
    const char *b64 = kube_get_str(sec, "data", "token", (char *) NULL);
    if (r >= 0 && (!b64 || kube_base64_text(b64, &x->token) < 0))
        r = (snprintf(why, size, "the export's token Secret '%s' holds no token", ref), -EIO);
    if (b64)
        explicit_bzero((char *) b64, strlen(b64));
    json_object_put(sec);
    if (r >= 0)
        x->ready = true;
    return r;
}

static const char *
volume_url(struct ex *x, const char *volume)
{
    for (size_t i = 0; i < json_object_array_length(x->volumes); i++) {
        struct json_object *v = json_object_array_get_idx(x->volumes, i);
        if (strcmp(kube_get_str(v, "name", (char *) NULL) ?: "", volume) != 0)
            continue;
        struct json_object *formats = kube_get(v, "formats", (char *) NULL);
        for (size_t k = 0; formats && json_object_is_type(formats, json_type_array) &&
                           k < json_object_array_length(formats); k++) {
            struct json_object *f = json_object_array_get_idx(formats, k);
            if (strcmp(kube_get_str(f, "format", (char *) NULL) ?: "", "raw") == 0)
                return kube_get_str(f, "url", (char *) NULL);
        }
    }
    return NULL;
}

/* What a view holds: the export, and its opener's hook. */
struct hold {
    struct ex *x;
    bool (*unchanged)(void *);
    void (*on_close)(void *);   /* once the view is open */
    void *opaque;
};

static bool
held_unchanged(void *opaque)
{
    struct hold *h = opaque;
    return !h->unchanged || h->unchanged(h->opaque);
}

static void
unhold(void *opaque)
{
    struct hold *h = opaque;

    release(h->x);
    if (h->on_close)
        h->on_close(h->opaque);
    free(h);
}

int
kube_exports_usable(struct kube_exports *e, char *why, size_t size)
{
    if (!e || !e->version[0])
        return snprintf(why, size, "the cluster serves no export.kubevirt.io API (KubeVirt's "
                        "VMExport): disks cannot be read"), -EIO;
    return 0;
}

int
kube_exports_view(struct kube_exports *e, const char *ns, const char *kind, const char *name,
                  const char *volume, bool (*unchanged)(void *), void (*on_close)(void *),
                  void *opaque, struct volume_view **ret, char *why, size_t size)
{
    int r = kube_exports_usable(e, why, size);

    if (r < 0)
        return r;
    /* twice: an export that went away meanwhile (TTL, deleted) is made again */
    for (int attempt = 0; attempt < 2; attempt++) {
        struct ex *x = acquire(e, ns, kind, name);
        if (!x)
            return -ENOMEM;
        pthread_mutex_lock(&x->lock);
        if (!x->ready) {
            ex_clear(x);
            r = create(e, x, kind, name, why, size);
            if (r >= 0)
                r = wait_ready(e, x, why, size);
        }
        const char *url = r >= 0 ? volume_url(x, volume) : NULL;
        _cleanup_free_ char *url_copy = url ? strdup(url) : NULL;
        _cleanup_free_ char *cert = x->cert ? strdup(x->cert) : NULL;
        _cleanup_free_ char *token = x->token ? strdup(x->token) : NULL;
        if (r >= 0 && !url)
            r = (snprintf(why, size, "the export serves no raw disk '%s'", volume), -ENOENT);
        pthread_mutex_unlock(&x->lock);
        if (r < 0) {
            release(x);
            if (token)
                explicit_bzero(token, strlen(token));
            break;
        }
        /* the view holds the reference until it is closed */
        struct hold *hold = calloc(1, sizeof *hold);
        if (!hold) {
            release(x);
            return -ENOMEM;
        }
        *hold = (struct hold) { x, unchanged, NULL, opaque };   /* failed: the export only */
        r = kube_view_open(url_copy, cert, token, held_unchanged, unhold, hold, ret, why, size);
        if (token)
            explicit_bzero(token, strlen(token));
        if (r >= 0) {
            hold->on_close = on_close;
            return r;
        }
        if (r != -EIO && r != -EACCES)
            return r;
        pthread_mutex_lock(&x->lock);
        x->ready = false;               /* gone or changed: asked again */
        pthread_mutex_unlock(&x->lock);
    }
    return r;
}

int
kube_exports_drop(struct kube_exports *e, const char *ns, const char *kind, const char *name)
{
    _cleanup_free_ char *key = NULL, *xname = NULL;
    struct ex *x;

    if (!e->version[0])
        return 0;                       /* no export API: none was made */
    if (asprintf(&key, "%s/%s/%s", ns, kind, name) < 0)
        return -ENOMEM;
    {
        LOCK_FOR_SCOPE(&e->lock);
        x = hashmap_get(e->live, key);
        if (x && x->refs > 0)
            return -EBUSY;
        if (x)
            hashmap_remove(e->live, key);
    }
    /* by name even if not (or no longer) listed: the reaper may have
     * taken it and be deleting it now; the source goes after this
     * returns, so its export must have been asked to go first */
    xname = x ? NULL : export_name(key, kind, name);
    if (!x && !xname)
        return -ENOMEM;
    delete_export(e, ns, x ? x->name : xname);
    ex_free(x);
    return 0;
}

void *
kube_exports_companion(struct kube_exports *e, void *(*make)(void *), void *arg,
                       void (*end)(void *))
{
    LOCK_FOR_SCOPE(&e->lock);
    if (!e->companion && (e->companion = make(arg)))
        e->companion_end = end;
    return e->companion;
}

void
kube_exports_recover(struct kube_exports *e, const char *ns)
{
    _cleanup_free_ char *path = NULL;
    struct kube_response resp;
    char why[512];

    if (!e->version[0])
        return;
    if (asprintf(&path, "/apis/export.kubevirt.io/%s%s%s/virtualmachineexports?labelSelector="
                        KUBE_MADE_BY_LABEL "%%3Dvmsnapfs", e->version, ns ? "/namespaces/" : "",
                 ns ? ns : "") < 0)
        return;
    int r = kube_request(e->c, "GET", path, NULL, NULL, REQUEST_NS, &resp, why, sizeof why);
    struct json_object *list = r >= 0 ? json_tokener_parse(resp.body ? resp.body : "") : NULL;
    kube_response_clear(&resp);
    struct json_object *items = kube_get(list, "items", (char *) NULL);
    for (size_t i = 0; items && json_object_is_type(items, json_type_array) &&
                       i < json_object_array_length(items); i++) {
        struct json_object *o = json_object_array_get_idx(items, i);
        const char *xns = kube_get_str(o, "metadata", "namespace", (char *) NULL);
        const char *name = kube_get_str(o, "metadata", "name", (char *) NULL);
        if (xns && name && kube_owner_gone(e->owner, o)) {
            log_warning("'%s': export '%s' of a vmsnapfs that was killed: deleted", xns, name);
            delete_export(e, xns, name);
        }
    }
    json_object_put(list);
}
