/* test_generate.c: `splitllm generate` reproduces llama2.c's run.c byte for byte. The
 * expected outputs are tests/reference/llama2c_generate.txt, produced by run.c (the file's
 * header names the commit and each case's exact command line); every case there becomes
 * one cmocka test that runs SPLITLLM_BIN through popen and compares its stdout. Also: the
 * SOURCES.md fact (greedy, "Once upon a time", 64 steps) written out here on its own, a
 * --lora file that is not an adapter, and sampling options run.c would quietly replace.
 * Tests skip when the stories260K assets are missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#define REFERENCE_FILE SPLITLLM_SOURCE_DIR "/tests/reference/llama2c_generate.txt"
#define MAX_CASES 64
#define FIELD_BYTES 64

typedef struct {
    char name[FIELD_BYTES], test_name[FIELD_BYTES + 16];
    char steps[FIELD_BYTES], temperature[FIELD_BYTES], top_p[FIELD_BYTES], seed[FIELD_BYTES];
    const char *prompt, *output; /* into g_file; prompt is NUL-terminated in place */
    size_t prompt_len, output_len;
} gen_case;

static char *g_file;
static gen_case g_cases[MAX_CASES];
static int g_n_cases;
static char g_parse_error[256];

/* ---- the reference file -------------------------------------------------------------- */

static int parse_fail(const char *msg, size_t off) {
    snprintf(g_parse_error, sizeof(g_parse_error), "%s: %s (byte %zu)", REFERENCE_FILE, msg, off);
    return -1;
}

/* Reads one "KEY VALUE\n" line at *pos into value (which may be NULL to only check KEY). */
static int read_line(const char *buf, size_t n, size_t *pos, const char *key, char *value, size_t cap) {
    size_t klen = strlen(key);
    const char *end = memchr(buf + *pos, '\n', n - *pos);
    if (end == NULL || (size_t)(end - (buf + *pos)) < klen + 1 || memcmp(buf + *pos, key, klen) != 0 ||
        buf[*pos + klen] != ' ')
        return parse_fail(key, *pos);
    size_t vlen = (size_t)(end - (buf + *pos)) - klen - 1;
    if (value) {
        if (vlen >= cap) return parse_fail("value too long", *pos);
        memcpy(value, buf + *pos + klen + 1, vlen);
        value[vlen] = '\0';
    }
    *pos = (size_t)(end - buf) + 1;
    return 0;
}

/* Reads "KEY LEN\n" then LEN raw bytes and a newline, which it turns into a NUL. */
static int read_blob(char *buf, size_t n, size_t *pos, const char *key, const char **out, size_t *out_len) {
    char len_text[32];
    if (read_line(buf, n, pos, key, len_text, sizeof(len_text))) return -1;
    char *end;
    unsigned long long len = strtoull(len_text, &end, 10);
    if (*end != '\0' || end == len_text) return parse_fail("bad length", *pos);
    if (len >= n - *pos || buf[*pos + len] != '\n') return parse_fail("blob not followed by a newline", *pos);
    *out = buf + *pos;
    *out_len = (size_t)len;
    buf[*pos + len] = '\0';
    *pos += (size_t)len + 1;
    return 0;
}

static int load_reference(void) {
    FILE *f = fopen(REFERENCE_FILE, "rb");
    if (f == NULL) return parse_fail("cannot open", 0);
    if (fseek(f, 0, SEEK_END) != 0) return fclose(f), parse_fail("cannot seek", 0);
    long size = ftell(f);
    rewind(f);
    g_file = malloc((size_t)size + 1);
    if (g_file == NULL || size < 0 || fread(g_file, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        return parse_fail("cannot read", 0);
    }
    fclose(f);
    size_t n = (size_t)size, pos = 0;
    g_file[n] = '\0';
    while (pos < n) {
        if (g_file[pos] == '\n') { pos++; continue; }
        if (g_file[pos] == '#') {
            const char *end = memchr(g_file + pos, '\n', n - pos);
            pos = end ? (size_t)(end - g_file) + 1 : n;
            continue;
        }
        if (g_n_cases == MAX_CASES) return parse_fail("too many cases", pos);
        gen_case *c = &g_cases[g_n_cases];
        if (read_line(g_file, n, &pos, "case", c->name, sizeof(c->name)) ||
            read_line(g_file, n, &pos, "steps", c->steps, sizeof(c->steps)) ||
            read_line(g_file, n, &pos, "temperature", c->temperature, sizeof(c->temperature)) ||
            read_line(g_file, n, &pos, "top_p", c->top_p, sizeof(c->top_p)) ||
            read_line(g_file, n, &pos, "seed", c->seed, sizeof(c->seed)) ||
            read_line(g_file, n, &pos, "runcmd", NULL, 0) ||
            read_blob(g_file, n, &pos, "prompt", &c->prompt, &c->prompt_len) ||
            read_blob(g_file, n, &pos, "output", &c->output, &c->output_len))
            return -1;
        if (strlen(c->prompt) != c->prompt_len) return parse_fail("prompt holds a NUL byte", pos);
        memcpy(c->test_name, "llama2c_", 8);
        memcpy(c->test_name + 8, c->name, strlen(c->name) + 1);
        g_n_cases++;
    }
    return 0;
}

/* ---- running the binary ------------------------------------------------------------ */

/* Appends s to cmd, single-quoted for /bin/sh. */
static void append_quoted(char **cmd, size_t *len, size_t *cap, const char *s) {
    size_t need = *len + 4 * strlen(s) + 4;
    if (need > *cap) {
        *cap = need * 2;
        *cmd = realloc(*cmd, *cap);
        assert_non_null(*cmd);
    }
    char *p = *cmd + *len;
    *p++ = ' ';
    *p++ = '\'';
    for (; *s; s++) {
        if (*s == '\'') {
            memcpy(p, "'\\''", 4);
            p += 4;
        } else {
            *p++ = *s;
        }
    }
    *p++ = '\'';
    *p = '\0';
    *len = (size_t)(p - *cmd);
}

static void append_raw(char **cmd, size_t *len, size_t *cap, const char *s) {
    size_t k = strlen(s);
    if (*len + k + 1 > *cap) {
        *cap = (*len + k + 1) * 2;
        *cmd = realloc(*cmd, *cap);
        assert_non_null(*cmd);
    }
    memcpy(*cmd + *len, s, k + 1);
    *len += k;
}

/* Runs `SPLITLLM_BIN generate ARGS... REDIRECT` (args NULL-terminated, each quoted) and
 * returns what the command wrote to the pipe (malloc'd, NUL-terminated) and its exit status
 * (-1 when it did not exit normally). */
static char *run_generate(const char *redirect, int *exit_status, size_t *out_len, ...) {
    size_t len = 0, cap = 256;
    char *cmd = malloc(cap);
    assert_non_null(cmd);
    cmd[0] = '\0';
    append_raw(&cmd, &len, &cap, "exec");
    append_quoted(&cmd, &len, &cap, SPLITLLM_BIN);
    append_raw(&cmd, &len, &cap, " generate");
    va_list ap;
    va_start(ap, out_len);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) append_quoted(&cmd, &len, &cap, a);
    va_end(ap);
    append_raw(&cmd, &len, &cap, " ");
    append_raw(&cmd, &len, &cap, redirect);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = 0, ocap = 4096;
    char *out = malloc(ocap);
    assert_non_null(out);
    for (size_t got; (got = fread(out + n, 1, ocap - n - 1, p)) > 0;) {
        n += got;
        if (ocap - n - 1 == 0) {
            ocap *= 2;
            out = realloc(out, ocap);
            assert_non_null(out);
        }
    }
    out[n] = '\0';
    int st = pclose(p);
    *exit_status = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
    *out_len = n;
    free(cmd);
    return out;
}

static int assets(const char **model, const char **tok) {
    *model = test_asset("models/stories260K/stories260K.bin");
    *tok = test_asset("models/stories260K/tok512.bin");
    if (*model && *tok) return 1;
    print_message("skipped: models/stories260K/stories260K.bin or tok512.bin not found "
                  "(looked in $SPLITLLM_ASSETS, assets/, ../shared/assets/)\n");
    return 0;
}

/* Fails with the first differing byte and the text around it when got != want. */
static void assert_same_bytes(const char *what, const char *got, size_t got_len, const char *want, size_t want_len) {
    if (got_len == want_len && memcmp(got, want, got_len) == 0) return;
    size_t i = 0;
    while (i < got_len && i < want_len && got[i] == want[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    print_error("%s: output differs from run.c at byte %zu (got %zu bytes, want %zu)\n"
                "  got : [%.*s]\n  want: [%.*s]\n",
                what, i, got_len, want_len, (int)(got_len - from < 120 ? got_len - from : 120), got + from,
                (int)(want_len - from < 120 ? want_len - from : 120), want + from);
    fail();
}

static char *generate_text(const char *model, const char *tok, const char *prompt, const char *steps,
                           const char *temperature, const char *top_p, const char *seed, size_t *len) {
    int rc;
    char *out = run_generate("", &rc, len, "--model", model, "--tokenizer", tok, "--prompt", prompt, "--steps",
                             steps, "--temperature", temperature, "--top-p", top_p, "--seed", seed, (char *)NULL);
    if (rc != 0) print_error("splitllm generate exited with %d\n", rc);
    assert_int_equal(rc, 0);
    return out;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_reference_file(void **state) {
    (void)state;
    if (g_parse_error[0]) print_error("%s\n", g_parse_error);
    assert_string_equal(g_parse_error, "");
    assert_true(g_n_cases >= 12);
}

static void test_llama2c_case(void **state) {
    const gen_case *c = *state;
    const char *model, *tok;
    if (!assets(&model, &tok)) skip();
    size_t len;
    char *out = generate_text(model, tok, c->prompt, c->steps, c->temperature, c->top_p, c->seed, &len);
    assert_same_bytes(c->name, out, len, c->output, c->output_len);
    free(out);
}

/* assets/SOURCES.md: greedy, prompt "Once upon a time", 64 positions prompt included. */
static void test_sources_md_fact(void **state) {
    (void)state;
    const char *model, *tok;
    if (!assets(&model, &tok)) skip();
    static const char want[] =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, "
        "she saw a big, red ball. She wanted to play with it, but it was too high.\nLily\n";
    size_t len;
    char *out = generate_text(model, tok, "Once upon a time", "64", "0", "0.9", "42", &len);
    assert_same_bytes("SOURCES.md fact", out, len, want, sizeof(want) - 1);
    free(out);
}

/* Runs generate with --lora path and expects a non-zero exit and an error naming path. */
static void expect_lora_rejected(const char *model, const char *tok, const char *path) {
    int rc;
    size_t len;
    char *err = run_generate("2>&1 >/dev/null", &rc, &len, "--model", model, "--tokenizer", tok, "--prompt", "Hi",
                             "--steps", "5", "--lora", path, (char *)NULL);
    if (rc == 0 || strstr(err, path) == NULL)
        print_error("--lora %s: exit %d, stderr [%s]; want non-zero and the file named\n", path, rc, err);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err, path));
    free(err);
}

static void test_lora_not_an_adapter(void **state) {
    (void)state;
    const char *model, *tok;
    if (!assets(&model, &tok)) skip();
    char junk[] = "/tmp/splitllm_test_generate_XXXXXX";
    int fd = mkstemp(junk);
    assert_true(fd >= 0);
    static const char text[] = "this is not a LoRA adapter\n";
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);
    expect_lora_rejected(model, tok, junk);                                                /* not safetensors */
    expect_lora_rejected(model, tok, SPLITLLM_SOURCE_DIR "/tests/reference/st_fixture.safetensors"); /* other */
    expect_lora_rejected(model, tok, tok);                                                 /* another format */
    expect_lora_rejected(model, tok, "/nonexistent/splitllm_no_such_adapter.safetensors");
    unlink(junk);
}

/* run.c replaces these silently (seed 0 -> the clock, top-p outside [0,1] -> 0.9); we refuse
 * them with an error naming the option. */
static void test_sampling_options_rejected(void **state) {
    (void)state;
    const char *model, *tok;
    if (!assets(&model, &tok)) skip();
    static const char *cases[][3] = {{"--seed", "0", "--seed 0"}, {"--top-p", "1.5", "--top-p 1.5"},
                                     {"--top-p", "-0.1", "--top-p -0.1"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc;
        size_t len;
        char *err = run_generate("2>&1 >/dev/null", &rc, &len, "--model", model, "--tokenizer", tok, "--prompt",
                                 "Hi", "--steps", "5", "--temperature", "0.8", cases[i][0], cases[i][1], (char *)NULL);
        if (rc == 0 || strstr(err, cases[i][2]) == NULL)
            print_error("%s: exit %d, stderr [%s]\n", cases[i][2], rc, err);
        assert_int_not_equal(rc, 0);
        assert_non_null(strstr(err, cases[i][2]));
        free(err);
    }
}

int main(void) {
    /* One thread: the outputs do not depend on it, and with OpenMP's spinning a busy
     * 2-core machine runs these small forward passes many times slower with 2. */
    setenv("OMP_NUM_THREADS", "1", 1);
    load_reference();
    struct CMUnitTest tests[MAX_CASES + 4] = {
        cmocka_unit_test(test_reference_file),
        cmocka_unit_test(test_sources_md_fact),
        cmocka_unit_test(test_lora_not_an_adapter),
        cmocka_unit_test(test_sampling_options_rejected),
    };
    size_t n = 4;
    for (int i = 0; i < g_n_cases; i++) {
        struct CMUnitTest t = cmocka_unit_test_prestate(test_llama2c_case, &g_cases[i]);
        t.name = g_cases[i].test_name;
        tests[n++] = t;
    }
    int failed = _cmocka_run_group_tests("test_generate", tests, n, NULL, NULL);
    free(g_file);
    return failed;
}
