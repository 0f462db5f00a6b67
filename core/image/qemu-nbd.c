/* core/image/qemu-nbd.c: see qemu-nbd.h. */
#define LOG_MODULE "qemu-nbd"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "clock.h"
#include "log.h"
#include "qemu-nbd.h"
#include "subprocess.h"

#define START_TIMEOUT_NS (UINT64_C(10) * 1000000000)

struct qemu_nbd {
    pid_t pid;
    char *dir;
    char *socket;
};

const char *
runtime_dir(void)
{
    const char *d = getenv("VMSNAPFS_RUNTIME_DIR");
    if (!d || !*d)
        d = "/run/vmsnapfs";
    if (mkdir(d, 0700) < 0 && errno != EEXIST)
        log_warning("cannot make '%s': %s", d, strerror(errno));
    return d;
}

void
qemu_nbd_stop(struct qemu_nbd *q)
{
    if (!q)
        return;
    spawn_stop(q->pid, 2000);
    if (q->socket)
        unlink(q->socket);
    if (q->dir) {
        _cleanup_free_ char *err_path = NULL;
        if (asprintf(&err_path, "%s/stderr", q->dir) >= 0)
            unlink(err_path);
        rmdir(q->dir);
    }
    free(q->socket);
    free(q->dir);
    free(q);
}

/* QEMU's option syntax doubles commas inside a value */
static char *
escape_commas(const char *s)
{
    char *out = malloc(2 * strlen(s) + 1), *o = out;
    if (!out)
        return NULL;
    for (; *s; s++) {
        if (*s == ',')
            *o++ = ',';
        *o++ = *s;
    }
    *o = '\0';
    return out;
}

static bool
is_block(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISBLK(st.st_mode);
}

/* listening, not only bound: a connect goes through */
static bool
accepts(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    if (fd < 0 || strlen(path) >= sizeof sa.sun_path) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    strcpy(sa.sun_path, path);
    ok = connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

int
qemu_nbd_start(const char *path, const char *format, const char *export,
               struct qemu_nbd **ret)
{
    struct qemu_nbd *q = calloc(1, sizeof *q);
    _cleanup_free_ char *image = NULL, *sock_opt = NULL, *name_opt = NULL;
    _cleanup_free_ char *escaped = NULL;
    int r;

    if (!q)
        return -ENOMEM;
    if (asprintf(&q->dir, "%s/nbd-XXXXXX", runtime_dir()) < 0) {
        free(q);
        return -ENOMEM;
    }
    if (!mkdtemp(q->dir)) {
        r = log_error_errno(-errno, "cannot make a directory for qemu-nbd: %s",
                            strerror(errno));
        free(q->dir);
        q->dir = NULL;
        qemu_nbd_stop(q);
        return r;
    }
    if (asprintf(&q->socket, "%s/sock", q->dir) < 0 ||
        /* without the image lock: a stopped VM may start meanwhile (the
         * view then fails its reads, see view-chain.c) */
        !(escaped = escape_commas(path)) ||
        asprintf(&image, "driver=%s,file.driver=%s,file.filename=%s,file.locking=off",
                 format && *format ? format : "raw",
                 is_block(path) ? "host_device" : "file", escaped) < 0 ||
        asprintf(&sock_opt, "--socket=%s", q->socket) < 0 ||
        asprintf(&name_opt, "--export-name=%s", export) < 0) {
        qemu_nbd_stop(q);
        return -ENOMEM;
    }
    char *argv[] = { (char *) "qemu-nbd", (char *) "--read-only",
                     (char *) "--persistent", (char *) "--shared=4", sock_opt,
                     name_opt, (char *) "--image-opts", image, NULL };
    /* its messages go to a file, for the log if it fails to start */
    _cleanup_free_ char *err_path = NULL;
    if (asprintf(&err_path, "%s/stderr", q->dir) < 0) {
        qemu_nbd_stop(q);
        return -ENOMEM;
    }
    _cleanup_close_ int err_fd = open(err_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    r = spawn_background(argv, err_fd, &q->pid);
    if (r < 0) {
        log_error_errno(r, "cannot run qemu-nbd: %s", strerror(-r));
        qemu_nbd_stop(q);
        return r;
    }

    /* ready once the socket exists; gone if it exited */
    uint64_t deadline = now_monotonic_ns() + START_TIMEOUT_NS;
    for (;;) {
        struct stat st;
        int status;
        if (stat(q->socket, &st) == 0 && S_ISSOCK(st.st_mode) && accepts(q->socket))
            break;
        if (waitpid(q->pid, &status, WNOHANG) == q->pid) {
            char msg[512] = "";
            _cleanup_close_ int fd = open(err_path, O_RDONLY | O_CLOEXEC);
            ssize_t n = fd >= 0 ? read(fd, msg, sizeof msg - 1) : -1;
            msg[n > 0 ? n : 0] = '\0';
            msg[strcspn(msg, "\n")] = '\0';
            q->pid = 0;
            qemu_nbd_stop(q);
            return log_error_errno(-EIO, "qemu-nbd for '%s' exited at start: %s",
                                   path, msg[0] ? msg : "no message");
        }
        if (now_monotonic_ns() > deadline) {
            qemu_nbd_stop(q);
            return log_error_errno(-EIO, "qemu-nbd for '%s' did not start", path);
        }
        sleep_ns(5 * 1000000);
    }
    log_debug("qemu-nbd %d serves '%s'", (int) q->pid, path);
    *ret = q;
    return 0;
}

const char *
qemu_nbd_socket(const struct qemu_nbd *q)
{
    return q->socket;
}
