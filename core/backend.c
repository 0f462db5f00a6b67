/* core/backend.c: backend selection and the shared value types. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cleanup.h"
#include "string-table.h"

const struct backend_ops *
backend_for_source(const char *source)
{
    if (!source)
        return NULL;
    if (strncmp(source, "kubevirt://", 11) == 0)
#if HAVE_KUBEVIRT
        return &backend_kubevirt;
#else
        return NULL;                /* built without it */
#endif
#if HAVE_LIBVIRT
    if (strstr(source, ":///") || strstr(source, "://"))
        return &backend_libvirt;
#endif
    return NULL;
}

void
volume_clear(struct volume *v)
{
    free(v->name);
    free(v->source);
    free(v->format);
    *v = (struct volume) { 0 };
}

void
restore_status_clear(struct restore_status *st)
{
    for (size_t i = 0; i < st->n_conflicts; i++)
        free(st->conflicts[i]);
    memset(st->conflicts, 0, sizeof st->conflicts);
    st->n_conflicts = 0;
}

void
restore_status_progress(struct restore_status *st, uint64_t done, uint64_t total)
{
    if (st->progress_done == done && st->progress_total == total)
        return;
    st->progress_done = done;
    st->progress_total = total;
    if (st->on_progress)
        st->on_progress(st->progress_opaque, done, total);
}

void
restore_status_conflict(struct restore_status *st, const char *fmt, ...)
{
    va_list ap;
    char *line = NULL;

    if (st->n_conflicts >= RESTORE_MAX_CONFLICTS)
        return;
    va_start(ap, fmt);
    if (vasprintf(&line, fmt, ap) < 0)
        line = NULL;
    va_end(ap);
    if (line)
        st->conflicts[st->n_conflicts++] = line;
}

static void
volumes_free(struct volume *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        volume_clear(&v[i]);
    free(v);
}

void
vm_info_free(struct vm_info *vm)
{
    if (!vm)
        return;
    free(vm->ns);
    free(vm->name);
    free(vm->uid);
    free(vm->state);
    free(vm->definition);
    volumes_free(vm->volumes, vm->n_volumes);
    free(vm);
}

void
snapshot_info_free(struct snapshot_info *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->error);
    free(s->definition);
    volumes_free(s->volumes, s->n_volumes);
    strv_free(s->excluded);
    strv_free(s->resources);
    free(s->sums);
    free(s);
}

void
snapshot_infos_free(struct snapshot_info **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        snapshot_info_free(v[i]);
    free(v);
}

static const char *const phase_names[_SNAPSHOT_PHASE_MAX] = {
    [SNAPSHOT_IN_PROGRESS] = "InProgress",
    [SNAPSHOT_SUCCEEDED] = "Succeeded",
    [SNAPSHOT_FAILED] = "Failed",
};

static const char *const indication_names[_INDICATION_MAX] = {
    [INDICATION_ONLINE] = "Online",
    [INDICATION_GUEST_AGENT] = "GuestAgent",
    [INDICATION_NO_GUEST_AGENT] = "NoGuestAgent",
    [INDICATION_QUIESCE_FAILED] = "QuiesceFailed",
    [INDICATION_QUIESCE_TIMEOUT] = "QuiesceTimeout",
    [INDICATION_PAUSED] = "Paused",
    [INDICATION_PARTIAL_SNAPSHOT] = "PartialSnapshot",
};

const char *
snapshot_phase_to_string(enum snapshot_phase p)
{
    return p < _SNAPSHOT_PHASE_MAX ? phase_names[p] : NULL;
}

int
snapshot_phase_from_string(const char *s)
{
    return string_table_lookup(phase_names, _SNAPSHOT_PHASE_MAX, s);
}

const char *
indication_to_string(enum indication i)
{
    return i < _INDICATION_MAX ? indication_names[i] : NULL;
}

int
indication_from_string(const char *s)
{
    return string_table_lookup(indication_names, _INDICATION_MAX, s);
}
