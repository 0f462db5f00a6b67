/* core/sums.h: snapshots/S/SHA256SUMS, the checksums of a snapshot's disks.
 *
 * One line per file, as sha256sum(1) writes them, with paths relative to
 * the snapshot's directory: "HEX  volumes/vda.img", and "HEX
 * changes/vda.img" where the snapshot has changes/. After `cp -r S DIR`,
 * `cd DIR/S && sha256sum -c SHA256SUMS` checks the copy.
 *
 * Snapshots do not change, so their sums are computed once: by one worker
 * thread at idle CPU and I/O priority, queued after a mkdir (and for any
 * snapshot when its sums are asked for or one of its disks is read), and
 * kept with the snapshot by the backend (snapshot_set_sums: the libvirt
 * snapshot's metadata, an annotation of the VirtualMachineSnapshot), where
 * every later mount finds them. changes/ depends on the snapshot before
 * (an rmdir of it folds changes into this one): its sums are kept with the
 * base they were computed against, and computed again if that changed.
 *
 * A reader copying a disk from start to end feeds the sums as it goes
 * (sums_tap): the data it got from the backend is hashed in passing,
 * where the reader's path holds it in memory; where it does not (spliced
 * from the layer files), the worker follows the reader through the page
 * cache. Either way the disk is read once.
 *
 * The worker's views are background ones (vm-ops.h): they never make an
 * rmdir or a restore EBUSY; such an operation ends them, and the worker
 * goes on from where it was once the operation is over.
 *
 * Thread model: all functions are thread-safe.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

struct model;
struct sums;
struct volume_view;

/* The worker runs from here; NULL on OOM. */
struct sums *sums_new(struct model *m);
/* Stops the worker (before the backend closes); waiters get -ESHUTDOWN. */
void sums_free(struct sums *s);

/* After a mkdir: queued for the worker. After an rmdir: forgotten. */
void sums_snapshot_made(struct sums *s, const char *ns, const char *vm, const char *snap);
void sums_snapshot_gone(struct sums *s, const char *ns, const char *vm, const char *snap);

/* The length of SHA256SUMS of the snapshot (known before the sums are:
 * every line has the same form), or -errno (-ENOENT: no such snapshot). */
int64_t sums_size(struct sums *s, const char *ns, const char *vm, const char *snap);

/* Calls done(opaque, r, text, len) once, when the sums are there (r 0, the
 * text valid during the call), or failed (r -EIO), or the snapshot is
 * gone (-ENOENT) or the mount ends (-ESHUTDOWN): at once, on this thread,
 * if that is known already, else later on another thread. Asks the
 * worker for this snapshot first. -ENOMEM (done not called). */
int sums_wait(struct sums *s, const char *ns, const char *vm, const char *snap,
              void (*done)(void *opaque, int r, const char *text, size_t len),
              void *opaque);

/* Where the sums of a snapshot stand, for its status.json. */
enum sums_state {
    SUMS_STATE_QUEUED,      /* not started: after others, or when asked for */
    SUMS_STATE_COMPUTING,
    SUMS_STATE_DONE,
    SUMS_STATE_FAILED,
};
struct sums_status {
    enum sums_state state;
    bool stored;            /* kept with the snapshot (found or written) */
    uint64_t done, total;   /* bytes hashed, of all */
    char error[256];        /* FAILED: why */
};
int sums_status(struct sums *s, const char *ns, const char *vm, const char *snap,
                struct sums_status *ret);
const char *sums_state_to_string(enum sums_state st);

/* inner (a reader's view of file path, e.g. "volumes/vda.img", of the
 * snapshot) wrapped so that what it reads in order feeds the sums; inner
 * itself if the sums are known or the wrapper cannot be had. */
struct volume_view *sums_tap(struct sums *s, const char *ns, const char *vm,
                             const char *snap, const char *path, struct volume_view *inner);

/* Is this thread the worker (its views are its own, untapped)? */
bool sums_on_worker(void);

/* The record kept with a snapshot (JSON: volumes, and changes with their
 * base) from and to the parts (pure; for the backends' tests too). */
int sums_record_parse(const char *record, const char *vol, bool changes,
                      const char *base, char hex[65]);
