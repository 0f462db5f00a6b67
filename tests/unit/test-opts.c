/* tests/unit/test-opts.c: mount options (SPEC "Mounting") and the enum
 * tables' round trips */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend.h"
#include "duration.h"
#include "opts.h"

static void
test_defaults(void **state)
{
    struct vmsnapfs_opts o;
    (void) state;
    opts_init(&o);
    assert_true(o.failure_deadline_ns == 300 * NSEC_PER_SEC);
    assert_int_equal(o.consistency, CONSISTENCY_BEST_EFFORT);
    assert_null(o.admin_group);
    assert_false(o.no_safety_snapshot);
    assert_false(o.allow_other);
}

static void
test_parse_mixed(void **state)
{
    struct vmsnapfs_opts o;
    char *rest = NULL, *bad = NULL;
    (void) state;
    opts_init(&o);
    assert_int_equal(opts_parse(&o, "rw,failure_deadline=1.5h,nosuid,"
                                    "consistency=required,allow_other,"
                                    "admin_group=wheel,no_safety_snapshot",
                                &rest, &bad), 0);
    assert_true(o.failure_deadline_ns == 5400 * NSEC_PER_SEC);
    assert_int_equal(o.consistency, CONSISTENCY_REQUIRED);
    assert_string_equal(o.admin_group, "wheel");
    assert_true(o.no_safety_snapshot);
    assert_true(o.allow_other);
    /* not ours: passed on in order; allow_other is FUSE's too */
    assert_string_equal(rest, "rw,nosuid,allow_other");
    assert_null(bad);
    free(rest);
    opts_clear(&o);
}

static void
test_deadline_zero_and_bare(void **state)
{
    struct vmsnapfs_opts o;
    (void) state;
    opts_init(&o);
    assert_int_equal(opts_apply(&o, "failure_deadline=0"), 1);
    assert_true(o.failure_deadline_ns == 0);
    assert_int_equal(opts_apply(&o, "failure_deadline=90"), 1);
    assert_true(o.failure_deadline_ns == 90 * NSEC_PER_SEC);
    opts_clear(&o);
}

static void
test_bad_values(void **state)
{
    struct vmsnapfs_opts o;
    char *rest = NULL, *bad = NULL;
    (void) state;
    opts_init(&o);
    assert_int_equal(opts_apply(&o, "failure_deadline=soon"), -EINVAL);
    assert_int_equal(opts_apply(&o, "failure_deadline"), -EINVAL);
    assert_int_equal(opts_apply(&o, "consistency=always"), -EINVAL);
    assert_int_equal(opts_apply(&o, "consistency"), -EINVAL);
    assert_int_equal(o.export_link, EXPORT_LINK_AUTO);
    assert_int_equal(opts_apply(&o, "export_link=internal"), 1);
    assert_int_equal(o.export_link, EXPORT_LINK_INTERNAL);
    assert_int_equal(opts_apply(&o, "export_link=external"), 1);
    assert_int_equal(o.export_link, EXPORT_LINK_EXTERNAL);
    assert_int_equal(opts_apply(&o, "export_link=ingress"), -EINVAL);
    assert_int_equal(opts_apply(&o, "export_link"), -EINVAL);
    assert_int_equal(opts_apply(&o, "admin_group="), -EINVAL);
    assert_int_equal(opts_apply(&o, "no_safety_snapshot=1"), -EINVAL);
    assert_int_equal(opts_parse(&o, "ro,consistency=maybe,rw", &rest, &bad),
                     -EINVAL);
    assert_string_equal(bad, "consistency=maybe");
    free(bad);
    free(rest);
    /* nothing changed by the failures */
    assert_true(o.failure_deadline_ns == DEFAULT_FAILURE_DEADLINE_NS);
    assert_int_equal(o.consistency, CONSISTENCY_BEST_EFFORT);
    opts_clear(&o);
}

static void
test_tables_round_trip(void **state)
{
    (void) state;
    for (int i = 0; i < _CONSISTENCY_MAX; i++)
        assert_int_equal(consistency_from_string(consistency_to_string(i)), i);
    for (int i = 0; i < _SNAPSHOT_PHASE_MAX; i++)
        assert_int_equal(snapshot_phase_from_string(snapshot_phase_to_string(i)), i);
    for (int i = 0; i < _INDICATION_MAX; i++)
        assert_int_equal(indication_from_string(indication_to_string(i)), i);
    assert_null(consistency_to_string(_CONSISTENCY_MAX));
    assert_int_equal(snapshot_phase_from_string("Done"), -EINVAL);
    assert_string_equal(indication_to_string(INDICATION_QUIESCE_FAILED), "QuiesceFailed");
    assert_string_equal(snapshot_phase_to_string(SNAPSHOT_IN_PROGRESS), "InProgress");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_parse_mixed),
        cmocka_unit_test(test_deadline_zero_and_bare),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_tables_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
