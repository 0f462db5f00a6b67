/* core/util/fault.c: see fault.h. */
#define LOG_MODULE "fault"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "log.h"

bool
fault_active(const char *name)
{
    const char *want = getenv("VMSNAPFS_FAULT");

    if (!want || strcmp(want, name) != 0)
        return false;
    log_warning("VMSNAPFS_FAULT=%s: here", name);
    return true;
}

void
fault_point(const char *name)
{
    const char *want = getenv("VMSNAPFS_FAULT");

    if (!want || strcmp(want, name) != 0)
        return;
    log_warning("VMSNAPFS_FAULT=%s: killing the daemon here", name);
    raise(SIGKILL);
}
