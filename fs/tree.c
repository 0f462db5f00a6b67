/* fs/tree.c: the shape of the tree (SPEC "The tree"): which names a
 * directory holds, which kind of node each is, and its attributes.
 * Thread model: no state of its own; model calls are thread-safe. */
#define LOG_MODULE "tree"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "change-map.h"
#include "cleanup.h"
#include "fs.h"
#include "sums.h"
#include "log.h"

/* How long the kernel may cache names and attributes. What events report
 * is invalidated by notify.c, so it may be cached long; snapshot lists
 * that come without events (libvirt) are cached as briefly as the model
 * caches them. */
#define TIMEOUT_EVENTS 60.0
#define TIMEOUT_SNAPSHOTS 1.0

struct fixed {
    const char *name;     /* NULL: the backend's definition file name */
    enum node_kind kind;
    bool kubevirt_only;
};

static const struct fixed vm_children[] = {
    { "state", NODE_VM_STATE, false },
    { "agent", NODE_VM_AGENT, false },
    { NULL, NODE_VM_DEFINITION, false },
    { "events", NODE_VM_EVENTS, false },
    { "volumes", NODE_VOLUMES, false },
    { "snapshots", NODE_SNAPSHOTS, false },
    { "restore", NODE_VM_RESTORE, false },
};

static const struct fixed snapshot_children[] = {
    { "phase", NODE_SNAP_PHASE, false },
    { "indications", NODE_SNAP_INDICATIONS, false },
    { "error", NODE_SNAP_ERROR, false },
    { "created", NODE_SNAP_CREATED, false },
    { NULL, NODE_SNAP_DEFINITION, false },
    { "resources", NODE_SNAP_RESOURCES, true },
    { "volumes", NODE_SNAP_VOLUMES, false },
    { "status.json", NODE_SNAP_STATUS, false },
    { "clone", NODE_SNAP_CLONE, false },
    { "SHA256SUMS", NODE_SNAP_SUMS, false },
};

const char *
tree_definition_name(const struct fs *fs)
{
    return model_namespaced(fs->model) ? "vm.json" : "domain.xml";
}

bool
tree_is_dir(enum node_kind k)
{
    switch (k) {
    case NODE_ROOT: case NODE_NAMESPACE: case NODE_VM: case NODE_VOLUMES:
    case NODE_SNAPSHOTS: case NODE_SNAPSHOT: case NODE_SNAP_VOLUMES:
    case NODE_SNAP_CHANGES:
        return true;
    default:
        return false;
    }
}

bool
tree_is_control(enum node_kind k)
{
    return k == NODE_VM_RESTORE || k == NODE_SNAP_CLONE;
}

bool
tree_is_volume(enum node_kind k)
{
    return k == NODE_VOLUME || k == NODE_SNAP_VOLUME;
}

double
tree_timeout(const struct fs *fs, enum node_kind k)
{
    if (k >= NODE_SNAPSHOTS && !model_notifies_snapshots(fs->model))
        return TIMEOUT_SNAPSHOTS;
    return TIMEOUT_EVENTS;
}

static const struct fixed *
fixed_children(enum node_kind k, size_t *ret_n)
{
    if (k == NODE_VM) {
        *ret_n = ELEMENTSOF(vm_children);
        return vm_children;
    }
    if (k == NODE_SNAPSHOT) {
        *ret_n = ELEMENTSOF(snapshot_children);
        return snapshot_children;
    }
    *ret_n = 0;
    return NULL;
}

static bool
fixed_shown(const struct fs *fs, const struct fixed *f)
{
    if (f->kind == NODE_SNAP_SUMS)
        return model_sums(fs->model) != NULL;      /* not with no_checksums */
    return !f->kubevirt_only || model_namespaced(fs->model);
}

static const char *
fixed_name(const struct fs *fs, const struct fixed *f)
{
    return f->name ? f->name : tree_definition_name(fs);
}

/* "vda.img" (or with suffix ".map") -> true if a volume vda is listed in
 * vols (and not a cdrom) */
static bool
has_volume_file(const struct volume *vols, size_t n, const char *file, const char *suffix)
{
    size_t len = strlen(file);

    if (len <= 4 || strcmp(file + len - 4, suffix) != 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(vols[i].flags & VOLUME_CDROM) &&
            strlen(vols[i].name) == len - 4 &&
            strncmp(vols[i].name, file, len - 4) == 0)
            return true;
    return false;
}

static bool
has_volume(const struct volume *vols, size_t n, const char *file)
{
    return has_volume_file(vols, n, file, ".img");
}

/* The snapshot a node shows, with its list (unref *ret_list). */
static int
snapshot_of(struct fs *fs, const struct fs_node *n,
            struct model_snapshots **ret_list,
            const struct snapshot_info **ret_snap)
{
    struct model_snapshots *l = NULL;
    int r = model_snapshots_get(fs->model, n->ns, n->vm, &l);

    if (r < 0)
        return r;
    const struct snapshot_info *s = model_snapshot_find(l, n->snap);
    if (!s) {
        model_snapshots_unref(l);
        return -ENOENT;
    }
    *ret_list = l;
    *ret_snap = s;
    return 0;
}

/* Has the snapshot a node shows a predecessor (changes/)? 0 or -ENOENT. */
static int
changes_exist(struct fs *fs, const struct fs_node *n)
{
    _cleanup_free_ char *base = NULL;
    int r = model_changes_base(fs->model, n->ns, n->vm, n->snap, &base, NULL);

    return r == -ENOTSUP ? -ENOENT : r;
}

int
tree_lookup(struct fs *fs, const struct fs_node *parent, const char *name,
            enum node_kind *ret_kind)
{
    size_t n_fixed;
    const struct fixed *f = fixed_children(parent->kind, &n_fixed);
    int r;

    for (size_t i = 0; i < n_fixed; i++) {
        if (fixed_shown(fs, &f[i]) && strcmp(fixed_name(fs, &f[i]), name) == 0) {
            *ret_kind = f[i].kind;
            return 0;
        }
    }

    switch (parent->kind) {
    case NODE_ROOT:
        if (model_namespaced(fs->model)) {
            r = model_namespace_exists(fs->model, name);
            *ret_kind = NODE_NAMESPACE;
        } else {
            r = model_vm_exists(fs->model, "", name);
            *ret_kind = NODE_VM;
        }
        return r;
    case NODE_NAMESPACE:
        *ret_kind = NODE_VM;
        return model_vm_exists(fs->model, parent->ns, name);
    case NODE_VOLUMES: {
        struct model_vm *vm = NULL;
        r = model_vm_get(fs->model, parent->ns, parent->vm, &vm);
        if (r < 0)
            return r;
        r = has_volume(vm->info->volumes, vm->info->n_volumes, name) ? 0 : -ENOENT;
        model_vm_unref(vm);
        *ret_kind = NODE_VOLUME;
        return r;
    }
    case NODE_SNAPSHOTS: {
        struct model_snapshots *l = NULL;
        r = model_snapshots_get(fs->model, parent->ns, parent->vm, &l);
        if (r < 0)
            return r;
        r = model_snapshot_find(l, name) ? 0 : -ENOENT;
        model_snapshots_unref(l);
        *ret_kind = NODE_SNAPSHOT;
        return r;
    }
    case NODE_SNAP_VOLUMES: {
        struct model_snapshots *l = NULL;
        const struct snapshot_info *s;
        r = snapshot_of(fs, parent, &l, &s);
        if (r < 0)
            return r;
        r = has_volume(s->volumes, s->n_volumes, name) ? 0 : -ENOENT;
        model_snapshots_unref(l);
        *ret_kind = NODE_SNAP_VOLUME;
        return r;
    }
    case NODE_SNAPSHOT:
        if (strcmp(name, "changes") != 0)
            return -ENOENT;
        *ret_kind = NODE_SNAP_CHANGES;
        return changes_exist(fs, parent);
    case NODE_SNAP_CHANGES: {
        struct model_snapshots *l = NULL;
        const struct snapshot_info *s;
        if (strcmp(name, "base") == 0) {
            *ret_kind = NODE_CHANGES_BASE;
            return changes_exist(fs, parent);
        }
        r = snapshot_of(fs, parent, &l, &s);
        if (r < 0)
            return r;
        *ret_kind = NODE_CHANGES_VOLUME;
        r = has_volume(s->volumes, s->n_volumes, name) ? 0 : -ENOENT;
        if (r < 0 && has_volume_file(s->volumes, s->n_volumes, name, ".map")) {
            *ret_kind = NODE_CHANGES_MAP;
            r = 0;
        }
        model_snapshots_unref(l);
        return r < 0 ? r : changes_exist(fs, parent);
    }
    default:
        return -ENOENT;     /* also ENOTDIR cases: the kernel checks those */
    }
}

void
tree_entries_free(struct tree_entry *e, size_t n)
{
    for (size_t i = 0; e && i < n; i++)
        free(e[i].name);
    free(e);
}

/* Appends names (strv) of one kind; takes ownership of the strings. */
static int
add_names(struct tree_entry **v, size_t *n, char **names, enum node_kind kind)
{
    size_t add = 0;
    while (names && names[add])
        add++;
    struct tree_entry *nv = realloc(*v, (*n + add + 1) * sizeof **v);
    if (!nv)
        return -ENOMEM;
    *v = nv;
    for (size_t i = 0; i < add; i++)
        nv[(*n)++] = (struct tree_entry) { .name = TAKE_PTR(names[i]), .kind = kind };
    return 0;
}

static int
add_name(struct tree_entry **v, size_t *n, const char *name, enum node_kind kind)
{
    char *copy = strdup(name);
    char *names[] = { copy, NULL };
    int r;

    if (!copy)
        return -ENOMEM;
    r = add_names(v, n, names, kind);
    free(names[0]);     /* NULL if taken */
    return r;
}

/* A file NAME+suffix of kind per volume (cdroms left out). */
static int
add_volumes(struct tree_entry **v, size_t *n, const struct volume *vols,
            size_t count, enum node_kind kind, const char *suffix)
{
    for (size_t i = 0; i < count; i++) {
        _cleanup_free_ char *file = NULL;
        if (vols[i].flags & VOLUME_CDROM)
            continue;
        if (asprintf(&file, "%s%s", vols[i].name, suffix) < 0)
            return -ENOMEM;
        int r = add_name(v, n, file, kind);
        if (r < 0)
            return r;
    }
    return 0;
}

int
tree_list(struct fs *fs, const struct fs_node *dir, struct tree_entry **ret,
          size_t *ret_n)
{
    struct tree_entry *v = NULL;
    size_t n = 0, n_fixed;
    const struct fixed *f = fixed_children(dir->kind, &n_fixed);
    _cleanup_strv_ char **names = NULL;
    int r = 0;

    for (size_t i = 0; r >= 0 && i < n_fixed; i++)
        if (fixed_shown(fs, &f[i]))
            r = add_name(&v, &n, fixed_name(fs, &f[i]), f[i].kind);

    switch (dir->kind) {
    case NODE_ROOT:
        if (model_namespaced(fs->model)) {
            r = model_list_namespaces(fs->model, &names);
            if (r >= 0)
                r = add_names(&v, &n, names, NODE_NAMESPACE);
        } else {
            r = model_list_vms(fs->model, "", &names);
            if (r >= 0)
                r = add_names(&v, &n, names, NODE_VM);
        }
        break;
    case NODE_NAMESPACE:
        r = model_list_vms(fs->model, dir->ns, &names);
        if (r >= 0)
            r = add_names(&v, &n, names, NODE_VM);
        break;
    case NODE_VOLUMES: {
        struct model_vm *vm = NULL;
        r = model_vm_get(fs->model, dir->ns, dir->vm, &vm);
        if (r >= 0) {
            r = add_volumes(&v, &n, vm->info->volumes, vm->info->n_volumes,
                            NODE_VOLUME, ".img");
            model_vm_unref(vm);
        }
        break;
    }
    case NODE_SNAPSHOTS: {
        struct model_snapshots *l = NULL;
        r = model_snapshots_get(fs->model, dir->ns, dir->vm, &l);
        for (size_t i = 0; r >= 0 && i < l->n; i++)
            r = add_name(&v, &n, l->v[i]->name, NODE_SNAPSHOT);
        model_snapshots_unref(l);
        break;
    }
    case NODE_SNAP_VOLUMES: {
        struct model_snapshots *l = NULL;
        const struct snapshot_info *s;
        r = snapshot_of(fs, dir, &l, &s);
        if (r >= 0) {
            r = add_volumes(&v, &n, s->volumes, s->n_volumes, NODE_SNAP_VOLUME, ".img");
            model_snapshots_unref(l);
        }
        break;
    }
    case NODE_SNAPSHOT:
        if (changes_exist(fs, dir) == 0)
            r = add_name(&v, &n, "changes", NODE_SNAP_CHANGES);
        break;
    case NODE_SNAP_CHANGES: {
        struct model_snapshots *l = NULL;
        const struct snapshot_info *s;
        r = changes_exist(fs, dir);
        if (r >= 0)
            r = add_name(&v, &n, "base", NODE_CHANGES_BASE);
        if (r >= 0)
            r = snapshot_of(fs, dir, &l, &s);
        if (r >= 0) {
            r = add_volumes(&v, &n, s->volumes, s->n_volumes, NODE_CHANGES_VOLUME, ".img");
            if (r >= 0)
                r = add_volumes(&v, &n, s->volumes, s->n_volumes, NODE_CHANGES_MAP, ".map");
            model_snapshots_unref(l);
        }
        break;
    }
    default:
        break;
    }
    if (r < 0) {
        tree_entries_free(v, n);
        return r;
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

/* The volume a node shows: its size and the bytes that hold data (for
 * st_blocks: cp looks for holes only when st_blocks says the file is
 * sparse); -ENOENT if gone. */
static int
volume_usage(struct fs *fs, const struct fs_node *n, uint64_t *ret_size,
             uint64_t *ret_allocated)
{
    const struct volume *vols;
    size_t count;
    struct model_vm *vm = NULL;
    struct model_snapshots *l = NULL;
    const struct snapshot_info *s;
    int r;

    /* it must be listed; the listing's size is the fallback */
    if (n->kind == NODE_VOLUME) {
        r = model_vm_get(fs->model, n->ns, n->vm, &vm);
        if (r < 0)
            return r;
        vols = vm->info->volumes;
        count = vm->info->n_volumes;
    } else {
        r = snapshot_of(fs, n, &l, &s);
        if (r < 0)
            return r;
        vols = s->volumes;
        count = s->n_volumes;
    }
    r = -ENOENT;
    for (size_t i = 0; i < count; i++) {
        if (strcmp(vols[i].name, n->vol) == 0) {
            *ret_size = vols[i].size;
            *ret_allocated = vols[i].size;
            r = 0;
        }
    }
    model_vm_unref(vm);
    model_snapshots_unref(l);
    if (r < 0)
        return r;
    /* a disk qemu-img cannot read (gone, locked) still lists; reads say why */
    (void) model_volume_usage(fs->model, n->ns, n->vm,
                              n->kind == NODE_SNAP_VOLUME ? n->snap : NULL,
                              n->vol, ret_size, ret_allocated);
    return 0;
}

/* Does the directory a node stands for still exist? */
static int
dir_exists(struct fs *fs, const struct fs_node *n)
{
    struct model_snapshots *l = NULL;
    const struct snapshot_info *s;
    int r;

    switch (n->kind) {
    case NODE_ROOT:
        return 0;
    case NODE_NAMESPACE:
        return model_namespace_exists(fs->model, n->ns);
    case NODE_SNAPSHOT:
    case NODE_SNAP_VOLUMES:
        r = snapshot_of(fs, n, &l, &s);
        model_snapshots_unref(l);
        return r;
    case NODE_SNAP_CHANGES:
        return changes_exist(fs, n);
    default:
        return model_vm_exists(fs->model, n->ns, n->vm);
    }
}

/* A directory's mtime: the mount's start, its nanoseconds a hash of the
 * listing, so that it changes whenever the listing does. The kernel keeps
 * listings (fs_opendir) and drops one whose mtime it finds changed when
 * the attributes expire: a bound for changes no event reports. */
static int
listing_mtime(struct fs *fs, const struct fs_node *n, struct timespec *ret)
{
    struct tree_entry *v = NULL;
    size_t count = 0;
    uint64_t h = UINT64_C(14695981039346656037);    /* FNV-1a */
    int r = tree_list(fs, n, &v, &count);

    if (r < 0)
        return r;
    for (size_t i = 0; i < count; i++)
        for (const unsigned char *p = (const unsigned char *) v[i].name;; p++) {
            h = (h ^ *p) * UINT64_C(1099511628211);
            if (!*p)
                break;
        }
    tree_entries_free(v, count);
    *ret = (struct timespec) { .tv_sec = fs->started.tv_sec,
                               .tv_nsec = (long) (h % 1000000000) };
    return 0;
}

static mode_t
mode_of(enum node_kind k)
{
    switch (k) {
    case NODE_SNAPSHOTS:
        return S_IFDIR | 0775;       /* mkdir/rmdir: root or admin_group */
    case NODE_VM_DEFINITION:
    case NODE_SNAP_DEFINITION:
    case NODE_SNAP_RESOURCES:
    case NODE_VOLUME:
    case NODE_SNAP_VOLUME:
    case NODE_CHANGES_VOLUME:
    case NODE_CHANGES_MAP:
    case NODE_SNAP_SUMS:
        return S_IFREG | 0440;       /* data: root or admin_group */
    case NODE_VM_RESTORE:
    case NODE_SNAP_CLONE:
        return S_IFREG | 0660;
    default:
        return tree_is_dir(k) ? S_IFDIR | 0755 : S_IFREG | 0444;
    }
}

int
tree_stat(struct fs *fs, const struct fs_node *n, struct stat *st)
{
    uint64_t size = 0;
    int r;

    memset(st, 0, sizeof *st);
    st->st_ino = inode_number(n);
    st->st_mode = mode_of(n->kind);
    st->st_nlink = tree_is_dir(n->kind) ? 2 : 1;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_blksize = 4096;
    st->st_mtim = st->st_ctim = st->st_atim = fs->started;

    if (tree_is_dir(n->kind)) {
        r = dir_exists(fs, n);
        /* a listing that cannot be had now: the start's mtime, which makes
         * the kernel drop what it kept once it sees the right one again */
        if (r >= 0 && listing_mtime(fs, n, &st->st_mtim) < 0)
            st->st_mtim = fs->started;
    } else if (n->kind == NODE_CHANGES_VOLUME) {
        /* the disk's size; st_blocks: the changed data, so that cp
         * --sparse=always copies only that (from the map alone: a stat is
         * no open view) */
        struct change_map *m = NULL;
        r = model_changes_open(fs->model, n->ns, n->vm, n->snap, n->vol, NULL, &m);
        if (r >= 0) {
            uint64_t data = 0;
            for (size_t i = 0; i < m->n; i++)
                data += m->v[i].zero ? 0 : m->v[i].length;
            size = m->size;
            st->st_blocks = (blkcnt_t) ((data + 511) / 512);
            st->st_blksize = VOLUME_IO_SIZE;
            change_map_free(m);
        }
        if (r == -ENOTSUP)
            r = -ENOENT;
    } else if (n->kind == NODE_SNAP_SUMS) {
        /* its size is known before the sums are (reading waits for them) */
        int64_t len = model_sums(fs->model)
                          ? sums_size(model_sums(fs->model), n->ns, n->vm, n->snap)
                          : -ENOENT;
        r = len < 0 ? (int) len : 0;
        size = len < 0 ? 0 : (uint64_t) len;
        st->st_blocks = (blkcnt_t) ((size + 511) / 512);
    } else if (tree_is_volume(n->kind)) {
        uint64_t allocated = 0;
        r = volume_usage(fs, n, &size, &allocated);
        st->st_blocks = (blkcnt_t) ((allocated + 511) / 512);
        st->st_blksize = VOLUME_IO_SIZE;   /* cp reads this much at a time */
    } else {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        r = render_node(fs, n, &text, &len);
        size = len;
        st->st_blocks = (blkcnt_t) ((size + 511) / 512);
    }
    st->st_size = (off_t) size;
    return r;
}
