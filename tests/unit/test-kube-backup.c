/* tests/unit/test-kube-backup.c: pages of a pull-mode backup's map
 * endpoint (kubevirt-api.md 12.7) become the changes of a disk: dirty
 * extents as data, dirty,zero as zeros, clean and zero ones left out;
 * pages are joined by next_offset; a page with gaps, overlaps, unknown
 * types or a next_offset that is not its end is refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "change-map.h"
#include "kube-backup.h"

static int
page(struct change_map *m, uint64_t at, const char *text, uint64_t *next)
{
    char why[256] = "";
    return kube_backup_map_page(text, strlen(text), at, m, next, why, sizeof why);
}

static void
test_pages(void **state)
{
    (void) state;
    struct change_map *m = calloc(1, sizeof *m);
    uint64_t next = 0;
    assert_non_null(m);
    m->size = UINT64_MAX;
    assert_int_equal(page(m, 0, "{\"extents\":[{\"offset\":0,\"length\":65536,\"type\":0,"
                                "\"description\":\"clean\"},{\"offset\":65536,\"length\":65536,"
                                "\"type\":1,\"description\":\"dirty\"},{\"offset\":131072,"
                                "\"length\":131072,\"type\":3,\"description\":\"dirty,zero\"}],"
                                "\"next_offset\":262144}", &next), 0);
    assert_int_equal(next, 262144);
    m->size = UINT64_MAX;
    assert_int_equal(page(m, next, "{\"extents\":[{\"offset\":262144,\"length\":65536,"
                                   "\"type\":2,\"description\":\"zero\"},{\"offset\":327680,"
                                   "\"length\":65536,\"type\":1,\"description\":\"dirty\"}],"
                                   "\"next_offset\":null}", &next), 0);
    assert_int_equal(next, UINT64_MAX);
    assert_int_equal(m->size, 393216);
    assert_int_equal(m->n, 3);
    assert_int_equal(m->v[0].offset, 65536);
    assert_false(m->v[0].zero);
    assert_int_equal(m->v[1].offset, 131072);
    assert_int_equal(m->v[1].length, 131072);
    assert_true(m->v[1].zero);
    assert_int_equal(m->v[2].offset, 327680);
    change_map_free(m);
}

static void
refused(uint64_t at, const char *text)
{
    struct change_map *m = calloc(1, sizeof *m);
    uint64_t next = 0;
    assert_non_null(m);
    m->size = UINT64_MAX;
    if (page(m, at, text, &next) != -EINVAL)
        fail_msg("accepted: %s", text);
    change_map_free(m);
}

static void
test_bad_pages(void **state)
{
    (void) state;
    refused(0, "");
    refused(0, "[]");
    refused(0, "{\"extents\":{}}");
    refused(0, "{\"extents\":[{\"offset\":4096,\"length\":4096,\"type\":1}]}");     /* gap */
    refused(0, "{\"extents\":[{\"offset\":0,\"length\":8192,\"type\":1},"
               "{\"offset\":4096,\"length\":4096,\"type\":1}]}");                   /* overlap */
    refused(0, "{\"extents\":[{\"offset\":0,\"length\":0,\"type\":1}]}");           /* empty */
    refused(0, "{\"extents\":[{\"offset\":0,\"length\":4096,\"type\":7}]}");        /* type */
    refused(0, "{\"extents\":[{\"offset\":0,\"length\":4096,\"type\":\"dirty\"}]}");
    refused(0, "{\"extents\":[{\"offset\":0,\"length\":-1,\"type\":1}]}");
    refused(0, "{\"extents\":[{\"offset\":0,\"length\":4096,\"type\":1}],\"next_offset\":8192}");
    refused(0, "{\"extents\":[],\"next_offset\":0}");                               /* a loop */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pages),
        cmocka_unit_test(test_bad_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
