/* bench_tokenize.c: see bench_tokenize.h. One thread, the whole input per encode call, a
 * fresh id array per pass so each pass pays for everything a caller would. */
#include "cli/bench_tokenize.h"

#include <stdio.h>
#include <stdlib.h>

#include "cli/args.h"
#include "data/tokenizer.h"
#include "util/common.h"

#define BENCH_DEFAULT_REPEAT 5
#define BYTES_PER_MB 1e6

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int bench_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *input_path = NULL;
    int repeat = BENCH_DEFAULT_REPEAT;
    const sl_opt opts[] = {
        {"--tokenizer", SL_OPT_STR, &tok_path,
         "llama2.c tok*.bin, GPT-2 encoder.json, or a folder with encoder.json + vocab.bpe"},
        {"--input", SL_OPT_STR, &input_path, "text file to encode (as one text)"},
        {"--repeat", SL_OPT_INT, &repeat, "passes over the input (default 5); the median is reported"},
    };
    int prc = sl_parse_args("bench tokenize",
                            "Encoding speed on one thread; last line: mb_per_s=X tokens=T seconds=S (median pass).",
                            opts, SL_COUNTOF(opts), argc, argv);
    if (prc != 0) return prc > 0 ? 0 : 2;
    if (tok_path == NULL || input_path == NULL || repeat < 1) {
        fprintf(stderr, "splitllm bench tokenize: needs --tokenizer, --input and --repeat >= 1 (see --help)\n");
        return 2;
    }
    sl_tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0, tokens = 0;
    double *pass_s = sl_alloc((size_t)repeat * sizeof(double));
    int rc = pass_s ? SL_OK : SL_ENOMEM;
    if (rc == 0) rc = sl_tokenizer_load(&t, tok_path);
    if (rc == 0) rc = sl_read_file(input_path, &text, &len);
    if (rc == 0)
        printf("tokenizer=%s vocab=%d input=%s bytes=%zu repeat=%d\n",
               sl_tokenizer_get_kind(t) == SL_TOKENIZER_GPT2 ? "gpt2" : "llama2", sl_tokenizer_vocab_size(t),
               input_path, len, repeat);
    for (int p = 0; rc == 0 && p < repeat; p++) {
        int *ids = NULL;
        size_t n = 0, cap = 0;
        double t0 = sl_now_s();
        rc = sl_tokenizer_encode(t, text, len, 0, &ids, &n, &cap);
        pass_s[p] = sl_now_s() - t0;
        sl_free(ids);
        tokens = n;
        if (rc == 0) printf("pass=%d seconds=%.6f tokens=%zu\n", p + 1, pass_s[p], n);
    }
    if (rc == 0) {
        qsort(pass_s, (size_t)repeat, sizeof(double), compare_double);
        double median_s = repeat % 2 ? pass_s[repeat / 2] : 0.5 * (pass_s[repeat / 2 - 1] + pass_s[repeat / 2]);
        printf("mb_per_s=%.3f tokens=%zu seconds=%.6f\n", median_s > 0 ? (double)len / BYTES_PER_MB / median_s : 0.0,
               tokens, median_s);
    } else {
        fprintf(stderr, "splitllm bench tokenize: %s\n", sl_last_error());
    }
    sl_free(pass_s);
    sl_free(text);
    sl_tokenizer_free(t);
    return rc == 0 ? 0 : 1;
}
