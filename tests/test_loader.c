/* test_loader.c: batches from a shard — exact rows for padding and packing (targets, masks
 * at sample ends, cut samples), each sample once per epoch, same seed same batches, and
 * resume: a loader restored to a saved position yields exactly the batches the original
 * went on to yield, across epoch boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data/loader.h"
#include "data/shard.h"
#include "util/common.h"

enum { VOCAB = 100 };

/* Sample i has length lens[i] and tokens 10*(i+1), 10*(i+1)+1, ...; mask 1 after the first
 * token, except the first prompt_len[i] tokens are masked 0 (a prompt). */
static void make_shard(sl_shard *s, const int *lens, const int *prompt_lens, int n) {
    uint8_t h[SL_SHA256_BYTES] = {0};
    assert_int_equal(sl_shard_init(s, h, VOCAB, 0), 0);
    for (int i = 0; i < n; i++) {
        int32_t ids[16];
        uint8_t m[16];
        for (int k = 0; k < lens[i]; k++) {
            ids[k] = 10 * (i + 1) + k;
            m[k] = k >= (prompt_lens ? prompt_lens[i] : 0);
        }
        assert_int_equal(sl_shard_append(s, ids, m, (size_t)lens[i]), 0);
    }
}

static void expect_row(const sl_batch *b, int r, const int *tok, const int *tgt, const int *mask) {
    for (int t = 0; t < b->b_T; t++) {
        int i = r * b->b_T + t;
        if (b->b_tokens[i] != tok[t] || b->b_targets[i] != tgt[t] || b->b_mask[i] != mask[t])
            fail_msg("row %d position %d: got (%d, %d, %d), expected (%d, %d, %d)", r, t, b->b_tokens[i],
                     b->b_targets[i], b->b_mask[i], tok[t], tgt[t], mask[t]);
    }
}

static void test_padding_rows(void **state) {
    (void)state;
    sl_shard s;
    const int lens[] = {3, 5, 7}, prompts[] = {0, 2, 0};
    make_shard(&s, lens, prompts, 3);
    sl_loader ld;
    sl_loader_config c = {.lc_B = 3, .lc_T = 4, .lc_shuffle = 0, .lc_seed = 1};
    assert_int_equal(sl_loader_open(&ld, &s, &c), 0);
    sl_batch b;
    assert_int_equal(sl_batch_alloc(&b, 3, 4), 0);
    assert_int_equal(sl_loader_next(&ld, &b), 0);
    /* sample 0: 10 11 12 -> last position's target masked, then padding */
    expect_row(&b, 0, (int[]){10, 11, 12, 0}, (int[]){11, 12, 0, 0}, (int[]){1, 1, 0, 0});
    /* sample 1: 20..24 (T+1 = 5 exactly), prompt 20 21: targets 21 masked, 22.. count */
    expect_row(&b, 1, (int[]){20, 21, 22, 23}, (int[]){21, 22, 23, 24}, (int[]){0, 1, 1, 1});
    /* sample 2: 30..36 cut to its first T+1 = 5 tokens */
    expect_row(&b, 2, (int[]){30, 31, 32, 33}, (int[]){31, 32, 33, 34}, (int[]){1, 1, 1, 1});
    assert_int_equal(b.b_mask_tokens, 9);
    assert_int_equal(b.b_samples, 3);
    sl_loader_pos p = sl_loader_tell(&ld);
    assert_int_equal(p.lp_epoch, 1);
    assert_int_equal(p.lp_index, 0);
    sl_batch_free(&b);
    sl_loader_close(&ld);
    sl_shard_free(&s);
}

static void test_packing_rows(void **state) {
    (void)state;
    sl_shard s;
    const int lens[] = {3, 5, 2}, prompts[] = {0, 2, 0};
    make_shard(&s, lens, prompts, 3);
    sl_loader ld;
    sl_loader_config c = {.lc_B = 2, .lc_T = 4, .lc_packing = 1, .lc_shuffle = 0, .lc_seed = 1};
    assert_int_equal(sl_loader_open(&ld, &s, &c), 0);
    sl_batch b;
    assert_int_equal(sl_batch_alloc(&b, 2, 4), 0);
    assert_int_equal(sl_loader_next(&ld, &b), 0);
    /* stream: 10 11 12 | 20 21 22 23 24 | 30 31 | 10 ... ; a sample's last token has a masked target */
    expect_row(&b, 0, (int[]){10, 11, 12, 20}, (int[]){11, 12, 0, 21}, (int[]){1, 1, 0, 0});
    expect_row(&b, 1, (int[]){21, 22, 23, 24}, (int[]){22, 23, 24, 0}, (int[]){1, 1, 1, 0});
    assert_int_equal(b.b_samples, 2);
    assert_int_equal(b.b_mask_tokens, 5);
    assert_int_equal(sl_loader_next(&ld, &b), 0);
    expect_row(&b, 0, (int[]){30, 31, 10, 11}, (int[]){31, 0, 11, 12}, (int[]){1, 0, 1, 1});
    expect_row(&b, 1, (int[]){12, 20, 21, 22}, (int[]){0, 21, 22, 23}, (int[]){0, 0, 1, 1});
    assert_int_equal(b.b_samples, 3); /* 30.., 10.. (epoch 1), 20.. */
    sl_loader_pos p = sl_loader_tell(&ld);
    assert_int_equal(p.lp_epoch, 1);
    assert_int_equal(p.lp_index, 1);
    assert_int_equal(p.lp_offset, 3);
    sl_batch_free(&b);
    sl_loader_close(&ld);
    sl_shard_free(&s);
}

enum { NS = 37 };

static void make_big(sl_shard *s) {
    int lens[NS];
    for (int i = 0; i < NS; i++) lens[i] = 2 + (i * 5) % 9; /* 2..10 */
    uint8_t h[SL_SHA256_BYTES] = {0};
    assert_int_equal(sl_shard_init(s, h, 1000, 0), 0);
    for (int i = 0; i < NS; i++) {
        int32_t ids[16];
        uint8_t m[16];
        for (int k = 0; k < lens[i]; k++) ids[k] = 20 * i + k, m[k] = 1;
        assert_int_equal(sl_shard_append(s, ids, m, (size_t)lens[i]), 0);
    }
}

static void test_each_sample_once_per_epoch(void **state) {
    (void)state;
    sl_shard s;
    make_big(&s);
    sl_loader ld;
    sl_loader_config c = {.lc_B = 1, .lc_T = 12, .lc_shuffle = 1, .lc_seed = 7};
    assert_int_equal(sl_loader_open(&ld, &s, &c), 0);
    sl_batch b;
    assert_int_equal(sl_batch_alloc(&b, 1, 12), 0);
    int seen[NS], order[2][NS];
    for (int e = 0; e < 2; e++) {
        memset(seen, 0, sizeof(seen));
        for (int k = 0; k < NS; k++) {
            assert_int_equal(sl_loader_next(&ld, &b), 0);
            order[e][k] = b.b_tokens[0] / 20;
            seen[order[e][k]]++;
        }
        for (int i = 0; i < NS; i++) assert_int_equal(seen[i], 1);
    }
    int identity = 1;
    for (int k = 0; k < NS; k++) identity = identity && order[0][k] == k;
    assert_false(identity);
    assert_memory_not_equal(order[0], order[1], sizeof(order[0])); /* each epoch its own order */
    sl_batch_free(&b);
    sl_loader_close(&ld);
    sl_shard_free(&s);
}

/* Runs k batches on a, saves the position, runs m more recording them; then a fresh loader
 * seeks to the position and must give the same m batches. */
static void check_resume(int packing, int k, int m) {
    sl_shard s;
    make_big(&s);
    const int B = 3, T = 5;
    sl_loader_config c = {.lc_B = B, .lc_T = T, .lc_packing = packing, .lc_shuffle = 1, .lc_seed = 99};
    sl_loader a, r;
    assert_int_equal(sl_loader_open(&a, &s, &c), 0);
    sl_batch b;
    assert_int_equal(sl_batch_alloc(&b, B, T), 0);
    for (int i = 0; i < k; i++) assert_int_equal(sl_loader_next(&a, &b), 0);
    sl_loader_pos pos = sl_loader_tell(&a);
    size_t n = (size_t)B * T;
    int32_t *tok = malloc((size_t)m * n * sizeof(int32_t)), *tgt = malloc((size_t)m * n * sizeof(int32_t));
    uint8_t *mask = malloc((size_t)m * n);
    for (int i = 0; i < m; i++) {
        assert_int_equal(sl_loader_next(&a, &b), 0);
        memcpy(tok + i * n, b.b_tokens, n * sizeof(int32_t));
        memcpy(tgt + i * n, b.b_targets, n * sizeof(int32_t));
        memcpy(mask + i * n, b.b_mask, n);
    }
    assert_true(sl_loader_tell(&a).lp_epoch > pos.lp_epoch); /* the check crosses an epoch */
    assert_int_equal(sl_loader_open(&r, &s, &c), 0);
    assert_int_equal(sl_loader_seek(&r, pos), 0);
    for (int i = 0; i < m; i++) {
        assert_int_equal(sl_loader_next(&r, &b), 0);
        assert_memory_equal(tok + i * n, b.b_tokens, n * sizeof(int32_t));
        assert_memory_equal(tgt + i * n, b.b_targets, n * sizeof(int32_t));
        assert_memory_equal(mask + i * n, b.b_mask, n);
    }
    /* a loader with the same config from the start gives the same first batches too */
    sl_loader f;
    assert_int_equal(sl_loader_open(&f, &s, &c), 0);
    sl_loader_close(&a);
    assert_int_equal(sl_loader_open(&a, &s, &c), 0);
    sl_batch b2;
    assert_int_equal(sl_batch_alloc(&b2, B, T), 0);
    for (int i = 0; i < k + m; i++) {
        assert_int_equal(sl_loader_next(&a, &b), 0);
        assert_int_equal(sl_loader_next(&f, &b2), 0);
        assert_memory_equal(b.b_tokens, b2.b_tokens, n * sizeof(int32_t));
        assert_memory_equal(b.b_mask, b2.b_mask, n);
    }
    /* another seed: another order */
    sl_loader_config c2 = c;
    c2.lc_seed = 100;
    sl_loader g;
    assert_int_equal(sl_loader_open(&g, &s, &c2), 0);
    assert_int_equal(sl_loader_next(&g, &b2), 0);
    sl_loader_close(&a);
    assert_int_equal(sl_loader_open(&a, &s, &c), 0);
    assert_int_equal(sl_loader_next(&a, &b), 0);
    assert_memory_not_equal(b.b_tokens, b2.b_tokens, n * sizeof(int32_t));
    free(tok);
    free(tgt);
    free(mask);
    sl_batch_free(&b);
    sl_batch_free(&b2);
    sl_loader_close(&a);
    sl_loader_close(&r);
    sl_loader_close(&f);
    sl_loader_close(&g);
    sl_shard_free(&s);
}

static void test_resume_padding(void **state) {
    (void)state;
    check_resume(0, 11, 6); /* 37 samples / 3 rows: epoch 1 starts in batch 13 */
}

static void test_resume_packing(void **state) {
    (void)state;
    check_resume(1, 13, 8); /* 218 tokens / 15 positions: epoch 1 starts in batch 15 */
}

static void test_one_epoch(void **state) {
    (void)state;
    sl_shard s;
    make_big(&s);
    uint64_t want_mask = sl_shard_mask_tokens(&s);
    for (int packing = 0; packing <= 1; packing++) {
        sl_loader_config c = {.lc_B = 4, .lc_T = 16, .lc_packing = packing, .lc_shuffle = 0, .lc_one_epoch = 1};
        sl_loader ld;
        assert_int_equal(sl_loader_open(&ld, &s, &c), 0);
        sl_batch b;
        assert_int_equal(sl_batch_alloc(&b, 4, 16), 0);
        uint64_t mask = 0, samples = 0;
        int batches = 0, rc;
        while ((rc = sl_loader_next(&ld, &b)) == 0) {
            batches++;
            mask += b.b_mask_tokens;
            samples += b.b_samples;
        }
        assert_int_equal(rc, 1);
        assert_int_equal(sl_loader_next(&ld, &b), 1);
        /* every target of every sample exactly once (T+1 = 17 > the longest sample) */
        assert_int_equal(mask, want_mask);
        assert_int_equal(samples, NS);
        /* padding: ceil(37 / 4) = 10 batches, the last with 1 sample and 3 padded rows;
         * packing: 218 tokens in 64-position batches -> 4 */
        assert_int_equal(batches, packing ? 4 : 10);
        if (!packing) {
            for (int i = 16; i < 64; i++) assert_int_equal(b.b_mask[i], 0);
            assert_int_equal(b.b_tokens[0], 20 * 36);
        }
        sl_batch_free(&b);
        sl_loader_close(&ld);
    }
    sl_shard_free(&s);
}

static void test_errors(void **state) {
    (void)state;
    sl_shard s;
    const int lens[] = {3, 5};
    make_shard(&s, lens, NULL, 2);
    sl_loader ld;
    sl_loader_config c = {.lc_B = 2, .lc_T = 4, .lc_packing = 1, .lc_seed = 1, .lc_shuffle = 1};
    assert_int_equal(sl_loader_open(&ld, &s, &c), 0);
    assert_int_equal(sl_loader_seek(&ld, (sl_loader_pos){0, 2, 0}), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "position index 2, expected 0..1"));
    assert_int_equal(sl_loader_seek(&ld, (sl_loader_pos){3, 0, 5}), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "offset 5 in a sample of"));
    sl_batch b;
    assert_int_equal(sl_batch_alloc(&b, 2, 5), 0);
    assert_int_equal(sl_loader_next(&ld, &b), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "batch is (2,5), expected (2,4)"));
    sl_batch_free(&b);
    sl_loader_close(&ld);
    c.lc_T = 0;
    assert_int_equal(sl_loader_open(&ld, &s, &c), SL_EINVAL);
    sl_shard_free(&s);
    uint8_t h[SL_SHA256_BYTES] = {0};
    assert_int_equal(sl_shard_init(&s, h, 10, 0), 0);
    c.lc_T = 4;
    assert_int_equal(sl_loader_open(&ld, &s, &c), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "holds no samples"));
    sl_shard_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_padding_rows),   cmocka_unit_test(test_packing_rows),
        cmocka_unit_test(test_each_sample_once_per_epoch),
        cmocka_unit_test(test_resume_padding), cmocka_unit_test(test_resume_packing),
        cmocka_unit_test(test_one_epoch),      cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
