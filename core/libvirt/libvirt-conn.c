/* core/libvirt/libvirt-conn.c: the libvirt backend's connection as the
 * other files use it: a reference to it (a reconnect may swap it), one for
 * read-only queries, a domain by name, how a changing operation on a VM
 * begins, and a nudge for the recovery thread. Above libvirt-error.c,
 * below everything else (libvirt-backend.c makes the connection). */
#define LOG_MODULE "libvirt"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "libvirt-private.h"
#include "log.h"

virConnectPtr
lv_conn(struct lv *lv)
{
    LOCK_FOR_SCOPE(&lv->lock);
    if (!lv->conn || __atomic_load_n(&lv->dead, __ATOMIC_ACQUIRE)) {
        if (!lv->lost_logged)
            log_error("no connection to '%s'; reconnecting", lv->uri_shown);
        lv->lost_logged = true;
        return NULL;
    }
    virConnectRef(lv->conn);
    return lv->conn;
}

virConnectPtr
lv_query_conn(struct lv *lv)
{
    LOCK_FOR_SCOPE(&lv->lock);
    if (!lv->conn || __atomic_load_n(&lv->dead, __ATOMIC_ACQUIRE))
        return NULL;
    virConnectPtr c = lv->qconns[lv->qnext++ % LV_QUERY_CONNS];
    if (!c || virConnectIsAlive(c) == 0)
        c = lv->conn;           /* the main one notices a lost daemon */
    virConnectRef(c);
    return c;
}

virDomainPtr
lv_lookup(virConnectPtr c, const char *name, int *ret_err)
{
    virDomainPtr d = virDomainLookupByName(c, name);
    if (!d)
        *ret_err = lv_errno("look up domain", name);
    return d;
}

int
lv_vm_open(struct lv *lv, const char *name, struct lv_vm *ret, char *why, size_t size)
{
    int r = 0;

    *ret = (struct lv_vm) { .lv = lv, .name = name };
    ret->c = lv_conn(lv);
    if (!ret->c)
        return lv_say(why, size, -EIO, "no connection to libvirt");
    ret->dom = lv_lookup(ret->c, name, &r);
    return ret->dom ? 0 : r;
}

int
lv_vm_op(struct lv_vm *v, const char *snap, unsigned flags, char *why, size_t size)
{
    int r = vm_op_begin(v->lv->vmops, v->name, snap, flags);

    if (r < 0)
        return lv_say(why, size, r, "%s", vm_op_refusal(r));
    v->op = true;
    return 0;
}

void
lv_vm_close(struct lv_vm *v)
{
    if (v->op)
        vm_op_end(v->lv->vmops, v->name);
    if (v->dom)
        virDomainFree(v->dom);
    if (v->c)
        virConnectClose(v->c);
    *v = (struct lv_vm) { 0 };
}

int
lv_record_domain(virConnectPtr c, const char *uuid, virDomainPtr *ret)
{
    *ret = virDomainLookupByUUIDString(c, uuid);
    if (*ret)
        return 1;
    bool gone = lv_last_is(VIR_ERR_NO_DOMAIN);
    virResetLastError();
    return gone ? 0 : -EIO;
}

void
lv_recovery_kick(struct lv *lv)
{
    LOCK_FOR_SCOPE(&lv->rec_lock);
    lv->rec_kick = true;
    pthread_cond_signal(&lv->rec_cond);
}
