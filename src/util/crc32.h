/* crc32.h: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the
 * network protocol's messages (docs/PROTOCOL.md). Uses the SSE4.2 crc32 instruction when
 * the build targets it, else a 256-entry table. Not for: cryptographic integrity (use
 * sha256.h) — a CRC only catches accidental corruption. */
#ifndef SPLITLLM_UTIL_CRC32_H
#define SPLITLLM_UTIL_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Continues crc (0 to start) over bytes; sl_crc32c(sl_crc32c(0, a), b) is the CRC of a
 * followed by b. sl_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t sl_crc32c(uint32_t crc, const void *data, size_t bytes);
/* The same function by the table alone, whatever the build targets (for tests). */
uint32_t sl_crc32c_portable(uint32_t crc, const void *data, size_t bytes);

#endif
