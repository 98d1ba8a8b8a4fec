/* test_segment.c: the engine's model-level properties on tiny generated models of each
 * family — LoRA gradients against finite differences, one segment against three chained
 * segments (bitwise), B = 0 against the base model (bitwise), AdamW decreasing the loss,
 * and the frozen-weight promise (base weights untouched, mapped read-only). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/lora.h"
#include "model/model.h"
#include "model/optim.h"
#include "model/segment.h"

enum { TB = 2, TT = 9 };

typedef struct {
    char path[256];
    sl_model model;
    int tokens[TB * TT], targets[TB * TT];
    uint8_t mask[TB * TT];
} fixture;

static void make_fixture(fixture *f, sl_arch arch, int shared) {
    sl_config c;
    assert_int_equal(sl_config_preset(&c, arch, "tiny"), 0);
    c.n_layers = 4;
    c.dim = 32;
    c.n_heads = 4;
    c.n_kv_heads = arch == SL_ARCH_LLAMA ? 2 : 4;
    c.hidden_dim = arch == SL_ARCH_LLAMA ? 40 : 128;
    c.vocab_size = 37;
    c.padded_vocab_size = arch == SL_ARCH_GPT2 ? 40 : 37;
    c.max_seq = 16;
    c.shared_classifier = shared;
    snprintf(f->path, sizeof(f->path), "/tmp/splitllm_test_segment_%d_%d_%d.bin", (int)getpid(), (int)arch, shared);
    assert_int_equal(sl_model_write_random(&c, 7, f->path), 0);
    int rc = sl_model_load(&f->model, f->path);
    if (rc) fprintf(stderr, "%s\n", sl_last_error());
    assert_int_equal(rc, 0);
    sl_rng rng;
    sl_rng_init(&rng, 99, 1);
    for (int i = 0; i < TB * TT; i++) {
        f->tokens[i] = (int)(sl_rng_u64(&rng) % 37);
        f->targets[i] = (int)(sl_rng_u64(&rng) % 37);
        f->mask[i] = (i % 4) != 1;
    }
}

static void free_fixture(fixture *f) {
    sl_model_free(&f->model);
    unlink(f->path);
}

static sl_lora_config lora_config_all(sl_arch arch) {
    sl_lora_config lc = {.rank = 3, .alpha = 6.0f, .dropout = 0.0f, .seed = 5};
    assert_int_equal(sl_lora_parse_targets("all", arch, &lc.targets), 0);
    return lc;
}

/* B random so every gradient is nonzero. */
static void randomize_B(sl_lora *l, uint64_t seed) {
    sl_rng rng;
    sl_rng_init(&rng, seed, 3);
    for (int layer = l->layer_begin; layer < l->layer_end; layer++)
        for (int t = 0; t < SL_LORA_N_TARGETS; t++) {
            float *B = sl_lora_B(l, layer, t);
            if (B == NULL) continue;
            for (int i = 0; i < l->out_dim[t] * l->config.rank; i++) B[i] = 0.1f * sl_rng_normal(&rng);
        }
}

static sl_segment_input batch_of(fixture *f, int want_grad) {
    sl_segment_input b = {.B = TB, .T = TT, .tokens = f->tokens, .targets = f->targets, .mask = f->mask,
                  .want_grad = want_grad, .dropout_seed = 11};
    return b;
}

/* The training loss (want_grad: with the same dropout masks as the backward). */
static float loss_whole(fixture *f, sl_lora *l) {
    sl_segment_config sc = {0, f->model.config.n_layers, 1, 1, TB, TT};
    sl_segment *s;
    assert_int_equal(sl_segment_create(&s, &f->model, l, &sc), 0);
    sl_segment_input b = batch_of(f, 1);
    assert_int_equal(sl_segment_forward(s, &b), 0);
    float loss = sl_segment_loss(s);
    sl_segment_free(s);
    return loss;
}

/* Finite differences on a sample of every LoRA tensor's entries. */
static void check_lora_gradients(sl_arch arch, int shared, float dropout) {
    fixture f;
    make_fixture(&f, arch, shared);
    sl_lora_config lc = lora_config_all(arch);
    lc.dropout = dropout;
    sl_lora l;
    assert_int_equal(sl_lora_init(&l, &f.model.config, &lc, 0, f.model.config.n_layers), 0);
    randomize_B(&l, 1);
    sl_segment_config sc = {0, f.model.config.n_layers, 1, 1, TB, TT};
    sl_segment *s;
    assert_int_equal(sl_segment_create(&s, &f.model, &l, &sc), 0);
    sl_segment_input b = batch_of(&f, 1);
    assert_int_equal(sl_segment_forward(s, &b), 0);
    assert_int_equal(sl_segment_backward(s, NULL, NULL), 0);
    sl_segment_free(s);
    const float h = 2e-2f;
    double max_rel = 0.0;
    int checked = 0;
    sl_rng pick;
    sl_rng_init(&pick, 1234, 0);
    /* fewer samples under the sanitizers (SPLITLLM_TEST_QUICK), where a forward is ~10x slower */
    const size_t samples = getenv("SPLITLLM_TEST_QUICK") ? 60 : 300;
    for (size_t k = 0; k < samples; k++) {
        size_t i = (size_t)(sl_rng_u64(&pick) % l.n_params);
        /* Richardson extrapolation of central differences: error O(h^4) */
        float saved = l.params[i];
        double d[2];
        for (int k2 = 0; k2 < 2; k2++) {
            float hk = k2 == 0 ? h : h / 2;
            l.params[i] = saved + hk;
            double lp = loss_whole(&f, &l);
            l.params[i] = saved - hk;
            double lm = loss_whole(&f, &l);
            d[k2] = (lp - lm) / (2.0 * hk);
        }
        l.params[i] = saved;
        double num = (4.0 * d[1] - d[0]) / 3.0;
        double ana = l.grads[i];
        double err = fabs(num - ana);
        double rel = err / fmax(fabs(num), fabs(ana));
        if (fmax(fabs(num), fabs(ana)) > 1e-3 && rel > max_rel) max_rel = rel;
        if (err > 2e-3 + 2e-2 * fmax(fabs(num), fabs(ana)))
            fail_msg("%s param %zu: numeric %.6g analytic %.6g", sl_arch_name(arch), i, num, ana);
        checked++;
    }
    printf("%s%s dropout %.1f: %d LoRA entries, max rel err %.3g\n", sl_arch_name(arch), shared ? "" : " (separate head)",
           dropout, checked, max_rel);
    sl_lora_free(&l);
    free_fixture(&f);
}

static void test_lora_gradients_gpt2(void **state) {
    (void)state;
    check_lora_gradients(SL_ARCH_GPT2, 1, 0.0f);
}
static void test_lora_gradients_llama(void **state) {
    (void)state;
    check_lora_gradients(SL_ARCH_LLAMA, 0, 0.0f);
    check_lora_gradients(SL_ARCH_LLAMA, 1, 0.0f);
}
static void test_lora_gradients_dropout(void **state) {
    (void)state;
    check_lora_gradients(SL_ARCH_GPT2, 1, 0.25f);
}

/* One segment vs. three chained segments at several cut points: bitwise-identical loss and
 * LoRA gradients. */
static void check_split_equivalence(sl_arch arch) {
    fixture f;
    make_fixture(&f, arch, 1);
    const int L = f.model.config.n_layers, C = f.model.config.dim;
    sl_lora_config lc = lora_config_all(arch);
    sl_lora whole;
    assert_int_equal(sl_lora_init(&whole, &f.model.config, &lc, 0, L), 0);
    randomize_B(&whole, 2);
    sl_segment_config sc = {0, L, 1, 1, TB, TT};
    sl_segment *s;
    assert_int_equal(sl_segment_create(&s, &f.model, &whole, &sc), 0);
    sl_segment_input b = batch_of(&f, 1);
    assert_int_equal(sl_segment_forward(s, &b), 0);
    float loss_ref = sl_segment_loss(s);
    assert_int_equal(sl_segment_backward(s, NULL, NULL), 0);
    sl_segment_free(s);

    const int cuts[][2] = {{1, 3}, {0, 2}, {2, 4}, {0, 4}, {1, 2}, {4, 4}, {0, 0}};
    float *act = malloc(sizeof(float) * TB * TT * C), *grad = malloc(sizeof(float) * TB * TT * C);
    float *grad2 = malloc(sizeof(float) * TB * TT * C);
    for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
        const int c1 = cuts[k][0], c2 = cuts[k][1];
        sl_lora lu, le, lcl;
        assert_int_equal(sl_lora_init(&lu, &f.model.config, &lc, 0, c1), 0);
        assert_int_equal(sl_lora_init(&le, &f.model.config, &lc, c1, c2), 0);
        assert_int_equal(sl_lora_init(&lcl, &f.model.config, &lc, c2, L), 0);
        /* the tiers' adapters are slices of the whole one */
        memcpy(lu.params, whole.params, lu.n_params * sizeof(float));
        memcpy(le.params, whole.params + lu.n_params, le.n_params * sizeof(float));
        memcpy(lcl.params, whole.params + lu.n_params + le.n_params, lcl.n_params * sizeof(float));
        sl_segment_config su = {0, c1, 1, 0, TB, TT}, se = {c1, c2, 0, 0, TB, TT}, scl = {c2, L, 0, 1, TB, TT};
        sl_segment *user, *edge, *cloud;
        assert_int_equal(sl_segment_create(&user, &f.model, &lu, &su), 0);
        assert_int_equal(sl_segment_create(&edge, &f.model, &le, &se), 0);
        assert_int_equal(sl_segment_create(&cloud, &f.model, &lcl, &scl), 0);
        sl_segment_input bu = {.B = TB, .T = TT, .tokens = f.tokens, .want_grad = 1, .dropout_seed = 11};
        assert_int_equal(sl_segment_forward(user, &bu), 0);
        memcpy(act, sl_segment_output(user), sizeof(float) * TB * TT * C);
        sl_segment_input be = {.B = TB, .T = TT, .input = act, .want_grad = 1, .dropout_seed = 11};
        assert_int_equal(sl_segment_forward(edge, &be), 0);
        memcpy(act, sl_segment_output(edge), sizeof(float) * TB * TT * C);
        sl_segment_input bc = {.B = TB, .T = TT, .input = act, .targets = f.targets, .mask = f.mask, .want_grad = 1,
                       .dropout_seed = 11};
        assert_int_equal(sl_segment_forward(cloud, &bc), 0);
        float loss = sl_segment_loss(cloud);
        assert_int_equal(sl_segment_backward(cloud, NULL, grad), 0);
        assert_int_equal(sl_segment_backward(edge, grad, grad2), 0);
        assert_int_equal(sl_segment_backward(user, grad2, NULL), 0);
        assert_memory_equal(&loss, &loss_ref, sizeof(float));
        assert_memory_equal(lu.grads, whole.grads, lu.n_params * sizeof(float));
        assert_memory_equal(le.grads, whole.grads + lu.n_params, le.n_params * sizeof(float));
        assert_memory_equal(lcl.grads, whole.grads + lu.n_params + le.n_params, lcl.n_params * sizeof(float));
        sl_segment_free(user);
        sl_segment_free(edge);
        sl_segment_free(cloud);
        sl_lora_free(&lu);
        sl_lora_free(&le);
        sl_lora_free(&lcl);
    }
    free(act);
    free(grad);
    free(grad2);
    sl_lora_free(&whole);
    free_fixture(&f);
}

static void test_split_equivalence_gpt2(void **state) {
    (void)state;
    check_split_equivalence(SL_ARCH_GPT2);
}
static void test_split_equivalence_llama(void **state) {
    (void)state;
    check_split_equivalence(SL_ARCH_LLAMA);
}

/* A fresh adapter (B = 0) leaves the logits exactly those of the base model. */
static void check_zero_B(sl_arch arch) {
    fixture f;
    make_fixture(&f, arch, 0 /* llama: separate head; gpt2 ignores */);
    const int L = f.model.config.n_layers, V = f.model.config.vocab_size;
    sl_lora_config lc = lora_config_all(arch);
    sl_lora l;
    assert_int_equal(sl_lora_init(&l, &f.model.config, &lc, 0, L), 0);
    float *logits_base = malloc(sizeof(float) * TB * TT * V), *logits_lora = malloc(sizeof(float) * TB * TT * V);
    sl_segment_config sc = {0, L, 1, 1, TB, TT};
    sl_segment *s;
    assert_int_equal(sl_segment_create(&s, &f.model, NULL, &sc), 0);
    sl_segment_input b = batch_of(&f, 0);
    b.logits = logits_base;
    assert_int_equal(sl_segment_forward(s, &b), 0);
    sl_segment_free(s);
    assert_int_equal(sl_segment_create(&s, &f.model, &l, &sc), 0);
    b.logits = logits_lora;
    assert_int_equal(sl_segment_forward(s, &b), 0);
    sl_segment_free(s);
    assert_memory_equal(logits_base, logits_lora, sizeof(float) * TB * TT * V);
    /* and an adapter with B != 0 does change them (the comparison can fail) */
    randomize_B(&l, 3);
    assert_int_equal(sl_segment_create(&s, &f.model, &l, &sc), 0);
    assert_int_equal(sl_segment_forward(s, &b), 0);
    sl_segment_free(s);
    assert_true(memcmp(logits_base, logits_lora, sizeof(float) * TB * TT * V) != 0);
    free(logits_base);
    free(logits_lora);
    sl_lora_free(&l);
    free_fixture(&f);
}

static void test_zero_B_gpt2(void **state) {
    (void)state;
    check_zero_B(SL_ARCH_GPT2);
}
static void test_zero_B_llama(void **state) {
    (void)state;
    check_zero_B(SL_ARCH_LLAMA);
}

/* AdamW steps on one batch lower its loss; the base weights are unchanged. */
static void test_training_lowers_loss(void **state) {
    (void)state;
    fixture f;
    make_fixture(&f, SL_ARCH_LLAMA, 1);
    const int L = f.model.config.n_layers;
    size_t weight_bytes = f.model.file.m_bytes;
    unsigned char *before = malloc(weight_bytes);
    memcpy(before, f.model.file.m_data, weight_bytes);
    sl_lora_config lc = lora_config_all(SL_ARCH_LLAMA);
    sl_lora l;
    assert_int_equal(sl_lora_init(&l, &f.model.config, &lc, 0, L), 0);
    sl_adamw_config oc = sl_adamw_defaults();
    oc.lr = 1e-2f;
    oc.grad_clip = 1.0f;
    sl_adamw opt;
    assert_int_equal(sl_adamw_init(&opt, &oc, l.n_params), 0);
    sl_segment_config sc = {0, L, 1, 1, TB, TT};
    sl_segment *s;
    assert_int_equal(sl_segment_create(&s, &f.model, &l, &sc), 0);
    float first = 0.0f, last = 0.0f;
    for (int step = 0; step < 30; step++) {
        sl_segment_input b = batch_of(&f, 1);
        sl_lora_zero_grad(&l);
        assert_int_equal(sl_segment_forward(s, &b), 0);
        assert_int_equal(sl_segment_backward(s, NULL, NULL), 0);
        float scale = sl_clip_scale(&oc, sl_sum_squares(l.grads, l.n_params));
        assert_true(scale <= 1.0f);
        sl_adamw_update(&opt, l.params, l.grads, scale);
        if (step == 0) first = sl_segment_loss(s);
        last = sl_segment_loss(s);
    }
    printf("loss %.4f -> %.4f after 30 AdamW steps\n", first, last);
    /* uniform guessing is ln(37) = 3.61; the adapters must memorise part of the batch */
    assert_true(last < 0.9f * first);
    assert_memory_equal(before, f.model.file.m_data, weight_bytes);
    sl_segment_free(s);
    sl_adamw_free(&opt);
    sl_lora_free(&l);
    free(before);
    free_fixture(&f);
}

/* Evaluation (want_grad 0) applies no dropout: the same as an adapter without dropout;
 * training (want_grad 1) does, so its loss differs. */
static void test_eval_has_no_dropout(void **state) {
    (void)state;
    fixture f;
    make_fixture(&f, SL_ARCH_GPT2, 1);
    const int L = f.model.config.n_layers;
    sl_lora_config lc = lora_config_all(SL_ARCH_GPT2);
    sl_lora plain, dropped;
    assert_int_equal(sl_lora_init(&plain, &f.model.config, &lc, 0, L), 0);
    lc.dropout = 0.5f;
    assert_int_equal(sl_lora_init(&dropped, &f.model.config, &lc, 0, L), 0);
    randomize_B(&plain, 4);
    memcpy(dropped.params, plain.params, plain.n_params * sizeof(float));
    sl_segment_config sc = {0, L, 1, 1, TB, TT};
    sl_segment *s1, *s2;
    assert_int_equal(sl_segment_create(&s1, &f.model, &plain, &sc), 0);
    assert_int_equal(sl_segment_create(&s2, &f.model, &dropped, &sc), 0);
    sl_segment_input b = batch_of(&f, 0);
    assert_int_equal(sl_segment_forward(s1, &b), 0);
    assert_int_equal(sl_segment_forward(s2, &b), 0);
    float a = sl_segment_loss(s1), c = sl_segment_loss(s2);
    assert_memory_equal(&a, &c, sizeof(float));
    b.want_grad = 1;
    assert_int_equal(sl_segment_forward(s2, &b), 0);
    c = sl_segment_loss(s2);
    assert_true(c != a);
    sl_segment_free(s1);
    sl_segment_free(s2);
    sl_lora_free(&plain);
    sl_lora_free(&dropped);
    free_fixture(&f);
}

/* A backward without a forward, or a batch larger than planned, is an error, not a crash. */
static void test_misuse_is_an_error(void **state) {
    (void)state;
    fixture f;
    make_fixture(&f, SL_ARCH_GPT2, 1);
    sl_segment_config sc = {0, 2, 1, 0, TB, TT};
    sl_segment *s;
    assert_int_equal(sl_segment_create(&s, &f.model, NULL, &sc), 0);
    assert_int_equal(sl_segment_backward(s, NULL, NULL), SL_ESTATE);
    sl_segment_input b = batch_of(&f, 1);
    b.B = TB + 1;
    assert_int_equal(sl_segment_forward(s, &b), SL_EINVAL);
    b.B = TB;
    f.tokens[3] = 999;
    assert_int_equal(sl_segment_forward(s, &b), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "999"));
    sl_segment_free(s);
    sl_segment_config bad = {1, 2, 1, 0, TB, TT};
    assert_int_equal(sl_segment_create(&s, &f.model, NULL, &bad), SL_EINVAL);
    free_fixture(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lora_gradients_gpt2),   cmocka_unit_test(test_lora_gradients_llama),
        cmocka_unit_test(test_lora_gradients_dropout), cmocka_unit_test(test_split_equivalence_gpt2),
        cmocka_unit_test(test_split_equivalence_llama), cmocka_unit_test(test_zero_B_gpt2),
        cmocka_unit_test(test_zero_B_llama),           cmocka_unit_test(test_training_lowers_loss),
        cmocka_unit_test(test_misuse_is_an_error),    cmocka_unit_test(test_eval_has_no_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
