/* tests/unit/test-name.c: SPEC "Names" */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "name.h"

static void
test_valid(void **state)
{
    (void) state;
    assert_int_equal(name_check("before-upgrade"), 0);
    assert_int_equal(name_check("a"), 0);
    assert_int_equal(name_check("0"), 0);
    assert_int_equal(name_check("v1.2.3"), 0);
    assert_int_equal(name_check("a-b.c-d"), 0);
    assert_int_equal(name_check("pre-restore-s1-20261122t043134z"), 0);
    /* exactly 63 characters */
    assert_int_equal(name_check("a23456789012345678901234567890123456789012345678901234567890123"), 0);
}

static void
test_invalid(void **state)
{
    (void) state;
    assert_int_equal(name_check(NULL), -EINVAL);
    assert_int_equal(name_check(""), -EINVAL);
    assert_int_equal(name_check("Upper"), -EINVAL);
    assert_int_equal(name_check("-dash-first"), -EINVAL);
    assert_int_equal(name_check("dash-last-"), -EINVAL);
    assert_int_equal(name_check(".dot"), -EINVAL);
    assert_int_equal(name_check("dot."), -EINVAL);
    assert_int_equal(name_check("a..b"), -EINVAL);
    assert_int_equal(name_check("a.-b"), -EINVAL);
    assert_int_equal(name_check("a-.b"), -EINVAL);
    assert_int_equal(name_check("under_score"), -EINVAL);
    assert_int_equal(name_check("sp ace"), -EINVAL);
    assert_int_equal(name_check("sl/ash"), -EINVAL);
    assert_int_equal(name_check("caf\xc3\xa9"), -EINVAL);
    /* 64 characters */
    assert_int_equal(name_check("a234567890123456789012345678901234567890123456789012345678901234"), -EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
