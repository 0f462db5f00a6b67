/* core/util/state.c: see state.h. */
#define LOG_MODULE "state"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "state.h"

const char *
state_dir(void)
{
    const char *base = getenv("VMSNAPFS_STATE_DIR");
    return base && *base ? base : "/var/lib/vmsnapfs";
}

int
state_subdir(const char *sub, char **ret)
{
    const char *base = state_dir();
    char *dir = NULL;

    if (mkdir(base, 0711) < 0 && errno != EEXIST)
        return log_error_errno(-errno, "cannot make '%s': %s", base, strerror(errno));
    if (!sub)
        return (*ret = strdup(base)) ? 0 : -ENOMEM;
    if (asprintf(&dir, "%s/%s", base, sub) < 0)
        return -ENOMEM;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        int r = log_error_errno(-errno, "cannot make '%s': %s", dir, strerror(errno));
        free(dir);
        return r;
    }
    *ret = dir;
    return 0;
}

int
state_lock(const char *path, bool wait)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

    if (fd < 0)
        return log_error_errno(-errno, "cannot open '%s': %s", path, strerror(errno));
    while (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
        int r = -errno;
        if (r == -EINTR)
            continue;
        close(fd);
        return r == -EWOULDBLOCK ? -EBUSY : log_error_errno(r, "cannot lock '%s': %s",
                                                            path, strerror(-r));
    }
    return fd;
}
