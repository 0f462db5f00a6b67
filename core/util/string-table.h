/* core/util/string-table.h: enum <-> string tables (x_to_string/x_from_string). */
#pragma once

#include <errno.h>
#include <string.h>

/* The index of s in names[0..n), or -EINVAL. */
static inline int
string_table_lookup(const char *const *names, int n, const char *s)
{
    for (int i = 0; s && i < n; i++)
        if (names[i] && strcmp(s, names[i]) == 0)
            return i;
    return -EINVAL;
}
