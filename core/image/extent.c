/* core/image/extent.c: see extent.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "extent.h"

void
extent_map_free(struct extent_map *m)
{
    if (!m)
        return;
    free(m->v);
    free(m);
}

static bool
get_u64(json_object *o, const char *key, uint64_t *ret)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return false;
    int64_t i = json_object_get_int64(v);
    if (i < 0)
        return false;
    *ret = (uint64_t) i;
    return true;
}

static bool
get_bool(json_object *o, const char *key, bool dflt)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return dflt;
    return json_object_get_boolean(v);
}

/* Appends e, merging it into the previous extent where they continue
 * each other. */
static void
append(struct extent_map *m, const struct extent *e)
{
    if (m->n > 0) {
        struct extent *p = &m->v[m->n - 1];
        bool same = p->kind == e->kind && p->start + p->length == e->start &&
                    p->depth == e->depth && p->present == e->present;
        if (same && e->kind == EXTENT_FILE)
            same = p->layer == e->layer && p->offset + p->length == e->offset;
        if (same) {
            p->length += e->length;
            return;
        }
    }
    m->v[m->n++] = *e;
}

int
extent_map_parse(const char *json, unsigned n_layers, const bool *direct,
                 uint64_t size, struct extent_map **ret)
{
    json_object *arr = json ? json_tokener_parse(json) : NULL;
    struct extent_map *m = NULL;
    uint64_t next = 0;
    int r = -EINVAL;

    if (!arr || !json_object_is_type(arr, json_type_array))
        goto out;
    size_t n = json_object_array_length(arr);
    m = calloc(1, sizeof *m);
    if (!m || !(m->v = calloc(n ? n : 1, sizeof *m->v))) {
        r = -ENOMEM;
        goto out;
    }
    m->size = size;
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(arr, i);
        struct extent e = { 0 };
        uint64_t depth = 0;

        if (!get_u64(o, "start", &e.start) || !get_u64(o, "length", &e.length) ||
            e.start != next || e.length == 0 || e.start + e.length > size)
            goto out;
        next = e.start + e.length;
        bool data = get_bool(o, "data", false);
        bool zero = get_bool(o, "zero", false);
        bool present = get_bool(o, "present", true);
        (void) get_u64(o, "depth", &depth);
        e.depth = depth > UINT32_MAX ? UINT32_MAX : (unsigned) depth;
        e.present = present;

        if (zero || !present || !data) {
            /* zeros, unallocated to the bottom of the chain, or a range
             * with no data that qemu reads as zeros */
            e.kind = EXTENT_ZERO;
        } else if (get_u64(o, "offset", &e.offset) && depth < n_layers &&
                   (!direct || direct[depth])) {
            e.kind = EXTENT_FILE;
            e.layer = (unsigned) depth;
        } else {
            e.kind = EXTENT_QEMU;       /* compressed, encrypted, ... */
            m->needs_qemu = true;
        }
        if (e.kind != EXTENT_ZERO)
            m->allocated += e.length;
        append(m, &e);
    }
    if (next != size)
        goto out;
    *ret = m;
    m = NULL;
    r = 0;
out:
    json_object_put(arr);
    extent_map_free(m);
    return r;
}

const struct extent *
extent_find(const struct extent_map *m, uint64_t off)
{
    size_t lo = 0, hi = m->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct extent *e = &m->v[mid];
        if (off < e->start)
            hi = mid;
        else if (off >= e->start + e->length)
            lo = mid + 1;
        else
            return e;
    }
    return NULL;
}

int
extent_seek(const struct extent_map *m, uint64_t off, int whence, uint64_t *ret)
{
    if (off >= m->size)
        return -ENXIO;
    const struct extent *e = extent_find(m, off);
    const struct extent *end = m->v + m->n;

    for (; e && e < end; e++) {
        bool hole = e->kind == EXTENT_ZERO;
        if ((whence == SEEK_DATA && !hole) || (whence == SEEK_HOLE && hole)) {
            *ret = e->start > off ? e->start : off;
            return 0;
        }
    }
    if (whence == SEEK_HOLE) {
        *ret = m->size;             /* the end of the file is a hole */
        return 0;
    }
    return -ENXIO;
}
