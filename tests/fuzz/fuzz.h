/* tests/fuzz/fuzz.h: what every fuzz target shares. A target defines
 * LLVMFuzzerTestOneInput; libFuzzer drives it in a -Dfuzzing=true build,
 * replay.c (every file of the corpus and regression folders) in any other. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property of the parser does not hold: print where and abort(), which
 * libFuzzer reports as a crash and the replay test as a failure. */
#define FUZZ_CHECK(cond)                                                       \
    ((cond) ? (void) 0 : fuzz_fail(__FILE__, __LINE__, #cond))

_Noreturn void fuzz_fail(const char *file, int line, const char *what);

/* The input as a C string: a NUL-terminated, allocated copy (the parsers
 * take strings; an inner NUL simply ends it early). Aborts on OOM. */
char *fuzz_strndup(const uint8_t *data, size_t size);

/* Defines the target of a parser of C strings: fn(the input as one). */
#define FUZZ_STRING_TARGET(fn)                                                 \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)               \
    {                                                                          \
        char *text_ = fuzz_strndup(data, size);                                \
        fn(text_);                                                             \
        free(text_);                                                           \
        return 0;                                                              \
    }

/* Checks shared by targets whose parsers feed each other (common.c). */
void fuzz_domain_xml(const char *xml);     /* every lv_xml_* domain reader */
void fuzz_snapshot_meta(const char *text); /* decode, encode, decode */
