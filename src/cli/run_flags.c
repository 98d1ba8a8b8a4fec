/* run_flags.c: see run_flags.h. */
#include "cli/run_flags.h"

#include <stdio.h>
#include <string.h>

#include "model/model.h"

void sl_run_flags_add(sl_run_flags *f, sl_opt opt) {
    if (f->n_opts < SL_RUN_MAX_OPTS) f->opts[f->n_opts++] = opt;
}

void sl_run_flags_init(sl_run_flags *f) {
    memset(f, 0, sizeof(*f));
    sl_run_config_defaults(&f->cfg);
    sl_run_config *c = &f->cfg;
    f->cuts = "1,3";
    f->targets = "q,k,v,o";
    f->compress = "none";
    f->seed = 1337;
    const sl_opt table[] = {
        {"--scheme", SL_OPT_STR, &c->scheme, "splitllm (default) or central"},
        {"--model", SL_OPT_STR, &c->model_path, "base model file (llm.c GPT-2 or llama2.c .bin)"},
        {"--tokenizer", SL_OPT_STR, &c->tokenizer_path, "tokenizer (the shards already hold token ids)"},
        {"--data", SL_OPT_STR, &c->data_dir, "folder written by `splitllm prepare` (user_NNN.shard, val.shard)"},
        {"--out", SL_OPT_STR, &c->out_dir, "output folder (default out/run)"},
        {"--users", SL_OPT_INT, &c->users, "N users (default 8)"},
        {"--edges", SL_OPT_INT, &c->edges, "M edges (default 2)"},
        {"--cuts", SL_OPT_STR, &f->cuts, "c1,c2: user [0,c1), edge [c1,c2), cloud [c2,L) (default 1,3)"},
        {"--rounds", SL_OPT_INT, &c->rounds, "R rounds (default 4)"},
        {"--local-steps", SL_OPT_INT, &c->local_steps, "E steps of each active user per round (default 5)"},
        {"--batch", SL_OPT_INT, &c->batch, "batch size B (default 8)"},
        {"--seq", SL_OPT_INT, &c->seq, "sequence length T (default 128)"},
        {"--packing", SL_OPT_FLAG, &c->packing, "pack samples back to back"},
        {"--lora-rank", SL_OPT_INT, &c->lora.rank, "LoRA rank r (default 8)"},
        {"--lora-alpha", SL_OPT_FLOAT, &c->lora.alpha, "LoRA alpha (default 16)"},
        {"--lora-dropout", SL_OPT_FLOAT, &c->lora.dropout, "LoRA dropout (default 0)"},
        {"--lora-targets", SL_OPT_STR, &f->targets, "q,k,v,o,gate,up,down or all (default q,k,v,o)"},
        {"--lr", SL_OPT_FLOAT, &c->optim.lr, "peak learning rate (default 1e-3)"},
        {"--warmup", SL_OPT_INT, &c->optim.warmup_steps, "warm-up steps (default 0)"},
        {"--weight-decay", SL_OPT_FLOAT, &c->optim.weight_decay, "AdamW weight decay (default 0.01)"},
        {"--grad-clip", SL_OPT_FLOAT, &c->optim.grad_clip, "max gradient norm per tier, 0 = off (default 1)"},
        {"--seed", SL_OPT_INT, &f->seed, "seed of adapters, data order, dropout, user picks (default 1337)"},
        {"--eval-batches", SL_OPT_INT, &c->eval_batches, "validation batches per evaluation (default all)"},
        {"--select", SL_OPT_STR, &c->select, "how an edge picks its user: round-robin (default) or random"},
        {"--assign", SL_OPT_STR, &c->assign, "edge of each user, e.g. 0,0,1,1 (default: user mod M)"},
        {"--timeout-ms", SL_OPT_INT, &c->timeout_ms, "how long to wait for a peer (default 60000)"},
        {"--compress", SL_OPT_STR, &f->compress, "activations/gradients on the links: none, fp16, bf16, int8, topk:F"},
        {"--shape-links", SL_OPT_FLAG, &c->shape_links, "pace each link to the wireless model's rate and delay"},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) sl_run_flags_add(f, table[i]);
}

int sl_run_flags_finish(sl_run_flags *f, const char *command) {
    sl_run_config *c = &f->cfg;
    if (sscanf(f->cuts, "%d,%d", &c->cut1, &c->cut2) != 2) {
        fprintf(stderr, "splitllm %s: --cuts '%s': expected two block numbers c1,c2\n", command, f->cuts);
        return 2;
    }
    if (sl_codec_parse(f->compress, &c->compress)) {
        fprintf(stderr, "splitllm %s: %s\n", command, sl_last_error());
        return 2;
    }
    c->seed = (uint64_t)f->seed;
    c->lora.seed = (uint64_t)f->seed;
    if (c->model_path == NULL) {
        fprintf(stderr, "splitllm %s: --model is required (see --help)\n", command);
        return 2;
    }
    sl_model m;
    if (sl_model_load(&m, c->model_path)) {
        fprintf(stderr, "splitllm %s: %s\n", command, sl_last_error());
        return 1;
    }
    int rc = sl_lora_parse_targets(f->targets, m.config.arch, &c->lora.targets);
    sl_model_free(&m);
    if (rc) {
        fprintf(stderr, "splitllm %s: %s\n", command, sl_last_error());
        return 2;
    }
    return 0;
}
