/* shard.h: the binary shard file — one user's (or the validation set's) tokenized samples,
 * each a run of token ids with a per-token loss mask, tagged with the SHA-256 of the
 * tokenizer that produced them. Read, write, build, check. The byte layout is in
 * docs/FORMATS.md ("Shard file").
 * Not for: parsing datasets (prepare.h), batching (loader.h), deciding who gets what
 * (partition.h). */
#ifndef SPLITLLM_DATA_SHARD_H
#define SPLITLLM_DATA_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "util/sha256.h"

#define SL_SHARD_MAGIC "SLSHARD\0"  /* 8 bytes at offset 0 */
#define SL_SHARD_MAGIC_BYTES 8
#define SL_SHARD_VERSION 1u
/* magic 8 + version 4 + header_bytes 4 + tokenizer sha 32 + vocab 4 + max_sample 4
 * + n_samples 8 + n_tokens 8 */
#define SL_SHARD_HEADER_BYTES 72u
/* trailer: SHA-256 of every byte before it */
#define SL_SHARD_TRAILER_BYTES SL_SHA256_BYTES

/* One shard in memory. Sample i is tokens[offsets[i] .. offsets[i+1]); mask[j] is 1 where
 * token j counts as a prediction target (the first token of a sample is never one, so its
 * mask is 0). */
typedef struct {
    uint8_t sh_tokenizer_sha256[SL_SHA256_BYTES];
    uint32_t sh_vocab_size;         /* every token id is < this */
    uint32_t sh_max_sample_tokens;  /* T+1 of the prepare run (longer ones were cut); 0: no limit */
    uint64_t sh_n_samples;
    uint64_t sh_n_tokens;
    uint64_t *sh_offsets;           /* (n_samples+1), offsets[0] = 0, offsets[n_samples] = n_tokens */
    int32_t *sh_tokens;             /* (n_tokens) */
    uint8_t *sh_mask;               /* (n_tokens), 0 or 1 */
    size_t sh_cap_samples;          /* capacity of offsets (builder) */
    size_t sh_cap_tokens;           /* capacity of tokens and mask (builder) */
    char sh_path[1024];             /* file it was read from, "" when built in memory */
} sl_shard;

/* An empty shard to append samples to. */
int sl_shard_init(sl_shard *s, const uint8_t tokenizer_sha256[SL_SHA256_BYTES], uint32_t vocab_size,
                  uint32_t max_sample_tokens);
/* Appends one sample of n tokens (ids and their mask) — copies. n >= 1. */
int sl_shard_append(sl_shard *s, const int32_t *ids, const uint8_t *mask, size_t n);
void sl_shard_free(sl_shard *s);

static inline uint64_t sl_shard_sample_len(const sl_shard *s, uint64_t i) {
    return s->sh_offsets[i + 1] - s->sh_offsets[i];
}
/* Number of tokens with mask 1 (the loss terms the shard contributes). */
uint64_t sl_shard_mask_tokens(const sl_shard *s);

/* Serialises field by field, little-endian, into path atomically (temp + fsync + rename). */
int sl_shard_write(const sl_shard *s, const char *path);
/* Reads and validates a whole shard: magic, version, sizes, trailer hash, offsets, token
 * range, mask values. Errors name the file and the byte offset. */
int sl_shard_read(sl_shard *s, const char *path);
/* SL_EFORMAT unless the shard was made by the tokenizer with this hash; the message names
 * the shard, tokenizer_name and both hashes. */
int sl_shard_check_tokenizer(const sl_shard *s, const uint8_t tokenizer_sha256[SL_SHA256_BYTES],
                             const char *tokenizer_name);

#endif
