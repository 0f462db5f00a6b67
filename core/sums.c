/* core/sums.c: see sums.h; the entries and the worker. */
#define LOG_MODULE "sums"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "change-map.h"
#include "cleanup.h"
#include "clock.h"
#include "log.h"
#include "sums-private.h"
#include "vm-ops.h"
#include "volume.h"

#define CHUNK (1u << 20)
/* a reader read the file this recently: the worker stays behind it (what
 * the reader fetched feeds the sums, or is in the page cache) */
#define FOLLOW_NS (UINT64_C(1000) * 1000000)
/* an operation ended the worker's view, or the backend could not keep
 * the sums: again after this */
#define RETRY_NS (UINT64_C(2000) * 1000000)
#define STORE_TRIES 10
/* reading a disk for its sums fails this often before they fail */
#define FAIL_TRIES 3
/* after a mkdir the snapshot settles first: the worker's qemu-img (at a
 * view's open) must not race what an admin does to the VM right after
 * (QEMU's block jobs take image locks that a concurrent qemu-img breaks) */
#define SETTLE_NS (UINT64_C(10) * 1000000000)
static __thread bool on_worker;

bool
sums_on_worker(void)
{
    return on_worker;
}

const char *
sums_state_to_string(enum sums_state st)
{
    static const char *const names[] = { "queued", "computing", "done", "failed" };
    return st < ELEMENTSOF(names) ? names[st] : "?";
}

/* ---- entries -------------------------------------------------------------- */

static void
ahead_drop(struct sums_file *f)
{
    while (f->ahead) {
        struct ahead *a = f->ahead;
        f->ahead = a->next;
        free(a);
    }
    f->ahead_bytes = 0;
}

void
sums_files_free(struct sums_file *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ahead_drop(&f[i]);
        free(f[i].path);
        free(f[i].vol);
        EVP_MD_CTX_free(f[i].ctx);
    }
    free(f);
}

void
sums_entry_unref(struct entry *e)
{
    if (!e || --e->refs > 0)
        return;
    sums_files_free(e->files, e->n_files);
    free(e->key);
    free(e->ns);
    free(e->vm);
    free(e->snap);
    free(e->base);
    free(e->text);
    free(e);
}

static char *
key_of(const char *ns, const char *vm, const char *snap)
{
    char *k = NULL;
    /* libvirt has no namespaces: "vm/snap" */
    return asprintf(&k, "%s%s%s/%s", ns ? ns : "", ns && *ns ? "/" : "", vm, snap) < 0 ? NULL
                                                                                      : k;
}

/* Waiters of e taken out (called with the lock), to be told after. */
static struct waiter *
take_waiters(struct entry *e)
{
    struct waiter *w = e->waiters;
    for (struct waiter *x = w; x; x = x->next)
        e->wanted--;
    e->waiters = NULL;
    return w;
}

void
sums_tell_waiters(struct waiter *w, int r, const char *text)
{
    while (w) {
        struct waiter *next = w->next;
        w->done(w->opaque, r, text, text ? strlen(text) : 0);
        free(w);
        w = next;
    }
}

static bool
all_done(const struct entry *e)
{
    for (size_t i = 0; i < e->n_files; i++)
        if (!e->files[i].hex[0])
            return false;
    return true;
}

/* Once every file is done: the text (with the lock). -ENOMEM. */
static int
build_text(struct entry *e)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    if (e->text || !all_done(e))
        return 0;
    f = open_memstream(&buf, &len);
    if (!f)
        return -ENOMEM;
    for (size_t i = 0; i < e->n_files; i++)
        fprintf(f, "%s  %s\n", e->files[i].hex, e->files[i].path);
    if (fclose(f) != 0) {
        free(buf);
        return -ENOMEM;
    }
    e->text = buf;
    return 0;
}

/* ---- what a snapshot holds now ------------------------------------------- */

/* The files of snapshot snap now, in the order of SHA256SUMS, and the
 * stored record and creation time: -ENOENT if there is no such snapshot. */
struct layout {
    struct sums_file *files;
    size_t n_files;
    char *base;
    char *record;
    time_t created;
};

static void
layout_clear(struct layout *l)
{
    sums_files_free(l->files, l->n_files);
    free(l->base);
    free(l->record);
    memset(l, 0, sizeof *l);
}

static int
add_file(struct layout *l, const char *vol, uint64_t expect, bool changes)
{
    struct sums_file *nf = realloc(l->files, (l->n_files + 1) * sizeof *nf);
    if (!nf)
        return -ENOMEM;
    l->files = nf;
    struct sums_file *f = &nf[l->n_files];
    memset(f, 0, sizeof *f);
    f->changes = changes;
    f->expect = expect;
    f->vol = strdup(vol);
    if (asprintf(&f->path, "%s/%s.img", changes ? "changes" : "volumes", vol) < 0)
        f->path = NULL;
    l->n_files++;
    return f->vol && f->path ? 0 : -ENOMEM;
}

static int
layout_of(struct model *m, const char *ns, const char *vm, const char *snap,
          struct layout *ret)
{
    struct model_snapshots *list = NULL;
    struct layout l = { 0 };
    int r = model_snapshots_get(m, ns, vm, &list);

    if (r < 0)
        return r;
    const struct snapshot_info *si = model_snapshot_find(list, snap);
    if (!si || si->phase != SNAPSHOT_SUCCEEDED) {
        model_snapshots_unref(list);
        return -ENOENT;
    }
    l.created = si->created;
    if (si->sums && !(l.record = strdup(si->sums)))
        r = -ENOMEM;
    for (int pass = 0; r >= 0 && pass < 2; pass++) {
        if (pass == 1) {
            int b = model_changes_base(m, ns, vm, snap, &l.base, NULL);
            if (b < 0)
                break;      /* no changes/ (or no word of it: none shown) */
        }
        for (size_t i = 0; r >= 0 && i < si->n_volumes; i++)
            if (!(si->volumes[i].flags & VOLUME_CDROM))
                r = add_file(&l, si->volumes[i].name, si->volumes[i].size, pass == 1);
    }
    model_snapshots_unref(list);
    if (r < 0) {
        layout_clear(&l);
        return r;
    }
    *ret = l;
    return 0;
}

static bool
same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Makes e show layout l (with the lock): a file that is the same keeps its
 * state; the rest starts again, from the record where it holds them. */
static void
entry_sync(struct entry *e, struct layout *l)
{
    bool same = e->files && e->created == l->created && same_str(e->base, l->base) &&
                e->n_files == l->n_files;
    for (size_t i = 0; same && i < l->n_files; i++)
        same = strcmp(e->files[i].path, l->files[i].path) == 0;
    if (same)
        return;
    if (e->created != l->created) {     /* another snapshot of that name */
        e->failed = false;
        e->stored = false;
        e->store_tries = 0;
    }
    /* keep what is done or under way of files still there */
    for (size_t i = 0; i < l->n_files; i++) {
        struct sums_file *nf = &l->files[i];
        for (size_t j = 0; e->created == l->created && j < e->n_files; j++) {
            struct sums_file *of = &e->files[j];
            if (strcmp(of->path, nf->path) != 0 || (nf->changes && !same_str(e->base, l->base)))
                continue;
            nf->size = of->size;
            nf->ctx = TAKE_PTR(of->ctx);
            nf->pos = of->pos;
            nf->ahead = TAKE_PTR(of->ahead);
            nf->ahead_bytes = of->ahead_bytes;
            of->ahead_bytes = 0;
            memcpy(nf->hex, of->hex, sizeof nf->hex);
        }
        if (!nf->hex[0] && sums_record_parse(l->record, nf->vol, nf->changes, l->base,
                                             nf->hex) == 0) {
            EVP_MD_CTX_free(nf->ctx);
            nf->ctx = NULL;
        }
    }
    bool from_record = true;
    for (size_t i = 0; i < l->n_files; i++)
        if (!l->files[i].hex[0])
            from_record = false;
    sums_files_free(e->files, e->n_files);
    e->files = TAKE_PTR(l->files);
    e->n_files = l->n_files;
    l->n_files = 0;
    free(e->base);
    e->base = TAKE_PTR(l->base);
    e->created = l->created;
    free(e->text);
    e->text = NULL;
    if (from_record && l->record && e->n_files) {
        /* all of it as kept: nothing to hash, nothing to write */
        char *rec = sums_record_render(e->files, e->n_files, e->base);
        e->stored = rec && strcmp(rec, l->record) == 0;
        free(rec);
    } else {
        e->stored = false;
    }
    build_text(e);
}

/* The entry of a snapshot, in step with what the snapshot holds now, with
 * a reference: -ENOENT if there is no such snapshot. */
int
sums_entry_get(struct sums *s, const char *ns, const char *vm, const char *snap,
          struct entry **ret)
{
    _cleanup_free_ char *key = key_of(ns, vm, snap);
    struct layout l = { 0 };
    int r;

    if (!key)
        return -ENOMEM;
    r = layout_of(s->m, ns, vm, snap, &l);
    pthread_mutex_lock(&s->lock);
    struct entry *e = hashmap_get(s->entries, key);
    if (r < 0) {
        struct waiter *w = NULL;
        if (r == -ENOENT && e && !e->running) {
            hashmap_remove(s->entries, key);
            e->gone = true;
            w = take_waiters(e);
            sums_entry_unref(e);
        }
        pthread_mutex_unlock(&s->lock);
        sums_tell_waiters(w, -ENOENT, NULL);
        return r;
    }
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e || !(e->key = strdup(key)) || !(e->ns = strdup(ns ? ns : "")) ||
            !(e->vm = strdup(vm)) || !(e->snap = strdup(snap)) ||
            hashmap_put(s->entries, key, e, NULL) < 0) {
            if (e)
                e->refs = 1;
            sums_entry_unref(e);
            pthread_mutex_unlock(&s->lock);
            layout_clear(&l);
            return -ENOMEM;
        }
        e->refs = 1;
        e->seq = ++s->seq;
        e->created = l.created;
    }
    entry_sync(e, &l);
    e->refs++;
    pthread_mutex_unlock(&s->lock);
    layout_clear(&l);
    *ret = e;
    return 0;
}

/* ---- hashing -------------------------------------------------------------- */

struct sums_file *
sums_file_of(struct entry *e, const char *path)
{
    for (size_t i = 0; i < e->n_files; i++)
        if (strcmp(e->files[i].path, path) == 0)
            return &e->files[i];
    return NULL;
}

/* len bytes at off of file f (with the lock): what of them continues the
 * hash goes in; the file is done at its end. Returns whether e became
 * done (its waiters then in *ret_done). */
bool
sums_feed(struct entry *e, struct sums_file *f, const void *data, size_t len, uint64_t off,
     struct waiter **ret_done)
{
    if (f->hex[0] || !f->size)
        return false;
    if (!f->ctx) {
        if (off > 0)
            return false;
        f->ctx = EVP_MD_CTX_new();
        if (!f->ctx || EVP_DigestInit_ex(f->ctx, EVP_sha256(), NULL) != 1) {
            EVP_MD_CTX_free(f->ctx);
            f->ctx = NULL;
            return false;
        }
        f->pos = 0;
    }
    if (off > f->pos || off + len <= f->pos)
        return false;
    size_t skip = (size_t) (f->pos - off);
    if (off + len > f->size)
        len = (size_t) (f->size - off);
    if (EVP_DigestUpdate(f->ctx, (const char *) data + skip, len - skip) != 1)
        return false;
    f->pos = off + len;
    /* what a reader got ahead of this: on with it where it lines up */
    while (f->ahead && f->ahead->off <= f->pos) {
        struct ahead *a = f->ahead;
        f->ahead = a->next;
        f->ahead_bytes -= a->len;
        if (a->off + a->len > f->pos) {
            size_t from = (size_t) (f->pos - a->off);
            size_t n = a->len - from;
            if (f->pos + n > f->size)
                n = (size_t) (f->size - f->pos);
            if (EVP_DigestUpdate(f->ctx, a->data + from, n) != 1) {
                free(a);
                return false;
            }
            f->pos += n;
        }
        free(a);
    }
    if (f->pos < f->size)
        return false;
    ahead_drop(f);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_DigestFinal_ex(f->ctx, md, &n) != 1 || n != 32)
        return false;
    for (unsigned i = 0; i < n; i++)
        sprintf(f->hex + 2 * i, "%02x", md[i]);
    EVP_MD_CTX_free(f->ctx);
    f->ctx = NULL;
    log_debug("'%s': %s hashed", e->key, f->path);
    if (build_text(e) < 0 || !e->text)
        return false;
    log_info("'%s': SHA256SUMS ready", e->key);
    *ret_done = take_waiters(e);
    return true;
}

static void
set_priority(bool idle)
{
    pid_t tid = (pid_t) syscall(SYS_gettid);
    /* IOPRIO_CLASS_IDLE (3) or BE (2), level 7 / 4, per thread */
    int prio = idle ? (3 << 13) | 7 : (2 << 13) | 4;
    (void) syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, tid, prio);
    (void) setpriority(PRIO_PROCESS, (id_t) tid, idle ? 19 : 0);
}

/* Is there an entry someone waits for, other than e? (with the lock) */
struct wanted_q {
    const struct entry *not;
    bool found;
};

static void
find_wanted(const char *key, void *value, void *opaque)
{
    const struct entry *e = value;
    struct wanted_q *q = opaque;
    (void) key;
    if (e != q->not && e->wanted && !e->text && !e->failed)
        q->found = true;
}

static bool
others_wanted(struct sums *s, const struct entry *e)
{
    struct wanted_q q = { e, false };
    hashmap_foreach(s->entries, find_wanted, &q);
    return q.found;
}

/* A failed attempt (with the lock): tried again a little later (the API
 * server or libvirtd restarting is no reason to give up), failed for good
 * after FAIL_TRIES; whether that is now. */
static bool
fail(struct entry *e, int r, const char *path, const char *why)
{
    snprintf(e->error, sizeof e->error, "reading %.100s: %.140s", path,
             why ? why : strerror(-r));
    if (++e->attempts < FAIL_TRIES) {
        log_info("'%s': SHA256SUMS: %s; trying again", e->key, e->error);
        e->retry_at = now_monotonic_ns() + RETRY_NS;
        return false;
    }
    e->failed = true;
    log_error("'%s': no SHA256SUMS: %s", e->key, e->error);
    return true;
}

/* Hashes file i of e from where it stands (the worker; without the lock):
 * 0 when it is done, -EAGAIN to come back to it, else -errno (failed). */
static int
hash_file(struct sums *s, struct entry *e, size_t i)
{
    struct volume_view *view = NULL;
    struct change_map *map = NULL;
    struct vm_view *vv;
    const char *reason = NULL;
    char path[300], vol[256], base[256] = "";
    bool changes;
    int r;

    {
        LOCK_FOR_SCOPE(&s->lock);
        struct sums_file *f = &e->files[i];
        snprintf(path, sizeof path, "%s", f->path);
        snprintf(vol, sizeof vol, "%s", f->vol);
        changes = f->changes;
        if (e->base)
            snprintf(base, sizeof base, "%s", e->base);
    }
    vm_view_background(true);
    if (changes)
        r = model_changes_open(s->m, e->ns, e->vm, e->snap, vol, &view, &map);
    else
        r = model_volume_open(s->m, e->ns, e->vm, e->snap, vol, &view);
    vv = vm_view_last_background();
    vm_view_background(false);
    if (r >= 0 && changes && (!map || !map->base || strcmp(map->base, base) != 0))
        r = -EAGAIN;        /* the base moved on: the entry follows at its next sync */
    change_map_free(map);
    if (r == -EBUSY || r == -EAGAIN) {
        if (view)
            volume_view_close(view);
        LOCK_FOR_SCOPE(&s->lock);
        e->retry_at = now_monotonic_ns() + RETRY_NS;   /* an operation runs */
        return -EAGAIN;
    }
    if (r < 0)
        return r;

    _cleanup_free_ char *buf = malloc(CHUNK);
    if (!buf) {
        volume_view_close(view);
        return -ENOMEM;
    }
    struct waiter *done = NULL;
    r = 0;
    for (;;) {
        uint64_t pos, size;
        bool follow;
        {
            LOCK_FOR_SCOPE(&s->lock);
            struct sums_file *f = sums_file_of(e, path);
            if (!f || e->gone || s->quit) {
                r = -EAGAIN;
                break;
            }
            if (!f->size)
                f->size = view->size;
            if (f->hex[0])
                break;
            if (vv && vm_view_cancelled(vv)) {
                e->retry_at = now_monotonic_ns() + RETRY_NS;
                r = -EAGAIN;
                break;
            }
            if (!e->wanted && others_wanted(s, e)) {
                r = -EAGAIN;    /* someone waits for another: that first */
                break;
            }
            if (!f->ctx && f->size) {
                f->ctx = EVP_MD_CTX_new();
                if (!f->ctx || EVP_DigestInit_ex(f->ctx, EVP_sha256(), NULL) != 1) {
                    r = -ENOMEM;
                    break;
                }
                f->pos = 0;
            }
            pos = f->pos;
            size = f->size;
            size_t want = size - pos < CHUNK ? (size_t) (size - pos) : CHUNK;
            /* behind an active reader, by the window: what it fetched
             * feeds the sums, or is in the page cache when this reads it */
            follow = f->reader_ns && now_monotonic_ns() - f->reader_ns < FOLLOW_NS &&
                     pos + want + AHEAD_WINDOW > f->reader_end;
        }
        if (follow) {
            usleep(20 * 1000);
            continue;
        }
        size_t n = size - pos < CHUNK ? (size_t) (size - pos) : CHUNK;
        r = volume_view_pread(view, buf, n, pos, &reason);
        LOCK_FOR_SCOPE(&s->lock);
        struct sums_file *f = sums_file_of(e, path);
        if (r < 0) {
            if (e->gone || (vv && vm_view_cancelled(vv)) || !fail(e, r, path, reason))
                r = -EAGAIN;
            break;
        }
        if (f && sums_feed(e, f, buf, n, pos, &done))
            break;
        if (f && f->hex[0])
            break;
    }
    volume_view_close(view);
    if (done) {
        const char *text;
        {
            LOCK_FOR_SCOPE(&s->lock);
            text = e->text;     /* stays while e does */
        }
        sums_tell_waiters(done, 0, text);
    }
    return r;
}

/* Keeps e's sums with the snapshot (the worker; without the lock). */
static void
store(struct sums *s, struct entry *e)
{
    _cleanup_free_ char *rec = NULL;
    {
        LOCK_FOR_SCOPE(&s->lock);
        rec = sums_record_render(e->files, e->n_files, e->base);
    }
    int r = rec ? model_snapshot_set_sums(s->m, e->ns, e->vm, e->snap, rec) : -ENOMEM;
    LOCK_FOR_SCOPE(&s->lock);
    if (r >= 0 || r == -ENOTSUP || r == -ENOENT || ++e->store_tries >= STORE_TRIES) {
        if (r < 0 && r != -ENOTSUP && r != -ENOENT)
            log_info("'%s': the sums stay with this mount only: %s", e->key, strerror(-r));
        e->stored = true;
    } else {
        e->retry_at = now_monotonic_ns() + RETRY_NS;
    }
}

/* What the worker does next (with the lock): the entry, with a reference,
 * and whether it is to be stored rather than hashed. */
struct pick {
    struct entry *e;
    bool store;
    uint64_t now;
    uint64_t next_retry;
};

static void
consider(const char *key, void *value, void *opaque)
{
    struct entry *e = value;
    struct pick *p = opaque;
    (void) key;
    if (e->failed)
        return;
    uint64_t not_before = e->retry_at;
    if (!e->wanted && e->settle_until > not_before)
        not_before = e->settle_until;
    if (not_before > p->now) {
        if (!p->next_retry || not_before < p->next_retry)
            p->next_retry = not_before;
        return;
    }
    bool hash = !e->text && (e->wanted || e->queued);
    bool store = e->text && !e->stored;
    if (!hash && !store)
        return;
    /* first: someone waits; then the oldest */
    if (!p->e || (e->wanted && !p->e->wanted) ||
        (!!e->wanted == !!p->e->wanted && e->seq < p->e->seq)) {
        p->e = e;
        p->store = store;
    }
}

static void *
worker(void *opaque)
{
    struct sums *s = opaque;

    on_worker = true;
    pthread_mutex_lock(&s->lock);
    while (!s->quit) {
        struct pick p = { .now = now_monotonic_ns() };
        hashmap_foreach(s->entries, consider, &p);
        if (!p.e) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            uint64_t wait = p.next_retry ? p.next_retry - p.now : UINT64_C(1000000000);
            until.tv_sec += (time_t) (wait / 1000000000);
            until.tv_nsec += (long) (wait % 1000000000);
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&s->cond, &s->lock, &until);
            continue;
        }
        struct entry *e = p.e;
        e->refs++;
        e->running = true;
        bool urgent = e->wanted > 0;
        pthread_mutex_unlock(&s->lock);

        /* what the snapshot holds now (an rmdir may have moved its base) */
        struct layout l = { 0 };
        int lr = p.store ? 0 : layout_of(s->m, e->ns, e->vm, e->snap, &l);
        pthread_mutex_lock(&s->lock);
        if (lr == -ENOENT && !e->gone) {
            hashmap_remove(s->entries, e->key);
            e->gone = true;
            sums_entry_unref(e);     /* the map's */
        } else if (lr >= 0 && !p.store) {
            entry_sync(e, &l);
        } else if (lr < 0) {
            e->retry_at = now_monotonic_ns() + RETRY_NS;
        }
        bool skip = lr < 0 || e->gone;
        pthread_mutex_unlock(&s->lock);
        layout_clear(&l);

        if (skip) {
            ;
        } else if (p.store) {
            store(s, e);
        } else {
            set_priority(!urgent);
            /* the first file not done */
            size_t i;
            int r = 0;
            for (;;) {
                pthread_mutex_lock(&s->lock);
                for (i = 0; i < e->n_files && e->files[i].hex[0]; i++)
                    ;
                bool more = i < e->n_files && !e->gone && !s->quit;
                pthread_mutex_unlock(&s->lock);
                if (!more)
                    break;
                r = hash_file(s, e, i);
                if (r < 0)
                    break;
            }
            pthread_mutex_lock(&s->lock);
            if (r == -ENOENT)
                e->retry_at = now_monotonic_ns() + RETRY_NS;   /* gone? the next look says */
            else if (r < 0 && r != -EAGAIN && !e->failed)
                fail(e, r, i < e->n_files ? e->files[i].path : "?", NULL);
            struct waiter *w = e->failed ? take_waiters(e) : NULL;
            pthread_mutex_unlock(&s->lock);
            sums_tell_waiters(w, -EIO, NULL);
        }

        pthread_mutex_lock(&s->lock);
        e->running = false;
        if (e->gone) {
            struct waiter *w = take_waiters(e);
            pthread_mutex_unlock(&s->lock);
            sums_tell_waiters(w, -ENOENT, NULL);
            pthread_mutex_lock(&s->lock);
        }
        sums_entry_unref(e);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the interface -------------------------------------------------------- */

struct sums *
sums_new(struct model *m)
{
    struct sums *s = calloc(1, sizeof *s);

    if (!s)
        return NULL;
    s->m = m;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    s->entries = hashmap_new();
    if (!s->entries || pthread_create(&s->thread, NULL, worker, s) != 0) {
        sums_free(s);
        return NULL;
    }
    s->started = true;
    return s;
}

static void
drop_entry(void *value)
{
    struct entry *e = value;
    e->gone = true;
    sums_tell_waiters(take_waiters(e), -ESHUTDOWN, NULL);
    sums_entry_unref(e);
}

void
sums_free(struct sums *s)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->lock);
        s->quit = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
    }
    hashmap_free(s->entries, drop_entry);  /* the worker is gone: no lock needed */
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void
sums_snapshot_made(struct sums *s, const char *ns, const char *vm, const char *snap)
{
    struct entry *e = NULL;

    if (!s || sums_entry_get(s, ns, vm, snap, &e) < 0)
        return;
    LOCK_FOR_SCOPE(&s->lock);
    e->queued = true;
    e->settle_until = now_monotonic_ns() + SETTLE_NS;   /* unless someone asks */
    pthread_cond_broadcast(&s->cond);
    sums_entry_unref(e);
}

void
sums_snapshot_gone(struct sums *s, const char *ns, const char *vm, const char *snap)
{
    _cleanup_free_ char *key = s ? key_of(ns, vm, snap) : NULL;
    struct waiter *w = NULL;

    if (!key)
        return;
    {
        LOCK_FOR_SCOPE(&s->lock);
        struct entry *e = hashmap_remove(s->entries, key);
        if (!e)
            return;
        e->gone = true;
        if (!e->running)
            w = take_waiters(e);
        sums_entry_unref(e);     /* the worker's reference keeps it while it runs */
    }
    sums_tell_waiters(w, -ENOENT, NULL);
}

int64_t
sums_size(struct sums *s, const char *ns, const char *vm, const char *snap)
{
    struct entry *e = NULL;
    int r = sums_entry_get(s, ns, vm, snap, &e);
    int64_t size = 0;

    if (r < 0)
        return r;
    LOCK_FOR_SCOPE(&s->lock);
    for (size_t i = 0; i < e->n_files; i++)
        size += 64 + 2 + (int64_t) strlen(e->files[i].path) + 1;
    sums_entry_unref(e);
    return size;
}

int
sums_wait(struct sums *s, const char *ns, const char *vm, const char *snap,
          void (*done)(void *opaque, int r, const char *text, size_t len), void *opaque)
{
    struct entry *e = NULL;
    int r = sums_entry_get(s, ns, vm, snap, &e);
    _cleanup_free_ char *text = NULL;

    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        done(opaque, r, NULL, 0);
        return 0;
    }
    {
        LOCK_FOR_SCOPE(&s->lock);
        if (e->text) {
            text = strdup(e->text);
            r = text ? 0 : -ENOMEM;
        } else {
            if (e->failed) {        /* asked again: another chance */
                e->failed = false;
                e->attempts = 0;
            }
            struct waiter *w = calloc(1, sizeof *w);
            if (!w) {
                sums_entry_unref(e);
                return -ENOMEM;
            }
            w->done = done;
            w->opaque = opaque;
            w->next = e->waiters;
            e->waiters = w;
            e->wanted++;
            pthread_cond_broadcast(&s->cond);
            sums_entry_unref(e);
            return 0;
        }
        sums_entry_unref(e);
    }
    if (r == -ENOMEM)
        return r;
    done(opaque, r, text, text ? strlen(text) : 0);
    return 0;
}

int
sums_status(struct sums *s, const char *ns, const char *vm, const char *snap,
            struct sums_status *ret)
{
    struct entry *e = NULL;
    int r = sums_entry_get(s, ns, vm, snap, &e);

    if (r < 0)
        return r;
    LOCK_FOR_SCOPE(&s->lock);
    memset(ret, 0, sizeof *ret);
    bool started = false;
    for (size_t i = 0; i < e->n_files; i++) {
        const struct sums_file *f = &e->files[i];
        uint64_t size = f->size ? f->size : f->expect;
        ret->total += size;
        ret->done += f->hex[0] ? size : f->ctx ? f->pos : 0;
        started |= f->hex[0] || f->ctx;
    }
    ret->stored = e->stored;
    if (e->text)
        ret->state = SUMS_STATE_DONE;
    else if (e->failed)
        ret->state = SUMS_STATE_FAILED;
    else if (e->running || started)
        ret->state = SUMS_STATE_COMPUTING;
    else
        ret->state = SUMS_STATE_QUEUED;
    snprintf(ret->error, sizeof ret->error, "%s", e->failed ? e->error : "");
    sums_entry_unref(e);
    return 0;
}

