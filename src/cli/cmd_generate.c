/* cmd_generate.c: `splitllm generate` — text from a model (and optionally a LoRA adapter),
 * following llama2.c's run.c: --steps counts every position including the prompt's,
 * the prompt is fed token by token, temperature 0 is greedy, and a BOS (llama2.c) or
 * end-of-text (GPT-2) token ends the text early. Each step runs the whole prefix through
 * the forward pass (no KV cache: fine for the small models generation is used with here). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/tokenizer.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/sampler.h"
#include "model/segment.h"

int cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *tok_path = NULL, *lora_path = NULL, *prompt = "";
    int steps = 256, seed = 42;
    float temperature = 1.0f, top_p = 0.9f;
    const sl_opt opts[] = {
        {"--model", SL_OPT_STR, &model_path, "model file (llm.c GPT-2 or llama2.c .bin)"},
        {"--tokenizer", SL_OPT_STR, &tok_path, "tokenizer (tok*.bin, or GPT-2 encoder.json)"},
        {"--lora", SL_OPT_STR, &lora_path, "LoRA adapter file to apply"},
        {"--prompt", SL_OPT_STR, &prompt, "text to start from"},
        {"--steps", SL_OPT_INT, &steps, "positions in all, prompt included (default 256)"},
        {"--temperature", SL_OPT_FLOAT, &temperature, "0 = greedy (default 1.0)"},
        {"--top-p", SL_OPT_FLOAT, &top_p, "nucleus sampling threshold (default 0.9; 0 or 1 = off)"},
        {"--seed", SL_OPT_INT, &seed, "sampling seed, non-zero (default 42; run.c's -s)"},
    };
    int rc = sl_parse_args("generate", "Generates text.", opts, SL_COUNTOF(opts), argc, argv);
    if (rc) return rc > 0 ? 0 : 2;
    if (model_path == NULL || tok_path == NULL) {
        fprintf(stderr, "splitllm generate: --model and --tokenizer are required\n");
        return 2;
    }
    sl_model m;
    sl_tokenizer *tok = NULL;
    sl_lora lora;
    memset(&lora, 0, sizeof(lora));
    sl_segment *seg = NULL;
    sl_sampler sampler = {0};
    int *ids = NULL;
    size_t n_ids = 0, cap = 0;
    float *logits = NULL;
    int status = 1;
    if (sl_model_load(&m, model_path)) {
        fprintf(stderr, "splitllm generate: %s\n", sl_last_error());
        return 1;
    }
    if (sl_tokenizer_load(&tok, tok_path)) goto fail;
    if (sl_tokenizer_vocab_size(tok) > m.config.vocab_size) {
        sl_fail(SL_EINVAL, "%s: tokenizer has %d tokens but the model only %d", tok_path,
                sl_tokenizer_vocab_size(tok), m.config.vocab_size);
        goto fail;
    }
    if (lora_path && sl_lora_open(&lora, &m.config, lora_path)) goto fail;
    if (lora_path && (lora.layer_begin != 0 || lora.layer_end != m.config.n_layers)) {
        sl_fail(SL_EINVAL, "%s: adapter covers blocks [%d,%d); generation needs the whole model's [0,%d)", lora_path,
                lora.layer_begin, lora.layer_end, m.config.n_layers);
        goto fail;
    }
    if (steps < 1 || steps > m.config.max_seq) steps = m.config.max_seq;
    if (sl_tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n_ids, &cap)) goto fail;
    const int stop = sl_tokenizer_bos(tok) >= 0 ? sl_tokenizer_bos(tok) : sl_tokenizer_eot(tok);
    if (n_ids == 0) { /* GPT-2 with an empty prompt: start from end-of-text */
        int start = sl_tokenizer_eot(tok);
        if (sl_tokenizer_encode(tok, "", 0, 0, &ids, &n_ids, &cap)) goto fail;
        ids[0] = start;
        n_ids = 1;
    }
    const int n_prompt = (int)n_ids;
    int *seq = malloc(sizeof(int) * (size_t)(steps + 1)); /* the last sampled token is printed, not fed */
    if (seq == NULL) goto fail;
    seq[0] = ids[0];
    sl_segment_config sc = {0, m.config.n_layers, 1, 1, 1, steps};
    logits = malloc(sizeof(float) * (size_t)m.config.vocab_size);
    if (logits == NULL || sl_segment_create(&seg, &m, lora_path ? &lora : NULL, &sc) ||
        sl_sampler_init(&sampler, m.config.vocab_size, temperature, top_p, (uint64_t)seed)) {
        free(seq);
        goto fail;
    }
    int token = seq[0];
    char buf[8];
    for (int pos = 0; pos < steps; pos++) {
        int next;
        if (pos < n_prompt - 1) {
            next = ids[pos + 1];
        } else {
            sl_segment_input in = {.B = 1, .T = pos + 1, .tokens = seq, .logits = logits};
            if (sl_segment_forward(seg, &in)) {
                free(seq);
                goto fail;
            }
            next = sl_sampler_sample(&sampler, logits);
        }
        if (next == stop) break;
        seq[pos + 1] = next;
        const char *piece;
        size_t len;
        if (sl_tokenizer_piece(tok, token, next, buf, &piece, &len) == 0 &&
            sl_tokenizer_piece_printable(piece, len))
            fwrite(piece, 1, len, stdout);
        fflush(stdout);
        token = next;
    }
    printf("\n");
    free(seq);
    status = 0;
fail:
    if (status) fprintf(stderr, "splitllm generate: %s\n", sl_last_error());
    sl_sampler_free(&sampler);
    free(logits);
    sl_segment_free(seg);
    sl_free(ids);
    if (lora_path) sl_lora_free(&lora);
    sl_tokenizer_free(tok);
    sl_model_free(&m);
    return status;
}
