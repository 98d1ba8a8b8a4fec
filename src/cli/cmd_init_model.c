/* cmd_init_model.c: `splitllm init-model` — a model with random weights in its family's
 * file format, so the GPT-2 path can be tested and benchmarked without real GPT-2 weights. */
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "model/model.h"

int cmd_init_model(int argc, char **argv) {
    const char *arch_name = "gpt2", *preset = NULL, *out = NULL;
    int layers = 0, dim = 0, heads = 0, kv_heads = 0, vocab = 0, max_seq = 0, hidden = 0, seed = 0, untied = 0;
    const sl_opt opts[] = {
        {"--arch", SL_OPT_STR, &arch_name, "gpt2 (llm.c checkpoint) or llama (llama2.c .bin)"},
        {"--preset", SL_OPT_STR, &preset, "tiny or 124M (other shape flags override it)"},
        {"--layers", SL_OPT_INT, &layers, "blocks L"},
        {"--dim", SL_OPT_INT, &dim, "channels C"},
        {"--heads", SL_OPT_INT, &heads, "attention heads NH"},
        {"--kv-heads", SL_OPT_INT, &kv_heads, "key/value heads NKV (llama; gpt2 uses NH)"},
        {"--hidden", SL_OPT_INT, &hidden, "MLP hidden size (llama; gpt2 uses 4C)"},
        {"--vocab", SL_OPT_INT, &vocab, "vocabulary size V"},
        {"--max-seq", SL_OPT_INT, &max_seq, "longest sequence maxT"},
        {"--untied", SL_OPT_FLAG, &untied, "llama: a separate classifier instead of the tied embedding"},
        {"--seed", SL_OPT_INT, &seed, "random seed (default 0)"},
        {"--out", SL_OPT_STR, &out, "output model file"},
    };
    int rc = sl_parse_args("init-model", "Writes a randomly initialised model file.", opts, SL_COUNTOF(opts), argc,
                           argv);
    if (rc) return rc > 0 ? 0 : 2;
    if (out == NULL) {
        fprintf(stderr, "splitllm init-model: --out FILE is required\n");
        return 2;
    }
    sl_arch arch;
    sl_config c;
    if (sl_arch_parse(arch_name, &arch) || sl_config_preset(&c, arch, preset ? preset : "tiny")) {
        fprintf(stderr, "splitllm init-model: %s\n", sl_last_error());
        return 2;
    }
    if (layers) c.n_layers = layers;
    if (dim) c.dim = dim;
    if (heads) c.n_heads = c.n_kv_heads = heads;
    if (kv_heads) c.n_kv_heads = kv_heads;
    if (hidden) c.hidden_dim = hidden;
    if (max_seq) c.max_seq = max_seq;
    if (vocab) c.vocab_size = vocab;
    c.padded_vocab_size = arch == SL_ARCH_GPT2 ? (c.vocab_size + 127) / 128 * 128 : c.vocab_size;
    if (untied) c.shared_classifier = 0;
    if (sl_model_write_random(&c, (uint64_t)seed, out)) {
        fprintf(stderr, "splitllm init-model: %s\n", sl_last_error());
        return 1;
    }
    printf("wrote %s: %s L=%d C=%d NH=%d NKV=%d H=%d V=%d maxT=%d\n", out, sl_arch_name(arch), c.n_layers, c.dim,
           c.n_heads, arch == SL_ARCH_GPT2 ? c.n_heads : c.n_kv_heads, arch == SL_ARCH_GPT2 ? 4 * c.dim : c.hidden_dim,
           c.vocab_size, c.max_seq);
    return 0;
}
