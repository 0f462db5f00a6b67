/* core/util/cleanup.h: scope-exit release helpers (GCC/Clang cleanup attribute).
 *
 * _cleanup_free_ char *s = NULL;   freed when s goes out of scope
 * return TAKE_PTR(s);              hand ownership out
 */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>

#define _cleanup_(fn) __attribute__((cleanup(fn)))

static inline void
freep(void *p)
{
    free(*(void **) p);
}

static inline void
closep(int *fd)
{
    if (*fd >= 0)
        (void) close(*fd);
}

static inline void
fclosep(FILE **f)
{
    if (*f)
        (void) fclose(*f);
}

/* Frees a string that held a secret (a token, a key), wiped first. */
static inline void
wipe_free(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
    free(s);
}

static inline void
strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static inline void
strv_freep(char ***v)
{
    strv_free(*v);
}

static inline void
mutex_unlockp(pthread_mutex_t **m)
{
    if (*m)
        pthread_mutex_unlock(*m);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_strv_ _cleanup_(strv_freep)

/* DEFINE_CLEANUP(T, fn) defines fnp(T *) for _cleanup_(fnp). */
#define DEFINE_CLEANUP(T, fn)                                                  \
    static inline void fn##p(T *p)                                             \
    {                                                                          \
        if (*p)                                                                \
            (void) fn(*p);                                                     \
    }

#define TAKE_PTR(p)                                                            \
    __extension__({                                                            \
        __typeof__(p) take_tmp_ = (p);                                         \
        (p) = NULL;                                                            \
        take_tmp_;                                                             \
    })

/* Hold a mutex until the end of the enclosing scope. */
#define LOCK_FOR_SCOPE(m)                                                      \
    _cleanup_(mutex_unlockp) __attribute__((unused)) pthread_mutex_t *scope_lock_ = \
        (pthread_mutex_lock(m), (m))

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
