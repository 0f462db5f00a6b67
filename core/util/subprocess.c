/* core/util/subprocess.c: see subprocess.h. */
#define LOG_MODULE "spawn"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "clock.h"
#include "log.h"
#include "subprocess.h"

extern char **environ;

static int
spawn_with(char *const argv[], char *const envp[], int out_fd, int err_fd, pid_t *ret_pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none;
    int r;

    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);      /* FUSE blocks some */
    posix_spawnattr_setpgroup(&attr, 0);           /* not our terminal's */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP |
                                        POSIX_SPAWN_SETSIGDEF);
    sigset_t all;
    sigfillset(&all);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
    else
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    if (err_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, err_fd, STDERR_FILENO);
    else
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    r = posix_spawnp(ret_pid, argv[0], &fa, &attr, argv, envp ? envp : environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return -r;
}

/* Appends what fd has to *buf (up to max); 0 at EOF, 1 if more may come. */
static int
drain(int fd, char **buf, size_t *len, size_t max)
{
    char chunk[65536];
    ssize_t n = read(fd, chunk, sizeof chunk);

    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : -errno;
    if (n == 0)
        return 0;
    if (*len + (size_t) n > max)
        return -EFBIG;
    char *nb = realloc(*buf, *len + (size_t) n + 1);
    if (!nb)
        return -ENOMEM;
    memcpy(nb + *len, chunk, (size_t) n);
    *len += (size_t) n;
    nb[*len] = '\0';
    *buf = nb;
    return 1;
}

/* Reads and drops what fd has: 0 at EOF, 1 if more may come. */
static int
drain_discard(int fd)
{
    char chunk[65536];
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : -errno;
    return n > 0;
}

int
spawn_capture(const char *module, char *const argv[], int timeout_ms,
              size_t max_out, char **ret_out)
{
    return spawn_capture_env(module, argv, NULL, timeout_ms, max_out, ret_out);
}

int
spawn_capture_env(const char *module, char *const argv[], char *const envp[], int timeout_ms,
                  size_t max_out, char **ret_out)
{
    int out[2] = { -1, -1 }, err[2] = { -1, -1 };
    _cleanup_free_ char *obuf = NULL, *ebuf = NULL;
    size_t olen = 0, elen = 0;
    pid_t pid;
    int r, status = 0;
    uint64_t deadline = now_monotonic_ns() + (uint64_t) timeout_ms * 1000000;

    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        r = -errno;
        goto out_close;
    }
    r = spawn_with(argv, envp, out[1], err[1], &pid);
    close(out[1]);
    close(err[1]);
    out[1] = err[1] = -1;
    if (r < 0) {
        log_emit(LOG_ERR, module, r, "cannot run %s: %s", argv[0], strerror(-r));
        goto out_close;
    }

    bool o_open = true, e_open = true;
    size_t e_cap = 65536;
    while (o_open || e_open) {
        /* only open pipes are polled: a closed one would spin */
        struct pollfd p[2] = { { o_open ? out[0] : -1, POLLIN, 0 },
                               { e_open ? err[0] : -1, POLLIN, 0 } };
        uint64_t now = now_monotonic_ns();
        if (now >= deadline) {
            r = -ETIMEDOUT;
            break;
        }
        int n = poll(p, 2, (int) ((deadline - now) / 1000000) + 1);
        if (n < 0 && errno != EINTR) {
            r = -errno;
            break;
        }
        r = 0;
        if (o_open && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            r = drain(out[0], &obuf, &olen, max_out);
            if (r <= 0)
                o_open = false;
            if (r < 0)
                break;
            r = 0;
        }
        if (e_open && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            /* keep only the first 64 KiB of messages, but read them all:
             * a child blocked on a full pipe never exits */
            int re = elen < e_cap ? drain(err[0], &ebuf, &elen, e_cap)
                                  : drain_discard(err[0]);
            if (re == 0 || (re < 0 && re != -EFBIG))
                e_open = false;
            if (re == -EFBIG)
                elen = e_cap;
        }
    }
    if (r < 0)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (r == -ETIMEDOUT) {
        log_emit(LOG_ERR, module, r, "%s did not finish within %d ms", argv[0],
                 timeout_ms);
    } else if (r < 0) {
        log_emit(LOG_ERR, module, r, "reading the output of %s: %s", argv[0],
                 strerror(-r));
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (ebuf)
            ebuf[strcspn(ebuf, "\n")] = '\0';
        r = log_emit(LOG_ERR, module, -EIO, "%s failed: %s", argv[0],
                     ebuf && *ebuf ? ebuf : "no message");
    } else if (ret_out) {
        *ret_out = obuf ? TAKE_PTR(obuf) : strdup("");
        if (!*ret_out)
            r = -ENOMEM;
    }
out_close:
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
    }
    return r;
}

int
spawn_background(char *const argv[], int stderr_fd, pid_t *ret_pid)
{
    return spawn_with(argv, NULL, -1, stderr_fd, ret_pid);
}

void
spawn_stop(pid_t pid, int grace_ms)
{
    int status;

    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int waited = 0; waited < grace_ms; waited += 10) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return;
        sleep_ns(10 * 1000000);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

void
spawn_stop_wait(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}
