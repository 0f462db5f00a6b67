/* core/image/qemu-nbd.h: a private, read-only qemu-nbd server for one disk
 * chain, for the reads vmsnapfs cannot map to a file (compressed or
 * encrypted clusters, external data files). Started on demand, stopped
 * with the view that needed it. */
#pragma once

struct qemu_nbd;

/* Runtime directory for sockets ("/run/vmsnapfs"), made if needed. */
const char *runtime_dir(void);

int qemu_nbd_start(const char *path, const char *format, const char *export,
                   struct qemu_nbd **ret);
const char *qemu_nbd_socket(const struct qemu_nbd *q);
void qemu_nbd_stop(struct qemu_nbd *q);
