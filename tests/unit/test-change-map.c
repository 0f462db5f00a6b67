/* tests/unit/test-change-map.c: maps of incremental backups are read
 * back as rendered, and every map that breaks a rule is refused with a
 * reason that names the rule. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "change-map.h"

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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_maps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
