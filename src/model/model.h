/* model.h: the frozen base model — its configuration, its weights, and the file formats
 * they come from (llm.c GPT-2 checkpoints, llama2.c .bin files). Weights are mapped
 * read-only from the file (mmap), so every segment and every training stream in a process,
 * and every process on a host, shares one copy.
 *
 * Not for: LoRA adapters (lora.h), activations and the forward/backward pass (segment.h). */
#ifndef SPLITLLM_MODEL_MODEL_H
#define SPLITLLM_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "util/common.h"

typedef enum { SL_ARCH_GPT2 = 1, SL_ARCH_LLAMA = 2 } sl_arch;

/* llm.c checkpoint header: 256 int32, magic and version 3 = float32 weights. */
#define SL_GPT2_MAGIC 20240326
#define SL_GPT2_VERSION_FP32 3
#define SL_GPT2_HEADER_INTS 256
/* llama2.c legacy .bin header: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size (negative: separate classifier), seq_len). */
#define SL_LLAMA_HEADER_INTS 7
#define SL_NORM_EPS 1e-5f
#define SL_ROPE_THETA 10000.0f

typedef struct {
    sl_arch arch;
    int n_layers;          /* L */
    int dim;               /* C */
    int hidden_dim;        /* H, the MLP's inner size (GPT-2: 4C) */
    int n_heads;           /* NH */
    int n_kv_heads;        /* NKV (GPT-2: NH) */
    int vocab_size;        /* V, real tokens */
    int padded_vocab_size; /* Vp, rows of the token embedding table (llm.c pads; llama: V) */
    int max_seq;           /* maxT */
    int shared_classifier; /* LM head tied to the token embedding */
} sl_config;

/* One block's frozen weights. GPT-2's fused qkv weight (3C,C) is seen as wq, wk, wv row
 * slices of it; members a family lacks are NULL. */
typedef struct {
    const float *norm1_w, *norm1_b; /* (C) */
    const float *wq, *wk, *wv;      /* (C,C), (KV,C), (KV,C); KV = NKV*hs */
    const float *bq, *bk, *bv;      /* (C), (KV), (KV): GPT-2 only */
    const float *wo, *bo;           /* (C,C), (C) */
    const float *norm2_w, *norm2_b; /* (C) */
    const float *w_gate;            /* (H,C): Llama only (w1) */
    const float *w_up, *b_up;       /* (H,C), (H): GPT-2 c_fc, Llama w3 */
    const float *w_down, *b_down;   /* (C,H), (C): GPT-2 c_proj, Llama w2 */
} sl_layer_weights;

typedef struct {
    sl_config config;
    sl_mapped_file file;
    const float *tok_emb;          /* (Vp,C) */
    const float *pos_emb;          /* (maxT,C): GPT-2 only */
    sl_layer_weights *layers;      /* [L] */
    const float *final_norm_w;     /* (C) */
    const float *final_norm_b;     /* (C): GPT-2 only */
    const float *classifier;       /* (V,C): tok_emb when shared */
    float *rope_cos, *rope_sin;    /* (maxT, hs/2): Llama only */
    /* What the file holds: blocks [part_layer_begin, part_layer_end), the embedding, the
     * final norm + LM head. A whole model: 0, L, 1, 1; a model part (part.h): its range, with
     * the pointers of everything outside it NULL. */
    int part_layer_begin, part_layer_end, part_has_embedding, part_has_head;
    struct sl_st_reader *part_reader; /* a model part: its open file, which the pointers point into */
} sl_model;

/* Loads a model file, choosing the format from its header: a model part (safetensors with
 * format=splitllm-part, part.h), an llm.c checkpoint (magic), else a llama2.c .bin. */
int sl_model_load(sl_model *m, const char *path);
void sl_model_free(sl_model *m);

/* Checks that m holds blocks [begin, end) and, when asked, the embedding and the head:
 * SL_EINVAL with a message naming the file, what it holds and what is needed, if not (or if
 * the range is not within [0, L]). A whole model covers every valid range. */
/* Bytes of the model's weights that are resident in this process (pages it has touched). */
size_t sl_model_resident_bytes(const sl_model *m);
int sl_model_check_covers(const sl_model *m, int begin, int end, int embedding, int head);

/* Checks a configuration for consistency and overflow (names the bad field). */
int sl_config_validate(const sl_config *c, const char *what);
/* Number of float32 values the file format stores for this configuration. */
int sl_config_file_floats(const sl_config *c, size_t *out);
const char *sl_arch_name(sl_arch a);
int sl_arch_parse(const char *name, sl_arch *out);

/* Named shapes, for init-model and benchmarks: "tiny" and "124M" in each family. */
int sl_config_preset(sl_config *c, sl_arch arch, const char *preset);

/* Writes a model with random weights in the family's file format (atomically). GPT-2
 * initialisation as GPT-2/llm.c (N(0, 0.02), residual projections scaled by 1/sqrt(2L),
 * norms 1, biases 0); Llama the same without biases. */
int sl_model_write_random(const sl_config *c, uint64_t seed, const char *path);

/* Helpers used by segments. */
static inline int sl_config_head_size(const sl_config *c) { return c->dim / c->n_heads; }
static inline int sl_config_kv_dim(const sl_config *c) { return c->n_kv_heads * (c->dim / c->n_heads); }

#endif
