/* tests/fuzz/fuzz-snapshot-json.c: vmsnapfs's metadata in a snapshot's
 * description ("vmsnapfs {JSON}", snapshot_meta_decode), which anyone
 * with virsh can write; decoded, encoded and decoded again (common.c). */
#include "fuzz.h"

FUZZ_STRING_TARGET(fuzz_snapshot_meta)
