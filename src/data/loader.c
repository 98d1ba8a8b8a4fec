/* loader.c: see loader.h. The state is only (epoch, index, offset): the epoch's order is a
 * pure function of (seed, epoch), so any position can be rebuilt from nothing. */
#include "data/loader.h"

#include <inttypes.h>
#include <string.h>

#include "data/partition.h"
#include "util/common.h"

#define ORDER_NONE UINT64_MAX /* ld_order_epoch before any order was built */

int sl_batch_alloc(sl_batch *b, int B, int T) {
    memset(b, 0, sizeof(*b));
    if (B < 1 || T < 1) return sl_fail(SL_EINVAL, "batch: expected B >= 1 and T >= 1, found B %d, T %d", B, T);
    size_t n = (size_t)B * (size_t)T;
    b->b_B = B;
    b->b_T = T;
    b->b_tokens = sl_alloc(n * sizeof(int32_t));
    b->b_targets = sl_alloc(n * sizeof(int32_t));
    b->b_mask = sl_alloc(n);
    if (b->b_tokens == NULL || b->b_targets == NULL || b->b_mask == NULL) {
        sl_batch_free(b);
        return SL_ENOMEM;
    }
    return SL_OK;
}

void sl_batch_free(sl_batch *b) {
    sl_free(b->b_tokens);
    sl_free(b->b_targets);
    sl_free(b->b_mask);
    memset(b, 0, sizeof(*b));
}

int sl_loader_open(sl_loader *ld, const sl_shard *shard, const sl_loader_config *cfg) {
    memset(ld, 0, sizeof(*ld));
    if (cfg->lc_B < 1 || cfg->lc_T < 1)
        return sl_fail(SL_EINVAL, "loader: expected B >= 1 and T >= 1, found B %d, T %d", cfg->lc_B, cfg->lc_T);
    if (shard->sh_n_samples == 0)
        return sl_fail(SL_EINVAL, "%s: loader: the shard holds no samples",
                       shard->sh_path[0] ? shard->sh_path : "shard");
    ld->ld_shard = shard;
    ld->ld_cfg = *cfg;
    ld->ld_order = sl_alloc(shard->sh_n_samples * sizeof(uint64_t));
    if (ld->ld_order == NULL) return SL_ENOMEM;
    ld->ld_order_epoch = ORDER_NONE;
    return SL_OK;
}

void sl_loader_close(sl_loader *ld) {
    sl_free(ld->ld_order);
    memset(ld, 0, sizeof(*ld));
}

/* Builds epoch e's order of samples unless it is the one at hand. */
static void ensure_order(sl_loader *ld, uint64_t epoch) {
    if (ld->ld_order_epoch == epoch) return;
    uint64_t n = ld->ld_shard->sh_n_samples;
    for (uint64_t i = 0; i < n; i++) ld->ld_order[i] = i;
    if (ld->ld_cfg.lc_shuffle) {
        sl_rng r;
        sl_rng_init(&r, ld->ld_cfg.lc_seed, SL_LOADER_STREAM_EPOCH + epoch);
        sl_rng_shuffle_u64(&r, ld->ld_order, (size_t)n);
    }
    ld->ld_order_epoch = epoch;
}

/* 1 when a one-epoch loader has consumed everything. */
static int pass_over(const sl_loader *ld) {
    return ld->ld_cfg.lc_one_epoch && ld->ld_pos.lp_epoch > 0;
}

/* Moves to the next sample, into the next epoch after the last one. */
static void advance_sample(sl_loader *ld) {
    ld->ld_pos.lp_offset = 0;
    if (++ld->ld_pos.lp_index == ld->ld_shard->sh_n_samples) {
        ld->ld_pos.lp_index = 0;
        ld->ld_pos.lp_epoch++;
    }
}

static void pad_positions(sl_batch *b, size_t from, size_t to) {
    for (size_t i = from; i < to; i++) {
        b->b_tokens[i] = SL_LOADER_PAD_TOKEN;
        b->b_targets[i] = SL_LOADER_PAD_TOKEN;
        b->b_mask[i] = 0;
    }
}

/* One sample per row: tokens s[0..len-1), targets s[1..len), the rest padding. A sample
 * longer than T+1 tokens keeps its first T+1. */
static void fill_padded(sl_loader *ld, sl_batch *b) {
    const sl_shard *s = ld->ld_shard;
    const size_t T = (size_t)b->b_T;
    for (int r = 0; r < b->b_B; r++) {
        size_t row = (size_t)r * T;
        if (pass_over(ld)) {
            pad_positions(b, row, row + T);
            continue;
        }
        ensure_order(ld, ld->ld_pos.lp_epoch);
        uint64_t id = ld->ld_order[ld->ld_pos.lp_index];
        const int32_t *tok = s->sh_tokens + s->sh_offsets[id];
        const uint8_t *mask = s->sh_mask + s->sh_offsets[id];
        size_t len = (size_t)sl_shard_sample_len(s, id);
        if (len > T + 1) len = T + 1;
        size_t t = 0;
        for (; t + 1 < len; t++) {
            b->b_tokens[row + t] = tok[t];
            b->b_targets[row + t] = tok[t + 1];
            b->b_mask[row + t] = mask[t + 1];
        }
        /* the sample's last position (when it fits): its target lies beyond the sample */
        if (t < T) {
            b->b_tokens[row + t] = tok[t];
            b->b_targets[row + t] = SL_LOADER_PAD_TOKEN;
            b->b_mask[row + t] = 0;
            t++;
        }
        pad_positions(b, row + t, row + T);
        b->b_samples++;
        advance_sample(ld);
    }
}

/* Samples back to back: each position takes the next token of the stream as input; its
 * target is the following token of the same sample, masked at a sample's end. Rows
 * continue one another, so a long sample runs on into the next row. */
static void fill_packed(sl_loader *ld, sl_batch *b) {
    const sl_shard *s = ld->ld_shard;
    size_t n = (size_t)b->b_B * (size_t)b->b_T;
    for (size_t i = 0; i < n; i++) {
        if (pass_over(ld)) {
            pad_positions(b, i, n);
            return;
        }
        ensure_order(ld, ld->ld_pos.lp_epoch);
        uint64_t id = ld->ld_order[ld->ld_pos.lp_index], off = ld->ld_pos.lp_offset;
        uint64_t start = s->sh_offsets[id], len = sl_shard_sample_len(s, id);
        if (off == 0) b->b_samples++;
        b->b_tokens[i] = s->sh_tokens[start + off];
        if (off + 1 < len) {
            b->b_targets[i] = s->sh_tokens[start + off + 1];
            b->b_mask[i] = s->sh_mask[start + off + 1];
            ld->ld_pos.lp_offset++;
        } else {
            b->b_targets[i] = SL_LOADER_PAD_TOKEN;
            b->b_mask[i] = 0;
            advance_sample(ld);
        }
    }
}

int sl_loader_next(sl_loader *ld, sl_batch *b) {
    if (b->b_B != ld->ld_cfg.lc_B || b->b_T != ld->ld_cfg.lc_T)
        return sl_fail(SL_EINVAL, "loader: batch is (%d,%d), expected (%d,%d)", b->b_B, b->b_T, ld->ld_cfg.lc_B,
                       ld->ld_cfg.lc_T);
    if (pass_over(ld)) return 1;
    b->b_samples = 0;
    if (ld->ld_cfg.lc_packing) fill_packed(ld, b);
    else fill_padded(ld, b);
    uint64_t ones = 0;
    for (size_t i = 0; i < (size_t)b->b_B * (size_t)b->b_T; i++) ones += b->b_mask[i];
    b->b_mask_tokens = ones;
    return SL_OK;
}

sl_loader_pos sl_loader_tell(const sl_loader *ld) { return ld->ld_pos; }

int sl_loader_seek(sl_loader *ld, sl_loader_pos pos) {
    const sl_shard *s = ld->ld_shard;
    if (pos.lp_index >= s->sh_n_samples)
        return sl_fail(SL_EINVAL, "loader: position index %" PRIu64 ", expected 0..%" PRIu64, pos.lp_index,
                       s->sh_n_samples - 1);
    if (!ld->ld_cfg.lc_packing && pos.lp_offset != 0)
        return sl_fail(SL_EINVAL, "loader: position offset %" PRIu64 " without packing, expected 0", pos.lp_offset);
    sl_loader_pos old = ld->ld_pos;
    ld->ld_pos = pos;
    if (pass_over(ld)) return SL_OK;
    ensure_order(ld, pos.lp_epoch);
    uint64_t len = sl_shard_sample_len(s, ld->ld_order[pos.lp_index]);
    if (pos.lp_offset >= len) {
        ld->ld_pos = old;
        return sl_fail(SL_EINVAL, "loader: position offset %" PRIu64 " in a sample of %" PRIu64 " tokens", pos.lp_offset,
                       len);
    }
    return SL_OK;
}
