/* test_tokenizer_llama2.c: the llama2.c tokenizer (src/data/tokenizer_llama2.c) with
 * stories260K's tok512.bin against llama2.c itself. The expected ids below were printed by
 * karpathy/llama2.c run.c's encode() (commit 350e04f), built with a small driver that called
 * build_tokenizer(tok512.bin, 512) and encode(text, bos, eos=0) — never by this code. Also:
 * piece/decode semantics, decode(encode(s)) == s for random bytes, loading errors
 * (truncated files, bad lengths) and the `splitllm tokenize` command. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "data/tokenizer.h"
#include "test_util.h"
#include "util/common.h"

#define TOK512 "models/stories260K/tok512.bin"
#define TOK512_VOCAB 512
#define TOK512_BYTES 6227
#define MAX_EXPECTED 40
#define ROUND_TRIPS 1000
#define ROUND_TRIP_MAX_BYTES 48
#define TEST_SEED 20250113u

typedef struct {
    const char *text;
    int n;                 /* ids with BOS */
    int ids[MAX_EXPECTED]; /* run.c encode(text, bos=1, eos=0) */
} expected_case;

static const expected_case k_cases[] = {
    {"", 1, {1}},
    {"Once upon a time", 5, {1, 403, 407, 261, 378}},
    {"Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
     32,
     {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426,
      338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426}},
    {"Hello", 4, {1, 346, 306, 414}},
    /* unicode: é, ö and — are not pieces, so their bytes fall back to <0xXX> (+3) */
    {"h\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x99\x82",
     27,
     {1,   270, 485, 306, 414, 263, 198, 185, 420, 341, 410, 481, 410, 233,
      154, 168, 233, 159, 175, 235, 173, 161, 410, 243, 162, 156, 133}},
    /* control bytes and invalid UTF-8 */
    {"\x01\x7f\xff\xfe abc", 9, {1, 410, 4, 130, 258, 257, 261, 430, 429}},
    {"  multi   spaces\n\nnl\t", 20, {1,   410, 410, 284, 425, 421, 413, 417, 410, 410,
                                      262, 427, 412, 331, 419, 13,  13,  416, 421, 12}},
    /* a three-byte code point that is a piece of its own */
    {"\xe2\x84\xa2", 3, {1, 410, 507}},
    /* stray continuation bytes: grouped four at most, then byte fallback */
    {"\x80\x80\x80\x80\x80 x", 9, {1, 410, 131, 131, 131, 131, 131, 410, 444}},
    /* a code point cut off at the end */
    {"a\xc3", 3, {1, 261, 198}},
    /* equal scores overlapping ("ll" in "lll"): the leftmost pair merges first */
    {"Illl oooo llll", 10, {1, 359, 306, 421, 334, 347, 414, 278, 306, 421}},
    {"helllo wooorld", 9, {1, 281, 306, 421, 414, 263, 347, 304, 341}},
    {"a pppp", 5, {1, 261, 282, 339, 427}},
};

/* The first bytes of two real texts through run.c's encode(text, bos=1): count, sum and
 * FNV-1a-64 of the ids (the O(n^2) reference took seconds; the arrays are too long to list). */
typedef struct {
    const char *asset;
    size_t bytes;
    size_t n;
    long long sum;
    uint64_t fnv;
} long_case;

static const long_case k_long_cases[] = {
    {"datasets/tinystories_subset.txt", 20000, 9497, 3291968, 0x4db441d9aeccde93ull},
    {"datasets/tinyshakespeare.txt", 8000, 4861, 1693159, 0x39e41b435cc37a72ull},
};

static char tmp_dir[] = "/tmp/sl_test_tok_llama2_XXXXXX";

static int setup_dir(void **state) {
    (void)state;
    return mkdtemp(tmp_dir) == NULL ? -1 : 0;
}

static int remove_dir(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static sl_tokenizer *load_tok512(void) {
    const char *path = test_asset(TOK512);
    if (path == NULL) return NULL;
    sl_tokenizer *t = NULL;
    int rc = sl_tokenizer_load(&t, path);
    if (rc != 0) fprintf(stderr, "load: %s\n", sl_last_error());
    assert_int_equal(rc, 0);
    return t;
}

static uint64_t fnv_ids(const int *ids, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint32_t)ids[i]) * 0x100000001b3ull;
    return h;
}

/* ------------------------------------------------------------------------------------ */

static void test_load_facts(void **state) {
    (void)state;
    sl_tokenizer *t = load_tok512();
    if (t == NULL) skip();
    assert_int_equal(sl_tokenizer_get_kind(t), SL_TOKENIZER_LLAMA2);
    assert_int_equal(sl_tokenizer_vocab_size(t), TOK512_VOCAB);
    assert_int_equal(sl_tokenizer_bos(t), 1);
    assert_int_equal(sl_tokenizer_eot(t), 2);
    uint8_t want[SL_SHA256_BYTES];
    assert_int_equal(sl_sha256_file(test_asset(TOK512), want), 0);
    assert_memory_equal(sl_tokenizer_hash(t), want, SL_SHA256_BYTES);
    sl_tokenizer_free(t);

    /* The model may state the size: fewer tokens are read as llama2.c reads them. */
    assert_int_equal(sl_tokenizer_load_llama2(&t, test_asset(TOK512), 300), 0);
    assert_int_equal(sl_tokenizer_vocab_size(t), 300);
    sl_tokenizer_free(t);
    assert_int_equal(sl_tokenizer_load_llama2(&t, test_asset(TOK512), TOK512_VOCAB), 0);
    assert_int_equal(sl_tokenizer_vocab_size(t), TOK512_VOCAB);
    sl_tokenizer_free(t);
}

static void test_encode_matches_run_c(void **state) {
    (void)state;
    sl_tokenizer *t = load_tok512();
    if (t == NULL) skip();
    for (size_t c = 0; c < sizeof(k_cases) / sizeof(k_cases[0]); c++) {
        for (int bos = 1; bos >= 0; bos--) {
            int *ids = NULL;
            size_t n = 0, cap = 0;
            const char *text = k_cases[c].text;
            assert_int_equal(sl_tokenizer_encode(t, text, strlen(text), bos, &ids, &n, &cap), 0);
            const int *want = k_cases[c].ids + (bos ? 0 : 1);
            size_t want_n = (size_t)k_cases[c].n - (bos ? 0 : 1);
            if (n != want_n || (n > 0 && memcmp(ids, want, n * sizeof(int)) != 0)) {
                fprintf(stderr, "case %zu (bos %d): got %zu ids, want %zu\n", c, bos, n, want_n);
                for (size_t i = 0; i < n; i++) fprintf(stderr, "%d ", ids[i]);
                fprintf(stderr, "\n");
                fail();
            }
            sl_free(ids);
        }
    }
    sl_tokenizer_free(t);
}

static void test_long_texts_match_run_c(void **state) {
    (void)state;
    sl_tokenizer *t = load_tok512();
    if (t == NULL) skip();
    for (size_t c = 0; c < sizeof(k_long_cases) / sizeof(k_long_cases[0]); c++) {
        const char *path = test_asset(k_long_cases[c].asset);
        if (path == NULL) continue;
        char *text;
        size_t bytes;
        assert_int_equal(sl_read_file(path, &text, &bytes), 0);
        assert_true(bytes >= k_long_cases[c].bytes);
        int *ids = NULL;
        size_t n = 0, cap = 0;
        assert_int_equal(sl_tokenizer_encode(t, text, k_long_cases[c].bytes, 1, &ids, &n, &cap), 0);
        long long sum = 0;
        for (size_t i = 0; i < n; i++) sum += ids[i];
        printf("%s: %zu bytes -> %zu ids (run.c: %zu)\n", k_long_cases[c].asset, k_long_cases[c].bytes, n,
               k_long_cases[c].n);
        assert_int_equal(n, k_long_cases[c].n);
        assert_int_equal(sum, k_long_cases[c].sum);
        assert_int_equal(fnv_ids(ids, n), k_long_cases[c].fnv);
        sl_free(ids);
        sl_free(text);
    }
    sl_tokenizer_free(t);
}

/* Ids are appended after those already in the array. */
static void test_encode_appends(void **state) {
    (void)state;
    sl_tokenizer *t = load_tok512();
    if (t == NULL) skip();
    int *ids = NULL;
    size_t n = 0, cap = 0;
    assert_int_equal(sl_tokenizer_encode(t, "Hello", 5, 1, &ids, &n, &cap), 0);
    assert_int_equal(sl_tokenizer_encode(t, "Once upon a time", 16, 1, &ids, &n, &cap), 0);
    const int want[] = {1, 346, 306, 414, 1, 403, 407, 261, 378};
    assert_int_equal(n, sizeof(want) / sizeof(want[0]));
    assert_memory_equal(ids, want, sizeof(want));
    sl_free(ids);
    sl_tokenizer_free(t);
}

static void test_piece_semantics(void **state) {
    (void)state;
    sl_tokenizer *t = load_tok512();
    if (t == NULL) skip();
    char buf[8];
    const char *p;
    size_t len;
    /* 403 is " Once": the space goes after BOS only (llama2.c decode()). */
    assert_int_equal(sl_tokenizer_piece(t, 1, 403, buf, &p, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(p, "Once", 4);
    assert_int_equal(sl_tokenizer_piece(t, 378, 403, buf, &p, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(p, " Once", 5);
    /* <0x0A> is the byte 10, <0xC3> the byte 0xC3. */
    assert_int_equal(sl_tokenizer_piece(t, 403, 10 + 3, buf, &p, &len), 0);
    assert_int_equal(len, 1);
    assert_int_equal(p[0], '\n');
    assert_int_equal(sl_tokenizer_piece(t, 403, 0xC3 + 3, buf, &p, &len), 0);
    assert_int_equal(len, 1);
    assert_int_equal((unsigned char)p[0], 0xC3);
    /* safe_printf: a lone control byte is skipped, whitespace and text are printed. */
    assert_int_equal(sl_tokenizer_piece(t, 403, 1 + 3, buf, &p, &len), 0);
    assert_false(sl_tokenizer_piece_printable(p, len));
    assert_true(sl_tokenizer_piece_printable("\n", 1));
    assert_true(sl_tokenizer_piece_printable("a", 1));
    assert_true(sl_tokenizer_piece_printable("\xe2\x84\xa2", 3));
    assert_false(sl_tokenizer_piece_printable("", 0));
    assert_false(sl_tokenizer_piece_printable("\xc3", 1));
    assert_int_equal(sl_tokenizer_piece(t, 1, TOK512_VOCAB, buf, &p, &len), SL_EINVAL);
    assert_int_equal(sl_tokenizer_piece(t, 1, -1, buf, &p, &len), SL_EINVAL);
    sl_tokenizer_free(t);
}

/* decode(encode(s)) == s for random bytes (NUL included), with and without BOS; EOS and
 * BOS in the ids print nothing. */
static void test_round_trip_random(void **state) {
    (void)state;
    sl_tokenizer *t = load_tok512();
    if (t == NULL) skip();
    static const char *const words[] = {
        " ",    "Once", " upon", "a", "\n", "\xc3\xa9", "\xe2\x80\x94", "\xf0\x9f\x99\x82", "\x80",
        "\xff", "\xc3", "1",     ".", "  ", "'"};
    const int n_words = (int)(sizeof(words) / sizeof(words[0]));
    sl_rng rng;
    sl_rng_init(&rng, TEST_SEED, 1);
    char s[ROUND_TRIP_MAX_BYTES * 4 + 1];
    for (int trial = 0; trial < ROUND_TRIPS; trial++) {
        size_t len = 0;
        size_t want_len = sl_rng_u64(&rng) % ROUND_TRIP_MAX_BYTES;
        if (trial % 2) {
            while (len < want_len) s[len++] = (char)(sl_rng_u64(&rng) & 0xFF);
        } else {
            while (len < want_len) {
                const char *w = words[sl_rng_u64(&rng) % (uint64_t)n_words];
                memcpy(s + len, w, strlen(w));
                len += strlen(w);
            }
        }
        int bos = trial % 3 != 0;
        int *ids = NULL;
        size_t n = 0, cap = 0;
        assert_int_equal(sl_tokenizer_encode(t, s, len, bos, &ids, &n, &cap), 0);
        if (trial % 5 == 0) { /* an EOS at the end changes nothing */
            int *grown = sl_alloc((n + 1) * sizeof(int));
            memcpy(grown, ids, n * sizeof(int));
            grown[n++] = 2;
            sl_free(ids);
            ids = grown;
        }
        char *back;
        size_t back_len;
        assert_int_equal(sl_tokenizer_decode(t, ids, n, &back, &back_len), 0);
        if (back_len != len || memcmp(back, s, len) != 0) {
            fprintf(stderr, "trial %d: %zu bytes in, %zu out\n", trial, len, back_len);
            fail();
        }
        assert_int_equal(back[back_len], '\0');
        sl_free(back);
        sl_free(ids);
    }
    int bad[] = {1, 600};
    char *out;
    size_t out_len;
    assert_int_equal(sl_tokenizer_decode(t, bad, 2, &out, &out_len), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "600"));
    sl_tokenizer_free(t);
}

/* ---- loading errors ---------------------------------------------------------------- */

static void write_prefix(const char *dst, const char *data, size_t bytes) {
    FILE *fp = fopen(dst, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, bytes, fp), bytes);
    fclose(fp);
}

/* Byte offset just after token k's record in tok512.bin. */
static size_t record_end(const char *d, int k) {
    size_t off = 4;
    for (int i = 0; i <= k; i++) {
        int32_t len;
        memcpy(&len, d + off + 4, 4);
        off += 8 + (size_t)len;
    }
    return off;
}

static void expect_load_error(const char *path, int vocab_size, const char *needle) {
    sl_tokenizer *t = (sl_tokenizer *)0x1;
    int rc = vocab_size ? sl_tokenizer_load_llama2(&t, path, vocab_size) : sl_tokenizer_load(&t, path);
    printf("  %s -> %s\n", needle, sl_last_error());
    assert_int_equal(rc, SL_EFORMAT);
    assert_null(t);
    assert_non_null(strstr(sl_last_error(), path));
    assert_non_null(strstr(sl_last_error(), needle));
}

static void test_truncated_files(void **state) {
    (void)state;
    const char *src = test_asset(TOK512);
    if (src == NULL) skip();
    char *d;
    size_t bytes;
    assert_int_equal(sl_read_file(src, &d, &bytes), 0);
    assert_int_equal(bytes, TOK512_BYTES);
    char path[512];
    snprintf(path, sizeof(path), "%s/tok_cut.bin", tmp_dir);

    /* Cut inside a record: the score+length, then the piece bytes. */
    size_t end100 = record_end(d, 100);
    write_prefix(path, d, end100 + 5);
    expect_load_error(path, 0, "truncated at offset");
    write_prefix(path, d, end100 + 9);
    expect_load_error(path, 0, "truncated at offset");
    expect_load_error(path, TOK512_VOCAB, "truncated at offset");
    /* Cut at a record boundary: too few tokens for byte fallback, or fewer than the model says. */
    write_prefix(path, d, record_end(d, 199));
    expect_load_error(path, 0, "200 tokens, expected at least 259");
    write_prefix(path, d, record_end(d, 299));
    expect_load_error(path, TOK512_VOCAB, "vocabulary has 512 tokens, the file ends after 300");
    /* The header alone, and less. */
    write_prefix(path, d, 4);
    expect_load_error(path, 0, "0 tokens");
    write_prefix(path, d, 2);
    expect_load_error(path, 0, "too short");
    /* A piece longer than max_token_length (7). */
    int32_t long_len = 8;
    memcpy(d + 4 + 4, &long_len, 4);
    write_prefix(path, d, bytes);
    expect_load_error(path, 0, "token 0 has length 8, expected 0..7");
    sl_free(d);
}

/* ---- the command -------------------------------------------------------------------- */

static char *run_capture(const char *cmd, int *status) {
    FILE *fp = popen(cmd, "r");
    assert_non_null(fp);
    static char out[4096];
    size_t n = fread(out, 1, sizeof(out) - 1, fp);
    out[n] = '\0';
    *status = pclose(fp);
    return out;
}

static void test_cli(void **state) {
    (void)state;
    const char *tok = test_asset(TOK512);
    if (tok == NULL) skip();
    char cmd[2048];
    int status;
    snprintf(cmd, sizeof(cmd), "printf 'Once upon a time' | '%s' tokenize --tokenizer '%s' --bos", SPLITLLM_BIN, tok);
    assert_string_equal(run_capture(cmd, &status), "1 403 407 261 378\n");
    assert_int_equal(status, 0);
    snprintf(cmd, sizeof(cmd), "printf 'Hello' | '%s' tokenize --tokenizer '%s'", SPLITLLM_BIN, tok);
    assert_string_equal(run_capture(cmd, &status), "346 306 414\n");
    snprintf(cmd, sizeof(cmd), "printf '1 403 407\\n261 378 2' | '%s' tokenize --tokenizer '%s' --decode", SPLITLLM_BIN,
             tok);
    assert_string_equal(run_capture(cmd, &status), "Once upon a time");
    assert_int_equal(status, 0);
    /* An id out of range is named with its position and value. */
    snprintf(cmd, sizeof(cmd), "printf '1 403 512' | '%s' tokenize --tokenizer '%s' --decode 2>&1", SPLITLLM_BIN, tok);
    const char *err = run_capture(cmd, &status);
    assert_int_not_equal(status, 0);
    assert_non_null(strstr(err, "token 3"));
    assert_non_null(strstr(err, "512"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_facts),
        cmocka_unit_test(test_encode_matches_run_c),
        cmocka_unit_test(test_long_texts_match_run_c),
        cmocka_unit_test(test_encode_appends),
        cmocka_unit_test(test_piece_semantics),
        cmocka_unit_test(test_round_trip_random),
        cmocka_unit_test(test_truncated_files),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
