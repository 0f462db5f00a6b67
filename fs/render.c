/* fs/render.c: the text of generated files (values -> text). Files that
 * hold one value end with a newline and hold nothing else (sysfs).
 * Thread model: stateless; takes references from the model. */
#define LOG_MODULE "render"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "change-map.h"
#include "fs.h"
#include "log.h"
#include "snapshot-json.h"
#include "sums.h"

static int
line(FILE *f, const char *s)
{
    return fprintf(f, "%s\n", s) < 0 ? -EIO : 0;
}

/* a document, with a final newline added if it lacks one */
static int
document(FILE *f, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n && fwrite(s, 1, n, f) != n)
        return -EIO;
    return n && s[n - 1] != '\n' ? line(f, "") : 0;
}

static int
render_vm(struct fs *fs, const struct fs_node *n, FILE *f)
{
    struct model_vm *vm = NULL;
    int r = model_vm_get(fs->model, n->ns, n->vm, &vm);

    if (r < 0)
        return r;
    switch (n->kind) {
    case NODE_VM_STATE:
        r = line(f, vm->info->state);
        break;
    case NODE_VM_AGENT:
        r = line(f, vm->info->agent ? "connected" : "disconnected");
        break;
    case NODE_VM_DEFINITION:
        r = document(f, vm->info->definition);
        break;
    default:
        r = -ENOENT;
    }
    model_vm_unref(vm);
    return r;
}

static int
render_snapshot(struct fs *fs, const struct fs_node *n, FILE *f)
{
    struct model_snapshots *l = NULL;
    const struct snapshot_info *s;
    char when[32];
    int r = model_snapshots_get(fs->model, n->ns, n->vm, &l);

    if (r < 0)
        return r;
    s = model_snapshot_find(l, n->snap);
    if (!s) {
        model_snapshots_unref(l);
        return -ENOENT;
    }
    switch (n->kind) {
    case NODE_SNAP_PHASE:
        r = line(f, snapshot_phase_to_string(s->phase));
        break;
    case NODE_SNAP_INDICATIONS:
        for (int i = 0; r >= 0 && i < _INDICATION_MAX; i++)
            if (s->indications & (1u << i))
                r = line(f, indication_to_string(i));
        break;
    case NODE_SNAP_ERROR:
        if (s->error && *s->error)
            r = line(f, s->error);
        break;
    case NODE_SNAP_CREATED:
        r = line(f, time_rfc3339(s->created, when, sizeof when));
        break;
    case NODE_SNAP_DEFINITION:
        r = document(f, s->definition);
        break;
    case NODE_SNAP_RESOURCES:
        for (size_t i = 0; r >= 0 && s->resources && s->resources[i]; i++)
            r = line(f, s->resources[i]);
        break;
    case NODE_SNAP_STATUS: {
        /* changes/: relative to which snapshot, or why there is none */
        _cleanup_free_ char *base = NULL, *told = NULL;
        int c = model_changes_base(fs->model, n->ns, n->vm, n->snap, &base, &told);
        const char *why = c >= 0 ? NULL
            : told ? told
            : c == -ENOTSUP ? "this backend keeps no changes between snapshots yet"
            : c == -ENOENT ? "no older snapshot that this one builds on"
            : "the changes could not be read (details in the log)";
        struct sums_status sums;
        bool have_sums = model_sums(fs->model) &&
                         sums_status(model_sums(fs->model), n->ns, n->vm, n->snap, &sums) >= 0;
        _cleanup_free_ char *json = snapshot_status_json(n->ns, n->vm, s, base, why,
                                                         have_sums ? &sums : NULL);
        r = json ? document(f, json) : -ENOMEM;
        break;
    }
    case NODE_SNAP_CLONE:
        break;                      /* write-only; reads as empty */
    default:
        r = -ENOENT;
    }
    model_snapshots_unref(l);
    return r;
}

/* SPEC "Restore": `key: value` lines, a conflict line each; empty if the
 * VM had no restore through this mount */
static int
render_restore(struct fs *fs, const struct fs_node *n, FILE *f)
{
    struct restore_status st;
    char when[32];
    int r = model_vm_exists(fs->model, n->ns, n->vm);

    if (r >= 0)
        r = model_restore_status(fs->model, n->ns, n->vm, &st);
    if (r <= 0)
        return r;
    if (fprintf(f, "snapshot: %s\nmode: %s\nphase: %s\n", st.snap,
                restore_mode_to_string(st.mode), snapshot_phase_to_string(st.phase)) < 0 ||
        fprintf(f, "started: %s\n", time_rfc3339(st.started, when, sizeof when)) < 0 ||
        fprintf(f, "finished: %s\n", st.finished ? time_rfc3339(st.finished, when, sizeof when)
                                                 : "") < 0 ||
        fprintf(f, "error: %s\n", st.error) < 0)
        r = -EIO;
    /* bytes of the disks restored, of all: while it runs, and after */
    if (r >= 0 && st.progress_total &&
        fprintf(f, "progress: %llu/%llu\n", (unsigned long long) st.progress_done,
                (unsigned long long) st.progress_total) < 0)
        r = -EIO;
    for (size_t i = 0; r >= 0 && i < st.n_conflicts; i++)
        if (fprintf(f, "conflict: %s\n", st.conflicts[i]) < 0)
            r = -EIO;
    restore_status_clear(&st);
    return r < 0 ? r : 0;
}

/* changes/base: the predecessor's name; changes/NAME.map: the map */
static int
render_changes(struct fs *fs, const struct fs_node *n, FILE *f)
{
    struct change_map *m = NULL;
    int r;

    if (n->kind == NODE_CHANGES_BASE) {
        _cleanup_free_ char *base = NULL;
        r = model_changes_base(fs->model, n->ns, n->vm, n->snap, &base, NULL);
        return r < 0 ? (r == -ENOTSUP ? -ENOENT : r) : line(f, base);
    }
    r = model_changes_open(fs->model, n->ns, n->vm, n->snap, n->vol, NULL, &m);
    if (r < 0)
        return r == -ENOTSUP ? -ENOENT : r;
    _cleanup_free_ char *text = change_map_render(m);
    change_map_free(m);
    return text ? document(f, text) : -ENOMEM;
}

int
render_node(struct fs *fs, const struct fs_node *n, char **ret, size_t *ret_len)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int r;

    if (!f)
        return -ENOMEM;
    switch (n->kind) {
    case NODE_VM_STATE:
    case NODE_VM_AGENT:
    case NODE_VM_DEFINITION:
        r = render_vm(fs, n, f);
        break;
    case NODE_VM_EVENTS: {
        /* the VM must exist; its events may be empty */
        r = model_vm_exists(fs->model, n->ns, n->vm);
        _cleanup_free_ char *text = r < 0 ? NULL
                                          : events_render(model_events(fs->model), n->ns, n->vm);
        if (r >= 0)
            r = text ? document(f, text) : -ENOMEM;
        break;
    }
    case NODE_VM_RESTORE:
        r = render_restore(fs, n, f);
        break;
    case NODE_CHANGES_BASE:
    case NODE_CHANGES_MAP:
        r = render_changes(fs, n, f);
        break;
    default:
        r = render_snapshot(fs, n, f);
    }
    if (fclose(f) != 0 && r >= 0)
        r = -ENOMEM;
    if (r < 0) {
        free(buf);
        return r;
    }
    *ret = buf;
    *ret_len = len;
    return 0;
}
