/* segment.h: a contiguous slice of the model that runs forward and backward on its own —
 * optionally the token embedding at its start, blocks [layer_begin, layer_end), and
 * optionally the final norm, LM head and masked cross-entropy at its end. One segment over
 * everything is ordinary training; three chained segments are the user/edge/cloud split.
 * Chained segments compute exactly (bitwise) what one segment over the same blocks does.
 *
 * The base weights are frozen: backward produces the gradient of the segment's input and
 * the gradients of its LoRA adapters (accumulated, +=), never a base-weight gradient.
 * Memory is planned once at init for at most (max_B, max_T): the saved activations of
 * its blocks and one block's worth of scratch.
 *
 * Not for: the optimizer (optim.h), loading files (model.h, lora.h). */
#ifndef SPLITLLM_MODEL_SEGMENT_H
#define SPLITLLM_MODEL_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "model/lora.h"
#include "model/model.h"

typedef struct {
    int layer_begin, layer_end; /* blocks [begin, end) */
    int has_embedding;          /* token ids in; layer_begin must be 0 */
    int has_head;               /* final norm + LM head + loss at the end; layer_end must be L */
    int max_B, max_T;           /* planned batch and sequence size */
} sl_segment_config;

/* One forward call's inputs. */
typedef struct {
    int B, T;
    const int *tokens;       /* (B,T): segments with the embedding */
    const float *input;      /* (B,T,C): other segments */
    const int *targets;      /* (B,T): segments with the head; NULL = no loss (inference) */
    const uint8_t *mask;     /* (B,T): 1 where the target counts; NULL = all count */
    int want_grad;           /* training: a backward will follow (the head computes its gradient)
                                and LoRA dropout is applied; 0 = evaluation, no dropout */
    uint64_t dropout_seed;   /* LoRA dropout masks of this step (same seed in backward) */
    float *logits;           /* optional, head only: with targets (B,T,V); without, (B,V) at t = T-1 */
} sl_segment_input;

/* Bytes the segment holds, by purpose (for the memory breakdown). */
typedef struct {
    size_t activation_bytes; /* saved for backward, all its blocks */
    size_t scratch_bytes;    /* one block's temporaries and the head's chunk */
} sl_segment_memory;

typedef struct sl_segment sl_segment;

/* lora may be NULL (no adapters) or must cover exactly [layer_begin, layer_end). */
int sl_segment_create(sl_segment **out, const sl_model *m, sl_lora *lora, const sl_segment_config *sc);
void sl_segment_free(sl_segment *s);

int sl_segment_forward(sl_segment *s, const sl_segment_input *b);
/* The output of the last forward, (B,T,C), for segments without the head. Valid until the
 * next forward. */
const float *sl_segment_output(const sl_segment *s);
/* The masked mean loss of the last forward (head only). */
float sl_segment_loss(const sl_segment *s);
/* Number of positions that counted in the last forward's loss. */
int sl_segment_loss_count(const sl_segment *s);

/* doutput (B,T,C): gradient of the output (NULL for the head segment, which starts from
 * the loss). dinput (B,T,C) receives (overwrites) the gradient of the input; NULL or
 * ignored for segments with the embedding. Adds the LoRA gradients into lora->grads. */
int sl_segment_backward(sl_segment *s, const float *doutput, float *dinput);

sl_segment_memory sl_segment_memory_use(const sl_segment *s);
const sl_segment_config *sl_segment_get_config(const sl_segment *s);

#endif
