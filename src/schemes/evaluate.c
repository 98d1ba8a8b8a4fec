/* evaluate.c: see evaluate.h. */
#include "schemes/evaluate.h"

#include <math.h>

#include "data/loader.h"

int sl_evaluate_segment(sl_segment *s, const sl_shard *val, int B, int T, int max_batches, float *out) {
    sl_loader_config lc = {.lc_B = B, .lc_T = T, .lc_packing = 0, .lc_shuffle = 0, .lc_one_epoch = 1};
    sl_loader ld;
    sl_batch b;
    int rc = sl_loader_open(&ld, val, &lc);
    if (rc) return rc;
    if ((rc = sl_batch_alloc(&b, B, T))) {
        sl_loader_close(&ld);
        return rc;
    }
    double sum = 0.0;
    uint64_t count = 0;
    for (int k = 0; max_batches == 0 || k < max_batches; k++) {
        int r = sl_loader_next(&ld, &b);
        if (r < 0) {
            rc = r;
            break;
        }
        if (b.b_mask_tokens > 0) {
            sl_segment_input in = {.B = B, .T = T, .tokens = b.b_tokens, .targets = b.b_targets, .mask = b.b_mask};
            if ((rc = sl_segment_forward(s, &in))) break;
            sum += (double)sl_segment_loss(s) * (double)sl_segment_loss_count(s);
            count += (uint64_t)sl_segment_loss_count(s);
        }
        if (r == 1) break;
    }
    sl_batch_free(&b);
    sl_loader_close(&ld);
    *out = count > 0 ? (float)(sum / (double)count) : NAN;
    return rc;
}

int sl_evaluate(const sl_model *m, sl_lora *lora, const sl_shard *val, int B, int T, int max_batches, float *out) {
    sl_segment_config sc = {0, m->config.n_layers, 1, 1, B, T};
    sl_segment *s;
    int rc = sl_segment_create(&s, m, lora, &sc);
    if (rc) return rc;
    rc = sl_evaluate_segment(s, val, B, T, max_batches, out);
    sl_segment_free(s);
    return rc;
}
