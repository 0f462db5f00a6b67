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
#include "restore-policy.h"

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

/* SPEC "Restore": what each mode does with the conflicts found */
static void
test_mode_decide(void **state)
{
    char why[256] = "";
    (void) state;

    for (int m = 0; m < _RESTORE_MODE_MAX; m++)     /* no conflicts: go on (DryRun: done) */
        assert_int_equal(restore_mode_decide(m, 0, false, why, sizeof why),
                         m == RESTORE_DRY_RUN ? 1 : 0);
    /* DryRun succeeds whatever it finds; BestEffort goes on without them */
    assert_int_equal(restore_mode_decide(RESTORE_DRY_RUN, 3, true, why, sizeof why), 1);
    assert_int_equal(restore_mode_decide(RESTORE_BEST_EFFORT, 3, true, why, sizeof why), 0);
    /* Strict refuses: EBUSY for a device in use, EIO for data gone */
    assert_int_equal(restore_mode_decide(RESTORE_STRICT, 2, true, why, sizeof why), -EBUSY);
    assert_string_equal(why, "2 conflict(s) (see below); nothing was changed "
                             "(mode=BestEffort leaves those devices out)");
    assert_int_equal(restore_mode_decide(RESTORE_STRICT, 1, false, why, sizeof why), -EIO);
}

/* the failure deadline: taken once, from the mount option (0: none) */
static void
test_deadline(void **state)
{
    struct vmsnapfs_opts o = { .failure_deadline_ns = 0 };
    (void) state;

    struct deadline d = deadline_begin(&o);
    assert_true(d.at_ns == 0);
    assert_false(deadline_passed(d));
    assert_true(deadline_begin(NULL).at_ns == 0);
    o.failure_deadline_ns = 5 * NSEC_PER_SEC;
    uint64_t t0 = now_monotonic_ns();
    d = deadline_begin(&o);
    assert_true(d.at_ns >= t0 + o.failure_deadline_ns &&
                d.at_ns < t0 + o.failure_deadline_ns + NSEC_PER_SEC);
    assert_false(deadline_passed(d));
    d = deadline_after(NSEC_PER_MSEC);
    sleep_ns(2 * NSEC_PER_MSEC);
    assert_true(deadline_passed(d));
    /* a grace period within it: the earlier of the two */
    struct deadline g = deadline_within(deadline_after(NSEC_PER_SEC), 60 * NSEC_PER_SEC);
    assert_true(g.at_ns < now_monotonic_ns() + 2 * NSEC_PER_SEC);
    g = deadline_within((struct deadline) { 0 }, NSEC_PER_SEC);
    assert_true(g.at_ns > now_monotonic_ns());
}

/* SPEC "Restore": what each policy does about a VM that runs */
static void
test_policy_decide(void **state)
{
    struct restore_request rq = { .snap = "s1" };
    struct deadline none = { 0 }, soon = deadline_after(NSEC_PER_SEC), until = { 0 };
    char why[256] = "";
    (void) state;

    rq.policy = RESTORE_FAIL_IMMEDIATE;
    assert_int_equal(restore_policy_decide(&rq, none, &until, why, sizeof why),
                     RESTORE_ACT_REFUSE);
    assert_non_null(strstr(why, "policy=FailImmediate"));
    rq.policy = RESTORE_STOP_TARGET;
    assert_int_equal(restore_policy_decide(&rq, none, &until, why, sizeof why), RESTORE_ACT_STOP);
    /* WaitEventually: until the failure deadline (none: for ever) */
    rq.policy = RESTORE_WAIT_EVENTUALLY;
    assert_int_equal(restore_policy_decide(&rq, soon, &until, why, sizeof why), RESTORE_ACT_WAIT);
    assert_true(until.at_ns == soon.at_ns);
    assert_int_equal(restore_policy_decide(&rq, none, &until, why, sizeof why), RESTORE_ACT_WAIT);
    assert_true(until.at_ns == 0);
    assert_string_equal(restore_wait_timeout_reason(&rq),
                        "the VM did not stop within the failure deadline");
    /* WaitGracePeriod: the grace period, within the deadline */
    rq.policy = RESTORE_WAIT_GRACE_PERIOD;
    rq.grace_ns = 60 * NSEC_PER_SEC;
    assert_int_equal(restore_policy_decide(&rq, soon, &until, why, sizeof why), RESTORE_ACT_WAIT);
    assert_true(until.at_ns == soon.at_ns);
    uint64_t t0 = now_monotonic_ns();
    assert_int_equal(restore_policy_decide(&rq, none, &until, why, sizeof why), RESTORE_ACT_WAIT);
    assert_true(until.at_ns >= t0 + rq.grace_ns && until.at_ns < t0 + rq.grace_ns + NSEC_PER_SEC);
    rq.grace_ns = NSEC_PER_SEC / 10;
    t0 = now_monotonic_ns();
    assert_int_equal(restore_policy_decide(&rq, soon, &until, why, sizeof why), RESTORE_ACT_WAIT);
    assert_true(until.at_ns < soon.at_ns && until.at_ns >= t0 + rq.grace_ns);
    assert_string_equal(restore_wait_timeout_reason(&rq),
                        "the VM did not stop within the grace period");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_clone),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_mode_decide),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_policy_decide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
