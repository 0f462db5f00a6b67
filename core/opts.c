/* core/opts.c: see opts.h; pure. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "duration.h"
#include "opts.h"
#include "string-table.h"

static const char *const consistency_names[_CONSISTENCY_MAX] = {
    [CONSISTENCY_BEST_EFFORT] = "best-effort",
    [CONSISTENCY_REQUIRED] = "required",
};

const char *
consistency_to_string(enum consistency c)
{
    return c < _CONSISTENCY_MAX ? consistency_names[c] : NULL;
}

int
consistency_from_string(const char *s)
{
    return string_table_lookup(consistency_names, _CONSISTENCY_MAX, s);
}

static const char *const export_link_names[_EXPORT_LINK_MAX] = {
    [EXPORT_LINK_AUTO] = "auto",
    [EXPORT_LINK_INTERNAL] = "internal",
    [EXPORT_LINK_EXTERNAL] = "external",
};

const char *
export_link_to_string(enum export_link l)
{
    return l < _EXPORT_LINK_MAX ? export_link_names[l] : NULL;
}

int
export_link_from_string(const char *s)
{
    return string_table_lookup(export_link_names, _EXPORT_LINK_MAX, s);
}

void
opts_init(struct vmsnapfs_opts *o)
{
    *o = (struct vmsnapfs_opts) {
        .failure_deadline_ns = DEFAULT_FAILURE_DEADLINE_NS,
        .consistency = CONSISTENCY_BEST_EFFORT,
    };
}

void
opts_clear(struct vmsnapfs_opts *o)
{
    free(o->admin_group);
    opts_init(o);
}

/* "key=value": value if opt's key is key, else NULL. */
static const char *
value_of(const char *opt, const char *key)
{
    size_t n = strlen(key);
    return strncmp(opt, key, n) == 0 && opt[n] == '=' ? opt + n + 1 : NULL;
}

int
opts_apply(struct vmsnapfs_opts *o, const char *opt)
{
    const char *v;
    int r;

    if ((v = value_of(opt, "failure_deadline"))) {
        uint64_t ns;
        r = duration_parse(v, &ns);
        if (r < 0)
            return -EINVAL;
        o->failure_deadline_ns = ns;
        return 1;
    }
    if ((v = value_of(opt, "consistency"))) {
        r = consistency_from_string(v);
        if (r < 0)
            return r;
        o->consistency = (enum consistency) r;
        return 1;
    }
    if ((v = value_of(opt, "export_link"))) {
        r = export_link_from_string(v);
        if (r < 0)
            return r;
        o->export_link = (enum export_link) r;
        return 1;
    }
    if ((v = value_of(opt, "admin_group"))) {
        if (!*v || strchr(v, ','))
            return -EINVAL;
        char *g = strdup(v);
        if (!g)
            return -ENOMEM;
        free(o->admin_group);
        o->admin_group = g;
        return 1;
    }
    if (strcmp(opt, "no_safety_snapshot") == 0) {
        o->no_safety_snapshot = true;
        return 1;
    }
    if (strcmp(opt, "no_checksums") == 0) {
        o->no_checksums = true;
        return 1;
    }
    if (strcmp(opt, "allow_other") == 0) {
        o->allow_other = true;
        return 0;                   /* FUSE needs it too */
    }
    /* a key of ours without a value, or with one where none is taken */
    if (strcmp(opt, "failure_deadline") == 0 || strcmp(opt, "consistency") == 0 ||
        strcmp(opt, "admin_group") == 0 || strcmp(opt, "export_link") == 0 ||
        value_of(opt, "no_safety_snapshot") || value_of(opt, "no_checksums"))
        return -EINVAL;
    return 0;
}

static int
append(char **rest, const char *opt)
{
    size_t old = *rest ? strlen(*rest) : 0;
    char *n = realloc(*rest, old + strlen(opt) + 2);

    if (!n)
        return -ENOMEM;
    if (old)
        n[old++] = ',';
    strcpy(n + old, opt);
    *rest = n;
    return 0;
}

int
opts_parse(struct vmsnapfs_opts *o, const char *list, char **rest,
           char **ret_bad)
{
    _cleanup_free_ char *copy = strdup(list ? list : "");
    char *save = NULL;
    int r;

    if (!copy)
        return -ENOMEM;
    for (char *opt = strtok_r(copy, ",", &save); opt;
         opt = strtok_r(NULL, ",", &save)) {
        r = opts_apply(o, opt);
        if (r < 0) {
            if (ret_bad)
                *ret_bad = strdup(opt);
            return r;
        }
        if (r == 0 && rest) {
            r = append(rest, opt);
            if (r < 0)
                return r;
        }
    }
    return 0;
}
