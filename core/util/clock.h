/* core/util/clock.h: the clock: monotonic time for deadlines and polls,
 * wall time as RFC 3339 (the tree's timestamps) and as a compact stamp
 * (names). Pure, thread-safe. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define NSEC_PER_MSEC UINT64_C(1000000)
#define NSEC_PER_SEC UINT64_C(1000000000)

uint64_t now_monotonic_ns(void);
/* Sleeps ns (< 1 s) nanoseconds: the pause of a polling loop. */
void sleep_ns(uint64_t ns);
/* t as "2026-12-06T07:39:04Z" into buf (at least 21 bytes); "" if t cannot
 * be shown. Returns buf. */
char *time_rfc3339(time_t t, char *buf, size_t size);
/* t as "YYYYMMDD-HHMMSS" (UTC) into buf (at least 16 bytes); returns buf. */
char *time_stamp(time_t t, char *buf, size_t size);
