/* core/image/nbd-client.h: reading an NBD export over a unix socket with libnbd,
 * for what only QEMU can read (live disks, compressed clusters). A small
 * pool of connections lets FUSE threads read in parallel. Thread-safe. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct nbd_client;

/* Connects (at most conns connections) to export name at socket path. */
int nbd_client_open(const char *socket, const char *export, unsigned conns,
                    struct nbd_client **ret);
void nbd_client_close(struct nbd_client *c);
uint64_t nbd_client_size(const struct nbd_client *c);
/* Reads exactly count bytes at off: 0 or -EIO (logged). */
int nbd_client_pread(struct nbd_client *c, void *buf, size_t count, uint64_t off);
/* SEEK_DATA / SEEK_HOLE from block status ("base:allocation"): the offset
 * in *ret, or -ENXIO. Servers without block status: all data. */
int nbd_client_seek(struct nbd_client *c, uint64_t off, int whence, uint64_t *ret);
