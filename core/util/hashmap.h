/* core/util/hashmap.h: a small string-keyed hash map (chaining, grows x2).
 * Not thread-safe: callers lock. Keys are copied; values are not owned. */
#pragma once

#include <stddef.h>

struct hashmap;

struct hashmap *hashmap_new(void);
/* Calls free_value (if not NULL) on every value. Accepts NULL. */
void hashmap_free(struct hashmap *h, void (*free_value)(void *));
void *hashmap_get(const struct hashmap *h, const char *key);
/* Sets key to value; the old value (or NULL) in *ret_old. 0 or -ENOMEM. */
int hashmap_put(struct hashmap *h, const char *key, void *value, void **ret_old);
/* Removes key; returns its value or NULL. */
void *hashmap_remove(struct hashmap *h, const char *key);
size_t hashmap_size(const struct hashmap *h);
/* Calls fn on every entry; fn must not change the map. */
void hashmap_foreach(const struct hashmap *h,
                     void (*fn)(const char *key, void *value, void *opaque),
                     void *opaque);
