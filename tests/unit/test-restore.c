/* tests/unit/test-restore.c: the lines written to restore and clone */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "duration.h"
#include "restore.h"

static int
parse(const char *s, struct restore_request *r)
{
    const char *why = NULL;
    int ret = restore_request_parse(s, strlen(s), r, &why);
    if (ret < 0)
        assert_non_null(why);
    return ret;
}

static void
test_valid(void **state)
{
    struct restore_request r;
    (void) state;
    assert_int_equal(parse("before-upgrade\n", &r), 0);
    assert_string_equal(r.snap, "before-upgrade");
    assert_int_equal(r.policy, RESTORE_FAIL_IMMEDIATE);
    assert_int_equal(r.mode, RESTORE_STRICT);

    assert_int_equal(parse("s1 policy=StopTarget mode=DryRun\n", &r), 0);
    assert_int_equal(r.policy, RESTORE_STOP_TARGET);
    assert_int_equal(r.mode, RESTORE_DRY_RUN);

    assert_int_equal(parse("s1 mode=BestEffort policy=WaitGracePeriod:2m30s", &r), 0);
    assert_int_equal(r.policy, RESTORE_WAIT_GRACE_PERIOD);
    assert_true(r.grace_ns == 150 * NSEC_PER_SEC);
    assert_int_equal(r.mode, RESTORE_BEST_EFFORT);

    assert_int_equal(parse("s1  policy=WaitEventually", &r), 0);
    assert_int_equal(r.policy, RESTORE_WAIT_EVENTUALLY);

    /* the safety snapshots' names, and other tools' */
    assert_int_equal(parse("pre-restore-s1-20261122T065715Z policy=StopTarget", &r), 0);
    assert_string_equal(r.snap, "pre-restore-s1-20261122T065715Z");
    assert_int_equal(parse("Before_Upgrade", &r), 0);
    assert_int_equal(r.policy, RESTORE_FAIL_IMMEDIATE);
}

static void
test_invalid(void **state)
{
    struct restore_request r;
    (void) state;
    const char *bad[] = {
        "", "\n", "a/b", "..", "s1 policy=Sometimes", "s1 mode=Lenient",
        "s1 policy", "s1 color=red", "s1 policy=StopTarget policy=FailImmediate",
        "s1 mode=DryRun mode=Strict", "s1 policy=WaitGracePeriod",
        "s1 policy=WaitGracePeriod:soon", "s1 policy=WaitGracePeriod:0",
        "s1 policy=StopTarget:5m", "s1\ns2", "s1\n\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(bad[i], &r), -EINVAL);
    const char nul[] = "s1\0x";
    const char *why;
    assert_int_equal(restore_request_parse(nul, sizeof nul - 1, &r, &why), -EINVAL);
}

static void
test_clone(void **state)
{
    char name[NAME_MAX_LEN + 1];
    const char *why;
    (void) state;
    assert_int_equal(clone_request_parse("larry-2\n", 8, name, &why), 0);
    assert_string_equal(name, "larry-2");
    assert_int_equal(clone_request_parse("Larry\n", 6, name, &why), -EINVAL);
    assert_int_equal(clone_request_parse("a b\n", 4, name, &why), -EINVAL);
    assert_int_equal(clone_request_parse("\n", 1, name, &why), -EINVAL);
    char longname[100];
    memset(longname, 'a', sizeof longname);
    assert_int_equal(clone_request_parse(longname, sizeof longname, name, &why), -EINVAL);
}

static void
test_tables(void **state)
{
    (void) state;
    for (int i = 0; i < _RESTORE_POLICY_MAX; i++)
        assert_int_equal(restore_policy_from_string(restore_policy_to_string(i)), i);
    for (int i = 0; i < _RESTORE_MODE_MAX; i++)
        assert_int_equal(restore_mode_from_string(restore_mode_to_string(i)), i);
    assert_int_equal(restore_policy_from_string("stoptarget"), -EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_clone),
        cmocka_unit_test(test_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
