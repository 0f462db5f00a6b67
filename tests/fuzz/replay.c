/* tests/fuzz/replay.c: the fuzz targets without libFuzzer. Feeds every
 * file named, and every file in every folder named (not those whose name
 * starts with '.'), to LLVMFuzzerTestOneInput, in name order; a broken
 * property or a sanitizer's report ends it, after the input's name. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "fuzz.h"

static int
replay_file(const char *path)
{
    _cleanup_(fclosep) FILE *f = fopen(path, "rb");
    struct stat st;

    if (!f || fstat(fileno(f), &st) < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    /* an exact allocation, so that reading past the input is caught */
    size_t size = (size_t) st.st_size;
    _cleanup_free_ uint8_t *data = malloc(size ? size : 1);
    if (!data || fread(data, 1, size, f) != size) {
        fprintf(stderr, "replay: %s: cannot read\n", path);
        return -1;
    }
    fprintf(stderr, "replay: %s\n", path);
    LLVMFuzzerTestOneInput(data, size);
    return 0;
}

static int
by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int
skip_dot(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* The number of inputs replayed, or -1. */
static int
replay(const char *path)
{
    struct stat st;
    struct dirent **names;
    int n, done = 0;

    if (stat(path, &st) < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return replay_file(path) < 0 ? -1 : 1;
    n = scandir(path, &names, skip_dot, by_name);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char file[PATH_MAX];
        int r = -1;
        if (done >= 0 && snprintf(file, sizeof file, "%s/%s", path,
                                  names[i]->d_name) < (int) sizeof file)
            r = replay(file);
        done = r < 0 ? -1 : done + r;
        free(names[i]);
    }
    free(names);
    return done;
}

int
main(int argc, char **argv)
{
    int total = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        int n = replay(argv[i]);
        if (n < 0)
            return 1;
        total += n;
    }
    printf("replay: %d inputs, no failure\n", total);
    return 0;
}
