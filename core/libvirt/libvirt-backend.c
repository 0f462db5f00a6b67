/* core/libvirt/libvirt-backend.c: the libvirt backend (QEMU/KVM hosts).
 *
 * Thread model: ops run on FUSE worker threads and share one virConnectPtr
 * (libvirt connections are thread-safe); they take a reference to it under
 * lv->lock, so a reconnect can swap it underneath. One thread of ours runs
 * libvirt's default event loop: domain events, the keepalive, the close
 * callback, and a 1 s timer that reconnects after libvirtd went away.
 * libvirt's own error printing is off: each failure is logged once, here.
 */
#define LOG_MODULE "libvirt"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "libvirt-freeze.h"
#include "libvirt-merge.h"
#include "libvirt-private.h"
#include "log.h"

static void
silent_error(void *opaque, virErrorPtr err)
{
    (void) opaque;
    (void) err;
}

/* ---- events ------------------------------------------------------------ */

static void
notify(struct lv *lv, virDomainPtr dom, unsigned change)
{
    const char *name = virDomainGetName(dom);

    log_debug("event for '%s' (change %#x)", name ? name : "?", change);
    if (name && lv->events.vm_changed)
        lv->events.vm_changed(lv->events.opaque, "", name, change);
}

static int
on_lifecycle(virConnectPtr c, virDomainPtr dom, int event, int detail,
             void *opaque)
{
    unsigned change = VM_CHANGE_STATE;

    (void) c;
    if (event == VIR_DOMAIN_EVENT_DEFINED) {
        change = detail == VIR_DOMAIN_EVENT_DEFINED_ADDED ||
                         detail == VIR_DOMAIN_EVENT_DEFINED_RENAMED
                     ? VM_CHANGE_EXISTENCE
                     : VM_CHANGE_DEFINITION;
    } else if (event == VIR_DOMAIN_EVENT_UNDEFINED) {
        change = VM_CHANGE_EXISTENCE;
    } else if (event == VIR_DOMAIN_EVENT_STARTED || event == VIR_DOMAIN_EVENT_STOPPED) {
        /* a transient domain comes and goes with these (the list is
         * fetched again; it shows meanwhile as it was) */
        change = VM_CHANGE_STATE | VM_CHANGE_LIST;
    }
    notify(opaque, dom, change);
    return 0;
}

static void
on_agent(virConnectPtr c, virDomainPtr dom, int state, int reason, void *opaque)
{
    (void) c;
    (void) state;
    (void) reason;
    notify(opaque, dom, VM_CHANGE_STATE);
}

/* device added or removed: the set of volumes may differ */
static void
on_device(virConnectPtr c, virDomainPtr dom, const char *alias, void *opaque)
{
    (void) c;
    (void) alias;
    notify(opaque, dom, VM_CHANGE_DEFINITION);
}

static void
on_metadata(virConnectPtr c, virDomainPtr dom, int type, const char *nsuri,
            void *opaque)
{
    (void) c;
    (void) type;
    (void) nsuri;
    notify(opaque, dom, VM_CHANGE_DEFINITION);
}

/* a block job ended (commit, copy pivot, backup): sources may differ */
static void
on_block_job(virConnectPtr c, virDomainPtr dom, const char *disk, int type,
             int status, void *opaque)
{
    (void) c;
    (void) disk;
    (void) type;
    (void) status;
    notify(opaque, dom, VM_CHANGE_DEFINITION);
}

static void
on_disk_change(virConnectPtr c, virDomainPtr dom, const char *old_src,
               const char *new_src, const char *alias, int reason, void *opaque)
{
    (void) c;
    (void) old_src;
    (void) new_src;
    (void) alias;
    (void) reason;
    notify(opaque, dom, VM_CHANGE_DEFINITION);
}

static void
on_tray(virConnectPtr c, virDomainPtr dom, const char *alias, int reason,
        void *opaque)
{
    (void) c;
    (void) alias;
    (void) reason;
    notify(opaque, dom, VM_CHANGE_DEFINITION);
}

static void on_close(virConnectPtr conn, int reason, void *opaque);

/* The domain events vmsnapfs listens to; ids are per connection. */
static const struct {
    int id;
    virConnectDomainEventGenericCallback cb;
} subscriptions[] = {
    { VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle) },
    { VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(on_agent) },
    { VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, VIR_DOMAIN_EVENT_CALLBACK(on_device) },
    { VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, VIR_DOMAIN_EVENT_CALLBACK(on_device) },
    { VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, VIR_DOMAIN_EVENT_CALLBACK(on_metadata) },
    { VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, VIR_DOMAIN_EVENT_CALLBACK(on_block_job) },
    { VIR_DOMAIN_EVENT_ID_DISK_CHANGE, VIR_DOMAIN_EVENT_CALLBACK(on_disk_change) },
    { VIR_DOMAIN_EVENT_ID_TRAY_CHANGE, VIR_DOMAIN_EVENT_CALLBACK(on_tray) },
};

_Static_assert(ELEMENTSOF(subscriptions) == ELEMENTSOF(((struct lv *) 0)->ids),
               "one id per subscription");

/* A connection and its subscriptions. Set up and torn down without
 * lv->lock held: libvirt takes locks of its own in these calls, and its
 * close callback runs under them (and then takes nothing of ours). */
static int
subscribe(struct lv *lv, virConnectPtr c, int *ids)
{
    int failed = 0;

    for (size_t i = 0; i < ELEMENTSOF(subscriptions); i++) {
        ids[i] = virConnectDomainEventRegisterAny(c, NULL, subscriptions[i].id,
                                                  subscriptions[i].cb, lv, NULL);
        failed += ids[i] < 0;
    }
    if (failed)
        log_warning("cannot subscribe to %d kind(s) of domain event of '%s': "
                    "such changes by other tools show only after %d s",
                    failed, lv->uri_shown, (int) (VM_CACHE_TTL_NS / 1000000000));
    /* notice a dead daemon within seconds; not every driver has these */
    (void) virConnectSetKeepAlive(c, 5, 3);
    (void) virConnectRegisterCloseCallback(c, on_close, lv, NULL);
    virResetLastError();
    return 0;
}

static void
unsubscribe_and_close(virConnectPtr c, const int *ids)
{
    for (size_t i = 0; i < ELEMENTSOF(subscriptions); i++)
        if (ids[i] >= 0)
            (void) virConnectDomainEventDeregisterAny(c, ids[i]);
    (void) virConnectUnregisterCloseCallback(c, on_close);
    virResetLastError();
    virConnectClose(c);
}

/* Takes the connection out (under the lock) and closes it (outside). */
static void
drop_conn(struct lv *lv)
{
    virConnectPtr c, q[LV_QUERY_CONNS];
    int ids[ELEMENTSOF(subscriptions)];

    {
        LOCK_FOR_SCOPE(&lv->lock);
        c = lv->conn;
        lv->conn = NULL;
        memcpy(ids, lv->ids, sizeof ids);
        memcpy(q, lv->qconns, sizeof q);
        memset(lv->qconns, 0, sizeof lv->qconns);
    }
    for (size_t i = 0; i < LV_QUERY_CONNS; i++)
        if (q[i])
            virConnectClose(q[i]);
    if (c)
        unsubscribe_and_close(c, ids);
}

/* A local daemon (no host in the URI: qemu:///system, test:///default):
 * more connections cost nothing and ask for no credentials. */
static bool
uri_local(const char *uri)
{
    const char *p = strstr(uri, "://");
    return p && p[3] == '/';
}

/* quiet: retrying after a loss, which is logged once already */
static int
connect_now(struct lv *lv, bool quiet)
{
    virConnectPtr c = virConnectOpenAuth(lv->uri, virConnectAuthPtrDefault, 0);
    int ids[ELEMENTSOF(subscriptions)];

    if (!c && quiet) {
        virResetLastError();
        return -EIO;
    }
    if (!c)
        return lv_errno("connect to", lv->uri_shown);
    subscribe(lv, c, ids);
    virConnectPtr q[LV_QUERY_CONNS] = { NULL };
    for (size_t i = 0; uri_local(lv->uri) && i < LV_QUERY_CONNS; i++) {
        q[i] = virConnectOpenAuth(lv->uri, virConnectAuthPtrDefault, 0);
        if (q[i])
            (void) virConnectSetKeepAlive(q[i], 5, 3);
        virResetLastError();    /* without it: the main connection serves */
    }

    LOCK_FOR_SCOPE(&lv->lock);
    memcpy(lv->qconns, q, sizeof q);
    lv->conn = c;
    memcpy(lv->ids, ids, sizeof ids);
    __atomic_store_n(&lv->dead, false, __ATOMIC_RELEASE);
    if (lv->lost_logged)
        log_info("connected to '%s' again", lv->uri_shown);
    lv->lost_logged = false;
    return 0;
}

/* Runs inside libvirt's code for this connection, under its locks: it
 * only marks the connection dead; the timer drops it. */
static void
on_close(virConnectPtr conn, int reason, void *opaque)
{
    struct lv *lv = opaque;

    (void) conn;
    log_error("connection to '%s' closed (reason %d); reconnecting", lv->uri_shown,
              reason);
    __atomic_store_n(&lv->dead, true, __ATOMIC_RELEASE);
    if (lv->events.reset)
        lv->events.reset(lv->events.opaque);
}

/* Every second: drop a dead connection, and reconnect if there is none. */
static void
on_timer(int timer, void *opaque)
{
    struct lv *lv = opaque;
    virConnectPtr c;

    (void) timer;
    if (lv->quit)
        return;
    {
        LOCK_FOR_SCOPE(&lv->lock);
        c = lv->conn;
        if (c)
            virConnectRef(c);
    }
    if (c && !__atomic_load_n(&lv->dead, __ATOMIC_ACQUIRE) &&
        virConnectIsAlive(c) == 0) {
        log_error("connection to '%s' is dead; reconnecting", lv->uri_shown);
        __atomic_store_n(&lv->dead, true, __ATOMIC_RELEASE);
    }
    if (c)
        virConnectClose(c);
    if (c && __atomic_load_n(&lv->dead, __ATOMIC_ACQUIRE)) {
        {
            LOCK_FOR_SCOPE(&lv->lock);
            lv->lost_logged = true;
        }
        drop_conn(lv);
        c = NULL;
    }
    if (!c && connect_now(lv, true) == 0) {
        if (lv->events.reset)
            lv->events.reset(lv->events.opaque);
        lv_recovery_kick(lv);   /* what the lost daemon left half-way */
    }
}

/* ---- recovery in the background ---------------------------------------- */

#define RECOVERY_RETRY_S 5

static int
recovery_pass(struct lv *lv)
{
    /* the records a killed daemon (or a lost libvirtd) can leave, by kind
     * (STATE/KIND/), in this order */
    static const struct {
        const char *kind;
        int (*record)(const char *path, void *pass);
    } kinds[] = {
        { "merge", lv_merge_recover_record },
        { "restore", lv_restore_recover_record },
        { "clone", lv_clone_recover_record },
        { "snapshot", lv_snapshot_recover_record },
    };
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(lv);
    struct lv_pass pass = { lv, c };
    int left = 0;

    if (!c)
        return 1;
    for (size_t i = 0; i < ELEMENTSOF(kinds); i++)
        left += restore_plan_each(kinds[i].kind, kinds[i].record, &pass);
    return left;
}

/* One pass when kicked, and every RECOVERY_RETRY_S while one left work:
 * the mount answers meanwhile (a VM being recovered is busy: EBUSY). */
static void *
recovery_thread(void *opaque)
{
    struct lv *lv = opaque;
    bool pending = false;

    pthread_mutex_lock(&lv->rec_lock);
    for (;;) {
        while (!lv->rec_kick && !lv->rec_quit) {
            if (!pending) {
                pthread_cond_wait(&lv->rec_cond, &lv->rec_lock);
                continue;
            }
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += RECOVERY_RETRY_S;
            if (pthread_cond_timedwait(&lv->rec_cond, &lv->rec_lock, &ts) == ETIMEDOUT)
                break;
        }
        if (lv->rec_quit)
            break;
        lv->rec_kick = false;
        pthread_mutex_unlock(&lv->rec_lock);
        pending = recovery_pass(lv) > 0;
        pthread_mutex_lock(&lv->rec_lock);
    }
    pthread_mutex_unlock(&lv->rec_lock);
    return NULL;
}

static int
recovery_start(struct lv *lv)
{
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&lv->rec_cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&lv->rec_thread, NULL, recovery_thread, lv) != 0)
        return -EAGAIN;
    lv->rec_started = true;
    lv_recovery_kick(lv);
    return 0;
}

static void
recovery_stop(struct lv *lv)
{
    if (!lv->rec_started)
        return;
    {
        LOCK_FOR_SCOPE(&lv->rec_lock);
        lv->rec_quit = true;
        pthread_cond_signal(&lv->rec_cond);
    }
    pthread_join(lv->rec_thread, NULL);
    lv->rec_started = false;
}

static void *
event_thread(void *opaque)
{
    struct lv *lv = opaque;

    while (!lv->quit)
        if (virEventRunDefaultImpl() < 0)
            break;
    return NULL;
}

static pthread_once_t event_once = PTHREAD_ONCE_INIT;
static int event_init_result;

static void
event_init(void)
{
    virSetErrorFunc(NULL, silent_error);
    event_init_result = virEventRegisterDefaultImpl();
}

/* ---- open / close ------------------------------------------------------ */

/* What a killed daemon left on running domains: one pass over them. */
static void
recover_running(struct lv *lv)
{
    _cleanup_(virConnectClosep) virConnectPtr c = lv_conn(lv);
    virDomainPtr *doms = NULL;
    int n = c ? virConnectListAllDomains(c, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE) : -1;

    for (int i = 0; i < n; i++) {
        lv_end_stale_job(doms[i]);
        virDomainFree(doms[i]);
    }
    free(doms);
    virResetLastError();
}

static void
lv_close(void *h)
{
    struct lv *lv = h;

    if (!lv)
        return;
    /* thaws still running in the background (a late freeze): waited for,
     * however long; were some left, lv stays allocated for those threads
     * (the process is ending) */
    recovery_stop(lv);
    bool pending = freeze_shutdown(0) < 0;     /* 0: as long as it takes */
    lv->quit = true;
    if (lv->timer >= 0)
        virEventUpdateTimeout(lv->timer, 0);   /* wake the loop */
    if (lv->thread_started)
        pthread_join(lv->thread, NULL);
    if (lv->timer >= 0)
        virEventRemoveTimeout(lv->timer);
    drop_conn(lv);
    if (pending)
        return;
    hashmap_free(lv->lives, NULL);      /* views end before the backend */
    vm_ops_free(lv->vmops);             /* ops end before the backend */
    pthread_mutex_destroy(&lv->live_lock);
    pthread_mutex_destroy(&lv->lock);
    free(lv->uri);
    free(lv->uri_shown);
    free(lv);
}

static int
lv_open(const char *source, const struct vmsnapfs_opts *o,
        const struct backend_events *events, void **ret_h)
{
    struct lv *lv;
    int r;

    pthread_once(&event_once, event_init);
    if (event_init_result < 0)
        return log_error_errno(-EIO, "cannot set up libvirt's event loop");

    lv = calloc(1, sizeof *lv);
    if (!lv)
        return -ENOMEM;
    pthread_mutex_init(&lv->lock, NULL);
    for (size_t i = 0; i < ELEMENTSOF(lv->ids); i++)
        lv->ids[i] = -1;
    lv->timer = -1;
    lv->deadline_ns = o ? o->failure_deadline_ns : 0;
    if (events)
        lv->events = *events;
    lv->uri = strdup(source);
    lv->uri_shown = uri_redact(source);     /* never log a password */
    lv->lives = hashmap_new();
    lv->vmops = vm_ops_new();
    pthread_mutex_init(&lv->live_lock, NULL);
    pthread_mutex_init(&lv->rec_lock, NULL);
    if (!lv->uri || !lv->uri_shown || !lv->lives || !lv->vmops) {
        lv_close(lv);
        return -ENOMEM;
    }

    r = connect_now(lv, false);
    if (r < 0) {
        lv_close(lv);
        return r;
    }
    recover_running(lv);
    freeze_recover(lv);         /* thaw what a killed daemon left frozen */
    layer_mine_private();       /* 0644 from an older version: 0600 */
    /* restores and clones a killed daemon left: in the background, so the
     * mount comes up at once (a VM being recovered answers EBUSY) */
    if (recovery_start(lv) < 0) {
        lv_close(lv);
        return log_error_errno(-EAGAIN, "cannot start the recovery thread");
    }
    lv->timer = virEventAddTimeout(1000, on_timer, lv, NULL);
    if (pthread_create(&lv->thread, NULL, event_thread, lv) != 0) {
        lv_close(lv);
        return log_error_errno(-EAGAIN, "cannot start the event thread");
    }
    lv->thread_started = true;
    *ret_h = lv;
    return 0;
}

const struct backend_ops backend_libvirt = {
    .name = "libvirt",
    .namespaced = false,
    .open = lv_open,
    .close = lv_close,
    .list_vms = lv_list_vms,
    .vm_get = lv_vm_get,
    .snapshot_list = lv_snapshot_list,
    .snapshot_create = lv_snapshot_create,
    .snapshot_delete = lv_snapshot_delete,
    .snapshot_set_sums = lv_snapshot_set_sums,
    .restore = lv_restore,
    .clone = lv_clone,
    .volume_open = lv_volume_open,
    .changes_base = lv_changes_base,
    .changes_open = lv_changes_open,
    .volume_usage = lv_volume_usage,
};
