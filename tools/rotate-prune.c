/* tools/rotate-prune.c: the selection of vmsnap-rotate (rotate-prune.h),
 * after Proxmox Backup Server's prune (mark_selections): pure, no I/O. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "rotate-prune.h"

#define PREFIX_MAX 64
#define YEAR_MIN 1970
#define YEAR_MAX 9999

const char *
rotate_rule_name(enum rotate_rule rule)
{
    static const char *const names[ROTATE_N_RULES] = {
        [ROTATE_LAST] = "last",       [ROTATE_HOURLY] = "hourly",
        [ROTATE_DAILY] = "daily",     [ROTATE_WEEKLY] = "weekly",
        [ROTATE_MONTHLY] = "monthly", [ROTATE_YEARLY] = "yearly",
    };
    return (unsigned) rule < ROTATE_N_RULES ? names[rule] : "?";
}

const char *
rotate_mark_name(enum rotate_mark mark)
{
    switch (mark) {
    case ROTATE_KEEP_LAST: case ROTATE_KEEP_HOURLY: case ROTATE_KEEP_DAILY:
    case ROTATE_KEEP_WEEKLY: case ROTATE_KEEP_MONTHLY: case ROTATE_KEEP_YEARLY:
        return rotate_rule_name((enum rotate_rule) (mark - ROTATE_KEEP_LAST));
    case ROTATE_KEEP_ALL:
        return "all";
    case ROTATE_REMOVE:
        return "remove";
    case ROTATE_UNMARKED:
        break;
    }
    return "?";
}

bool
rotate_policy_keeps_something(const struct rotate_policy *p)
{
    for (int r = 0; r < ROTATE_N_RULES; r++)
        if (p->keep[r] > 0)
            return true;
    return false;
}

bool
rotate_prefix_valid(const char *prefix)
{
    size_t n = strlen(prefix);
    if (n == 0 || n > PREFIX_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = prefix[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

/* n decimal digits at s: their value, or -1 */
static int
digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* the fields as a time, when they name one that exists (no 30 February, no
 * hour 24, no leap second): 0, else -EINVAL */
static int
fields_time(int year, int mon, int day, int hour, int min, int sec, int64_t *time)
{
    if (year < YEAR_MIN || year > YEAR_MAX || mon < 1 || mon > 12 || day < 1 || day > 31 ||
        hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 59)
        return -EINVAL;
    struct tm tm = {
        .tm_year = year - 1900, .tm_mon = mon - 1, .tm_mday = day,
        .tm_hour = hour, .tm_min = min, .tm_sec = sec,
    };
    time_t t = timegm(&tm);
    /* timegm normalizes: 31 April comes back as 1 May */
    if (tm.tm_year != year - 1900 || tm.tm_mon != mon - 1 || tm.tm_mday != day)
        return -EINVAL;
    *time = (int64_t) t;
    return 0;
}

bool
rotate_parse_name(const char *prefix, const char *name, int64_t *time)
{
    size_t p = strlen(prefix);
    /* PREFIX - YYYYMMDD - HHMMSS */
    if (strncmp(name, prefix, p) != 0 || strlen(name) != p + 1 + 8 + 1 + 6)
        return false;
    const char *s = name + p;
    if (s[0] != '-' || s[9] != '-')
        return false;
    int year = digits(s + 1, 4), mon = digits(s + 5, 2), day = digits(s + 7, 2);
    int hour = digits(s + 10, 2), min = digits(s + 12, 2), sec = digits(s + 14, 2);
    if (year < 0 || mon < 0 || day < 0 || hour < 0 || min < 0 || sec < 0)
        return false;
    return fields_time(year, mon, day, hour, min, sec, time) == 0;
}

int
rotate_parse_time(const char *s, int64_t *time)
{
    /* YYYY-MM-DDTHH:MM:SSZ */
    if (strlen(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':' || s[19] != 'Z')
        return -EINVAL;
    int year = digits(s, 4), mon = digits(s + 5, 2), day = digits(s + 8, 2);
    int hour = digits(s + 11, 2), min = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (year < 0 || mon < 0 || day < 0 || hour < 0 || min < 0 || sec < 0)
        return -EINVAL;
    return fields_time(year, mon, day, hour, min, sec, time);
}

int
rotate_format_name(const char *prefix, int64_t time, char *buf, size_t size)
{
    time_t t = (time_t) time;
    struct tm tm;
    if (time < 0 || !gmtime_r(&t, &tm) || tm.tm_year + 1900 > YEAR_MAX)
        return -EINVAL;
    int n = snprintf(buf, size, "%s-%04d%02d%02d-%02d%02d%02d", prefix, tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n < 0 || (size_t) n >= size)
        return -ENAMETOOLONG;
    return 0;
}

/* the time bucket of a snapshot under a rule: one id per hour, day, ISO
 * week (%G-%V), month or year, in UTC; per snapshot for keep-last */
static int64_t
bucket(enum rotate_rule rule, int64_t time)
{
    time_t t = (time_t) time;
    struct tm tm;
    char week[16];

    switch (rule) {
    case ROTATE_LAST:
        return time;
    case ROTATE_HOURLY:
        return time / 3600;
    case ROTATE_DAILY:
        return time / 86400;
    default:
        break;
    }
    gmtime_r(&t, &tm);
    switch (rule) {
    case ROTATE_WEEKLY:
        /* the ISO week-numbering year and week: 2021-01-03 is in 2020-53 */
        strftime(week, sizeof(week), "%G%V", &tm);
        return strtoll(week, NULL, 10);
    case ROTATE_MONTHLY:
        return (int64_t) (tm.tm_year + 1900) * 12 + tm.tm_mon;
    default:
        return tm.tm_year + 1900;
    }
}

static int
newest_first(const void *a, const void *b)
{
    const struct rotate_snap *x = a, *y = b;
    if (x->time != y->time)
        return x->time > y->time ? -1 : 1;
    return -strcmp(x->name, y->name);
}

static bool
contains(const int64_t *set, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == id)
            return true;
    return false;
}

/* one rule over the list (PBS mark_selections) */
static void
mark_rule(struct rotate_snap *v, size_t n, enum rotate_rule rule, unsigned keep,
          int64_t *covered, int64_t *taken)
{
    size_t ncovered = 0, ntaken = 0;
    enum rotate_mark mark = (enum rotate_mark) (ROTATE_KEEP_LAST + rule);

    /* the buckets an earlier rule's kept snapshots cover */
    for (size_t i = 0; i < n; i++)
        if (rotate_mark_keeps(v[i].mark))
            covered[ncovered++] = bucket(rule, v[i].time);

    for (size_t i = 0; i < n; i++) {
        if (v[i].mark != ROTATE_UNMARKED)
            continue;
        int64_t id = bucket(rule, v[i].time);
        if (contains(covered, ncovered, id))
            continue;
        if (contains(taken, ntaken, id)) {
            v[i].mark = ROTATE_REMOVE;      /* an older one in a bucket kept */
            continue;
        }
        if (ntaken >= keep)
            break;
        taken[ntaken++] = id;
        v[i].mark = mark;
    }
}

int
rotate_select(struct rotate_snap *v, size_t n, const struct rotate_policy *p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), newest_first);
    for (size_t i = 0; i < n; i++)
        v[i].mark = ROTATE_UNMARKED;

    if (!rotate_policy_keeps_something(p)) {
        for (size_t i = 0; i < n; i++)
            v[i].mark = ROTATE_KEEP_ALL;
        return 0;
    }

    _cleanup_free_ int64_t *covered = calloc(n, sizeof(*covered));
    _cleanup_free_ int64_t *taken = calloc(n, sizeof(*taken));
    if (!covered || !taken)
        return -ENOMEM;
    for (int r = 0; r < ROTATE_N_RULES; r++)
        if (p->keep[r] > 0)
            mark_rule(v, n, (enum rotate_rule) r, p->keep[r], covered, taken);
    for (size_t i = 0; i < n; i++)
        if (v[i].mark == ROTATE_UNMARKED)
            v[i].mark = ROTATE_REMOVE;
    return 0;
}
