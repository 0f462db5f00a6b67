/* core/model-private.h: what model.c and model-cache.c share: the model
 * itself and the cache's entry points for the model's own code. Not for
 * fs/ or backends. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "hashmap.h"
#include "model.h"

struct model {
    const struct backend_ops *ops;
    void *h;
    struct events *events;

    pthread_mutex_t lock;         /* protects everything below */
    pthread_cond_t cond;          /* a fetch ended */
    struct model_listener listener;
    uint64_t resets;              /* bumped when every cached VM goes */
    unsigned flights;             /* fetch threads running */
    struct hashmap *vms;          /* "ns/name" -> struct cached (model-cache.c) */
    struct hashmap *names;        /* ns -> struct names_entry (model-cache.c) */
    char **namespaces;            /* sorted, namespaced backends */
    struct hashmap *restores;     /* "ns/vm" -> struct restore_status */
    struct sums *sums;            /* SHA256SUMS (NULL: no_checksums) */
};

/* "ns/name": the key of a VM (allocated; NULL on -ENOMEM). */
char *model_key(const char *ns, const char *name);

/* The cache's maps and condition (0 or -ENOMEM); its end, once no fetch
 * runs (cache_wait_fetches() first, before the backend closes). */
int cache_init(struct model *m);
void cache_wait_fetches(struct model *m);
void cache_fini(struct model *m);

/* What the backend reported (called with m->lock held). */
void cache_vm_changed(struct model *m, const char *ns, const char *name,
                      unsigned change);
void cache_reset(struct model *m);

/* Did an op that returned r change anything? */
bool may_have_changed(int r);
/* A change made through this mount to VM ns/name (and, with existence, to
 * the list it is in): what was cached before never shows again. */
void changed_here(struct model *m, const char *ns, const char *name, bool existence);
/* VM ns/name made through this mount: in the cached list at once. */
void vm_added_here(struct model *m, const char *ns, const char *name);
