/* test_torch_reference.c: the engine against PyTorch. tests/reference/make_reference.py
 * builds the same tiny GPT-2 and Llama models from the project's model files, applies the
 * same LoRA and writes logits, loss, every LoRA gradient, and the adapters after 3 AdamW
 * steps; here the C engine recomputes them all and must match to a relative error of
 * 1e-4 (float32). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/lora.h"
#include "model/model.h"
#include "model/optim.h"
#include "model/segment.h"
#include "util/safetensors.h"

#define MAX_REL_ERR 1e-4
/* Entries much smaller than the tensor's largest are compared relative to that scale. */
#define SCALE_FLOOR 1e-2

typedef struct {
    double max_rel;
    const char *worst;
} report;

/* max |a - b| / max(|b|, SCALE_FLOOR * max|b|) over n entries */
static double rel_err(const float *a, const float *b, size_t n) {
    double scale = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / fmax(fabs(b[i]), fmax(SCALE_FLOOR * scale, 1e-30));
        if (d > worst) worst = d;
    }
    return worst;
}

static const float *f32(const sl_st_reader *r, const char *name, size_t numel) {
    const sl_st_tensor *t = sl_st_lookup(r, name);
    if (t == NULL) fail_msg("reference lacks tensor %s", name);
    assert_int_equal(t->t_dtype, SL_ST_F32);
    assert_int_equal(t->t_numel, numel);
    assert_true(t->t_aligned);
    return t->t_data;
}

static void note(report *rep, const char *what, double err) {
    static char names[64][128];
    static int next;
    if (err > rep->max_rel) {
        rep->max_rel = err;
        snprintf(names[next % 64], sizeof(names[0]), "%s", what);
        rep->worst = names[next % 64];
        next++;
    }
    if (!(err <= MAX_REL_ERR)) fail_msg("%s: relative error %.3g > %.1g", what, err, MAX_REL_ERR);
}

static void check_reference(const char *model_name) {
    char model_path[512], ref_path[512];
    snprintf(model_path, sizeof(model_path), "%s/tests/reference/%s.bin", SPLITLLM_SOURCE_DIR, model_name);
    snprintf(ref_path, sizeof(ref_path), "%s/tests/reference/%s_ref.safetensors", SPLITLLM_SOURCE_DIR, model_name);
    sl_model m;
    int rc = sl_model_load(&m, model_path);
    if (rc) fail_msg("%s", sl_last_error());
    sl_st_reader *ref;
    rc = sl_st_open(&ref, ref_path);
    if (rc) fail_msg("%s", sl_last_error());
    const sl_st_tensor *tok = sl_st_lookup(ref, "tokens");
    assert_non_null(tok);
    assert_int_equal(tok->t_ndim, 2);
    const int B = (int)tok->t_shape[0], T = (int)tok->t_shape[1], V = m.config.vocab_size;
    const int L = m.config.n_layers;
    const int *tokens = tok->t_data;
    const int *targets = sl_st_lookup(ref, "targets")->t_data;
    const uint8_t *mask = sl_st_lookup(ref, "mask")->t_data;

    sl_lora_config lc = {.rank = atoi(sl_st_metadata(ref, "rank")), .alpha = strtof(sl_st_metadata(ref, "alpha"), NULL)};
    assert_int_equal(sl_lora_parse_targets(sl_st_metadata(ref, "targets"), m.config.arch, &lc.targets), 0);
    sl_lora l;
    assert_int_equal(sl_lora_init(&l, &m.config, &lc, 0, L), 0);
    char name[128];
    for (int layer = 0; layer < L; layer++)
        for (int t = 0; t < SL_LORA_N_TARGETS; t++) {
            if (!(lc.targets & (1u << t))) continue;
            size_t na = (size_t)lc.rank * l.in_dim[t], nb = (size_t)l.out_dim[t] * lc.rank;
            snprintf(name, sizeof(name), "lora.%d.%s.A", layer, sl_lora_target_name(t));
            memcpy(sl_lora_A(&l, layer, t), f32(ref, name, na), na * sizeof(float));
            snprintf(name, sizeof(name), "lora.%d.%s.B", layer, sl_lora_target_name(t));
            memcpy(sl_lora_B(&l, layer, t), f32(ref, name, nb), nb * sizeof(float));
        }

    report rep = {0};
    float *logits = malloc(sizeof(float) * (size_t)B * T * V);
    sl_segment_config sc = {0, L, 1, 1, B, T};
    /* base model: no adapters */
    sl_segment *s;
    assert_int_equal(sl_segment_create(&s, &m, NULL, &sc), 0);
    sl_segment_input b = {.B = B, .T = T, .tokens = tokens, .targets = targets, .mask = mask, .logits = logits};
    assert_int_equal(sl_segment_forward(s, &b), 0);
    note(&rep, "logits_base", rel_err(logits, f32(ref, "logits_base", (size_t)B * T * V), (size_t)B * T * V));
    sl_segment_free(s);

    /* with adapters: logits, loss, gradients */
    assert_int_equal(sl_segment_create(&s, &m, &l, &sc), 0);
    b.want_grad = 1;
    assert_int_equal(sl_segment_forward(s, &b), 0);
    note(&rep, "logits", rel_err(logits, f32(ref, "logits", (size_t)B * T * V), (size_t)B * T * V));
    float loss = sl_segment_loss(s);
    note(&rep, "loss", rel_err(&loss, f32(ref, "loss", 1), 1));
    assert_int_equal(sl_segment_backward(s, NULL, NULL), 0);
    for (int layer = 0; layer < L; layer++)
        for (int t = 0; t < SL_LORA_N_TARGETS; t++) {
            if (!(lc.targets & (1u << t))) continue;
            size_t na = (size_t)lc.rank * l.in_dim[t], nb = (size_t)l.out_dim[t] * lc.rank;
            snprintf(name, sizeof(name), "grad.%d.%s.A", layer, sl_lora_target_name(t));
            note(&rep, name, rel_err(sl_lora_dA(&l, layer, t), f32(ref, name, na), na));
            snprintf(name, sizeof(name), "grad.%d.%s.B", layer, sl_lora_target_name(t));
            note(&rep, name, rel_err(sl_lora_dB(&l, layer, t), f32(ref, name, nb), nb));
        }

    /* 3 AdamW steps on the same batch (the first reuses the gradients above) */
    sl_adamw_config oc = sl_adamw_defaults();
    oc.lr = strtof(sl_st_metadata(ref, "lr"), NULL);
    oc.beta1 = strtof(sl_st_metadata(ref, "beta1"), NULL);
    oc.beta2 = strtof(sl_st_metadata(ref, "beta2"), NULL);
    oc.eps = strtof(sl_st_metadata(ref, "eps"), NULL);
    oc.weight_decay = strtof(sl_st_metadata(ref, "weight_decay"), NULL);
    sl_adamw opt;
    assert_int_equal(sl_adamw_init(&opt, &oc, l.n_params), 0);
    const float *losses = f32(ref, "losses", 3);
    for (int step = 0; step < 3; step++) {
        if (step > 0) {
            sl_lora_zero_grad(&l);
            assert_int_equal(sl_segment_forward(s, &b), 0);
            assert_int_equal(sl_segment_backward(s, NULL, NULL), 0);
        }
        float ls = sl_segment_loss(s);
        snprintf(name, sizeof(name), "losses[%d]", step);
        note(&rep, name, rel_err(&ls, &losses[step], 1));
        sl_adamw_update(&opt, l.params, l.grads, 1.0f);
    }
    for (int layer = 0; layer < L; layer++)
        for (int t = 0; t < SL_LORA_N_TARGETS; t++) {
            if (!(lc.targets & (1u << t))) continue;
            size_t na = (size_t)lc.rank * l.in_dim[t], nb = (size_t)l.out_dim[t] * lc.rank;
            snprintf(name, sizeof(name), "step3.%d.%s.A", layer, sl_lora_target_name(t));
            note(&rep, name, rel_err(sl_lora_A(&l, layer, t), f32(ref, name, na), na));
            snprintf(name, sizeof(name), "step3.%d.%s.B", layer, sl_lora_target_name(t));
            note(&rep, name, rel_err(sl_lora_B(&l, layer, t), f32(ref, name, nb), nb));
        }
    printf("%s: logits, loss, %d LoRA gradients and 3 AdamW steps match PyTorch; max rel err %.3g (%s)\n",
           model_name, 2 * L * __builtin_popcount(lc.targets), rep.max_rel, rep.worst);
    sl_adamw_free(&opt);
    sl_segment_free(s);
    free(logits);
    sl_lora_free(&l);
    sl_st_close(ref);
    sl_model_free(&m);
}

static void test_gpt2(void **state) {
    (void)state;
    check_reference("gpt2_tiny");
}
static void test_llama(void **state) {
    (void)state;
    check_reference("llama_tiny");
}
static void test_llama_tied(void **state) {
    (void)state;
    check_reference("llama_tiny_tied");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2),
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_llama_tied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
