/* ops.h: the forward and backward kernels of a transformer block, as plain functions over
 * flat float arrays (llm.c style). Matrix products go through BLAS, element-wise loops
 * through OpenMP.
 *
 * Letters, the same everywhere: B batch, T time (sequence), N = B*T rows, C channels,
 * NH query heads, NKV key/value heads, hs head size (C/NH), H MLP hidden size, V vocab,
 * OC output channels, r LoRA rank.
 *
 * Backward kernels ACCUMULATE into the gradients they produce (+=); the caller zeroes.
 * The base weights are frozen: no kernel here produces a gradient of a weight or bias —
 * only of activations (and LoRA's A and B, in lora_*).
 *
 * Not for: parameter layout, file formats, what is saved between forward and backward
 * (model/segment.c decides that). */
#ifndef SPLITLLM_KERNELS_OPS_H
#define SPLITLLM_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- normalisation ---- */

/* out (N,C) = (inp - mean) * rstd * w + b; saves mean (N) and rstd (N). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                       int N, int C, float eps);
/* dinp (N,C) += d/dinp given dout (N,C), the saved inp, mean, rstd, and w. */
void layernorm_backward(float *dinp, const float *dout, const float *inp, const float *mean, const float *rstd,
                        const float *w, int N, int C);
/* out (N,C) = inp * rstd * w, rstd = 1/sqrt(mean(inp^2) + eps); saves rstd (N). */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps);
void rmsnorm_backward(float *dinp, const float *dout, const float *inp, const float *rstd, const float *w, int N,
                      int C);
/* Recomputes a norm's output from its saved statistics (no reductions). mean NULL: RMS. */
void norm_recompute(float *out, const float *inp, const float *mean, const float *rstd, const float *w,
                    const float *b, int N, int C);

/* ---- linear layers (frozen) ---- */

/* out (N,OC), row stride ldo, = inp (N,C), row stride ldi, @ W^T (W is (OC,C)) [+ bias (OC)]. */
void linear_forward(float *out, int ldo, const float *inp, int ldi, const float *W, const float *bias, int N,
                    int C, int OC);
/* dinp (N,C), row stride ldi, += dout (N,OC), row stride ldo, @ W (OC,C). No weight gradient. */
void linear_backward_input(float *dinp, int ldi, const float *dout, int ldo, const float *W, int N, int C, int OC);

/* ---- LoRA: y += scale * (x A^T) B^T, A (r,C), B (OC,r) ---- */

/* u (N,r) = x A^T; out (N,OC), row stride ldo, += scale * u B^T. */
void lora_forward(float *out, int ldo, float *u, const float *x, int ldx, const float *A, const float *Bm, int N,
                  int C, int OC, int r, float scale);
/* Given dout (N,OC) (stride ldo), the saved x (stride ldx) and u: dA (r,C) += du^T x,
 * dB (OC,r) += scale * dout^T u, dx (N,C) (stride ldx_grad) += du A, where du = scale * dout B.
 * du is scratch (N,r). dx may be NULL. */
void lora_backward(float *dA, float *dB, float *dx, int ldx_grad, float *du, const float *dout, int ldo,
                   const float *x, int ldx, const float *u, const float *A, const float *Bm, int N, int C, int OC,
                   int r, float scale);

/* Inverted dropout as a pure function of (seed, index): out = inp * keep / (1 - p), where
 * keep is 1 with probability 1 - p, p in [0, 1) (callers validate it). Used on LoRA's input; the mask is recomputed in backward
 * rather than stored. inp and out may alias. */
void dropout_apply(float *out, const float *inp, size_t n, float p, uint64_t seed);

/* ---- attention ---- */

/* Causal multi-head attention with grouped-query heads (NKV divides NH; query head h uses
 * key/value head h / (NH/NKV)). qkv (N, C + 2*KV) holds q at columns [0,C), k at [C, C+KV),
 * v at [C+KV, C+2KV), KV = NKV*hs. Writes att (B,NH,T,T) (softmax probabilities, zero above
 * the diagonal) and out (N,C). */
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int NKV);
/* dqkv (N, C+2KV) += gradient given dout (N,C), the saved qkv and att. */
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C,
                        int NH, int NKV);

/* Rotary embedding, llama2.c convention: in each head, the pair of channels (2i, 2i+1) at
 * position t is rotated by angle t * theta^(-2i/hs). Applied in place to the q and k columns
 * of qkv (N, C+2KV). rope_cos/rope_sin are (maxT, hs/2), from rope_table; row t of each
 * sequence is position t. inverse = 1 rotates backward (the gradient's path). */
void rope_table(float *rope_cos, float *rope_sin, int max_T, int hs, float theta);
void rope_apply(float *qkv, const float *rope_cos, const float *rope_sin, int B, int T, int C, int NH, int NKV,
                int inverse);

/* ---- activations ---- */

/* GELU, tanh approximation. */
void gelu_forward(float *out, const float *inp, size_t n);
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
/* SwiGLU: out = silu(gate) * up. */
void swiglu_forward(float *out, const float *gate, const float *up, size_t n);
/* dgate += dout * up * silu'(gate); dup += dout * silu(gate). */
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);

/* ---- embedding ---- */

/* out (N,C) = wte[tokens] (+ wpe[t] when wpe is not NULL). Token ids are checked by the caller. */
void embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T, int C);

/* ---- residual ---- */

/* out = a + b, n floats. */
void residual_forward(float *out, const float *a, const float *b, size_t n);

/* ---- loss head ---- */

/* Masked cross-entropy over logits = x W^T (W is (V,C), only the first V rows are used),
 * computed in chunks of rows so the (N,V) logits never exist at once. mask (N) may be NULL
 * (every row counts). The loss is sum(mask * CE) / sum(mask). When dx is not NULL it
 * receives (overwrites) d loss / d x (N,C); when logits_out is not NULL the full logits
 * (N,V) are written there. scratch must hold chunk_rows * V floats. Returns the loss
 * (0 when no row counts). row_loss (N) receives each row's CE. */
#define SL_HEAD_CHUNK_ROWS 64
float crossentropy_head(float *dx, float *logits_out, float *row_loss, float *scratch, const float *x,
                        const float *W, const int *targets, const uint8_t *mask, int N, int C, int V);

#endif
