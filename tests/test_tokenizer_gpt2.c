/* test_tokenizer_gpt2.c: GPT-2's byte-level BPE (src/data/tokenizer_gpt2.c) against
 * (1) llama.cpp's GPT-2 vocabulary tests (assets tokenizers/gpt2/gpt2_testcases.inp/.out),
 * read exactly as llama.cpp's test-tokenizer-0 reads them; (2) tiny-shakespeare through a
 * Python re-implementation of OpenAI's encoder.py (regex module, same encoder.json/vocab.bpe):
 * count, sum and FNV-1a-64 of its ids; (3) properties: decode(encode(s)) == s for 2000
 * random byte strings, invalid UTF-8 splits the text, <|endoftext|> is one token;
 * (4) malformed vocabulary files; (5) `splitllm tokenize` round trip. */
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

#define GPT2_DIR "tokenizers/gpt2"
#define GPT2_ENCODER "tokenizers/gpt2/encoder.json"
#define GPT2_VOCAB 50257
#define GPT2_EOT 50256
#define CASE_SEPARATOR "\n__ggml_vocab_test__\n"
#define EXPECTED_CASES 46
#define ROUND_TRIPS 2000
#define ROUND_TRIP_MAX_PARTS 24
#define TEST_SEED 20250113u

/* tinyshakespeare.txt through the Python reference (338025 is also the count nanoGPT's
 * shakespeare prepare.py reports with tiktoken's gpt2 encoding). */
#define SHAKESPEARE_IDS 338025
#define SHAKESPEARE_SUM 1405356689LL
#define SHAKESPEARE_FNV 0xb547ad363c19676eull

static char tmp_dir[] = "/tmp/sl_test_tok_gpt2_XXXXXX";
static sl_tokenizer *g_tok;

static int setup(void **state) {
    (void)state;
    if (mkdtemp(tmp_dir) == NULL) return -1;
    const char *dir = test_asset(GPT2_DIR);
    if (dir == NULL) return 0; /* tests skip */
    if (sl_tokenizer_load(&g_tok, dir) != 0) {
        fprintf(stderr, "load: %s\n", sl_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    sl_tokenizer_free(g_tok);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void encode(const char *s, size_t len, int **ids, size_t *n) {
    size_t cap = 0;
    *ids = NULL;
    *n = 0;
    int rc = sl_tokenizer_encode(g_tok, s, len, 0, ids, n, &cap);
    if (rc != 0) fprintf(stderr, "encode: %s\n", sl_last_error());
    assert_int_equal(rc, 0);
}

static void print_ids(const char *label, const int *ids, size_t n) {
    fprintf(stderr, "%s:", label);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* ------------------------------------------------------------------------------------ */

static void test_load_facts(void **state) {
    (void)state;
    if (g_tok == NULL) skip();
    assert_int_equal(sl_tokenizer_get_kind(g_tok), SL_TOKENIZER_GPT2);
    assert_int_equal(sl_tokenizer_vocab_size(g_tok), GPT2_VOCAB);
    assert_int_equal(sl_tokenizer_eot(g_tok), GPT2_EOT);
    assert_int_equal(sl_tokenizer_bos(g_tok), -1);
    /* The encoder.json path loads the same tokenizer (vocab.bpe beside it), same hash. */
    sl_tokenizer *t;
    assert_int_equal(sl_tokenizer_load(&t, test_asset(GPT2_ENCODER)), 0);
    assert_memory_equal(sl_tokenizer_hash(t), sl_tokenizer_hash(g_tok), SL_SHA256_BYTES);
    sl_tokenizer_free(t);
    /* The hash covers encoder.json then vocab.bpe. */
    char *a, *b;
    size_t na, nb;
    char bpe[1024];
    snprintf(bpe, sizeof(bpe), "%s/vocab.bpe", test_asset(GPT2_DIR));
    assert_int_equal(sl_read_file(test_asset(GPT2_ENCODER), &a, &na), 0);
    assert_int_equal(sl_read_file(bpe, &b, &nb), 0);
    char *both = sl_alloc(na + nb);
    memcpy(both, a, na);
    memcpy(both + na, b, nb);
    uint8_t want[SL_SHA256_BYTES];
    sl_sha256(both, na + nb, want);
    assert_memory_equal(sl_tokenizer_hash(g_tok), want, SL_SHA256_BYTES);
    sl_free(both);
    sl_free(a);
    sl_free(b);
}

/* llama.cpp's read_tests(): the .inp file split at "\n__ggml_vocab_test__\n" (the file ends
 * with one, so nothing follows the last), one .out line of space-separated ids per input. */
static void test_llama_cpp_cases(void **state) {
    (void)state;
    const char *inp_path = test_asset(GPT2_DIR "/gpt2_testcases.inp");
    const char *out_path = test_asset(GPT2_DIR "/gpt2_testcases.out");
    if (g_tok == NULL || inp_path == NULL || out_path == NULL) skip();
    char *inp, *out;
    size_t inp_n, out_n;
    assert_int_equal(sl_read_file(inp_path, &inp, &inp_n), 0);
    assert_int_equal(sl_read_file(out_path, &out, &out_n), 0);
    size_t sep_n = strlen(CASE_SEPARATOR);
    size_t pos = 0, out_pos = 0;
    int cases = 0, failed = 0;
    while (pos < inp_n) {
        const char *next = memmem(inp + pos, inp_n - pos, CASE_SEPARATOR, sep_n);
        size_t end = next ? (size_t)(next - inp) : inp_n;
        /* the expected line */
        assert_true(out_pos < out_n);
        const char *nl = memchr(out + out_pos, '\n', out_n - out_pos);
        size_t line_end = nl ? (size_t)(nl - out) : out_n;
        int want[256];
        size_t want_n = 0;
        for (char *p = out + out_pos; p < out + line_end;) {
            char *stop;
            long id = strtol(p, &stop, 10);
            if (stop == p) break;
            assert_true(want_n < sizeof(want) / sizeof(want[0]));
            want[want_n++] = (int)id;
            p = stop;
        }
        out_pos = line_end + 1;

        int *ids;
        size_t n;
        encode(inp + pos, end - pos, &ids, &n);
        if (n != want_n || (n > 0 && memcmp(ids, want, n * sizeof(int)) != 0)) {
            fprintf(stderr, "case %d \"%.*s\"\n", cases, (int)(end - pos), inp + pos);
            print_ids("  got ", ids, n);
            print_ids("  want", want, want_n);
            failed++;
        }
        sl_free(ids);
        cases++;
        pos = next ? end + sep_n : inp_n;
    }
    printf("%d llama.cpp cases, %d failed\n", cases, failed);
    assert_int_equal(cases, EXPECTED_CASES);
    assert_int_equal(failed, 0);
    assert_true(out_pos >= out_n); /* every expected line used */
    sl_free(inp);
    sl_free(out);
}

static void test_shakespeare_matches_reference(void **state) {
    (void)state;
    const char *path = test_asset("datasets/tinyshakespeare.txt");
    if (g_tok == NULL || path == NULL) skip();
    char *text;
    size_t bytes;
    assert_int_equal(sl_read_file(path, &text, &bytes), 0);
    int *ids;
    size_t n;
    encode(text, bytes, &ids, &n);
    long long sum = 0;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        sum += ids[i];
        h = (h ^ (uint32_t)ids[i]) * 0x100000001b3ull;
    }
    printf("tinyshakespeare: %zu bytes -> %zu ids (reference %d)\n", bytes, n, SHAKESPEARE_IDS);
    assert_int_equal(n, SHAKESPEARE_IDS);
    assert_int_equal(sum, SHAKESPEARE_SUM);
    assert_int_equal(h, SHAKESPEARE_FNV);
    sl_free(ids);
    sl_free(text);
}

static void test_special_and_pieces(void **state) {
    (void)state;
    if (g_tok == NULL) skip();
    int *ids;
    size_t n;
    encode("a<|endoftext|>b<|endoftext|>", 28, &ids, &n);
    const int want[] = {64, GPT2_EOT, 65, GPT2_EOT};
    assert_int_equal(n, 4);
    assert_memory_equal(ids, want, sizeof(want));
    sl_free(ids);
    /* A broken special token is ordinary text. */
    encode("<|endoftext|", 12, &ids, &n);
    for (size_t i = 0; i < n; i++) assert_int_not_equal(ids[i], GPT2_EOT);
    sl_free(ids);

    char buf[8];
    const char *p;
    size_t len;
    assert_int_equal(sl_tokenizer_piece(g_tok, -1, GPT2_EOT, buf, &p, &len), 0);
    assert_int_equal(len, 13);
    assert_memory_equal(p, "<|endoftext|>", 13);
    assert_int_equal(sl_tokenizer_piece(g_tok, 1, 220, buf, &p, &len), 0); /* no BOS rule here */
    assert_int_equal(len, 1);
    assert_int_equal(p[0], ' ');
    assert_int_equal(sl_tokenizer_piece(g_tok, -1, 15496, buf, &p, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(p, "Hello", 5);
    assert_int_equal(sl_tokenizer_piece(g_tok, -1, GPT2_VOCAB, buf, &p, &len), SL_EINVAL);
}

/* Bytes that are not UTF-8 split the text: the parts around them encode as on their own. */
static void test_invalid_utf8_splits(void **state) {
    (void)state;
    if (g_tok == NULL) skip();
    const char *parts[] = {"Hello wor", "\xff\xfe", "ld 12", "\xc3", " x"};
    int *whole;
    size_t n_whole;
    char s[64];
    size_t len = 0;
    for (int i = 0; i < 5; i++) {
        memcpy(s + len, parts[i], strlen(parts[i]));
        len += strlen(parts[i]);
    }
    encode(s, len, &whole, &n_whole);
    int joined[64];
    size_t n_joined = 0;
    for (int i = 0; i < 5; i++) {
        int *ids;
        size_t n;
        encode(parts[i], strlen(parts[i]), &ids, &n);
        memcpy(joined + n_joined, ids, n * sizeof(int));
        n_joined += n;
        sl_free(ids);
    }
    if (n_whole != n_joined || memcmp(whole, joined, n_whole * sizeof(int)) != 0) {
        print_ids("whole", whole, n_whole);
        print_ids("parts", joined, n_joined);
        fail();
    }
    sl_free(whole);
}

/* decode(encode(s)) == s: random bytes, random valid UTF-8, and mixtures of spaces, digits,
 * letters, contractions and special tokens. */
static size_t random_utf8(sl_rng *r, char *out) {
    static const uint32_t ranges[][2] = {
        {0x01, 0x7F}, {0x80, 0x7FF}, {0x800, 0xD7FF}, {0xE000, 0xFFFF}, {0x10000, 0x10FFFF}};
    const uint32_t *rg = ranges[sl_rng_u64(r) % 5];
    uint32_t cp = rg[0] + (uint32_t)(sl_rng_u64(r) % (rg[1] - rg[0] + 1));
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static void test_round_trip_random(void **state) {
    (void)state;
    if (g_tok == NULL) skip();
    static const char *const words[] = {" ",
                                        "  ",
                                        "\n",
                                        "\t",
                                        "\r\n",
                                        "Hello",
                                        " world",
                                        "'s",
                                        "'ll",
                                        "'S",
                                        "123",
                                        " 4",
                                        "\xc3\xa9",
                                        "\xe6\x97\xa5\xe6\x9c\xac",
                                        "\xf0\x9f\x98\x80",
                                        "!!",
                                        "...",
                                        "\xc2\xa0",
                                        "\xe3\x80\x80",
                                        "<|endoftext|>",
                                        "<|endo",
                                        "\xff",
                                        "\x80",
                                        "\0"};
    const int n_words = (int)(sizeof(words) / sizeof(words[0]));
    sl_rng rng;
    sl_rng_init(&rng, TEST_SEED, 2);
    char s[ROUND_TRIP_MAX_PARTS * 16];
    int kinds[3] = {0, 0, 0};
    for (int trial = 0; trial < ROUND_TRIPS; trial++) {
        int kind = trial % 3;
        size_t parts = sl_rng_u64(&rng) % ROUND_TRIP_MAX_PARTS, len = 0;
        for (size_t k = 0; k < parts; k++) {
            if (kind == 0) {
                s[len++] = (char)(sl_rng_u64(&rng) & 0xFF);
            } else if (kind == 1) {
                len += random_utf8(&rng, s + len);
            } else {
                int w = (int)(sl_rng_u64(&rng) % (uint64_t)n_words);
                size_t wl = words[w][0] == '\0' ? 1 : strlen(words[w]);
                memcpy(s + len, words[w], wl);
                len += wl;
            }
        }
        int *ids;
        size_t n;
        encode(s, len, &ids, &n);
        char *back;
        size_t back_len;
        assert_int_equal(sl_tokenizer_decode(g_tok, ids, n, &back, &back_len), 0);
        if (back_len != len || memcmp(back, s, len) != 0) {
            fprintf(stderr, "trial %d (kind %d): %zu bytes in, %zu out\n", trial, kind, len, back_len);
            print_ids("ids", ids, n);
            fail();
        }
        kinds[kind]++;
        sl_free(back);
        sl_free(ids);
    }
    printf("round trips: %d random bytes, %d random UTF-8, %d mixtures\n", kinds[0], kinds[1], kinds[2]);
    int bad[] = {15496, -1};
    char *out;
    size_t out_len;
    assert_int_equal(sl_tokenizer_decode(g_tok, bad, 2, &out, &out_len), SL_EINVAL);
    assert_null(out);
}

/* Long runs (one pre-token of a megabyte) go through the heap-based merge. */
static void test_long_runs(void **state) {
    (void)state;
    if (g_tok == NULL) skip();
    const size_t bytes = 1 << 20;
    char *s = sl_alloc(bytes);
    const char fill[] = {'a', ' ', '=', '\xff'};
    for (int f = 0; f < 4; f++) {
        memset(s, fill[f], bytes);
        int *ids;
        size_t n;
        encode(s, bytes, &ids, &n);
        char *back;
        size_t back_len;
        assert_int_equal(sl_tokenizer_decode(g_tok, ids, n, &back, &back_len), 0);
        assert_int_equal(back_len, bytes);
        assert_memory_equal(back, s, bytes);
        sl_free(back);
        sl_free(ids);
    }
    sl_free(s);
}

/* ---- malformed files ---------------------------------------------------------------- */

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void expect_dir_error(const char *encoder, const char *merges, const char *needle) {
    char enc[512], bpe[512];
    snprintf(enc, sizeof(enc), "%s/encoder.json", tmp_dir);
    snprintf(bpe, sizeof(bpe), "%s/vocab.bpe", tmp_dir);
    write_text(enc, encoder);
    write_text(bpe, merges);
    sl_tokenizer *t = (sl_tokenizer *)0x1;
    int rc = sl_tokenizer_load(&t, tmp_dir);
    printf("  %s -> %s\n", needle, sl_last_error());
    assert_int_equal(rc, SL_EFORMAT);
    assert_null(t);
    assert_non_null(strstr(sl_last_error(), needle));
}

/* A complete small vocabulary: the 256 byte tokens (id = byte), then "ab" (256) and "abc"
 * (257), then `extra`. Bytes are written in GPT-2's alphabet: printable Latin-1 stands for
 * itself, the others take U+0100 up in byte order. */
static char *small_encoder(const char *extra) {
    static char json[16384];
    size_t at = 0;
    int remapped = 0;
    at += (size_t)snprintf(json + at, sizeof(json) - at, "{");
    for (int b = 0; b < 256; b++) {
        int self = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cp = self ? b : 256 + remapped++;
        at += (size_t)snprintf(json + at, sizeof(json) - at, "\"\\u%04x\": %d, ", cp, b);
    }
    snprintf(json + at, sizeof(json) - at, "\"ab\": 256, \"abc\": 257%s}", extra);
    return json;
}

static void test_malformed_files(void **state) {
    (void)state;
    expect_dir_error(small_encoder(""), "#version: 0.2\na b\nab c\nx\n", "vocab.bpe:4: expected two tokens");
    /* Without the bad line the pair loads and merges. */
    char enc[512];
    snprintf(enc, sizeof(enc), "%s/encoder.json", tmp_dir);
    write_text(enc, small_encoder(""));
    char bpe[512];
    snprintf(bpe, sizeof(bpe), "%s/vocab.bpe", tmp_dir);
    write_text(bpe, "#version: 0.2\na b\nab c\n");
    sl_tokenizer *t;
    assert_int_equal(sl_tokenizer_load(&t, tmp_dir), 0);
    assert_int_equal(sl_tokenizer_vocab_size(t), 258);
    assert_int_equal(sl_tokenizer_eot(t), -1);
    int *ids = NULL;
    size_t n = 0, cap = 0;
    assert_int_equal(sl_tokenizer_encode(t, "abc ab", 6, 0, &ids, &n, &cap), 0);
    const int want[] = {257, ' ', 256}; /* " ab": no merge takes the space */
    assert_int_equal(n, 3);
    assert_memory_equal(ids, want, sizeof(want));
    sl_free(ids);
    sl_tokenizer_free(t);

    expect_dir_error(small_encoder(""), "#version: 0.2\na b\nab d\n", "vocab.bpe:3: merge \"ab d\": the merged token");
    expect_dir_error(small_encoder(""), "a  b\n", "vocab.bpe:1: expected two tokens separated by one space");
    expect_dir_error(small_encoder(", \"x\": 1"), "", "id 1 is used twice");
    expect_dir_error(small_encoder(", \"y\": 9999"), "", "id out of range");
    expect_dir_error(small_encoder(", \"\\u4e00\": 258"), "", "U+4E00 outside GPT-2's byte alphabet");
    expect_dir_error("{\"a\": 0,", "", "not valid JSON");
    expect_dir_error("{\"a\": 0}", "", "no token for byte 0x00");
}

/* ---- the command -------------------------------------------------------------------- */

static void test_cli_round_trip(void **state) {
    (void)state;
    const char *dir = test_asset(GPT2_DIR);
    if (dir == NULL) skip();
    char in[512], ids[512], back[512], cmd[4096];
    snprintf(in, sizeof(in), "%s/in.txt", tmp_dir);
    snprintf(ids, sizeof(ids), "%s/ids.txt", tmp_dir);
    snprintf(back, sizeof(back), "%s/back.txt", tmp_dir);
    const char text[] = "Hello, y'all! \xf0\x9f\x98\x81\n\tcaf\xc3\xa9 \xff<|endoftext|>  33333\n";
    FILE *fp = fopen(in, "wb");
    fwrite(text, 1, sizeof(text) - 1, fp);
    fclose(fp);
    snprintf(cmd, sizeof(cmd),
             "'%s' tokenize --tokenizer '%s' < '%s' > '%s' && '%s' tokenize --tokenizer '%s' --decode < '%s' > '%s'",
             SPLITLLM_BIN, dir, in, ids, SPLITLLM_BIN, dir, ids, back);
    assert_int_equal(system(cmd), 0);
    char *got;
    size_t got_n;
    assert_int_equal(sl_read_file(back, &got, &got_n), 0);
    assert_int_equal(got_n, sizeof(text) - 1);
    assert_memory_equal(got, text, got_n);
    sl_free(got);
    /* the ids file is one line of ids, the special token among them */
    assert_int_equal(sl_read_file(ids, &got, &got_n), 0);
    assert_true(got_n > 0 && got[got_n - 1] == '\n' && memchr(got, '\n', got_n) == got + got_n - 1);
    assert_non_null(strstr(got, " 50256 "));
    sl_free(got);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_facts),
        cmocka_unit_test(test_llama_cpp_cases),
        cmocka_unit_test(test_shakespeare_matches_reference),
        cmocka_unit_test(test_special_and_pieces),
        cmocka_unit_test(test_invalid_utf8_splits),
        cmocka_unit_test(test_round_trip_random),
        cmocka_unit_test(test_long_runs),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_cli_round_trip),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
