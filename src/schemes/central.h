/* central.h: the `central` scheme — LoRA fine-tuning of the whole model in one process on
 * all users' data. It is the quality reference the split and federated schemes are
 * measured against. Not for: anything that crosses a process boundary. */
#ifndef SPLITLLM_SCHEMES_CENTRAL_H
#define SPLITLLM_SCHEMES_CENTRAL_H

#include <stdint.h>

#include "model/lora.h"
#include "model/optim.h"

typedef struct {
    const char *model_path;
    const char *data_dir;   /* output of `splitllm prepare`: user_*.shard + val.shard */
    const char *out_dir;    /* metrics.jsonl, summary.json, lora.safetensors */
    int steps;
    int batch, seq;         /* B, T */
    int packing;            /* pack samples back to back instead of one per row */
    int cut1, cut2;         /* the split schemes' cuts: gradients are clipped per tier group
                               [0,cut1), [cut1,cut2), [cut2,L) as they are there; 0,0 = one group */
    sl_lora_config lora;
    sl_adamw_config optim;
    int eval_every;         /* steps between evaluations; 0 = only before and after */
    int eval_batches;       /* batches of the validation shard per evaluation; 0 = all */
    uint64_t seed;
} sl_central_config;

typedef struct {
    float eval_loss_initial, eval_loss_final;
    float train_loss_final;
    float *eval_losses;     /* after every eval_every steps, the last after the final step */
    int n_eval_losses;
    double wall_seconds;
    double tokens_per_s;
} sl_central_result;

int sl_central_run(const sl_central_config *cfg, sl_central_result *out);

#endif
