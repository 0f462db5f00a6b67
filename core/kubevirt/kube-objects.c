/* core/kubevirt/kube-objects.c: see kube-objects.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "cleanup.h"
#include "kube-objects.h"

/* ---- JSON paths ------------------------------------------------------------- */

static struct json_object *
get_v(struct json_object *o, va_list ap)
{
    for (const char *k; o && (k = va_arg(ap, const char *));)
        if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, k, &o))
            o = NULL;
    return o;
}

struct json_object *
kube_get(struct json_object *o, ...)
{
    va_list ap;
    va_start(ap, o);
    o = get_v(o, ap);
    va_end(ap);
    return o;
}

const char *
kube_get_str(struct json_object *o, ...)
{
    va_list ap;
    va_start(ap, o);
    o = get_v(o, ap);
    va_end(ap);
    return o && json_object_is_type(o, json_type_string) ? json_object_get_string(o) : NULL;
}

static bool
get_bool(struct json_object *o, const char *k1, const char *k2)
{
    struct json_object *v = kube_get(o, k1, k2, (char *) NULL);
    return v && json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
}

size_t
kube_array_len(struct json_object *a)
{
    return a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
}

/* the element of array a whose key is value */
static struct json_object *
find_by(struct json_object *a, const char *key, const char *value)
{
    for (size_t i = 0; value && i < kube_array_len(a); i++) {
        struct json_object *e = json_object_array_get_idx(a, i);
        const char *v = kube_get_str(e, key, (char *) NULL);
        if (v && strcmp(v, value) == 0)
            return e;
    }
    return NULL;
}

/* ---- values ------------------------------------------------------------------ */

int
kube_claim_bytes(struct json_object *pvc, uint64_t *ret)
{
    const char *q = kube_get_str(pvc, "status", "capacity", "storage", (char *) NULL);
    if (!q)
        q = kube_get_str(pvc, "spec", "resources", "requests", "storage", (char *) NULL);
    return q ? kube_quantity_bytes(q, ret) : -EINVAL;
}

int
kube_quantity_bytes(const char *s, uint64_t *ret)
{
    unsigned __int128 num = 0, den = 1;
    const char *p = s;
    bool digits = false, sticky = false;    /* a dropped digit was not 0 */

    if (!s)
        return -EINVAL;
    if (*p == '+')
        p++;
    for (; *p >= '0' && *p <= '9'; p++, digits = true)
        if ((num = num * 10 + (unsigned) (*p - '0')) > ((unsigned __int128) 1 << 100))
            return -ERANGE;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++, digits = true) {
            /* digits finer than 10^-12 of a byte change nothing a byte count
             * shows (and would overflow) */
            if (den >= UINT64_C(1000000000000) || num > ((unsigned __int128) 1 << 100)) {
                sticky |= *p != '0';
                continue;
            }
            num = num * 10 + (unsigned) (*p - '0');
            den *= 10;
        }
    if (!digits)
        return -EINVAL;

    static const struct { const char *suffix; unsigned base, exp; } units[] = {
        { "Ki", 2, 10 }, { "Mi", 2, 20 }, { "Gi", 2, 30 }, { "Ti", 2, 40 }, { "Pi", 2, 50 },
        { "Ei", 2, 60 }, { "k", 10, 3 }, { "M", 10, 6 }, { "G", 10, 9 }, { "T", 10, 12 },
        { "P", 10, 15 }, { "E", 10, 18 }, { "", 10, 0 },
    };
    unsigned __int128 mul = 1;
    if (*p == 'm' && !p[1]) {
        den *= 1000;
    } else if ((*p == 'e' || *p == 'E') &&
               (p[1] == '-' || p[1] == '+' || (p[1] >= '0' && p[1] <= '9'))) {
        char *end;
        long e = strtol(p + 1, &end, 10);
        if (*end || e > 30 || e < -30)
            return *end ? -EINVAL : -ERANGE;
        for (; e > 0; e--)
            mul *= 10;
        for (; e < 0; e++)
            den *= 10;          /* at most 10^30 * 10^12: no overflow */
    } else {
        size_t i;
        for (i = 0; i < sizeof units / sizeof *units; i++)
            if (strcmp(p, units[i].suffix) == 0)
                break;
        if (i == sizeof units / sizeof *units)
            return -EINVAL;
        for (unsigned k = 0; k < units[i].exp; k++)
            mul *= units[i].base;
    }
    if (num && mul > (((unsigned __int128) 1 << 127) / num))
        return -ERANGE;
    unsigned __int128 v = (num * mul + den - 1) / den;      /* rounded up, as Value() */
    if (sticky && (num * mul) % den == 0)
        v++;                    /* a little more than num * mul / den */
    if (v > UINT64_MAX)
        return -ERANGE;
    *ret = (uint64_t) v;
    return 0;
}

int
kube_time(const char *s, time_t *ret)
{
    struct tm tm = { 0 };
    int n = 0, oh = 0, om = 0;
    char sign;

    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
        return -EINVAL;
    s += n;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++)
            ;
    time_t off = 0;
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if ((*s == '+' || *s == '-') && sscanf(s, "%c%2d:%2d%n", &sign, &oh, &om, &n) == 3) {
        off = (time_t) (oh * 3600 + om * 60) * (sign == '-' ? -1 : 1);
        s += n;
    } else {
        return -EINVAL;
    }
    if (*s)
        return -EINVAL;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t) -1)
        return -EINVAL;
    *ret = t - off;
    return 0;
}

/* an object as the tree's JSON documents show it: pretty, with a newline */
static char *
json_text(struct json_object *o)
{
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                          JSON_C_TO_STRING_SPACED |
                                                          JSON_C_TO_STRING_NOSLASHESCAPE);
    char *r = NULL;
    return s && asprintf(&r, "%s\n", s) >= 0 ? r : NULL;
}

static int
dup_str(const char *s, char **ret)
{
    return (*ret = strdup(s ? s : "")) ? 0 : -ENOMEM;
}

/* A name the tree can show as one directory entry (a server's object
 * could say anything): what Kubernetes allows never fails this. */
bool
kube_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 253 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '/' || (unsigned char) s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* ---- VMs ---------------------------------------------------------------------- */

static bool
has_condition(struct json_object *o, const char *type)
{
    struct json_object *c = find_by(kube_get(o, "status", "conditions", (char *) NULL), "type",
                                    type);
    const char *status = kube_get_str(c, "status", (char *) NULL);
    return c && !(status && strcmp(status, "False") == 0);
}

struct json_object *
kube_condition(struct json_object *o, const char *type)
{
    return find_by(kube_get(o, "status", "conditions", (char *) NULL), "type", type);
}

bool
kube_condition_true(struct json_object *o, const char *type)
{
    const char *status = kube_get_str(kube_condition(o, type), "status", (char *) NULL);
    return status && strcmp(status, "True") == 0;
}

bool
kube_vmi_agent(struct json_object *vmi)
{
    return vmi && has_condition(vmi, "AgentConnected");
}

/* The size of a volume: the bound claim's capacity (the VMI says it), else
 * what its DataVolume template asks for. */
static uint64_t
volume_size(struct json_object *vm, struct json_object *vmi, const char *name,
            const char *dv)
{
    uint64_t size = 0;
    struct json_object *vs = find_by(kube_get(vmi, "status", "volumeStatus", (char *) NULL),
                                     "name", name);
    const char *cap = kube_get_str(vs, "persistentVolumeClaimInfo", "capacity", "storage",
                                   (char *) NULL);
    if (cap && kube_quantity_bytes(cap, &size) == 0)
        return size;
    struct json_object *t = NULL;
    struct json_object *tpl = kube_get(vm, "spec", "dataVolumeTemplates", (char *) NULL);
    for (size_t i = 0; dv && i < kube_array_len(tpl); i++) {
        const char *n = kube_get_str(json_object_array_get_idx(tpl, i), "metadata", "name",
                                     (char *) NULL);
        if (n && strcmp(n, dv) == 0)
            t = json_object_array_get_idx(tpl, i);
    }
    const char *req = kube_get_str(t, "spec", "storage", "resources", "requests", "storage",
                                   (char *) NULL);
    if (!req)
        req = kube_get_str(t, "spec", "pvc", "resources", "requests", "storage", (char *) NULL);
    return req && kube_quantity_bytes(req, &size) == 0 ? size : 0;
}

static int
vm_volumes(struct json_object *vm, struct json_object *vmi, struct vm_info *info)
{
    struct json_object *vols = kube_get(vm, "spec", "template", "spec", "volumes", (char *) NULL);
    struct json_object *disks = kube_get(vm, "spec", "template", "spec", "domain", "devices",
                                         "disks", (char *) NULL);
    size_t n = kube_array_len(vols);

    info->volumes = calloc(n ? n : 1, sizeof *info->volumes);
    if (!info->volumes)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct json_object *v = json_object_array_get_idx(vols, i);
        const char *name = kube_get_str(v, "name", (char *) NULL);
        const char *claim = kube_get_str(v, "persistentVolumeClaim", "claimName", (char *) NULL);
        const char *dv = kube_get_str(v, "dataVolume", "name", (char *) NULL);
        const char *dump = kube_get_str(v, "memoryDump", "claimName", (char *) NULL);
        const char *source = claim ? claim : dv ? dv : dump;
        if (!name || !source)
            continue;               /* not a disk KubeVirt can snapshot or export */
        struct volume *out = &info->volumes[info->n_volumes++];
        struct json_object *disk = find_by(disks, "name", name);
        if (dup_str(name, &out->name) < 0 || dup_str(source, &out->source) < 0 ||
            dup_str("raw", &out->format) < 0)
            return -ENOMEM;
        out->size = volume_size(vm, vmi, name, dv);
        if (kube_get(disk, "cdrom", (char *) NULL))
            out->flags |= VOLUME_CDROM | VOLUME_READONLY;
        if (get_bool(v, "persistentVolumeClaim", "readOnly"))
            out->flags |= VOLUME_READONLY;
        if (get_bool(v, "persistentVolumeClaim", "hotpluggable") ||
            get_bool(v, "dataVolume", "hotpluggable"))
            out->flags |= VOLUME_HOTPLUG;
    }
    return 0;
}

/* Cloud-init data holds passwords and keys: shown as "(hidden)". */
static void
hide_secrets(struct json_object *spec)
{
    static const char *const sources[] = { "cloudInitNoCloud", "cloudInitConfigDrive", "sysprep" };
    static const char *const fields[] = { "userData", "userDataBase64", "networkData",
                                          "networkDataBase64" };
    struct json_object *vols = kube_get(spec, "template", "spec", "volumes", (char *) NULL);

    for (size_t i = 0; i < kube_array_len(vols); i++)
        for (size_t s = 0; s < sizeof sources / sizeof *sources; s++) {
            struct json_object *src = kube_get(json_object_array_get_idx(vols, i), sources[s],
                                               (char *) NULL);
            for (size_t f = 0; src && f < sizeof fields / sizeof *fields; f++)
                if (kube_get(src, fields[f], (char *) NULL))
                    json_object_object_add(src, fields[f], json_object_new_string("(hidden)"));
        }
}

/* The object without metadata.managedFields (the server's bookkeeping)
 * and without cloud-init's secrets; spec_at: where the VM spec is. */
static char *
definition(struct json_object *o, const char *spec_at)
{
    struct json_object *copy = NULL;
    if (json_object_deep_copy(o, &copy, NULL) < 0)
        return NULL;
    struct json_object *meta = kube_get(copy, "metadata", (char *) NULL);
    if (meta && json_object_is_type(meta, json_type_object))
        json_object_object_del(meta, "managedFields");
    hide_secrets(kube_get(copy, spec_at, (char *) NULL));
    char *text = json_text(copy);
    json_object_put(copy);
    return text;
}

int
kube_vm_info(struct json_object *vm, struct json_object *vmi, struct vm_info **ret)
{
    struct vm_info *info = calloc(1, sizeof *info);
    const char *name = kube_get_str(vm, "metadata", "name", (char *) NULL);
    const char *state = kube_get_str(vm, "status", "printableStatus", (char *) NULL);
    int r;

    if (!info)
        return -ENOMEM;
    const char *ns = kube_get_str(vm, "metadata", "namespace", (char *) NULL);
    if (!kube_name_ok(name) || (ns && !kube_name_ok(ns))) {
        free(info);
        return -EINVAL;
    }
    info->running = vmi != NULL;
    info->agent = kube_vmi_agent(vmi);
    r = dup_str(ns, &info->ns);
    if (r >= 0)
        r = dup_str(name, &info->name);
    if (r >= 0)
        r = dup_str(kube_get_str(vm, "metadata", "uid", (char *) NULL), &info->uid);
    if (r >= 0)
        r = dup_str(state ? state : "Stopped", &info->state);
    if (r >= 0 && !(info->definition = definition(vm, "spec")))
        r = -ENOMEM;
    if (r >= 0)
        r = vm_volumes(vm, vmi, info);
    if (r < 0) {
        vm_info_free(info);
        return r;
    }
    *ret = info;
    return 0;
}

/* ---- snapshots ------------------------------------------------------------------ */

bool
kube_snapshot_of(struct json_object *snap, const char *vm)
{
    const char *group = kube_get_str(snap, "spec", "source", "apiGroup", (char *) NULL);
    const char *kind = kube_get_str(snap, "spec", "source", "kind", (char *) NULL);
    const char *name = kube_get_str(snap, "spec", "source", "name", (char *) NULL);
    return group && strcmp(group, "kubevirt.io") == 0 && kind &&
           strcmp(kind, "VirtualMachine") == 0 && name && strcmp(name, vm) == 0;
}

static enum snapshot_phase
phase_of(struct json_object *snap)
{
    const char *phase = kube_get_str(snap, "status", "phase", (char *) NULL);

    if (phase && strcmp(phase, "Failed") == 0)
        return SNAPSHOT_FAILED;
    /* Succeeded comes before the VolumeSnapshots are ready: not usable yet */
    if (phase && strcmp(phase, "Succeeded") == 0 && get_bool(snap, "status", "readyToUse"))
        return SNAPSHOT_SUCCEEDED;
    return SNAPSHOT_IN_PROGRESS;
}

static unsigned
indications_of(struct json_object *snap)
{
    struct json_object *old = kube_get(snap, "status", "indications", (char *) NULL);
    struct json_object *src = kube_get(snap, "status", "sourceIndications", (char *) NULL);
    unsigned bits = 0;
    int i;

    for (size_t k = 0; k < kube_array_len(old); k++)
        if ((i = indication_from_string(json_object_get_string(json_object_array_get_idx(old, k)))) >= 0)
            bits |= 1u << i;
    for (size_t k = 0; k < kube_array_len(src); k++)
        if ((i = indication_from_string(kube_get_str(json_object_array_get_idx(src, k),
                                                     "indication", (char *) NULL))) >= 0)
            bits |= 1u << i;
    return bits;
}

static int
strv_of(struct json_object *a, char ***ret)
{
    size_t n = kube_array_len(a), k = 0;
    char **v = calloc(n + 1, sizeof *v);

    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(a, i);
        if (json_object_is_type(e, json_type_string) &&
            !(v[k++] = strdup(json_object_get_string(e)))) {
            strv_free(v);
            return -ENOMEM;
        }
    }
    *ret = v;
    return 0;
}

/* the included volumes, with their claims from the content where known */
static int
snapshot_volumes(struct json_object *snap, struct json_object *content, struct snapshot_info *s)
{
    struct json_object *inc = kube_get(snap, "status", "snapshotVolumes", "includedVolumes",
                                       (char *) NULL);
    struct json_object *backups = kube_get(content, "spec", "volumeBackups", (char *) NULL);
    size_t n = kube_array_len(inc);

    s->volumes = calloc(n ? n : 1, sizeof *s->volumes);
    if (!s->volumes)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(inc, i);
        if (!json_object_is_type(e, json_type_string))
            continue;
        const char *name = json_object_get_string(e);
        struct json_object *b = find_by(backups, "volumeName", name);
        const char *claim = kube_get_str(b, "persistentVolumeClaim", "metadata", "name",
                                         (char *) NULL);
        const char *req = kube_get_str(b, "persistentVolumeClaim", "spec", "resources",
                                       "requests", "storage", (char *) NULL);
        struct volume *v = &s->volumes[s->n_volumes++];
        if (dup_str(name, &v->name) < 0 || dup_str(claim, &v->source) < 0 ||
            dup_str("raw", &v->format) < 0)
            return -ENOMEM;
        if (req)
            (void) kube_quantity_bytes(req, &v->size);
    }
    return 0;
}

int
kube_snapshot_info(struct json_object *snap, struct json_object *content,
                   struct snapshot_info **ret)
{
    struct snapshot_info *s = calloc(1, sizeof *s);
    const char *name = kube_get_str(snap, "metadata", "name", (char *) NULL);
    const char *err = kube_get_str(snap, "status", "error", "message", (char *) NULL);
    struct json_object *failure = find_by(kube_get(snap, "status", "conditions", (char *) NULL),
                                          "type", "Failure");
    if (!err && failure && strcmp(kube_get_str(failure, "status", (char *) NULL) ?: "", "True") == 0)
        err = kube_get_str(failure, "reason", (char *) NULL);   /* the text is in reason */
    const char *when = kube_get_str(snap, "status", "creationTime", (char *) NULL);
    struct json_object *captured = kube_get(content, "spec", "source", "virtualMachine",
                                            (char *) NULL);
    int r;

    if (!s)
        return -ENOMEM;
    if (!kube_name_ok(name)) {
        free(s);
        return -EINVAL;
    }
    s->phase = phase_of(snap);
    s->indications = indications_of(snap);
    if (!when || kube_time(when, &s->created) < 0)
        (void) kube_time(kube_get_str(snap, "metadata", "creationTimestamp", (char *) NULL),
                         &s->created);
    r = dup_str(name, &s->name);
    if (r >= 0 && err)
        r = dup_str(err, &s->error);
    if (r >= 0 && captured && !(s->definition = definition(captured, "spec")))
        r = -ENOMEM;
    if (r >= 0 && captured &&
        kube_object_graph(captured, kube_get_str(snap, "metadata", "namespace", (char *) NULL),
                          &s->resources) == -ENOMEM)
        r = -ENOMEM;        /* -EINVAL (no name): an empty resources file */
    if (r >= 0)
        r = strv_of(kube_get(snap, "status", "snapshotVolumes", "excludedVolumes", (char *) NULL),
                    &s->excluded);
    if (r >= 0)
        r = snapshot_volumes(snap, content, s);
    const char *sums = kube_get_str(snap, "metadata", "annotations", KUBE_SUMS_ANNOTATION,
                                    (char *) NULL);
    if (r >= 0 && sums)
        r = dup_str(sums, &s->sums);
    if (r < 0) {
        snapshot_info_free(s);
        return r;
    }
    *ret = s;
    return 0;
}

/* base64 (kubeconfig's *-data, a Secret's data) into text: OpenSSL's
 * decoder, which takes padding only where it may be and line breaks
 * anywhere */
int
kube_base64_text(const char *b64, char **ret)
{
    size_t n = strlen(b64);
    EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
    unsigned char *out = malloc(n / 4 * 3 + 4);
    int len = 0, tail = 0, r = 0;

    if (!ctx || !out || n > INT32_MAX) {
        r = !ctx || !out ? -ENOMEM : -EINVAL;
    } else {
        EVP_DecodeInit(ctx);
        if (EVP_DecodeUpdate(ctx, out, &len, (const unsigned char *) b64, (int) n) < 0 ||
            EVP_DecodeFinal(ctx, out + len, &tail) < 0 || len + tail == 0)
            r = -EINVAL;
    }
    EVP_ENCODE_CTX_free(ctx);
    if (r < 0) {
        free(out);
        return r;
    }
    out[len + tail] = '\0';
    *ret = (char *) out;
    return 0;
}
