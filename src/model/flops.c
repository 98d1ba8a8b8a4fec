/* flops.c: see flops.h. */
#include "model/flops.h"

void sl_segment_flops(const sl_config *c, const sl_lora_config *lc, int begin, int end, int head, int B, int T,
                      double *forward_flop, double *backward_flop) {
    const double N = (double)B * T, C = c->dim, H = c->hidden_dim, KV = sl_config_kv_dim(c), V = c->vocab_size;
    const double hs = (double)c->dim / c->n_heads, blocks = end - begin;
    const double mlp_mats = c->arch == SL_ARCH_LLAMA ? 3.0 : 2.0;
    const double linear_macs = N * (C * (C + 2 * KV) + C * C + mlp_mats * C * H);
    const double attn_macs = (double)B * c->n_heads * (T * (T + 1) / 2.0) * hs * 2.0; /* QK^T and PV, causal */
    double lora_macs = 0.0;
    if (lc != NULL) {
        const double in_out[SL_LORA_N_TARGETS] = {C + C, C + KV, C + KV, C + C, C + H, C + H, H + C};
        for (int t = 0; t < SL_LORA_N_TARGETS; t++)
            if (lc->targets & (1u << t)) lora_macs += N * lc->rank * in_out[t];
    }
    double fwd = blocks * (linear_macs + attn_macs + lora_macs);
    /* backward: input gradients of the frozen products (1x), attention (2x), LoRA (2x:
     * its weight gradients and its input gradient) */
    double bwd = blocks * (linear_macs + 2 * attn_macs + 2 * lora_macs);
    if (head) {
        fwd += N * C * V;
        bwd += N * C * V;
    }
    *forward_flop = 2.0 * fwd;
    *backward_flop = 2.0 * bwd;
}
