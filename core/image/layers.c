/* core/image/layers.c: see layers.h. The qcow2 header (QEMU's docs/interop/
 * qcow2.txt): magic "QFI\xfb", version, then the backing file name's
 * offset (u64) and length (u32), all big-endian. */
#define LOG_MODULE "layers"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "hashmap.h"
#include "layers.h"
#include "log.h"
#include "state.h"

#define QCOW2_MAGIC 0x514649fbu
#define MAX_BACKING_NAME 4096
#define MAX_CHAIN 1024

int
layer_virtual_size(const char *path, const char *format, uint64_t *ret)
{
    bool qcow2 = format && strcmp(format, "qcow2") == 0;
    bool raw = !format || !format[0] || strcmp(format, "raw") == 0;

    if (!qcow2 && !raw)
        return -ENOTSUP;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return -errno;
    if (qcow2) {
        unsigned char h[32];
        uint32_t magic;
        uint64_t size;
        if (pread(fd, h, sizeof h, 0) != (ssize_t) sizeof h)
            return -EINVAL;
        memcpy(&magic, h, 4);
        memcpy(&size, h + 24, 8);
        if (be32toh(magic) != QCOW2_MAGIC)
            return -EINVAL;
        *ret = be64toh(size);
        return 0;
    }
    if (S_ISBLK(st.st_mode)) {
        uint64_t size;
        if (ioctl(fd, BLKGETSIZE64, &size) < 0)
            return -errno;
        *ret = size;
        return 0;
    }
    if (!S_ISREG(st.st_mode))
        return -ENOTSUP;
    *ret = (uint64_t) st.st_size;
    return 0;
}

/* layer_backing() of the image open as fd (at path). */
static int
backing_of_fd(int fd, const char *path, char **ret)
{
    unsigned char h[20];

    *ret = NULL;
    ssize_t n = pread(fd, h, sizeof h, 0);
    if (n < 0)
        return -errno;
    uint32_t magic, len;
    uint64_t off;
    if ((size_t) n < sizeof h)
        return 0;                       /* too small for qcow2: raw */
    memcpy(&magic, h, 4);
    if (be32toh(magic) != QCOW2_MAGIC)
        return 0;                       /* raw (or a format without backing) */
    memcpy(&off, h + 8, 8);
    memcpy(&len, h + 16, 4);
    off = be64toh(off);
    len = be32toh(len);
    if (off == 0 || len == 0)
        return 0;
    if (len > MAX_BACKING_NAME || off > INT64_MAX)
        return -EINVAL;
    _cleanup_free_ char *name = malloc((size_t) len + 1);
    if (!name)
        return -ENOMEM;
    n = pread(fd, name, len, (off_t) off);
    if (n < 0)
        return -errno;
    if ((size_t) n != len || memchr(name, '\0', len))
        return -EINVAL;
    name[len] = '\0';
    /* relative names are relative to the image's directory; protocol
     * names (nbd://, json:{...}) stay as they are */
    if (name[0] != '/' && !strchr(name, ':')) {
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
            return -ENOMEM;
        if (asprintf(ret, "%s/%s", dirname(copy), name) < 0) {
            *ret = NULL;
            return -ENOMEM;
        }
        return 0;
    }
    *ret = TAKE_PTR(name);
    return 0;
}

int
layer_backing(const char *path, char **ret)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

    *ret = NULL;
    if (fd < 0)
        return -errno;
    return backing_of_fd(fd, path, ret);
}

/* The backing format a qcow2 header names (header extension 0xe2792aca),
 * in *ret (NULL if none). fd: the image; h: its first 104 bytes. */
static int
qcow2_backing_format(int fd, const unsigned char *h, size_t hlen, char **ret)
{
    uint32_t version, hdr_len = 72;
    memcpy(&version, h + 4, 4);
    version = be32toh(version);
    if (version >= 3) {
        if (hlen < 104)
            return -EINVAL;
        memcpy(&hdr_len, h + 100, 4);
        hdr_len = be32toh(hdr_len);
    }
    uint64_t off = hdr_len;
    *ret = NULL;
    for (int i = 0; i < 64; i++) {          /* extensions end with type 0 */
        unsigned char e[8];
        if (pread(fd, e, sizeof e, (off_t) off) != (ssize_t) sizeof e)
            return -EINVAL;
        uint32_t type, len;
        memcpy(&type, e, 4);
        memcpy(&len, e + 4, 4);
        type = be32toh(type);
        len = be32toh(len);
        if (type == 0)
            return 0;
        if (len > 65536)
            return -EINVAL;
        if (type == 0xe2792acau) {
            char *f = calloc(1, (size_t) len + 1);
            if (!f)
                return -ENOMEM;
            if (pread(fd, f, len, (off_t) off + 8) != (ssize_t) len || memchr(f, '\0', len)) {
                free(f);
                return -EINVAL;
            }
            *ret = f;
            return 0;
        }
        off += 8 + (((uint64_t) len + 7) & ~UINT64_C(7));
    }
    return -EINVAL;
}

/* The backing file of the qcow2 image open as fd (at path) and the format
 * its header names: -ENOTSUP if it names none (or the backing is not a
 * file). */
static int
qcow2_backing_with_format(int fd, const char *path, char **ret_backing,
                          char **ret_format)
{
    unsigned char h[104] = { 0 };
    uint32_t magic;

    *ret_backing = *ret_format = NULL;
    ssize_t n = pread(fd, h, sizeof h, 0);
    memcpy(&magic, h, 4);
    if (n < 72 || be32toh(magic) != QCOW2_MAGIC)
        return -EINVAL;
    int r = backing_of_fd(fd, path, ret_backing);
    if (r < 0 || !*ret_backing)
        return r;
    r = qcow2_backing_format(fd, h, (size_t) n, ret_format);
    if (r < 0 || !*ret_format || (*ret_backing)[0] != '/') {
        free(*ret_backing);
        free(*ret_format);
        *ret_backing = *ret_format = NULL;
        return r < 0 ? r : -ENOTSUP;
    }
    return 0;
}

int
layer_chain_usage(const char *top, const char *format, uint64_t *ret_size,
                  uint64_t *ret_allocated)
{
    _cleanup_free_ char *path = strdup(top), *fmt = strdup(format ? format : "raw");
    uint64_t size = 0, allocated = 0;
    int r;

    if (!path || !fmt)
        return -ENOMEM;
    r = layer_virtual_size(path, fmt, &size);
    if (r < 0)
        return r;
    for (int depth = 0; path; depth++) {
        bool qcow2 = strcmp(fmt, "qcow2") == 0;
        if (depth >= MAX_CHAIN || (!qcow2 && strcmp(fmt, "raw") != 0))
            return -ENOTSUP;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
            return -errno;
        if (S_ISBLK(st.st_mode))
            allocated = size;           /* a device holds all it is */
        else if (S_ISREG(st.st_mode))
            allocated += (uint64_t) st.st_blocks * 512;
        else
            return -ENOTSUP;
        if (!qcow2)
            break;                      /* raw: the base */
        /* the next layer only as its format is named (QEMU would probe
         * one that is not), and only a file */
        char *next = NULL, *next_fmt = NULL;
        r = qcow2_backing_with_format(fd, path, &next, &next_fmt);
        if (r < 0)
            return r;
        if (!next)
            break;
        free(path);
        free(fmt);
        path = next;
        fmt = next_fmt;
    }
    *ret_size = size;
    *ret_allocated = allocated < size ? allocated : size;
    return 0;
}

int
layer_backing_usage(const char *top, const char *format, uint64_t *ret_size,
                    uint64_t *ret_allocated)
{
    _cleanup_free_ char *backing = NULL, *backing_fmt = NULL;

    if (!format || strcmp(format, "qcow2") != 0)
        return -ENOTSUP;
    _cleanup_close_ int fd = open(top, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = qcow2_backing_with_format(fd, top, &backing, &backing_fmt);
    if (r < 0)
        return r;
    if (!backing)
        return -ENOENT;
    return layer_chain_usage(backing, backing_fmt, ret_size, ret_allocated);
}

char *
layer_canonical(const char *path)
{
    char buf[PATH_MAX];

    if (realpath(path, buf))
        return strdup(buf);
    _cleanup_free_ char *d = strdup(path), *b = strdup(path);
    if (!d || !b)
        return NULL;
    if (path[0] == '/' && realpath(dirname(d), buf)) {
        char *out = NULL;
        const char *base = basename(b);
        if (asprintf(&out, "%s%s%s", buf, strcmp(buf, "/") ? "/" : "", base) < 0)
            return NULL;
        return out;
    }
    return strdup(path);
}

int
layer_chain(const char *top, char ***ret)
{
    char **v = calloc(MAX_CHAIN + 1, sizeof *v);
    size_t n = 0;
    int r = 0;

    if (!v)
        return -ENOMEM;
    _cleanup_free_ char *cur = layer_canonical(top);
    while (cur && n < MAX_CHAIN) {
        for (size_t i = 0; i < n; i++)
            if (strcmp(v[i], cur) == 0) {
                r = -ELOOP;             /* a loop: stop, keep what we have */
                goto out;
            }
        char *next = NULL;
        int k = layer_backing(cur, &next);
        v[n++] = TAKE_PTR(cur);
        if (k < 0) {
            r = k == -ENOENT ? -ENOENT : -EIO;
            break;
        }
        if (!next)
            break;
        if (next[0] != '/' || n >= MAX_CHAIN) {   /* not a file, or too deep */
            if (n < MAX_CHAIN)
                v[n++] = next;          /* listed, not followed */
            else
                free(next);
            break;
        }
        cur = layer_canonical(next);
        free(next);
        if (!cur)
            r = -ENOMEM;
    }
out:
    *ret = v;
    return r;
}

/* ---- the graph ------------------------------------------------------------ */

struct layer_refs {
    struct hashmap *used;       /* path -> (void *) 1 */
    struct hashmap *children;   /* parent path -> struct kids */
};

struct kids {
    size_t n;
    char *first;
    char **all;
};

static void
kids_free(void *p)
{
    struct kids *k = p;
    if (k) {
        strv_free(k->all);
        free(k);
    }
}

struct layer_refs *
layer_refs_new(void)
{
    struct layer_refs *g = calloc(1, sizeof *g);
    if (!g || !(g->used = hashmap_new()) || !(g->children = hashmap_new())) {
        layer_refs_free(g);
        return NULL;
    }
    return g;
}

void
layer_refs_free(struct layer_refs *g)
{
    if (!g)
        return;
    hashmap_free(g->used, NULL);
    hashmap_free(g->children, kids_free);
    free(g);
}

static int
add_child(struct layer_refs *g, const char *parent, const char *child)
{
    struct kids *k = hashmap_get(g->children, parent);
    if (!k) {
        if (!(k = calloc(1, sizeof *k)) || hashmap_put(g->children, parent, k, NULL) < 0) {
            free(k);
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->all[i], child) == 0)
            return 0;
    char **all = realloc(k->all, (k->n + 2) * sizeof *all);
    if (!all)
        return -ENOMEM;
    k->all = all;
    if (!(all[k->n] = strdup(child)))
        return -ENOMEM;
    all[++k->n] = NULL;
    k->first = all[0];
    return 0;
}

int
layer_refs_add(struct layer_refs *g, char *const *chain)
{
    for (size_t i = 0; chain && chain[i]; i++) {
        if (hashmap_put(g->used, chain[i], (void *) 1, NULL) < 0)
            return -ENOMEM;
        if (chain[i + 1] && add_child(g, chain[i + 1], chain[i]) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* Graph keys are canonical; so are lookups (a path through a symlink or
 * ".." names the same file). */
bool
layer_refs_used(const struct layer_refs *g, const char *path)
{
    _cleanup_free_ char *c = layer_canonical(path);
    return !c || hashmap_get(g->used, c) != NULL;     /* unsure: in use */
}

size_t
layer_refs_children(const struct layer_refs *g, const char *path, const char **ret_one)
{
    _cleanup_free_ char *c = layer_canonical(path);
    struct kids *k = c ? hashmap_get(g->children, c) : NULL;
    if (ret_one)
        *ret_one = k ? k->first : NULL;
    return k ? k->n : 0;
}

/* ---- the registry ---------------------------------------------------------- */

/* STATE/layers: one canonical path a line; STATE/layers.lock serialises
 * changes (the file itself is replaced on removal). */
static int
registry_lock(void)
{
    _cleanup_free_ char *dir = NULL, *path = NULL;
    int r = state_subdir(NULL, &dir);

    if (r < 0)
        return r;
    if (asprintf(&path, "%s/layers.lock", dir) < 0)
        return -ENOMEM;
    return state_lock(path, true);
}

static void
registry_path(char *buf, size_t size)
{
    snprintf(buf, size, "%s/layers", state_dir());
}

void
layer_mine_private(void)
{
    char reg[PATH_MAX];

    registry_path(reg, sizeof reg);
    _cleanup_close_ int fd = open(reg, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 && fchmod(fd, 0600) < 0)
        log_warning("cannot make '%s' private: %s", reg, strerror(errno));
}

int
layer_mine_add(const char *path)
{
    _cleanup_free_ char *p = layer_canonical(path);
    char reg[PATH_MAX];
    _cleanup_close_ int lock = registry_lock();

    if (!p)
        return -ENOMEM;
    if (lock < 0)
        return lock;
    registry_path(reg, sizeof reg);
    _cleanup_close_ int fd = open(reg, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW |
                                       O_CLOEXEC, 0600);
    if (fd < 0 || fchmod(fd, 0600) < 0)    /* one an older version made 0644 */
        return log_error_errno(-errno, "cannot open '%s': %s", reg, strerror(errno));
    size_t len = strlen(p);
    p[len] = '\n';      /* overwrite the NUL for one write; length kept */
    ssize_t n = write(fd, p, len + 1);
    p[len] = '\0';
    if (n != (ssize_t) (len + 1) || fsync(fd) < 0)
        return log_error_errno(-EIO, "cannot record '%s' in '%s'", p, reg);
    return 0;
}

/* The registry as a set of paths (read once), or NULL if it cannot be
 * read (then nothing counts as ours). */
static struct hashmap *
registry_read(void)
{
    char reg[PATH_MAX], *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct hashmap *set = hashmap_new();

    registry_path(reg, sizeof reg);
    _cleanup_(fclosep) FILE *f = set ? fopen(reg, "re") : NULL;
    while (f && (n = getline(&line, &cap, f)) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if (hashmap_put(set, line, (void *) 1, NULL) < 0) {
            hashmap_free(set, NULL);
            set = NULL;
            break;
        }
    }
    free(line);
    return set;
}

bool
layer_mine(const char *path)
{
    _cleanup_free_ char *p = layer_canonical(path);
    struct hashmap *set = p ? registry_read() : NULL;
    bool found = set && hashmap_get(set, p);

    hashmap_free(set, NULL);
    return found;
}

void
layer_mine_remove(const char *path)
{
    _cleanup_free_ char *p = layer_canonical(path);
    char reg[PATH_MAX], tmp[PATH_MAX + 8], *line = NULL;
    size_t cap = 0;
    _cleanup_close_ int lock = registry_lock();

    if (!p || lock < 0)
        return;
    registry_path(reg, sizeof reg);
    snprintf(tmp, sizeof tmp, "%s.new", reg);
    _cleanup_(fclosep) FILE *in = fopen(reg, "re");
    /* 0600 from birth, as every file of the state directory */
    int ofd = in ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
    if (ofd >= 0 && fchmod(ofd, 0600) < 0) {
        close(ofd);
        ofd = -1;
    }
    _cleanup_(fclosep) FILE *out = ofd >= 0 ? fdopen(ofd, "we") : NULL;
    if (!out) {
        if (ofd >= 0)
            close(ofd);
        return;
    }
    while (getline(&line, &cap, in) > 0) {
        size_t len = strcspn(line, "\n");
        if (len == strlen(p) && strncmp(line, p, len) == 0)
            continue;
        fprintf(out, "%.*s\n", (int) len, line);
    }
    free(line);
    int bad = fflush(out) != 0 || fsync(fileno(out)) < 0;
    bad |= fclose(out) != 0;
    out = NULL;
    if (bad || rename(tmp, reg) < 0) {
        log_warning("cannot update '%s': %s", reg, strerror(errno));
        unlink(tmp);
    }
}

size_t
layer_reclaim(const struct layer_refs *g, char *const *candidates)
{
    size_t gone = 0;
    struct hashmap *mine = candidates && candidates[0] ? registry_read() : NULL;

    for (size_t i = 0; mine && candidates[i]; i++) {
        _cleanup_free_ char *p = layer_canonical(candidates[i]);
        if (!p || layer_refs_used(g, p) || !hashmap_get(mine, p))
            continue;
        if (unlink(p) < 0 && errno != ENOENT) {
            log_warning("cannot remove '%s': %s", p, strerror(errno));
            continue;
        }
        log_info("removed '%s': nothing uses it any more", p);
        layer_mine_remove(p);
        gone++;
    }
    hashmap_free(mine, NULL);
    return gone;
}
