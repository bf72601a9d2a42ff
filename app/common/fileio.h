/* fileio.h — whole reads and writes, and syncs, the way durable files need them.
 *
 * Each call finishes the whole length or fails: short transfers and EINTR
 * are retried, a file that ends early is -EIO. A sync is retried only on
 * EINTR (the sync did not happen); any other failure is final, because after
 * a failed fsync the kernel may have dropped the dirty pages and a retry
 * could falsely succeed (PostgreSQL's "fsyncgate", 2018). Return 0 or a
 * negative errno. */
#ifndef RG_FILEIO_H
#define RG_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

int fileio_write_all(int fd, const void *data, size_t len) __attribute__((warn_unused_result));
int fileio_read_all(int fd, void *data, size_t len) __attribute__((warn_unused_result));
int fileio_pwrite_all(int fd, const void *data, size_t len, off_t off) __attribute__((warn_unused_result));
int fileio_pread_all(int fd, void *data, size_t len, off_t off) __attribute__((warn_unused_result));
int fileio_fdatasync(int fd) __attribute__((warn_unused_result));
/* fsync: for directories (a new or renamed entry) and for files whose size changed. */
int fileio_fsync(int fd) __attribute__((warn_unused_result));

/* Parses exactly 16 lowercase hex digits (the LSN in our file names). */
int fileio_parse_hex16(const char *s, uint64_t *out);

#endif
