/* sampler.c: see sampler.h. The arithmetic follows llama2.c's run.c step for step. */
#include "model/sampler.h"

#include <math.h>
#include <stdlib.h>

#include "util/common.h"

int sl_sampler_init(sl_sampler *s, int vocab_size, float temperature, float top_p, uint64_t seed) {
    if (!(temperature >= 0.0f)) return sl_fail(SL_EINVAL, "--temperature %g: expected >= 0", temperature);
    /* run.c silently turns a top-p outside [0,1] into 0.9; we refuse it instead. */
    if (!(top_p >= 0.0f && top_p <= 1.0f)) return sl_fail(SL_EINVAL, "--top-p %g: expected 0..1", top_p);
    /* xorshift from state 0 stays 0: every coin would be 0 (run.c takes seed 0 to mean the clock). */
    if (temperature > 0.0f && seed == 0)
        return sl_fail(SL_EINVAL, "--seed 0: sampling needs a non-zero seed (xorshift from 0 gives only zeros)");
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->top_p = top_p;
    s->rng_state = seed;
    s->scratch = sl_alloc((size_t)vocab_size * sizeof(*s->scratch));
    return s->scratch ? SL_OK : SL_ENOMEM;
}

void sl_sampler_free(sl_sampler *s) {
    sl_free(s->scratch);
    s->scratch = NULL;
}

static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float random_f32(uint64_t *state) { return (float)(random_u32(state) >> 8) / 16777216.0f; }

static int argmax(const float *p, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (p[i] > p[best]) best = i;
    return best;
}

static void softmax(float *x, int n) {
    float maxv = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > maxv) maxv = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - maxv);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

static int sample_mult(const float *p, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += p[i];
        if (coin < cdf) return i;
    }
    return n - 1;
}

static int compare_desc(const void *a, const void *b) {
    const struct sl_prob_index *x = a, *y = b;
    return x->prob > y->prob ? -1 : x->prob < y->prob ? 1 : 0;
}

static int sample_topp(const float *p, int n, float top_p, struct sl_prob_index *pi, float coin) {
    /* values smaller than (1 - top_p) / (n - 1) cannot be part of the nucleus */
    int n0 = 0;
    const float cutoff = (1.0f - top_p) / (float)(n - 1);
    for (int i = 0; i < n; i++)
        if (p[i] >= cutoff) {
            pi[n0].index = i;
            pi[n0].prob = p[i];
            n0++;
        }
    qsort(pi, (size_t)n0, sizeof(*pi), compare_desc);
    float cumulative = 0.0f;
    int last = n0 - 1;
    for (int i = 0; i < n0; i++) {
        cumulative += pi[i].prob;
        if (cumulative > top_p) {
            last = i;
            break;
        }
    }
    float r = coin * cumulative;
    float cdf = 0.0f;
    for (int i = 0; i <= last; i++) {
        cdf += pi[i].prob;
        if (r < cdf) return pi[i].index;
    }
    return pi[last].index;
}

int sl_sampler_sample(sl_sampler *s, float *logits) {
    if (s->temperature == 0.0f) return argmax(logits, s->vocab_size);
    for (int i = 0; i < s->vocab_size; i++) logits[i] /= s->temperature;
    softmax(logits, s->vocab_size);
    float coin = random_f32(&s->rng_state);
    if (s->top_p <= 0.0f || s->top_p >= 1.0f) return sample_mult(logits, s->vocab_size, coin);
    return sample_topp(logits, s->vocab_size, s->top_p, s->scratch, coin);
}
