/* core/snapshot-json.h: a snapshot's status.json (SPEC: "all of the above
 * as one JSON object, for tools"). */
#pragma once

#include "backend.h"

/* Allocated, newline-terminated JSON text; NULL on OOM. */
char *snapshot_status_json(const char *ns, const char *vm,
                           const struct snapshot_info *s);

/* RFC 3339 UTC ("2026-11-22T04:31:34Z") into buf (at least 32 bytes). */
char *time_rfc3339(time_t t, char *buf, size_t size);
