/* core/deadline.h: the failure deadline (SPEC "Snapshots": it bounds the
 * whole operation; past it everything done so far is undone and the guest
 * is thawed). One value, taken where the operation begins and handed to
 * every step that waits. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "opts.h"

struct deadline {
    uint64_t at_ns;         /* CLOCK_MONOTONIC; 0: none */
};

/* ns from now (0: none) */
static inline struct deadline
deadline_after(uint64_t ns)
{
    return (struct deadline) { ns ? now_monotonic_ns() + ns : 0 };
}

/* The deadline of an operation that begins now under options o. */
static inline struct deadline
deadline_begin(const struct vmsnapfs_opts *o)
{
    return deadline_after(o ? o->failure_deadline_ns : 0);
}

/* The earlier of d and ns from now (a grace period within the deadline;
 * ns 0: now). */
static inline struct deadline
deadline_within(struct deadline d, uint64_t ns)
{
    struct deadline g = { now_monotonic_ns() + ns };
    return d.at_ns && d.at_ns < g.at_ns ? d : g;
}

static inline bool
deadline_passed(struct deadline d)
{
    return d.at_ns && now_monotonic_ns() > d.at_ns;
}
