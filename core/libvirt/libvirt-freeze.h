/* core/libvirt/libvirt-freeze.h: freezing a guest's filesystems through its agent,
 * so that no path leaves it frozen (SPEC: "No path ... may leave a guest
 * frozen"):
 *
 * - a freeze is recorded on disk (fsync'd) before it is asked for, and the
 *   record is removed only once a thaw has succeeded; a daemon that starts
 *   thaws every guest it finds a record for (after SIGKILL);
 * - the freeze runs on a thread of its own, so a caller can give up at its
 *   deadline; a freeze that completes after that is thawed at once;
 * - a thaw that fails (the agent is still busy with a late freeze) is
 *   retried in the background until it succeeds or the VM stops.
 *
 * Thread model: all functions are thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <libvirt/libvirt.h>

#include "deadline.h"

struct lv;
struct freeze;

enum freeze_result {
    FREEZE_FROZEN,          /* frozen: thaw with freeze_thaw() */
    FREEZE_FAILED,          /* the agent said no (QuiesceFailed) */
    FREEZE_TIMEOUT,         /* not answered by the deadline; thawed if late */
};

/* Freezes dom's filesystems, waiting until the deadline. *ret is set in every case and must be released with
 * freeze_thaw(), which thaws if needed. */
enum freeze_result freeze_begin(struct lv *lv, virDomainPtr dom,
                                struct deadline deadline, struct freeze **ret);
/* Thaws (if frozen, or once a late freeze lands) and frees f. Returns the
 * freeze window in ms: from the freeze's answer (all filesystems frozen)
 * to the thaw's (0 if it was not frozen). */
uint64_t freeze_thaw(struct freeze *f);
/* The same, and after(opaque) once done: at once, or, for a freeze still
 * waiting for the agent, after its late thaw (the VM stays busy). */
uint64_t freeze_thaw_then(struct freeze *f, void (*after)(void *), void *opaque);
/* _cleanup_ form */
void freeze_thawp(struct freeze **f);

/* At start: thaw what a previous daemon left frozen (in the background). */
void freeze_recover(struct lv *lv);
/* Waits for background thaws at close (a late freeze is thawed once it
 * answers), at most max_ns (0: as long as it takes, saying so every 10 s);
 * what is left keeps its record for the next start. */
int freeze_shutdown(uint64_t max_ns);
