/* flops.h: floating-point operations of a training step of a segment, counted from the
 * shapes (multiply-add = 2 FLOPs) — for the benchmark's GFLOP/s and the wireless model's
 * compute times. Frozen base weights: backward computes input gradients only. Not for:
 * measuring anything. */
#ifndef SPLITLLM_MODEL_FLOPS_H
#define SPLITLLM_MODEL_FLOPS_H

#include "model/lora.h"
#include "model/model.h"

/* Forward and backward FLOPs of blocks [begin,end) (+ the head and loss when head) on a
 * (B,T) batch with adapters lc (NULL: none). The head's input gradient is counted in
 * backward even though the engine computes it during the forward pass. */
void sl_segment_flops(const sl_config *c, const sl_lora_config *lc, int begin, int end, int head, int B, int T,
                      double *forward_flop, double *backward_flop);

#endif
