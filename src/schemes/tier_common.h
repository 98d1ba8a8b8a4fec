/* tier_common.h: what the cloud, edge and user tiers of the splitllm scheme share — the
 * training configuration the cloud sends down (as JSON), fetching and verifying a model
 * part over a link, and the per-step seeds. Private to src/schemes. */
#ifndef SPLITLLM_SCHEMES_TIER_COMMON_H
#define SPLITLLM_SCHEMES_TIER_COMMON_H

#include <stdint.h>

#include "model/lora.h"
#include "model/optim.h"
#include "net/codec.h"
#include "net/link.h"
#include "util/sha256.h"

/* Largest PART_DATA chunk: well under the message limit, large enough to keep round trips
 * few (a 124M model's user part is ~160 MB: 40 chunks). */
#define SL_PART_CHUNK_BYTES ((size_t)4 << 20)
/* How long a tier waits between polls when its peer has nothing for it yet. */
#define SL_POLL_MIN_MS 5
#define SL_POLL_MAX_MS 100

/* The training configuration every tier needs, as the cloud decides it. */
typedef struct {
    char scheme[16];           /* "splitllm", "sfl", "sl" or "fl" */
    int n_layers, dim;
    int cut1, cut2;
    int batch, seq, packing;
    int rounds, local_steps;
    uint64_t seed;
    sl_lora_config lora;
    sl_adamw_config optim;
    sl_codec compress;         /* how activations and their gradients travel */
    uint8_t edge_part_sha256[SL_SHA256_BYTES];
    uint64_t edge_part_bytes;
    uint8_t user_part_sha256[SL_SHA256_BYTES];
    uint64_t user_part_bytes;
} sl_tier_config;

/* JSON text (sl_alloc'd, NUL-terminated) and back. Parsing checks every field by name. */
int sl_tier_config_to_json(const sl_tier_config *c, char **out);
int sl_tier_config_from_json(const char *text, size_t bytes, const char *from, sl_tier_config *out);

/* Makes path hold the part named part_name ("edge" or "user") with this SHA-256 and size,
 * fetching it over link in PART_CHUNK requests when the file is absent or differs. The
 * download is written to a temp file, verified, then renamed. */
int sl_fetch_part(sl_link *link, const char *part_name, const uint8_t sha256[SL_SHA256_BYTES], uint64_t bytes,
                  const char *path);

/* Serves one PART_CHUNK request from a mapped part file. */
int sl_serve_part_chunk(const sl_msg *request, sl_msg *reply, const char *part_name, const void *data,
                        uint64_t bytes);

/* The dropout seed of global step k = (round-1)*E + step + 1 (1-based, as central). */
static inline uint64_t sl_step_seed(uint64_t seed, int round, int local_steps, int step) {
    return seed ^ (uint64_t)((int64_t)(round - 1) * local_steps + step + 1);
}

/* Encoded bytes of one step's FORWARD (act F32 (B,T,C), targets, mask) — the largest
 * message of a step; its BACKWARD reply is the same size within a few bytes. */
static inline size_t sl_step_message_bytes(int B, int T, int C) {
    return (size_t)B * T * C * 4 + (size_t)B * T * 5 + 512;
}

/* Bytes a server holds while it serves model parts to `clients` at once: each reply's
 * chunk, encoded, and NNG's message. A tier's message memory peaks at the larger of this
 * (while its clients join) and its step messages (while they train). */
static inline size_t sl_part_serving_bytes(int clients) { return (size_t)clients * 2 * SL_PART_CHUNK_BYTES; }

/* Adds a (B,T,C) float tensor to msg, encoded with codec (NONE: by pointer, no copy). */
int sl_add_activation(sl_msg *msg, const char *name, const sl_codec *codec, int B, int T, int C, const float *data);
/* The (B,T,C) float tensor name of msg: F32 is returned in place; an encoded one is decoded
 * into scratch (B*T*C floats). SL_EFORMAT naming the tensor when it is absent or its shape
 * differs. */
int sl_get_activation(const sl_msg *msg, const char *name, int B, int T, int C, float *scratch, const float **out);

/* Opens a tier's link to the server above it, named peer in errors; timeout_ms (> 0) bounds
 * both waits of a try: for a connection to hand the request to (a peer that is not there)
 * and for the reply (one that stopped answering). */
int sl_tier_link_open(sl_link **out, const char *url, const char *peer, sl_tier tier, int id, int timeout_ms);

/* Applies a "shape" F32 (4) tensor of a HELLO_OK (up bps, up delay s, down bps, down delay
 * s) to link, when the reply has one (--shape-links). */
int sl_apply_shaping(sl_link *link, const sl_msg *hello_ok);

/* Sleeps ms milliseconds. */
void sl_sleep_ms(int ms);

#endif
