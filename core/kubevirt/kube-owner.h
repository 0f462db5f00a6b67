/* core/kubevirt/kube-owner.h: which vmsnapfs made an object. What a daemon
 * creates in the cluster (snapshots, exports) carries the label
 * KUBE_MADE_BY_LABEL and the annotation KUBE_OWNER_ANNOTATION
 * "HOST/PID/START"; a daemon started later on the same host finds those
 * whose maker is gone (killed) and cleans up after it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct json_object;

#define KUBE_MADE_BY_LABEL "vmsnapfs.io/made-by"
#define KUBE_OWNER_ANNOTATION "vmsnapfs.io/owner"

/* This process's "HOST/PID/START". */
void kube_owner_init(char *buf, size_t size);
/* Was o made by a vmsnapfs of this host (self: this process's owner
 * string) that is gone? Another host's objects are never judged. */
bool kube_owner_gone(const char *self, struct json_object *o);
