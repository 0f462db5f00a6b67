/* core/snapshot-json.c: see snapshot-json.h; pure, thread-safe. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "clock.h"
#include "snapshot-json.h"
#include "sums.h"

static json_object *
strv_json(char *const *v)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; a && v && v[i]; i++)
        json_object_array_add(a, json_object_new_string(v[i]));
    return a;
}

char *
snapshot_status_json(const char *ns, const char *vm,
                     const struct snapshot_info *s, const char *changes_base,
                     const char *changes_why, const struct sums_status *sums)
{
    json_object *o = json_object_new_object();
    json_object *ind = json_object_new_array();
    json_object *vols = json_object_new_array();
    char when[32];
    char *out = NULL;

    if (!o || !ind || !vols) {
        json_object_put(o);
        json_object_put(ind);
        json_object_put(vols);
        return NULL;
    }
    for (int i = 0; i < _INDICATION_MAX; i++)
        if (s->indications & (1u << i))
            json_object_array_add(ind, json_object_new_string(
                                           indication_to_string(i)));
    for (size_t i = 0; i < s->n_volumes; i++) {
        json_object *v = json_object_new_object();
        json_object_object_add(v, "name", json_object_new_string(s->volumes[i].name));
        json_object_object_add(v, "size", json_object_new_int64((int64_t) s->volumes[i].size));
        json_object_object_add(v, "format", json_object_new_string(s->volumes[i].format));
        json_object_array_add(vols, v);
    }

    if (ns && *ns)
        json_object_object_add(o, "namespace", json_object_new_string(ns));
    json_object_object_add(o, "vm", json_object_new_string(vm));
    json_object_object_add(o, "name", json_object_new_string(s->name));
    json_object_object_add(o, "phase", json_object_new_string(
                                           snapshot_phase_to_string(s->phase)));
    json_object_object_add(o, "indications", ind);
    json_object_object_add(o, "error", json_object_new_string(s->error ? s->error : ""));
    json_object_object_add(o, "created", json_object_new_string(
                                             time_rfc3339(s->created, when, sizeof when)));
    json_object_object_add(o, "volumes", vols);
    json_object_object_add(o, "excludedVolumes", strv_json(s->excluded));
    if (s->has_freeze_window)
        json_object_object_add(o, "freezeWindowMs",
                               json_object_new_int64((int64_t) s->freeze_window_ms));
    if (s->resources)
        json_object_object_add(o, "resources", strv_json(s->resources));
    if (changes_base || changes_why) {
        json_object *c = json_object_new_object();
        if (c) {
            json_object_object_add(c, "base", changes_base ? json_object_new_string(changes_base)
                                                           : NULL);
            if (!changes_base)
                json_object_object_add(c, "why", json_object_new_string(changes_why));
            json_object_object_add(o, "changes", c);
        }
    }

    if (sums) {
        json_object *c = json_object_new_object();
        if (c) {
            json_object_object_add(c, "state", json_object_new_string(
                                                   sums_state_to_string(sums->state)));
            json_object_object_add(c, "stored", json_object_new_boolean(sums->stored));
            if (sums->state == SUMS_STATE_FAILED)
                json_object_object_add(c, "error", json_object_new_string(sums->error));
            json_object_object_add(o, "checksums", c);
        }
        if (sums->state == SUMS_STATE_COMPUTING || sums->state == SUMS_STATE_QUEUED) {
            json_object *p = json_object_new_object();
            if (p) {
                json_object_object_add(p, "done", json_object_new_int64((int64_t) sums->done));
                json_object_object_add(p, "total", json_object_new_int64((int64_t) sums->total));
                json_object_object_add(o, "progress", p);
            }
        }
    }

    const char *text = json_object_to_json_string_ext(
        o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (text && asprintf(&out, "%s\n", text) < 0)
        out = NULL;
    json_object_put(o);
    return out;
}

#define META_PREFIX "vmsnapfs "

char *
snapshot_meta_encode(const struct snapshot_meta *m)
{
    json_object *o = json_object_new_object();
    json_object *ind = json_object_new_array();
    char *out = NULL;

    if (!o || !ind) {
        json_object_put(o);
        json_object_put(ind);
        return NULL;
    }
    for (int i = 0; i < _INDICATION_MAX; i++)
        if (m->indications & (1u << i))
            json_object_array_add(ind, json_object_new_string(indication_to_string(i)));
    json_object_object_add(o, "indications", ind);
    json_object_object_add(o, "excluded", strv_json(m->excluded));
    if (m->have_freeze)
        json_object_object_add(o, "freezeWindowMs", json_object_new_int64((int64_t) m->freeze_ms));
    if (m->sums) {
        json_object *sums = json_tokener_parse(m->sums);
        if (sums && json_object_is_type(sums, json_type_object))
            json_object_object_add(o, "sha256", sums);
        else
            json_object_put(sums);
    }
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    if (text && asprintf(&out, META_PREFIX "%s", text) < 0)
        out = NULL;
    json_object_put(o);
    return out;
}

int
snapshot_meta_decode(const char *text, struct snapshot_meta *ret)
{
    struct snapshot_meta m = { 0 };
    json_object *o, *v;

    if (!text || strncmp(text, META_PREFIX, strlen(META_PREFIX)) != 0)
        return -ENOENT;
    o = json_tokener_parse(text + strlen(META_PREFIX));
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return -EINVAL;
    }
    if (json_object_object_get_ex(o, "indications", &v) &&
        json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *e = json_object_array_get_idx(v, i);
            int k = json_object_is_type(e, json_type_string)
                        ? indication_from_string(json_object_get_string(e))
                        : -EINVAL;
            if (k >= 0)
                m.indications |= 1u << k;
        }
    }
    if (json_object_object_get_ex(o, "excluded", &v) &&
        json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);
        m.excluded = calloc(n + 1, sizeof *m.excluded);
        size_t k = 0;
        for (size_t i = 0; m.excluded && i < n; i++) {
            json_object *e = json_object_array_get_idx(v, i);
            if (json_object_is_type(e, json_type_string))   /* skip anything else */
                m.excluded[k++] = strdup(json_object_get_string(e));
        }
    }
    if (json_object_object_get_ex(o, "freezeWindowMs", &v)) {
        m.freeze_ms = (uint64_t) json_object_get_int64(v);
        m.have_freeze = true;
    }
    if (json_object_object_get_ex(o, "sha256", &v) && json_object_is_type(v, json_type_object))
        m.sums = strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    *ret = m;
    return 0;
}

void
snapshot_meta_clear(struct snapshot_meta *m)
{
    for (size_t i = 0; m->excluded && m->excluded[i]; i++)
        free(m->excluded[i]);
    free(m->excluded);
    free(m->sums);
    m->excluded = NULL;
    m->sums = NULL;
}
