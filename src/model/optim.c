/* optim.c: see optim.h. */
#include "model/optim.h"

#include <math.h>
#include <string.h>

#include "util/common.h"

#define PI_F 3.14159265358979f

sl_adamw_config sl_adamw_defaults(void) {
    sl_adamw_config c;
    memset(&c, 0, sizeof(c));
    c.lr = 1e-3f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    c.weight_decay = 0.01f;
    c.min_lr_ratio = 0.1f;
    return c;
}

int sl_adamw_init(sl_adamw *o, const sl_adamw_config *c, size_t n_params) {
    memset(o, 0, sizeof(*o));
    if (!(c->lr >= 0.0f) || !(c->beta1 >= 0.0f && c->beta1 < 1.0f) || !(c->beta2 >= 0.0f && c->beta2 < 1.0f) ||
        !(c->eps > 0.0f) || !(c->weight_decay >= 0.0f) || !(c->grad_clip >= 0.0f) || c->warmup_steps < 0 ||
        c->total_steps < 0)
        return sl_fail(SL_EINVAL, "AdamW: lr %g, betas (%g, %g), eps %g, weight decay %g, clip %g, warm-up %d, "
                       "total %d: expected lr >= 0, betas in [0,1), eps > 0, and the rest >= 0", c->lr, c->beta1,
                       c->beta2, c->eps, c->weight_decay, c->grad_clip, c->warmup_steps, c->total_steps);
    o->config = *c;
    o->n = n_params;
    o->m = sl_alloc(n_params * sizeof(float));
    o->v = sl_alloc(n_params * sizeof(float));
    if (o->m == NULL || o->v == NULL) {
        sl_adamw_free(o);
        return SL_ENOMEM;
    }
    return SL_OK;
}

void sl_adamw_free(sl_adamw *o) {
    sl_free(o->m);
    sl_free(o->v);
    memset(o, 0, sizeof(*o));
}

float sl_adamw_lr(const sl_adamw_config *c, int step) {
    if (c->warmup_steps > 0 && step < c->warmup_steps) return c->lr * (float)(step + 1) / (float)c->warmup_steps;
    if (c->total_steps <= 0) return c->lr;
    int span = c->total_steps - c->warmup_steps;
    if (span <= 0) return c->lr;
    float progress = (float)(step - c->warmup_steps) / (float)span;
    if (progress > 1.0f) progress = 1.0f;
    float min_lr = c->lr * c->min_lr_ratio;
    return min_lr + 0.5f * (1.0f + cosf(PI_F * progress)) * (c->lr - min_lr);
}

double sl_sum_squares(const float *g, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
    return s;
}

float sl_clip_scale(const sl_adamw_config *c, double sum_squares) {
    if (c->grad_clip <= 0.0f) return 1.0f;
    double norm = sqrt(sum_squares);
    return norm > (double)c->grad_clip ? (float)((double)c->grad_clip / norm) : 1.0f;
}

/* The update of elements [begin, end) at learning rate lr, for step number o->step. */
static void update_range(sl_adamw *o, float lr, size_t begin, size_t end, float *params, const float *grads,
                         float grad_scale) {
    const sl_adamw_config *c = &o->config;
    const float b1 = c->beta1, b2 = c->beta2;
    const float bc1 = 1.0f - powf(b1, (float)o->step);
    const float bc2 = 1.0f - powf(b2, (float)o->step);
    const float decay = 1.0f - lr * c->weight_decay;
    for (size_t i = begin; i < end; i++) {
        float g = grads[i] * grad_scale;
        float m = b1 * o->m[i] + (1.0f - b1) * g;
        float v = b2 * o->v[i] + (1.0f - b2) * g * g;
        o->m[i] = m;
        o->v[i] = v;
        float p = params[i] * decay;
        params[i] = p - lr * (m / bc1) / (sqrtf(v / bc2) + c->eps);
    }
}

void sl_adamw_update(sl_adamw *o, float *params, const float *grads, float grad_scale) {
    const float lr = sl_adamw_lr(&o->config, o->step);
    o->step++;
    update_range(o, lr, 0, o->n, params, grads, grad_scale);
}

void sl_adamw_update_groups(sl_adamw *o, float *params, const float *grads, int n_groups, const size_t *ends) {
    const float lr = sl_adamw_lr(&o->config, o->step);
    o->step++;
    size_t begin = 0;
    for (int g = 0; g < n_groups; g++) {
        size_t end = ends[g] < o->n ? ends[g] : o->n;
        if (end <= begin) continue;
        float scale = sl_clip_scale(&o->config, sl_sum_squares(grads + begin, end - begin));
        update_range(o, lr, begin, end, params, grads, scale);
        begin = end;
    }
}
