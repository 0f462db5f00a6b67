/* tests/unit/test-duration.c: Go-style durations (SPEC "Mounting") */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "duration.h"

#define S NSEC_PER_SEC
#define MS NSEC_PER_MSEC

static uint64_t
parse_ok(const char *s)
{
    uint64_t ns = 12345;
    assert_int_equal(duration_parse(s, &ns), 0);
    return ns;
}

static void
test_units(void **state)
{
    (void) state;
    assert_true(parse_ok("300ms") == 300 * MS);
    assert_true(parse_ok("1.5h") == 5400 * S);
    assert_true(parse_ok("2h45m") == (2 * 3600 + 45 * 60) * S);
    assert_true(parse_ok("5m") == 300 * S);
    assert_true(parse_ok("1h2m3s4ms5us6ns") ==
                3723 * S + 4 * MS + 5000 + 6);
    assert_true(parse_ok("1\xc2\xb5s") == 1000);
    assert_true(parse_ok(".5s") == S / 2);
    assert_true(parse_ok("5.s") == 5 * S);
    assert_true(parse_ok("0s") == 0);
    assert_true(parse_ok("1m30s") == 90 * S);
}

static void
test_bare_number_is_seconds(void **state)
{
    (void) state;
    assert_true(parse_ok("0") == 0);
    assert_true(parse_ok("10") == 10 * S);
    assert_true(parse_ok("1.25") == 1250 * MS);
    assert_true(parse_ok("+7") == 7 * S);
}

static void
test_invalid(void **state)
{
    uint64_t ns = 42;
    (void) state;
    const char *bad[] = { "", "ms", "5x", "5 s", "-5s", "1h-2m", "1.2.3s",
                          "s5", "5sm", "5m3", ".s", "abc", "1e3" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(duration_parse(bad[i], &ns), -EINVAL);
        assert_true(ns == 42);          /* ret_ written only on success */
    }
    assert_int_equal(duration_parse(NULL, &ns), -EINVAL);
}

static void
test_overflow(void **state)
{
    uint64_t ns;
    (void) state;
    assert_int_equal(duration_parse("99999999999999999999h", &ns), -ERANGE);
    assert_int_equal(duration_parse("9999999999h", &ns), -ERANGE);
    assert_int_equal(duration_parse("18446744074", &ns), -ERANGE);
}

static void
test_format_round_trip(void **state)
{
    char buf[64];
    const char *canon[] = { "0s", "5m0s", "1h0m0s", "2h45m0s", "1.5s",
                            "300ms", "1h30m0s", "1m30.25s", "7ns", "1.5\xc2\xb5s" };
    (void) state;
    assert_string_equal(duration_format(300 * S, buf, sizeof buf), "5m0s");
    assert_string_equal(duration_format(300 * MS, buf, sizeof buf), "300ms");
    for (size_t i = 0; i < sizeof canon / sizeof canon[0]; i++) {
        uint64_t ns = parse_ok(canon[i]);
        assert_string_equal(duration_format(ns, buf, sizeof buf), canon[i]);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_bare_number_is_seconds),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_format_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
