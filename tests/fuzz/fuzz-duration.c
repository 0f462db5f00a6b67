/* tests/fuzz/fuzz-duration.c: duration_parse (failure_deadline=, and
 * WaitGracePeriod:D in restore lines), and duration_format: what it
 * writes parses back to the same value, for parsed values and for any
 * 64-bit value taken from the input's first bytes; into a buffer too small
 * for it, it writes a prefix of it and nothing past the buffer (the size:
 * the byte after those 8, as 1 to 32). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "fuzz.h"

static void
round_trip(uint64_t ns)
{
    char buf[64];
    uint64_t again = 0;

    duration_format(ns, buf, sizeof buf);
    FUZZ_CHECK(strlen(buf) < sizeof buf - 1);   /* not cut short */
    FUZZ_CHECK(duration_parse(buf, &again) == 0);
    FUZZ_CHECK(again == ns);
}

/* Into a buffer of size bytes, too few maybe: a prefix of the text,
 * NUL-terminated, and nothing written past it. A guard behind the buffer
 * (the text is 25 bytes at most) shows an overrun in every build, not only
 * under ASan. */
static void
format_short(uint64_t ns, size_t size)
{
    char whole[64], buf[32 + 32];

    FUZZ_CHECK(size > 0 && size <= 32);
    memset(buf, 0xa5, sizeof buf);
    duration_format(ns, whole, sizeof whole);
    duration_format(ns, buf, size);
    for (size_t i = size; i < sizeof buf; i++)
        FUZZ_CHECK((unsigned char) buf[i] == 0xa5);   /* wrote past size */
    FUZZ_CHECK(memchr(buf, '\0', size));
    FUZZ_CHECK(strncmp(buf, whole, strlen(buf)) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_strndup(data, size);
    uint64_t ns = 0;
    int r = duration_parse(s, &ns);

    FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ERANGE);
    if (r == 0)
        round_trip(ns);
    if (size >= sizeof ns) {
        memcpy(&ns, data, sizeof ns);
        round_trip(ns);
        if (size > sizeof ns)
            format_short(ns, 1 + data[sizeof ns] % 32);
    }
    free(s);
    return 0;
}
