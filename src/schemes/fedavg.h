/* fedavg.h: federated averaging of adapters — the weighted mean every scheme with more
 * than one participant uses at the end of a round. Not for: deciding who participates. */
#ifndef SPLITLLM_SCHEMES_FEDAVG_H
#define SPLITLLM_SCHEMES_FEDAVG_H

#include <stddef.h>

/* out (n) = sum_k c_k * inputs[k] (n), c_k = weights[k] / sum(weights), accumulated in the
 * order k = 0, 1, ... The coefficients are normalised before use, so a single participant
 * gets its own adapter back bit for bit (c = 1). out may alias no input. SL_EINVAL when
 * k < 1 or a weight is negative or all are zero. */
int sl_fedavg(float *out, const float *const *inputs, const double *weights, int k, size_t n);

#endif
