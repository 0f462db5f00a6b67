/* tests/fuzz/fuzz-kube-watch.c: what an API server (or anything between it
 * and us) sends on a watch: the stream cut at object boundaries
 * (kube-watch.c), each object taken as a VM, a VMI, a snapshot and a Status
 * (kube-objects.c, kube-status.c). The input's first byte says where the
 * rest is cut in two: both halves fed must give the same events as the
 * whole at once. */
#include <errno.h>
#include <string.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "kube-objects.h"
#include "kube-status.h"
#include "kube-watch.h"

struct seen {
    unsigned long hash;
    unsigned n;
};

static int
on_event(void *opaque, enum kube_event type, struct json_object *o)
{
    struct seen *s = opaque;
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    struct vm_info *vm = NULL;
    struct snapshot_info *snap = NULL;
    enum kube_retry retry;
    char why[256];

    for (const char *p = text; p && *p; p++)
        s->hash = s->hash * 31 + (unsigned char) *p;
    s->hash = s->hash * 31 + (unsigned) type;
    s->n++;
    if (kube_vm_info(o, o, &vm) == 0) {
        FUZZ_CHECK(vm->name && vm->name[0] && vm->state && vm->definition);
        vm_info_free(vm);
    }
    if (kube_snapshot_info(o, o, &snap) == 0) {
        FUZZ_CHECK(snap->name && snap->phase < _SNAPSHOT_PHASE_MAX && snap->excluded);
        snapshot_info_free(snap);
    }
    int r = kube_status_object_errno(o, &retry, why, sizeof why);
    FUZZ_CHECK(r <= 0 && strlen(why) < sizeof why);
    (void) kube_snapshot_of(o, "vm");
    return 0;
}

static int
feed(const char *data, size_t size, size_t cut, struct seen *s)
{
    struct kube_watch *w = kube_watch_new(on_event, s);
    FUZZ_CHECK(w);
    int r = kube_watch_feed(w, data, cut);
    if (r == 0)
        r = kube_watch_feed(w, data + cut, size - cut);
    kube_watch_free(w);
    return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cut = data[0] % size;
    const char *text = (const char *) data + 1;
    size--;
    cut = cut > size ? size : cut;

    struct seen whole = { 0, 0 }, split = { 0, 0 };
    int r1 = feed(text, size, size, &whole);
    int r2 = feed(text, size, cut, &split);
    FUZZ_CHECK(r1 == 0 || r1 == -EPROTO);
    if (r1 == 0) {
        FUZZ_CHECK(r2 == 0);
        FUZZ_CHECK(whole.n == split.n && whole.hash == split.hash);
    }
    return 0;
}
