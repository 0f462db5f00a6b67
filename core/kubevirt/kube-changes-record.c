/* core/kubevirt/kube-changes-record.c: see kube-changes-record.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "change-map.h"
#include "kube-changes-record.h"
#include "kube-objects.h"

static bool
is(struct json_object *o, json_type t)
{
    return o && json_object_is_type(o, t);
}

size_t
kube_changes_max_extents(size_t volumes)
{
    /* an annotation holds at most 256 KiB with the others */
    size_t max = 4000;
    return volumes && max / volumes ? max / volumes : 1;
}

/* The recorded changes of snapshot o (its annotation parsed), or NULL. */
struct json_object *
kube_changes_recorded(struct json_object *o)
{
    const char *text = kube_get_str(o, "metadata", "annotations", KUBE_CHANGES_ANNOTATION,
                                    (char *) NULL);
    struct json_object *j = text ? json_tokener_parse(text) : NULL;
    if (j && !json_object_is_type(j, json_type_object)) {
        json_object_put(j);
        j = NULL;
    }
    return j;
}

/* Extents as the annotation keeps them: [[OFFSET, LENGTH, ZERO], ...]. */
struct json_object *
kube_changes_extents(const struct change_map *m)
{
    struct json_object *entry = json_object_new_object(), *e = json_object_new_array();

    if (!entry || !e) {
        json_object_put(entry);
        json_object_put(e);
        return NULL;
    }
    for (size_t k = 0; k < m->n; k++) {
        struct json_object *x = json_object_new_array();
        if (!x) {
            json_object_put(entry);
            json_object_put(e);
            return NULL;
        }
        json_object_array_add(x, json_object_new_int64((int64_t) m->v[k].offset));
        json_object_array_add(x, json_object_new_int64((int64_t) m->v[k].length));
        json_object_array_add(x, json_object_new_int(m->v[k].zero));
        json_object_array_add(e, x);
    }
    json_object_object_add(entry, "size", json_object_new_int64((int64_t) m->size));
    json_object_object_add(entry, "extents", e);
    return entry;
}

/* The change map of volume vol in record j (its base named): -ENOENT if
 * j has none, -EIO if what it has is not a map. */
int
kube_changes_map(struct json_object *j, const char *vol, struct change_map **ret)
{
    struct json_object *v = kube_get(j, "volumes", vol, (char *) NULL);
    struct json_object *e = kube_get(v, "extents", (char *) NULL);
    struct json_object *sz = kube_get(v, "size", (char *) NULL);
    struct change_map *m = NULL;
    int r = 0;

    if (!is(v, json_type_object))
        return -ENOENT;
    if (!is(e, json_type_array) || !is(sz, json_type_int) || json_object_get_int64(sz) <= 0)
        return -EIO;
    if (!(m = calloc(1, sizeof *m)))
        return -ENOMEM;
    m->size = (uint64_t) json_object_get_int64(sz);
    for (size_t i = 0; r >= 0 && i < json_object_array_length(e); i++) {
        struct json_object *x = json_object_array_get_idx(e, i);
        if (!is(x, json_type_array) || json_object_array_length(x) != 3 ||
            !is(json_object_array_get_idx(x, 0), json_type_int) ||
            !is(json_object_array_get_idx(x, 1), json_type_int) ||
            !is(json_object_array_get_idx(x, 2), json_type_int)) {
            r = -EINVAL;
            break;
        }
        int64_t off = json_object_get_int64(json_object_array_get_idx(x, 0));
        int64_t len = json_object_get_int64(json_object_array_get_idx(x, 1));
        bool zero = json_object_get_int64(json_object_array_get_idx(x, 2)) != 0;
        r = off >= 0 && len > 0 && off < INT64_MAX && len < INT64_MAX
                ? change_map_append(m, (uint64_t) off, (uint64_t) len, zero)
                : -EINVAL;
    }
    if (r >= 0 && !(m->base = strdup(kube_get_str(j, "base", (char *) NULL) ?: "")))
        r = -ENOMEM;
    if (r < 0) {
        change_map_free(m);
        return r == -EINVAL ? -EIO : r;
    }
    *ret = m;
    return 0;
}

/* next's record, once it builds on what gone built on, with gone's
 * changes under its own; NULL (no memory). */
struct json_object *
kube_changes_folded(struct json_object *gone, struct json_object *next)
{
    struct json_object *rec = json_object_new_object(), *vols = json_object_new_object(), *x;
    const char *gbase = kube_get_str(gone, "base", (char *) NULL);
    const char *guid = kube_get_str(gone, "base_uid", (char *) NULL);
    struct json_object *nvols = kube_get(next, "volumes", (char *) NULL);
    int r = gbase && guid && is(nvols, json_type_object) ? 0 : -ENOENT;

    if (!rec || !vols) {
        json_object_put(rec);
        json_object_put(vols);
        return NULL;
    }
    static const char *const kept[] = { "checkpoint", "claims", "vmi" };
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++)
        if (json_object_object_get_ex(next, kept[i], &x))
            json_object_object_add(rec, kept[i], json_object_get(x));
    size_t nv = r >= 0 ? (size_t) json_object_object_length(nvols) : 0;
    if (r >= 0) {
        json_object_object_foreach(nvols, vol, val) {
            (void) val;
            struct change_map *older = NULL, *newer = NULL, *both = NULL;
            r = kube_changes_map(gone, vol, &older);
            if (r >= 0)
                r = kube_changes_map(next, vol, &newer);
            if (r >= 0)
                r = change_map_overlay(older, newer, &both);
            if (r >= 0) {
                change_map_coarsen(both, kube_changes_max_extents(nv));
                struct json_object *entry = kube_changes_extents(both);
                if (entry)
                    json_object_object_add(vols, vol, entry);
                else
                    r = -ENOMEM;
            }
            change_map_free(older);
            change_map_free(newer);
            change_map_free(both);
            if (r < 0)
                break;
        }
    }
    if (r >= 0) {
        json_object_object_add(rec, "base", json_object_new_string(gbase));
        json_object_object_add(rec, "base_uid", json_object_new_string(guid));
        json_object_object_add(rec, "volumes", vols);
    } else {
        json_object_put(vols);
        json_object_object_add(rec, "why", json_object_new_string(
            "the snapshot it built on was deleted, and its changes could not be kept"));
    }
    return rec;
}
