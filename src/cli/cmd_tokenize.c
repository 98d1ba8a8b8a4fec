/* cmd_tokenize.c: `splitllm tokenize` — prints the token ids of standard input on one line, or
 * with --decode reads whitespace-separated ids from standard input and prints their text.
 * Not for: tokenizing datasets into shards (splitllm prepare). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/tokenizer.h"
#include "util/common.h"

#define READ_CHUNK_BYTES (1u << 16)
#define SHOWN_TOKEN_BYTES 40 /* how much of a malformed id an error message quotes */

/* Reads a whole stream into an sl_alloc'd, NUL-terminated buffer. */
static int read_stream(FILE *fp, const char *name, char **out, size_t *out_bytes) {
    size_t cap = READ_CHUNK_BYTES, n = 0;
    char *buf = sl_alloc(cap + 1);
    if (buf == NULL) return SL_ENOMEM;
    for (;;) {
        if (n == cap) {
            char *bigger = sl_alloc(2 * cap + 1);
            if (bigger == NULL) {
                sl_free(buf);
                return SL_ENOMEM;
            }
            memcpy(bigger, buf, n);
            sl_free(buf);
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
    }
    if (ferror(fp)) {
        sl_free(buf);
        return sl_fail(SL_EIO, "%s: read failed after %zu bytes", name, n);
    }
    buf[n] = '\0';
    *out = buf;
    *out_bytes = n;
    return SL_OK;
}

static int print_ids(const sl_tokenizer *t, const char *text, size_t len, int bos) {
    int *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = sl_tokenizer_encode(t, text, len, bos, &ids, &n, &cap);
    if (rc != 0) return rc;
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    sl_free(ids);
    return SL_OK;
}

static int push_id(int **ids, size_t *n, size_t *cap, int id) {
    if (*n == *cap) {
        size_t want = *cap ? 2 * *cap : READ_CHUNK_BYTES;
        int *bigger = sl_alloc(want * sizeof(int));
        if (bigger == NULL) return SL_ENOMEM;
        if (*n) memcpy(bigger, *ids, *n * sizeof(int));
        sl_free(*ids);
        *ids = bigger;
        *cap = want;
    }
    (*ids)[(*n)++] = id;
    return SL_OK;
}

/* Parses whitespace-separated ids, checking each against the vocabulary, and prints the text. */
static int print_text(const sl_tokenizer *t, const char *text, size_t len) {
    int vocab = sl_tokenizer_vocab_size(t);
    int *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = SL_OK;
    for (size_t at = 0; at < len && rc == 0;) {
        if (isspace((unsigned char)text[at])) {
            at++;
            continue;
        }
        size_t end = at;
        while (end < len && !isspace((unsigned char)text[end])) end++;
        size_t shown = end - at < SHOWN_TOKEN_BYTES ? end - at : SHOWN_TOKEN_BYTES;
        char *stop = NULL;
        errno = 0;
        long id = strtol(text + at, &stop, 10); /* text is NUL-terminated, stops at whitespace */
        if (stop != text + end || errno != 0) {
            rc = sl_fail(SL_EINVAL,
                         "standard input, byte %zu: token %zu (counting from 1) is '%.*s', expected an integer id", at,
                         n + 1, (int)shown, text + at);
        } else if (id < 0 || id >= vocab) {
            rc = sl_fail(
                SL_EINVAL,
                "standard input, byte %zu: token %zu (counting from 1) is id %ld, outside the vocabulary [0, %d)", at,
                n + 1, id, vocab);
        } else {
            rc = push_id(&ids, &n, &cap, (int)id);
        }
        at = end;
    }
    char *out = NULL;
    size_t out_len = 0;
    if (rc == 0) rc = sl_tokenizer_decode(t, ids, n, &out, &out_len);
    if (rc == 0 && fwrite(out, 1, out_len, stdout) != out_len) rc = sl_fail(SL_EIO, "standard output: write failed");
    sl_free(out);
    sl_free(ids);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *tok_path = NULL;
    int decode = 0, bos = 0;
    const sl_opt opts[] = {
        {"--tokenizer", SL_OPT_STR, &tok_path,
         "llama2.c tok*.bin, GPT-2 encoder.json, or a folder with encoder.json + vocab.bpe"},
        {"--decode", SL_OPT_FLAG, &decode, "read whitespace-separated ids from standard input, print their text"},
        {"--bos", SL_OPT_FLAG, &bos, "start with the BOS token where the tokenizer has one (llama2.c)"},
    };
    int prc = sl_parse_args("tokenize", "Prints the token ids of standard input on one line, separated by spaces.",
                            opts, SL_COUNTOF(opts), argc, argv);
    if (prc != 0) return prc > 0 ? 0 : 2;
    if (tok_path == NULL) {
        fprintf(stderr, "splitllm tokenize: --tokenizer is required (see --help)\n");
        return 2;
    }
    sl_tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = sl_tokenizer_load(&t, tok_path);
    if (rc == 0) rc = read_stream(stdin, "standard input", &text, &len);
    if (rc == 0) rc = decode ? print_text(t, text, len) : print_ids(t, text, len, bos);
    if (rc == 0 && fflush(stdout) != 0) rc = sl_fail(SL_EIO, "standard output: write failed");
    if (rc != 0) fprintf(stderr, "splitllm tokenize: %s\n", sl_last_error());
    sl_free(text);
    sl_tokenizer_free(t);
    return rc == 0 ? 0 : 1;
}
