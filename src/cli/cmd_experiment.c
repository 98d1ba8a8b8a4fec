/* cmd_experiment.c: `splitllm experiment` — runs a grid of `splitllm run` cells (schemes ×
 * users × edges × cuts) and collects results.csv and plots (src/schemes/experiment.h does the
 * work; this file reads the options). docs/EXPERIMENTS.md is the user's guide. */
#include <stdio.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "schemes/experiment.h"
#include "util/common.h"

int cmd_experiment(int argc, char **argv) {
    sl_experiment_config c;
    sl_experiment_config_defaults(&c);
    int threads = 0, no_plots = 0;
    float cell_timeout = 0.0f;
    const sl_opt opts[] = {
        {"--out", SL_OPT_STR, &c.out_dir, "output folder: results.csv, cells/, plots/ (default out/experiment)"},
        {"--model", SL_OPT_STR, &c.model_path, "base model file (llm.c GPT-2 or llama2.c .bin)"},
        {"--model-name", SL_OPT_STR, &c.model_name, "name in results.csv (default: the file name without extension)"},
        {"--tokenizer", SL_OPT_STR, &c.tokenizer_path, "tokenizer for `splitllm prepare` (with --input)"},
        {"--input", SL_OPT_STR, &c.input_path, "dataset; prepared once per N into DIR/data-N"},
        {"--format", SL_OPT_STR, &c.format, "prepare: text | jsonl | e2e (default: from the name)"},
        {"--max-seq", SL_OPT_INT, &c.max_seq, "prepare: samples keep at most T+1 tokens (default prepare's)"},
        {"--partition", SL_OPT_STR, &c.partition, "prepare: iid | dirichlet | by-key (default iid)"},
        {"--key", SL_OPT_STR, &c.key, "prepare: field to partition by (e.g. eatType)"},
        {"--alpha", SL_OPT_STR, &c.alpha, "prepare: Dirichlet concentration"},
        {"--val-fraction", SL_OPT_STR, &c.val_fraction, "prepare: share held out for validation"},
        {"--data-pattern", SL_OPT_STR, &c.data_pattern, "prepared folders instead of --input: 'DIR/data-{users}'"},
        {"--schemes", SL_OPT_STR, &c.schemes, "schemes to run (default splitllm,sfl,sl,fl,central)"},
        {"--users", SL_OPT_STR, &c.users, "list of N (default 4,8,16,32)"},
        {"--edges", SL_OPT_STR, &c.edges, "list of M, splitllm only (default 1,2,4)"},
        {"--cuts", SL_OPT_STR, &c.cuts, "list of c1:c2 cut pairs (default 1:3)"},
        {"--compress", SL_OPT_STR, &c.compress, "list of link codecs, a cell each: none,fp16,bf16,int8,topk:F"},
        {"--rounds", SL_OPT_INT, &c.rounds, "run: R rounds (default 4)"},
        {"--local-steps", SL_OPT_INT, &c.local_steps, "run: E local steps per round (default 5)"},
        {"--batch", SL_OPT_INT, &c.batch, "run: batch size B (default 8)"},
        {"--seq", SL_OPT_INT, &c.seq, "run: sequence length T (default 128)"},
        {"--lora-rank", SL_OPT_INT, &c.lora_rank, "run: LoRA rank r (default 8)"},
        {"--lora-targets", SL_OPT_STR, &c.lora_targets, "run: LoRA targets (default run's: q,k,v,o)"},
        {"--lr", SL_OPT_STR, &c.lr, "run: peak learning rate (default run's: 1e-3)"},
        {"--seed", SL_OPT_INT, &c.seed, "seed of prepare and of every run (default 1337)"},
        {"--eval-batches", SL_OPT_INT, &c.eval_batches, "run: validation batches per evaluation (default all)"},
        {"--timeout-ms", SL_OPT_INT, &c.timeout_ms, "run: how long a tier waits for a peer (default 60000)"},
        {"--processes", SL_OPT_FLAG, &c.processes, "every tier in its own process (the default)"},
        {"--threads", SL_OPT_FLAG, &threads, "tiers as threads of one process (per-tier memory is then unknown)"},
        {"--transport", SL_OPT_STR, &c.transport, "with processes: ipc (default) or tcp on 127.0.0.1"},
        {"--run-args", SL_OPT_STR, &c.run_args, "more `splitllm run` flags for every cell, e.g. '--warmup 10'"},
        {"--cell-timeout", SL_OPT_FLOAT, &cell_timeout, "seconds after which a cell is stopped and failed (0 = none)"},
        {"--no-plots", SL_OPT_FLAG, &no_plots, "do not run scripts/plot_results.sh at the end"},
        {"--plot-script", SL_OPT_STR, &c.plot_script, "the plot script (default: scripts/plot_results.sh of the tree)"},
        {"--keep-parts", SL_OPT_FLAG, &c.keep_parts, "keep the model part copies each tier cached in its cell folder"},
        {"--list", SL_OPT_FLAG, &c.list_only, "print the cells and which are done; run nothing"},
    };
    int rc = sl_parse_args("experiment",
                           "Runs a grid of training runs (schemes x users x edges x cuts), one `splitllm run` child\n"
                           "process per cell, and writes DIR/results.csv and DIR/plots/. A cell whose folder holds\n"
                           "summary.json is not run again, so an interrupted grid resumes where it stopped.",
                           opts, SL_COUNTOF(opts), argc, argv);
    if (rc) return rc > 0 ? 0 : 2;
    if (threads) c.processes = 0;
    if (no_plots) c.plots = 0;
    c.cell_timeout_s = cell_timeout;
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        fprintf(stderr, "splitllm experiment: cannot find its own binary (/proc/self/exe)\n");
        return 1;
    }
    self[n] = '\0';
    c.self_exe = self;
    c.argc = argc;
    c.argv = argv;
    rc = sl_experiment_run(&c);
    if (rc < 0) {
        fprintf(stderr, "splitllm experiment: %s\n", sl_last_error());
        return rc == SL_EINVAL ? 2 : rc == SL_ESTATE ? 130 : 1; /* SL_ESTATE: interrupted */
    }
    return rc; /* 1: some cell failed */
}
