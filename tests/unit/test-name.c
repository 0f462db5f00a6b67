/* tests/unit/test-name.c: SPEC "Names" */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
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

/* 2026-12-06T07:39:04Z */
#define T ((time_t) 1796542744)

static void
safety(const char *snap, const char *want)
{
    char got[NAME_MAX_LEN + 1];
    name_safety_snapshot(snap, T, got);
    assert_string_equal(got, want);
    assert_int_equal(name_check(got), 0);
}

static void
test_safety_snapshot(void **state)
{
    (void) state;
    safety("s1", "pre-restore-s1-20261206-073904");
    safety("v1.2", "pre-restore-v1.2-20261206-073904");
    /* cut at 35 characters: exactly 63 in all */
    safety("a2345678901234567890123456789012345678901234567890",
           "pre-restore-a2345678901234567890123456789012345-20261206-073904");
    /* no '-' or '.' left at the cut */
    safety("a234567890123456789012345678901234-x", "pre-restore-a234567890123456789012345678901234-20261206-073904");
    safety("a23456789012345678901234567890123.-x", "pre-restore-a23456789012345678901234567890123-20261206-073904");
    /* names made by other tools, and the old safety names */
    safety("Before_Upgrade", "pre-restore-before-upgrade-20261206-073904");
    safety("pre-restore-s1-20261122T065715Z", "pre-restore-pre-restore-s1-20261122t065715z-20261206-073904");
    safety("a..b", "pre-restore-a--b-20261206-073904");
    safety("x.-y", "pre-restore-x--y-20261206-073904");
    safety("--", "pre-restore-20261206-073904");
    safety("", "pre-restore-20261206-073904");
    safety("caf\xc3\xa9", "pre-restore-caf-20261206-073904");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_safety_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
