/* tests/unit/test-log.c: what reaches the log and `events` cannot forge
 * lines (text_escape) nor show a password (uri_redact). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "log.h"

static void
test_escape(void **state)
{
    char buf[64];

    (void) state;
    assert_int_equal(text_escape(buf, sizeof buf, "plain text", NULL), 10);
    assert_string_equal(buf, "plain text");
    text_escape(buf, sizeof buf, "a\nb\rc\td\x7f", NULL);
    assert_string_equal(buf, "a\\x0ab\\x0dc\\x09d\\x7f");
    text_escape(buf, sizeof buf, "two words\\x", " \\");
    assert_string_equal(buf, "two\\x20words\\x5cx");
    /* UTF-8 stays as it is */
    text_escape(buf, sizeof buf, "caf\xc3\xa9", NULL);
    assert_string_equal(buf, "caf\xc3\xa9");
    /* truncated, never an escape cut in half, always terminated */
    text_escape(buf, 6, "ab\ncd", NULL);
    assert_string_equal(buf, "ab");
    text_escape(buf, 1, "abc", NULL);
    assert_string_equal(buf, "");
    text_escape(buf, sizeof buf, NULL, NULL);
    assert_string_equal(buf, "");
}

static void
check_redact(const char *in, const char *want)
{
    char *got = uri_redact(in);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void
test_redact(void **state)
{
    (void) state;
    check_redact("qemu:///system", "qemu:///system");
    check_redact("qemu+ssh://root@host/system", "qemu+ssh://root@host/system");
    check_redact("qemu+ssh://user:pw@host/system", "qemu+ssh://user:***@host/system");
    check_redact("qemu+tcp://u:p@ss:w0rd@10.0.0.1:16509/system?x=a:b@c",
                 "qemu+tcp://u:***@10.0.0.1:16509/system?x=a:b@c");
    check_redact("test:///default", "test:///default");
    check_redact("kubevirt://ctx", "kubevirt://ctx");
    check_redact("weird", "weird");
    check_redact("qemu+ssh://host:22/system", "qemu+ssh://host:22/system");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_redact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
