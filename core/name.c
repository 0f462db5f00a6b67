/* core/name.c: name validation; pure, thread-safe. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "name.h"

static bool
is_alnum_lower(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

int
name_check(const char *name)
{
    size_t n = name ? strlen(name) : 0;

    if (n == 0 || n > NAME_MAX_LEN)
        return -EINVAL;

    /* Each '.'-separated part: [a-z0-9]([a-z0-9-]*[a-z0-9])? */
    bool part_start = true;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool part_end = i + 1 == n || name[i + 1] == '.';

        if (c == '.') {
            if (part_start)
                return -EINVAL;      /* empty part */
            part_start = true;
            continue;
        }
        if (!is_alnum_lower(c) && c != '-')
            return -EINVAL;
        if ((part_start || part_end) && !is_alnum_lower(c))
            return -EINVAL;
        part_start = false;
    }
    return part_start ? -EINVAL : 0;  /* trailing '.' */
}

#define SAFETY_PREFIX "pre-restore-"
#define SAFETY_STAMP_LEN 15     /* YYYYMMDD-HHMMSS */
/* what is left of NAME_MAX_LEN for SNAP */
#define SAFETY_SNAP_MAX (NAME_MAX_LEN - (sizeof SAFETY_PREFIX - 1) - 1 - SAFETY_STAMP_LEN)

/* snap as it may stand in a name: lower case, other characters '-', cut
 * at max, no '-' or '.' at its end; '.' too made '-' if dots (".." or a
 * part starting with '-') would make the name invalid. */
static void
safety_part(const char *snap, size_t max, bool no_dots, char *out)
{
    size_t n = 0;

    for (; snap && snap[n] && n < max; n++) {
        char c = snap[n];
        if (c >= 'A' && c <= 'Z')
            c = (char) (c - 'A' + 'a');
        else if (!is_alnum_lower(c) && c != '-' && (c != '.' || no_dots))
            c = '-';
        out[n] = c;
    }
    while (n > 0 && (out[n - 1] == '-' || out[n - 1] == '.'))
        n--;
    out[n] = '\0';
}

void
name_safety_snapshot(const char *snap, time_t t, char ret[NAME_MAX_LEN + 1])
{
    char part[SAFETY_SNAP_MAX + 1], when[SAFETY_STAMP_LEN + 1];

    time_stamp(t, when, sizeof when);
    for (int no_dots = 0; no_dots < 2; no_dots++) {
        safety_part(snap, SAFETY_SNAP_MAX, no_dots, part);
        snprintf(ret, NAME_MAX_LEN + 1, "%s%s%s%s", SAFETY_PREFIX, part,
                 part[0] ? "-" : "", when);
        if (name_check(ret) == 0)
            return;
    }
}
