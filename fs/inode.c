/* fs/inode.c: the node table. A node id (what the kernel asks about) is
 * the node's address, the root is FUSE_ROOT_ID; st_ino is a hash of the
 * path (a node forgotten and made again shows the same number). A node lives while the kernel holds lookups on it
 * or it has children. Thread model: every function takes fs->lock. */
#define LOG_MODULE "inode"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "fs.h"
#include "log.h"

static char *
key_of(const struct fs_node *parent, const char *name)
{
    char *k = NULL;
    return asprintf(&k, "%p/%s", (const void *) parent, name) < 0 ? NULL : k;
}

static void
node_free(struct fs_node *n)
{
    free(n->name);
    free(n->ns);
    free(n->vm);
    free(n->snap);
    free(n->vol);
    free(n);
}

int
inode_init(struct fs *fs)
{
    pthread_mutex_init(&fs->lock, NULL);
    fs->root = (struct fs_node) { .kind = NODE_ROOT, .nlookup = 1 };
    fs->nodes = hashmap_new();
    return fs->nodes ? 0 : -ENOMEM;
}

static void
node_free_void(void *p)
{
    node_free(p);
}

void
inode_fini(struct fs *fs)
{
    hashmap_free(fs->nodes, node_free_void);
    fs->nodes = NULL;
    pthread_mutex_destroy(&fs->lock);
}

struct fs_node *
inode_get(struct fs *fs, fuse_ino_t ino)
{
    return ino == FUSE_ROOT_ID ? &fs->root : (struct fs_node *) (uintptr_t) ino;
}

fuse_ino_t
inode_ino(struct fs *fs, const struct fs_node *n)
{
    return n == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t) (uintptr_t) n;
}

uint64_t
inode_number(const struct fs_node *n)
{
    return n->parent ? n->number : FUSE_ROOT_ID;
}

uint64_t
inode_child_number(const struct fs_node *parent, const char *name)
{
    /* FNV-1a over the parent's number and the name: 64 bits, so two
     * paths of one mount share a number with odds of about n^2 / 2^65 */
    uint64_t h = UINT64_C(0xcbf29ce484222325), p = inode_number(parent);
    for (int i = 0; i < 8; i++) {
        h ^= (p >> (8 * i)) & 0xff;
        h *= UINT64_C(0x100000001b3);
    }
    for (const unsigned char *c = (const unsigned char *) name; *c; c++) {
        h ^= *c;
        h *= UINT64_C(0x100000001b3);
    }
    /* GNU cp -r copies a directory's entries in the order of their inode
     * numbers: a snapshot's SHA256SUMS comes last (the only number with
     * the top bit), after its disks, whose reading computes the sums */
    h &= ~(UINT64_C(1) << 63);
    if (parent->kind == NODE_SNAPSHOT && strcmp(name, "SHA256SUMS") == 0)
        h |= UINT64_C(1) << 63;
    return h <= FUSE_ROOT_ID ? h + 2 : h;   /* 0 is no inode, 1 the root */
}

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Sets the identity of a new node from its parent and its own name. */
static int
identify(struct fs *fs, struct fs_node *n, const struct fs_node *parent)
{
    n->ns = dup_or_null(parent->ns);
    n->vm = dup_or_null(parent->vm);
    n->snap = dup_or_null(parent->snap);
    n->vol = dup_or_null(parent->vol);

    switch (n->kind) {
    case NODE_NAMESPACE:
        free(n->ns);
        n->ns = strdup(n->name);
        break;
    case NODE_VM:
        free(n->vm);
        n->vm = strdup(n->name);
        if (!n->ns && !model_namespaced(fs->model))
            n->ns = strdup("");
        break;
    case NODE_SNAPSHOT:
        free(n->snap);
        n->snap = strdup(n->name);
        break;
    case NODE_VOLUME:
    case NODE_SNAP_VOLUME:
    case NODE_CHANGES_VOLUME:
    case NODE_CHANGES_MAP:
        /* "vda.img" (or "vda.map") shows volume "vda" */
        free(n->vol);
        n->vol = strndup(n->name, strlen(n->name) - 4);
        break;
    default:
        break;
    }
    if (!n->ns || (n->kind >= NODE_VM && !n->vm))
        return -ENOMEM;
    return 0;
}

struct fs_node *
inode_ref_child(struct fs *fs, struct fs_node *parent, const char *name,
                enum node_kind kind)
{
    _cleanup_free_ char *key = key_of(parent, name);
    struct fs_node *n;

    if (!key)
        return NULL;

    LOCK_FOR_SCOPE(&fs->lock);
    /* a name under a parent always means the same kind of node */
    n = hashmap_get(fs->nodes, key);
    if (!n) {
        n = calloc(1, sizeof *n);
        if (!n)
            return NULL;
        n->parent = parent;
        n->kind = kind;
        n->name = strdup(name);
        n->number = inode_child_number(parent, name);
        if (!n->name || identify(fs, n, parent) < 0) {
            node_free(n);
            return NULL;
        }
        if (hashmap_put(fs->nodes, key, n, NULL) < 0) {
            node_free(n);
            return NULL;
        }
        parent->children++;
    }
    n->nlookup++;
    return n;
}

/* Called with fs->lock held. */
static void
maybe_free(struct fs *fs, struct fs_node *n)
{
    while (n && n != &fs->root && n->nlookup == 0 && n->children == 0) {
        struct fs_node *parent = n->parent;
        _cleanup_free_ char *key = key_of(parent, n->name);

        if (key)
            hashmap_remove(fs->nodes, key);
        node_free(n);
        if (parent)
            parent->children--;
        n = parent;
    }
}

void
inode_unref(struct fs *fs, struct fs_node *n, uint64_t count)
{
    LOCK_FOR_SCOPE(&fs->lock);
    if (n == &fs->root)
        return;
    n->nlookup = n->nlookup > count ? n->nlookup - count : 0;
    maybe_free(fs, n);
}

struct foreach_ctx {
    struct fs *fs;
    const char *ns, *vm;
    void (*fn)(struct fs *, struct fs_node *, void *);
    void *opaque;
};

static void
foreach_one(const char *key, void *value, void *opaque)
{
    struct foreach_ctx *c = opaque;
    struct fs_node *n = value;

    (void) key;
    if (c->vm && (!n->vm || strcmp(n->vm, c->vm) != 0 ||
                  strcmp(n->ns ? n->ns : "", c->ns ? c->ns : "") != 0))
        return;
    c->fn(c->fs, n, c->opaque);
}

void
inode_foreach_vm(struct fs *fs, const char *ns, const char *vm,
                 void (*fn)(struct fs *, struct fs_node *, void *),
                 void *opaque)
{
    struct foreach_ctx c = { fs, ns, vm, fn, opaque };
    LOCK_FOR_SCOPE(&fs->lock);
    hashmap_foreach(fs->nodes, foreach_one, &c);
}
