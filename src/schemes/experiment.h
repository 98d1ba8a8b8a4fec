/* experiment.h: a grid of training runs (schemes × users N × edges M × cuts), each cell one
 * `splitllm run` child process with its own folder, collected into results.csv.
 *
 * Layout of the output folder (docs/EXPERIMENTS.md says the same for users):
 *   DIR/experiment.json          every invocation: command line, start/end, machine, counts
 *   DIR/results.csv              one row per cell of the grid (rewritten atomically after each cell)
 *   DIR/data-N/ + data-N.args    shards prepared here for N users (+ the prepare flags used)
 *   DIR/cells/<scheme>-n<N>-m<M>-c<c1>_<c2>[-<codec>]/   (codec only with --compress)
 *       command.txt, cell.args   the exact `splitllm run` command (cell.args: its flags, one per
 *                                line, without the binary and --timeout-ms: what resume compares)
 *       run.log                  the child's stdout and stderr
 *       summary.json, ...        what `splitllm run` wrote; after the cell, the model part copies
 *                                its tiers cached ({user,edge,cloud}.safetensors under parts/,
 *                                user-K/, edge-K/, cloud/) are removed unless keep_parts: they are
 *                                copies of the base model, one per process (GBs at 124M, N=32)
 *   DIR/plots/, DIR/plots.log    PNGs of scripts/plot_results.sh, when gnuplot is installed
 *
 * A cell whose folder holds summary.json is done: it is never run again and its row is rebuilt
 * from that summary, so an interrupted grid resumes where it stopped. Cells that make no sense
 * are skipped (edges > users; edges only vary for splitllm, the other schemes run one cell per
 * N, reported with edges 0).
 *
 * Not for: the training itself (run.c, central.c); the plots and tables (scripts/). */
#ifndef SPLITLLM_SCHEMES_EXPERIMENT_H
#define SPLITLLM_SCHEMES_EXPERIMENT_H

typedef struct {
    const char *out_dir;
    const char *model_path;
    const char *model_name;      /* results.csv's model column; NULL: the file name without extension */
    /* Data: either prepared here once per N into DIR/data-N (tokenizer + input and the
     * prepare flags below, NULL/-1 = prepare's default), or found with data_pattern. */
    const char *tokenizer_path, *input_path;
    const char *format, *partition, *key, *alpha, *val_fraction;
    int max_seq;                 /* -1: not given */
    const char *data_pattern;    /* "DIR/data-{users}" */
    /* The grid, as the flags give them: "splitllm,sfl", "4,8", "1,2", "1:3,2:4". */
    const char *schemes, *users, *edges, *cuts;
    const char *compress;        /* NULL: run's default and no such dimension; else a list of codecs
                                  * ("none,fp16,int8,topk:0.1"), one cell each (not for central) */
    /* Flags every cell's `splitllm run` gets. */
    int rounds, local_steps, batch, seq, lora_rank, eval_batches, timeout_ms, seed;
    const char *lora_targets, *lr; /* NULL: run's default */
    int processes;               /* one process per tier (the measurement setting) */
    const char *transport;       /* with processes: ipc (default) or tcp */
    const char *run_args;        /* more run flags, whitespace-separated, appended verbatim */
    double cell_timeout_s;       /* 0: none; a cell running longer is killed and failed */
    int plots;                   /* run the plot script at the end (when gnuplot is installed) */
    const char *plot_script;     /* NULL: found beside the binary's source tree */
    int keep_parts;              /* keep the model part copies the tiers cached in the cell folder */
    int list_only;               /* print the cells and whether each is done; run nothing */
    const char *self_exe;        /* the splitllm binary (/proc/self/exe) */
    int argc;                    /* the experiment's own flags, for experiment.json */
    char **argv;
} sl_experiment_config;

/* Defaults: schemes splitllm,sfl,sl,fl,central; users 4,8,16,32; edges 1,2,4; cuts 1:3;
 * run's defaults for the run flags; processes on; plots on. */
void sl_experiment_config_defaults(sl_experiment_config *c);

/* Runs the grid. Returns 0 when every cell is done and ok, 1 when some cell failed (the grid
 * still ran to the end), or a negative SL_E* (after sl_fail) when the experiment itself could
 * not go on: bad flags, a prepare that failed, a folder holding cells of different flags, or
 * an interrupt (SIGINT/SIGTERM: the running cell is stopped and left to be rerun). */
int sl_experiment_run(const sl_experiment_config *c);

#endif
