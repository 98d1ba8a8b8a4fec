/* sampler.h: picking the next token from logits, exactly as llama2.c's run.c does it
 * (xorshift random numbers, temperature, top-p), so a seed gives the same text there and
 * here. Not for: the forward pass (segment.h) or text (data/tokenizer.h). */
#ifndef SPLITLLM_MODEL_SAMPLER_H
#define SPLITLLM_MODEL_SAMPLER_H

#include <stdint.h>

typedef struct {
    int vocab_size;
    float temperature; /* 0: greedy (argmax) */
    float top_p;       /* nucleus sampling when in (0,1); otherwise plain multinomial */
    uint64_t rng_state;
    struct sl_prob_index { float prob; int index; } *scratch; /* (vocab_size) for top-p */
} sl_sampler;

/* Fails (SL_EINVAL) on temperature < 0, top_p outside [0,1], or seed 0 with temperature > 0. */
int sl_sampler_init(sl_sampler *s, int vocab_size, float temperature, float top_p, uint64_t seed);
void sl_sampler_free(sl_sampler *s);
/* Picks a token from logits (vocab_size), which it may modify. */
int sl_sampler_sample(sl_sampler *s, float *logits);

#endif
