/* tests/unit/test-extent.c: qemu-img map/info JSON -> extent table and
 * chain; lookups; SEEK_DATA/SEEK_HOLE. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "extent.h"
#include "qemu-img.h"

/* qemu-img 7.2 output for a 3-layer chain (raw base, qcow2 mid and top),
 * 8 MiB; plus a compressed extent (no offset) at the end */
static const char map_json[] =
    "[{ \"start\": 0, \"length\": 262144, \"depth\": 2, \"present\": true, \"zero\": false, \"data\": true, \"offset\": 0},\n"
    "{ \"start\": 262144, \"length\": 786432, \"depth\": 2, \"present\": true, \"zero\": true, \"data\": false, \"offset\": 262144},\n"
    "{ \"start\": 1048576, \"length\": 131072, \"depth\": 1, \"present\": true, \"zero\": false, \"data\": true, \"offset\": 327680},\n"
    "{ \"start\": 1179648, \"length\": 917504, \"depth\": 2, \"present\": true, \"zero\": true, \"data\": false, \"offset\": 1179648},\n"
    "{ \"start\": 2097152, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"offset\": 327680},\n"
    "{ \"start\": 2162688, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"offset\": 393216},\n"
    "{ \"start\": 2228224, \"length\": 1966080, \"depth\": 2, \"present\": true, \"zero\": true, \"data\": false, \"offset\": 2228224},\n"
    "{ \"start\": 4194304, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false},\n"
    "{ \"start\": 4259840, \"length\": 4063232, \"depth\": 3, \"present\": false, \"zero\": true, \"data\": false},\n"
    "{ \"start\": 8323072, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true}]\n";

#define MiB (UINT64_C(1) << 20)

static void
test_map(void **state)
{
    struct extent_map *m = NULL;
    (void) state;

    assert_int_equal(extent_map_parse(map_json, 3, NULL, 8 * MiB, &m), 0);
    assert_true(m->size == 8 * MiB);
    assert_true(m->needs_qemu);
    /* adjacent ranges merge where they hold the same from the same layer
     * (file ranges: when contiguous in it) */
    assert_int_equal(m->n, 9);
    assert_int_equal(m->v[0].kind, EXTENT_FILE);
    assert_int_equal(m->v[0].layer, 2);
    assert_int_equal(m->v[2].kind, EXTENT_FILE);
    assert_int_equal(m->v[2].layer, 1);
    assert_true(m->v[2].offset == 327680);
    /* top layer, two clusters back to back in the file: one extent */
    assert_int_equal(m->v[4].kind, EXTENT_FILE);
    assert_true(m->v[4].start == 2097152 && m->v[4].length == 131072);
    /* zeros of the base, zero clusters of the top, then unallocated to the
     * end of the chain: three holes, told apart by where they come from */
    assert_int_equal(m->v[5].kind, EXTENT_ZERO);
    assert_true(m->v[5].start == 2228224 && m->v[5].length == 4194304 - 2228224);
    assert_true(m->v[5].depth == 2 && m->v[5].present);
    assert_int_equal(m->v[6].kind, EXTENT_ZERO);
    assert_true(m->v[6].depth == 0 && m->v[6].present && m->v[6].length == 65536);
    assert_int_equal(m->v[7].kind, EXTENT_ZERO);
    assert_true(!m->v[7].present && m->v[7].start + m->v[7].length == 8323072);
    assert_int_equal(m->v[8].kind, EXTENT_QEMU);
    assert_true(m->v[8].depth == 0);
    assert_true(m->allocated == 262144 + 131072 + 131072 + 65536);

    const struct extent *e = extent_find(m, 2097152 + 70000);
    assert_non_null(e);
    assert_true(e->start == 2097152);
    assert_null(extent_find(m, 8 * MiB));
    assert_true(extent_find(m, 0) == &m->v[0]);
    assert_true(extent_find(m, 8 * MiB - 1) == &m->v[8]);
    extent_map_free(m);
}

static void
test_seek(void **state)
{
    struct extent_map *m = NULL;
    uint64_t pos = 0;
    (void) state;

    assert_int_equal(extent_map_parse(map_json, 3, NULL, 8 * MiB, &m), 0);
    assert_int_equal(extent_seek(m, 0, SEEK_DATA, &pos), 0);
    assert_true(pos == 0);
    assert_int_equal(extent_seek(m, 0, SEEK_HOLE, &pos), 0);
    assert_true(pos == 262144);
    assert_int_equal(extent_seek(m, 300000, SEEK_DATA, &pos), 0);
    assert_true(pos == 1048576);
    assert_int_equal(extent_seek(m, 1048576 + 5, SEEK_DATA, &pos), 0);
    assert_true(pos == 1048576 + 5);
    assert_int_equal(extent_seek(m, 2228224, SEEK_DATA, &pos), 0);
    assert_true(pos == 8323072);       /* the compressed extent is data */
    assert_int_equal(extent_seek(m, 8323072, SEEK_HOLE, &pos), 0);
    assert_true(pos == 8 * MiB);       /* the end is a hole */
    assert_int_equal(extent_seek(m, 8 * MiB, SEEK_DATA, &pos), -ENXIO);
    assert_int_equal(extent_seek(m, 8 * MiB, SEEK_HOLE, &pos), -ENXIO);
    extent_map_free(m);

    /* all zeros: no data anywhere */
    assert_int_equal(extent_map_parse("[{\"start\": 0, \"length\": 4096, \"depth\": 0, "
                                      "\"present\": false, \"zero\": true, \"data\": false}]",
                                      1, NULL, 4096, &m), 0);
    assert_int_equal(extent_seek(m, 0, SEEK_DATA, &pos), -ENXIO);
    assert_int_equal(extent_seek(m, 0, SEEK_HOLE, &pos), 0);
    assert_true(pos == 0);
    extent_map_free(m);
}

static void
test_bad_maps(void **state)
{
    struct extent_map *m = NULL;
    (void) state;
    const char *bad[] = {
        "", "{}", "[",
        /* a gap */
        ("[{\"start\": 0, \"length\": 4096, \"data\": true, \"offset\": 0},"
         " {\"start\": 8192, \"length\": 4096, \"data\": true, \"offset\": 0}]"),
        /* short of the size */
        "[{\"start\": 0, \"length\": 4096, \"data\": true, \"offset\": 0}]",
        /* past the size */
        "[{\"start\": 0, \"length\": 16384, \"data\": true, \"offset\": 0}]",
        /* negative */
        "[{\"start\": -1, \"length\": 8192, \"data\": true, \"offset\": 0}]",
        /* empty extent */
        "[{\"start\": 0, \"length\": 0}, {\"start\": 0, \"length\": 8192}]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(extent_map_parse(bad[i], 1, NULL, 8192, &m), -EINVAL);
    /* a depth beyond the chain cannot be read from a file: QEMU reads it */
    assert_int_equal(extent_map_parse("[{\"start\": 0, \"length\": 8192, \"depth\": 5, "
                                      "\"data\": true, \"offset\": 0}]", 2, NULL, 8192, &m), 0);
    assert_int_equal(m->v[0].kind, EXTENT_QEMU);
    extent_map_free(m);
    /* a layer whose offsets are not into its own file: QEMU reads it */
    bool direct[2] = { true, false };
    assert_int_equal(extent_map_parse("[{\"start\": 0, \"length\": 4096, \"depth\": 1, "
                                      "\"data\": true, \"offset\": 0}, {\"start\": 4096, "
                                      "\"length\": 4096, \"depth\": 0, \"data\": true, "
                                      "\"offset\": 65536}]", 2, direct, 8192, &m), 0);
    assert_int_equal(m->v[0].kind, EXTENT_QEMU);
    assert_int_equal(m->v[1].kind, EXTENT_FILE);
    extent_map_free(m);
}

static void
test_chain(void **state)
{
    struct chain *c = NULL;
    (void) state;
    const char *json =
        "[{\"virtual-size\": 8388608, \"filename\": \"/d/top.qcow2\", \"format\": \"qcow2\","
        "  \"full-backing-filename\": \"mid.qcow2\"},"
        " {\"virtual-size\": 8388608, \"filename\": \"mid.qcow2\", \"format\": \"qcow2\"},"
        " {\"virtual-size\": 8388608, \"filename\": \"/other/base.raw\", \"format\": \"raw\"}]";

    assert_int_equal(chain_parse(json, "/d/top.qcow2", &c), 0);
    assert_int_equal(c->n, 3);
    assert_true(c->size == 8388608);
    assert_string_equal(c->layers[0], "/d/top.qcow2");
    assert_string_equal(c->layers[1], "/d/mid.qcow2");   /* relative to the top */
    assert_string_equal(c->layers[2], "/other/base.raw");
    assert_string_equal(c->formats[2], "raw");
    assert_false(c->qemu_only);
    chain_free(c);

    assert_int_equal(chain_parse("[{\"virtual-size\": 1, \"filename\": \"/a\", \"format\": "
                                 "\"qcow2\", \"encrypted\": true}]", "/a", &c), 0);
    assert_true(c->qemu_only);
    chain_free(c);
    assert_int_equal(chain_parse("[{\"virtual-size\": 1, \"filename\": \"/a\", \"format\": "
                                 "\"qcow2\", \"format-specific\": {\"type\": \"qcow2\", "
                                 "\"data\": {\"data-file\": \"/b\"}}}]", "/a", &c), 0);
    assert_true(c->qemu_only);
    chain_free(c);

    assert_int_equal(chain_parse("[]", "/a", &c), -EINVAL);
    assert_int_equal(chain_parse("[{\"filename\": \"/a\"}]", "/a", &c), -EINVAL);
    assert_int_equal(chain_parse("nope", "/a", &c), -EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map),
        cmocka_unit_test(test_seek),
        cmocka_unit_test(test_bad_maps),
        cmocka_unit_test(test_chain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
