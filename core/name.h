/* core/name.h: object names (SPEC "Names": a Kubernetes object name, at most
 * 63 characters, also valid for libvirt). */
#pragma once

#define NAME_MAX_LEN 63

/* 0 if name is a valid snapshot / VM name, else -EINVAL. */
int name_check(const char *name);
