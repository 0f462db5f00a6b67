/* core/restore-policy.h: what a restore does, decided once for every
 * backend (SPEC "Restore"). The backend finds the conflicts and the VM's
 * state; these decide what the mode does with the conflicts and what the
 * policy does with a running VM. Pure. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "deadline.h"
#include "restore.h"

/* What the mode does with n conflicts (in_use: one of them is a device
 * another VM uses):
 *   0        go on (none, or BestEffort: the conflicting devices are left out);
 *   1        stop here, nothing changed, success (DryRun: they are listed);
 *   -EBUSY   (a device in use) or -EIO (data gone): refused, nothing
 *            changed (Strict), the reason in why. */
int restore_mode_decide(enum restore_mode mode, size_t n_conflicts, bool in_use,
                        char *why, size_t size);

enum restore_action {
    RESTORE_ACT_REFUSE,     /* FailImmediate: EBUSY, the reason in why */
    RESTORE_ACT_STOP,       /* StopTarget: stop it (within the deadline), start
                               it again after */
    RESTORE_ACT_WAIT,       /* WaitGracePeriod, WaitEventually: wait until
                               someone else stops it, until *ret_until */
};

/* What the policy does about a VM that runs. For RESTORE_ACT_WAIT,
 * *ret_until: the grace period within the deadline, or the deadline. */
enum restore_action restore_policy_decide(const struct restore_request *rq,
                                          struct deadline deadline,
                                          struct deadline *ret_until, char *why,
                                          size_t size);
/* Why a wait until ret_until ran out, for the status. */
const char *restore_wait_timeout_reason(const struct restore_request *rq);
