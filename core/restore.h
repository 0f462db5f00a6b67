/* core/restore.h: what a write to VM/restore or VM/snapshots/S/clone asks
 * for (SPEC "Restore", "Snapshots"): the line, checked and typed. Pure. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "name.h"

enum restore_policy {          /* KubeVirt's targetReadinessPolicy */
    RESTORE_FAIL_IMMEDIATE,
    RESTORE_STOP_TARGET,
    RESTORE_WAIT_GRACE_PERIOD,
    RESTORE_WAIT_EVENTUALLY,
    _RESTORE_POLICY_MAX,
};

enum restore_mode {
    RESTORE_STRICT,
    RESTORE_BEST_EFFORT,
    RESTORE_DRY_RUN,
    _RESTORE_MODE_MAX,
};

struct restore_request {
    char snap[256];             /* any existing snapshot's name */
    enum restore_policy policy;
    uint64_t grace_ns;          /* WaitGracePeriod:DURATION */
    enum restore_mode mode;
};

/* "SNAP [policy=P] [mode=M]" with an optional final newline. 0, or -EINVAL
 * and a reason (static) for anything malformed or unknown. */
int restore_request_parse(const char *text, size_t len, struct restore_request *ret,
                          const char **ret_reason);

/* "NEWVM" with an optional final newline: the clone's name into ret. */
int clone_request_parse(const char *text, size_t len, char ret[NAME_MAX_LEN + 1],
                        const char **ret_reason);

const char *restore_policy_to_string(enum restore_policy p);
int restore_policy_from_string(const char *s);
const char *restore_mode_to_string(enum restore_mode m);
int restore_mode_from_string(const char *s);
