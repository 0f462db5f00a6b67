/* core/name.c: name validation; pure, thread-safe. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

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
