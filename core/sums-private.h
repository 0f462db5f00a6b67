/* core/sums-private.h: what the sums' files share (sums.c: the entries
 * and the worker; sums-tap.c: a reader's view feeding them;
 * sums-record.c: the record kept with a snapshot). Not for anyone else. */
#pragma once
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>

#include "hashmap.h"
#include "model.h"
#include "sums.h"

/* a reader's data that arrives ahead of the hash (reads complete out of
 * order) is kept this far ahead, up to this much per file, until the
 * hash gets there; the worker reads what is still missing once the reader
 * is that far past it */
#define AHEAD_WINDOW (UINT64_C(16) << 20)
#define AHEAD_MAX ((size_t) 16 << 20)

struct ahead {
    uint64_t off;
    size_t len;
    struct ahead *next;     /* by offset */
    unsigned char data[];
};

struct sums_file {
    char *path;             /* "volumes/vda.img", "changes/vda.img" */
    char *vol;
    bool changes;
    uint64_t size;          /* once known (a view was open) */
    uint64_t expect;        /* before: the size the snapshot says (progress) */
    EVP_MD_CTX *ctx;        /* hashing: [0, pos) is in it */
    uint64_t pos;
    char hex[65];           /* "" until done */
    uint64_t reader_end;    /* how far a reader of the file got (taps) */
    uint64_t reader_ns;     /* and when it last read */
    struct ahead *ahead;    /* a reader's data past pos */
    size_t ahead_bytes;
};

struct waiter {
    void (*done)(void *opaque, int r, const char *text, size_t len);
    void *opaque;
    struct waiter *next;
};

struct entry {
    unsigned refs;          /* the map's, and the worker's while it works */
    char *key, *ns, *vm, *snap;
    time_t created;         /* the snapshot's: another of the same name is another */
    char *base;             /* the changes files' base */
    struct sums_file *files;
    size_t n_files;
    bool failed;
    unsigned attempts;      /* failed reads so far (sums.c: FAIL_TRIES) */
    char error[256];
    char *text;             /* once every file is done */
    bool stored;            /* kept by the backend */
    unsigned store_tries;
    uint64_t retry_at;      /* monotonic ns: not before (worker) */
    uint64_t settle_until;  /* after a mkdir: not before, unless wanted */
    bool queued;            /* after a mkdir: the worker's even if nobody asks */
    unsigned wanted;        /* waiters and readers */
    uint64_t seq;           /* order of first interest */
    bool running;           /* the worker hashes it now */
    bool gone;              /* out of the map */
    struct waiter *waiters;
};

struct sums {
    struct model *m;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct hashmap *entries;    /* "ns/vm/snap" -> struct entry */
    uint64_t seq;
    bool quit;
    pthread_t thread;
    bool started;
};

/* All below with s->lock held, except where said. */

/* The entry of a snapshot, in step with what the snapshot holds now, with
 * a reference: -ENOENT if there is no such snapshot (without the lock). */
int sums_entry_get(struct sums *s, const char *ns, const char *vm, const char *snap,
                   struct entry **ret);
void sums_entry_unref(struct entry *e);
struct sums_file *sums_file_of(struct entry *e, const char *path);
/* len bytes at off of file f: what of them continues the hash goes in;
 * whether e became done (its waiters then in *ret_done, to be told
 * without the lock: sums_tell_waiters()). */
bool sums_feed(struct entry *e, struct sums_file *f, const void *data, size_t len, uint64_t off,
               struct waiter **ret_done);
void sums_tell_waiters(struct waiter *w, int r, const char *text);
void sums_files_free(struct sums_file *f, size_t n);
/* The record of the files (JSON; allocated, NULL on OOM), pure. */
char *sums_record_render(const struct sums_file *files, size_t n, const char *base);
