/* core/util/duration.h: Go-style durations ("300ms", "1.5h", "2h45m"); a bare
 * number means seconds; "0" means none. Values are nanoseconds. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "clock.h"

/* 0 and *ret_ns on success; -EINVAL for bad syntax, -ERANGE on overflow. */
int duration_parse(const char *s, uint64_t *ret_ns);

/* Go's canonical form ("5m0s", "1.5s", "300ms", "0s") into buf. */
char *duration_format(uint64_t ns, char *buf, size_t size);
