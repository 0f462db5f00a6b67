/* core/restore-plan.c: see restore-plan.h. */
#define LOG_MODULE "restore"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "log.h"
#include "restore-plan.h"
#include "state.h"

void
restore_plan_clear(struct restore_plan *p)
{
    free(p->vm);
    free(p->uuid);
    free(p->snap);
    strv_free(p->overlays);
    strv_free(p->old);
    free(p->path);
    *p = (struct restore_plan) { 0 };
}

char *
restore_plan_dir_of(const char *kind)
{
    char *d = NULL;
    if (asprintf(&d, "%s/%s", state_dir(), kind) < 0)
        return NULL;
    return d;
}

char *
restore_plan_dir(void)
{
    return restore_plan_dir_of("restore");
}

int
restore_plan_set_path(struct restore_plan *p, const char *kind, const char *key)
{
    _cleanup_free_ char *dir = NULL;
    int r = state_subdir(kind, &dir);

    if (r < 0)
        return r;
    free(p->path);
    if (asprintf(&p->path, "%s/%s.json", dir, key) < 0) {
        p->path = NULL;
        return -ENOMEM;
    }
    return 0;
}

int
restore_plan_init(struct restore_plan *p, const char *kind, const char *key,
                  const char *vm, const char *uuid, const char *snap, const char *phase)
{
    int r = restore_plan_set_path(p, kind, key);

    if (r < 0)
        return r;
    p->vm = strdup(vm);
    p->uuid = strdup(uuid);
    p->snap = strdup(snap);
    p->overlays = calloc(1, sizeof(char *));
    p->old = calloc(1, sizeof(char *));
    p->phase = phase;
    return p->vm && p->uuid && p->snap && p->overlays && p->old ? 0 : -ENOMEM;
}

int
restore_plan_each(const char *kind, int (*fn)(const char *path, void *opaque), void *opaque)
{
    _cleanup_free_ char *dir = restore_plan_dir_of(kind);
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *de;
    int left = 0;

    if (!d)
        return 0;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        _cleanup_free_ char *path = NULL;
        if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0 ||
            asprintf(&path, "%s/%s", dir, de->d_name) < 0)
            continue;
        left += fn(path, opaque);
    }
    closedir(d);
    return left;
}

int
restore_plan_read_phase(const char *path, const char *phase, struct restore_plan *p)
{
    if (restore_plan_read(path, p) < 0 || strcmp(p->phase, phase) != 0) {
        restore_plan_clear(p);
        return log_warning("'%s' is not a record vmsnapfs can read: left alone", path),
               -EINVAL;
    }
    return 0;
}

static struct json_object *
strv_json(char *const *v)
{
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; a && v && v[i]; i++)
        json_object_array_add(a, json_object_new_string(v[i]));
    return a;
}

/* Writes the plan durably: a new file, fsync'd, renamed over the old one,
 * and the directory fsync'd. */
int
restore_plan_write(struct restore_plan *p)
{
    _cleanup_free_ char *dir = NULL, *tmp = NULL;
    int r = p->path ? 0 : restore_plan_set_path(p, "restore", p->uuid);

    if (r < 0)
        return r;
    if (asprintf(&tmp, "%s.new", p->path) < 0 ||
        !(dir = strndup(p->path, (size_t) (strrchr(p->path, '/') - p->path))))
        return -ENOMEM;

    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "vm", json_object_new_string(p->vm));
    json_object_object_add(o, "uuid", json_object_new_string(p->uuid));
    json_object_object_add(o, "snapshot", json_object_new_string(p->snap));
    json_object_object_add(o, "id", json_object_new_string(p->id));
    json_object_object_add(o, "phase", json_object_new_string(p->phase));
    json_object_object_add(o, "startAfter", json_object_new_boolean(p->start_after));
    json_object_object_add(o, "overlays", strv_json(p->overlays));
    json_object_object_add(o, "old", strv_json(p->old));
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);

    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                                  0600);
    size_t len = text ? strlen(text) : 0;
    if (fd < 0 || !text || write(fd, text, len) != (ssize_t) len || fsync(fd) < 0 ||
        rename(tmp, p->path) < 0) {
        r = log_error_errno(-EIO, "cannot write the restore plan '%s': %s", p->path,
                            strerror(errno));
        unlink(tmp);
    }
    json_object_put(o);
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r == 0 && dfd >= 0)
        (void) fsync(dfd);
    return r;
}

/* STATE/restore/UUID.lock, held by the daemon restoring that VM: a plan
 * whose lock can be taken is a killed daemon's. -EBUSY if held. */
int
restore_plan_lock(const char *uuid, bool wait)
{
    _cleanup_free_ char *dir = NULL, *path = NULL;
    int r = state_subdir("restore", &dir);

    if (r < 0)
        return r;
    if (asprintf(&path, "%s/%s.lock", dir, uuid) < 0)
        return -ENOMEM;
    return state_lock(path, wait);
}

void
restore_plan_remove(struct restore_plan *p)
{
    if (p->path && unlink(p->path) < 0 && errno != ENOENT)
        log_warning("cannot remove the restore plan '%s': %s", p->path, strerror(errno));
}

static char **
json_strv(struct json_object *a, size_t *ret_n)
{
    size_t n = a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
    char **v = calloc(n + 1, sizeof *v);
    for (size_t i = 0; v && i < n; i++) {
        if (!(v[i] = strdup(json_object_get_string(json_object_array_get_idx(a, i)) ?: ""))) {
            strv_free(v);
            return NULL;
        }
    }
    *ret_n = n;
    return v;
}

int
restore_plan_read(const char *path, struct restore_plan *p)
{
    struct json_object *o = json_object_from_file(path);
    struct json_object *v;
    const char *phase = NULL;

    *p = (struct restore_plan) { 0 };
    if (!o)
        return -EINVAL;
#define STR(key) (json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL)
    const char *vm = STR("vm"), *uuid = STR("uuid"), *snap = STR("snapshot"), *id = STR("id");
    snprintf(p->id, sizeof p->id, "%s", id ? id : "");
    phase = STR("phase");
#undef STR
    p->start_after = json_object_object_get_ex(o, "startAfter", &v) && json_object_get_boolean(v);
    p->overlays = json_strv(json_object_object_get_ex(o, "overlays", &v) ? v : NULL,
                            &p->n_overlays);
    p->old = json_strv(json_object_object_get_ex(o, "old", &v) ? v : NULL, &p->n_old);
    p->vm = vm ? strdup(vm) : NULL;
    p->uuid = uuid ? strdup(uuid) : NULL;
    p->snap = snap ? strdup(snap) : NULL;
    p->phase = !phase ? NULL : strcmp(phase, "stopping") == 0 ? "stopping"
                             : strcmp(phase, "prepared") == 0 ? "prepared"
                             : strcmp(phase, "defined") == 0 ? "defined"
                             : strcmp(phase, "cloning") == 0 ? "cloning"
                             : strcmp(phase, "merging") == 0 ? "merging"
                             : strcmp(phase, "snapshotting") == 0 ? "snapshotting" : NULL;
    p->path = strdup(path);
    json_object_put(o);
    if (!p->vm || !p->uuid || !p->snap || !p->phase || !p->overlays || !p->old || !p->path) {
        restore_plan_clear(p);
        return -EINVAL;
    }
    return 0;
}
