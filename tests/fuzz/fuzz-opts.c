/* tests/fuzz/fuzz-opts.c: mount options (-o LIST, opts_parse and
 * opts_apply). What vmsnapfs leaves for FUSE is itself a list that
 * vmsnapfs leaves alone. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "opts.h"

static void
check_rest(const char *rest)
{
    struct vmsnapfs_opts o;
    char *again = NULL, *bad = NULL;

    opts_init(&o);
    FUZZ_CHECK(opts_parse(&o, rest, &again, &bad) == 0);
    FUZZ_CHECK(!bad && again && strcmp(again, rest) == 0);
    FUZZ_CHECK(o.failure_deadline_ns == DEFAULT_FAILURE_DEADLINE_NS &&
               o.consistency == CONSISTENCY_BEST_EFFORT && !o.admin_group &&
               !o.no_safety_snapshot);
    free(again);
    opts_clear(&o);
}

static void
check(const char *list)
{
    struct vmsnapfs_opts o;
    char *rest = NULL, *bad = NULL;

    opts_init(&o);
    int r = opts_parse(&o, list, &rest, &bad);
    FUZZ_CHECK(r == 0 || (r == -EINVAL && bad));
    if (r == 0) {
        FUZZ_CHECK(!bad);
        FUZZ_CHECK(consistency_to_string(o.consistency));
        FUZZ_CHECK(!o.admin_group || (*o.admin_group && !strchr(o.admin_group, ',')));
        if (rest)
            check_rest(rest);
    }
    free(rest);
    free(bad);
    opts_clear(&o);

    /* the whole input as one option */
    opts_init(&o);
    r = opts_apply(&o, list);
    FUZZ_CHECK(r == 0 || r == 1 || r == -EINVAL);
    opts_clear(&o);
}

FUZZ_STRING_TARGET(check)
