/* tests/fuzz/fuzz-domain-xml.c: a domain's XML through every reader of
 * core/libvirt/libvirt-xml.h (disks, MACs, agent, restore mark) and through the
 * edits a snapshot, a clone and a restore make (common.c). */
#include "fuzz.h"

FUZZ_STRING_TARGET(fuzz_domain_xml)
