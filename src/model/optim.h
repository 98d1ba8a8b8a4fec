/* optim.h: AdamW over a flat array of trainable parameters (the LoRA adapters), the
 * learning-rate schedule (linear warm-up, cosine decay) and gradient clipping by global
 * norm. Matches torch.optim.AdamW: decoupled weight decay p -= lr*wd*p, bias-corrected
 * moments, p -= lr * m_hat / (sqrt(v_hat) + eps).
 *
 * Not for: what the parameters are (lora.h). */
#ifndef SPLITLLM_MODEL_OPTIM_H
#define SPLITLLM_MODEL_OPTIM_H

#include <stddef.h>

typedef struct {
    float lr;           /* peak learning rate */
    float beta1, beta2;
    float eps;
    float weight_decay;
    float grad_clip;    /* max global L2 norm of the gradient; 0 = no clipping */
    int warmup_steps;   /* linear warm-up from lr/warmup_steps to lr */
    int total_steps;    /* cosine decay to min_lr_ratio*lr at total_steps; 0 = constant after warm-up */
    float min_lr_ratio;
} sl_adamw_config;

/* lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 (torch's AdamW defaults, but
 * the learning rate, which LoRA fine-tuning usually sets around 1e-4..1e-3), no clipping,
 * no schedule. */
sl_adamw_config sl_adamw_defaults(void);

typedef struct {
    sl_adamw_config config;
    size_t n;
    float *m, *v; /* (n) first and second moments */
    int step;     /* updates done */
} sl_adamw;

int sl_adamw_init(sl_adamw *o, const sl_adamw_config *c, size_t n_params);
void sl_adamw_free(sl_adamw *o);
/* Learning rate of update number step (0-based). */
float sl_adamw_lr(const sl_adamw_config *c, int step);
/* Sum of squares of g (n), accumulated in double in a fixed order. */
double sl_sum_squares(const float *g, size_t n);
/* The factor that scales gradients of global norm sqrt(sum_squares) down to grad_clip (1
 * when clipping is off or the norm is within bounds). */
float sl_clip_scale(const sl_adamw_config *c, double sum_squares);
/* One update of params (n) with grads (n) * grad_scale, at the schedule's learning rate. */
void sl_adamw_update(sl_adamw *o, float *params, const float *grads, float grad_scale);
/* One update in which consecutive slices [ends[g-1], ends[g]) of the parameters are clipped
 * as separate groups: each group's gradient is scaled down to grad_clip by its own norm.
 * The split schemes clip each tier's adapters on their own (a tier cannot see the others'
 * gradients before it updates), and central clips the same groups, so all schemes compute
 * the same update. ends[n_groups-1] must be o->n. */
void sl_adamw_update_groups(sl_adamw *o, float *params, const float *grads, int n_groups, const size_t *ends);

#endif
