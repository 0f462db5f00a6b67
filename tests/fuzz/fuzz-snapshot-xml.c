/* tests/fuzz/fuzz-snapshot-xml.c: a snapshot's XML (lv_xml_snapshot_parse),
 * then what the daemon reads out of it: the captured definitions as domain
 * XML and the description as vmsnapfs's metadata. */
#include <errno.h>

#include "fuzz.h"
#include "libvirt-xml.h"

static void
check(const char *xml)
{
    struct lv_xml_snapshot s;
    int r = lv_xml_snapshot_parse(xml, &s);

    FUZZ_CHECK(r == 0 || r == -EINVAL);
    if (r < 0)
        return;
    FUZZ_CHECK(s.name);
    for (size_t i = 0; i < s.n_disks; i++)
        FUZZ_CHECK(s.disks[i].name && s.disks[i].format);
    fuzz_domain_xml(s.domain);
    fuzz_domain_xml(s.inactive_domain);
    fuzz_snapshot_meta(s.description);
    lv_xml_snapshot_clear(&s);
}

FUZZ_STRING_TARGET(check)
