/* core/util/fault.h: crash points for tests. With VMSNAPFS_FAULT=NAME in the
 * environment, fault_point("NAME") kills the daemon there (SIGKILL), the
 * way a power cut or an OOM kill would; tests use it to show that a new
 * daemon finishes or rolls back what the killed one left. Without the
 * variable it does nothing. */
#pragma once

#include <stdbool.h>

void fault_point(const char *name);
/* A fault that is not a kill: true where VMSNAPFS_FAULT=NAME (logged), and
 * the caller acts it out (an answer lost with its connection, ...). */
bool fault_active(const char *name);
