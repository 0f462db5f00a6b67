/* core/kubevirt/kube-status.c: see kube-status.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "kube-status.h"

static const char *
str(struct json_object *o, const char *key)
{
    struct json_object *v;
    return o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

static int
errno_of(long code, const char *reason, enum kube_retry *retry)
{
    *retry = KUBE_FINAL;
    if (code >= 200 && code < 300)
        return 0;
    switch (code) {
    case 404:
        return -ENOENT;
    case 409:
        if (reason && strcmp(reason, "AlreadyExists") == 0)
            return -EEXIST;
        *retry = KUBE_RETRY;        /* Conflict: the object moved on */
        return -EAGAIN;
    case 410:
        *retry = KUBE_RELIST;
        return -EAGAIN;
    case 401:
    case 403:
        return -EACCES;
    case 429:
        *retry = KUBE_RETRY;
        return -EIO;
    default:
        if (code >= 500 && code <= 504) {
            *retry = KUBE_RETRY;
            return -EIO;
        }
        return code >= 400 && code < 500 ? -EINVAL : -EIO;
    }
}

static int
describe(long code, const char *reason, const char *message, char *why, size_t size)
{
    if (why && size)
        snprintf(why, size, "HTTP %ld%s%s%s%s", code, reason ? " " : "", reason ? reason : "",
                 message ? ": " : "", message ? message : "");
    return 0;
}

int
kube_status_object_errno(struct json_object *status, enum kube_retry *ret_retry, char *why,
                         size_t size)
{
    struct json_object *c;
    long code = status && json_object_object_get_ex(status, "code", &c)
                    ? (long) json_object_get_int64(c)
                    : 500;
    const char *reason = str(status, "reason"), *message = str(status, "message");

    describe(code, reason, message, why, size);
    return errno_of(code, reason, ret_retry);
}

int
kube_status_errno(long code, const char *body, size_t len, enum kube_retry *ret_retry,
                  char *why, size_t size)
{
    struct json_object *o = NULL;
    const char *reason = NULL, *message = NULL;

    if (code < 200 || code >= 300) {
        struct json_tokener *tok = json_tokener_new();
        if (tok && body && len) {
            o = json_tokener_parse_ex(tok, body, (int) (len < 65536 ? len : 65536));
            if (o && !(str(o, "kind") && strcmp(str(o, "kind"), "Status") == 0)) {
                json_object_put(o);
                o = NULL;
            }
        }
        if (tok)
            json_tokener_free(tok);
        reason = str(o, "reason");
        message = str(o, "message");
    }
    describe(code, reason, message, why, size);
    int r = errno_of(code, reason, ret_retry);
    json_object_put(o);
    return r;
}
