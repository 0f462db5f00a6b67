/* core/libvirt/libvirt-freeze.c: see libvirt-freeze.h.
 *
 * Records: one file per freeze, "<uuid>.<pid>.<n>" in the state directory,
 * fsync'd before the freeze is asked for and flock'd by its owner until a
 * thaw has succeeded. A starting daemon thaws the guests of records whose
 * lock it can take (their owner is gone); others' it leaves alone.
 *
 * Thaws look the domain up anew each try (by UUID, on the backend's
 * current connection), so a libvirtd restart in between does not strand a
 * guest frozen.
 */
#define LOG_MODULE "freeze"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "libvirt-freeze.h"
#include "libvirt-private.h"
#include "log.h"
#include "state.h"

#define THAW_RETRY_NS (UINT64_C(300) * 1000000)
#define THAW_SYNC_NS (UINT64_C(5) * 1000000000)       /* then in the background */
#define THAW_GIVE_UP_NS (UINT64_C(3600) * 1000000000) /* the record stays */

struct freeze {
    struct lv *lv;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    virDomainPtr dom;       /* for the freeze call only */
    char uuid[VIR_UUID_STRING_BUFLEN];
    char *name;
    char *record;           /* path of the on-disk record, or NULL */
    int record_fd;          /* flock'd while the record is ours */
    bool done;              /* the freeze call returned */
    int result;             /* its return value */
    bool abandoned;         /* the caller left: a thread finishes up */
    void (*after)(void *);  /* then runs this (the VM's operation ends) */
    void *after_opaque;
    uint64_t frozen_ns;     /* when the freeze answered */
};

static pthread_mutex_t bg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bg_cond = PTHREAD_COND_INITIALIZER;
static unsigned bg_running;     /* background threads still at work */
static unsigned record_seq;

static const char *
record_dir(void)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/freeze", state_dir());
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

/* The record is written, locked and on disk before the freeze. */
static int
record_write(struct freeze *f)
{
    const char *dir = record_dir();
    char parent[512];
    _cleanup_free_ char *path = NULL;
    int fd, r = 0;

    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash)
        *slash = '\0';
    (void) mkdir(parent, 0711);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return log_error_errno(-errno, "cannot make '%s': %s", dir, strerror(errno));
    if (asprintf(&path, "%s/%s.%d.%u", dir, f->uuid, (int) getpid(),
                 __atomic_add_fetch(&record_seq, 1, __ATOMIC_RELAXED)) < 0)
        return -ENOMEM;
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return log_error_errno(-errno, "cannot write '%s': %s", path, strerror(errno));
    if (flock(fd, LOCK_EX) < 0 || dprintf(fd, "%s\n", f->name) < 0 || fsync(fd) < 0)
        r = -errno;
    if (r == 0)
        r = fsync_dir(dir);
    if (r < 0) {
        log_error_errno(r, "cannot write '%s': %s", path, strerror(-r));
        unlink(path);
        close(fd);
        return r;
    }
    f->record = TAKE_PTR(path);
    f->record_fd = fd;
    return 0;
}

static void
record_remove(const char *path, int fd)
{
    if (path && unlink(path) == 0)
        (void) fsync_dir(record_dir());
    if (fd >= 0)
        close(fd);
}

/* One thaw of the domain with this UUID, looked up anew: 0 if it is
 * thawed (or stopped, or gone: nothing is frozen then). */
static int
thaw_once(struct lv *lv, const char *uuid, const char **ret_why)
{
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(lv);
    static __thread char why[256];
    int r = -EIO;

    *ret_why = "no connection to libvirt";
    if (!c)
        return -EIO;
    virDomainPtr dom = virDomainLookupByUUIDString(c, uuid);
    if (!dom) {
        virResetLastError();
        return 0;
    }
    if (virDomainFSThaw(dom, NULL, 0, 0) >= 0) {
        r = 0;
    } else {
        snprintf(why, sizeof why, "%s", lv_last_message("unknown"));
        *ret_why = why;
        if (virDomainIsActive(dom) == 0)
            r = 0;
    }
    virResetLastError();
    virDomainFree(dom);
    return r;
}

/* Thaws until it works (the agent may be busy with a late freeze), the VM
 * stops, or until give_up_ns from now. */
static int
thaw_until(struct lv *lv, const char *uuid, const char *name, uint64_t for_ns,
           bool quiet)
{
    uint64_t give_up = now_monotonic_ns() + for_ns;
    bool logged = quiet;

    for (;;) {
        const char *why = NULL;
        if (thaw_once(lv, uuid, &why) == 0)
            return 0;
        if (!logged) {
            log_warning("'%s': thaw failed (%s); retrying until it works", name, why);
            logged = true;
        }
        if (now_monotonic_ns() > give_up)
            return -ETIMEDOUT;
        sleep_ns(THAW_RETRY_NS);
    }
}

static void
freeze_free(struct freeze *f)
{
    if (!f)
        return;
    if (f->dom)
        virDomainFree(f->dom);
    if (f->record_fd >= 0)
        close(f->record_fd);
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

/* Thaw for as long as it takes, then drop the record, run after(). */
static void
finish(struct freeze *f, bool quiet)
{
    if (!f->record || thaw_until(f->lv, f->uuid, f->name, THAW_GIVE_UP_NS, quiet) == 0) {
        record_remove(f->record, f->record_fd);
        f->record_fd = -1;
    } else {
        log_error("'%s': could not thaw for an hour; the record stays for the "
                  "next start", f->name);
    }
    if (f->after)
        f->after(f->after_opaque);
    freeze_free(f);
}

static void *
finish_thread(void *opaque)
{
    finish(opaque, true);
    bg_leave();
    return NULL;
}

static void *
freeze_thread(void *opaque)
{
    struct freeze *f = opaque;
    int r = virDomainFSFreeze(f->dom, NULL, 0, 0);

    if (r < 0)
        log_warning("'%s': freeze failed: %s", f->name, lv_last_message("unknown"));
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
        log_warning("'%s': the freeze answered after the deadline; thawing", f->name);
        finish(f, false);
    }
    bg_leave();
    return NULL;
}

enum freeze_result
freeze_begin(struct lv *lv, virDomainPtr dom, struct deadline deadline,
             struct freeze **ret)
{
    const uint64_t deadline_ns = deadline.at_ns;
    struct freeze *f = calloc(1, sizeof *f);
    pthread_t t;

    *ret = f;
    if (!f)
        return FREEZE_FAILED;
    f->lv = lv;
    f->record_fd = -1;
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

    bg_enter();
    if (pthread_create(&t, NULL, freeze_thread, f) != 0) {
        bg_leave();
        record_remove(f->record, f->record_fd);
        f->record_fd = -1;
        free(f->record);
        f->record = NULL;
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
    pthread_t t;

    if (!f) {
        if (after)
            after(opaque);
        return 0;
    }
    pthread_mutex_lock(&f->lock);
    f->after = after;
    f->after_opaque = opaque;
    if (!f->done) {
        /* still waiting for the agent: the freeze thread finishes up */
        f->abandoned = true;
        pthread_mutex_unlock(&f->lock);
        return 0;
    }
    pthread_mutex_unlock(&f->lock);

    if (!f->record) {               /* nothing was asked of the guest */
        f->after = NULL;
        freeze_free(f);
        if (after)
            after(opaque);
        return 0;
    }
    /* a failed freeze may still have frozen some filesystems: thaw whenever
     * one was asked for; quickly here, and on in the background if the
     * agent does not answer (the VM stays busy until then) */
    bool frozen = f->result >= 0;
    if (thaw_until(f->lv, f->uuid, f->name, frozen ? THAW_SYNC_NS : 0, !frozen) == 0) {
        /* frozen from the moment the freeze answered until the thaw did */
        if (frozen)
            frozen_ms = (now_monotonic_ns() - f->frozen_ns) / 1000000;
        record_remove(f->record, f->record_fd);
        f->record_fd = -1;
        f->after = NULL;
        freeze_free(f);
        if (after)
            after(opaque);
        return frozen_ms;
    }
    bg_enter();
    if (pthread_create(&t, NULL, finish_thread, f) != 0) {
        bg_leave();
        finish(f, true);            /* here, then */
        return 0;
    }
    pthread_detach(t);
    return 0;
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
    struct lv *lv;
    char *path;
    int fd;                 /* the record, locked by us now */
    char uuid[VIR_UUID_STRING_BUFLEN];
};

static void *
recover_thread(void *opaque)
{
    struct recover *rc = opaque;

    log_warning("a previous vmsnapfs froze a VM (%s) and did not thaw it; thawing",
                rc->uuid);
    if (thaw_until(rc->lv, rc->uuid, rc->uuid, THAW_GIVE_UP_NS, true) == 0) {
        record_remove(rc->path, rc->fd);
        log_info("VM %s: thawed", rc->uuid);
    } else {
        close(rc->fd);
    }
    free(rc->path);
    free(rc);
    bg_leave();
    return NULL;
}

void
freeze_recover(struct lv *lv)
{
    DIR *d = opendir(record_dir());
    struct dirent *de;

    if (!d)
        return;
    while ((de = readdir(d))) {
        struct recover *rc;
        pthread_t t;
        size_t ulen = strcspn(de->d_name, ".");

        if (de->d_name[0] == '.' || ulen >= VIR_UUID_STRING_BUFLEN)
            continue;
        if (!(rc = calloc(1, sizeof *rc)))
            break;
        rc->lv = lv;
        memcpy(rc->uuid, de->d_name, ulen);
        if (asprintf(&rc->path, "%s/%s", record_dir(), de->d_name) < 0) {
            free(rc);
            break;
        }
        /* a record whose lock is held belongs to a live freezer */
        rc->fd = open(rc->path, O_RDWR | O_CLOEXEC);
        if (rc->fd < 0 || flock(rc->fd, LOCK_EX | LOCK_NB) < 0) {
            if (rc->fd >= 0)
                close(rc->fd);
            free(rc->path);
            free(rc);
            continue;
        }
        bg_enter();
        if (pthread_create(&t, NULL, recover_thread, rc) != 0) {
            bg_leave();
            close(rc->fd);
            free(rc->path);
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
    uint64_t start = now_monotonic_ns();
    unsigned left;

    /* a late freeze is thawed once it answers, however late that is: the
     * daemon does not end before (SPEC: not even SIGTERM leaves a guest
     * frozen); the unit's stop timeout bounds this, and the records
     * cover a daemon killed anyway */
    pthread_mutex_lock(&bg_lock);
    while ((left = bg_running) > 0) {
        uint64_t waited = now_monotonic_ns() - start;
        if (max_ns && waited >= max_ns)
            break;
        log_warning("waiting for %u late freeze(s) to answer, to thaw the guest(s) before "
                    "the daemon ends (%llu s so far)", left,
                    (unsigned long long) (waited / 1000000000));
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 10;
        pthread_cond_timedwait(&bg_cond, &bg_lock, &ts);
    }
    pthread_mutex_unlock(&bg_lock);
    if (left)
        log_warning("%u thaw(s) still pending at exit: the next start finishes "
                    "them (their records stay)", left);
    else if (now_monotonic_ns() - start > UINT64_C(1000000000))
        log_info("the late freezes answered and were thawed");
    return left ? -ETIMEDOUT : 0;
}
