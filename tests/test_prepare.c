/* test_prepare.c: `prepare` end to end on tiny inputs written here — text (blank lines and
 * --separator), JSONL (text and prompt/completion), the E2E CSV — with exact sample, token
 * and loss-mask counts (GPT-2 ids checked against encoder.json's numbers), the validation
 * hold-out, partitions, truncation, the manifest, the CLI, and every bad input: each an
 * error naming file and line/offset, and nothing left behind. Also the real E2E dev set. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "data/loader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "test_util.h"
#include "util/common.h"

/* GPT-2 ids from encoder.json */
enum { GPT2_HELLO = 15496, GPT2_SP_WORLD = 995, GPT2_BANG = 0, GPT2_SP_HELLO = 18435, GPT2_EOT = 50256 };

static char root[64];
static const char *llama_tok, *gpt2_tok;

static int setup(void **state) {
    (void)state;
    snprintf(root, sizeof(root), "/tmp/sl_test_prepare_XXXXXX");
    llama_tok = test_asset("models/stories260K/tok512.bin");
    gpt2_tok = test_asset("tokenizers/gpt2/encoder.json");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    return system(cmd);
}

/* A fresh folder under root for one test; returns its path (static slot per call site). */
static void make_dir(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", root, name);
    assert_int_equal(mkdir(out, 0755), 0);
}

static void write_input(char *path, size_t n, const char *dir, const char *name, const char *content, size_t len) {
    snprintf(path, n, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(content, 1, len, fp), len);
    fclose(fp);
}

static void need(const char *tok) {
    if (tok == NULL) skip();
}

static void base_config(sl_prepare_config *c, const char *tok, const char *input, const char *out) {
    sl_prepare_config_default(c);
    c->pc_tokenizer_path = tok;
    c->pc_input_path = input;
    c->pc_out_dir = out;
    c->pc_val_fraction = 0.0;
}

static void load_shard(sl_shard *s, const char *out, const char *name) {
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", out, name);
    if (sl_shard_read(s, p) != 0) fail_msg("%s", sl_last_error());
}

static cJSON *load_manifest(const char *out) {
    char p[512], *text;
    snprintf(p, sizeof(p), "%s/manifest.json", out);
    assert_int_equal(sl_read_file(p, &text, NULL), 0);
    cJSON *m = cJSON_Parse(text);
    sl_free(text);
    assert_non_null(m);
    return m;
}

static double jnum(const cJSON *o, const char *path) {
    /* "a.b" lookups */
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    const cJSON *cur = o;
    for (char *tok = strtok(buf, "."); tok; tok = strtok(NULL, ".")) cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    if (!cJSON_IsNumber(cur)) fail_msg("manifest: %s is not a number", path);
    return cur->valuedouble;
}

static void expect_sample(const sl_shard *s, uint64_t i, const int32_t *ids, const uint8_t *mask, size_t n) {
    assert_int_equal(sl_shard_sample_len(s, i), n);
    assert_memory_equal(s->sh_tokens + s->sh_offsets[i], ids, n * sizeof(int32_t));
    assert_memory_equal(s->sh_mask + s->sh_offsets[i], mask, n);
}

/* The entries of dir, other than . and .., joined by spaces in sorted order. */
static void list_dir(const char *dir, char *out, size_t n) {
    struct dirent **names;
    int k = scandir(dir, &names, NULL, alphasort);
    assert_true(k >= 0);
    out[0] = '\0';
    for (int i = 0; i < k; i++) {
        if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, ".."))
            snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? " " : "", names[i]->d_name);
        free(names[i]);
    }
    free(names);
}

/* ---------------------------------------------------------------- good inputs */

static void test_text_gpt2_exact(void **state) {
    (void)state;
    need(gpt2_tok);
    char dir[256], in[512], out[512];
    make_dir(dir, sizeof(dir), "text_gpt2");
    const char text[] = "Hello world\n\n\n  Hello world!\r\n \t\n\nHello\n";
    write_input(in, sizeof(in), dir, "in.txt", text, strlen(text));
    snprintf(out, sizeof(out), "%s/out", dir);
    sl_prepare_config c;
    base_config(&c, gpt2_tok, in, out);
    sl_prepare_summary s;
    if (sl_prepare_run(&c, &s) != 0) fail_msg("%s", sl_last_error());
    assert_int_equal(s.ps_samples, 3);
    assert_int_equal(s.ps_user_samples[0], 3);
    assert_int_equal(s.ps_user_tokens[0], 9);
    assert_int_equal(s.ps_user_mask_tokens[0], 6);
    assert_int_equal(s.ps_val_samples, 0);
    assert_int_equal(s.ps_truncated, 0);
    sl_prepare_summary_free(&s);
    sl_shard sh;
    load_shard(&sh, out, "user_000.shard");
    /* no BOS for GPT-2; EOT closes every document; the first token is never a target */
    expect_sample(&sh, 0, (int32_t[]){GPT2_HELLO, GPT2_SP_WORLD, GPT2_EOT}, (uint8_t[]){0, 1, 1}, 3);
    expect_sample(&sh, 1, (int32_t[]){GPT2_HELLO, GPT2_SP_WORLD, GPT2_BANG, GPT2_EOT}, (uint8_t[]){0, 1, 1, 1}, 4);
    expect_sample(&sh, 2, (int32_t[]){GPT2_HELLO, GPT2_EOT}, (uint8_t[]){0, 1}, 2);
    assert_int_equal(sh.sh_vocab_size, 50257);
    assert_int_equal(sh.sh_max_sample_tokens, SL_PREPARE_DEFAULT_MAX_SEQ + 1);
    sl_tokenizer *t;
    assert_int_equal(sl_tokenizer_load(&t, gpt2_tok), 0);
    assert_int_equal(sl_shard_check_tokenizer(&sh, sl_tokenizer_hash(t), gpt2_tok), 0);
    sl_tokenizer_free(t);
    sl_shard_free(&sh);
    char listing[512];
    list_dir(out, listing, sizeof(listing));
    assert_string_equal(listing, "manifest.json user_000.shard val.shard");
    list_dir(dir, listing, sizeof(listing));
    assert_string_equal(listing, "in.txt out");
    cJSON *m = load_manifest(out);
    assert_int_equal(jnum(m, "samples"), 3);
    assert_int_equal(jnum(m, "tokens"), 9);
    assert_int_equal(jnum(m, "mask_tokens"), 6);
    assert_int_equal(jnum(m, "tokenizer.vocab_size"), 50257);
    assert_int_equal(jnum(m, "tokenizer.bos"), -1);
    assert_string_equal(cJSON_GetObjectItem(m, "format")->valuestring, "text");
    cJSON_Delete(m);
}

static void test_text_llama2_separator(void **state) {
    (void)state;
    need(llama_tok);
    char dir[256], in[512], out[512];
    make_dir(dir, sizeof(dir), "text_llama2");
    const char text[] = "Once upon a time\n\nthere was<SEP>a cat.<SEP>  <SEP>\nThe end\n";
    write_input(in, sizeof(in), dir, "in.txt", text, strlen(text));
    snprintf(out, sizeof(out), "%s/out", dir);
    sl_prepare_config c;
    base_config(&c, llama_tok, in, out);
    c.pc_separator = "<SEP>";
    sl_prepare_summary s;
    if (sl_prepare_run(&c, &s) != 0) fail_msg("%s", sl_last_error());
    assert_int_equal(s.ps_samples, 3); /* the blank piece is skipped; blank lines do not split */
    sl_prepare_summary_free(&s);
    sl_tokenizer *t;
    assert_int_equal(sl_tokenizer_load(&t, llama_tok), 0);
    const char *docs[3] = {"Once upon a time\n\nthere was", "a cat.", "The end"};
    sl_shard sh;
    load_shard(&sh, out, "user_000.shard");
    for (int d = 0; d < 3; d++) {
        int *ids = NULL;
        size_t n = 0, cap = 0;
        assert_int_equal(sl_tokenizer_encode(t, docs[d], strlen(docs[d]), 1, &ids, &n, &cap), 0);
        assert_int_equal(ids[0], 1); /* BOS */
        int32_t want[64];
        uint8_t mask[64];
        assert_true(n + 1 <= 64);
        for (size_t k = 0; k < n; k++) want[k] = ids[k], mask[k] = k > 0;
        want[n] = 2; /* EOS ends the document */
        mask[n] = 1;
        expect_sample(&sh, (uint64_t)d, want, mask, n + 1);
        sl_free(ids);
    }
    sl_shard_free(&sh);
    sl_tokenizer_free(t);
}

static void test_jsonl_gpt2_exact(void **state) {
    (void)state;
    need(gpt2_tok);
    char dir[256], in[512], out[512];
    make_dir(dir, sizeof(dir), "jsonl_gpt2");
    const char text[] = "{\"prompt\": \"Hello\", \"completion\": \"world\"}\n"
                        "\n"
                        "{\"text\": \"Hello world!\", \"extra\": [1, 2]}\r\n"
                        "  {\"completion\": \"Hello\", \"prompt\": \"\"}  \n";
    write_input(in, sizeof(in), dir, "in.jsonl", text, strlen(text));
    snprintf(out, sizeof(out), "%s/out", dir);
    sl_prepare_config c;
    base_config(&c, gpt2_tok, in, out);
    sl_prepare_summary s;
    if (sl_prepare_run(&c, &s) != 0) fail_msg("%s", sl_last_error());
    assert_int_equal(s.ps_samples, 3);
    /* loss: completion + EOT (2), text all but the first token (3), completion + EOT but
     * not the sample's first token (1) */
    assert_int_equal(s.ps_user_mask_tokens[0], 6);
    sl_prepare_summary_free(&s);
    sl_shard sh;
    load_shard(&sh, out, "user_000.shard");
    /* the completion starts a new word: " world" */
    expect_sample(&sh, 0, (int32_t[]){GPT2_HELLO, GPT2_SP_WORLD, GPT2_EOT}, (uint8_t[]){0, 1, 1}, 3);
    expect_sample(&sh, 1, (int32_t[]){GPT2_HELLO, GPT2_SP_WORLD, GPT2_BANG, GPT2_EOT}, (uint8_t[]){0, 1, 1, 1}, 4);
    /* empty prompt: the completion's first token has nothing before it, so it is no target */
    expect_sample(&sh, 2, (int32_t[]){GPT2_SP_HELLO, GPT2_EOT}, (uint8_t[]){0, 1}, 2);
    sl_shard_free(&sh);
}

/* E2E rows: 12 rows, eatType pub x5, restaurant x4, missing x3 (one MR quoted with a quote
 * inside a reference and one reference spanning two lines). */
static const char e2e_small[] =
    "mr,ref\r\n"
    "\"name[A], eatType[pub], food[French]\",A is a French pub.\r\n"
    "\"name[B], eatType[pub]\",\"B, a pub, says \"\"hi\"\".\"\r\n"
    "\"name[C], eatType[pub], area[riverside]\",C is a pub by the river.\r\n"
    "\"name[D], eatType[pub]\",D is a pub.\r\n"
    "\"name[E], eatType[pub]\",\"E is a pub\non two lines.\"\r\n"
    "\"name[F], eatType[restaurant]\",F is a restaurant.\r\n"
    "\"name[G], eatType[restaurant], food[Thai]\",G serves Thai food.\r\n"
    "\"name[H], eatType[restaurant]\",H is a restaurant.\r\n"
    "\"name[I], eatType[restaurant]\",I is a restaurant.\r\n"
    "\"name[J], food[Indian]\",J serves Indian food.\r\n"
    "\"name[K], customer rating[high]\",K is rated highly.\r\n"
    "name[L],L is L.\r\n";

static void test_e2e_parse(void **state) {
    (void)state;
    sl_records rs;
    sl_parse_config pc = {SL_FORMAT_E2E, NULL, "eatType"};
    if (sl_parse_records("e2e.csv", e2e_small, strlen(e2e_small), &pc, &rs) != 0) fail_msg("%s", sl_last_error());
    assert_int_equal(rs.rs_n, 12);
    assert_string_equal(rs.rs_items[0].rc_prompt, "name[A], eatType[pub], food[French]" SL_E2E_SEPARATOR);
    assert_string_equal(rs.rs_items[0].rc_completion, "A is a French pub.");
    assert_string_equal(rs.rs_items[0].rc_key, "pub");
    assert_int_equal(rs.rs_items[0].rc_line, 2);
    assert_string_equal(rs.rs_items[1].rc_completion, "B, a pub, says \"hi\".");
    assert_string_equal(rs.rs_items[4].rc_completion, "E is a pub\non two lines.");
    assert_int_equal(rs.rs_items[5].rc_line, 8); /* after the two-line row */
    assert_string_equal(rs.rs_items[5].rc_key, "restaurant");
    assert_null(rs.rs_items[9].rc_key);
    assert_string_equal(rs.rs_items[11].rc_prompt, "name[L]" SL_E2E_SEPARATOR);
    assert_null(rs.rs_items[0].rc_text);
    sl_records_free(&rs);
    /* an attribute with a space in its name */
    char *v;
    assert_int_equal(sl_e2e_mr_value("x", 1, "name[K], customer rating[5 out of 5]", 36, "customer rating", &v), 0);
    assert_string_equal(v, "5 out of 5");
    sl_free(v);
    assert_int_equal(sl_e2e_mr_value("x", 1, "name[K]", 7, "food", &v), 0);
    assert_null(v);
}

static void test_e2e_partitions(void **state) {
    (void)state;
    need(llama_tok);
    char dir[256], in[512], out[512];
    make_dir(dir, sizeof(dir), "e2e_part");
    write_input(in, sizeof(in), dir, "small.csv", e2e_small, strlen(e2e_small));
    sl_tokenizer *t;
    assert_int_equal(sl_tokenizer_load(&t, llama_tok), 0);

    /* by-key over 3 users: the groups (pub 5, restaurant 4, missing 3) go whole */
    snprintf(out, sizeof(out), "%s/bykey", dir);
    sl_prepare_config c;
    base_config(&c, llama_tok, in, out);
    c.pc_users = 3;
    c.pc_partition = SL_PARTITION_BY_KEY;
    c.pc_key = "eatType";
    sl_prepare_summary s;
    if (sl_prepare_run(&c, &s) != 0) fail_msg("%s", sl_last_error());
    assert_int_equal(s.ps_key_values, 3);
    uint64_t sizes[3] = {s.ps_user_samples[0], s.ps_user_samples[1], s.ps_user_samples[2]};
    assert_int_equal(sizes[0] * sizes[1] * sizes[2], 5 * 4 * 3);
    assert_int_equal(sizes[0] + sizes[1] + sizes[2], 12);
    sl_prepare_summary_free(&s);
    cJSON *m = load_manifest(out);
    assert_int_equal(jnum(m, "key_values.pub"), 5);
    assert_int_equal(jnum(m, "key_values.restaurant"), 4);
    assert_int_equal(jnum(m, "key_values.(missing)"), 3);
    const cJSON *users = cJSON_GetObjectItem(m, "users");
    for (int u = 0; u < 3; u++) {
        const cJSON *kc = cJSON_GetObjectItem(cJSON_GetArrayItem(users, u), "key_counts");
        int nonzero = 0;
        for (const cJSON *e = kc->child; e; e = e->next) nonzero += e->valuedouble > 0;
        assert_int_equal(nonzero, 1);
    }
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "partition"), "method")->valuestring, "by-key");
    cJSON_Delete(m);

    /* every sample: [BOS] MR "\n" completion EOS; the loss covers completion + EOS only */
    sl_records rs;
    sl_parse_config pc = {SL_FORMAT_E2E, NULL, NULL};
    assert_int_equal(sl_parse_records(in, e2e_small, strlen(e2e_small), &pc, &rs), 0);
    uint64_t want_tokens = 0, want_mask = 0;
    for (size_t i = 0; i < rs.rs_n; i++) {
        int *ids = NULL;
        size_t n = 0, cap = 0;
        assert_int_equal(sl_tokenizer_encode(t, rs.rs_items[i].rc_prompt, rs.rs_items[i].rc_prompt_len, 1, &ids, &n,
                                             &cap), 0);
        size_t np = n;
        assert_int_equal(sl_tokenizer_encode(t, rs.rs_items[i].rc_completion, rs.rs_items[i].rc_completion_len, 0, &ids,
                                             &n, &cap), 0);
        want_tokens += n + 1;
        want_mask += n - np + 1;
        sl_free(ids);
    }
    sl_records_free(&rs);

    /* dirichlet, val held out: same seed same bytes; val identical whatever the partition */
    char out2[512], out3[512];
    snprintf(out, sizeof(out), "%s/d1", dir);
    snprintf(out2, sizeof(out2), "%s/d2", dir);
    snprintf(out3, sizeof(out3), "%s/iid", dir);
    base_config(&c, llama_tok, in, out);
    c.pc_users = 2;
    c.pc_partition = SL_PARTITION_DIRICHLET;
    c.pc_alpha = 0.5;
    c.pc_key = "eatType";
    c.pc_val_fraction = 0.25;
    c.pc_seed = 5;
    if (sl_prepare_run(&c, &s) != 0) fail_msg("%s", sl_last_error());
    assert_int_equal(s.ps_val_samples, 3);
    assert_int_equal(s.ps_user_samples[0] + s.ps_user_samples[1], 9);
    assert_true(s.ps_user_samples[0] > 0 && s.ps_user_samples[1] > 0);
    assert_int_equal(s.ps_user_tokens[0] + s.ps_user_tokens[1] + s.ps_val_tokens, want_tokens);
    assert_int_equal(s.ps_user_mask_tokens[0] + s.ps_user_mask_tokens[1] + s.ps_val_mask_tokens, want_mask);
    sl_prepare_summary_free(&s);
    c.pc_out_dir = out2;
    assert_int_equal(sl_prepare_run(&c, &s), 0);
    sl_prepare_summary_free(&s);
    c.pc_out_dir = out3;
    c.pc_partition = SL_PARTITION_IID;
    c.pc_users = 4;
    assert_int_equal(sl_prepare_run(&c, &s), 0);
    for (int u = 0; u < 4; u++) assert_int_equal(s.ps_user_samples[u], u == 0 ? 3 : 2);
    sl_prepare_summary_free(&s);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "cmp -s %s/user_000.shard %s/user_000.shard && cmp -s %s/manifest.json %s/manifest.json",
             out, out2, out, out2);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "cmp -s %s/val.shard %s/val.shard", out, out3);
    assert_int_equal(system(cmd), 0);
    /* the held-out samples are in no user shard: tokens of train + val = all */
    sl_tokenizer_free(t);
}

static void test_truncation_and_strict(void **state) {
    (void)state;
    need(gpt2_tok);
    char dir[256], in[512], out[512];
    make_dir(dir, sizeof(dir), "trunc");
    /* 3 documents of 1, 4 and 7 words -> 2, 5, 8 tokens with EOT */
    const char text[] = "Hello\n\nHello world world world\n\nHello world world world world world world\n";
    write_input(in, sizeof(in), dir, "in.txt", text, strlen(text));
    snprintf(out, sizeof(out), "%s/out", dir);
    sl_prepare_config c;
    base_config(&c, gpt2_tok, in, out);
    c.pc_max_seq = 4; /* at most 5 tokens */
    sl_prepare_summary s;
    if (sl_prepare_run(&c, &s) != 0) fail_msg("%s", sl_last_error());
    assert_int_equal(s.ps_truncated, 1);
    assert_int_equal(s.ps_user_tokens[0], 2 + 5 + 5);
    sl_prepare_summary_free(&s);
    cJSON *m = load_manifest(out);
    assert_int_equal(jnum(m, "truncated_samples"), 1);
    assert_int_equal(jnum(m, "max_seq"), 4);
    cJSON_Delete(m);
    /* --strict: an error naming the line of the long document; the earlier output stays */
    c.pc_strict = 1;
    assert_int_equal(sl_prepare_run(&c, &s), SL_EFORMAT);
    const char *msg = sl_last_error();
    if (!strstr(msg, ":5: sample has 8 tokens, expected at most 5") || !strstr(msg, in)) fail_msg("%s", msg);
    char listing[512];
    list_dir(dir, listing, sizeof(listing));
    assert_string_equal(listing, "in.txt out");
}

static void test_replace_output(void **state) {
    (void)state;
    need(gpt2_tok);
    char dir[256], in[512], out[512], p[600];
    make_dir(dir, sizeof(dir), "replace");
    write_input(in, sizeof(in), dir, "in.txt", "Hello\n\nHello\n\nHello\n", 19);
    snprintf(out, sizeof(out), "%s/out", dir);
    sl_prepare_config c;
    base_config(&c, gpt2_tok, in, out);
    c.pc_users = 3;
    sl_prepare_summary s;
    assert_int_equal(sl_prepare_run(&c, &s), 0);
    sl_prepare_summary_free(&s);
    c.pc_users = 1; /* a new run replaces the whole folder: no stale user_001/002 */
    assert_int_equal(sl_prepare_run(&c, &s), 0);
    sl_prepare_summary_free(&s);
    char listing[512];
    list_dir(out, listing, sizeof(listing));
    assert_string_equal(listing, "manifest.json user_000.shard val.shard");
    list_dir(dir, listing, sizeof(listing));
    assert_string_equal(listing, "in.txt out");
    /* a folder that is not ours is refused */
    snprintf(p, sizeof(p), "%s/other", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    write_input(in, sizeof(in), p, "keep.txt", "x", 1);
    write_input(in, sizeof(in), dir, "in.txt", "Hello\n", 6);
    c.pc_out_dir = p;
    assert_int_equal(sl_prepare_run(&c, &s), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "refusing to replace it"));
    list_dir(p, listing, sizeof(listing));
    assert_string_equal(listing, "keep.txt");
    /* more users than samples: a clear error */
    c.pc_out_dir = out;
    c.pc_users = 2;
    assert_int_equal(sl_prepare_run(&c, &s), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "1 training samples for 2 users"));
}

/* ---------------------------------------------------------------- bad inputs */

/* Runs prepare on content and expects code with every want string in the message, and no
 * output folder or temp folder left. */
static void expect_bad(const char *tok, const char *name, sl_input_format fmt, const char *key, const char *content,
                       size_t len, int code, const char *want1, const char *want2) {
    static int k;
    char dir[256], in[512], out[512], sub[64];
    snprintf(sub, sizeof(sub), "bad%02d", k++);
    make_dir(dir, sizeof(dir), sub);
    write_input(in, sizeof(in), dir, name, content, len);
    snprintf(out, sizeof(out), "%s/out", dir);
    sl_prepare_config c;
    base_config(&c, tok, in, out);
    c.pc_format = fmt;
    c.pc_key = key;
    c.pc_partition = key ? SL_PARTITION_BY_KEY : SL_PARTITION_IID;
    sl_prepare_summary s;
    int rc = sl_prepare_run(&c, &s);
    const char *msg = sl_last_error();
    if (rc != code || !strstr(msg, in) || !strstr(msg, want1) || (want2 && !strstr(msg, want2)))
        fail_msg("%s: rc %d (want %d), message '%s' (want '%s' and '%s')", name, rc, code, msg, want1,
                 want2 ? want2 : "");
    char listing[512];
    list_dir(dir, listing, sizeof(listing));
    assert_string_equal(listing, name);
}

static void test_bad_inputs(void **state) {
    (void)state;
    need(llama_tok);
    const char *T = llama_tok;
    /* invalid UTF-8: a lone continuation byte on line 3, an overlong form, a NUL */
    expect_bad(T, "a.txt", SL_FORMAT_TEXT, NULL, "ok\n\nbad \x80 byte\n", 15, SL_EFORMAT,
               ":3: byte offset 8: expected UTF-8 text, found invalid byte 0x80", NULL);
    expect_bad(T, "b.txt", SL_FORMAT_TEXT, NULL, "\xC0\xAF", 2, SL_EFORMAT, ":1: byte offset 0", "0xC0");
    expect_bad(T, "c.txt", SL_FORMAT_TEXT, NULL, "a\0b", 3, SL_EFORMAT, "byte offset 1: expected UTF-8 text, found a NUL",
               NULL);
    expect_bad(T, "d.txt", SL_FORMAT_TEXT, NULL, "\xED\xA0\x80", 3, SL_EFORMAT, "invalid byte 0xED", NULL); /* surrogate */
    /* empty input */
    expect_bad(T, "e.txt", SL_FORMAT_TEXT, NULL, "", 0, SL_EFORMAT, "expected at least one document, found none", NULL);
    expect_bad(T, "f.txt", SL_FORMAT_TEXT, NULL, " \n\n\t\n", 5, SL_EFORMAT, "found none", NULL);
    expect_bad(T, "g.jsonl", SL_FORMAT_JSONL, NULL, "\n\n", 2, SL_EFORMAT, "expected at least one record", NULL);
    /* JSON: missing fields, wrong types, malformed lines */
    const char j1[] = "{\"text\": \"a\"}\n{\"prompt\": \"a\"}\n";
    expect_bad(T, "h.jsonl", SL_FORMAT_JSONL, NULL, j1, strlen(j1), SL_EFORMAT,
               ":2: expected a \"completion\" field beside \"prompt\"", NULL);
    const char j2[] = "{\"body\": \"a\"}\n";
    expect_bad(T, "i.jsonl", SL_FORMAT_JSONL, NULL, j2, strlen(j2), SL_EFORMAT,
               ":1: expected a \"text\" field or \"prompt\" and \"completion\" fields, found neither", NULL);
    const char j3[] = "{\"text\": 5}\n";
    expect_bad(T, "j.jsonl", SL_FORMAT_JSONL, NULL, j3, strlen(j3), SL_EFORMAT,
               ":1: field \"text\": expected a string, found a number", NULL);
    const char j4[] = "{\"text\": \"a\"}\n{\"text\": \"b\",}\n";
    expect_bad(T, "k.jsonl", SL_FORMAT_JSONL, NULL, j4, strlen(j4), SL_EFORMAT, ":2: column", "malformed JSON");
    const char j5[] = "[\"text\"]\n";
    expect_bad(T, "l.jsonl", SL_FORMAT_JSONL, NULL, j5, strlen(j5), SL_EFORMAT, ":1: expected a JSON object, found an array",
               NULL);
    const char j6[] = "{\"text\": \"a\"} {\"text\": \"b\"}\n";
    expect_bad(T, "m.jsonl", SL_FORMAT_JSONL, NULL, j6, strlen(j6), SL_EFORMAT, ":1: column 15",
               "expected the end of the line");
    const char j7[] = "{\"text\": \"a\", \"user\": {}}\n";
    expect_bad(T, "n.jsonl", SL_FORMAT_JSONL, "user", j7, strlen(j7), SL_EFORMAT,
               "key field \"user\": expected a string, number or boolean, found an object", NULL);
    /* CSV quoting */
    const char c1[] = "mr,ref\n\"name[A]\",ok\n\"name[B],never closed\n";
    expect_bad(T, "o.csv", SL_FORMAT_E2E, NULL, c1, strlen(c1), SL_EFORMAT,
               ":3: the quoted field opened at byte offset 20 is never closed", NULL);
    const char c2[] = "mr,ref\n\"name[A]\"x,ok\n";
    expect_bad(T, "p.csv", SL_FORMAT_E2E, NULL, c2, strlen(c2), SL_EFORMAT,
               ":2: byte offset 16: expected ',' or the end of the line after a closing quote, found 'x'", NULL);
    const char c3[] = "mr,ref\nname[A],say \"hi\"\n";
    expect_bad(T, "q.csv", SL_FORMAT_E2E, NULL, c3, strlen(c3), SL_EFORMAT,
               ":2: byte offset 19: expected no '\"' inside an unquoted field", NULL);
    const char c4[] = "meaning,text\nname[A],x\n";
    expect_bad(T, "r.csv", SL_FORMAT_E2E, NULL, c4, strlen(c4), SL_EFORMAT,
               ":1: expected the E2E header 'mr,ref', found 'meaning,text'", NULL);
    const char c5[] = "mr,ref\nname[A],x,y\n";
    expect_bad(T, "s.csv", SL_FORMAT_E2E, NULL, c5, strlen(c5), SL_EFORMAT, ":2: expected 2 fields (mr,ref), found 3", NULL);
    const char c6[] = "mr,ref\nname[A],\n";
    expect_bad(T, "t.csv", SL_FORMAT_E2E, NULL, c6, strlen(c6), SL_EFORMAT,
               ":2: expected a non-empty reference (ref), found an empty field", NULL);
    const char c7[] = "mr,ref\n\"name[A], eatType pub\",x\n";
    expect_bad(T, "u.csv", SL_FORMAT_E2E, NULL, c7, strlen(c7), SL_EFORMAT,
               ":2: meaning representation, character 10: expected attribute[value], found 'eatType pub'", NULL);
    const char c8[] = "mr,ref\n";
    expect_bad(T, "v.csv", SL_FORMAT_E2E, NULL, c8, strlen(c8), SL_EFORMAT,
               "expected rows after the header 'mr,ref', found none", NULL);
}

static void test_tokenizer_mismatch(void **state) {
    (void)state;
    need(llama_tok);
    need(gpt2_tok);
    char dir[256], in[512], out[512];
    make_dir(dir, sizeof(dir), "mismatch");
    write_input(in, sizeof(in), dir, "in.txt", "Hello\n", 6);
    snprintf(out, sizeof(out), "%s/out", dir);
    sl_prepare_config c;
    base_config(&c, llama_tok, in, out);
    sl_prepare_summary s;
    assert_int_equal(sl_prepare_run(&c, &s), 0);
    sl_prepare_summary_free(&s);
    sl_shard sh;
    load_shard(&sh, out, "user_000.shard");
    sl_tokenizer *t;
    assert_int_equal(sl_tokenizer_load(&t, gpt2_tok), 0);
    assert_int_equal(sl_shard_check_tokenizer(&sh, sl_tokenizer_hash(t), gpt2_tok), SL_EFORMAT);
    const char *msg = sl_last_error();
    if (!strstr(msg, "user_000.shard") || !strstr(msg, gpt2_tok) || !strstr(msg, "037cb335abb25d1f"))
        fail_msg("%s", msg);
    sl_tokenizer_free(t);
    sl_shard_free(&sh);
}

/* ---------------------------------------------------------------- CLI and the real dev set */

static void test_cli(void **state) {
    (void)state;
    need(gpt2_tok);
    char dir[256], in[512], cmd[4096];
    make_dir(dir, sizeof(dir), "cli");
    const char text[] = "{\"text\": \"Hello\", \"lang\": \"en\"}\n{\"text\": \"Hello world\", \"lang\": \"fr\"}\n"
                        "{\"text\": \"Hello world!\", \"lang\": \"en\"}\n";
    write_input(in, sizeof(in), dir, "in.jsonl", text, strlen(text));
    snprintf(cmd, sizeof(cmd),
             "%s prepare --tokenizer %s --input %s --out %s/out --users 2 --partition by-key --key lang "
             "--val-fraction 0 > %s/stdout.txt 2>&1",
             SPLITLLM_BIN, gpt2_tok, in, dir, dir);
    assert_int_equal(system(cmd), 0);
    char p[600], *log;
    snprintf(p, sizeof(p), "%s/stdout.txt", dir);
    assert_int_equal(sl_read_file(p, &log, NULL), 0);
    if (!strstr(log, "prepare: 3 samples") || !strstr(log, "key 'lang': 2 values")) fail_msg("%s", log);
    sl_free(log);
    snprintf(p, sizeof(p), "%s/out", dir);
    cJSON *m = load_manifest(p);
    assert_int_equal(jnum(m, "val_fraction") * 1000, 0);
    assert_string_equal(cJSON_GetObjectItem(m, "format")->valuestring, "jsonl");
    cJSON_Delete(m);
    /* bad options exit 2 and say why; a bad input exits 1 with the file named */
    snprintf(cmd, sizeof(cmd), "%s prepare --tokenizer %s --input %s --out %s/o2 --partition random 2>/dev/null",
             SPLITLLM_BIN, gpt2_tok, in, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof(cmd), "%s prepare --tokenizer %s --input %s --format e2e --out %s/o3 2>%s/err.txt",
             SPLITLLM_BIN, gpt2_tok, in, dir, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    snprintf(p, sizeof(p), "%s/err.txt", dir);
    assert_int_equal(sl_read_file(p, &log, NULL), 0);
    if (!strstr(log, "in.jsonl:1: expected the E2E header")) fail_msg("%s", log);
    sl_free(log);
}

static void test_e2e_devset(void **state) {
    (void)state;
    const char *csv = test_asset("datasets/e2e_devset.csv");
    need(llama_tok);
    need(csv);
    char dir[256], out[512];
    make_dir(dir, sizeof(dir), "devset");
    snprintf(out, sizeof(out), "%s/out", dir);
    sl_prepare_config c;
    base_config(&c, llama_tok, csv, out);
    c.pc_val_fraction = 0.1;
    c.pc_users = 8;
    c.pc_partition = SL_PARTITION_DIRICHLET;
    c.pc_key = "eatType";
    c.pc_alpha = 0.5;
    c.pc_max_seq = 128;
    sl_prepare_summary s;
    if (sl_prepare_run(&c, &s) != 0) fail_msg("%s", sl_last_error());
    assert_int_equal(s.ps_samples, 4672); /* SOURCES.md: 4,672 references */
    assert_int_equal(s.ps_val_samples, 467);
    assert_int_equal(s.ps_key_values, 2); /* the dev set's eatType: "coffee shop" or absent */
    uint64_t train = 0;
    for (int u = 0; u < 8; u++) {
        assert_true(s.ps_user_samples[u] > 0);
        train += s.ps_user_samples[u];
    }
    assert_int_equal(train, 4205);
    print_message("e2e dev set: %llu samples, %llu truncated at T+1 = 129, %.3f s\n",
                  (unsigned long long)s.ps_samples, (unsigned long long)s.ps_truncated, s.ps_seconds);
    sl_prepare_summary_free(&s);
    /* the user shards feed the loader: one epoch of user 0 sees all its loss tokens */
    sl_shard sh;
    load_shard(&sh, out, "user_000.shard");
    sl_loader ld;
    sl_loader_config lc = {.lc_B = 4, .lc_T = 128, .lc_shuffle = 1, .lc_one_epoch = 1, .lc_seed = 1};
    assert_int_equal(sl_loader_open(&ld, &sh, &lc), 0);
    sl_batch b;
    assert_int_equal(sl_batch_alloc(&b, 4, 128), 0);
    uint64_t mask = 0;
    while (sl_loader_next(&ld, &b) == 0) mask += b.b_mask_tokens;
    assert_int_equal(mask, sl_shard_mask_tokens(&sh));
    sl_batch_free(&b);
    sl_loader_close(&ld);
    sl_shard_free(&sh);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_gpt2_exact),  cmocka_unit_test(test_text_llama2_separator),
        cmocka_unit_test(test_jsonl_gpt2_exact), cmocka_unit_test(test_e2e_parse),
        cmocka_unit_test(test_e2e_partitions),   cmocka_unit_test(test_truncation_and_strict),
        cmocka_unit_test(test_replace_output),   cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_tokenizer_mismatch), cmocka_unit_test(test_cli),
        cmocka_unit_test(test_e2e_devset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
