/* tests/unit/test-events.c: the events file: one line each, newest last,
 * bounded, per VM */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "events.h"
#include "hashmap.h"

static size_t
count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void
test_lines(void **state)
{
    struct events *ev = events_new();
    (void) state;
    assert_non_null(ev);

    assert_int_equal(events_add(ev, "", "larry", "snapshot", "s1", 0, "ok"), 0);
    assert_int_equal(events_add(ev, "", "larry", "snapshot", "s2", -EIO,
                                "backend said:\nno"), -EIO);
    events_add(ev, "", "moe", "restore", NULL, 0, "done");

    char *text = events_render(ev, "", "larry");
    assert_int_equal(count_lines(text), 2);
    assert_non_null(strstr(text, " snapshot s1 succeeded ok\n"));
    /* newest last; a reason never breaks the one-line rule: control
     * characters are escaped */
    char *second = strchr(text, '\n') + 1;
    assert_non_null(strstr(second, " snapshot s2 failed backend said:\\x0ano\n"));
    free(text);

    /* nor does a name (a rejected one): it stays one field of one line */
    events_add(ev, "", "larry", "snapshot", "x\n2026 snapshot forged succeeded y", -EINVAL,
               "invalid snapshot name");
    text = events_render(ev, "", "larry");
    assert_int_equal(count_lines(text), 3);
    assert_non_null(strstr(text, " snapshot x\\x0a2026\\x20snapshot\\x20forged\\x20succeeded"
                                 "\\x20y failed invalid snapshot name\n"));
    free(text);

    text = events_render(ev, "", "moe");
    assert_non_null(strstr(text, " restore - succeeded done\n"));
    free(text);

    text = events_render(ev, "", "curly");
    assert_string_equal(text, "");
    free(text);
    events_free(ev);
}

static void
test_bounded(void **state)
{
    struct events *ev = events_new();
    (void) state;
    for (int i = 0; i < EVENTS_PER_VM + 50; i++)
        events_add(ev, "ns", "vm", "op", NULL, 0, "n=%d", i);
    char *text = events_render(ev, "ns", "vm");
    assert_int_equal(count_lines(text), EVENTS_PER_VM);
    assert_null(strstr(text, "n=49\n"));
    assert_non_null(strstr(text, "n=50\n"));
    const char *last = strstr(text, "n=249\n");
    assert_non_null(last);
    assert_string_equal(last, "n=249\n");
    free(text);
    events_free(ev);
}

static void
test_hashmap(void **state)
{
    struct hashmap *h = hashmap_new();
    char keys[2000][16];
    (void) state;
    for (int i = 0; i < 2000; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        assert_int_equal(hashmap_put(h, keys[i], keys[i], NULL), 0);
    }
    assert_int_equal(hashmap_size(h), 2000);
    for (int i = 0; i < 2000; i++)
        assert_ptr_equal(hashmap_get(h, keys[i]), keys[i]);
    void *old = NULL;
    assert_int_equal(hashmap_put(h, "k7", keys[8], &old), 0);
    assert_ptr_equal(old, keys[7]);
    assert_ptr_equal(hashmap_remove(h, "k7"), keys[8]);
    assert_null(hashmap_get(h, "k7"));
    assert_null(hashmap_remove(h, "k7"));
    assert_int_equal(hashmap_size(h), 1999);
    hashmap_free(h, NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_hashmap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
