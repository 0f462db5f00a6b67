/* core/restore-policy.c: see restore-policy.h. */
#include <errno.h>
#include <stdio.h>

#include "restore-policy.h"

int
restore_mode_decide(enum restore_mode mode, size_t n_conflicts, bool in_use,
                    char *why, size_t size)
{
    if (mode == RESTORE_DRY_RUN)
        return 1;
    if (mode == RESTORE_STRICT && n_conflicts) {
        snprintf(why, size, "%zu conflict(s) (see below); nothing was changed "
                 "(mode=BestEffort leaves those devices out)", n_conflicts);
        return in_use ? -EBUSY : -EIO;
    }
    return 0;
}

enum restore_action
restore_policy_decide(const struct restore_request *rq, struct deadline deadline,
                      struct deadline *ret_until, char *why, size_t size)
{
    switch (rq->policy) {
    case RESTORE_STOP_TARGET:
        return RESTORE_ACT_STOP;
    case RESTORE_WAIT_GRACE_PERIOD:
        *ret_until = deadline_within(deadline, rq->grace_ns);
        return RESTORE_ACT_WAIT;
    case RESTORE_WAIT_EVENTUALLY:
        *ret_until = deadline;
        return RESTORE_ACT_WAIT;
    case RESTORE_FAIL_IMMEDIATE:
    default:
        snprintf(why, size, "the VM is running and policy=FailImmediate "
                 "(policy=StopTarget stops it)");
        return RESTORE_ACT_REFUSE;
    }
}

const char *
restore_wait_timeout_reason(const struct restore_request *rq)
{
    return rq->policy == RESTORE_WAIT_GRACE_PERIOD
               ? "the VM did not stop within the grace period"
               : "the VM did not stop within the failure deadline";
}
