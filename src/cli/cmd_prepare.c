/* cmd_prepare.c: `splitllm prepare` — tokenizes a dataset into per-user shards, val.shard
 * and manifest.json (src/data/prepare.h does the work; this file reads options and prints
 * the summary). Not for: training or reading shards back. */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/prepare.h"
#include "util/common.h"

/* The double a user meant by a float option: 0.1f -> 0.1, not 0.10000000149 (the manifest
 * records it). FLT_DIG significant digits round-trip through float. */
static double float_as_typed(float x) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%.*g", FLT_DIG, (double)x);
    return strtod(buf, NULL);
}

int cmd_prepare(int argc, char **argv) {
    sl_prepare_config c;
    sl_prepare_config_default(&c);
    const char *format = NULL, *partition = "iid";
    int max_seq = c.pc_max_seq, seed = (int)c.pc_seed;
    float val_fraction = (float)c.pc_val_fraction, alpha = (float)c.pc_alpha;
    const sl_opt opts[] = {
        {"--tokenizer", SL_OPT_STR, &c.pc_tokenizer_path, "tokenizer: llama2.c tok*.bin or GPT-2 encoder.json"},
        {"--input", SL_OPT_STR, &c.pc_input_path, "dataset file"},
        {"--format", SL_OPT_STR, &format, "text | jsonl | e2e (default: from the name: .jsonl, .csv, else text)"},
        {"--out", SL_OPT_STR, &c.pc_out_dir, "output folder (user_NNN.shard, val.shard, manifest.json)"},
        {"--max-seq", SL_OPT_INT, &max_seq, "T: samples keep at most T+1 tokens, 0 no limit (default 256)"},
        {"--val-fraction", SL_OPT_FLOAT, &val_fraction, "share of samples held out for val.shard (default 0.1)"},
        {"--users", SL_OPT_INT, &c.pc_users, "number of user shards (default 1)"},
        {"--partition", SL_OPT_STR, &partition, "iid | dirichlet | by-key (default iid)"},
        {"--alpha", SL_OPT_FLOAT, &alpha, "Dirichlet concentration; smaller is more skewed (default 1)"},
        {"--key", SL_OPT_STR, &c.pc_key, "field to group by: a JSONL field or an E2E MR attribute (eatType)"},
        {"--seed", SL_OPT_INT, &seed, "seed of the validation split and the partition (default 1337)"},
        {"--strict", SL_OPT_FLAG, &c.pc_strict, "a sample longer than T+1 tokens is an error, not cut"},
        {"--separator", SL_OPT_STR, &c.pc_separator, "text: document separator (\\n \\t \\\\ escapes); default blank lines"},
    };
    int rc = sl_parse_args("prepare", "Tokenizes a dataset into per-user shards, val.shard and manifest.json.", opts,
                           SL_COUNTOF(opts), argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (format != NULL && sl_input_format_parse(format, &c.pc_format) != 0) {
        fprintf(stderr, "splitllm prepare: %s\n", sl_last_error());
        return 2;
    }
    if (sl_partition_parse(partition, &c.pc_partition) != 0) {
        fprintf(stderr, "splitllm prepare: %s\n", sl_last_error());
        return 2;
    }
    if (seed < 0) {
        fprintf(stderr, "splitllm prepare: --seed: expected >= 0, found %d\n", seed);
        return 2;
    }
    c.pc_max_seq = max_seq;
    c.pc_seed = (uint64_t)seed;
    c.pc_val_fraction = float_as_typed(val_fraction);
    c.pc_alpha = float_as_typed(alpha);

    sl_prepare_summary s;
    rc = sl_prepare_run(&c, &s);
    if (rc != 0) {
        fprintf(stderr, "splitllm prepare: %s\n", sl_last_error());
        return 1;
    }
    uint64_t train = 0, tokens = 0, mask = 0;
    for (int u = 0; u < s.ps_users; u++) {
        train += s.ps_user_samples[u];
        tokens += s.ps_user_tokens[u];
        mask += s.ps_user_mask_tokens[u];
    }
    printf("prepare: %llu samples -> %s: %llu train over %d users (%llu tokens, %llu in the loss), %llu val "
           "(%llu tokens, %llu in the loss); %llu truncated; %.3f s\n",
           (unsigned long long)s.ps_samples, c.pc_out_dir, (unsigned long long)train, s.ps_users,
           (unsigned long long)tokens, (unsigned long long)mask, (unsigned long long)s.ps_val_samples,
           (unsigned long long)s.ps_val_tokens, (unsigned long long)s.ps_val_mask_tokens,
           (unsigned long long)s.ps_truncated, s.ps_seconds);
    if (c.pc_key) printf("  key '%s': %d values\n", c.pc_key, s.ps_key_values);
    for (int u = 0; u < s.ps_users; u++)
        printf("  user %3d: %6llu samples %8llu tokens %8llu in the loss\n", u, (unsigned long long)s.ps_user_samples[u],
               (unsigned long long)s.ps_user_tokens[u], (unsigned long long)s.ps_user_mask_tokens[u]);
    sl_prepare_summary_free(&s);
    return 0;
}
