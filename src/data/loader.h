/* loader.h: (B,T) training batches from one shard — tokens, next-token targets and a loss
 * mask — with a seeded shuffle per epoch, padding or packing, and a position that can be
 * saved and restored exactly so that a resumed run sees the same batches.
 * Not for: reading files other than through shard.h, tokenizing, deciding which user holds
 * which samples. */
#ifndef SPLITLLM_DATA_LOADER_H
#define SPLITLLM_DATA_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "data/shard.h"

/* The token id written into padding (inputs and targets). Its mask is always 0, so the
 * value never reaches the loss; 0 is a valid id in every vocabulary. */
#define SL_LOADER_PAD_TOKEN 0

/* Random stream of epoch e's shuffle: SL_LOADER_STREAM_EPOCH + e. */
#define SL_LOADER_STREAM_EPOCH 0x6c6f6164ULL /* "load" */

typedef struct {
    int lc_B;           /* rows per batch */
    int lc_T;           /* positions per row; a row reads up to T+1 tokens */
    int lc_packing;     /* 0: one sample per row, cut at T+1, padded; 1: samples back to back */
    int lc_shuffle;     /* 1: a fresh seeded order each epoch; 0: shard order */
    int lc_one_epoch;   /* 1: stop after one pass (sl_loader_next returns 1); rows after the end
                           are padding. 0: epochs follow each other forever */
    uint64_t lc_seed;
} sl_loader_config;

/* Where the next batch starts: sample lp_index of epoch lp_epoch's order, at token
 * lp_offset of that sample (always 0 without packing). */
typedef struct {
    uint64_t lp_epoch;
    uint64_t lp_index;
    uint64_t lp_offset;
} sl_loader_pos;

typedef struct {
    int b_B, b_T;
    int32_t *b_tokens;   /* (B,T) inputs */
    int32_t *b_targets;  /* (B,T) the token after each input */
    uint8_t *b_mask;     /* (B,T) 1 where the target counts in the loss */
    uint64_t b_mask_tokens; /* number of ones in mask */
    uint64_t b_samples;     /* samples whose first token is in this batch (FedAvg weights count them) */
} sl_batch;

typedef struct {
    const sl_shard *ld_shard;   /* borrowed; must outlive the loader */
    sl_loader_config ld_cfg;
    sl_loader_pos ld_pos;
    uint64_t *ld_order;         /* (n_samples) the current epoch's order */
    uint64_t ld_order_epoch;    /* epoch ld_order belongs to */
} sl_loader;

int sl_loader_open(sl_loader *ld, const sl_shard *shard, const sl_loader_config *cfg);
void sl_loader_close(sl_loader *ld);

int sl_batch_alloc(sl_batch *b, int B, int T);
void sl_batch_free(sl_batch *b);

/* Fills b (allocated for the loader's B, T) and advances. Returns 0, 1 when one_epoch is
 * set and the pass is over (b untouched), or an error. */
int sl_loader_next(sl_loader *ld, sl_batch *b);

sl_loader_pos sl_loader_tell(const sl_loader *ld);
/* Restores a position from sl_loader_tell (of a loader with the same shard and config). */
int sl_loader_seek(sl_loader *ld, sl_loader_pos pos);

#endif
