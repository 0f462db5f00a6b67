/* tests/unit/test-change-map.c: maps of incremental backups are read
 * back as rendered, and every map that breaks a rule is refused with a
 * reason that names the rule. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "change-map.h"
#include "volume.h"

static void
test_round_trip(void **state)
{
    (void) state;
    struct change_extent v[] = {
        { 0, 65536, false }, { 1 << 20, 4096, true }, { (1ull << 32) + 512, 1 << 20, false },
    };
    struct change_map m = { .base = (char *) "night-1", .size = 8ull << 30, .v = v, .n = 3 };
    char *text = change_map_render(&m);
    assert_non_null(text);

    struct change_map *back = NULL;
    char *error = NULL;
    assert_int_equal(change_map_parse(text, strlen(text), &back, &error), 0);
    assert_null(error);
    assert_string_equal(back->base, "night-1");
    assert_int_equal(back->size, 8ull << 30);
    assert_int_equal(back->n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(back->v[i].offset, v[i].offset);
        assert_int_equal(back->v[i].length, v[i].length);
        assert_int_equal(back->v[i].zero, v[i].zero);
    }
    assert_int_equal(change_map_bytes(back), 65536 + 4096 + (1 << 20));
    change_map_free(back);
    free(text);

    /* no changes at all is a map too */
    const char *none = "{\"base\": \"a\", \"size\": 0, \"extents\": []}\n";
    assert_int_equal(change_map_parse(none, strlen(none), &back, &error), 0);
    assert_int_equal(back->n, 0);
    change_map_free(back);
}

static void
refused(const char *text, const char *reason_part)
{
    struct change_map *m = NULL;
    char *error = NULL;
    int r = change_map_parse(text, strlen(text), &m, &error);
    if (r != -EINVAL || !error || !strstr(error, reason_part))
        fail_msg("'%s': %d, '%s' (wanted a reason with '%s')", text, r, error ? error : "",
                 reason_part);
    assert_null(m);
    free(error);
}

static void
test_bad_maps(void **state)
{
    (void) state;
    refused("", "not JSON");
    refused("{\"base\": \"a\", \"size\": 10", "not JSON");
    refused("[1, 2]", "not a JSON object");
    refused("{\"base\": \"a\", \"size\": 10, \"extents\": []} x", "text after");
    refused("{\"size\": 10, \"extents\": []}", "\"base\"");
    refused("{\"base\": \"\", \"size\": 10, \"extents\": []}", "\"base\"");
    refused("{\"base\": \"a\", \"extents\": []}", "no \"size\"");
    refused("{\"base\": \"a\", \"size\": -1, \"extents\": []}", "out of range");
    refused("{\"base\": \"a\", \"size\": 1.5, \"extents\": []}", "whole number");
    refused("{\"base\": \"a\", \"size\": \"10\", \"extents\": []}", "whole number");
    refused("{\"base\": \"a\", \"size\": 99999999999999999999, \"extents\": []}", "range");
    refused("{\"base\": \"a\", \"size\": 10, \"extents\": {}}", "not a list");
    refused("{\"base\": \"a\", \"size\": 10, \"extents\": [5]}", "extent 0 is not an object");
    refused("{\"base\": \"a\", \"size\": 10, \"extents\": [{\"offset\": 0, \"length\": 2}]}",
            "\"zero\"");
    refused("{\"base\": \"a\", \"size\": 10, \"extents\": [{\"offset\": 0, \"length\": 2, "
            "\"zero\": 1}]}", "\"zero\"");
    refused("{\"base\": \"a\", \"size\": 10, \"extents\": [{\"offset\": 0, \"length\": 0, "
            "\"zero\": false}]}", "empty");
    refused("{\"base\": \"a\", \"size\": 10, \"extents\": [{\"offset\": 8, \"length\": 4, "
            "\"zero\": false}]}", "past the disk");
    refused("{\"base\": \"a\", \"size\": 10, \"extents\": [{\"offset\": 11, \"length\": 1, "
            "\"zero\": false}]}", "past the disk");
    /* overlapping, and out of order */
    refused("{\"base\": \"a\", \"size\": 100, \"extents\": ["
            "{\"offset\": 0, \"length\": 10, \"zero\": false},"
            "{\"offset\": 5, \"length\": 10, \"zero\": true}]}", "extent 1 (at 5) overlaps");
    refused("{\"base\": \"a\", \"size\": 100, \"extents\": ["
            "{\"offset\": 50, \"length\": 10, \"zero\": false},"
            "{\"offset\": 0, \"length\": 10, \"zero\": false}]}", "comes before");
    /* a length that would wrap past 2^64 with the offset */
    refused("{\"base\": \"a\", \"size\": 4611686018427387904, \"extents\": ["
            "{\"offset\": 4611686018427387903, \"length\": 9223372036854775806, "
            "\"zero\": false}]}", "past the disk");
}


/* A map from a compact spec: "OFF+LEN[z] ..." in KiB. */
static struct change_map *
map_of(uint64_t size_kib, const char *spec)
{
    struct change_map *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->size = size_kib << 10;
    for (const char *p = spec; p && *p;) {
        char *end;
        unsigned long long off = strtoull(p, &end, 10);
        assert_int_equal(*end, '+');
        unsigned long long len = strtoull(end + 1, &end, 10);
        bool zero = *end == 'z';
        if (zero)
            end++;
        assert_int_equal(change_map_append(m, off << 10, len << 10, zero), 0);
        p = end;
        while (*p == ' ')
            p++;
    }
    return m;
}

/* The map back in that spec form. */
static void
assert_map(const struct change_map *m, const char *want)
{
    char got[1024] = "";
    for (size_t i = 0; i < m->n; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu+%llu%s", i ? " " : "",
                 (unsigned long long) (m->v[i].offset >> 10),
                 (unsigned long long) (m->v[i].length >> 10), m->v[i].zero ? "z" : "");
    assert_string_equal(got, want);
}

static void
test_append(void **state)
{
    (void) state;
    struct change_map *m = map_of(1024, "0+64 64+64 128+64z 256+64");
    assert_map(m, "0+128 128+64z 256+64");      /* alike neighbours joined */
    assert_int_equal(change_map_append(m, 300 << 10, 4096, false), -EINVAL);  /* overlaps */
    assert_int_equal(change_map_append(m, 1000 << 10, 100 << 10, false), -EINVAL); /* past end */
    for (unsigned i = 0; i < 100; i++)          /* grows */
        assert_int_equal(change_map_append(m, (uint64_t) (400 + 2 * i) << 10, 1024, i % 2), 0);
    assert_int_equal(m->n, 103);
    change_map_free(m);
}

static void
overlay_is(const char *older, const char *newer, const char *want)
{
    struct change_map *o = map_of(1024, older), *n = map_of(1024, newer), *r = NULL;
    o->base = strdup("first");
    assert_int_equal(change_map_overlay(o, n, &r), 0);
    assert_string_equal(r->base, "first");
    assert_map(r, want);
    change_map_free(r);
    change_map_free(o);
    change_map_free(n);
}

static void
test_overlay(void **state)
{
    (void) state;
    overlay_is("", "", "");
    overlay_is("0+64", "", "0+64");
    overlay_is("", "0+64z", "0+64z");
    overlay_is("0+64", "128+64", "0+64 128+64");
    /* newer's say wins where both changed a range */
    overlay_is("0+256", "64+64z", "0+64 64+64z 128+128");
    overlay_is("64+64z", "0+256", "0+256");
    overlay_is("0+128z 256+128", "64+256", "0+64z 64+320");
    overlay_is("0+64 128+64 256+64", "32+256z", "0+32 32+256z 288+32");
    overlay_is("100+10 120+10 140+10", "0+115 125+10", "0+115 120+15 140+10");

    struct change_map *a = map_of(1024, "0+64"), *b = map_of(2048, "0+64"), *r = NULL;
    assert_int_equal(change_map_overlay(a, b, &r), -EINVAL);     /* other disk sizes */
    change_map_free(a);
    change_map_free(b);
}

static void
test_coarsen(void **state)
{
    (void) state;
    struct change_map *m = map_of(4096, "0+4z 4+4z 64+4 200+4 1000+4z 1004+4 3000+4");
    assert_map(m, "0+8z 64+4 200+4 1000+4z 1004+4 3000+4");
    change_map_coarsen(m, 6);
    assert_map(m, "0+8z 64+4 200+4 1000+4z 1004+4 3000+4");
    change_map_coarsen(m, 5);
    /* the 64 KiB gaps go first; a join is data (zero only if both were
     * zeros and touched) */
    assert_map(m, "0+68 200+4 1000+8 3000+4");
    change_map_coarsen(m, 1);
    assert_map(m, "0+3004");
    change_map_free(m);
}

/* ---- the masked view, over a view of a pattern in memory ---- */

struct mem_view {
    struct volume_view base;
    unsigned char *data;
    bool closed;
};

static int
mem_pread(struct volume_view *v, void *buf, size_t count, uint64_t off, const char **reason)
{
    (void) reason;
    assert_true(off + count <= v->size);
    memcpy(buf, ((struct mem_view *) v)->data + off, count);
    return 0;
}

static int
mem_seek(struct volume_view *v, uint64_t off, int whence, uint64_t *ret)
{
    (void) v, (void) off, (void) whence, (void) ret;
    return -EINVAL;
}

static void
mem_close(struct volume_view *v)
{
    ((struct mem_view *) v)->closed = true;
}

static const struct volume_view_ops mem_ops = { "mem", mem_pread, mem_seek, mem_close,
                                                NULL, NULL, NULL, NULL };

static void
test_masked_view(void **state)
{
    (void) state;
    enum { SIZE = 1 << 20 };
    struct mem_view mem = { .base = { .ops = &mem_ops, .size = SIZE, .allocated = SIZE } };
    mem.data = malloc(SIZE);
    assert_non_null(mem.data);
    for (size_t i = 0; i < SIZE; i++)
        mem.data[i] = (unsigned char) (i * 7 + 1);
    struct change_map *m = map_of(1024, "4+4 8+4 16+8z 100+1 512+512");
    struct volume_view *v = NULL;
    assert_int_equal(volume_view_open_masked(&mem.base, m, &v), 0);
    assert_int_equal(v->size, SIZE);
    assert_int_equal(v->allocated, (8 + 1 + 512) << 10);

    unsigned char *buf = malloc(SIZE);
    assert_non_null(buf);
    const char *reason = NULL;
    /* whole, and in odd pieces: changed data as the inner view has it,
     * zeros elsewhere (the zero extent too) */
    static const size_t pieces[] = { SIZE, 4093, 999 };
    for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
        size_t piece = pieces[p];
        memset(buf, 0xee, SIZE);
        for (size_t off = 0; off < SIZE; off += piece) {
            size_t n = off + piece > SIZE ? SIZE - off : piece;
            assert_int_equal(volume_view_pread(v, buf + off, n, off, &reason), 0);
        }
        for (size_t i = 0; i < SIZE; i++) {
            size_t k = i >> 10;
            bool changed = (k >= 4 && k < 12) || k == 100 || k >= 512;
            if (buf[i] != (changed ? mem.data[i] : 0))
                fail_msg("byte %zu (piece %zu): %u", i, piece, buf[i]);
        }
    }
    uint64_t at = 0;
    assert_int_equal(volume_view_seek(v, 0, SEEK_DATA, &at), 0);
    assert_int_equal(at, 4 << 10);
    assert_int_equal(volume_view_seek(v, 4 << 10, SEEK_HOLE, &at), 0);
    assert_int_equal(at, 12 << 10);             /* adjacent extents are one run */
    assert_int_equal(volume_view_seek(v, 12 << 10, SEEK_DATA, &at), 0);
    assert_int_equal(at, 100 << 10);            /* the zero extent is a hole */
    assert_int_equal(volume_view_seek(v, 16 << 10, SEEK_HOLE, &at), 0);
    assert_int_equal(at, 16 << 10);
    assert_int_equal(volume_view_seek(v, 600 << 10, SEEK_HOLE, &at), 0);
    assert_int_equal(at, SIZE);
    assert_int_equal(volume_view_seek(v, SIZE, SEEK_DATA, &at), -ENXIO);
    volume_view_close(v);
    assert_true(mem.closed);
    change_map_free(m);

    /* a map of another disk size: refused, the inner view closed */
    mem.closed = false;
    m = map_of(2048, "0+4");
    assert_int_equal(volume_view_open_masked(&mem.base, m, &v), -EIO);
    assert_true(mem.closed);
    change_map_free(m);
    free(buf);
    free(mem.data);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_maps),
        cmocka_unit_test(test_append),
        cmocka_unit_test(test_overlay),
        cmocka_unit_test(test_coarsen),
        cmocka_unit_test(test_masked_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
