/* core/util/hashmap.c: see hashmap.h. FNV-1a hashing. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hashmap.h"

struct entry {
    struct entry *next;
    void *value;
    uint64_t hash;
    char key[];
};

struct hashmap {
    struct entry **buckets;
    size_t n_buckets;
    size_t size;
};

static uint64_t
hash_of(const char *s)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (; *s; s++)
        h = (h ^ (unsigned char) *s) * UINT64_C(1099511628211);
    return h;
}

struct hashmap *
hashmap_new(void)
{
    struct hashmap *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->n_buckets = 64;
    h->buckets = calloc(h->n_buckets, sizeof *h->buckets);
    if (!h->buckets) {
        free(h);
        return NULL;
    }
    return h;
}

void
hashmap_free(struct hashmap *h, void (*free_value)(void *))
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_buckets; i++) {
        for (struct entry *e = h->buckets[i], *next; e; e = next) {
            next = e->next;
            if (free_value)
                free_value(e->value);
            free(e);
        }
    }
    free(h->buckets);
    free(h);
}

static struct entry **
find(const struct hashmap *h, const char *key, uint64_t hash)
{
    struct entry **p = &h->buckets[hash % h->n_buckets];
    for (; *p; p = &(*p)->next)
        if ((*p)->hash == hash && strcmp((*p)->key, key) == 0)
            break;
    return p;
}

void *
hashmap_get(const struct hashmap *h, const char *key)
{
    struct entry *e = *find(h, key, hash_of(key));
    return e ? e->value : NULL;
}

static void
grow(struct hashmap *h)
{
    size_t n = h->n_buckets * 2;
    struct entry **b = calloc(n, sizeof *b);

    if (!b)
        return;                     /* keep working with longer chains */
    for (size_t i = 0; i < h->n_buckets; i++) {
        for (struct entry *e = h->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash % n];
            b[e->hash % n] = e;
        }
    }
    free(h->buckets);
    h->buckets = b;
    h->n_buckets = n;
}

int
hashmap_put(struct hashmap *h, const char *key, void *value, void **ret_old)
{
    uint64_t hash = hash_of(key);
    struct entry **p = find(h, key, hash);

    if (*p) {
        if (ret_old)
            *ret_old = (*p)->value;
        (*p)->value = value;
        return 0;
    }
    size_t len = strlen(key);
    struct entry *e = malloc(sizeof *e + len + 1);
    if (!e)
        return -ENOMEM;
    memcpy(e->key, key, len + 1);
    e->hash = hash;
    e->value = value;
    e->next = NULL;
    *p = e;
    h->size++;
    if (ret_old)
        *ret_old = NULL;
    if (h->size > h->n_buckets)
        grow(h);
    return 0;
}

void *
hashmap_remove(struct hashmap *h, const char *key)
{
    struct entry **p = find(h, key, hash_of(key));
    struct entry *e = *p;
    void *v;

    if (!e)
        return NULL;
    *p = e->next;
    v = e->value;
    free(e);
    h->size--;
    return v;
}

size_t
hashmap_size(const struct hashmap *h)
{
    return h->size;
}

void
hashmap_foreach(const struct hashmap *h,
                void (*fn)(const char *key, void *value, void *opaque),
                void *opaque)
{
    for (size_t i = 0; i < h->n_buckets; i++)
        for (struct entry *e = h->buckets[i]; e; e = e->next)
            fn(e->key, e->value, opaque);
}
