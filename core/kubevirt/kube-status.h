/* core/kubevirt/kube-status.h: what an API server's answer means to us
 * (kubevirt-api.md §6.3): the SPEC's errno for an HTTP status and the
 * Kubernetes Status object in its body, whether to try again, and the
 * server's message (never a credential: the server's text, as events and
 * the log show it). Pure. */
#pragma once

#include <stddef.h>

struct json_object;

enum kube_retry {
    KUBE_FINAL,             /* the answer stands */
    KUBE_RETRY,             /* try again within the deadline (409 Conflict,
                               429, 5xx) */
    KUBE_RELIST,            /* 410 Expired/Gone: the resourceVersion is too
                               old; list again, then watch from there */
};

/* 0 for 2xx; else -ENOENT (404), -EEXIST (409 AlreadyExists), -EAGAIN
 * (409 Conflict, 410), -EACCES (401, 403), -EINVAL (400, 422; other 4xx),
 * -EIO (429, 5xx, anything else). why: "HTTP CODE REASON: MESSAGE". */
int kube_status_errno(long code, const char *body, size_t len, enum kube_retry *ret_retry,
                      char *why, size_t size);
/* The same for a Status object (a watch's ERROR event). */
int kube_status_object_errno(struct json_object *status, enum kube_retry *ret_retry,
                             char *why, size_t size);
