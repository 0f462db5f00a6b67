/* core/restore.c: see restore.h. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "duration.h"
#include "restore.h"
#include "string-table.h"

static const char *const policy_names[_RESTORE_POLICY_MAX] = {
    [RESTORE_FAIL_IMMEDIATE] = "FailImmediate",
    [RESTORE_STOP_TARGET] = "StopTarget",
    [RESTORE_WAIT_GRACE_PERIOD] = "WaitGracePeriod",
    [RESTORE_WAIT_EVENTUALLY] = "WaitEventually",
};

static const char *const mode_names[_RESTORE_MODE_MAX] = {
    [RESTORE_STRICT] = "Strict",
    [RESTORE_BEST_EFFORT] = "BestEffort",
    [RESTORE_DRY_RUN] = "DryRun",
};

const char *
restore_policy_to_string(enum restore_policy p)
{
    return p < _RESTORE_POLICY_MAX ? policy_names[p] : NULL;
}

int
restore_policy_from_string(const char *s)
{
    return string_table_lookup(policy_names, _RESTORE_POLICY_MAX, s);
}

const char *
restore_mode_to_string(enum restore_mode m)
{
    return m < _RESTORE_MODE_MAX ? mode_names[m] : NULL;
}

int
restore_mode_from_string(const char *s)
{
    return string_table_lookup(mode_names, _RESTORE_MODE_MAX, s);
}

/* The text as one line: a final newline is allowed, none inside, no NUL. */
static int
one_line(const char *text, size_t len, char *buf, size_t size, const char **why)
{
    if (len > 0 && text[len - 1] == '\n')
        len--;
    if (len == 0)
        return *why = "empty line", -EINVAL;
    if (len >= size)
        return *why = "line too long", -EINVAL;
    if (memchr(text, '\n', len) || memchr(text, '\0', len))
        return *why = "one line only", -EINVAL;
    memcpy(buf, text, len);
    buf[len] = '\0';
    return 0;
}

int
restore_request_parse(const char *text, size_t len, struct restore_request *ret,
                      const char **ret_reason)
{
    struct restore_request req = { .policy = RESTORE_FAIL_IMMEDIATE, .mode = RESTORE_STRICT };
    bool have_policy = false, have_mode = false;
    char buf[512], *save = NULL;
    int r = one_line(text, len, buf, sizeof buf, ret_reason);

    if (r < 0)
        return r;
    char *tok = strtok_r(buf, " \t", &save);
    if (!tok)
        return *ret_reason = "no snapshot name", -EINVAL;
    /* any snapshot's name: ours (pre-restore-S-20260101T000000Z has
     * upper-case letters) and other tools' too; ENOENT if there is none */
    if (strlen(tok) >= sizeof req.snap || strchr(tok, '/') ||
        strcmp(tok, ".") == 0 || strcmp(tok, "..") == 0)
        return *ret_reason = "invalid snapshot name", -EINVAL;
    for (const char *c = tok; *c; c++)
        if ((unsigned char) *c < 0x20 || *c == 0x7f)
            return *ret_reason = "invalid snapshot name", -EINVAL;
    strcpy(req.snap, tok);

    while ((tok = strtok_r(NULL, " \t", &save))) {
        char *v = strchr(tok, '=');
        if (!v)
            return *ret_reason = "expected key=value after the name", -EINVAL;
        *v++ = '\0';
        if (strcmp(tok, "policy") == 0) {
            if (have_policy)
                return *ret_reason = "policy given twice", -EINVAL;
            have_policy = true;
            char *arg = strchr(v, ':');
            if (arg)
                *arg++ = '\0';
            r = restore_policy_from_string(v);
            if (r < 0)
                return *ret_reason = "unknown policy (FailImmediate, StopTarget, "
                                     "WaitGracePeriod:DURATION, WaitEventually)", -EINVAL;
            req.policy = (enum restore_policy) r;
            if ((req.policy == RESTORE_WAIT_GRACE_PERIOD) != (arg != NULL))
                return *ret_reason = "WaitGracePeriod takes a duration "
                                     "(WaitGracePeriod:5m), the others none", -EINVAL;
            if (arg && (duration_parse(arg, &req.grace_ns) < 0 || req.grace_ns == 0))
                return *ret_reason = "invalid grace period", -EINVAL;
        } else if (strcmp(tok, "mode") == 0) {
            if (have_mode)
                return *ret_reason = "mode given twice", -EINVAL;
            have_mode = true;
            r = restore_mode_from_string(v);
            if (r < 0)
                return *ret_reason = "unknown mode (Strict, BestEffort, DryRun)", -EINVAL;
            req.mode = (enum restore_mode) r;
        } else {
            return *ret_reason = "unknown key (policy=, mode=)", -EINVAL;
        }
    }
    *ret = req;
    return 0;
}

int
clone_request_parse(const char *text, size_t len, char ret[NAME_MAX_LEN + 1],
                    const char **ret_reason)
{
    char buf[NAME_MAX_LEN + 2];
    int r = one_line(text, len, buf, sizeof buf, ret_reason);

    if (r == -EINVAL && strcmp(*ret_reason, "line too long") == 0)
        return *ret_reason = "invalid VM name", -EINVAL;
    if (r < 0)
        return r;
    if (name_check(buf) < 0)
        return *ret_reason = "invalid VM name", -EINVAL;
    strcpy(ret, buf);
    return 0;
}
