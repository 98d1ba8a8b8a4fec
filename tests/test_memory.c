/* test_memory.c: every tier process's own memory breakdown (base weights, adapters,
 * optimizer state, activations, message buffers, data) explains the growth of its measured
 * peak resident set over its start within 10%, for splitllm and sfl run as processes. The
 * model is a generated GPT-2 large enough that tensors, not the runtime, dominate.
 * Skipped under the sanitizers (SPLITLLM_TEST_QUICK): ASan's shadow memory and quarantine
 * change every process's resident set. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "test_util.h"
#include "util/common.h"

#define MAX_UNEXPLAINED 0.10

static char root[256];

static int setup(void **state) {
    (void)state;
    const char *tok = test_asset("tokenizers/gpt2/encoder.json");
    const char *csv = test_asset("datasets/e2e_devset.csv");
    if (tok == NULL || csv == NULL || getenv("SPLITLLM_TEST_QUICK")) return 0;
    snprintf(root, sizeof(root), "/tmp/splitllm_test_memory_%d", (int)getpid());
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "mkdir -p %s && head -n 600 %s > %s/e2e.csv && "
             "%s init-model --arch gpt2 --layers 6 --dim 256 --heads 4 --vocab 50257 --max-seq 256 --out %s/m.bin "
             "> %s/init.log 2>&1 && %s prepare --tokenizer %s --input %s/e2e.csv --format e2e --max-seq 128 "
             "--users 4 --seed 1 --out %s/data > %s/prepare.log 2>&1",
             root, csv, root, SPLITLLM_BIN, root, root, SPLITLLM_BIN, tok, root, root, root);
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    if (root[0]) {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
        if (system(cmd) != 0) return -1;
    }
    return 0;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("memory breakdown lacks '%s'", k);
    return v->valuedouble;
}

static void check_scheme(const char *scheme, int expect_tiers) {
    if (root[0] == '\0') skip();
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "%s run --scheme %s --processes --model %s/m.bin --data %s/data --out %s/%s --users 4 --edges 2 "
             "--cuts 2,4 --rounds 1 --local-steps 2 --batch 8 --seq 128 --eval-batches 2 --timeout-ms 60000 "
             "> %s/%s.log 2>&1",
             SPLITLLM_BIN, scheme, root, root, root, scheme, root, scheme);
    if (system(cmd) != 0) fail_msg("%s failed; see %s/%s.log", scheme, root, scheme);
    char path[600], *text;
    snprintf(path, sizeof(path), "%s/%s/summary.json", root, scheme);
    assert_int_equal(sl_read_file(path, &text, NULL), 0);
    cJSON *j = cJSON_Parse(text);
    sl_free(text);
    const cJSON *mb = cJSON_GetObjectItem(j, "memory_breakdown");
    assert_non_null(mb);
    int tiers = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, mb) {
        const double growth = num(t, "peak_rss") - num(t, "start_rss");
        const double parts = num(t, "base_weights") + num(t, "adapters") + num(t, "optimizer") +
                             num(t, "activations") + num(t, "messages") + num(t, "data");
        const double off = fabs(parts - growth) / growth;
        printf("%s %s: peak %.1f MiB, growth %.1f MiB, breakdown %.1f MiB (%.1f%% off)\n", scheme, t->string,
               num(t, "peak_rss") / 1048576.0, growth / 1048576.0, parts / 1048576.0, 100.0 * off);
        assert_true(growth > 0);
        assert_true(num(t, "activations") > 0 && num(t, "base_weights") > 0);
        if (off > MAX_UNEXPLAINED) fail_msg("%s %s: the breakdown is %.1f%% off the measured growth", scheme, t->string,
                                            100.0 * off);
        tiers++;
    }
    assert_int_equal(tiers, expect_tiers);
    cJSON_Delete(j);
}

static void test_splitllm_breakdown(void **state) {
    (void)state;
    check_scheme("splitllm", 3);
}

static void test_sfl_breakdown(void **state) {
    (void)state;
    check_scheme("sfl", 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splitllm_breakdown),
        cmocka_unit_test(test_sfl_breakdown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
