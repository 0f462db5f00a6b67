/* fs/daemon.c: going into the background the way mount(8) expects: the
 * parent waits until the child has mounted (or failed) and exits with the
 * child's status, so `mount -t fuse.vmsnapfs` reports errors. Also
 * readiness for systemd (Type=notify) without linking libsystemd. */
#define LOG_MODULE "daemon"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "fs.h"
#include "log.h"

static int status_fd = -1;

int
daemon_begin(void)
{
    int p[2];
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    pid = fork();
    if (pid < 0)
        return -errno;
    if (pid > 0) {
        int status = 1;
        close(p[1]);
        if (read(p[0], &status, sizeof status) != sizeof status)
            status = 1;         /* the child died before it could say */
        _exit(status);
    }
    close(p[0]);
    status_fd = p[1];
    (void) setsid();
    return 0;
}

void
daemon_ready(int status)
{
    if (status_fd < 0)
        return;
    (void) !write(status_fd, &status, sizeof status);
    close(status_fd);
    status_fd = -1;
    if (status != 0)
        return;

    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO)
            close(null);
    }
    (void) !chdir("/");
    log_to_syslog();
}

void
daemon_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    _cleanup_close_ int fd = -1;
    size_t len;

    if (!path || !*path || strlen(path) >= sizeof sa.sun_path)
        return;
    len = strlen(path);
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';          /* abstract socket */
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *) &sa,
               (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        log_warning("cannot notify systemd: %s", strerror(errno));
}
