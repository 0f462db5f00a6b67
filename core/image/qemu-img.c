/* core/image/qemu-img.c: see qemu-img.h. Thread-safe. */
#define LOG_MODULE "qemu-img"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "log.h"
#include "qemu-img.h"
#include "subprocess.h"

/* a fragmented multi-TB chain maps to a long JSON list: room for ~8M extents */
#define QEMU_IMG_TIMEOUT_MS (5 * 60 * 1000)
#define QEMU_IMG_MAX_OUTPUT (1024u << 20)

void
chain_free(struct chain *c)
{
    if (!c)
        return;
    strv_free(c->layers);
    strv_free(c->formats);
    free(c);
}

static const char *
get_str(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

/* name as an absolute path: relative ones are relative to dir */
static char *
absolute(const char *name, const char *dir)
{
    char *s = NULL;
    if (name[0] == '/')
        return strdup(name);
    return asprintf(&s, "%s/%s", dir, name) < 0 ? NULL : s;
}

int
chain_parse(const char *json, const char *top, struct chain **ret)
{
    json_object *arr = json ? json_tokener_parse(json) : NULL;
    _cleanup_free_ char *topcopy = strdup(top ? top : "");
    const char *dir = topcopy ? dirname(topcopy) : ".";
    struct chain *c = NULL;
    int r = -EINVAL;

    if (!arr || !json_object_is_type(arr, json_type_array) ||
        json_object_array_length(arr) == 0)
        goto out;
    size_t n = json_object_array_length(arr);
    c = calloc(1, sizeof *c);
    if (!c || !(c->layers = calloc(n + 1, sizeof *c->layers)) ||
        !(c->formats = calloc(n + 1, sizeof *c->formats))) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(arr, i), *v;
        const char *file = get_str(o, "filename"), *fmt = get_str(o, "format");

        if (!file || !fmt)
            goto out;
        c->layers[i] = absolute(file, dir);
        c->formats[i] = strdup(fmt);
        c->n++;
        if (!c->layers[i] || !c->formats[i]) {
            r = -ENOMEM;
            goto out;
        }
        if (i == 0) {
            if (!json_object_object_get_ex(o, "virtual-size", &v))
                goto out;
            c->size = (uint64_t) json_object_get_int64(v);
        }
        if (json_object_object_get_ex(o, "encrypted", &v) && json_object_get_boolean(v))
            c->qemu_only = true;
        json_object *fs, *data;
        if (json_object_object_get_ex(o, "format-specific", &fs) &&
            json_object_object_get_ex(fs, "data", &data) &&
            json_object_object_get_ex(data, "data-file", &v))
            c->qemu_only = true;
    }
    *ret = c;
    c = NULL;
    r = 0;
out:
    json_object_put(arr);
    chain_free(c);
    return r;
}

int
qemu_img_chain(const char *path, const char *format, struct chain **ret)
{
    _cleanup_free_ char *out = NULL;
    const char *fmt = format && *format ? format : "raw";
    char *argv[] = { (char *) "qemu-img", (char *) "info", (char *) "-U",
                     (char *) "--backing-chain", (char *) "--output=json",
                     (char *) "-f", (char *) fmt, (char *) path, NULL };
    int r = spawn_capture(LOG_MODULE, argv, QEMU_IMG_TIMEOUT_MS,
                          QEMU_IMG_MAX_OUTPUT, &out);

    if (r < 0)
        return r;
    r = chain_parse(out, path, ret);
    if (r < 0)
        return log_error_errno(r, "cannot read qemu-img info of '%s'", path);
    return 0;
}

int
qemu_img_map(const struct chain *c, struct extent_map **ret)
{
    _cleanup_free_ char *out = NULL;
    char *argv[] = { (char *) "qemu-img", (char *) "map", (char *) "-U",
                     (char *) "--output=json", (char *) "-f", c->formats[0],
                     c->layers[0], NULL };
    int r = spawn_capture(LOG_MODULE, argv, QEMU_IMG_TIMEOUT_MS,
                          QEMU_IMG_MAX_OUTPUT, &out);

    if (r < 0)
        return r;
    _cleanup_free_ bool *direct = calloc(c->n, sizeof *direct);
    if (!direct)
        return -ENOMEM;
    for (size_t i = 0; i < c->n; i++)
        direct[i] = !c->qemu_only && (strcmp(c->formats[i], "raw") == 0 ||
                                      strcmp(c->formats[i], "qcow2") == 0);
    r = extent_map_parse(out, (unsigned) c->n, direct, c->size, ret);
    if (r < 0)
        return log_error_errno(r, "cannot read qemu-img map of '%s'", c->layers[0]);
    return 0;
}
