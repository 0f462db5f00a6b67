/* core/name.h: object names (SPEC "Names": a Kubernetes object name, at most
 * 63 characters, also valid for libvirt). */
#pragma once

#define NAME_MAX_LEN 63

#include <time.h>

/* The rule, for messages. */
#define NAME_RULE "1-63 of a-z, 0-9, '-', '.'; each '.'-separated part starts and " \
                  "ends with a letter or digit"

/* 0 if name is a valid snapshot / VM name, else -EINVAL. */
int name_check(const char *name);

/* The name of the snapshot a restore to snap keeps the VM's state in, at
 * time t (SPEC "Restore"): "pre-restore-SNAP-YYYYMMDD-HHMMSS" (UTC), lower
 * case, SNAP cut (no '-' or '.' left at the cut) so that the whole is a
 * valid name of at most NAME_MAX_LEN characters; characters a name cannot
 * have (snapshots made by other tools) become '-'. Always valid. */
void name_safety_snapshot(const char *snap, time_t t, char ret[NAME_MAX_LEN + 1]);
