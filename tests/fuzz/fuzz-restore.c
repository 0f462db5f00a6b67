/* tests/fuzz/fuzz-restore.c: the lines written to VM/restore
 * (restore_request_parse) and VM/snapshots/S/clone (clone_request_parse),
 * given as the write's bytes (no NUL at the end). A request reads back
 * the same once written out canonically. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "duration.h"
#include "fuzz.h"
#include "restore.h"

static void
check_restore(const struct restore_request *rq)
{
    size_t n = strnlen(rq->snap, sizeof rq->snap);

    FUZZ_CHECK(n > 0 && n < sizeof rq->snap);
    FUZZ_CHECK(!strchr(rq->snap, '/') && !strpbrk(rq->snap, " \t\n"));
    FUZZ_CHECK(restore_policy_to_string(rq->policy));
    FUZZ_CHECK(restore_mode_to_string(rq->mode));
    FUZZ_CHECK((rq->policy == RESTORE_WAIT_GRACE_PERIOD) == (rq->grace_ns != 0));

    char line[512], grace[64] = "";
    struct restore_request again;
    const char *why = NULL;
    if (rq->grace_ns) {
        grace[0] = ':';
        duration_format(rq->grace_ns, grace + 1, sizeof grace - 1);
    }
    int len = snprintf(line, sizeof line, "%s policy=%s%s mode=%s\n", rq->snap,
                       restore_policy_to_string(rq->policy), grace,
                       restore_mode_to_string(rq->mode));
    FUZZ_CHECK(len > 0 && (size_t) len < sizeof line);
    FUZZ_CHECK(restore_request_parse(line, (size_t) len, &again, &why) == 0);
    FUZZ_CHECK(strcmp(again.snap, rq->snap) == 0);
    FUZZ_CHECK(again.policy == rq->policy && again.grace_ns == rq->grace_ns &&
               again.mode == rq->mode);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *) data, *why = NULL;
    struct restore_request rq;
    int r = restore_request_parse(text, size, &rq, &why);

    FUZZ_CHECK(r == 0 || (r == -EINVAL && why));
    if (r == 0)
        check_restore(&rq);

    char name[NAME_MAX_LEN + 1];
    why = NULL;
    r = clone_request_parse(text, size, name, &why);
    FUZZ_CHECK(r == 0 || (r == -EINVAL && why));
    if (r == 0) {
        size_t n = size > 0 && text[size - 1] == '\n' ? size - 1 : size;
        FUZZ_CHECK(name_check(name) == 0);
        FUZZ_CHECK(strlen(name) == n && memcmp(name, text, n) == 0);
    }
    return 0;
}
