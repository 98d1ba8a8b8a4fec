/* test_model_part.c: model part files (model/part.h) — the user, edge and cloud parts of a
 * tiny GPT-2 and a tiny Llama (tied and separate head) run as three chained segments and
 * give bitwise the loss and LoRA gradients of one segment over the whole model file; a
 * segment a part does not cover is refused; a part holds exactly its tensors (file sizes);
 * corrupt parts are rejected naming the tensor or field; stories260K's parts reproduce its
 * logits bitwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/lora.h"
#include "model/model.h"
#include "model/part.h"
#include "model/segment.h"
#include "test_util.h"
#include "util/safetensors.h"

enum { TB = 2, TT = 9, NV = 37 };

typedef struct {
    char dir[256];
    char full[300], user[300], edge[300], cloud[300];
    sl_config config;
    sl_model model; /* the whole file */
    int tokens[TB * TT], targets[TB * TT];
    uint8_t mask[TB * TT];
} fixture;

static void make_fixture(fixture *f, sl_arch arch, int shared) {
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/splitllm_test_model_part_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->full, sizeof(f->full), "%s/full.bin", f->dir);
    snprintf(f->user, sizeof(f->user), "%s/user.safetensors", f->dir);
    snprintf(f->edge, sizeof(f->edge), "%s/edge.safetensors", f->dir);
    snprintf(f->cloud, sizeof(f->cloud), "%s/cloud.safetensors", f->dir);
    sl_config *c = &f->config;
    assert_int_equal(sl_config_preset(c, arch, "tiny"), 0);
    c->n_layers = 4;
    c->dim = 32;
    c->n_heads = 4;
    c->n_kv_heads = arch == SL_ARCH_LLAMA ? 2 : 4;
    c->hidden_dim = arch == SL_ARCH_LLAMA ? 40 : 128;
    c->vocab_size = NV;
    c->padded_vocab_size = arch == SL_ARCH_GPT2 ? 40 : NV;
    c->max_seq = 16;
    c->shared_classifier = shared;
    assert_int_equal(sl_model_write_random(c, 7, f->full), 0);
    int rc = sl_model_load(&f->model, f->full);
    if (rc) fprintf(stderr, "%s\n", sl_last_error());
    assert_int_equal(rc, 0);
    sl_rng rng;
    sl_rng_init(&rng, 99, 1);
    for (int i = 0; i < TB * TT; i++) {
        f->tokens[i] = (int)(sl_rng_u64(&rng) % NV);
        f->targets[i] = (int)(sl_rng_u64(&rng) % NV);
        f->mask[i] = (i % 4) != 1;
    }
}

/* The three parts at (c1, c2). */
static void write_parts(fixture *f, const sl_model *m, int c1, int c2) {
    const int L = m->config.n_layers;
    int rc = sl_model_write_part(m, 0, c1, 1, 0, f->user);
    if (rc == 0) rc = sl_model_write_part(m, c1, c2, 0, 0, f->edge);
    if (rc == 0) rc = sl_model_write_part(m, c2, L, 0, 1, f->cloud);
    if (rc) fprintf(stderr, "%s\n", sl_last_error());
    assert_int_equal(rc, 0);
}

static void load_ok(sl_model *m, const char *path) {
    int rc = sl_model_load(m, path);
    if (rc) fprintf(stderr, "%s\n", sl_last_error());
    assert_int_equal(rc, 0);
}

static void free_fixture(fixture *f) {
    sl_model_free(&f->model);
    const char *files[] = {f->full, f->user, f->edge, f->cloud};
    for (int i = 0; i < 4; i++) unlink(files[i]);
    char other[320];
    snprintf(other, sizeof(other), "%s/bad.safetensors", f->dir);
    unlink(other);
    snprintf(other, sizeof(other), "%s/sub.safetensors", f->dir);
    unlink(other);
    assert_int_equal(rmdir(f->dir), 0);
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

static void expect_error(int rc, int want_rc, const char *a, const char *b) {
    const char *msg = sl_last_error();
    if (rc != want_rc || (a && strstr(msg, a) == NULL) || (b && strstr(msg, b) == NULL))
        fail_msg("rc %d (expected %d), message '%s' (expected to contain '%s' and '%s')", rc, want_rc, msg,
                 a ? a : "", b ? b : "");
}

/* ---------------------------------------------------------------- bitwise equivalence */

static void check_parts_equivalence(sl_arch arch, int shared) {
    fixture f;
    make_fixture(&f, arch, shared);
    const int L = 4, C = f.config.dim, c1 = 1, c2 = 3;
    sl_lora_config lc = lora_config_all(arch);
    sl_lora whole;
    assert_int_equal(sl_lora_init(&whole, &f.model.config, &lc, 0, L), 0);
    randomize_B(&whole, 2);
    sl_segment_config sc = {0, L, 1, 1, TB, TT};
    sl_segment *s;
    assert_int_equal(sl_segment_create(&s, &f.model, &whole, &sc), 0);
    sl_segment_input b = {.B = TB, .T = TT, .tokens = f.tokens, .targets = f.targets, .mask = f.mask,
                          .want_grad = 1, .dropout_seed = 11};
    assert_int_equal(sl_segment_forward(s, &b), 0);
    const float loss_ref = sl_segment_loss(s);
    assert_int_equal(sl_segment_backward(s, NULL, NULL), 0);
    sl_segment_free(s);

    write_parts(&f, &f.model, c1, c2);
    sl_model mu, me, mc;
    load_ok(&mu, f.user);
    load_ok(&me, f.edge);
    load_ok(&mc, f.cloud);
    /* what each holds */
    assert_memory_equal(&mu.config, &f.model.config, sizeof(sl_config));
    assert_memory_equal(&me.config, &f.model.config, sizeof(sl_config));
    assert_memory_equal(&mc.config, &f.model.config, sizeof(sl_config));
    assert_int_equal(f.model.part_layer_begin, 0);
    assert_int_equal(f.model.part_layer_end, L);
    assert_true(f.model.part_has_embedding && f.model.part_has_head);
    assert_int_equal(mu.part_layer_begin, 0);
    assert_int_equal(mu.part_layer_end, c1);
    assert_true(mu.part_has_embedding && !mu.part_has_head);
    assert_int_equal(me.part_layer_begin, c1);
    assert_int_equal(me.part_layer_end, c2);
    assert_true(!me.part_has_embedding && !me.part_has_head);
    assert_int_equal(mc.part_layer_begin, c2);
    assert_int_equal(mc.part_layer_end, L);
    assert_true(!mc.part_has_embedding && mc.part_has_head);
    assert_non_null(mu.tok_emb);
    assert_null(mu.classifier);
    assert_null(mu.final_norm_w);
    assert_null(mu.layers[c1].wq);
    assert_null(me.tok_emb);
    assert_null(me.pos_emb);
    assert_null(me.classifier);
    assert_null(me.layers[0].wq);
    assert_null(me.layers[c2].norm1_w);
    assert_non_null(me.layers[c1].w_down);
    assert_null(mc.tok_emb);
    assert_null(mc.layers[c2 - 1].wo);
    assert_non_null(mc.classifier);
    assert_non_null(mc.final_norm_w);
    if (arch == SL_ARCH_GPT2) {
        assert_non_null(mu.pos_emb);
        assert_non_null(mc.final_norm_b);
        assert_non_null(me.layers[c1].bq);
    } else {
        assert_null(mu.pos_emb);
        assert_non_null(mu.rope_cos);
        assert_non_null(me.layers[c1].w_gate);
        assert_null(me.layers[c1].bq);
    }
    /* the cloud's classifier is the head the whole model uses (tied: the embedding's first V rows) */
    assert_memory_equal(mc.classifier, f.model.classifier, sizeof(float) * NV * C);
    assert_memory_equal(mu.tok_emb, f.model.tok_emb, sizeof(float) * f.config.padded_vocab_size * C);

    sl_lora lu, le, lcl;
    assert_int_equal(sl_lora_init(&lu, &mu.config, &lc, 0, c1), 0);
    assert_int_equal(sl_lora_init(&le, &me.config, &lc, c1, c2), 0);
    assert_int_equal(sl_lora_init(&lcl, &mc.config, &lc, c2, L), 0);
    memcpy(lu.params, whole.params, lu.n_params * sizeof(float));
    memcpy(le.params, whole.params + lu.n_params, le.n_params * sizeof(float));
    memcpy(lcl.params, whole.params + lu.n_params + le.n_params, lcl.n_params * sizeof(float));
    sl_segment_config su = {0, c1, 1, 0, TB, TT}, se = {c1, c2, 0, 0, TB, TT}, scl = {c2, L, 0, 1, TB, TT};
    sl_segment *user, *edge, *cloud;
    assert_int_equal(sl_segment_create(&user, &mu, &lu, &su), 0);
    assert_int_equal(sl_segment_create(&edge, &me, &le, &se), 0);
    assert_int_equal(sl_segment_create(&cloud, &mc, &lcl, &scl), 0);
    float *act = malloc(sizeof(float) * TB * TT * C), *grad = malloc(sizeof(float) * TB * TT * C);
    float *grad2 = malloc(sizeof(float) * TB * TT * C);
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
    printf("%s%s: parts [0,%d)+emb, [%d,%d), [%d,%d)+head: loss %.7f and %zu LoRA gradients bitwise equal\n",
           sl_arch_name(arch), shared ? "" : " (separate head)", c1, c1, c2, c2, L, loss, whole.n_params);

    /* a part cut from a part is the same part */
    char sub[320];
    snprintf(sub, sizeof(sub), "%s/sub.safetensors", f.dir);
    assert_int_equal(sl_model_write_part(&me, c1, c2, 0, 0, sub), 0);
    struct stat s1, s2;
    assert_int_equal(stat(sub, &s1), 0);
    assert_int_equal(stat(f.edge, &s2), 0);
    assert_int_equal(s1.st_size, s2.st_size);
    sl_model msub;
    load_ok(&msub, sub);
    assert_memory_equal(msub.layers[c1].wq, me.layers[c1].wq, sizeof(float) * C * C);
    sl_model_free(&msub);

    sl_segment_free(user);
    sl_segment_free(edge);
    sl_segment_free(cloud);
    sl_lora_free(&lu);
    sl_lora_free(&le);
    sl_lora_free(&lcl);
    sl_lora_free(&whole);
    free(act);
    free(grad);
    free(grad2);
    sl_model_free(&mu);
    sl_model_free(&me);
    sl_model_free(&mc);
    free_fixture(&f);
}

static void test_equivalence_gpt2(void **state) {
    (void)state;
    check_parts_equivalence(SL_ARCH_GPT2, 1);
}
static void test_equivalence_llama(void **state) {
    (void)state;
    check_parts_equivalence(SL_ARCH_LLAMA, 1);
}
static void test_equivalence_llama_separate_head(void **state) {
    (void)state;
    check_parts_equivalence(SL_ARCH_LLAMA, 0);
}

/* ---------------------------------------------------------------- coverage */

static void test_segment_refused(void **state) {
    (void)state;
    fixture f;
    make_fixture(&f, SL_ARCH_GPT2, 1);
    write_parts(&f, &f.model, 1, 3);
    sl_model mu, me, mc;
    load_ok(&mu, f.user);
    load_ok(&me, f.edge);
    load_ok(&mc, f.cloud);
    sl_segment *s = NULL;
    sl_segment_config whole = {0, 4, 1, 1, TB, TT}, edge_wide = {1, 4, 0, 0, TB, TT}, cloud = {3, 4, 0, 1, TB, TT};
    sl_segment_config user = {0, 1, 1, 0, TB, TT}, user_no_emb = {0, 1, 0, 0, TB, TT};
    expect_error(sl_segment_create(&s, &me, NULL, &whole), SL_EINVAL, "edge.safetensors holds blocks [1,3) without "
                 "the embedding or the head", "the segment needs blocks [0,4) with the embedding and the head");
    assert_null(s);
    expect_error(sl_segment_create(&s, &me, NULL, &edge_wide), SL_EINVAL, "holds blocks [1,3)",
                 "needs blocks [1,4)");
    expect_error(sl_segment_create(&s, &mu, NULL, &cloud), SL_EINVAL,
                 "user.safetensors holds blocks [0,1) with the embedding, without the head",
                 "needs blocks [3,4) with the head");
    expect_error(sl_segment_create(&s, &mc, NULL, &user), SL_EINVAL,
                 "cloud.safetensors holds blocks [3,4) without the embedding, with the head",
                 "needs blocks [0,1) with the embedding");
    /* what a part covers is fine, also without its embedding */
    assert_int_equal(sl_segment_create(&s, &mu, NULL, &user_no_emb), 0);
    sl_segment_free(s);
    assert_int_equal(sl_model_check_covers(&mc, 4, 4, 0, 1), 0);
    assert_int_equal(sl_model_check_covers(&me, 2, 3, 0, 0), 0);
    /* a whole model covers every valid range, not an invalid one */
    assert_int_equal(sl_model_check_covers(&f.model, 0, 4, 1, 1), 0);
    assert_int_equal(sl_model_check_covers(&f.model, 2, 2, 0, 0), 0);
    expect_error(sl_model_check_covers(&f.model, 2, 5, 0, 0), SL_EINVAL, "blocks [2,5) are outside the model's 4 blocks", "full.bin");
    expect_error(sl_model_check_covers(&f.model, 3, 2, 0, 0), SL_EINVAL, "[3,2)", NULL);
    /* writing a part the source does not cover, or an ill-formed one */
    char bad[320];
    snprintf(bad, sizeof(bad), "%s/bad.safetensors", f.dir);
    expect_error(sl_model_write_part(&me, 0, 3, 0, 0, bad), SL_EINVAL, "cannot cut blocks [0,3)",
                 "which holds blocks [1,3)");
    expect_error(sl_model_write_part(&f.model, 1, 3, 1, 0, bad), SL_EINVAL, "embedding must start at block 0", NULL);
    expect_error(sl_model_write_part(&f.model, 1, 3, 0, 1, bad), SL_EINVAL, "head must end at block 4", NULL);
    expect_error(sl_model_write_part(&f.model, 1, 5, 0, 0, bad), SL_EINVAL, "outside the model's 4 blocks", NULL);
    assert_int_equal(access(bad, F_OK), -1);
    sl_model_free(&mu);
    sl_model_free(&me);
    sl_model_free(&mc);
    free_fixture(&f);
}

/* ---------------------------------------------------------------- sizes */

static size_t file_size(const char *path) {
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (size_t)st.st_size;
}

/* Bytes of a safetensors file's data area (the file less the 8-byte prefix and the header). */
static size_t data_bytes(const char *path, size_t *header) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    uint64_t n = 0;
    assert_int_equal(fread(&n, sizeof(n), 1, fp), 1);
    fclose(fp);
    *header = 8 + (size_t)n;
    return file_size(path) - *header;
}

static void check_sizes(sl_arch arch, int shared) {
    fixture f;
    make_fixture(&f, arch, shared);
    const sl_config *c = &f.config;
    const size_t L = 4, C = (size_t)c->dim, H = (size_t)c->hidden_dim, KV = (size_t)sl_config_kv_dim(c);
    const size_t V = NV, Vp = (size_t)c->padded_vocab_size, T = (size_t)c->max_seq, hs = C / (size_t)c->n_heads;
    const int gpt2 = arch == SL_ARCH_GPT2;
    /* one block's floats, counted from the architecture (not from the code under test) */
    const size_t block = gpt2 ? 2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + H * C + H + C * H + C
                              : C + C * C + 2 * KV * C + C * C + C + 3 * H * C;
    const size_t emb = gpt2 ? Vp * C + T * C : V * C;
    const size_t head = gpt2 ? 2 * C + V * C : C + V * C;
    write_parts(&f, &f.model, 1, 3);
    size_t hu, he, hc;
    assert_int_equal(data_bytes(f.user, &hu), 4 * (emb + block));
    assert_int_equal(data_bytes(f.edge, &he), 4 * (2 * block));
    assert_int_equal(data_bytes(f.cloud, &hc), 4 * (block + head));
    /* the whole file: its header, the embedding, L blocks, the head (tied: none stored), and
     * for llama2.c the unused freq_cis tables */
    const size_t full_hdr = gpt2 ? 256 * 4 : 7 * 4;
    const size_t full_floats = emb + L * block + (gpt2 ? 2 * C : C + T * hs + (shared ? 0 : V * C));
    const size_t full = file_size(f.full);
    assert_int_equal(full, full_hdr + 4 * full_floats);
    /* the edge part is smaller than the whole file by the other blocks, embedding and head,
     * give or take the headers */
    const size_t edge = file_size(f.edge);
    const size_t expect_diff = 4 * (full_floats - 2 * block);
    assert_true(edge < full);
    const long off = (long)(full - edge) - (long)expect_diff;
    assert_true(off <= (long)full_hdr && off >= -(long)he);
    assert_true(he < 4096);
    printf("%s%s: whole %zu B; user %zu B, edge %zu B (%.1f%% of the whole; headers %zu, %zu, %zu B), cloud %zu B\n",
           sl_arch_name(arch), shared ? "" : " (separate head)", full, file_size(f.user), edge,
           100.0 * (double)edge / (double)full, hu, he, hc, file_size(f.cloud));
    free_fixture(&f);
}

static void test_sizes(void **state) {
    (void)state;
    check_sizes(SL_ARCH_GPT2, 1);
    check_sizes(SL_ARCH_LLAMA, 1);
    check_sizes(SL_ARCH_LLAMA, 0);
}

/* ---------------------------------------------------------------- corrupt parts */

typedef struct {
    const char *drop;       /* tensor left out */
    const char *reshape;    /* tensor whose last dimension is cut by one */
    const char *f16;        /* tensor stored as F16 (same shape, half the bytes) */
    const char *extra;      /* tensor added (a copy of the first one) */
    const char *meta_key;   /* metadata replaced (or removed when meta_value is NULL) */
    const char *meta_value;
} corruption;

/* Copies src to dst through the reader and writer, applying x. */
static void rewrite(const char *src, const char *dst, const corruption *x) {
    sl_st_reader *r;
    assert_int_equal(sl_st_open(&r, src), 0);
    sl_st_writer *w;
    assert_int_equal(sl_st_writer_create(&w), 0);
    for (size_t i = 0; i < sl_st_count(r); i++) {
        const sl_st_tensor *t = sl_st_tensor_at(r, i);
        if (x->drop && strcmp(t->t_name, x->drop) == 0) continue;
        int64_t shape[SL_ST_MAX_DIMS];
        memcpy(shape, t->t_shape, sizeof(shape));
        sl_st_dtype dtype = t->t_dtype;
        if (x->reshape && strcmp(t->t_name, x->reshape) == 0) shape[t->t_ndim - 1] -= 1;
        if (x->f16 && strcmp(t->t_name, x->f16) == 0) dtype = SL_ST_F16;
        assert_int_equal(sl_st_writer_add(w, t->t_name, dtype, t->t_ndim, shape, t->t_data), 0);
    }
    if (x->extra) {
        const sl_st_tensor *t = sl_st_tensor_at(r, 0);
        assert_int_equal(sl_st_writer_add(w, x->extra, t->t_dtype, t->t_ndim, t->t_shape, t->t_data), 0);
    }
    for (size_t i = 0; i < sl_st_metadata_count(r); i++) {
        const char *k, *v;
        sl_st_metadata_at(r, i, &k, &v);
        if (x->meta_key && strcmp(k, x->meta_key) == 0) {
            if (x->meta_value == NULL) continue;
            v = x->meta_value;
        }
        assert_int_equal(sl_st_writer_set_metadata(w, k, v), 0);
    }
    assert_int_equal(sl_st_writer_write(w, dst), 0);
    sl_st_writer_free(w);
    sl_st_close(r);
}

static void expect_rejected(const char *src, const char *bad, const corruption *x, const char *a, const char *b) {
    rewrite(src, bad, x);
    sl_model m;
    int rc = sl_model_load(&m, bad);
    expect_error(rc, SL_EFORMAT, a, b);
    assert_null(m.layers);
    assert_null(m.part_reader);
    assert_null(m.file.m_data);
}

static void test_corrupt_parts(void **state) {
    (void)state;
    fixture f;
    make_fixture(&f, SL_ARCH_GPT2, 1);
    write_parts(&f, &f.model, 1, 3);
    char bad[320];
    snprintf(bad, sizeof(bad), "%s/bad.safetensors", f.dir);
    /* an unchanged copy loads */
    corruption none = {0};
    rewrite(f.edge, bad, &none);
    sl_model m;
    load_ok(&m, bad);
    sl_model_free(&m);

    corruption missing = {.drop = "blocks.2.wk"};
    expect_rejected(f.edge, bad, &missing, "bad.safetensors: tensor 'blocks.2.wk' is missing",
                    "metadata says it holds blocks [1,3)");
    corruption no_head = {.drop = "classifier"};
    expect_rejected(f.cloud, bad, &no_head, "tensor 'classifier' is missing", "with the head");
    corruption no_pos = {.drop = "pos_emb"};
    expect_rejected(f.user, bad, &no_pos, "tensor 'pos_emb' is missing", "with the embedding");
    corruption shape = {.reshape = "blocks.1.w_up"};
    expect_rejected(f.edge, bad, &shape, "tensor 'blocks.1.w_up': expected dtype F32 shape [128, 32]",
                    "found dtype F32 shape [128, 31]");
    corruption dtype = {.f16 = "blocks.1.wq"};
    expect_rejected(f.edge, bad, &dtype, "tensor 'blocks.1.wq': expected dtype F32", "found dtype F16 shape [32, 32]");
    /* metadata claiming a range the tensors do not have */
    corruption longer = {.meta_key = "layer_end", .meta_value = "4"};
    expect_rejected(f.edge, bad, &longer, "tensor 'blocks.3.norm1_w' is missing", "holds blocks [1,4)");
    corruption earlier = {.meta_key = "layer_begin", .meta_value = "0"};
    expect_rejected(f.edge, bad, &earlier, "tensor 'blocks.0.norm1_w' is missing", NULL);
    corruption shorter = {.meta_key = "layer_begin", .meta_value = "2"};
    expect_rejected(f.edge, bad, &shorter, "tensor 'blocks.1.", "does not belong in this part");
    corruption emb = {.meta_key = "has_embedding", .meta_value = "1"};
    expect_rejected(f.edge, bad, &emb, "has the embedding but starts at block 1", NULL);
    corruption head_claim = {.meta_key = "has_head", .meta_value = "1"};
    expect_rejected(f.user, bad, &head_claim, "has the head but ends at block 1, expected 4", NULL);
    corruption extra = {.extra = "blocks.3.wq"};
    expect_rejected(f.edge, bad, &extra, "tensor 'blocks.3.wq' does not belong", "blocks [1,3)");
    corruption extra_emb = {.extra = "tok_emb"};
    expect_rejected(f.edge, bad, &extra_emb, "tensor 'tok_emb' does not belong", NULL);
    /* metadata itself */
    corruption dim = {.meta_key = "dim", .meta_value = "16"};
    expect_rejected(f.edge, bad, &dim, "tensor 'blocks.1.norm1_w': expected dtype F32 shape [16]", "shape [32]");
    corruption dim_text = {.meta_key = "dim", .meta_value = "32x"};
    expect_rejected(f.edge, bad, &dim_text, "metadata 'dim' = '32x', expected an integer", NULL);
    corruption no_heads = {.meta_key = "n_heads", .meta_value = NULL};
    expect_rejected(f.edge, bad, &no_heads, "metadata 'n_heads' is missing", NULL);
    corruption heads = {.meta_key = "n_heads", .meta_value = "5"};
    expect_rejected(f.edge, bad, &heads, "dim 32 is not a multiple of n_heads 5", NULL);
    corruption range = {.meta_key = "layer_end", .meta_value = "9"};
    expect_rejected(f.edge, bad, &range, "metadata 'layer_end' = 9, expected a value in [1, 4]", NULL);
    corruption version = {.meta_key = "version", .meta_value = "2"};
    expect_rejected(f.edge, bad, &version, "metadata 'version' = '2', expected '1'", NULL);
    corruption arch = {.meta_key = "arch", .meta_value = "mamba"};
    expect_rejected(f.edge, bad, &arch, "metadata 'arch' = 'mamba', expected gpt2 or llama", NULL);
    /* another safetensors file is not taken for a part; the message says what it was */
    corruption format = {.meta_key = "format", .meta_value = "pt"};
    expect_rejected(f.edge, bad, &format, "bad.safetensors", "metadata 'format' is 'pt', not 'splitllm-part'");
    corruption no_format = {.meta_key = "format", .meta_value = NULL};
    expect_rejected(f.edge, bad, &no_format, "metadata 'format' is missing", NULL);
    /* a truncated part: not a valid safetensors file, nor any other format; the message says both */
    {
        char *bytes;
        size_t n;
        assert_int_equal(sl_read_file(f.edge, &bytes, &n), 0);
        FILE *fp = fopen(bad, "wb");
        assert_non_null(fp);
        assert_int_equal(fwrite(bytes, 1, n - 4, fp), n - 4);
        fclose(fp);
        sl_free(bytes);
        int rc = sl_model_load(&m, bad);
        assert_true(rc < 0);
        expect_error(rc, rc, "bad.safetensors", "looks like safetensors but does not open as such");
        printf("truncated part: %s\n", sl_last_error());
    }
    /* a Llama part: GPT-2-only tensors do not belong */
    fixture g;
    make_fixture(&g, SL_ARCH_LLAMA, 1);
    write_parts(&g, &g.model, 1, 3);
    char gbad[320];
    snprintf(gbad, sizeof(gbad), "%s/bad.safetensors", g.dir);
    corruption bias = {.extra = "blocks.1.bq"};
    expect_rejected(g.edge, gbad, &bias, "tensor 'blocks.1.bq' does not belong", "llama");
    corruption gate = {.drop = "blocks.2.w_gate"};
    expect_rejected(g.edge, gbad, &gate, "tensor 'blocks.2.w_gate' is missing", NULL);
    corruption pos = {.extra = "pos_emb"};
    expect_rejected(g.user, gbad, &pos, "tensor 'pos_emb' does not belong", NULL);
    free_fixture(&g);
    free_fixture(&f);
}

/* ---------------------------------------------------------------- stories260K */

static void test_stories260K_parts(void **state) {
    (void)state;
    const char *path = test_asset("models/stories260K/stories260K.bin");
    if (path == NULL) {
        printf("stories260K not available: skipped\n");
        skip();
    }
    fixture f;
    memset(&f, 0, sizeof(f));
    snprintf(f.dir, sizeof(f.dir), "/tmp/splitllm_test_model_part_XXXXXX");
    assert_non_null(mkdtemp(f.dir));
    snprintf(f.user, sizeof(f.user), "%s/user.safetensors", f.dir);
    snprintf(f.edge, sizeof(f.edge), "%s/edge.safetensors", f.dir);
    snprintf(f.cloud, sizeof(f.cloud), "%s/cloud.safetensors", f.dir);
    sl_model whole;
    load_ok(&whole, path);
    const int L = whole.config.n_layers, C = whole.config.dim, V = whole.config.vocab_size, c1 = 2, c2 = 4;
    assert_true(L > c2);
    write_parts(&f, &whole, c1, c2);
    enum { B = 2, T = 12 };
    int tokens[B * T], targets[B * T];
    sl_rng rng;
    sl_rng_init(&rng, 3, 0);
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int)(sl_rng_u64(&rng) % (uint64_t)V);
        targets[i] = (int)(sl_rng_u64(&rng) % (uint64_t)V);
    }
    float *ref = malloc(sizeof(float) * B * T * V), *got = malloc(sizeof(float) * B * T * V);
    float *act = malloc(sizeof(float) * B * T * C);
    sl_segment_config sc = {0, L, 1, 1, B, T};
    sl_segment *s;
    assert_int_equal(sl_segment_create(&s, &whole, NULL, &sc), 0);
    sl_segment_input b = {.B = B, .T = T, .tokens = tokens, .targets = targets, .logits = ref};
    assert_int_equal(sl_segment_forward(s, &b), 0);
    const float loss_ref = sl_segment_loss(s);
    sl_segment_free(s);

    sl_model mu, me, mc;
    load_ok(&mu, f.user);
    load_ok(&me, f.edge);
    load_ok(&mc, f.cloud);
    sl_segment_config su = {0, c1, 1, 0, B, T}, se = {c1, c2, 0, 0, B, T}, scl = {c2, L, 0, 1, B, T};
    sl_segment *user, *edge, *cloud;
    assert_int_equal(sl_segment_create(&user, &mu, NULL, &su), 0);
    assert_int_equal(sl_segment_create(&edge, &me, NULL, &se), 0);
    assert_int_equal(sl_segment_create(&cloud, &mc, NULL, &scl), 0);
    sl_segment_input bu = {.B = B, .T = T, .tokens = tokens};
    assert_int_equal(sl_segment_forward(user, &bu), 0);
    memcpy(act, sl_segment_output(user), sizeof(float) * B * T * C);
    sl_segment_input be = {.B = B, .T = T, .input = act};
    assert_int_equal(sl_segment_forward(edge, &be), 0);
    memcpy(act, sl_segment_output(edge), sizeof(float) * B * T * C);
    sl_segment_input bc = {.B = B, .T = T, .input = act, .targets = targets, .logits = got};
    assert_int_equal(sl_segment_forward(cloud, &bc), 0);
    const float loss = sl_segment_loss(cloud);
    assert_memory_equal(got, ref, sizeof(float) * B * T * V);
    assert_memory_equal(&loss, &loss_ref, sizeof(float));
    printf("stories260K (L=%d, %s head): parts at (%d,%d) of %zu, %zu, %zu B reproduce %d x %d x %d logits "
           "bitwise (loss %.6f)\n", L, whole.config.shared_classifier ? "tied" : "separate", c1, c2,
           file_size(f.user), file_size(f.edge), file_size(f.cloud), B, T, V, loss);
    sl_segment_free(user);
    sl_segment_free(edge);
    sl_segment_free(cloud);
    sl_model_free(&mu);
    sl_model_free(&me);
    sl_model_free(&mc);
    sl_model_free(&whole);
    free(ref);
    free(got);
    free(act);
    unlink(f.user);
    unlink(f.edge);
    unlink(f.cloud);
    assert_int_equal(rmdir(f.dir), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equivalence_gpt2),
        cmocka_unit_test(test_equivalence_llama),
        cmocka_unit_test(test_equivalence_llama_separate_head),
        cmocka_unit_test(test_segment_refused),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_corrupt_parts),
        cmocka_unit_test(test_stories260K_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
