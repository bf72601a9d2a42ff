/* crc32c.h — CRC-32C (Castagnoli), the checksum of WAL records and snapshots. */
#ifndef RG_CRC32C_H
#define RG_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (start with 0) over len bytes. crc32c("123456789") == 0xe3069283. */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

#endif
