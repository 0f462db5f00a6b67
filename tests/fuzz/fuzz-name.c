/* tests/fuzz/fuzz-name.c: name_check (snapshot and VM names, from mkdir
 * and clone) against a second, plainer reading of SPEC "Names". */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "name.h"

/* 1 to 63 of [a-z0-9.-]; every '.'-separated part starts and ends with a
 * letter or digit */
static bool
valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    if (strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789.-") != n)
        return false;
    if (strchr(".-", s[0]) || strchr(".-", s[n - 1]))
        return false;
    return !strstr(s, "..") && !strstr(s, ".-") && !strstr(s, "-.");
}

static void
check(const char *s)
{
    int r = name_check(s);

    FUZZ_CHECK(r == 0 || r == -EINVAL);
    FUZZ_CHECK((r == 0) == valid(s));
}

FUZZ_STRING_TARGET(check)
