/* fs/main.c: options, mount lifecycle, signals.
 *
 *   vmsnapfs [OPTIONS] SOURCE MOUNTPOINT
 *
 * Also run by mount.fuse3 as `vmsnapfs SOURCE MOUNTPOINT -o OPTS` for
 * `mount -t fuse.vmsnapfs` and /etc/fstab. Without -f the daemon goes into
 * the background only once the mount is up, so errors reach the caller.
 */
#define LOG_MODULE "main"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "fs.h"
#include "log.h"

static const char *arg_source;
static const char *arg_mountpoint;
static bool arg_foreground;
static bool arg_debug;
static bool arg_single_thread;
static char *arg_fuse_opts;           /* options passed on to FUSE */
static struct vmsnapfs_opts arg_opts;

static void
usage(FILE *f)
{
    fprintf(f,
"Usage: vmsnapfs [OPTIONS] SOURCE MOUNTPOINT\n"
"Shows virtual machines as directories: snapshots, restore, raw disk images.\n"
"\n"
"SOURCE:\n"
"  qemu:///system, qemu:///session, qemu+ssh://HOST/system, test:///default\n"
"                          a libvirt URI\n"
"\n"
"Options:\n"
"  -f                      stay in the foreground\n"
"  -d                      debug output (implies -f); VMSNAPFS_DEBUG=MODULES\n"
"                          chooses modules instead\n"
"  -s                      single-threaded\n"
"  -h, --help              show this help and exit\n"
"  -V, --version           show the version and exit\n"
"  -o OPT[,OPT...]         mount options:\n"
"\n"
"Mount options:\n"
"  failure_deadline=DURATION  bound on a snapshot or restore (default 5m;\n"
"                          0 = none; 300ms, 1.5h, 2h45m; a bare number is seconds)\n"
"  consistency=MODE        best-effort (default) or required: refuse\n"
"                          crash-consistent snapshots of running VMs (EAGAIN)\n"
"  allow_other             let other users see the tree (permissions are then\n"
"                          checked by the kernel: default_permissions)\n"
"  admin_group=GROUP       the group that may read data and make changes\n"
"  no_safety_snapshot      no pre-restore snapshot before a restore\n"
"  no_checksums            no snapshots/S/SHA256SUMS (nothing is hashed)\n"
"  export_link=LINK        KubeVirt disks: auto (default: internal in the\n"
"                          cluster, else external), internal or external\n"
"  and the generic FUSE and mount options (ro, nosuid, nodev, ...)\n"
"\n"
"See vmsnapfs(8).\n");
}

/* -o list: ours go to arg_opts, the rest to arg_fuse_opts. */
static int
parse_o(const char *list)
{
    _cleanup_free_ char *bad = NULL;
    int r = opts_parse(&arg_opts, list, &arg_fuse_opts, &bad);

    if (r < 0)
        fprintf(stderr, "vmsnapfs: invalid mount option '%s'\n", bad ? bad : list);
    return r;
}

/* 0: go on; 1: exit 0 (help, version); < 0: usage error */
static int
parse_argv(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("vmsnapfs %s\n", PACKAGE_VERSION);
            return 1;
        } else if (strcmp(a, "-f") == 0) {
            arg_foreground = true;
        } else if (strcmp(a, "-d") == 0) {
            arg_debug = arg_foreground = true;
        } else if (strcmp(a, "-s") == 0) {
            arg_single_thread = true;
        } else if (strcmp(a, "-o") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "vmsnapfs: -o needs a value\n");
                return -EINVAL;
            }
            if (parse_o(argv[i]) < 0)
                return -EINVAL;
        } else if (strncmp(a, "-o", 2) == 0) {
            if (parse_o(a + 2) < 0)
                return -EINVAL;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "vmsnapfs: unknown option '%s'\n", a);
            return -EINVAL;
        } else if (!arg_source) {
            arg_source = a;
        } else if (!arg_mountpoint) {
            arg_mountpoint = a;
        } else {
            fprintf(stderr, "vmsnapfs: too many arguments: '%s'\n", a);
            return -EINVAL;
        }
    }
    if (!arg_source || !arg_mountpoint) {
        fprintf(stderr, "vmsnapfs: SOURCE and MOUNTPOINT are required "
                        "(see vmsnapfs --help)\n");
        return -EINVAL;
    }
    return 0;
}

/* fsname=SOURCE with ',' and '\' escaped for libfuse's option parser */
static char *
fsname_opt(const char *source)
{
    size_t n = strlen(source);
    char *s = malloc(2 * n + sizeof "fsname="), *p;

    if (!s)
        return NULL;
    p = stpcpy(s, "fsname=");
    for (const char *c = source; *c; c++) {
        if (*c == ',' || *c == '\\')
            *p++ = '\\';
        *p++ = *c;
    }
    *p = '\0';
    return s;
}

static int
resolve_admin_group(struct fs *fs)
{
    if (!arg_opts.admin_group)
        return 0;
    struct group *g = getgrnam(arg_opts.admin_group);
    if (!g) {
        char *end;
        unsigned long gid = strtoul(arg_opts.admin_group, &end, 10);
        if (*end || end == arg_opts.admin_group) {
            fprintf(stderr, "vmsnapfs: no such group '%s'\n", arg_opts.admin_group);
            return -EINVAL;
        }
        fs->gid = (gid_t) gid;
        return 0;
    }
    fs->gid = g->gr_gid;
    return 0;
}

/* Signals: SIGTERM, SIGINT and SIGHUP only wake a thread of ours (through
 * a pipe), which stops the cache invalidations while the FUSE workers still
 * answer the kernel (an invalidation can wait on a request), then ends the
 * session loop. libfuse's own handlers would end the loop first. */
static int signal_pipe[2] = { -1, -1 };
static pthread_t main_thread;

static void
on_signal(int sig)
{
    int saved = errno;
    unsigned char c = (unsigned char) sig;
    (void) !write(signal_pipe[1], &c, 1);
    errno = saved;
}

static void
on_wake(int sig)
{
    (void) sig;     /* interrupts the main thread's wait */
}

static void
stop_notifications(struct fs *fs)
{
    struct model_listener none = { 0 };
    model_set_listener(fs->model, &none);
    notify_stop(fs);
}

/* Is our mount still in this mount namespace's table? (/proc/self/
 * mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT ...") */
static bool
still_mounted(dev_t dev)
{
    _cleanup_(fclosep) FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[4096];
    unsigned maj, min;

    if (!f)
        return true;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%*u %*u %u:%u", &maj, &min) == 2 &&
            makedev(maj, min) == dev)
            return true;
    return false;
}

/* Waits for a signal, or for the mount to leave the mount table while the
 * kernel keeps the connection (a copy of the mount lives on in another
 * mount namespace, e.g. a VM that QEMU started while it was mounted):
 * either way, stop invalidations, then end the session loop. */
static void *
signal_thread(void *opaque)
{
    struct fs *fs = opaque;
    unsigned char c = 0;
    struct stat st;
    int mfd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    bool watch = mfd >= 0 && stat(arg_mountpoint, &st) == 0;

    for (;;) {
        struct pollfd p[2] = { { signal_pipe[0], POLLIN, 0 },
                               { watch ? mfd : -1, POLLPRI, 0 } };
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN) {
            if (read(signal_pipe[0], &c, 1) == 1)
                break;
            continue;
        }
        if ((p[1].revents & (POLLPRI | POLLERR)) && !still_mounted(st.st_dev)) {
            c = 255;
            break;
        }
    }
    if (mfd >= 0)
        close(mfd);
    if (c == 0)
        return NULL;            /* the loop ended by itself (unmount) */
    if (c == 255)
        log_info("unmounted from '%s': stopping", arg_mountpoint);
    else
        log_info("signal %d: unmounting", c);
    stop_notifications(fs);
    volume_read_stop(fs);
    fuse_session_exit(fs->se);
    pthread_kill(main_thread, SIGUSR2);
    return NULL;
}

static int
setup_signals(void)
{
    struct sigaction sa = { .sa_handler = on_signal };
    struct sigaction wake = { .sa_handler = on_wake };   /* no SA_RESTART */
    struct sigaction ign = { .sa_handler = SIG_IGN };

    if (pipe2(signal_pipe, O_CLOEXEC) < 0)
        return -errno;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&wake.sa_mask);
    sigemptyset(&ign.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
        sigaction(SIGHUP, &sa, NULL) < 0 || sigaction(SIGUSR2, &wake, NULL) < 0 ||
        sigaction(SIGPIPE, &ign, NULL) < 0)
        return -errno;
    main_thread = pthread_self();
    return 0;
}

static int
run(struct fs *fs)
{
    _cleanup_free_ char *shown = uri_redact(arg_source);    /* /proc/mounts */
    _cleanup_free_ char *fsname = shown ? fsname_opt(shown) : NULL;
    char *fargv[12];
    int fargc = 0, r;

    fargv[fargc++] = (char *) "vmsnapfs";
    if (arg_debug)
        fargv[fargc++] = (char *) "-d";
    fargv[fargc++] = (char *) "-o";
    fargv[fargc++] = (char *) "subtype=vmsnapfs";
    fargv[fargc++] = (char *) "-o";
    fargv[fargc++] = fsname;
    if (arg_fuse_opts) {
        fargv[fargc++] = (char *) "-o";
        fargv[fargc++] = arg_fuse_opts;
    }
    if (arg_opts.allow_other) {
        /* others see the tree: the kernel checks the modes (SPEC "Security") */
        fargv[fargc++] = (char *) "-o";
        fargv[fargc++] = (char *) "default_permissions";
    }
    struct fuse_args args = FUSE_ARGS_INIT(fargc, fargv);
    if (!fsname)
        return -ENOMEM;

    fs->se = fuse_session_new(&args, &fs_ops, sizeof fs_ops, fs);
    fuse_opt_free_args(&args);
    if (!fs->se) {
        fprintf(stderr, "vmsnapfs: cannot set up the FUSE session "
                        "(see the messages above)\n");
        return -EINVAL;
    }
    if (fuse_session_mount(fs->se, arg_mountpoint) != 0) {
        fuse_session_destroy(fs->se);
        return -EIO;
    }

    pthread_t sig_thread;
    bool sig_thread_started = false;
    r = notify_start(fs);
    if (r >= 0 && pthread_create(&sig_thread, NULL, signal_thread, fs) == 0)
        sig_thread_started = true;
    else
        r = -EAGAIN;
    if (r >= 0) {
        struct model_listener l = notify_listener;
        l.opaque = fs;
        model_set_listener(fs->model, &l);
        daemon_ready(0);
        log_info("mounted '%s' on '%s'", shown, arg_mountpoint);
        daemon_sd_notify("READY=1");
        if (arg_single_thread) {
            r = fuse_session_loop(fs->se);
        } else {
            /* every operation that waits (a restore's grace period, a
             * freeze, a merge) holds a worker; libfuse's default of 10
             * would leave listings queued in the kernel behind them */
            struct fuse_loop_config *cfg = fuse_loop_cfg_create();
            /* stores wait for pages that other workers' reads hold:
             * only with several workers */
            fs->store_ahead = true;
            if (!cfg) {
                r = -ENOMEM;
            } else {
                fuse_loop_cfg_set_max_threads(cfg, FS_MAX_WORKERS);
                fuse_loop_cfg_set_idle_threads(cfg, 10);
                r = fuse_session_loop_mt(fs->se, cfg);
                fuse_loop_cfg_destroy(cfg);
            }
        }
        daemon_sd_notify("STOPPING=1");
    }
    if (sig_thread_started) {
        unsigned char none = 0;
        (void) !write(signal_pipe[1], &none, 1);   /* if it still waits */
        pthread_join(sig_thread, NULL);
    }
    stop_notifications(fs);
    fuse_session_unmount(fs->se);
    fuse_session_destroy(fs->se);
    fs_close_views(fs);         /* backup jobs, qemu-nbd: nothing stays */
    fs->se = NULL;
    log_info("unmounted '%s'", arg_mountpoint);
    return r < 0 ? r : 0;
}

int
main(int argc, char **argv)
{
    struct fs fs = { 0 };
    int r;

    opts_init(&arg_opts);
    r = parse_argv(argc, argv);
    if (r != 0) {
        opts_clear(&arg_opts);
        free(arg_fuse_opts);
        return r > 0 ? 0 : 2;
    }
    log_set_debug(arg_debug ? "all" : getenv("VMSNAPFS_DEBUG"));

    /* the daemon moves to / in the background: keep an absolute path */
    _cleanup_free_ char *abs_mnt = NULL;
    if (strncmp(arg_mountpoint, "/dev/fd/", 8) != 0) {
        abs_mnt = realpath(arg_mountpoint, NULL);
        if (!abs_mnt) {
            fprintf(stderr, "vmsnapfs: mountpoint '%s': %s\n", arg_mountpoint,
                    strerror(errno));
            opts_clear(&arg_opts);
            free(arg_fuse_opts);
            return 1;
        }
        arg_mountpoint = abs_mnt;
    }

    if (!arg_foreground && daemon_begin() < 0) {
        fprintf(stderr, "vmsnapfs: cannot go into the background: %s\n",
                strerror(errno));
        return 1;
    }

    if (setup_signals() < 0) {
        fprintf(stderr, "vmsnapfs: cannot set up signal handling: %s\n",
                strerror(errno));
        daemon_ready(1);
        return 1;
    }
    fs.opts = &arg_opts;
    fs.uid = 0;
    clock_gettime(CLOCK_REALTIME, &fs.started);
    pthread_mutex_init(&fs.vlock, NULL);
    r = resolve_admin_group(&fs);
    if (r >= 0)
        r = inode_init(&fs);
    if (r >= 0) {
        r = model_open(arg_source, &arg_opts, &fs.model);
        _cleanup_free_ char *shown = uri_redact(arg_source);
        if (r < 0)
            fprintf(stderr, "vmsnapfs: cannot open '%s' (see the messages above)\n",
                    shown ? shown : "SOURCE");
    }
    if (r >= 0)
        r = run(&fs);
    daemon_ready(r < 0 ? 1 : 0);    /* if run() did not get that far */

    model_close(fs.model);
    if (fs.nodes)
        inode_fini(&fs);
    opts_clear(&arg_opts);
    free(arg_fuse_opts);
    return r < 0 ? 1 : 0;
}
