/* core/util/clock.c: see clock.h. */
#include <stdio.h>

#include "clock.h"

uint64_t
now_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
}

void
sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t) (ns / NSEC_PER_SEC), (long) (ns % NSEC_PER_SEC) };
    nanosleep(&ts, NULL);
}

char *
time_rfc3339(time_t t, char *buf, size_t size)
{
    struct tm tm;
    if (size > 0 && (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0))
        buf[0] = '\0';
    return buf;
}

char *
time_stamp(time_t t, char *buf, size_t size)
{
    struct tm tm;
    if (size > 0 && (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y%m%d-%H%M%S", &tm) == 0))
        buf[0] = '\0';
    return buf;
}
