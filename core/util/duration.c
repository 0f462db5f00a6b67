/* core/util/duration.c: see duration.h; pure, thread-safe. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "duration.h"

static const struct {
    const char *suffix;
    uint64_t ns;
} units[] = {
    /* longest suffixes first so "ms" is not read as "m" */
    { "ns", 1 },
    { "us", 1000 },
    { "\xc2\xb5s", 1000 },   /* µs (micro sign) */
    { "\xce\xbcs", 1000 },   /* μs (Greek mu) */
    { "ms", NSEC_PER_MSEC },
    { "s", NSEC_PER_SEC },
    { "m", 60 * NSEC_PER_SEC },
    { "h", 3600 * NSEC_PER_SEC },
};

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads "123", "1.5", ".5" or "5." into an integer part and a fraction
 * (numerator/denominator); advances *p. */
static int
read_number(const char **p, uint64_t *ret_int, uint64_t *ret_frac,
            uint64_t *ret_scale)
{
    const char *s = *p;
    uint64_t v = 0, frac = 0, scale = 1;
    bool digits = false;

    for (; is_digit(*s); s++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -ERANGE;
        v = v * 10 + (uint64_t) (*s - '0');
        digits = true;
    }
    if (*s == '.') {
        s++;
        for (; is_digit(*s); s++) {
            digits = true;
            if (scale <= UINT64_C(100000000000000000)) {  /* keep 1e18 max */
                frac = frac * 10 + (uint64_t) (*s - '0');
                scale *= 10;
            }
        }
    }
    if (!digits)
        return -EINVAL;
    *p = s;
    *ret_int = v;
    *ret_frac = frac;
    *ret_scale = scale;
    return 0;
}

/* (v + frac/scale) * unit, checked for overflow */
static int
scaled(uint64_t v, uint64_t frac, uint64_t scale, uint64_t unit, uint64_t *ret)
{
    if (v > UINT64_MAX / unit)
        return -ERANGE;
    uint64_t part = (uint64_t) ((long double) frac * (long double) unit /
                                (long double) scale);
    if (v * unit > UINT64_MAX - part)
        return -ERANGE;
    *ret = v * unit + part;
    return 0;
}

int
duration_parse(const char *s, uint64_t *ret_ns)
{
    uint64_t total = 0, v, frac, scale;
    int r;

    if (!s || !*s)
        return -EINVAL;
    if (*s == '+')
        s++;

    /* A bare number means seconds. */
    const char *p = s;
    r = read_number(&p, &v, &frac, &scale);
    if (r < 0)
        return r;
    if (*p == '\0')
        return scaled(v, frac, scale, NSEC_PER_SEC, ret_ns);

    p = s;
    while (*p) {
        r = read_number(&p, &v, &frac, &scale);
        if (r < 0)
            return r;

        uint64_t unit = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t len = strlen(units[i].suffix);
            if (strncmp(p, units[i].suffix, len) == 0) {
                unit = units[i].ns;
                p += len;
                break;
            }
        }
        if (unit == 0)
            return -EINVAL;              /* missing or unknown unit */

        uint64_t add;
        r = scaled(v, frac, scale, unit, &add);
        if (r < 0)
            return r;
        if (total > UINT64_MAX - add)
            return -ERANGE;
        total += add;
    }
    *ret_ns = total;
    return 0;
}

/* Appends the fraction digits of v/unit without trailing zeros. */
static int
fmt_frac(char *buf, size_t size, uint64_t v, uint64_t unit)
{
    uint64_t whole = v / unit, rest = v % unit;
    int n = snprintf(buf, size, "%" PRIu64, whole);

    if (rest == 0 || n < 0 || (size_t) n >= size)
        return n;
    char digits[24];
    int width = 0;
    for (uint64_t u = unit; u > 1 && width < 20; u /= 10)
        width++;
    /* rest as exactly width digits, then drop trailing zeros */
    for (int i = width - 1; i >= 0; i--, rest /= 10)
        digits[i] = (char) ('0' + rest % 10);
    digits[width] = '\0';
    for (int i = width - 1; i >= 0 && digits[i] == '0'; i--)
        digits[i] = '\0';
    return n + snprintf(buf + n, size - (size_t) n, ".%s", digits);
}

char *
duration_format(uint64_t ns, char *buf, size_t size)
{
    /* built whole, then copied: a short buf gets a terminated prefix (the
     * longest text, "5124095h34m33.709551615s", is 25 bytes) */
    char out[48];
    const size_t osz = sizeof out;

    if (ns == 0) {
        snprintf(out, osz, "0s");
    } else if (ns < 1000) {
        snprintf(out, osz, "%" PRIu64 "ns", ns);
    } else if (ns < NSEC_PER_MSEC) {
        int n = fmt_frac(out, osz, ns, 1000);
        snprintf(out + n, osz - (size_t) n, "\xc2\xb5s");
    } else if (ns < NSEC_PER_SEC) {
        int n = fmt_frac(out, osz, ns, NSEC_PER_MSEC);
        snprintf(out + n, osz - (size_t) n, "ms");
    } else {
        uint64_t h = ns / (3600 * NSEC_PER_SEC);
        uint64_t m = ns / (60 * NSEC_PER_SEC) % 60;
        uint64_t rest = ns % (60 * NSEC_PER_SEC);
        int n = 0;
        if (h)
            n += snprintf(out + n, osz - (size_t) n, "%" PRIu64 "h", h);
        if (h || m)
            n += snprintf(out + n, osz - (size_t) n, "%" PRIu64 "m", m);
        n += fmt_frac(out + n, osz - (size_t) n, rest, NSEC_PER_SEC);
        snprintf(out + n, osz - (size_t) n, "s");
    }
    if (size > 0)
        snprintf(buf, size, "%s", out);
    return buf;
}
