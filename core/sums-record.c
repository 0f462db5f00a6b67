/* core/sums-record.c: the record of a snapshot's sums kept with it
 * (sums.h, sums-private.h): pure. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "sums-private.h"

/* ---- the record kept with the snapshot ------------------------------------ */

int
sums_record_parse(const char *record, const char *vol, bool changes, const char *base,
                  char hex[65])
{
    json_object *o = record ? json_tokener_parse(record) : NULL, *part, *v;
    int r = -ENOENT;

    if (!o || !json_object_is_type(o, json_type_object))
        goto out;
    if (!json_object_object_get_ex(o, changes ? "changes" : "volumes", &part) ||
        !json_object_is_type(part, json_type_object))
        goto out;
    if (changes) {
        json_object *b, *files;
        if (!base || !json_object_object_get_ex(part, "base", &b) ||
            !json_object_is_type(b, json_type_string) ||
            strcmp(json_object_get_string(b), base) != 0 ||
            !json_object_object_get_ex(part, "files", &files) ||
            !json_object_is_type(files, json_type_object))
            goto out;
        part = files;
    }
    if (!json_object_object_get_ex(part, vol, &v) || !json_object_is_type(v, json_type_string))
        goto out;
    const char *h = json_object_get_string(v);
    if (strlen(h) != 64 || strspn(h, "0123456789abcdef") != 64)
        goto out;
    memcpy(hex, h, 65);
    r = 0;
out:
    json_object_put(o);
    return r;
}

char *
sums_record_render(const struct sums_file *files, size_t n, const char *base)
{
    json_object *o = json_object_new_object(), *vols = json_object_new_object();
    json_object *changes_files = NULL;
    char *out = NULL;

    if (!o || !vols) {
        json_object_put(vols);
        goto out;
    }
    json_object_object_add(o, "volumes", vols);     /* o owns it from here */
    for (size_t i = 0; i < n; i++) {
        const struct sums_file *f = &files[i];
        if (f->changes && !changes_files) {
            json_object *ch = json_object_new_object();
            changes_files = json_object_new_object();
            if (!ch || !changes_files) {
                json_object_put(ch);
                json_object_put(changes_files);
                goto out;
            }
            json_object_object_add(ch, "base", json_object_new_string(base ? base : ""));
            json_object_object_add(ch, "files", changes_files);
            json_object_object_add(o, "changes", ch);
        }
        json_object_object_add(f->changes ? changes_files : vols, f->vol,
                               json_object_new_string(f->hex));
    }
    out = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
out:
    json_object_put(o);
    return out;
}

