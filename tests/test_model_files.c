/* test_model_files.c: the model and adapter file layer (src/model/model.c, lora_io.c) —
 * (1) malformed llm.c GPT-2 checkpoints and llama2.c .bin files, each made by writing a
 * valid tiny model and editing its bytes, are rejected with SL_EFORMAT or SL_EIO and a
 * message that names the file, what was expected and what was found; (2) init-model
 * round trips (config back, padding rows zero, seeded bytes, documented weight
 * statistics, the CLI, the real stories260K asset); (3) LoRA adapter files: round trip,
 * block slices, every mismatch and malformed file named, no temp file left by a failed
 * save; (4) no file descriptor leaks across many failed loads.
 *
 * Not for: the forward/backward pass over the loaded weights (test_segment, test_torch_reference). */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/lora.h"
#include "model/model.h"
#include "test_util.h"
#include "util/common.h"
#include "util/safetensors.h"

static char tmp_dir[] = "/tmp/sl_test_model_files_XXXXXX";

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

static void tmp_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", tmp_dir, name); }

/* ------------------------------------------------------------------------------------ */
/* Helpers */

static void write_bytes(const char *path, const void *data, size_t bytes) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (bytes > 0) assert_int_equal(fwrite(data, 1, bytes, fp), bytes);
    assert_int_equal(fclose(fp), 0);
}

static void read_bytes(const char *path, char **out, size_t *bytes) {
    assert_int_equal(sl_read_file(path, out, bytes), 0);
}

static void put_i32(char *buf, int index, int32_t v) { memcpy(buf + 4 * (size_t)index, &v, sizeof(v)); }

/* Entries of a folder, "." and ".." excluded. */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

/* Asserts that the last error names path and holds every one of the NULL-terminated
 * substrings; prints it either way, so a failing run shows the message. */
static void expect_message(const char *path, ...) {
    const char *msg = sl_last_error();
    if (path != NULL && strstr(msg, path) == NULL) {
        print_error("message does not name '%s': %s\n", path, msg);
        fail();
    }
    va_list ap;
    va_start(ap, path);
    const char *want;
    while ((want = va_arg(ap, const char *)) != NULL) {
        if (strstr(msg, want) == NULL) {
            print_error("message lacks '%s': %s\n", want, msg);
            va_end(ap);
            fail();
        }
    }
    va_end(ap);
}

/* Loading path must fail with SL_EFORMAT or SL_EIO, leave the model zeroed (so a second
 * free is harmless), and say all the substrings; then the model is freed again. */
#define EXPECT_LOAD_FAILS(path, ...)                                                                                   \
    do {                                                                                                               \
        sl_model m_;                                                                                                   \
        sl_clear_error();                                                                                              \
        int rc_ = sl_model_load(&m_, (path));                                                                          \
        if (rc_ != SL_EFORMAT && rc_ != SL_EIO) {                                                                      \
            print_error("%s: rc %d, expected SL_EFORMAT or SL_EIO; message: %s\n", (path), rc_, sl_last_error());     \
            if (rc_ == 0) sl_model_free(&m_);                                                                          \
            fail();                                                                                                    \
        }                                                                                                              \
        assert_null(m_.layers);                                                                                        \
        assert_null(m_.file.m_data);                                                                                   \
        assert_null(m_.rope_cos);                                                                                      \
        sl_model_free(&m_);                                                                                            \
        expect_message((path), __VA_ARGS__, NULL);                                                                     \
    } while (0)

static void assert_config_equal(const sl_config *a, const sl_config *b) {
    assert_int_equal(a->arch, b->arch);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->hidden_dim, b->hidden_dim);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->padded_vocab_size, b->padded_vocab_size);
    assert_int_equal(a->max_seq, b->max_seq);
    assert_int_equal(a->shared_classifier, b->shared_classifier);
}

static void tiny(sl_config *c, sl_arch arch) { assert_int_equal(sl_config_preset(c, arch, "tiny"), 0); }

/* Writes a valid tiny model of arch to name and returns its bytes (sl_free them). */
static char *valid_model(sl_arch arch, const char *name, char *path, size_t cap, size_t *bytes) {
    sl_config c;
    tiny(&c, arch);
    tmp_path(path, cap, name);
    assert_int_equal(sl_model_write_random(&c, 1, path), 0);
    char *buf;
    read_bytes(path, &buf, bytes);
    return buf;
}

/* Writes the valid bytes with header int index set to v to a file called name and
 * returns its path in out. */
static void with_field(const char *name, const char *valid, size_t bytes, int index, int32_t v, char *out,
                       size_t cap) {
    char *copy = malloc(bytes);
    assert_non_null(copy);
    memcpy(copy, valid, bytes);
    put_i32(copy, index, v);
    tmp_path(out, cap, name);
    write_bytes(out, copy, bytes);
    free(copy);
}

static double mean_of(const float *p, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += p[i];
    return s / (double)n;
}

static double std_of(const float *p, size_t n) {
    double mu = mean_of(p, n), s = 0;
    for (size_t i = 0; i < n; i++) s += ((double)p[i] - mu) * ((double)p[i] - mu);
    return sqrt(s / (double)n);
}

static void assert_all_equal(const float *p, size_t n, float v) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != v) {
            print_error("element %zu is %g, expected exactly %g\n", i, (double)p[i], (double)v);
            fail();
        }
    }
}

/* std of n values within 10% of want, mean within 4 standard errors of 0. */
static void assert_normal(const float *p, size_t n, double want_std) {
    double sd = std_of(p, n), mu = mean_of(p, n);
    if (fabs(sd - want_std) > 0.1 * want_std || fabs(mu) > 4.0 * want_std / sqrt((double)n)) {
        print_error("%zu values: std %g (expected %g within 10%%), mean %g\n", n, sd, want_std, mu);
        fail();
    }
}

/* ------------------------------------------------------------------------------------ */
/* 1. Malformed model files */

static void test_missing_path_and_folder(void **state) {
    (void)state;
    char path[256];
    tmp_path(path, sizeof(path), "no_such_model.bin");
    EXPECT_LOAD_FAILS(path, "cannot open", "No such file");
    char dir[256];
    tmp_path(dir, sizeof(dir), "a_folder.bin");
    assert_int_equal(mkdir(dir, 0755), 0);
    EXPECT_LOAD_FAILS(dir, "expected a regular file", "folder");
    /* a pipe with no writer: must be refused at once, not block in open() */
    char fifo[256];
    tmp_path(fifo, sizeof(fifo), "a_pipe.bin");
    assert_int_equal(mkfifo(fifo, 0644), 0);
    EXPECT_LOAD_FAILS(fifo, "expected a regular file", "pipe");
    unlink(fifo);
}

static void test_empty_and_short(void **state) {
    (void)state;
    char path[256];
    tmp_path(path, sizeof(path), "empty.bin");
    write_bytes(path, "", 0);
    EXPECT_LOAD_FAILS(path, "0 bytes", "too short", "1024", "28");

    size_t bytes;
    char good[256], bad[256];
    char *gpt2 = valid_model(SL_ARCH_GPT2, "short_src_gpt2.bin", good, sizeof(good), &bytes);
    /* shorter than either header */
    tmp_path(bad, sizeof(bad), "short20.bin");
    write_bytes(bad, gpt2 + 4, 20); /* no magic */
    EXPECT_LOAD_FAILS(bad, "20 bytes", "too short", "1024", "28");
    write_bytes(bad, gpt2, 20);
    EXPECT_LOAD_FAILS(bad, "20 bytes", "llm.c", "1024", "truncated");
    /* the llm.c magic, but shorter than its 1024-byte header: must not be read as llama2.c */
    tmp_path(bad, sizeof(bad), "short_gpt2_header.bin");
    write_bytes(bad, gpt2, 100);
    EXPECT_LOAD_FAILS(bad, "llm.c", "100 bytes", "1024", "truncated");
    write_bytes(bad, gpt2, 1023);
    EXPECT_LOAD_FAILS(bad, "llm.c", "1023 bytes", "1024", "truncated");
    /* exactly the header, no weights */
    write_bytes(bad, gpt2, 1024);
    EXPECT_LOAD_FAILS(bad, "file is 1024 bytes", "truncated");
    sl_free(gpt2);

    char *llama = valid_model(SL_ARCH_LLAMA, "short_src_llama.bin", good, sizeof(good), &bytes);
    tmp_path(bad, sizeof(bad), "short_llama.bin");
    write_bytes(bad, llama, 27);
    EXPECT_LOAD_FAILS(bad, "27 bytes", "too short", "28");
    write_bytes(bad, llama, 28);
    EXPECT_LOAD_FAILS(bad, "file is 28 bytes", "truncated");
    sl_free(llama);
}

/* Truncated by one byte and by half, and one byte too many. */
static void check_lengths(sl_arch arch) {
    size_t bytes;
    char good[256], bad[256], want[64], found[64];
    char *buf = valid_model(arch, "len_src.bin", good, sizeof(good), &bytes);
    sl_model m;
    assert_int_equal(sl_model_load(&m, good), 0);
    sl_model_free(&m);
    snprintf(want, sizeof(want), "expected %zu", bytes);
    tmp_path(bad, sizeof(bad), "len.bin");

    write_bytes(bad, buf, bytes - 1);
    snprintf(found, sizeof(found), "file is %zu bytes", bytes - 1);
    EXPECT_LOAD_FAILS(bad, found, want, "truncated");

    write_bytes(bad, buf, bytes / 2);
    snprintf(found, sizeof(found), "file is %zu bytes", bytes / 2);
    EXPECT_LOAD_FAILS(bad, found, want, "truncated");

    char *longer = malloc(bytes + 1);
    assert_non_null(longer);
    memcpy(longer, buf, bytes);
    longer[bytes] = 0;
    write_bytes(bad, longer, bytes + 1);
    snprintf(found, sizeof(found), "file is %zu bytes", bytes + 1);
    EXPECT_LOAD_FAILS(bad, found, want);
    assert_null(strstr(sl_last_error(), "truncated"));
    free(longer);
    sl_free(buf);
}

static void test_gpt2_lengths(void **state) {
    (void)state;
    check_lengths(SL_ARCH_GPT2);
}

static void test_llama_lengths(void **state) {
    (void)state;
    check_lengths(SL_ARCH_LLAMA);
}

static void test_gpt2_magic_and_version(void **state) {
    (void)state;
    size_t bytes;
    char good[256], bad[256];
    char *buf = valid_model(SL_ARCH_GPT2, "mv_src.bin", good, sizeof(good), &bytes);
    /* a wrong magic falls through to the llama2.c reading, which must reject it and say both */
    with_field("magic.bin", buf, bytes, 0, SL_GPT2_MAGIC + 1, bad, sizeof(bad));
    EXPECT_LOAD_FAILS(bad, "magic 20240327", "expected 20240326", "llama2.c", "dim = 20240327");
    with_field("magic0.bin", buf, bytes, 0, 0, bad, sizeof(bad));
    EXPECT_LOAD_FAILS(bad, "magic 0", "expected 20240326", "dim = 0");
    /* version 5 is llm.c's bfloat16 checkpoint */
    with_field("v5.bin", buf, bytes, 1, 5, bad, sizeof(bad));
    EXPECT_LOAD_FAILS(bad, "version 5", "expected 3", "bfloat16", "not supported");
    with_field("v2.bin", buf, bytes, 1, 2, bad, sizeof(bad));
    EXPECT_LOAD_FAILS(bad, "version 2", "expected 3");
    with_field("vneg.bin", buf, bytes, 1, -1, bad, sizeof(bad));
    EXPECT_LOAD_FAILS(bad, "version -1", "expected 3");
    sl_free(buf);
}

/* GPT-2 header: [2] maxT, [3] V, [4] L, [5] NH, [6] C, [7] Vp. */
static void test_gpt2_bad_fields(void **state) {
    (void)state;
    size_t bytes;
    char good[256], bad[256];
    char *buf = valid_model(SL_ARCH_GPT2, "gf_src.bin", good, sizeof(good), &bytes);
    const struct {
        int index;
        int32_t value;
        const char *says1, *says2;
    } cases[] = {
        {2, 0, "max_seq = 0", "expected"},
        {2, -1, "max_seq = -1", "expected"},
        {2, INT32_MAX, "max_seq = 2147483647", "expected"},
        {3, 0, "vocab_size = 0", "expected"},
        {3, -512, "vocab_size = -512", "expected"},
        {3, INT32_MAX, "vocab_size = 2147483647", "expected"},
        {3, 513, "padded_vocab_size = 512", "expected a value in [513,"}, /* Vp < V */
        {7, 500, "padded_vocab_size = 500", "expected a value in [512,"},
        {7, 0, "padded_vocab_size = 0", "expected"},
        {7, INT32_MIN, "padded_vocab_size = -2147483648", "expected"},
        {4, 0, "n_layers = 0", "expected"},
        {4, -4, "n_layers = -4", "expected"},
        {4, INT32_MAX, "n_layers = 2147483647", "expected"},
        {6, 0, "dim = 0", "expected"},
        {6, -64, "dim = -64", "expected"},
        {6, INT32_MAX, "dim = 2147483647", "expected"}, /* dim*dim and 4*dim overflow */
        {6, 1 << 20, "dim = 1048576", "expected"},
        {5, 0, "n_heads = 0", "expected"},
        {5, -4, "n_heads = -4", "expected"},
        {5, 128, "n_heads = 128", "expected a value in [1, 64]"},
        {5, 3, "dim 64 is not a multiple of n_heads 3", NULL},
        {4, 5, "file is", "expected"}, /* a consistent header for a bigger model */
        {2, 64, "file is", "expected"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        with_field("gpt2_field.bin", buf, bytes, cases[i].index, cases[i].value, bad, sizeof(bad));
        EXPECT_LOAD_FAILS(bad, cases[i].says1, cases[i].says2 ? cases[i].says2 : cases[i].says1);
    }
    sl_free(buf);
}

/* llama2.c header: [0] dim, [1] hidden, [2] L, [3] NH, [4] NKV, [5] V (negative: untied), [6] seq. */
static void test_llama_bad_fields(void **state) {
    (void)state;
    size_t bytes;
    char good[256], bad[256];
    char *buf = valid_model(SL_ARCH_LLAMA, "lf_src.bin", good, sizeof(good), &bytes);
    const struct {
        int index;
        int32_t value;
        const char *says1, *says2;
    } cases[] = {
        {0, 0, "dim = 0", "expected"},
        {0, -64, "dim = -64", "expected"},
        {0, INT32_MAX, "dim = 2147483647", "expected"}, /* dim*dim overflows size_t in 32 bits */
        {0, 1 << 17, "dim = 131072", "expected"},
        {1, 0, "hidden_dim = 0", "expected"},
        {1, -172, "hidden_dim = -172", "expected"},
        {1, INT32_MAX, "hidden_dim = 2147483647", "expected"},
        {2, 0, "n_layers = 0", "expected"},
        {2, -1, "n_layers = -1", "expected"},
        {2, INT32_MAX, "n_layers = 2147483647", "expected"},
        {3, 0, "n_heads = 0", "expected"},
        {3, 3, "dim 64 is not a multiple of n_heads 3", NULL},
        {3, 64, "head size 1 must be even", NULL}, /* odd head size: no rotary pairs */
        {3, 128, "n_heads = 128", "expected a value in [1, 64]"},
        {4, 0, "n_kv_heads = 0", "expected"},
        {4, 3, "n_heads 4 is not a multiple of n_kv_heads 3", NULL},
        {4, 8, "n_kv_heads = 8", "expected a value in [1, 4]"},
        {4, -2, "n_kv_heads = -2", "expected"},
        {5, 0, "vocab_size = 0", "expected"},
        {5, INT32_MIN, "vocab_size = -2147483648", "expected"},
        {5, INT32_MAX, "vocab_size = 2147483647", "expected"},
        {5, -512, "file is", "unshared"}, /* untied header on a tied file: too short */
        {6, 0, "max_seq = 0", "expected"},
        {6, -128, "max_seq = -128", "expected"},
        {6, INT32_MAX, "max_seq = 2147483647", "expected"},
        {6, 256, "file is", "truncated"},
        {2, 5, "file is", "truncated"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        with_field("llama_field.bin", buf, bytes, cases[i].index, cases[i].value, bad, sizeof(bad));
        EXPECT_LOAD_FAILS(bad, cases[i].says1, cases[i].says2 ? cases[i].says2 : cases[i].says1);
    }
    sl_free(buf);
}

/* sl_model_write_random refuses a bad configuration (no signed overflow on the way) and
 * leaves nothing behind. */
static void test_write_random_rejects(void **state) {
    (void)state;
    int before = count_entries(tmp_dir);
    char path[256];
    tmp_path(path, sizeof(path), "never_written.bin");
    sl_config c;
    tiny(&c, SL_ARCH_GPT2);
    c.dim = INT32_MAX; /* 4 * dim would overflow int */
    assert_int_equal(sl_model_write_random(&c, 1, path), SL_EFORMAT);
    expect_message(NULL, "init-model", "dim = 2147483647", NULL);
    tiny(&c, SL_ARCH_LLAMA);
    c.n_kv_heads = 3;
    assert_int_equal(sl_model_write_random(&c, 1, path), SL_EFORMAT);
    expect_message(NULL, "init-model", "not a multiple of n_kv_heads 3", NULL);
    tiny(&c, SL_ARCH_GPT2);
    tmp_path(path, sizeof(path), "no_such_folder/model.bin");
    assert_int_equal(sl_model_write_random(&c, 1, path), SL_EIO);
    expect_message(path, NULL);
    assert_int_equal(count_entries(tmp_dir), before);
}

/* ------------------------------------------------------------------------------------ */
/* 2. init-model round trips */

static void round_trip(const sl_config *want, const char *name) {
    char path[256];
    tmp_path(path, sizeof(path), name);
    assert_int_equal(sl_model_write_random(want, 42, path), 0);
    sl_model m;
    assert_int_equal(sl_model_load(&m, path), 0);
    assert_config_equal(&m.config, want);
    size_t floats;
    assert_int_equal(sl_config_file_floats(want, &floats), 0);
    size_t hdr = want->arch == SL_ARCH_GPT2 ? SL_GPT2_HEADER_INTS * 4 : SL_LLAMA_HEADER_INTS * 4;
    assert_int_equal(m.file.m_bytes, hdr + 4 * floats);
    if (want->shared_classifier) assert_ptr_equal(m.classifier, m.tok_emb);
    else assert_ptr_not_equal(m.classifier, m.tok_emb);
    if (want->arch == SL_ARCH_GPT2) {
        /* llm.c's padding rows of the embedding are zero, the real rows are not */
        size_t C = (size_t)want->dim, V = (size_t)want->vocab_size, Vp = (size_t)want->padded_vocab_size;
        assert_all_equal(m.tok_emb + V * C, (Vp - V) * C, 0.0f);
        assert_normal(m.tok_emb, V * C, 0.02);
        assert_null(m.layers[0].w_gate);
        assert_non_null(m.pos_emb);
    } else {
        assert_null(m.pos_emb);
        assert_null(m.layers[0].bq);
        assert_non_null(m.rope_cos);
        /* rotary table: cos(t * theta^(-2i/hs)) at a few points */
        int hs = sl_config_head_size(want);
        for (int t = 0; t < want->max_seq; t += want->max_seq / 4) {
            for (int i = 0; i < hs / 2; i++) {
                double ang = t / pow(SL_ROPE_THETA, 2.0 * i / hs);
                assert_float_equal(m.rope_cos[t * (hs / 2) + i], cos(ang), 1e-4);
                assert_float_equal(m.rope_sin[t * (hs / 2) + i], sin(ang), 1e-4);
            }
        }
        if (!want->shared_classifier)
            assert_normal(m.classifier, (size_t)want->vocab_size * want->dim, 0.02);
    }
    sl_model_free(&m);
}

static void test_round_trip_presets_and_shapes(void **state) {
    (void)state;
    sl_config c;
    tiny(&c, SL_ARCH_GPT2);
    assert_int_equal(c.padded_vocab_size, 512);
    round_trip(&c, "rt_gpt2_tiny.bin");
    tiny(&c, SL_ARCH_LLAMA);
    round_trip(&c, "rt_llama_tiny.bin");

    /* GPT-2 with a vocabulary that needs padding (300 -> 384), three heads of 16 */
    c = (sl_config){.arch = SL_ARCH_GPT2, .n_layers = 2, .dim = 48, .hidden_dim = 192, .n_heads = 3,
                    .n_kv_heads = 3, .vocab_size = 300, .padded_vocab_size = 384, .max_seq = 40,
                    .shared_classifier = 1};
    round_trip(&c, "rt_gpt2_custom.bin");

    /* Llama, untied, grouped-query attention, an odd hidden size */
    c = (sl_config){.arch = SL_ARCH_LLAMA, .n_layers = 3, .dim = 48, .hidden_dim = 101, .n_heads = 6,
                    .n_kv_heads = 2, .vocab_size = 300, .padded_vocab_size = 300, .max_seq = 40,
                    .shared_classifier = 0};
    round_trip(&c, "rt_llama_untied.bin");
    c.shared_classifier = 1;
    c.n_kv_heads = 6;
    round_trip(&c, "rt_llama_custom.bin");
}

/* GPT-2: what the header says and what write_random documents are normalised on write. */
static void test_gpt2_write_normalises(void **state) {
    (void)state;
    sl_config c;
    tiny(&c, SL_ARCH_GPT2);
    sl_config odd = c;
    odd.hidden_dim = 7;         /* GPT-2 always uses 4C */
    odd.n_kv_heads = 1;         /* GPT-2 has no GQA */
    odd.shared_classifier = 0;  /* llm.c always ties */
    char path[256];
    tmp_path(path, sizeof(path), "norm_gpt2.bin");
    assert_int_equal(sl_model_write_random(&odd, 1, path), 0);
    sl_model m;
    assert_int_equal(sl_model_load(&m, path), 0);
    assert_config_equal(&m.config, &c);
    sl_model_free(&m);
}

static void test_seeded_bytes(void **state) {
    (void)state;
    for (int a = 0; a < 2; a++) {
        sl_config c;
        tiny(&c, a == 0 ? SL_ARCH_GPT2 : SL_ARCH_LLAMA);
        char p1[256], p2[256], p3[256];
        tmp_path(p1, sizeof(p1), "seed7a.bin");
        tmp_path(p2, sizeof(p2), "seed7b.bin");
        tmp_path(p3, sizeof(p3), "seed8.bin");
        assert_int_equal(sl_model_write_random(&c, 7, p1), 0);
        assert_int_equal(sl_model_write_random(&c, 7, p2), 0);
        assert_int_equal(sl_model_write_random(&c, 8, p3), 0);
        char *b1, *b2, *b3;
        size_t n1, n2, n3;
        read_bytes(p1, &b1, &n1);
        read_bytes(p2, &b2, &n2);
        read_bytes(p3, &b3, &n3);
        assert_int_equal(n1, n2);
        assert_int_equal(n1, n3);
        assert_memory_equal(b1, b2, n1);
        size_t hdr = a == 0 ? SL_GPT2_HEADER_INTS * 4 : SL_LLAMA_HEADER_INTS * 4;
        assert_memory_equal(b1, b3, hdr); /* same header */
        /* the weights differ, nearly everywhere they are random */
        size_t differ = 0;
        for (size_t i = hdr; i < n1; i += 4) differ += memcmp(b1 + i, b3 + i, 4) != 0;
        assert_true(differ > (n1 - hdr) / 4 / 2);
        sl_free(b1);
        sl_free(b2);
        sl_free(b3);
    }
}

static void test_gpt2_weight_statistics(void **state) {
    (void)state;
    sl_config c = {.arch = SL_ARCH_GPT2, .n_layers = 3, .dim = 64, .n_heads = 4, .vocab_size = 500,
                   .padded_vocab_size = 512, .max_seq = 64, .shared_classifier = 1};
    char path[256];
    tmp_path(path, sizeof(path), "stats_gpt2.bin");
    assert_int_equal(sl_model_write_random(&c, 5, path), 0);
    sl_model m;
    assert_int_equal(sl_model_load(&m, path), 0);
    size_t L = 3, C = 64, H = 256;
    const double resid = 0.02 / sqrt(2.0 * (double)L); /* residual projections, GPT-2 paper */
    assert_normal(m.tok_emb, 500 * C, 0.02);
    assert_all_equal(m.tok_emb + 500 * C, 12 * C, 0.0f);
    assert_normal(m.pos_emb, 64 * C, 0.02);
    /* the per-layer tensors are contiguous over layers: layer 0's pointer covers all L */
    const sl_layer_weights *w = &m.layers[0];
    assert_ptr_equal(m.layers[1].norm1_w, w->norm1_w + C);
    assert_all_equal(w->norm1_w, L * C, 1.0f);
    assert_all_equal(w->norm1_b, L * C, 0.0f);
    assert_all_equal(w->norm2_w, L * C, 1.0f);
    assert_all_equal(w->norm2_b, L * C, 0.0f);
    assert_all_equal(w->bq, L * 3 * C, 0.0f);
    assert_all_equal(w->bo, L * C, 0.0f);
    assert_all_equal(w->b_up, L * H, 0.0f);
    assert_all_equal(w->b_down, L * C, 0.0f);
    assert_all_equal(m.final_norm_w, C, 1.0f);
    assert_all_equal(m.final_norm_b, C, 0.0f);
    assert_normal(w->wq, L * 3 * C * C, 0.02);
    assert_normal(w->wo, L * C * C, resid);
    assert_normal(w->w_up, L * H * C, 0.02);
    assert_normal(w->w_down, L * C * H, resid);
    /* the last float of the file is the final LayerNorm bias */
    assert_ptr_equal((const char *)(m.final_norm_b + C), (const char *)m.file.m_data + m.file.m_bytes);
    sl_model_free(&m);
}

static void test_llama_weight_statistics(void **state) {
    (void)state;
    sl_config c;
    tiny(&c, SL_ARCH_LLAMA);
    char path[256];
    tmp_path(path, sizeof(path), "stats_llama.bin");
    assert_int_equal(sl_model_write_random(&c, 5, path), 0);
    sl_model m;
    assert_int_equal(sl_model_load(&m, path), 0);
    size_t L = 4, C = 64, H = 172, KV = 32;
    const double resid = 0.02 / sqrt(2.0 * (double)L);
    const sl_layer_weights *w = &m.layers[0];
    assert_normal(m.tok_emb, 512 * C, 0.02);
    assert_all_equal(w->norm1_w, L * C, 1.0f);
    assert_all_equal(w->norm2_w, L * C, 1.0f);
    assert_all_equal(m.final_norm_w, C, 1.0f);
    assert_normal(w->wq, L * C * C, 0.02);
    assert_normal(w->wk, L * KV * C, 0.02);
    assert_normal(w->wv, L * KV * C, 0.02);
    assert_normal(w->wo, L * C * C, resid);
    assert_normal(w->w_gate, L * H * C, 0.02);
    assert_normal(w->w_down, L * C * H, resid);
    assert_normal(w->w_up, L * H * C, 0.02);
    sl_model_free(&m);
}

static void test_cli_init_model(void **state) {
    (void)state;
    char path[256], ref[256], cmd[768];
    tmp_path(path, sizeof(path), "cli_llama.bin");
    snprintf(cmd, sizeof(cmd), "'%s' init-model --arch llama --preset tiny --seed 3 --out '%s' > /dev/null",
             SPLITLLM_BIN, path);
    assert_int_equal(system(cmd), 0);
    sl_model m;
    assert_int_equal(sl_model_load(&m, path), 0);
    sl_config c;
    tiny(&c, SL_ARCH_LLAMA);
    assert_config_equal(&m.config, &c);
    sl_model_free(&m);
    /* the CLI writes exactly what the library writes for the same shape and seed */
    tmp_path(ref, sizeof(ref), "lib_llama.bin");
    assert_int_equal(sl_model_write_random(&c, 3, ref), 0);
    char *a, *b;
    size_t na, nb;
    read_bytes(path, &a, &na);
    read_bytes(ref, &b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    sl_free(a);
    sl_free(b);
}

static void test_stories260k(void **state) {
    (void)state;
    const char *path = test_asset("models/stories260K/stories260K.bin");
    if (path == NULL) skip();
    sl_model m;
    assert_int_equal(sl_model_load(&m, path), 0);
    sl_config want = {.arch = SL_ARCH_LLAMA, .n_layers = 5, .dim = 64, .hidden_dim = 172, .n_heads = 8,
                      .n_kv_heads = 4, .vocab_size = 512, .padded_vocab_size = 512, .max_seq = 512,
                      .shared_classifier = 1};
    assert_config_equal(&m.config, &want);
    assert_ptr_equal(m.classifier, m.tok_emb);
    assert_non_null(m.rope_cos);
    sl_model_free(&m);
}

/* ------------------------------------------------------------------------------------ */
/* 3. LoRA adapter files */

static const sl_lora_config LC = {.rank = 4, .alpha = 8.0f, .dropout = 0.0f, .targets = 0, .seed = 11};

/* A gpt2-tiny adapter over [begin, end) with targets "q,v" unless given, every value
 * (B included) made nonzero from seed so that a copy can be told from a fresh one. */
static void make_lora(sl_lora *l, const sl_config *mc, const char *targets, int rank, float alpha, int begin,
                      int end, uint64_t seed) {
    sl_lora_config lc = LC;
    lc.rank = rank;
    lc.alpha = alpha;
    lc.seed = seed;
    assert_int_equal(sl_lora_parse_targets(targets ? targets : "q,v", mc->arch, &lc.targets), 0);
    assert_int_equal(sl_lora_init(l, mc, &lc, begin, end), 0);
    sl_rng rng;
    sl_rng_init(&rng, seed, 999);
    for (size_t i = 0; i < l->n_params; i++) l->params[i] = sl_rng_normal(&rng);
}

static void test_lora_round_trip(void **state) {
    (void)state;
    const char *lists[] = {"q,v", "all"};
    for (int a = 0; a < 2; a++) {
        for (int k = 0; k < 2; k++) {
            sl_config mc;
            tiny(&mc, a == 0 ? SL_ARCH_GPT2 : SL_ARCH_LLAMA);
            sl_lora l, back;
            make_lora(&l, &mc, lists[k], 4, 0.75f, 0, mc.n_layers, 1);
            char path[256];
            tmp_path(path, sizeof(path), "rt.lora.safetensors");
            assert_int_equal(sl_lora_save(&l, path), 0);
            assert_int_equal(sl_lora_open(&back, &mc, path), 0);
            assert_int_equal(back.config.rank, 4);
            assert_true(back.config.alpha == 0.75f);
            assert_int_equal(back.config.targets, l.config.targets);
            assert_int_equal(back.layer_begin, 0);
            assert_int_equal(back.layer_end, mc.n_layers);
            assert_int_equal(back.n_params, l.n_params);
            assert_memory_equal(back.params, l.params, l.n_params * sizeof(float));
            /* sl_lora_load into an adapter of the same shape gives the same */
            sl_lora into;
            make_lora(&into, &mc, lists[k], 4, 0.75f, 0, mc.n_layers, 2);
            assert_int_equal(sl_lora_load(&into, path), 0);
            assert_memory_equal(into.params, l.params, l.n_params * sizeof(float));
            sl_lora_free(&into);
            sl_lora_free(&back);
            sl_lora_free(&l);
        }
    }
}

static void test_lora_slices(void **state) {
    (void)state;
    sl_config mc;
    tiny(&mc, SL_ARCH_GPT2); /* 4 blocks */
    sl_lora slice, whole, orig;
    make_lora(&slice, &mc, NULL, 4, 8.0f, 1, 3, 5);
    make_lora(&whole, &mc, NULL, 4, 8.0f, 0, 4, 6);
    make_lora(&orig, &mc, NULL, 4, 8.0f, 0, 4, 6);
    char path[256];
    tmp_path(path, sizeof(path), "slice.lora.safetensors");
    assert_int_equal(sl_lora_save(&slice, path), 0);

    /* the file opens as an adapter of its own range */
    sl_lora back;
    assert_int_equal(sl_lora_open(&back, &mc, path), 0);
    assert_int_equal(back.layer_begin, 1);
    assert_int_equal(back.layer_end, 3);
    assert_memory_equal(back.params, slice.params, slice.n_params * sizeof(float));
    sl_lora_free(&back);

    /* into the whole-model adapter: blocks 1, 2 replaced, 0 and 3 untouched */
    assert_int_equal(sl_lora_load(&whole, path), 0);
    size_t per = whole.layer_params * sizeof(float);
    assert_int_equal(whole.layer_params, slice.layer_params);
    assert_memory_equal(sl_lora_A(&whole, 0, SL_LORA_Q), sl_lora_A(&orig, 0, SL_LORA_Q), per);
    assert_memory_equal(sl_lora_A(&whole, 1, SL_LORA_Q), sl_lora_A(&slice, 1, SL_LORA_Q), 2 * per);
    assert_memory_equal(sl_lora_A(&whole, 3, SL_LORA_Q), sl_lora_A(&orig, 3, SL_LORA_Q), per);

    /* and back: a whole-model file into a slice adapter copies just the slice's blocks */
    char wpath[256];
    tmp_path(wpath, sizeof(wpath), "whole.lora.safetensors");
    assert_int_equal(sl_lora_save(&orig, wpath), 0);
    assert_int_equal(sl_lora_load(&slice, wpath), 0);
    assert_memory_equal(slice.params, sl_lora_A(&orig, 1, SL_LORA_Q), 2 * per);

    /* a slice saved from the whole-model adapter holds the same bytes as the slice adapter:
     * the initialisation is per (layer, target) */
    sl_lora fresh_whole, fresh_slice;
    sl_lora_config lc = LC;
    assert_int_equal(sl_lora_parse_targets("q,v", mc.arch, &lc.targets), 0);
    assert_int_equal(sl_lora_init(&fresh_whole, &mc, &lc, 0, 4), 0);
    assert_int_equal(sl_lora_init(&fresh_slice, &mc, &lc, 2, 4), 0);
    assert_memory_equal(fresh_slice.params, sl_lora_A(&fresh_whole, 2, SL_LORA_Q), 2 * per);
    sl_lora_free(&fresh_whole);
    sl_lora_free(&fresh_slice);

    sl_lora_free(&slice);
    sl_lora_free(&whole);
    sl_lora_free(&orig);
}

/* sl_lora_load must fail, name the file and every substring, and leave l's values as they were. */
static void expect_lora_load_fails(sl_lora *l, const char *path, ...) {
    float *before = malloc(l->n_params * sizeof(float));
    assert_non_null(before);
    memcpy(before, l->params, l->n_params * sizeof(float));
    sl_clear_error();
    int rc = sl_lora_load(l, path);
    if (rc != SL_EFORMAT && rc != SL_EIO) {
        print_error("%s: rc %d, expected SL_EFORMAT or SL_EIO: %s\n", path, rc, sl_last_error());
        fail();
    }
    const char *msg = sl_last_error();
    if (strstr(msg, path) == NULL) {
        print_error("message does not name '%s': %s\n", path, msg);
        fail();
    }
    va_list ap;
    va_start(ap, path);
    const char *want;
    while ((want = va_arg(ap, const char *)) != NULL) {
        if (strstr(msg, want) == NULL) {
            print_error("message lacks '%s': %s\n", want, msg);
            va_end(ap);
            fail();
        }
    }
    va_end(ap);
    /* a failed load changes nothing, not even the blocks before the one at fault */
    assert_memory_equal(l->params, before, l->n_params * sizeof(float));
    free(before);
}

static void test_lora_config_mismatch(void **state) {
    (void)state;
    sl_config mc;
    tiny(&mc, SL_ARCH_GPT2);
    sl_lora saved;
    make_lora(&saved, &mc, "q,v", 4, 8.0f, 0, 4, 1);
    char path[256];
    tmp_path(path, sizeof(path), "mm.lora.safetensors");
    assert_int_equal(sl_lora_save(&saved, path), 0);

    sl_lora other;
    make_lora(&other, &mc, "q,v", 8, 8.0f, 0, 4, 2);
    expect_lora_load_fails(&other, path, "rank 4", "expected rank 8", NULL);
    sl_lora_free(&other);
    make_lora(&other, &mc, "all", 4, 8.0f, 0, 4, 2);
    expect_lora_load_fails(&other, path, "targets q,v", "targets q,k,v,o,up,down", NULL);
    sl_lora_free(&other);
    make_lora(&other, &mc, "q,v", 4, 16.0f, 0, 4, 2);
    expect_lora_load_fails(&other, path, "alpha 8", "alpha 16", NULL);
    sl_lora_free(&other);

    /* a model of another family */
    sl_config llama;
    tiny(&llama, SL_ARCH_LLAMA);
    make_lora(&other, &llama, "q,v", 4, 8.0f, 0, 4, 2);
    expect_lora_load_fails(&other, path, "'gpt2'", "'llama'", NULL);
    sl_lora_free(&other);
    sl_lora opened = {0};
    assert_int_equal(sl_lora_open(&opened, &llama, path), SL_EFORMAT);
    expect_message(path, "'gpt2'", "'llama'", NULL);
    assert_null(opened.params);

    /* a model with more blocks, or narrower */
    sl_config deeper = mc, narrower = mc;
    deeper.n_layers = 6;
    narrower.dim = 32;
    make_lora(&other, &deeper, "q,v", 4, 8.0f, 0, 6, 2);
    expect_lora_load_fails(&other, path, "4 blocks of width 64", "6 blocks of width 64", NULL);
    sl_lora_free(&other);
    make_lora(&other, &narrower, "q,v", 4, 8.0f, 0, 4, 2);
    expect_lora_load_fails(&other, path, "4 blocks of width 64", "4 blocks of width 32", NULL);
    sl_lora_free(&other);
    assert_int_equal(sl_lora_open(&opened, &deeper, path), SL_EFORMAT);
    expect_message(path, "6 blocks", NULL);
    assert_null(opened.params);
    sl_lora_free(&opened); /* harmless after a failed open */
    sl_lora_free(&saved);
}

/* Writes a safetensors file with the tensors of l (layers [from, to)) and the given
 * metadata pairs (NULL-terminated key, value list). */
static void write_custom_adapter(const char *path, const sl_lora *l, int from, int to, ...) {
    sl_st_writer *w;
    assert_int_equal(sl_st_writer_create(&w), 0);
    char name[96];
    for (int layer = from; layer < to; layer++) {
        for (int t = 0; t < SL_LORA_N_TARGETS; t++) {
            if (!(l->config.targets & (1u << t))) continue;
            int64_t sa[2] = {l->config.rank, l->in_dim[t]}, sb[2] = {l->out_dim[t], l->config.rank};
            snprintf(name, sizeof(name), "lora.%d.%s.A", layer, sl_lora_target_name(t));
            assert_int_equal(sl_st_writer_add(w, name, SL_ST_F32, 2, sa, sl_lora_A(l, layer, t)), 0);
            snprintf(name, sizeof(name), "lora.%d.%s.B", layer, sl_lora_target_name(t));
            assert_int_equal(sl_st_writer_add(w, name, SL_ST_F32, 2, sb, sl_lora_B(l, layer, t)), 0);
        }
    }
    va_list ap;
    va_start(ap, to);
    const char *k;
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        assert_int_equal(sl_st_writer_set_metadata(w, k, v), 0);
    }
    va_end(ap);
    assert_int_equal(sl_st_writer_write(w, path), 0);
    sl_st_writer_free(w);
}

#define GOOD_META(k, v)                                                                                                \
    "format", "splitllm-lora", "version", "1", "arch", "gpt2", "n_layers", "4", "dim", "64", "rank", "4", "alpha",    \
        "8", "targets", "q,v", "layer_begin", "0", "layer_end", k, v

static void test_lora_malformed_files(void **state) {
    (void)state;
    sl_config mc;
    tiny(&mc, SL_ARCH_GPT2);
    sl_lora l, target;
    make_lora(&l, &mc, "q,v", 4, 8.0f, 0, 4, 1);
    make_lora(&target, &mc, "q,v", 4, 8.0f, 0, 4, 2);
    char good[256], bad[256];
    tmp_path(good, sizeof(good), "good.lora.safetensors");
    assert_int_equal(sl_lora_save(&l, good), 0);
    char *buf;
    size_t bytes;
    read_bytes(good, &buf, &bytes);
    tmp_path(bad, sizeof(bad), "bad.lora.safetensors");

    /* truncated: by one byte, by half, to less than the length prefix */
    write_bytes(bad, buf, bytes - 1);
    expect_lora_load_fails(&target, bad, "past the end", "truncated", NULL);
    write_bytes(bad, buf, bytes / 2);
    expect_lora_load_fails(&target, bad, "past the end", "truncated", NULL);
    write_bytes(bad, buf, 5);
    expect_lora_load_fails(&target, bad, "5 bytes", "expected at least 8", NULL);
    write_bytes(bad, "", 0);
    expect_lora_load_fails(&target, bad, "0 bytes", NULL);

    /* not safetensors at all: a model file, and text */
    char model[256];
    size_t mbytes;
    char *mbuf = valid_model(SL_ARCH_GPT2, "not_an_adapter.bin", model, sizeof(model), &mbytes);
    sl_free(mbuf);
    expect_lora_load_fails(&target, model, "header length", "expected", NULL);
    const char *text = "this is not a safetensors file, just some text that goes on for a while\n";
    write_bytes(bad, text, strlen(text));
    expect_lora_load_fails(&target, bad, "header length", "expected", NULL);
    /* a folder and a missing file */
    char dir[256];
    tmp_path(dir, sizeof(dir), "adapter_folder");
    assert_int_equal(mkdir(dir, 0755), 0);
    expect_lora_load_fails(&target, dir, "expected a regular file", NULL);
    tmp_path(dir, sizeof(dir), "no_such.lora.safetensors");
    expect_lora_load_fails(&target, dir, "cannot open", NULL);

    /* valid safetensors, but not an adapter file of this project */
    write_custom_adapter(bad, &l, 0, 4, (const char *)NULL);
    expect_lora_load_fails(&target, bad, "format", "(missing)", "expected 'splitllm-lora'", NULL);
    write_custom_adapter(bad, &l, 0, 4, "format", "pt", (const char *)NULL);
    expect_lora_load_fails(&target, bad, "format = 'pt'", "expected 'splitllm-lora'", NULL);

    /* the metadata of an adapter, but a tensor missing or of the wrong shape */
    write_custom_adapter(bad, &l, 0, 3, GOOD_META("4", NULL), (const char *)NULL);
    expect_lora_load_fails(&target, bad, "lora.3.q.A", "missing", NULL);
    {
        sl_lora wide;
        sl_config wmc = mc;
        wmc.dim = 68; /* q's A becomes (4, 68) */
        wmc.hidden_dim = 272;
        make_lora(&wide, &wmc, "q,v", 4, 8.0f, 0, 4, 3);
        write_custom_adapter(bad, &wide, 0, 4, GOOD_META("4", NULL), (const char *)NULL);
        expect_lora_load_fails(&target, bad, "lora.0.q.A", "expected dtype F32 shape [4, 64]", "[4, 68]", NULL);
        sl_lora_free(&wide);
    }

    /* metadata values that are not what they claim */
    write_custom_adapter(bad, &l, 0, 4, GOOD_META("4", "rank"), "x4", (const char *)NULL);
    expect_lora_load_fails(&target, bad, "'rank' = 'x4'", "expected", NULL);
    write_custom_adapter(bad, &l, 0, 4, GOOD_META("4", "targets"), "q,zz", (const char *)NULL);
    expect_lora_load_fails(&target, bad, "targets", "zz", NULL);
    write_custom_adapter(bad, &l, 0, 4, GOOD_META("4", "alpha"), "banana", (const char *)NULL);
    expect_lora_load_fails(&target, bad, "alpha", "banana", NULL);
    write_custom_adapter(bad, &l, 0, 4, GOOD_META("4", "alpha"), "nan", (const char *)NULL);
    expect_lora_load_fails(&target, bad, "alpha", "nan", NULL);
    write_custom_adapter(bad, &l, 0, 4, GOOD_META("9", NULL), (const char *)NULL);
    expect_lora_load_fails(&target, bad, "layer_end", "9", NULL);
    write_custom_adapter(bad, &l, 2, 4, GOOD_META("4", "layer_begin"), "3", "layer_end", "2", (const char *)NULL);
    expect_lora_load_fails(&target, bad, "layer_begin", "layer_end", NULL);
    write_custom_adapter(bad, &l, 0, 4, "format", "splitllm-lora", "version", "1", "arch", "gpt2", "dim", "64", "rank",
                         "4", "alpha", "8", "targets", "q,v", "layer_begin", "0", "layer_end", "4", (const char *)NULL);
    expect_lora_load_fails(&target, bad, "'n_layers'", "missing", NULL);

    /* sl_lora_open says the same, names the file, and leaves an empty adapter */
    write_custom_adapter(bad, &l, 0, 4, GOOD_META("4", "rank"), "0", (const char *)NULL);
    sl_lora opened;
    memset(&opened, 0x5a, sizeof(opened)); /* garbage, as an uninitialised local */
    assert_int_equal(sl_lora_open(&opened, &mc, bad), SL_EFORMAT);
    expect_message(bad, "rank", NULL);
    assert_null(opened.params);
    sl_lora_free(&opened);
    write_custom_adapter(bad, &l, 0, 4, GOOD_META("9", NULL), (const char *)NULL);
    assert_int_equal(sl_lora_open(&opened, &mc, bad), SL_EFORMAT);
    expect_message(bad, "layer_end", NULL);
    write_custom_adapter(bad, &l, 0, 4, GOOD_META("4", "alpha"), "-1", (const char *)NULL);
    assert_int_equal(sl_lora_open(&opened, &mc, bad), SL_EFORMAT);
    expect_message(bad, "alpha", NULL);
    write_custom_adapter(bad, &l, 0, 3, GOOD_META("4", NULL), (const char *)NULL);
    assert_int_equal(sl_lora_open(&opened, &mc, bad), SL_EFORMAT);
    expect_message(bad, "lora.3.q.A", "missing", NULL);
    assert_null(opened.params);

    sl_free(buf);
    sl_lora_free(&l);
    sl_lora_free(&target);
}

static void test_lora_failed_save_leaves_nothing(void **state) {
    (void)state;
    sl_config mc;
    tiny(&mc, SL_ARCH_GPT2);
    sl_lora l;
    make_lora(&l, &mc, "q,v", 4, 8.0f, 0, 4, 1);
    char sub[256], path[256];
    tmp_path(sub, sizeof(sub), "save_here");
    assert_int_equal(mkdir(sub, 0755), 0);

    /* into a folder that does not exist */
    snprintf(path, sizeof(path), "%s/missing/a.lora.safetensors", sub);
    assert_int_equal(sl_lora_save(&l, path), SL_EIO);
    expect_message(path, NULL);
    assert_int_equal(count_entries(sub), 0);

    /* onto a path that is a folder: the temp file is written, the rename fails, and the
     * temp file must be removed */
    snprintf(path, sizeof(path), "%s/is_a_folder", sub);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(sl_lora_save(&l, path), SL_EIO);
    expect_message(path, NULL);
    assert_int_equal(count_entries(sub), 1);
    assert_int_equal(count_entries(path), 0);

    /* a good save over an existing adapter replaces it and leaves only it */
    snprintf(path, sizeof(path), "%s/a.lora.safetensors", sub);
    assert_int_equal(sl_lora_save(&l, path), 0);
    assert_int_equal(sl_lora_save(&l, path), 0);
    assert_int_equal(count_entries(sub), 2);
    sl_lora_free(&l);
}

/* ------------------------------------------------------------------------------------ */
/* 4. No descriptor leaks */

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_no_fd_leak(void **state) {
    (void)state;
    if (count_fds() < 0) skip();
    size_t bytes;
    char good[256], trunc[256], v5[256], dir[256], missing[256], lora_good[256], lora_bad[256];
    char *buf = valid_model(SL_ARCH_GPT2, "fd_src.bin", good, sizeof(good), &bytes);
    tmp_path(trunc, sizeof(trunc), "fd_trunc.bin");
    write_bytes(trunc, buf, bytes - 1);
    with_field("fd_v5.bin", buf, bytes, 1, 5, v5, sizeof(v5));
    sl_free(buf);
    tmp_path(dir, sizeof(dir), "fd_folder");
    assert_int_equal(mkdir(dir, 0755), 0);
    tmp_path(missing, sizeof(missing), "fd_missing.bin");

    sl_config mc;
    tiny(&mc, SL_ARCH_GPT2);
    sl_lora l, other;
    make_lora(&l, &mc, "q,v", 4, 8.0f, 0, 4, 1);
    make_lora(&other, &mc, "q,v", 8, 8.0f, 0, 4, 1);
    tmp_path(lora_good, sizeof(lora_good), "fd.lora.safetensors");
    assert_int_equal(sl_lora_save(&l, lora_good), 0);
    tmp_path(lora_bad, sizeof(lora_bad), "fd_meta.lora.safetensors");
    write_custom_adapter(lora_bad, &l, 0, 4, (const char *)NULL);

    int before = count_fds();
    const char *models[] = {trunc, v5, dir, missing, lora_good};
    for (int i = 0; i < 100; i++) {
        sl_model m;
        assert_int_not_equal(sl_model_load(&m, models[i % 5]), 0);
        sl_lora o;
        assert_int_not_equal(sl_lora_load(&other, i % 2 ? lora_good : lora_bad), 0);
        assert_int_not_equal(sl_lora_open(&o, &mc, i % 2 ? trunc : lora_bad), 0);
    }
    assert_int_equal(count_fds(), before);
    sl_lora_free(&l);
    sl_lora_free(&other);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_path_and_folder),
        cmocka_unit_test(test_empty_and_short),
        cmocka_unit_test(test_gpt2_lengths),
        cmocka_unit_test(test_llama_lengths),
        cmocka_unit_test(test_gpt2_magic_and_version),
        cmocka_unit_test(test_gpt2_bad_fields),
        cmocka_unit_test(test_llama_bad_fields),
        cmocka_unit_test(test_write_random_rejects),
        cmocka_unit_test(test_round_trip_presets_and_shapes),
        cmocka_unit_test(test_gpt2_write_normalises),
        cmocka_unit_test(test_seeded_bytes),
        cmocka_unit_test(test_gpt2_weight_statistics),
        cmocka_unit_test(test_llama_weight_statistics),
        cmocka_unit_test(test_cli_init_model),
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_lora_round_trip),
        cmocka_unit_test(test_lora_slices),
        cmocka_unit_test(test_lora_config_mismatch),
        cmocka_unit_test(test_lora_malformed_files),
        cmocka_unit_test(test_lora_failed_save_leaves_nothing),
        cmocka_unit_test(test_no_fd_leak),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
