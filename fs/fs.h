/* fs/fs.h: the FUSE layer. FUSE_USE_VERSION is set here and only here.
 *
 * The FUSE layer translates: it maps inodes to nodes of the tree, parses
 * and renders text, and calls core/ for every decision. It includes no
 * backend header (no libvirt, no curl).
 */
#pragma once

#define FUSE_USE_VERSION 312   /* 3.12: the loop config with max_threads */

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* FUSE worker threads at most (see fs/main.c) */
#define FS_MAX_WORKERS 64

#include "hashmap.h"
#include "model.h"
#include "opts.h"

/* The largest FUSE read vmsnapfs serves, and st_blksize of volumes. */
#define VOLUME_IO_SIZE (1u << 20)

/* Kinds of node in the tree (SPEC "The tree"). */
enum node_kind {
    NODE_ROOT,
    NODE_NAMESPACE,         /* KubeVirt only */
    NODE_VM,
    NODE_VM_STATE,
    NODE_VM_AGENT,
    NODE_VM_DEFINITION,     /* domain.xml | vm.json */
    NODE_VM_EVENTS,
    NODE_VM_RESTORE,
    NODE_VOLUMES,
    NODE_VOLUME,
    NODE_SNAPSHOTS,
    NODE_SNAPSHOT,
    NODE_SNAP_PHASE,
    NODE_SNAP_INDICATIONS,
    NODE_SNAP_ERROR,
    NODE_SNAP_CREATED,
    NODE_SNAP_DEFINITION,
    NODE_SNAP_RESOURCES,    /* KubeVirt only */
    NODE_SNAP_STATUS,
    NODE_SNAP_CLONE,
    NODE_SNAP_VOLUMES,
    NODE_SNAP_VOLUME,
    NODE_SNAP_SUMS,         /* SHA256SUMS */
    NODE_SNAP_CHANGES,      /* changes/: since the snapshot before */
    NODE_CHANGES_BASE,
    NODE_CHANGES_VOLUME,    /* NAME.img */
    NODE_CHANGES_MAP,       /* NAME.map */
    _NODE_KIND_MAX,
};

struct fs_node {
    struct fs_node *parent;
    char *name;
    enum node_kind kind;
    /* identity: what this node shows (copied down from the parents) */
    char *ns, *vm, *snap, *vol;
    uint64_t nlookup;       /* the kernel's references */
    uint64_t children;      /* nodes whose parent this is */
    unsigned running;       /* control files: lines running now (under lock) */
    uint64_t number;        /* st_ino: from the path, the same for every node
                               that ever shows this path */
};

struct fs {
    struct model *model;
    struct vmsnapfs_opts *opts;
    struct fuse_session *se;
    uid_t uid;
    gid_t gid;              /* admin_group, or 0 */
    struct timespec started; /* times of the tree's files */

    pthread_mutex_t lock;   /* protects the node table */
    struct fs_node root;
    struct hashmap *nodes;  /* "parent-ptr/name" -> struct fs_node */

    /* open volume views (ops.c) */
    pthread_mutex_t vlock;
    struct open_file *open_views;
    bool store_ahead;       /* fill the kernel's cache ahead of readers */

    /* invalidation queue (notify.c) */
    pthread_mutex_t nlock;
    pthread_cond_t ncond;
    struct notify_item *nhead, *ntail;
    uint64_t npushed, ndone;    /* items queued, items done */
    pthread_cond_t ndone_cond;
    bool nquit;
    pthread_t nthread;
    bool nthread_started;
};

/* An open file (fi->fh). ops.c opens and frees them; volume-read.c reads. */
struct open_file {
    char *buf;              /* generated files: the content at open */
    size_t len;
    struct volume_view *view;   /* volumes: the point-in-time view */
    struct control_line *line;  /* control files opened for writing */
    bool sums;                  /* SHA256SUMS: reads wait for the sums */
    struct open_file *prev, *next;  /* volumes: fs->open_views */
    unsigned refs;          /* volumes: the open, and each read running */
    /* volumes, volume-read.c: filling the kernel's cache ahead */
    bool storing;           /* a worker fills now (atomic) */
    bool store_off;         /* the kernel took no store: no more (atomic) */
    bool released;          /* closed: no more stores (atomic) */
    uint64_t stored_to;     /* filled up to here (atomic) */
    uint64_t want_to;       /* to be filled up to here (atomic) */
    uint64_t read_end;      /* where the last read ended (atomic) */
    uint64_t beacon;        /* the page left out (atomic) */
};

/* ops.c: a read holds the file (a RELEASE may come meanwhile) */
struct open_file *open_file_get(struct open_file *h);
void open_file_put(struct open_file *h);

/* volume-read.c: answers a read of an open volume */
void volume_read(fuse_req_t req, struct fs *fs, fuse_ino_t ino, const struct fs_node *n,
                 struct open_file *h, size_t size, off_t off);
/* no more stores ahead; waits for those running (before the workers stop) */
void volume_read_stop(struct fs *fs);

/* inode.c: node table; ino is the node's address (FUSE_ROOT_ID: root). */
int inode_init(struct fs *fs);
void inode_fini(struct fs *fs);
struct fs_node *inode_get(struct fs *fs, fuse_ino_t ino);
fuse_ino_t inode_ino(struct fs *fs, const struct fs_node *n);
/* st_ino of n, and of parent's child called name: a hash of the path, so
 * that a file keeps its number while the kernel forgets and finds it again
 * (cp checks that the file it opened is the one it looked at). */
uint64_t inode_number(const struct fs_node *n);
uint64_t inode_child_number(const struct fs_node *parent, const char *name);
/* The child node of kind under parent, created if needed, with one more
 * lookup reference (for a reply_entry). NULL on OOM. */
struct fs_node *inode_ref_child(struct fs *fs, struct fs_node *parent,
                                const char *name, enum node_kind kind);
/* Drops the reference inode_ref_child took when no reply was sent. */
void inode_unref(struct fs *fs, struct fs_node *n, uint64_t count);
/* Calls fn on every node that shows something of ns/vm (or every node if
 * vm is NULL), under the table lock: fn must not block. */
void inode_foreach_vm(struct fs *fs, const char *ns, const char *vm,
                      void (*fn)(struct fs *, struct fs_node *, void *),
                      void *opaque);

/* tree.c: what a directory holds and what a node looks like. */
struct tree_entry {
    char *name;
    enum node_kind kind;
};
/* 0 and the kind of parent's child called name, or -ENOENT. */
int tree_lookup(struct fs *fs, const struct fs_node *parent, const char *name,
                enum node_kind *ret_kind);
/* The entries of a directory node (allocated, *ret_n of them). */
int tree_list(struct fs *fs, const struct fs_node *dir,
              struct tree_entry **ret, size_t *ret_n);
void tree_entries_free(struct tree_entry *e, size_t n);
/* stat of a node; checks that it still exists (-ENOENT if not) */
int tree_stat(struct fs *fs, const struct fs_node *n, struct stat *ret);
bool tree_is_dir(enum node_kind k);
bool tree_is_control(enum node_kind k);   /* restore, clone: writable */
bool tree_is_volume(enum node_kind k);
double tree_timeout(const struct fs *fs, enum node_kind k);
const char *tree_definition_name(const struct fs *fs);

/* render.c: the text of a generated file (allocated, not NUL-counted). */
int render_node(struct fs *fs, const struct fs_node *n, char **ret,
                size_t *ret_len);

/* notify.c: kernel cache invalidation off the request paths. */
int notify_start(struct fs *fs);
void notify_stop(struct fs *fs);
/* Waits until what was queued so far has reached the kernel. */
void notify_flush(struct fs *fs);
/* drops what the kernel caches of inode ino's data (queued) */
void notify_inval_inode(struct fs *fs, fuse_ino_t ino);
extern const struct model_listener notify_listener;

/* ops.c */
extern const struct fuse_lowlevel_ops fs_ops;
/* Closes the views of files still open at unmount. */
void fs_close_views(struct fs *fs);

/* daemon.c: going into the background, readiness */
int daemon_begin(void);              /* parent: exits with the child's status */
void daemon_ready(int status);       /* child: report to the parent, detach */
void daemon_sd_notify(const char *state);

#define fs_trace(op, ...) log_debug(op ": " __VA_ARGS__)
