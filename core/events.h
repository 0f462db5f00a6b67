/* core/events.h: the per-VM "events" file: recent operations, one line each,
 * newest last: "TIME OPERATION OBJECT OUTCOME REASON". Adding an event also
 * writes the log line, so the two always agree. Thread-safe. */
#pragma once

#include <stddef.h>

#define EVENTS_PER_VM 200

struct events;

struct events *events_new(void);
void events_free(struct events *ev);

/* err: 0 for success, -errno for failure; object may be NULL ("-").
 * Returns err, so "return events_add(...)" passes the failure on. */
int events_add(struct events *ev, const char *ns, const char *vm,
               const char *op, const char *object, int err,
               const char *reason_fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* fn is called after each line is added, without a lock held; set it
 * before any thread adds a line. */
void events_set_hook(struct events *ev,
                     void (*fn)(void *opaque, const char *ns, const char *vm),
                     void *opaque);

/* The lines for one VM, allocated ("" if none); NULL only on OOM. */
char *events_render(struct events *ev, const char *ns, const char *vm);
