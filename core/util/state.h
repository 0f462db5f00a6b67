/* core/util/state.h: the daemon's state directory (records that outlive a
 * killed daemon, lock files): $VMSNAPFS_STATE_DIR or /var/lib/vmsnapfs,
 * mode 0711, with one private (0700) subdirectory per kind of record. */
#pragma once

#include <stdbool.h>

const char *state_dir(void);
/* STATE/sub (allocated into *ret; STATE itself if sub is NULL), made with
 * STATE if missing; -errno (logged) if it cannot be made. */
int state_subdir(const char *sub, char **ret);
/* An fd holding the flock of the file at path (made 0600 if missing):
 * -EBUSY if another holder has it and !wait; other errors -errno, logged. */
int state_lock(const char *path, bool wait);
