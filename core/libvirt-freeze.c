/* core/libvirt-freeze.c: see libvirt-freeze.h. */
#define LOG_MODULE "freeze"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "libvirt-freeze.h"
#include "libvirt.h"
#include "log.h"
#include "model.h"

#define THAW_RETRY_NS (UINT64_C(300) * 1000000)
#define THAW_GIVE_UP_NS (UINT64_C(600) * 1000000000)

struct freeze {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    virDomainPtr dom;
    char uuid[VIR_UUID_STRING_BUFLEN];
    char *name;
    char *record;           /* path of the on-disk record */
    bool done;              /* the freeze call returned */
    int result;             /* its return value */
    bool abandoned;         /* the caller gave up: the thread cleans up */
    void (*after)(void *);  /* then runs this (the VM's operation ends) */
    void *after_opaque;
    uint64_t started_ns, frozen_ns;
};

static pthread_mutex_t bg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bg_cond = PTHREAD_COND_INITIALIZER;
static unsigned bg_running;     /* background threads still at work */

static const char *
record_dir(void)
{
    static char dir[512];
    const char *base = getenv("VMSNAPFS_STATE_DIR");
    snprintf(dir, sizeof dir, "%s/freeze", base && *base ? base : "/var/lib/vmsnapfs");
    return dir;
}

static int
fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* The record is written and on disk before the freeze is asked for. */
static int
record_write(struct freeze *f)
{
    const char *dir = record_dir();
    char parent[512];
    int fd, r = 0;

    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash)
        *slash = '\0';
    (void) mkdir(parent, 0711);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return log_error_errno(-errno, "cannot make '%s': %s", dir, strerror(errno));
    if (asprintf(&f->record, "%s/%s", dir, f->uuid) < 0) {
        f->record = NULL;
        return -ENOMEM;
    }
    fd = open(f->record, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return log_error_errno(-errno, "cannot write '%s': %s", f->record, strerror(errno));
    if (dprintf(fd, "%s\n", f->name) < 0 || fsync(fd) < 0)
        r = -errno;
    close(fd);
    if (r == 0)
        r = fsync_dir(dir);
    if (r < 0)
        log_error_errno(r, "cannot write '%s': %s", f->record, strerror(-r));
    return r;
}

static void
record_remove(const char *path)
{
    if (path && unlink(path) == 0)
        (void) fsync_dir(record_dir());
}

/* Thaws until it works (the agent may be busy with a late freeze), the
 * domain stops, or THAW_GIVE_UP_NS passes. 0 once thawed. */
static int
thaw_until_done(virDomainPtr dom, const char *name, bool quiet_first)
{
    uint64_t give_up = now_monotonic_ns() + THAW_GIVE_UP_NS;
    bool logged = quiet_first;

    for (;;) {
        if (virDomainFSThaw(dom, NULL, 0, 0) >= 0)
            return 0;
        int active = virDomainIsActive(dom);
        virErrorPtr e = virGetLastError();
        if (active == 0) {
            virResetLastError();
            return 0;           /* stopped: nothing is frozen any more */
        }
        if (!logged) {
            log_warning("'%s': thaw failed (%s); retrying until it works", name,
                        e && e->message ? e->message : "unknown");
            logged = true;
        }
        virResetLastError();
        if (now_monotonic_ns() > give_up)
            return log_error_errno(-EIO, "'%s': could not thaw for %llu s", name,
                                   (unsigned long long) (THAW_GIVE_UP_NS / 1000000000));
        struct timespec ts = { 0, (long) THAW_RETRY_NS };
        nanosleep(&ts, NULL);
    }
}

static void
freeze_free(struct freeze *f)
{
    if (!f)
        return;
    if (f->dom)
        virDomainFree(f->dom);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f->record);
    free(f->name);
    free(f);
}

static void
bg_enter(void)
{
    pthread_mutex_lock(&bg_lock);
    bg_running++;
    pthread_mutex_unlock(&bg_lock);
}

static void
bg_leave(void)
{
    pthread_mutex_lock(&bg_lock);
    bg_running--;
    pthread_cond_broadcast(&bg_cond);
    pthread_mutex_unlock(&bg_lock);
}

static void *
freeze_thread(void *opaque)
{
    struct freeze *f = opaque;
    int r = virDomainFSFreeze(f->dom, NULL, 0, 0);

    if (r < 0) {
        virErrorPtr e = virGetLastError();
        log_warning("'%s': freeze failed: %s", f->name,
                    e && e->message ? e->message : "unknown");
    }
    pthread_mutex_lock(&f->lock);
    f->done = true;
    f->result = r;
    f->frozen_ns = now_monotonic_ns();
    bool abandoned = f->abandoned;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);

    if (abandoned) {
        /* the caller is gone: a late freeze is undone here and now (a
         * failed one may still have frozen in the guest: thaw anyway) */
        log_warning("'%s': the freeze answered after the deadline; thawing",
                    f->name);
        if (thaw_until_done(f->dom, f->name, false) == 0) {
            record_remove(f->record);
            log_info("'%s': thawed after a late freeze", f->name);
        }
        if (f->after)
            f->after(f->after_opaque);
        freeze_free(f);
    }
    bg_leave();
    return NULL;
}

enum freeze_result
freeze_begin(struct lv *lv, virDomainPtr dom, uint64_t deadline_ns,
             struct freeze **ret)
{
    struct freeze *f = calloc(1, sizeof *f);
    pthread_t t;

    (void) lv;
    *ret = f;
    if (!f)
        return FREEZE_FAILED;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    virDomainRef(dom);
    f->dom = dom;
    f->name = strdup(virDomainGetName(dom));
    if (!f->name || virDomainGetUUIDString(dom, f->uuid) < 0 || record_write(f) < 0) {
        f->done = true;
        f->result = -1;
        return FREEZE_FAILED;       /* never freeze without a record */
    }

    f->started_ns = now_monotonic_ns();
    bg_enter();
    if (pthread_create(&t, NULL, freeze_thread, f) != 0) {
        bg_leave();
        f->done = true;
        f->result = -1;
        return FREEZE_FAILED;
    }
    pthread_detach(t);

    pthread_mutex_lock(&f->lock);
    while (!f->done) {
        if (!deadline_ns) {
            pthread_cond_wait(&f->cond, &f->lock);
            continue;
        }
        uint64_t now = now_monotonic_ns();
        if (now >= deadline_ns)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t wait = deadline_ns - now;
        ts.tv_sec += (time_t) (wait / 1000000000);
        ts.tv_nsec += (long) (wait % 1000000000);
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&f->cond, &f->lock, &ts);
    }
    enum freeze_result res = !f->done        ? FREEZE_TIMEOUT
                             : f->result < 0 ? FREEZE_FAILED
                                             : FREEZE_FROZEN;
    pthread_mutex_unlock(&f->lock);
    return res;
}

uint64_t
freeze_thaw(struct freeze *f)
{
    return freeze_thaw_then(f, NULL, NULL);
}

uint64_t
freeze_thaw_then(struct freeze *f, void (*after)(void *), void *opaque)
{
    uint64_t frozen_ms = 0;

    if (!f) {
        if (after)
            after(opaque);
        return 0;
    }
    pthread_mutex_lock(&f->lock);
    if (!f->done) {
        /* still waiting for the agent: the freeze thread finishes up */
        f->abandoned = true;
        f->after = after;
        f->after_opaque = opaque;
        pthread_mutex_unlock(&f->lock);
        return 0;
    }
    pthread_mutex_unlock(&f->lock);

    if (f->record) {
        /* a failed freeze may still have frozen some filesystems: thaw
         * whenever one was asked for */
        bool frozen = f->result >= 0;
        if (thaw_until_done(f->dom, f->name, !frozen) == 0)
            record_remove(f->record);
        /* frozen from the moment the freeze answered until the thaw did */
        if (frozen)
            frozen_ms = (now_monotonic_ns() - f->frozen_ns) / 1000000;
    }
    freeze_free(f);
    if (after)
        after(opaque);
    return frozen_ms;
}

void
freeze_thawp(struct freeze **f)
{
    if (*f) {
        (void) freeze_thaw(*f);
        *f = NULL;
    }
}

struct recover {
    virConnectPtr conn;     /* a reference of its own */
    char *path;
    char *uuid;
};

static void *
recover_thread(void *opaque)
{
    struct recover *rc = opaque;
    virDomainPtr dom = virDomainLookupByUUIDString(rc->conn, rc->uuid);

    if (!dom) {
        virResetLastError();
        record_remove(rc->path);    /* the domain is gone: nothing frozen */
    } else {
        const char *name = virDomainGetName(dom);
        log_warning("'%s': a previous vmsnapfs froze it and did not thaw it; "
                    "thawing", name);
        if (thaw_until_done(dom, name, true) == 0) {
            record_remove(rc->path);
            log_info("'%s': thawed", name);
        }
        virDomainFree(dom);
    }
    virConnectClose(rc->conn);
    free(rc->path);
    free(rc->uuid);
    free(rc);
    bg_leave();
    return NULL;
}

void
freeze_recover(struct lv *lv)
{
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(lv);
    DIR *d = c ? opendir(record_dir()) : NULL;
    struct dirent *de;

    if (!d)
        return;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        struct recover *rc = calloc(1, sizeof *rc);
        pthread_t t;
        if (!rc)
            break;
        rc->conn = c;
        virConnectRef(c);
        rc->uuid = strdup(de->d_name);
        if (!rc->uuid || asprintf(&rc->path, "%s/%s", record_dir(), de->d_name) < 0) {
            virConnectClose(c);
            free(rc->uuid);
            free(rc);
            break;
        }
        bg_enter();
        if (pthread_create(&t, NULL, recover_thread, rc) != 0) {
            bg_leave();
            virConnectClose(c);
            free(rc->path);
            free(rc->uuid);
            free(rc);
            continue;
        }
        pthread_detach(t);
    }
    closedir(d);
}

int
freeze_shutdown(uint64_t max_ns)
{
    struct timespec ts;
    int r = 0;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t) (max_ns / 1000000000);
    pthread_mutex_lock(&bg_lock);
    while (bg_running > 0 && r == 0)
        r = pthread_cond_timedwait(&bg_cond, &bg_lock, &ts);
    unsigned left = bg_running;
    pthread_mutex_unlock(&bg_lock);
    if (left)
        log_warning("%u thaw(s) still pending at exit: the next start finishes "
                    "them (their records stay)", left);
    return left ? -ETIMEDOUT : 0;
}
