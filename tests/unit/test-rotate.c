/* tests/unit/test-rotate.c: vmsnap-rotate's selection (tools/rotate-prune.c)
 * against cases worked by hand from Proxmox Backup Server's prune rules,
 * and its strict reading of names and times. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rotate-prune.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* a case: the snapshots newest first, each with the mark it must get */
struct want {
    const char *name;
    enum rotate_mark mark;
};

#define L ROTATE_KEEP_LAST
#define H ROTATE_KEEP_HOURLY
#define D ROTATE_KEEP_DAILY
#define W ROTATE_KEEP_WEEKLY
#define M ROTATE_KEEP_MONTHLY
#define Y ROTATE_KEEP_YEARLY
#define A ROTATE_KEEP_ALL
#define X ROTATE_REMOVE

static void
check(const struct rotate_policy *p, const struct want *w, size_t n)
{
    struct rotate_snap v[64];
    assert_true(n <= N(v));
    /* handed over in another order than newest first: the selection sorts */
    for (size_t i = 0; i < n; i++) {
        const struct want *x = &w[(i + n / 2) % n];
        v[n - 1 - i] = (struct rotate_snap) { .name = x->name, .mark = ROTATE_UNMARKED };
        if (!rotate_parse_name("auto", x->name, &v[n - 1 - i].time))
            fail_msg("test case name '%s' does not parse", x->name);
    }
    assert_int_equal(rotate_select(v, n, p), 0);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].name, w[i].name) != 0)
            fail_msg("position %zu: %s, wanted %s (not sorted newest first)", i, v[i].name,
                     w[i].name);
        if (v[i].mark != w[i].mark)
            fail_msg("%s: %s, wanted %s", v[i].name, rotate_mark_name(v[i].mark),
                     rotate_mark_name(w[i].mark));
    }
}

static void
test_keep_last(void **state)
{
    (void) state;
    struct rotate_policy p = { .keep[ROTATE_LAST] = 3 };
    const struct want w[] = {
        { "auto-20260105-120000", L },
        { "auto-20260105-110000", L },
        { "auto-20260105-105959", L },
        { "auto-20260104-120000", X },
        { "auto-20250101-000000", X },
    };
    check(&p, w, N(w));

    /* more to keep than there are: all kept */
    p.keep[ROTATE_LAST] = 10;
    const struct want all[] = {
        { "auto-20260105-120000", L },
        { "auto-20260104-120000", L },
    };
    check(&p, all, N(all));
}

static void
test_hourly(void **state)
{
    (void) state;
    /* several in an hour: the newest of each of the 2 newest hours */
    struct rotate_policy p = { .keep[ROTATE_HOURLY] = 2 };
    const struct want w[] = {
        { "auto-20260105-120000", H },
        { "auto-20260105-114000", H },
        { "auto-20260105-111000", X },  /* hour 11 has its snapshot */
        { "auto-20260105-105500", X },  /* a third hour: past the 2 */
        { "auto-20260105-103000", X },
        { "auto-20260105-100500", X },
    };
    check(&p, w, N(w));

    /* keep-last first: its snapshot covers hour 12, so hourly keeps the
     * newest of hours 11 and 10 */
    p.keep[ROTATE_LAST] = 1;
    const struct want wl[] = {
        { "auto-20260105-120000", L },
        { "auto-20260105-114000", H },
        { "auto-20260105-111000", X },
        { "auto-20260105-105500", H },
        { "auto-20260105-103000", X },
        { "auto-20260105-100500", X },
    };
    check(&p, wl, N(wl));

    /* hours without a snapshot do not count: 2 hours apart, 3 kept */
    struct rotate_policy p3 = { .keep[ROTATE_HOURLY] = 3 };
    const struct want gaps[] = {
        { "auto-20260105-235900", H },
        { "auto-20260105-200000", H },
        { "auto-20260104-010000", H },  /* a day before, still one of the 3 */
        { "auto-20260104-000000", X },
    };
    check(&p3, gaps, N(gaps));
}

static void
test_daily_weekly_overlap(void **state)
{
    (void) state;
    /* 2026-01-12 is a Monday (ISO week 3); 01-05..01-11 is week 2;
     * 01-04 is the Sunday of week 1; 2025-12-28 the Sunday of 2025-W52 */
    struct rotate_policy p = { .keep[ROTATE_DAILY] = 2, .keep[ROTATE_WEEKLY] = 2 };
    const struct want w[] = {
        { "auto-20260112-080000", D },  /* day 12, week 3 */
        { "auto-20260111-200000", D },  /* day 11, week 2 */
        { "auto-20260111-080000", X },  /* day 11 has one */
        { "auto-20260110-120000", X },  /* week 2 is covered by daily's: skipped */
        { "auto-20260104-120000", W },  /* week 1 */
        { "auto-20251228-120000", W },  /* week 2025-52 */
        { "auto-20251221-120000", X },  /* a third week: past the 2 */
    };
    check(&p, w, N(w));

    /* weekly alone keeps the newest of weeks 3 and 2 instead */
    struct rotate_policy pw = { .keep[ROTATE_WEEKLY] = 2 };
    const struct want ww[] = {
        { "auto-20260112-080000", W },
        { "auto-20260111-200000", W },
        { "auto-20260111-080000", X },
        { "auto-20260110-120000", X },
        { "auto-20260104-120000", X },
        { "auto-20251228-120000", X },
        { "auto-20251221-120000", X },
    };
    check(&pw, ww, N(ww));
}

static void
test_iso_week_year_boundary(void **state)
{
    (void) state;
    /* 2021-01-01..03 (Fri..Sun) are in ISO week 2020-53 with 2020-12-28
     * (Mon); 2021-01-04 starts 2021-01; 2020-12-27 ends 2020-52 */
    struct rotate_policy p = { .keep[ROTATE_WEEKLY] = 3 };
    const struct want w[] = {
        { "auto-20210104-000000", W },  /* 2021-W01 */
        { "auto-20210103-235959", W },  /* 2020-W53 */
        { "auto-20210101-000000", X },
        { "auto-20201228-000000", X },
        { "auto-20201227-235959", W },  /* 2020-W52 */
        { "auto-20201221-000000", X },  /* 2020-W52 too */
    };
    check(&p, w, N(w));

    /* 2025-12-29 (Mon) is in 2026-W01 with 2026-01-01: one week */
    struct rotate_policy p2 = { .keep[ROTATE_WEEKLY] = 5 };
    const struct want w2[] = {
        { "auto-20260102-000000", W },
        { "auto-20251230-000000", X },
        { "auto-20251229-000000", X },
        { "auto-20251228-235959", W },  /* 2025-W52 */
    };
    check(&p2, w2, N(w2));
}

static void
test_monthly_yearly(void **state)
{
    (void) state;
    struct rotate_policy p = { .keep[ROTATE_MONTHLY] = 3 };
    const struct want w[] = {
        { "auto-20260331-235959", M },
        { "auto-20260301-000000", X },
        { "auto-20260228-120000", M },
        { "auto-20260201-000000", X },
        { "auto-20260115-000000", M },
        { "auto-20251231-235959", X },  /* a fourth month */
    };
    check(&p, w, N(w));

    struct rotate_policy py = { .keep[ROTATE_YEARLY] = 2 };
    const struct want wy[] = {
        { "auto-20260101-000000", Y },
        { "auto-20251231-235959", Y },
        { "auto-20250101-000000", X },
        { "auto-20240601-000000", X },
    };
    check(&py, wy, N(wy));

    /* every rule at once: each takes what the earlier left */
    struct rotate_policy pa = {
        .keep = { [ROTATE_LAST] = 1, [ROTATE_HOURLY] = 1, [ROTATE_DAILY] = 1,
                  [ROTATE_WEEKLY] = 1, [ROTATE_MONTHLY] = 1, [ROTATE_YEARLY] = 1 },
    };
    const struct want wa[] = {
        { "auto-20260115-120000", L },
        { "auto-20260115-113000", H },  /* hour 11 */
        { "auto-20260115-110000", X },
        { "auto-20260114-090000", D },  /* day 14 */
        { "auto-20260113-090000", X },  /* days are taken; week 3 covered */
        { "auto-20260110-090000", W },  /* week 2 */
        { "auto-20260102-090000", X },  /* month 1 covered, weeks taken */
        { "auto-20251215-000000", M },  /* 2025-12 */
        { "auto-20251115-000000", X },  /* months taken; 2025 covered */
        { "auto-20240101-000000", Y },  /* 2024 */
        { "auto-20230101-000000", X },
    };
    check(&pa, wa, N(wa));
}

static void
test_keep_all(void **state)
{
    (void) state;
    struct rotate_policy none = { 0 };
    assert_false(rotate_policy_keeps_something(&none));
    const struct want w[] = {
        { "auto-20260105-120000", A },
        { "auto-20260105-115959", A },
        { "auto-19700101-000000", A },
    };
    check(&none, w, N(w));
    struct rotate_policy one = { .keep[ROTATE_YEARLY] = 1 };
    assert_true(rotate_policy_keeps_something(&one));
    /* and nothing to select from */
    assert_int_equal(rotate_select(NULL, 0, &one), 0);
}

static void
test_names(void **state)
{
    (void) state;
    int64_t t;
    assert_true(rotate_parse_name("auto", "auto-20260101-000000", &t));
    assert_int_equal(t, 1767225600);
    assert_true(rotate_parse_name("auto", "auto-19700101-000000", &t));
    assert_int_equal(t, 0);
    assert_true(rotate_parse_name("auto", "auto-20240229-235959", &t));  /* a leap day */
    assert_true(rotate_parse_name("auto-x", "auto-x-20260101-000000", &t));
    assert_true(rotate_parse_name("nightly.v2", "nightly.v2-99991231-235959", &t));

    static const char *const bad[] = {
        "manual-1", "auto-foo", "other-20260101-000000", "AUTO-20260101-000000",
        "auto", "auto-", "auto-20260101", "auto-20260101-", "auto-20260101-00000",
        "auto-20260101-0000000", "auto-20260101-000000x", "auto-20260101_000000",
        "auto20260101-000000", "auto--20260101-000000", "auto-x-20260101-000000",
        " auto-20260101-000000", "auto-20260101-000000 ", "auto-+0260101-000000",
        "auto-2026 101-000000", "auto-20260230-000000", "auto-20250229-000000",
        "auto-20260431-000000", "auto-20261301-000000", "auto-20260001-000000",
        "auto-20260100-000000", "auto-20260101-240000", "auto-20260101-006000",
        "auto-20260101-000060", "auto-19691231-235959", "auto-00000101-000000",
        "auto-20260101-000000.1", ".", "..", "",
    };
    for (size_t i = 0; i < N(bad); i++)
        if (rotate_parse_name("auto", bad[i], &t))
            fail_msg("'%s' was taken for a name of the prefix auto", bad[i]);

    char buf[64];
    assert_int_equal(rotate_format_name("auto", 1767225600 + 3723, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "auto-20260101-010203");
    assert_true(rotate_parse_name("auto", buf, &t));
    assert_int_equal(t, 1767225600 + 3723);
    assert_int_equal(rotate_format_name("auto", 0, buf, 10), -ENAMETOOLONG);
    assert_int_equal(rotate_format_name("auto", -1, buf, sizeof(buf)), -EINVAL);

    assert_true(rotate_prefix_valid("auto"));
    assert_true(rotate_prefix_valid("web1.nightly_x-y"));
    assert_true(rotate_prefix_valid("0"));
    static const char *const bad_prefix[] = {
        "", "-auto", ".auto", "_a", "a/b", "a b", "a\n", "..", "ä",
        "a1234567890123456789012345678901234567890123456789012345678901234", /* 65 */
    };
    for (size_t i = 0; i < N(bad_prefix); i++)
        if (rotate_prefix_valid(bad_prefix[i]))
            fail_msg("'%s' was taken for a prefix", bad_prefix[i]);
}

static void
test_times(void **state)
{
    (void) state;
    int64_t t;
    assert_int_equal(rotate_parse_time("2026-01-01T00:00:00Z", &t), 0);
    assert_int_equal(t, 1767225600);
    assert_int_equal(rotate_parse_time("2024-02-29T23:59:59Z", &t), 0);
    static const char *const bad[] = {
        "2026-01-01 00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00+00:00",
        "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:60Z", "2026-1-01T00:00:00Z", "20260101T000000Z", "",
        "1969-12-31T23:59:59Z", "2026-01-01t00:00:00z", "-026-01-01T00:00:00Z",
    };
    for (size_t i = 0; i < N(bad); i++)
        assert_int_equal(rotate_parse_time(bad[i], &t), -EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_last),
        cmocka_unit_test(test_hourly),
        cmocka_unit_test(test_daily_weekly_overlap),
        cmocka_unit_test(test_iso_week_year_boundary),
        cmocka_unit_test(test_monthly_yearly),
        cmocka_unit_test(test_keep_all),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
