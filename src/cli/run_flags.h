/* run_flags.h: the flags that `splitllm run` and `splitllm cloud` share (one table, one set
 * of names), and turning their text values into an sl_run_config. */
#ifndef SPLITLLM_CLI_RUN_FLAGS_H
#define SPLITLLM_CLI_RUN_FLAGS_H

#include "cli/args.h"
#include "schemes/run.h"

#define SL_RUN_MAX_OPTS 48

typedef struct {
    sl_run_config cfg;
    const char *cuts;      /* "c1,c2" */
    const char *targets;   /* "q,v" */
    const char *compress;  /* "none", "fp16", "bf16", "int8", "topk:0.1" */
    int seed;
    sl_opt opts[SL_RUN_MAX_OPTS];
    int n_opts;
} sl_run_flags;

/* Fills defaults and the option table. */
void sl_run_flags_init(sl_run_flags *f);
/* Appends one more option to the table (for a command's own flags). */
void sl_run_flags_add(sl_run_flags *f, sl_opt opt);
/* After parsing: cuts, targets (needs the model's family: reads the model header) and
 * seeds into cfg. Prints the error and returns nonzero on a bad value. */
int sl_run_flags_finish(sl_run_flags *f, const char *command);

#endif
