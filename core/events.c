/* core/events.c: see events.h. One ring of lines per VM, under one mutex. */
#define LOG_MODULE "events"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "events.h"
#include "hashmap.h"
#include "log.h"

struct ring {
    char *lines[EVENTS_PER_VM];
    size_t next;                /* slot of the next line */
    size_t count;
};

struct events {
    pthread_mutex_t lock;
    struct hashmap *rings;      /* "ns/vm" -> struct ring */
    void (*hook)(void *opaque, const char *ns, const char *vm);
    void *hook_opaque;
};

static void
ring_free(void *p)
{
    struct ring *r = p;
    for (size_t i = 0; i < EVENTS_PER_VM; i++)
        free(r->lines[i]);
    free(r);
}

struct events *
events_new(void)
{
    struct events *ev = calloc(1, sizeof *ev);
    if (!ev)
        return NULL;
    pthread_mutex_init(&ev->lock, NULL);
    ev->rings = hashmap_new();
    if (!ev->rings) {
        free(ev);
        return NULL;
    }
    return ev;
}

void
events_free(struct events *ev)
{
    if (!ev)
        return;
    hashmap_free(ev->rings, ring_free);
    pthread_mutex_destroy(&ev->lock);
    free(ev);
}

static char *
key_of(const char *ns, const char *vm)
{
    char *k = NULL;
    if (asprintf(&k, "%s/%s", ns ? ns : "", vm) < 0)
        return NULL;
    return k;
}

int
events_add(struct events *ev, const char *ns, const char *vm, const char *op,
           const char *object, int err, const char *reason_fmt, ...)
{
    char raw[1024], reason[1024], obj[512], when[32], *line = NULL;
    struct tm tm;
    time_t now = time(NULL);
    va_list ap;

    va_start(ap, reason_fmt);
    vsnprintf(raw, sizeof raw, reason_fmt, ap);
    va_end(ap);
    /* one line each, five fields: a name (a rejected one too) or a
     * reason cannot add a line, nor a field to the object */
    text_escape(reason, sizeof reason, raw, NULL);
    text_escape(obj, sizeof obj, object ? object : "-", " \\");
    object = obj;

    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    if (asprintf(&line, "%s %s %s %s %s\n", when, op, object ? object : "-",
                 err ? "failed" : "succeeded", reason) < 0)
        line = NULL;

    /* the same facts in the log: "'ns/vm': op 'object' failed: reason" */
    log_emit(err ? LOG_ERR : LOG_INFO, LOG_MODULE, err, "'%s%s%s': %s '%s' %s: %s",
             ns && *ns ? ns : "", ns && *ns ? "/" : "", vm, op,
             object ? object : "-", err ? "failed" : "succeeded", reason);

    _cleanup_free_ char *key = key_of(ns, vm);
    if (!line || !key) {
        free(line);
        return err;
    }

    {
        LOCK_FOR_SCOPE(&ev->lock);
        struct ring *r = hashmap_get(ev->rings, key);
        if (!r) {
            r = calloc(1, sizeof *r);
            if (!r || hashmap_put(ev->rings, key, r, NULL) < 0) {
                free(r);
                free(line);
                return err;
            }
        }
        free(r->lines[r->next]);
        r->lines[r->next] = line;
        r->next = (r->next + 1) % EVENTS_PER_VM;
        if (r->count < EVENTS_PER_VM)
            r->count++;
    }
    if (ev->hook)
        ev->hook(ev->hook_opaque, ns, vm);
    return err;
}

void
events_set_hook(struct events *ev, void (*fn)(void *opaque, const char *ns, const char *vm),
                void *opaque)
{
    ev->hook = fn;
    ev->hook_opaque = opaque;
}

char *
events_render(struct events *ev, const char *ns, const char *vm)
{
    _cleanup_free_ char *key = key_of(ns, vm);
    if (!key)
        return NULL;

    LOCK_FOR_SCOPE(&ev->lock);
    struct ring *r = hashmap_get(ev->rings, key);
    size_t len = 0;
    if (!r)
        return strdup("");

    size_t first = (r->next + EVENTS_PER_VM - r->count) % EVENTS_PER_VM;
    for (size_t i = 0; i < r->count; i++)
        len += strlen(r->lines[(first + i) % EVENTS_PER_VM]);
    char *out = malloc(len + 1), *p = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < r->count; i++)
        p = stpcpy(p, r->lines[(first + i) % EVENTS_PER_VM]);
    *p = '\0';
    return out;
}
