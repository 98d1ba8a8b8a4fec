/* fedavg.c: see fedavg.h. */
#include "schemes/fedavg.h"

#include <string.h>

#include "util/common.h"

int sl_fedavg(float *out, const float *const *inputs, const double *weights, int k, size_t n) {
    if (k < 1) return sl_fail(SL_EINVAL, "FedAvg of %d adapters: expected at least one", k);
    double total = 0.0;
    for (int i = 0; i < k; i++) {
        if (!(weights[i] >= 0.0)) return sl_fail(SL_EINVAL, "FedAvg weight %d is %g, expected >= 0", i, weights[i]);
        total += weights[i];
    }
    if (!(total > 0.0)) return sl_fail(SL_EINVAL, "FedAvg weights sum to %g, expected > 0", total);
    memset(out, 0, n * sizeof(float));
    for (int i = 0; i < k; i++) {
        const float c = (float)(weights[i] / total);
        const float *x = inputs[i];
        for (size_t j = 0; j < n; j++) out[j] += c * x[j];
    }
    return SL_OK;
}
