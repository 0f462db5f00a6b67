/* tests/integration/errno-probe.c: does one system call and prints the
 * errno's name (or OK), so tests check exact errnos, never strerror text.
 *
 *   errno-probe OP PATH [ARG...]
 *   OP: stat read write(ARG: text) open-w mkdir rmdir unlink create
 *       truncate chmod rename(ARG: new path)
 *       writes(ARGs: texts, each its own write(), 200 ms apart)
 *       pwrite(ARG: offset, ARG: text)
 *   write, writes and pwrite report the first failure of the writes and
 *   the close(): a control file answers a last line without a newline
 *   from close().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const struct {
    int e;
    const char *name;
} names[] = {
    { EPERM, "EPERM" }, { ENOENT, "ENOENT" }, { EIO, "EIO" },
    { EACCES, "EACCES" }, { EBUSY, "EBUSY" }, { EEXIST, "EEXIST" },
    { ENOTDIR, "ENOTDIR" }, { EISDIR, "EISDIR" }, { EINVAL, "EINVAL" },
    { EROFS, "EROFS" }, { EAGAIN, "EAGAIN" }, { ETIMEDOUT, "ETIMEDOUT" },
    { ENOTSUP, "ENOTSUP" }, { ENOTEMPTY, "ENOTEMPTY" }, { ENOSYS, "ENOSYS" },
    { ENAMETOOLONG, "ENAMETOOLONG" }, { ENOTCONN, "ENOTCONN" },
};

static int
report(int r)
{
    if (r >= 0) {
        puts("OK");
        return 0;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (names[i].e == errno) {
            puts(names[i].name);
            return 0;
        }
    }
    printf("errno=%d\n", errno);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: errno-probe OP PATH [ARG]\n");
        return 2;
    }
    const char *op = argv[1], *path = argv[2], *arg = argc > 3 ? argv[3] : "";
    struct stat st;
    char buf[65536];
    int fd;

    if (strcmp(op, "stat") == 0)
        return report(stat(path, &st));
    if (strcmp(op, "read") == 0) {
        fd = open(path, O_RDONLY);
        if (fd < 0)
            return report(-1);
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0)
            ;
        int saved = errno;
        close(fd);
        errno = saved;
        return report(n < 0 ? -1 : 0);
    }
    if (strcmp(op, "open-w") == 0) {
        fd = open(path, O_WRONLY);
        if (fd >= 0)
            close(fd);
        return report(fd);
    }
    if (strcmp(op, "write") == 0 || strcmp(op, "writes") == 0 ||
        strcmp(op, "pwrite") == 0) {
        fd = open(path, O_WRONLY | O_TRUNC);
        if (fd < 0)
            return report(-1);
        ssize_t n = 0;
        if (strcmp(op, "pwrite") == 0) {
            const char *text = argc > 4 ? argv[4] : "";
            n = pwrite(fd, text, strlen(text), strtoll(arg, NULL, 10));
        }
        for (int i = 3; strcmp(op, "pwrite") != 0 && n >= 0 && i < argc; i++) {
            if (i > 3) {
                struct timespec ts = { 0, 200 * 1000 * 1000 };
                nanosleep(&ts, NULL);
            }
            n = write(fd, argv[i], strlen(argv[i]));
            if (strcmp(op, "write") == 0)
                break;
        }
        int saved = errno;
        if (n < 0) {
            close(fd);
            errno = saved;
            return report(-1);
        }
        return report(close(fd));
    }
    if (strcmp(op, "mkdir") == 0)
        return report(mkdir(path, 0755));
    if (strcmp(op, "rmdir") == 0)
        return report(rmdir(path));
    if (strcmp(op, "unlink") == 0)
        return report(unlink(path));
    if (strcmp(op, "create") == 0) {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd >= 0)
            close(fd);
        return report(fd);
    }
    if (strcmp(op, "truncate") == 0)
        return report(truncate(path, 0));
    if (strcmp(op, "chmod") == 0)
        return report(chmod(path, 0777));
    if (strcmp(op, "rename") == 0)
        return report(rename(path, arg));
    fprintf(stderr, "errno-probe: unknown op '%s'\n", op);
    return 2;
}
