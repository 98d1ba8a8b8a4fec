/* shard.c: see shard.h. Every field is written and read one at a time in little-endian
 * byte order, so the file is the same on every host. */
#include "data/shard.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util/common.h"
#include "util/le.h"

#define SHARD_GROW_MIN 64 /* first capacity of the builder's arrays */

/* ---------------------------------------------------------------- building */

int sl_shard_init(sl_shard *s, const uint8_t tokenizer_sha256[SL_SHA256_BYTES], uint32_t vocab_size,
                  uint32_t max_sample_tokens) {
    memset(s, 0, sizeof(*s));
    memcpy(s->sh_tokenizer_sha256, tokenizer_sha256, SL_SHA256_BYTES);
    s->sh_vocab_size = vocab_size;
    s->sh_max_sample_tokens = max_sample_tokens;
    s->sh_cap_samples = SHARD_GROW_MIN;
    s->sh_offsets = sl_alloc((s->sh_cap_samples + 1) * sizeof(uint64_t));
    if (s->sh_offsets == NULL) return SL_ENOMEM;
    return SL_OK;
}

static int grow(void **p, size_t elem_bytes, size_t used, size_t *cap, size_t need, size_t extra) {
    if (need <= *cap) return SL_OK;
    size_t ncap = *cap < SHARD_GROW_MIN ? SHARD_GROW_MIN : *cap;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) return sl_fail(SL_ENOMEM, "shard: %zu elements overflow", need);
        ncap *= 2;
    }
    size_t bytes;
    if (sl_mul_size(ncap + extra, elem_bytes, &bytes) != 0)
        return sl_fail(SL_ENOMEM, "shard: %zu elements overflow", ncap);
    void *q = sl_alloc(bytes);
    if (q == NULL) return SL_ENOMEM;
    if (*p != NULL) memcpy(q, *p, (used + extra) * elem_bytes);
    sl_free(*p);
    *p = q;
    *cap = ncap;
    return SL_OK;
}

int sl_shard_append(sl_shard *s, const int32_t *ids, const uint8_t *mask, size_t n) {
    if (n == 0) return sl_fail(SL_EINVAL, "shard: a sample needs at least one token");
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= s->sh_vocab_size)
            return sl_fail(SL_EINVAL, "shard: token %zu of a sample is %d, expected 0..%u", i, ids[i],
                           s->sh_vocab_size - 1);
        if (mask[i] > 1) return sl_fail(SL_EINVAL, "shard: mask %zu of a sample is %u, expected 0 or 1", i, mask[i]);
    }
    int rc = grow((void **)&s->sh_offsets, sizeof(uint64_t), s->sh_n_samples, &s->sh_cap_samples,
                  s->sh_n_samples + 1, 1);
    if (rc != 0) return rc;
    size_t need = s->sh_n_tokens + n, cap_tokens = s->sh_cap_tokens;
    rc = grow((void **)&s->sh_tokens, sizeof(int32_t), s->sh_n_tokens, &cap_tokens, need, 0);
    if (rc != 0) return rc;
    rc = grow((void **)&s->sh_mask, sizeof(uint8_t), s->sh_n_tokens, &s->sh_cap_tokens, need, 0);
    if (rc != 0) return rc;
    memcpy(s->sh_tokens + s->sh_n_tokens, ids, n * sizeof(int32_t));
    memcpy(s->sh_mask + s->sh_n_tokens, mask, n);
    s->sh_mask[s->sh_n_tokens] = 0; /* the first token of a sample is never a target */
    s->sh_n_tokens += n;
    s->sh_n_samples++;
    s->sh_offsets[s->sh_n_samples] = s->sh_n_tokens;
    return SL_OK;
}

void sl_shard_free(sl_shard *s) {
    sl_free(s->sh_offsets);
    sl_free(s->sh_tokens);
    sl_free(s->sh_mask);
    memset(s, 0, sizeof(*s));
}

uint64_t sl_shard_mask_tokens(const sl_shard *s) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < s->sh_n_tokens; i++) n += s->sh_mask[i];
    return n;
}

/* ---------------------------------------------------------------- file layout */

/* Total bytes of a shard with these counts, or 0 on overflow. */
static size_t shard_file_bytes(uint64_t n_samples, uint64_t n_tokens) {
    const uint64_t per_token_bytes = sizeof(int32_t) + sizeof(uint8_t);
    if (n_samples > (UINT64_MAX / 8) - 1 || n_tokens > UINT64_MAX / per_token_bytes) return 0;
    uint64_t total = SL_SHARD_HEADER_BYTES;
    uint64_t parts[3] = {(n_samples + 1) * 8, n_tokens * per_token_bytes, SL_SHARD_TRAILER_BYTES};
    for (int i = 0; i < 3; i++) {
        if (total > UINT64_MAX - parts[i]) return 0;
        total += parts[i];
    }
    if (total > SIZE_MAX) return 0;
    return (size_t)total;
}

int sl_shard_write(const sl_shard *s, const char *path) {
    size_t bytes = shard_file_bytes(s->sh_n_samples, s->sh_n_tokens);
    if (bytes == 0) return sl_fail(SL_EINVAL, "%s: shard too large to write", path);
    uint8_t *buf = sl_alloc(bytes);
    if (buf == NULL) return SL_ENOMEM;
    uint8_t *p = buf;
    memcpy(p, SL_SHARD_MAGIC, SL_SHARD_MAGIC_BYTES);
    p += SL_SHARD_MAGIC_BYTES;
    sl_put_u32(p, SL_SHARD_VERSION), p += 4;
    sl_put_u32(p, SL_SHARD_HEADER_BYTES), p += 4;
    memcpy(p, s->sh_tokenizer_sha256, SL_SHA256_BYTES), p += SL_SHA256_BYTES;
    sl_put_u32(p, s->sh_vocab_size), p += 4;
    sl_put_u32(p, s->sh_max_sample_tokens), p += 4;
    sl_put_u64(p, s->sh_n_samples), p += 8;
    sl_put_u64(p, s->sh_n_tokens), p += 8;
    for (uint64_t i = 0; i <= s->sh_n_samples; i++) sl_put_u64(p, s->sh_n_samples ? s->sh_offsets[i] : 0), p += 8;
    for (uint64_t i = 0; i < s->sh_n_tokens; i++) sl_put_u32(p, (uint32_t)s->sh_tokens[i]), p += 4;
    if (s->sh_n_tokens) memcpy(p, s->sh_mask, s->sh_n_tokens);
    p += s->sh_n_tokens;
    sl_sha256(buf, (size_t)(p - buf), p);
    int rc = sl_write_file_atomic(path, buf, bytes);
    sl_free(buf);
    return rc;
}

int sl_shard_read(sl_shard *s, const char *path) {
    memset(s, 0, sizeof(*s));
    sl_mapped_file f;
    int rc = sl_map_file(&f, path);
    if (rc != 0) return rc;
    const uint8_t *b = f.m_data;
    size_t n = f.m_bytes;
    if (n < SL_SHARD_HEADER_BYTES + 8 + SL_SHARD_TRAILER_BYTES) {
        rc = sl_fail(SL_EFORMAT, "%s: %zu bytes, expected at least %u for a shard header", path, n,
                     SL_SHARD_HEADER_BYTES + 8 + SL_SHARD_TRAILER_BYTES);
        goto fail;
    }
    if (memcmp(b, SL_SHARD_MAGIC, SL_SHARD_MAGIC_BYTES) != 0) {
        rc = sl_fail(SL_EFORMAT, "%s: offset 0: expected magic \"SLSHARD\\0\", found another 8 bytes (not a shard)",
                     path);
        goto fail;
    }
    uint32_t version = sl_get_u32(b + 8), header_bytes = sl_get_u32(b + 12);
    if (version != SL_SHARD_VERSION) {
        rc = sl_fail(SL_EFORMAT, "%s: offset 8: expected shard version %u, found %u", path, SL_SHARD_VERSION, version);
        goto fail;
    }
    if (header_bytes != SL_SHARD_HEADER_BYTES) {
        rc = sl_fail(SL_EFORMAT, "%s: offset 12: expected header size %u, found %u", path, SL_SHARD_HEADER_BYTES,
                     header_bytes);
        goto fail;
    }
    memcpy(s->sh_tokenizer_sha256, b + 16, SL_SHA256_BYTES);
    s->sh_vocab_size = sl_get_u32(b + 48);
    s->sh_max_sample_tokens = sl_get_u32(b + 52);
    uint64_t n_samples = sl_get_u64(b + 56), n_tokens = sl_get_u64(b + 64);
    size_t expect = shard_file_bytes(n_samples, n_tokens);
    if (expect != n) {
        rc = sl_fail(SL_EFORMAT,
                     "%s: offset 56: %" PRIu64 " samples and %" PRIu64 " tokens need %zu bytes, the file has %zu",
                     path, n_samples, n_tokens, expect, n);
        goto fail;
    }
    uint8_t digest[SL_SHA256_BYTES];
    sl_sha256(b, n - SL_SHARD_TRAILER_BYTES, digest);
    if (memcmp(digest, b + n - SL_SHARD_TRAILER_BYTES, SL_SHA256_BYTES) != 0) {
        rc = sl_fail(SL_EFORMAT, "%s: offset %zu: trailer SHA-256 does not match the content (file corrupted)", path,
                     n - SL_SHARD_TRAILER_BYTES);
        goto fail;
    }
    s->sh_n_samples = n_samples;
    s->sh_n_tokens = n_tokens;
    s->sh_cap_samples = n_samples;
    s->sh_cap_tokens = n_tokens;
    s->sh_offsets = sl_alloc((n_samples + 1) * sizeof(uint64_t));
    s->sh_tokens = sl_alloc(n_tokens * sizeof(int32_t));
    s->sh_mask = sl_alloc(n_tokens);
    if (s->sh_offsets == NULL || s->sh_tokens == NULL || s->sh_mask == NULL) {
        rc = SL_ENOMEM;
        goto fail;
    }
    size_t off = SL_SHARD_HEADER_BYTES;
    for (uint64_t i = 0; i <= n_samples; i++, off += 8) {
        uint64_t v = sl_get_u64(b + off);
        uint64_t lo = i == 0 ? 0 : s->sh_offsets[i - 1] + 1;
        if ((i == 0 && v != 0) || (i > 0 && (v < lo || v > n_tokens)) || (i == n_samples && v != n_tokens)) {
            rc = sl_fail(SL_EFORMAT,
                         "%s: offset %zu: sample offset %" PRIu64 " is %" PRIu64
                         ", expected increasing offsets from 0 to %" PRIu64 " (no empty samples)",
                         path, off, i, v, n_tokens);
            goto fail;
        }
        s->sh_offsets[i] = v;
    }
    for (uint64_t i = 0; i < n_tokens; i++, off += 4) {
        uint32_t v = sl_get_u32(b + off);
        if (v >= s->sh_vocab_size) {
            rc = sl_fail(SL_EFORMAT, "%s: offset %zu: token %" PRIu64 " is %u, expected 0..%u (vocab size %u)", path,
                         off, i, v, s->sh_vocab_size - 1, s->sh_vocab_size);
            goto fail;
        }
        s->sh_tokens[i] = (int32_t)v;
    }
    for (uint64_t i = 0; i < n_tokens; i++, off++) {
        if (b[off] > 1) {
            rc = sl_fail(SL_EFORMAT, "%s: offset %zu: mask of token %" PRIu64 " is %u, expected 0 or 1", path, off, i,
                         b[off]);
            goto fail;
        }
        s->sh_mask[i] = b[off];
    }
    snprintf(s->sh_path, sizeof(s->sh_path), "%s", path);
    sl_unmap_file(&f);
    return SL_OK;
fail:
    sl_unmap_file(&f);
    sl_shard_free(s);
    return rc;
}

int sl_shard_check_tokenizer(const sl_shard *s, const uint8_t tokenizer_sha256[SL_SHA256_BYTES],
                             const char *tokenizer_name) {
    if (memcmp(s->sh_tokenizer_sha256, tokenizer_sha256, SL_SHA256_BYTES) == 0) return SL_OK;
    char want[65], got[65];
    sl_sha256_hex(s->sh_tokenizer_sha256, want);
    sl_sha256_hex(tokenizer_sha256, got);
    return sl_fail(SL_EFORMAT,
                   "%s: offset 16: shard was made by the tokenizer with SHA-256 %s, but %s has SHA-256 %s "
                   "(prepare the data again with this tokenizer)",
                   s->sh_path[0] ? s->sh_path : "shard", want, tokenizer_name, got);
}
