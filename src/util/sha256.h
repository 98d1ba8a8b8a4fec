/* sha256.h: SHA-256 of memory and files (OpenSSL's libcrypto does the hashing). */
#ifndef SPLITLLM_UTIL_SHA256_H
#define SPLITLLM_UTIL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SL_SHA256_BYTES 32

void sl_sha256(const void *data, size_t bytes, uint8_t out[SL_SHA256_BYTES]);
int sl_sha256_file(const char *path, uint8_t out[SL_SHA256_BYTES]);
/* 64 lowercase hex digits and a NUL. */
void sl_sha256_hex(const uint8_t digest[SL_SHA256_BYTES], char out[65]);

#endif
