/* tools/vmsnap-apply.c: applies an incremental backup (a copy of a
 * snapshot's changes/ directory) to a full copy of its base, in place.
 *
 *   vmsnap-apply BASE.img CHANGES.img CHANGES.map
 *
 * The map is checked first (change-map.h) against both files: a map that
 * does not match changes nothing. Then the changed extents are written to
 * a journal next to BASE.img (data, then a SHA-256 trailer, synced), and
 * only then into BASE.img; the journal goes once BASE.img is synced. A run
 * that is killed leaves either no complete journal (BASE.img untouched) or
 * a complete one, which the next run on BASE.img applies first.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "change-map.h"
#include "fault.h"

#define EXIT_IO 1
#define EXIT_BAD 2

#define MAP_MAX (256u << 20)        /* a map's text, at most */
#define IO_CHUNK (1u << 20)
#define JOURNAL_SUFFIX ".vmsnap-apply-journal"

static const char magic_head[8] = "VMSNAPJ1";
static const char magic_tail[8] = "VMSNAPJE";

struct journal_head {
    char magic[8];
    uint64_t size;          /* the disk's size */
    uint64_t n;             /* extents */
    uint64_t dev, ino;      /* the file it is for, */
    uint64_t btime;         /* and when that was made (0: unknown) */
};

struct journal_extent {
    uint64_t offset, length;
    uint64_t zero;          /* 1: zeros, no data in the journal */
};

static bool arg_dry_run, arg_quiet;
/* what main holds while it may still exit through die(): freed at exit */
static struct change_map *map;
static char *journal_path;

static void
free_globals(void)
{
    change_map_free(map);
    free(journal_path);
}

static void
usage(FILE *f)
{
    fprintf(f,
"Usage: vmsnap-apply [OPTIONS] BASE.img CHANGES.img CHANGES.map\n"
"\n"
"Writes the changes of an incremental backup into BASE.img, a full copy of\n"
"its base snapshot, in place: BASE.img becomes a full copy of the snapshot\n"
"the changes lead to. CHANGES.img and CHANGES.map are copies of the\n"
"snapshot's changes/NAME.img and changes/NAME.map; the map's \"base\" names\n"
"the snapshot BASE.img must be a copy of.\n"
"\n"
"Options:\n"
"  -n, --dry-run   check the map against the files and tell what would be\n"
"                  written; change nothing\n"
"  -q, --quiet     no summary line\n"
"  -h, --help      this text\n"
"  -V, --version   the version\n"
"\n"
"Exit status: 0 applied (or a dry run that found nothing wrong); 1 an I/O\n"
"error (BASE.img is left as it was, or is finished from its journal by the\n"
"next run); 2 bad arguments, or a map that does not match the files\n"
"(nothing is changed).\n");
}

__attribute__((format(printf, 2, 3))) _Noreturn static void
die(int status, const char *fmt, ...)
{
    va_list ap;
    fputs("vmsnap-apply: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

static int
full_pread(int fd, void *buf, size_t n, uint64_t off)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t) off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO;        /* shorter than it said */
        p += r;
        n -= (size_t) r;
        off += (uint64_t) r;
    }
    return 0;
}

static int
full_pwrite(int fd, const void *buf, size_t n, uint64_t off)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t r = pwrite(fd, p, n, (off_t) off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        p += r;
        n -= (size_t) r;
        off += (uint64_t) r;
    }
    return 0;
}

/* When the file was made (statx), 0 where the file system does not say:
 * with dev and ino it tells a file from a later one on the same inode. */
static uint64_t
birth_time(int fd)
{
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_BTIME, &stx) < 0 || !(stx.stx_mask & STATX_BTIME))
        return 0;
    return (uint64_t) stx.stx_btime.tv_sec * 1000000000u + stx.stx_btime.tv_nsec;
}

/* Size of a regular file or block device. */
static int
file_size(int fd, const struct stat *st, uint64_t *ret)
{
    if (S_ISREG(st->st_mode)) {
        *ret = (uint64_t) st->st_size;
        return 0;
    }
    if (S_ISBLK(st->st_mode))
        return ioctl(fd, BLKGETSIZE64, ret) < 0 ? -errno : 0;
    return -EINVAL;
}

static int
sync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* --- the journal ------------------------------------------------------ */

struct writer {
    int fd;
    uint64_t off;
    EVP_MD_CTX *md;
};

static int
jwrite(struct writer *w, const void *buf, size_t n)
{
    int r = full_pwrite(w->fd, buf, n, w->off);
    if (r < 0)
        return r;
    w->off += n;
    return EVP_DigestUpdate(w->md, buf, n) == 1 ? 0 : -EIO;
}

/* Writes the journal of map m, with the data from changes, and syncs it. */
static int
journal_write(const char *path, const struct change_map *m, int changes, const struct stat *base,
              uint64_t btime)
{
    struct writer w = { .fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) };
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    char *buf = NULL;
    int r;

    if (w.fd < 0)
        return -errno;
    w.md = EVP_MD_CTX_new();
    buf = malloc(IO_CHUNK);
    if (!w.md || !buf || EVP_DigestInit_ex(w.md, EVP_sha256(), NULL) != 1) {
        r = -ENOMEM;
        goto out;
    }
    struct journal_head h = { .size = m->size, .n = m->n, .dev = (uint64_t) base->st_dev,
                              .ino = (uint64_t) base->st_ino, .btime = btime };
    memcpy(h.magic, magic_head, sizeof h.magic);
    r = jwrite(&w, &h, sizeof h);
    for (size_t i = 0; r >= 0 && i < m->n; i++) {
        struct journal_extent e = { m->v[i].offset, m->v[i].length, m->v[i].zero };
        r = jwrite(&w, &e, sizeof e);
    }
    for (size_t i = 0; r >= 0 && i < m->n; i++) {
        if (m->v[i].zero)
            continue;
        for (uint64_t done = 0; r >= 0 && done < m->v[i].length;) {
            size_t n = m->v[i].length - done < IO_CHUNK ? (size_t) (m->v[i].length - done) : IO_CHUNK;
            r = full_pread(changes, buf, n, m->v[i].offset + done);
            if (r >= 0)
                r = jwrite(&w, buf, n);
            done += n;
        }
    }
    if (r >= 0 && EVP_DigestFinal_ex(w.md, digest, &dlen) != 1)
        r = -EIO;
    /* the data first, then the trailer that says it is whole */
    if (r >= 0 && fsync(w.fd) < 0)
        r = -errno;
    if (r >= 0)
        r = full_pwrite(w.fd, magic_tail, sizeof magic_tail, w.off);
    if (r >= 0)
        r = full_pwrite(w.fd, digest, dlen, w.off + sizeof magic_tail);
    if (r >= 0 && fsync(w.fd) < 0)
        r = -errno;
    if (r >= 0)
        r = sync_dir_of(path);
out:
    EVP_MD_CTX_free(w.md);
    free(buf);
    close(w.fd);
    if (r < 0)
        unlink(path);
    return r;
}

/* Reads a journal: 0 and its extents and where its data starts if it is
 * whole (its trailer's digest matches); -EBADMSG if it is not (a run killed
 * while writing it: BASE.img was not touched yet). */
static int
journal_read(int fd, struct journal_head *h, struct journal_extent **ret_v, uint64_t *ret_data)
{
    struct stat st;
    unsigned char digest[EVP_MAX_MD_SIZE], stored[EVP_MAX_MD_SIZE];
    unsigned dlen = (unsigned) EVP_MD_size(EVP_sha256());
    char tail[sizeof magic_tail];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char *buf = malloc(IO_CHUNK);
    struct journal_extent *v = NULL;
    int r = -EBADMSG;

    if (!md || !buf || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        r = -ENOMEM;
        goto out;
    }
    if (fstat(fd, &st) < 0 || (uint64_t) st.st_size < sizeof *h + sizeof tail + dlen)
        goto out;
    uint64_t body = (uint64_t) st.st_size - sizeof tail - dlen;
    if (full_pread(fd, tail, sizeof tail, body) < 0 || memcmp(tail, magic_tail, sizeof tail) != 0 ||
        full_pread(fd, stored, dlen, body + sizeof tail) < 0)
        goto out;
    for (uint64_t off = 0; off < body;) {
        size_t n = body - off < IO_CHUNK ? (size_t) (body - off) : IO_CHUNK;
        if (full_pread(fd, buf, n, off) < 0 || EVP_DigestUpdate(md, buf, n) != 1)
            goto out;
        off += n;
    }
    if (EVP_DigestFinal_ex(md, digest, NULL) != 1 || memcmp(digest, stored, dlen) != 0)
        goto out;
    if (full_pread(fd, h, sizeof *h, 0) < 0 || memcmp(h->magic, magic_head, sizeof h->magic) != 0 ||
        h->n > (body - sizeof *h) / sizeof *v)
        goto out;
    v = calloc(h->n ? h->n : 1, sizeof *v);
    if (!v || (h->n && full_pread(fd, v, h->n * sizeof *v, sizeof *h) < 0))
        goto out;
    /* what its digest vouches for must still make sense: extents in
     * order, within the disk, and exactly the data the journal holds */
    uint64_t end = 0, data = 0;
    for (uint64_t i = 0; i < h->n; i++) {
        if (v[i].length == 0 || v[i].offset < end || v[i].offset > h->size ||
            v[i].length > h->size - v[i].offset || v[i].zero > 1)
            goto out;
        end = v[i].offset + v[i].length;
        data += v[i].zero ? 0 : v[i].length;
    }
    if (data != body - sizeof *h - h->n * sizeof *v)
        goto out;
    *ret_data = sizeof *h + h->n * sizeof *v;
    *ret_v = v;
    v = NULL;
    r = 0;
out:
    EVP_MD_CTX_free(md);
    free(buf);
    free(v);
    return r;
}

/* Zeros at [off, off + len) of base: a hole where the file system makes
 * one (the copy stays sparse), else written. */
static int
write_zeros(int base, bool regular, uint64_t off, uint64_t len)
{
    static const char zeros[1 << 16];

    if (regular && fallocate(base, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             (off_t) off, (off_t) len) == 0)
        return 0;
    while (len > 0) {
        size_t n = len < sizeof zeros ? (size_t) len : sizeof zeros;
        int r = full_pwrite(base, zeros, n, off);
        if (r < 0)
            return r;
        off += n;
        len -= n;
    }
    return 0;
}

/* Applies a whole journal to base, then syncs base. */
static int
journal_apply(int jfd, int base, bool regular, const struct journal_head *h,
              const struct journal_extent *v, uint64_t data, uint64_t *ret_written,
              uint64_t *ret_zeroed)
{
    char *buf = malloc(IO_CHUNK);
    int r = buf ? 0 : -ENOMEM;

    *ret_written = *ret_zeroed = 0;
    for (uint64_t i = 0; r >= 0 && i < h->n; i++) {
        if (i == h->n / 2)
            fault_point("apply-half");
        if (v[i].zero) {
            r = write_zeros(base, regular, v[i].offset, v[i].length);
            *ret_zeroed += v[i].length;
            continue;
        }
        for (uint64_t done = 0; r >= 0 && done < v[i].length;) {
            size_t n = v[i].length - done < IO_CHUNK ? (size_t) (v[i].length - done) : IO_CHUNK;
            r = full_pread(jfd, buf, n, data);
            if (r >= 0)
                r = full_pwrite(base, buf, n, v[i].offset + done);
            data += n;
            done += n;
        }
        *ret_written += v[i].length;
    }
    if (r >= 0 && fsync(base) < 0)
        r = -errno;
    free(buf);
    return r;
}

/* A complete journal left by a killed run is applied first; an incomplete
 * one is dropped (BASE.img was not touched). */
static void
finish_journal(const char *jpath, int base, bool regular, const struct stat *st, uint64_t btime)
{
    int jfd = open(jpath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct journal_head h;
    struct journal_extent *v = NULL;
    uint64_t data, written, zeroed;
    struct stat jst;

    if (jfd < 0) {
        if (errno == ENOENT)
            return;
        die(EXIT_IO, "%s: %s", jpath, strerror(errno));
    }
    /* ours: a plain file of this user that nobody else may write */
    if (fstat(jfd, &jst) < 0 || !S_ISREG(jst.st_mode) || jst.st_uid != geteuid() ||
        (jst.st_mode & 022))
        die(EXIT_BAD, "%s is not a journal vmsnap-apply wrote (not a file of yours that only "
            "you may write); remove it", jpath);
    int r = journal_read(jfd, &h, &v, &data);
    if (r == -EBADMSG && arg_dry_run)
        die(EXIT_BAD, "%s: the incomplete journal of an earlier run (it had not changed the "
            "image); run without --dry-run to drop it", jpath);
    if (r == -EBADMSG) {
        close(jfd);
        if (unlink(jpath) < 0 || sync_dir_of(jpath) < 0)
            die(EXIT_IO, "%s: %s", jpath, strerror(errno));
        if (!arg_quiet)
            fprintf(stderr, "vmsnap-apply: dropped the incomplete journal of an earlier run "
                    "(it had not changed the image)\n");
        return;
    }
    if (r < 0)
        die(EXIT_IO, "%s: %s", jpath, strerror(-r));
    bool other = h.dev != (uint64_t) st->st_dev || h.ino != (uint64_t) st->st_ino ||
                 (h.btime && btime && h.btime != btime) || h.size != (uint64_t) st->st_size;
    if (other || arg_dry_run)
        free(v);
    if (other)
        die(EXIT_BAD, "%s is the journal of another file, not of this image; "
            "apply it to that file, or remove it", jpath);
    if (arg_dry_run)
        die(EXIT_BAD, "%s: an earlier run was cut off; run without --dry-run to finish it", jpath);
    r = journal_apply(jfd, base, regular, &h, v, data, &written, &zeroed);
    free(v);
    close(jfd);
    if (r < 0)
        die(EXIT_IO, "finishing the earlier run: %s (run again to retry)", strerror(-r));
    if (unlink(jpath) < 0 || sync_dir_of(jpath) < 0)
        die(EXIT_IO, "%s: %s", jpath, strerror(errno));
    if (!arg_quiet)
        fprintf(stderr, "vmsnap-apply: finished an earlier run that was cut off "
                "(%" PRIu64 " bytes written, %" PRIu64 " zeroed)\n", written, zeroed);
}

static struct change_map *
read_map(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    struct change_map *m = NULL;
    char *error = NULL;

    if (fd < 0 || fstat(fd, &st) < 0)
        die(EXIT_BAD, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode) || (uint64_t) st.st_size > MAP_MAX)
        die(EXIT_BAD, "%s: not a map (%s)", path,
            S_ISREG(st.st_mode) ? "too large" : "not a file");
    char *text = malloc((size_t) st.st_size + 1);
    if (!text || full_pread(fd, text, (size_t) st.st_size, 0) < 0)
        die(EXIT_IO, "%s: cannot read it", path);
    close(fd);
    int r = change_map_parse(text, (size_t) st.st_size, &m, &error);
    free(text);
    if (r < 0) {
        fprintf(stderr, "vmsnap-apply: %s: not a valid map: %s\n", path,
                error ? error : strerror(-r));
        free(error);
        exit(EXIT_BAD);
    }
    return m;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "dry-run", no_argument, NULL, 'n' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    int c;

    while ((c = getopt_long(argc, argv, "nqhV", opts, NULL)) != -1) {
        switch (c) {
        case 'n': arg_dry_run = true; break;
        case 'q': arg_quiet = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("vmsnap-apply %s\n", PACKAGE_VERSION); return 0;
        default: usage(stderr); return EXIT_BAD;
        }
    }
    if (argc - optind != 3) {
        usage(stderr);
        return EXIT_BAD;
    }
    const char *base_path = argv[optind], *changes_path = argv[optind + 1];
    const char *map_path = argv[optind + 2];

    atexit(free_globals);
    struct change_map *m = map = read_map(map_path);
    int base = open(base_path, (arg_dry_run ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    int changes = open(changes_path, O_RDONLY | O_CLOEXEC);
    struct stat bst, cst;
    uint64_t bsize, csize;
    if (base < 0 || fstat(base, &bst) < 0)
        die(EXIT_BAD, "%s: %s", base_path, strerror(errno));
    if (changes < 0 || fstat(changes, &cst) < 0)
        die(EXIT_BAD, "%s: %s", changes_path, strerror(errno));
    if (!S_ISREG(bst.st_mode) || file_size(base, &bst, &bsize) < 0)
        die(EXIT_BAD, "%s: not a disk image file", base_path);
    if (!S_ISREG(cst.st_mode) || file_size(changes, &cst, &csize) < 0)
        die(EXIT_BAD, "%s: not a disk image file", changes_path);
    if (bst.st_dev == cst.st_dev && bst.st_ino == cst.st_ino)
        die(EXIT_BAD, "%s and %s are the same file", base_path, changes_path);
    /* one run per image at a time */
    if (flock(base, LOCK_EX | LOCK_NB) < 0)
        die(EXIT_IO, "%s: another vmsnap-apply runs on it", base_path);

    /* beside the file itself, whatever link named it */
    char *real = realpath(base_path, NULL);
    int made = real ? asprintf(&journal_path, "%s%s", real, JOURNAL_SUFFIX) : -1;
    free(real);
    if (made < 0)
        die(EXIT_IO, "%s: %s", base_path, strerror(errno));
    uint64_t btime = birth_time(base);
    finish_journal(journal_path, base, true, &bst, btime);
    if (fstat(base, &bst) < 0 || file_size(base, &bst, &bsize) < 0)
        die(EXIT_IO, "%s: %s", base_path, strerror(errno));

    if (bsize != m->size)
        die(EXIT_BAD, "%s is %" PRIu64 " bytes, the map's disk is %" PRIu64 " bytes: "
            "not a copy of the same disk, or the disk was resized between the snapshots "
            "(then make a new full copy); nothing was changed", base_path, bsize, m->size);
    if (csize != m->size)
        die(EXIT_BAD, "%s is %" PRIu64 " bytes, the map's disk is %" PRIu64 " bytes: "
            "not the changes this map describes; nothing was changed", changes_path, csize,
            m->size);

    uint64_t zero = 0, data = 0;
    for (size_t i = 0; i < m->n; i++)
        *(m->v[i].zero ? &zero : &data) += m->v[i].length;
    if (arg_dry_run) {
        printf("vmsnap-apply: would write %" PRIu64 " bytes and zero %" PRIu64 " bytes in %zu "
               "extents of %s (changes since '%s')\n", data, zero, m->n, base_path, m->base);
        return 0;
    }

    int r = journal_write(journal_path, m, changes, &bst, btime);
    if (r < 0)
        die(EXIT_IO, "writing the journal %s: %s; nothing was changed", journal_path, strerror(-r));
    fault_point("apply-journal-written");

    int jfd = open(journal_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct journal_head h;
    struct journal_extent *v = NULL;
    uint64_t dstart, written, zeroed;
    if (jfd < 0 || journal_read(jfd, &h, &v, &dstart) < 0)
        die(EXIT_IO, "reading back the journal %s failed; nothing was changed", journal_path);
    r = journal_apply(jfd, base, S_ISREG(bst.st_mode), &h, v, dstart, &written, &zeroed);
    if (r < 0)
        die(EXIT_IO, "writing %s: %s (the journal %s stays: run again to finish)", base_path,
            strerror(-r), journal_path);
    if (unlink(journal_path) < 0 || sync_dir_of(journal_path) < 0)
        die(EXIT_IO, "%s: %s", journal_path, strerror(errno));
    if (!arg_quiet)
        printf("vmsnap-apply: %s: %" PRIu64 " bytes written, %" PRIu64 " zeroed, in %zu extents "
               "(changes since '%s')\n", base_path, written, zeroed, m->n, m->base);
    free(v);
    close(jfd);
    close(base);
    close(changes);
    return 0;
}
