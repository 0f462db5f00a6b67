/* core/kubevirt/kube-watch.c: see kube-watch.h. json-c's tokener keeps the
 * state of an object cut between two pieces. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "kube-watch.h"
#include "string-table.h"

#define MAX_EVENT_DEPTH 64
#define MAX_EVENT_BYTES (64u << 20)    /* one object: far above any real one */

struct kube_watch {
    struct json_tokener *tok;
    kube_event_fn fn;
    void *opaque;
    bool mid;               /* an event began in an earlier piece */
    size_t event_bytes;     /* of the event being read */
};

static const char *const event_names[] = {
    [KUBE_ADDED] = "ADDED",
    [KUBE_MODIFIED] = "MODIFIED",
    [KUBE_DELETED] = "DELETED",
    [KUBE_BOOKMARK] = "BOOKMARK",
    [KUBE_ERROR] = "ERROR",
};

struct kube_watch *
kube_watch_new(kube_event_fn fn, void *opaque)
{
    struct kube_watch *w = calloc(1, sizeof *w);

    if (!w || !(w->tok = json_tokener_new_ex(MAX_EVENT_DEPTH))) {
        free(w);
        return NULL;
    }
    w->fn = fn;
    w->opaque = opaque;
    return w;
}

void
kube_watch_free(struct kube_watch *w)
{
    if (!w)
        return;
    json_tokener_free(w->tok);
    free(w);
}

static int
deliver(struct kube_watch *w, struct json_object *ev)
{
    struct json_object *t, *o;

    if (!json_object_is_type(ev, json_type_object) ||
        !json_object_object_get_ex(ev, "type", &t) || !json_object_is_type(t, json_type_string) ||
        !json_object_object_get_ex(ev, "object", &o) || !json_object_is_type(o, json_type_object))
        return -EPROTO;
    int type = string_table_lookup(event_names, (int) (sizeof event_names / sizeof *event_names),
                                   json_object_get_string(t));
    if (type < 0)
        return 0;                   /* a type added later: not ours */
    return w->fn(w->opaque, (enum kube_event) type, o);
}

int
kube_watch_feed(struct kube_watch *w, const char *data, size_t len)
{
    if (memchr(data, '\0', len))
        return -EPROTO;             /* never in JSON text */
    while (len > 0) {
        /* whitespace between events (the encoder's newlines) */
        if (!w->mid && (*data == '\n' || *data == '\r' || *data == ' ' || *data == '\t')) {
            data++;
            len--;
            continue;
        }
        /* every event is an object: anything else between them (a number,
         * a comment json-c would take) is not a watch stream, however the
         * bytes are cut */
        if (!w->mid && *data != '{')
            return -EPROTO;
        int n = len > 1 << 20 ? 1 << 20 : (int) len;
        struct json_object *ev = json_tokener_parse_ex(w->tok, data, n);
        enum json_tokener_error e = json_tokener_get_error(w->tok);
        if (e == json_tokener_continue) {
            w->event_bytes += (size_t) n;
            if (w->event_bytes > MAX_EVENT_BYTES) {
                json_tokener_reset(w->tok);
                w->mid = false;
                w->event_bytes = 0;
                return -EPROTO;     /* an object without end: not an event */
            }
            w->mid = true;
            data += n;
            len -= (size_t) n;
            continue;
        }
        if (e != json_tokener_success || !ev) {
            json_object_put(ev);
            json_tokener_reset(w->tok);
            w->mid = false;
            return -EPROTO;
        }
        size_t used = json_tokener_get_parse_end(w->tok);
        json_tokener_reset(w->tok);
        w->mid = false;
        w->event_bytes = 0;
        int r = deliver(w, ev);
        json_object_put(ev);
        if (r < 0)
            return r;
        data += used;
        len -= used;
    }
    return 0;
}
