/* core/libvirt/libvirt-error.c: every libvirt error goes through here:
 * the last error of this thread as the SPEC's errno, its message, its
 * code. A failure is logged once, where its detail is: lv_errno() logs it;
 * lv_error() does not, for a caller that puts the message in its report
 * (the events line, which is also the log's line). */
#define LOG_MODULE "libvirt"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "libvirt-private.h"
#include "log.h"

int
lv_say(char *buf, size_t size, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return r;
}

int
lv_error(void)
{
    virErrorPtr e = virGetLastError();

    switch (e ? e->code : VIR_ERR_INTERNAL_ERROR) {
    case VIR_ERR_NO_DOMAIN:
    case VIR_ERR_NO_DOMAIN_SNAPSHOT:
        return -ENOENT;
    case VIR_ERR_OPERATION_INVALID:
        return -EBUSY;
    case VIR_ERR_ACCESS_DENIED:
    case VIR_ERR_AUTH_FAILED:
    case VIR_ERR_AUTH_CANCELLED:
        return -EACCES;
    default:
        return -EIO;
    }
}

int
lv_errno(const char *what, const char *name)
{
    int r = lv_error();

    if (r == -ENOENT)
        return r;                   /* an ordinary answer, not worth a log */
    return log_error_errno(r, "%s '%s': %s", what, name ? name : "",
                           lv_last_message("unknown libvirt error"));
}

const char *
lv_last_message(const char *fallback)
{
    virErrorPtr e = virGetLastError();
    return e && e->message ? e->message : fallback;
}

bool
lv_last_is(int code)
{
    virErrorPtr e = virGetLastError();
    return e && e->code == code;
}
