/* core/image/change-map.c: see change-map.h. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "change-map.h"

void
change_map_free(struct change_map *m)
{
    if (!m)
        return;
    free(m->base);
    free(m->v);
    free(m);
}

__attribute__((format(printf, 2, 3))) static int
fail(char **ret_error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(ret_error, fmt, ap) < 0)
        *ret_error = NULL;
    va_end(ap);
    return -EINVAL;
}

/* A member that must be a whole number from 0 to below INT64_MAX (json-c keeps
 * numbers as int64; a bigger one or a fraction is no size of a disk). */
static int
get_u64(json_object *o, const char *key, uint64_t *ret, const char *where, char **ret_error)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v))
        return fail(ret_error, "%s has no \"%s\"", where, key);
    if (!json_object_is_type(v, json_type_int))
        return fail(ret_error, "%s: \"%s\" is not a whole number", where, key);
    errno = 0;
    int64_t n = json_object_get_int64(v);
    /* json-c saturates what does not fit at INT64_MAX */
    if (n < 0 || n == INT64_MAX || errno == ERANGE)
        return fail(ret_error, "%s: \"%s\" is out of range", where, key);
    *ret = (uint64_t) n;
    return 0;
}

int
change_map_parse(const char *text, size_t len, struct change_map **ret, char **ret_error)
{
    json_tokener *tok = json_tokener_new();
    json_object *root = NULL, *v, *exts;
    struct change_map *m = NULL;
    int r;

    *ret_error = NULL;
    if (!tok)
        return -ENOMEM;
    root = json_tokener_parse_ex(tok, text, (int) (len > INT32_MAX ? INT32_MAX : len));
    if (!root) {
        enum json_tokener_error e = json_tokener_get_error(tok);
        r = fail(ret_error, "not JSON (%s)", e == json_tokener_continue
                                                 ? "it ends too early" : json_tokener_error_desc(e));
        goto out;
    }
    size_t end = json_tokener_get_parse_end(tok);
    while (end < len && strchr(" \t\r\n", text[end]) && text[end])
        end++;
    if (end < len) {
        r = fail(ret_error, "text after the JSON object");
        goto out;
    }
    if (!json_object_is_type(root, json_type_object)) {
        r = fail(ret_error, "not a JSON object");
        goto out;
    }
    m = calloc(1, sizeof *m);
    if (!m) {
        r = -ENOMEM;
        goto out;
    }
    if (!json_object_object_get_ex(root, "base", &v) || !json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) == 0) {
        r = fail(ret_error, "\"base\" is not a snapshot's name");
        goto out;
    }
    m->base = strdup(json_object_get_string(v));
    if (!m->base) {
        r = -ENOMEM;
        goto out;
    }
    r = get_u64(root, "size", &m->size, "the map", ret_error);
    if (r < 0)
        goto out;
    if (!json_object_object_get_ex(root, "extents", &exts) ||
        !json_object_is_type(exts, json_type_array)) {
        r = fail(ret_error, "\"extents\" is not a list");
        goto out;
    }
    m->n = json_object_array_length(exts);
    m->v = calloc(m->n ? m->n : 1, sizeof *m->v);
    if (!m->v) {
        r = -ENOMEM;
        goto out;
    }
    uint64_t last = 0;
    for (size_t i = 0; i < m->n; i++) {
        json_object *e = json_object_array_get_idx(exts, i), *z;
        struct change_extent *x = &m->v[i];
        char where[40];
        snprintf(where, sizeof where, "extent %zu", i);
        if (!json_object_is_type(e, json_type_object)) {
            r = fail(ret_error, "%s is not an object", where);
            goto out;
        }
        r = get_u64(e, "offset", &x->offset, where, ret_error);
        if (r >= 0)
            r = get_u64(e, "length", &x->length, where, ret_error);
        if (r < 0)
            goto out;
        if (!json_object_object_get_ex(e, "zero", &z) || !json_object_is_type(z, json_type_boolean)) {
            r = fail(ret_error, "%s: \"zero\" is not true or false", where);
            goto out;
        }
        x->zero = json_object_get_boolean(z);
        if (x->length == 0) {
            r = fail(ret_error, "%s is empty", where);
            goto out;
        }
        if (x->offset > m->size || x->length > m->size - x->offset) {
            r = fail(ret_error, "%s (%" PRIu64 "+%" PRIu64 ") ends past the disk (%" PRIu64 " bytes)",
                     where, x->offset, x->length, m->size);
            goto out;
        }
        if (x->offset < last) {
            r = fail(ret_error, "%s (at %" PRIu64 ") overlaps or comes before the one before it "
                     "(which ends at %" PRIu64 ")", where, x->offset, last);
            goto out;
        }
        last = x->offset + x->length;
    }
    *ret = m;
    m = NULL;
    r = 0;
out:
    change_map_free(m);
    json_object_put(root);
    json_tokener_free(tok);
    return r;
}

char *
change_map_render(const struct change_map *m)
{
    json_object *o = json_object_new_object(), *a = json_object_new_array();
    char *text = NULL;

    if (!o || !a)
        goto out;
    json_object_object_add(o, "base", json_object_new_string(m->base));
    json_object_object_add(o, "size", json_object_new_int64((int64_t) m->size));
    for (size_t i = 0; i < m->n; i++) {
        json_object *e = json_object_new_object();
        if (!e)
            goto out;
        json_object_object_add(e, "offset", json_object_new_int64((int64_t) m->v[i].offset));
        json_object_object_add(e, "length", json_object_new_int64((int64_t) m->v[i].length));
        json_object_object_add(e, "zero", json_object_new_boolean(m->v[i].zero));
        json_object_array_add(a, e);
    }
    json_object_object_add(o, "extents", a);
    a = NULL;
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    if (s && asprintf(&text, "%s\n", s) < 0)
        text = NULL;
out:
    json_object_put(a);
    json_object_put(o);
    return text;
}

uint64_t
change_map_bytes(const struct change_map *m)
{
    uint64_t n = 0;
    for (size_t i = 0; i < m->n; i++)
        n += m->v[i].length;
    return n;
}

int
change_map_append(struct change_map *m, uint64_t offset, uint64_t length, bool zero)
{
    struct change_extent *last = m->n ? &m->v[m->n - 1] : NULL;

    if (length == 0)
        return 0;
    if ((last && offset < last->offset + last->length) || offset > m->size ||
        length > m->size - offset)
        return -EINVAL;
    if (last && last->zero == zero && last->offset + last->length == offset) {
        last->length += length;
        return 0;
    }
    if (m->n >= m->cap) {
        size_t cap = m->n >= 8 ? 2 * m->n : 8;
        struct change_extent *v = reallocarray(m->v, cap, sizeof *v);
        if (!v)
            return -ENOMEM;
        m->v = v;
        m->cap = cap;
    }
    m->v[m->n++] = (struct change_extent) { offset, length, zero };
    return 0;
}

int
change_map_overlay(const struct change_map *older, const struct change_map *newer,
                   struct change_map **ret)
{
    struct change_map *m = calloc(1, sizeof *m);
    size_t i = 0, j = 0;
    uint64_t at = 0;            /* everything before is in m */
    int r = 0;

    if (!m)
        return -ENOMEM;
    if (older->size != newer->size) {
        free(m);
        return -EINVAL;
    }
    m->size = older->size;
    if (older->base && !(m->base = strdup(older->base))) {
        free(m);
        return -ENOMEM;
    }
    while (r >= 0 && (i < older->n || j < newer->n)) {
        const struct change_extent *n = j < newer->n ? &newer->v[j] : NULL;
        uint64_t limit = n ? n->offset : UINT64_MAX;
        /* older's changes before newer's next one, from at on */
        while (r >= 0 && i < older->n && older->v[i].offset < limit) {
            const struct change_extent *o = &older->v[i];
            uint64_t start = o->offset > at ? o->offset : at;
            uint64_t end = o->offset + o->length < limit ? o->offset + o->length : limit;
            if (end > start)
                r = change_map_append(m, start, end - start, o->zero);
            if (o->offset + o->length > limit)
                break;          /* goes on past newer's: the rest later */
            i++;
        }
        if (!n || r < 0)
            break;
        r = change_map_append(m, n->offset, n->length, n->zero);
        at = n->offset + n->length;
        j++;
        while (i < older->n && older->v[i].offset + older->v[i].length <= at)
            i++;            /* wholly under newer's */
    }
    if (r < 0) {
        change_map_free(m);
        return r;
    }
    *ret = m;
    return 0;
}

void
change_map_coarsen(struct change_map *m, size_t max)
{
    uint64_t gap = 65536;

    if (max < 1)
        max = 1;
    while (m->n > max) {
        size_t k = 0;
        for (size_t i = 0; i < m->n; i++) {
            struct change_extent *last = k ? &m->v[k - 1] : NULL;
            const struct change_extent *e = &m->v[i];
            uint64_t between = last ? e->offset - (last->offset + last->length) : 0;
            if (last && between <= gap) {
                last->zero = last->zero && e->zero && between == 0;
                last->length = e->offset + e->length - last->offset;
            } else {
                m->v[k++] = *e;
            }
        }
        m->n = k;
        gap = gap > UINT64_MAX / 2 ? UINT64_MAX : gap * 2;
    }
}
