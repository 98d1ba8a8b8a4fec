/* ops.c: see ops.h. Reductions are computed in a fixed order per row so results do not
 * depend on the number of threads (the split-equivalence tests rely on that). */
#include "kernels/ops.h"

#include <math.h>
#include <string.h>

#include "kernels/gemm.h"
#include "util/common.h"

/* Element-wise loops below this many elements are not worth waking threads for. */
#define PARALLEL_MIN_ELEMENTS 16384

/* ---------------------------------------------------------------- normalisation */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                       int N, int C, float eps) {
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN_ELEMENTS)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float m = 0.0f;
        for (int c = 0; c < C; c++) m += x[c];
        m /= (float)C;
        float v = 0.0f;
        for (int c = 0; c < C; c++) {
            float d = x[c] - m;
            v += d * d;
        }
        v /= (float)C;
        float s = 1.0f / sqrtf(v + eps);
        float *o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
        mean[i] = m;
        rstd[i] = s;
    }
}

void layernorm_backward(float *dinp, const float *dout, const float *inp, const float *mean, const float *rstd,
                        const float *w, int N, int C) {
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN_ELEMENTS)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        const float *dy = dout + (size_t)i * C;
        float *dx = dinp + (size_t)i * C;
        float m = mean[i], s = rstd[i];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - m) * s;
            float dnorm = w[c] * dy[c];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * xhat;
        }
        dnorm_mean /= (float)C;
        dnorm_norm_mean /= (float)C;
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - m) * s;
            float dnorm = w[c] * dy[c];
            dx[c] += (dnorm - dnorm_mean - xhat * dnorm_norm_mean) * s;
        }
    }
}

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps) {
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN_ELEMENTS)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float ss = 0.0f;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        ss /= (float)C;
        float s = 1.0f / sqrtf(ss + eps);
        float *o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = w[c] * (s * x[c]);
        rstd[i] = s;
    }
}

void rmsnorm_backward(float *dinp, const float *dout, const float *inp, const float *rstd, const float *w, int N,
                      int C) {
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN_ELEMENTS)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        const float *dy = dout + (size_t)i * C;
        float *dx = dinp + (size_t)i * C;
        float s = rstd[i];
        float dot = 0.0f; /* sum_c dy*w*x */
        for (int c = 0; c < C; c++) dot += dy[c] * w[c] * x[c];
        float k = s * s * s * dot / (float)C;
        for (int c = 0; c < C; c++) dx[c] += s * dy[c] * w[c] - k * x[c];
    }
}

void norm_recompute(float *out, const float *inp, const float *mean, const float *rstd, const float *w,
                    const float *b, int N, int C) {
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN_ELEMENTS)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *o = out + (size_t)i * C;
        float s = rstd[i];
        if (mean != NULL) {
            float m = mean[i];
            for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
        } else {
            for (int c = 0; c < C; c++) o[c] = w[c] * (s * x[c]);
        }
    }
}

/* ---------------------------------------------------------------- linear */

void linear_forward(float *out, int ldo, const float *inp, int ldi, const float *W, const float *bias, int N,
                    int C, int OC) {
    float beta = 0.0f;
    if (bias != NULL) {
        for (int i = 0; i < N; i++) memcpy(out + (size_t)i * ldo, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    sl_gemm(CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, ldi, W, C, beta, out, ldo);
}

void linear_backward_input(float *dinp, int ldi, const float *dout, int ldo, const float *W, int N, int C, int OC) {
    sl_gemm(CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, ldo, W, C, 1.0f, dinp, ldi);
}

/* ---------------------------------------------------------------- LoRA */

void lora_forward(float *out, int ldo, float *u, const float *x, int ldx, const float *A, const float *Bm, int N,
                  int C, int OC, int r, float scale) {
    sl_gemm(CblasNoTrans, CblasTrans, N, r, C, 1.0f, x, ldx, A, C, 0.0f, u, r);
    sl_gemm(CblasNoTrans, CblasTrans, N, OC, r, scale, u, r, Bm, r, 1.0f, out, ldo);
}

void lora_backward(float *dA, float *dB, float *dx, int ldx_grad, float *du, const float *dout, int ldo,
                   const float *x, int ldx, const float *u, const float *A, const float *Bm, int N, int C, int OC,
                   int r, float scale) {
    /* dB (OC,r) += scale * dout^T (OC,N) @ u (N,r) */
    sl_gemm(CblasTrans, CblasNoTrans, OC, r, N, scale, dout, ldo, u, r, 1.0f, dB, r);
    /* du (N,r) = scale * dout (N,OC) @ B (OC,r) */
    sl_gemm(CblasNoTrans, CblasNoTrans, N, r, OC, scale, dout, ldo, Bm, r, 0.0f, du, r);
    /* dA (r,C) += du^T (r,N) @ x (N,C) */
    sl_gemm(CblasTrans, CblasNoTrans, r, C, N, 1.0f, du, r, x, ldx, 1.0f, dA, C);
    /* dx (N,C) += du (N,r) @ A (r,C) */
    if (dx != NULL)
        sl_gemm(CblasNoTrans, CblasNoTrans, N, C, r, 1.0f, du, r, A, C, 1.0f, dx, ldx_grad);
}

void dropout_apply(float *out, const float *inp, size_t n, float p, uint64_t seed) {
    if (p <= 0.0f) {
        if (out != inp) memcpy(out, inp, n * sizeof(float));
        return;
    }
    const float keep_scale = 1.0f / (1.0f - p);
    const uint64_t threshold = (uint64_t)((double)p * 18446744073709551616.0);
#pragma omp parallel for if (n >= PARALLEL_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) {
        uint64_t h = sl_hash64(seed ^ sl_hash64(i));
        out[i] = h >= threshold ? inp[i] * keep_scale : 0.0f;
    }
}

/* ---------------------------------------------------------------- attention */

void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int NKV) {
    const int hs = C / NH;
    const int KV = NKV * hs;
    const int ld = C + 2 * KV;
    const int group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const int kvh = h / group;
            const float *base = qkv + (size_t)b * T * ld;
            float *att_bh = att + ((size_t)b * NH + h) * T * T;
            for (int t = 0; t < T; t++) {
                const float *q = base + (size_t)t * ld + h * hs;
                float *row = att_bh + (size_t)t * T;
                float maxv = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *k = base + (size_t)t2 * ld + C + kvh * hs;
                    float s = 0.0f;
#pragma omp simd reduction(+ : s)
                    for (int i = 0; i < hs; i++) s += q[i] * k[i];
                    s *= scale;
                    row[t2] = s;
                    if (s > maxv) maxv = s;
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    float e = expf(row[t2] - maxv);
                    row[t2] = e;
                    sum += e;
                }
                float inv = 1.0f / sum;
                for (int t2 = 0; t2 <= t; t2++) row[t2] *= inv;
                for (int t2 = t + 1; t2 < T; t2++) row[t2] = 0.0f;
                float *o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *v = base + (size_t)t2 * ld + C + KV + kvh * hs;
                    const float p = row[t2];
#pragma omp simd
                    for (int i = 0; i < hs; i++) o[i] += p * v[i];
                }
            }
        }
    }
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C,
                        int NH, int NKV) {
    const int hs = C / NH;
    const int KV = NKV * hs;
    const int ld = C + 2 * KV;
    const int group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)hs);
    /* One task per (b, kv head): the query heads of a group write the same dk and dv rows. */
#pragma omp parallel
    {
        float dp[T]; /* one attention row's d(probability); T <= maxT, a few KiB */
#pragma omp for collapse(2)
        for (int b = 0; b < B; b++) {
            for (int kvh = 0; kvh < NKV; kvh++) {
                const float *base = qkv + (size_t)b * T * ld;
                float *dbase = dqkv + (size_t)b * T * ld;
                for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                    const float *att_bh = att + ((size_t)b * NH + h) * T * T;
                    for (int t = 0; t < T; t++) {
                        const float *p = att_bh + (size_t)t * T;
                        const float *dy = dout + ((size_t)b * T + t) * C + h * hs;
                        const float *q = base + (size_t)t * ld + h * hs;
                        float *dq = dbase + (size_t)t * ld + h * hs;
                        /* dp = dy . v ; dv += p * dy */
                        float pdp = 0.0f;
                        for (int t2 = 0; t2 <= t; t2++) {
                            const float *v = base + (size_t)t2 * ld + C + KV + kvh * hs;
                            float *dv = dbase + (size_t)t2 * ld + C + KV + kvh * hs;
                            float s = 0.0f;
#pragma omp simd reduction(+ : s)
                            for (int i = 0; i < hs; i++) s += dy[i] * v[i];
                            dp[t2] = s;
                            pdp += p[t2] * s;
                            const float pt = p[t2];
#pragma omp simd
                            for (int i = 0; i < hs; i++) dv[i] += pt * dy[i];
                        }
                        /* softmax backward, then the q.k product */
                        for (int t2 = 0; t2 <= t; t2++) {
                            const float ds = p[t2] * (dp[t2] - pdp) * scale;
                            const float *k = base + (size_t)t2 * ld + C + kvh * hs;
                            float *dk = dbase + (size_t)t2 * ld + C + kvh * hs;
#pragma omp simd
                            for (int i = 0; i < hs; i++) {
                                dq[i] += ds * k[i];
                                dk[i] += ds * q[i];
                            }
                        }
                    }
                }
            }
        }
    }
}

void rope_table(float *rope_cos, float *rope_sin, int max_T, int hs, float theta) {
    /* Same arithmetic as llama2.c's run.c, so generation matches it bit for bit. */
    for (int t = 0; t < max_T; t++) {
        for (int i = 0; i < hs; i += 2) {
            float freq = 1.0f / powf(theta, (float)i / (float)hs);
            float val = (float)t * freq;
            rope_cos[(size_t)t * (hs / 2) + i / 2] = cosf(val);
            rope_sin[(size_t)t * (hs / 2) + i / 2] = sinf(val);
        }
    }
}

void rope_apply(float *qkv, const float *rope_cos, const float *rope_sin, int B, int T, int C, int NH, int NKV,
                int inverse) {
    const int hs = C / NH;
    const int KV = NKV * hs;
    const int ld = C + 2 * KV;
    const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for collapse(2) if ((size_t)B * T * C >= PARALLEL_MIN_ELEMENTS)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *row = qkv + ((size_t)b * T + t) * ld;
            const float *cs = rope_cos + (size_t)t * (hs / 2);
            const float *sn = rope_sin + (size_t)t * (hs / 2);
            /* q columns [0,C) then k columns [C, C+KV): both are whole heads of size hs */
            for (int c = 0; c < C + KV; c += 2) {
                int j = (c % hs) / 2;
                float fcr = cs[j], fci = sign * sn[j];
                float v0 = row[c], v1 = row[c + 1];
                row[c] = v0 * fcr - v1 * fci;
                row[c + 1] = v0 * fci + v1 * fcr;
            }
        }
    }
}

/* ---------------------------------------------------------------- activations */

#define GELU_SCALING_FACTOR 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_CUBIC 0.044715f

void gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for if (n >= PARALLEL_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float cube = GELU_CUBIC * x * x * x;
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALING_FACTOR * (x + cube)));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp parallel for if (n >= PARALLEL_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float cube = GELU_CUBIC * x * x * x;
        float tanh_arg = GELU_SCALING_FACTOR * (x + cube);
        float tanh_out = tanhf(tanh_arg);
        float sech2 = 1.0f - tanh_out * tanh_out;
        float local = 0.5f * (1.0f + tanh_out) +
                      x * 0.5f * sech2 * GELU_SCALING_FACTOR * (1.0f + 3.0f * GELU_CUBIC * x * x);
        dinp[i] += local * dout[i];
    }
}

void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
#pragma omp parallel for if (n >= PARALLEL_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float silu = g * (1.0f / (1.0f + expf(-g)));
        out[i] = silu * up[i];
    }
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
#pragma omp parallel for if (n >= PARALLEL_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float sig = 1.0f / (1.0f + expf(-g));
        float silu = g * sig;
        dup[i] += dout[i] * silu;
        dgate[i] += dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
    }
}

/* ---------------------------------------------------------------- embedding, residual */

void embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T, int C) {
#pragma omp parallel for collapse(2) if ((size_t)B * T * C >= PARALLEL_MIN_ELEMENTS)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *e = wte + (size_t)tokens[b * T + t] * C;
            if (wpe != NULL) {
                const float *p = wpe + (size_t)t * C;
                for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
            } else {
                memcpy(o, e, (size_t)C * sizeof(float));
            }
        }
    }
}

void residual_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for if (n >= PARALLEL_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* ---------------------------------------------------------------- loss head */

float crossentropy_head(float *dx, float *logits_out, float *row_loss, float *scratch, const float *x,
                        const float *W, const int *targets, const uint8_t *mask, int N, int C, int V) {
    int count = 0;
    for (int i = 0; i < N; i++) count += (mask == NULL || mask[i]) ? 1 : 0;
    const float inv_count = count > 0 ? 1.0f / (float)count : 0.0f;
    for (int r0 = 0; r0 < N; r0 += SL_HEAD_CHUNK_ROWS) {
        const int rows = N - r0 < SL_HEAD_CHUNK_ROWS ? N - r0 : SL_HEAD_CHUNK_ROWS;
        float *logits = scratch;
        /* logits (rows,V) = x (rows,C) @ W^T */
        sl_gemm(CblasNoTrans, CblasTrans, rows, V, C, 1.0f, x + (size_t)r0 * C, C, W, C, 0.0f,
                    logits, V);
        if (logits_out != NULL) memcpy(logits_out + (size_t)r0 * V, logits, (size_t)rows * V * sizeof(float));
#pragma omp parallel for
        for (int i = 0; i < rows; i++) {
            float *l = logits + (size_t)i * V;
            const int row = r0 + i;
            float maxv = -INFINITY;
            for (int v = 0; v < V; v++) maxv = l[v] > maxv ? l[v] : maxv;
            float sum = 0.0f;
            for (int v = 0; v < V; v++) sum += expf(l[v] - maxv);
            const float lse = maxv + logf(sum);
            row_loss[row] = lse - l[targets[row]];
            if (dx != NULL) {
                const float w = (mask == NULL || mask[row]) ? inv_count : 0.0f;
                const float inv_sum = 1.0f / sum;
                for (int v = 0; v < V; v++) l[v] = w * expf(l[v] - maxv) * inv_sum;
                l[targets[row]] -= w;
            }
        }
        if (dx != NULL) /* dx (rows,C) = dlogits (rows,V) @ W (V,C) */
            sl_gemm(CblasNoTrans, CblasNoTrans, rows, C, V, 1.0f, logits, V, W, C, 0.0f,
                        dx + (size_t)r0 * C, C);
    }
    double total = 0.0;
    for (int i = 0; i < N; i++)
        if (mask == NULL || mask[i]) total += row_loss[i];
    return (float)(total * inv_count);
}
