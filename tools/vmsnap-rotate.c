/* tools/vmsnap-rotate.c: scheduled snapshots with retention, through the
 * mount (the shell stays the interface).
 *
 *   vmsnap-rotate VMDIR --keep-last 3 --keep-daily 7 --keep-weekly 4
 *
 * Takes a snapshot PREFIX-YYYYMMDD-HHMMSS (UTC) with mkdir in
 * VMDIR/snapshots, then removes with rmdir the snapshots named exactly so
 * (same prefix) that no rule keeps (rotate-prune.h: Proxmox Backup Server's
 * prune rules). Names without the prefix pattern are never touched. When
 * the snapshot fails nothing is removed; a snapshot that a restore, clone or
 * open volume still needs (EBUSY) is kept and reported, not an error.
 * vmsnapfs@.service's companion vmsnapfs-snapshot@.timer runs it hourly.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "rotate-prune.h"

#define EXIT_SNAPSHOT 1     /* the snapshot was not taken: nothing removed */
#define EXIT_BAD 2          /* bad arguments, or no VMDIR/snapshots */
#define EXIT_PRUNE 3        /* taken, but a removal failed (not busy) */

#define KEEP_MAX 1000000u
#define NAME_BUF 128

static bool arg_dry_run, arg_verbose, arg_no_snapshot;
static const char *arg_prefix = "auto";
static struct rotate_policy arg_policy;

static void
usage(FILE *f)
{
    fprintf(f,
"Usage: vmsnap-rotate [OPTIONS] VMDIR\n"
"\n"
"Takes a snapshot of the VM at VMDIR (a VM's directory on a vmsnapfs mount),\n"
"named PREFIX-YYYYMMDD-HHMMSS in UTC, with mkdir VMDIR/snapshots/NAME; then\n"
"removes with rmdir the snapshots named PREFIX-YYYYMMDD-HHMMSS that no keep\n"
"rule keeps (the rules of Proxmox Backup Server's prune). Other names are\n"
"never touched. Without any --keep-* option every snapshot is kept.\n"
"\n"
"Options:\n"
"      --keep-last N      keep the N newest snapshots\n"
"      --keep-hourly N    keep the newest snapshot of each of the last N hours\n"
"                         that have one\n"
"      --keep-daily N     ... of each of the last N days\n"
"      --keep-weekly N    ... of each of the last N ISO weeks (Monday to Sunday)\n"
"      --keep-monthly N   ... of each of the last N months\n"
"      --keep-yearly N    ... of each of the last N years\n"
"                         (rules apply in this order; a bucket an earlier rule\n"
"                         kept a snapshot of is skipped; 0: no such rule)\n"
"      --prefix P         the names' prefix (default auto): [A-Za-z0-9._-],\n"
"                         up to 64, starting with a letter or digit\n"
"      --no-snapshot      take no snapshot, only remove\n"
"  -n, --dry-run          tell what would be done (the snapshot it would take\n"
"                         counts); change nothing\n"
"      --now TIME         act as at TIME, YYYY-MM-DDTHH:MM:SSZ (UTC), for catch-up\n"
"                         runs and tests; also from $VMSNAP_ROTATE_NOW\n"
"  -v, --verbose          also list the snapshots kept, each with its rule\n"
"  -h, --help             this text\n"
"  -V, --version          the version\n"
"\n"
"Output: a line per action (snapshot NAME, removed NAME, busy, kept: NAME),\n"
"then a summary: vmsnap-rotate: VMDIR: took NAME, kept K, removed R, busy B.\n"
"\n"
"Exit status: 0 done (snapshots still in use, EBUSY, are kept and reported,\n"
"not an error); 1 the snapshot could not be taken (nothing was removed);\n"
"2 bad arguments, or VMDIR has no snapshots/ directory; 3 the snapshots could\n"
"not be listed, or one could not be removed for another reason than EBUSY\n"
"(the new snapshot was taken).\n");
}

__attribute__((format(printf, 2, 3))) _Noreturn static void
die(int status, const char *fmt, ...)
{
    va_list ap;
    fputs("vmsnap-rotate: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

/* a --keep-* count: digits only, at most KEEP_MAX */
static unsigned
parse_keep(const char *opt, const char *s)
{
    unsigned long v = 0;
    if (!*s)
        die(EXIT_BAD, "--%s: a number is missing", opt);
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            die(EXIT_BAD, "--%s: '%s' is not a count (0 to %u)", opt, s, KEEP_MAX);
        v = v * 10 + (unsigned long) (*p - '0');
        if (v > KEEP_MAX)
            die(EXIT_BAD, "--%s: '%s' is too large (at most %u)", opt, s, KEEP_MAX);
    }
    return (unsigned) v;
}

struct listing {
    struct rotate_snap *v;
    size_t n, cap;
};

static void
listing_free(struct listing *l)
{
    for (size_t i = 0; i < l->n; i++)
        free((char *) l->v[i].name);
    free(l->v);
}

static int
listing_add(struct listing *l, const char *name, int64_t time)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct rotate_snap *v = reallocarray(l->v, cap, sizeof(*v));
        if (!v)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return -ENOMEM;
    l->v[l->n++] = (struct rotate_snap) { .name = copy, .time = time };
    return 0;
}

static bool
listing_has(const struct listing *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].name, name) == 0)
            return true;
    return false;
}

static bool
is_dir(int dirfd, const char *name)
{
    struct stat st;
    return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* the snapshots of dirfd named PREFIX-YYYYMMDD-HHMMSS: 0 or -errno */
static int
list_snapshots(int dirfd, struct listing *l)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int r = -errno;
        close(fd);
        return r;
    }
    int r = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            r = errno ? -errno : 0;
            break;
        }
        int64_t t;
        if (!rotate_parse_name(arg_prefix, e->d_name, &t)) {
            if (arg_verbose && strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                printf("ignored %s (not %s-YYYYMMDD-HHMMSS)\n", e->d_name, arg_prefix);
            continue;
        }
        /* a snapshot is a directory; a file planted with such a name is not one */
        if (e->d_type == DT_UNKNOWN ? !is_dir(dirfd, e->d_name) : e->d_type != DT_DIR) {
            if (arg_verbose)
                printf("ignored %s (not a directory)\n", e->d_name);
            continue;
        }
        r = listing_add(l, e->d_name, t);
        if (r < 0)
            break;
    }
    closedir(d);
    return r;
}

/* the time to act as: --now, else $VMSNAP_ROTATE_NOW, else the clock */
static int64_t
act_time(const char *now_opt)
{
    const char *s = now_opt, *what = "--now";
    if (!s) {
        s = getenv("VMSNAP_ROTATE_NOW");
        what = "VMSNAP_ROTATE_NOW";
        if (s && !*s)
            s = NULL;
    }
    int64_t t;
    if (!s)
        return (int64_t) time(NULL);
    if (rotate_parse_time(s, &t) < 0)
        die(EXIT_BAD, "%s: '%s' is not a time YYYY-MM-DDTHH:MM:SSZ (UTC, 1970 to 9999)", what, s);
    return t;
}

int
main(int argc, char **argv)
{
    enum { OPT_NOW = 0x100, OPT_PREFIX, OPT_NO_SNAPSHOT, OPT_KEEP };
    static const struct option opts[] = {
        { "keep-last", required_argument, NULL, OPT_KEEP + ROTATE_LAST },
        { "keep-hourly", required_argument, NULL, OPT_KEEP + ROTATE_HOURLY },
        { "keep-daily", required_argument, NULL, OPT_KEEP + ROTATE_DAILY },
        { "keep-weekly", required_argument, NULL, OPT_KEEP + ROTATE_WEEKLY },
        { "keep-monthly", required_argument, NULL, OPT_KEEP + ROTATE_MONTHLY },
        { "keep-yearly", required_argument, NULL, OPT_KEEP + ROTATE_YEARLY },
        { "prefix", required_argument, NULL, OPT_PREFIX },
        { "no-snapshot", no_argument, NULL, OPT_NO_SNAPSHOT },
        { "dry-run", no_argument, NULL, 'n' },
        { "now", required_argument, NULL, OPT_NOW },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    const char *now_opt = NULL;
    int c;

    while ((c = getopt_long(argc, argv, "nvhV", opts, NULL)) != -1) {
        switch (c) {
        case 'n': arg_dry_run = true; break;
        case 'v': arg_verbose = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("vmsnap-rotate %s\n", PACKAGE_VERSION); return 0;
        case OPT_NOW: now_opt = optarg; break;
        case OPT_PREFIX: arg_prefix = optarg; break;
        case OPT_NO_SNAPSHOT: arg_no_snapshot = true; break;
        default:
            if (c >= OPT_KEEP && c < OPT_KEEP + ROTATE_N_RULES) {
                enum rotate_rule rule = (enum rotate_rule) (c - OPT_KEEP);
                char opt[32];
                snprintf(opt, sizeof(opt), "keep-%s", rotate_rule_name(rule));
                arg_policy.keep[rule] = parse_keep(opt, optarg);
                break;
            }
            usage(stderr);
            return EXIT_BAD;
        }
    }
    if (argc - optind != 1) {
        fprintf(stderr, "vmsnap-rotate: %s\n",
                argc == optind ? "VMDIR is missing" : "one VMDIR only");
        usage(stderr);
        return EXIT_BAD;
    }
    const char *vmdir = argv[optind];
    if (!*vmdir)
        die(EXIT_BAD, "VMDIR is empty");
    if (!rotate_prefix_valid(arg_prefix))
        die(EXIT_BAD, "--prefix: '%s' is not a prefix: 1 to 64 of [A-Za-z0-9._-], "
            "starting with a letter or digit", arg_prefix);
    int64_t now = act_time(now_opt);
    char name[NAME_BUF];
    if (rotate_format_name(arg_prefix, now, name, sizeof(name)) < 0)
        die(EXIT_BAD, "cannot name a snapshot for that time");

    _cleanup_free_ char *snapdir = NULL;
    if (asprintf(&snapdir, "%s/snapshots", vmdir) < 0)
        die(EXIT_SNAPSHOT, "out of memory");
    _cleanup_close_ int dirfd = open(snapdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        struct stat st;
        if (stat(vmdir, &st) < 0)
            die(EXIT_BAD, "%s: %s", vmdir, strerror(errno));
        die(EXIT_BAD, "%s: %s (is %s a VM's directory on a vmsnapfs mount?)", snapdir,
            strerror(errno), vmdir);
    }

    /* the snapshot first: a run that cannot take one removes nothing */
    const char *took = NULL;
    bool existed = false;
    if (!arg_no_snapshot && arg_dry_run) {
        printf("would snapshot %s\n", name);
        took = name;
    } else if (!arg_no_snapshot) {
        if (mkdirat(dirfd, name, 0755) == 0) {
            printf("snapshot %s\n", name);
        } else if (errno == EEXIST && is_dir(dirfd, name)) {
            /* a second run in the same second (or --now again): it is there */
            printf("snapshot %s exists already\n", name);
            existed = true;
        } else {
            int e = errno;    /* EEXIST: a file of that name is no snapshot */
            fprintf(stderr, "vmsnap-rotate: mkdir %s/%s: %s\n", snapdir, name, strerror(e));
            printf("vmsnap-rotate: %s: snapshot %s failed (%s), nothing removed\n", vmdir, name,
                   strerror(e));
            return EXIT_SNAPSHOT;
        }
        took = name;
        fflush(stdout);
    }

    _cleanup_(listing_free) struct listing l = { 0 };
    int r = list_snapshots(dirfd, &l);
    if (r == 0 && took && arg_dry_run && !listing_has(&l, name))
        r = listing_add(&l, name, now);
    if (r == 0)
        r = rotate_select(l.v, l.n, &arg_policy);
    if (r < 0) {
        fprintf(stderr, "vmsnap-rotate: listing %s: %s\n", snapdir, strerror(-r));
        printf("vmsnap-rotate: %s: took %s%s, listing the snapshots failed (%s), nothing removed\n",
               vmdir, took ? took : "none", existed ? " (it existed)" : "", strerror(-r));
        return EXIT_PRUNE;
    }
    if (!rotate_policy_keeps_something(&arg_policy))
        printf("no --keep-* option: every snapshot is kept\n");

    size_t kept = 0, removed = 0, busy = 0, failed = 0;
    for (size_t i = 0; i < l.n; i++) {
        const struct rotate_snap *s = &l.v[i];
        if (rotate_mark_keeps(s->mark)) {
            kept++;
            if (arg_verbose || arg_dry_run)
                printf("kept %s (%s)\n", s->name, rotate_mark_name(s->mark));
            continue;
        }
        if (arg_dry_run) {
            printf("would remove %s\n", s->name);
            removed++;
            continue;
        }
        if (unlinkat(dirfd, s->name, AT_REMOVEDIR) == 0) {
            printf("removed %s\n", s->name);
            removed++;
        } else if (errno == EBUSY) {
            printf("busy, kept: %s (a restore, a clone or an open volume still needs it)\n",
                   s->name);
            busy++;
        } else if (errno == ENOENT) {
            /* gone meanwhile (removed by hand): what was wanted */
            printf("removed %s (already gone)\n", s->name);
            removed++;
        } else {
            fprintf(stderr, "vmsnap-rotate: rmdir %s/%s: %s\n", snapdir, s->name, strerror(errno));
            failed++;
        }
        fflush(stdout);
    }

    if (arg_dry_run)
        printf("vmsnap-rotate: %s: dry run: would take %s, keep %zu, remove %zu", vmdir,
               took ? took : "none", kept, removed);
    else
        printf("vmsnap-rotate: %s: took %s%s, kept %zu, removed %zu, busy %zu", vmdir,
               took ? took : "none", existed ? " (it existed)" : "", kept, removed, busy);
    if (!arg_dry_run && failed)
        printf(", failed %zu", failed);
    printf("\n");
    return failed ? EXIT_PRUNE : 0;
}
