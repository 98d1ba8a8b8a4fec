/* args.h: the command line's one typed option interface. Each subcommand declares a table
 * of options (name, kind, destination, help); sl_parse_args fills the destinations, prints
 * the table for --help, and rejects unknown flags and malformed values by name. */
#ifndef SPLITLLM_CLI_ARGS_H
#define SPLITLLM_CLI_ARGS_H

typedef enum { SL_OPT_STR, SL_OPT_INT, SL_OPT_FLOAT, SL_OPT_FLAG } sl_opt_kind;

typedef struct {
    const char *name; /* "--model" */
    sl_opt_kind kind;
    void *dst;        /* const char **, int *, float *, int * (flag: set to 1) */
    const char *help;
} sl_opt;

/* Returns 0 to go on, 1 when --help was printed (exit 0), -1 on error (printed). */
int sl_parse_args(const char *command, const char *summary, const sl_opt *opts, int n_opts, int argc,
                  char **argv);

#define SL_COUNTOF(a) ((int)(sizeof(a) / sizeof((a)[0])))

#endif
