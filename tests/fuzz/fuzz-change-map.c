/* tests/fuzz/fuzz-change-map.c: the map of an incremental backup
 * (changes/NAME.map), which vmsnap-apply reads from wherever the user kept
 * it: parsed; a map that is accepted keeps its rules (in order, not
 * overlapping, within the disk) and reads back the same once rendered. */
#include <errno.h>
#include <string.h>

#include "change-map.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct change_map *m = NULL, *back = NULL;
    char *error = NULL;
    int r = change_map_parse((const char *) data, size, &m, &error);

    FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ENOMEM);
    FUZZ_CHECK(r != -EINVAL || error);
    free(error);
    if (r < 0)
        return 0;
    uint64_t end = 0;
    for (size_t i = 0; i < m->n; i++) {
        FUZZ_CHECK(m->v[i].length > 0 && m->v[i].offset >= end);
        FUZZ_CHECK(m->v[i].offset <= m->size && m->v[i].length <= m->size - m->v[i].offset);
        end = m->v[i].offset + m->v[i].length;
    }
    char *text = change_map_render(m);
    FUZZ_CHECK(text);
    FUZZ_CHECK(change_map_parse(text, strlen(text), &back, &error) == 0);
    FUZZ_CHECK(strcmp(back->base, m->base) == 0 && back->size == m->size && back->n == m->n);
    FUZZ_CHECK(back->n == 0 || memcmp(back->v, m->v, m->n * sizeof *m->v) == 0);
    change_map_free(back);
    change_map_free(m);
    free(text);
    return 0;
}
