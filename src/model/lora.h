/* lora.h: LoRA adapters on a contiguous range of blocks [layer_begin, layer_end): their
 * parameters, gradients, initialisation and files.
 *
 * For a frozen linear y = x W^T with W (out,in) the adapter adds scale * (x A^T) B^T,
 * A (r,in), B (out,r), scale = alpha / r (PEFT's convention). A is Kaiming-uniform
 * (PEFT's kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in))), B is zero, so a new
 * adapter leaves the model unchanged. Each (layer, target) tensor is drawn from its own
 * random stream, so an adapter over blocks [a,b) holds exactly the values that the
 * whole-model adapter holds for those blocks.
 *
 * Layout, one allocation each for params and grads: layer-major, then target in
 * sl_lora_target order, then A before B. The adapters of consecutive block ranges are
 * therefore consecutive slices of the whole-model adapter.
 *
 * Not for: the optimizer state (optim.h), the forward/backward pass (segment.h). */
#ifndef SPLITLLM_MODEL_LORA_H
#define SPLITLLM_MODEL_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef enum {
    SL_LORA_Q = 0, /* attention query projection */
    SL_LORA_K,     /* attention key projection */
    SL_LORA_V,     /* attention value projection */
    SL_LORA_O,     /* attention output projection */
    SL_LORA_GATE,  /* Llama w1 */
    SL_LORA_UP,    /* GPT-2 c_fc, Llama w3 */
    SL_LORA_DOWN,  /* GPT-2 c_proj (MLP), Llama w2 */
    SL_LORA_N_TARGETS
} sl_lora_target;

typedef struct {
    int rank;              /* r */
    float alpha;           /* scale = alpha / r */
    float dropout;         /* probability on the adapter's input; 0 = off */
    unsigned targets;      /* bit set of (1u << sl_lora_target) */
    uint64_t seed;         /* initialisation */
} sl_lora_config;

typedef struct {
    sl_lora_config config;
    sl_config model_config;
    int layer_begin, layer_end;
    int in_dim[SL_LORA_N_TARGETS];  /* 0 when the target is off */
    int out_dim[SL_LORA_N_TARGETS];
    size_t target_offset[SL_LORA_N_TARGETS]; /* within one layer's block of params */
    size_t layer_params;  /* floats per layer */
    size_t n_params;      /* floats in all */
    float *params;        /* (n_params) */
    float *grads;         /* (n_params) */
} sl_lora;

const char *sl_lora_target_name(sl_lora_target t);
/* "q,v" or "all" (every target the family has) -> bit set. */
int sl_lora_parse_targets(const char *list, sl_arch arch, unsigned *out);
/* Writes "q,k,v" style text of a bit set into buf. */
void sl_lora_format_targets(unsigned targets, char *buf, size_t bytes);

/* Allocates and initialises (A Kaiming-uniform, B zero) adapters for [begin, end). */
int sl_lora_init(sl_lora *l, const sl_config *mc, const sl_lora_config *lc, int layer_begin, int layer_end);
void sl_lora_free(sl_lora *l);
static inline float sl_lora_scale(const sl_lora *l) { return l->config.alpha / (float)l->config.rank; }
/* A (r,in) and B (out,r) of one (layer, target); NULL when off. layer is absolute. */
float *sl_lora_A(const sl_lora *l, int layer, sl_lora_target t);
float *sl_lora_B(const sl_lora *l, int layer, sl_lora_target t);
float *sl_lora_dA(const sl_lora *l, int layer, sl_lora_target t);
float *sl_lora_dB(const sl_lora *l, int layer, sl_lora_target t);
void sl_lora_zero_grad(sl_lora *l);

/* Adapter files: safetensors, tensors "lora.{layer}.{target}.A" / ".B" (float32), metadata
 * format=splitllm-lora, version, arch, n_layers, dim, rank, alpha, targets, layer_begin,
 * layer_end. A file may cover any block range; loading copies the blocks it shares with l
 * and checks that rank, targets and shapes agree (an error names the mismatch). */
int sl_lora_save(const sl_lora *l, const char *path);
int sl_lora_load(sl_lora *l, const char *path);
/* Loads a file's configuration and allocates an adapter of the range it covers. */
int sl_lora_open(sl_lora *l, const sl_config *mc, const char *path);

#endif
