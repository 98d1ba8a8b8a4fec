/* cmd_train.c: `splitllm train` — LoRA fine-tuning in one process on all users' data (the
 * central scheme). The split runtime's `splitllm run --scheme NAME` shares its flags. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "model/model.h"
#include "schemes/central.h"

int cmd_train(int argc, char **argv) {
    sl_central_config c;
    memset(&c, 0, sizeof(c));
    c.out_dir = "out/train";
    c.steps = 100;
    c.batch = 8;
    c.seq = 64;
    c.eval_every = 0;
    c.eval_batches = 0;
    c.optim = sl_adamw_defaults();
    c.optim.grad_clip = 1.0f;
    c.optim.warmup_steps = 10;
    const char *targets = "q,k,v,o";
    int rank = 8, seed = 1337;
    float alpha = 16.0f, dropout = 0.0f;
    const char *tokenizer = NULL; /* accepted for symmetry with run; shards record its hash */
    const sl_opt opts[] = {
        {"--model", SL_OPT_STR, &c.model_path, "base model file"},
        {"--tokenizer", SL_OPT_STR, &tokenizer, "tokenizer (optional: the shards name theirs)"},
        {"--data", SL_OPT_STR, &c.data_dir, "folder written by `splitllm prepare`"},
        {"--out", SL_OPT_STR, &c.out_dir, "output folder (default out/train)"},
        {"--steps", SL_OPT_INT, &c.steps, "optimizer steps (default 100)"},
        {"--batch", SL_OPT_INT, &c.batch, "batch size B (default 8)"},
        {"--seq", SL_OPT_INT, &c.seq, "sequence length T (default 64)"},
        {"--packing", SL_OPT_FLAG, &c.packing, "pack samples back to back (default: one per row, padded)"},
        {"--lora-rank", SL_OPT_INT, &rank, "LoRA rank r (default 8)"},
        {"--lora-alpha", SL_OPT_FLOAT, &alpha, "LoRA alpha; scale = alpha/r (default 16)"},
        {"--lora-dropout", SL_OPT_FLOAT, &dropout, "dropout on the adapters' input (default 0)"},
        {"--lora-targets", SL_OPT_STR, &targets, "q,k,v,o,gate,up,down or all (default q,k,v,o)"},
        {"--lr", SL_OPT_FLOAT, &c.optim.lr, "peak learning rate (default 1e-3)"},
        {"--warmup", SL_OPT_INT, &c.optim.warmup_steps, "linear warm-up steps (default 10)"},
        {"--weight-decay", SL_OPT_FLOAT, &c.optim.weight_decay, "AdamW weight decay (default 0.01)"},
        {"--grad-clip", SL_OPT_FLOAT, &c.optim.grad_clip, "max gradient norm, 0 = off (default 1)"},
        {"--eval-every", SL_OPT_INT, &c.eval_every, "steps between evaluations (default: before and after only)"},
        {"--eval-batches", SL_OPT_INT, &c.eval_batches, "validation batches per evaluation (default all)"},
        {"--seed", SL_OPT_INT, &seed, "seed of adapters, data order and dropout (default 1337)"},
    };
    int rc = sl_parse_args("train", "LoRA fine-tuning in one process (the central scheme).", opts, SL_COUNTOF(opts),
                           argc, argv);
    if (rc) return rc > 0 ? 0 : 2;
    (void)tokenizer;
    if (c.model_path == NULL || c.data_dir == NULL) {
        fprintf(stderr, "splitllm train: --model and --data are required (see --help)\n");
        return 2;
    }
    sl_model probe;
    if (sl_model_load(&probe, c.model_path)) {
        fprintf(stderr, "splitllm train: %s\n", sl_last_error());
        return 1;
    }
    c.lora = (sl_lora_config){.rank = rank, .alpha = alpha, .dropout = dropout, .seed = (uint64_t)seed};
    rc = sl_lora_parse_targets(targets, probe.config.arch, &c.lora.targets);
    sl_model_free(&probe);
    if (rc) {
        fprintf(stderr, "splitllm train: %s\n", sl_last_error());
        return 2;
    }
    c.seed = (uint64_t)seed;
    sl_central_result r;
    if (sl_central_run(&c, &r)) {
        fprintf(stderr, "splitllm train: %s\n", sl_last_error());
        free(r.eval_losses);
        return 1;
    }
    printf("eval_loss_initial=%.4f eval_loss_final=%.4f tokens_per_s=%.1f wall_seconds=%.1f\n", r.eval_loss_initial,
           r.eval_loss_final, r.tokens_per_s, r.wall_seconds);
    free(r.eval_losses);
    return 0;
}
