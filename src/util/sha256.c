/* sha256.c: see sha256.h. */
#include "util/sha256.h"

#include <openssl/evp.h>
#include <stdio.h>

#include "util/common.h"

void sl_sha256(const void *data, size_t bytes, uint8_t out[SL_SHA256_BYTES]) {
    unsigned int n = 0;
    EVP_Digest(data, bytes, out, &n, EVP_sha256(), NULL);
}

int sl_sha256_file(const char *path, uint8_t out[SL_SHA256_BYTES]) {
    sl_mapped_file f;
    int rc = sl_map_file(&f, path);
    if (rc != 0) return rc;
    sl_sha256(f.m_data == NULL ? "" : f.m_data, f.m_bytes, out);
    sl_unmap_file(&f);
    return SL_OK;
}

void sl_sha256_hex(const uint8_t digest[SL_SHA256_BYTES], char out[65]) {
    for (int i = 0; i < SL_SHA256_BYTES; i++) snprintf(out + 2 * i, 3, "%02x", digest[i]);
}
