/* tests/fuzz/fuzz-qemu-img-info.c: `qemu-img info --backing-chain
 * --output=json` of a disk (chain_parse): names and formats that the
 * image files' headers give, which whoever made the image chose. */
#include <errno.h>

#include "fuzz.h"
#include "qemu-img.h"

static void
check(const char *json)
{
    struct chain *c = NULL;
    int r = chain_parse(json, "/var/lib/libvirt/images/top.qcow2", &c);

    FUZZ_CHECK(r == 0 || r == -EINVAL);
    if (r < 0)
        return;
    FUZZ_CHECK(c->n >= 1 && !c->layers[c->n] && !c->formats[c->n]);
    for (size_t i = 0; i < c->n; i++)
        FUZZ_CHECK(c->layers[i] && c->layers[i][0] == '/' && c->formats[i]);
    chain_free(c);
}

FUZZ_STRING_TARGET(check)
