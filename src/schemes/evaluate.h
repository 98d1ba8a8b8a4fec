/* evaluate.h: the mean masked loss of a model (with adapters) over a validation shard —
 * the one evaluation every scheme reports. Not for: training. */
#ifndef SPLITLLM_SCHEMES_EVALUATE_H
#define SPLITLLM_SCHEMES_EVALUATE_H

#include "data/shard.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/segment.h"

/* Over up to max_batches (B,T) batches of val in shard order (0 = all), with segment s
 * (one segment over the whole model). *out is NaN when no position counted. */
int sl_evaluate_segment(sl_segment *s, const sl_shard *val, int B, int T, int max_batches, float *out);
/* The same with a fresh segment over m and lora (NULL: the base model). */
int sl_evaluate(const sl_model *m, sl_lora *lora, const sl_shard *val, int B, int T, int max_batches, float *out);

#endif
