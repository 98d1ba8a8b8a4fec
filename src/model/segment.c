/* segment.c: see segment.h.
 *
 * What is saved per block for backward, with the frozen-weight fast path in mind (a
 * frozen linear needs only its weight to pass a gradient back, not its input):
 *   res    (N,C)      the block's input (LayerNorm/RMSNorm backward needs it)
 *   mean1, rstd1 (N)  the first norm's statistics
 *   qkv    (N,C+2KV)  queries (after RoPE), keys, values
 *   att    (B,NH,T,T) attention probabilities
 *   atty   (N,C)      attention output, only when the o projection has an adapter
 *   x2     (N,C)      the residual stream after attention; mean2, rstd2 (N)
 *   hg     (N,H)      GPT-2: c_fc output before GELU; Llama: gate (w1) output
 *   hu     (N,H)      Llama only: up (w3) output
 *   u      (N,r)      each adapter's x A^T
 * Norm outputs and MLP activations that an adapter needs in backward are recomputed from
 * these (cheap, element-wise) instead of stored. The head computes the gradient of its
 * input while it computes the loss, chunk by chunk, so the (N,V) logits never exist. */
#include "model/segment.h"

#include <cblas.h>
#include <string.h>

#include "kernels/ops.h"

struct sl_segment {
    const sl_model *m;
    sl_lora *lora;
    sl_segment_config sc;
    int nl;       /* blocks in the segment */
    size_t max_N; /* max_B * max_T */
    size_t att_stride;
    int C, H, KV, ld, NH, NKV, V;
    /* saved for backward: [nl] slots of max_N rows (res has nl+1) */
    float *res, *mean1, *rstd1, *qkv, *att, *atty, *x2, *mean2, *rstd2, *hg, *hu, *u;
    /* head */
    float *meanf, *rstdf, *dlnf, *row_loss, *head_scratch;
    /* one block's scratch */
    float *s_ln, *s_atty, *s_g, *s_drop, *s_dropg;
    float *d_cur, *d_g, *d_h, *d_hu, *d_ln, *d_atty, *d_qkv, *d_u;
    size_t saved_bytes, scratch_bytes;
    /* the last forward */
    int B, T, have_forward, want_grad, loss_count;
    float loss;
    uint64_t dropout_seed;
};

static float *take(sl_segment *s, size_t floats, int saved, int *failed) {
    if (floats == 0) return NULL;
    float *p = sl_alloc(floats * sizeof(float));
    if (p == NULL) *failed = 1;
    if (saved) s->saved_bytes += floats * sizeof(float);
    else s->scratch_bytes += floats * sizeof(float);
    return p;
}

static int has_target(const sl_segment *s, sl_lora_target t) {
    return s->lora != NULL && (s->lora->config.targets & (1u << t));
}

int sl_segment_create(sl_segment **out, const sl_model *m, sl_lora *lora, const sl_segment_config *sc) {
    *out = NULL;
    int covers = sl_model_check_covers(m, sc->layer_begin, sc->layer_end, sc->has_embedding, sc->has_head);
    if (covers) return covers;
    const sl_config *c = &m->config;
    if (sc->layer_begin < 0 || sc->layer_end > c->n_layers || sc->layer_begin > sc->layer_end)
        return sl_fail(SL_EINVAL, "segment blocks [%d,%d) are outside the model's %d blocks", sc->layer_begin,
                       sc->layer_end, c->n_layers);
    if (sc->has_embedding && sc->layer_begin != 0)
        return sl_fail(SL_EINVAL, "a segment with the embedding must start at block 0, not %d", sc->layer_begin);
    if (sc->has_head && sc->layer_end != c->n_layers)
        return sl_fail(SL_EINVAL, "a segment with the head must end at block %d, not %d", c->n_layers, sc->layer_end);
    if (sc->max_B < 1 || sc->max_T < 1 || sc->max_T > c->max_seq)
        return sl_fail(SL_EINVAL, "segment batch %d x sequence %d: expected B >= 1 and 1 <= T <= %d (max_seq)",
                       sc->max_B, sc->max_T, c->max_seq);
    if (lora != NULL && (lora->layer_begin != sc->layer_begin || lora->layer_end != sc->layer_end))
        return sl_fail(SL_EINVAL, "LoRA covers blocks [%d,%d) but the segment is [%d,%d)", lora->layer_begin,
                       lora->layer_end, sc->layer_begin, sc->layer_end);
    sl_segment *s = sl_alloc(sizeof(*s));
    if (s == NULL) return SL_ENOMEM;
    s->m = m;
    s->lora = lora;
    s->sc = *sc;
    s->nl = sc->layer_end - sc->layer_begin;
    s->C = c->dim;
    s->H = c->hidden_dim;
    s->KV = sl_config_kv_dim(c);
    s->ld = s->C + 2 * s->KV;
    s->NH = c->n_heads;
    s->NKV = c->n_kv_heads;
    s->V = c->vocab_size;
    const size_t N = (size_t)sc->max_B * (size_t)sc->max_T;
    const size_t nl = (size_t)s->nl, C = (size_t)s->C, H = (size_t)s->H;
    s->max_N = N;
    s->att_stride = (size_t)sc->max_B * (size_t)s->NH * (size_t)sc->max_T * (size_t)sc->max_T;
    const int llama = c->arch == SL_ARCH_LLAMA;
    const int r = lora ? lora->config.rank : 0;
    int failed = 0;
    s->res = take(s, (nl + 1) * N * C, 1, &failed);
    s->mean1 = llama ? NULL : take(s, nl * N, 1, &failed);
    s->rstd1 = take(s, nl * N, 1, &failed);
    s->qkv = take(s, nl * N * (size_t)s->ld, 1, &failed);
    s->att = take(s, nl * s->att_stride, 1, &failed);
    s->atty = has_target(s, SL_LORA_O) ? take(s, nl * N * C, 1, &failed) : NULL;
    s->x2 = take(s, nl * N * C, 1, &failed);
    s->mean2 = llama ? NULL : take(s, nl * N, 1, &failed);
    s->rstd2 = take(s, nl * N, 1, &failed);
    s->hg = take(s, nl * N * H, 1, &failed);
    s->hu = llama ? take(s, nl * N * H, 1, &failed) : NULL;
    s->u = lora ? take(s, nl * SL_LORA_N_TARGETS * N * (size_t)r, 1, &failed) : NULL;
    if (sc->has_head) {
        s->meanf = llama ? NULL : take(s, N, 1, &failed);
        s->rstdf = take(s, N, 1, &failed);
        s->dlnf = take(s, N * C, 1, &failed);
        s->row_loss = take(s, N, 1, &failed);
        s->head_scratch = take(s, (size_t)SL_HEAD_CHUNK_ROWS * (size_t)s->V, 0, &failed);
    }
    const size_t widest = H > C ? H : C;
    s->s_ln = take(s, N * C, 0, &failed);
    s->s_atty = s->atty ? NULL : take(s, N * C, 0, &failed);
    s->s_g = take(s, N * H, 0, &failed);
    if (lora && lora->config.dropout > 0.0f) {
        s->s_drop = take(s, N * widest, 0, &failed);
        s->s_dropg = take(s, N * widest, 0, &failed);
    }
    s->d_cur = take(s, N * C, 0, &failed);
    s->d_g = take(s, N * H, 0, &failed);
    s->d_h = take(s, N * H, 0, &failed);
    s->d_hu = llama ? take(s, N * H, 0, &failed) : NULL;
    s->d_ln = take(s, N * C, 0, &failed);
    s->d_atty = take(s, N * C, 0, &failed);
    s->d_qkv = take(s, N * (size_t)s->ld, 0, &failed);
    s->d_u = lora ? take(s, N * (size_t)r, 0, &failed) : NULL;
    if (failed) {
        sl_segment_free(s);
        return SL_ENOMEM;
    }
    *out = s;
    return SL_OK;
}

void sl_segment_free(sl_segment *s) {
    if (s == NULL) return;
    float *all[] = {s->res, s->mean1, s->rstd1, s->qkv, s->att, s->atty, s->x2, s->mean2, s->rstd2, s->hg,
                    s->hu, s->u, s->meanf, s->rstdf, s->dlnf, s->row_loss, s->head_scratch, s->s_ln, s->s_atty,
                    s->s_g, s->s_drop, s->s_dropg, s->d_cur, s->d_g, s->d_h, s->d_hu, s->d_ln, s->d_atty,
                    s->d_qkv, s->d_u};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) sl_free(all[i]);
    sl_free(s);
}

/* ---------------------------------------------------------------- LoRA glue */

static float *lora_u(const sl_segment *s, int i, sl_lora_target t) {
    return s->u + ((size_t)i * SL_LORA_N_TARGETS + (size_t)t) * s->max_N * (size_t)s->lora->config.rank;
}

static uint64_t dropout_seed_of(const sl_segment *s, int layer, sl_lora_target t) {
    return sl_hash64(s->dropout_seed ^ sl_hash64((uint64_t)layer * SL_LORA_N_TARGETS + (uint64_t)t + 1));
}

/* out (N, OC) at row stride ldo += scale * (x A^T) B^T, x (N, in) contiguous. */
static void lora_fwd(sl_segment *s, int layer, sl_lora_target t, float *out, int ldo, const float *x, int N) {
    if (!has_target(s, t)) return;
    const sl_lora *l = s->lora;
    const int in = l->in_dim[t], oc = l->out_dim[t], r = l->config.rank;
    if (l->config.dropout > 0.0f && s->want_grad) { /* dropout trains; evaluation sees every input */
        dropout_apply(s->s_drop, x, (size_t)N * in, l->config.dropout, dropout_seed_of(s, layer, t));
        x = s->s_drop;
    }
    lora_forward(out, ldo, lora_u(s, layer - s->sc.layer_begin, t), x, in, sl_lora_A(l, layer, t),
                 sl_lora_B(l, layer, t), N, in, oc, r, sl_lora_scale(l));
}

/* Adds the adapter's gradients given dout (N,OC) at stride ldo and its input x (N,in);
 * dx (N,in) += its share of the input gradient (skipped when dx is NULL). */
static void lora_bwd(sl_segment *s, int layer, sl_lora_target t, float *dx, const float *dout, int ldo,
                     const float *x, int N) {
    if (!has_target(s, t)) return;
    const sl_lora *l = s->lora;
    const int in = l->in_dim[t], oc = l->out_dim[t], r = l->config.rank;
    const float p = l->config.dropout;
    float *dx_target = dx;
    if (p > 0.0f) {
        dropout_apply(s->s_drop, x, (size_t)N * in, p, dropout_seed_of(s, layer, t));
        x = s->s_drop;
        if (dx != NULL) {
            memset(s->s_dropg, 0, (size_t)N * in * sizeof(float));
            dx_target = s->s_dropg;
        }
    }
    lora_backward(sl_lora_dA(l, layer, t), sl_lora_dB(l, layer, t), dx_target, in, s->d_u, dout, ldo, x, in,
                  lora_u(s, layer - s->sc.layer_begin, t), sl_lora_A(l, layer, t), sl_lora_B(l, layer, t), N, in,
                  oc, r, sl_lora_scale(l));
    if (p > 0.0f && dx != NULL) {
        /* the input gradient passes through the same mask */
        dropout_apply(s->s_dropg, s->s_dropg, (size_t)N * in, p, dropout_seed_of(s, layer, t));
        residual_forward(dx, dx, s->s_dropg, (size_t)N * in);
    }
}

/* ---------------------------------------------------------------- forward */

static int qkv_fused(const sl_layer_weights *w, int C, int KV) {
    return w->wk == w->wq + (size_t)C * C && w->wv == w->wk + (size_t)KV * C &&
           (w->bq == NULL || (w->bk == w->bq + C && w->bv == w->bk + KV));
}

static void norm_forward(const sl_segment *s, float *out, float *mean, float *rstd, const float *x, const float *w,
                         const float *b, int N) {
    if (mean != NULL) layernorm_forward(out, mean, rstd, x, w, b, N, s->C, SL_NORM_EPS);
    else rmsnorm_forward(out, rstd, x, w, N, s->C, SL_NORM_EPS);
}

static void norm_backward(const sl_segment *s, float *dx, const float *dout, const float *x, const float *mean,
                          const float *rstd, const float *w, int N) {
    if (mean != NULL) layernorm_backward(dx, dout, x, mean, rstd, w, N, s->C);
    else rmsnorm_backward(dx, dout, x, rstd, w, N, s->C);
}

/* The saved tensors of the segment's i-th block (the table at the top of this file); the
 * norm means and hu are NULL for the families without them, atty is the scratch when the o
 * projection has no adapter. */
typedef struct {
    float *x, *mean1, *rstd1, *qkv, *att, *atty, *x2, *mean2, *rstd2, *hg, *hu, *y;
} block_saved;

static block_saved saved_of(const sl_segment *s, int i) {
    const size_t NC = s->max_N * (size_t)s->C, NH_ = s->max_N * (size_t)s->H, n = s->max_N;
    const int llama = s->m->config.arch == SL_ARCH_LLAMA;
    block_saved b = {
        .x = s->res + i * NC,
        .mean1 = llama ? NULL : s->mean1 + i * n,
        .rstd1 = s->rstd1 + i * n,
        .qkv = s->qkv + i * n * (size_t)s->ld,
        .att = s->att + i * s->att_stride,
        .atty = s->atty ? s->atty + i * NC : s->s_atty,
        .x2 = s->x2 + i * NC,
        .mean2 = llama ? NULL : s->mean2 + i * n,
        .rstd2 = s->rstd2 + i * n,
        .hg = s->hg + i * NH_,
        .hu = llama ? s->hu + i * NH_ : NULL,
        .y = s->res + (i + 1) * NC,
    };
    return b;
}

static void block_forward(sl_segment *s, int layer) {
    const sl_model *m = s->m;
    const sl_layer_weights *w = &m->layers[layer];
    const int B = s->B, T = s->T, N = B * T, C = s->C, H = s->H, KV = s->KV, ld = s->ld;
    const int llama = m->config.arch == SL_ARCH_LLAMA;
    const block_saved b = saved_of(s, layer - s->sc.layer_begin);
    const float *x = b.x;
    float *mean1 = b.mean1, *mean2 = b.mean2, *rstd1 = b.rstd1, *rstd2 = b.rstd2;
    float *qkv = b.qkv, *att = b.att, *atty = b.atty, *x2 = b.x2, *hg = b.hg, *hu = b.hu, *y = b.y;

    /* attention */
    norm_forward(s, s->s_ln, mean1, rstd1, x, w->norm1_w, w->norm1_b, N);
    if (qkv_fused(w, C, KV)) {
        linear_forward(qkv, ld, s->s_ln, C, w->wq, w->bq, N, C, ld);
    } else {
        linear_forward(qkv, ld, s->s_ln, C, w->wq, w->bq, N, C, C);
        linear_forward(qkv + C, ld, s->s_ln, C, w->wk, w->bk, N, C, KV);
        linear_forward(qkv + C + KV, ld, s->s_ln, C, w->wv, w->bv, N, C, KV);
    }
    lora_fwd(s, layer, SL_LORA_Q, qkv, ld, s->s_ln, N);
    lora_fwd(s, layer, SL_LORA_K, qkv + C, ld, s->s_ln, N);
    lora_fwd(s, layer, SL_LORA_V, qkv + C + KV, ld, s->s_ln, N);
    if (llama) rope_apply(qkv, m->rope_cos, m->rope_sin, B, T, C, s->NH, s->NKV, 0);
    attention_forward(atty, att, qkv, B, T, C, s->NH, s->NKV);
    linear_forward(x2, C, atty, C, w->wo, w->bo, N, C, C);
    lora_fwd(s, layer, SL_LORA_O, x2, C, atty, N);
    residual_forward(x2, x2, x, (size_t)N * C);

    /* MLP */
    norm_forward(s, s->s_ln, mean2, rstd2, x2, w->norm2_w, w->norm2_b, N);
    if (llama) {
        linear_forward(hg, H, s->s_ln, C, w->w_gate, NULL, N, C, H);
        lora_fwd(s, layer, SL_LORA_GATE, hg, H, s->s_ln, N);
        linear_forward(hu, H, s->s_ln, C, w->w_up, NULL, N, C, H);
        lora_fwd(s, layer, SL_LORA_UP, hu, H, s->s_ln, N);
        swiglu_forward(s->s_g, hg, hu, (size_t)N * H);
    } else {
        linear_forward(hg, H, s->s_ln, C, w->w_up, w->b_up, N, C, H);
        lora_fwd(s, layer, SL_LORA_UP, hg, H, s->s_ln, N);
        gelu_forward(s->s_g, hg, (size_t)N * H);
    }
    linear_forward(y, C, s->s_g, H, w->w_down, w->b_down, N, H, C);
    lora_fwd(s, layer, SL_LORA_DOWN, y, C, s->s_g, N);
    residual_forward(y, y, x2, (size_t)N * C);
}

int sl_segment_forward(sl_segment *s, const sl_segment_input *b) {
    const sl_model *m = s->m;
    const sl_config *c = &m->config;
    if (b->B < 1 || b->T < 1 || b->B > s->sc.max_B || b->T > s->sc.max_T)
        return sl_fail(SL_EINVAL, "batch %d x %d exceeds the segment's planned %d x %d", b->B, b->T, s->sc.max_B,
                       s->sc.max_T);
    const int N = b->B * b->T, C = s->C;
    s->B = b->B;
    s->T = b->T;
    s->want_grad = b->want_grad;
    s->dropout_seed = b->dropout_seed;
    s->have_forward = 0;
    if (s->sc.has_embedding) {
        if (b->tokens == NULL) return sl_fail(SL_EINVAL, "segment with the embedding needs token ids");
        for (int i = 0; i < N; i++)
            if (b->tokens[i] < 0 || b->tokens[i] >= c->vocab_size)
                return sl_fail(SL_EINVAL, "token id %d at position %d is outside the vocabulary [0,%d)", b->tokens[i],
                               i, c->vocab_size);
        embedding_forward(s->res, b->tokens, m->tok_emb, m->pos_emb, b->B, b->T, C);
    } else {
        if (b->input == NULL) return sl_fail(SL_EINVAL, "segment without the embedding needs input activations");
        memcpy(s->res, b->input, (size_t)N * C * sizeof(float));
    }
    for (int layer = s->sc.layer_begin; layer < s->sc.layer_end; layer++) block_forward(s, layer);
    if (s->sc.has_head) {
        const float *x = s->res + (size_t)s->nl * s->max_N * C;
        norm_forward(s, s->s_ln, s->meanf, s->rstdf, x, m->final_norm_w, m->final_norm_b, N);
        if (b->targets != NULL) {
            for (int i = 0; i < N; i++)
                if (b->targets[i] < 0 || b->targets[i] >= c->vocab_size)
                    return sl_fail(SL_EINVAL, "target id %d at position %d is outside the vocabulary [0,%d)",
                                   b->targets[i], i, c->vocab_size);
            s->loss_count = 0;
            for (int i = 0; i < N; i++) s->loss_count += (b->mask == NULL || b->mask[i]) ? 1 : 0;
            s->loss = crossentropy_head(b->want_grad ? s->dlnf : NULL, b->logits, s->row_loss, s->head_scratch,
                                        s->s_ln, m->classifier, b->targets, b->mask, N, C, s->V);
        } else {
            if (b->want_grad) return sl_fail(SL_EINVAL, "a training step needs targets");
            s->loss = 0.0f;
            s->loss_count = 0;
            if (b->logits != NULL)
                for (int bb = 0; bb < b->B; bb++)
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, s->V, C, 1.0f, m->classifier, C,
                                s->s_ln + ((size_t)bb * b->T + b->T - 1) * C, 1, 0.0f, b->logits + (size_t)bb * s->V,
                                1);
        }
    }
    s->have_forward = 1;
    return SL_OK;
}

const float *sl_segment_output(const sl_segment *s) { return s->res + (size_t)s->nl * s->max_N * s->C; }
float sl_segment_loss(const sl_segment *s) { return s->loss; }
int sl_segment_loss_count(const sl_segment *s) { return s->loss_count; }
const sl_segment_config *sl_segment_get_config(const sl_segment *s) { return &s->sc; }

sl_segment_memory sl_segment_memory_use(const sl_segment *s) {
    sl_segment_memory mu = {s->saved_bytes, s->scratch_bytes};
    return mu;
}

/* ---------------------------------------------------------------- backward */

/* d_cur (N,C) holds the gradient of the block's output; on return, of its input (unless
 * need_dinput is 0, for the first block of the embedding segment: then only the LoRA
 * gradients are produced). */
static void block_backward(sl_segment *s, int layer, int need_dinput) {
    const sl_model *m = s->m;
    const sl_layer_weights *w = &m->layers[layer];
    const int B = s->B, T = s->T, N = B * T, C = s->C, H = s->H, KV = s->KV, ld = s->ld;
    const int llama = m->config.arch == SL_ARCH_LLAMA;
    const block_saved b = saved_of(s, layer - s->sc.layer_begin);
    const float *x = b.x, *mean1 = b.mean1, *mean2 = b.mean2, *rstd1 = b.rstd1, *rstd2 = b.rstd2;
    const float *qkv = b.qkv, *att = b.att, *x2 = b.x2, *hg = b.hg, *hu = b.hu;
    float *dy = s->d_cur;
    const size_t nC = (size_t)N * C, nH = (size_t)N * H;

    /* MLP: y = x2 + down(act(up(norm2(x2)))) */
    memset(s->d_g, 0, nH * sizeof(float));
    linear_backward_input(s->d_g, H, dy, C, w->w_down, N, H, C);
    if (has_target(s, SL_LORA_DOWN)) {
        if (llama) swiglu_forward(s->s_g, hg, hu, nH);
        else gelu_forward(s->s_g, hg, nH);
        lora_bwd(s, layer, SL_LORA_DOWN, s->d_g, dy, C, s->s_g, N);
    }
    memset(s->d_h, 0, nH * sizeof(float));
    if (llama) {
        memset(s->d_hu, 0, nH * sizeof(float));
        swiglu_backward(s->d_h, s->d_hu, s->d_g, hg, hu, nH);
    } else {
        gelu_backward(s->d_h, hg, s->d_g, nH);
    }
    memset(s->d_ln, 0, nC * sizeof(float));
    if (llama) {
        linear_backward_input(s->d_ln, C, s->d_h, H, w->w_gate, N, C, H);
        linear_backward_input(s->d_ln, C, s->d_hu, H, w->w_up, N, C, H);
    } else {
        linear_backward_input(s->d_ln, C, s->d_h, H, w->w_up, N, C, H);
    }
    if (has_target(s, SL_LORA_UP) || has_target(s, SL_LORA_GATE)) {
        norm_recompute(s->s_ln, x2, mean2, rstd2, w->norm2_w, w->norm2_b, N, C);
        lora_bwd(s, layer, SL_LORA_GATE, s->d_ln, s->d_h, H, s->s_ln, N);
        lora_bwd(s, layer, SL_LORA_UP, s->d_ln, llama ? s->d_hu : s->d_h, H, s->s_ln, N);
    }
    norm_backward(s, dy, s->d_ln, x2, mean2, rstd2, w->norm2_w, N); /* dy is now d x2 */

    /* attention: x2 = x + o(attn(qkv(norm1(x)))) */
    memset(s->d_atty, 0, nC * sizeof(float));
    linear_backward_input(s->d_atty, C, dy, C, w->wo, N, C, C);
    if (has_target(s, SL_LORA_O)) lora_bwd(s, layer, SL_LORA_O, s->d_atty, dy, C, b.atty, N);
    memset(s->d_qkv, 0, (size_t)N * ld * sizeof(float));
    attention_backward(s->d_qkv, s->d_atty, qkv, att, B, T, C, s->NH, s->NKV);
    if (llama) rope_apply(s->d_qkv, m->rope_cos, m->rope_sin, B, T, C, s->NH, s->NKV, 1);
    float *d_ln = NULL;
    if (need_dinput) {
        d_ln = s->d_ln;
        memset(d_ln, 0, nC * sizeof(float));
        if (qkv_fused(w, C, KV)) {
            linear_backward_input(d_ln, C, s->d_qkv, ld, w->wq, N, C, ld);
        } else {
            linear_backward_input(d_ln, C, s->d_qkv, ld, w->wq, N, C, C);
            linear_backward_input(d_ln, C, s->d_qkv + C, ld, w->wk, N, C, KV);
            linear_backward_input(d_ln, C, s->d_qkv + C + KV, ld, w->wv, N, C, KV);
        }
    }
    if (has_target(s, SL_LORA_Q) || has_target(s, SL_LORA_K) || has_target(s, SL_LORA_V)) {
        norm_recompute(s->s_ln, x, mean1, rstd1, w->norm1_w, w->norm1_b, N, C);
        lora_bwd(s, layer, SL_LORA_Q, d_ln, s->d_qkv, ld, s->s_ln, N);
        lora_bwd(s, layer, SL_LORA_K, d_ln, s->d_qkv + C, ld, s->s_ln, N);
        lora_bwd(s, layer, SL_LORA_V, d_ln, s->d_qkv + C + KV, ld, s->s_ln, N);
    }
    if (need_dinput) norm_backward(s, dy, d_ln, x, mean1, rstd1, w->norm1_w, N); /* dy is now d x */
}

int sl_segment_backward(sl_segment *s, const float *doutput, float *dinput) {
    if (!s->have_forward || !s->want_grad)
        return sl_fail(SL_ESTATE, "segment backward needs a forward with want_grad first");
    const sl_model *m = s->m;
    const int N = s->B * s->T, C = s->C;
    const size_t nC = (size_t)N * C;
    if (s->sc.has_head) {
        const float *x = s->res + (size_t)s->nl * s->max_N * C;
        memset(s->d_cur, 0, nC * sizeof(float));
        norm_backward(s, s->d_cur, s->dlnf, x, s->meanf, s->rstdf, m->final_norm_w, N);
    } else {
        if (doutput == NULL) return sl_fail(SL_EINVAL, "segment backward needs the gradient of its output");
        memcpy(s->d_cur, doutput, nC * sizeof(float));
    }
    for (int layer = s->sc.layer_end - 1; layer >= s->sc.layer_begin; layer--) {
        int need_dinput = !(s->sc.has_embedding && layer == 0);
        block_backward(s, layer, need_dinput);
    }
    if (!s->sc.has_embedding && dinput != NULL) memcpy(dinput, s->d_cur, nC * sizeof(float));
    s->have_forward = 0;
    return SL_OK;
}
