/* core/kubevirt/kube-view.c: see kube-view.h. */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cleanup.h"
#include "kube-http.h"
#include "kube-view.h"
#include "log.h"
#include "volume.h"

#define POOL 8                  /* connections kept for reuse */
/* Readahead: the disk is read in CHUNK pieces. Past a sequential reader
 * (cp reads 128 KiB at a time: a request each would pay a round trip
 * each) one streamed GET runs from the next chunk to the end, as curl
 * fetches the file, filling up to AHEAD chunks ahead of the reader and
 * waiting for it (TCP holds the rest back). A reader that goes elsewhere
 * ends the stream; reads outside it are a Range request per chunk. */
#define CHUNK (UINT64_C(8) << 20)
#define AHEAD 3
#define SLOTS (AHEAD + 2)
#define NO_CHUNK UINT64_MAX
#define TRIES 3                 /* a connection that fails is tried again */
#define CONNECT_TIMEOUT_S 10L
#define STALL_S 60L             /* no byte for that long: the read fails */

enum slot_state { SLOT_EMPTY, SLOT_LOADING, SLOT_READY };

struct slot {
    enum slot_state state;
    uint64_t idx;               /* which chunk */
    unsigned pins;              /* readers copying out of it */
    uint64_t used;              /* last use (a tick): the oldest goes first */
    char *data;
    size_t len;
};

struct kview {
    struct volume_view v;       /* first */
    char *url;
    char *ca_pem;
    char *token_header;         /* "x-kubevirt-export-token: ...", wiped at close */
    bool (*unchanged)(void *);
    void (*on_close)(void *);
    void *opaque;

    pthread_mutex_t lock;
    CURL *pool[POOL];
    size_t n_pool;

    /* the chunks (under lock) and the stream */
    pthread_cond_t changed;     /* a slot was loaded, the reader moved, work came */
    struct slot slots[SLOTS];
    uint64_t tick;
    uint64_t last_idx;          /* the chunk the last read ended in */
    bool quit;
    pthread_t streamer;
    bool has_streamer;
    uint64_t stream_want;       /* a stream from this chunk is asked for */
    bool streaming;             /* a streamed GET runs */
    uint64_t stream_at;         /* the chunk it fills next */
    bool stream_stop;           /* the reader went elsewhere: end it */
};

/* What a request's body goes into. */
struct into {
    char *buf;
    size_t want, got;
    bool overflow;
};

static size_t
on_body(char *data, size_t one, size_t n, void *opaque)
{
    struct into *in = opaque;
    size_t len = one * n;

    if (!in->buf)
        return len;                     /* HEAD, or an error's body */
    if (len > in->want - in->got) {
        in->overflow = true;            /* more than asked: not what was asked */
        return 0;
    }
    memcpy(in->buf + in->got, data, len);
    in->got += len;
    return len;
}

/* The Content-Range of a 206: whether it starts where asked, of a disk of
 * the view's size (a server or proxy that answered another range must not
 * put its bytes in the wrong place). */
struct range_check {
    uint64_t start, size;
    bool ok;
};

static size_t
on_header(char *data, size_t one, size_t n, void *opaque)
{
    struct range_check *rc = opaque;
    size_t len = one * n;
    char line[256];
    unsigned long long a, b, total;

    if (len < sizeof line && len > 14 && strncasecmp(data, "content-range:", 14) == 0) {
        memcpy(line, data, len);
        line[len] = '\0';
        if (sscanf(line + 14, " bytes %llu-%llu/%llu", &a, &b, &total) == 3)
            rc->ok = a == rc->start && b >= a && (!rc->size || total == rc->size);
    }
    return len;
}

/* A view being closed ends the transfers of its readahead at once. */
static int
on_progress(void *opaque, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
            curl_off_t ulnow)
{
    struct kview *k = opaque;
    (void) dltotal, (void) dlnow, (void) ultotal, (void) ulnow;
    return __atomic_load_n(&k->quit, __ATOMIC_ACQUIRE) ? 1 : 0;
}

static CURL *
take(struct kview *k)
{
    CURL *h = NULL;
    {
        LOCK_FOR_SCOPE(&k->lock);
        if (k->n_pool)
            h = k->pool[--k->n_pool];
    }
    if (h)
        curl_easy_reset(h);
    return h ? h : curl_easy_init();
}

static void
give_back(struct kview *k, CURL *h)
{
    {
        LOCK_FOR_SCOPE(&k->lock);
        if (k->n_pool < POOL) {
            k->pool[k->n_pool++] = h;
            return;
        }
    }
    curl_easy_cleanup(h);
}

/* The options every request of the view has: URL, token, TLS verified
 * against the export's certificate, timeouts, where the body goes. */
static CURLcode
setup(struct kview *k, CURL *h, struct curl_slist *headers, char err[CURL_ERROR_SIZE],
      size_t (*fn)(char *, size_t, size_t, void *), void *opaque)
{
    err[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, k->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, STALL_S);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fn);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, opaque);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, k);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    if (!k->ca_pem)
        return CURLE_OK;
    struct curl_blob ca = { k->ca_pem, strlen(k->ca_pem), CURL_BLOB_COPY };
    return curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca);
}

/* One request: HEAD (buf NULL, count 0) or GET of count bytes at off.
 * 0, or -errno with *reason (static) and why (details, for the log). */
static int
request(struct kview *k, void *buf, size_t count, uint64_t off, uint64_t *ret_size,
        const char **reason, char *why, size_t size)
{
    char range[64], err[CURL_ERROR_SIZE];
    int r = -EIO;

    snprintf(range, sizeof range, "%" PRIu64 "-%" PRIu64, off, off + count - 1);
    for (int attempt = 0; attempt < TRIES; attempt++) {
        struct into in = { buf, count, 0, false };
        struct curl_slist *headers = curl_slist_append(NULL, k->token_header);
        CURL *h = take(k);
        long code = 0;
        curl_off_t length = -1;

        if (!h || !headers) {
            curl_slist_free_all(headers);
            if (h)
                curl_easy_cleanup(h);
            return -ENOMEM;
        }
        struct range_check cr = { off, k->v.size, false };
        if (buf)
            curl_easy_setopt(h, CURLOPT_RANGE, range);
        else
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        CURLcode tls = setup(k, h, headers, err, on_body, &in);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &cr);
        CURLcode rc = tls != CURLE_OK ? tls : curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
        give_back(k, h);
        for (struct curl_slist *l = headers; l; l = l->next)
            explicit_bzero(l->data, strlen(l->data));
        curl_slist_free_all(headers);

        if (rc == CURLE_ABORTED_BY_CALLBACK)
            return -ECANCELED;              /* the view is being closed */
        if (rc != CURLE_OK && !in.overflow) {
            snprintf(why, size, "%s", err[0] ? err : curl_easy_strerror(rc));
            *reason = "the export server did not answer";
            if (kube_transient_failure(rc, true))
                continue;
            return -EIO;
        }
        if (code == 401 || code == 403) {
            snprintf(why, size, "HTTP %ld: the export token was refused", code);
            *reason = "the export refused its token";
            return -EACCES;
        }
        if (code == 503 || code == 404) {
            snprintf(why, size, "HTTP %ld: the export is not ready or is gone", code);
            *reason = "the export stopped (was the VM started?)";
            return -EIO;
        }
        if (!buf) {
            if (code != 200 || length < 0) {
                snprintf(why, size, "HEAD: HTTP %ld, no size", code);
                *reason = "the export server gave no size";
                return -EIO;
            }
            *ret_size = (uint64_t) length;
            return 0;
        }
        /* 206 with exactly the range; a 200 only if the range was the file */
        if (in.overflow || in.got != count ||
            !((code == 206 && cr.ok) || (code == 200 && off == 0 && count == k->v.size))) {
            snprintf(why, size, "GET %s: HTTP %ld, %zu of %zu bytes", range, code, in.got, count);
            *reason = "the export server sent something else than the range asked";
            r = -EIO;
            if (code == 206 && in.got < count)
                continue;                   /* cut short: once more */
            return r;
        }
        return 0;
    }
    return r;
}

/* Fetches chunk idx into slot (LOADING, unpinned by others); 0 or -errno. */
static int
load(struct kview *k, struct slot *sl, uint64_t idx, const char **reason)
{
    uint64_t off = idx * CHUNK;
    size_t len = (size_t) (k->v.size - off < CHUNK ? k->v.size - off : CHUNK);
    char why[512] = "";
    int r = 0;

    if (!sl->data && !(sl->data = malloc(CHUNK)))
        r = -ENOMEM;
    if (r >= 0)
        r = request(k, sl->data, len, off, NULL, reason, why, sizeof why);
    if (r < 0 && r != -ECANCELED && why[0])
        log_error("reading %zu bytes at %" PRIu64 " of an export: %s", len, off, why);
    LOCK_FOR_SCOPE(&k->lock);
    sl->state = r < 0 ? SLOT_EMPTY : SLOT_READY;
    sl->len = r < 0 ? 0 : len;
    sl->used = ++k->tick;
    pthread_cond_broadcast(&k->changed);
    return r;
}

/* Under lock: the slot holding idx, or NULL. */
static struct slot *
find(struct kview *k, uint64_t idx)
{
    for (size_t i = 0; i < SLOTS; i++)
        if (k->slots[i].state != SLOT_EMPTY && k->slots[i].idx == idx)
            return &k->slots[i];
    return NULL;
}

/* Under lock: a slot to load into (empty, or the least recently used
 * ready one nobody copies from), marked LOADING idx; NULL if none. */
static struct slot *
claim(struct kview *k, uint64_t idx)
{
    struct slot *best = NULL;
    for (size_t i = 0; i < SLOTS; i++) {
        struct slot *sl = &k->slots[i];
        if (sl->state == SLOT_EMPTY) {
            best = sl;
            break;
        }
        if (sl->state == SLOT_READY && !sl->pins && (!best || sl->used < best->used))
            best = sl;
    }
    if (best) {
        best->state = SLOT_LOADING;
        best->idx = idx;
        best->len = 0;
    }
    return best;
}

/* ---- the stream ------------------------------------------------------------- */

static size_t
chunk_len(const struct kview *k, uint64_t idx)
{
    uint64_t off = idx * CHUNK;
    return (size_t) (k->v.size - off < CHUNK ? k->v.size - off : CHUNK);
}

struct stream {
    struct kview *k;
    CURL *h;
    struct range_check range;
    bool checked;               /* the answer is the 206 asked for */
    uint64_t idx;               /* the chunk being received */
    bool placed;                /* idx has a place: sl, or skipped (sl NULL) */
    struct slot *sl;            /* LOADING, the stream's */
    size_t filled, len;
};

/* Under lock: a place for chunk st->idx: a slot the stream fills, or none
 * if it is there already (its bytes are skipped); waits while the stream
 * would be more than AHEAD chunks ahead of the reader. false: end it. */
static bool
stream_place(struct stream *st)
{
    struct kview *k = st->k;

    for (;;) {
        uint64_t reader = k->last_idx == NO_CHUNK ? 0 : k->last_idx;
        if (k->quit || k->stream_stop || st->idx * CHUNK >= k->v.size)
            return false;
        if (st->idx > reader + AHEAD) {
            pthread_cond_wait(&k->changed, &k->lock);
            continue;
        }
        st->sl = find(k, st->idx) ? NULL : claim(k, st->idx);
        if (st->sl && !st->sl->data && !(st->sl->data = malloc(CHUNK))) {
            st->sl->state = SLOT_EMPTY;
            st->sl = NULL;              /* not ours any more */
            return false;
        }
        if (st->sl || find(k, st->idx))
            break;
        pthread_cond_wait(&k->changed, &k->lock);      /* every slot busy */
    }
    st->placed = true;
    st->filled = 0;
    st->len = chunk_len(k, st->idx);
    k->stream_at = st->idx;
    return true;
}

static size_t
on_stream(char *data, size_t one, size_t n, void *opaque)
{
    struct stream *st = opaque;
    struct kview *k = st->k;
    size_t len = one * n, done = 0;

    if (!st->checked) {
        long code = 0;
        curl_easy_getinfo(st->h, CURLINFO_RESPONSE_CODE, &code);
        if (code != 206 || !st->range.ok)
            return 0;                   /* not the range: the reads ask themselves */
        st->checked = true;
    }
    while (done < len) {
        if (!st->placed) {
            pthread_mutex_lock(&k->lock);
            bool ok = stream_place(st);
            pthread_mutex_unlock(&k->lock);
            if (!ok)
                return 0;               /* ends the transfer */
        }
        size_t m = len - done < st->len - st->filled ? len - done : st->len - st->filled;
        if (st->sl)
            memcpy(st->sl->data + st->filled, data + done, m);
        st->filled += m;
        done += m;
        if (st->filled == st->len) {
            pthread_mutex_lock(&k->lock);
            if (st->sl) {
                st->sl->state = SLOT_READY;
                st->sl->len = st->len;
                st->sl->used = ++k->tick;
            }
            st->sl = NULL;
            st->placed = false;
            k->stream_at = ++st->idx;
            pthread_cond_broadcast(&k->changed);
            pthread_mutex_unlock(&k->lock);
        }
    }
    return len;
}

/* One GET from chunk start to the end of the disk, into the slots. */
static void
stream_run(struct kview *k, uint64_t start)
{
    char range[64], err[CURL_ERROR_SIZE];
    struct curl_slist *headers = curl_slist_append(NULL, k->token_header);
    struct stream st = { .k = k, .h = take(k), .idx = start,
                         .range = { start * CHUNK, k->v.size, false } };

    snprintf(range, sizeof range, "%" PRIu64 "-", start * CHUNK);
    if (st.h && headers) {
        curl_easy_setopt(st.h, CURLOPT_RANGE, range);
        CURLcode rc = setup(k, st.h, headers, err, on_stream, &st);
        curl_easy_setopt(st.h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(st.h, CURLOPT_HEADERDATA, &st.range);
        if (rc == CURLE_OK)
            rc = curl_easy_perform(st.h);
        /* a stream ended early is no failure: the reads fetch what they need */
        if (rc != CURLE_OK && rc != CURLE_WRITE_ERROR && rc != CURLE_ABORTED_BY_CALLBACK)
            log_debug("a streamed read of an export ended: %s",
                      err[0] ? err : curl_easy_strerror(rc));
        give_back(k, st.h);
    } else if (st.h) {
        curl_easy_cleanup(st.h);
    }
    for (struct curl_slist *l = headers; l; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(headers);
    LOCK_FOR_SCOPE(&k->lock);
    if (st.sl)
        st.sl->state = SLOT_EMPTY;      /* half filled */
    pthread_cond_broadcast(&k->changed);
}

static void *
streamer(void *opaque)
{
    struct kview *k = opaque;

    pthread_mutex_lock(&k->lock);
    for (;;) {
        while (!k->quit && k->stream_want == NO_CHUNK)
            pthread_cond_wait(&k->changed, &k->lock);
        if (k->quit)
            break;
        uint64_t start = k->stream_want;
        k->stream_want = NO_CHUNK;
        k->streaming = true;
        k->stream_stop = false;
        k->stream_at = start;
        pthread_mutex_unlock(&k->lock);
        stream_run(k, start);
        pthread_mutex_lock(&k->lock);
        k->streaming = false;
        pthread_cond_broadcast(&k->changed);
    }
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

/* Under lock: a sequential reader at chunk idx gets a stream ahead of it;
 * a reader the stream no longer serves ends it. */
static void
follow(struct kview *k, uint64_t idx)
{
    bool sequential = idx == k->last_idx || idx == k->last_idx + 1;   /* NO_CHUNK + 1 == 0 */
    uint64_t chunks = (k->v.size + CHUNK - 1) / CHUNK;

    if (k->streaming && !k->stream_stop && (k->stream_at < idx || k->stream_at > idx + AHEAD + 1))
        k->stream_stop = true;
    if (!sequential) {
        k->stream_want = NO_CHUNK;      /* asked for where it no longer reads */
        return;
    }
    if (!k->has_streamer || (k->streaming && !k->stream_stop) || k->stream_want != NO_CHUNK)
        return;
    /* from the first chunk after idx not held already, if any is left */
    uint64_t from = idx + 1;
    while (from < chunks && from <= idx + AHEAD && find(k, from))
        from++;
    if (from >= chunks)
        return;
    k->stream_want = from;
    pthread_cond_broadcast(&k->changed);
}

/* Chunk idx, loaded (by the stream, or here), pinned: 0, or -errno. */
static int
hold(struct kview *k, uint64_t idx, struct slot **ret, const char **reason)
{
    struct slot *sl;
    int r = 0;

    LOCK_FOR_SCOPE(&k->lock);
    for (;;) {
        sl = find(k, idx);
        if (sl && sl->state == SLOT_LOADING) {
            pthread_cond_wait(&k->changed, &k->lock);
            continue;
        }
        if (sl)
            break;
        /* the stream's next chunk, and the stream may place it (it stays
         * AHEAD chunks within the reader): it comes */
        uint64_t reader = k->last_idx == NO_CHUNK ? 0 : k->last_idx;
        if (k->streaming && !k->stream_stop && idx == k->stream_at && idx <= reader + AHEAD) {
            pthread_cond_wait(&k->changed, &k->lock);
            continue;
        }
        sl = claim(k, idx);
        if (sl) {
            pthread_mutex_unlock(&k->lock);
            r = load(k, sl, idx, reason);
            pthread_mutex_lock(&k->lock);
            if (r < 0)
                return r;
            continue;               /* ready now (unless evicted: again) */
        }
        pthread_cond_wait(&k->changed, &k->lock);       /* every slot busy */
    }
    sl->pins++;
    sl->used = ++k->tick;
    follow(k, idx);
    k->last_idx = idx;
    *ret = sl;
    return 0;
}

static void
unpin(struct kview *k, struct slot *sl)
{
    LOCK_FOR_SCOPE(&k->lock);
    sl->pins--;
    pthread_cond_broadcast(&k->changed);
}

/* After the bytes were taken: what a started VM may have changed is not
 * served. */
static int
still_unchanged(struct kview *k, const char **reason)
{
    if (k->unchanged && !k->unchanged(k->opaque)) {
        *reason = "the VM was started: its disk is no longer the one opened";
        return -EIO;
    }
    return 0;
}

static int
kview_pread(struct volume_view *v, void *buf, size_t count, uint64_t off,
            const char **ret_reason)
{
    struct kview *k = (struct kview *) v;
    const char *reason = NULL;
    int r = 0;

    while (count > 0 && r >= 0) {
        uint64_t idx = off / CHUNK;
        struct slot *sl;

        r = hold(k, idx, &sl, &reason);
        if (r < 0)
            break;
        size_t at = (size_t) (off - idx * CHUNK);
        size_t n = sl->len > at ? sl->len - at : 0;
        if (n > count)
            n = count;
        memcpy(buf, sl->data + at, n);
        unpin(k, sl);
        if (n == 0) {
            r = -EIO;               /* past what the export holds */
            reason = "the export is shorter than it said";
            break;
        }
        buf = (char *) buf + n;
        off += n;
        count -= n;
    }
    if (r >= 0)
        r = still_unchanged(k, &reason);
    if (r < 0 && ret_reason)
        *ret_reason = reason;
    return r;
}

/* A read within one chunk is sent from the chunk (fs/ops.c: no copy). */
static int
kview_peek(struct volume_view *v, size_t count, uint64_t off, const void **ret_data,
           void **ret_pin, const char **ret_reason)
{
    struct kview *k = (struct kview *) v;
    uint64_t idx = off / CHUNK;
    size_t at = (size_t) (off - idx * CHUNK);
    struct slot *sl;
    const char *reason = NULL;

    if (count == 0 || at + count > CHUNK)
        return -EAGAIN;
    int r = hold(k, idx, &sl, &reason);
    if (r >= 0 && sl->len < at + count) {
        unpin(k, sl);
        r = -EIO;
        reason = "the export is shorter than it said";
    }
    if (r >= 0 && (r = still_unchanged(k, &reason)) < 0)
        unpin(k, sl);
    if (r < 0) {
        if (ret_reason)
            *ret_reason = reason;
        return r;
    }
    *ret_data = sl->data + at;
    *ret_pin = sl;
    return 0;
}

static void
kview_release(struct volume_view *v, void *pin)
{
    unpin((struct kview *) v, pin);
}

static int
kview_check(struct volume_view *v, const char **ret_reason)
{
    return still_unchanged((struct kview *) v, ret_reason);
}

static int
kview_seek(struct volume_view *v, uint64_t off, int whence, uint64_t *ret)
{
    if (off >= v->size)
        return -ENXIO;
    if (whence == SEEK_DATA)
        *ret = off;                 /* no map of holes: all of it is data */
    else if (whence == SEEK_HOLE)
        *ret = v->size;
    else
        return -EINVAL;
    return 0;
}

static void
kview_close(struct volume_view *v)
{
    struct kview *k = (struct kview *) v;

    pthread_mutex_lock(&k->lock);
    __atomic_store_n(&k->quit, true, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&k->changed);
    pthread_mutex_unlock(&k->lock);
    if (k->has_streamer)
        pthread_join(k->streamer, NULL);
    for (size_t i = 0; i < SLOTS; i++)
        free(k->slots[i].data);
    pthread_cond_destroy(&k->changed);
    for (size_t i = 0; i < k->n_pool; i++)
        curl_easy_cleanup(k->pool[i]);
    wipe_free(k->token_header);
    free(k->url);
    free(k->ca_pem);
    pthread_mutex_destroy(&k->lock);
    void (*on_close)(void *) = k->on_close;
    void *opaque = k->opaque;
    free(k);
    if (on_close)
        on_close(opaque);
}

static const struct volume_view_ops kview_ops = {
    .name = "export",
    .pread = kview_pread,
    .seek = kview_seek,
    .close = kview_close,
    .check = kview_check,
    .peek = kview_peek,
    .release = kview_release,
};

int
kube_view_open(const char *url, const char *ca_pem, const char *token,
               bool (*unchanged)(void *), void (*on_close)(void *), void *opaque,
               struct volume_view **ret, char *why, size_t size)
{
    struct kview *k = calloc(1, sizeof *k);
    const char *reason = NULL;
    uint64_t bytes = 0;
    int r;

    if (!k) {
        if (on_close)
            on_close(opaque);
        return -ENOMEM;
    }
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->changed, NULL);
    k->last_idx = NO_CHUNK;         /* the first read is "sequential" if at 0 */
    k->stream_want = NO_CHUNK;
    k->v.ops = &kview_ops;
    k->unchanged = unchanged;
    k->on_close = on_close;
    k->opaque = opaque;
    k->url = strdup(url);
    k->ca_pem = ca_pem && *ca_pem ? strdup(ca_pem) : NULL;
    if (asprintf(&k->token_header, "x-kubevirt-export-token: %s", token) < 0)
        k->token_header = NULL;
    r = k->url && k->token_header && (!ca_pem || !*ca_pem || k->ca_pem) ? 0 : -ENOMEM;
    if (r >= 0)
        r = request(k, NULL, 0, 0, &bytes, &reason, why, size);
    if (r < 0) {
        kview_close(&k->v);
        return r;
    }
    k->v.size = bytes;
    k->v.allocated = bytes;         /* not known to be sparse: say so */
    /* straight to the reader, past the page cache: one copy less per byte
     * (the data is in this view's chunks already) */
    k->v.uncached = true;
    /* without it: no readahead, still correct */
    k->has_streamer = pthread_create(&k->streamer, NULL, streamer, k) == 0;
    *ret = &k->v;
    return 0;
}
