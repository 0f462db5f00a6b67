/* tools/rotate-prune.h: which of a VM's scheduled snapshots to keep
 * (vmsnap-rotate), pure: names and times in, a mark per snapshot out.
 *
 * The rules are Proxmox Backup Server's prune rules: the list sorted
 * newest first; keep-last keeps the newest N; then hourly, daily, weekly
 * (ISO 8601 weeks), monthly and yearly, in that order, each keep the newest
 * snapshot of each of its N most recent time buckets, skipping snapshots an
 * earlier rule marked and buckets that an earlier rule's kept snapshot
 * covers; what no rule keeps is removed. With no rule at all everything is
 * kept. Buckets are counted in UTC, by the time in the snapshot's name.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rotate_mark {
    ROTATE_UNMARKED = 0,    /* only while selecting */
    ROTATE_REMOVE,
    ROTATE_KEEP_LAST,
    ROTATE_KEEP_HOURLY,
    ROTATE_KEEP_DAILY,
    ROTATE_KEEP_WEEKLY,
    ROTATE_KEEP_MONTHLY,
    ROTATE_KEEP_YEARLY,
    ROTATE_KEEP_ALL,        /* no rule given: everything is kept */
};

/* the rules, in the order they are applied */
enum rotate_rule {
    ROTATE_LAST,
    ROTATE_HOURLY,
    ROTATE_DAILY,
    ROTATE_WEEKLY,
    ROTATE_MONTHLY,
    ROTATE_YEARLY,
    ROTATE_N_RULES,
};

/* keep[rule]: how many (snapshots for last, buckets for the others); 0 is
 * no such rule */
struct rotate_policy {
    unsigned keep[ROTATE_N_RULES];
};

struct rotate_snap {
    const char *name;
    int64_t time;           /* seconds since the epoch, UTC, from the name */
    enum rotate_mark mark;
};

/* "last", "hourly", ...: the rule's name (as in --keep-NAME) */
const char *rotate_rule_name(enum rotate_rule rule);
/* "last", ..., "yearly", "all", "remove": what a mark means */
const char *rotate_mark_name(enum rotate_mark mark);
static inline bool
rotate_mark_keeps(enum rotate_mark mark)
{
    return mark >= ROTATE_KEEP_LAST;
}

/* true when the policy has a rule at all (else everything is kept) */
bool rotate_policy_keeps_something(const struct rotate_policy *p);

/* A prefix is 1 to 64 of [A-Za-z0-9._-], starting with a letter or digit. */
bool rotate_prefix_valid(const char *prefix);

/* PREFIX-YYYYMMDD-HHMMSS, exactly, a valid UTC date and time from 1970 to
 * 9999: true and *time set; anything else false. */
bool rotate_parse_name(const char *prefix, const char *name, int64_t *time);

/* YYYY-MM-DDTHH:MM:SSZ, exactly and valid (as for names): 0, else -EINVAL */
int rotate_parse_time(const char *s, int64_t *time);

/* PREFIX-YYYYMMDD-HHMMSS of time into buf: 0, or -EINVAL (a time outside
 * 1970..9999) or -ENAMETOOLONG (buf too small) */
int rotate_format_name(const char *prefix, int64_t time, char *buf, size_t size);

/* Sorts v newest first and marks each snapshot: kept by a rule, or
 * ROTATE_REMOVE. Names must be unique. 0, or -ENOMEM. */
int rotate_select(struct rotate_snap *v, size_t n, const struct rotate_policy *p);
