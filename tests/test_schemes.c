/* test_schemes.c: each distributed scheme on stories260K, checked for the property that
 * defines it and for learning:
 *   splitllm  the cloud runs M streams (never more at once), on blocks [c2,L);
 *   sfl       the server runs N streams, one per user, on blocks [c1,L);
 *   sl        one server stream; users train one at a time, in turn;
 *   fl        no server stream; every user holds the whole model (its part has all blocks
 *             and the head);
 * every scheme's eval loss decreases; and sfl and fl, which compute the same thing by two
 * routes (a server instance per user is FedAvg of whole models), give the same adapter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "test_util.h"
#include "util/common.h"
#include "util/safetensors.h"

enum { USERS = 4, EDGES = 2, ROUNDS = 2, STEPS = 2 };

static char root[256], data_dir[512];

static int setup(void **state) {
    (void)state;
    const char *tok = test_asset("models/stories260K/tok512.bin");
    const char *csv = test_asset("datasets/e2e_devset.csv");
    if (tok == NULL || csv == NULL) return 0;
    snprintf(root, sizeof(root), "/tmp/splitllm_test_schemes_%d", (int)getpid());
    snprintf(data_dir, sizeof(data_dir), "%s/data", root);
    char cmd[2048];
    /* a small subset of E2E keeps the test fast */
    snprintf(cmd, sizeof(cmd),
             "mkdir -p %s && head -n 400 %s > %s/e2e.csv && %s prepare --tokenizer %s --input %s/e2e.csv "
             "--format e2e --max-seq 128 --users %d --seed 1 --out %s > %s/prepare.log 2>&1",
             root, csv, root, SPLITLLM_BIN, tok, root, USERS, data_dir, root);
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

/* Runs one scheme into root/<scheme>; returns the parsed summary.json. */
static cJSON *run_scheme(const char *scheme) {
    const char *model = test_asset("models/stories260K/stories260K.bin");
    if (model == NULL || root[0] == '\0') skip();
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "%s run --scheme %s --model %s --data %s --out %s/%s --users %d --edges %d --cuts 2,4 --rounds %d "
             "--local-steps %d --batch 4 --seq 128 --lr 3e-3 --eval-batches 4 --timeout-ms 30000 > %s/%s.log 2>&1",
             SPLITLLM_BIN, scheme, model, data_dir, root, scheme, USERS, EDGES, ROUNDS, STEPS, root, scheme);
    if (system(cmd) != 0) fail_msg("%s failed; see %s/%s.log", scheme, root, scheme);
    char path[600], *text;
    snprintf(path, sizeof(path), "%s/%s/summary.json", root, scheme);
    assert_int_equal(sl_read_file(path, &text, NULL), 0);
    cJSON *j = cJSON_Parse(text);
    sl_free(text);
    assert_non_null(j);
    double e0 = cJSON_GetObjectItem(j, "eval_loss_initial")->valuedouble;
    double e1 = cJSON_GetObjectItem(j, "eval_loss_final")->valuedouble;
    printf("%s: eval loss %.4f -> %.4f\n", scheme, e0, e1);
    assert_true(e1 < e0);
    return j;
}

/* From the cloud's metrics.jsonl: the scheme line's streams and blocks, the most streams
 * computed at once, and the client of each step in order. */
typedef struct {
    int streams, block_begin, block_end, max_concurrent;
    int step_clients[64];
    int n_steps;
} cloud_facts;

static cloud_facts read_cloud(const char *scheme) {
    cloud_facts f;
    memset(&f, 0, sizeof(f));
    f.max_concurrent = -1;
    char path[600];
    snprintf(path, sizeof(path), "%s/%s/metrics.jsonl", root, scheme);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[4096];
    while (fgets(line, sizeof(line), fp)) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        const cJSON *streams = cJSON_GetObjectItem(j, "streams");
        const cJSON *blocks = cJSON_GetObjectItem(j, "cloud_blocks");
        const cJSON *maxc = cJSON_GetObjectItem(j, "max_concurrent_streams");
        const cJSON *client = cJSON_GetObjectItem(j, "client");
        const cJSON *step = cJSON_GetObjectItem(j, "step");
        if (cJSON_IsNumber(streams) && cJSON_IsArray(blocks)) {
            f.streams = streams->valueint;
            f.block_begin = cJSON_GetArrayItem(blocks, 0)->valueint;
            f.block_end = cJSON_GetArrayItem(blocks, 1)->valueint;
        }
        if (cJSON_IsNumber(maxc)) f.max_concurrent = maxc->valueint;
        if (cJSON_IsNumber(client) && cJSON_IsNumber(step) && f.n_steps < 64)
            f.step_clients[f.n_steps++] = client->valueint;
        cJSON_Delete(j);
    }
    fclose(fp);
    assert_true(f.max_concurrent >= 0);
    return f;
}

static void test_splitllm(void **state) {
    (void)state;
    cJSON *j = run_scheme("splitllm");
    cloud_facts f = read_cloud("splitllm");
    assert_int_equal(f.streams, EDGES);
    assert_int_equal(f.block_begin, 4);
    assert_int_equal(f.block_end, 5);
    assert_true(f.max_concurrent >= 1 && f.max_concurrent <= EDGES);
    assert_int_equal(f.n_steps, ROUNDS * STEPS * EDGES); /* one user per edge per round */
    cJSON_Delete(j);
}

static void test_sfl(void **state) {
    (void)state;
    cJSON *j = run_scheme("sfl");
    cloud_facts f = read_cloud("sfl");
    assert_int_equal(f.streams, USERS); /* a server-side model instance per user */
    assert_int_equal(f.block_begin, 2);
    assert_true(f.max_concurrent >= 1 && f.max_concurrent <= USERS);
    assert_int_equal(f.n_steps, ROUNDS * STEPS * USERS); /* every user every round */
    /* no edge tier in a two-tier scheme */
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "bytes"), "user_edge"));
    cJSON_Delete(j);
}

static void test_sl(void **state) {
    (void)state;
    cJSON *j = run_scheme("sl");
    cloud_facts f = read_cloud("sl");
    assert_int_equal(f.streams, 1);
    assert_int_equal(f.max_concurrent, 1);
    assert_int_equal(f.n_steps, ROUNDS * STEPS * USERS);
    /* users in turn: each round is client 0's steps, then client 1's, ... */
    for (int i = 0; i < f.n_steps; i++) assert_int_equal(f.step_clients[i], (i / STEPS) % USERS);
    cJSON_Delete(j);
}

static void test_fl_and_sfl_agree(void **state) {
    (void)state;
    cJSON *j = run_scheme("fl");
    cloud_facts f = read_cloud("fl");
    assert_int_equal(f.streams, 0);
    assert_int_equal(f.n_steps, 0); /* nothing runs on the server */
    /* every user holds the whole model: the part it is sent has all blocks and the head */
    char path[600];
    snprintf(path, sizeof(path), "%s/fl/parts/user.safetensors", root);
    sl_st_reader *r;
    assert_int_equal(sl_st_open(&r, path), 0);
    assert_string_equal(sl_st_metadata(r, "layer_begin"), "0");
    assert_string_equal(sl_st_metadata(r, "layer_end"), "5");
    assert_string_equal(sl_st_metadata(r, "has_head"), "1");
    sl_st_close(r);
    /* sfl (run by test_sfl) trains one server instance per user and averages both sides:
     * the same arithmetic as fl's whole models, so the same adapter, bit for bit */
    char a[600], b[600], cmd[1300];
    snprintf(a, sizeof(a), "%s/fl/lora.safetensors", root);
    snprintf(b, sizeof(b), "%s/sfl/lora.safetensors", root);
    snprintf(cmd, sizeof(cmd), "cmp -s %s %s", a, b);
    assert_int_equal(system(cmd), 0);
    cJSON_Delete(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splitllm),
        cmocka_unit_test(test_sfl),
        cmocka_unit_test(test_sl),
        cmocka_unit_test(test_fl_and_sfl_agree),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
