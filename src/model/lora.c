/* lora.c: see lora.h. */
#include "model/lora.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const target_names[SL_LORA_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};

const char *sl_lora_target_name(sl_lora_target t) {
    return (t >= 0 && t < SL_LORA_N_TARGETS) ? target_names[t] : "?";
}

static unsigned family_targets(sl_arch arch) {
    unsigned all = (1u << SL_LORA_N_TARGETS) - 1;
    return arch == SL_ARCH_GPT2 ? all & ~(1u << SL_LORA_GATE) : all;
}

int sl_lora_parse_targets(const char *list, sl_arch arch, unsigned *out) {
    *out = 0;
    if (strcmp(list, "all") == 0) {
        *out = family_targets(arch);
        return SL_OK;
    }
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = -1;
        for (int t = 0; t < SL_LORA_N_TARGETS; t++)
            if (strlen(target_names[t]) == n && strncmp(p, target_names[t], n) == 0) found = t;
        if (found < 0)
            return sl_fail(SL_EINVAL, "--lora-targets: unknown target '%.*s' in '%s' (expected q,k,v,o,gate,up,down "
                           "or all)", (int)n, p, list);
        if (!(family_targets(arch) & (1u << found)))
            return sl_fail(SL_EINVAL, "--lora-targets: a %s model has no '%s' projection", sl_arch_name(arch),
                           target_names[found]);
        *out |= 1u << found;
        p += n;
        if (*p == ',') p++;
    }
    if (*out == 0) return sl_fail(SL_EINVAL, "--lora-targets: empty list");
    return SL_OK;
}

void sl_lora_format_targets(unsigned targets, char *buf, size_t bytes) {
    size_t used = 0;
    buf[0] = '\0';
    for (int t = 0; t < SL_LORA_N_TARGETS; t++) {
        if (!(targets & (1u << t))) continue;
        int n = snprintf(buf + used, bytes - used, "%s%s", used ? "," : "", target_names[t]);
        if (n < 0 || (size_t)n >= bytes - used) break;
        used += (size_t)n;
    }
}

static void target_shape(const sl_config *c, sl_lora_target t, int *in, int *out) {
    int C = c->dim, KV = sl_config_kv_dim(c), H = c->hidden_dim;
    switch (t) {
    case SL_LORA_Q: *in = C; *out = C; break;
    case SL_LORA_K: *in = C; *out = KV; break;
    case SL_LORA_V: *in = C; *out = KV; break;
    case SL_LORA_O: *in = C; *out = C; break;
    case SL_LORA_GATE: *in = C; *out = H; break;
    case SL_LORA_UP: *in = C; *out = H; break;
    default: *in = H; *out = C; break; /* down */
    }
}

int sl_lora_init(sl_lora *l, const sl_config *mc, const sl_lora_config *lc, int layer_begin, int layer_end) {
    memset(l, 0, sizeof(*l));
    if (lc->rank < 1 || lc->rank > 4096) return sl_fail(SL_EINVAL, "--lora-rank: %d, expected 1..4096", lc->rank);
    if (!(lc->alpha > 0.0f)) return sl_fail(SL_EINVAL, "--lora-alpha: %g, expected > 0", lc->alpha);
    if (!(lc->dropout >= 0.0f && lc->dropout < 1.0f))
        return sl_fail(SL_EINVAL, "--lora-dropout: %g, expected in [0, 1)", lc->dropout);
    if (lc->targets == 0 || (lc->targets & ~family_targets(mc->arch)))
        return sl_fail(SL_EINVAL, "LoRA targets 0x%x are not valid for a %s model", lc->targets, sl_arch_name(mc->arch));
    if (layer_begin < 0 || layer_end > mc->n_layers || layer_begin > layer_end)
        return sl_fail(SL_EINVAL, "LoRA block range [%d,%d) is outside the model's %d blocks", layer_begin, layer_end,
                       mc->n_layers);
    l->config = *lc;
    l->model_config = *mc;
    l->layer_begin = layer_begin;
    l->layer_end = layer_end;
    size_t off = 0;
    for (int t = 0; t < SL_LORA_N_TARGETS; t++) {
        if (!(lc->targets & (1u << t))) continue;
        target_shape(mc, t, &l->in_dim[t], &l->out_dim[t]);
        l->target_offset[t] = off;
        off += (size_t)lc->rank * (size_t)(l->in_dim[t] + l->out_dim[t]);
    }
    l->layer_params = off;
    l->n_params = off * (size_t)(layer_end - layer_begin);
    l->params = sl_alloc(l->n_params * sizeof(float));
    l->grads = sl_alloc(l->n_params * sizeof(float));
    if (l->params == NULL || l->grads == NULL) {
        sl_lora_free(l);
        return SL_ENOMEM;
    }
    for (int layer = layer_begin; layer < layer_end; layer++) {
        for (int t = 0; t < SL_LORA_N_TARGETS; t++) {
            if (!(lc->targets & (1u << t))) continue;
            float *A = sl_lora_A(l, layer, t);
            size_t n = (size_t)lc->rank * (size_t)l->in_dim[t];
            float bound = 1.0f / sqrtf((float)l->in_dim[t]);
            sl_rng rng;
            sl_rng_init(&rng, lc->seed, (uint64_t)layer * SL_LORA_N_TARGETS + (uint64_t)t);
            for (size_t i = 0; i < n; i++) A[i] = (2.0f * sl_rng_uniform(&rng) - 1.0f) * bound;
            /* B stays zero */
        }
    }
    return SL_OK;
}

void sl_lora_free(sl_lora *l) {
    sl_free(l->params);
    sl_free(l->grads);
    memset(l, 0, sizeof(*l));
}

static size_t offset_of(const sl_lora *l, int layer, sl_lora_target t) {
    return (size_t)(layer - l->layer_begin) * l->layer_params + l->target_offset[t];
}

static int has(const sl_lora *l, int layer, sl_lora_target t) {
    return l != NULL && l->params != NULL && layer >= l->layer_begin && layer < l->layer_end &&
           (l->config.targets & (1u << t));
}

float *sl_lora_A(const sl_lora *l, int layer, sl_lora_target t) {
    return has(l, layer, t) ? l->params + offset_of(l, layer, t) : NULL;
}
float *sl_lora_B(const sl_lora *l, int layer, sl_lora_target t) {
    return has(l, layer, t) ? l->params + offset_of(l, layer, t) + (size_t)l->config.rank * l->in_dim[t] : NULL;
}
float *sl_lora_dA(const sl_lora *l, int layer, sl_lora_target t) {
    return has(l, layer, t) ? l->grads + offset_of(l, layer, t) : NULL;
}
float *sl_lora_dB(const sl_lora *l, int layer, sl_lora_target t) {
    return has(l, layer, t) ? l->grads + offset_of(l, layer, t) + (size_t)l->config.rank * l->in_dim[t] : NULL;
}

void sl_lora_zero_grad(sl_lora *l) {
    if (l->grads) memset(l->grads, 0, l->n_params * sizeof(float));
}
