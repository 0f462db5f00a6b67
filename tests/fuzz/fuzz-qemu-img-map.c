/* tests/fuzz/fuzz-qemu-img-map.c: `qemu-img map --output=json` of a disk
 * (extent_map_parse), and the lookups reads and lseek make in the map
 * (extent_find, extent_seek), checked against a plain walk of it.
 *
 * The input's first byte gives the disk's size (bits 0-1, of sizes[]),
 * the chain's length (bits 2-4) and which of its layers are read directly
 * (bits 5-7, repeated along the chain; all set: direct is NULL); the JSON
 * follows. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "extent.h"
#include "fuzz.h"

static const uint64_t sizes[] = { 0, 8192, 1048576, 8388608 };

/* what extent_seek should say, from a walk of every extent */
static int
seek_walk(const struct extent_map *m, uint64_t off, int whence, uint64_t *ret)
{
    if (off >= m->size)
        return -ENXIO;
    for (size_t i = 0; i < m->n; i++) {
        const struct extent *e = &m->v[i];
        if (e->start + e->length <= off ||
            (e->kind == EXTENT_ZERO) != (whence == SEEK_HOLE))
            continue;
        *ret = e->start > off ? e->start : off;
        return 0;
    }
    *ret = m->size;
    return whence == SEEK_HOLE ? 0 : -ENXIO;
}

static void
check_seek(const struct extent_map *m, uint64_t off)
{
    const int whences[] = { SEEK_DATA, SEEK_HOLE };

    for (size_t i = 0; i < 2; i++) {
        uint64_t got = 0, want = 0;
        int r = extent_seek(m, off, whences[i], &got);
        FUZZ_CHECK(r == seek_walk(m, off, whences[i], &want));
        FUZZ_CHECK(r < 0 || got == want);
    }
}

static void
check_map(const struct extent_map *m, unsigned n_layers, uint64_t size)
{
    uint64_t next = 0, allocated = 0;
    bool qemu = false;

    FUZZ_CHECK(m->size == size);
    for (size_t i = 0; i < m->n; i++) {
        const struct extent *e = &m->v[i], *p = i ? e - 1 : NULL;
        FUZZ_CHECK(e->start == next && e->length > 0);
        FUZZ_CHECK(e->kind == EXTENT_ZERO || e->kind == EXTENT_QEMU ||
                   (e->kind == EXTENT_FILE && e->layer < n_layers));
        /* neighbours that continue each other (the same from the same
         * layer) are one extent */
        FUZZ_CHECK(!p || p->kind != e->kind || p->depth != e->depth ||
                   p->present != e->present ||
                   (e->kind == EXTENT_FILE &&
                    (p->layer != e->layer || p->offset + p->length != e->offset)));
        FUZZ_CHECK(extent_find(m, e->start) == e);
        FUZZ_CHECK(extent_find(m, e->start + e->length - 1) == e);
        if (e->kind != EXTENT_ZERO)
            allocated += e->length;
        qemu |= e->kind == EXTENT_QEMU;
        next += e->length;
        check_seek(m, e->start);
    }
    FUZZ_CHECK(next == size && allocated == m->allocated && qemu == m->needs_qemu);
    FUZZ_CHECK(!extent_find(m, size));
    check_seek(m, size / 2);
    check_seek(m, size);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint64_t disk = sizes[data[0] & 3];
    unsigned n_layers = (data[0] >> 2) & 7;
    unsigned mask = data[0] >> 5;
    /* exactly n_layers, so that a read past the chain is caught */
    bool *direct = mask == 7 ? NULL : calloc(n_layers ? n_layers : 1, sizeof *direct);
    for (unsigned i = 0; direct && i < n_layers; i++)
        direct[i] = mask & (1u << (i % 3));

    char *json = fuzz_strndup(data + 1, size - 1);
    struct extent_map *m = NULL;
    int r = extent_map_parse(json, n_layers, direct, disk, &m);
    FUZZ_CHECK(r == 0 || r == -EINVAL);
    if (r == 0)
        check_map(m, n_layers, disk);
    extent_map_free(m);
    free(json);
    free(direct);
    return 0;
}
